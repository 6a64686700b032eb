//! The provider key never shows: not in `Debug` output, not in errors or
//! outcomes (even when a server echoes it back), not in logs at any level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{a_minute_ago, charge, config_for, Sim};
use hashbuy_paysim::Config;
use hashbuy_provider::{ChargeOutcome, Provider, ProviderError, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANARY: &str = "CANARY9d2e7b";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How [`echoing_server`] quotes the key.
#[derive(Clone, Copy)]
enum Echo {
    /// In a Stripe error message.
    Json,
    /// In a plain-text body, starting at this byte.
    PlainAt(usize),
}

/// A server no one should trust: it answers every request with `status` and
/// a body quoting the request's `Authorization` header whole.
async fn echoing_server(status: u16, echo: Echo) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let (body, kind) = match echo {
                    Echo::Json => (
                        serde_json::json!({"error": {
                            "type": "invalid_request_error",
                            "message": format!("Invalid API Key provided: {auth}"),
                        }})
                        .to_string(),
                        "application/json",
                    ),
                    Echo::PlainAt(at) => {
                        let key = auth.trim_start_matches("Bearer ");
                        (format!("{}{key} was refused", "x".repeat(at)), "text/plain")
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status} Oops\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

// A current-thread runtime: the client's and the server's tasks run on this
// thread, under the thread-local subscriber below.
#[tokio::test]
async fn the_key_never_shows() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let key = format!("sk_test_{CANARY}");
    let mut shown = String::new();

    // Configuration errors.
    for bad in [
        format!("sk_live_{CANARY}"),
        format!("rk_live_{CANARY}"),
        format!("pk_test_{CANARY}"),
        format!("sk_test_{CANARY}\n"),
        format!("xx_{CANARY}"),
        format!("sk_test_{CANARY}-x"),
    ] {
        let e = Provider::new(config_for("http://127.0.0.1:1", &bad)).expect_err("refused");
        shown.push_str(&format!("{e}\n{e:?}\n"));
    }
    let e = Provider::new(config_for(&format!("http://u:{CANARY}@127.0.0.1:1"), &key))
        .expect_err("credentials in the URL");
    shown.push_str(&format!("{e}\n{e:?}\n"));

    // Debug output.
    let config = config_for("http://127.0.0.1:1", &key);
    shown.push_str(&format!("{config:?}\n"));
    let p = Provider::new(config).expect("provider");
    shown.push_str(&format!("{p:?}\n"));

    // paysim with the canary key accepted, and with another key.
    let sim = Sim::start(Config {
        api_key: Some(key.clone()),
        ..Config::default()
    })
    .await;
    let good = Provider::new(config_for(&sim.base, &key)).expect("provider");
    let o = good
        .charge(&charge("c-secret", "cus_1", "pm_card_visa"), "c-secret")
        .await;
    assert!(matches!(o, ChargeOutcome::Succeeded { .. }), "{o:?}");
    shown.push_str(&format!("{o:?}\n"));
    let found = good.find_charge("cus_1", "c-secret", a_minute_ago()).await;
    shown.push_str(&format!("{found:?}\n"));
    let other = Sim::start(Config {
        api_key: Some("sk_test_someone_else".into()),
        ..Config::default()
    })
    .await;
    let refused = Provider::new(config_for(&other.base, &key)).expect("provider");
    let o = refused
        .charge(&charge("c-secret", "cus_1", "pm_card_visa"), "c-secret")
        .await;
    assert!(matches!(o, ChargeOutcome::Unauthorized { .. }), "{o:?}");
    shown.push_str(&format!("{o:?}\n"));
    let e = refused.check().await.expect_err("unauthorized");
    shown.push_str(&format!("{e}\n{e:?}\n"));

    // A server that echoes the Authorization header, for each kind of
    // answer; in plain text, across the 200th byte, where a description of
    // a body without a Stripe error is cut.
    let plain = Echo::PlainAt(200 - "sk_test_CANA".len());
    for (status, echo) in [
        (401, Echo::Json),
        (400, Echo::Json),
        (402, Echo::Json),
        (500, Echo::Json),
        (500, plain),
        (400, plain),
    ] {
        let base = echoing_server(status, echo).await;
        let p = Provider::new(config_for(&base, &key)).expect("provider");
        let o = p
            .charge(&charge("c-echo", "cus_1", "pm_card_visa"), "c-echo")
            .await;
        let text = format!("{o:?}");
        assert!(text.contains("[REDACTED]"), "{status}: {text}");
        shown.push_str(&text);
        shown.push('\n');
        let e = p
            .find_charge("cus_1", "c-echo", a_minute_ago())
            .await
            .expect_err("an error");
        assert!(
            matches!(
                e,
                ProviderError::Unauthorized { .. } | ProviderError::Api { .. }
            ),
            "{e}"
        );
        shown.push_str(&format!("{e}\n{e:?}\n"));
        let e = p
            .create_customer(&Default::default(), None)
            .await
            .expect_err("an error");
        shown.push_str(&format!("{e}\n{e:?}\n"));
    }

    // An unreachable provider.
    let o = p
        .charge(&charge("c-down", "cus_1", "pm_card_visa"), "c-down")
        .await;
    shown.push_str(&format!("{o:?}\n"));
    let e = p.check().await.expect_err("unreachable");
    shown.push_str(&format!("{e}\n{e:?}\n"));

    let logged = logs.text();
    assert!(
        logged.contains("provider answered"),
        "the test captures the client's logs: {logged}"
    );
    // Not even a part of it.
    let part = &CANARY[..4];
    assert!(!shown.contains(part), "{shown}");
    assert!(!logged.contains(part), "{logged}");
    // The key type itself.
    let secret = SecretString::from(key.as_str());
    assert!(!format!("{secret:?}").contains(CANARY));
}
