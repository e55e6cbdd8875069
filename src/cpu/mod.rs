//! The physical CPUs: each one's private state, and putting a vCPU on one.
//!
//! Every CPU has a [`PerCpu`] block; TPIDR_EL2 holds its address so that the exception vectors
//! and Rust code find it without a global "current" anything. A block is only ever touched by
//! its own CPU, which is what makes handing out `&mut` to it sound.

use crate::traps::context::GuestRegs;
use crate::vm::vcpu::Vcpu;
use alloc::{boxed::Box, vec::Vec};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub mod sched;

pub use sched::idle;

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/el2.rs"]
pub mod el2;

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/context.rs"]
pub mod context;

/// Host builds: the same state as plain data, never loaded into hardware.
#[cfg(not(target_arch = "aarch64"))]
pub mod context {
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct El1Context {
        pub cntv_cval: u64,
        pub cntv_ctl: u64,
    }
    impl El1Context {
        pub fn reset() -> Self {
            Self::default()
        }
        pub fn save(&mut self) {}
        pub fn restore(&self) {}
    }
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct FpContext;
    impl FpContext {
        pub fn save(&mut self) {}
        pub fn restore(&self) {}
    }
    pub fn trap_fp(_trap: bool) {}
    pub fn silence_virtual_timer() {}
}

/// Most physical CPUs Veil drives (`MAX_CPUS` in `linker/veil.ld`).
pub const MAX_CPUS: usize = 8;

/// One physical CPU's private state. The first four fields are read by the exception vectors
/// (`traps/_arch/aarch64/vectors.s`) at fixed offsets.
#[repr(C)]
pub struct PerCpu {
    /// Offset 0: the register file of the vCPU loaded here.
    guest_regs: *mut GuestRegs,
    /// Offset 8: the top of this CPU's EL2 stack; every exit starts there.
    stack_top: u64,
    /// Offset 16: the loaded vCPU's VM's sanitized ID registers (`vm::id_regs`), which the
    /// vectors answer trapped ID-register reads from without entering Rust.
    id_regs: *const u64,
    /// Offset 24: the loaded vCPU's VM's published device registers, which the vectors answer
    /// 32-bit reads of without entering Rust (`devices::read_cells`).
    read_cells: *const crate::devices::read_cells::ReadCells,
    /// Linear index (0 = the boot CPU).
    pub index: usize,
    /// The started vCPUs pinned to this CPU (see [`sched`]).
    vcpus: Vec<Box<Vcpu>>,
    /// Which of `vcpus` is loaded in the hardware.
    current: Option<usize>,
    /// The vCPU whose FP/SIMD state the registers hold (lazy switching), by address.
    fp_owner: *const Vcpu,
    /// When the loaded vCPU's time slice ends (counter value).
    slice_end: u64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, guest_regs) == 0);
const _: () = assert!(core::mem::offset_of!(PerCpu, stack_top) == 8);
const _: () = assert!(core::mem::offset_of!(PerCpu, id_regs) == 16);
const _: () = assert!(core::mem::offset_of!(PerCpu, read_cells) == 24);

struct PerCpuSlot(UnsafeCell<PerCpu>);

// SAFETY: slot i is only accessed by CPU i (through its own TPIDR_EL2), except that the boot
// CPU initializes a slot before starting the CPU that owns it.
unsafe impl Sync for PerCpuSlot {}

static PER_CPU: [PerCpuSlot; MAX_CPUS] = [const {
    PerCpuSlot(UnsafeCell::new(PerCpu {
        guest_regs: core::ptr::null_mut(),
        stack_top: 0,
        id_regs: core::ptr::null(),
        read_cells: core::ptr::null(),
        index: 0,
        vcpus: Vec::new(),
        current: None,
        fp_owner: core::ptr::null(),
        slice_end: 0,
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
    /// The vCPU loaded here.
    pub fn vcpu(&mut self) -> Option<&mut Vcpu> {
        let i = self.current?;
        self.vcpus.get_mut(i).map(|b| &mut **b)
    }
}

/// Per CPU: the index (within its VM) of the vCPU loaded there; read by device models that
/// bank registers per vCPU.
static CURRENT_VCPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The index within its VM of the vCPU this CPU runs (0 if none).
pub fn current_vcpu_index() -> usize {
    CURRENT_VCPU[current_index()].load(Ordering::Relaxed)
}

/// Per CPU: which vCPUs it should run may have changed (a PSCI CPU_ON for one of them, a
/// CPU_OFF, a VM that ended). Its scheduler then re-reads the assignments; otherwise it does not
/// touch the VM list at all.
static WORK: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(true) }; MAX_CPUS];

/// Tells CPU `cpu`'s scheduler to look at its vCPUs' power states again.
pub fn note_work(cpu: usize) {
    if let Some(flag) = WORK.get(cpu) {
        flag.store(true, Ordering::Release);
    }
}

/// Most vCPUs pinned to one physical CPU.
pub const MAX_VCPUS_PER_CPU: usize = 8;
/// An empty slot of [`ASSIGNMENT`].
const UNASSIGNED: usize = usize::MAX;

/// Which (VM, vCPU)s each physical CPU runs, packed as `vm << 8 | vcpu`; written by the boot CPU
/// before the owning CPU starts, read by that CPU.
static ASSIGNMENT: [[AtomicUsize; MAX_VCPUS_PER_CPU]; MAX_CPUS] =
    [const { [const { AtomicUsize::new(UNASSIGNED) }; MAX_VCPUS_PER_CPU] }; MAX_CPUS];

/// Pins vCPU `vcpu` of VM `vm` to physical CPU `cpu`. False if that CPU has no room left.
pub fn assign(cpu: usize, vm: usize, vcpu: usize) -> bool {
    ASSIGNMENT[cpu].iter().any(|slot| {
        slot.compare_exchange(
            UNASSIGNED,
            vm << 8 | vcpu,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    })
}

/// The (VM, vCPU)s pinned to physical CPU `cpu`.
fn assignments(cpu: usize) -> impl Iterator<Item = (usize, usize)> {
    ASSIGNMENT[cpu]
        .iter()
        .filter_map(|slot| match slot.load(Ordering::Acquire) {
            UNASSIGNED => None,
            packed => Some((packed >> 8, packed & 0xff)),
        })
}

/// Whether physical CPU `cpu` has a vCPU to run.
pub fn is_assigned(cpu: usize) -> bool {
    assignments(cpu).next().is_some()
}

/// The host MPIDR of physical CPU `cpu` (from the DTB's /cpus, in order).
pub fn mpidr_of(cpu: usize) -> u64 {
    crate::board::platform()
        .cpus
        .as_slice()
        .get(cpu)
        .map_or(0, |c| c.mpidr)
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
