//! The matcher on Kafka: consume tweets, produce commands and dead
//! letters, commit offsets — in batches, a worker per partition.
//!
//! # Concurrency
//!
//! - **A worker per assigned partition**, run on a few threads
//!   ([`Config::workers`], a [`Pool`]). Each reads its partition's own
//!   queue (split from the consumer's main queue, see
//!   [`hashbuy_kafka::group`]), decodes and decides records in offset
//!   order, encodes the outputs, and sends them in chunks over one bounded
//!   channel. The channel is the backpressure: when the coordinator falls
//!   behind, workers block, stop polling, and librdkafka stops fetching
//!   once its read-ahead queue is full.
//! - **One coordinator** (the thread calling [`run`]) owns the producer and
//!   drives the consumer: it polls the main queue (rebalances and errors
//!   only), takes chunks, produces their outputs, and makes each batch (up
//!   to [`Config::batch_records`] records or [`Config::batch_time`], or
//!   what came before the input paused for 20 ms) durable as a whole:
//!   - **Exactly once** (default): the batch's outputs and its offsets go in
//!     one Kafka transaction (`send_offsets_to_transaction` with the group's
//!     metadata, so a member that lost its partitions in a rebalance cannot
//!     commit them). Readers with `read_committed` see each batch whole or
//!     not at all. If a transaction fails in a way that can be aborted, it is
//!     aborted, the workers are restarted from the committed offsets, and
//!     the batch is done again; fatal errors (a fenced producer: another
//!     matcher with the same transactional id) stop the matcher.
//!   - **At least once** (brokers without transactions): the outputs are
//!     produced and flushed, and only then the offsets committed. A crash in
//!     between repeats the batch; the settler's idempotency (command ids)
//!     makes a repeated command harmless.
//! - **Rebalances** run inside the coordinator's poll. Before partitions
//!   are revoked, their workers are stopped, what they finished is produced
//!   and the batch committed; only then does the revocation go on, so the
//!   next owner starts exactly where this one stopped.
//! - **Lost data** (records deleted by retention before they were read)
//!   is found from offsets, never from librdkafka's log, by
//!   [`hashbuy_kafka::loss`]: at assignment, the committed offset against
//!   the log start; while reading, each worker's next expected offset
//!   against the log start when a record jumps past it. It is never passed
//!   over in silence: it is logged with the offsets lost, counted, and by
//!   default stops the matcher before anything after it is committed
//!   ([`OnDataLoss`]). A new group (nothing committed) on a partition
//!   whose log starts above 0 is told how many records were deleted before
//!   it, and goes on.
//! - **Poison records** never stop it: a dead letter is fitted to the
//!   producer's record limit ([`hashbuy_proto::dead_letter::fit`]), its
//!   payload cut if need be, with the original size and SHA-256.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbuy_kafka::client::{failed, ConnectError, Connection, Failed, CONNECT_TIMEOUT};
use hashbuy_kafka::group::{
    consumed_to, ends_at_start, member_settings, serve_main_queue, Assignment, GroupConsumer,
    GroupContext, LogStarts, Queue,
};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::lock;
use hashbuy_kafka::loss::{self, report_before_group, report_lost, Continuity, Gap};
use hashbuy_kafka::pool::{PartitionWork, Pool, Stopping};
use hashbuy_kafka::produce::{flush_promptly, record_budget, send_waiting, Deliveries};
use hashbuy_proto::dead_letter;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::statistics::Statistics;
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

/// What to do when records were deleted before the matcher read them
/// (the policy both services share).
pub use hashbuy_kafka::loss::OnDataLoss;

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
    /// Tells matchers of one group apart: part of the transactional id and
    /// of the static group membership.
    pub instance: String,
    /// What to do about records deleted before they were read.
    pub on_data_loss: OnDataLoss,
    /// Threads that read, decode and decide (the partitions are shared
    /// among them); besides them, one thread commits.
    pub workers: usize,
}

/// The default of [`Config::workers`]: one thread a CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Counts of a run: what was committed.
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
    /// Records lost to retention and skipped (`--on-data-loss skip`).
    pub lost_records: u64,
    /// Records deleted before this group first read their partition (a new
    /// group on a log that starts above 0): told, not lost by this group.
    pub deleted_before_group: u64,
    /// From the first record consumed to the last batch committed (the
    /// group join before and the shutdown after excluded): what throughput
    /// is measured over.
    pub busy: Duration,
}

/// Why the matcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A Kafka operation failed.
    #[error(transparent)]
    Kafka(#[from] Failed),
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
    /// Records were deleted from the broker before the matcher read them.
    #[error(
        "data lost: {topic} partition {partition} offsets {from}..{to} were deleted before \
         they were read (retention); nothing after them was committed. Restart with \
         --on-data-loss skip to go on without them"
    )]
    DataLoss {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset lost.
        from: i64,
        /// One past the last offset lost: the oldest record left.
        to: i64,
    },
    /// A worker thread panicked: a bug.
    #[error("a worker thread panicked")]
    WorkerPanicked,
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {0}")]
    Threads(std::io::Error),
}

impl From<&Gap> for RunError {
    fn from(gap: &Gap) -> Self {
        RunError::DataLoss {
            topic: gap.topic.clone(),
            partition: gap.partition,
            from: gap.from,
            to: gap.to,
        }
    }
}

/// How long one transactional or commit call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Most records a worker puts in one chunk.
const CHUNK_RECORDS: usize = 512;

/// Chunks waiting for the coordinator; beyond this, workers wait.
const CHUNKS_QUEUED: usize = 64;

/// How long the matcher waits to join its group before saying so (and
/// again after each such interval).
const JOIN_WARNING: Duration = Duration::from_secs(30);

/// How often the coordinator serves the consumer's main queue at least.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Runs the matcher until `stop` is raised or, with `exit_at_end`, the
/// group has consumed what the topic held at start. `health` is told when
/// the matcher has joined its group and beats on every turn.
pub fn run(
    matcher: Arc<Matcher>,
    config: &Config,
    stop: &AtomicBool,
    health: &Health,
) -> Result<Summary, RunError> {
    let partitions = config
        .connection
        .check_topic(&config.tweets_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.commands_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.dead_letters_topic, CONNECT_TIMEOUT)?;

    let mut producer_settings = vec![("linger.ms", "5".to_owned())];
    if config.delivery == Delivery::ExactlyOnce {
        producer_settings.push((
            "transactional.id",
            format!("hashbuy-matcher-{}-{}", config.group, config.instance),
        ));
    }
    let producer_config = config.connection.config_with(&producer_settings);
    // Dead letters are cut to what this producer may send, so a poison
    // record near or over the limit cannot stop the matcher.
    let letter_bytes = record_budget(&producer_config);
    let producer: BaseProducer<Deliveries> = producer_config
        .create_with_context(Deliveries::default())
        .map_err(failed("cannot create the producer"))?;
    if config.delivery == Delivery::ExactlyOnce {
        producer.init_transactions(CALL_TIMEOUT).map_err(failed(
            "cannot start transactions (a broker without them needs --delivery at-least-once)",
        ))?;
    }

    let (sender, receiver) = sync_channel(CHUNKS_QUEUED);
    let pool = Pool::new(config.workers, "match").map_err(RunError::Threads)?;
    let members = Members {
        matcher,
        config: config.clone(),
        letter_bytes,
        sender,
        receiver: Mutex::new(receiver),
        pool,
        batch: Mutex::new(Batch::new(producer)),
        failure: Mutex::new(None),
        joined: AtomicBool::new(false),
    };
    let mut consumer_settings =
        member_settings(&config.group, &config.instance, config.exit_at_end);
    // Per-partition lag for the metrics.
    consumer_settings.push(("statistics.interval.ms", "5000".to_owned()));
    let consumer = GroupContext::subscribe(
        &config.connection.config_with(&consumer_settings),
        &config.tweets_topic,
        members,
    )
    .map_err(failed("cannot create the consumer"))?;

    let ends = ends_at_start(
        &consumer,
        &config.tweets_topic,
        partitions,
        config.exit_at_end,
    )
    .map_err(failed("cannot read the end of the tweets topic"))?;

    let result = coordinate(&consumer, config, &ends, stop, health);
    health.set_ready(false);
    let members = &consumer.context().assignment;
    // Whatever happened, no worker outlives the run (they hold the
    // consumer).
    let finished = match result {
        Ok(()) => members.finish(&consumer),
        Err(e) => {
            members.discard(members.stop_workers(None));
            Err(e)
        }
    };
    let summary = {
        let batch = members.lock_batch();
        Summary {
            busy: batch
                .first_record
                .zip(batch.last_commit)
                .map_or(Duration::ZERO, |(first, last)| last - first),
            ..batch.summary.clone()
        }
    };
    drop(consumer);
    finished.map(|()| summary)
}

/// The coordinator's loop; see the module docs.
fn coordinate(
    consumer: &Arc<GroupConsumer<Members>>,
    config: &Config,
    ends: &HashMap<i32, i64>,
    stop: &AtomicBool,
    health: &Health,
) -> Result<(), RunError> {
    let members = &consumer.context().assignment;
    let mut checked_end = Instant::now();
    let started = Instant::now();
    let mut warn_unjoined_at = JOIN_WARNING;
    while !stop.load(Ordering::Relaxed) {
        health.beat();
        serve_main_queue(consumer, Duration::ZERO).map_err(failed("the consumer failed"))?;
        members.take_failure()?;
        let joined = members.joined.load(Ordering::Relaxed);
        health.set_ready(joined);
        if !joined && started.elapsed() >= warn_unjoined_at {
            tracing::warn!(
                group = %config.group,
                waited_s = started.elapsed().as_secs(),
                "still waiting for the group to assign partitions; a dead member of the \
                 group may hold them until its session times out"
            );
            warn_unjoined_at += JOIN_WARNING;
        }

        let received = members.lock_receiver().recv_timeout(POLL_EVERY);
        let mut batch = members.lock_batch();
        // A batch ends when full, when old enough, or when the input pauses:
        // waiting out the batch time then only delays the outputs.
        let idle = match received {
            Ok(chunk) => {
                members.apply(&mut batch, chunk)?;
                false
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => unreachable!("members holds a sender"),
        };
        let due = batch.started.is_some_and(|s| {
            idle || s.elapsed() >= config.batch_time || batch.records >= config.batch_records as u64
        });
        if due && !members.commit(consumer, &mut batch)? {
            drop(batch);
            members.redo(consumer)?;
            continue;
        }
        if config.exit_at_end && (due || checked_end.elapsed() >= config.batch_time) {
            checked_end = Instant::now();
            if batch.started.is_none()
                && consumed_to(consumer.as_ref(), &config.tweets_topic, ends, &batch.at_eof)
                    .map_err(failed("cannot read committed offsets"))?
            {
                break;
            }
        }
    }
    Ok(())
}

/// What a worker did with a run of records of its partition.
#[derive(Debug, Default)]
struct Chunk {
    partition: i32,
    /// One past the last record of the chunk, when it has records.
    next_offset: Option<i64>,
    records: u64,
    outputs: Vec<Produced>,
    /// Records by kind, and decisions, for the metrics.
    kinds: Tally,
    decisions: Tally,
    /// The worker reached the end of its partition after these records.
    eof: bool,
    /// Records deleted before they were read, found among these.
    gaps: Vec<Gap>,
}

/// An encoded output record.
#[derive(Debug)]
struct Produced {
    command: bool,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// Counts by a fixed name; a handful of names, so a vector.
#[derive(Debug, Default)]
struct Tally(Vec<(&'static str, u64)>);

impl Tally {
    fn add(&mut self, name: &'static str) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => self.0.push((name, 1)),
        }
    }
}

/// The batch being collected, and the producer it goes through.
struct Batch {
    producer: BaseProducer<Deliveries>,
    in_transaction: bool,
    /// Next offset to commit, per partition.
    offsets: HashMap<i32, i64>,
    /// When the batch took its first chunk; `None` when empty.
    started: Option<Instant>,
    records: u64,
    commands: u64,
    dead_letters: u64,
    /// Partitions whose end a worker reported since their last record.
    at_eof: HashSet<i32>,
    /// Records deleted unread, found in the batch's chunks: judged before
    /// the batch commits.
    gaps: Vec<Gap>,
    /// Partitions whose records deleted before the group's first read were
    /// told already (a redo checks them again).
    told_before_group: HashSet<i32>,
    /// When the first record of the run was taken.
    first_record: Option<Instant>,
    /// When the last batch was committed.
    last_commit: Option<Instant>,
    /// What was committed.
    summary: Summary,
}

impl Batch {
    fn new(producer: BaseProducer<Deliveries>) -> Self {
        Batch {
            producer,
            in_transaction: false,
            offsets: HashMap::new(),
            started: None,
            records: 0,
            commands: 0,
            dead_letters: 0,
            at_eof: HashSet::new(),
            gaps: Vec::new(),
            told_before_group: HashSet::new(),
            first_record: None,
            last_commit: None,
            summary: Summary::default(),
        }
    }

    fn clear(&mut self) {
        self.offsets.clear();
        self.gaps.clear();
        self.started = None;
        self.records = 0;
        self.commands = 0;
        self.dead_letters = 0;
    }
}

/// The coordinator's state, shared with the consumer's rebalance
/// callbacks (which run on the coordinator's thread, inside its poll, so
/// no lock is held across a poll).
struct Members {
    matcher: Arc<Matcher>,
    config: Config,
    /// What a dead letter may take of a record ([`record_budget`]).
    letter_bytes: usize,
    sender: SyncSender<Chunk>,
    receiver: Mutex<Receiver<Chunk>>,
    /// The partitions' workers.
    pool: Pool<GroupContext<Members>, Job>,
    batch: Mutex<Batch>,
    /// An error met inside a callback, for the coordinator to return.
    failure: Mutex<Option<RunError>>,
    /// The first assignment (possibly empty) has happened.
    joined: AtomicBool,
}

impl Members {
    fn lock_batch(&self) -> MutexGuard<'_, Batch> {
        lock(&self.batch)
    }

    fn lock_receiver(&self) -> MutexGuard<'_, Receiver<Chunk>> {
        lock(&self.receiver)
    }

    fn take_failure(&self) -> Result<(), RunError> {
        lock(&self.failure).take().map_or(Ok(()), Err)
    }

    fn fail(&self, error: RunError) {
        tracing::error!("{error}");
        lock(&self.failure).get_or_insert(error);
    }

    /// Checks where the partitions of `queues` start
    /// ([`loss::check_starts`]), acts on what was deleted before, and
    /// starts a worker for each queue, expecting its first record there.
    fn start(&self, consumer: &GroupConsumer<Members>, queues: Vec<(i32, Queue<Members>)>) {
        let partitions: Vec<i32> = queues.iter().map(|(p, _)| *p).collect();
        let next = match loss::check_starts(
            consumer,
            &self.config.tweets_topic,
            &partitions,
            CALL_TIMEOUT,
        ) {
            Ok(starts) => self.judge_starts(starts),
            Err(source) => {
                // Unchecked, a deleted stretch would pass unnoticed.
                self.fail(RunError::Kafka(Failed {
                    what: "cannot check the assigned partitions for lost data",
                    source,
                }));
                HashMap::new()
            }
        };
        let log_starts = consumer.context().log_starts();
        for (partition, queue) in queues {
            let job = Job {
                partition,
                topic: self.config.tweets_topic.clone(),
                matcher: Arc::clone(&self.matcher),
                continuity: Continuity::new(
                    &self.config.tweets_topic,
                    partition,
                    next.get(&partition).copied(),
                ),
                log_starts: log_starts.clone(),
                letter_bytes: self.letter_bytes,
                sender: self.sender.clone(),
                chunk: Chunk {
                    partition,
                    ..Chunk::default()
                },
                outputs: Vec::new(),
            };
            self.pool.add(partition, queue, job);
        }
        metrics::gauge!("hashbuy_matcher_partitions_assigned").set(self.pool.len() as f64);
    }

    /// Acts on what was deleted before each newly assigned partition's
    /// start; the offset each one's first record is expected at.
    fn judge_starts(&self, starts: Vec<loss::Start>) -> HashMap<i32, i64> {
        let mut batch = self.lock_batch();
        let mut next = HashMap::new();
        for start in starts {
            if let Some(gap) = &start.before_group {
                if batch.told_before_group.insert(start.partition) {
                    report_before_group(gap);
                    batch.summary.deleted_before_group += gap.records();
                }
            }
            if let Some(gap) = &start.lost {
                report_lost(gap);
                match self.config.on_data_loss {
                    // Nothing of the partition is committed: the run ends
                    // at the coordinator's next turn.
                    OnDataLoss::Stop => self.fail(gap.into()),
                    OnDataLoss::Skip => batch.summary.lost_records += gap.records(),
                }
            }
            next.insert(start.partition, start.next);
        }
        next
    }

    /// Stops the workers of `partitions` (all when `None`); they hand over
    /// what they finished.
    fn stop_workers(&self, partitions: Option<&[i32]>) -> Stopping {
        let stopping = self.pool.stop(partitions);
        metrics::gauge!("hashbuy_matcher_partitions_assigned").set(self.pool.len() as f64);
        stopping
    }

    /// Takes chunks into the batch until the workers being stopped are
    /// gone (they may be waiting to send), then takes what is left queued.
    fn drain(&self, batch: &mut Batch, mut stopping: Stopping) -> Result<(), RunError> {
        let receiver = self.lock_receiver();
        while !stopping.finished().map_err(|_| RunError::WorkerPanicked)? {
            if let Ok(chunk) = receiver.recv_timeout(Duration::from_millis(1)) {
                self.apply(batch, chunk)?;
            }
        }
        while let Ok(chunk) = receiver.try_recv() {
            self.apply(batch, chunk)?;
        }
        Ok(())
    }

    /// Waits for the workers being stopped, throwing their work away.
    fn discard(&self, mut stopping: Stopping) {
        let receiver = self.lock_receiver();
        while let Ok(false) = stopping.finished() {
            let _ = receiver.recv_timeout(Duration::from_millis(1));
        }
        while receiver.try_recv().is_ok() {}
    }

    /// Produces a chunk's outputs into the batch.
    fn apply(&self, batch: &mut Batch, chunk: Chunk) -> Result<(), RunError> {
        if chunk.next_offset.is_none() {
            if chunk.eof {
                batch.at_eof.insert(chunk.partition);
            }
            return Ok(());
        }
        if self.config.delivery == Delivery::ExactlyOnce && !batch.in_transaction {
            batch
                .producer
                .begin_transaction()
                .map_err(failed("cannot begin a transaction"))?;
            batch.in_transaction = true;
        }
        let now = Instant::now();
        batch.started.get_or_insert(now);
        batch.first_record.get_or_insert(now);
        for output in &chunk.outputs {
            let topic = if output.command {
                batch.commands += 1;
                &self.config.commands_topic
            } else {
                batch.dead_letters += 1;
                &self.config.dead_letters_topic
            };
            send_waiting(
                &batch.producer,
                topic,
                output.key.as_deref(),
                &output.value,
                || false,
            )
            .map_err(failed("cannot produce"))?;
        }
        if let Some(next) = chunk.next_offset {
            batch.offsets.insert(chunk.partition, next);
        }
        batch.gaps.extend(chunk.gaps);
        batch.records += chunk.records;
        if chunk.eof {
            batch.at_eof.insert(chunk.partition);
        } else {
            batch.at_eof.remove(&chunk.partition);
        }
        for (kind, count) in chunk.kinds.0 {
            metrics::counter!("hashbuy_matcher_records_total", "kind" => kind).increment(count);
        }
        for (decision, count) in chunk.decisions.0 {
            metrics::counter!("hashbuy_matcher_decisions_total", "decision" => decision)
                .increment(count);
        }
        Ok(())
    }

    /// Makes the batch durable; `false` if its transaction was aborted and
    /// it must be done again.
    fn commit(
        &self,
        consumer: &GroupConsumer<Members>,
        batch: &mut Batch,
    ) -> Result<bool, RunError> {
        if batch.started.is_none() {
            return Ok(true);
        }
        // Nothing after lost data is committed unless skipping was asked.
        if self.config.on_data_loss == OnDataLoss::Stop {
            if let Some(gap) = batch.gaps.first() {
                batch.gaps.iter().for_each(report_lost);
                let error = RunError::from(gap);
                if batch.in_transaction {
                    let _ = batch.producer.abort_transaction(CALL_TIMEOUT);
                    batch.in_transaction = false;
                }
                // Forgotten, so the commit on the way out (the consumer's
                // close revokes its partitions) has nothing to commit.
                batch.clear();
                return Err(error);
            }
        }
        let began = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &batch.offsets {
            offsets
                .add_partition_offset(&self.config.tweets_topic, partition, Offset::Offset(offset))
                .map_err(failed("cannot list offsets"))?;
        }
        let committed = match self.config.delivery {
            Delivery::ExactlyOnce => {
                batch.in_transaction = false;
                commit_transaction(&batch.producer, consumer, &offsets)?
            }
            Delivery::AtLeastOnce => {
                flush_promptly(&batch.producer, CALL_TIMEOUT)
                    .map_err(failed("cannot deliver the batch"))?;
                if let Some((count, first)) = batch.producer.context().failures() {
                    return Err(RunError::Undelivered { count, first });
                }
                consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(failed("cannot commit offsets"))?;
                true
            }
        };
        if committed {
            metrics::histogram!("hashbuy_matcher_commit_seconds").record(began.elapsed());
            metrics::histogram!("hashbuy_matcher_batch_records").record(batch.records as f64);
            metrics::counter!("hashbuy_matcher_commands_total").increment(batch.commands);
            metrics::counter!("hashbuy_matcher_dead_letters_total").increment(batch.dead_letters);
            batch.summary.records += batch.records;
            batch.summary.commands += batch.commands;
            batch.summary.dead_letters += batch.dead_letters;
            batch.summary.batches += 1;
            // Skipped gaps count once they are committed past (an aborted
            // batch finds them again).
            for gap in &batch.gaps {
                report_lost(gap);
                batch.summary.lost_records += gap.records();
            }
            batch.last_commit = Some(Instant::now());
        } else {
            metrics::counter!("hashbuy_matcher_batches_aborted_total").increment(1);
            batch.summary.retried_batches += 1;
        }
        batch.clear();
        Ok(committed)
    }

    /// After an aborted transaction: throws away what the workers did
    /// since, moves every partition back to its committed offset, and
    /// starts the workers again.
    fn redo(&self, consumer: &Arc<GroupConsumer<Members>>) -> Result<(), RunError> {
        let stopping = self.stop_workers(None);
        let partitions = stopping.partitions().to_vec();
        self.discard(stopping);
        self.lock_batch().at_eof.clear();
        rewind(consumer)?;
        let queues = partitions
            .into_iter()
            .filter_map(|p| {
                consumer
                    .split_partition_queue(&self.config.tweets_topic, p)
                    .map(|q| (p, q))
            })
            .collect();
        self.start(consumer, queues);
        Ok(())
    }

    /// Stops every worker, takes what they finished, commits it.
    fn finish(&self, consumer: &GroupConsumer<Members>) -> Result<(), RunError> {
        let stopped = self.stop_workers(None);
        let mut batch = self.lock_batch();
        self.drain(&mut batch, stopped)?;
        if !self.commit(consumer, &mut batch)? {
            tracing::warn!("the last batch was aborted; a restart does it again");
        }
        Ok(())
    }
}

impl Assignment for Members {
    fn assigned(&self, consumer: &GroupConsumer<Self>, queues: Vec<(i32, Queue<Self>)>) {
        self.joined.store(true, Ordering::Relaxed);
        self.start(consumer, queues);
    }

    fn revoking(&self, consumer: &GroupConsumer<Self>, partitions: &[i32]) {
        let stopped = self.stop_workers(Some(partitions));
        let mut batch = self.lock_batch();
        let committed = self
            .drain(&mut batch, stopped)
            .and_then(|()| self.commit(consumer, &mut batch));
        match committed {
            Ok(true) => {}
            // The next owners start from the committed offsets; partitions
            // this member keeps (cooperative rebalancing) go back there.
            Ok(false) => {
                let kept = self.pool.len();
                self.discard(self.stop_workers(None));
                if kept > 0 {
                    self.fail(RunError::Kafka(Failed {
                        what: "a transaction aborted during a rebalance",
                        source: KafkaError::Canceled,
                    }));
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn statistics(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.config.tweets_topic) else {
            return;
        };
        for (id, partition) in &topic.partitions {
            // librdkafka reports -1 for partitions it does not consume, and
            // a pseudo-partition -1.
            if *id >= 0 && partition.consumer_lag >= 0 {
                metrics::gauge!(
                    "hashbuy_consumer_lag",
                    "topic" => self.config.tweets_topic.clone(),
                    "partition" => id.to_string()
                )
                .set(partition.consumer_lag as f64);
            }
        }
    }
}

/// A partition's worker: turns records into chunks of outputs.
struct Job {
    partition: i32,
    topic: String,
    matcher: Arc<Matcher>,
    /// The partition's next expected offset, to find deleted records.
    continuity: Continuity,
    /// Where the partition's log starts, asked when an offset jumps.
    log_starts: LogStarts<Members>,
    /// What a dead letter may take of a record.
    letter_bytes: usize,
    sender: SyncSender<Chunk>,
    /// The chunk being filled.
    chunk: Chunk,
    /// One record's outputs, kept to reuse its allocation.
    outputs: Vec<Output>,
}

impl Job {
    /// Hands the chunk to the coordinator. A failure means the coordinator
    /// is gone, and with it the run: nothing is left to hand over to.
    fn send(&mut self) {
        let fresh = Chunk {
            partition: self.partition,
            ..Chunk::default()
        };
        let _ = self.sender.send(std::mem::replace(&mut self.chunk, fresh));
    }
}

impl PartitionWork for Job {
    fn message(&mut self, message: KafkaResult<BorrowedMessage<'_>>) {
        match message {
            Ok(message) => {
                let (partition, log_starts) = (self.partition, &self.log_starts);
                if let Some(gap) = self.continuity.read(message.offset(), || {
                    log_starts.get(partition, CONNECT_TIMEOUT)
                }) {
                    self.chunk.gaps.push(gap);
                }
                let source = Source {
                    topic: &self.topic,
                    partition: self.partition,
                    offset: message.offset(),
                    key: message.key(),
                    value: message.payload().unwrap_or_default(),
                };
                self.outputs.clear();
                let handled = self.matcher.handle(&source, now_ms(), &mut self.outputs);
                let chunk = &mut self.chunk;
                chunk.kinds.add(handled.kind);
                chunk
                    .decisions
                    .add(handled.skip.map_or("buy", |s| s.as_str()));
                let letter_bytes = self.letter_bytes;
                chunk.outputs.extend(self.outputs.drain(..).map(|output| {
                    let output = match output {
                        Output::DeadLetter(letter) => {
                            Output::DeadLetter(dead_letter::fit(letter, letter_bytes))
                        }
                        command => command,
                    };
                    let (key, value) = output.to_record();
                    Produced {
                        command: matches!(output, Output::Command { .. }),
                        key,
                        value,
                    }
                }));
                chunk.next_offset = Some(message.offset() + 1);
                chunk.records += 1;
                if chunk.records >= CHUNK_RECORDS as u64 {
                    self.send();
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {
                self.chunk.eof = true;
                self.send();
            }
            Err(e) => tracing::warn!(partition = self.partition, "consumer: {e}"),
        }
    }

    fn pause(&mut self) {
        // A chunk goes out as soon as the queue runs dry.
        if self.chunk.records > 0 {
            self.send();
        }
    }
}

/// Sends the offsets and commits; `false` if the transaction was aborted
/// (to be done again).
fn commit_transaction(
    producer: &BaseProducer<Deliveries>,
    consumer: &GroupConsumer<Members>,
    offsets: &TopicPartitionList,
) -> Result<bool, RunError> {
    let metadata = consumer.group_metadata().ok_or(RunError::NoGroup)?;
    // Delivered first: rdkafka's commit_transaction flushes too, in steps
    // of 100 ms (see `flush_promptly`), and finds nothing left this way.
    let committed = flush_promptly(producer, CALL_TIMEOUT)
        .and_then(|()| producer.send_offsets_to_transaction(offsets, &metadata, CALL_TIMEOUT))
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
            tracing::warn!("transaction aborted, its batch is done again: {e}");
            producer
                .abort_transaction(CALL_TIMEOUT)
                .map_err(failed("cannot abort a failed transaction"))?;
            Ok(false)
        }
        Err(e) => Err(failed("cannot commit a transaction")(e).into()),
    }
}

/// Moves the consumer back to its group's committed offsets, after an
/// aborted batch.
fn rewind(consumer: &GroupConsumer<Members>) -> Result<(), RunError> {
    let committed = consumer
        .committed(CALL_TIMEOUT)
        .map_err(failed("cannot read committed offsets"))?;
    let mut positions = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        positions
            .add_partition_offset(element.topic(), element.partition(), offset)
            .map_err(failed("cannot list offsets"))?;
    }
    consumer
        .seek_partitions(positions, CALL_TIMEOUT)
        .map_err(failed("cannot go back to the committed offsets"))?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
