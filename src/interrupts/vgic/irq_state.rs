//! The interrupt state of one VM: what a GIC distributor and its redistributors remember.
//!
//! Every INTID the guest has is an [`Irq`]: SGIs and PPIs (INTIDs 0-31) once per vCPU, SPIs
//! (32..32 + N) once per VM. [`State`] holds them all, together with the distributor's group
//! enables and each vCPU's record of what its list registers hold. It lives behind the one
//! lock of `super::Vgic`; nothing here locks or knows about hardware.
//!
//! Pending state has three sources, kept apart because they are cleared differently:
//! the *latch* (an edge seen on the line, a write to GICD_ISPENDR, an SGI), the *line* (the
//! input level of a level-sensitive interrupt, owned by whoever drives it) and, for GICv2 SGIs
//! only, one pending bit per sending CPU. A level-sensitive interrupt is pending while its line
//! is high or its latch is set (the interrupt handling state machine of IHI 0048B and IHI 0069).
//!
//! While an interrupt sits in a vCPU's list register its pending state (the latch, a GICv2 SGI
//! source bit, the line of a hardware-mapped interrupt) is *moved* into that register and
//! [`Loaded`] records what was moved, so that folding the register back after the guest ran can
//! tell an acknowledged interrupt from one still waiting, and a new edge that arrived meanwhile
//! is not lost.

use super::index::IrqIndex;
use super::vcpu_set::VcpuSet;
use super::{GicModel, VgicConfig};
use alloc::vec::Vec;

/// SGIs are INTIDs 0-15.
pub const SGI_COUNT: u32 = 16;
/// SGIs and PPIs: the INTIDs banked per vCPU.
pub const PRIVATE_COUNT: u32 = 32;
/// The implemented priority bits: 5, as QEMU's GIC and most hardware; the low 3 bits of every
/// priority field are RAZ/WI. It also matches the 5 bits a GICv2 list register holds.
pub const PRIORITY_MASK: u8 = 0xf8;
/// GICD_IROUTER: Interrupt_Routing_Mode, 1 = any participating PE.
pub const IROUTER_IRM: u64 = 1 << 31;
/// GICD_IROUTER's affinity fields (Aff3 at 39:32, Aff2..Aff0 at 23:0), as in MPIDR_EL1.
pub const IROUTER_AFFINITY: u64 = 0xff_00ff_ffff;

/// What one list register holds of an interrupt, from the fill that put it there until the
/// fold that reads it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The vCPU whose list registers hold it.
    pub vcpu: u16,
    /// GICv2 SGI: the sending CPU named in the register.
    pub source: u8,
    /// Loaded as pending / as active.
    pub pending: bool,
    pub active: bool,
    /// The latch (or GICv2 SGI source bit) moved into the register.
    pub moved_latch: bool,
    /// The line level of a hardware-mapped level interrupt moved into the register: the
    /// physical interrupt stays active until the guest deactivates this one.
    pub moved_line: bool,
    /// The guest cleared the pending state (ICPENDR/CPENDSGIR) while it was loaded: a pending
    /// register is not folded back as pending.
    pub cancel_pending: bool,
    /// The guest wrote ISACTIVER/ICACTIVER while it was loaded: wins over the register's state.
    pub active_override: Option<bool>,
}

/// One interrupt's configuration and state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    pub enabled: bool,
    pub group1: bool,
    /// Edge-triggered (GICD_ICFGR Int_config[1] = 1); else level-sensitive.
    pub edge: bool,
    /// Only the implemented bits ([`PRIORITY_MASK`]) are kept.
    pub priority: u8,
    /// GICv2 SPI: GICD_ITARGETSR, one bit per CPU interface.
    pub targets: u8,
    /// GICv3 SPI: GICD_IROUTER (affinity and IRM only).
    pub route: u64,
    /// The physical INTID, for an interrupt the integrator mapped to hardware.
    pub hw: Option<u16>,
    /// Edge or software pending state (see the module docs).
    pub latch: bool,
    /// The input line of a level-sensitive interrupt.
    pub line: bool,
    pub active: bool,
    /// GICv2 SGI: pending bit per sending CPU.
    pub sgi_sources: u8,
    /// GICv2 SGI: the sending CPU of the active instance.
    pub active_source: u8,
    /// SPI: the vCPU that acknowledged it and must deactivate it, while active.
    pub active_on: Option<u16>,
    /// Set while the interrupt is in a list register.
    pub lr: Option<Loaded>,
}

impl Irq {
    fn reset(intid: u32, model: GicModel) -> Self {
        Irq {
            // SGIs come out of reset enabled and edge-triggered; PPIs level (the timers are);
            // SPIs level until the guest says otherwise. GICv3 guests start in group 1, GICv2
            // guests in group 0, which is what Linux on a GICv2 without Security Extensions uses.
            enabled: intid < SGI_COUNT,
            edge: intid < SGI_COUNT,
            group1: model == GicModel::V3,
            ..Irq::default()
        }
    }

    /// Pending in the model, not counting what a list register holds.
    pub fn pending(&self) -> bool {
        self.latch || self.sgi_sources != 0 || (self.line && !self.edge)
    }

    /// Could go into a list register as a new pending interrupt (given whether the distributor
    /// forwards its group): what `super::index` calls ready.
    pub fn ready(&self, group_enabled: bool) -> bool {
        self.lr.is_none() && !self.active && self.enabled && self.pending() && group_enabled
    }

    /// Active and in no list register: its owner must load it.
    pub fn idle_active(&self) -> bool {
        self.active && self.lr.is_none()
    }

    /// Pending as a guest reading ISPENDR sees it: the model's state or the register's, as
    /// last loaded (a running vCPU may have acknowledged it since).
    pub fn observed_pending(&self) -> bool {
        self.pending() || self.lr.is_some_and(|l| l.pending && !l.cancel_pending)
    }

    /// Active as a guest reading ISACTIVER sees it.
    pub fn observed_active(&self) -> bool {
        self.lr
            .and_then(|l| l.active_override)
            .unwrap_or(self.active)
    }

    /// GICv2 SGI pending source bits as SPENDSGIR shows them.
    pub fn observed_sgi_sources(&self) -> u8 {
        let mut sources = self.sgi_sources;
        if let Some(l) = self.lr
            && l.pending
            && l.moved_latch
            && !l.cancel_pending
        {
            sources |= 1u8.checked_shl(u32::from(l.source)).unwrap_or(0);
        }
        sources
    }
}

/// Most list registers the vGIC fills: ICH_LR0-15_EL2 (a GICv2's GICH may have more; the
/// rest stay empty).
pub const MAX_LRS: usize = 16;

/// One vCPU's banked interrupts and list register record.
#[derive(Clone, Debug)]
pub struct CpuState {
    /// SGIs 0-15 and PPIs 16-31.
    pub private: Vec<Irq>,
    /// What list registers 0, 1, .. were filled with, the first `loaded` entries: priority
    /// << 16 | INTID, the order `lr_sync` sorts them in (and the room it sorts them in).
    pub slots: [u32; MAX_LRS],
    /// How many list registers hold an interrupt; 0 between a fold and the next fill.
    pub loaded: usize,
    /// GICR_WAKER.ProcessorSleep (GICv3).
    pub processor_sleep: bool,
}

/// Everything the VM's vGIC lock protects.
#[derive(Clone, Debug)]
pub struct State {
    pub cfg: VgicConfig,
    /// GICD_CTLR.EnableGrp0 / EnableGrp1.
    pub grp0_enabled: bool,
    pub grp1_enabled: bool,
    pub spis: Vec<Irq>,
    pub cpus: Vec<CpuState>,
    /// vCPUs that must re-evaluate their list registers because of MMIO writes; drained by
    /// `Vgic::take_kicks`.
    pub kicks: VcpuSet,
    /// Which interrupts are ready or active where; changed only through [`State::update`].
    pub index: IrqIndex,
}

impl State {
    pub fn new(cfg: VgicConfig) -> Self {
        let private: Vec<Irq> = (0..PRIVATE_COUNT)
            .map(|i| Irq::reset(i, cfg.model))
            .collect();
        let mut state = State {
            cfg,
            grp0_enabled: false,
            grp1_enabled: false,
            spis: (0..cfg.nr_spis)
                .map(|_| Irq::reset(PRIVATE_COUNT, cfg.model))
                .collect(),
            cpus: (0..cfg.nr_vcpus)
                .map(|_| CpuState {
                    private: private.clone(),
                    slots: [0; MAX_LRS],
                    loaded: 0,
                    // GICR_WAKER resets with the PE asleep; Linux wakes it.
                    processor_sleep: true,
                })
                .collect(),
            kicks: VcpuSet::empty(),
            index: IrqIndex::new(cfg.nr_vcpus, cfg.nr_spis),
        };
        // Out of reset nothing is pending or active, so the delivery index is empty but for
        // the SPIs' routes, all alike: one route computed for all of them instead of a full
        // scan (which cost about 11,000 instructions of Veil's boot). Tests compare with a scan.
        if let Some(spi) = state.spis.first() {
            let routed = state.routed(0, PRIVATE_COUNT, spi);
            state.index.route_all_spis(cfg.nr_spis, routed);
        }
        state
    }

    /// One past the highest INTID this VM has.
    pub fn intid_limit(&self) -> u32 {
        PRIVATE_COUNT + self.cfg.nr_spis
    }

    /// The interrupt `intid` as vCPU `bank` sees it (`bank` only matters below 32).
    pub fn irq(&self, bank: usize, intid: u32) -> Option<&Irq> {
        if intid < PRIVATE_COUNT {
            self.cpus.get(bank)?.private.get(intid as usize)
        } else {
            self.spis.get((intid - PRIVATE_COUNT) as usize)
        }
    }

    /// SGIs of a GICv2 guest keep one pending bit per sender.
    pub fn is_v2_sgi(&self, intid: u32) -> bool {
        self.cfg.model == GicModel::V2 && intid < SGI_COUNT
    }

    /// The distributor forwards this interrupt's group (GICD_CTLR.EnableGrp0/1).
    pub fn group_enabled(&self, irq: &Irq) -> bool {
        if irq.group1 {
            self.grp1_enabled
        } else {
            self.grp0_enabled
        }
    }

    /// The vCPUs interrupt `intid` (of bank `bank`) may be delivered to.
    pub fn routed(&self, bank: usize, intid: u32, irq: &Irq) -> VcpuSet {
        if intid < PRIVATE_COUNT {
            return VcpuSet::single(bank);
        }
        let all = VcpuSet::first(self.cfg.nr_vcpus);
        match self.cfg.model {
            // A uniprocessor GICv2 has no target registers: everything goes to CPU 0.
            GicModel::V2 if self.cfg.nr_vcpus == 1 => VcpuSet::single(0),
            GicModel::V2 => (0..8)
                .filter(|cpu| irq.targets & (1 << cpu) != 0 && all.contains(*cpu))
                .collect(),
            // IRM = 1: any vCPU; every one counts as participating (GICR_WAKER is not
            // consulted, as KVM does not).
            GicModel::V3 if irq.route & IROUTER_IRM != 0 => all,
            GicModel::V3 => self
                .cfg
                .vcpu_of_affinity(irq.route & IROUTER_AFFINITY)
                .map_or(VcpuSet::empty(), VcpuSet::single),
        }
    }

    /// The vCPU that holds `intid` active, if it is active.
    pub fn active_owner(&self, bank: usize, intid: u32, irq: &Irq) -> Option<usize> {
        if !irq.active {
            None
        } else if intid < PRIVATE_COUNT {
            Some(bank)
        } else {
            irq.active_on.map(usize::from)
        }
    }

    /// Whether `intid` can go into a list register of `vcpu` as a new pending interrupt.
    pub fn deliverable(&self, vcpu: usize, bank: usize, intid: u32, irq: &Irq) -> bool {
        // An active interrupt is not signalled again until it is deactivated (its owner may
        // load it as pending and active); one in another vCPU's list register is taken.
        irq.ready(self.group_enabled(irq)) && self.routed(bank, intid, irq).contains(vcpu)
    }

    /// The vCPUs that should look at their list registers again after `intid` changed: the
    /// one holding it, or else those it could now be delivered to.
    pub fn kick_for(&self, bank: usize, intid: u32) -> VcpuSet {
        let Some(irq) = self.irq(bank, intid) else {
            return VcpuSet::empty();
        };
        if let Some(l) = irq.lr {
            return VcpuSet::single(usize::from(l.vcpu));
        }
        if !(irq.enabled && irq.pending() && self.group_enabled(irq)) {
            return VcpuSet::empty();
        }
        if irq.active {
            return self
                .active_owner(bank, intid, irq)
                .map_or(VcpuSet::empty(), VcpuSet::single);
        }
        self.routed(bank, intid, irq)
    }

    /// Records the kick for a change made by a register write.
    pub fn note_change(&mut self, bank: usize, intid: u32) {
        self.kicks = self.kicks.union(self.kick_for(bank, intid));
    }

    /// Every vCPU: after a change that can affect all of them (GICD_CTLR).
    pub fn note_change_all(&mut self) {
        self.kicks = self.kicks.union(VcpuSet::first(self.cfg.nr_vcpus));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(model: GicModel, vcpus: usize) -> State {
        State::new(VgicConfig::new(model, vcpus, 64).unwrap())
    }

    #[test]
    fn reset_values() {
        let s = state(GicModel::V2, 2);
        let sgi = s.irq(1, 3).unwrap();
        assert!(sgi.enabled && sgi.edge && !sgi.group1);
        let ppi = s.irq(0, 27).unwrap();
        assert!(!ppi.enabled && !ppi.edge);
        assert!(s.irq(0, 95).is_some() && s.irq(0, 96).is_none());
        assert!(
            s.irq(2, 0).is_none(),
            "no bank for a vCPU that does not exist"
        );
        let s = state(GicModel::V3, 1);
        assert!(s.irq(0, 40).unwrap().group1);
        assert!(s.cpus[0].processor_sleep);
    }

    #[test]
    fn pending_sources() {
        let mut irq = Irq {
            line: true,
            ..Irq::default()
        };
        assert!(irq.pending(), "level: line high");
        irq.edge = true;
        assert!(!irq.pending(), "edge ignores the level");
        irq.latch = true;
        assert!(irq.pending());
        irq.latch = false;
        irq.lr = Some(Loaded {
            pending: true,
            ..Loaded::default()
        });
        assert!(!irq.pending() && irq.observed_pending());
        irq.lr = Some(Loaded {
            pending: true,
            cancel_pending: true,
            ..Loaded::default()
        });
        assert!(!irq.observed_pending());
    }

    #[test]
    fn routing() {
        let mut s = state(GicModel::V2, 3);
        let mut irq = Irq {
            targets: 0b1010_0110,
            ..Irq::default()
        };
        assert_eq!(
            s.routed(0, 40, &irq),
            [1, 2].into_iter().collect(),
            "CPUs 5 and 7 do not exist"
        );
        assert_eq!(
            s.routed(2, 20, &irq),
            VcpuSet::single(2),
            "PPIs go to their bank"
        );
        s = state(GicModel::V3, 3);
        irq.route = 2;
        assert_eq!(s.routed(0, 40, &irq), VcpuSet::single(2));
        irq.route = 1 << 32 | 2;
        assert!(s.routed(0, 40, &irq).is_empty(), "Aff3 = 1 matches nobody");
        irq.route = IROUTER_IRM | 7;
        assert_eq!(s.routed(0, 40, &irq), VcpuSet::first(3));
    }
}
