//! SMC Calling Convention (Arm DEN 0028): the guest's raw calls into the hypervisor (HVC) or
//! the secure firmware (SMC).
//!
//! The function ID goes in w0 and up to three arguments in x1..x3; results come back in x0..x3.
//! SMCCC 1.1 lets the callee clobber x0..x17 (1.0 did, and 1.2 may return results up to x17),
//! so every call here tells the compiler that all of them change: a test guest must keep
//! working on a hypervisor that uses that latitude.

/// SMCCC_VERSION: returns the implemented SMCCC version as `major << 16 | minor`.
pub const SMCCC_VERSION: u32 = 0x8000_0000;

/// The return value of a call the callee does not implement, as a signed 32-bit value in w0.
pub const NOT_SUPPORTED: i32 = -1;

/// One SMCCC call through `$instruction` (`"hvc #0"` or `"smc #0"`, the only difference between
/// the conduits): `$fid` in w0 and `$x1..$x3` in x1..x3; evaluates to x0..x3 as `[u64; 4]`.
///
/// Expands to inline assembly, so it must be used inside `unsafe`. The operands cover every
/// register SMCCC lets the callee change, and the `asm!` keeps the default (memory may change)
/// because some calls write memory the guest owns.
macro_rules! smccc_call {
    ($instruction:literal, $fid:expr, $x1:expr, $x2:expr, $x3:expr) => {{
        let (r0, r1, r2, r3): (u64, u64, u64, u64);
        core::arch::asm!(
            $instruction,
            inlateout("x0") u64::from($fid) => r0,
            inlateout("x1") $x1 => r1,
            inlateout("x2") $x2 => r2,
            inlateout("x3") $x3 => r3,
            lateout("x4") _, lateout("x5") _, lateout("x6") _, lateout("x7") _,
            lateout("x8") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
            lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _,
            lateout("x16") _, lateout("x17") _,
            options(nostack),
        );
        [r0, r1, r2, r3]
    }};
}

/// Calls the hypervisor: `hvc #0` with `fid` in w0 and `x1..x3`; returns x0..x3.
///
/// # Safety
/// The callee may do anything the function ID asks for, such as powering the VM off or starting
/// a vCPU at an address in `x2` that must hold valid code; the caller vouches for the call.
#[inline]
pub unsafe fn hvc64(fid: u32, x1: u64, x2: u64, x3: u64) -> [u64; 4] {
    // SAFETY: the caller vouches for the call's effects; `smccc_call!` tells the compiler about
    // every register and the memory the callee may change.
    unsafe { smccc_call!("hvc #0", fid, x1, x2, x3) }
}

/// Calls the secure firmware: `smc #0` with `fid` in w0 and `x1..x3`; returns x0..x3.
///
/// Under a hypervisor that traps SMC this reaches the hypervisor too; without EL3 on the board
/// it is an undefined instruction at EL1.
///
/// # Safety
/// As for [`hvc64`]: the caller vouches for whatever the function ID asks for.
#[inline]
pub unsafe fn smc64(fid: u32, x1: u64, x2: u64, x3: u64) -> [u64; 4] {
    // SAFETY: as in hvc64.
    unsafe { smccc_call!("smc #0", fid, x1, x2, x3) }
}

/// SMCCC_VERSION over HVC: `major << 16 | minor`, or [`NOT_SUPPORTED`] from an SMCCC 1.0
/// implementation, which predates the call.
pub fn version() -> i32 {
    // SAFETY: SMCCC_VERSION only reports a number.
    let [r0, ..] = unsafe { hvc64(SMCCC_VERSION, 0, 0, 0) };
    // SMCCC_VERSION is an SMC32 call: the result is the low 32 bits of x0.
    r0 as u32 as i32
}
