//! What the host reads: one `irq: ok` or `irq: FAIL` line per check, the summary, and the
//! statistics of a series of measurements.

use core::fmt;

use veil_guest_rt::{power_off, println};

/// Counts failures and prints each check's line. Only vCPU 0 reports.
pub struct Tally {
    failed: u32,
}

impl Tally {
    pub fn new() -> Self {
        Self { failed: 0 }
    }

    /// Prints `irq: ok <what>` if `passed`, else `irq: FAIL <what>, expected <expected>`.
    pub fn check(&mut self, passed: bool, what: fmt::Arguments<'_>, expected: fmt::Arguments<'_>) {
        if passed {
            self.pass(what);
        } else {
            self.failed += 1;
            println!("irq: FAIL {}, expected {}", what, expected);
        }
    }

    /// Prints `irq: ok <what>`.
    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        println!("irq: ok {}", what);
    }

    /// Prints `irq: FAIL <what>` and counts it.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.failed += 1;
        println!("irq: FAIL {}", what);
    }

    /// Prints the summary line and powers off.
    pub fn finish(self) -> ! {
        if self.failed == 0 {
            println!("irq: all checks passed");
        } else {
            println!("irq: {} checks FAILED", self.failed);
        }
        power_off()
    }
}

/// Minimum, mean and maximum of a series of counter-tick figures.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
}

impl Spread {
    pub const fn new() -> Self {
        Self {
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    pub fn add(&mut self, value: u64) {
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum = self.sum.saturating_add(value);
    }

    pub fn mean(&self) -> u64 {
        self.sum / self.count.max(1)
    }
}

/// `min <a> mean <b> max <c> ticks (spread <c - a>)`.
impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "min {} mean {} max {} ticks (spread {})",
            self.min,
            self.mean(),
            self.max,
            self.max - self.min
        )
    }
}
