//! How a VM's virtual interrupts reach its vCPUs: the VM's vGIC, plus who must look at their
//! list registers again.
//!
//! Whoever changes the vGIC's state (a device's line, a timer, an SGI, a distributor write) gets
//! back the set of vCPUs concerned and hands it to [`IrqRouting::deliver`]: each is marked
//! *dirty*, and one that runs on another physical CPU is kicked (a physical SGI makes it exit).
//! A vCPU's exit path refills its list registers when it is dirty or took an interrupt exit —
//! on no other exit, which keeps hypercalls and MMIO to other devices off the vGIC's lock.

use super::vgic::{CurrentVcpu, GicWindow, VcpuSet, Vgic};
use crate::devices::{IrqLine, MmioDevice, MmioError};
use alloc::{sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, Ordering};

/// One VM's interrupt delivery.
pub struct IrqRouting {
    pub vgic: Arc<Vgic>,
    /// Per vCPU: the vGIC has news its list registers do not show yet.
    dirty: Vec<AtomicBool>,
    /// Per vCPU: the physical CPU it is pinned to.
    placement: Vec<usize>,
}

impl IrqRouting {
    pub fn new(vgic: Arc<Vgic>, placement: Vec<usize>) -> Self {
        let dirty = placement.iter().map(|_| AtomicBool::new(true)).collect();
        IrqRouting {
            vgic,
            dirty,
            placement,
        }
    }

    /// Marks `vcpus` dirty and kicks those pinned to other CPUs.
    pub fn deliver(&self, vcpus: VcpuSet) {
        let here = crate::cpu::current_index();
        for v in vcpus.iter() {
            let Some(flag) = self.dirty.get(v) else {
                continue;
            };
            flag.store(true, Ordering::Release);
            let cpu = self.placement[v];
            if cpu != here {
                super::kick(cpu, crate::cpu::mpidr_of(cpu));
            }
        }
    }

    /// Whether vCPU `v` must refill its list registers; clears the mark.
    pub fn take_dirty(&self, v: usize) -> bool {
        // A plain load first: most exits find nothing to do and need no exclusive access.
        self.dirty
            .get(v)
            .is_some_and(|d| d.load(Ordering::Relaxed) && d.swap(false, Ordering::AcqRel))
    }

    /// Marks vCPU `v` dirty without a kick (its own exit path will look).
    pub fn mark_dirty(&self, v: usize) {
        if let Some(d) = self.dirty.get(v) {
            d.store(true, Ordering::Release);
        }
    }
}

/// A device's interrupt output wired to an INTID of its VM's vGIC.
pub struct VgicLine {
    pub routing: Arc<IrqRouting>,
    pub intid: u32,
}

impl IrqLine for VgicLine {
    fn set_level(&self, level: bool) {
        // An SPI's level does not depend on the vCPU; its targets come back from the vGIC.
        if let Ok(kicks) = self.routing.vgic.set_level(self.intid, 0, level) {
            self.routing.deliver(kicks);
        }
    }
}

/// The distributor's banked registers (GICv2 SGIs and PPIs) belong to the vCPU that accesses
/// them: the one running on this physical CPU.
pub struct RunningVcpu;

impl CurrentVcpu for RunningVcpu {
    fn current_vcpu(&self) -> usize {
        crate::cpu::current_vcpu_index()
    }
}

/// A vGIC register window (distributor or redistributors) on the VM's bus, with what the
/// vGIC's model alone cannot do. Its writes may make interrupts deliverable to other vCPUs:
/// after each write, the vCPUs concerned are kicked (reads and the other devices' accesses never
/// take the vGIC's kick list). A read of pending or active state first brings the reading
/// vCPU's list registers into the model: the reader is the vCPU loaded on this CPU.
pub struct KickingGicWindow<D: GicWindow> {
    pub window: D,
    pub routing: Arc<IrqRouting>,
}

impl<D: GicWindow> MmioDevice for KickingGicWindow<D> {
    fn name(&self) -> &'static str {
        self.window.name()
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        if self.window.reads_list_register_state(offset) {
            super::sync_list_registers_of(&self.routing.vgic, crate::cpu::current_vcpu_index());
        }
        self.window.read(offset, size)
    }

    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        let result = self.window.write(offset, size, value);
        let kicks = self.routing.vgic.take_kicks();
        if !kicks.is_empty() {
            self.routing.deliver(kicks);
        }
        result
    }
}
