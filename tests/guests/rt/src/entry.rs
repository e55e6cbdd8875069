//! How a guest starts: `_start` (in `entry.s`) prepares the vCPU and calls `rust_start`,
//! which records the DTB address and enters the guest's main function.
//!
//! The loader jumps to the image's first byte, so `_start` sits in `.text.entry`, which
//! `guest.ld` places first. Secondary vCPUs come in through `__veil_rt_secondary_entry` in the
//! same file; see [`crate::cpu`].

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{CurrentEL, Readable};

use crate::{cpu, power};

/// CPACR_EL1.FPEN = 0b11: FP/SIMD instructions at EL1 and EL0 do not trap.
const CPACR_FPEN_NO_TRAP: u64 = 0b11 << 20;

core::arch::global_asm!(
    include_str!("entry.s"),
    CPACR_FPEN_NO_TRAP = const CPACR_FPEN_NO_TRAP,
    STACK_SIZE = const cpu::STACK_SIZE,
    stacks = sym cpu::STACKS,
    rust_start = sym rust_start,
    secondary_start = sym cpu::secondary_start,
);

/// The DTB address the loader passed in x0 to vCPU 0; 0 until `rust_start` runs.
static DTB_ADDRESS: AtomicUsize = AtomicUsize::new(0);

/// CNTPCT_EL0 as `_start`'s first instruction read it on vCPU 0.
static BOOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The DTB address that the loader passed in x0 (0 if it passed none, as QEMU does for an ELF).
pub fn dtb_address() -> usize {
    DTB_ADDRESS.load(Ordering::Relaxed)
}

/// The physical counter (CNTPCT_EL0) as read by the guest's very first instruction: how long
/// the machine ran before the guest did. Under QEMU with `-icount shift=0` and a 1 GHz counter
/// that is the number of instructions executed from machine start (firmware stub, hypervisor)
/// up to the guest's entry.
pub fn boot_counter() -> u64 {
    BOOT_COUNTER.load(Ordering::Relaxed)
}

/// vCPU 0's first Rust code, called by `_start` with a stack, a zeroed .bss, x0 as it was and
/// the counter value `_start` read first thing.
extern "C" fn rust_start(dtb: usize, boot_counter: u64) -> ! {
    DTB_ADDRESS.store(dtb, Ordering::Relaxed);
    BOOT_COUNTER.store(boot_counter, Ordering::Relaxed);
    // The runtime writes EL1 registers: entered at EL2 (bare QEMU with virtualization=on, say)
    // those would configure nothing and the first exception would go astray. Say so instead.
    let el = CurrentEL.read(CurrentEL::EL);
    if el != 1 {
        crate::println!(
            "{}: FAIL entered at EL{}, a guest runs at EL1",
            power::name(),
            el
        );
        power::halt();
    }
    power::__veil_guest_main(dtb)
}
