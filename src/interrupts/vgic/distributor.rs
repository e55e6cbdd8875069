//! The emulated GIC distributor (GICD) at the virtual board's 0x0800_0000, GICv2 or GICv3.
//!
//! What a guest sees:
//! - GICv2 (IHI 0048B) without the Security Extensions: GICD_CTLR.EnableGrp0/EnableGrp1, both
//!   groups configurable, INTIDs 0-31 banked per accessing vCPU, ITARGETSR (RAZ/WI with one
//!   vCPU, as the specification has it for a uniprocessor GIC), SGIR, C/SPENDSGIR.
//! - GICv3 (IHI 0069) with a single Security state, as KVM shows it: GICD_CTLR.DS = 1 and
//!   ARE = 1 (read-only), EnableGrp0 and EnableGrp1 writable, RWP always 0. With affinity
//!   routing on, the distributor's views of INTIDs 0-31, ITARGETSR, SGIR and C/SPENDSGIR are
//!   RAZ/WI (the redistributors own SGIs and PPIs) and SPIs are routed by GICD_IROUTER<n>. No
//!   LPIs, no message-based SPIs, no extended SPI range.
//!
//! Access widths follow the specifications: 32-bit everywhere, bytes too for IPRIORITYR,
//! ITARGETSR, CPENDSGIR and SPENDSGIR, 64-bit or either 32-bit half for IROUTER. Any other
//! width, or a misaligned access, is refused with [`MmioError::BadAccess`] (an external abort
//! for the guest). Reserved and unimplemented registers are RAZ/WI.
//!
//! The register file is banked by the accessing vCPU, which `MmioDevice` does not carry:
//! [`Vgic::gicd_read`] / [`Vgic::gicd_write`] take it explicitly, and [`VirtualGicd`] is the
//! thin `MmioDevice` adapter that asks a [`CurrentVcpu`] the integrator provides.

use super::bank_regs::{self, Access, Field};
use super::irq_state::{IROUTER_AFFINITY, IROUTER_IRM, PRIVATE_COUNT, SGI_COUNT, State};
use super::sgi::decode_gicd_sgir;
use super::{GicModel, Vgic};
use crate::devices::{MmioDevice, MmioError};
use alloc::sync::Arc;

/// Size of the distributor's register window.
pub const GICD_WINDOW: u64 = 0x1_0000;

/// Register offsets that are not per-INTID arrays.
pub(super) mod reg {
    pub const CTLR: u64 = 0x000;
    pub const TYPER: u64 = 0x004;
    pub const IIDR: u64 = 0x008;
    pub const TYPER2: u64 = 0x00c;
    pub const SGIR: u64 = 0xf00;
    pub const CPENDSGIR: u64 = 0xf10;
    pub const SPENDSGIR: u64 = 0xf20;
    pub const SGI_PEND_END: u64 = 0xf30;
    pub const IROUTER: u64 = 0x6000;
    /// One past IROUTER1019.
    pub const IROUTER_END: u64 = 0x7fe0;
    /// PIDR4..PIDR7, PIDR0..PIDR3, CIDR0..CIDR3.
    pub const V2_ID: u64 = 0xfd0;
    pub const V3_ID: u64 = 0xffd0;
    pub const ID_LEN: u64 = 0x30;
}

/// GICD_CTLR bits (GICv2 without Security Extensions; GICv3 with DS = 1).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// GICD_TYPER fields.
const TYPER_CPU_NUMBER_SHIFT: u32 = 5;
const TYPER_ID_BITS_SHIFT: u32 = 19;
const TYPER_RSS: u32 = 1 << 26;

/// GICD_IIDR and GICR_IIDR: implementer Arm (JEP106 0x43B), product 0, revision 0, the value
/// QEMU's GICs report. A made-up product ID could match a Linux erratum workaround keyed on
/// IIDR; this one matches none.
pub const IIDR: u32 = 0x0000_043b;

/// Identification registers in the order they sit from PIDR4 on: QEMU's values, which are a
/// GIC-400's (GICv2) and a GIC-500's (GICv3). PIDR2.ArchRev (bits 7:4) is what Linux checks.
pub const V2_ID_REGS: [u8; 12] = [
    0x04, 0x00, 0x00, 0x00, 0x90, 0xb4, 0x2b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];
pub const V3_ID_REGS: [u8; 12] = [
    0x44, 0x00, 0x00, 0x00, 0x92, 0xb4, 0x3b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];

/// `Ok` if `size` is one of `widths` and `offset` is aligned to it.
pub fn check_width(offset: u64, size: u8, widths: &[u8]) -> Result<(), MmioError> {
    if widths.contains(&size) && offset.is_multiple_of(u64::from(size)) {
        Ok(())
    } else {
        Err(MmioError::BadAccess)
    }
}

/// The identification register at `offset` (a 32-bit access into the 12-word block at `base`).
pub fn id_reg(table: &[u8; 12], base: u64, offset: u64) -> u64 {
    offset
        .checked_sub(base)
        .and_then(|o| table.get((o / 4) as usize))
        .map_or(0, |&b| u64::from(b))
}

/// A distributor register.
enum Reg {
    Ctlr,
    Typer,
    Iidr,
    Array(Field, u32),
    Sgir,
    SgiPend {
        set: bool,
        first_sgi: u32,
    },
    Irouter(u32),
    Id,
    /// Reserved, implementation defined or absent in this model: RAZ/WI.
    Reserved,
}

impl Reg {
    fn decode(model: GicModel, offset: u64) -> Reg {
        match offset {
            reg::CTLR => Reg::Ctlr,
            reg::TYPER => Reg::Typer,
            reg::IIDR => Reg::Iidr,
            reg::SGIR => Reg::Sgir,
            reg::CPENDSGIR..reg::SGI_PEND_END => Reg::SgiPend {
                set: offset >= reg::SPENDSGIR,
                first_sgi: ((offset - reg::CPENDSGIR) % 0x10) as u32,
            },
            reg::IROUTER..reg::IROUTER_END if model == GicModel::V3 => {
                Reg::Irouter(((offset - reg::IROUTER) / 8) as u32)
            }
            o if model == GicModel::V2 && (reg::V2_ID..reg::V2_ID + reg::ID_LEN).contains(&o) => {
                Reg::Id
            }
            o if model == GicModel::V3 && (reg::V3_ID..reg::V3_ID + reg::ID_LEN).contains(&o) => {
                Reg::Id
            }
            // TYPER2 (GICv3) has nothing to report: RAZ like the reserved space around it.
            reg::TYPER2 => Reg::Reserved,
            o => bank_regs::decode(o).map_or(Reg::Reserved, |(f, first)| Reg::Array(f, first)),
        }
    }

    /// Access sizes the specification allows.
    fn widths(&self) -> &'static [u8] {
        match self {
            Reg::Array(f, _) if f.byte_accessible() => &[1, 4],
            Reg::SgiPend { .. } => &[1, 4],
            Reg::Irouter(_) => &[4, 8],
            _ => &[4],
        }
    }
}

impl State {
    pub(super) fn gicd_ctlr(&self) -> u32 {
        let mut v = 0;
        if self.grp0_enabled {
            v |= CTLR_ENABLE_GRP0;
        }
        if self.grp1_enabled {
            v |= CTLR_ENABLE_GRP1;
        }
        if self.cfg.model == GicModel::V3 {
            v |= CTLR_ARE | CTLR_DS;
        }
        v
    }

    pub(super) fn gicd_typer(&self) -> u32 {
        // ITLinesNumber: 32 * (N + 1) INTIDs; nr_spis is a multiple of 32.
        let lines = self.cfg.nr_spis / 32;
        match self.cfg.model {
            GicModel::V2 => {
                lines
                    | ((self.cfg.nr_vcpus as u32).saturating_sub(1) & 0x7) << TYPER_CPU_NUMBER_SHIFT
            }
            GicModel::V3 => {
                // IDbits = 10 - 1: INTIDs up to 1023, no LPIs. RSS when some Aff0 exceeds 15,
                // so that ICC_SGI1R_EL1.RS can reach it. CPUNumber is 0, as KVM reports: it
                // only matters without affinity routing.
                let rss = if self.cfg.nr_vcpus > 16 { TYPER_RSS } else { 0 };
                lines | 9 << TYPER_ID_BITS_SHIFT | rss
            }
        }
    }

    /// Whether the distributor view of `intid` exists: with GICv3's affinity routing, INTIDs
    /// 0-31 belong to the redistributors.
    fn gicd_owns(&self, intid: u32) -> bool {
        self.cfg.model == GicModel::V2 || intid >= PRIVATE_COUNT
    }

    /// The register a `size`-byte access by `vcpu` at `offset` reaches, if the access is one
    /// the distributor takes; banked registers are `vcpu`'s own.
    fn gicd_access(&self, vcpu: usize, offset: u64, size: u8) -> Result<(Reg, Access), MmioError> {
        if vcpu >= self.cfg.nr_vcpus || offset >= GICD_WINDOW {
            return Err(MmioError::BadAccess);
        }
        let r = Reg::decode(self.cfg.model, offset);
        check_width(offset, size, r.widths())?;
        Ok((
            r,
            Access {
                accessor: vcpu,
                bank: vcpu,
            },
        ))
    }

    /// A guest read of the distributor by `vcpu`.
    pub fn gicd_read(&self, vcpu: usize, offset: u64, size: u8) -> Result<u64, MmioError> {
        let (r, acc) = self.gicd_access(vcpu, offset, size)?;
        Ok(match r {
            Reg::Ctlr => u64::from(self.gicd_ctlr()),
            Reg::Typer => u64::from(self.gicd_typer()),
            Reg::Iidr => u64::from(IIDR),
            Reg::Array(Field::Targets, _) if self.cfg.model == GicModel::V3 => 0,
            Reg::Array(f, first) => {
                let count = u32::from(size) * 8 / f.bits();
                if self.gicd_owns(first) {
                    self.read_field(f, acc, first, count)
                } else {
                    0
                }
            }
            Reg::Sgir => 0,
            Reg::SgiPend { first_sgi, .. } if self.cfg.model == GicModel::V2 => {
                // One byte per SGI, one bit per sender; both registers read the same state.
                (0..u32::from(size)).fold(0, |v, i| {
                    let sources = self
                        .irq(vcpu, first_sgi + i)
                        .map_or(0, |irq| irq.observed_sgi_sources());
                    v | u64::from(sources) << (8 * i)
                })
            }
            Reg::SgiPend { .. } => 0,
            Reg::Irouter(intid) => {
                let route = if intid >= PRIVATE_COUNT {
                    self.irq(vcpu, intid).map_or(0, |i| i.route)
                } else {
                    0
                };
                if size == 8 {
                    route
                } else {
                    (route >> ((offset & 4) * 8)) & 0xffff_ffff
                }
            }
            Reg::Id => match self.cfg.model {
                GicModel::V2 => id_reg(&V2_ID_REGS, reg::V2_ID, offset),
                GicModel::V3 => id_reg(&V3_ID_REGS, reg::V3_ID, offset),
            },
            Reg::Reserved => 0,
        })
    }

    /// A guest write to the distributor by `vcpu`. vCPUs that must look at their list
    /// registers again are added to `self.kicks`.
    pub fn gicd_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<(), MmioError> {
        let (r, acc) = self.gicd_access(vcpu, offset, size)?;
        match r {
            Reg::Ctlr => {
                let v = value as u32;
                let (g0, g1) = (v & CTLR_ENABLE_GRP0 != 0, v & CTLR_ENABLE_GRP1 != 0);
                if (g0, g1) != (self.grp0_enabled, self.grp1_enabled) {
                    self.grp0_enabled = g0;
                    self.grp1_enabled = g1;
                    self.reindex_all();
                    self.note_change_all();
                }
            }
            Reg::Array(Field::Targets, _) if self.cfg.model == GicModel::V3 => {}
            Reg::Array(f, first) => {
                let count = u32::from(size) * 8 / f.bits();
                if self.gicd_owns(first) {
                    self.write_field(f, acc, first, count, value);
                }
            }
            Reg::Sgir if self.cfg.model == GicModel::V2 => {
                if let Some((intid, targets)) =
                    decode_gicd_sgir(value as u32, vcpu, self.cfg.nr_vcpus)
                {
                    let reached = self.send_v2_sgi(vcpu, intid, targets);
                    for t in reached.iter() {
                        self.note_change(t, intid);
                    }
                }
            }
            Reg::SgiPend { set, first_sgi } if self.cfg.model == GicModel::V2 => {
                let valid =
                    (1u32.checked_shl(self.cfg.nr_vcpus as u32).unwrap_or(0)).wrapping_sub(1) as u8;
                for i in 0..u32::from(size) {
                    let intid = first_sgi + i;
                    let bits = (value >> (8 * i)) as u8 & valid;
                    if bits == 0 || intid >= SGI_COUNT {
                        continue;
                    }
                    let changed = self.update(vcpu, intid, |irq| {
                        if set {
                            irq.sgi_sources |= bits;
                        } else {
                            irq.sgi_sources &= !bits;
                            if let Some(l) = irq.lr.as_mut()
                                && l.pending
                                && bits & 1u8.checked_shl(u32::from(l.source)).unwrap_or(0) != 0
                            {
                                l.cancel_pending = true;
                            }
                        }
                    });
                    if changed.is_some() {
                        self.note_change(vcpu, intid);
                    }
                }
            }
            Reg::Irouter(intid) if intid >= PRIVATE_COUNT => {
                let changed = self.update(vcpu, intid, |irq| {
                    let new = if size == 8 {
                        value
                    } else {
                        let shift = (offset & 4) * 8;
                        (irq.route & !(0xffff_ffff << shift)) | (value & 0xffff_ffff) << shift
                    };
                    // Only the affinity fields and IRM exist; the rest is RES0.
                    irq.route = new & (IROUTER_AFFINITY | IROUTER_IRM);
                });
                if changed.is_some() {
                    self.note_change(vcpu, intid);
                }
            }
            // Read-only, write-only-but-absent, reserved: WI.
            _ => {}
        }
        Ok(())
    }
}

/// Tells a device adapter which vCPU is performing the current access. The integrator
/// implements it from its per-CPU data (the vCPU this physical CPU is running).
pub trait CurrentVcpu: Send + Sync {
    fn current_vcpu(&self) -> usize;
}

/// The distributor as an [`MmioDevice`] for the VM's bus, at `virtual_board::GICD_BASE` with
/// size [`GICD_WINDOW`].
pub struct VirtualGicd<C: CurrentVcpu> {
    vgic: Arc<Vgic>,
    current: C,
}

impl<C: CurrentVcpu> VirtualGicd<C> {
    pub fn new(vgic: Arc<Vgic>, current: C) -> Self {
        VirtualGicd { vgic, current }
    }
}

impl<C: CurrentVcpu> super::GicWindow for VirtualGicd<C> {
    fn reads_list_register_state(&self, offset: u64) -> bool {
        super::PENDING_ACTIVE.contains(&offset)
    }
}

impl<C: CurrentVcpu> MmioDevice for VirtualGicd<C> {
    fn name(&self) -> &'static str {
        "gicd"
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        self.vgic
            .gicd_read(self.current.current_vcpu(), offset, size)
    }

    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        self.vgic
            .gicd_write(self.current.current_vcpu(), offset, size, value)
    }
}
