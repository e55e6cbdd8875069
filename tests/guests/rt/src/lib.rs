//! `veil-guest-rt`: the small runtime that every Veil test guest links.
//!
//! A test guest is a raw binary that a VM on Veil (or bare QEMU `virt`, for checking the guest
//! itself) enters at EL1h with the MMU off and the DTB address in x0. This crate does what must
//! happen before Rust code can run there, and gives tests the few tools they share:
//!
//! - [`entry`]: `_start` sets up FP/SIMD, the vector table, a stack and .bss, then calls the
//!   guest's main function, declared with [`guest!`]; secondary vCPUs enter through [`cpu`].
//! - [`console`]: `print!`/`println!` on the board's PL011.
//! - [`smccc`] and [`psci`]: firmware calls over HVC (and SMC), with PSCI's named wrappers.
//! - [`exception`]: the EL1 vector table; [`exception::expect_exception`] lets a test provoke an
//!   exception on purpose and [`exception::without_exception`] survive one it did not want,
//!   [`exception::set_irq_handler`] takes interrupts, any other exception fails the guest
//!   loudly.
//! - [`gic`]: a small GICv2/GICv3 driver (set-up, acknowledge/end, SGIs, per-INTID state), and
//!   [`probe`]: accesses a hypervisor may refuse, caught and named.
//! - [`dtb`] and [`bootargs`]: the device tree from x0 and the kernel command line in it.
//! - [`sysreg`]: system-register reads by name, typed through `aarch64-cpu` or raw `mrs`.
//! - [`tally`]: a guest's checks, one `<guest>: ok|FAIL|skip ...` line each, and the summary.
//!
//! Failures are reported on the console as `<guest>: FAIL ...` and end with PSCI SYSTEM_OFF, so
//! a host that matches console output always sees why a guest stopped.
//!
//! The hardware parts exist only when building for bare-metal AArch64; on the host the crate
//! holds its pure parts (command-line parsing, exception decoding) so `cargo test` can check them.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod bootargs;
pub mod exception;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod dtb;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod entry;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod gic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod panic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod probe;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod psci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod regprobe;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod smccc;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod sysreg;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod tally;

/// The crates whose types appear in this crate's API, so guests use the very same versions.
pub use aarch64_cpu;
pub use fdt;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use power::{halt, name, power_off};

/// Declares the guest's name and main function; every guest binary invokes this exactly once.
///
/// `name` prefixes the runtime's own console lines (`<name>: FAIL panicked: ...`) and those of
/// the guest's `tally::Tally`; `main` receives the DTB address that the loader passed in x0 and
/// must never return:
///
/// ```ignore
/// veil_guest_rt::guest!(name: "tiny", main: main);
///
/// fn main(dtb: usize) -> ! { /* ... */ veil_guest_rt::power_off() }
/// ```
#[macro_export]
macro_rules! guest {
    (name: $name:literal, main: $main:path $(,)?) => {
        // The runtime declares these two in an `extern "Rust"` block with exactly these
        // signatures; a guest that forgets `guest!` fails to link instead of misbehaving.
        #[unsafe(no_mangle)]
        fn __veil_guest_name() -> &'static str {
            $name
        }

        #[unsafe(no_mangle)]
        fn __veil_guest_main(dtb: usize) -> ! {
            let main: fn(usize) -> ! = $main;
            main(dtb)
        }
    };
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod power {
    //! The guest's identity and the ways it stops: shared by the panic handler, the exception
    //! handler and guests themselves.

    use crate::{println, psci};

    // SAFETY: `guest!` defines both functions with exactly these signatures, and a guest binary
    // without `guest!` does not link; both are plain Rust functions that are sound to call.
    unsafe extern "Rust" {
        safe fn __veil_guest_name() -> &'static str;
        pub(crate) safe fn __veil_guest_main(dtb: usize) -> !;
    }

    /// The guest's name as given to [`guest!`](crate::guest), e.g. `"tiny"`.
    pub fn name() -> &'static str {
        __veil_guest_name()
    }

    /// Powers the VM off with PSCI SYSTEM_OFF; if that returns (a hypervisor bug), says so on
    /// the console and halts, so the host sees a FAIL line rather than a silent hang.
    pub fn power_off() -> ! {
        let error = psci::system_off();
        println!("{}: FAIL SYSTEM_OFF returned {:?}", name(), error);
        halt()
    }

    /// Stops this vCPU for good: waits for interrupts, which stay masked, forever.
    pub fn halt() -> ! {
        loop {
            aarch64_cpu::asm::wfi();
        }
    }
}
