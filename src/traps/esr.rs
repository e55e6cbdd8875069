//! Decoding the Exception Syndrome Register (ESR_EL2) — pure, host-tested.
//!
//! Field names follow the Arm ARM (DDI 0487), section D17.2 "ESR_EL2". Only the syndromes Veil
//! acts on get a decoder; every class has a name for log lines and panics.

/// ESR_EL2 as read at an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// EC, bits [31:26]: the exception class.
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// IL, bit [25]: 1 for a 32-bit instruction.
    pub const fn il(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    /// ISS, bits [24:0]: the class-specific syndrome.
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// The class's architectural name.
    pub fn class_name(self) -> &'static str {
        class_name(self.ec())
    }
}

/// Exception classes Veil handles or names (ESR_ELx.EC).
pub mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const WFX: u8 = 0x01;
    pub const FP_ASIMD: u8 = 0x07;
    pub const ILLEGAL_STATE: u8 = 0x0e;
    pub const SVC64: u8 = 0x15;
    pub const HVC64: u8 = 0x16;
    pub const SMC64: u8 = 0x17;
    pub const SYS64: u8 = 0x18;
    pub const SVE: u8 = 0x19;
    pub const PAC: u8 = 0x09;
    pub const IABT_LOWER: u8 = 0x20;
    pub const IABT_CURRENT: u8 = 0x21;
    pub const PC_ALIGN: u8 = 0x22;
    pub const DABT_LOWER: u8 = 0x24;
    pub const DABT_CURRENT: u8 = 0x25;
    pub const SP_ALIGN: u8 = 0x26;
    pub const SERROR: u8 = 0x2f;
    pub const BRK64: u8 = 0x3c;
}

/// The architectural name of exception class `ec`.
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "Unknown reason",
        0x01 => "WFI/WFE",
        0x03 => "MCR/MRC (CP15)",
        0x04 => "MCRR/MRRC (CP15)",
        0x05 => "MCR/MRC (CP14)",
        0x06 => "LDC/STC (CP14)",
        0x07 => "SVE/SIMD/FP access",
        0x09 => "Pointer authentication",
        0x0a => "LD64B/ST64B",
        0x0c => "MRRC (CP14)",
        0x0d => "Branch target",
        0x0e => "Illegal execution state",
        0x11 => "SVC (AArch32)",
        0x12 => "HVC (AArch32)",
        0x13 => "SMC (AArch32)",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "MSR/MRS/system instruction",
        0x19 => "SVE access",
        0x1c => "Pointer authentication failure",
        0x1d => "SME access",
        0x20 => "Instruction abort from a lower EL",
        0x21 => "Instruction abort at EL2",
        0x22 => "PC alignment fault",
        0x24 => "Data abort from a lower EL",
        0x25 => "Data abort at EL2",
        0x26 => "SP alignment fault",
        0x28 => "FP exception (AArch32)",
        0x2c => "FP exception (AArch64)",
        0x2f => "SError",
        0x30 => "Breakpoint from a lower EL",
        0x31 => "Breakpoint at EL2",
        0x32 => "Software step from a lower EL",
        0x33 => "Software step at EL2",
        0x34 => "Watchpoint from a lower EL",
        0x35 => "Watchpoint at EL2",
        0x38 => "BKPT (AArch32)",
        0x3c => "BRK (AArch64)",
        _ => "Reserved exception class",
    }
}

/// Data abort syndrome (EC 0x24/0x25), ISS fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// ISV: the fields from SAS to AR describe the access. Without it the instruction must be
    /// decoded from guest memory.
    pub isv: bool,
    /// SAS as an access size in bytes (1, 2, 4, 8).
    pub size: u8,
    /// SSE: the loaded value must be sign-extended.
    pub sign_extend: bool,
    /// SRT: the transfer register (31 = XZR).
    pub register: u8,
    /// SF: the transfer register is 64-bit (X), else 32-bit (W).
    pub sixty_four: bool,
    /// AR: acquire/release semantics.
    pub acquire_release: bool,
    /// FnV: FAR_EL2 is not valid.
    pub far_not_valid: bool,
    /// EA: external abort.
    pub external: bool,
    /// CM: a cache maintenance instruction faulted.
    pub cache_maintenance: bool,
    /// S1PTW: the fault happened on a stage-1 table walk.
    pub stage1_walk: bool,
    /// WnR: a write (1) or a read (0).
    pub write: bool,
    /// DFSC: the fault status code.
    pub status: u8,
}

impl DataAbort {
    pub const fn decode(iss: u32) -> Self {
        DataAbort {
            isv: iss & (1 << 24) != 0,
            size: 1 << ((iss >> 22) & 0b11),
            sign_extend: iss & (1 << 21) != 0,
            register: ((iss >> 16) & 0x1f) as u8,
            sixty_four: iss & (1 << 15) != 0,
            acquire_release: iss & (1 << 14) != 0,
            far_not_valid: iss & (1 << 10) != 0,
            external: iss & (1 << 9) != 0,
            cache_maintenance: iss & (1 << 8) != 0,
            stage1_walk: iss & (1 << 7) != 0,
            write: iss & (1 << 6) != 0,
            status: (iss & 0x3f) as u8,
        }
    }

    /// DFSC 0b0001LL: a translation fault at level LL (no stage-2 mapping).
    pub const fn is_translation_fault(&self) -> bool {
        self.status & 0b11_1100 == 0b00_0100
    }

    /// DFSC 0b0011LL: a permission fault at level LL.
    pub const fn is_permission_fault(&self) -> bool {
        self.status & 0b11_1100 == 0b00_1100
    }
}

/// Sign- or zero-extends a loaded MMIO value as the faulting load would have, per SSE and SF.
pub const fn extend_load(value: u64, size: u8, sign_extend: bool, sixty_four: bool) -> u64 {
    // The loaded bytes at the top of the register, then shifted back down: arithmetically
    // when sign-extending, logically otherwise. Two shifts, no masks.
    let shift = if size >= 8 { 0 } else { 64 - 8 * size as u32 };
    let extended = if sign_extend {
        ((value << shift) as i64 >> shift) as u64
    } else {
        (value << shift) >> shift
    };
    if sixty_four {
        extended
    } else {
        extended & 0xffff_ffff
    }
}

/// Trapped MSR/MRS or system instruction syndrome (EC 0x18), ISS fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub encoding: SysRegEncoding,
    /// Rt: the general-purpose register (31 = XZR).
    pub register: u8,
    /// Direction: true for MRS (a read into Rt).
    pub read: bool,
}

/// A system register's (op0, op1, CRn, CRm, op2) coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysRegEncoding {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysRegEncoding {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysRegEncoding {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }
}

impl core::fmt::Display for SysRegEncoding {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }
}

impl SysRegAccess {
    pub const fn decode(iss: u32) -> Self {
        SysRegAccess {
            encoding: SysRegEncoding {
                op0: ((iss >> 20) & 0b11) as u8,
                op2: ((iss >> 17) & 0b111) as u8,
                op1: ((iss >> 14) & 0b111) as u8,
                crn: ((iss >> 10) & 0xf) as u8,
                crm: ((iss >> 1) & 0xf) as u8,
            },
            register: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 != 0,
        }
    }
}

/// WFI/WFE syndrome (EC 0x01): TI bits [1:0], 0b00 = WFI, 0b01 = WFE.
pub const fn wfx_is_wfe(iss: u32) -> bool {
    iss & 0b11 == 0b01
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // An HVC #0 from AArch64: EC 0x16, IL 1, ISS 0.
        let esr = Esr(0x5a00_0000);
        assert_eq!(esr.ec(), ec::HVC64);
        assert!(esr.il());
        assert_eq!(esr.iss(), 0);
        assert_eq!(esr.class_name(), "HVC (AArch64)");
        assert_eq!(class_name(0x3f), "Reserved exception class");
    }

    #[test]
    fn data_abort_str_w1() {
        // STR w1, [x0] to an unmapped IPA: ISV, SAS=2 (word), SRT=1, WnR, DFSC = level-2
        // translation fault.
        let iss = (1 << 24) | (2 << 22) | (1 << 16) | (1 << 6) | 0b000110;
        let da = DataAbort::decode(iss);
        assert!(da.isv && da.write && !da.sign_extend && !da.sixty_four);
        assert_eq!((da.size, da.register, da.status), (4, 1, 0b000110));
        assert!(da.is_translation_fault() && !da.is_permission_fault());
    }

    #[test]
    fn data_abort_every_size_and_flag() {
        for sas in 0..4u32 {
            for srt in [0u32, 17, 30, 31] {
                let iss = (1 << 24)
                    | (sas << 22)
                    | (1 << 21)
                    | (srt << 16)
                    | (1 << 15)
                    | (1 << 14)
                    | 0b001111;
                let da = DataAbort::decode(iss);
                assert_eq!(da.size, 1 << sas);
                assert_eq!(da.register as u32, srt);
                assert!(da.sign_extend && da.sixty_four && da.acquire_release && !da.write);
                assert!(da.is_permission_fault());
            }
        }
        let da = DataAbort::decode((1 << 10) | (1 << 9) | (1 << 8) | (1 << 7));
        assert!(
            !da.isv && da.far_not_valid && da.external && da.cache_maintenance && da.stage1_walk
        );
    }

    #[test]
    fn load_extension() {
        assert_eq!(extend_load(0x80, 1, false, true), 0x80);
        assert_eq!(extend_load(0x80, 1, true, true), 0xffff_ffff_ffff_ff80);
        assert_eq!(extend_load(0x80, 1, true, false), 0xffff_ff80);
        assert_eq!(extend_load(0x7fff, 2, true, true), 0x7fff);
        assert_eq!(extend_load(0x8000, 2, true, true), 0xffff_ffff_ffff_8000);
        assert_eq!(
            extend_load(0x1234_8000_0000, 4, true, true),
            0xffff_ffff_8000_0000
        );
        assert_eq!(
            extend_load(0xdead_beef_0000_0001, 8, true, true),
            0xdead_beef_0000_0001
        );
        assert_eq!(extend_load(0xdead_beef_0000_0001, 8, false, false), 1);
        // Bytes above the access size are dropped even without sign extension.
        assert_eq!(extend_load(0xffff_ff01, 1, false, true), 0x01);
        // Against the definition, for every width and flag, on values with every top bit.
        let mut rng = crate::test_rng::Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let x = rng.next();
            for size in [1u8, 2, 4, 8] {
                for (sign, sf) in [(false, false), (false, true), (true, false), (true, true)] {
                    let bits = size as u32 * 8;
                    let kept = if bits == 64 { x } else { x & ((1 << bits) - 1) };
                    let top = bits < 64 && kept >> (bits - 1) != 0;
                    let wide = if sign && top { kept | !0 << bits } else { kept };
                    let want = if sf { wide } else { wide & 0xffff_ffff };
                    assert_eq!(
                        extend_load(x, size, sign, sf),
                        want,
                        "{x:#x} {size} {sign} {sf}"
                    );
                }
            }
        }
    }

    #[test]
    fn sysreg_mrs_id_aa64pfr0() {
        // MRS x3, ID_AA64PFR0_EL1 = S3_0_C0_C4_0.
        let iss = (3 << 20) | (0 << 17) | (0 << 14) | (0 << 10) | (3 << 5) | (4 << 1) | 1;
        let access = SysRegAccess::decode(iss);
        assert_eq!(access.encoding, SysRegEncoding::new(3, 0, 0, 4, 0));
        assert_eq!(access.register, 3);
        assert!(access.read);
        assert_eq!(std::format!("{}", access.encoding), "S3_0_C0_C4_0");
        // MSR ACTLR_EL1, x30 = S3_0_C1_C0_1, a write.
        let iss = (3 << 20) | (1 << 17) | (1 << 10) | (30 << 5);
        let access = SysRegAccess::decode(iss);
        assert_eq!(access.encoding, SysRegEncoding::new(3, 0, 1, 0, 1));
        assert_eq!((access.register, access.read), (30, false));
    }

    #[test]
    fn wfx() {
        assert!(!wfx_is_wfe(0));
        assert!(wfx_is_wfe(1));
    }
}
