//! paysim: a Stripe-compatible payment provider simulator, for hashbuy's
//! settler to charge against in tests, demos and benches.
//!
//! # What is simulated
//!
//! The subset of [Stripe's API](https://docs.stripe.com/api) that a settler
//! uses, with Stripe's wire format: form-encoded requests (bracketed keys such
//! as `metadata[command_id]=...`), JSON responses with Stripe's objects
//! (`"object": "payment_intent"`, ids such as `pi_...` and `cus_...`, `created`
//! in Unix seconds) and Stripe's error object
//! `{"error": {"type", "code", "decline_code", "message", "param", "payment_intent", ...}}`
//! (absent fields omitted), with statuses 400, 401, 402, 404, 409, 429 and 500.
//!
//! | Endpoint | |
//! | --- | --- |
//! | `POST /v1/payment_intents` | `amount`, `currency`, `customer`, `payment_method`, `confirm`, `off_session`, `metadata[...]`, `description`, `transfer_data[destination]`, `application_fee_amount`, `on_behalf_of`; `confirm=true` charges at once |
//! | `GET /v1/payment_intents/{id}` | |
//! | `GET /v1/payment_intents` | `customer`, `created` / `created[gt|gte|lt|lte]`, `limit`, `starting_after`, `ending_before`; newest first, Stripe's list envelope; consistent (sees every write at once) |
//! | `GET /v1/payment_intents/search` | `query` (`metadata['command_id']:'...'`, `customer:`, `status:`, `currency:`, `amount`/`created` comparisons, `AND`/`OR`), `limit`, `page`; Stripe's `search_result` envelope |
//! | `POST /v1/customers` | `email`, `name`, `description`, `metadata[...]`, `payment_method` |
//! | `GET /v1/customers/{id}` | |
//! | `POST /v1/payment_methods/{id}/attach` | `customer` |
//! | `GET /_paysim/audit` | no auth; every payment intent ever created, in creation order (see [`Audit`]) |
//!
//! * **Auth**: `Authorization: Bearer sk_test_...`, or HTTP basic auth with the
//!   key as user name, as Stripe accepts. Any `sk_test_` key is accepted, or
//!   exactly [`Config::api_key`] when set; 401 otherwise. The key is never
//!   logged, and errors show only its prefix (`sk_test_********`).
//! * **Test payment methods** by Stripe's names: `pm_card_visa` (also
//!   `pm_card_visa_debit`, `pm_card_mastercard`, `pm_card_amex`) succeed;
//!   `pm_card_chargeDeclined` (`generic_decline`),
//!   `pm_card_chargeDeclinedInsufficientFunds` (`insufficient_funds`) and
//!   `pm_card_chargeCustomerFail` (`generic_decline`) decline at charge time:
//!   402 `card_error`, code `card_declined`, the error carrying the payment
//!   intent, left in `requires_payment_method` as Stripe does. As on Stripe,
//!   the first two also fail to attach to a customer, while
//!   `chargeCustomerFail` attaches and fails only when charged. Any other
//!   payment method is a 400 `resource_missing`.
//! * **Connect destination charges**: `transfer_data[destination]=acct_...`
//!   sends the funds to a connected account, `application_fee_amount` (0 up
//!   to `amount`, only with a destination) is the platform's share, and
//!   `on_behalf_of` names the settlement merchant, which for card payments
//!   must be the destination when both are given. The accounts that exist
//!   are [`Config::connected_accounts`]; any other is a 400
//!   `resource_missing` ("No such destination: 'acct_...'", or "No such
//!   account" for `on_behalf_of`), and nothing is charged. The payment
//!   intent shows `transfer_data`, `application_fee_amount` and
//!   `on_behalf_of` as Stripe's does, and the [`Audit`] records them.
//! * **Idempotency** as [Stripe documents it](https://docs.stripe.com/api/idempotent_requests):
//!   on POSTs, once the endpoint starts executing, the status and body of the
//!   first response are saved under the `Idempotency-Key` (scoped to the API
//!   key) for [`Config::key_ttl`], 500s included, and replayed with
//!   `Idempotent-Replayed: true` (and `Original-Request`); the same key with
//!   other parameters or on another endpoint is a 400 `idempotency_error`; a
//!   request whose key is still executing is a 409 `idempotency_error`
//!   (`idempotency_key_in_use`). Requests that fail validation, 409s and 429s
//!   are not saved. After the key lifetime the key executes anew. GETs ignore
//!   the header.
//! * **Faults**, seeded ([`Config`]): latency around a median, 500s before
//!   execution (not saved) and after (saved), 429s with `Retry-After`, charges
//!   whose connection is then dropped without an answer, and a
//!   requests-per-second limit (429 with `Retry-After`, ahead of the
//!   idempotency layer). Each request's faults follow from the seed, its
//!   idempotency key (or the request counter, for requests without one) and
//!   the attempt number for that key, so a run is reproducible. A key unused
//!   for [`Config::key_ttl`] counts its attempts from 1 again (its saved
//!   answer expires `key_ttl` after it was saved).
//!
//! # What is not
//!
//! * Everything else in Stripe's API: refunds, captures (only automatic
//!   capture), confirming or updating an existing intent, 3-D Secure and
//!   `next_action`, webhooks, live mode, API versions, `expand` (accepted
//!   and ignored).
//! * The rest of Connect: direct charges (the `Stripe-Account` header),
//!   `transfer_data[amount]` (refused: Stripe keeps it for legacy
//!   integrations and recommends `application_fee_amount`), `transfer_group`,
//!   transfers, application fee objects, balances and the accounts API.
//! * Persistence: everything lives in memory and is gone on exit. Payment
//!   intents and customers are kept for the whole run (the audit lists
//!   them all); idempotency keys only for their lifetime.
//! * Search lag: [Stripe's search](https://docs.stripe.com/search) is
//!   eventually consistent (usually up to a minute behind, more during
//!   incidents), so a client must not rely on it to reconcile; paysim's search
//!   is immediate. Use the list endpoint (consistent, here and on Stripe) for
//!   reconciliation.
//! * Customers: an unknown `cus_...` id exists on first use (a simulator
//!   convenience; Stripe answers 404), so a demo's account table needs no
//!   set-up calls.
//! * Payment methods: the test names are used as ids as they are (Stripe makes
//!   a fresh `pm_...` per use), and attaching one to several customers is
//!   allowed.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = hashbuy_paysim::Config { fail_500: 0.1, seed: 42, ..Default::default() };
//! hashbuy_paysim::serve(listener, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod api;
mod config;
mod faults;
mod search;
mod server;
mod state;
mod wire;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use config::{Config, ConfigError};

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid.
    #[error("invalid paysim configuration: {0}")]
    Config(#[from] ConfigError),
    /// Accepting connections kept failing.
    #[error("paysim could not accept connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// The answer of `GET /_paysim/audit`: every payment intent ever created, in
/// creation order. Tests count charges per command with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The payment intents, oldest first.
    pub payment_intents: Vec<AuditEntry>,
}

/// One payment intent in the [`Audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The payment intent's id (`pi_...`).
    pub id: String,
    /// Its Stripe status: `succeeded`, `requires_payment_method` (declined, or
    /// not confirmed without a payment method) or `requires_confirmation`.
    pub status: String,
    /// Amount in the currency's smallest unit.
    pub amount: i64,
    /// Lowercase ISO 4217 currency.
    pub currency: String,
    /// The customer (`cus_...`), if any.
    pub customer: Option<String>,
    /// The `Idempotency-Key` of the request that created it, if any.
    pub idempotency_key: Option<String>,
    /// Its `metadata[command_id]`, if any.
    pub command_id: Option<String>,
    // The three below default to `None` when absent so an audit written
    // before they existed still parses.
    /// Its `transfer_data[destination]` (`acct_...`): the connected account
    /// of a destination charge; `None` for a charge to the platform's own
    /// account.
    #[serde(default)]
    pub destination: Option<String>,
    /// Its `application_fee_amount`: the platform's share of a destination
    /// charge, in the currency's smallest unit; `None` if not given.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// Its `on_behalf_of` (`acct_...`): the connected account that settles
    /// the payment; `None` if not given.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

impl Audit {
    /// The entries whose `command_id` is `command_id`.
    pub fn for_command<'a>(
        &'a self,
        command_id: &'a str,
    ) -> impl Iterator<Item = &'a AuditEntry> + 'a {
        self.payment_intents
            .iter()
            .filter(move |e| e.command_id.as_deref() == Some(command_id))
    }
}

/// A simulator: its state, which outlives any one [`Paysim::serve`] call and
/// can be inspected in-process.
#[derive(Clone)]
pub struct Paysim {
    sim: Arc<api::Sim>,
}

impl std::fmt::Debug for Paysim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paysim")
            .field("config", &self.sim.config)
            .finish_non_exhaustive()
    }
}

impl Paysim {
    /// A simulator with no objects yet.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Paysim {
            sim: Arc::new(api::Sim::new(config)),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.sim.config
    }

    /// Every payment intent created so far, as `GET /_paysim/audit` answers.
    pub fn audit(&self) -> Audit {
        self.sim.store().audit()
    }

    /// Serves the API on `listener` until `shutdown` completes; then stops
    /// accepting, lets in-flight requests finish, and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, config = ?self.sim.config, "paysim: listening");
        }
        server::run(listener, api::router(Arc::clone(&self.sim)), shutdown).await
    }
}

/// Serves a new simulator with `config` on `listener` until `shutdown`
/// completes (mini-redis style). Fails at once if `config` is invalid.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Paysim::new(config)?.serve(listener, shutdown).await
}
