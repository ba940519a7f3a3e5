//! What the integration tests share.

/// A small deterministic generator (64-bit LCG): workloads are seeded, replayable, and the
/// crate needs no random source.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next value in `0..bound`.
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}
