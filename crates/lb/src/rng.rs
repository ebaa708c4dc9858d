//! The deterministic random source of the `twos` scheduler.
//!
//! The kernel draws from `get_random_u32()`; the sans-IO core draws from a
//! SplitMix64 generator seeded by the caller ([`crate::Core::with_seed`]),
//! so a run is reproducible.

/// SplitMix64: small, fast and good enough for picking destinations.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The kernel's `get_random_u32()`.
    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
