//! PSCI (Arm DEN 0022) over HVC: the board's power interface, as the DTB's `/psci` node
//! (`method = "hvc"`) announces it.
//!
//! Each wrapper issues one call and maps PSCI's negative return codes to [`Error`]. Calls that
//! do not return on success (SYSTEM_OFF, SYSTEM_RESET, CPU_OFF) return the error they got back
//! instead, since any return at all is a failure.

use crate::smccc::hvc64;

/// PSCI_VERSION: returns `major << 16 | minor`.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_OFF: powers the calling vCPU down.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC64): starts a vCPU at an entry point with a context ID in x0.
pub const CPU_ON: u32 = 0xC400_0003;
/// AFFINITY_INFO (SMC64): the power state of a vCPU.
pub const AFFINITY_INFO: u32 = 0xC400_0004;
/// SYSTEM_OFF: powers the whole VM down.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET: resets the whole VM.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES: whether a PSCI function is implemented, and its feature flags.
pub const PSCI_FEATURES: u32 = 0x8400_000A;

/// A PSCI failure, from the call's return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// -1: the function is not implemented.
    NotSupported,
    /// -2
    InvalidParameters,
    /// -3
    Denied,
    /// -4: CPU_ON for a vCPU that is already on.
    AlreadyOn,
    /// -5: CPU_ON for a vCPU that is still starting.
    OnPending,
    /// -6
    InternalFailure,
    /// -7: no such vCPU.
    NotPresent,
    /// -8
    Disabled,
    /// -9: an entry point the implementation rejects.
    InvalidAddress,
    /// A code PSCI does not define, or a call that must not return (SYSTEM_OFF, CPU_OFF, ...)
    /// returned, with this value in w0.
    Unexpected(i32),
}

impl Error {
    fn from_code(code: i32) -> Self {
        match code {
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::AlreadyOn,
            -5 => Self::OnPending,
            -6 => Self::InternalFailure,
            -7 => Self::NotPresent,
            -8 => Self::Disabled,
            -9 => Self::InvalidAddress,
            other => Self::Unexpected(other),
        }
    }
}

/// The power state of a vCPU, from AFFINITY_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityState {
    /// 0
    On,
    /// 1
    Off,
    /// 2: CPU_ON was accepted and the vCPU has not started yet.
    OnPending,
}

/// Makes a PSCI call and returns w0 as the signed 32-bit value PSCI defines.
///
/// # Safety
/// As for [`hvc64`]: the caller vouches for the call's effects.
unsafe fn call(fid: u32, x1: u64, x2: u64, x3: u64) -> i32 {
    // SAFETY: passed on to the caller.
    let [r0, ..] = unsafe { hvc64(fid, x1, x2, x3) };
    r0 as u32 as i32
}

fn result(code: i32) -> Result<u32, Error> {
    u32::try_from(code).map_err(|_| Error::from_code(code))
}

/// PSCI_VERSION: `major << 16 | minor` (0x0001_0001 for PSCI 1.1). PSCI 0.2 and later always
/// implement it; the raw value is returned so a test can show exactly what it got.
pub fn version() -> u32 {
    // SAFETY: PSCI_VERSION only reports a number.
    unsafe { call(PSCI_VERSION, 0, 0, 0) as u32 }
}

/// PSCI_FEATURES for function `fid`: its feature flags (0 for most functions) if implemented.
pub fn features(fid: u32) -> Result<u32, Error> {
    // SAFETY: PSCI_FEATURES only reports.
    result(unsafe { call(PSCI_FEATURES, u64::from(fid), 0, 0) })
}

/// SYSTEM_OFF: powers the VM off. Returns only if that failed, with what came back.
pub fn system_off() -> Error {
    // SAFETY: powering off ends the guest; nothing is left for it to break.
    Error::from_code(unsafe { call(SYSTEM_OFF, 0, 0, 0) })
}

/// SYSTEM_RESET: resets the VM, which enters the image again from the start. Returns only if
/// that failed, with what came back.
pub fn system_reset() -> Error {
    // SAFETY: a reset discards all guest state; nothing is left for it to break.
    Error::from_code(unsafe { call(SYSTEM_RESET, 0, 0, 0) })
}

/// CPU_ON: starts the vCPU whose MPIDR affinity is `target` at physical address `entry`, at
/// EL1 with the MMU off and x0 = `context`.
///
/// [`cpu::start`](crate::cpu::start) wraps this with a stack and a Rust entry point.
///
/// # Safety
/// `entry` must hold code that is sound to run on a fresh vCPU with `context` in x0, sharing
/// memory with the running guest.
pub unsafe fn cpu_on(target: u64, entry: u64, context: u64) -> Result<(), Error> {
    // SAFETY: the caller vouches for the entry point and context.
    result(unsafe { call(CPU_ON, target, entry, context) }).map(|_| ())
}

/// CPU_OFF: powers the calling vCPU down. Returns only if that failed, with what came back.
pub fn cpu_off() -> Error {
    // SAFETY: the calling vCPU stops; it owns nothing that another vCPU waits for unless the
    // caller arranged that, which is the caller's protocol, not memory safety.
    Error::from_code(unsafe { call(CPU_OFF, 0, 0, 0) })
}

/// AFFINITY_INFO: the power state of the vCPU with MPIDR affinity `target` (level 0).
pub fn affinity_info(target: u64) -> Result<AffinityState, Error> {
    // SAFETY: AFFINITY_INFO only reports.
    match unsafe { call(AFFINITY_INFO, target, 0, 0) } {
        0 => Ok(AffinityState::On),
        1 => Ok(AffinityState::Off),
        2 => Ok(AffinityState::OnPending),
        code => Err(Error::from_code(code)),
    }
}
