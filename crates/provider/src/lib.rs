//! hashbuy's client of a Stripe-compatible payment provider: the settler
//! charges payment commands with it, and reconciles with it when an outcome
//! is unknown.
//!
//! # Overview
//!
//! * [`Provider`] holds one pooled HTTP client (reqwest with rustls), the
//!   key, and a client-side rate limiter. [`Provider::charge`] creates and
//!   confirms a payment intent (`POST /v1/payment_intents`, form-encoded,
//!   `confirm=true`, `off_session=true`, the command's ids in `metadata[...]`)
//!   under an `Idempotency-Key`, and answers a [`ChargeOutcome`]; it never
//!   fails, since every answer, and every missing answer, means something
//!   to the settler.
//! * [`classify`] is that mapping, pure (status, three headers, body in;
//!   outcome out), so every case is unit-tested without HTTP:
//!
//!   | Answer | Outcome | The settler |
//!   | --- | --- | --- |
//!   | 200, `succeeded` | [`Succeeded`](ChargeOutcome::Succeeded) | SETTLED |
//!   | 200, other status (`processing`, `requires_action`, ...) | [`Unsettled`](ChargeOutcome::Unsettled) | pending; reconcile later |
//!   | 402 (`card_error`) | [`Declined`](ChargeOutcome::Declined) with the `decline_code` | DECLINED, never retried |
//!   | 400 `invalid_request_error`, 404 | [`Invalid`](ChargeOutcome::Invalid) | REJECTED |
//!   | 400 `idempotency_error` (other parameters under one key) | [`KeyMisuse`](ChargeOutcome::KeyMisuse) | log a bug; reconcile |
//!   | 409 `idempotency_key_in_use`, 429, timeout, connection error or drop | [`Retry`](ChargeOutcome::Retry) with the cause and `Retry-After` | same key, after [`Backoff`] |
//!   | 5xx, unreadable 200, a 4xx without Stripe's error object (a proxy's page) | [`Indeterminate`](ChargeOutcome::Indeterminate) with `Stripe-Should-Retry` | reconcile; then a new key |
//!   | 401, 403 | [`Unauthorized`](ChargeOutcome::Unauthorized) | configuration problem; stays pending |
//!
//! * [`Provider::find_charge`] reconciles: it lists the customer's payment
//!   intents (the list endpoint, which is consistent, unlike search) and
//!   finds the one whose `metadata[command_id]` is the command's, preferring
//!   a succeeded one. When it cannot list completely it fails, so the
//!   settler keeps the command pending rather than guessing.
//! * [`Backoff`] is the retry delay: exponential with full jitter, seeded
//!   and pure, never below `Retry-After`.
//! * [`ProviderConfig`] holds the URL (Stripe's by default), the key, the
//!   timeouts and the rate limit (by default 25 requests/s for test keys and
//!   90 for live keys on `api.stripe.com`, unlimited elsewhere). A live key is
//!   refused unless [`ProviderConfig::allow_live`] is set.
//!
//! # The key
//!
//! The key is a [`secrecy::SecretString`]: it never appears in `Debug`
//! output, in errors or in logs. It is read in one place, to build the
//! `Authorization` header (marked sensitive), and any text a provider sends
//! back is scrubbed of it before it reaches an outcome or an error.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), hashbuy_provider::ProviderError> {
//! use hashbuy_provider::{ChargeOutcome, ChargeRequest, Provider, ProviderConfig};
//!
//! let mut config = ProviderConfig::new(std::env::var("STRIPE_API_KEY").unwrap_or_default().into());
//! config.base_url = "http://127.0.0.1:12111".into(); // paysim
//! let provider = Provider::new(config)?;
//! let request = ChargeRequest {
//!     amount: 4200,
//!     currency: "usd".into(),
//!     customer: "cus_123".into(),
//!     payment_method: "pm_card_visa".into(),
//!     command_id: "0b7e…".into(),
//!     tweet_id: "1850000000000000000".into(),
//!     offer_id: "red-sneakers-42".into(),
//!     merchant_id: "acme".into(),
//!     attempt: 1,
//!     description: None,
//!     metadata: Default::default(),
//!     destination: None, // the platform's own account
//! };
//! match provider.charge(&request, "0b7e…").await {
//!     ChargeOutcome::Succeeded { payment_intent, .. } => println!("settled: {payment_intent}"),
//!     other => println!("not settled: {}", other.kind()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Servers
//!
//! Tested against paysim (hashbuy's simulator, `tests/paysim.rs`) and,
//! when `HASHBUY_LOCALSTRIPE_URL` is set, against localstripe
//! (`tests/localstripe.rs`), which declines with a 402 of type
//! `invalid_request_error` and no `decline_code` (the outcome carries its
//! `code`, `card_declined`), refuses `description` on payment intents,
//! ignores idempotency keys and cannot list payment
//! intents by customer, so `find_charge` fails there.

#![warn(missing_docs)]

mod backoff;
mod client;
mod config;
mod error;
mod outcome;
mod reconcile;
mod redact;

pub use backoff::{Backoff, MAX_RETRY_AFTER};
pub use client::{ChargeRequest, Customer, NewCustomer, Provider};
pub use config::{
    KeyMode, ProviderConfig, REQUEST_TIMEOUT, STRIPE_API, STRIPE_LIVE_RATE, STRIPE_TEST_RATE,
};
pub use error::{ProviderError, TransportCause};
pub use outcome::{classify, ChargeOutcome, IntentStatus, ResponseHeaders, RetryCause};
pub use reconcile::FoundCharge;
pub use secrecy::{ExposeSecret, SecretString};
