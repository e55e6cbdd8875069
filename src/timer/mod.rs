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
