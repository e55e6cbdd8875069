//! Counting checks and printing their lines: `cpu: ok ..`, `cpu: FAIL ..`, `cpu: skip ..`, and
//! the summary that ends every test.

use core::fmt;

use veil_guest_rt::{power_off, println};

/// The checks of one test run.
pub struct Tally {
    failed: u32,
    passed: u32,
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
            failed: 0,
            passed: 0,
            veil,
            power_off_by_smc: false,
        }
    }

    /// `cpu: ok <got>` if `passed`, else `cpu: FAIL <got>, expected <expected>`.
    pub fn check(&mut self, passed: bool, got: fmt::Arguments<'_>, expected: fmt::Arguments<'_>) {
        if passed {
            self.pass(got);
        } else {
            self.failed += 1;
            println!("cpu: FAIL {}, expected {}", got, expected);
        }
    }

    /// `cpu: ok <what>`.
    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        self.passed += 1;
        println!("cpu: ok {}", what);
    }

    /// `cpu: FAIL <what>`, counted.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.failed += 1;
        println!("cpu: FAIL {}", what);
    }

    /// `cpu: skip <what> (not under Veil)`: a Veil promise that bare QEMU does not make.
    pub fn skip(&mut self, what: fmt::Arguments<'_>) {
        println!("cpu: skip {} (not under Veil)", what);
    }

    /// Prints the summary and powers off.
    pub fn finish(self) -> ! {
        if self.failed == 0 {
            println!("cpu: all checks passed ({} checks)", self.passed);
        } else {
            println!(
                "cpu: {} checks FAILED ({} passed)",
                self.failed, self.passed
            );
        }
        if self.power_off_by_smc {
            crate::smccc::system_off_by_smc();
        }
        power_off()
    }
}

/// A 4-bit ID register field.
pub fn field(value: u64, shift: u32) -> u64 {
    (value >> shift) & 0xf
}
