//! The generic timer as Veil uses it: the system counter and its frequency.
//!
//! Guests own their EL1 virtual timer (offset per VM by CNTVOFF_EL2, see `vm::Vm`); their EL1
//! physical timer traps (CNTHCTL_EL2.EL1PCEN = 0, set in `cpu::el2`).

/// The system counter (CNTPCT_EL0).
pub fn physical_count() -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        use tock_registers::interfaces::Readable;
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        aarch64_cpu::registers::CNTPCT_EL0.get()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        0
    }
}

/// The counter's frequency in Hz (CNTFRQ_EL0, set by firmware). Never hard-coded: QEMU virt runs
/// at 1 GHz (recent QEMU), raspi4b at 62.5 MHz, a real Pi 4 at 54 MHz.
pub fn frequency() -> u64 {
    #[cfg(target_arch = "aarch64")]
    {
        use tock_registers::interfaces::Readable;
        aarch64_cpu::registers::CNTFRQ_EL0.get()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        0
    }
}

pub mod ptimer;

use crate::vm::vcpu::Vcpu;
use ptimer::Register;

/// INTID of the guest's EL1 physical timer on the virtual board.
const GUEST_PTIMER_INTID: u32 = crate::vm::virtual_board::PHYS_TIMER_INTID;

/// A trapped guest access to CNTP_CTL/CVAL/TVAL_EL0, emulated on the vCPU's model; a write
/// moves the virtual line to the model's level and asks the exit path to reprogram this CPU's
/// EL2 physical timer (see `cpu::sched`). Returns the value for a read.
pub fn guest_ptimer_access(vcpu: &mut Vcpu, reg: Register, write: Option<u64>) -> u64 {
    let now = physical_count();
    match write {
        None => vcpu.ptimer.read(reg, now),
        Some(value) => {
            vcpu.ptimer.write(reg, value, now);
            update_ptimer_line(vcpu, now);
            vcpu.rearm_timer = true;
            0
        }
    }
}

/// Drives the vCPU's virtual INTID 30 with its physical timer's level at `now`.
pub fn update_ptimer_line(vcpu: &mut Vcpu, now: u64) {
    let level = vcpu.ptimer.level(now);
    if let Ok(kicks) = vcpu
        .vm
        .irq
        .vgic
        .set_level(GUEST_PTIMER_INTID, vcpu.index, level)
    {
        vcpu.vm.irq.deliver(kicks);
    }
    vcpu.vm.irq.mark_dirty(vcpu.index);
}

/// Arms this CPU's EL2 physical timer for `deadline`, or stops it.
pub fn program_hyp_timer(deadline: Option<u64>) {
    match deadline {
        Some(d) => arch::arm_hyp_timer(d),
        None => arch::disarm_hyp_timer(),
    }
}

/// Stops this CPU's EL2 physical timer.
pub fn disarm_hyp_timer() {
    arch::disarm_hyp_timer();
}

/// Turns off the EL1 virtual timer of this CPU (a vCPU that left it running is gone).
pub fn disable_virtual_timer() {
    arch::disable_virtual_timer();
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use aarch64_cpu::registers::{CNTHP_CTL_EL2, CNTV_CTL_EL0};
    use core::arch::asm;
    use tock_registers::interfaces::Writeable;

    /// CNTHP_CVAL_EL2 = `deadline`, CNTHP_CTL_EL2 = ENABLE (IMASK clear): PPI 26 at `deadline`.
    pub fn arm_hyp_timer(deadline: u64) {
        // SAFETY: programs this CPU's EL2 physical timer, which only Veil uses.
        unsafe { asm!("msr cnthp_cval_el2, {}", in(reg) deadline, options(nostack)) };
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
    }

    pub fn disarm_hyp_timer() {
        CNTHP_CTL_EL2.set(0);
    }

    pub fn disable_virtual_timer() {
        CNTV_CTL_EL0.set(0);
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    pub fn arm_hyp_timer(_deadline: u64) {}
    pub fn disarm_hyp_timer() {}
    pub fn disable_virtual_timer() {}
}
