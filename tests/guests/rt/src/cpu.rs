//! vCPUs: their identity, their stacks, and starting secondary vCPUs with a Rust entry point.
//!
//! Every vCPU gets one stack from [`STACKS`], by index: vCPU 0 (the one the loader enters) uses
//! stack 0, and [`start`] gives vCPU `index` stack `index`. A started vCPU enters
//! `__veil_rt_secondary_entry` (in `entry.s`) through PSCI CPU_ON, is set up like vCPU 0 (FP/SIMD,
//! vector table, stack) and then calls the `main(arg)` that [`start`] recorded for its index.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use aarch64_cpu::registers::{MPIDR_EL1, Readable};

use crate::psci;

/// The most vCPUs a guest can run: the most a VM package may give a VM.
pub const MAX_CPUS: usize = 8;

/// Bytes of stack per vCPU. Test code is shallow; an exception frame takes 800 bytes.
pub const STACK_SIZE: usize = 0x8000;

/// MPIDR_EL1 bits that name a vCPU: Aff3 (39:32), Aff2 (23:16), Aff1 (15:8), Aff0 (7:0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The stacks of all vCPUs, only ever touched through the stack pointer.
#[repr(C, align(16))]
pub struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_CPUS]>);

// SAFETY: Rust code never reads or writes the array through this type; each vCPU uses only its
// own stack (by index), through SP.
unsafe impl Sync for Stacks {}

/// In its own section so that `_start` need not zero it (guest.ld keeps it out of .bss).
#[unsafe(link_section = ".bss.veil_rt_stacks")]
pub static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

/// What each secondary vCPU runs, by index: a `fn(usize) -> !` as an address (0 = none yet).
static SECONDARY_MAIN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The argument for each secondary's main.
static SECONDARY_ARG: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

unsafe extern "C" {
    /// The secondary vCPUs' first instruction, in entry.s.
    fn __veil_rt_secondary_entry();
}

/// The calling vCPU's MPIDR_EL1.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get()
}

/// Starts the vCPU whose MPIDR affinity is `mpidr` (as in its DTB `/cpus/cpu@N` `reg`) running
/// `main(arg)` on stack `index`, with the same exception handling as vCPU 0.
///
/// Returns when PSCI CPU_ON returns, which is before the new vCPU necessarily runs; the caller
/// decides how the two meet again (a flag, AFFINITY_INFO after the new one calls CPU_OFF).
///
/// # Panics
/// If `index` is 0 (the boot vCPU's stack) or not below [`MAX_CPUS`].
///
/// # Safety
/// No running vCPU may be using stack `index`, and none may start on it until this one has
/// stopped: two vCPUs on one stack corrupt each other's frames.
pub unsafe fn start(
    index: usize,
    mpidr: u64,
    main: fn(usize) -> !,
    arg: usize,
) -> Result<(), psci::Error> {
    assert!(
        (1..MAX_CPUS).contains(&index),
        "vCPU index {index} has no stack of its own"
    );
    SECONDARY_MAIN[index].store(main as *const () as usize, Ordering::Relaxed);
    SECONDARY_ARG[index].store(arg, Ordering::Relaxed);
    // The new vCPU reads both with its MMU (and so its caches) off: make the stores complete,
    // not merely ordered, before the hypervisor can start it.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    let entry = __veil_rt_secondary_entry as *const () as u64;
    // SAFETY: the entry point sets up the vCPU and its stack `index`, which the caller promises
    // is free, before it runs the recorded `main`, an ordinary safe Rust function.
    unsafe { psci::cpu_on(mpidr & MPIDR_AFFINITY_MASK, entry, index as u64) }
}

/// A started vCPU's first Rust code, called by `__veil_rt_secondary_entry` on its own stack.
pub(crate) extern "C" fn secondary_start(index: usize) -> ! {
    let main = SECONDARY_MAIN[index].load(Ordering::Relaxed);
    let arg = SECONDARY_ARG[index].load(Ordering::Relaxed);
    // SAFETY: `start` stored a `fn(usize) -> !` for this index before CPU_ON, so the only way
    // here is with a valid function address (never 0), and function pointers round-trip
    // through usize unchanged on AArch64.
    let main: fn(usize) -> ! = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(main) };
    main(arg)
}
