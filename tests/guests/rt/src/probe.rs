//! Probing accesses a hypervisor may refuse.
//!
//! Each helper runs exactly one access inside the runtime's
//! [`expect_exception`]: if the hypervisor answers
//! it with an exception (an external abort for a device it does not emulate, UNDEFINED for a
//! system register it does not know), the access is skipped and the caller gets a [`Refusal`]
//! that names it, so the operation that needed it can be reported unavailable. One access per
//! probe, because a second exception inside the same probe is fatal to the guest.

use core::fmt;

use crate::exception::{ExceptionInfo, expect_exception};

/// Why a set-up step or probe failed: which access, and the exception it raised if any.
#[derive(Clone, Copy)]
pub struct Refusal {
    what: &'static str,
    exception: Option<ExceptionInfo>,
}

impl Refusal {
    /// The access `what` raised `info`.
    pub fn exception(what: &'static str, info: ExceptionInfo) -> Self {
        Self {
            what,
            exception: Some(info),
        }
    }

    /// A step that completed but did not do what it should; `what` says how.
    pub fn plain(what: &'static str) -> Self {
        Self {
            what,
            exception: None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.exception {
            Some(info) => write!(
                f,
                "{} raised an exception, EC={:#x} ISS={:#x}",
                self.what,
                info.ec(),
                info.iss()
            ),
            None => f.write_str(self.what),
        }
    }
}

/// A 32-bit device read that may be refused.
pub fn read32(address: usize, what: &'static str) -> Result<u32, Refusal> {
    let mut value = 0;
    let info = expect_exception(|| {
        // SAFETY: `address` is a device register (the callers take it from the DTB or the
        // board's fixed map), owned by no Rust object; a refused read is caught.
        value = unsafe { (address as *const u32).read_volatile() };
    });
    match info {
        None => Ok(value),
        Some(info) => Err(Refusal::exception(what, info)),
    }
}

/// A 32-bit device write that may be refused.
pub fn write32(address: usize, value: u32, what: &'static str) -> Result<(), Refusal> {
    let info = expect_exception(|| {
        // SAFETY: as in `read32`; the callers write only GIC configuration registers.
        unsafe { (address as *mut u32).write_volatile(value) };
    });
    match info {
        None => Ok(()),
        Some(info) => Err(Refusal::exception(what, info)),
    }
}

/// Runs one system-register access `f` that may be refused.
pub fn sysreg(what: &'static str, f: impl FnOnce()) -> Result<(), Refusal> {
    match expect_exception(f) {
        None => Ok(()),
        Some(info) => Err(Refusal::exception(what, info)),
    }
}
