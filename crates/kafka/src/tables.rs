//! Following table topics: compacted topics (the catalog, the account
//! links, the merchants) that every instance reads whole, outside any
//! group, before its first record and then while it runs.
//!
//! Each record is a change of one key: its value, or a tombstone that
//! removes the key, in effect from the record's timestamp on. [`follow`]
//! reads the topics to their end, handing each change to the caller's
//! `apply`, and then hands on the changes that come while it runs from a
//! thread of its own. A record that is not a change (no key, a key that
//! is not UTF-8, no timestamp) or that `apply` refuses is a dead letter
//! with the reason, and the tables go on without it. Every instance, and
//! every start of one, reads the tables from their beginning, so each sets
//! a bad record aside again: its dead letters carry the record's topic,
//! partition and offset to tell repeats apart.
//!
//! A follower may fall behind its topics (a broker that does not answer,
//! a thread that died), and a table read from it then lacks changes the
//! topics hold. Whoever acts on what a table lacks (a merchant not in it,
//! an offer it shows ended) asks [`Progress::read_through_now`] first:
//! the topics' ends, asked of the broker, and a wait until the follower
//! has handed on every change below them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::BaseProducer;
use rdkafka::Message;

use crate::client::{failed, ConnectError, Connection, Failed};
use crate::lock;
use crate::produce::{dead_letter_of, flush_promptly, record_budget, send_waiting, Deliveries};
use crate::reader::{read_to_end, uncommitted_watermarks, ReadOptions, ReadToEnd, TopicReader};

/// How long the dead letters of table records may take to be delivered.
const LETTERS_WAIT: Duration = Duration::from_secs(30);

/// Opens a table topic to read it whole; `None` when it does not exist.
pub fn open(connection: &Connection, topic: &str) -> Result<Option<TopicReader>, ConnectError> {
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: true,
        read_uncommitted: false,
    };
    match TopicReader::open(connection, topic, options) {
        Ok(reader) => Ok(Some(reader)),
        Err(ConnectError::MissingTopic { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One change of a table: `value` (`None`: a tombstone) for `key` from
/// `at_ms` on, read from `topic`.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The table topic.
    pub topic: &'a str,
    /// The key changed.
    pub key: &'a str,
    /// When the change takes effect: the record's timestamp, ms since the
    /// epoch.
    pub at_ms: i64,
    /// The new value, or `None` for a removal.
    pub value: Option<&'a [u8]>,
}

impl<'a> Change<'a> {
    /// The change a table record says; `Err` with the reason it says none.
    pub fn of(message: &'a BorrowedMessage<'_>) -> Result<Self, String> {
        let key = match message.key().map(std::str::from_utf8) {
            Some(Ok(key)) => key,
            Some(Err(_)) => return Err("the key is not UTF-8".into()),
            None => return Err("the record has no key".into()),
        };
        let Some(at_ms) = message.timestamp().to_millis() else {
            return Err(
                "the record has no timestamp, and a change takes effect at its time".into(),
            );
        };
        Ok(Change {
            topic: message.topic(),
            key,
            at_ms,
            value: message.payload(),
        })
    }
}

/// Where the dead letters of table records go.
#[derive(Debug, Clone)]
pub struct Letters {
    /// The dead letters topic.
    pub topic: String,
    /// The stage they name (`tables`).
    pub stage: &'static str,
}

/// Why the tables could not be read before the first record.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// A table topic could not be read to its end.
    #[error(
        "cannot read the table topic {topic}: nothing read for {} s (last error: {}); the \
         tables are needed before the first record",
        .waited.as_secs(),
        last_error.as_deref().unwrap_or("none")
    )]
    Stalled {
        /// The table topic.
        topic: String,
        /// How long it read nothing.
        waited: Duration,
        /// The last error reading it.
        last_error: Option<String>,
    },
    /// The dead letters' producer could not be made.
    #[error(transparent)]
    Kafka(#[from] Failed),
    /// The following thread could not be started.
    #[error("cannot start the thread following the tables: {0}")]
    Thread(String),
}

/// The thread following the tables; stops when dropped.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    progress: Progress,
}

impl Follower {
    /// How far the follower has got, to ask while it runs.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// Per topic and partition, the offset below which the follower has
/// handed on every change.
type Positions = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// How far a [`Follower`] has got in its topics; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    connection: Connection,
    topics: Vec<String>,
    positions: Positions,
}

/// Why [`Progress::read_through_now`] could not show the follower current.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Behind {
    /// The follower had not handed on a partition's changes up to the end
    /// the broker gave, within the wait.
    #[error(
        "the table follower has read {topic} partition {partition} to offset {position:?}, short \
         of its end {end} when asked, after {} ms",
        waited.as_millis()
    )]
    Follower {
        /// The table topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Where the follower got to (`None`: nowhere yet).
        position: Option<i64>,
        /// The partition's end when asked.
        end: i64,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The broker did not give the topics' ends.
    #[error("cannot ask where table topic {topic} ends: {why}")]
    Ends {
        /// The table topic.
        topic: String,
        /// Why.
        why: String,
    },
}

impl Progress {
    /// Waits, about `wait` at most (the broker's answers included, each
    /// given a third of what is left: up to a third more in all when the
    /// broker is slow to answer), until
    /// the follower has handed on every change its topics held when this
    /// was called: their ends, asked of the broker now (read uncommitted,
    /// so a transaction still open makes it wait), each reached by the
    /// follower's position. Blocking.
    pub fn read_through_now(&self, wait: Duration) -> Result<(), Behind> {
        let began = Instant::now();
        let mut ends = Vec::new();
        for topic in &self.topics {
            let left = wait.saturating_sub(began.elapsed());
            let asked = ask_ends(&self.connection, topic, left).map_err(|why| Behind::Ends {
                topic: topic.clone(),
                why,
            })?;
            ends.extend(
                asked
                    .into_iter()
                    .filter(|&(_, (low, high))| high > low)
                    .map(|(partition, (_, high))| (topic.clone(), partition, high)),
            );
        }
        loop {
            let short = {
                let positions = lock(&self.positions);
                ends.iter().find_map(|(topic, partition, end)| {
                    let position = positions.get(&(topic.clone(), *partition)).copied();
                    position
                        .is_none_or(|position| position < *end)
                        .then(|| (topic.clone(), *partition, position, *end))
                })
            };
            let Some((topic, partition, position, end)) = short else {
                return Ok(());
            };
            if began.elapsed() >= wait {
                return Err(Behind::Follower {
                    topic,
                    partition,
                    position,
                    end,
                    waited: began.elapsed(),
                });
            }
            std::thread::sleep(POSITION_CHECK_EVERY);
        }
    }
}

/// How often [`Progress::read_through_now`] looks at the follower's
/// positions.
const POSITION_CHECK_EVERY: Duration = Duration::from_millis(10);

/// Each partition's `(low, high)` watermarks of `topic`, asked read
/// uncommitted, each request given a third of `within`: the topic's
/// partitions, its oldest offsets, its latest, and a partition left out
/// of those answers asked alone.
fn ask_ends(
    connection: &Connection,
    topic: &str,
    within: Duration,
) -> Result<HashMap<i32, (i64, i64)>, String> {
    let each = within / 3;
    if each.is_zero() {
        return Err("no time was left to ask".to_owned());
    }
    let partitions = connection
        .check_topic(topic, each)
        .map_err(|e| e.to_string())?;
    uncommitted_watermarks(connection, topic, 0..partitions as i32, each).map_err(|e| e.to_string())
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads `tables` (topic and reader, from [`open`]) to their end, handing
/// each change to `apply`, then follows them on a thread until the
/// returned [`Follower`] is dropped.
pub fn follow(
    connection: &Connection,
    mut tables: Vec<(String, TopicReader)>,
    letters: Letters,
    apply: impl Fn(Change<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Follower, FollowError> {
    let sink = Sink::new(connection, letters)?;
    for (topic, reader) in &mut tables {
        read_to_end(reader, topic, |message| {
            take(message, &apply, &sink);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            ReadToEnd::Stalled { waited, last_error } => FollowError::Stalled {
                topic: topic.clone(),
                waited,
                last_error,
            },
            ReadToEnd::Record(never) => match never {},
        })?;
    }
    sink.flush();
    tracing::info!(
        topics = ?tables.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        "tables read; following them"
    );
    let positions = Positions::default();
    for (topic, reader) in &tables {
        handed_on(&positions, topic, reader.positions());
    }
    let progress = Progress {
        connection: connection.clone(),
        topics: tables.iter().map(|(topic, _)| topic.clone()).collect(),
        positions: Arc::clone(&positions),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("tables".into())
            .spawn(move || follow_until(&stop, tables, &apply, &sink, &positions))
            .map_err(|e| FollowError::Thread(e.to_string()))?
    };
    Ok(Follower {
        stop,
        thread: Some(thread),
        progress,
    })
}

/// Records that every change of `topic` below `positions` (per partition)
/// was handed on.
fn handed_on(all: &Positions, topic: &str, positions: HashMap<i32, i64>) {
    let mut all = lock(all);
    for (partition, position) in positions {
        all.insert((topic.to_owned(), partition), position);
    }
}

/// Hands on each change as it comes, until `stop`.
fn follow_until(
    stop: &AtomicBool,
    mut tables: Vec<(String, TopicReader)>,
    apply: &impl Fn(Change<'_>) -> Result<(), String>,
    sink: &Sink,
    positions: &Positions,
) {
    // Each reader waits in turn, so the stop is seen within about this
    // much a topic.
    let wait = Duration::from_millis(50);
    'following: while !stop.load(Ordering::Relaxed) {
        for (topic, reader) in &mut tables {
            while let Some(message) = reader.next(wait) {
                if stop.load(Ordering::Relaxed) {
                    // Read and not handed on: nothing more is said past it.
                    break 'following;
                }
                match message {
                    Ok(message) => {
                        take(&message, apply, sink);
                        let next = HashMap::from([(message.partition(), message.offset() + 1)]);
                        handed_on(positions, topic, next);
                    }
                    Err(e) => tracing::warn!("reading the table topic {topic}: {e}"),
                }
            }
            // Past what the records say: the consumer steps over
            // transaction markers too.
            handed_on(positions, topic, reader.positions());
        }
        sink.poll();
    }
    sink.flush();
}

/// Hands one table record to `apply`, or sets it aside.
fn take(
    message: &BorrowedMessage<'_>,
    apply: &impl Fn(Change<'_>) -> Result<(), String>,
    sink: &Sink,
) {
    let result = Change::of(message).and_then(apply);
    let outcome = if result.is_ok() { "applied" } else { "refused" };
    metrics::counter!(
        "hashbuy_table_changes_total",
        "topic" => message.topic().to_owned(),
        "outcome" => outcome
    )
    .increment(1);
    if let Err(reason) = result {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "a table change is set aside: {reason}"
        );
        sink.send(message, reason);
    }
}

/// The dead letters of table records, through a producer of their own:
/// the instance's may be in a transaction.
struct Sink {
    producer: BaseProducer<Deliveries>,
    letters: Letters,
    record_bytes: usize,
}

impl Sink {
    fn new(connection: &Connection, letters: Letters) -> Result<Self, Failed> {
        let config = connection.config_with(&[("linger.ms", "5".to_owned())]);
        let record_bytes = record_budget(&config);
        let producer = config
            .create_with_context(Deliveries::default())
            .map_err(failed("cannot create the tables' producer"))?;
        Ok(Sink {
            producer,
            letters,
            record_bytes,
        })
    }

    fn send(&self, message: &BorrowedMessage<'_>, reason: String) {
        let letter = dead_letter_of(message, reason, self.letters.stage, self.record_bytes);
        let sent = send_waiting(
            &self.producer,
            &self.letters.topic,
            message.key(),
            &letter.encode_to_vec(),
            || false,
        );
        if let Err(e) = sent {
            tracing::error!(
                "cannot set a table record aside in {}: {e}",
                self.letters.topic
            );
        }
    }

    fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    fn flush(&self) {
        if let Err(e) = flush_promptly(&self.producer, LETTERS_WAIT) {
            tracing::error!("cannot deliver the tables' dead letters: {e}");
        }
    }
}
