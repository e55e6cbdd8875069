//! Software-generated interrupts: who a guest's SGI request reaches.
//!
//! A GICv2 guest writes GICD_SGIR (IHI 0048B), a filter and an 8-bit CPU target list; each
//! target then holds the SGI pending once per sending CPU. A GICv3 guest writes the system
//! register ICC_SGI1R_EL1 (or ICC_SGI0R_EL1 / ICC_ASGI1R_EL1, IHI 0069), which the integrator
//! traps: affinity levels 3..1 and a 16-bit list of Aff0 values (offset by RS * 16), or IRM = 1
//! for everyone but the sender. The decoders here are pure; [`State::send_v2_sgi`] and
//! [`State::send_v3_sgi`] mark the SGIs pending.

use super::VgicConfig;
use super::irq_state::{SGI_COUNT, State};
use super::vcpu_set::VcpuSet;

/// GICD_SGIR fields.
mod sgir {
    pub const INTID_MASK: u32 = 0xf;
    pub const TARGET_LIST_SHIFT: u32 = 16;
    pub const FILTER_SHIFT: u32 = 24;
}

/// ICC_SGI1R_EL1 fields (ICC_SGI0R_EL1 and ICC_ASGI1R_EL1 share the layout).
mod sgi1r {
    pub const TARGET_LIST_MASK: u64 = 0xffff;
    pub const AFF1_SHIFT: u32 = 16;
    pub const INTID_SHIFT: u32 = 24;
    pub const AFF2_SHIFT: u32 = 32;
    pub const IRM: u64 = 1 << 40;
    pub const RS_SHIFT: u32 = 44;
    pub const AFF3_SHIFT: u32 = 48;
}

/// Decodes a GICD_SGIR write by `sender`: the SGI and the vCPUs it targets, or `None` for the
/// reserved filter 0b11 (the write is ignored). CPUs the VM lacks are dropped from a list.
pub fn decode_gicd_sgir(value: u32, sender: usize, nr_vcpus: usize) -> Option<(u32, VcpuSet)> {
    let intid = value & sgir::INTID_MASK;
    let all = VcpuSet::first(nr_vcpus.min(8));
    let targets = match (value >> sgir::FILTER_SHIFT) & 0b11 {
        0b00 => {
            let list = (value >> sgir::TARGET_LIST_SHIFT) & 0xff;
            VcpuSet::from_bits(u128::from(list)).intersection(all)
        }
        0b01 => {
            let mut others = all;
            others.remove(sender);
            others
        }
        0b10 => VcpuSet::single(sender),
        _ => return None,
    };
    Some((intid, targets))
}

/// Decodes an ICC_SGI1R_EL1 value written by `sender`: the SGI and the vCPUs whose affinity
/// it names. Aff0 values without a vCPU are skipped, as the architecture says.
pub fn decode_icc_sgi1r(value: u64, sender: usize, cfg: &VgicConfig) -> (u32, VcpuSet) {
    let intid = ((value >> sgi1r::INTID_SHIFT) & 0xf) as u32;
    if value & sgi1r::IRM != 0 {
        let mut others = VcpuSet::first(cfg.nr_vcpus);
        others.remove(sender);
        return (intid, others);
    }
    let aff1 = (value >> sgi1r::AFF1_SHIFT) & 0xff;
    let aff2 = (value >> sgi1r::AFF2_SHIFT) & 0xff;
    let aff3 = (value >> sgi1r::AFF3_SHIFT) & 0xff;
    let rs = (value >> sgi1r::RS_SHIFT) & 0xf;
    let mut list = value & sgi1r::TARGET_LIST_MASK;
    let mut targets = VcpuSet::empty();
    // Only the bits that are set (usually one): this runs on every trapped SGI.
    while list != 0 {
        let aff0 = rs * 16 + u64::from(list.trailing_zeros());
        list &= list - 1;
        if let Some(v) = cfg.vcpu_of_affinity(aff3 << 32 | aff2 << 16 | aff1 << 8 | aff0) {
            targets.insert(v);
        }
    }
    (intid, targets)
}

/// Which ICC_*SGI*R_EL1 register the guest wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiRegister {
    /// ICC_SGI1R_EL1.
    Sgi1r,
    /// ICC_SGI0R_EL1.
    Sgi0r,
    /// ICC_ASGI1R_EL1: with a single Security state (DS = 1) there is no "other" group 1, so
    /// it behaves as ICC_SGI0R_EL1, as KVM treats it.
    Asgi1r,
}

impl State {
    /// Marks SGI `intid` pending from `sender` on each target; returns the targets reached.
    pub fn send_v2_sgi(&mut self, sender: usize, intid: u32, targets: VcpuSet) -> VcpuSet {
        let Some(bit) = 1u8.checked_shl(sender as u32) else {
            return VcpuSet::empty();
        };
        if intid >= SGI_COUNT {
            return VcpuSet::empty();
        }
        let mut reached = VcpuSet::empty();
        for t in targets.iter() {
            if self
                .update(t, intid, |irq| irq.sgi_sources |= bit)
                .is_some()
            {
                reached.insert(t);
            }
        }
        reached
    }

    /// Marks GICv3 SGI `intid` pending on each target that accepts it from `register`: with
    /// DS = 1, ICC_SGI1R_EL1 pends an SGI of either group and ICC_SGI0R_EL1 only a group 0 one
    /// (KVM's reading of IHI 0069's forwarding rules). Returns the targets reached.
    pub fn send_v3_sgi(&mut self, intid: u32, targets: VcpuSet, register: SgiRegister) -> VcpuSet {
        let mut reached = VcpuSet::empty();
        if intid >= SGI_COUNT {
            return reached;
        }
        for t in targets.iter() {
            let accepted = self.update(t, intid, |irq| {
                let accepts = register == SgiRegister::Sgi1r || !irq.group1;
                irq.latch |= accepts;
                accepts
            });
            if accepted == Some(true) {
                reached.insert(t);
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupts::vgic::GicModel;
    use alloc::vec::Vec;

    fn set(v: &[usize]) -> VcpuSet {
        v.iter().copied().collect()
    }

    #[test]
    fn gicd_sgir_filters() {
        // Target list 0b1010_0101 on a 4-CPU VM: CPUs 0 and 2 exist.
        assert_eq!(decode_gicd_sgir(0x00a5_0003, 1, 4), Some((3, set(&[0, 2]))));
        assert_eq!(
            decode_gicd_sgir(0x0100_000f, 1, 4),
            Some((15, set(&[0, 2, 3])))
        );
        assert_eq!(decode_gicd_sgir(0x02ff_0001, 2, 4), Some((1, set(&[2]))));
        assert_eq!(decode_gicd_sgir(0x03ff_0001, 2, 4), None);
        // Other filters ignore the target list; NSATT (bit 15) and RES0 bits are ignored.
        assert_eq!(decode_gicd_sgir(0xfdff_8007, 0, 2), Some((7, set(&[1]))));
        assert_eq!(
            decode_gicd_sgir(0x0000_0000, 0, 8),
            Some((0, VcpuSet::empty()))
        );
    }

    #[test]
    fn icc_sgi1r_target_lists() {
        let cfg = VgicConfig::new(GicModel::V3, 20, 64).unwrap();
        // INTID 5 to Aff0 0 and 3.
        assert_eq!(
            decode_icc_sgi1r(5 << 24 | 0b1001, 0, &cfg),
            (5, set(&[0, 3]))
        );
        // RS = 1: bits name Aff0 16..31; only 16..19 exist.
        assert_eq!(
            decode_icc_sgi1r(1 << 44 | 2 << 24 | 0xffff, 0, &cfg),
            (2, set(&[16, 17, 18, 19]))
        );
        // Aff1/Aff2/Aff3 nonzero: nobody has that affinity.
        assert_eq!(decode_icc_sgi1r(1 << 16 | 1, 0, &cfg).1, VcpuSet::empty());
        assert_eq!(decode_icc_sgi1r(1 << 32 | 1, 0, &cfg).1, VcpuSet::empty());
        assert_eq!(decode_icc_sgi1r(1 << 48 | 1, 0, &cfg).1, VcpuSet::empty());
        // IRM: everyone but the sender, whatever the list says.
        let (intid, t) = decode_icc_sgi1r(1 << 40 | 15 << 24 | 1, 4, &cfg);
        assert_eq!(intid, 15);
        assert_eq!(t.len(), 19);
        assert!(!t.contains(4));
        // Every bit set: still only real vCPUs.
        assert_eq!(
            decode_icc_sgi1r(u64::MAX, 0, &cfg)
                .1
                .iter()
                .collect::<Vec<_>>(),
            (1..20).collect::<Vec<_>>()
        );
    }

    #[test]
    fn v3_sgi_groups() {
        let mut s = State::new(VgicConfig::new(GicModel::V3, 2, 32).unwrap());
        s.update(1, 4, |irq| irq.group1 = false);
        assert_eq!(
            s.send_v3_sgi(4, set(&[0, 1]), SgiRegister::Sgi0r),
            set(&[1])
        );
        assert!(!s.cpus[0].private[4].latch && s.cpus[1].private[4].latch);
        assert_eq!(
            s.send_v3_sgi(4, set(&[0, 1]), SgiRegister::Sgi1r),
            set(&[0, 1])
        );
        assert_eq!(
            s.send_v3_sgi(16, set(&[0]), SgiRegister::Sgi1r),
            VcpuSet::empty()
        );
    }

    #[test]
    fn v2_sgi_sources() {
        let mut s = State::new(VgicConfig::new(GicModel::V2, 4, 32).unwrap());
        assert_eq!(s.send_v2_sgi(2, 1, set(&[0, 3])), set(&[0, 3]));
        assert_eq!(s.send_v2_sgi(1, 1, set(&[0])), set(&[0]));
        assert_eq!(s.cpus[0].private[1].sgi_sources, 0b0110);
        assert_eq!(s.cpus[3].private[1].sgi_sources, 0b0100);
        assert_eq!(
            s.send_v2_sgi(9, 1, set(&[0])),
            VcpuSet::empty(),
            "no such sender"
        );
    }
}
