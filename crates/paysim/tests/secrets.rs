//! The API key never shows: not in logs (at any level), not in answers, not
//! in `Debug` output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hashbuy_paysim::{Config, Paysim};

const CANARY: &str = "CANARY7f3a9c";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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

// A current-thread runtime: the server's tasks run on this thread, under the
// thread-local subscriber below.
#[tokio::test]
async fn the_api_key_is_never_logged_nor_echoed() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let good = format!("sk_test_{CANARY}_good");
    let bad = format!("sk_test_{CANARY}_bad");
    let paysim = Paysim::new(Config {
        api_key: Some(good.clone()),
        ..Config::default()
    })
    .expect("config");
    assert!(!format!("{paysim:?}").contains(CANARY));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = paysim.clone();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
    });

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut answers = String::new();
    for key in [&good, &bad] {
        for basic in [false, true] {
            let req = client
                .post(format!("{base}/v1/payment_intents"))
                .header("Idempotency-Key", format!("k-{basic}"))
                .form(&[
                    ("amount", "100"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                ]);
            let req = if basic {
                req.basic_auth(key, Some(""))
            } else {
                req.bearer_auth(key)
            };
            let resp = req.send().await.expect("answer");
            for (name, value) in resp.headers() {
                answers.push_str(&format!("{name}: {value:?}\n"));
            }
            answers.push_str(&resp.text().await.expect("body"));
        }
    }
    let audit = client
        .get(format!("{base}/_paysim/audit"))
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("audit body");
    assert_eq!(paysim.audit().payment_intents.len(), 2);

    let _ = tx.send(());
    task.await.expect("task").expect("serve");

    let logs =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).to_string();
    assert!(logs.contains("paysim"), "the subscriber saw paysim's logs");
    for (what, text) in [("logs", &logs), ("answers", &answers), ("audit", &audit)] {
        assert!(
            !text.contains(CANARY),
            "the key leaked into {what}:\n{text}"
        );
    }
}
