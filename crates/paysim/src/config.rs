//! The simulator's knobs: latency, fault shares, rate limit, seed, key
//! lifetime, API key, connected accounts.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// How the simulator behaves. Every fault is a share of requests (between 0 and
/// 1), decided deterministically from [`Config::seed`], so a run with the same
/// requests in the same order is reproducible.
///
/// `Debug` never prints [`Config::api_key`].
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Median latency added to every API request (`/v1/...`), in milliseconds;
    /// 0 adds none. Each request draws its own latency from a log-normal
    /// distribution around this median (see [`Config::latency_sigma`]). For a
    /// request that executes (creates or charges something) the latency is spent
    /// while its idempotency key is held, so a concurrent request with the same
    /// key sees it in flight.
    pub latency_ms: u64,
    /// Spread of the latency: the sigma of the log-normal distribution (0 =
    /// every request takes exactly the median; 0.5, the default, puts 95% of
    /// requests between about 0.38x and 2.7x the median). Draws are capped at 10x
    /// the median.
    pub latency_sigma: f64,
    /// Share of requests answered with a 500 `api_error`. Of these, the share
    /// [`Config::fail_500_after`] fails after the endpoint executed (the payment
    /// intent was created and charged, and the 500 is saved under the
    /// idempotency key, so retries with that key replay it); the rest fail before
    /// execution (nothing created, nothing saved). A GET answers 500 either
    /// way; a POST that does not execute (a replay, a validation error, a 409)
    /// is answered as usual when its 500 falls "after".
    pub fail_500: f64,
    /// Of the requests selected by [`Config::fail_500`], the share that fails
    /// after execution rather than before. Default 0.5 (half and half).
    pub fail_500_after: f64,
    /// Share of requests answered with a 429 `rate_limit` error and
    /// `Retry-After: 1`, before the idempotency layer: nothing executes and
    /// nothing is saved.
    pub fail_429: f64,
    /// Share of requests that confirm a payment intent for which the charge
    /// happens, its result is saved under the idempotency key, and then the
    /// connection is closed without any HTTP response (the ambiguous case a
    /// client must retry with the same key). Requests that charge nothing are
    /// answered normally.
    pub drop_after_charge: f64,
    /// Requests per second accepted over all API requests (a token bucket with
    /// a burst of `max(1, rps)`); `None` means unlimited. A request over the
    /// limit gets a 429 `rate_limit` error with a `Retry-After` header before
    /// the idempotency layer, and nothing is saved.
    pub rps_limit: Option<f64>,
    /// Seed for every random decision: faults, latencies and object ids.
    pub seed: u64,
    /// How long a saved idempotent result is kept (Stripe: at least 24 hours).
    /// After that the key may be reused and the request executes anew.
    pub key_ttl: Duration,
    /// The only secret key accepted when set; when `None`, any key starting
    /// with `sk_test_` is accepted. Never logged nor echoed.
    pub api_key: Option<String>,
    /// Seconds the simulated provider's clock runs ahead (negative: behind)
    /// of this machine's, in the `created` times it gives objects: a real
    /// provider's clock and its clients' disagree, and reconciliation by
    /// `created[gte]` must allow for it.
    pub clock_skew_s: i64,
    /// The Stripe Connect accounts (`acct_...`) that exist: a payment
    /// intent may name one as `transfer_data[destination]` (a destination
    /// charge) or `on_behalf_of`. Any other account is answered as Stripe
    /// answers an account that does not exist (400 `resource_missing`, "No
    /// such destination"), so with none listed every destination is
    /// unknown. Each id is `acct_` followed by ASCII letters and digits.
    pub connected_accounts: BTreeSet<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            latency_ms: 0,
            latency_sigma: 0.5,
            fail_500: 0.0,
            fail_500_after: 0.5,
            fail_429: 0.0,
            drop_after_charge: 0.0,
            rps_limit: None,
            seed: 0,
            key_ttl: Duration::from_secs(24 * 60 * 60),
            api_key: None,
            clock_skew_s: 0,
            connected_accounts: BTreeSet::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("latency_ms", &self.latency_ms)
            .field("latency_sigma", &self.latency_sigma)
            .field("fail_500", &self.fail_500)
            .field("fail_500_after", &self.fail_500_after)
            .field("fail_429", &self.fail_429)
            .field("drop_after_charge", &self.drop_after_charge)
            .field("rps_limit", &self.rps_limit)
            .field("seed", &self.seed)
            .field("key_ttl", &self.key_ttl)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("clock_skew_s", &self.clock_skew_s)
            .field("connected_accounts", &self.connected_accounts)
            .finish()
    }
}

/// A [`Config`] that cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A share is not a number between 0 and 1.
    #[error("{name} must be a share between 0 and 1, got {value}")]
    ShareOutOfRange {
        /// The field's name, as in [`Config`].
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The fault shares overlap: each is a share of all requests, so together
    /// they cannot exceed 1.
    #[error("fail_500 + fail_429 + drop_after_charge must not exceed 1 (each is a share of all requests), got {sum}")]
    SharesExceedOne {
        /// The sum of the three shares.
        sum: f64,
    },
    /// The latency spread is negative or not finite.
    #[error("latency_sigma must be a finite number between 0 and 4, got {0}")]
    LatencySigma(f64),
    /// The rate limit is not a positive finite number.
    #[error("rps_limit must be a positive number of requests per second, got {0}")]
    RpsLimit(f64),
    /// Saved results would expire at once.
    #[error("key_ttl must be longer than zero")]
    ZeroKeyTtl,
    /// An empty API key would accept nothing (an `Authorization` header always carries a key).
    #[error("api_key must not be empty when set")]
    EmptyApiKey,
    /// A connected account id is not `acct_` followed by letters and digits:
    /// no request could name it the way Stripe spells account ids, so it is
    /// surely a typo.
    #[error("connected account {0:?} is not an account id: expected acct_ followed by ASCII letters and digits")]
    ConnectedAccountId(String),
}

/// Whether `id` is spelled as a Stripe account id: `acct_` followed by at
/// least one ASCII letter or digit, and nothing else.
pub(crate) fn is_account_id(id: &str) -> bool {
    id.strip_prefix("acct_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Config {
    /// Checks every field; [`crate::serve`] calls this before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("fail_500", self.fail_500),
            ("fail_500_after", self.fail_500_after),
            ("fail_429", self.fail_429),
            ("drop_after_charge", self.drop_after_charge),
        ] {
            if !(0.0..=1.0).contains(&value) {
                // NaN fails `contains` too.
                return Err(ConfigError::ShareOutOfRange { name, value });
            }
        }
        let sum = self.fail_500 + self.fail_429 + self.drop_after_charge;
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::SharesExceedOne { sum });
        }
        if !(0.0..=4.0).contains(&self.latency_sigma) {
            return Err(ConfigError::LatencySigma(self.latency_sigma));
        }
        if let Some(rps) = self.rps_limit {
            if !(rps.is_finite() && rps > 0.0) {
                return Err(ConfigError::RpsLimit(rps));
            }
        }
        if self.key_ttl.is_zero() {
            return Err(ConfigError::ZeroKeyTtl);
        }
        if self.api_key.as_deref() == Some("") {
            return Err(ConfigError::EmptyApiKey);
        }
        if let Some(bad) = self.connected_accounts.iter().find(|a| !is_account_id(a)) {
            return Err(ConfigError::ConnectedAccountId(bad.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn shares_are_checked() {
        let c = Config {
            fail_429: 1.5,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ShareOutOfRange {
                name: "fail_429",
                value: 1.5
            })
        );
        let c = Config {
            fail_500: f64::NAN,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ShareOutOfRange {
                name: "fail_500",
                ..
            })
        ));
        let c = Config {
            fail_500: 0.6,
            drop_after_charge: 0.6,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SharesExceedOne { .. })
        ));
        let c = Config {
            rps_limit: Some(0.0),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::RpsLimit(0.0)));
        let c = Config {
            key_ttl: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::ZeroKeyTtl));
    }

    #[test]
    fn connected_account_ids_are_checked() {
        let with = |ids: &[&str]| Config {
            connected_accounts: ids.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        };
        assert_eq!(
            with(&["acct_1Nv0FGQ9RKHgCVdK", "acct_2"]).validate(),
            Ok(())
        );
        for bad in [
            "acct_", "acct_a-b", "acct_é", "cus_1", "ACCT_1", " acct_1", "",
        ] {
            assert_eq!(
                with(&["acct_ok", bad]).validate(),
                Err(ConfigError::ConnectedAccountId(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = Config {
            api_key: Some("sk_test_canary".into()),
            ..Config::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("canary"), "{s}");
        assert!(s.contains("<redacted>"));
    }
}
