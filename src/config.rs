//! hashbuy's config file (`--config FILE` or `HASHBUY_CONFIG`): TOML with a
//! `[kafka]` table every Kafka command reads, a `[match]` table for
//! `hashbuy match` and a `[settle]` table for `hashbuy settle`. Precedence, lowest first: built-in defaults, the file,
//! `HASHBUY_…` environment variables, flags. Unknown keys are errors that
//! name the file, line and key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hashbuy_kafka::config::KafkaConfig;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Where Kafka is, security properties, topic names.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// `hashbuy match`'s settings.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// `hashbuy settle`'s settings.
    #[serde(default)]
    pub settle: SettleConfig,
}

/// The `[settle]` table; each key has the flag of the same name (with `-`
/// for `_`) that wins over it. The provider key is never read from here:
/// only a file holding it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleConfig {
    /// The ledger's directory, relative to the config file.
    pub ledger: Option<PathBuf>,
    /// The provider's base URL (default `https://api.stripe.com`).
    pub provider_url: Option<String>,
    /// A file holding the provider's secret key, relative to the config
    /// file (used when neither `HASHBUY_PROVIDER_KEY` nor `STRIPE_API_KEY`
    /// is set).
    pub provider_key_file: Option<PathBuf>,
    /// Consumer group (default `hashbuy-settler`).
    pub group: Option<String>,
    /// This settler's name within its group (default `0`).
    pub instance: Option<String>,
    /// Most commands in flight per partition (default 256).
    pub max_in_flight: Option<usize>,
    /// Provider requests per second at most (default: 25 for `sk_test_`
    /// and 90 for `sk_live_` keys on api.stripe.com, unlimited elsewhere).
    pub rate_limit: Option<f64>,
    /// Provider calls for one command before giving up, once the provider
    /// is known to hold no charge (default 10).
    pub max_attempts: Option<u32>,
    /// Attempts older than this many seconds are reconciled, not retried
    /// (the provider's key lifetime; default 86400).
    pub reconcile_after_s: Option<u64>,
    /// How long one provider request may take, in seconds (default 30);
    /// a call that got no answer is waited out for twice as long before a
    /// reconciliation.
    pub request_timeout_s: Option<u64>,
    /// Seconds after which an undecided command is reported stuck on
    /// `/healthz` (default 900).
    pub stuck_after_s: Option<u64>,
    /// `stop` (default) or `skip`: commands deleted before they were read.
    pub on_data_loss: Option<String>,
    /// Address for `/metrics`, `/healthz` and `/readyz` (off by default).
    pub metrics_addr: Option<String>,
}

/// The `[match]` table; each key has the flag of the same name (with `-`
/// for `_`) that wins over it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Catalog table file (TOML or JSON), relative to the config file.
    pub catalog: Option<PathBuf>,
    /// Accounts table file (TOML or JSON), relative to the config file.
    pub accounts: Option<PathBuf>,
    /// Consumer group (default `hashbuy-matcher`).
    pub group: Option<String>,
    /// This matcher's name within its group (default `0`).
    pub instance: Option<String>,
    /// `exactly-once` (default) or `at-least-once`.
    pub delivery: Option<String>,
    /// `stop` (default) or `skip`.
    pub on_data_loss: Option<String>,
    /// Most records in one batch (default 10000).
    pub batch_records: Option<usize>,
    /// Longest a batch collects records, in milliseconds (default 100).
    pub batch_ms: Option<u64>,
    /// Threads that read, decode and decide (default: the number of CPUs).
    pub workers: Option<usize>,
    /// Address for `/metrics`, `/healthz` and `/readyz` (off by default).
    pub metrics_addr: Option<String>,
}

impl File {
    /// Reads `path`; no path is an empty file.
    pub fn load(path: Option<&Path>) -> Result<File> {
        let Some(path) = path else {
            return Ok(File::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut file: File = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace("TOML parse error ", "")
            )
        })?;
        // Table paths are relative to the file, as a user writing the file
        // expects wherever hashbuy is started from.
        let base = path.parent().unwrap_or(Path::new(""));
        for table in [
            &mut file.matcher.catalog,
            &mut file.matcher.accounts,
            &mut file.settle.ledger,
            &mut file.settle.provider_key_file,
        ]
        .into_iter()
        .flatten()
        {
            *table = base.join(&*table);
        }
        Ok(file)
    }
}

/// Parses a `[match]` choice the way its flag does, naming the key on
/// error.
pub fn choice<T: clap::ValueEnum>(key: &str, value: Option<&str>) -> Result<Option<T>> {
    value
        .map(|v| {
            T::from_str(v, false).map_err(|_| {
                let allowed: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value())
                    .map(|v| v.get_name().to_owned())
                    .collect();
                anyhow::anyhow!(
                    "config file: {key}: {v:?} is not one of {}",
                    allowed.join(", ")
                )
            })
        })
        .transpose()
}
