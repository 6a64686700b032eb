//! Everything the simulator remembers: objects, idempotency keys, attempt
//! counters, the rate limiter. One `Store` behind one mutex; no lock is held
//! across an `.await`, so creating, charging and saving the result under the
//! idempotency key happen in one critical section (a request cancelled before
//! it has changed nothing).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::faults::Bucket;
use crate::search::Query;
use crate::wire::{ApiError, TestCard};
use crate::{Audit, AuditEntry, Config};

/// A payment intent's status (the subset the simulator reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    Succeeded,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::RequiresPaymentMethod => "requires_payment_method",
            Status::RequiresConfirmation => "requires_confirmation",
            Status::Succeeded => "succeeded",
        }
    }
}

/// A payment intent as stored.
#[derive(Debug, Clone)]
pub(crate) struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub status: Status,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
    pub client_secret: String,
    pub latest_charge: Option<String>,
    pub last_payment_error: Option<Value>,
    pub idempotency_key: Option<String>,
    pub connect: Connect,
}

/// The Stripe Connect side of a payment intent; all `None` for a charge that
/// stays on the platform's own account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Connect {
    /// `transfer_data[destination]`: the connected account the funds go to.
    pub destination: Option<String>,
    /// `application_fee_amount`: the platform's share, in minor units.
    pub application_fee_amount: Option<i64>,
    /// `on_behalf_of`: the account that settles the payment.
    pub on_behalf_of: Option<String>,
}

impl PaymentIntent {
    /// Stripe's JSON for it.
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self.wire()).unwrap_or(Value::Null)
    }

    /// Stripe's JSON for it, as text: written straight from the intent, not
    /// through a `Value`, because every charge answers with it.
    pub(crate) fn to_json_text(&self) -> String {
        serde_json::to_string(&self.wire()).unwrap_or_default()
    }

    fn wire(&self) -> IntentWire<'_> {
        IntentWire {
            id: &self.id,
            object: "payment_intent",
            amount: self.amount,
            amount_capturable: 0,
            amount_received: if self.status == Status::Succeeded {
                self.amount
            } else {
                0
            },
            application: None,
            application_fee_amount: self.connect.application_fee_amount,
            automatic_payment_methods: None,
            canceled_at: None,
            cancellation_reason: None,
            capture_method: "automatic",
            client_secret: &self.client_secret,
            confirmation_method: "automatic",
            created: self.created,
            currency: &self.currency,
            customer: self.customer.as_deref(),
            description: self.description.as_deref(),
            last_payment_error: self.last_payment_error.as_ref(),
            latest_charge: self.latest_charge.as_deref(),
            livemode: false,
            metadata: &self.metadata,
            next_action: None,
            on_behalf_of: self.connect.on_behalf_of.as_deref(),
            payment_method: self.payment_method.as_deref(),
            payment_method_types: ["card"],
            receipt_email: None,
            setup_future_usage: None,
            shipping: None,
            statement_descriptor: None,
            statement_descriptor_suffix: None,
            status: self.status.as_str(),
            transfer_data: self
                .connect
                .destination
                .as_deref()
                .map(|destination| TransferDataWire { destination }),
            transfer_group: None,
        }
    }
}

/// A payment intent in Stripe's wire format (the fields that are always
/// null here are kept, as Stripe sends them).
#[derive(serde::Serialize)]
struct IntentWire<'a> {
    id: &'a str,
    object: &'static str,
    amount: i64,
    amount_capturable: i64,
    amount_received: i64,
    application: Option<()>,
    application_fee_amount: Option<i64>,
    automatic_payment_methods: Option<()>,
    canceled_at: Option<()>,
    cancellation_reason: Option<()>,
    capture_method: &'static str,
    client_secret: &'a str,
    confirmation_method: &'static str,
    created: i64,
    currency: &'a str,
    customer: Option<&'a str>,
    description: Option<&'a str>,
    last_payment_error: Option<&'a Value>,
    latest_charge: Option<&'a str>,
    livemode: bool,
    metadata: &'a BTreeMap<String, String>,
    next_action: Option<()>,
    on_behalf_of: Option<&'a str>,
    payment_method: Option<&'a str>,
    payment_method_types: [&'static str; 1],
    receipt_email: Option<()>,
    setup_future_usage: Option<()>,
    shipping: Option<()>,
    statement_descriptor: Option<()>,
    statement_descriptor_suffix: Option<()>,
    status: &'static str,
    transfer_data: Option<TransferDataWire<'a>>,
    transfer_group: Option<()>,
}

/// A payment intent's `transfer_data` in Stripe's wire format. Stripe adds
/// `amount` when `transfer_data[amount]` was given, which paysim refuses, so
/// it never appears here.
#[derive(serde::Serialize)]
struct TransferDataWire<'a> {
    destination: &'a str,
}

/// A customer as stored.
#[derive(Debug, Clone)]
pub(crate) struct Customer {
    pub id: String,
    pub created: i64,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub default_payment_method: Option<String>,
}

impl Customer {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "customer",
            "address": null,
            "balance": 0,
            "created": self.created,
            "currency": null,
            "default_source": null,
            "delinquent": false,
            "description": self.description,
            "email": self.email,
            "invoice_prefix": null,
            "invoice_settings": {
                "custom_fields": null,
                "default_payment_method": self.default_payment_method,
                "footer": null,
                "rendering_options": null,
            },
            "livemode": false,
            "metadata": self.metadata,
            "name": self.name,
            "phone": null,
            "preferred_locales": [],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null,
        })
    }
}

/// Stripe's JSON for a test payment method.
pub(crate) fn payment_method_json(
    id: &str,
    card: &TestCard,
    customer: Option<&str>,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "payment_method",
        "billing_details": {
            "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
            "email": null,
            "name": null,
            "phone": null,
        },
        "card": {
            "brand": card.brand,
            "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": null},
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "funding": card.funding,
            "last4": card.last4,
        },
        "created": created,
        "customer": customer,
        "livemode": false,
        "metadata": {},
        "type": "card",
    })
}

/// A payment intent request that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct NewIntent {
    pub amount: i64,
    pub currency: String,
    pub customer: Option<String>,
    /// The payment method and its test card.
    pub payment_method: Option<(String, TestCard)>,
    pub confirm: bool,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
    /// Destination, fee and settlement merchant, already checked against
    /// the connected accounts.
    pub connect: Connect,
}

/// A customer request that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct NewCustomer {
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub payment_method: Option<(String, TestCard)>,
}

/// The answer of an executed endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: String,
    /// Whether a card was charged (or a charge was attempted) while executing.
    pub charged: bool,
}

impl Answer {
    fn ok(v: Value) -> Self {
        Answer {
            status: StatusCode::OK,
            body: v.to_string(),
            charged: false,
        }
    }

    fn error(e: &ApiError) -> Self {
        Answer {
            status: e.status,
            body: e.to_json(),
            charged: false,
        }
    }
}

/// An idempotency key, scoped to the API key that sent it (as Stripe scopes
/// keys to an account). Holds the secret key, so it has no `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyId {
    pub api_key: String,
    pub key: String,
}

enum KeyEntry {
    /// A request with this key is executing; `token` names it.
    InFlight { fingerprint: String, token: u64 },
    /// The first response, saved.
    Done {
        fingerprint: String,
        status: StatusCode,
        body: String,
        request_id: String,
        expires: Instant,
    },
}

/// What the idempotency layer says about an incoming keyed request.
pub(crate) enum Lookup {
    /// Replay this saved response.
    Replay {
        status: StatusCode,
        body: String,
        request_id: String,
    },
    /// The key was used with other parameters or another endpoint.
    Mismatch,
    /// Another request with the key is executing.
    InUse,
    /// The key is new (or its saved result expired).
    Vacant,
}

/// The simulator's memory.
pub(crate) struct Store {
    ids: ChaCha8Rng,
    intents: Vec<PaymentIntent>,
    intent_index: HashMap<String, usize>,
    customers: HashMap<String, Customer>,
    /// Test payment method name -> customer it was last attached to.
    attached: HashMap<String, String>,
    keys: HashMap<KeyId, KeyEntry>,
    /// Requests seen per idempotency key (every request counts, also those
    /// rejected before the idempotency layer), for the fault decisions.
    attempts: HashMap<KeyId, Attempts>,
    /// Requests seen without an idempotency key.
    requests: u64,
    next_token: u64,
    /// How long a key is remembered: saved answers, and attempt counts
    /// after the key's last request.
    key_ttl: Duration,
    /// See [`Config::clock_skew_s`].
    clock_skew_s: i64,
    /// Saves and keyed requests since expired keys were last dropped.
    since_sweep: usize,
    bucket: Option<Bucket>,
}

/// The requests seen under one idempotency key.
struct Attempts {
    count: u64,
    last: Instant,
}

/// Saves and keyed requests between two sweeps of expired keys: often
/// enough to bound memory, rarely enough to cost nothing per request.
const SWEEP_EVERY: usize = 4096;

/// Seconds since the Unix epoch, as in Stripe's `created`.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const ID_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Store {
    pub(crate) fn new(config: &Config) -> Self {
        Store {
            // A different stream from the fault decisions, so faults do not
            // depend on how many ids were made.
            ids: {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                rng.set_stream(7);
                rng
            },
            intents: Vec::new(),
            intent_index: HashMap::new(),
            customers: HashMap::new(),
            attached: HashMap::new(),
            keys: HashMap::new(),
            attempts: HashMap::new(),
            requests: 0,
            next_token: 0,
            key_ttl: config.key_ttl,
            clock_skew_s: config.clock_skew_s,
            since_sweep: 0,
            bucket: config.rps_limit.map(|r| Bucket::new(r, Instant::now())),
        }
    }

    /// The simulated provider's clock, in seconds since the Unix epoch
    /// ([`Config::clock_skew_s`] off this machine's).
    fn now_s(&self) -> i64 {
        unix_now().saturating_add(self.clock_skew_s)
    }

    /// A fresh random id such as `pi_3Nx...`.
    pub(crate) fn new_id(&mut self, prefix: &str, len: usize) -> String {
        let mut s = String::with_capacity(prefix.len() + len);
        s.push_str(prefix);
        for _ in 0..len {
            s.push(char::from(ID_CHARS[self.ids.gen_range(0..ID_CHARS.len())]));
        }
        s
    }

    /// Counts a request and returns its attempt number (1 for the first).
    /// A key unused for the key lifetime counts from 1 again, whatever
    /// other traffic came in between (so its faults stay reproducible); the
    /// sweep only frees the memory of such keys.
    pub(crate) fn next_attempt(&mut self, key: Option<&KeyId>, now: Instant) -> u64 {
        let Some(k) = key else {
            self.requests += 1;
            return self.requests;
        };
        let ttl = self.key_ttl;
        let attempts = self.attempts.entry(k.clone()).or_insert(Attempts {
            count: 0,
            last: now,
        });
        if attempts.last + ttl <= now {
            attempts.count = 0;
        }
        attempts.count += 1;
        attempts.last = now;
        let n = attempts.count;
        self.count_for_sweep(now);
        n
    }

    /// Drops expired keys every [`SWEEP_EVERY`] saves and keyed requests.
    fn count_for_sweep(&mut self, now: Instant) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY {
            return;
        }
        self.since_sweep = 0;
        self.keys.retain(|_, e| match e {
            KeyEntry::InFlight { .. } => true,
            KeyEntry::Done { expires, .. } => *expires > now,
        });
        let ttl = self.key_ttl;
        self.attempts.retain(|_, a| a.last + ttl > now);
    }

    /// Takes a rate limiter token, or says how long until one is available.
    pub(crate) fn take_token(&mut self, now: Instant) -> Result<(), Duration> {
        match &mut self.bucket {
            Some(b) => b.take(now),
            None => Ok(()),
        }
    }

    // ---- idempotency ----

    /// Looks `id` up for a request whose parameters print as `fingerprint`.
    pub(crate) fn lookup(&mut self, id: &KeyId, fingerprint: &str, now: Instant) -> Lookup {
        match self.keys.get(id) {
            None => Lookup::Vacant,
            Some(KeyEntry::InFlight { .. }) => Lookup::InUse,
            Some(KeyEntry::Done { expires, .. }) if *expires <= now => {
                self.keys.remove(id);
                Lookup::Vacant
            }
            Some(KeyEntry::Done {
                fingerprint: saved,
                status,
                body,
                request_id,
                ..
            }) => {
                if saved == fingerprint {
                    Lookup::Replay {
                        status: *status,
                        body: body.clone(),
                        request_id: request_id.clone(),
                    }
                } else {
                    Lookup::Mismatch
                }
            }
        }
    }

    /// Marks `id` in flight (after a `Vacant` lookup); the token names this claim.
    pub(crate) fn claim(&mut self, id: KeyId, fingerprint: String) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.keys
            .insert(id, KeyEntry::InFlight { fingerprint, token });
        token
    }

    /// Saves the first response under `id`, replacing claim `token`.
    pub(crate) fn save(
        &mut self,
        id: &KeyId,
        token: u64,
        answer: &Answer,
        request_id: &str,
        expires: Instant,
    ) {
        let Some(KeyEntry::InFlight {
            fingerprint,
            token: t,
        }) = self.keys.remove(id)
        else {
            return;
        };
        if t != token {
            return;
        }
        self.keys.insert(
            id.clone(),
            KeyEntry::Done {
                fingerprint,
                status: answer.status,
                body: answer.body.clone(),
                request_id: request_id.to_string(),
                expires,
            },
        );
        self.count_for_sweep(Instant::now());
    }

    /// Drops claim `token` on `id` if it is still in flight (the request was
    /// cancelled before executing).
    pub(crate) fn release(&mut self, id: &KeyId, token: u64) {
        if matches!(self.keys.get(id), Some(KeyEntry::InFlight { token: t, .. }) if *t == token) {
            self.keys.remove(id);
        }
    }

    // ---- objects ----

    /// The customer `id`, made on first use (a simulator convenience).
    fn customer(&mut self, id: &str) -> &mut Customer {
        let created = self.now_s();
        self.customers
            .entry(id.to_string())
            .or_insert_with(|| Customer {
                id: id.to_string(),
                created,
                email: None,
                name: None,
                description: None,
                metadata: BTreeMap::new(),
                default_payment_method: None,
            })
    }

    /// `POST /v1/payment_intents`, after validation.
    pub(crate) fn create_payment_intent(&mut self, new: NewIntent, key: Option<&str>) -> Answer {
        if let Some(c) = &new.customer {
            self.customer(c);
        }
        let id = self.new_id("pi_", 24);
        let client_secret = format!("{id}_secret_{}", self.new_id("", 25));
        let mut pi = PaymentIntent {
            id,
            amount: new.amount,
            currency: new.currency,
            customer: new.customer,
            payment_method: new.payment_method.as_ref().map(|(id, _)| id.clone()),
            status: if new.payment_method.is_some() {
                Status::RequiresConfirmation
            } else {
                Status::RequiresPaymentMethod
            },
            created: self.now_s(),
            metadata: new.metadata,
            description: new.description,
            client_secret,
            latest_charge: None,
            last_payment_error: None,
            idempotency_key: key.map(str::to_string),
            connect: new.connect,
        };
        let mut answer = None;
        let mut charged = false;
        if let (true, Some((pm_id, card))) = (new.confirm, &new.payment_method) {
            charged = true;
            let charge = self.new_id("ch_", 24);
            pi.latest_charge = Some(charge.clone());
            match card.decline {
                None => pi.status = Status::Succeeded,
                Some(decline) => {
                    // As Stripe: the intent goes back to requires_payment_method,
                    // its payment method is cleared and the error is kept in
                    // last_payment_error.
                    let pm_json = payment_method_json(pm_id, card, None, pi.created);
                    let mut err = ApiError::card_declined(&decline);
                    err.body.charge = Some(charge);
                    err.body.payment_method = Some(pm_json);
                    pi.status = Status::RequiresPaymentMethod;
                    pi.payment_method = None;
                    pi.last_payment_error =
                        Some(serde_json::to_value(&err.body).unwrap_or(Value::Null));
                    err.body.payment_intent = Some(pi.to_json());
                    answer = Some(Answer {
                        status: err.status,
                        body: err.to_json(),
                        charged,
                    });
                }
            }
        }
        let answer = answer.unwrap_or_else(|| Answer {
            status: StatusCode::OK,
            body: pi.to_json_text(),
            charged,
        });
        self.intent_index.insert(pi.id.clone(), self.intents.len());
        self.intents.push(pi);
        answer
    }

    /// `GET /v1/payment_intents/:id`.
    pub(crate) fn payment_intent(&self, id: &str) -> Result<Value, ApiError> {
        self.intent_index
            .get(id)
            .and_then(|i| self.intents.get(*i))
            .map(PaymentIntent::to_json)
            .ok_or_else(|| {
                ApiError::resource_missing(StatusCode::NOT_FOUND, "payment_intent", id, "intent")
            })
    }

    /// `GET /v1/payment_intents`: newest first, as Stripe lists.
    pub(crate) fn list_payment_intents(&self, q: &ListQuery) -> Result<Value, ApiError> {
        let seq_of = |id: &str, param: &str| {
            self.intent_index.get(id).copied().ok_or_else(|| {
                ApiError::resource_missing(StatusCode::BAD_REQUEST, "payment_intent", id, param)
            })
        };
        let keep = |pi: &PaymentIntent| {
            q.customer
                .as_ref()
                .is_none_or(|c| pi.customer.as_ref() == Some(c))
                && q.created.contains(pi.created)
        };
        let (data, has_more): (Vec<Value>, bool) =
            match (&q.starting_after, &q.ending_before) {
                (Some(_), Some(_)) => return Err(ApiError::invalid_request(
                    "You may only specify one of these parameters: ending_before, starting_after."
                        .into(),
                    Some("parameters_exclusive"),
                    Some("ending_before"),
                )),
                (Some(after), None) => {
                    let cursor = seq_of(after, "starting_after")?;
                    let mut older = self.intents[..cursor].iter().rev().filter(|pi| keep(pi));
                    let data: Vec<Value> = older
                        .by_ref()
                        .take(q.limit)
                        .map(PaymentIntent::to_json)
                        .collect();
                    (data, older.next().is_some())
                }
                (None, Some(before)) => {
                    let cursor = seq_of(before, "ending_before")?;
                    // The `limit` newer items closest to the cursor, newest first.
                    let mut newer = self.intents[cursor + 1..].iter().filter(|pi| keep(pi));
                    let mut page: Vec<Value> = newer
                        .by_ref()
                        .take(q.limit)
                        .map(PaymentIntent::to_json)
                        .collect();
                    let more = newer.next().is_some();
                    page.reverse();
                    (page, more)
                }
                (None, None) => {
                    let mut all = self.intents.iter().rev().filter(|pi| keep(pi));
                    let data: Vec<Value> = all
                        .by_ref()
                        .take(q.limit)
                        .map(PaymentIntent::to_json)
                        .collect();
                    (data, all.next().is_some())
                }
            };
        Ok(json!({
            "object": "list",
            "data": data,
            "has_more": has_more,
            "url": "/v1/payment_intents",
        }))
    }

    /// `GET /v1/payment_intents/search`: newest first; `page` is the
    /// `next_page` of the previous answer.
    pub(crate) fn search_payment_intents(
        &self,
        query: &Query,
        limit: usize,
        page: Option<usize>,
        total_count: bool,
    ) -> Value {
        let end = page.unwrap_or(self.intents.len()).min(self.intents.len());
        let mut hits = self.intents[..end]
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, pi)| query.matches(pi));
        let page_items: Vec<(usize, &PaymentIntent)> = hits.by_ref().take(limit).collect();
        let has_more = hits.next().is_some();
        let next_page = match (has_more, page_items.last()) {
            (true, Some((seq, _))) => Value::String(format!("page_{seq}")),
            _ => Value::Null,
        };
        let mut out = json!({
            "object": "search_result",
            "data": page_items.iter().map(|(_, pi)| pi.to_json()).collect::<Vec<_>>(),
            "has_more": has_more,
            "next_page": next_page,
            "url": "/v1/payment_intents/search",
        });
        if total_count {
            out["total_count"] = json!(self.intents.iter().filter(|pi| query.matches(pi)).count());
        }
        out
    }

    /// `POST /v1/customers`, after validation.
    pub(crate) fn create_customer(&mut self, new: NewCustomer) -> Answer {
        if let Some((_, card)) = &new.payment_method {
            if let Some(decline) = card.decline.filter(|d| d.on_attach) {
                return Answer::error(&ApiError::card_declined(&decline));
            }
        }
        let id = self.new_id("cus_", 14);
        if let Some((pm, _)) = &new.payment_method {
            self.attached.insert(pm.clone(), id.clone());
        }
        let customer = Customer {
            id: id.clone(),
            created: self.now_s(),
            email: new.email,
            name: new.name,
            description: new.description,
            metadata: new.metadata,
            default_payment_method: None,
        };
        let json = customer.to_json();
        self.customers.insert(id, customer);
        Answer::ok(json)
    }

    /// `GET /v1/customers/:id` (unknown `cus_` ids exist on first use).
    pub(crate) fn get_customer(&mut self, id: &str) -> Value {
        self.customer(id).to_json()
    }

    /// `POST /v1/payment_methods/:id/attach`, after validation.
    pub(crate) fn attach(&mut self, pm: &str, card: &TestCard, customer: &str) -> Answer {
        if let Some(decline) = card.decline.filter(|d| d.on_attach) {
            return Answer::error(&ApiError::card_declined(&decline));
        }
        self.customer(customer);
        self.attached.insert(pm.to_string(), customer.to_string());
        let now = self.now_s();
        Answer::ok(payment_method_json(pm, card, Some(customer), now))
    }

    /// Every payment intent ever created, in creation order.
    pub(crate) fn audit(&self) -> Audit {
        Audit {
            payment_intents: self
                .intents
                .iter()
                .map(|pi| AuditEntry {
                    id: pi.id.clone(),
                    status: pi.status.as_str().to_string(),
                    amount: pi.amount,
                    currency: pi.currency.clone(),
                    customer: pi.customer.clone(),
                    idempotency_key: pi.idempotency_key.clone(),
                    command_id: pi.metadata.get("command_id").cloned(),
                    destination: pi.connect.destination.clone(),
                    application_fee_amount: pi.connect.application_fee_amount,
                    on_behalf_of: pi.connect.on_behalf_of.clone(),
                })
                .collect(),
        }
    }
}

/// Bounds on `created`, as `created[gte]=...` etc. or `created=...`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreatedRange {
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
}

impl CreatedRange {
    fn contains(&self, t: i64) -> bool {
        self.gt.is_none_or(|b| t > b)
            && self.gte.is_none_or(|b| t >= b)
            && self.lt.is_none_or(|b| t < b)
            && self.lte.is_none_or(|b| t <= b)
    }
}

/// A validated `GET /v1/payment_intents`.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    pub customer: Option<String>,
    pub created: CreatedRange,
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> KeyId {
        KeyId {
            api_key: "sk_test_a".into(),
            key: name.into(),
        }
    }

    fn store() -> Store {
        Store::new(&Config {
            key_ttl: Duration::from_secs(60),
            ..Config::default()
        })
    }

    #[test]
    fn a_key_unused_for_its_lifetime_counts_attempts_from_one_again() {
        let mut store = store();
        let start = Instant::now();
        assert_eq!(store.next_attempt(Some(&key("k")), start), 1);
        let soon = start + Duration::from_secs(59);
        assert_eq!(store.next_attempt(Some(&key("k")), soon), 2);
        // The lifetime runs from the key's last request, not its first.
        let later = soon + Duration::from_secs(59);
        assert_eq!(store.next_attempt(Some(&key("k")), later), 3);
        let expired = later + Duration::from_secs(60);
        assert_eq!(store.next_attempt(Some(&key("k")), expired), 1);
        assert_eq!(store.next_attempt(None, start), 1);
        assert_eq!(store.next_attempt(None, expired), 2);
    }

    #[test]
    fn the_sweep_frees_keys_unused_for_their_lifetime_and_keeps_the_rest() {
        let mut store = store();
        let start = Instant::now();
        store.next_attempt(Some(&key("old")), start);
        let later = start + Duration::from_secs(61);
        store.next_attempt(Some(&key("recent")), later);
        for i in 0..SWEEP_EVERY {
            store.next_attempt(Some(&key(&format!("filler{i}"))), later);
        }
        assert!(!store.attempts.contains_key(&key("old")));
        assert_eq!(store.next_attempt(Some(&key("recent")), later), 2);
    }
}
