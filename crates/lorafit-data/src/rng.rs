//! The seeded generator behind data order and dropout masks: a pure function of (seed, step,
//! micro-batch), so a resumed run replays exactly.

/// Deterministic random numbers for LoRA dropout: one stream per (seed, step, micro-batch), so
/// a resumed run draws the same masks as an uninterrupted one, on every backend.
#[derive(Debug, Clone)]
pub struct StepRng {
    state: u64,
    /// False outside training: dropout is then the identity.
    pub active: bool,
}

impl StepRng {
    pub fn new(seed: u64, step: u64, micro: u64) -> Self {
        let mut r = StepRng {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            active: true,
        };
        r.state = r
            .state
            .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        r.state = r
            .state
            .wrapping_add(micro.wrapping_mul(0x94D0_49BB_1331_11EB));
        r
    }
    pub fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A generator for evaluation: dropout off.
    pub fn eval() -> Self {
        StepRng {
            state: 0,
            active: false,
        }
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
