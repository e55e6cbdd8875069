//! The per-interrupt register arrays the distributor and the redistributors share.
//!
//! GICD_IGROUPR, I[SC]ENABLER, I[SC]PENDR, I[SC]ACTIVER, IPRIORITYR, ITARGETSR and ICFGR are
//! arrays with 1, 8 or 2 bits per INTID, at the same offsets in the distributor (all INTIDs)
//! and in a GICv3 redistributor's SGI_base frame (the first 32). This module decodes an offset
//! into (array, first INTID) and reads or writes a run of INTIDs; the callers decide which
//! offsets exist, which widths are allowed and which INTIDs are RAZ/WI for them.

use super::GicModel;
use super::irq_state::{PRIORITY_MASK, PRIVATE_COUNT, State};

/// One per-INTID register array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
    Priority,
    Targets,
    Config,
}

impl Field {
    /// Bits per INTID.
    pub const fn bits(self) -> u32 {
        match self {
            Field::Priority | Field::Targets => 8,
            Field::Config => 2,
            _ => 1,
        }
    }

    /// IPRIORITYR and ITARGETSR take byte accesses as well as word accesses.
    pub const fn byte_accessible(self) -> bool {
        self.bits() == 8
    }
}

/// (offset, length in bytes, array), as the distributor lays them out.
const ARRAYS: [(u64, u64, Field); 10] = [
    (0x080, 0x80, Field::Group),
    (0x100, 0x80, Field::SetEnable),
    (0x180, 0x80, Field::ClearEnable),
    (0x200, 0x80, Field::SetPending),
    (0x280, 0x80, Field::ClearPending),
    (0x300, 0x80, Field::SetActive),
    (0x380, 0x80, Field::ClearActive),
    (0x400, 0x400, Field::Priority),
    (0x800, 0x400, Field::Targets),
    (0xc00, 0x100, Field::Config),
];

/// The array at `offset` and the INTID its byte at `offset` starts with.
pub fn decode(offset: u64) -> Option<(Field, u32)> {
    ARRAYS
        .iter()
        .find(|(base, len, _)| offset >= *base && offset - base < *len)
        .map(|&(base, _, field)| {
            // At most 0x400 * 8 / 1: no overflow.
            (
                field,
                ((offset - base) * 8 / u64::from(field.bits())) as u32,
            )
        })
}

/// Who accesses the array and whose banked SGIs/PPIs it shows.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// The vCPU that performs the access (records who set an SPI active, or sent an SGI).
    pub accessor: usize,
    /// The vCPU whose INTIDs 0-31 are addressed: the accessor for a GICv2 distributor, the
    /// frame's owner for a redistributor.
    pub bank: usize,
}

impl State {
    /// Reads `count` INTIDs from `first`, `field.bits()` each, lowest INTID in the lowest bits.
    /// INTIDs the VM does not have read as zero.
    pub fn read_field(&self, field: Field, acc: Access, first: u32, count: u32) -> u64 {
        let bits = field.bits();
        (0..count).fold(0u64, |value, i| {
            let v = first
                .checked_add(i)
                .map_or(0, |intid| self.read_one(field, acc, intid));
            value | u64::from(v) << (i * bits)
        })
    }

    /// Writes `count` INTIDs from `first` out of `value`; INTIDs the VM does not have ignore it.
    pub fn write_field(&mut self, field: Field, acc: Access, first: u32, count: u32, value: u64) {
        let bits = field.bits();
        let mask = (1u64 << bits) - 1;
        for i in 0..count {
            let Some(intid) = first.checked_add(i) else {
                return;
            };
            let v = ((value >> (i * bits)) & mask) as u32;
            self.write_one(field, acc, intid, v);
        }
    }

    fn read_one(&self, field: Field, acc: Access, intid: u32) -> u32 {
        let Some(irq) = self.irq(acc.bank, intid) else {
            return 0;
        };
        match field {
            Field::Group => u32::from(irq.group1),
            Field::SetEnable | Field::ClearEnable => u32::from(irq.enabled),
            Field::SetPending | Field::ClearPending => u32::from(irq.observed_pending()),
            Field::SetActive | Field::ClearActive => u32::from(irq.observed_active()),
            Field::Priority => u32::from(irq.priority),
            Field::Targets => match self.cfg.model {
                // With affinity routing there are no target lists; a uniprocessor GICv2 has
                // none either (IHI 0048B: its GICD_ITARGETSRs are RAZ/WI).
                GicModel::V3 => 0,
                GicModel::V2 if self.cfg.nr_vcpus == 1 => 0,
                // SGIs and PPIs go to the CPU reading (IHI 0048B: GICD_ITARGETSR0-7 are RO
                // and name the accessing CPU).
                GicModel::V2 if intid < PRIVATE_COUNT => {
                    1u32.checked_shl(acc.bank as u32).unwrap_or(0)
                }
                GicModel::V2 => u32::from(irq.targets),
            },
            // Int_config[1]: 1 = edge. Int_config[0] is RES0 in both architectures.
            Field::Config => u32::from(irq.edge) << 1,
        }
    }

    fn write_one(&mut self, field: Field, acc: Access, intid: u32, v: u32) {
        let set = v & 1 != 0;
        // Write-1 registers: a zero bit changes nothing and needs no kick.
        let is_w1 = !matches!(
            field,
            Field::Group | Field::Priority | Field::Targets | Field::Config
        );
        if is_w1 && !set {
            return;
        }
        let v2_sgi = self.is_v2_sgi(intid);
        let model = self.cfg.model;
        let valid_cpus =
            (1u32.checked_shl(self.cfg.nr_vcpus as u32).unwrap_or(0)).wrapping_sub(1) as u8;
        let changed = self.update(acc.bank, intid, |irq| match field {
            Field::Group => irq.group1 = set,
            Field::SetEnable => irq.enabled = true,
            Field::ClearEnable => irq.enabled = false,
            // A GICv2 SGI is pended only through GICD_SGIR/SPENDSGIR, which name its sender;
            // IHI 0048B makes its ISPENDR/ICPENDR bits WI.
            Field::SetPending if v2_sgi => {}
            Field::ClearPending if v2_sgi => {}
            Field::SetPending => irq.latch = true,
            Field::ClearPending => {
                irq.latch = false;
                if let Some(l) = irq.lr.as_mut()
                    && l.pending
                {
                    l.cancel_pending = true;
                }
            }
            // A hardware-mapped interrupt's active state is its physical twin's: that one is
            // deactivated only by the guest's deactivation through a list register, so a
            // guest-set or guest-cleared virtual active state would strand it. Both are WI.
            Field::SetActive | Field::ClearActive if irq.hw.is_some() => {}
            Field::SetActive => match irq.lr.as_mut() {
                Some(l) => l.active_override = Some(true),
                None => {
                    irq.active = true;
                    if intid >= PRIVATE_COUNT {
                        irq.active_on = Some(acc.accessor as u16);
                    }
                    if v2_sgi {
                        irq.active_source = acc.accessor as u8;
                    }
                }
            },
            Field::ClearActive => match irq.lr.as_mut() {
                Some(l) => l.active_override = Some(false),
                None => {
                    irq.active = false;
                    irq.active_on = None;
                }
            },
            Field::Priority => irq.priority = v as u8 & PRIORITY_MASK,
            // Private target bytes are read-only; bits for CPUs the VM lacks are RAZ/WI.
            Field::Targets
                if model == GicModel::V2 && intid >= PRIVATE_COUNT && valid_cpus != 1 =>
            {
                irq.targets = v as u8 & valid_cpus;
            }
            Field::Targets => {}
            // SGIs are always edge; PPIs are level (as KVM: the timers are level and Linux
            // accepts a PPI whose configuration does not change).
            Field::Config if intid >= PRIVATE_COUNT => irq.edge = v & 0b10 != 0,
            Field::Config => {}
        });
        if changed.is_some() {
            self.note_change(acc.bank, intid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_offsets() {
        assert_eq!(decode(0x080), Some((Field::Group, 0)));
        assert_eq!(decode(0x0fc), Some((Field::Group, 992)));
        assert_eq!(decode(0x104), Some((Field::SetEnable, 32)));
        assert_eq!(decode(0x3fc), Some((Field::ClearActive, 992)));
        assert_eq!(decode(0x400), Some((Field::Priority, 0)));
        assert_eq!(decode(0x421), Some((Field::Priority, 33)));
        assert_eq!(decode(0x7ff), Some((Field::Priority, 1023)));
        assert_eq!(decode(0x81f), Some((Field::Targets, 31)));
        assert_eq!(decode(0xc04), Some((Field::Config, 16)));
        assert_eq!(decode(0xcfc), Some((Field::Config, 1008)));
        assert_eq!(decode(0x07c), None);
        assert_eq!(decode(0xd00), None);
        assert_eq!(decode(u64::MAX), None);
    }
}
