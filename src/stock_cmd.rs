//! `hashbuy stock`: the reservation step of limited offers, on Kafka (see
//! `hashbuy_stock`). Settings come from flags, `HASHBUY_…` variables and
//! the config file's `[kafka]` and `[stock]` tables, in that order.

use std::time::Instant;

use anyhow::{Context, Result};
use hashbuy_kafka::health::Health;
use hashbuy_stock::run;

use crate::config::{override_with, DeliveryArg};
use crate::kafka_args::{self, KafkaArgs};
use crate::telemetry;

/// Arguments of `hashbuy stock`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// `exactly-once` commits each batch's grants, rejections, changelog
    /// and offsets in one Kafka transaction; `at-least-once` is for
    /// brokers without transactions (tansu), where a member paused past
    /// its session may sell past the stock [default: exactly-once].
    #[arg(long, value_enum, env = "HASHBUY_STOCK_DELIVERY")]
    delivery: Option<DeliveryArg>,
    /// Stop once the group has consumed what the stock-requests topic held
    /// at start.
    #[arg(long)]
    exit_at_end: bool,
    /// Consumer group [default: hashbuy-stock].
    #[arg(long, env = "HASHBUY_STOCK_GROUP")]
    group: Option<String>,
    /// This member's name in its group (its transactional id and static
    /// membership): give each running step its own, and a restarted one
    /// the same [default: 0].
    #[arg(long, env = "HASHBUY_STOCK_INSTANCE")]
    instance: Option<String>,
    /// Topic limited offers' commands and the settler's word on their
    /// units are read from [default: stock-requests].
    #[arg(long, env = "HASHBUY_STOCK_REQUESTS_TOPIC")]
    stock_requests_topic: Option<String>,
    /// The step's changelog: compacted, with at least as many partitions
    /// as the stock-requests topic [default: stock-holds].
    #[arg(long, env = "HASHBUY_STOCK_TOPIC")]
    stock_topic: Option<String>,
    /// Topic granted and sold-out commands are produced to, for the
    /// settler [default: payment-commands].
    #[arg(long, env = "HASHBUY_COMMANDS_TOPIC")]
    commands_topic: Option<String>,
    /// Topic records that are no stock request go to [default:
    /// dead-letters].
    #[arg(long, env = "HASHBUY_DEAD_LETTERS_TOPIC")]
    dead_letters_topic: Option<String>,
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, at
    /// this host:port [default: off].
    #[arg(long, env = "HASHBUY_STOCK_METRICS_ADDR")]
    metrics_addr: Option<String>,
}

/// Runs `hashbuy stock`.
pub fn run(args: Args) -> Result<()> {
    let (connection, file) = args.kafka.load()?;
    let mut topics = file.kafka.topics;
    let mut settings = file.stock;
    override_with(&mut topics.stock_requests, args.stock_requests_topic);
    override_with(&mut topics.stock, args.stock_topic);
    override_with(&mut topics.commands, args.commands_topic);
    override_with(&mut topics.dead_letters, args.dead_letters_topic);
    override_with(&mut settings.group, args.group);
    override_with(&mut settings.instance, args.instance);
    override_with(&mut settings.delivery, args.delivery);
    let config = settings.run_config(connection, topics, args.exit_at_end);
    let health = Health::default();
    if let Some(addr) = args.metrics_addr.or(settings.metrics_addr) {
        telemetry::serve(&addr, health.clone())?;
    }
    let stop = kafka_args::stop_flag()?;
    let started = Instant::now();
    let summary = run::run(&config, &stop, &health).context("the reservation step stopped")?;
    eprintln!(
        "reserved in {:.1} s: {} requests, {} commands sent on with a unit, {} sold out, {} units \
         sold, {} back, {} dead letters, {} batches ({} aborted and redone)",
        started.elapsed().as_secs_f64(),
        summary.requests,
        summary.granted,
        summary.sold_out,
        summary.sold,
        summary.released,
        summary.dead_letters,
        summary.batches,
        summary.retried_batches,
    );
    Ok(())
}
