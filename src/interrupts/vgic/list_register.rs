//! List registers: the hardware's slots for the virtual interrupts a vCPU can see.
//!
//! The GIC virtual CPU interface signals and acknowledges virtual interrupts from a handful of
//! list registers (4 on QEMU) that the hypervisor fills: GICv2's 32-bit `GICH_LR<n>` (IHI 0048B,
//! virtual interface control registers) and GICv3's 64-bit `ICH_LR<n>_EL2` (IHI 0069). This
//! module is only their formats: [`ListRegister`] is the decoded, format-neutral content, with an
//! encoder and a decoder for each. Which interrupts go into them, and what their state means
//! once the guest has run, is the business of `super::lr_sync`. The integrator reads and writes
//! the real registers and converts with these functions, behind [`ListRegisters`]: what
//! `lr_sync` reads and writes, so that it touches only the registers it uses.

/// The state field of a list register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LrState {
    #[default]
    Invalid,
    Pending,
    Active,
    PendingActive,
}

impl LrState {
    /// From the two-bit field (both formats share the encoding).
    pub const fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0b00 => LrState::Invalid,
            0b01 => LrState::Pending,
            0b10 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }

    pub const fn bits(self) -> u64 {
        match self {
            LrState::Invalid => 0b00,
            LrState::Pending => 0b01,
            LrState::Active => 0b10,
            LrState::PendingActive => 0b11,
        }
    }

    pub const fn from_parts(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }

    pub const fn is_pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }

    pub const fn is_active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
}

/// The content of one list register, in either format.
///
/// Fields a format cannot hold are dropped by its encoder (a v2 register keeps 10 bits of
/// INTID and the top 5 bits of priority); the allocator never produces values outside them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListRegister {
    /// The INTID the guest sees.
    pub vintid: u32,
    pub state: LrState,
    /// The 8-bit GIC priority (lower is more urgent).
    pub priority: u8,
    /// Group 1 (else group 0, which a guest may take as a virtual FIQ).
    pub group1: bool,
    /// `Some(physical INTID)` for a hardware-mapped interrupt (HW = 1): the guest's deactivation
    /// also deactivates that physical interrupt.
    pub hw: Option<u32>,
    /// GICv2 only, and only without HW: the CPU that sent this SGI (CPUID field).
    pub source: u8,
    /// Without HW: ask for a maintenance interrupt when the guest deactivates this interrupt.
    pub eoi_maintenance: bool,
}

/// A CPU interface's list registers as the vGIC sees them: the hardware's (the integrator
/// decodes and encodes on the way), or a plain slice of decoded ones.
pub trait ListRegisters {
    /// How many registers there are.
    fn count(&self) -> usize;

    /// Register `i`, or `None` if there is no such register.
    fn read(&self, i: usize) -> Option<ListRegister>;

    /// Sets register `i` (nothing if there is no such register).
    fn write(&mut self, i: usize, lr: ListRegister);
}

impl ListRegisters for [ListRegister] {
    fn count(&self) -> usize {
        self.len()
    }

    fn read(&self, i: usize) -> Option<ListRegister> {
        self.get(i).copied()
    }

    fn write(&mut self, i: usize, lr: ListRegister) {
        if let Some(slot) = self.get_mut(i) {
            *slot = lr;
        }
    }
}

/// GICH_LR fields (IHI 0048B, "GICH_LRn, List Registers").
mod v2 {
    pub const VIRTUAL_ID_MASK: u32 = 0x3ff;
    pub const PHYSICAL_ID_SHIFT: u32 = 10;
    pub const PHYSICAL_ID_MASK: u32 = 0x3ff;
    pub const CPUID_SHIFT: u32 = 10;
    pub const CPUID_MASK: u32 = 0x7;
    pub const EOI: u32 = 1 << 19;
    pub const PRIORITY_SHIFT: u32 = 23;
    /// Priority holds bits [7:3] of the interrupt's priority.
    pub const PRIORITY_MASK: u32 = 0x1f;
    pub const STATE_SHIFT: u32 = 28;
    pub const GRP1: u32 = 1 << 30;
    pub const HW: u32 = 1 << 31;
}

/// ICH_LR<n>_EL2 fields (IHI 0069, "ICH_LR<n>_EL2, Interrupt Controller List Registers").
mod v3 {
    pub const VINTID_MASK: u64 = 0xffff_ffff;
    pub const PINTID_SHIFT: u32 = 32;
    pub const PINTID_MASK: u64 = 0x1fff;
    pub const EOI: u64 = 1 << 41;
    pub const PRIORITY_SHIFT: u32 = 48;
    pub const GROUP: u64 = 1 << 60;
    pub const HW: u64 = 1 << 61;
    pub const STATE_SHIFT: u32 = 62;
}

impl ListRegister {
    /// An empty register.
    pub const INVALID: ListRegister = ListRegister {
        vintid: 0,
        state: LrState::Invalid,
        priority: 0,
        group1: false,
        hw: None,
        source: 0,
        eoi_maintenance: false,
    };

    /// The GICv2 `GICH_LR<n>` value.
    pub fn encode_v2(&self) -> u32 {
        use v2::*;
        let mut raw = self.vintid & VIRTUAL_ID_MASK;
        match self.hw {
            Some(pintid) => raw |= HW | (pintid & PHYSICAL_ID_MASK) << PHYSICAL_ID_SHIFT,
            None => {
                raw |= (u32::from(self.source) & CPUID_MASK) << CPUID_SHIFT;
                if self.eoi_maintenance {
                    raw |= EOI;
                }
            }
        }
        raw |= (u32::from(self.priority >> 3) & PRIORITY_MASK) << PRIORITY_SHIFT;
        raw |= (self.state.bits() as u32) << STATE_SHIFT;
        if self.group1 {
            raw |= GRP1;
        }
        raw
    }

    /// Decodes a GICv2 `GICH_LR<n>` value; the priority comes back with its low 3 bits clear.
    pub fn decode_v2(raw: u32) -> Self {
        use v2::*;
        let hw = raw & HW != 0;
        ListRegister {
            vintid: raw & VIRTUAL_ID_MASK,
            state: LrState::from_bits(u64::from(raw >> STATE_SHIFT)),
            priority: (((raw >> PRIORITY_SHIFT) & PRIORITY_MASK) << 3) as u8,
            group1: raw & GRP1 != 0,
            hw: hw.then_some((raw >> PHYSICAL_ID_SHIFT) & PHYSICAL_ID_MASK),
            source: if hw {
                0
            } else {
                ((raw >> CPUID_SHIFT) & CPUID_MASK) as u8
            },
            eoi_maintenance: !hw && raw & EOI != 0,
        }
    }

    /// The GICv3 `ICH_LR<n>_EL2` value. The source is not part of it: GICv3 SGIs have none.
    pub fn encode_v3(&self) -> u64 {
        use v3::*;
        let mut raw = u64::from(self.vintid) & VINTID_MASK;
        match self.hw {
            Some(pintid) => raw |= HW | (u64::from(pintid) & PINTID_MASK) << PINTID_SHIFT,
            None => {
                if self.eoi_maintenance {
                    raw |= EOI;
                }
            }
        }
        raw |= u64::from(self.priority) << PRIORITY_SHIFT;
        raw |= self.state.bits() << STATE_SHIFT;
        if self.group1 {
            raw |= GROUP;
        }
        raw
    }

    /// Decodes a GICv3 `ICH_LR<n>_EL2` value.
    pub fn decode_v3(raw: u64) -> Self {
        use v3::*;
        let hw = raw & HW != 0;
        ListRegister {
            vintid: (raw & VINTID_MASK) as u32,
            state: LrState::from_bits(raw >> STATE_SHIFT),
            priority: (raw >> PRIORITY_SHIFT) as u8,
            group1: raw & GROUP != 0,
            hw: hw.then_some(((raw >> PINTID_SHIFT) & PINTID_MASK) as u32),
            source: 0,
            eoi_maintenance: !hw && raw & EOI != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [LrState; 4] = [
        LrState::Invalid,
        LrState::Pending,
        LrState::Active,
        LrState::PendingActive,
    ];

    #[test]
    fn v2_field_positions() {
        let lr = ListRegister {
            vintid: 0x3ff,
            state: LrState::PendingActive,
            priority: 0xf8,
            group1: true,
            hw: None,
            source: 7,
            eoi_maintenance: true,
        };
        assert_eq!(
            lr.encode_v2(),
            0x3ff | 7 << 10 | 1 << 19 | 0x1f << 23 | 3 << 28 | 1 << 30
        );
        let hw = ListRegister {
            hw: Some(0x3ff),
            source: 0,
            eoi_maintenance: false,
            ..lr
        };
        assert_eq!(
            hw.encode_v2(),
            0x3ff | 0x3ff << 10 | 0x1f << 23 | 3 << 28 | 1 << 30 | 1 << 31
        );
        // A pending SGI 1 from CPU 2 at priority 0xa0, group 0.
        let sgi = ListRegister {
            vintid: 1,
            state: LrState::Pending,
            priority: 0xa0,
            source: 2,
            ..ListRegister::INVALID
        };
        assert_eq!(sgi.encode_v2(), 0x1 | 2 << 10 | 0x14 << 23 | 1 << 28);
    }

    #[test]
    fn v2_round_trips_at_field_edges() {
        for state in STATES {
            for vintid in [0, 1, 15, 16, 31, 32, 1019, 1023] {
                for priority in [0x00, 0x08, 0x78, 0x80, 0xf0, 0xf8] {
                    for (hw, source, eoi) in [
                        (None, 0, false),
                        (None, 7, true),
                        (Some(16), 0, false),
                        (Some(1023), 0, false),
                    ] {
                        for group1 in [false, true] {
                            let lr = ListRegister {
                                vintid,
                                state,
                                priority,
                                group1,
                                hw,
                                source,
                                eoi_maintenance: eoi,
                            };
                            assert_eq!(ListRegister::decode_v2(lr.encode_v2()), lr, "{lr:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn v2_drops_what_it_cannot_hold() {
        let lr = ListRegister {
            vintid: 0x400 | 5,
            priority: 0xff,
            source: 9,
            ..ListRegister::INVALID
        };
        let back = ListRegister::decode_v2(lr.encode_v2());
        assert_eq!((back.vintid, back.priority, back.source), (5, 0xf8, 1));
        // HW = 1 reuses the CPUID/EOI bits for the physical INTID.
        let raw = 1 << 31 | 1 << 19 | 3 << 10 | 27;
        let d = ListRegister::decode_v2(raw);
        assert_eq!((d.hw, d.source, d.eoi_maintenance), (Some(0x203), 0, false));
    }

    #[test]
    fn v3_field_positions() {
        let lr = ListRegister {
            vintid: 27,
            state: LrState::Pending,
            priority: 0xa0,
            group1: true,
            hw: Some(27),
            source: 0,
            eoi_maintenance: false,
        };
        assert_eq!(
            lr.encode_v3(),
            27 | 27 << 32 | 0xa0 << 48 | 1 << 60 | 1 << 61 | 1 << 62
        );
        let lvl = ListRegister {
            hw: None,
            eoi_maintenance: true,
            state: LrState::Active,
            ..lr
        };
        assert_eq!(
            lvl.encode_v3(),
            27 | 1 << 41 | 0xa0 << 48 | 1 << 60 | 2 << 62
        );
        assert_eq!(ListRegister::INVALID.encode_v3(), 0);
    }

    #[test]
    fn v3_round_trips_at_field_edges() {
        for state in STATES {
            for vintid in [0, 15, 16, 31, 32, 1019, 8191, u32::MAX] {
                for priority in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                    for (hw, eoi) in [
                        (None, false),
                        (None, true),
                        (Some(16), false),
                        (Some(0x1fff), false),
                    ] {
                        for group1 in [false, true] {
                            let lr = ListRegister {
                                vintid,
                                state,
                                priority,
                                group1,
                                hw,
                                source: 0,
                                eoi_maintenance: eoi,
                            };
                            assert_eq!(ListRegister::decode_v3(lr.encode_v3()), lr, "{lr:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn v3_ignores_res0_and_drops_wide_pintid() {
        // NMI (bit 59) and RES0 bits do not leak into the decoded value.
        let d = ListRegister::decode_v3(1 << 59 | 1 << 47 | 1 << 56 | 42);
        assert_eq!(
            d,
            ListRegister {
                vintid: 42,
                ..ListRegister::INVALID
            }
        );
        let lr = ListRegister {
            hw: Some(0x2000 | 33),
            ..ListRegister::INVALID
        };
        assert_eq!(ListRegister::decode_v3(lr.encode_v3()).hw, Some(33));
        // With HW = 1, bit 41 is part of the pINTID, not EOI.
        let d = ListRegister::decode_v3(1 << 61 | 1 << 41);
        assert_eq!((d.hw, d.eoi_maintenance), (Some(0x200), false));
    }

    #[test]
    fn state_helpers() {
        for s in STATES {
            assert_eq!(LrState::from_bits(s.bits()), s);
            assert_eq!(LrState::from_parts(s.is_pending(), s.is_active()), s);
        }
    }
}
