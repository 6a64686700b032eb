//! `hashbuy match`: tweets in, payment commands and dead letters out, on
//! Kafka (see `hashbuy_matcher::run` for the workers, batches and
//! delivery modes). Settings come from flags, `HASHBUY_…` variables and the
//! config file's `[kafka]` and `[match]` tables, in that order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_kafka::health::Health;
use hashbuy_matcher::run;
use hashbuy_matcher::Matcher;

use crate::config::{override_with, DeliveryArg, OnDataLossArg, ValidateArg};
use crate::inspect::{load_accounts, load_catalog};
use crate::kafka_args::{self, KafkaArgs};
use crate::telemetry;

/// Arguments of `hashbuy match`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Catalog table file (TOML or JSON), under the live catalog topic's
    /// changes; optional while the topic is followed [config:
    /// match.catalog].
    #[arg(long, env = "HASHBUY_CATALOG")]
    catalog: Option<PathBuf>,
    /// Accounts table file (TOML or JSON), under the live account-links
    /// topic's changes; optional while the topic is followed [config:
    /// match.accounts].
    #[arg(long, env = "HASHBUY_ACCOUNTS")]
    accounts: Option<PathBuf>,
    /// Do not follow the live tables (the `catalog` and `account-links`
    /// topics): decide by the table files alone, which are then required
    /// [config: match.live_tables = false].
    #[arg(long)]
    no_live_tables: bool,
    /// `exactly-once` commits each batch's outputs and offsets in one Kafka
    /// transaction; `at-least-once` is for brokers without transactions
    /// (tansu): a crash may repeat a batch, which the settler's idempotency
    /// absorbs [default: exactly-once].
    #[arg(long, value_enum, env = "HASHBUY_DELIVERY")]
    delivery: Option<DeliveryArg>,
    /// When records were deleted (retention) before the group read them:
    /// `stop` with an error naming the offsets lost, committing nothing
    /// after them, or `skip` them, logged and counted [default: stop]. A
    /// new group is only told what was deleted before its first read.
    #[arg(long, value_enum, env = "HASHBUY_ON_DATA_LOSS")]
    on_data_loss: Option<OnDataLossArg>,
    /// Stop once the group has consumed what the tweets topic held at start.
    #[arg(long)]
    exit_at_end: bool,
    /// Consumer group [default: hashbuy-matcher].
    #[arg(long, env = "HASHBUY_GROUP")]
    group: Option<String>,
    /// This matcher's name in its group (its transactional id and static
    /// membership): give each running matcher its own, and a restarted one
    /// the same [default: 0].
    #[arg(long, env = "HASHBUY_INSTANCE")]
    instance: Option<String>,
    /// Topic tweets are read from [default: tweets].
    #[arg(long, env = "HASHBUY_TWEETS_TOPIC")]
    tweets_topic: Option<String>,
    /// Topic payment commands are produced to [default: payment-commands].
    #[arg(long, env = "HASHBUY_COMMANDS_TOPIC")]
    commands_topic: Option<String>,
    /// Topic undecodable records are produced to [default: dead-letters].
    #[arg(long, env = "HASHBUY_DEAD_LETTERS_TOPIC")]
    dead_letters_topic: Option<String>,
    /// Topic replies to buyers are produced to, when the catalog has
    /// confirm-mode offers [default: replies].
    #[arg(long, env = "HASHBUY_REPLIES_TOPIC")]
    replies_topic: Option<String>,
    /// The pending purchases' changelog, when the catalog has confirm-mode
    /// offers: compacted, with at least as many partitions as the tweets
    /// topic [default: pending-purchases].
    #[arg(long, env = "HASHBUY_PENDING_TOPIC")]
    pending_topic: Option<String>,
    /// Topic limited offers' commands are produced to, for the
    /// reservation step (`hashbuy stock`), keyed by offer id [default:
    /// stock-requests].
    #[arg(long, env = "HASHBUY_STOCK_REQUESTS_TOPIC")]
    stock_requests_topic: Option<String>,
    /// Most records in one batch (one transaction) [default: 100000];
    /// `--batch-ms` usually ends a batch first.
    #[arg(long)]
    batch_records: Option<usize>,
    /// Longest a batch collects records, in milliseconds [default: 100].
    #[arg(long)]
    batch_ms: Option<u64>,
    /// Threads that read, decode and decide; the partitions are shared
    /// among them [default: the number of CPUs].
    #[arg(long, env = "HASHBUY_WORKERS")]
    workers: Option<usize>,
    /// `signed` decodes completely only the records that hold a hashtag
    /// sign (`#`, `＃`, or their JSON escapes) and decides the rest
    /// `no_hashtag_sign` after checking their UTF-8 and framing, since they
    /// cannot buy; `all` decodes every record completely and dead-letters
    /// every malformed one, as `hashbuy inspect` does [default: signed].
    #[arg(long, value_enum, env = "HASHBUY_VALIDATE")]
    validate: Option<ValidateArg>,
    /// With `--validate signed`, the share (0 to 1) of the records without
    /// a sign decoded completely anyway, by offset, so corruption still
    /// shows: the malformed ones are logged and counted in
    /// hashbuy_matcher_samples_total{result="malformed"}, never
    /// dead-lettered [default: 0.01].
    #[arg(long, env = "HASHBUY_VALIDATE_SAMPLE")]
    validate_sample: Option<f64>,
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, at
    /// this host:port [default: off].
    #[arg(long, env = "HASHBUY_METRICS_ADDR")]
    metrics_addr: Option<String>,
}

/// Runs `hashbuy match`.
pub fn run(args: Args) -> Result<()> {
    let (connection, file) = args.kafka.load()?;
    let mut topics = file.kafka.topics;
    let mut settings = file.matcher;
    override_with(&mut topics.tweets, args.tweets_topic);
    override_with(&mut topics.commands, args.commands_topic);
    override_with(&mut topics.dead_letters, args.dead_letters_topic);
    override_with(&mut topics.replies, args.replies_topic);
    override_with(&mut topics.pending, args.pending_topic);
    override_with(&mut topics.stock_requests, args.stock_requests_topic);
    override_with(&mut settings.group, args.group);
    override_with(&mut settings.instance, args.instance);
    override_with(&mut settings.delivery, args.delivery);
    override_with(&mut settings.on_data_loss, args.on_data_loss);
    override_with(&mut settings.batch_records, args.batch_records);
    override_with(&mut settings.batch_ms, args.batch_ms);
    override_with(&mut settings.workers, args.workers);
    override_with(&mut settings.validate, args.validate);
    override_with(&mut settings.validate_sample, args.validate_sample);
    let validation = settings.validation()?;
    if args.no_live_tables {
        settings.live_tables = false;
    }
    let catalog = match args.catalog.or(settings.catalog.take()) {
        Some(path) => load_catalog(&path)?,
        None if settings.live_tables => Catalog::default(),
        None => bail!(
            "no catalog: give --catalog FILE (or HASHBUY_CATALOG, or match.catalog in the config \
             file), or follow the live catalog topic (leave out --no-live-tables)"
        ),
    };
    let accounts = match args.accounts.or(settings.accounts.take()) {
        Some(path) => load_accounts(&path)?,
        None if settings.live_tables => Accounts::default(),
        None => bail!(
            "no accounts: give --accounts FILE (or HASHBUY_ACCOUNTS, or match.accounts in the \
             config file), or follow the live account-links topic (leave out --no-live-tables)"
        ),
    };
    let config = settings.run_config(connection, topics, args.exit_at_end);
    let matcher = Arc::new(Matcher::new(catalog, accounts).with_validation(validation));
    let health = Health::default();
    if let Some(addr) = args.metrics_addr.or(settings.metrics_addr) {
        telemetry::serve(&addr, health.clone())?;
    }
    let stop = kafka_args::stop_flag()?;
    let started = Instant::now();
    let summary = run::run(matcher, &config, &stop, &health).context("the matcher stopped")?;
    let mut lost = String::new();
    if summary.lost_records > 0 {
        lost += &format!(
            ", {} records lost to retention and skipped",
            summary.lost_records
        );
    }
    if summary.deleted_before_group > 0 {
        lost += &format!(
            ", {} records were deleted before the group first read them",
            summary.deleted_before_group
        );
    }
    let mut skimmed = String::new();
    if summary.skimmed > 0 {
        skimmed = format!(
            ", {} without a hashtag sign ({} malformed in the sample)",
            summary.skimmed, summary.malformed_samples
        );
    }
    eprintln!(
        "matched {} records in {:.1} s: {} commands, {} dead letters{skimmed}, {} batches ({} aborted and redone){lost}",
        summary.records,
        started.elapsed().as_secs_f64(),
        summary.commands,
        summary.dead_letters,
        summary.batches,
        summary.retried_batches,
    );
    Ok(())
}
