//! The batch being collected, and how it is made durable as a whole: in
//! one Kafka transaction with its offsets (exactly once), or produced,
//! flushed and then its offsets committed (at least once).
//!
//! The changes to the partitions' pending purchases go to their changelog
//! in the same transaction. At least once, they are written only after the
//! batch's outputs are delivered, and the offsets committed only after
//! them; each user's record says the offset it is as of, so a crash in
//! between, which reads the batch again, reads it against state that may
//! hold some of it already: a user's records the state holds do nothing
//! again, the others are done again as the first time (see
//! [`hashbuy_core::confirm::PartitionFlow`]). Their commands and replies
//! are produced again with the same ids, which the settler and a
//! connector take once. The stream time goes last, after every user's
//! record is delivered, so it never runs ahead of a user's state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use hashbuy_core::confirm::STREAM_TIME_KEY;
use hashbuy_kafka::client::failed;
use hashbuy_kafka::driver::Member;
use hashbuy_kafka::group::moved_on;
use hashbuy_kafka::loss::{report_lost, Gap, OnDataLoss};
use hashbuy_kafka::produce::{
    self, flush_promptly, send_to_partition_waiting, send_waiting, Deliveries,
};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::run::{Config, Delivery, RunError, Summary, CALL_TIMEOUT};
use crate::stage::Matching;
use crate::worker::{Chunk, Destination};
use crate::SKIMMED;

/// The batch being collected, and the producer it goes through.
pub(crate) struct Batch {
    producer: BaseProducer<Deliveries>,
    in_transaction: bool,
    /// Next offset to commit, per partition.
    offsets: HashMap<i32, i64>,
    /// When the batch took its first chunk; `None` when empty.
    pub(crate) started: Option<Instant>,
    pub(crate) records: u64,
    commands: u64,
    replies: u64,
    dead_letters: u64,
    /// Changelog records of the pending purchases, by partition and key,
    /// the last of each kept, waiting for the batch's outputs to be
    /// delivered (at least once; exactly once they go straight into the
    /// transaction).
    changelog: BTreeMap<(i32, String), Vec<u8>>,
    skimmed: u64,
    malformed_samples: u64,
    /// Partitions whose end a worker reported since their last record.
    pub(crate) at_eof: HashSet<i32>,
    /// Records deleted unread, found in the batch's chunks: judged before
    /// the batch commits.
    gaps: Vec<Gap>,
    /// When the first record of the run was taken.
    first_record: Option<Instant>,
    /// When the last batch was committed.
    last_commit: Option<Instant>,
    /// What was committed.
    pub(crate) summary: Summary,
}

impl Batch {
    /// An empty batch, for `producer` (transactions started if exactly
    /// once).
    pub(crate) fn new(producer: BaseProducer<Deliveries>) -> Self {
        Batch {
            producer,
            in_transaction: false,
            offsets: HashMap::new(),
            started: None,
            records: 0,
            commands: 0,
            replies: 0,
            dead_letters: 0,
            changelog: BTreeMap::new(),
            skimmed: 0,
            malformed_samples: 0,
            at_eof: HashSet::new(),
            gaps: Vec::new(),
            first_record: None,
            last_commit: None,
            summary: Summary::default(),
        }
    }

    /// Whether the batch is due: full, old enough, or the input `idle`
    /// (waiting out the batch time then only delays the outputs).
    pub(crate) fn due(&self, config: &Config, idle: bool) -> bool {
        self.started.is_some_and(|s| {
            idle || s.elapsed() >= config.batch_time || self.records >= config.batch_records as u64
        })
    }

    /// What was committed over the run, and how long it was busy.
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            busy: self
                .first_record
                .zip(self.last_commit)
                .map_or(Duration::ZERO, |(first, last)| last - first),
            ..self.summary.clone()
        }
    }

    /// Produces a chunk's outputs into the batch.
    pub(crate) fn apply(&mut self, config: &Config, chunk: Chunk) -> Result<(), RunError> {
        if chunk.next_offset.is_none() {
            if chunk.eof {
                self.at_eof.insert(chunk.partition);
            }
            return Ok(());
        }
        if config.delivery == Delivery::ExactlyOnce && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(failed("cannot begin a transaction"))?;
            self.in_transaction = true;
        }
        let now = Instant::now();
        self.started.get_or_insert(now);
        self.first_record.get_or_insert(now);
        for output in &chunk.outputs {
            let topic = match output.to {
                Destination::Commands => {
                    self.commands += 1;
                    &config.topics.commands
                }
                Destination::StockRequests => {
                    self.commands += 1;
                    &config.topics.stock_requests
                }
                Destination::Replies => {
                    self.replies += 1;
                    &config.topics.replies
                }
                Destination::DeadLetters => {
                    self.dead_letters += 1;
                    &config.topics.dead_letters
                }
            };
            send_waiting(
                &self.producer,
                topic,
                output.key.as_deref(),
                &output.value,
                || false,
            )
            .map_err(failed("cannot produce"))?;
        }
        match config.delivery {
            Delivery::ExactlyOnce => {
                for (key, value) in &chunk.changelog {
                    send_changelog(&self.producer, config, chunk.partition, key, value)?;
                }
            }
            Delivery::AtLeastOnce => {
                for (key, value) in chunk.changelog {
                    self.changelog.insert((chunk.partition, key), value);
                }
            }
        }
        if let Some(next) = chunk.next_offset {
            self.offsets.insert(chunk.partition, next);
        }
        self.gaps.extend(chunk.gaps);
        self.records += chunk.records;
        self.skimmed += chunk.kinds.get(SKIMMED);
        self.malformed_samples += chunk.malformed_samples;
        if chunk.eof {
            self.at_eof.insert(chunk.partition);
        } else {
            self.at_eof.remove(&chunk.partition);
        }
        for (kind, count) in chunk.kinds.0 {
            metrics::counter!("hashbuy_matcher_records_total", "kind" => kind).increment(count);
        }
        for (decision, count) in chunk.decisions.0 {
            metrics::counter!("hashbuy_matcher_decisions_total", "decision" => decision)
                .increment(count);
        }
        let valid_samples = chunk.sampled - chunk.malformed_samples;
        metrics::counter!("hashbuy_matcher_samples_total", "result" => "valid")
            .increment(valid_samples);
        metrics::counter!("hashbuy_matcher_samples_total", "result" => "malformed")
            .increment(chunk.malformed_samples);
        Ok(())
    }

    /// Makes the batch durable; `false` if its transaction was aborted and
    /// it must be done again.
    pub(crate) fn commit(
        &mut self,
        config: &Config,
        member: &Member<Matching>,
    ) -> Result<bool, RunError> {
        if self.started.is_none() {
            return Ok(true);
        }
        // Nothing after lost data is committed unless skipping was asked.
        if config.on_data_loss == OnDataLoss::Stop {
            if let Some(gap) = self.gaps.first() {
                self.gaps.iter().for_each(report_lost);
                let error = RunError::from(gap);
                self.abort();
                return Err(error);
            }
        }
        let began = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &self.offsets {
            offsets
                .add_partition_offset(&config.topics.tweets, partition, Offset::Offset(offset))
                .map_err(failed("cannot list offsets"))?;
        }
        let committed = match config.delivery {
            Delivery::ExactlyOnce => {
                self.in_transaction = false;
                commit_transaction(&self.producer, member, &offsets)?
            }
            Delivery::AtLeastOnce => {
                self.deliver()?;
                if !self.changelog.is_empty() {
                    // One record a key: two of one key in one delivery
                    // could land out of order on a retry.
                    let (times, users): (Vec<_>, Vec<_>) = std::mem::take(&mut self.changelog)
                        .into_iter()
                        .partition(|((_, key), _)| key == STREAM_TIME_KEY);
                    for records in [users, times] {
                        for ((partition, key), value) in &records {
                            send_changelog(&self.producer, config, *partition, key, value)?;
                        }
                        self.deliver()?;
                    }
                }
                match member.commit(&offsets, CommitMode::Sync) {
                    Ok(()) => {}
                    // The batch's commands are delivered; the partitions'
                    // next owner reads its records again and produces
                    // them again, as at least once allows.
                    Err(e) if moved_on(&e) => tracing::warn!(
                        "cannot commit offsets: {e}: the group moved on; the partitions' next \
                         owner reads again from their last accepted commit and produces those \
                         commands again"
                    ),
                    Err(e) => return Err(failed("cannot commit offsets")(e).into()),
                }
                true
            }
        };
        if committed {
            metrics::histogram!("hashbuy_matcher_commit_seconds").record(began.elapsed());
            metrics::histogram!("hashbuy_matcher_batch_records").record(self.records as f64);
            metrics::counter!("hashbuy_matcher_commands_total").increment(self.commands);
            metrics::counter!("hashbuy_matcher_replies_total").increment(self.replies);
            metrics::counter!("hashbuy_matcher_dead_letters_total").increment(self.dead_letters);
            self.summary.records += self.records;
            self.summary.commands += self.commands;
            self.summary.replies += self.replies;
            self.summary.dead_letters += self.dead_letters;
            self.summary.skimmed += self.skimmed;
            self.summary.malformed_samples += self.malformed_samples;
            self.summary.batches += 1;
            // Skipped gaps count once they are committed past (an aborted
            // batch finds them again).
            for gap in &self.gaps {
                report_lost(gap);
                self.summary.lost_records += gap.records();
            }
            self.last_commit = Some(Instant::now());
        } else {
            metrics::counter!("hashbuy_matcher_batches_aborted_total").increment(1);
            self.summary.retried_batches += 1;
        }
        self.clear();
        Ok(committed)
    }

    /// Throws the batch away, aborting its transaction if one is open.
    pub(crate) fn abort(&mut self) {
        if self.in_transaction {
            if let Err(e) = self.producer.abort_transaction(CALL_TIMEOUT) {
                tracing::warn!("cannot abort the open transaction: {e}");
            }
            self.in_transaction = false;
        }
        self.clear();
    }

    /// Waits until everything produced is delivered (at least once).
    fn deliver(&self) -> Result<(), RunError> {
        deliver(&self.producer, "cannot deliver the batch")
    }

    fn clear(&mut self) {
        self.offsets.clear();
        self.changelog.clear();
        self.gaps.clear();
        self.started = None;
        self.records = 0;
        self.commands = 0;
        self.replies = 0;
        self.dead_letters = 0;
        self.skimmed = 0;
        self.malformed_samples = 0;
    }
}

/// Waits until everything `producer` queued is delivered; `what` says what
/// failed if it was not.
pub(crate) fn deliver(
    producer: &BaseProducer<Deliveries>,
    what: &'static str,
) -> Result<(), RunError> {
    flush_promptly(producer, CALL_TIMEOUT).map_err(failed(what))?;
    match producer.context().failures() {
        Some((count, first)) => Err(RunError::Undelivered { count, first }),
        None => Ok(()),
    }
}

/// Produces a changelog record of a partition's pending purchases to the
/// same partition of the changelog topic, where its next owner restores
/// them from.
fn send_changelog(
    producer: &BaseProducer<Deliveries>,
    config: &Config,
    partition: i32,
    key: &str,
    value: &[u8],
) -> Result<(), RunError> {
    send_to_partition_waiting(
        producer,
        &config.topics.pending,
        Some(partition),
        Some(key.as_bytes()),
        value,
        || false,
    )
    .map_err(|e| failed("cannot write the pending purchases' changelog")(e).into())
}

/// Sends the offsets and commits ([`hashbuy_kafka::produce::commit_transaction`]);
/// `false` if the transaction was aborted (to be done again).
fn commit_transaction(
    producer: &BaseProducer<Deliveries>,
    member: &Member<Matching>,
    offsets: &TopicPartitionList,
) -> Result<bool, RunError> {
    let metadata = member.group_metadata().ok_or(RunError::NoGroup)?;
    Ok(produce::commit_transaction(
        producer,
        member,
        &metadata,
        offsets,
        CALL_TIMEOUT,
    )?)
}
