//! Veil: a type-1 hypervisor for ARMv8-A.
//!
//! Veil is entered at EL2 by the firmware (or QEMU), takes the machine, and runs EL1 guests in
//! virtual machines that all see the same virtual board, whatever the host board is. The code is
//! split by concern; each folder's `_arch/aarch64` part holds the assembly and system-register
//! access, everything else is plain logic that also builds and is unit-tested on the host:
//!
//! - [`boot`]: the entry point and the boot flow, from the first instruction to the first guest.
//! - [`board`]: what the host machine is: board facts, DTB discovery, console, power.
//! - [`cpu`]: the physical CPUs: per-CPU state and EL2 control registers.
//! - [`memory`]: Veil's image layout, heap, page frames, EL2 stage-1 and guest stage-2 tables.
//! - [`traps`]: the exit path: vectors, ESR decoding, and one handler per exception class.
//! - [`devices`]: the virtual devices guests reach by MMIO.
//! - [`vm`]: virtual machines and vCPUs, their loading and their virtual board.
//! - [`interrupts`] and [`timer`]: the physical GIC and generic timer as Veil uses them.

#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]
// Host unit tests build everything, but only pure modules are exercised there.
#![cfg_attr(test, allow(dead_code, unused_imports))]

extern crate alloc;

pub mod board;
pub mod boot;
pub mod cpu;
pub mod devices;
pub mod interrupts;
pub mod logger;
pub mod memory;
pub mod timer;
pub mod traps;
pub mod vm;

#[cfg(test)]
mod test_rng;

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    board::panic::hypervisor_panic(info)
}
