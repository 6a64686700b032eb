//! The live tables: the `catalog` and `account-links` topics, read whole
//! before the matcher's first record and followed while it runs.
//!
//! Every matcher reads every partition of both (a global table, no group),
//! and each record is a change over the tables' files: a protobuf `Offer`
//! keyed by its normalized hashtag, or an `AccountLink` keyed by its user
//! id, or a tombstone that removes the key. A change takes effect at its
//! record's timestamp (what `hashbuy catalog put --at` sets), for tweets
//! at or after it by their own time ([`hashbuy_core::history`]). A record
//! that cannot be a change (no key, no timestamp, not the protobuf, an
//! invalid offer or link, a hashtag clashing with another offer's) is a
//! dead letter with its reason, and the tables go on without it.
//!
//! One thread, [`Follower`], reads both topics after the start and applies
//! each change as soon as it is read, under the tables' write lock. A
//! change read after tweets of its time or later were decided (it was
//! produced late, or read while they were being decided) takes effect for
//! the tweets decided from then on; decisions made stand.
//!
//! Every matcher, and every start of one, reads the tables from their
//! beginning, so each sets a bad record aside again: its dead letters carry
//! the record's topic, partition and offset to tell repeats apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hashbuy_kafka::client::{failed, ConnectError};
use hashbuy_kafka::produce::{flush_promptly, record_budget, send_waiting, Deliveries};
use hashbuy_kafka::reader::{read_to_end, ReadOptions, ReadToEnd, TopicReader};
use hashbuy_proto::dead_letter::fit;
use hashbuy_proto::v1::{AccountLink, DeadLetter, Offer};
use prost::Message as _;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::BaseProducer;
use rdkafka::Message;

use crate::run::{Config, RunError, CALL_TIMEOUT};
use crate::worker::now_ms;
use crate::Matcher;

/// The stage name dead letters of the live tables carry.
pub const STAGE: &str = "tables";

/// Which table a topic holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Catalog,
    Accounts,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Catalog => "catalog",
            Table::Accounts => "account links",
        }
    }
}

/// A table topic being followed.
struct Followed {
    table: Table,
    topic: String,
    reader: TopicReader,
}

/// The thread following the live tables; stops when dropped.
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the table topics of `config` that exist to their end into
/// `matcher`, then follows them on a thread of their own; `None` when
/// neither exists (the tables are the files alone). A missing table
/// topic is said once, at start.
pub(crate) fn follow(
    matcher: &Arc<Matcher>,
    config: &Config,
) -> Result<Option<Follower>, RunError> {
    if !config.live_tables {
        return Ok(None);
    }
    let mut followed = Vec::new();
    for (table, topic) in [
        (Table::Catalog, &config.topics.catalog),
        (Table::Accounts, &config.topics.account_links),
    ] {
        let options = ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        };
        match TopicReader::open(&config.connection, topic, options) {
            Ok(reader) => followed.push(Followed {
                table,
                topic: topic.clone(),
                reader,
            }),
            Err(ConnectError::MissingTopic { .. }) => {
                if matcher.table_is_empty(table == Table::Catalog) {
                    return Err(RunError::NoTable {
                        table: table.name(),
                        topic: topic.clone(),
                    });
                }
                tracing::info!(
                    "the live {} is not followed: topic {topic} does not exist (hashbuy topics \
                     create makes it)",
                    table.name()
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    if followed.is_empty() {
        return Ok(None);
    }
    let letters = Letters::new(config)?;
    for table in &mut followed {
        let (kind, topic) = (table.table, table.topic.clone());
        read_to_end(&mut table.reader, &topic, |message| {
            apply(matcher, kind, message, &letters);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            ReadToEnd::Stalled { waited, last_error } => RunError::TablesStalled {
                topic,
                waited,
                last_error,
            },
            ReadToEnd::Record(never) => match never {},
        })?;
        if kind == Table::Catalog {
            matcher.follow_live_catalog();
        }
    }
    letters.flush();
    tracing::info!(
        topics = ?followed.iter().map(|f| f.topic.as_str()).collect::<Vec<_>>(),
        "live tables read; following them"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, matcher) = (Arc::clone(&stop), Arc::clone(matcher));
        std::thread::Builder::new()
            .name("live-tables".into())
            .spawn(move || follow_until(&stop, &matcher, followed, &letters))
            .map_err(|e| RunError::Thread(e.to_string()))?
    };
    Ok(Some(Follower {
        stop,
        thread: Some(thread),
    }))
}

/// Applies each change as it comes, until `stop`.
fn follow_until(
    stop: &AtomicBool,
    matcher: &Matcher,
    mut followed: Vec<Followed>,
    letters: &Letters,
) {
    // Each reader waits in turn, so the stop is seen within about this
    // much a topic.
    let wait = Duration::from_millis(50);
    while !stop.load(Ordering::Relaxed) {
        for table in &mut followed {
            while let Some(message) = table.reader.next(wait) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match message {
                    Ok(message) => apply(matcher, table.table, &message, letters),
                    Err(e) => tracing::warn!("reading the live {}: {e}", table.name()),
                }
            }
        }
        letters.poll();
    }
    letters.flush();
}

impl Followed {
    fn name(&self) -> &'static str {
        self.table.name()
    }
}

/// Applies one table record to `matcher`, or sets it aside.
fn apply(matcher: &Matcher, table: Table, message: &BorrowedMessage<'_>, letters: &Letters) {
    let result = change(matcher, table, message);
    let outcome = if result.is_ok() { "applied" } else { "refused" };
    metrics::counter!("hashbuy_matcher_table_changes_total", "table" => table.name(), "outcome" => outcome)
        .increment(1);
    if let Err(reason) = result {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "a change of the live {} is set aside: {reason}",
            table.name()
        );
        letters.send(message, reason);
    }
}

fn change(matcher: &Matcher, table: Table, message: &BorrowedMessage<'_>) -> Result<(), String> {
    let key = match message.key().map(std::str::from_utf8) {
        Some(Ok(key)) => key,
        Some(Err(_)) => return Err("the key is not UTF-8".into()),
        None => return Err("the record has no key".into()),
    };
    let Some(at_ms) = message.timestamp().to_millis() else {
        return Err("the record has no timestamp, and a change takes effect at its time".into());
    };
    match table {
        Table::Catalog => {
            let offer = message
                .payload()
                .map(Offer::decode)
                .transpose()
                .map_err(|e| format!("not a protobuf Offer: {e}"))?;
            matcher.change_catalog(key, at_ms, offer)
        }
        Table::Accounts => {
            let link = message
                .payload()
                .map(AccountLink::decode)
                .transpose()
                .map_err(|e| format!("not a protobuf AccountLink: {e}"))?;
            matcher.change_account(key, at_ms, link)
        }
    }
}

/// The dead letters of table records, through a producer of their own:
/// the matcher's may be in a transaction.
struct Letters {
    producer: BaseProducer<Deliveries>,
    topic: String,
    record_bytes: usize,
}

impl Letters {
    fn new(config: &Config) -> Result<Self, RunError> {
        let producer_config = config
            .connection
            .config_with(&[("linger.ms", "5".to_owned())]);
        let record_bytes = record_budget(&producer_config);
        let producer = producer_config
            .create_with_context(Deliveries::default())
            .map_err(failed("cannot create the live tables' producer"))?;
        Ok(Letters {
            producer,
            topic: config.topics.dead_letters.clone(),
            record_bytes,
        })
    }

    fn send(&self, message: &BorrowedMessage<'_>, reason: String) {
        let letter = fit(
            DeadLetter {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().unwrap_or_default().to_vec(),
                reason,
                stage: STAGE.to_owned(),
                dead_at_ms: now_ms(),
                ..DeadLetter::default()
            },
            self.record_bytes,
        );
        let sent = send_waiting(
            &self.producer,
            &self.topic,
            message.key(),
            &letter.encode_to_vec(),
            || false,
        );
        if let Err(e) = sent {
            tracing::error!("cannot set a table record aside in {}: {e}", self.topic);
        }
    }

    fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    fn flush(&self) {
        if let Err(e) = flush_promptly(&self.producer, CALL_TIMEOUT) {
            tracing::error!("cannot deliver the live tables' dead letters: {e}");
        }
    }
}
