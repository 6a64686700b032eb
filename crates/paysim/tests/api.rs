//! Black-box specs of paysim over HTTP: a server on port 0, a reqwest client,
//! fixed seeds.

use std::time::Duration;

use hashbuy_paysim::{Audit, Config, ConfigError, Error};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "sk_test_paysim_tests";

struct Server {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    fn error(&self) -> &Value {
        &self.body["error"]
    }
}

async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(hashbuy_paysim::serve(listener, config, async {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        stop: Some(tx),
        task,
    }
}

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn post_request(
        &self,
        path: &str,
        key: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .form(form);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req
    }

    async fn post(&self, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
        self.send(self.post_request(path, key, form)).await
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.send(
            self.client
                .get(format!("{}{path_and_query}", self.base))
                .bearer_auth(KEY),
        )
        .await
    }

    async fn audit(&self) -> Audit {
        self.client
            .get(format!("{}/_paysim/audit", self.base))
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("audit json")
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let res = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve stops")
            .expect("serve task");
        assert!(res.is_ok(), "{res:?}");
    }
}

/// A charge as the settler sends it.
fn charge<'a>(command_id: &'a str, pm: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("amount", "4200"),
        ("currency", "usd"),
        ("customer", "cus_shopper1"),
        ("payment_method", pm),
        ("confirm", "true"),
        ("off_session", "true"),
        ("metadata[command_id]", command_id),
    ]
}

const PI: &str = "/v1/payment_intents";

#[tokio::test]
async fn a_charge_succeeds_with_stripes_payment_intent() {
    let s = start(Config::default()).await;
    let a = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let pi = &a.body;
    assert_eq!(pi["object"], "payment_intent");
    assert!(pi["id"].as_str().is_some_and(|id| id.starts_with("pi_")));
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 4200);
    assert_eq!(pi["amount_received"], 4200);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["customer"], "cus_shopper1");
    assert_eq!(pi["payment_method"], "pm_card_visa");
    assert_eq!(pi["metadata"]["command_id"], "c1");
    assert!(pi["created"].as_i64().is_some_and(|t| t > 1_600_000_000));
    assert!(pi["latest_charge"]
        .as_str()
        .is_some_and(|c| c.starts_with("ch_")));
    assert!(a
        .header("request-id")
        .is_some_and(|r| r.starts_with("req_")));
    assert!(!a.replayed());

    let got = s
        .get(&format!("{PI}/{}", pi["id"].as_str().unwrap_or("")))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, a.body);

    let audit = s.audit().await;
    assert_eq!(audit.payment_intents.len(), 1);
    let e = &audit.payment_intents[0];
    assert_eq!(e.id, pi["id"].as_str().unwrap_or_default());
    assert_eq!(e.status, "succeeded");
    assert_eq!(e.amount, 4200);
    assert_eq!(e.currency, "usd");
    assert_eq!(e.customer.as_deref(), Some("cus_shopper1"));
    assert_eq!(e.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(e.command_id.as_deref(), Some("c1"));
    s.stop().await;
}

#[tokio::test]
async fn a_replay_returns_the_saved_answer_and_creates_nothing() {
    let s = start(Config::default()).await;
    let first = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("original-request"), first.header("request-id"));
    // The same parameters in another order are the same request.
    let mut reordered = charge("c1", "pm_card_visa");
    reordered.reverse();
    let third = s.post(PI, Some("k1"), &reordered).await;
    assert!(third.replayed());
    assert_eq!(third.body, first.body);
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_is_an_idempotency_error() {
    let s = start(Config::default()).await;
    assert_eq!(
        s.post(PI, Some("k1"), &charge("c1", "pm_card_visa"))
            .await
            .status,
        StatusCode::OK
    );
    let other = s.post(PI, Some("k1"), &charge("c2", "pm_card_visa")).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.error()["type"], "idempotency_error");
    assert!(!other.replayed());
    // Another endpoint with the same key, too.
    let customer = s
        .post("/v1/customers", Some("k1"), &[("email", "a@example.com")])
        .await;
    assert_eq!(customer.status, StatusCode::BAD_REQUEST);
    assert_eq!(customer.error()["type"], "idempotency_error");
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_request_whose_key_is_in_flight_gets_409() {
    // A fixed 500 ms: the first request holds the key that long.
    let s = start(Config {
        latency_ms: 500,
        latency_sigma: 0.0,
        ..Config::default()
    })
    .await;
    let form = charge("c1", "pm_card_visa");
    let (a, b) = tokio::join!(s.post(PI, Some("k1"), &form), s.post(PI, Some("k1"), &form));
    let (ok, conflict) = if a.status == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.error()["type"], "idempotency_error");
    assert_eq!(conflict.error()["code"], "idempotency_key_in_use");
    assert_eq!(conflict.header("stripe-should-retry"), Some("true"));
    // The 409 is not saved: a retry now replays the first answer.
    let retry = s.post(PI, Some("k1"), &form).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert!(retry.replayed());
    assert_eq!(retry.body, ok.body);
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_request_that_fails_validation_is_not_saved() {
    let s = start(Config::default()).await;
    let mut bad = charge("c1", "pm_card_visa");
    bad.retain(|(k, _)| *k != "currency");
    let a = s.post(PI, Some("k1"), &bad).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error()["type"], "invalid_request_error");
    assert_eq!(a.error()["code"], "parameter_missing");
    assert_eq!(a.error()["param"], "currency");
    let fixed = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.body);
    assert!(!fixed.replayed());

    let unknown = s
        .post(
            PI,
            Some("k2"),
            &[("amount", "1"), ("currency", "usd"), ("bogus", "1")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error()["code"], "parameter_unknown");
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn injected_429s_are_not_saved() {
    let s = start(Config {
        fail_429: 0.5,
        seed: 7,
        ..Config::default()
    })
    .await;
    // Find a key whose first attempt is rate limited (the seed decides).
    let mut found = None;
    for i in 0..64 {
        let key = format!("k{i}");
        let a = s.post(PI, Some(&key), &charge(&key, "pm_card_visa")).await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.error()["code"], "rate_limit");
            assert_eq!(a.header("retry-after"), Some("1"));
            found = Some(key);
            break;
        }
        assert_eq!(a.status, StatusCode::OK);
    }
    let key = found.expect("a seed 7 key gets a 429 first");
    let mut answer = None;
    for _ in 0..64 {
        let a = s.post(PI, Some(&key), &charge(&key, "pm_card_visa")).await;
        if a.status != StatusCode::TOO_MANY_REQUESTS {
            answer = Some(a);
            break;
        }
    }
    let a = answer.expect("a retry gets through");
    assert_eq!(a.status, StatusCode::OK);
    assert!(!a.replayed(), "the 429 was not saved, so this executed");
    let audit = s.audit().await;
    assert_eq!(audit.for_command(&key).count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_saves_nothing() {
    let s = start(Config {
        rps_limit: Some(1.0),
        ..Config::default()
    })
    .await;
    let a = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(a.status, StatusCode::OK);
    let b = s.post(PI, Some("k2"), &charge("c2", "pm_card_visa")).await;
    assert_eq!(b.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b.error()["code"], "rate_limit");
    let wait: u64 = b
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(wait >= 1);
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    // Honouring Retry-After, the same key executes (the 429 was not saved).
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let c = s.post(PI, Some("k2"), &charge("c2", "pm_card_visa")).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert!(!c.replayed());
    assert_eq!(s.audit().await.payment_intents.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_500_after_execution_is_saved_and_replayed() {
    let s = start(Config {
        fail_500: 1.0,
        fail_500_after: 1.0,
        ..Config::default()
    })
    .await;
    let a = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.error()["type"], "api_error");
    // The charge happened.
    let audit = s.audit().await;
    assert_eq!(audit.payment_intents.len(), 1);
    assert_eq!(audit.payment_intents[0].status, "succeeded");
    // The same key replays the 500.
    let b = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(b.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(b.replayed());
    assert_eq!(b.body, a.body);
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_500_before_execution_creates_and_saves_nothing() {
    let s = start(Config {
        fail_500: 0.5,
        fail_500_after: 0.0,
        seed: 3,
        ..Config::default()
    })
    .await;
    // Find a key whose first attempt fails (the seed decides).
    let mut found = None;
    for i in 0..64 {
        let key = format!("k{i}");
        let a = s.post(PI, Some(&key), &charge(&key, "pm_card_visa")).await;
        if a.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(a.error()["type"], "api_error");
            assert!(!a.replayed());
            found = Some(key);
            break;
        }
        assert_eq!(a.status, StatusCode::OK);
    }
    let key = found.expect("a seed 3 key fails its first attempt");
    assert_eq!(
        s.audit().await.for_command(&key).count(),
        0,
        "nothing created"
    );
    let mut ok = None;
    for _ in 0..64 {
        let a = s.post(PI, Some(&key), &charge(&key, "pm_card_visa")).await;
        if a.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert!(!a.replayed(), "a 500 before execution is not saved");
            assert_eq!(s.audit().await.for_command(&key).count(), 0);
        } else {
            ok = Some(a);
            break;
        }
    }
    let ok = ok.expect("some attempt gets through");
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!ok.replayed());
    assert_eq!(s.audit().await.for_command(&key).count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_expired_key_executes_anew() {
    let s = start(Config {
        key_ttl: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let a = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(a.status, StatusCode::OK);
    let b = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert!(b.replayed(), "still within the key lifetime");
    // Past the key lifetime (a server-side deadline, not a race).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(!c.replayed());
    assert_ne!(c.body["id"], a.body["id"]);
    let audit = s.audit().await;
    assert_eq!(audit.for_command("c1").count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn test_cards_decline_with_their_codes() {
    let s = start(Config::default()).await;
    for (pm, decline_code) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
        ("pm_card_chargeCustomerFail", "generic_decline"),
    ] {
        let a = s.post(PI, Some(pm), &charge(pm, pm)).await;
        assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED, "{pm}: {}", a.body);
        let e = a.error();
        assert_eq!(e["type"], "card_error", "{pm}");
        assert_eq!(e["code"], "card_declined", "{pm}");
        assert_eq!(e["decline_code"], decline_code, "{pm}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        let pi = &e["payment_intent"];
        assert_eq!(pi["object"], "payment_intent");
        assert_eq!(pi["status"], "requires_payment_method", "{pm}");
        assert_eq!(pi["last_payment_error"]["decline_code"], decline_code);
        // The intent exists and says the same.
        let got = s
            .get(&format!("{PI}/{}", pi["id"].as_str().unwrap_or("")))
            .await;
        assert_eq!(got.body["status"], "requires_payment_method");
        // A retry with the key replays the decline; nothing is charged again.
        let again = s.post(PI, Some(pm), &charge(pm, pm)).await;
        assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
        assert!(again.replayed());
        let audit = s.audit().await;
        let entries: Vec<_> = audit.for_command(pm).collect();
        assert_eq!(entries.len(), 1, "{pm}");
        assert_eq!(entries[0].status, "requires_payment_method");
    }
    let unknown = s.post(PI, Some("k"), &charge("c", "pm_card_nope")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error()["type"], "invalid_request_error");
    assert_eq!(unknown.error()["code"], "resource_missing");
    assert_eq!(unknown.error()["param"], "payment_method");
    s.stop().await;
}

#[tokio::test]
async fn only_secret_test_keys_are_accepted() {
    let s = start(Config::default()).await;
    let url = format!("{}{PI}", s.base);
    let none = s.send(s.client.get(&url)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error()["type"], "invalid_request_error");
    let live = s
        .send(s.client.get(&url).bearer_auth("sk_live_CANARY0123456789"))
        .await;
    assert_eq!(live.status, StatusCode::UNAUTHORIZED);
    let text = live.body.to_string();
    assert!(!text.contains("CANARY"), "{text}");
    let basic = s.send(s.client.get(&url).basic_auth(KEY, Some(""))).await;
    assert_eq!(basic.status, StatusCode::OK);
    assert_eq!(basic.body["object"], "list");
    s.stop().await;

    let s = start(Config {
        api_key: Some("sk_test_the_only_one".into()),
        ..Config::default()
    })
    .await;
    let other = s
        .send(
            s.client
                .get(url_of(&s))
                .bearer_auth("sk_test_another_CANARY"),
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert!(!other.body.to_string().contains("CANARY"));
    let right = s
        .send(s.client.get(url_of(&s)).bearer_auth("sk_test_the_only_one"))
        .await;
    assert_eq!(right.status, StatusCode::OK);
    // The audit needs no key.
    assert!(s.audit().await.payment_intents.is_empty());
    s.stop().await;
}

fn url_of(s: &Server) -> String {
    format!("{}{PI}", s.base)
}

#[tokio::test]
async fn list_by_customer_and_created() {
    let s = start(Config::default()).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut ids = Vec::new();
    for i in 0..3 {
        let cmd = format!("a{i}");
        let a = s.post(PI, Some(&cmd), &charge(&cmd, "pm_card_visa")).await;
        ids.push(a.body["id"].as_str().unwrap_or_default().to_string());
    }
    let mut other = charge("b0", "pm_card_visa");
    other[2] = ("customer", "cus_other");
    s.post(PI, Some("b0"), &other).await;

    let all = s
        .get(&format!("{PI}?customer=cus_shopper1&created[gte]={before}"))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["object"], "list");
    assert_eq!(all.body["url"], "/v1/payment_intents");
    assert_eq!(all.body["has_more"], false);
    let listed: Vec<&str> = all.body["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|pi| pi["id"].as_str()).collect())
        .unwrap_or_default();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let page = s.get(&format!("{PI}?customer=cus_shopper1&limit=2")).await;
    assert_eq!(page.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["has_more"], true);
    let last = page.body["data"][1]["id"].as_str().unwrap_or_default();
    let rest = s
        .get(&format!(
            "{PI}?customer=cus_shopper1&limit=2&starting_after={last}"
        ))
        .await;
    assert_eq!(rest.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["data"][0]["id"], ids[0].as_str());
    assert_eq!(rest.body["has_more"], false);

    let future = s
        .get(&format!(
            "{PI}?customer=cus_shopper1&created[gte]={}",
            before + 3600
        ))
        .await;
    assert_eq!(future.body["data"].as_array().map(Vec::len), Some(0));

    let everyone = s.get(PI).await;
    assert_eq!(everyone.body["data"].as_array().map(Vec::len), Some(4));

    let missing = s.get(&format!("{PI}/pi_missing")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error()["code"], "resource_missing");
    let bad_limit = s.get(&format!("{PI}?limit=0")).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn search_by_command_id() {
    let s = start(Config::default()).await;
    let a = s
        .post(PI, Some("k1"), &charge("cmd-1", "pm_card_visa"))
        .await;
    s.post(PI, Some("k2"), &charge("cmd-2", "pm_card_visa"))
        .await;
    let found = s
        .send(
            s.client
                .get(format!("{}{PI}/search", s.base))
                .bearer_auth(KEY)
                .query(&[("query", "metadata['command_id']:'cmd-1'")]),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["object"], "search_result");
    assert_eq!(found.body["url"], "/v1/payment_intents/search");
    assert_eq!(found.body["has_more"], false);
    assert_eq!(found.body["next_page"], Value::Null);
    assert_eq!(found.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(found.body["data"][0]["id"], a.body["id"]);

    let none = s
        .send(
            s.client
                .get(format!("{}{PI}/search", s.base))
                .bearer_auth(KEY)
                .query(&[("query", "metadata['command_id']:'cmd-3'")]),
        )
        .await;
    assert_eq!(none.body["data"].as_array().map(Vec::len), Some(0));

    let bad = s
        .send(
            s.client
                .get(format!("{}{PI}/search", s.base))
                .bearer_auth(KEY)
                .query(&[("query", "metadata:'x'")]),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error()["param"], "query");
    s.stop().await;
}

#[tokio::test]
async fn a_drop_after_charge_is_a_connection_error_and_the_retry_replays() {
    let s = start(Config {
        drop_after_charge: 1.0,
        ..Config::default()
    })
    .await;
    let res = s
        .post_request(PI, Some("k1"), &charge("c1", "pm_card_visa"))
        .send()
        .await;
    let err = res.expect_err("no HTTP answer");
    // hyper's IncompleteMessage: the connection closed before an answer.
    assert!(
        err.is_request() && !err.is_timeout() && !err.is_status(),
        "a connection error: {err:?}"
    );
    // The charge happened.
    let audit = s.audit().await;
    assert_eq!(audit.payment_intents.len(), 1);
    assert_eq!(audit.payment_intents[0].status, "succeeded");
    assert_eq!(
        audit.payment_intents[0].idempotency_key.as_deref(),
        Some("k1")
    );
    // The same key replays the saved success (a replay charges nothing, so
    // nothing is dropped).
    let retry = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert!(retry.replayed());
    assert_eq!(retry.body["id"], audit.payment_intents[0].id.as_str());
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    // Requests that charge nothing are answered.
    let list = s.get(PI).await;
    assert_eq!(list.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn customers_and_payment_methods_for_a_demo() {
    let s = start(Config::default()).await;
    let c = s
        .post(
            "/v1/customers",
            Some("cust-1"),
            &[
                ("email", "shopper@example.com"),
                ("metadata[user_id]", "12345"),
            ],
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["object"], "customer");
    let id = c.body["id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("cus_"));
    assert_eq!(c.body["metadata"]["user_id"], "12345");

    let attach = |pm: &'static str, customer: String| {
        let s = &s;
        async move {
            s.post(
                &format!("/v1/payment_methods/{pm}/attach"),
                None,
                &[("customer", customer.as_str())],
            )
            .await
        }
    };
    let a = attach("pm_card_visa", id.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["object"], "payment_method");
    assert_eq!(a.body["customer"], id.as_str());
    assert_eq!(a.body["card"]["last4"], "4242");
    let declined = attach("pm_card_chargeDeclined", id.clone()).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined.error()["code"], "card_declined");
    let later = attach("pm_card_chargeCustomerFail", id.clone()).await;
    assert_eq!(later.status, StatusCode::OK);
    let missing = attach("pm_nope", id.clone()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error()["code"], "resource_missing");

    // Unknown customers exist on first use.
    let implicit = s.get("/v1/customers/cus_never_created").await;
    assert_eq!(implicit.status, StatusCode::OK);
    assert_eq!(implicit.body["id"], "cus_never_created");

    let unknown = s.get("/v1/refunds").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error()["type"], "invalid_request_error");
    s.stop().await;
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed() {
    let config = Config {
        fail_500: 0.3,
        fail_429: 0.2,
        seed: 11,
        ..Config::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = start(config.clone()).await;
        let mut statuses = Vec::new();
        for i in 0..20 {
            let key = format!("k{}", i % 5);
            let a = s.post(PI, Some(&key), &charge(&key, "pm_card_visa")).await;
            statuses.push((a.status.as_u16(), a.replayed()));
        }
        let audit: Vec<_> = s
            .audit()
            .await
            .payment_intents
            .into_iter()
            .map(|e| (e.command_id, e.status))
            .collect();
        runs.push((statuses, audit));
        s.stop().await;
    }
    assert_eq!(runs[0], runs[1]);
    let statuses = &runs[0].0;
    assert!(statuses.iter().any(|(s, _)| *s == 500));
    assert!(statuses.iter().any(|(s, _)| *s == 429));
    assert!(statuses.iter().any(|(s, _)| *s == 200));
}

#[tokio::test]
async fn an_invalid_config_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let res = hashbuy_paysim::serve(
        listener,
        Config {
            fail_500: 2.0,
            ..Config::default()
        },
        std::future::pending(),
    )
    .await;
    assert!(matches!(res, Err(Error::Config(_))), "{res:?}");
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_neither_sticks_nor_charges_twice() {
    let s = start(Config {
        latency_ms: 300,
        latency_sigma: 0.0,
        ..Config::default()
    })
    .await;
    let form = charge("c1", "pm_card_visa");
    let impatient = s
        .post_request(PI, Some("k1"), &form)
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    // Whether the server noticed the hang-up (and released the key) or
    // finished the request, retries settle on exactly one charge; a 409 only
    // means the abandoned request is still running.
    let mut answer = None;
    for _ in 0..20 {
        let a = s.post(PI, Some("k1"), &form).await;
        if a.status != StatusCode::CONFLICT {
            answer = Some(a);
            break;
        }
    }
    let a = answer.expect("the key is not stuck in flight");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(s.audit().await.for_command("c1").count(), 1);
    s.stop().await;
}

// ---- Stripe Connect: destination charges ----

const SELLER: &str = "acct_1SellerA";
const OTHER_SELLER: &str = "acct_2SellerB";

/// paysim with two connected accounts.
async fn start_connect() -> Server {
    start(Config {
        connected_accounts: [SELLER, OTHER_SELLER]
            .into_iter()
            .map(str::to_string)
            .collect(),
        ..Config::default()
    })
    .await
}

/// A charge as the settler sends it, plus `extra` Connect parameters.
fn connect_charge<'a>(
    command_id: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = charge(command_id, "pm_card_visa");
    form.extend_from_slice(extra);
    form
}

/// Asserts that `a` is a 400 `invalid_request_error` naming `param`, and
/// returns its message.
fn refused<'a>(a: &'a Answer, param: &str) -> &'a str {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.error()["type"], "invalid_request_error", "{}", a.body);
    assert_eq!(a.error()["param"], param, "{}", a.body);
    a.error()["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_destination_charge_with_a_fee_records_both() {
    let s = start_connect().await;
    let a = s
        .post(
            PI,
            Some("k1"),
            &connect_charge(
                "c1",
                &[
                    ("transfer_data[destination]", SELLER),
                    ("application_fee_amount", "420"),
                ],
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let pi = &a.body;
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 4200);
    assert_eq!(
        pi["transfer_data"],
        serde_json::json!({"destination": SELLER})
    );
    assert_eq!(pi["application_fee_amount"], 420);
    assert_eq!(pi["on_behalf_of"], Value::Null);
    // Reads show the same object.
    let got = s
        .get(&format!("{PI}/{}", pi["id"].as_str().unwrap_or("")))
        .await;
    assert_eq!(got.body, a.body);

    let audit = s.audit().await;
    assert_eq!(audit.payment_intents.len(), 1);
    let e = &audit.payment_intents[0];
    assert_eq!(e.destination.as_deref(), Some(SELLER));
    assert_eq!(e.application_fee_amount, Some(420));
    assert_eq!(e.on_behalf_of, None);
    s.stop().await;
}

#[tokio::test]
async fn on_behalf_of_the_destination_is_recorded() {
    let s = start_connect().await;
    let a = s
        .post(
            PI,
            Some("k1"),
            &connect_charge(
                "c1",
                &[
                    ("transfer_data[destination]", SELLER),
                    ("on_behalf_of", SELLER),
                    // The whole amount as the fee is allowed.
                    ("application_fee_amount", "4200"),
                ],
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["on_behalf_of"], SELLER);
    assert_eq!(a.body["transfer_data"]["destination"], SELLER);
    assert_eq!(a.body["application_fee_amount"], 4200);
    let audit = s.audit().await;
    let e = &audit.payment_intents[0];
    assert_eq!(e.on_behalf_of.as_deref(), Some(SELLER));
    assert_eq!(e.destination.as_deref(), Some(SELLER));
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_destination_is_resource_missing_and_charges_nothing() {
    let s = start_connect().await;
    let a = s
        .post(
            PI,
            Some("k1"),
            &connect_charge(
                "c1",
                &[
                    ("transfer_data[destination]", "acct_nobody"),
                    ("application_fee_amount", "100"),
                ],
            ),
        )
        .await;
    assert_eq!(
        refused(&a, "transfer_data[destination]"),
        "No such destination: 'acct_nobody'"
    );
    assert_eq!(a.error()["code"], "resource_missing");
    let b = s
        .post(
            PI,
            Some("k2"),
            &connect_charge("c2", &[("on_behalf_of", "acct_nobody")]),
        )
        .await;
    assert_eq!(
        refused(&b, "on_behalf_of"),
        "No such account: 'acct_nobody'"
    );
    assert_eq!(b.error()["code"], "resource_missing");
    assert!(s.audit().await.payment_intents.is_empty());

    // Without any connected account configured, every destination is unknown.
    let bare = start(Config::default()).await;
    let c = bare
        .post(
            PI,
            Some("k1"),
            &connect_charge("c1", &[("transfer_data[destination]", SELLER)]),
        )
        .await;
    assert_eq!(
        refused(&c, "transfer_data[destination]"),
        format!("No such destination: '{SELLER}'")
    );
    assert!(bare.audit().await.payment_intents.is_empty());
    bare.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn bad_connect_parameters_are_refused_with_their_param() {
    let s = start_connect().await;
    let dest = ("transfer_data[destination]", SELLER);
    // What is refused, the parameters added, the param named and a part of
    // the message.
    let cases = [
        (
            "a fee above the amount",
            vec![dest, ("application_fee_amount", "4201")],
            "application_fee_amount",
            "cannot be greater than the amount",
        ),
        (
            "a fee without a destination",
            vec![("application_fee_amount", "100")],
            "application_fee_amount",
            "destination payment (using `transfer_data[destination]`)",
        ),
        (
            "a fee with on_behalf_of but no destination",
            vec![("on_behalf_of", SELLER), ("application_fee_amount", "100")],
            "application_fee_amount",
            "destination payment (using `transfer_data[destination]`)",
        ),
        (
            "a negative fee",
            vec![dest, ("application_fee_amount", "-1")],
            "application_fee_amount",
            "greater than or equal to 0",
        ),
        (
            "a fee that is not an integer",
            vec![dest, ("application_fee_amount", "4.20")],
            "application_fee_amount",
            "Invalid integer",
        ),
        (
            "on_behalf_of another account than the destination",
            vec![dest, ("on_behalf_of", OTHER_SELLER)],
            "on_behalf_of",
            "different from the transfer_data[destination]",
        ),
        (
            "transfer_data[amount], not simulated",
            vec![dest, ("transfer_data[amount]", "3000")],
            "transfer_data[amount]",
            "paysim does not simulate transfer_data[amount]",
        ),
        (
            "another transfer_data member",
            vec![dest, ("transfer_data[bogus]", "1")],
            "transfer_data[bogus]",
            "Received unknown parameter",
        ),
    ];
    for (i, (what, extra, param, says)) in cases.iter().enumerate() {
        let key = format!("k{i}");
        let a = s.post(PI, Some(&key), &connect_charge("c1", extra)).await;
        let message = refused(&a, param);
        assert!(message.contains(says), "{what}: {}", a.body);
    }
    let mismatch = s
        .post(
            PI,
            None,
            &connect_charge("c1", &[dest, ("on_behalf_of", OTHER_SELLER)]),
        )
        .await;
    assert_eq!(
        refused(&mismatch, "on_behalf_of"),
        "You cannot specify an on_behalf_of value that is different from the \
         transfer_data[destination] value when using card or card_present in \
         payment_method_types."
    );
    let negative = s
        .post(
            PI,
            None,
            &connect_charge("c1", &[dest, ("application_fee_amount", "-1")]),
        )
        .await;
    assert_eq!(negative.error()["code"], "parameter_invalid_integer");
    assert!(s.audit().await.payment_intents.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_another_destination_or_fee_is_an_idempotency_error() {
    let s = start_connect().await;
    let first = connect_charge(
        "c1",
        &[
            ("transfer_data[destination]", SELLER),
            ("application_fee_amount", "420"),
        ],
    );
    let a = s.post(PI, Some("k1"), &first).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for other in [
        connect_charge(
            "c1",
            &[
                ("transfer_data[destination]", OTHER_SELLER),
                ("application_fee_amount", "420"),
            ],
        ),
        connect_charge(
            "c1",
            &[
                ("transfer_data[destination]", SELLER),
                ("application_fee_amount", "421"),
            ],
        ),
        connect_charge(
            "c1",
            &[
                ("transfer_data[destination]", SELLER),
                ("application_fee_amount", "420"),
                ("on_behalf_of", SELLER),
            ],
        ),
        // The same charge to the platform's own account.
        charge("c1", "pm_card_visa"),
    ] {
        let b = s.post(PI, Some("k1"), &other).await;
        assert_eq!(b.status, StatusCode::BAD_REQUEST, "{}", b.body);
        assert_eq!(b.error()["type"], "idempotency_error");
        assert!(!b.replayed());
    }
    let again = s.post(PI, Some("k1"), &first).await;
    assert!(again.replayed());
    assert_eq!(again.body, a.body);
    assert_eq!(s.audit().await.payment_intents.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_charge_without_connect_parameters_has_null_connect_fields() {
    let s = start_connect().await;
    let a = s.post(PI, Some("k1"), &charge("c1", "pm_card_visa")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for field in ["transfer_data", "application_fee_amount", "on_behalf_of"] {
        assert!(
            a.body.get(field).is_some_and(Value::is_null),
            "{field}: {}",
            a.body
        );
    }
    let audit = s.audit().await;
    let e = &audit.payment_intents[0];
    assert_eq!(
        (&e.destination, e.application_fee_amount, &e.on_behalf_of),
        (&None, None, &None)
    );
    // The audit's JSON carries them as null, as its other absent fields.
    let raw: Value = s
        .client
        .get(format!("{}/_paysim/audit", s.base))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit json");
    let entry = &raw["payment_intents"][0];
    for field in ["destination", "application_fee_amount", "on_behalf_of"] {
        assert!(
            entry.get(field).is_some_and(Value::is_null),
            "{field}: {raw}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_badly_spelled_connected_account_is_refused_at_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let res = hashbuy_paysim::serve(
        listener,
        Config {
            connected_accounts: ["acct_ok".to_string(), "acct-typo".to_string()].into(),
            ..Config::default()
        },
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(&res, Err(Error::Config(ConfigError::ConnectedAccountId(id))) if id == "acct-typo"),
        "{res:?}"
    );
}
