//! Reading a whole topic outside any consumer group: every partition
//! assigned, from the beginning or the end, optionally stopping at the end
//! the topic had when reading started. For tools (`tail`, `record`), not
//! for services: it commits nothing.
//!
//! A partition counts as read to its end when the consumer has passed the
//! high watermark the broker reported at start *and* librdkafka reports
//! the partition's end (`enable.partition.eof`). Either alone is not
//! enough: tansu 0.6 reports high watermarks that count record batches,
//! not records, so the first test would stop early there. The high
//! watermark is asked read uncommitted even for a read-committed reader:
//! the last stable offset, which a read-committed ask returns, stops
//! short of what was committed after a transaction still open, so a
//! read-committed reader waits for such a transaction to end.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::client::{ConnectError, Connection, QuietContext, CONNECT_TIMEOUT};

/// The `(low, high)` watermarks of `partitions` of `topic`: where the
/// records present now begin and end; each request waits at most
/// `timeout`.
///
/// Asked in two requests a broker (the oldest offsets, then the latest),
/// not two a partition: a service starting on 128 partitions otherwise
/// waited out 256 round trips, and spent its CPU on them, before its
/// first record. A partition those requests leave without a clean answer
/// is asked on its own, as it was before: librdkafka keeps the failed
/// answer of a request it retried (a leader moving) beside the retry's,
/// and reads the failed one; and the single-partition query is also what
/// reads an empty partition a broker answers with -1.
pub fn watermarks<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    timeout: Duration,
) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
    let partitions: Vec<i32> = partitions.into_iter().collect();
    if partitions.is_empty() {
        return Ok(HashMap::new());
    }
    let low = list_offsets(consumer, topic, &partitions, Offset::Beginning, timeout)?;
    let high = list_offsets(consumer, topic, &partitions, Offset::End, timeout)?;
    partitions
        .iter()
        .map(
            |&partition| match (low.get(&partition), high.get(&partition)) {
                (Some(&low), Some(&high)) => Ok((partition, (low, high))),
                _ => consumer
                    .fetch_watermarks(topic, partition, timeout)
                    .map(|marks| (partition, marks)),
            },
        )
        .collect()
}

/// [`watermarks`] asked read uncommitted, by a client of its own: the high
/// watermark, not the last stable offset, which stops short of records
/// written after a transaction still open.
pub fn uncommitted_watermarks(
    connection: &Connection,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    timeout: Duration,
) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
    let asking: BaseConsumer<QuietContext> = connection
        .config()
        .set("isolation.level", "read_uncommitted")
        .create_with_context(QuietContext)?;
    watermarks(&asking, topic, partitions, timeout)
}

/// The offsets the broker lists for `partitions` of `topic` at `at` (the
/// oldest or the latest), in one request a broker; a partition answered
/// with an error, or not with an offset, is left out.
fn list_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: &[i32],
    at: Offset,
    timeout: Duration,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut asked = TopicPartitionList::new();
    for &partition in partitions {
        asked.add_partition_offset(topic, partition, at)?;
    }
    // Offsets "for times" -2 and -1 are Kafka's oldest and latest offsets
    // (ListOffsets), which `fetch_watermarks` asks one partition at a time.
    let listed = consumer.offsets_for_times(asked, timeout)?;
    Ok(listed
        .elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) if offset >= 0 => Some((e.partition(), offset)),
            _ => None,
        })
        .collect())
}

/// [`watermarks`] of those partitions that hold records.
pub fn nonempty_watermarks<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<HashMap<i32, (i64, i64)>, KafkaError> {
    let mut marks = watermarks(consumer, topic, partitions, CONNECT_TIMEOUT)?;
    marks.retain(|_, (low, high)| high > low);
    Ok(marks)
}

/// Where to start and when to stop.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Start at the oldest record kept, not at the end.
    pub from_beginning: bool,
    /// Stop once the records present at start are read.
    pub exit_at_end: bool,
    /// Read records of transactions not (yet) committed too.
    pub read_uncommitted: bool,
}

/// How much a reader fetches ahead of what it has handed out, where
/// librdkafka's defaults differ (`-X` overrides them):
/// `queued.max.messages.kbytes` 2 MB (librdkafka: 64 MB), and
/// `fetch.queue.backoff.ms` 10 (librdkafka: 1000), so that a full queue
/// is fetched into again as soon as it drains rather than a second later.
/// A settler's restore held some 35 MB read ahead of records it decodes
/// far slower than a broker serves them; at 2 MB its peak resident memory
/// fell by a fifth, and it took no longer (README, the settler at scale).
fn read_ahead() -> [(&'static str, String); 2] {
    [
        ("queued.max.messages.kbytes", "2048".to_owned()),
        ("fetch.queue.backoff.ms", "10".to_owned()),
    ]
}

/// A reader over all partitions of one topic.
pub struct TopicReader {
    consumer: BaseConsumer<QuietContext>,
    /// Per partition still to finish: the high watermark at start, and
    /// the offset after the last record read.
    ends: HashMap<i32, (i64, i64)>,
    /// Per partition, the oldest offset kept when reading started.
    first: HashMap<i32, i64>,
    /// Per partition read to its end, the offset below which every record
    /// was handed out.
    read_through: HashMap<i32, i64>,
    /// The partitions that started at a resume offset.
    resumed: HashSet<i32>,
    exit_at_end: bool,
}

impl TopicReader {
    /// Connects (failing within [`CONNECT_TIMEOUT`] if the brokers do not
    /// answer or the topic is missing) and assigns every partition.
    pub fn open(
        connection: &Connection,
        topic: &str,
        options: ReadOptions,
    ) -> Result<Self, ConnectError> {
        Self::open_partitions(connection, topic, None, options)
    }

    /// [`TopicReader::open`] for some partitions only (all when `None`).
    pub fn open_partitions(
        connection: &Connection,
        topic: &str,
        only: Option<&[i32]>,
        options: ReadOptions,
    ) -> Result<Self, ConnectError> {
        Self::open_resuming(connection, topic, only, &HashMap::new(), options)
    }

    /// [`TopicReader::open_partitions`], a partition in `resume` starting
    /// at the offset given there (where an earlier read got to, its
    /// [`read_through`](Self::read_through)) rather than per `options`.
    ///
    /// A resume offset the partition no longer holds (below its oldest
    /// record, or past its end: the topic was deleted and made again) is
    /// moved to the partition's oldest record (`auto.offset.reset`): the
    /// first record handed out then lies below the resume offset, which
    /// tells the caller. A resumed partition counts as read to its end
    /// once librdkafka reports the end, however little it held.
    pub fn open_resuming(
        connection: &Connection,
        topic: &str,
        only: Option<&[i32]>,
        resume: &HashMap<i32, i64>,
        options: ReadOptions,
    ) -> Result<Self, ConnectError> {
        let count = connection.check_topic(topic, CONNECT_TIMEOUT)?;
        let partitions: Vec<i32> = match only {
            Some(only) => only.to_vec(),
            None => (0..count as i32).collect(),
        };
        let consumer: BaseConsumer<QuietContext> = connection
            .config_with(&read_ahead())
            .set("group.id", format!("hashbuy-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                if options.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            )
            .set(
                "enable.partition.eof",
                if options.exit_at_end { "true" } else { "false" },
            )
            .set(
                "isolation.level",
                if options.read_uncommitted {
                    "read_uncommitted"
                } else {
                    "read_committed"
                },
            )
            .create_with_context(QuietContext)?;
        let start = if options.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let at = resume
                .get(&partition)
                .map_or(start, |&offset| Offset::Offset(offset));
            assignment.add_partition_offset(topic, partition, at)?;
        }
        let marks = if options.exit_at_end && options.from_beginning {
            // The high watermark, asked read uncommitted: read committed,
            // the broker answers with the last stable offset, short of
            // records committed after a transaction still open (a
            // member's frozen mid-batch, say), which a changelog's restore
            // must not miss. Reading to the high watermark waits for that
            // transaction to end (within its timeout).
            uncommitted_watermarks(
                connection,
                topic,
                partitions.iter().copied(),
                CONNECT_TIMEOUT,
            )?
        } else {
            HashMap::new()
        };
        let first = marks.iter().map(|(&p, &(low, _))| (p, low)).collect();
        // A partition empty at start is read through its end at once.
        let read_through = marks
            .iter()
            .filter(|&(partition, &(low, high))| high <= low && !resume.contains_key(partition))
            .map(|(&partition, &(_, high))| (partition, high))
            .collect();
        let ends = marks
            .into_iter()
            .filter_map(|(partition, (low, high))| match resume.get(&partition) {
                // Waits for librdkafka's word on the end even when the
                // watermark says nothing is new: tansu's can fall short of
                // the last offset, and a resume offset out of range is
                // read again from the beginning.
                Some(&offset) => Some((partition, (high, offset))),
                None => (high > low).then_some((partition, (high, low))),
            })
            .collect();
        consumer.assign(&assignment)?;
        Ok(TopicReader {
            consumer,
            ends,
            first,
            read_through,
            resumed: resume.keys().copied().collect(),
            exit_at_end: options.exit_at_end,
        })
    }

    /// Where each partition began when reading started (its low
    /// watermark), when opened with `from_beginning` and `exit_at_end`;
    /// empty otherwise. Above 0, the records before it were deleted
    /// (retention), which matters to a reader that needs the whole history.
    pub fn first_offsets(&self) -> &HashMap<i32, i64> {
        &self.first
    }

    /// Per partition read to its end (with `from_beginning` and
    /// `exit_at_end`), the offset below which every record was handed out:
    /// where a later read of the same partition can resume. Read
    /// committed, it stops at the last stable offset, so nothing below it
    /// can still be committed.
    pub fn read_through(&self) -> &HashMap<i32, i64> {
        &self.read_through
    }

    /// Per partition the consumer has a position in, the offset of the
    /// next record it would hand out: below it, every record was handed
    /// out (or skipped, a transaction marker). Asks librdkafka, not the
    /// broker.
    pub fn positions(&self) -> HashMap<i32, i64> {
        self.consumer
            .position()
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|e| Some((e.partition(), e.offset().to_raw()?)))
                    .filter(|&(_, offset)| offset >= 0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether everything asked for is read (only with `exit_at_end`).
    pub fn at_end(&self) -> bool {
        self.exit_at_end && self.ends.is_empty()
    }

    /// The next record, waiting at most `timeout`; `None` if none came.
    pub fn next(&mut self, timeout: Duration) -> Option<Result<BorrowedMessage<'_>, KafkaError>> {
        match self.consumer.poll(timeout)? {
            Ok(message) => {
                if let Some((_, position)) = self.ends.get_mut(&message.partition()) {
                    *position = message.offset() + 1;
                }
                Some(Ok(message))
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                // The consumer's own position also steps over transaction
                // markers, which are never delivered: on a transactional
                // topic the last record read ends short of the high
                // watermark.
                let consumed = self.consumer.position().ok().and_then(|list| {
                    list.elements()
                        .iter()
                        .find(|e| e.partition() == partition)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|&offset| offset >= 0)
                });
                if let Some(&(end, position)) = self.ends.get(&partition) {
                    if position.max(consumed.unwrap_or(0)) >= end {
                        self.ends.remove(&partition);
                        // The consumer's own position where it has one: a
                        // resumed partition that handed nothing out (moved
                        // back to the beginning of an empty one, say) has
                        // `position` still at its resume offset.
                        let through =
                            consumed.or((!self.resumed.contains(&partition)).then_some(position));
                        if let Some(through) = through {
                            self.read_through.insert(partition, through);
                        }
                    }
                }
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Why [`read_to_end`] stopped early.
#[derive(Debug)]
pub enum ReadToEnd<E> {
    /// Nothing was read for [`RESTORE_STALL`].
    Stalled {
        /// How long it read nothing.
        waited: Duration,
        /// The last error reading, if any.
        last_error: Option<String>,
    },
    /// The handler of a record failed.
    Record(E),
}

/// Reads `reader` (opened with `exit_at_end`) to its end, handing each
/// record to `each`: a state changelog's restore. Errors reading are
/// retried, the client reconnecting by itself, until [`RESTORE_STALL`]
/// passes without a record; `what` names the changelog in their warnings.
pub fn read_to_end<E>(
    reader: &mut TopicReader,
    what: &str,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), E>,
) -> Result<(), ReadToEnd<E>> {
    let mut stall = Stall::new(Instant::now());
    while !reader.at_end() {
        stall
            .check(Instant::now())
            .map_err(|(waited, last_error)| ReadToEnd::Stalled { waited, last_error })?;
        let Some(message) = reader.next(Duration::from_millis(500)) else {
            continue;
        };
        match message {
            Ok(message) => {
                stall.progressed(Instant::now());
                each(&message).map_err(ReadToEnd::Record)?;
            }
            Err(e) => {
                tracing::warn!("reading {what}: {e}; the restore goes on");
                stall.failed(e.to_string());
            }
        }
    }
    Ok(())
}

/// How long a restore may go without reading a record of the changelog
/// before it gives up: the brokers are gone, or the changelog cannot be
/// read, and the partitions cannot start without their history.
pub const RESTORE_STALL: Duration = Duration::from_secs(120);

/// Whether a restore still makes progress: errors reading a changelog are
/// retried (the client reconnects by itself) until [`RESTORE_STALL`]
/// passes without a record.
struct Stall {
    since: Instant,
    last_error: Option<String>,
}

impl Stall {
    /// A restore starting at `now`.
    fn new(now: Instant) -> Stall {
        Stall {
            since: now,
            last_error: None,
        }
    }

    /// A record was read at `now`.
    fn progressed(&mut self, now: Instant) {
        self.since = now;
        self.last_error = None;
    }

    /// Reading failed with `error` (and is retried).
    fn failed(&mut self, error: String) {
        self.last_error = Some(error);
    }

    /// How long it has waited, and the last error, once that is too long.
    fn check(&self, now: Instant) -> Result<(), (Duration, Option<String>)> {
        let waited = now.saturating_duration_since(self.since);
        if waited >= RESTORE_STALL {
            Err((waited, self.last_error.clone()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_rides_out_errors_until_it_stalls() {
        let t0 = Instant::now();
        let mut stall = Stall::new(t0);
        stall.failed("broker transport failure".into());
        assert!(
            stall.check(t0 + RESTORE_STALL / 2).is_ok(),
            "an error is retried"
        );
        stall.progressed(t0 + RESTORE_STALL / 2);
        assert!(
            stall.check(t0 + RESTORE_STALL).is_ok(),
            "a record read resets it"
        );
        stall.failed("all brokers down".into());
        let (waited, last) = stall
            .check(t0 + RESTORE_STALL * 3 / 2)
            .expect_err("too long without a record");
        assert_eq!(waited, RESTORE_STALL);
        assert_eq!(last.as_deref(), Some("all brokers down"));
    }
}
