//! `hashbuy match`: tweets in, payment commands and dead letters out, on
//! Kafka (see `hashbuy_matcher::run` for how batches are made durable).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hashbuy_matcher::run::{self, Config, Delivery};
use hashbuy_matcher::Matcher;

use crate::inspect::{load_accounts, load_catalog};
use crate::kafka_args::{self, KafkaArgs};

/// Arguments of `hashbuy match`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Catalog table file (TOML or JSON).
    #[arg(long)]
    catalog: PathBuf,
    /// Accounts table file (TOML or JSON).
    #[arg(long)]
    accounts: PathBuf,
    /// `exactly-once` commits each batch's outputs and offsets in one Kafka
    /// transaction; `at-least-once` is for brokers without transactions
    /// (tansu): a crash may repeat a batch, which the settler's idempotency
    /// absorbs.
    #[arg(long, value_enum, default_value = "exactly-once")]
    delivery: DeliveryArg,
    /// Stop once the group has consumed what the tweets topic held at start.
    #[arg(long)]
    exit_at_end: bool,
    /// Consumer group.
    #[arg(long, default_value = "hashbuy-matcher")]
    group: String,
    /// Tells matchers of one group apart (part of the transactional id):
    /// give each running matcher its own, and a restarted one the same.
    #[arg(long, default_value = "0")]
    instance: String,
    /// Topic tweets are read from.
    #[arg(long, default_value = "tweets")]
    tweets_topic: String,
    /// Topic payment commands are produced to.
    #[arg(long, default_value = "payment-commands")]
    commands_topic: String,
    /// Topic undecodable records are produced to.
    #[arg(long, default_value = "dead-letters")]
    dead_letters_topic: String,
    /// Most records in one batch (one transaction).
    #[arg(long, default_value_t = 10_000)]
    batch_records: usize,
    /// Longest a batch collects records, in milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_ms: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DeliveryArg {
    ExactlyOnce,
    AtLeastOnce,
}

/// Runs `hashbuy match`.
pub fn run(args: Args) -> Result<()> {
    let matcher = Matcher::new(load_catalog(&args.catalog)?, load_accounts(&args.accounts)?);
    let config = Config {
        connection: args.kafka.connection(),
        group: args.group,
        tweets_topic: args.tweets_topic,
        commands_topic: args.commands_topic,
        dead_letters_topic: args.dead_letters_topic,
        delivery: match args.delivery {
            DeliveryArg::ExactlyOnce => Delivery::ExactlyOnce,
            DeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
        },
        exit_at_end: args.exit_at_end,
        batch_records: args.batch_records.max(1),
        batch_time: Duration::from_millis(args.batch_ms.max(1)),
        instance: args.instance,
    };
    let stop = kafka_args::stop_flag()?;
    let started = Instant::now();
    let summary = run::run(&matcher, &config, &stop).context("the matcher stopped")?;
    eprintln!(
        "matched {} records in {:.1} s: {} commands, {} dead letters, {} batches ({} aborted and redone)",
        summary.records,
        started.elapsed().as_secs_f64(),
        summary.commands,
        summary.dead_letters,
        summary.batches,
        summary.retried_batches,
    );
    Ok(())
}
