//! `hashbuy demo`: the whole pipeline in one process on the bundled sample
//! stream, with nothing to install or start first.
//!
//! It starts the embedded broker, produces the sample's records keyed by
//! user (as `hashbuy replay`), and starts the matcher (exactly once, as
//! `hashbuy match`), which follows the live catalog topic. While it runs,
//! the demo puts two catalog changes on that topic (as `hashbuy catalog
//! put` and `catalog rm` do): a limited offer (`samples/live-catalog.toml`,
//! two in stock) from 14:10, and the café offer's end at 14:20, stream
//! time; then it produces the live part's tweets (`samples/live.jsonl`),
//! which buy or not by the catalog at their own time. It serves paysim in
//! place of Stripe (as `hashbuy paysim`), runs the reservation step (as
//! `hashbuy stock`) beside the settler (as `hashbuy settle`, with a
//! durable ledger) until every command has its ack, and then prints every
//! reply to a buyer, every ack, the live part's tweets with what became of
//! each, and every dead letter, with what paysim charged. The sample
//! includes a confirm-mode offer (`samples/confirm-catalog.toml`,
//! `samples/confirm.jsonl`): a purchase confirmed, one cancelled by
//! deleting its tweet, and one left to expire, each answered on the
//! replies topic, where the settler and the reservation step tell every
//! outcome too. The services run the same code as their commands, each on
//! a thread, on the embedded broker (librdkafka's mock cluster, as
//! `hashbuy broker`). Logs show warnings only, unless `HASHBUY_LOG` says
//! more. Ctrl-C stops it with an error, never with a partial report.
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
use hashbuy_kafka::client::{Connection, QuietContext};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::group::committed;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{flush_promptly, send_waiting, Deliveries};
use hashbuy_kafka::reader::watermarks;
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
use hashbuy_stock::run as stocking;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message as _;

use crate::config::{MatchConfig, SettleConfig, StockConfig, RECORDINGS_MAX_COMMAND_AGE};
use crate::kafka_args;
use crate::paysim::{self, InProcess};
use crate::replay::key_and_time;
use crate::tables_cmd::{put_offers, remove_offer, shown};

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

    let before_change = live_tweets().filter(|(at, _)| *at < samples::LIVE_CHANGE_MS);
    let records = produce_records(
        &connection,
        &topics.tweets,
        lines(samples::TWEETS)
            .chain(lines(samples::CONFIRM_TWEETS))
            .chain(before_change.map(|(_, line)| line)),
        &stop,
    )?;
    interrupted(&stop)?;
    writeln!(
        out,
        "2. produced the bundled sample: {records} records to `{}`, keyed by user id \
         ({} of them buy a confirm-mode offer; the last was tweeted before the live offer below existed)",
        topics.tweets,
        lines(samples::CONFIRM_TWEETS).count()
    )?;

    // The matcher runs on while the live part's changes are put and its
    // tweets flow in.
    let (catalog, accounts) = samples::confirm_tables();
    let matcher = Arc::new(Matcher::new(catalog, accounts));
    let match_config = MatchConfig {
        group: "hashbuy-demo-matcher".into(),
        workers: 1,
        ..MatchConfig::default()
    }
    .run_config(connection.clone(), topics.clone(), false);
    let matching = Service::start("the matcher", {
        let (matcher, config) = (Arc::clone(&matcher), match_config.clone());
        move |stop: &AtomicBool| matching::run(matcher, &config, stop, &Health::default())
    })?;
    let consumed = wait_consumed(
        &connection,
        &match_config.group,
        &topics.tweets,
        &stop,
        &matching,
    )?;
    writeln!(
        out,
        "3. the matcher runs (exactly once), following the live catalog topic `{}`: it has read all {consumed} records",
        topics.catalog
    )?;

    let offers = samples::live_catalog().offers().to_vec();
    let hashtag = offers
        .first()
        .map(|o| o.hashtag.clone())
        .unwrap_or_default();
    put_offers(
        &connection,
        &topics.catalog,
        samples::LIVE_CHANGE_MS,
        offers,
    )?;
    let (removed, _) = remove_offer(
        &connection,
        &topics.catalog,
        samples::LIVE_REMOVAL_MS,
        samples::LIVE_REMOVED_HASHTAG,
    )?;
    wait_for_change(&matcher, &removed, samples::LIVE_REMOVAL_MS, &stop)?;
    writeln!(
        out,
        "4. live catalog changes, put while it runs (as `hashbuy catalog put` and `catalog rm` do): \
         #{hashtag} (2 in stock, up to 3 a shopper) from {}, and #{} removed from {}",
        shown(samples::LIVE_CHANGE_MS),
        samples::LIVE_REMOVED_HASHTAG,
        shown(samples::LIVE_REMOVAL_MS),
    )?;
    let after_change = live_tweets().filter(|(at, _)| *at >= samples::LIVE_CHANGE_MS);
    let more = produce_records(
        &connection,
        &topics.tweets,
        after_change.map(|(_, line)| line),
        &stop,
    )?;
    wait_consumed(
        &connection,
        &match_config.group,
        &topics.tweets,
        &stop,
        &matching,
    )?;
    let matched = matching.stop()?;
    interrupted(&stop)?;
    writeln!(
        out,
        "5. produced {more} more tweets, from after the new offer's time: matched them too. In all: \
         {} payment commands (limited offers' to the reservation step first), {} replies, {} dead letters",
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
        "6. paysim (simulated Stripe) at {url}, answering in about {} ms",
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
        max_command_age: RECORDINGS_MAX_COMMAND_AGE,
        ..SettleConfig::default()
    };
    let mut provider_config = ProviderConfig::new(SecretString::from(KEY.to_owned()));
    provider_config.base_url = url;
    provider_config.request_timeout = settings.request_timeout();
    let provider = Provider::new(provider_config).context("bad provider settings")?;
    let started = Instant::now();
    // The reservation step and the settler run side by side: the step
    // sends a limited offer's commands on as units are held, and learns
    // from the settler's acks which units sold.
    let stock_config = StockConfig {
        group: "hashbuy-demo-stock".into(),
        ..StockConfig::default()
    }
    .run_config(connection.clone(), topics.clone(), false);
    let reserving = Service::start("the reservation step", move |stop: &AtomicBool| {
        stocking::run(&stock_config, stop, &Health::default())
    })?;
    let settle_config = settings.run_config(
        connection.clone(),
        topics.clone(),
        ledger_dir.clone(),
        false,
    );
    let settling_service = Service::start("the settler", move |stop: &AtomicBool| {
        settling::run(
            &settle_config,
            Payments::new(provider, Backoff::default()),
            stop,
            &Health::default(),
        )
    })?;
    // Every command has its one outcome once its ack is read.
    let acks: Result<Vec<PaymentAck>> =
        read_topic(&connection, &topics.acks, matched.commands, &stop);
    let settled = settling_service.stop()?;
    let reserved = reserving.stop()?;
    let acks = acks?;
    interrupted(&stop)?;
    writeln!(
        out,
        "7. reserved the limited offer's stock and settled the commands in {:.1} s, with a durable ledger: \
         {} settled, {} declined, {} rejected, {} failed, {} acks; the reservation step found {} sold out",
        started.elapsed().as_secs_f64(),
        settled.settled,
        settled.declined,
        settled.rejected,
        settled.failed,
        acks.len(),
        reserved.sold_out,
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
    writeln!(
        out,
        "\nThe live part's tweets (the offer #{} from {}, #{} removed from {}):",
        samples::live_catalog()
            .offers()
            .first()
            .map_or("", |o| o.hashtag.as_str()),
        shown(samples::LIVE_CHANGE_MS),
        samples::LIVE_REMOVED_HASHTAG,
        shown(samples::LIVE_REMOVAL_MS),
    )?;
    for (at, line) in live_tweets() {
        writeln!(out, "  {}", describe_live(at, line, &acks))?;
    }
    let letters = matched.dead_letters + settled.dead_letters + reserved.dead_letters;
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

/// Produces `records` to `topic`, keyed as `hashbuy replay` keys
/// records; how many.
fn produce_records<'a>(
    connection: &Connection,
    topic: &str,
    records: impl Iterator<Item = &'a str>,
    stop: &AtomicBool,
) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = connection
        .config()
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    let mut count = 0;
    for line in records {
        let (key, _) = key_and_time(line.as_bytes());
        send_waiting(
            &producer,
            topic,
            key.as_deref().map(str::as_bytes),
            line.as_bytes(),
            || stop.load(Ordering::Relaxed),
        )
        .context("cannot produce the sample")?;
        count += 1;
    }
    flush_promptly(&producer, Duration::from_secs(30)).context("cannot deliver the sample")?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} sample records were not delivered: {first}");
    }
    Ok(count)
}

/// The live part's tweets, each with its time.
fn live_tweets() -> impl Iterator<Item = (i64, &'static str)> {
    lines(samples::LIVE_TWEETS).map(|line| (key_and_time(line.as_bytes()).1.unwrap_or(0), line))
}

/// One of the demo's services, running on a thread of its own until
/// [`Service::stop`].
struct Service<T> {
    name: &'static str,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<T>>,
}

impl<T: Send + 'static> Service<T> {
    /// Runs `body` (given its stop flag) on a thread named `name`.
    fn start<E>(
        name: &'static str,
        body: impl FnOnce(&AtomicBool) -> Result<T, E> + Send + 'static,
    ) -> Result<Self>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(&flag).with_context(|| format!("{name} stopped")))
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Service { name, stop, thread })
    }

    /// An error if the service ended on its own (it runs until stopped).
    fn check(&self) -> Result<()> {
        if self.thread.is_finished() {
            bail!("{} ended before it was stopped", self.name);
        }
        Ok(())
    }

    /// Stops the service, as SIGTERM stops its command: what it did.
    fn stop(self) -> Result<T> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("{} panicked", self.name),
        }
    }
}

/// Waits until `group` has committed every record of `topic` (what the
/// matcher has read and decided), at most [`READ_TIMEOUT`]: the records
/// consumed.
fn wait_consumed<T: Send + 'static>(
    connection: &Connection,
    group: &str,
    topic: &str,
    stop: &AtomicBool,
    service: &Service<T>,
) -> Result<u64> {
    let consumer: BaseConsumer<QuietContext> = connection
        .config()
        .set("group.id", group)
        .create_with_context(QuietContext)
        .context("cannot create a consumer")?;
    let partitions = connection.check_topic(topic, READ_TIMEOUT)? as i32;
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        interrupted(stop)?;
        service.check()?;
        let ends = watermarks(&consumer, topic, 0..partitions, READ_TIMEOUT)
            .with_context(|| format!("cannot read the end of {topic}"))?;
        let done = committed(&consumer, topic, 0..partitions)
            .with_context(|| format!("cannot read {group}'s committed offsets"))?;
        if ends
            .iter()
            .all(|(p, (_, high))| done.get(p).copied().unwrap_or(0) >= *high)
        {
            return Ok(ends.values().map(|(_, high)| *high as u64).sum());
        }
        if Instant::now() > deadline {
            bail!(
                "{group} did not read all of {topic} within {} s",
                READ_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the running `matcher` has the catalog's change of `key` at
/// `at` (it follows the topic on a thread of its own), at most
/// [`READ_TIMEOUT`]: tweets decided after that see it.
fn wait_for_change(matcher: &Matcher, key: &str, at: i64, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + READ_TIMEOUT;
    while matcher.catalog_changed_at(key) != Some(at) {
        interrupted(stop)?;
        if Instant::now() > deadline {
            bail!(
                "the matcher did not follow the catalog change of {key:?} within {} s",
                READ_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
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

/// One line for a tweet of the live part: its time, author and text, and
/// what became of it by its acks.
fn describe_live(at: i64, line: &str, acks: &[PaymentAck]) -> String {
    let tweet: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let id = tweet["id_str"].as_str().unwrap_or_default();
    let outcome = acks.iter().find(|ack| ack.tweet_id == id).map_or_else(
        || "bought nothing: no offer had its hashtag at its time".to_owned(),
        |ack| match status(ack) {
            Status::Settled => format!("SETTLED {} {}", ack.amount, ack.currency),
            other => format!("{} ({})", other.as_str_name(), ack.reason),
        },
    );
    format!(
        "{} user {:<20} {:<40} {outcome}",
        shown(at),
        tweet["user"]["id_str"].as_str().unwrap_or_default(),
        tweet["text"].as_str().unwrap_or_default(),
    )
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
