//! The virtual GIC: each VM's interrupt controller, as a pure model.
//!
//! A guest sees QEMU virt's GIC, a GICv2 (distributor at `GICD_BASE`, CPU interface at
//! `GICC_BASE`) or a GICv3 (distributor, then one redistributor per vCPU at `GICR_BASE`); see
//! `vm::virtual_board`. The CPU interface is the hardware's virtual one (GICV / ICV_*), fed
//! through list registers. This module is everything around it that is not hardware:
//!
//! - [`irq_state`]: per-INTID state (enable, pending latch and line, active, priority, group,
//!   trigger, GICv2 targets / GICv3 routing, GICv2 SGI senders), SGIs and PPIs banked per vCPU.
//! - [`distributor`]: the GICD register file, and [`VirtualGicd`], its `MmioDevice` adapter.
//! - [`redistributor`]: the GICR frames of a GICv3 VM, and [`VirtualGicr`].
//! - [`sgi`]: GICD_SGIR and ICC_SGI1R_EL1 decoding.
//! - [`inject`]: lines and edges from device models, timers and passthrough hardware.
//! - [`lr_sync`] and [`list_register`]: what goes into the list registers, and their formats;
//!   [`index`]: the bitmaps that tell `lr_sync` what is ready for which vCPU without a scan.
//!
//! # How the integrator drives it
//! 1. Per VM: `Arc::new(Vgic::new(VgicConfig::new(model, nr_vcpus, nr_spis)?))`; map
//!    [`VirtualGicd`] at `GICD_BASE` and, for GICv3, [`VirtualGicr`] at `GICR_BASE`; call
//!    [`Vgic::map_hw`] for the virtual timer PPI of each vCPU and passthrough SPIs.
//! 2. Every exit of vCPU `v`, first: read its N list registers, decode them
//!    ([`ListRegister::decode_v3`] / [`ListRegister::decode_v2`]) and [`Vgic::fold_lrs`].
//! 3. Handle the exit. A trapped ICC_SGI1R_EL1 write goes to [`Vgic::write_icc_sgir`].
//! 4. Kick: the vCPUs returned by [`Vgic::set_level`] / [`Vgic::raise_edge`] /
//!    [`Vgic::write_icc_sgir`], and after an MMIO exit those of [`Vgic::take_kicks`], must look
//!    at their list registers again: a running one is sent a physical SGI (it exits, folds and
//!    refills), one blocked in WFI is woken. The current vCPU needs nothing: step 5 follows.
//! 5. Before entering `v`: [`Vgic::fill_lrs`], encode, write the registers, and set
//!    ICH_HCR_EL2.UIE / GICH_HCR.UIE if [`LrFill::more_pending`]. When nothing happens in
//!    between (an interrupt exit), [`Vgic::sync_lrs`] does steps 2 and 5 under one lock,
//!    through a [`ListRegisters`] that decodes and encodes the hardware's registers, and
//!    touches only the registers that are in use.
//!
//! # Locking
//! One `spin::Mutex` per VM guards the whole state: distributor, redistributors, and each
//! vCPU's record of its list registers. It is a leaf lock: the vGIC calls nothing while holding
//! it ([`CurrentVcpu`] is asked before it is taken), so a device model may call
//! [`Vgic::set_level`] while holding its own lock (order: device lock, then vGIC lock), and no
//! lock may be taken under it. Veil's EL2 code runs with interrupts masked, so the lock is never
//! contended by an interrupt handler on the same CPU.

pub mod bank_regs;
pub mod distributor;
pub mod index;
pub mod inject;
pub mod irq_state;
pub mod list_register;
pub mod lr_sync;
pub mod redistributor;
pub mod sgi;
pub mod vcpu_set;

#[cfg(test)]
mod tests;

pub use distributor::{CurrentVcpu, GICD_WINDOW, VirtualGicd};
pub use inject::InjectError;
pub use irq_state::MAX_LRS;
pub use list_register::{ListRegister, ListRegisters, LrState};
pub use lr_sync::{LrFill, PendingIrq};
pub use redistributor::{GICR_STRIDE, VirtualGicr};
pub use sgi::SgiRegister;
pub use vcpu_set::{MAX_VCPUS, VcpuSet};

use crate::devices::MmioError;
use core::sync::atomic::{AtomicU32, Ordering};
use irq_state::State;
use spin::Mutex;

/// Which GIC architecture the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicModel {
    V2,
    V3,
}

/// The shape of one VM's GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VgicConfig {
    pub model: GicModel,
    pub nr_vcpus: usize,
    /// SPIs: INTIDs 32..32 + `nr_spis`.
    pub nr_spis: u32,
}

/// A [`VgicConfig`] the vGIC cannot model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// No vCPUs, more than 8 for GICv2 (CPU interfaces) or more than [`MAX_VCPUS`].
    VcpuCount,
    /// Not a multiple of 32, or more than [`MAX_SPIS`].
    SpiCount,
}

/// Most SPIs: GICD_TYPER.ITLinesNumber counts 32 INTIDs at a time and INTIDs from 1020 on are
/// special, so 32 + 960 = 992 is the last multiple of 32 that fits.
pub const MAX_SPIS: u32 = 960;

impl VgicConfig {
    pub fn new(model: GicModel, nr_vcpus: usize, nr_spis: u32) -> Result<Self, ConfigError> {
        let max_vcpus = match model {
            GicModel::V2 => 8,
            GicModel::V3 => MAX_VCPUS,
        };
        if nr_vcpus == 0 || nr_vcpus > max_vcpus {
            return Err(ConfigError::VcpuCount);
        }
        if !nr_spis.is_multiple_of(32) || nr_spis > MAX_SPIS {
            return Err(ConfigError::SpiCount);
        }
        Ok(VgicConfig {
            model,
            nr_vcpus,
            nr_spis,
        })
    }

    /// The affinity fields of vCPU `vcpu`'s MPIDR_EL1 (Aff3 at 39:32, Aff2..Aff0 at 23:0):
    /// Aff0 = index, as `vm::vcpu::mpidr_for` sets VMPIDR_EL2.
    pub const fn vcpu_affinity(&self, vcpu: usize) -> u64 {
        vcpu as u64 & 0xff
    }

    /// The vCPU whose affinity is `affinity` (same layout as [`VgicConfig::vcpu_affinity`]).
    pub fn vcpu_of_affinity(&self, affinity: u64) -> Option<usize> {
        usize::try_from(affinity)
            .ok()
            .filter(|&v| v < self.nr_vcpus && self.vcpu_affinity(v) == affinity)
    }
}

/// One VM's virtual GIC. Share it (`Arc`) between the MMIO adapters, the exit path and the
/// device models.
pub struct Vgic {
    cfg: VgicConfig,
    state: Mutex<State>,
    /// Registers published for the vectors to answer (`devices::read_cells`), kept equal to
    /// what the model reads: each is rewritten under the lock by whatever changes it.
    cells: Cells,
}

/// A vGIC register window as a device on the VM's bus.
pub trait GicWindow: crate::devices::MmioDevice {
    /// Whether a read at `offset` answers pending or active state (I[SC]PENDR, I[SC]ACTIVER),
    /// which the reading vCPU's list registers may hold more recently than the model: the guest
    /// acknowledges and ends interrupts there without an exit.
    fn reads_list_register_state(&self, offset: u64) -> bool;
}

/// Where the pending and active registers (ISPENDR, ICPENDR, ISACTIVER, ICACTIVER) are in the
/// distributor, and in a redistributor's SGI_base frame.
const PENDING_ACTIVE: core::ops::Range<u64> = 0x200..0x400;

/// Which register window a published register is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Distributor,
    Redistributors,
}

/// The vGIC's published registers.
struct Cells {
    /// GICD_CTLR: changes with the guest's writes to it.
    gicd_ctlr: AtomicU32,
    /// GICD_TYPER, GICD_IIDR: fixed by the configuration.
    gicd_typer: AtomicU32,
    gicd_iidr: AtomicU32,
    /// GICR_CTLR, every redistributor's: reads as zero (no LPIs, no write ever pending).
    gicr_ctlr: AtomicU32,
}

impl Vgic {
    /// A vGIC in its reset state: everything disabled and inactive, SGIs enabled.
    pub fn new(cfg: VgicConfig) -> Self {
        let state = State::new(cfg);
        let cells = Cells {
            gicd_ctlr: AtomicU32::new(state.gicd_ctlr()),
            gicd_typer: AtomicU32::new(state.gicd_typer()),
            gicd_iidr: AtomicU32::new(distributor::IIDR),
            gicr_ctlr: AtomicU32::new(0),
        };
        Vgic {
            cfg,
            state: Mutex::new(state),
            cells,
        }
    }

    /// The registers a 32-bit read may take from a cell (`devices::read_cells`), as offsets
    /// into the distributor's window and into the redistributor region.
    pub fn published(&self) -> impl Iterator<Item = (Window, u64, &AtomicU32)> {
        let c = &self.cells;
        let gicd = [
            (distributor::reg::CTLR, &c.gicd_ctlr),
            (distributor::reg::TYPER, &c.gicd_typer),
            (distributor::reg::IIDR, &c.gicd_iidr),
        ]
        .into_iter()
        .map(|(offset, cell)| (Window::Distributor, offset, cell));
        let redistributors = match self.cfg.model {
            GicModel::V3 => self.cfg.nr_vcpus,
            GicModel::V2 => 0,
        };
        let gicr = (0..redistributors)
            .map(move |v| (Window::Redistributors, v as u64 * GICR_STRIDE, &c.gicr_ctlr));
        gicd.chain(gicr)
    }

    pub fn config(&self) -> VgicConfig {
        self.cfg
    }

    /// Back to the reset state (the VM restarts): everything disabled, inactive and not
    /// pending, no hardware mappings.
    pub fn reset(&self) {
        self.locked(|s| {
            *s = State::new(self.cfg);
            self.cells.gicd_ctlr.store(s.gicd_ctlr(), Ordering::Relaxed);
        });
    }

    /// Runs `f` on the state under the lock. Host tests check after every operation that the
    /// delivery index still agrees with the interrupts (`State::check_invariants`).
    fn locked<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock();
        let result = f(&mut state);
        #[cfg(test)]
        {
            state.check_invariants();
            self.check_cells(&state);
        }
        result
    }

    /// Every published register reads from its cell what the model answers.
    #[cfg(test)]
    fn check_cells(&self, state: &State) {
        for (window, offset, cell) in self.published() {
            let model = match window {
                Window::Distributor => state.gicd_read(0, offset, 4),
                Window::Redistributors => state.gicr_read(offset, 4),
            };
            assert_eq!(
                Ok(u64::from(cell.load(Ordering::Relaxed))),
                model,
                "{window:?} register {offset:#x}: the cell disagrees with the model"
            );
        }
    }

    /// A distributor read by vCPU `vcpu` (whose SGIs and PPIs a GICv2 distributor shows).
    pub fn gicd_read(&self, vcpu: usize, offset: u64, size: u8) -> Result<u64, MmioError> {
        self.state.lock().gicd_read(vcpu, offset, size)
    }

    /// A distributor write by vCPU `vcpu`. Kicks go to [`Vgic::take_kicks`].
    pub fn gicd_write(
        &self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<(), MmioError> {
        self.locked(|s| {
            let result = s.gicd_write(vcpu, offset, size, value);
            self.cells.gicd_ctlr.store(s.gicd_ctlr(), Ordering::Relaxed);
            result
        })
    }

    /// A read at `offset` into the redistributor region (GICv3 only; GICv2: `BadAccess`).
    pub fn gicr_read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        self.state.lock().gicr_read(offset, size)
    }

    /// A write at `offset` into the redistributor region. Kicks go to [`Vgic::take_kicks`].
    pub fn gicr_write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        self.locked(|s| s.gicr_write(offset, size, value))
    }

    /// A trapped write of `value` to ICC_SGI1R_EL1 (or SGI0R / ASGI1R) by vCPU `sender` of a
    /// GICv3 VM: marks the SGI pending on its targets and returns the targets reached (those
    /// to kick). A GICv2 VM has no such register: nothing happens.
    pub fn write_icc_sgir(&self, sender: usize, value: u64, register: SgiRegister) -> VcpuSet {
        if self.cfg.model != GicModel::V3 || sender >= self.cfg.nr_vcpus {
            return VcpuSet::empty();
        }
        let (intid, targets) = sgi::decode_icc_sgi1r(value, sender, &self.cfg);
        self.locked(|s| s.send_v3_sgi(intid, targets, register))
    }

    /// Drives a device's interrupt line; returns the vCPUs to kick.
    pub fn set_level(&self, intid: u32, vcpu: usize, level: bool) -> Result<VcpuSet, InjectError> {
        self.locked(|s| s.set_level(intid, vcpu, level))
    }

    /// Makes an interrupt pending once; returns the vCPUs to kick.
    pub fn raise_edge(&self, intid: u32, vcpu: usize) -> Result<VcpuSet, InjectError> {
        self.locked(|s| s.raise_edge(intid, vcpu))
    }

    /// Marks `intid` (of `vcpu` for a PPI) as hardware-mapped to `pintid`, or not (`None`).
    /// Meant for VM setup, before the interrupt is in use.
    pub fn map_hw(&self, intid: u32, vcpu: usize, pintid: Option<u32>) -> Result<(), InjectError> {
        self.locked(|s| s.map_hw(intid, vcpu, pintid))
    }

    /// The vCPUs that MMIO writes since the last call made look at their list registers again.
    pub fn take_kicks(&self) -> VcpuSet {
        core::mem::take(&mut self.state.lock().kicks)
    }

    /// The deliverable pending interrupts of `vcpu` that its list registers do not hold, best
    /// first: `(intid, priority, ...)` in priority order, ties by INTID.
    pub fn next_pending(&self, vcpu: usize) -> impl Iterator<Item = PendingIrq> + use<> {
        let state = self.state.lock();
        let pending = state.pending_for(vcpu);
        #[cfg(test)]
        assert_eq!(
            pending,
            state.pending_by_scan(vcpu),
            "the index disagrees with a scan"
        );
        pending.into_iter()
    }

    /// Whether `vcpu` has an interrupt to take (for WFI).
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        self.state.lock().has_deliverable(vcpu)
    }

    /// After `vcpu` exited: folds its decoded list registers back into the model.
    pub fn fold_lrs(&self, vcpu: usize, lrs: &[ListRegister]) {
        self.fold_lrs_from(vcpu, lrs)
    }

    /// [`Vgic::fold_lrs`], reading only the registers the last fill used.
    pub fn fold_lrs_from(&self, vcpu: usize, lrs: &(impl ListRegisters + ?Sized)) {
        self.locked(|s| s.fold_lrs(vcpu, lrs))
    }

    /// Before `vcpu` runs: the contents for its list registers (`lrs.len()` of them).
    pub fn fill_lrs(&self, vcpu: usize, lrs: &mut [ListRegister]) -> LrFill {
        self.locked(|s| s.fill_lrs(vcpu, lrs))
    }

    /// [`Vgic::fold_lrs`] then [`Vgic::fill_lrs`] under one lock, reading and writing only the
    /// registers in use (see `State::sync_lrs`): an exit's whole list-register round trip.
    pub fn sync_lrs(&self, vcpu: usize, lrs: &mut (impl ListRegisters + ?Sized)) -> LrFill {
        self.locked(|s| s.sync_lrs(vcpu, lrs))
    }
}
