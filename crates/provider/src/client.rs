//! [`Provider`]: the HTTP client (one pooled `reqwest::Client`, a rate
//! limiter, the key) and its requests.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hashbuy_core::connect::Destination;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::{self, KeyMode};
use crate::outcome::{classify, ResponseHeaders, StripeError};
use crate::reconcile::{self, FoundCharge};
use crate::{ChargeOutcome, ProviderConfig, ProviderError, RetryCause, TransportCause};

/// Largest answer body read, in bytes. Stripe's answers to these requests
/// are a few KiB (a page of 100 intents is well under 1 MiB); a longer body is
/// cut, which makes it unreadable rather than exhausting memory.
const MAX_BODY: usize = 4 << 20;
/// Pages of 100 read at most by [`Provider::find_charge`]: 10,000 intents of
/// one customer since `created_gte`.
const MAX_PAGES: usize = 100;
/// Stripe's limit on idempotency keys.
const MAX_KEY_LEN: usize = 255;
const FORM: &str = "application/x-www-form-urlencoded";

/// One payment to make: a payment command, as the provider needs it.
///
/// Every field is part of the request that the provider saves under the
/// Idempotency-Key: a retry with the same key must send an equal request
/// (`attempt` included), or the provider answers
/// [`ChargeOutcome::KeyMisuse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Amount in the currency's smallest unit (cents for `usd`).
    pub amount: i64,
    /// Lowercase ISO 4217 currency (`usd`).
    pub currency: String,
    /// The provider's customer (`cus_…`). Required: reconciliation lists
    /// payment intents by customer.
    pub customer: String,
    /// The customer's payment method (`pm_…`).
    pub payment_method: String,
    /// The command id; sent as `metadata[command_id]`, which reconciliation
    /// matches.
    pub command_id: String,
    /// The tweet that bought; `metadata[tweet_id]`.
    pub tweet_id: String,
    /// The offer bought; `metadata[offer_id]`.
    pub offer_id: String,
    /// The merchant; `metadata[merchant_id]`.
    pub merchant_id: String,
    /// The key's place in the command's chain of keys (1 for the first
    /// key, then one more per new key: the same whichever settler sends
    /// it); `metadata[attempt]`.
    pub attempt: u32,
    /// The payment's description, shown in the provider's dashboard.
    pub description: Option<String>,
    /// More metadata (e.g. `user_id`). Keys must not repeat the named ones
    /// above (`command_id`, `tweet_id`, `offer_id`, `merchant_id`,
    /// `attempt`); such entries are not sent. Stripe allows 50 keys of up to
    /// 40 characters, values of up to 500.
    pub metadata: BTreeMap<String, String>,
    /// A Stripe Connect destination charge: the merchant's connected
    /// account (`transfer_data[destination]`), the platform's fee
    /// (`application_fee_amount`) and the settlement merchant
    /// (`on_behalf_of`). `None`: the platform's own account.
    pub destination: Option<Destination>,
}

const NAMED_METADATA: [&str; 5] = [
    "command_id",
    "tweet_id",
    "offer_id",
    "merchant_id",
    "attempt",
];

impl ChargeRequest {
    /// The form-encoded body of `POST /v1/payment_intents`: the charge is
    /// confirmed at once (`confirm=true`) without the customer present
    /// (`off_session=true`).
    pub fn form(&self) -> String {
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("amount", &self.amount.to_string())
            .append_pair("currency", &self.currency)
            .append_pair("customer", &self.customer)
            .append_pair("payment_method", &self.payment_method)
            .append_pair("confirm", "true")
            .append_pair("off_session", "true");
        if let Some(d) = &self.description {
            f.append_pair("description", d);
        }
        f.append_pair("metadata[command_id]", &self.command_id)
            .append_pair("metadata[tweet_id]", &self.tweet_id)
            .append_pair("metadata[offer_id]", &self.offer_id)
            .append_pair("metadata[merchant_id]", &self.merchant_id)
            .append_pair("metadata[attempt]", &self.attempt.to_string());
        for (k, v) in &self.metadata {
            if !NAMED_METADATA.contains(&k.as_str()) {
                f.append_pair(&format!("metadata[{k}]"), v);
            }
        }
        if let Some(destination) = &self.destination {
            f.append_pair("transfer_data[destination]", &destination.account_id);
            if let Some(fee) = destination.application_fee_amount {
                f.append_pair("application_fee_amount", &fee.to_string());
            }
            // Stripe refuses for cards an `on_behalf_of` other than the
            // destination, so the one account is both.
            if destination.on_behalf_of {
                f.append_pair("on_behalf_of", &destination.account_id);
            }
        }
        f.finish()
    }
}

/// A customer to create with [`Provider::create_customer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCustomer {
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// A payment method to attach to the new customer (`payment_method`),
    /// e.g. `pm_card_visa`.
    pub payment_method: Option<String>,
    /// `metadata[...]`.
    pub metadata: BTreeMap<String, String>,
}

/// A customer the provider created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Its id (`cus_…`).
    pub id: String,
}

/// An HTTP answer, read.
struct Answer {
    status: u16,
    headers: ResponseHeaders,
    body: Vec<u8>,
}

/// A request that got no answer.
struct Failed {
    cause: TransportCause,
    message: String,
}

/// The settler's client of a Stripe-compatible payment provider.
///
/// Cheap to clone (the connection pool, the rate limiter and the key are
/// shared): give every task a clone. `Debug` never shows the key.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    /// One client: its connection pool is shared by every request.
    http: reqwest::Client,
    /// The base URL without a trailing `/`.
    base: String,
    /// `Bearer <key>`, marked sensitive (masked in `http`'s `Debug`).
    auth: HeaderValue,
    /// The key, to scrub it from any text a provider sends back.
    key: SecretString,
    mode: KeyMode,
    rate_limit: Option<f64>,
    limiter: Option<DefaultDirectRateLimiter>,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Provider")
            .field("base_url", &i.base)
            .field("key", &"[REDACTED]")
            .field("mode", &i.mode)
            .field("rate_limit", &i.rate_limit)
            .field("request_timeout", &i.request_timeout)
            .field("connect_timeout", &i.connect_timeout)
            .finish()
    }
}

/// The transport error and its causes, joined: reqwest's own message names
/// only the URL, the cause ("connection refused") is in its sources.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn transport_cause(e: &reqwest::Error) -> TransportCause {
    if e.is_connect() {
        // Includes a connect timeout: nothing was sent.
        TransportCause::Connection
    } else if e.is_timeout() {
        TransportCause::Timeout
    } else {
        TransportCause::Connection
    }
}

/// Checks an Idempotency-Key: 1 to 255 visible ASCII characters.
fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an Idempotency-Key must have 1 to {MAX_KEY_LEN} characters, this one has {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "an Idempotency-Key must be visible ASCII (no spaces or control characters)".into(),
        );
    }
    Ok(())
}

impl Provider {
    /// A client for `config`. Checks the key (shape; a live key only with
    /// [`ProviderConfig::allow_live`]), the URL and the limits; makes no
    /// request (see [`Provider::check`]).
    pub fn new(config: ProviderConfig) -> Result<Provider, ProviderError> {
        let mode = config::key_mode(&config.key, config.allow_live)?;
        let (base, url) = config::base_url(&config.base_url)?;
        let rate_limit = config::effective_rate(config.rate_limit, &url, mode)?;
        for (name, d) in [
            ("request_timeout", config.request_timeout),
            ("connect_timeout", config.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ProviderError::InvalidConfig(format!(
                    "{name} must be longer than zero"
                )));
            }
        }
        let limiter = match rate_limit {
            None => None,
            Some(rate) => {
                // Burst 1: requests are spaced 1/rate apart, so no one-second
                // window ever holds more than rate + 1 of them.
                let quota = Duration::try_from_secs_f64(1.0 / rate)
                    .ok()
                    .and_then(Quota::with_period)
                    .ok_or_else(|| {
                        ProviderError::InvalidConfig(format!("rate_limit {rate} is too high"))
                    })?
                    .allow_burst(NonZeroU32::MIN);
                Some(RateLimiter::direct(quota))
            }
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.key.expose_secret()))
            .map_err(|_| ProviderError::MalformedKey {
                reason: "it cannot be sent in an HTTP header",
            })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("hashbuy-provider/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Client(chain(&e)))?;
        Ok(Provider {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                key: config.key,
                mode,
                rate_limit,
                limiter,
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout,
            }),
        })
    }

    /// The base URL requests go to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The key's mode.
    pub fn key_mode(&self) -> KeyMode {
        self.inner.mode
    }

    /// The client-side rate limit in force, in requests per second; `None`
    /// when unlimited.
    pub fn rate_limit(&self) -> Option<f64> {
        self.inner.rate_limit
    }

    /// Waits for the rate limiter's next token.
    async fn turn(&self) {
        if let Some(l) = &self.inner.limiter {
            l.until_ready().await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.base, path)
    }

    /// Sends one request (after waiting for a token) and reads the answer.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        method: &'static str,
        path: &'static str,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Failed> {
        self.turn().await;
        self.send(request, method, path, idempotency_key).await
    }

    /// Sends one request now and reads the answer.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: &'static str,
        path: &'static str,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Failed> {
        let started = Instant::now();
        let result = self
            .read(request.header(AUTHORIZATION, self.inner.auth.clone()))
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(a) => tracing::debug!(
                method,
                path,
                status = a.status,
                idempotency_key = idempotency_key.unwrap_or(""),
                replayed = a.headers.replayed,
                elapsed_ms,
                "provider answered"
            ),
            Err(f) => tracing::debug!(
                method,
                path,
                idempotency_key = idempotency_key.unwrap_or(""),
                cause = f.cause.as_str(),
                error = %f.message,
                elapsed_ms,
                "provider request failed"
            ),
        }
        result
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Result<Answer, Failed> {
        let secret = self.inner.key.expose_secret();
        let fail = |e: reqwest::Error| {
            let mut message = chain(&e);
            crate::redact::scrub(&mut message, secret);
            Failed {
                cause: transport_cause(&e),
                message,
            }
        };
        let mut resp = request.send().await.map_err(fail)?;
        let status = resp.status().as_u16();
        let headers = ResponseHeaders::from_headers(resp.headers());
        let mut body = Vec::new();
        let mut cut = false;
        while let Some(chunk) = resp.chunk().await.map_err(fail)? {
            let room = MAX_BODY - body.len();
            cut = chunk.len() > room;
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_BODY {
                break;
            }
        }
        // Scrubbed before anything reads it: every message made from the
        // body is cut to a length, and a key cut in two would survive a
        // scrub of the message.
        crate::redact::scrub_body(&mut body, secret, cut);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Charges `request` under `idempotency_key`: `POST /v1/payment_intents`
    /// with `confirm=true` and `off_session=true`, form-encoded, with
    /// `Idempotency-Key` and `Authorization: Bearer`. Waits for the rate
    /// limiter first.
    ///
    /// Never fails: every answer, and every missing answer, is an outcome
    /// (see [`classify`] for the mapping). A timeout or a connection lost
    /// after sending is [`ChargeOutcome::Retry`]: send the same request with
    /// the same key, which replays whatever happened.
    pub async fn charge(&self, request: &ChargeRequest, idempotency_key: &str) -> ChargeOutcome {
        if let Err(message) = check_idempotency_key(idempotency_key) {
            return ChargeOutcome::KeyMisuse { message };
        }
        self.turn().await;
        self.send_charge(request, idempotency_key).await
    }

    /// [`charge`](Self::charge), if `go` still says so once the rate
    /// limiter lets the request out: the last moment before it is sent,
    /// for a caller whose right to charge can run out while it waits (a
    /// settler's lease on its partition). `None` when `go` said no: nothing
    /// was sent.
    pub async fn charge_if(
        &self,
        request: &ChargeRequest,
        idempotency_key: &str,
        go: impl FnOnce() -> bool,
    ) -> Option<ChargeOutcome> {
        if let Err(message) = check_idempotency_key(idempotency_key) {
            return Some(ChargeOutcome::KeyMisuse { message });
        }
        self.turn().await;
        if !go() {
            return None;
        }
        Some(self.send_charge(request, idempotency_key).await)
    }

    /// Sends a charge now (the rate limiter's token taken).
    async fn send_charge(&self, request: &ChargeRequest, idempotency_key: &str) -> ChargeOutcome {
        let req = self
            .inner
            .http
            .post(self.url("/v1/payment_intents"))
            .header("Idempotency-Key", idempotency_key)
            .header(CONTENT_TYPE, FORM)
            .body(request.form());
        let outcome = match self
            .send(req, "POST", "/v1/payment_intents", Some(idempotency_key))
            .await
        {
            Ok(a) => classify(a.status, &a.headers, &a.body),
            Err(f) => ChargeOutcome::Retry {
                cause: match f.cause {
                    TransportCause::Timeout => RetryCause::Timeout,
                    TransportCause::Connection => RetryCause::Connection,
                },
                after: None,
            },
        };
        tracing::debug!(
            command_id = %request.command_id,
            idempotency_key,
            outcome = outcome.kind(),
            "charge"
        );
        outcome
    }

    /// A GET answered with JSON, or the error that stands for its answer.
    async fn get_json(
        &self,
        url: reqwest::Url,
        what: &'static str,
        path: &'static str,
    ) -> Result<Value, ProviderError> {
        let req = self.inner.http.get(url);
        let answer = self.exchange(req, "GET", path, None).await;
        self.json_answer(answer, what)
    }

    /// Maps an answer to its JSON body, or to the error it stands for.
    fn json_answer(
        &self,
        answer: Result<Answer, Failed>,
        what: &'static str,
    ) -> Result<Value, ProviderError> {
        let secret = self.inner.key.expose_secret();
        let a = answer.map_err(|f| ProviderError::Transport {
            cause: f.cause,
            message: f.message,
        })?;
        if (200..300).contains(&a.status) {
            return serde_json::from_slice(&a.body).map_err(|e| ProviderError::Decode {
                what,
                message: e.to_string(),
            });
        }
        let err = StripeError::parse(&a.body);
        let message = err.message_or(a.status, &a.body);
        let e = match a.status {
            401 | 403 => ProviderError::Unauthorized {
                status: a.status,
                message,
            },
            429 => ProviderError::RateLimited {
                retry_after: a.headers.retry_after,
            },
            status => ProviderError::Api {
                status,
                kind: err.kind,
                code: err.code,
                message,
            },
        };
        Err(e.redact(secret))
    }

    /// Finds what the provider holds for `command_id`: lists `customer`'s
    /// payment intents created at or after `created_gte` (Unix seconds; pass
    /// the first attempt's time less a margin for clock skew, e.g. 5
    /// minutes) with `GET /v1/payment_intents?customer=…&created[gte]=…&limit=100`,
    /// following `has_more` with `starting_after`, and keeps those whose
    /// `metadata[command_id]` is `command_id`.
    ///
    /// The list endpoint is used rather than search because it is
    /// consistent: Stripe's search lags writes by up to a minute (more during
    /// incidents), so a charge made just before a 500 could be missed.
    ///
    /// When several intents match (a decline, then a success under a new
    /// key), the one returned is: a `succeeded` one first; else one still in
    /// progress (`processing`, `requires_action`, `requires_capture`); else
    /// any other (declined: `requires_payment_method`, `canceled`, ...).
    /// Within a rank, the newest. [`FoundCharge::matches`] and
    /// [`FoundCharge::succeeded`] count them all.
    ///
    /// `Ok(None)`: the provider holds no payment intent for the command.
    /// Any failure to list completely (unreachable, timeout, 5xx, 429, an
    /// unreadable page) is an error, never `Ok(None)`: the settler keeps the
    /// command pending and tries again later.
    pub async fn find_charge(
        &self,
        customer: &str,
        command_id: &str,
        created_gte: i64,
    ) -> Result<Option<FoundCharge>, ProviderError> {
        if customer.is_empty() || command_id.is_empty() {
            return Err(ProviderError::InvalidArgument(
                "find_charge needs a customer and a command id",
            ));
        }
        let mut listed = Vec::new();
        let mut starting_after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = reqwest::Url::parse(&self.url("/v1/payment_intents")).map_err(|e| {
                ProviderError::InvalidBaseUrl {
                    reason: e.to_string(),
                }
            })?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("customer", customer)
                    .append_pair("created[gte]", &created_gte.to_string())
                    .append_pair("limit", "100");
                if let Some(after) = &starting_after {
                    q.append_pair("starting_after", after);
                }
            }
            let v = self
                .get_json(url, "list payment intents", "/v1/payment_intents")
                .await?;
            let (page, has_more) = reconcile::parse_page(&v)?;
            let last = page.last().map(|l| l.id.clone());
            listed.extend(page);
            if !has_more {
                return Ok(reconcile::pick(&listed, command_id));
            }
            match last {
                Some(id) if starting_after.as_deref() != Some(id.as_str()) => {
                    starting_after = Some(id)
                }
                _ => {
                    return Err(ProviderError::Decode {
                        what: "list payment intents",
                        message: "has_more is true but the page adds nothing new".into(),
                    })
                }
            }
        }
        Err(ProviderError::ListTooLong { pages: MAX_PAGES })
    }

    /// Creates a customer (`POST /v1/customers`), optionally attaching a
    /// payment method, under `idempotency_key` when given. For demos and for
    /// providers that, unlike paysim, answer 404 for unknown customers
    /// (Stripe, localstripe).
    pub async fn create_customer(
        &self,
        customer: &NewCustomer,
        idempotency_key: Option<&str>,
    ) -> Result<Customer, ProviderError> {
        let mut f = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("email", &customer.email),
            ("name", &customer.name),
            ("description", &customer.description),
            ("payment_method", &customer.payment_method),
        ] {
            if let Some(v) = value {
                f.append_pair(name, v);
            }
        }
        for (k, v) in &customer.metadata {
            f.append_pair(&format!("metadata[{k}]"), v);
        }
        let mut req = self
            .inner
            .http
            .post(self.url("/v1/customers"))
            .header(CONTENT_TYPE, FORM)
            .body(f.finish());
        if let Some(k) = idempotency_key {
            check_idempotency_key(k).map_err(|_| {
                ProviderError::InvalidArgument(
                    "an Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            })?;
            req = req.header("Idempotency-Key", k);
        }
        let answer = self
            .exchange(req, "POST", "/v1/customers", idempotency_key)
            .await;
        let v = self.json_answer(answer, "create customer")?;
        match v.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Customer { id: id.to_string() }),
            _ => Err(ProviderError::Decode {
                what: "create customer",
                message: "no `id` in the answer".into(),
            }),
        }
    }

    /// Checks that the provider answers and accepts the key, with one cheap
    /// read (`GET /v1/payment_intents?limit=1`): call it at start-up so that a
    /// wrong URL or key shows at once rather than as failed payments.
    pub async fn check(&self) -> Result<(), ProviderError> {
        let mut url = reqwest::Url::parse(&self.url("/v1/payment_intents")).map_err(|e| {
            ProviderError::InvalidBaseUrl {
                reason: e.to_string(),
            }
        })?;
        url.query_pairs_mut().append_pair("limit", "1");
        self.get_json(url, "check", "/v1/payment_intents")
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChargeRequest {
        ChargeRequest {
            amount: 4200,
            currency: "usd".into(),
            customer: "cus_1".into(),
            payment_method: "pm_card_visa".into(),
            command_id: "c 1".into(),
            tweet_id: "123".into(),
            offer_id: "red-sneakers-42".into(),
            merchant_id: "acme".into(),
            attempt: 2,
            description: None,
            metadata: BTreeMap::from([
                ("user_id".to_string(), "12345".to_string()),
                ("command_id".to_string(), "spoofed".to_string()),
            ]),
            destination: None,
        }
    }

    #[test]
    fn the_form_is_stripes() {
        let form = request().form();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| {
            pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("amount"), ["4200"]);
        assert_eq!(get("confirm"), ["true"]);
        assert_eq!(get("off_session"), ["true"]);
        assert_eq!(get("metadata[command_id]"), ["c 1"]);
        assert_eq!(get("metadata[attempt]"), ["2"]);
        assert_eq!(get("metadata[user_id]"), ["12345"]);
        assert_eq!(get("description"), Vec::<&str>::new());
        assert_eq!(get("transfer_data[destination]"), Vec::<&str>::new());
        // Same request, same body: the provider's fingerprint matches.
        assert_eq!(form, request().form());
    }

    #[test]
    fn a_destination_charge_names_the_account_the_fee_and_the_settlement_merchant() {
        let form = |destination| {
            let request = ChargeRequest {
                destination: Some(destination),
                ..request()
            };
            form_urlencoded::parse(request.form().as_bytes())
                .into_owned()
                .filter(|(k, _)| {
                    [
                        "transfer_data[destination]",
                        "application_fee_amount",
                        "on_behalf_of",
                    ]
                    .contains(&k.as_str())
                })
                .collect::<Vec<_>>()
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            form(Destination {
                account_id: "acct_1Acme".into(),
                application_fee_amount: Some(105),
                on_behalf_of: true,
            }),
            [
                pair("transfer_data[destination]", "acct_1Acme"),
                pair("application_fee_amount", "105"),
                pair("on_behalf_of", "acct_1Acme"),
            ]
        );
        assert_eq!(
            form(Destination {
                account_id: "acct_2Bolt".into(),
                application_fee_amount: None,
                on_behalf_of: false,
            }),
            [pair("transfer_data[destination]", "acct_2Bolt")]
        );
    }

    #[test]
    fn idempotency_keys() {
        assert!(check_idempotency_key("3f1c-uuid:2").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("a b").is_err());
        assert!(check_idempotency_key("é").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
        assert!(check_idempotency_key(&"k".repeat(255)).is_ok());
    }
}
