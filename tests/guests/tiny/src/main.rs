//! `veil-guest-tiny`: the walking-skeleton guest. It checks that its virtual board is the one
//! Veil promises (QEMU `virt`: DTB in x0, PSCI 1.1 over HVC, no EL2/EL3 visible) and prints one
//! line per check, for the host to match.
//!
//! Output contract (every line starts with `tiny: `):
//!
//! - `tiny: hello from EL1`, always first.
//! - No `tiny.test=` in `/chosen/bootargs`: the basic checks, each printing `tiny: ok <what>` or
//!   `tiny: FAIL <what, expected vs got>`, then `tiny: all checks passed` or
//!   `tiny: N checks FAILED`, then PSCI SYSTEM_OFF.
//! - `tiny.test=unmapped`: `tiny: reading unmapped IPA 0x10000000`, then a 32-bit load from that
//!   hole in the board. Veil stops the VM there; if the load ever returns the guest prints
//!   `tiny: FAIL unmapped read returned <value>` and powers off.
//! - `tiny.test=selftest`: checks of the runtime itself (expected exceptions, raw system register
//!   reads, PSCI CPU_ON/CPU_OFF/AFFINITY_INFO with a second vCPU if the DTB has one), in the same
//!   ok/FAIL/summary format.
//! - `tiny.test=unexpected`: an undefined instruction outside `expect_exception`, which must end
//!   the guest with `tiny: FAIL unexpected exception ESR=..`.
//! - `tiny.test=panic`: a panic, which must end the guest with `tiny: FAIL panicked: ..`.
//! - Any other `tiny.test=`: `tiny: FAIL unknown test tiny.test=<value>`, then power off.
//!
//! The last three exist so the host can check that failures are reported, not only successes.
//!
//! If SYSTEM_OFF returns, the runtime prints `tiny: FAIL SYSTEM_OFF returned ..` and halts.

#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

mod checks;
mod selftest;

use veil_guest_rt::{bootargs, dtb, power_off, println};

veil_guest_rt::guest!(name: "tiny", main: main);

/// A hole in the guest's board: no RAM and no device there (on bare QEMU `virt` the PCIe MMIO
/// window starts here, which is why that run reads something back).
const UNMAPPED_IPA: usize = 0x1000_0000;

fn main(dtb: usize) -> ! {
    println!("tiny: hello from EL1");
    let args = dtb::bootargs().unwrap_or("");
    match bootargs::value(args, "tiny.test") {
        None => checks::run(dtb),
        Some("unmapped") => unmapped_read(),
        Some("selftest") => selftest::run(),
        Some("unexpected") => unexpected_exception(),
        Some("panic") => panic!("tiny.test=panic asked for one"),
        Some(other) => {
            println!("tiny: FAIL unknown test tiny.test={}", other);
            power_off()
        }
    }
}

/// Reads the hole at [`UNMAPPED_IPA`], which the hypervisor must not let complete.
fn unmapped_read() -> ! {
    println!("tiny: reading unmapped IPA {:#x}", UNMAPPED_IPA);
    // SAFETY: a volatile 32-bit load from an aligned address outside everything Rust code owns;
    // whatever the board does with it (stop the VM, return a value, raise an abort that the
    // runtime reports) cannot corrupt the guest's memory.
    let value = unsafe { (UNMAPPED_IPA as *const u32).read_volatile() };
    println!("tiny: FAIL unmapped read returned {:#x}", value);
    power_off()
}

/// Executes an undefined instruction with no exception expected.
fn unexpected_exception() -> ! {
    // SAFETY: `udf` touches no memory or registers; the runtime's handler takes the exception,
    // reports it and powers off, so execution does not come back here.
    unsafe { core::arch::asm!("udf #0", options(nomem, nostack)) };
    println!("tiny: FAIL execution continued after an unexpected exception");
    power_off()
}
