//! Retry policies: how many attempts a step gets and how long to wait between them.

use serde::{Deserialize, Serialize};

/// A step's retry policy; the delay before attempt `n + 1` is computed here, deterministically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the second attempt, in seconds.
    pub initial_delay: f64,
    /// Factor applied to the delay after each failed attempt.
    pub multiplier: f64,
    /// Upper bound of any single delay, in seconds.
    pub max_delay: f64,
    /// Relative spread in [0, 1]: the delay is scaled by a factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 1, initial_delay: 1.0, multiplier: 2.0, max_delay: 60.0, jitter: 0.0 }
    }
}

impl RetryPolicy {
    /// Checks that the numbers make sense; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        for (name, v) in [("initial_delay", self.initial_delay), ("max_delay", self.max_delay)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number of seconds >= 0, got {v}"));
            }
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(format!("multiplier must be >= 1, got {}", self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!("jitter must be within [0, 1], got {}", self.jitter));
        }
        Ok(())
    }

    /// Whether a step that failed on `attempt` (1-based) may run again.
    pub fn allows_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay in seconds after failed attempt `attempt` (1-based), with jitter seeded by `seed`
    /// (the instance id and step position), so the same failure always waits the same time.
    pub fn delay(&self, attempt: u32, seed: &str) -> f64 {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let base = (self.initial_delay * self.multiplier.powi(exp)).min(self.max_delay);
        if self.jitter == 0.0 || base == 0.0 {
            return base;
        }
        let u = unit_hash(seed, attempt); // in [0, 1)
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * u;
        (base * factor).clamp(0.0, self.max_delay.max(base))
    }
}

/// A deterministic number in [0, 1) from a seed string and an attempt (FNV-1a then a mix).
fn unit_hash(seed: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.as_bytes().iter().chain(attempt.to_le_bytes().iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser for a well-spread result
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy { max_attempts: 5, initial_delay: 0.1, multiplier: 2.0, max_delay: 1.0, jitter }
    }

    #[test]
    fn exponential_then_capped() {
        let p = policy(0.0);
        let d: Vec<f64> = (1..=6).map(|a| p.delay(a, "x")).collect();
        assert_eq!(d, vec![0.1, 0.2, 0.4, 0.8, 1.0, 1.0]);
    }

    #[test]
    fn attempts_bound() {
        let p = policy(0.0);
        assert!(p.allows_retry(4));
        assert!(!p.allows_retry(5));
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = policy(0.0);
        p.multiplier = 0.5;
        assert!(p.validate().unwrap_err().contains("multiplier"));
        p = policy(2.0);
        assert!(p.validate().unwrap_err().contains("jitter"));
        p = policy(0.0);
        p.max_attempts = 0;
        assert!(p.validate().unwrap_err().contains("max_attempts"));
    }

    proptest! {
        #[test]
        fn jitter_is_deterministic_and_bounded(seed in ".{0,20}", attempt in 1u32..20, j in 0.0f64..=1.0) {
            let p = policy(j);
            let a = p.delay(attempt, &seed);
            prop_assert_eq!(a, p.delay(attempt, &seed));
            let base = policy(0.0).delay(attempt, &seed);
            prop_assert!(a >= base * (1.0 - j) - 1e-12);
            prop_assert!(a <= (base * (1.0 + j)).min(1.0) + 1e-12);
        }
    }
}
