//! A virtual CPU: the guest register file the exit path works on, and which VM it belongs to.

use super::Vm;
use crate::traps::context::{GuestRegs, SPSR_EL1H_MASKED};
use alloc::sync::Arc;

/// One vCPU. `regs` must stay the first field: the exception vectors reach it through the
/// per-CPU block's pointer (see `cpu::PerCpu`).
#[repr(C)]
pub struct Vcpu {
    pub regs: GuestRegs,
    pub vm: Arc<Vm>,
    /// Index within the VM (0 = the boot vCPU).
    pub index: usize,
    /// The MPIDR_EL1 the guest reads (VMPIDR_EL2): bit 31 RES1, Aff0 = index.
    pub mpidr: u64,
    /// The guest's EL1 physical timer, emulated (CNTHCTL_EL2.EL1PCEN = 0).
    pub ptimer: crate::timer::ptimer::PhysTimer,
    /// The physical timer's registers changed: the CPU's EL2 timer must be reprogrammed.
    pub rearm_timer: bool,
    /// Waiting in WFI for an interrupt.
    pub blocked: bool,
    /// EL1 system registers and virtual timer while not loaded.
    pub el1: crate::cpu::context::El1Context,
    /// FP/SIMD registers while another vCPU owns the CPU's.
    pub fp: crate::cpu::context::FpContext,
    /// The virtual CPU interface's own state while not loaded (see `interrupts::vcpu_leaves`).
    pub gic: crate::interrupts::VcpuGicState,
}

const _: () = assert!(core::mem::offset_of!(Vcpu, regs) == 0);

impl Vcpu {
    /// A vCPU that will start at `entry` in EL1h with interrupts masked and `x0 = arg`, the
    /// state the Linux boot protocol (and PSCI CPU_ON) asks for.
    pub fn new(vm: Arc<Vm>, index: usize, entry: u64, arg: u64) -> Self {
        let mut regs = GuestRegs::default();
        regs.x[0] = arg;
        regs.pc = entry;
        regs.spsr = SPSR_EL1H_MASKED;
        Vcpu {
            regs,
            vm,
            index,
            mpidr: mpidr_for(index),
            ptimer: Default::default(),
            rearm_timer: false,
            blocked: false,
            el1: crate::cpu::context::El1Context::reset(),
            fp: Default::default(),
            gic: Default::default(),
        }
    }
}

/// The virtual MPIDR of vCPU `index`: bit 31 is RES1; Aff0 counts vCPUs, as QEMU virt numbers
/// its CPUs (up to 16 per cluster is the GICv3 limit, Veil has at most 8).
pub const fn mpidr_for(index: usize) -> u64 {
    (1 << 31) | (index as u64 & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpidrs() {
        assert_eq!(mpidr_for(0), 0x8000_0000);
        assert_eq!(mpidr_for(3), 0x8000_0003);
    }
}
