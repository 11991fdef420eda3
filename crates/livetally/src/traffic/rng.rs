//! The generator's own randomness: a seeded xoshiro256++ and a Zipf sampler.
//!
//! Hand-rolled rather than `rand::rngs::SmallRng` because a seed must keep
//! meaning the same traffic across `rand` upgrades and platforms (`SmallRng`
//! promises neither), and because the hot path needs only a handful of
//! integer draws per record.

/// xoshiro256++ (Blackman and Vigna), seeded through SplitMix64.
#[derive(Clone, Debug)]
pub(super) struct Rng {
    state: [u64; 4],
}

/// SplitMix64's step: spreads any seed, including 0, over the whole state.
pub(super) fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole output is decided by `seed`.
    pub(super) fn new(seed: u64) -> Rng {
        let mut x = seed;
        Rng {
            state: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// 64 uniform bits.
    #[inline]
    pub(super) fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40
    /// for every `n` this module uses). `n` must be at least 1.
    #[inline]
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub(super) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    #[inline]
    pub(super) fn chance(&mut self, p: Prob) -> bool {
        self.next_u64() < p.0
    }
}

/// A probability as a threshold on 64 uniform bits, so a Bernoulli draw is
/// one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Prob(pub(super) u64);

impl Prob {
    /// `p` clamped to `0.0..=1.0` (NaN counts as 0).
    pub(super) const fn new(p: f64) -> Prob {
        if p.is_nan() || p <= 0.0 {
            Prob(0)
        } else if p >= 1.0 {
            Prob(u64::MAX)
        } else {
            // 2^64 as f64 is exact; the cast saturates.
            Prob((p * 18_446_744_073_709_551_616.0) as u64)
        }
    }

    /// `self + other`, saturating at certainty.
    pub(super) fn plus(self, other: Prob) -> Prob {
        Prob(self.0.saturating_add(other.0))
    }
}

/// Walker/Vose alias table: draws index `i` with probability `weights[i] / Σ`
/// in O(1), whatever the number of streams.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    /// Per column: keep the column when a draw is below this threshold.
    keep: Box<[u64]>,
    /// Per column: the index taken otherwise.
    alias: Box<[u32]>,
}

impl Alias {
    /// The table for `weights` (all finite and positive; at least one).
    pub(super) fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut keep = vec![u64::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = Prob::new(scaled[s]).0;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left (rounding) keeps its column with certainty.
        Alias {
            keep: keep.into(),
            alias: alias.into(),
        }
    }

    /// One index.
    #[inline]
    pub(super) fn sample(&self, rng: &mut Rng) -> usize {
        let column = rng.below(self.keep.len() as u64) as usize;
        if rng.next_u64() < self.keep[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

/// Zipf weights `1 / rank^s` for ranks `1..=n`.
pub(super) fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|rank| (rank as f64).powf(-s)).collect()
}
