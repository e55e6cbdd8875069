//! The CPU a guest is shown: sanitized ID registers, computed once per VM — pure, host-tested.
//!
//! With HCR_EL2.TID3 every read of the ID register space (op0=3, op1=0, CRn=0, CRm=1..7) traps.
//! Veil answers from a table filled at VM creation: the host CPU's values with every feature
//! Veil does not virtualize hidden (set to "not implemented"), so a guest never discovers
//! something it then cannot use. A trapped read is then one table lookup.

use crate::traps::esr::SysRegEncoding;

/// 7 CRm values x 8 op2 values.
pub const ID_REG_COUNT: usize = 56;

/// The guest's view of the ID register space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdRegs {
    values: [u64; ID_REG_COUNT],
}

/// Where `enc` sits in the ID register space, if it is there.
pub const fn index_of(enc: SysRegEncoding) -> Option<usize> {
    if enc.op0 == 3 && enc.op1 == 0 && enc.crn == 0 && enc.crm >= 1 && enc.crm <= 7 {
        Some((enc.crm as usize - 1) * 8 + enc.op2 as usize)
    } else {
        None
    }
}

/// Clears the 4-bit ID field at `shift`: "not implemented" for every feature field Veil hides.
const fn hide(value: u64, shift: u32) -> u64 {
    value & !(0xf << shift)
}

/// Sets the 4-bit ID field at `shift` to at most `max`.
const fn cap(value: u64, shift: u32, max: u64) -> u64 {
    let field = (value >> shift) & 0xf;
    if field > max {
        (value & !(0xf << shift)) | (max << shift)
    } else {
        value
    }
}

// Indices of the registers Veil edits (CRm, op2) -> (CRm-1)*8+op2.
const ID_AA64PFR0: usize = 3 * 8;
const ID_AA64PFR1: usize = 3 * 8 + 1;
const ID_AA64ZFR0: usize = 3 * 8 + 4;
const ID_AA64SMFR0: usize = 3 * 8 + 5;
const ID_AA64DFR0: usize = 4 * 8;
const ID_AA64DFR1: usize = 4 * 8 + 1;
const ID_AA64AFR0: usize = 4 * 8 + 4;
const ID_AA64AFR1: usize = 4 * 8 + 5;
const ID_AA64ISAR1: usize = 5 * 8 + 1;
const ID_AA64ISAR2: usize = 5 * 8 + 2;
const ID_AA64MMFR0: usize = 6 * 8;
const ID_AA64MMFR1: usize = 6 * 8 + 1;
const ID_AA64MMFR2: usize = 6 * 8 + 2;
const ID_DFR0: usize = 2;

/// What the guest's interrupt controller looks like, which decides ID_AA64PFR0_EL1.GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    V2,
    V3,
}

impl IdRegs {
    /// Builds the guest view from the host's raw values (`host[i]` for index `i`).
    pub fn sanitize(host: &[u64; ID_REG_COUNT], gic: GuestGic, guest_pa_range: u64) -> Self {
        let mut v = *host;

        // ID_AA64PFR0_EL1: no EL2 or EL3 (the guest is not a hypervisor and has no firmware
        // to call but through Veil), no SVE (its state is not context-switched), no RAS, no
        // Secure EL2, no MPAM, no AMU, no RME. GIC = 1 only when the guest has a GICv3 system
        // register interface.
        let mut pfr0 = v[ID_AA64PFR0];
        for shift in [8, 12, 28, 32, 36, 40, 44, 52] {
            pfr0 = hide(pfr0, shift);
        }
        pfr0 = hide(pfr0, 24);
        if gic == GuestGic::V3 {
            pfr0 |= 1 << 24;
        }
        v[ID_AA64PFR0] = pfr0;

        // ID_AA64PFR1_EL1: no MTE (tags are not switched), no RAS_frac/MPAM_frac, no SME,
        // no NMI, no GCS, no THE; BTI and SSBS are the guest's own business and stay.
        let mut pfr1 = v[ID_AA64PFR1];
        for shift in [8, 12, 16, 24, 28, 32, 36, 40, 44, 48] {
            pfr1 = hide(pfr1, shift);
        }
        v[ID_AA64PFR1] = pfr1;

        // SVE and SME feature registers: nothing to describe.
        v[ID_AA64ZFR0] = 0;
        v[ID_AA64SMFR0] = 0;

        // ID_AA64DFR0_EL1: debug architecture as is (it is mandatory), but no PMU, SPE,
        // trace, TRBE, BRBE or multi-threaded PMU: their registers trap to RAZ/WI.
        let mut dfr0 = v[ID_AA64DFR0];
        for shift in [4, 8, 32, 40, 44, 48, 52, 56] {
            dfr0 = hide(dfr0, shift);
        }
        v[ID_AA64DFR0] = dfr0;
        v[ID_AA64DFR1] = 0;
        // ID_DFR0_EL1 (AArch32 view): no PMU, no trace.
        let mut dfr0_32 = v[ID_DFR0];
        for shift in [12, 24, 28] {
            dfr0_32 = hide(dfr0_32, shift);
        }
        v[ID_DFR0] = dfr0_32;

        // Auxiliary feature registers are IMPLEMENTATION DEFINED: show none.
        v[ID_AA64AFR0] = 0;
        v[ID_AA64AFR1] = 0;

        // Pointer authentication: the keys are not context-switched, so hide APA, API, GPA,
        // GPI (ISAR1) and APA3, GPA3 (ISAR2). HCR_EL2.API/APK stay 0 and trap any use.
        let mut isar1 = v[ID_AA64ISAR1];
        for shift in [4, 8, 24, 28] {
            isar1 = hide(isar1, shift);
        }
        v[ID_AA64ISAR1] = isar1;
        let mut isar2 = v[ID_AA64ISAR2];
        for shift in [8, 12] {
            isar2 = hide(isar2, shift);
        }
        v[ID_AA64ISAR2] = isar2;

        // ID_AA64MMFR0_EL1: PARange at most what stage 2 gives the guest; no FGT and no ECV
        // (both are EL2 controls).
        let mut mmfr0 = cap(v[ID_AA64MMFR0], 0, guest_pa_range);
        for shift in [56, 60] {
            mmfr0 = hide(mmfr0, shift);
        }
        v[ID_AA64MMFR0] = mmfr0;
        // ID_AA64MMFR1_EL1: no VHE, no LORegions (HCR_EL2.TLOR would be needed).
        let mut mmfr1 = v[ID_AA64MMFR1];
        for shift in [8, 16] {
            mmfr1 = hide(mmfr1, shift);
        }
        v[ID_AA64MMFR1] = mmfr1;
        // ID_AA64MMFR2_EL1: no nested virtualization.
        v[ID_AA64MMFR2] = hide(v[ID_AA64MMFR2], 24);

        IdRegs { values: v }
    }

    /// The table in index order ([`index_of`]), for the exception vectors' fast path.
    pub fn as_ptr(&self) -> *const u64 {
        self.values.as_ptr()
    }

    /// The guest's value of the ID register at `enc`, if `enc` is in the ID space.
    pub fn read(&self, enc: SysRegEncoding) -> Option<u64> {
        index_of(enc).map(|i| self.values[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    fn all_ones() -> [u64; ID_REG_COUNT] {
        [0x1111_1111_1111_1111; ID_REG_COUNT]
    }

    fn get(regs: &IdRegs, crm: u8, op2: u8) -> u64 {
        regs.read(SysRegEncoding::new(3, 0, 0, crm, op2)).unwrap()
    }

    #[test]
    fn hides_el2_el3_sve_and_shows_the_rest() {
        let regs = IdRegs::sanitize(&all_ones(), GuestGic::V2, 0b001);
        let pfr0 = get(&regs, 4, 0);
        for (shift, what) in [
            (8, "EL2"),
            (12, "EL3"),
            (32, "SVE"),
            (28, "RAS"),
            (24, "GIC"),
            (44, "AMU"),
        ] {
            assert_eq!(field(pfr0, shift), 0, "{what} must be hidden");
        }
        // EL0 and EL1 fields (AArch64 and AArch32 support), FP and AdvSIMD stay.
        for shift in [0, 4, 16, 20] {
            assert_eq!(field(pfr0, shift), 1);
        }
        assert_eq!(get(&regs, 4, 4), 0, "ID_AA64ZFR0_EL1");
    }

    #[test]
    fn gic_field_follows_the_guest_gic() {
        let regs = IdRegs::sanitize(&[0; ID_REG_COUNT], GuestGic::V3, 0b001);
        assert_eq!(field(get(&regs, 4, 0), 24), 1);
        let regs = IdRegs::sanitize(&all_ones(), GuestGic::V2, 0b001);
        assert_eq!(field(get(&regs, 4, 0), 24), 0);
    }

    #[test]
    fn pmu_spe_trace_and_pauth_hidden() {
        let regs = IdRegs::sanitize(&all_ones(), GuestGic::V3, 0b001);
        let dfr0 = get(&regs, 5, 0);
        assert_eq!(field(dfr0, 0), 1, "DebugVer stays");
        assert_eq!(field(dfr0, 8), 0, "PMUVer");
        assert_eq!(field(dfr0, 32), 0, "PMSVer");
        let isar1 = get(&regs, 6, 1);
        for shift in [4, 8, 24, 28] {
            assert_eq!(field(isar1, shift), 0);
        }
        assert_eq!(field(isar1, 0), 1, "DPB stays");
    }

    #[test]
    fn pa_range_is_capped_not_raised() {
        let mut host = [0; ID_REG_COUNT];
        host[ID_AA64MMFR0] = 0b101;
        let regs = IdRegs::sanitize(&host, GuestGic::V3, 0b001);
        assert_eq!(field(get(&regs, 7, 0), 0), 0b001);
        host[ID_AA64MMFR0] = 0b000;
        let regs = IdRegs::sanitize(&host, GuestGic::V3, 0b001);
        assert_eq!(field(get(&regs, 7, 0), 0), 0b000);
    }

    #[test]
    fn only_the_id_space_is_answered() {
        let regs = IdRegs::sanitize(&all_ones(), GuestGic::V3, 0b001);
        assert!(
            regs.read(SysRegEncoding::new(3, 0, 0, 0, 0)).is_none(),
            "MIDR is not TID3"
        );
        assert!(regs.read(SysRegEncoding::new(3, 0, 0, 8, 0)).is_none());
        assert!(regs.read(SysRegEncoding::new(3, 1, 0, 1, 0)).is_none());
        assert_eq!(index_of(SysRegEncoding::new(3, 0, 0, 7, 7)), Some(55));
        // Registers Veil does not edit pass through.
        assert_eq!(get(&regs, 6, 0), 0x1111_1111_1111_1111, "ID_AA64ISAR0_EL1");
    }
}
