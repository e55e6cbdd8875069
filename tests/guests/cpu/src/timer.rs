//! The EL1 generic timers by name: the virtual timer (the guest's own, PPI 27) and the physical
//! timer (which Veil emulates, PPI 30), and the counters they compare against.

use veil_guest_rt::{read_sysreg, write_sysreg};

/// CNTx_CTL_EL0 bits.
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// One of the two EL1 timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Virtual,
    Physical,
}

impl Timer {
    pub fn name(self) -> &'static str {
        match self {
            Timer::Virtual => "virtual timer",
            Timer::Physical => "physical timer",
        }
    }

    /// The timer's interrupt ID on the virtual board.
    pub fn intid(self) -> u32 {
        match self {
            Timer::Virtual => 27,
            Timer::Physical => 30,
        }
    }

    /// The counter this timer compares with: CNTVCT_EL0 or CNTPCT_EL0.
    pub fn count(self) -> u64 {
        // SAFETY: counter reads have no side effects; the ISB keeps them in program order.
        unsafe {
            core::arch::asm!("isb", options(nostack));
            match self {
                Timer::Virtual => read_sysreg!(cntvct_el0),
                Timer::Physical => read_sysreg!(cntpct_el0),
            }
        }
    }

    pub fn ctl(self) -> u64 {
        // SAFETY: reading a timer control register has no side effects.
        unsafe {
            match self {
                Timer::Virtual => read_sysreg!(cntv_ctl_el0),
                Timer::Physical => read_sysreg!(cntp_ctl_el0),
            }
        }
    }

    pub fn set_ctl(self, value: u64) {
        // SAFETY: the timer only raises its PPI, which stays masked by PSTATE.I; the ISB makes
        // the change take effect before the next instruction.
        unsafe {
            match self {
                Timer::Virtual => write_sysreg!(cntv_ctl_el0, value),
                Timer::Physical => write_sysreg!(cntp_ctl_el0, value),
            }
            core::arch::asm!("isb", options(nostack));
        }
    }

    pub fn cval(self) -> u64 {
        // SAFETY: reading the compare value has no side effects.
        unsafe {
            match self {
                Timer::Virtual => read_sysreg!(cntv_cval_el0),
                Timer::Physical => read_sysreg!(cntp_cval_el0),
            }
        }
    }

    /// Writes TVAL: the timer fires `ticks` from now.
    pub fn set_tval(self, ticks: u64) {
        // SAFETY: as for set_ctl.
        unsafe {
            match self {
                Timer::Virtual => write_sysreg!(cntv_tval_el0, ticks),
                Timer::Physical => write_sysreg!(cntp_tval_el0, ticks),
            }
            core::arch::asm!("isb", options(nostack));
        }
    }
}

/// The counter frequency in Hz.
pub fn frequency() -> u64 {
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { read_sysreg!(cntfrq_el0) }
}

/// Virtual-counter ticks in `ms` milliseconds.
pub fn ms(ms: u64) -> u64 {
    frequency() / 1000 * ms
}

/// Spins until `done()` or `ms` milliseconds of virtual counter passed; true if `done()`.
pub fn wait_until(ms_limit: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Timer::Virtual.count() + ms(ms_limit);
    loop {
        if done() {
            return true;
        }
        if Timer::Virtual.count() > deadline {
            return done();
        }
        core::hint::spin_loop();
    }
}
