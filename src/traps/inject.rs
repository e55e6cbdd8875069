//! Injecting synchronous exceptions into a guest's EL1, as the hardware would take them.
//!
//! The pure part computes what the CPU would do on taking an exception to EL1 — the vector
//! offset from the interrupted PSTATE, the new PSTATE, what lands in ELR/SPSR/ESR/FAR_EL1 —
//! so it is tested on the host; the register writes happen in `_arch`.

use super::context::GuestRegs;

/// ESR_ELx.EC values Veil injects.
pub mod class {
    /// Unknown reason: what an UNDEFINED instruction raises.
    pub const UNKNOWN: u64 = 0x00;
    /// Instruction abort from the same EL / a lower EL.
    pub const IABT_CURRENT: u64 = 0x21;
    pub const IABT_LOWER: u64 = 0x20;
    /// Data abort from the same EL / a lower EL.
    pub const DABT_CURRENT: u64 = 0x25;
    pub const DABT_LOWER: u64 = 0x24;
}

/// ESR.IL: the trapped instruction was 32 bits wide (always, for AArch64).
const ESR_IL: u64 = 1 << 25;
/// Fault status code "synchronous external abort, not on a translation table walk".
pub const FSC_SYNC_EXTERNAL_ABORT: u64 = 0b01_0000;

// PSTATE / SPSR_EL2 bits.
const SPSR_M_MASK: u64 = 0b1_1111;
const SPSR_M_EL0T: u64 = 0b0_0000;
const SPSR_M_EL1T: u64 = 0b0_0100;
const SPSR_M_EL1H: u64 = 0b0_0101;
const SPSR_M_AARCH32: u64 = 0b1_0000;
const SPSR_DAIF: u64 = 0b1111 << 6;
const SPSR_PAN: u64 = 1 << 22;
const SPSR_SSBS: u64 = 1 << 12;
const SPSR_DIT: u64 = 1 << 24;
/// SCTLR_EL1.SPAN (bit 23): when 0, taking an exception to EL1 sets PSTATE.PAN.
const SCTLR_SPAN: u64 = 1 << 23;
/// SCTLR_EL1.DSSBS (bit 44): PSTATE.SSBS on exception entry.
const SCTLR_DSSBS: u64 = 1 << 44;

/// Everything an exception to EL1 changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub esr_el1: u64,
    pub far_el1: Option<u64>,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    /// Where the guest resumes: VBAR_EL1 + the vector offset.
    pub pc: u64,
    /// The guest's PSTATE at its handler.
    pub pstate: u64,
}

/// The offset into the EL1 vector table for a synchronous exception taken from `spsr`'s state.
pub const fn sync_vector_offset(spsr: u64) -> u64 {
    if spsr & SPSR_M_AARCH32 != 0 {
        return 0x600;
    }
    match spsr & SPSR_M_MASK {
        SPSR_M_EL0T => 0x400,
        SPSR_M_EL1T => 0x000,
        _ => 0x200, // EL1h
    }
}

/// Whether the interrupted code ran at EL1 (an abort is then "current EL").
const fn from_el1(spsr: u64) -> bool {
    spsr & SPSR_M_AARCH32 == 0 && spsr & 0b1100 == 0b0100
}

/// Computes the exception entry for `esr` at the guest's current state.
pub fn compute(
    regs: &GuestRegs,
    vbar_el1: u64,
    sctlr_el1: u64,
    esr_el1: u64,
    far_el1: Option<u64>,
) -> Injection {
    let old = regs.spsr;
    let mut pstate = SPSR_M_EL1H | SPSR_DAIF | (old & (SPSR_PAN | SPSR_DIT));
    if sctlr_el1 & SCTLR_SPAN == 0 {
        pstate |= SPSR_PAN;
    }
    if sctlr_el1 & SCTLR_DSSBS != 0 {
        pstate |= SPSR_SSBS;
    }
    Injection {
        esr_el1,
        far_el1,
        elr_el1: regs.pc,
        spsr_el1: old,
        pc: vbar_el1.wrapping_add(sync_vector_offset(old)),
        pstate,
    }
}

/// ESR_EL1 for an UNDEFINED instruction.
pub const fn undef_esr() -> u64 {
    (class::UNKNOWN << 26) | ESR_IL
}

/// ESR_EL1 for a synchronous external abort on a data access (`write` = WnR) at the guest's
/// current state.
pub const fn data_abort_esr(spsr: u64, write: bool) -> u64 {
    let ec = if from_el1(spsr) {
        class::DABT_CURRENT
    } else {
        class::DABT_LOWER
    };
    (ec << 26) | ESR_IL | if write { 1 << 6 } else { 0 } | FSC_SYNC_EXTERNAL_ABORT
}

/// ESR_EL1 for a synchronous external abort on an instruction fetch.
pub const fn instruction_abort_esr(spsr: u64) -> u64 {
    let ec = if from_el1(spsr) {
        class::IABT_CURRENT
    } else {
        class::IABT_LOWER
    };
    (ec << 26) | ESR_IL | FSC_SYNC_EXTERNAL_ABORT
}

/// Applies an injection: EL1's exception registers, then the guest's PC and PSTATE.
pub fn apply(regs: &mut GuestRegs, injection: &Injection) {
    arch::write_el1_exception_registers(injection);
    regs.pc = injection.pc;
    regs.spsr = injection.pstate;
}

/// The guest's VBAR_EL1.
pub fn guest_vbar() -> u64 {
    arch::read_vbar_sctlr().0
}

/// Makes the guest take an UNDEFINED instruction exception at its current instruction.
pub fn undefined_instruction(regs: &mut GuestRegs) {
    let (vbar, sctlr) = arch::read_vbar_sctlr();
    let injection = compute(regs, vbar, sctlr, undef_esr(), None);
    apply(regs, &injection);
}

/// Makes the guest take a synchronous external abort for its data access to `far`.
pub fn data_abort(regs: &mut GuestRegs, far: u64, write: bool) {
    let (vbar, sctlr) = arch::read_vbar_sctlr();
    let injection = compute(
        regs,
        vbar,
        sctlr,
        data_abort_esr(regs.spsr, write),
        Some(far),
    );
    apply(regs, &injection);
}

/// Makes the guest take a synchronous external abort for fetching an instruction at `far`.
pub fn instruction_abort(regs: &mut GuestRegs, far: u64) {
    let (vbar, sctlr) = arch::read_vbar_sctlr();
    let injection = compute(
        regs,
        vbar,
        sctlr,
        instruction_abort_esr(regs.spsr),
        Some(far),
    );
    apply(regs, &injection);
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Injection;
    use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1};
    use tock_registers::interfaces::{Readable, Writeable};

    pub fn read_vbar_sctlr() -> (u64, u64) {
        (VBAR_EL1.get(), SCTLR_EL1.get())
    }

    pub fn write_el1_exception_registers(i: &Injection) {
        ESR_EL1.set(i.esr_el1);
        if let Some(far) = i.far_el1 {
            FAR_EL1.set(far);
        }
        ELR_EL1.set(i.elr_el1);
        SPSR_EL1.set(i.spsr_el1);
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    use super::Injection;
    pub fn read_vbar_sctlr() -> (u64, u64) {
        (0, 0)
    }
    pub fn write_el1_exception_registers(_i: &Injection) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(pc: u64, spsr: u64) -> GuestRegs {
        GuestRegs {
            pc,
            spsr,
            ..Default::default()
        }
    }

    #[test]
    fn vector_offsets() {
        assert_eq!(sync_vector_offset(0x3c5), 0x200, "EL1h");
        assert_eq!(sync_vector_offset(0x3c4), 0x000, "EL1t");
        assert_eq!(sync_vector_offset(0x000), 0x400, "EL0 AArch64");
        assert_eq!(sync_vector_offset(0x010), 0x600, "EL0 AArch32");
    }

    #[test]
    fn undef_from_el1h() {
        let r = regs(0x4008_1234, 0x0000_0005 | (1 << 22));
        let i = compute(&r, 0x4009_0000, SCTLR_SPAN, undef_esr(), None);
        assert_eq!(i.pc, 0x4009_0200);
        assert_eq!(i.elr_el1, 0x4008_1234);
        assert_eq!(i.spsr_el1, r.spsr);
        assert_eq!(i.esr_el1, 0x0200_0000);
        assert_eq!(i.pstate & 0x3c0, 0x3c0, "DAIF masked");
        assert_eq!(i.pstate & 0xf, 0b0101, "EL1h");
        assert_ne!(i.pstate & SPSR_PAN, 0, "PAN is kept when SPAN=1");
        assert_eq!(i.far_el1, None);
    }

    #[test]
    fn pan_set_when_span_clear_and_ssbs_from_dssbs() {
        let r = regs(0x1000, 0x0);
        let i = compute(&r, 0x8000, SCTLR_DSSBS, undef_esr(), None);
        assert_ne!(i.pstate & SPSR_PAN, 0);
        assert_ne!(i.pstate & SPSR_SSBS, 0);
        assert_eq!(i.pc, 0x8400);
    }

    #[test]
    fn abort_syndromes() {
        // From EL1: "current EL" classes; from EL0: "lower EL".
        assert_eq!(data_abort_esr(0x3c5, true) >> 26, class::DABT_CURRENT);
        assert_eq!(data_abort_esr(0x0, false) >> 26, class::DABT_LOWER);
        assert_eq!(
            data_abort_esr(0x3c5, true) & 0x7f,
            (1 << 6) | FSC_SYNC_EXTERNAL_ABORT
        );
        assert_eq!(instruction_abort_esr(0x3c4) >> 26, class::IABT_CURRENT);
        assert_eq!(instruction_abort_esr(0x0) >> 26, class::IABT_LOWER);
        let r = regs(0x4000_0000, 0x3c5);
        let i = compute(&r, 0x0, 0, data_abort_esr(r.spsr, false), Some(0x1000_0000));
        assert_eq!(i.far_el1, Some(0x1000_0000));
    }
}
