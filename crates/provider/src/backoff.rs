//! [`Backoff`]: how long to wait before sending a request again. Pure and
//! seeded, so a run is reproducible and tests need no clock.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Exponential backoff with full jitter ("Exponential Backoff And Jitter",
/// AWS Architecture Blog): the delay before retry number `attempt` is drawn
/// uniformly from `[0, min(max, base × 2^attempt))`, and is never shorter
/// than the provider's `Retry-After`.
///
/// The draw is a pure function of `(seed, attempt)`: the same backoff gives
/// the same delays in every run. Commands that retry at the same time should
/// not retry in lock-step, so give each its own stream with
/// [`Backoff::for_stream`] (e.g. by command id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay; each further retry doubles it.
    pub base: Duration,
    /// The largest ceiling: delays are drawn below this (a `Retry-After` may
    /// still ask for more).
    pub max: Duration,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s, seed 0.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
            seed: 0,
        }
    }
}

/// The longest `Retry-After` obeyed: a longer one is read as this. A
/// provider asking for hours would otherwise hold a command's key until
/// the provider forgets it (Stripe keeps keys 24 h), after which the same
/// key charges again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Backoff {
    /// The same backoff with a seed mixed from this one's and `stream` (e.g. a
    /// command id), so that commands retrying together spread out, each one
    /// still reproducible.
    pub fn for_stream(&self, stream: &str) -> Backoff {
        Backoff {
            seed: self.seed ^ fnv1a(stream.as_bytes()).rotate_left(17),
            ..*self
        }
    }

    /// The upper bound of the delay before retry `attempt` (0 for the first
    /// retry): `min(max, base × 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^attempt saturates long before u32::MAX; keep the exponent small
        // enough for checked arithmetic.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry `attempt` (0 for the first retry): a seeded
    /// draw in `[0, ceiling(attempt))`, raised to `retry_after` (at most
    /// [`MAX_RETRY_AFTER`]) when the provider asked for longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut seed = [0u8; 32];
        seed[0..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..12].copy_from_slice(&attempt.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(seed);
        let u: f64 = rng.gen(); // in [0, 1)
        let ceiling = self.ceiling(attempt);
        let jittered = Duration::try_from_secs_f64(ceiling.as_secs_f64() * u)
            .unwrap_or(ceiling)
            .min(ceiling);
        match retry_after {
            Some(floor) => jittered.max(floor.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            seed,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_max() {
        let b = backoff(0);
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(5), Duration::from_millis(3200));
        assert_eq!(b.ceiling(6), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            seed: 0,
        };
        assert_eq!(huge.ceiling(40), Duration::MAX);
        assert!(huge.delay(40, None) <= Duration::MAX);
    }

    #[test]
    fn delays_stay_within_bounds_and_spread() {
        let b = backoff(7);
        for attempt in 0..40 {
            let d = b.delay(attempt, None);
            assert!(d < b.ceiling(attempt), "{attempt}: {d:?}");
        }
        // Full jitter: over many streams, delays cover the range.
        let draws: Vec<f64> = (0..1000)
            .map(|i| backoff(i).delay(3, None).as_secs_f64() / 0.8)
            .collect();
        let low = draws.iter().filter(|x| **x < 0.25).count();
        let high = draws.iter().filter(|x| **x > 0.75).count();
        assert!(low > 150 && high > 150, "{low} {high}");
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }

    #[test]
    fn seeded_and_deterministic() {
        let a = backoff(42);
        let same: Vec<Duration> = (0..10).map(|n| a.delay(n, None)).collect();
        assert_eq!(same, (0..10).map(|n| a.delay(n, None)).collect::<Vec<_>>());
        let other: Vec<Duration> = (0..10).map(|n| backoff(43).delay(n, None)).collect();
        assert_ne!(same, other);
        let s1 = a.for_stream("command-1");
        let s2 = a.for_stream("command-2");
        assert_eq!(s1, a.for_stream("command-1"));
        assert_ne!(s1.seed, s2.seed);
        assert_eq!(s1.base, a.base);
        assert_eq!(s1.max, a.max);
    }

    #[test]
    fn never_below_retry_after() {
        let b = backoff(1);
        for attempt in 0..10 {
            let floor = Duration::from_secs(1);
            assert!(b.delay(attempt, Some(floor)) >= floor);
        }
        // Even above the max.
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        // But never for long enough to outlive a key.
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(24 * 3600))),
            MAX_RETRY_AFTER
        );
        // A short Retry-After does not shorten a longer draw.
        let d = b.delay(8, None);
        assert_eq!(
            b.delay(8, Some(Duration::from_millis(1))),
            d.max(Duration::from_millis(1))
        );
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
            seed: 0,
        };
        assert_eq!(zero.delay(3, None), Duration::ZERO);
        let inverted = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(1),
            seed: 0,
        };
        assert!(inverted.delay(0, None) < Duration::from_secs(1));
    }
}
