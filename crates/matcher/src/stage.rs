//! The matcher's stage of the group driver ([`hashbuy_kafka::driver`]):
//! the coordinator's state, owned by its thread. It starts a worker per
//! assigned partition, takes their chunks into the batch between polls,
//! commits the batch when it is due, and, before partitions are revoked,
//! stops their workers and commits what they finished.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use hashbuy_kafka::client::{failed, Failed};
use hashbuy_kafka::driver::{DriverContext, Member, Queue, Stage};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::loss::{self, report_before_group, report_lost, OnDataLoss, PartitionOffsets};
use hashbuy_kafka::pool::{Pool, Stopping};
use hashbuy_kafka::produce::Deliveries;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::Batch;
use crate::restore::restore;
use crate::run::{Config, RunError, Summary, CALL_TIMEOUT};
use crate::worker::{Chunk, Job, PartitionStart};
use crate::Matcher;
use hashbuy_core::confirm::Owner;

/// Chunks waiting for the coordinator; beyond this, workers wait. A
/// chunk holds only its records' outputs (about one a hundred), so many
/// cost little, and a worker that waits sleeps and is woken for every
/// chunk taken while the coordinator commits: with 64, the matcher spent
/// about 0.6 µs a tweet more (`hashbuy bench`, same hour, pair by pair).
const CHUNKS_QUEUED: usize = 1024;

/// How long a turn waits for a chunk: the main queue (rebalances) is
/// served at least this often.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The matcher's stage; see the module docs.
pub(crate) struct Matching {
    matcher: Arc<Matcher>,
    config: Config,
    /// What a dead letter may take of a record.
    letter_bytes: usize,
    sender: SyncSender<Chunk>,
    receiver: Receiver<Chunk>,
    /// The partitions' workers.
    pool: Pool<DriverContext<Matching>, Job>,
    batch: Batch,
    /// Partitions whose records deleted before the group's first read were
    /// told already (a redo checks them again).
    told_before_group: HashSet<i32>,
    /// The owner this matcher claimed each partition's pending purchases
    /// as (confirm mode), to go on as after an aborted batch.
    owners: HashMap<i32, Owner>,
    /// An error met in a rebalance, for the driver to return.
    failure: Option<RunError>,
}

impl Matching {
    /// A stage deciding with `matcher`, producing through `producer`
    /// (its dead letters at most `letter_bytes`).
    pub(crate) fn new(
        matcher: Arc<Matcher>,
        config: &Config,
        producer: BaseProducer<Deliveries>,
        letter_bytes: usize,
    ) -> Result<Self, RunError> {
        let (sender, receiver) = sync_channel(CHUNKS_QUEUED);
        Ok(Matching {
            matcher,
            config: config.clone(),
            letter_bytes,
            sender,
            receiver,
            pool: Pool::new(config.workers, "match").map_err(RunError::Threads)?,
            batch: Batch::new(producer),
            told_before_group: HashSet::new(),
            owners: HashMap::new(),
            failure: None,
        })
    }

    fn fail(&mut self, error: RunError) {
        tracing::error!("{error}");
        self.failure.get_or_insert(error);
    }

    /// Checks where the partitions of `queues` start
    /// ([`loss::check_starts`]), acts on what was deleted before, restores
    /// their pending purchases (confirm mode, [`restore`]; `again` after an
    /// aborted batch, when they are not claimed again), and starts a worker
    /// for each queue, expecting its first record there.
    fn start(
        &mut self,
        member: &Arc<Member<Matching>>,
        queues: Vec<(i32, Queue<Matching>)>,
        again: bool,
    ) {
        let topic = &self.config.topics.tweets;
        let partitions: Vec<i32> = queues.iter().map(|(p, _)| *p).collect();
        let next = match loss::check_starts(member, topic, &partitions, CALL_TIMEOUT) {
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
        let mut flows = if self.matcher.keeps_pending() {
            // Read again after an aborted batch, a partition must still be
            // this matcher's; a newly assigned one is claimed.
            let owned = if again {
                self.owners.clone()
            } else {
                HashMap::new()
            };
            match restore(&self.config, &partitions, &owned) {
                Ok(flows) => {
                    self.owners
                        .extend(flows.iter().map(|(&p, flow)| (p, flow.owner())));
                    flows
                }
                Err(e) => {
                    // Started without them, the partitions would prompt
                    // again and lose confirmations.
                    self.fail(e);
                    return;
                }
            }
        } else {
            HashMap::new()
        };
        for (partition, queue) in queues {
            let start = PartitionStart {
                partition,
                next: next.get(&partition).copied(),
                flow: flows.remove(&partition),
            };
            let job = Job::new(
                Arc::clone(&self.matcher),
                &self.config.topics.tweets,
                start,
                PartitionOffsets::new(member, &self.config.topics.tweets, partition),
                self.letter_bytes,
                self.sender.clone(),
            );
            self.pool.add(partition, queue, job);
        }
        metrics::gauge!("hashbuy_matcher_partitions_assigned").set(self.pool.len() as f64);
    }

    /// Acts on what was deleted before each newly assigned partition's
    /// start; the offset each one's first record is expected at.
    fn judge_starts(&mut self, starts: Vec<loss::Start>) -> HashMap<i32, i64> {
        let mut next = HashMap::new();
        for start in starts {
            if let Some(gap) = &start.before_group {
                if self.told_before_group.insert(start.partition) {
                    report_before_group(gap);
                    self.batch.summary.deleted_before_group += gap.records();
                }
            }
            if let Some(gap) = &start.lost {
                report_lost(gap);
                match self.config.on_data_loss {
                    // Nothing of the partition is committed: the run ends
                    // at the coordinator's next turn.
                    OnDataLoss::Stop => self.fail(gap.into()),
                    OnDataLoss::Skip => self.batch.summary.lost_records += gap.records(),
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
    fn drain(&mut self, mut stopping: Stopping) -> Result<(), RunError> {
        while !stopping.finished().map_err(|_| RunError::WorkerPanicked)? {
            if let Ok(chunk) = self.receiver.recv_timeout(Duration::from_millis(1)) {
                self.batch.apply(&self.config, chunk)?;
            }
        }
        while let Ok(chunk) = self.receiver.try_recv() {
            self.batch.apply(&self.config, chunk)?;
        }
        Ok(())
    }

    /// Waits for the workers being stopped, throwing their work away.
    fn discard(&self, mut stopping: Stopping) {
        while let Ok(false) = stopping.finished() {
            let _ = self.receiver.recv_timeout(Duration::from_millis(1));
        }
        while self.receiver.try_recv().is_ok() {}
    }

    /// After an aborted transaction: throws away what the workers did
    /// since, moves every partition back to its committed offset, and
    /// starts the workers again.
    fn redo(&mut self, member: &Arc<Member<Matching>>) -> Result<(), RunError> {
        let stopping = self.stop_workers(None);
        let partitions = stopping.partitions().to_vec();
        self.discard(stopping);
        self.batch.at_eof.clear();
        rewind(member)?;
        let queues = partitions
            .into_iter()
            .filter_map(|p| {
                member
                    .split_partition_queue(&self.config.topics.tweets, p)
                    .map(|q| (p, q))
            })
            .collect();
        self.start(member, queues, true);
        Ok(())
    }
}

impl Stage for Matching {
    type Error = RunError;
    type Output = Summary;

    fn assigned(&mut self, member: &Arc<Member<Self>>, queues: Vec<(i32, Queue<Self>)>) {
        self.start(member, queues, false);
    }

    fn revoking(&mut self, member: &Member<Self>, partitions: &[i32]) {
        let stopped = self.stop_workers(Some(partitions));
        let committed = self
            .drain(stopped)
            .and_then(|()| self.batch.commit(&self.config, member));
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
        for partition in partitions {
            self.batch.at_eof.remove(partition);
            self.owners.remove(partition);
        }
    }

    fn tick(&mut self, member: &Arc<Member<Self>>, _health: &Health) -> Result<(), RunError> {
        let idle = match self.receiver.recv_timeout(POLL_EVERY) {
            Ok(chunk) => {
                self.batch.apply(&self.config, chunk)?;
                // What else the workers handed over meanwhile goes in this
                // turn: a turn of the driver's loop (its main queue, its
                // checks) costs more than most chunks.
                while !self.batch.due(&self.config, false) {
                    match self.receiver.try_recv() {
                        Ok(chunk) => self.batch.apply(&self.config, chunk)?,
                        Err(_) => break,
                    }
                }
                false
            }
            // The stage holds a sender: never disconnected.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => true,
        };
        if self.batch.due(&self.config, idle) && !self.batch.commit(&self.config, member)? {
            self.redo(member)?;
        }
        Ok(())
    }

    fn failure(&mut self) -> Option<RunError> {
        self.failure.take()
    }

    fn poll_timeout(&self) -> Duration {
        // The turn waits for chunks instead.
        Duration::ZERO
    }

    fn at_eof(&self) -> HashSet<i32> {
        self.batch.at_eof.clone()
    }

    fn settled(&self) -> bool {
        self.batch.started.is_none()
    }

    fn statistics(&mut self, statistics: Statistics) {
        let topic = &self.config.topics.tweets;
        let Some(stats) = statistics.topics.get(topic) else {
            return;
        };
        for (id, partition) in &stats.partitions {
            // librdkafka reports -1 for partitions it does not consume, and
            // a pseudo-partition -1.
            if *id >= 0 && partition.consumer_lag >= 0 {
                metrics::gauge!(
                    "hashbuy_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => id.to_string()
                )
                .set(partition.consumer_lag as f64);
            }
        }
    }

    fn finish(&mut self, member: &Member<Self>, failed: bool) -> Result<Summary, RunError> {
        // Whatever happened, no worker outlives the run (they hold the
        // consumer); after a failure, nothing more is committed.
        let stopped = self.stop_workers(None);
        if failed {
            self.discard(stopped);
            // Readers of committed records (the settlers) would otherwise
            // wait for it until the broker's transaction timeout.
            self.batch.abort();
        } else {
            self.drain(stopped)?;
            if !self.batch.commit(&self.config, member)? {
                tracing::warn!("the last batch was aborted; a restart does it again");
            }
        }
        Ok(self.batch.summary())
    }
}

/// Moves the consumer back to its group's committed offsets, after an
/// aborted batch.
fn rewind(member: &Member<Matching>) -> Result<(), RunError> {
    let committed = member
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
    member
        .seek_partitions(positions, CALL_TIMEOUT)
        .map_err(failed("cannot go back to the committed offsets"))?;
    Ok(())
}
