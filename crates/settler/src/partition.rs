//! A partition's task: restore, resume, then read the partition's queue and
//! settle its commands, many in flight, a user's one after another.
//!
//! The task keeps up to [`Config::max_in_flight`](crate::run::Config)
//! commands in flight, so settling is not bounded by provider latency, but
//! queues the commands of one user behind the one being settled (they share
//! a partition, being keyed by user), so limit checks never race. An
//! [`OffsetTracker`](hashbuy_kafka::offsets::OffsetTracker) gives the offset below which every command is done,
//! which the coordinator commits; a command's offset is done only once its
//! ack is delivered, or its dead letter.

use std::collections::{hash_map, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbuy_kafka::client::CONNECT_TIMEOUT;
use hashbuy_kafka::driver::{DriverContext, Queue};
use hashbuy_kafka::lock;
use hashbuy_kafka::loss::{report_lost, Continuity, Gap, OnDataLoss, PartitionOffsets};
use hashbuy_kafka::offsets::OffsetTracker;
use hashbuy_proto::v1::{DeadLetter, PaymentCommand};
use prost::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::Message;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::entry::now_ms;
use crate::prune::prune_partition;
use crate::restore::{acked_earlier, Restore};
use crate::run::{Counted, RunError, Settling, Shared};
use crate::settle::settle;

/// How often a partition task marks in its ledger how far the ledger
/// holds the changelog (see [`crate::frontier`]), besides when it stops:
/// a settler killed reads again at its restart at most this long of its
/// own records.
const MARK_READ_THROUGH_EVERY: Duration = Duration::from_secs(10);

/// A record taken from a partition's queue, owned.
enum Taken {
    Record {
        offset: i64,
        /// The record's Kafka timestamp, ms since the epoch, if it has one.
        written_ms: Option<i64>,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    /// The queue ran dry after the records taken so far (told once until
    /// the next record).
    Dry,
    Eof,
}

/// The next record of a partition's queue, waiting for librdkafka's
/// non-empty callback when there is none. The first time the queue is
/// found empty after a record, that is said instead (`dry`).
async fn take(queue: &Queue<Settling>, arrived: &Notify, dry: &mut bool) -> Taken {
    loop {
        match queue.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                *dry = false;
                return Taken::Record {
                    offset: message.offset(),
                    written_ms: message.timestamp().to_millis(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                };
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Taken::Eof,
            Some(Err(e)) => tracing::warn!("consumer: {e}"),
            None if !*dry => {
                *dry = true;
                return Taken::Dry;
            }
            // A permit stored by a callback since the poll wakes this at
            // once, so no arrival is missed.
            None => arrived.notified().await,
        }
    }
}

/// The commands deleted (retention) before the one at `offset` was read,
/// if any ([`Continuity::read`]). The log start is asked only when the
/// offsets jump, from librdkafka's cache if it can be (the broker's answer
/// otherwise, waited for off the runtime's turn).
fn lost_before(
    continuity: &mut Continuity,
    offsets: &PartitionOffsets<DriverContext<Settling>>,
    offset: i64,
) -> Option<Gap> {
    continuity.read(offset, || {
        tokio::task::block_in_place(|| offsets.log_start(CONNECT_TIMEOUT))
    })
}

/// A piece of a partition's work: a command read at an offset, or an
/// undecided entry resumed at start (no offset).
pub(crate) struct Work {
    pub(crate) command: PaymentCommand,
    pub(crate) offset: Option<i64>,
    /// When the command's record was written (its Kafka timestamp), which
    /// tells whether an owner could have seen it fresh
    /// ([`crate::horizon::look_up_before_rejecting`]); `None` for a
    /// resumed entry, or a record without a timestamp.
    pub(crate) written_ms: Option<i64>,
}

/// What a command task reports.
pub(crate) struct Done {
    pub(crate) user: Option<String>,
    pub(crate) offset: Option<i64>,
    /// Stopped before an outcome (the partition is being revoked): the
    /// offset is not done.
    pub(crate) abandoned: bool,
}

/// Which partition task this is, and its stop signal.
pub(crate) struct PartitionRun {
    pub(crate) partition: i32,
    /// Tells this task from the partition's earlier and later ones: only
    /// the current one's offsets are committed.
    pub(crate) number: u64,
    pub(crate) stopped: watch::Receiver<bool>,
    /// Dropped once the task has queued the entries it resumes.
    pub(crate) starting: Counted,
    /// The partition's next expected offset, to find commands deleted
    /// under the reader.
    pub(crate) continuity: Continuity,
    /// Where the partition's log starts (asked when an offset jumps) and
    /// where the consumer stands at its end.
    pub(crate) offsets: PartitionOffsets<DriverContext<Settling>>,
}

/// A partition's task; see the module docs.
pub(crate) async fn partition_task(
    shared: &Arc<Shared>,
    task: PartitionRun,
    queue: Queue<Settling>,
    arrived: Arc<Notify>,
    restore: Arc<Restore>,
) -> Result<(), RunError> {
    let PartitionRun {
        partition,
        number,
        mut stopped,
        starting,
        mut continuity,
        offsets,
    } = task;
    let Some(restored) = restore.restored(shared, partition).await else {
        return Ok(());
    };
    let ledger = shared.ledger.partition(partition)?;
    let unfinished = acked_earlier(
        &ledger,
        ledger.unfinished()?,
        restore.committed.get(&partition),
    )?;
    tracing::info!(
        partition,
        changelog_from = ?restored.from,
        changelog_read = restored.read,
        restored = restored.taken,
        resuming = unfinished.len(),
        "partition ledger ready"
    );
    shared.count(|s| s.resumed += unfinished.len() as u64);

    let mut tracker = OffsetTracker::new();
    let mut users: HashMap<String, VecDeque<Work>> = HashMap::new();
    let mut running: JoinSet<Result<Done, RunError>> = JoinSet::new();
    let mut at_eof = false;
    let mut dry = false;
    let commands_stopped = stopped.clone();
    let start = |work: Work, running: &mut JoinSet<Result<Done, RunError>>| {
        running.spawn(settle(
            Arc::clone(shared),
            ledger.clone(),
            work,
            commands_stopped.clone(),
        ));
    };
    // A user's commands wait behind the one being settled: a user in
    // `users` has one running, and the others queued there.
    let enqueue = |work: Work,
                   users: &mut HashMap<String, VecDeque<Work>>,
                   running: &mut JoinSet<Result<Done, RunError>>| {
        match users.entry(work.command.user_id.clone()) {
            hash_map::Entry::Occupied(mut waiting) => waiting.get_mut().push_back(work),
            hash_map::Entry::Vacant(idle) => {
                idle.insert(VecDeque::new());
                start(work, running);
            }
        }
    };
    let mut resumed = Resumed::new(shared, unfinished.len());
    // Counted before the task stops counting as starting, so that
    // `--exit-at-end` never sees neither. Owned by this task, so that an
    // abort of it (a revocation past `REVOKE_WAIT`) aborts the pass too:
    // nothing of the partition's is sent after the hand-over has waited
    // for what was queued.
    let mut pruner = JoinSet::new();
    pruner.spawn(prune_partition(
        Arc::clone(shared),
        ledger.clone(),
        stopped.clone(),
        Counted::new(shared, |s| &s.pruning),
    ));
    drop(starting);
    for entry in unfinished {
        enqueue(
            Work {
                command: entry.command,
                offset: None,
                written_ms: None,
            },
            &mut users,
            &mut running,
        );
    }
    let mut marking = tokio::time::interval_at(
        tokio::time::Instant::now() + MARK_READ_THROUGH_EVERY,
        MARK_READ_THROUGH_EVERY,
    );
    marking.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = tracker.in_flight() < shared.config.max_in_flight;
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            _ = marking.tick() => shared.mark_read_through(partition).await?,
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let done = joined
                    .map_err(RunError::task)??;
                if done.offset.is_none() {
                    resumed.one_done();
                }
                if done.abandoned {
                    continue;
                }
                if let Some(offset) = done.offset {
                    if tracker.finish(offset).is_err() {
                        tracing::error!(partition, offset, "an offset finished twice");
                    }
                }
                if let Some(user) = done.user {
                    if let Some(waiting) = users.get_mut(&user) {
                        match waiting.pop_front() {
                            Some(next) => start(next, &mut running),
                            None => {
                                users.remove(&user);
                            }
                        }
                    }
                }
            }
            taken = take(&queue, &arrived, &mut dry), if room => match taken {
                Taken::Dry | Taken::Eof => {
                    at_eof |= matches!(taken, Taken::Eof);
                    // Everything queued was read: what lies below the
                    // position (a transaction's commit marker) is
                    // committed past, and the next command is expected
                    // there, so markers deleted while the topic sits idle
                    // are not taken for lost commands.
                    if let Some(end) = offsets.position() {
                        tracker.reached(end);
                        continuity.reached_end(end);
                    }
                }
                Taken::Record { offset, written_ms, key, value } => {
                    at_eof = false;
                    if let Some(gap) = lost_before(&mut continuity, &offsets, offset) {
                        report_lost(&gap);
                        if shared.config.on_data_loss == OnDataLoss::Stop {
                            // Nothing from the gap on is started, so none
                            // of it is committed, and the partition is not
                            // at its end: the run ends at the driver's
                            // next turn.
                            lock(&shared.at_eof).remove(&partition);
                            shared.fail(RunError::DataLoss { gap });
                            break;
                        }
                    }
                    if tracker.start(offset).is_err() {
                        tracing::error!(partition, offset, "offsets went backwards; record skipped");
                        continue;
                    }
                    shared.count(|s| s.commands += 1);
                    shared.first_read.get_or_init(Instant::now);
                    match crate::command::decode(&value) {
                        Ok(command) => enqueue(
                            Work { command, offset: Some(offset), written_ms },
                            &mut users,
                            &mut running,
                        ),
                        Err(reason) => {
                            let shared = Arc::clone(shared);
                            running.spawn(async move {
                                dead_letter(&shared, partition, offset, key, value, reason).await?;
                                Ok(Done { user: None, offset: Some(offset), abandoned: false })
                            });
                        }
                    }
                }
            },
        }
        if let Some(offset) = tracker.committable() {
            lock(&shared.done).insert(partition, (number, offset));
        }
        let mut eof = lock(&shared.at_eof);
        if at_eof && tracker.in_flight() == 0 && users.is_empty() {
            eof.insert(partition);
        } else {
            eof.remove(&partition);
        }
    }
    // Stopping: the commands in flight reach a recovery point.
    while let Some(joined) = running.join_next().await {
        if let Ok(Ok(Done {
            offset: Some(offset),
            abandoned: false,
            ..
        })) = joined
        {
            let _ = tracker.finish(offset);
        }
    }
    if let Some(offset) = tracker.committable() {
        lock(&shared.done).insert(partition, (number, offset));
    }
    shared.mark_read_through(partition).await?;
    // A pass stops at its next safe point once the partition is stopped;
    // one the run ends without is safe too (see `crate::prune`). What the
    // pass delivered meanwhile (its floor, sent again last) is marked too:
    // the mark above may name a tombstone, which compaction drops.
    if *stopped.borrow() {
        pruner.join_next().await;
        shared.mark_read_through(partition).await?;
    } else {
        pruner.abort_all();
    }
    Ok(())
}

/// The resumed entries of a partition task not yet done, counted in
/// [`Shared::resuming`] while the task lives (for `--exit-at-end`).
struct Resumed {
    shared: Arc<Shared>,
    left: usize,
}

impl Resumed {
    fn new(shared: &Arc<Shared>, left: usize) -> Resumed {
        shared.resuming.fetch_add(left, Ordering::Relaxed);
        Resumed {
            shared: Arc::clone(shared),
            left,
        }
    }

    fn one_done(&mut self) {
        if self.left > 0 {
            self.left -= 1;
            self.shared.resuming.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Resumed {
    fn drop(&mut self) {
        self.shared.resuming.fetch_sub(self.left, Ordering::Relaxed);
    }
}

/// Sets an undecodable command aside.
async fn dead_letter(
    shared: &Shared,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    reason: String,
) -> Result<(), RunError> {
    tracing::warn!(partition, offset, "{reason}; sent to dead letters");
    let letter = DeadLetter {
        topic: shared.config.topics.commands.clone(),
        partition,
        offset,
        key,
        value,
        reason,
        stage: "settle".into(),
        dead_at_ms: now_ms(),
        ..Default::default()
    };
    // Cut to what the producer may send (with the record's size and hash),
    // so a poison record near or over the limit cannot stop the settler.
    let letter = hashbuy_proto::dead_letter::fit(letter, shared.letter_bytes);
    shared
        .produce(
            &shared.config.topics.dead_letters,
            letter.key.as_deref(),
            &letter.encode_to_vec(),
            "cannot produce a dead letter",
        )
        .await?;
    shared.count(|s| s.dead_letters += 1);
    metrics::counter!("hashbuy_settler_dead_letters_total").increment(1);
    Ok(())
}
