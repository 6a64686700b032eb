//! `hashbuy demo`: the whole pipeline in one process on the bundled sample
//! stream, with nothing to install or start first.
//!
//! It starts the embedded broker, produces the sample's records keyed by
//! user (as `hashbuy replay`), matches them exactly once (as `hashbuy
//! match`), serves paysim in place of Stripe (as `hashbuy paysim`),
//! settles the commands with a durable ledger (as `hashbuy settle`), and
//! then prints every reply to a buyer, every ack and every dead letter,
//! with what paysim charged. The sample includes a confirm-mode offer
//! (`samples/confirm-catalog.toml`, `samples/confirm.jsonl`): a purchase
//! confirmed, one cancelled by deleting its tweet, and one left to expire,
//! each answered on the replies topic, where the settler tells every
//! outcome too. The
//! matcher, paysim and the settler run the same code as their commands,
//! each to the end of its input, one after the other, on the embedded
//! broker (librdkafka's mock cluster, as `hashbuy broker`). Logs show
//! warnings only, unless `HASHBUY_LOG` says more. Ctrl-C stops it with an
//! error, never with a partial report.
//!
//! It checks what it shows: every charge at paysim belongs to a settled
//! command, no command is charged twice, and every command settled in this
//! run was charged once (one settled by an earlier run on the same ledger
//! was charged by that run's paysim).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_core::samples;
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{flush_promptly, send_waiting, Deliveries};
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_matcher::run as matching;
use hashbuy_matcher::Matcher;
use hashbuy_paysim::Audit;
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::reply::Kind;
use hashbuy_proto::v1::{DeadLetter, PaymentAck, Reply};
use hashbuy_provider::{Backoff, Provider, ProviderConfig, SecretString};
use hashbuy_settler::payments::Payments;
use hashbuy_settler::run as settling;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message as _;

use crate::config::{MatchConfig, SettleConfig};
use crate::kafka_args;
use crate::paysim::{self, InProcess};
use crate::replay::key_and_time;

/// Arguments of `hashbuy demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Keep the settler's ledger in this directory, to look into it
    /// afterwards with `hashbuy ledger ls --ledger DIR` [default: a
    /// temporary directory, removed at the end]. Run the demo again with
    /// the same directory and every command is known: acked again,
    /// charged nothing.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// paysim's median answer time, in milliseconds (jittered; at most
    /// 1000, so answers stay well within the settler's request timeout).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    latency_ms: u64,
}

/// Partitions of each topic: the sample is a few records.
const PARTITIONS: i32 = 4;

/// The key paysim is given: any `sk_test_` key is accepted.
const KEY: &str = "sk_test_hashbuy_demo";

/// How long the demo waits for the acks it expects to be readable.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `hashbuy demo`.
pub fn run(args: Args) -> Result<()> {
    let stop = kafka_args::stop_flag()?;
    let mut out = std::io::stdout();
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics.all(), PARTITIONS)
        .context("cannot start the embedded broker")?;
    let connection = Connection {
        brokers: broker.bootstrap_servers(),
        properties: Vec::new(),
    };
    writeln!(
        out,
        "1. embedded broker at {}: topics {} ({PARTITIONS} partitions each)",
        connection.brokers,
        topics.all().join(", ")
    )?;

    let records = produce_sample(&connection, &topics.tweets, &stop)?;
    interrupted(&stop)?;
    writeln!(
        out,
        "2. produced the bundled sample: {records} records to `{}`, keyed by user id \
         (the last {} buy a confirm-mode offer)",
        topics.tweets,
        lines(samples::CONFIRM_TWEETS).count()
    )?;

    let (catalog, accounts) = samples::confirm_tables();
    let matched = matching::run(
        Arc::new(Matcher::new(catalog, accounts)),
        &MatchConfig {
            group: "hashbuy-demo-matcher".into(),
            workers: 1,
            ..MatchConfig::default()
        }
        .run_config(connection.clone(), topics.clone(), true),
        &stop,
        &Health::default(),
    )
    .context("the matcher stopped")?;
    interrupted(&stop)?;
    writeln!(
        out,
        "3. matched them exactly once: {} payment commands, {} replies, {} dead letters",
        matched.commands, matched.replies, matched.dead_letters
    )?;

    // Held to the end: the runtime serves paysim.
    let InProcess {
        runtime: _runtime,
        paysim,
        url,
    } = paysim::in_process(args.latency_ms, "paysim")?;
    writeln!(
        out,
        "4. paysim (simulated Stripe) at {url}, answering in about {} ms",
        args.latency_ms
    )?;

    // Without --ledger, a directory removed when `temporary` is dropped, at
    // the end.
    let temporary;
    let ledger_dir = match &args.ledger {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::tempdir().context("no temporary directory for the ledger")?;
            temporary.path().join("ledger")
        }
    };
    let settings = SettleConfig {
        group: "hashbuy-demo-settler".into(),
        ..SettleConfig::default()
    };
    let mut provider_config = ProviderConfig::new(SecretString::from(KEY.to_owned()));
    provider_config.base_url = url;
    provider_config.request_timeout = settings.request_timeout();
    let provider = Provider::new(provider_config).context("bad provider settings")?;
    let started = Instant::now();
    let settled = settling::run(
        &settings.run_config(connection.clone(), topics.clone(), ledger_dir.clone(), true),
        Payments::new(provider, Backoff::default()),
        &stop,
        &Health::default(),
    )
    .context("the settler stopped")?;
    interrupted(&stop)?;
    writeln!(
        out,
        "5. settled them in {:.1} s with a durable ledger: {} settled, {} declined, {} rejected, {} failed, {} acks",
        started.elapsed().as_secs_f64(),
        settled.settled,
        settled.declined,
        settled.rejected,
        settled.failed,
        settled.acks,
    )?;

    let expected = matched.replies + settled.replies;
    let mut replies: Vec<Reply> = read_topic(&connection, &topics.replies, expected, &stop)?;
    // By buyer and tweet, each purchase's story in order.
    replies.sort_by(|a, b| {
        (&a.user_id, &a.in_reply_to_tweet_id, a.kind).cmp(&(
            &b.user_id,
            &b.in_reply_to_tweet_id,
            b.kind,
        ))
    });
    writeln!(
        out,
        "\n{} ({} records: the matcher's and the settler's, by buyer):",
        topics.replies,
        replies.len()
    )?;
    for reply in &replies {
        writeln!(
            out,
            "  {:<14} to user {} on tweet {}: {}",
            Kind::try_from(reply.kind).map_or("?", |k| k.as_str_name()),
            reply.user_id,
            reply.in_reply_to_tweet_id,
            reply.text
        )?;
    }

    let acks: Vec<PaymentAck> = read_topic(&connection, &topics.acks, settled.acks, &stop)?;
    let audit = paysim.audit();
    writeln!(
        out,
        "\n{} ({} records, amounts in minor units):",
        topics.acks,
        acks.len()
    )?;
    let charges = charges_by_command(&audit);
    for ack in &acks {
        writeln!(out, "  {}", describe_ack(ack, &charges))?;
    }
    let letters = matched.dead_letters + settled.dead_letters;
    let dead: Vec<DeadLetter> = read_topic(&connection, &topics.dead_letters, letters, &stop)?;
    writeln!(out, "\n{} ({} records):", topics.dead_letters, dead.len())?;
    for letter in &dead {
        writeln!(
            out,
            "  {} partition {} offset {}: {}",
            letter.topic, letter.partition, letter.offset, letter.reason
        )?;
    }

    let charged: usize = charges.values().sum();
    writeln!(
        out,
        "\npaysim holds {} payment intents, {charged} of them charged.",
        audit.payment_intents.len()
    )?;
    check_charges(&acks, &charges, settled.settled)?;
    if settled.settled > 0 {
        writeln!(
            out,
            "Each command settled in this run was charged once, and nothing else was charged."
        )?;
    }
    let decided = settled.settled + settled.declined + settled.rejected + settled.failed;
    let known = settled.acks.saturating_sub(decided);
    if known > 0 {
        writeln!(
            out,
            "{known} commands were already in the ledger, from an earlier run: acked again, charged nothing."
        )?;
    }
    if args.ledger.is_some() {
        writeln!(
            out,
            "The ledger is in {0}: `hashbuy ledger ls --ledger {0}` lists it.",
            ledger_dir.display()
        )?;
    } else {
        writeln!(
            out,
            "The ledger was temporary: keep one with --ledger DIR, then `hashbuy ledger ls --ledger DIR`."
        )?;
    }
    writeln!(
        out,
        "The README's \"What is here\" runs the same steps as separate commands on a broker you keep."
    )?;
    Ok(())
}

/// An error once Ctrl-C (or SIGTERM) was received: a stage stopped early,
/// and its figures must not be reported as the demo's.
fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Produces the bundled sample to `topic`, keyed as `hashbuy replay`
/// keys records; the records produced.
fn produce_sample(connection: &Connection, topic: &str, stop: &AtomicBool) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = connection
        .config()
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    let mut records = 0;
    for line in lines(samples::TWEETS).chain(lines(samples::CONFIRM_TWEETS)) {
        let (key, _) = key_and_time(line.as_bytes());
        send_waiting(
            &producer,
            topic,
            key.as_deref().map(str::as_bytes),
            line.as_bytes(),
            || stop.load(Ordering::Relaxed),
        )
        .context("cannot produce the sample")?;
        records += 1;
    }
    flush_promptly(&producer, Duration::from_secs(30)).context("cannot deliver the sample")?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} sample records were not delivered: {first}");
    }
    Ok(records)
}

/// The records of a sample: its lines that are not blank.
fn lines(sample: &str) -> impl Iterator<Item = &str> {
    sample.lines().filter(|line| !line.trim().is_empty())
}

/// Reads `expected` messages of `topic` (committed ones only), waiting at
/// most [`READ_TIMEOUT`] for them.
fn read_topic<M: prost::Message + Default>(
    connection: &Connection,
    topic: &str,
    expected: u64,
    stop: &AtomicBool,
) -> Result<Vec<M>> {
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: false,
        read_uncommitted: false,
    };
    let mut reader = TopicReader::open(connection, topic, options)
        .with_context(|| format!("cannot read {topic}"))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut messages = Vec::new();
    while (messages.len() as u64) < expected {
        interrupted(stop)?;
        if Instant::now() > deadline {
            bail!(
                "read {} of the {expected} records of {topic} within {} s",
                messages.len(),
                READ_TIMEOUT.as_secs()
            );
        }
        let Some(message) = reader.next(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.with_context(|| format!("cannot read {topic}"))?;
        let decoded = M::decode(message.payload().unwrap_or_default())
            .with_context(|| format!("a record of {topic} is not hashbuy's"))?;
        messages.push(decoded);
    }
    Ok(messages)
}

/// The ack's outcome.
fn status(ack: &PaymentAck) -> Status {
    Status::try_from(ack.status).unwrap_or(Status::Unspecified)
}

/// The successful charges paysim holds, by `metadata[command_id]` (the
/// empty string for a charge without one).
fn charges_by_command(audit: &Audit) -> HashMap<String, usize> {
    let mut charges = HashMap::new();
    for intent in audit
        .payment_intents
        .iter()
        .filter(|pi| pi.status == "succeeded")
    {
        *charges
            .entry(intent.command_id.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    charges
}

/// The demo's promise, checked: every charge belongs to a settled command,
/// none twice, and `settled_now` settled commands (decided in this run,
/// against this paysim) carry one charge each.
fn check_charges(
    acks: &[PaymentAck],
    charges: &HashMap<String, usize>,
    settled_now: u64,
) -> Result<()> {
    let settled: HashSet<&str> = acks
        .iter()
        .filter(|ack| status(ack) == Status::Settled)
        .map(|ack| ack.command_id.as_str())
        .collect();
    for (command, &count) in charges {
        if !settled.contains(command.as_str()) {
            bail!("a bug: paysim charged command {command:?}, which was not acked SETTLED");
        }
        if count > 1 {
            bail!("a bug: paysim charged command {command} {count} times");
        }
    }
    let charged = charges.len() as u64;
    if charged != settled_now {
        bail!("a bug: {settled_now} commands settled in this run, but paysim charged {charged}");
    }
    Ok(())
}

/// One line for an ack: its outcome, whose purchase, and the charges
/// paysim holds for the command.
fn describe_ack(ack: &PaymentAck, charges: &HashMap<String, usize>) -> String {
    let status = status(ack);
    let detail = match status {
        Status::Settled => format!("payment intent {}", ack.payment_intent_id),
        Status::Declined => format!("card declined: {}", ack.decline_code),
        _ => ack.reason.clone(),
    };
    format!(
        "{:<8} {:>6} {}  {:<16} user {:<20} charges {}  {detail}",
        status.as_str_name(),
        ack.amount,
        ack.currency,
        ack.offer_id,
        ack.user_id,
        charges.get(&ack.command_id).copied().unwrap_or(0),
    )
}
