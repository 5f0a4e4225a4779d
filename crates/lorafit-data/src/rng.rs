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

/// numpy's `default_rng(seed)`: a `SeedSequence` (pool of 4 hashed 32-bit words) feeding a PCG64
/// (128-bit LCG, XSL-RR output) — the generator `datasets`' `train_test_split(seed=…)` draws
/// LLaMA-Factory's `val_size` split with. Only what that needs: [`NumpyRng::permutation`].
#[derive(Debug, Clone)]
pub struct NumpyRng {
    state: u128,
    inc: u128,
    /// The upper half of the last 64-bit output, for the next 32-bit draw.
    spare: Option<u32>,
}

const PCG_MULT: u128 = (2549297995355413924u128 << 64) + 4865540595714422341;

impl NumpyRng {
    pub fn new(seed: u64) -> Self {
        let words = seed_sequence(seed);
        let s = ((words[0] as u128) << 64) | words[1] as u128;
        let i = ((words[2] as u128) << 64) | words[3] as u128;
        let mut r = NumpyRng {
            state: 0,
            inc: (i << 1) | 1,
            spare: None,
        };
        r.step();
        r.state = r.state.wrapping_add(s);
        r.step();
        r
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let x = ((self.state >> 64) as u64) ^ (self.state as u64);
        x.rotate_right((self.state >> 122) as u32)
    }

    /// numpy's buffered 32-bit draw: the low half of a 64-bit output, then its high half.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(u) = self.spare.take() {
            return u;
        }
        let n = self.next_u64();
        self.spare = Some((n >> 32) as u32);
        n as u32
    }

    /// numpy's `random_interval`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let v = if max <= u32::MAX as u64 {
                (self.next_u32() as u64) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `Generator.permutation(n)`: 0..n shuffled by numpy's Fisher–Yates (from the end).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            a.swap(i, j);
        }
        a
    }
}

/// `SeedSequence(seed).generate_state(4, uint64)`.
fn seed_sequence(seed: u64) -> [u64; 4] {
    const INIT_A: u32 = 0x43b0_d7e5;
    const MULT_A: u32 = 0x931e_8875;
    const INIT_B: u32 = 0x8b51_f9dd;
    const MULT_B: u32 = 0x58f3_8ded;
    const MIX_L: u32 = 0xca01_f9dd;
    const MIX_R: u32 = 0x4973_f715;
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let mut hash = INIT_A;
    let mut hashmix = |mut v: u32| {
        v ^= hash;
        hash = hash.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash);
        v ^ (v >> 16)
    };
    let mix = |x: u32, y: u32| {
        let r = MIX_L.wrapping_mul(x).wrapping_sub(MIX_R.wrapping_mul(y));
        r ^ (r >> 16)
    };
    let mut pool = [0u32; 4];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..4 {
        for dst in 0..4 {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    let mut hash_b = INIT_B;
    let mut words = [0u32; 8];
    for (i, w) in words.iter_mut().enumerate() {
        let mut v = pool[i % 4] ^ hash_b;
        hash_b = hash_b.wrapping_mul(MULT_B);
        v = v.wrapping_mul(hash_b);
        *w = v ^ (v >> 16);
    }
    std::array::from_fn(|k| words[2 * k] as u64 | ((words[2 * k + 1] as u64) << 32))
}

impl NumpyRng {
    /// numpy's `random()`: 53 bits of a 64-bit draw, in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9007199254740992.0)
    }

    /// `Generator.choice(len(p), p=p)` for one draw: the cumulative `p`, normalised by its last
    /// value, searched (side right) with a uniform draw.
    pub fn choice(&mut self, cdf: &[f64]) -> usize {
        let u = self.next_f64();
        cdf.partition_point(|c| *c <= u)
            .min(cdf.len().saturating_sub(1))
    }
}

/// numpy's legacy global generator (`np.random.seed(seed)`, which transformers' `set_seed` calls
/// before LLaMA-Factory loads data): MT19937 seeded by `init_genrand`, with the legacy
/// `permutation` and `choice(n, k)` that `num_samples` draws with.
#[derive(Debug, Clone)]
pub struct Mt19937 {
    mt: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, pos: 624 }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[i] = self.mt[(i + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.pos = 0;
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform in `0..=max` by masked rejection (numpy's `random_interval` and its masked
    /// bounded integers, for `max` below 2³²).
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            a.swap(i, j);
        }
        a
    }
}
