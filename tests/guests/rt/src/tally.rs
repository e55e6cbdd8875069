//! A guest's checks: one console line each, counted, and the summary that ends the run.
//!
//! The host judges a test guest only by its console, matching lines that
//! `tests/scenarios.toml` names, so every guest reports its checks in one format, each line
//! starting with the guest's [`name`]:
//!
//! - `<name>: ok <what>`: a check passed.
//! - `<name>: FAIL <what>`, or `<name>: FAIL <got>, expected <expected>`: a check failed.
//! - `<name>: skip <what> (<why>)`: a check that does not apply here (typically a promise only
//!   Veil makes, when the guest runs on bare QEMU); it neither passes nor fails.
//! - last, the [`Summary`], then PSCI SYSTEM_OFF.
//!
//! What only one guest judges (an abort's syndrome, whether it runs on Veil) stays in that
//! guest, built on a [`Tally`]; the format of these lines lives here and nowhere else.

use core::fmt;

use crate::{name, power_off, println};

/// The wording of the last line, which scenarios match as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    /// `<name>: all checks passed` or `<name>: N checks FAILED`.
    Failures,
    /// The same with how many checks passed: `<name>: all checks passed (P checks)` or
    /// `<name>: N checks FAILED (P passed)`.
    FailuresAndPasses,
}

/// Counts a guest's checks and prints each one's line.
pub struct Tally {
    passed: u32,
    failed: u32,
    summary: Summary,
}

impl Tally {
    /// No checks yet; `summary` is how the last line will read.
    pub const fn new(summary: Summary) -> Self {
        Self {
            passed: 0,
            failed: 0,
            summary,
        }
    }

    /// `<name>: ok <got>` if `passed`, else `<name>: FAIL <got>, expected <expected>`.
    pub fn check(&mut self, passed: bool, got: fmt::Arguments<'_>, expected: fmt::Arguments<'_>) {
        if passed {
            self.pass(got);
        } else {
            self.failed += 1;
            println!("{}: FAIL {}, expected {}", name(), got, expected);
        }
    }

    /// `<name>: ok <what>`.
    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        self.passed += 1;
        println!("{}: ok {}", name(), what);
    }

    /// `<name>: FAIL <what>`.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.failed += 1;
        println!("{}: FAIL {}", name(), what);
    }

    /// `<name>: skip <what> (<why>)`: a check that does not apply here, neither passed nor
    /// failed.
    pub fn skip(&mut self, what: fmt::Arguments<'_>, why: &str) {
        println!("{}: skip {} ({})", name(), what, why);
    }

    /// Checks that `value` is `expected`, printing both in hex: `<name>: ok <what> = <value>`,
    /// or `<name>: FAIL <what> = <value>, expected <expected>`.
    pub fn equal(&mut self, what: fmt::Arguments<'_>, value: u64, expected: u64) {
        self.check(
            value == expected,
            format_args!("{} = {:#x}", what, value),
            format_args!("{:#x}", expected),
        );
    }

    /// Prints the summary line; for a guest that powers off its own way, else see
    /// [`finish`](Self::finish).
    pub fn print_summary(&self) {
        match (self.failed, self.summary) {
            (0, Summary::Failures) => println!("{}: all checks passed", name()),
            (0, Summary::FailuresAndPasses) => {
                println!("{}: all checks passed ({} checks)", name(), self.passed)
            }
            (failed, Summary::Failures) => println!("{}: {} checks FAILED", name(), failed),
            (failed, Summary::FailuresAndPasses) => println!(
                "{}: {} checks FAILED ({} passed)",
                name(),
                failed,
                self.passed
            ),
        }
    }

    /// Prints the summary line and powers off.
    pub fn finish(self) -> ! {
        self.print_summary();
        power_off()
    }
}
