//! The matcher on Kafka: consume tweets, produce commands and dead
//! letters, commit offsets — in batches.
//!
//! One thread runs one consumer and one producer. Records are taken in
//! batches (up to [`Config::batch_records`] or [`Config::batch_time`]);
//! each batch is then made durable as a whole:
//!
//! - **Exactly once** (default): the batch's outputs and its consumer
//!   offsets go in one Kafka transaction (`send_offsets_to_transaction`
//!   with the group's metadata, so a member that lost its partitions in a
//!   rebalance cannot commit them). Readers with `read_committed` see each
//!   batch whole or not at all. If a transaction fails in a way that can be
//!   aborted, it is aborted and the consumer goes back to the committed
//!   offsets, so the batch is done again; fatal errors (a fenced producer,
//!   another matcher with the same transactional id) stop the matcher.
//! - **At least once** (brokers without transactions): the outputs are
//!   produced and flushed, and only then the offsets committed. A crash in
//!   between repeats the batch; the settler's idempotency (command ids)
//!   makes a repeated command harmless.
//!
//! Not yet here: one task per partition, data-loss detection, metrics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbuy_kafka::client::{ConnectError, Connection, CONNECT_TIMEOUT};
use hashbuy_kafka::produce::{send_waiting, Deliveries};
use hashbuy_kafka::reader::nonempty_watermarks;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{Matcher, Output, Source};

/// How outputs and offsets are made durable together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Kafka transactions: each batch's outputs and offsets commit as one.
    ExactlyOnce,
    /// Produce, flush, then commit offsets; a crash may repeat a batch.
    AtLeastOnce,
}

/// What the matcher reads, writes, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Kafka is.
    pub connection: Connection,
    /// Consumer group.
    pub group: String,
    /// Tweets are read here.
    pub tweets_topic: String,
    /// Payment commands are produced here.
    pub commands_topic: String,
    /// Undecodable records are produced here.
    pub dead_letters_topic: String,
    /// Exactly once or at least once.
    pub delivery: Delivery,
    /// Stop once the group has consumed what the tweets topic held at
    /// start.
    pub exit_at_end: bool,
    /// Most records in one batch (one transaction).
    pub batch_records: usize,
    /// Longest a batch collects records.
    pub batch_time: Duration,
    /// Tells matchers of one group apart: part of the transactional id.
    pub instance: String,
}

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records consumed.
    pub records: u64,
    /// Commands produced.
    pub commands: u64,
    /// Dead letters produced.
    pub dead_letters: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batches aborted and done again.
    pub retried_batches: u64,
}

/// Why the matcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A Kafka operation failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The consumer has no group metadata to commit offsets with.
    #[error("the consumer has no consumer group metadata")]
    NoGroup,
    /// Produced records were not delivered (at least once).
    #[error("{count} records were not delivered; the first error: {first}")]
    Undelivered {
        /// How many.
        count: u64,
        /// The first error.
        first: String,
    },
}

fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> RunError {
    move |source| RunError::Kafka { what, source }
}

/// How long one transactional or commit call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the matcher until `stop` is raised or, with `exit_at_end`, the
/// group has consumed what the topic held at start.
pub fn run(matcher: &Matcher, config: &Config, stop: &AtomicBool) -> Result<Summary, RunError> {
    let partitions = config
        .connection
        .check_topic(&config.tweets_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.commands_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.dead_letters_topic, CONNECT_TIMEOUT)?;

    let consumer: BaseConsumer = config
        .connection
        .config()
        .set("group.id", &config.group)
        // Static membership: a restarted matcher takes its partitions back
        // at once instead of after the session timeout.
        .set(
            "group.instance.id",
            format!("{}-{}", config.group, config.instance),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set(
            "enable.partition.eof",
            if config.exit_at_end { "true" } else { "false" },
        )
        .create()
        .map_err(kafka("cannot create the consumer"))?;
    let mut producer_config = config.connection.config();
    producer_config.set("linger.ms", "5");
    if config.delivery == Delivery::ExactlyOnce {
        producer_config.set(
            "transactional.id",
            format!("hashbuy-matcher-{}-{}", config.group, config.instance),
        );
    }
    let producer: BaseProducer<Deliveries> = producer_config
        .create_with_context(Deliveries::default())
        .map_err(kafka("cannot create the producer"))?;
    if config.delivery == Delivery::ExactlyOnce {
        producer.init_transactions(CALL_TIMEOUT).map_err(kafka(
            "cannot start transactions (a broker without them needs --delivery at-least-once)",
        ))?;
    }

    // The end of each partition at start, for --exit-at-end.
    let ends: HashMap<i32, i64> = if config.exit_at_end {
        nonempty_watermarks(&consumer, &config.tweets_topic, partitions)
            .map_err(kafka("cannot read the end of the tweets topic"))?
            .into_iter()
            .map(|(partition, (_, high))| (partition, high))
            .collect()
    } else {
        HashMap::new()
    };
    consumer
        .subscribe(&[&config.tweets_topic])
        .map_err(kafka("cannot subscribe"))?;

    let mut summary = Summary::default();
    let mut outputs = Vec::new();
    // Partitions whose end librdkafka reported since their last record.
    let mut at_eof: HashSet<i32> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        if config.exit_at_end && group_done(&consumer, config, &ends, &at_eof)? {
            break;
        }
        let mut next_offsets: HashMap<i32, i64> = HashMap::new();
        let mut in_transaction = false;
        let mut records = 0;
        let deadline = Instant::now() + config.batch_time;
        while records < config.batch_records {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let message = match consumer.poll(wait) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_eof.insert(partition);
                    continue;
                }
                Some(Err(e)) => return Err(kafka("cannot consume")(e)),
                Some(Ok(message)) => message,
            };
            if config.delivery == Delivery::ExactlyOnce && !in_transaction {
                producer
                    .begin_transaction()
                    .map_err(kafka("cannot begin a transaction"))?;
                in_transaction = true;
            }
            at_eof.remove(&message.partition());
            let source = Source {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                value: message.payload().unwrap_or_default(),
            };
            outputs.clear();
            matcher.handle(&source, now_ms(), &mut outputs);
            for output in &outputs {
                let topic = match output {
                    Output::Command { .. } => {
                        summary.commands += 1;
                        &config.commands_topic
                    }
                    Output::DeadLetter(_) => {
                        summary.dead_letters += 1;
                        &config.dead_letters_topic
                    }
                };
                let (key, value) = output.to_record();
                send_waiting(&producer, topic, key.as_deref(), &value, || false)
                    .map_err(kafka("cannot produce"))?;
            }
            next_offsets.insert(message.partition(), message.offset() + 1);
            records += 1;
        }
        if records == 0 {
            continue;
        }
        summary.records += records as u64;
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &next_offsets {
            offsets
                .add_partition_offset(&config.tweets_topic, partition, Offset::Offset(offset))
                .map_err(kafka("cannot list offsets"))?;
        }
        match config.delivery {
            Delivery::ExactlyOnce => {
                if commit_transaction(&producer, &consumer, &offsets)? {
                    summary.batches += 1;
                } else {
                    summary.retried_batches += 1;
                    summary.records -= records as u64;
                    rewind(&consumer)?;
                }
            }
            Delivery::AtLeastOnce => {
                producer
                    .flush(CALL_TIMEOUT)
                    .map_err(kafka("cannot deliver the batch"))?;
                if let Some((count, first)) = producer.context().failures() {
                    return Err(RunError::Undelivered { count, first });
                }
                consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(kafka("cannot commit offsets"))?;
                summary.batches += 1;
            }
        }
    }
    Ok(summary)
}

/// Sends the offsets and commits; `false` if the transaction was aborted
/// (to be done again).
fn commit_transaction(
    producer: &BaseProducer<Deliveries>,
    consumer: &BaseConsumer,
    offsets: &TopicPartitionList,
) -> Result<bool, RunError> {
    let metadata = consumer.group_metadata().ok_or(RunError::NoGroup)?;
    let committed = producer
        .send_offsets_to_transaction(offsets, &metadata, CALL_TIMEOUT)
        .and_then(|()| producer.commit_transaction(CALL_TIMEOUT));
    match committed {
        Ok(()) => {
            // The transaction committed the offsets. librdkafka's mock
            // cluster (the embedded broker) answers TxnOffsetCommit without
            // storing them, so they are committed once more the plain way:
            // the same offsets again on a real Kafka, and refused there
            // only if the group moved on, which the transaction already
            // settled. A failure here therefore changes nothing.
            let _ = consumer.commit(offsets, CommitMode::Sync);
            Ok(true)
        }
        Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
            producer
                .abort_transaction(CALL_TIMEOUT)
                .map_err(kafka("cannot abort a failed transaction"))?;
            Ok(false)
        }
        Err(e) => Err(kafka("cannot commit a transaction")(e)),
    }
}

/// Moves the consumer back to its group's committed offsets, after an
/// aborted batch.
fn rewind(consumer: &BaseConsumer) -> Result<(), RunError> {
    let committed = consumer
        .committed(CALL_TIMEOUT)
        .map_err(kafka("cannot read committed offsets"))?;
    let mut positions = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        positions
            .add_partition_offset(element.topic(), element.partition(), offset)
            .map_err(kafka("cannot list offsets"))?;
    }
    consumer
        .seek_partitions(positions, CALL_TIMEOUT)
        .map_err(kafka("cannot go back to the committed offsets"))?;
    Ok(())
}

/// Whether the group has committed, for every partition, the end it had at
/// start, and this member has seen the end of each partition it owns.
/// (The second test guards against brokers that report high watermarks
/// short of the real end, as tansu 0.6 does.)
fn group_done(
    consumer: &BaseConsumer,
    config: &Config,
    ends: &HashMap<i32, i64>,
    at_eof: &HashSet<i32>,
) -> Result<bool, RunError> {
    let assignment = consumer
        .assignment()
        .map_err(kafka("cannot read the assignment"))?;
    if assignment.count() == 0 && !ends.is_empty() {
        return Ok(false);
    }
    if assignment
        .elements()
        .iter()
        .any(|e| !at_eof.contains(&e.partition()) && ends.contains_key(&e.partition()))
    {
        return Ok(false);
    }
    let mut all = TopicPartitionList::new();
    for &partition in ends.keys() {
        all.add_partition(&config.tweets_topic, partition);
    }
    let committed = consumer
        .committed_offsets(all, CALL_TIMEOUT)
        .map_err(kafka("cannot read committed offsets"))?;
    Ok(committed
        .elements()
        .iter()
        .all(|e| match (e.offset(), ends.get(&e.partition())) {
            (Offset::Offset(o), Some(&end)) => o >= end,
            (_, None) => true,
            _ => false,
        }))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
