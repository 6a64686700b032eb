//! Finding records that were deleted before they were read, without
//! relying on librdkafka's log.
//!
//! When a consumer's position is no longer on the broker (retention, or
//! the embedded broker's 5 MB a partition, deleted it first), librdkafka
//! moves the position to `auto.offset.reset` and says so only in a warning
//! log line, which a log filter of `error` never lets it produce (rdkafka
//! sets librdkafka's log level from the filter when a client is made). So
//! hashbuy looks at offsets instead, at two moments:
//!
//! - **When a partition is assigned** ([`check_starts`]): the group's
//!   committed offset is compared with the partition's log start (its low
//!   watermark). Committed below the log start means the records between
//!   were deleted unread: a [`Gap`]. A group with no committed offset on a
//!   partition whose log starts above 0 never read the records before it;
//!   they are reported as gone before the group's first read
//!   ([`Start::before_group`]), never as a loss of this group's: a new
//!   group on a topic older than its retention always starts so.
//! - **While reading** ([`Continuity`]): each partition's next expected
//!   offset is kept. Offsets may skip for harmless reasons (transaction
//!   markers, aborted transactions, compaction), so a record past the
//!   expected offset is a loss only if the partition's log start is past
//!   the expected offset too: the records in between were deleted. The log
//!   start is asked only on such a jump, and librdkafka keeps it from its
//!   last fetch response ([`cached_log_start`]), so no broker call is made
//!   per record, and usually none at all.
//!
//! What to do about a gap is the owner's policy ([`OnDataLoss`]); the
//! owner reports it with [`report_lost`] and [`report_before_group`], which
//! log it and count it under the metrics every hashbuy service shares.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

/// What to do when records were deleted before they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDataLoss {
    /// Stop with an error, committing nothing after the gap: an operator
    /// decides (a skipped record can be a lost purchase or payment).
    Stop,
    /// Log and count the loss, and go on from the oldest record left.
    Skip,
}

/// Records of one partition that were deleted before they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset lost.
    pub from: i64,
    /// One past the last offset lost: the oldest record left.
    pub to: i64,
}

impl Gap {
    /// How many offsets were lost (an upper bound of the records: some
    /// offsets may have been transaction markers).
    pub fn records(&self) -> u64 {
        u64::try_from(self.to - self.from).unwrap_or(0)
    }
}

/// Where reading a newly assigned partition starts, and what was deleted
/// before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The partition.
    pub partition: i32,
    /// The offset the first record read is expected at: the committed
    /// offset, or the log start when the group has none or its committed
    /// offset was deleted.
    pub next: i64,
    /// The group's committed offset is no longer on the broker: the
    /// records from it to the log start were deleted unread.
    pub lost: Option<Gap>,
    /// The group has no committed offset and the log starts above 0: the
    /// records before the log start were deleted before the group first
    /// read the partition. Told, never the group's loss.
    pub before_group: Option<Gap>,
}

/// Decides a partition's [`Start`] from the group's `committed` offset (if
/// any) and the partition's `(low, high)` watermarks.
///
/// A committed offset past the high watermark is taken as it is: some
/// brokers report high watermarks short of the end (tansu 0.6 counts
/// batches), and where the partition really is shorter (the topic was
/// made again) librdkafka starts over at the log start, which
/// [`Continuity::read`] reports as records read again.
pub fn start(
    topic: &str,
    partition: i32,
    committed: Option<i64>,
    (low, _high): (i64, i64),
) -> Start {
    let gap = |from: i64, to: i64| {
        (to > from).then(|| Gap {
            topic: topic.to_owned(),
            partition,
            from,
            to,
        })
    };
    match committed {
        None => Start {
            partition,
            next: low,
            lost: None,
            before_group: gap(0, low),
        },
        Some(committed) if committed < low => Start {
            partition,
            next: low,
            lost: gap(committed, low),
            before_group: None,
        },
        Some(committed) => Start {
            partition,
            next: committed,
            lost: None,
            before_group: None,
        },
    }
}

/// The [`Start`] of each of `partitions` of `topic`, as assigned to
/// `consumer`'s group: one request for the committed offsets and two a
/// broker for the watermarks ([`crate::reader::watermarks`]), waiting at
/// most `timeout` for each.
pub fn check_starts<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<Start>> {
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    let committed = |partition: i32| {
        committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
    };
    let marks = crate::reader::watermarks(consumer, topic, partitions.iter().copied(), timeout)?;
    partitions
        .iter()
        .map(|&partition| {
            // Never a partition left unchecked: its deletions would go
            // unreported.
            let &marks = marks.get(&partition).ok_or(KafkaError::OffsetFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownPartition,
            ))?;
            Ok(start(topic, partition, committed(partition), marks))
        })
        .collect()
}

/// Follows one partition's offsets as its records are read, to find the
/// records that were deleted under the reader; see the module docs.
#[derive(Debug, Clone)]
pub struct Continuity {
    topic: String,
    partition: i32,
    /// The offset the next record is expected at; `None` until known.
    next: Option<i64>,
}

impl Continuity {
    /// Follows `partition` of `topic`, whose next record is expected at
    /// `next` (a [`Start::next`]; `None` if unknown, when the first record
    /// read is taken as expected).
    pub fn new(topic: &str, partition: i32, next: Option<i64>) -> Self {
        Continuity {
            topic: topic.to_owned(),
            partition,
            next,
        }
    }

    /// A record at `offset` was read. `log_start` tells the partition's
    /// log start; it is asked only when `offset` is past the expected
    /// offset. The records deleted before this one was read, if any.
    pub fn read(&mut self, offset: i64, log_start: impl FnOnce() -> Option<i64>) -> Option<Gap> {
        let gap = match self.next {
            Some(next) if offset > next => match log_start() {
                // Everything from `next` up to the log start was deleted;
                // past `offset` is not this gap's (that record was read).
                Some(low) if low > next => Some(Gap {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    from: next,
                    to: low.min(offset),
                }),
                _ => None,
            },
            _ => None,
        };
        if let Some(next) = self.next.filter(|&next| offset < next) {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                expected = next,
                offset,
                "the partition's position moved back (it is shorter than where reading \
                 stopped, e.g. made again): its records from here are read again"
            );
        }
        self.next = Some(offset + 1);
        gap
    }

    /// The reader reached the partition's end and stands at `end`, past
    /// any transaction marker there: the next record is expected at `end`.
    /// Without this, a partition whose last transaction's commit marker
    /// was deleted while it sat idle (retention deletes whole segments)
    /// would show its next record past the log start, as if records had
    /// been lost.
    pub fn reached_end(&mut self, end: i64) {
        self.next = Some(self.next.map_or(end, |next| next.max(end)));
    }
}

/// The log start librdkafka saw in its last fetch response for
/// `partition` of `topic`, without asking the broker; `None` when it has
/// none (nothing fetched yet, an error answered, or a broker too old to
/// say).
pub fn cached_log_start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed;
    // librdkafka only reads `topic` (a NUL-terminated string that outlives
    // the call) and writes the two integers, under the partition's lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0)
        .then_some(low)
}

/// The log start of `partition` of `topic`: librdkafka's cached one
/// ([`cached_log_start`]), else the broker's answer within `timeout`;
/// `None` if neither is to be had.
pub fn log_start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Option<i64> {
    cached_log_start(consumer, topic, partition).or_else(|| {
        consumer
            .fetch_watermarks(topic, partition, timeout)
            .map(|(low, _)| low)
            .map_err(|e| {
                tracing::warn!(
                    topic,
                    partition,
                    "cannot read the log start to check for lost data: {e}"
                )
            })
            .ok()
    })
}

/// Where a member's partition stands, asked from the partition's worker:
/// its log start, when its offsets jump ([`Continuity::read`]), and the
/// consumer's position once its end was read ([`Continuity::reached_end`]).
/// It holds the consumer weakly: workers never keep it alive.
pub struct PartitionOffsets<C: ConsumerContext> {
    consumer: Weak<BaseConsumer<C>>,
    topic: String,
    partition: i32,
}

impl<C: ConsumerContext> PartitionOffsets<C> {
    /// `partition` of `topic`, as `consumer` knows it.
    pub fn new(consumer: &Arc<BaseConsumer<C>>, topic: &str, partition: i32) -> Self {
        PartitionOffsets {
            consumer: Arc::downgrade(consumer),
            topic: topic.to_owned(),
            partition,
        }
    }

    /// The partition's log start ([`log_start`]); `None` if unknown or the
    /// consumer is gone.
    pub fn log_start(&self, timeout: Duration) -> Option<i64> {
        let consumer = self.consumer.upgrade()?;
        log_start(&consumer, &self.topic, self.partition, timeout)
    }

    /// The consumer's position in the partition: one past the last record
    /// taken from its queue, and, once the queue ran dry or the end was
    /// read, past any transaction marker there (one past the last record
    /// is short of it on a topic written in transactions). `None` if
    /// unknown or the consumer is gone. Cheap enough for every time a
    /// queue runs dry: one partition is looked up, not the assignment.
    pub fn position(&self) -> Option<i64> {
        let consumer = self.consumer.upgrade()?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, self.partition);
        // SAFETY: the client pointer is valid while `consumer` is held;
        // librdkafka fills in the offsets of the list it is given, which
        // `list` owns for the call.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_position(consumer.client().native_ptr(), list.ptr())
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        match list.find_partition(&self.topic, self.partition)?.offset() {
            Offset::Offset(end) => Some(end),
            _ => None,
        }
    }
}

/// The records of each partition deleted between two looks at its
/// watermarks (`before` and `after`, as [`crate::reader::watermarks`]
/// gives them): a producer that filled a partition past its retention
/// (`hashbuy replay` into the embedded broker) tells so with these.
pub fn deleted_between(
    topic: &str,
    before: &HashMap<i32, (i64, i64)>,
    after: &HashMap<i32, (i64, i64)>,
) -> Vec<Gap> {
    let mut gaps: Vec<Gap> = after
        .iter()
        .filter_map(|(&partition, &(low, _))| {
            let (from, _) = before.get(&partition).copied().unwrap_or((0, 0));
            (low > from).then(|| Gap {
                topic: topic.to_owned(),
                partition,
                from,
                to: low,
            })
        })
        .collect();
    gaps.sort_by_key(|g| g.partition);
    gaps
}

/// Logs a gap as an error and counts it in
/// `hashbuy_data_loss_records_total{topic, partition}`.
pub fn report_lost(gap: &Gap) {
    metrics::counter!(
        "hashbuy_data_loss_records_total",
        "topic" => gap.topic.clone(),
        "partition" => gap.partition.to_string()
    )
    .increment(gap.records());
    tracing::error!(
        topic = %gap.topic,
        partition = gap.partition,
        from = gap.from,
        to = gap.to,
        lost = gap.records(),
        "data lost: records were deleted before they were read"
    );
}

/// Logs, as a warning, what was deleted before a new group first read a
/// partition ([`Start::before_group`]), and counts it in
/// `hashbuy_data_loss_before_group_records_total{topic, partition}`.
pub fn report_before_group(gap: &Gap) {
    metrics::counter!(
        "hashbuy_data_loss_before_group_records_total",
        "topic" => gap.topic.clone(),
        "partition" => gap.partition.to_string()
    )
    .increment(gap.records());
    tracing::warn!(
        "{} partition {}: {} records (offsets {}..{}) were deleted before this group first \
         read it (retention); it starts at the oldest record left",
        gap.topic,
        gap.partition,
        gap.records(),
        gap.from,
        gap.to
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(from: i64, to: i64) -> Option<Gap> {
        Some(Gap {
            topic: "t".into(),
            partition: 3,
            from,
            to,
        })
    }

    #[test]
    fn markers_deleted_after_the_end_was_read_are_no_loss() {
        // A transaction's last record at 0, its commit marker at 1; the
        // reader read 0 and reached the end, where its position is 2. The
        // partition then sat idle until retention deleted everything, so
        // the log starts at 2 when the next record, at 2, arrives.
        let mut continuity = Continuity::new("t", 3, Some(0));
        assert_eq!(continuity.read(0, || None), None);
        continuity.reached_end(2);
        assert_eq!(continuity.read(2, || Some(2)), None);
        // Records deleted after that are still found.
        continuity.reached_end(3);
        assert_eq!(continuity.read(9, || Some(7)), gap(3, 7));
    }

    #[test]
    fn a_start_compares_the_committed_offset_with_the_log_start() {
        let at = |committed, marks| start("t", 3, committed, marks);
        // Committed and still there.
        assert_eq!(at(Some(10), (5, 20)).next, 10);
        assert_eq!(at(Some(10), (5, 20)).lost, None);
        assert_eq!(at(Some(20), (5, 20)).lost, None);
        // Committed, then deleted unread.
        let deleted = at(Some(10), (15, 20));
        assert_eq!((deleted.next, deleted.lost), (15, gap(10, 15)));
        assert_eq!(deleted.before_group, None);
        // A new group on a log starting above 0 is told, never stopped.
        let fresh = at(None, (4198, 6000));
        assert_eq!((fresh.next, fresh.lost), (4198, None));
        assert_eq!(fresh.before_group, gap(0, 4198));
        assert_eq!(at(None, (0, 6000)).before_group, None);
        // Past the high watermark (a broker reporting it short, or a topic
        // made again): taken as it is, nothing lost.
        let past = at(Some(50), (0, 20));
        assert_eq!((past.next, past.lost, past.before_group), (50, None, None));
    }

    #[test]
    fn a_jump_is_a_loss_only_when_the_log_start_passed_the_expected_offset() {
        let mut c = Continuity::new("t", 3, Some(10));
        let never = || -> Option<i64> { panic!("no jump, no question") };
        assert_eq!(c.read(10, never), None);
        assert_eq!(c.read(11, never), None);
        // A transaction marker at 12: the log still starts before it.
        assert_eq!(c.read(13, || Some(0)), None);
        // Retention deleted 14..40 while the reader was away.
        assert_eq!(c.read(40, || Some(40)), gap(14, 40));
        // The log start moved past the record read: only up to it is this
        // gap's.
        assert_eq!(c.read(45, || Some(60)), gap(41, 45));
        // Unknown log start: nothing can be said.
        assert_eq!(c.read(50, || None), None);
        // Back to an earlier offset (a rewind): no loss.
        assert_eq!(c.read(20, never), None);
        assert_eq!(c.read(21, never), None);
        assert_eq!(gap(14, 40).map(|g| g.records()), Some(26));
    }

    #[test]
    fn what_was_deleted_between_two_looks() {
        let before = HashMap::from([(0, (0, 100)), (1, (50, 60)), (2, (0, 0))]);
        let after = HashMap::from([(0, (0, 200)), (1, (70, 90)), (2, (10, 20))]);
        let gaps = deleted_between("t", &before, &after);
        let found: Vec<(i32, i64, i64)> =
            gaps.iter().map(|g| (g.partition, g.from, g.to)).collect();
        assert_eq!(found, [(1, 50, 70), (2, 0, 10)]);
    }

    #[test]
    fn an_unknown_start_takes_the_first_record_as_expected() {
        let mut c = Continuity::new("t", 3, None);
        assert_eq!(c.read(500, || Some(500)), None);
        assert_eq!(c.read(501, || panic!("no jump")), None);
    }
}
