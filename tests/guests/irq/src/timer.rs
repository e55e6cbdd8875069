//! The EL1 generic timers, and the `vtimer` / `ptimer` tests.
//!
//! The virtual timer (CNTV_*, INTID 27) is the guest's own: a hypervisor forwards its physical
//! interrupt. The physical timer (CNTP_*, INTID 30) is one a hypervisor may trap and emulate
//! (Veil does, on its EL2 timer). Both are level-triggered: the line is up while the timer is
//! enabled, unmasked and past its compare value, so a handler must move the deadline (or turn
//! the timer off) before it ends the interrupt, or it fires again at once.
//!
//! The test programs [`INTERRUPTS`] deadlines one [`PERIOD_DIVISOR`]th of a second apart
//! through TVAL; each is taken in the IRQ handler, which reads ISTATUS and CVAL, re-arms and
//! ends the interrupt. Lateness is the counter at the IRQ entry's first instruction of Rust
//! (after the runtime's vector has saved the interrupted state) minus the deadline, in counter
//! ticks of the timer's own counter; its minimum, mean and maximum are the spread.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic;
use veil_guest_rt::tally::Tally;

use crate::dispatch::{self, Entered};
use crate::spread::Spread;
use crate::wait;

/// CNTx_CTL_EL0 bits.
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// Interrupts each test takes.
pub const INTERRUPTS: u32 = 100;
/// The period is the counter frequency divided by this: 1 ms.
pub const PERIOD_DIVISOR: u64 = 1000;
/// Priority of the timer under test.
const PRIORITY: u8 = 0x80;
/// How long all interrupts may take, in seconds: 50 times what they need.
const TIMEOUT_SECONDS: u64 = 5;

/// One of the two EL1 timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Virtual,
    Physical,
}

impl Timer {
    /// Its PPI on QEMU `virt` (and Veil's virtual board).
    pub fn intid(self) -> u32 {
        match self {
            Timer::Virtual => 27,
            Timer::Physical => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Timer::Virtual => "vtimer",
            Timer::Physical => "ptimer",
        }
    }

    /// The other timer.
    pub fn other(self) -> Timer {
        match self {
            Timer::Virtual => Timer::Physical,
            Timer::Physical => Timer::Virtual,
        }
    }

    /// Its counter now (CNTVCT_EL0 / CNTPCT_EL0), fenced.
    pub fn now(self) -> u64 {
        self.count_at(dispatch::counters())
    }

    /// Its counter in a reading of both.
    pub fn count_at(self, counters: Entered) -> u64 {
        match self {
            Timer::Virtual => counters.virtual_count,
            Timer::Physical => counters.physical_count,
        }
    }

    pub fn ctl(self) -> u64 {
        // SAFETY: reading a timer register has no side effects (a hypervisor may trap it).
        unsafe {
            match self {
                Timer::Virtual => veil_guest_rt::read_sysreg!(cntv_ctl_el0),
                Timer::Physical => veil_guest_rt::read_sysreg!(cntp_ctl_el0),
            }
        }
    }

    /// Writes CTL (ENABLE, IMASK); the ISB makes the timer's line follow before going on.
    pub fn set_ctl(self, value: u64) {
        // SAFETY: the EL1 timers belong to this guest; changing one only changes its line.
        unsafe {
            match self {
                Timer::Virtual => veil_guest_rt::write_sysreg!(cntv_ctl_el0, value),
                Timer::Physical => veil_guest_rt::write_sysreg!(cntp_ctl_el0, value),
            }
            core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
        }
    }

    pub fn cval(self) -> u64 {
        // SAFETY: as in `ctl`.
        unsafe {
            match self {
                Timer::Virtual => veil_guest_rt::read_sysreg!(cntv_cval_el0),
                Timer::Physical => veil_guest_rt::read_sysreg!(cntp_cval_el0),
            }
        }
    }

    pub fn set_cval(self, value: u64) {
        // SAFETY: as in `set_ctl`.
        unsafe {
            match self {
                Timer::Virtual => veil_guest_rt::write_sysreg!(cntv_cval_el0, value),
                Timer::Physical => veil_guest_rt::write_sysreg!(cntp_cval_el0, value),
            }
            core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
        }
    }

    /// Writes TVAL: the deadline becomes the counter now plus `ticks`.
    pub fn set_tval(self, ticks: u32) {
        let value = u64::from(ticks);
        // SAFETY: as in `set_ctl`.
        unsafe {
            match self {
                Timer::Virtual => veil_guest_rt::write_sysreg!(cntv_tval_el0, value),
                Timer::Physical => veil_guest_rt::write_sysreg!(cntp_tval_el0, value),
            }
            core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
        }
    }
}

// What the handler records; vCPU 0 alone runs the test, so each has one writer.
/// Which timer is under test: 0 = virtual, 1 = physical.
static UNDER_TEST: AtomicU8 = AtomicU8::new(0);
static PERIOD: AtomicU64 = AtomicU64::new(0);
static FIRED: AtomicU32 = AtomicU32::new(0);
/// Handler entries before the deadline (counter below CVAL).
static EARLY: AtomicU32 = AtomicU32::new(0);
/// Handler entries with ISTATUS clear: the timer's condition was not met.
static NOT_ASSERTED: AtomicU32 = AtomicU32::new(0);
/// Interrupts other than the timer's, and the last such INTID.
static OTHER: AtomicU32 = AtomicU32::new(0);
static OTHER_INTID: AtomicU32 = AtomicU32::new(0);
static LATE_MIN: AtomicU64 = AtomicU64::new(u64::MAX);
static LATE_MAX: AtomicU64 = AtomicU64::new(0);
static LATE_SUM: AtomicU64 = AtomicU64::new(0);

fn under_test() -> Timer {
    if UNDER_TEST.load(Ordering::Relaxed) == 0 {
        Timer::Virtual
    } else {
        Timer::Physical
    }
}

fn bump(counter: &AtomicU32) -> u32 {
    let n = counter.load(Ordering::Relaxed) + 1;
    counter.store(n, Ordering::Relaxed);
    n
}

/// The timer's interrupt: record, re-arm (or stop after the last), end.
fn handler(raw: u32, entered: Entered) {
    let timer = under_test();
    let gic = dispatch::gic();
    if gic::intid(raw) != timer.intid() {
        bump(&OTHER);
        OTHER_INTID.store(gic::intid(raw), Ordering::Relaxed);
        gic.end(raw);
        return;
    }
    let now = timer.count_at(entered);
    let ctl = timer.ctl();
    let deadline = timer.cval();
    if ctl & CTL_ISTATUS == 0 {
        bump(&NOT_ASSERTED);
    }
    if now < deadline {
        bump(&EARLY);
    } else {
        let late = now - deadline;
        LATE_MIN.store(
            LATE_MIN.load(Ordering::Relaxed).min(late),
            Ordering::Relaxed,
        );
        LATE_MAX.store(
            LATE_MAX.load(Ordering::Relaxed).max(late),
            Ordering::Relaxed,
        );
        LATE_SUM.store(LATE_SUM.load(Ordering::Relaxed) + late, Ordering::Relaxed);
    }
    // The line drops once the deadline moves into the future (or the timer stops): only then
    // may the interrupt end, or the level would raise it again.
    if bump(&FIRED) < INTERRUPTS {
        timer.set_tval(PERIOD.load(Ordering::Relaxed) as u32);
    } else {
        timer.set_ctl(0);
    }
    gic.end(raw);
}

/// The `vtimer` or `ptimer` test.
pub fn run(tally: &mut Tally, timer: Timer) {
    let gic = dispatch::gic();
    let name = timer.name();
    let intid = timer.intid();
    let frequency = wait::frequency();
    let period = frequency / PERIOD_DIVISOR;
    UNDER_TEST.store(u8::from(timer == Timer::Physical), Ordering::Relaxed);
    PERIOD.store(period, Ordering::Relaxed);

    timer.set_ctl(0);
    gic.configure(intid, PRIORITY, false);
    gic.set_enabled(intid, true);
    wait::use_wake_timer(timer.other());
    dispatch::set_handler(handler);

    let start = timer.now();
    timer.set_tval(period as u32);
    timer.set_ctl(CTL_ENABLE);
    unmask_irqs();
    let all = wait::until(
        || FIRED.load(Ordering::Relaxed) >= INTERRUPTS,
        TIMEOUT_SECONDS * frequency,
    );
    mask_irqs();
    let elapsed = timer.now() - start;
    timer.set_ctl(0);

    let fired = FIRED.load(Ordering::Relaxed);
    tally.check(
        all && fired == INTERRUPTS,
        format_args!(
            "{name}: {fired} of {INTERRUPTS} timer interrupts (INTID {intid}, one every {period} ticks) taken in the IRQ vector, acknowledged and ended, in {elapsed} ticks"
        ),
        format_args!("all {INTERRUPTS} within {TIMEOUT_SECONDS} s"),
    );
    let spread = Spread {
        count: u64::from(fired - EARLY.load(Ordering::Relaxed)),
        min: LATE_MIN.load(Ordering::Relaxed),
        max: LATE_MAX.load(Ordering::Relaxed),
        sum: LATE_SUM.load(Ordering::Relaxed),
    };
    println_spread(name, &spread);
    let early = EARLY.load(Ordering::Relaxed);
    tally.check(
        early == 0,
        format_args!("{name}: {early} interrupts taken before their deadline"),
        format_args!("none"),
    );
    let not_asserted = NOT_ASSERTED.load(Ordering::Relaxed);
    tally.check(
        not_asserted == 0,
        format_args!("{name}: {not_asserted} interrupts taken with CNT*_CTL.ISTATUS clear"),
        format_args!("ISTATUS set in every handler"),
    );
    let other = OTHER.load(Ordering::Relaxed);
    tally.check(
        other == 0,
        format_args!(
            "{name}: {other} other interrupts (last INTID {})",
            OTHER_INTID.load(Ordering::Relaxed)
        ),
        format_args!("only INTID {intid}"),
    );
    // The last handler stopped the timer and ended the interrupt: nothing may be left over.
    wait::spin(frequency / 1000);
    let (pending, active) = (gic.is_pending(intid), gic.is_active(intid));
    let running = gic.running_priority();
    tally.check(
        !pending && !active && running == 0xFF,
        format_args!(
            "{name}: after the last: INTID {intid} pending {pending}, active {active}, running priority {running:#x}"
        ),
        format_args!("neither pending nor active, running priority 0xff"),
    );
    let spurious = dispatch::spurious();
    tally.check(
        spurious == 0,
        format_args!("{name}: {spurious} spurious acknowledges"),
        format_args!("none"),
    );
}

fn println_spread(name: &str, spread: &Spread) {
    veil_guest_rt::println!(
        "irq: {name} spread: lateness from deadline to handler over {} interrupts: {spread}",
        spread.count
    );
}
