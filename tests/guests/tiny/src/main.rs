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
//!   hole in the board, which must raise a synchronous external abort in the guest's own vector
//!   (`tiny: ok ..` with ESR and FAR, then `tiny: all checks passed`); if the load returns a
//!   value the guest prints `tiny: FAIL unmapped read returned <value>`.
//! - `tiny.test=novector`: points VBAR_EL1 at the hole, then reads it: the abort cannot be
//!   delivered, so the hypervisor must stop the VM. Prints `tiny: vectors moved to 0x10000000`
//!   first; anything after that is a failure.
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
        Some("novector") => unmapped_read_without_vectors(),
        Some("selftest") => selftest::run(),
        Some("unexpected") => unexpected_exception(),
        Some("panic") => panic!("tiny.test=panic asked for one"),
        Some(other) => {
            println!("tiny: FAIL unknown test tiny.test={}", other);
            power_off()
        }
    }
}

/// Reads the hole at [`UNMAPPED_IPA`]: the access must come back as a synchronous external
/// abort on a data access (EC 0x25, DFSC 0x10) at exactly that address, taken in this guest's
/// own vector.
fn unmapped_read() -> ! {
    println!("tiny: reading unmapped IPA {:#x}", UNMAPPED_IPA);
    let mut value = None;
    let info = veil_guest_rt::exception::expect_exception(|| {
        // SAFETY: a volatile 32-bit load from an aligned address outside everything Rust code
        // owns; an abort is caught by expect_exception, a value is only printed.
        value = Some(unsafe { (UNMAPPED_IPA as *const u32).read_volatile() });
    });
    match info {
        Some(info)
            if info.ec() == 0x25
                && info.iss() & 0x3f == 0x10
                && info.far == UNMAPPED_IPA as u64 =>
        {
            println!(
                "tiny: ok unmapped read raised a synchronous external abort: ESR={:#x} FAR={:#x}",
                info.esr, info.far
            );
            println!("tiny: all checks passed");
        }
        Some(info) => println!(
            "tiny: FAIL unmapped read raised ESR={:#x} FAR={:#x}, expected EC=0x25 DFSC=0x10 FAR={:#x}",
            info.esr, info.far, UNMAPPED_IPA
        ),
        None => println!(
            "tiny: FAIL unmapped read returned {:#x}",
            value.unwrap_or(0)
        ),
    }
    power_off()
}

/// Points the exception vectors at the hole, then reads it: the guest can no longer take the
/// abort, and the hypervisor has to stop it.
fn unmapped_read_without_vectors() -> ! {
    println!("tiny: vectors moved to {:#x}", UNMAPPED_IPA);
    // SAFETY: from here on no exception can be handled; the load below ends this guest (the
    // hypervisor stops it) or, if it returns, the failure is printed.
    let value = unsafe {
        core::arch::asm!("msr vbar_el1, {}", "isb", in(reg) UNMAPPED_IPA, options(nostack));
        (UNMAPPED_IPA as *const u32).read_volatile()
    };
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
