//! The statistics of a series of measurements (interrupt latencies, round trips), which checks
//! print on their `irq:` lines.

use core::fmt;

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
