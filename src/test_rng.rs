//! The host tests' one pseudo-random generator: xorshift64*, deterministic, so that a failing
//! randomized test reproduces from its seed.

pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`, which must not be 0 (xorshift stays at 0).
    pub const fn new(seed: u64) -> Self {
        assert!(seed != 0, "xorshift needs a non-zero seed");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
