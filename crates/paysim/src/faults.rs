//! Seeded per-request decisions (latency and fault) and the rate limiter.
//!
//! A request's decisions come from a ChaCha generator seeded by
//! `(Config::seed, idempotency key or request number, attempt number for that key)`,
//! so the same sequence of requests gets the same faults in every run, and
//! retries of one key draw fresh decisions.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::Config;

/// What the simulator does to one request besides answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer normally.
    None,
    /// 429 before the idempotency layer (not saved).
    TooManyRequests,
    /// 500 before the idempotency layer (nothing executed, nothing saved).
    ServerErrorBefore,
    /// Execute, then answer 500 (saved under the key).
    ServerErrorAfter,
    /// Execute; if that charged a card, close the connection without answering.
    DropAfterCharge,
}

/// The decisions for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Added before the answer (for executing requests: while the key is held).
    pub latency: Duration,
    /// The injected fault, if any.
    pub fault: Fault,
}

/// Which sequence a request's decisions are drawn from.
pub(crate) enum Stream<'a> {
    /// A POST with an `Idempotency-Key`: decisions follow the key.
    Key(&'a str),
    /// Anything else: decisions follow the server's request counter.
    Counter,
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Draws the plan for attempt `attempt` of `stream`.
pub(crate) fn plan(config: &Config, stream: Stream<'_>, attempt: u64) -> Plan {
    let (tag, stream_hash): (u64, u64) = match stream {
        Stream::Key(key) => (1, fnv1a(key.as_bytes())),
        Stream::Counter => (2, 0),
    };
    let mut seed = [0u8; 32];
    seed[0..8].copy_from_slice(&config.seed.to_le_bytes());
    seed[8..16].copy_from_slice(&tag.to_le_bytes());
    seed[16..24].copy_from_slice(&stream_hash.to_le_bytes());
    seed[24..32].copy_from_slice(&attempt.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(seed);

    // Always draw the same number of values, so changing one share does not
    // shift the other decisions.
    let pick: f64 = rng.gen();
    let after: f64 = rng.gen();
    let u1: f64 = rng.gen();
    let u2: f64 = rng.gen();

    let p429 = config.fail_429;
    let p500 = config.fail_500;
    let pdrop = config.drop_after_charge;
    let fault = if pick < p429 {
        Fault::TooManyRequests
    } else if pick < p429 + p500 {
        if after < config.fail_500_after {
            Fault::ServerErrorAfter
        } else {
            Fault::ServerErrorBefore
        }
    } else if pick < p429 + p500 + pdrop {
        Fault::DropAfterCharge
    } else {
        Fault::None
    };

    let latency = if config.latency_ms == 0 {
        Duration::ZERO
    } else {
        // Box-Muller: a standard normal from two uniforms; 1 - u1 is in (0, 1].
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let factor = (config.latency_sigma * z).exp().min(10.0);
        Duration::from_secs_f64(config.latency_ms as f64 / 1000.0 * factor)
    };
    Plan { latency, fault }
}

/// A token bucket over all API requests.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket refilling `rate` tokens a second, holding at most `max(1, rate)`.
    pub(crate) fn new(rate: f64, now: Instant) -> Self {
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token, or tells how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(p429: f64, p500: f64, pdrop: f64) -> Config {
        Config {
            fail_429: p429,
            fail_500: p500,
            drop_after_charge: pdrop,
            latency_ms: 100,
            ..Config::default()
        }
    }

    #[test]
    fn plans_are_reproducible_and_vary_by_attempt() {
        let c = config(0.2, 0.2, 0.2);
        let a = plan(&c, Stream::Key("k"), 1);
        assert_eq!(a, plan(&c, Stream::Key("k"), 1));
        let differing = (2..50)
            .map(|n| plan(&c, Stream::Key("k"), n))
            .filter(|p| *p != a)
            .count();
        assert!(differing > 40);
    }

    #[test]
    fn shares_are_respected() {
        let c = config(0.1, 0.2, 0.05);
        let n = 20_000;
        let mut counts = [0usize; 5];
        for i in 0..n {
            let p = plan(&c, Stream::Counter, i);
            let slot = match p.fault {
                Fault::None => 0,
                Fault::TooManyRequests => 1,
                Fault::ServerErrorBefore => 2,
                Fault::ServerErrorAfter => 3,
                Fault::DropAfterCharge => 4,
            };
            counts[slot] += 1;
        }
        let share = |k: usize| counts[k] as f64 / n as f64;
        assert!((share(1) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(2) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(3) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(4) - 0.05).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn latency_centres_on_the_median() {
        let c = config(0.0, 0.0, 0.0);
        let mut v: Vec<Duration> = (0..10_001)
            .map(|i| plan(&c, Stream::Counter, i).latency)
            .collect();
        v.sort();
        let median = v[v.len() / 2].as_secs_f64();
        assert!((median - 0.1).abs() < 0.01, "{median}");
        assert!(v[v.len() - 1] <= Duration::from_secs(1));
        let fixed = Config {
            latency_sigma: 0.0,
            ..c
        };
        assert_eq!(
            plan(&fixed, Stream::Key("x"), 3).latency,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn bucket_limits_and_refills() {
        let start = Instant::now();
        let mut b = Bucket::new(2.0, start);
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_ok());
        let wait = b.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(b.take(start + Duration::from_millis(500)).is_ok());
    }
}
