//! [`ProviderConfig`]: where the provider is, the key, timeouts and the rate limit.

use std::time::Duration;

// The key is a `secrecy::SecretString` rather than a `String`: its `Debug`
// prints `[REDACTED]`, so deriving `Debug` on a config (or logging one) cannot
// leak it; reading it takes an explicit `expose_secret()`, which this crate
// does in one place (building the `Authorization` header); and its memory is
// zeroed when it is dropped.
use secrecy::{ExposeSecret, SecretString};

use crate::ProviderError;

/// Stripe's API, the default [`ProviderConfig::base_url`].
pub const STRIPE_API: &str = "https://api.stripe.com";

/// How long one request may take by default, the default
/// [`ProviderConfig::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default client-side rate limit on `api.stripe.com` for test-mode keys:
/// Stripe allows 25 requests per second in test mode.
pub const STRIPE_TEST_RATE: f64 = 25.0;

/// Default client-side rate limit on `api.stripe.com` for live-mode keys:
/// Stripe allows 100 requests per second in live mode; staying at 90 leaves
/// room for other clients of the account (dashboard, scripts).
pub const STRIPE_LIVE_RATE: f64 = 90.0;

/// How to reach the payment provider.
///
/// `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The API's base URL, without `/v1` (default [`STRIPE_API`]); paysim or
    /// localstripe at `http://127.0.0.1:PORT` in tests and demos. It must
    /// not carry credentials.
    pub base_url: String,
    /// The secret key (`sk_test_…`, `sk_live_…`) or restricted key
    /// (`rk_test_…`, `rk_live_…`), sent as `Authorization: Bearer`.
    pub key: SecretString,
    /// How long one request may take, from sending to the last byte of the
    /// answer (default 30 s). A charge that times out is retried with the same
    /// key.
    pub request_timeout: Duration,
    /// How long opening a connection (TCP and TLS) may take (default 5 s).
    pub connect_timeout: Duration,
    /// Requests per second this client sends at most, over all requests
    /// (charges and listings); requests wait for their turn. `None` picks
    /// the default: on `api.stripe.com`, [`STRIPE_TEST_RATE`] for test keys
    /// and [`STRIPE_LIVE_RATE`] for live keys; elsewhere, unlimited.
    pub rate_limit: Option<f64>,
    /// Accept a live-mode key (`sk_live_…`, `rk_live_…`). Off by default, so a
    /// live key pasted by mistake is refused rather than charging real cards.
    pub allow_live: bool,
}

impl ProviderConfig {
    /// A configuration for `key` with every other field at its default.
    pub fn new(key: SecretString) -> Self {
        ProviderConfig {
            base_url: STRIPE_API.to_string(),
            key,
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            rate_limit: None,
            allow_live: false,
        }
    }
}

/// Whether a key moves real money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// `sk_test_…` or `rk_test_…`.
    Test,
    /// `sk_live_…` or `rk_live_…`.
    Live,
}

/// Checks the key's shape and mode; errors name what is wrong without
/// quoting any of it.
pub(crate) fn key_mode(key: &SecretString, allow_live: bool) -> Result<KeyMode, ProviderError> {
    let key = key.expose_secret();
    let malformed = |reason| Err(ProviderError::MalformedKey { reason });
    if key.is_empty() {
        return malformed("it is empty");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return malformed(
            "it contains whitespace or control characters (a trailing newline from a key file?)",
        );
    }
    if key.starts_with("pk_") {
        return malformed(
            "it is a publishable key (pk_...); the settler needs a secret key (sk_...) or a restricted key (rk_...)",
        );
    }
    let (mode, rest) = if let Some(rest) = key.strip_prefix("sk_test_") {
        (KeyMode::Test, rest)
    } else if let Some(rest) = key.strip_prefix("rk_test_") {
        (KeyMode::Test, rest)
    } else if let Some(rest) = key.strip_prefix("sk_live_") {
        (KeyMode::Live, rest)
    } else if let Some(rest) = key.strip_prefix("rk_live_") {
        (KeyMode::Live, rest)
    } else {
        return malformed("it must start with sk_test_, sk_live_, rk_test_ or rk_live_");
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return malformed(
            "after its prefix it must be a non-empty run of ASCII letters, digits and underscores",
        );
    }
    if mode == KeyMode::Live && !allow_live {
        return Err(ProviderError::LiveKeyRefused);
    }
    Ok(mode)
}

/// Checks the base URL and returns it without a trailing `/`.
pub(crate) fn base_url(text: &str) -> Result<(String, reqwest::Url), ProviderError> {
    let bad = |reason: String| Err(ProviderError::InvalidBaseUrl { reason });
    let url = match reqwest::Url::parse(text.trim()) {
        Ok(u) => u,
        Err(e) => return bad(format!("{e}")),
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        return bad(format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it may be a secret.
        return bad("it must not carry credentials; the key goes in the key setting".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("it must not have a query or a fragment".into());
    }
    if url.host_str().is_none() {
        return bad("it has no host".into());
    }
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Ok((trimmed, url))
}

/// The rate limit in force: the configured one, or the default for the URL
/// and key mode. `None` means unlimited.
pub(crate) fn effective_rate(
    configured: Option<f64>,
    url: &reqwest::Url,
    mode: KeyMode,
) -> Result<Option<f64>, ProviderError> {
    match configured {
        Some(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(Some(r)),
        Some(r) => Err(ProviderError::InvalidConfig(format!(
            "rate_limit must be a positive number of requests per second up to 1e6, got {r}"
        ))),
        None if url.host_str() == Some("api.stripe.com") => Ok(Some(match mode {
            KeyMode::Test => STRIPE_TEST_RATE,
            KeyMode::Live => STRIPE_LIVE_RATE,
        })),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(key: &str, live: bool) -> Result<KeyMode, ProviderError> {
        key_mode(&SecretString::from(key), live)
    }

    #[test]
    fn key_shapes() {
        assert_eq!(mode("sk_test_abc123", false).ok(), Some(KeyMode::Test));
        assert_eq!(mode("rk_test_abc", false).ok(), Some(KeyMode::Test));
        assert_eq!(mode("sk_live_abc", true).ok(), Some(KeyMode::Live));
        assert_eq!(mode("rk_live_abc", true).ok(), Some(KeyMode::Live));
        assert!(matches!(
            mode("sk_live_abc", false),
            Err(ProviderError::LiveKeyRefused)
        ));
        assert!(matches!(
            mode("rk_live_abc", false),
            Err(ProviderError::LiveKeyRefused)
        ));
        for bad in [
            "",
            "sk_test_",
            "sk_test_abc\n",
            "pk_test_abc",
            "whsec_abc",
            "sk_test_a-b",
            "Bearer sk_test_abc",
            "sk_abc",
        ] {
            let e = mode(bad, true).expect_err(bad);
            assert!(
                matches!(e, ProviderError::MalformedKey { .. }),
                "{bad}: {e}"
            );
            if bad.len() > 8 {
                assert!(!e.to_string().contains(bad.trim()), "{e}");
            }
        }
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("https://api.stripe.com/")
                .map(|(s, _)| s)
                .ok()
                .as_deref(),
            Some("https://api.stripe.com")
        );
        assert_eq!(
            base_url("http://127.0.0.1:8420/prefix/")
                .map(|(s, _)| s)
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:8420/prefix")
        );
        for bad in [
            "",
            "api.stripe.com",
            "ftp://x",
            "https://u:secretpw@x",
            "https://x/?a=1",
        ] {
            let e = base_url(bad).expect_err(bad);
            assert!(!e.to_string().contains("secretpw"), "{e}");
        }
    }

    #[test]
    fn default_rates() {
        let stripe = reqwest::Url::parse(STRIPE_API).expect("url");
        let local = reqwest::Url::parse("http://127.0.0.1:1").expect("url");
        assert_eq!(
            effective_rate(None, &stripe, KeyMode::Test).ok(),
            Some(Some(25.0))
        );
        assert_eq!(
            effective_rate(None, &stripe, KeyMode::Live).ok(),
            Some(Some(90.0))
        );
        assert_eq!(effective_rate(None, &local, KeyMode::Test).ok(), Some(None));
        assert_eq!(
            effective_rate(Some(7.5), &local, KeyMode::Test).ok(),
            Some(Some(7.5))
        );
        assert_eq!(
            effective_rate(Some(5.0), &stripe, KeyMode::Live).ok(),
            Some(Some(5.0))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(effective_rate(Some(bad), &local, KeyMode::Test).is_err());
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ProviderConfig::new(SecretString::from("sk_test_CANARYdebug"));
        let s = format!("{c:?}");
        assert!(!s.contains("CANARYdebug"), "{s}");
    }
}
