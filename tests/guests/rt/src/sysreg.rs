//! System registers, read and written by name.
//!
//! Where `aarch64-cpu` knows a register, use its typed accessor (re-exported here as
//! [`registers`]): `registers::MIDR_EL1.get()`. For anything else — registers newer than the
//! crate, IMPLEMENTATION DEFINED ones, or an encoding a test wants to hit exactly — use
//! [`read_sysreg!`](crate::read_sysreg) and [`write_sysreg!`](crate::write_sysreg), which take
//! any name the assembler accepts, including the generic `s<op0>_<op1>_c<n>_c<m>_<op2>` form:
//!
//! ```ignore
//! // ID_AA64PFR0_EL1 by encoding (op0=3, op1=0, CRn=0, CRm=4, op2=0).
//! let pfr0 = unsafe { veil_guest_rt::read_sysreg!(s3_0_c0_c4_0) };
//! ```
//!
//! Accesses that the hypervisor traps and refuses raise an exception at EL1; wrap them in
//! [`expect_exception`](crate::exception::expect_exception) when that is what the test checks.

pub use aarch64_cpu::registers;
pub use aarch64_cpu::registers::{Readable, Writeable};

/// Reads a system register by assembler name, as a `u64`: `read_sysreg!(s3_0_c0_c4_0)`.
///
/// Expands to inline assembly, so it must be used inside `unsafe`: some reads have side effects
/// (reading ICC_IAR1_EL1 acknowledges an interrupt). The `asm!` deliberately does not claim
/// `nomem`, so the compiler keeps it in order with the runtime's exception bookkeeping when the
/// read traps.
#[macro_export]
macro_rules! read_sysreg {
    ($reg:ident) => {{
        let value: u64;
        ::core::arch::asm!(
            ::core::concat!("mrs {}, ", ::core::stringify!($reg)),
            out(reg) value,
            options(nostack, preserves_flags),
        );
        value
    }};
}

/// Writes a `u64` to a system register by assembler name: `write_sysreg!(s3_0_c15_c0_0, v)`.
///
/// Expands to inline assembly, so it must be used inside `unsafe`; the caller vouches that the
/// write does not break what Rust code relies on (the MMU, the vector base, the stack).
#[macro_export]
macro_rules! write_sysreg {
    ($reg:ident, $value:expr) => {{
        let value: u64 = $value;
        ::core::arch::asm!(
            ::core::concat!("msr ", ::core::stringify!($reg), ", {}"),
            in(reg) value,
            options(nostack, preserves_flags),
        );
    }};
}
