//! `hashbuy demo`: the whole pipeline in one process on the bundled sample
//! stream, with nothing to install or start first.
//!
//! It starts the embedded broker, produces the sample's records keyed by
//! user (as `hashbuy replay`), matches them exactly once (as `hashbuy
//! match`), serves paysim in place of Stripe (as `hashbuy paysim`),
//! settles the commands with a durable ledger (as `hashbuy settle`), and
//! then prints every ack and dead letter with what paysim charged. Each
//! stage runs the same code as its command, to the end of its input, one
//! after the other, so the figures printed are what those commands do on a
//! real broker. Logs show warnings only, unless `HASHBUY_LOG` says more.
//!
//! It checks what it shows: a settled command without exactly one charge
//! at paysim, or another outcome with any, is an error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_core::samples;
use hashbuy_kafka::broker::{EmbeddedBroker, LEDGER_TOPIC, TOPICS};
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{flush_promptly, send_waiting, Deliveries};
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_matcher::run::{self as matching, Delivery, OnDataLoss};
use hashbuy_matcher::Matcher;
use hashbuy_paysim::{Audit, Config as PaysimConfig, Paysim};
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::{DeadLetter, PaymentAck};
use hashbuy_provider::{Backoff, Provider, ProviderConfig, SecretString};
use hashbuy_settler::payments::Payments;
use hashbuy_settler::run as settling;
use hashbuy_settler::steps::Policy;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message as _;

use crate::kafka_args;
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
    /// paysim's median answer time, in milliseconds (jittered).
    #[arg(long, default_value_t = 50)]
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
    let broker =
        EmbeddedBroker::start(&TOPICS, PARTITIONS).context("cannot start the embedded broker")?;
    let connection = Connection {
        brokers: broker.bootstrap_servers(),
        properties: Vec::new(),
    };
    println!(
        "1. embedded broker at {}: topics {} ({PARTITIONS} partitions each)",
        connection.brokers,
        TOPICS.join(", ")
    );

    let records = produce_sample(&connection)?;
    println!("2. replayed the bundled sample: {records} records to `tweets`, keyed by user id");

    let (catalog, accounts) = samples::tables();
    let matched = matching::run(
        Arc::new(Matcher::new(catalog, accounts)),
        &matching::Config {
            connection: connection.clone(),
            group: "hashbuy-demo-matcher".into(),
            tweets_topic: "tweets".into(),
            commands_topic: "payment-commands".into(),
            dead_letters_topic: "dead-letters".into(),
            delivery: Delivery::ExactlyOnce,
            exit_at_end: true,
            batch_records: 10_000,
            batch_time: Duration::from_millis(100),
            instance: "0".into(),
            on_data_loss: OnDataLoss::Stop,
            workers: 1,
        },
        &stop,
        &Health::default(),
    )
    .context("the matcher stopped")?;
    println!(
        "3. matched them exactly once: {} payment commands, {} dead letters",
        matched.commands, matched.dead_letters
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let paysim = Paysim::new(PaysimConfig {
        latency_ms: args.latency_ms,
        seed: 1,
        ..PaysimConfig::default()
    })
    .context("bad paysim settings")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("no free port for paysim")?;
    let url = format!("http://{}", listener.local_addr()?);
    let serving = paysim.clone();
    runtime.spawn(async move {
        if let Err(e) = serving.serve(listener, std::future::pending()).await {
            tracing::error!("paysim stopped: {e}");
        }
    });
    println!(
        "4. paysim (simulated Stripe) at {url}, answering in about {} ms",
        args.latency_ms
    );

    let temporary = tempfile::tempdir().context("no temporary directory for the ledger")?;
    let kept = args.ledger.is_some();
    let ledger_dir = args
        .ledger
        .unwrap_or_else(|| temporary.path().join("ledger"));
    let mut provider_config = ProviderConfig::new(SecretString::from(KEY.to_owned()));
    provider_config.base_url = url;
    let unanswered_wait = provider_config.request_timeout * 2;
    let provider = Provider::new(provider_config).context("bad provider settings")?;
    let started = Instant::now();
    let settled = settling::run(
        &settling::Config {
            connection: connection.clone(),
            group: "hashbuy-demo-settler".into(),
            instance: "0".into(),
            commands_topic: "payment-commands".into(),
            acks_topic: "payment-acks".into(),
            dead_letters_topic: "dead-letters".into(),
            ledger_topic: LEDGER_TOPIC.into(),
            ledger_dir: ledger_dir.clone(),
            max_in_flight: 256,
            exit_at_end: true,
            policy: Policy {
                max_attempts: 10,
                key_lifetime: Duration::from_secs(86_400),
                unanswered_wait,
            },
        },
        Payments::new(provider, Backoff::default()),
        &stop,
        &Health::default(),
    )
    .context("the settler stopped")?;
    println!(
        "5. settled them in {:.1} s with a durable ledger: {} settled, {} declined, {} rejected, {} failed, {} acks",
        started.elapsed().as_secs_f64(),
        settled.settled,
        settled.declined,
        settled.rejected,
        settled.failed,
        settled.acks,
    );

    let acks: Vec<PaymentAck> = read_topic(&connection, "payment-acks", settled.acks)?;
    let audit = paysim.audit();
    println!(
        "\npayment-acks ({} records, amounts in minor units):",
        acks.len()
    );
    for ack in &acks {
        println!("  {}", describe_ack(ack, &audit));
    }
    let dead: Vec<DeadLetter> = read_topic(&connection, "dead-letters", matched.dead_letters)?;
    println!("\ndead-letters ({} records):", dead.len());
    for letter in &dead {
        println!(
            "  {} partition {} offset {}: {}",
            letter.topic, letter.partition, letter.offset, letter.reason
        );
    }
    let charged = audit
        .payment_intents
        .iter()
        .filter(|pi| pi.status == "succeeded")
        .count();
    println!(
        "\npaysim holds {} payment intents, {charged} of them charged.",
        audit.payment_intents.len()
    );
    if let Some(ack) = acks.iter().find(|ack| overcharged(ack, &audit)) {
        bail!(
            "a bug: command {} was acked {} but paysim holds {} charges for it",
            ack.command_id,
            status(ack).as_str_name(),
            charges(ack, &audit)
        );
    }
    if charged as u64 != settled.settled {
        bail!(
            "a bug: {} commands settled in this run, but paysim charged {charged}",
            settled.settled
        );
    }
    if settled.settled > 0 {
        println!(
            "Each command settled in this run was charged once, and nothing else was charged."
        );
    }
    let decided = settled.settled + settled.declined + settled.rejected + settled.failed;
    let known = settled.acks.saturating_sub(decided);
    if known > 0 {
        println!(
            "{known} commands were already in the ledger, from an earlier run: acked again, charged nothing."
        );
    }
    if kept {
        println!(
            "The ledger is in {0}: `hashbuy ledger ls --ledger {0}` lists it.",
            ledger_dir.display()
        );
    } else {
        println!(
            "The ledger was temporary: keep one with --ledger DIR, then `hashbuy ledger ls --ledger DIR`."
        );
    }
    println!(
        "The README's \"What is here\" runs the same steps as separate commands on a broker you keep."
    );
    Ok(())
}

/// Produces the bundled sample to `tweets`, as `hashbuy replay` would;
/// the records produced.
fn produce_sample(connection: &Connection) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = connection
        .config()
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    let mut records = 0;
    for line in samples::TWEETS.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, _) = key_and_time(line.as_bytes());
        send_waiting(
            &producer,
            "tweets",
            key.as_deref().map(str::as_bytes),
            line.as_bytes(),
            || false,
        )
        .context("cannot produce the sample")?;
        records += 1;
    }
    flush_promptly(&producer, Duration::from_secs(30))?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} sample records were not delivered: {first}");
    }
    Ok(records)
}

/// Reads `expected` messages of `topic` (committed ones only), waiting at
/// most [`READ_TIMEOUT`] for them.
fn read_topic<M: prost::Message + Default>(
    connection: &Connection,
    topic: &str,
    expected: u64,
) -> Result<Vec<M>> {
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: false,
        read_uncommitted: false,
    };
    let mut reader = TopicReader::open(connection, topic, options)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut messages = Vec::new();
    while (messages.len() as u64) < expected {
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

/// The successful charges paysim holds for the ack's command.
fn charges(ack: &PaymentAck, audit: &Audit) -> usize {
    audit
        .for_command(&ack.command_id)
        .filter(|pi| pi.status == "succeeded")
        .count()
}

/// Whether paysim charged the command more than its ack allows: once if
/// it settled (none when an earlier run's paysim did), never otherwise.
fn overcharged(ack: &PaymentAck, audit: &Audit) -> bool {
    charges(ack, audit) > usize::from(status(ack) == Status::Settled)
}

/// One line for an ack: its outcome, whose purchase, and what paysim holds
/// for the command.
fn describe_ack(ack: &PaymentAck, audit: &Audit) -> String {
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
        charges(ack, audit),
    )
}
