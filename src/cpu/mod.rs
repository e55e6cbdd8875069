//! The physical CPUs: each one's private state, and putting a vCPU on one.
//!
//! Every CPU has a [`PerCpu`] block; TPIDR_EL2 holds its address so that the exception vectors
//! and Rust code find it without a global "current" anything. A block is only ever touched by
//! its own CPU, which is what makes handing out `&mut` to it sound.

use crate::traps::context::GuestRegs;
use crate::vm::vcpu::Vcpu;
use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/el2.rs"]
pub mod el2;

/// Most physical CPUs Veil drives (`MAX_CPUS` in `linker/veil.ld`).
pub const MAX_CPUS: usize = 8;

/// One physical CPU's private state. The first two fields are read by the exception vectors
/// (`traps/_arch/aarch64/vectors.s`) at fixed offsets.
#[repr(C)]
pub struct PerCpu {
    /// Offset 0: the register file of the vCPU running here.
    guest_regs: *mut GuestRegs,
    /// Offset 8: the top of this CPU's EL2 stack; every exit starts there.
    stack_top: u64,
    /// Linear index (0 = the boot CPU).
    pub index: usize,
    /// The vCPU this CPU runs, if any.
    vcpu: Option<Box<Vcpu>>,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, guest_regs) == 0);
const _: () = assert!(core::mem::offset_of!(PerCpu, stack_top) == 8);

struct PerCpuSlot(UnsafeCell<PerCpu>);

// SAFETY: slot i is only accessed by CPU i (through its own TPIDR_EL2), except that the boot
// CPU initializes a slot before starting the CPU that owns it.
unsafe impl Sync for PerCpuSlot {}

static PER_CPU: [PerCpuSlot; MAX_CPUS] = [const {
    PerCpuSlot(UnsafeCell::new(PerCpu {
        guest_regs: core::ptr::null_mut(),
        stack_top: 0,
        index: 0,
        vcpu: None,
    }))
}; MAX_CPUS];

/// Sets up CPU `index`'s block and points this CPU's TPIDR_EL2 at it. Called first thing on
/// every CPU, on that CPU.
pub fn init_this_cpu(index: usize) {
    assert!(index < MAX_CPUS);
    let slot = PER_CPU[index].0.get();
    // SAFETY: this CPU owns slot `index` from now on; nothing else holds a reference to it.
    unsafe {
        (*slot).index = index;
        (*slot).stack_top = crate::memory::layout::stack_top(index);
    }
    arch::set_tpidr(slot as u64);
}

/// This CPU's linear index; 0 before `init_this_cpu` ran (only the boot CPU runs that early).
pub fn current_index() -> usize {
    let ptr = arch::tpidr();
    if ptr == 0 {
        return 0;
    }
    // SAFETY: TPIDR_EL2 is only ever set to a PER_CPU slot by init_this_cpu.
    unsafe { (*(ptr as *const PerCpu)).index }
}

/// This CPU's block.
///
/// # Safety
/// The caller must not hold another reference from an earlier call while using this one (the
/// exit path takes it once per exit).
pub unsafe fn this() -> &'static mut PerCpu {
    let ptr = arch::tpidr() as *mut PerCpu;
    assert!(!ptr.is_null(), "per-CPU block used before init_this_cpu");
    // SAFETY: the slot belongs to this CPU (see PerCpuSlot); the caller keeps it unique.
    unsafe { &mut *ptr }
}

impl PerCpu {
    /// The vCPU running here.
    pub fn vcpu(&mut self) -> Option<&mut Vcpu> {
        self.vcpu.as_deref_mut()
    }

    /// Takes the vCPU off this CPU (its VM ended); the CPU then has nothing to run.
    pub fn take_vcpu(&mut self) -> Option<Box<Vcpu>> {
        self.guest_regs = core::ptr::null_mut();
        self.vcpu.take()
    }

    /// Puts `vcpu` on this CPU and enters it. Never returns: the CPU now lives in the exit loop.
    pub fn run(&mut self, vcpu: Box<Vcpu>) -> ! {
        CURRENT_VCPU[self.index].store(vcpu.index, Ordering::Relaxed);
        let vcpu = self.vcpu.insert(vcpu);
        self.guest_regs = &mut vcpu.regs;
        arch::load_vcpu_state(vcpu);
        crate::interrupts::start_vcpu(vcpu);
        arch::enter_guest()
    }
}

/// Per CPU: the index (within its VM) of the vCPU running there; read by device models that
/// bank registers per vCPU.
static CURRENT_VCPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The index within its VM of the vCPU this CPU runs (0 if none).
pub fn current_vcpu_index() -> usize {
    CURRENT_VCPU[current_index()].load(Ordering::Relaxed)
}

/// No vCPU assigned (see [`assign`]).
const UNASSIGNED: usize = usize::MAX;

/// Which (VM, vCPU) each physical CPU runs, packed as `vm << 8 | vcpu`; written by the boot CPU
/// before the owning CPU starts, read by that CPU.
static ASSIGNMENT: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(UNASSIGNED) }; MAX_CPUS];

/// Pins vCPU `vcpu` of VM `vm` to physical CPU `cpu`.
pub fn assign(cpu: usize, vm: usize, vcpu: usize) {
    ASSIGNMENT[cpu].store(vm << 8 | vcpu, Ordering::Release);
}

fn assignment(cpu: usize) -> Option<(usize, usize)> {
    match ASSIGNMENT[cpu].load(Ordering::Acquire) {
        UNASSIGNED => None,
        packed => Some((packed >> 8, packed & 0xff)),
    }
}

/// Whether physical CPU `cpu` has a vCPU to run.
pub fn is_assigned(cpu: usize) -> bool {
    assignment(cpu).is_some()
}

/// The host MPIDR of physical CPU `cpu` (from the DTB's /cpus, in order).
pub fn mpidr_of(cpu: usize) -> u64 {
    crate::board::platform().cpus.as_slice().get(cpu).map_or(0, |c| c.mpidr)
}

/// A CPU's life when it is not in a guest: take interrupts, start its vCPU when the guest asks
/// (PSCI CPU_ON), and turn the machine off once every VM has ended. Sleeps in WFI between
/// events; other CPUs wake it with a kick (an SGI).
pub fn idle() -> ! {
    let index = current_index();
    loop {
        crate::interrupts::handle_pending(None);
        if let Some(status) = crate::vm::registry::outcome() {
            log::info!("all VMs have ended; powering off");
            crate::board::power::power_off(status);
        }
        if let Some((vm_id, vcpu_index)) = assignment(index) {
            if let Some(vm) = crate::vm::registry::get(vm_id) {
                if vm.state() == crate::vm::VmState::Running {
                    if let Some(start) = vm.vcpu_power[vcpu_index].take_start() {
                        let vcpu = Box::new(Vcpu::new(vm, vcpu_index, start.entry, start.context_id));
                        // SAFETY: the idle loop holds no other reference to this CPU's block.
                        unsafe { this() }.run(vcpu);
                    }
                }
            }
        }
        arch::wait_for_interrupt();
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Vcpu;
    use aarch64_cpu::registers::{CNTVOFF_EL2, MIDR_EL1, TPIDR_EL2, VMPIDR_EL2, VTTBR_EL2};
    use core::arch::asm;
    use tock_registers::interfaces::{Readable, Writeable};

    pub fn set_tpidr(value: u64) {
        TPIDR_EL2.set(value);
    }

    pub fn tpidr() -> u64 {
        TPIDR_EL2.get()
    }

    pub fn wait_for_interrupt() {
        aarch64_cpu::asm::wfi();
    }

    /// Loads the EL2 state that differs per vCPU and per VM.
    pub fn load_vcpu_state(vcpu: &Vcpu) {
        // VTTBR_EL2: this VM's stage-2 root and VMID (TLB entries are tagged with it, so no
        // flush is needed when switching VMs).
        VTTBR_EL2.set(vcpu.vm.vttbr);
        // VPIDR_EL2: the guest reads the real MIDR (Linux applies errata workarounds by it).
        let midr = MIDR_EL1.get();
        // SAFETY: VPIDR_EL2 only changes what the guest reads as MIDR_EL1.
        unsafe { asm!("msr vpidr_el2, {}", in(reg) midr, options(nostack)) };
        // VMPIDR_EL2: the guest's MPIDR_EL1, its vCPU index in Aff0.
        VMPIDR_EL2.set(vcpu.mpidr);
        // CNTVOFF_EL2: the VM's virtual counter started at zero when the VM was created.
        CNTVOFF_EL2.set(vcpu.vm.counter_offset);
        super::el2::reset_el1_state();
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    }

    pub fn enter_guest() -> ! {
        unsafe extern "C" {
            fn __guest_resume() -> !;
        }
        // SAFETY: TPIDR_EL2 points at this CPU's block, whose guest_regs points at the vCPU
        // just loaded; __guest_resume restores it and ERETs into the guest.
        unsafe { __guest_resume() }
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    use super::Vcpu;

    pub fn set_tpidr(_value: u64) {}
    pub fn tpidr() -> u64 {
        0
    }
    pub fn wait_for_interrupt() {}
    pub fn load_vcpu_state(_vcpu: &Vcpu) {}
    pub fn enter_guest() -> ! {
        unimplemented!("guests run only on aarch64")
    }
}
