//! The HTTP API: routes, the request pipeline (auth, rate limit, faults,
//! idempotency, validation, execution) and the endpoints' parameters.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use tokio::time::Instant;

use crate::faults::{self, Fault, Plan, Stream};
use crate::search::Query;
use crate::server::ConnectionHandle;
use crate::state::{
    Answer, Connect, CreatedRange, KeyId, ListQuery, Lookup, NewCustomer, NewIntent, Store,
};
use crate::wire::{test_card, ApiError, Params, TestCard};
use crate::Config;

/// Largest request body read, in bytes.
const MAX_BODY: usize = 1 << 20;
/// Stripe's limit on idempotency keys.
const MAX_KEY_LEN: usize = 255;

/// The state shared by every connection.
pub(crate) struct Sim {
    /// The validated configuration.
    pub config: Config,
    /// All objects and keys. A std mutex: it is never held across an `.await`.
    store: Mutex<Store>,
}

impl Sim {
    pub(crate) fn new(config: Config) -> Self {
        let store = Mutex::new(Store::new(&config));
        Sim { config, store }
    }

    /// Locks the store. A panic while holding it cannot leave it half-written
    /// in a way that matters to a simulator, so poisoning is ignored.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The routes. Every `/v1` route goes through [`Sim::api`].
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(
            "/v1/payment_intents",
            post(create_payment_intent).get(list_payment_intents),
        )
        .route("/v1/payment_intents/search", get(search_payment_intents))
        .route("/v1/payment_intents/{id}", get(get_payment_intent))
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", get(get_customer))
        .route(
            "/v1/payment_methods/{id}/attach",
            post(attach_payment_method),
        )
        .route("/_paysim/audit", get(audit))
        .fallback(unrecognized)
        .method_not_allowed_fallback(unrecognized)
        .with_state(sim)
}

/// The endpoints of the simulated API.
#[derive(Debug, Clone)]
enum Endpoint {
    CreatePaymentIntent,
    GetPaymentIntent(String),
    ListPaymentIntents,
    SearchPaymentIntents,
    CreateCustomer,
    GetCustomer(String),
    AttachPaymentMethod(String),
}

impl Endpoint {
    /// POST endpoints execute and take idempotency keys; GETs only read.
    fn is_post(&self) -> bool {
        matches!(
            self,
            Endpoint::CreatePaymentIntent
                | Endpoint::CreateCustomer
                | Endpoint::AttachPaymentMethod(_)
        )
    }
}

async fn create_payment_intent(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    sim.api(Endpoint::CreatePaymentIntent, req).await
}

async fn get_payment_intent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    sim.api(Endpoint::GetPaymentIntent(id), req).await
}

async fn list_payment_intents(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    sim.api(Endpoint::ListPaymentIntents, req).await
}

async fn search_payment_intents(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    sim.api(Endpoint::SearchPaymentIntents, req).await
}

async fn create_customer(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    sim.api(Endpoint::CreateCustomer, req).await
}

async fn get_customer(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    sim.api(Endpoint::GetCustomer(id), req).await
}

async fn attach_payment_method(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    sim.api(Endpoint::AttachPaymentMethod(id), req).await
}

async fn audit(State(sim): State<Arc<Sim>>) -> Response {
    let audit = sim.store().audit();
    json_response(
        StatusCode::OK,
        serde_json::to_string(&audit).unwrap_or_default(),
    )
}

async fn unrecognized(method: Method, uri: Uri) -> Response {
    error_response(&ApiError::unrecognized_url(method.as_str(), uri.path()))
}

/// A validated POST, ready to execute.
enum Command {
    PaymentIntent(NewIntent),
    Customer(NewCustomer),
    Attach {
        payment_method: String,
        card: TestCard,
        customer: String,
    },
}

/// Removes an idempotency claim if the request is cancelled (its connection
/// closed) before it executed, so the key is not stuck "in flight".
struct ClaimGuard {
    sim: Arc<Sim>,
    id: KeyId,
    token: u64,
    armed: bool,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.armed {
            self.sim.store().release(&self.id, self.token);
        }
    }
}

/// Headers every API answer carries.
struct Reply {
    request_id: String,
    idempotency_key: Option<String>,
}

impl Reply {
    fn finish(&self, mut resp: Response) -> Response {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert(HeaderName::from_static("request-id"), v);
        }
        if let Some(k) = self
            .idempotency_key
            .as_deref()
            .and_then(|k| HeaderValue::from_str(k).ok())
        {
            h.insert(HeaderName::from_static("idempotency-key"), k);
        }
        resp
    }

    fn error(&self, e: &ApiError) -> Response {
        self.finish(error_response(e))
    }

    fn raw(&self, status: StatusCode, body: String) -> Response {
        self.finish(json_response(status, body))
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.status, e.to_json());
    let h = resp.headers_mut();
    if let Some(s) = e.retry_after {
        h.insert(HeaderName::from_static("retry-after"), HeaderValue::from(s));
    }
    if matches!(
        e.status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::CONFLICT
    ) {
        h.insert(
            HeaderName::from_static("stripe-should-retry"),
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// Waits out the request's latency, then answers.
async fn after(latency: Duration, resp: Response) -> Response {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    resp
}

/// Checks the `Authorization` header; returns the secret key.
///
/// Bearer auth (`Authorization: Bearer sk_test_...`) and HTTP basic auth with
/// the key as the user name are accepted, as Stripe does. The key is never
/// logged; error messages show only its prefix.
fn authenticate(headers: &HeaderMap, configured: Option<&str>) -> Result<String, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::authentication(None));
    };
    let invalid = || ApiError::authentication(Some("****"));
    let value = value.to_str().map_err(|_| invalid())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(invalid)?;
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| invalid())?;
        let text = String::from_utf8(decoded).map_err(|_| invalid())?;
        match text.split_once(':') {
            Some((user, _)) => user.to_string(),
            None => text,
        }
    } else {
        return Err(invalid());
    };
    let accepted = match configured {
        Some(expected) => constant_time_eq(key.as_bytes(), expected.as_bytes()),
        None => key.len() > "sk_test_".len() && key.starts_with("sk_test_"),
    };
    if accepted {
        Ok(key)
    } else {
        Err(ApiError::authentication(Some(&redact(&key))))
    }
}

/// The key as shown in errors: its prefix, never its secret part.
fn redact(key: &str) -> String {
    for prefix in [
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_",
    ] {
        if key.starts_with(prefix) {
            return format!("{prefix}********");
        }
    }
    "********".into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Idempotency-Key` header of a POST, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |msg: &str| ApiError::invalid_request(msg.to_string(), None, None);
    let k = v
        .to_str()
        .map_err(|_| bad("Idempotency-Key must be printable ASCII."))?;
    if k.is_empty() {
        return Err(bad("Idempotency-Key must not be empty."));
    }
    if k.len() > MAX_KEY_LEN {
        return Err(bad(
            "Keys for idempotent requests can only be up to 255 characters long.",
        ));
    }
    Ok(Some(k.to_string()))
}

impl Sim {
    /// The decisions for a request that has no idempotency key to follow.
    fn plan_by_counter(&self) -> Plan {
        let attempt = self.store().next_attempt(None, Instant::now());
        faults::plan(&self.config, Stream::Counter, attempt)
    }

    /// The whole pipeline of one API request:
    ///
    /// 1. authentication (401);
    /// 2. the `Idempotency-Key` header (POST only; GETs ignore it, as Stripe);
    /// 3. the rate limiter and injected 429s and "before" 500s, ahead of the
    ///    idempotency layer: nothing executes, nothing is saved;
    /// 4. for POSTs, the idempotency layer: replay, mismatch (400), in flight
    ///    (409), or a new key; then validation (400, not saved); then the key
    ///    is claimed, the latency spent, and the endpoint executes and saves its
    ///    answer in one step ("after" 500s and drops happen here);
    /// 5. GETs read after the latency.
    async fn api(self: &Arc<Self>, endpoint: Endpoint, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let conn = parts.extensions.get::<ConnectionHandle>().cloned();
        let path = parts.uri.path().to_string();
        let request_id = self.store().new_id("req_", 14);
        let mut reply = Reply {
            request_id: request_id.clone(),
            idempotency_key: None,
        };
        let resp = self
            .pipeline(endpoint, &parts, body, &path, conn, &mut reply)
            .await;
        tracing::debug!(
            request_id = %request_id,
            method = %parts.method,
            path = %path,
            status = resp.status().as_u16(),
            idempotency_key = reply.idempotency_key.as_deref().unwrap_or(""),
            replayed = resp.headers().contains_key("idempotent-replayed"),
            "paysim request"
        );
        resp
    }

    async fn pipeline(
        self: &Arc<Self>,
        endpoint: Endpoint,
        parts: &axum::http::request::Parts,
        body: Body,
        path: &str,
        conn: Option<ConnectionHandle>,
        reply: &mut Reply,
    ) -> Response {
        // 1. Authentication.
        let api_key = match authenticate(&parts.headers, self.config.api_key.as_deref()) {
            Ok(k) => k,
            Err(e) => return after(self.plan_by_counter().latency, reply.error(&e)).await,
        };

        // 2. The idempotency key.
        let key = if endpoint.is_post() {
            match idempotency_key(&parts.headers) {
                Ok(k) => k,
                Err(e) => return after(self.plan_by_counter().latency, reply.error(&e)).await,
            }
        } else {
            None
        };
        reply.idempotency_key = key.clone();
        let key_id = key.as_ref().map(|k| KeyId {
            api_key,
            key: k.clone(),
        });

        // 3. Decisions, rate limiter and early faults.
        let (attempt, token) = {
            let mut s = self.store();
            let now = Instant::now();
            (s.next_attempt(key_id.as_ref(), now), s.take_token(now))
        };
        let stream = match &key {
            Some(k) => Stream::Key(k),
            None => Stream::Counter,
        };
        let plan = faults::plan(&self.config, stream, attempt);
        if let Err(wait) = token {
            let secs = wait.as_secs_f64().ceil() as u64;
            return after(plan.latency, reply.error(&ApiError::rate_limit(secs))).await;
        }
        match plan.fault {
            Fault::TooManyRequests => {
                return after(plan.latency, reply.error(&ApiError::rate_limit(1))).await
            }
            Fault::ServerErrorBefore => {
                return after(plan.latency, reply.error(&ApiError::server_error())).await
            }
            _ => {}
        }

        let bytes = match to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                let e = ApiError::invalid_request(
                    "The request body could not be read or is larger than 1 MiB.".into(),
                    None,
                    None,
                );
                return after(plan.latency, reply.error(&e)).await;
            }
        };
        let params = Params::parse(parts.uri.query(), &bytes);

        // 5. Reads.
        if !endpoint.is_post() {
            if !plan.latency.is_zero() {
                tokio::time::sleep(plan.latency).await;
            }
            let result = self.read(&endpoint, &params);
            if plan.fault == Fault::ServerErrorAfter {
                return reply.error(&ApiError::server_error());
            }
            return match result {
                Ok(v) => reply.raw(StatusCode::OK, v.to_string()),
                Err(e) => reply.error(&e),
            };
        }

        // 4. Writes: the idempotency layer, validation, execution.
        let command = validate(&endpoint, &params, &self.config);
        let mut guard = None;
        if let Some(id) = &key_id {
            let fingerprint = params.fingerprint(parts.method.as_str(), path);
            let early = {
                let mut s = self.store();
                match s.lookup(id, &fingerprint, Instant::now()) {
                    Lookup::Replay {
                        status,
                        body,
                        request_id,
                    } => {
                        let mut resp = reply.raw(status, body);
                        let h = resp.headers_mut();
                        h.insert(
                            HeaderName::from_static("idempotent-replayed"),
                            HeaderValue::from_static("true"),
                        );
                        if let Ok(v) = HeaderValue::from_str(&request_id) {
                            h.insert(HeaderName::from_static("original-request"), v);
                        }
                        Some(resp)
                    }
                    Lookup::Mismatch => Some(reply.error(&ApiError::idempotency_mismatch(&id.key))),
                    Lookup::InUse => Some(reply.error(&ApiError::idempotency_in_use(&id.key))),
                    Lookup::Vacant => {
                        if command.is_ok() {
                            guard = Some(ClaimGuard {
                                sim: Arc::clone(self),
                                id: id.clone(),
                                token: s.claim(id.clone(), fingerprint),
                                armed: true,
                            });
                        }
                        None
                    }
                }
            };
            if let Some(resp) = early {
                return after(plan.latency, resp).await;
            }
        }
        let command = match command {
            Ok(c) => c,
            // Validation failed: nothing executed, nothing saved.
            Err(e) => return after(plan.latency, reply.error(&e)).await,
        };

        // The key (if any) is held while the latency passes, so a concurrent
        // request with it gets a 409.
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        let answer = {
            let mut s = self.store();
            let mut answer = match command {
                Command::PaymentIntent(new) => s.create_payment_intent(new, key.as_deref()),
                Command::Customer(new) => s.create_customer(new),
                Command::Attach {
                    payment_method,
                    card,
                    customer,
                } => s.attach(&payment_method, &card, &customer),
            };
            if plan.fault == Fault::ServerErrorAfter {
                let e = ApiError::server_error();
                answer = Answer {
                    status: e.status,
                    body: e.to_json(),
                    charged: answer.charged,
                };
            }
            if let Some(g) = guard.as_mut() {
                let expires = Instant::now() + self.config.key_ttl;
                s.save(&g.id, g.token, &answer, &reply.request_id, expires);
                g.armed = false;
            }
            answer
        };
        drop(guard);

        if plan.fault == Fault::DropAfterCharge && answer.charged {
            if let Some(conn) = conn {
                tracing::debug!(request_id = %reply.request_id, "paysim: dropping the connection after the charge");
                conn.close();
                // The connection task drops this future along with the
                // connection; nothing is ever written.
                std::future::pending::<()>().await;
            }
        }
        reply.raw(answer.status, answer.body)
    }

    /// The GET endpoints.
    fn read(&self, endpoint: &Endpoint, params: &Params) -> Result<serde_json::Value, ApiError> {
        match endpoint {
            Endpoint::GetPaymentIntent(id) => {
                params.check_known(&["client_secret"], &["expand["])?;
                self.store().payment_intent(id)
            }
            Endpoint::ListPaymentIntents => {
                let q = list_query(params)?;
                self.store().list_payment_intents(&q)
            }
            Endpoint::SearchPaymentIntents => {
                params.check_known(&["query", "limit", "page"], &["expand["])?;
                let text = params.required("query")?;
                let query = Query::parse(text).map_err(|why| {
                    ApiError::invalid_request(
                        format!("Invalid search query: {why}."),
                        None,
                        Some("query"),
                    )
                })?;
                let limit = limit(params)?;
                let page = match params.get("page") {
                    None | Some("") => None,
                    Some(p) => Some(
                        p.strip_prefix("page_")
                            .and_then(|n| n.parse::<usize>().ok())
                            .ok_or_else(|| {
                                ApiError::invalid_request(
                                    format!("Invalid page: {p}"),
                                    None,
                                    Some("page"),
                                )
                            })?,
                    ),
                };
                let total_count = params_has_expand(params, "total_count");
                Ok(self
                    .store()
                    .search_payment_intents(&query, limit, page, total_count))
            }
            Endpoint::GetCustomer(id) => {
                params.check_known(&[], &["expand["])?;
                if !is_customer_id(id) {
                    return Err(ApiError::resource_missing(
                        StatusCode::NOT_FOUND,
                        "customer",
                        id,
                        "id",
                    ));
                }
                Ok(self.store().get_customer(id))
            }
            Endpoint::CreatePaymentIntent
            | Endpoint::CreateCustomer
            | Endpoint::AttachPaymentMethod(_) => {
                Err(ApiError::invalid_request("not a read".into(), None, None))
            }
        }
    }
}

fn params_has_expand(params: &Params, what: &str) -> bool {
    // `expand[]=x` or `expand[0]=x`.
    (0..10)
        .map(|i| format!("expand[{i}]"))
        .chain(std::iter::once("expand[]".to_string()))
        .any(|k| params.get(&k) == Some(what))
}

fn is_customer_id(id: &str) -> bool {
    id.len() > "cus_".len() && id.starts_with("cus_")
}

/// `limit`: 1 to 100, default 10.
fn limit(params: &Params) -> Result<usize, ApiError> {
    match params.integer("limit")? {
        None => Ok(10),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::invalid_request(
            "This value must be greater than or equal to 1 and less than or equal to 100.".into(),
            Some("parameter_invalid_integer"),
            Some("limit"),
        )),
    }
}

fn list_query(params: &Params) -> Result<ListQuery, ApiError> {
    params.check_known(
        &[
            "customer",
            "created",
            "created[gt]",
            "created[gte]",
            "created[lt]",
            "created[lte]",
            "limit",
            "starting_after",
            "ending_before",
        ],
        &["expand["],
    )?;
    let mut created = CreatedRange {
        gt: params.integer("created[gt]")?,
        gte: params.integer("created[gte]")?,
        lt: params.integer("created[lt]")?,
        lte: params.integer("created[lte]")?,
    };
    if let Some(exact) = params.integer("created")? {
        created.gte = Some(exact);
        created.lte = Some(exact);
    }
    let nonempty = |name: &str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Ok(ListQuery {
        customer: nonempty("customer"),
        created,
        limit: limit(params)?,
        starting_after: nonempty("starting_after"),
        ending_before: nonempty("ending_before"),
    })
}

/// A payment method parameter: one of Stripe's test payment methods.
fn payment_method(id: &str, status: StatusCode, param: &str) -> Result<TestCard, ApiError> {
    test_card(id).ok_or_else(|| ApiError::resource_missing(status, "PaymentMethod", id, param))
}

/// Validates a POST's parameters (before the idempotency layer saves anything).
fn validate(endpoint: &Endpoint, params: &Params, config: &Config) -> Result<Command, ApiError> {
    match endpoint {
        Endpoint::CreatePaymentIntent => {
            validate_payment_intent(params, &config.connected_accounts).map(Command::PaymentIntent)
        }
        Endpoint::CreateCustomer => {
            params.check_known(
                &[
                    "email",
                    "name",
                    "description",
                    "phone",
                    "payment_method",
                    "metadata",
                    "invoice_settings[default_payment_method]",
                ],
                &["metadata[", "expand["],
            )?;
            let text = |name: &str| {
                params
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            let pm = match text("payment_method") {
                Some(id) => {
                    let card = payment_method(&id, StatusCode::BAD_REQUEST, "payment_method")?;
                    Some((id, card))
                }
                None => None,
            };
            Ok(Command::Customer(NewCustomer {
                email: text("email"),
                name: text("name"),
                description: text("description"),
                metadata: params.metadata()?,
                payment_method: pm,
            }))
        }
        Endpoint::AttachPaymentMethod(id) => {
            params.check_known(&["customer"], &["expand["])?;
            let card = payment_method(id, StatusCode::NOT_FOUND, "payment_method")?;
            let customer = params.required("customer")?;
            if !is_customer_id(customer) {
                return Err(ApiError::resource_missing(
                    StatusCode::BAD_REQUEST,
                    "customer",
                    customer,
                    "customer",
                ));
            }
            Ok(Command::Attach {
                payment_method: id.clone(),
                card,
                customer: customer.to_string(),
            })
        }
        Endpoint::GetPaymentIntent(_)
        | Endpoint::ListPaymentIntents
        | Endpoint::SearchPaymentIntents
        | Endpoint::GetCustomer(_) => {
            Err(ApiError::invalid_request("not a write".into(), None, None))
        }
    }
}

fn validate_payment_intent(
    params: &Params,
    accounts: &BTreeSet<String>,
) -> Result<NewIntent, ApiError> {
    params.check_known(
        &[
            "amount",
            "application_fee_amount",
            "on_behalf_of",
            "transfer_data[destination]",
            "transfer_data[amount]",
            "currency",
            "customer",
            "payment_method",
            "confirm",
            "off_session",
            "description",
            "capture_method",
            "confirmation_method",
            "error_on_requires_action",
            "receipt_email",
            "return_url",
            "setup_future_usage",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "metadata",
        ],
        &[
            "metadata[",
            "expand[",
            "payment_method_types[",
            "automatic_payment_methods[",
        ],
    )?;
    params.required("amount")?;
    let amount = params.integer("amount")?.unwrap_or(0);
    if amount < 1 {
        return Err(ApiError::invalid_request(
            "This value must be greater than or equal to 1.".into(),
            Some("parameter_invalid_integer"),
            Some("amount"),
        ));
    }
    if amount > 99_999_999 {
        return Err(ApiError::invalid_request(
            "Amount must be no more than 99999999.".into(),
            Some("amount_too_large"),
            Some("amount"),
        ));
    }
    let currency = params.required("currency")?.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::invalid_request(
            format!("Invalid currency: {currency}. Currencies are three-letter ISO codes."),
            None,
            Some("currency"),
        ));
    }
    let customer = match params.get("customer").filter(|c| !c.is_empty()) {
        Some(c) if is_customer_id(c) => Some(c.to_string()),
        Some(c) => {
            return Err(ApiError::resource_missing(
                StatusCode::BAD_REQUEST,
                "customer",
                c,
                "customer",
            ))
        }
        None => None,
    };
    let pm = match params.get("payment_method").filter(|p| !p.is_empty()) {
        Some(id) => Some((
            id.to_string(),
            payment_method(id, StatusCode::BAD_REQUEST, "payment_method")?,
        )),
        None => None,
    };
    let confirm = params.boolean("confirm")?.unwrap_or(false);
    match params.get("off_session") {
        None | Some("false") => {}
        Some("true" | "one_off" | "recurring") => {
            if !confirm {
                return Err(ApiError::invalid_request(
                    "You can only pass off_session when confirm=true.".into(),
                    None,
                    Some("off_session"),
                ));
            }
        }
        Some(other) => {
            return Err(ApiError::invalid_request(
                format!("Invalid off_session: {other}"),
                None,
                Some("off_session"),
            ))
        }
    }
    if confirm && pm.is_none() {
        return Err(ApiError::invalid_request(
            "You cannot confirm this PaymentIntent because it's missing a payment method.".into(),
            Some("payment_intent_unexpected_state"),
            Some("payment_method"),
        ));
    }
    if let Some(m) = params.get("capture_method") {
        if m != "automatic" && m != "automatic_async" {
            return Err(ApiError::invalid_request(
                format!("paysim simulates only automatic capture, not capture_method={m}."),
                None,
                Some("capture_method"),
            ));
        }
    }
    for i in 0..10 {
        let name = format!("payment_method_types[{i}]");
        if let Some(t) = params.get(&name) {
            if t != "card" {
                return Err(ApiError::invalid_request(
                    format!(
                        "The payment method type \"{t}\" is invalid; paysim simulates only card."
                    ),
                    None,
                    Some(&name),
                ));
            }
        }
    }
    let connect = validate_connect(params, amount, accounts)?;
    Ok(NewIntent {
        amount,
        currency,
        customer,
        payment_method: pm,
        confirm,
        metadata: params.metadata()?,
        description: params
            .get("description")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        connect,
    })
}

/// The Stripe Connect parameters of a payment intent of `amount`:
/// `transfer_data[destination]`, `application_fee_amount` and
/// `on_behalf_of`, checked as Stripe checks them for card payments. Accounts
/// not in `accounts` do not exist. An empty value is no value, as for
/// `customer`.
fn validate_connect(
    params: &Params,
    amount: i64,
    accounts: &BTreeSet<String>,
) -> Result<Connect, ApiError> {
    let nonempty = |name: &str| params.get(name).filter(|v| !v.is_empty());
    // Stripe keeps `transfer_data[amount]` for legacy integrations and
    // recommends `application_fee_amount` instead; simulating both would
    // double the fee rules for no caller of paysim.
    if nonempty("transfer_data[amount]").is_some() {
        return Err(ApiError::invalid_request(
            "paysim does not simulate transfer_data[amount]; take the platform's share with application_fee_amount instead.".into(),
            None,
            Some("transfer_data[amount]"),
        ));
    }
    let destination = nonempty("transfer_data[destination]");
    let on_behalf_of = nonempty("on_behalf_of");
    let fee = match nonempty("application_fee_amount") {
        None => None,
        Some(_) => params.integer("application_fee_amount")?,
    };
    if let Some(fee) = fee {
        if fee < 0 {
            return Err(ApiError::invalid_request(
                "This value must be greater than or equal to 0.".into(),
                Some("parameter_invalid_integer"),
                Some("application_fee_amount"),
            ));
        }
        if fee > amount {
            return Err(ApiError::invalid_request(
                format!("The application_fee_amount ({fee}) cannot be greater than the amount of the PaymentIntent ({amount})."),
                None,
                Some("application_fee_amount"),
            ));
        }
        if destination.is_none() {
            // Stripe also takes a fee on a direct charge (made with the
            // connected account's `Stripe-Account` header), which paysim does
            // not simulate, so here a fee always needs a destination.
            return Err(ApiError::invalid_request(
                "Can only apply an application_fee_amount when the PaymentIntent is attempting a direct payment (using an OAuth key or Stripe-Account header) or destination payment (using `transfer_data[destination]`).".into(),
                None,
                Some("application_fee_amount"),
            ));
        }
    }
    if let Some(d) = destination.filter(|d| !accounts.contains(*d)) {
        return Err(ApiError::resource_missing(
            StatusCode::BAD_REQUEST,
            "destination",
            d,
            "transfer_data[destination]",
        ));
    }
    if let Some(o) = on_behalf_of.filter(|o| !accounts.contains(*o)) {
        return Err(ApiError::resource_missing(
            StatusCode::BAD_REQUEST,
            "account",
            o,
            "on_behalf_of",
        ));
    }
    // Stripe refuses this pair only for card payments, and paysim takes
    // nothing but cards, so here it is always refused.
    if let (Some(d), Some(o)) = (destination, on_behalf_of) {
        if d != o {
            return Err(ApiError::invalid_request(
                "You cannot specify an on_behalf_of value that is different from the transfer_data[destination] value when using card or card_present in payment_method_types.".into(),
                None,
                Some("on_behalf_of"),
            ));
        }
    }
    Ok(Connect {
        destination: destination.map(str::to_string),
        application_fee_amount: fee,
        on_behalf_of: on_behalf_of.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).expect("header"));
        h
    }

    #[test]
    fn bearer_and_basic_auth() {
        assert_eq!(
            authenticate(&headers("Bearer sk_test_abc"), None)
                .ok()
                .as_deref(),
            Some("sk_test_abc")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("sk_test_abc:");
        assert_eq!(
            authenticate(&headers(&format!("Basic {basic}")), None)
                .ok()
                .as_deref(),
            Some("sk_test_abc")
        );
        assert!(authenticate(&headers("Bearer sk_live_abc"), None).is_err());
        assert!(authenticate(&headers("Bearer sk_test_"), None).is_err());
        assert!(authenticate(&HeaderMap::new(), None).is_err());
        assert!(authenticate(&headers("Bearer sk_test_abc"), Some("sk_test_xyz")).is_err());
        assert!(authenticate(&headers("Bearer sk_test_xyz"), Some("sk_test_xyz")).is_ok());
    }

    #[test]
    fn auth_errors_never_echo_the_key() {
        let e = authenticate(&headers("Bearer sk_test_canary123"), Some("sk_test_other"))
            .expect_err("rejected");
        let text = e.to_json();
        assert!(!text.contains("canary123"), "{text}");
        assert!(text.contains("sk_test_********"), "{text}");
    }

    #[test]
    fn payment_intent_validation() {
        let p = |s: &str| Params::parse(None, s.as_bytes());
        let none = BTreeSet::new();
        let ok = validate_payment_intent(&p(
            "amount=4200&currency=USD&customer=cus_1&payment_method=pm_card_visa&confirm=true&off_session=true&metadata[command_id]=c1",
        ), &none)
        .expect("valid");
        assert_eq!(ok.connect, Connect::default());
        assert_eq!(ok.currency, "usd");
        assert!(ok.confirm);
        let code = |s: &str| {
            validate_payment_intent(&p(s), &none)
                .err()
                .and_then(|e| e.body.code)
        };
        assert_eq!(code("currency=usd"), Some("parameter_missing"));
        assert_eq!(
            code("amount=x&currency=usd"),
            Some("parameter_invalid_integer")
        );
        assert_eq!(
            code("amount=1&currency=usd&payment_method=pm_nope"),
            Some("resource_missing")
        );
        assert_eq!(
            code("amount=1&currency=usd&bogus=1"),
            Some("parameter_unknown")
        );
        assert_eq!(
            code("amount=1&currency=usd&confirm=true"),
            Some("payment_intent_unexpected_state")
        );
    }
}
