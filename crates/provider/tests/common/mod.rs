//! Helpers shared by the integration tests: an in-process paysim on port 0
//! and a provider client for it.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::time::Duration;

use hashbuy_paysim::{Config, Paysim};
use hashbuy_provider::{ChargeRequest, Provider, ProviderConfig, SecretString};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key the tests use (any `sk_test_` key is accepted by paysim).
pub const KEY: &str = "sk_test_provider_tests";

/// A paysim serving on 127.0.0.1, stopped on drop.
pub struct Sim {
    pub paysim: Paysim,
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sim {
    pub async fn start(config: Config) -> Sim {
        let paysim = Paysim::new(config).expect("paysim config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let server = paysim.clone();
        let task = tokio::spawn(async move {
            let _ = server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        Sim {
            paysim,
            base,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A provider config for this server with the test key.
    pub fn config(&self) -> ProviderConfig {
        config_for(&self.base, KEY)
    }

    /// A provider client for this server with the test key.
    pub fn provider(&self) -> Provider {
        Provider::new(self.config()).expect("provider")
    }

    /// Payment intents paysim created for `command_id`.
    pub fn charges_for(&self, command_id: &str) -> Vec<hashbuy_paysim::AuditEntry> {
        self.paysim
            .audit()
            .for_command(command_id)
            .cloned()
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A provider config for `base` and `key`, with short timeouts.
pub fn config_for(base: &str, key: &str) -> ProviderConfig {
    let mut c = ProviderConfig::new(SecretString::from(key));
    c.base_url = base.to_string();
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// A charge for `command_id` with payment method `pm`.
pub fn charge(command_id: &str, customer: &str, pm: &str) -> ChargeRequest {
    ChargeRequest {
        amount: 4200,
        currency: "usd".into(),
        customer: customer.into(),
        payment_method: pm.into(),
        command_id: command_id.into(),
        tweet_id: "1850000000000000001".into(),
        offer_id: "red-sneakers-42".into(),
        merchant_id: "acme".into(),
        attempt: 1,
        description: Some("hashbuy test".into()),
        metadata: BTreeMap::from([("user_id".to_string(), "12345".to_string())]),
        destination: None,
    }
}

/// Unix seconds, a minute ago: the `created_gte` of reconciliations.
pub fn a_minute_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now - 60
}
