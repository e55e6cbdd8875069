//! The cpu guest's tally: the runtime's, whose summary here also counts the checks that passed
//! (`cpu: all checks passed (N checks)`), plus what only this guest needs to know: whether it
//! runs on Veil, which decides whether checks of Veil's own promises run or are skipped, and
//! whether it powers off over SMC.

use core::fmt;
use core::ops::{Deref, DerefMut};

use veil_guest_rt::power_off;
use veil_guest_rt::tally::{self, Summary};

/// The checks of one test run.
///
/// It dereferences to the runtime's tally, so checks call `check`, `pass` and `fail` on it as
/// they would on that one; only skipping and finishing go through this type.
pub struct Tally {
    checks: tally::Tally,
    /// Whether the guest runs on Veil (its vendor UID answered), which decides whether checks
    /// of Veil-specific promises run or are skipped.
    pub veil: bool,
    /// Power off with an SMC instead of the runtime's HVC (the `smccc` test checks that conduit
    /// to the very end).
    pub power_off_by_smc: bool,
}

impl Tally {
    pub fn new(veil: bool) -> Self {
        Self {
            checks: tally::Tally::new(Summary::FailuresAndPasses),
            veil,
            power_off_by_smc: false,
        }
    }

    /// `cpu: skip <what> (not under Veil)`: a Veil promise that bare QEMU does not make.
    pub fn skip_veil_only(&mut self, what: fmt::Arguments<'_>) {
        self.checks.skip(what, "not under Veil");
    }

    /// Prints the summary and powers off, over SMC if `power_off_by_smc`.
    pub fn finish(self) -> ! {
        self.checks.print_summary();
        if self.power_off_by_smc {
            crate::smccc::system_off_by_smc();
        }
        power_off()
    }
}

impl Deref for Tally {
    type Target = tally::Tally;

    fn deref(&self) -> &tally::Tally {
        &self.checks
    }
}

impl DerefMut for Tally {
    fn deref_mut(&mut self) -> &mut tally::Tally {
        &mut self.checks
    }
}

/// A 4-bit ID register field.
pub fn field(value: u64, shift: u32) -> u64 {
    (value >> shift) & 0xf
}
