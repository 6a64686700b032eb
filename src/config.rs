//! hashbuy's config file (`--config FILE` or `HASHBUY_CONFIG`): TOML with a
//! `[kafka]` table every Kafka command reads, a `[match]` table for
//! `hashbuy match` and a `[settle]` table for `hashbuy settle`. Each table
//! is one struct whose `Default` is the only place the defaults are given.
//! Precedence, lowest first: those defaults, the file, `HASHBUY_…`
//! environment variables, flags. Unknown keys and values are errors that
//! name the file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::config::{KafkaConfig, Topics};
use hashbuy_matcher::run::{self as matcher, default_workers};
use hashbuy_matcher::{Validation, DEFAULT_SAMPLE_RATE};
use hashbuy_provider::{REQUEST_TIMEOUT, STRIPE_API};
use hashbuy_settler::horizon::{DEFAULT_MAX_COMMAND_AGE, MIN_MAX_COMMAND_AGE};
use hashbuy_settler::run::{self as settler, STUCK_AFTER};
use hashbuy_settler::steps::Policy;
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
    /// `hashbuy stock`'s settings.
    #[serde(default)]
    pub stock: StockConfig,
}

/// `hashbuy stock`'s settings: the `[stock]` table, and the one place its
/// defaults are given. Each key has the flag of the same name (with `-`
/// for `_`) that wins over it; `hashbuy demo` starts from these defaults
/// too.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StockConfig {
    /// Consumer group (default `hashbuy-stock`).
    pub group: String,
    /// This member's name within its group (default `0`).
    pub instance: String,
    /// `exactly-once` (default) or `at-least-once`. Stock is exact with
    /// transactions; at least once, a member paused past its session may
    /// sell past it (see `hashbuy_stock`).
    pub delivery: DeliveryArg,
    /// Address for `/metrics`, `/healthz` and `/readyz` (off by default).
    pub metrics_addr: Option<String>,
}

impl Default for StockConfig {
    fn default() -> Self {
        StockConfig {
            group: "hashbuy-stock".to_owned(),
            instance: "0".to_owned(),
            delivery: DeliveryArg::ExactlyOnce,
            metrics_addr: None,
        }
    }
}

impl StockConfig {
    /// The step's run configuration.
    pub fn run_config(
        &self,
        connection: Connection,
        topics: Topics,
        exit_at_end: bool,
    ) -> hashbuy_stock::run::Config {
        hashbuy_stock::run::Config {
            connection,
            group: self.group.clone(),
            instance: self.instance.clone(),
            topics,
            delivery: self.delivery.into(),
            exit_at_end,
        }
    }
}

/// `hashbuy settle`'s settings: the `[settle]` table, and the one place
/// its defaults are given. Each key has the flag of the same name (with `-`
/// for `_`) that wins over it; `hashbuy demo` and `hashbuy bench-settle`
/// start from these defaults too. The provider key is never read from
/// here: only from the environment or a file holding it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettleConfig {
    /// The ledger's directory, relative to the config file (no default:
    /// the ledger is the settler's memory of every charge).
    pub ledger: Option<PathBuf>,
    /// Merchants table file (TOML or JSON), relative to the config file:
    /// with one, each charge is a Stripe Connect destination charge to its
    /// merchant's connected account (none: the platform's own account).
    pub merchants: Option<PathBuf>,
    /// Charge through Stripe Connect with the live merchants table, with
    /// or without a file (default false; a file implies it).
    pub connect: bool,
    /// Follow the live `catalog` topic, and forget the `max_per_user`
    /// counts of an offer once it ended more than `max_command_age` and a
    /// day ago (default false: kept for good).
    pub forget_ended_offers: bool,
    /// Follow the live `merchants` topic over the file (default true).
    pub live_tables: bool,
    /// The provider's base URL (default `https://api.stripe.com`).
    pub provider_url: String,
    /// A file holding the provider's secret key, relative to the config
    /// file (used when neither `HASHBUY_PROVIDER_KEY` nor `STRIPE_API_KEY`
    /// is set).
    pub provider_key_file: Option<PathBuf>,
    /// Consumer group (default `hashbuy-settler`).
    pub group: String,
    /// This settler's name within its group (default `0`).
    pub instance: String,
    /// Most commands in flight per partition (default 256; at least 1).
    pub max_in_flight: usize,
    /// Provider requests per second at most (default: 25 for `sk_test_`
    /// and 90 for `sk_live_` keys on api.stripe.com, unlimited elsewhere).
    pub rate_limit: Option<f64>,
    /// Provider calls for one command before giving up, once the provider
    /// is known to hold no charge (default 10; at least 1).
    pub max_attempts: u32,
    /// Attempts older than this many seconds are reconciled, not retried
    /// (the provider's key lifetime; default 86400, Stripe's 24 h).
    pub reconcile_after_s: u64,
    /// How long one provider request may take, in seconds (default 30; at
    /// least 1); a call that got no answer is waited out for twice as long
    /// before a reconciliation.
    pub request_timeout_s: u64,
    /// Seconds after which an undecided command is reported stuck on
    /// `/healthz` (default 900).
    pub stuck_after_s: u64,
    /// `stop` (default) or `skip`: commands deleted before they were read.
    pub on_data_loss: OnDataLossArg,
    /// Address for `/metrics`, `/healthz` and `/readyz` (off by default).
    pub metrics_addr: Option<String>,
    /// A command tweeted longer ago than this when the settler first sees
    /// it is rejected as stale, and decided entries older than it (and two
    /// days more) are pruned from the ledger, as "7days" or "36h"
    /// (default 7 days; at least a minute).
    #[serde(deserialize_with = "duration_in_words")]
    pub max_command_age: Duration,
    /// How the ledger writes entries: `protobuf` (default) or `json` (while
    /// settlers of the group still run a hashbuy from before protobuf
    /// entries, which cannot read them).
    pub ledger_encoding: LedgerEncodingArg,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            ledger: None,
            merchants: None,
            connect: false,
            forget_ended_offers: false,
            live_tables: true,
            provider_url: STRIPE_API.to_owned(),
            provider_key_file: None,
            group: "hashbuy-settler".to_owned(),
            instance: "0".to_owned(),
            max_in_flight: 256,
            rate_limit: None,
            max_attempts: 10,
            reconcile_after_s: 24 * 60 * 60,
            request_timeout_s: REQUEST_TIMEOUT.as_secs(),
            stuck_after_s: STUCK_AFTER.as_secs(),
            on_data_loss: OnDataLossArg::Stop,
            metrics_addr: None,
            max_command_age: DEFAULT_MAX_COMMAND_AGE,
            ledger_encoding: LedgerEncodingArg::Protobuf,
        }
    }
}

/// The horizon of the settlers `hashbuy demo` and the benches run: their
/// purchases are dated from June 2026 (the samples' times, and `hashbuy
/// gen`'s default start), which a week's horizon would find stale; a
/// century reaches back to them.
pub const RECORDINGS_MAX_COMMAND_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `max_command_age` in the config file: a duration in words
/// (humantime's, as "7days" or "36h"), as the flag takes it.
fn duration_in_words<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write it as \"7days\" or \"36h\""
        ))
    })
}
impl SettleConfig {
    /// How long one provider request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s.max(1))
    }

    /// The settler's run config: these settings, reading and writing
    /// `topics` on `connection`, its ledger in `ledger_dir`.
    pub fn run_config(
        &self,
        connection: Connection,
        topics: Topics,
        ledger_dir: PathBuf,
        exit_at_end: bool,
    ) -> settler::Config {
        settler::Config {
            connection,
            group: self.group.clone(),
            instance: self.instance.clone(),
            topics,
            ledger_dir,
            merchants: None,
            live_tables: self.live_tables,
            forget_ended_offers: self.forget_ended_offers,
            max_in_flight: self.max_in_flight.max(1),
            exit_at_end,
            on_data_loss: self.on_data_loss.into(),
            stuck_after: Duration::from_secs(self.stuck_after_s),
            max_command_age: self.max_command_age.max(MIN_MAX_COMMAND_AGE),
            ledger_encoding: self.ledger_encoding.into(),
            policy: Policy {
                max_attempts: self.max_attempts.max(1),
                key_lifetime: Duration::from_secs(self.reconcile_after_s),
                // A call the settler stopped waiting for may run at the
                // provider for about as long again.
                unanswered_wait: self.request_timeout() * 2,
            },
        }
    }
}

/// `hashbuy match`'s settings: the `[match]` table, and the one place its
/// defaults are given. Each key has the flag of the same name (with `-`
/// for `_`) that wins over it; `hashbuy demo` and `hashbuy bench` start
/// from these defaults too.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Catalog table file (TOML or JSON), relative to the config file (no
    /// default).
    pub catalog: Option<PathBuf>,
    /// Accounts table file (TOML or JSON), relative to the config file (no
    /// default).
    pub accounts: Option<PathBuf>,
    /// Consumer group (default `hashbuy-matcher`).
    pub group: String,
    /// This matcher's name within its group (default `0`).
    pub instance: String,
    /// `exactly-once` (default) or `at-least-once`.
    pub delivery: DeliveryArg,
    /// `stop` (default) or `skip`: records deleted before they were read.
    pub on_data_loss: OnDataLossArg,
    /// Most records in one batch (default 100000; at least 1). The batch
    /// time ends a batch first below a million records a second: a
    /// commit costs the same whatever the batch holds (10 to 60 ms on the
    /// embedded broker under load), and at 10,000 the matcher spent most
    /// of its time committing.
    pub batch_records: usize,
    /// Longest a batch collects records, in milliseconds (default 100; at
    /// least 1).
    pub batch_ms: u64,
    /// Threads that read, decode and decide (default: the number of CPUs;
    /// at least 1).
    pub workers: usize,
    /// `signed` (default): records without a hashtag sign are decided from
    /// a byte scan; `all`: every record is decoded completely.
    pub validate: ValidateArg,
    /// The share (0 to 1) of the records without a sign that are decoded
    /// completely anyway, to count malformed ones (default 0.01).
    pub validate_sample: f64,
    /// Address for `/metrics`, `/healthz` and `/readyz` (off by default).
    pub metrics_addr: Option<String>,
    /// Follow the live tables, the `catalog` and `account-links` topics,
    /// over the table files (default true; `--no-live-tables` turns it
    /// off). With it the files are optional.
    pub live_tables: bool,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            catalog: None,
            accounts: None,
            group: "hashbuy-matcher".to_owned(),
            instance: "0".to_owned(),
            delivery: DeliveryArg::ExactlyOnce,
            on_data_loss: OnDataLossArg::Stop,
            batch_records: 100_000,
            batch_ms: 100,
            workers: default_workers(),
            validate: ValidateArg::Signed,
            validate_sample: DEFAULT_SAMPLE_RATE,
            metrics_addr: None,
            live_tables: true,
        }
    }
}

impl MatchConfig {
    /// How the matcher validates records; a sample share outside 0 to 1
    /// is an error naming the setting.
    pub fn validation(&self) -> Result<Validation> {
        if !(0.0..=1.0).contains(&self.validate_sample) {
            anyhow::bail!(
                "validate_sample (--validate-sample): {} is not between 0 and 1",
                self.validate_sample
            );
        }
        Ok(match self.validate {
            ValidateArg::Signed => Validation::signed(self.validate_sample),
            ValidateArg::All => Validation::All,
        })
    }

    /// The matcher's run config: these settings, reading and writing
    /// `topics` on `connection`.
    pub fn run_config(
        &self,
        connection: Connection,
        topics: Topics,
        exit_at_end: bool,
    ) -> matcher::Config {
        matcher::Config {
            connection,
            group: self.group.clone(),
            topics,
            delivery: self.delivery.into(),
            exit_at_end,
            batch_records: self.batch_records.max(1),
            batch_time: Duration::from_millis(self.batch_ms.max(1)),
            instance: self.instance.clone(),
            on_data_loss: self.on_data_loss.into(),
            workers: self.workers.max(1),
            live_tables: self.live_tables,
        }
    }
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
            &mut file.settle.merchants,
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

/// `--on-data-loss` (and `on_data_loss` in the config file): what a
/// service does about records deleted (retention) before its group read
/// them.
#[derive(clap::ValueEnum, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnDataLossArg {
    /// Stop with an error naming the offsets lost.
    Stop,
    /// Log and count the loss, and go on from the oldest record left.
    Skip,
}

impl From<OnDataLossArg> for hashbuy_kafka::loss::OnDataLoss {
    fn from(arg: OnDataLossArg) -> Self {
        match arg {
            OnDataLossArg::Stop => hashbuy_kafka::loss::OnDataLoss::Stop,
            OnDataLossArg::Skip => hashbuy_kafka::loss::OnDataLoss::Skip,
        }
    }
}

/// `hashbuy settle --ledger-encoding` (and `ledger_encoding` in the config
/// file): how the ledger writes entries.
#[derive(clap::ValueEnum, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerEncodingArg {
    /// Protobuf (`hashbuy.v1.LedgerEntry`), about a third of the JSON.
    Protobuf,
    /// JSON, which settlers from before protobuf entries read.
    Json,
}

impl From<LedgerEncodingArg> for hashbuy_settler::ledger::Encoding {
    fn from(arg: LedgerEncodingArg) -> Self {
        match arg {
            LedgerEncodingArg::Protobuf => hashbuy_settler::ledger::Encoding::Protobuf,
            LedgerEncodingArg::Json => hashbuy_settler::ledger::Encoding::Json,
        }
    }
}

/// `hashbuy match --validate` (and `validate` in the config file).
#[derive(
    clap::ValueEnum, serde::Deserialize, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq,
)]
#[serde(rename_all = "kebab-case")]
pub enum ValidateArg {
    /// Decode completely the records that hold a hashtag sign; decide the
    /// rest `no_hashtag_sign` after checking their UTF-8 and framing.
    Signed,
    /// Decode completely, and dead-letter when malformed, every record.
    All,
}

/// `hashbuy match --delivery` (and `delivery` in the config file).
#[derive(clap::ValueEnum, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryArg {
    /// Each batch's outputs and offsets in one Kafka transaction.
    ExactlyOnce,
    /// Produce, flush, then commit offsets (brokers without transactions).
    AtLeastOnce,
}

impl From<DeliveryArg> for hashbuy_matcher::run::Delivery {
    fn from(arg: DeliveryArg) -> Self {
        match arg {
            DeliveryArg::ExactlyOnce => hashbuy_matcher::run::Delivery::ExactlyOnce,
            DeliveryArg::AtLeastOnce => hashbuy_matcher::run::Delivery::AtLeastOnce,
        }
    }
}

/// Sets `setting` to `flag` when the flag (or its environment variable)
/// was given: flags win over the file and the defaults.
pub fn override_with<T>(setting: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *setting = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> File {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn a_table_left_out_or_half_written_keeps_the_defaults() {
        let file = parse("[kafka.topics]\ntweets = \"firehose\"\n\n[match]\nbatch_ms = 5\n");
        assert_eq!(file.kafka.topics.tweets, "firehose");
        assert_eq!(
            file.kafka.topics,
            Topics {
                tweets: "firehose".into(),
                ..Topics::default()
            }
        );
        assert_eq!(file.matcher.batch_ms, 5);
        assert_eq!(file.matcher.group, MatchConfig::default().group);
        assert_eq!(file.settle.max_in_flight, 256);
        assert_eq!(file.settle.provider_url, STRIPE_API);
    }

    #[test]
    fn the_horizon_and_the_ledger_encoding_are_read_in_words() {
        let file = parse("[settle]\nmax_command_age = \"36h\"\nledger_encoding = \"json\"\n");
        assert_eq!(file.settle.max_command_age, Duration::from_secs(36 * 3600));
        assert_eq!(file.settle.ledger_encoding, LedgerEncodingArg::Json);
        let bad = toml::from_str::<File>("[settle]\nmax_command_age = \"a week\"\n")
            .expect_err("not a duration");
        assert!(bad.to_string().contains("write it as"), "{bad}");
        let file = parse("");
        assert_eq!(file.settle.max_command_age, DEFAULT_MAX_COMMAND_AGE);
    }

    #[test]
    fn the_validation_sample_is_a_share() {
        let file = parse("[match]\nvalidate = \"all\"\n");
        assert_eq!(file.matcher.validation().ok(), Some(Validation::All));
        let file = parse("[match]\nvalidate_sample = 0.5\n");
        assert_eq!(
            file.matcher.validation().ok(),
            Some(Validation::Signed { sample_every: 2 })
        );
        let file = parse("[match]\nvalidate_sample = 1.5\n");
        let error = file.matcher.validation().expect_err("refused").to_string();
        assert!(
            error.contains("validate_sample") && error.contains("1.5"),
            "{error}"
        );
    }

    #[test]
    fn the_settler_waits_out_twice_its_request_timeout() {
        let settings = SettleConfig {
            request_timeout_s: 7,
            ..SettleConfig::default()
        };
        let config = settings.run_config(
            Connection {
                brokers: String::new(),
                properties: Vec::new(),
            },
            Topics::default(),
            PathBuf::from("ledger"),
            false,
        );
        assert_eq!(config.policy.unanswered_wait, Duration::from_secs(14));
        assert_eq!(config.policy.key_lifetime, Duration::from_secs(86_400));
    }
}
