//! The settler on Kafka: payment commands in, provider calls, payment acks
//! out.
//!
//! # Concurrency
//!
//! - **One coordinator** (the thread calling [`run`]) drives the consumer:
//!   it polls the main queue (rebalances and errors only), commits the
//!   offsets the partitions report as done, once a second, and watches for
//!   the end with `--exit-at-end`.
//! - **One task per assigned partition** (tokio), reading the partition's
//!   own queue ([`hashbuy_kafka::group`]). Before its first command the
//!   partition's ledger is restored from the changelog topic (one reader,
//!   on a blocking thread, for all the partitions assigned together), then
//!   the entries left undecided are resumed. It keeps up to
//!   [`Config::max_in_flight`] commands in flight, so settling is not
//!   bounded by provider latency, but settles the commands of one user one
//!   after another (they share a partition, being keyed by user), so limit
//!   checks never race. An [`OffsetTracker`] gives the offset below which
//!   every command is done. Decided entries below the group's committed
//!   offset are known to be acked, and are not acked again.
//! - **One task per command** in flight: ledger entry, limit check, provider
//!   calls and retries ([`crate::steps`]), ack. Each change of the entry is
//!   written to the ledger and to the changelog; the attempt is durable
//!   ([`GroupCommit`]) before the provider is called, the outcome before
//!   the ack is produced, and the offset is done only once the ack is
//!   delivered.
//! - **Revocation** stops the partition's tasks at their next recovery
//!   point (a command waiting out a backoff is left `attempting`, to be
//!   resumed by the next owner with the same key) and commits what is
//!   done, before the rebalance goes on. Tasks still running after
//!   [`REVOKE_WAIT`] (a provider call that has not answered) are aborted,
//!   and whatever they would still report is ignored: offsets are
//!   committed only for partitions this settler owns, from the tasks of
//!   the current assignment.
//!
//! # Fenced ownership
//!
//! Kafka fences the settler's writes to Kafka, but nothing fences its calls
//! to the provider; a settler frozen past its session timeout, or cut off
//! from the brokers, could go on charging for partitions the group gave to
//! another. Three things keep two owners of a partition from charging a
//! command twice:
//!
//! 1. **A lease** ([`hashbuy_kafka::lease`]): every provider call (charge
//!    or reconciliation) waits until the settler holds it. The coordinator
//!    renews it with each synchronous offset commit the broker accepted (a
//!    commit names the member and its generation, and is refused once the
//!    group has moved on), or with its continuous polls while there is
//!    nothing to commit. It runs out a third of `session.timeout.ms` after
//!    its last proof, before the group can give the partitions away; after
//!    a gap in the coordinator's polls (a freeze), only an accepted commit
//!    renews it.
//! 2. **Keys every owner mints alike** ([`crate::steps`]): after a 500 and
//!    a reconciliation that finds nothing, the next key follows from the
//!    key answered, never from a local count of calls, so two owners that
//!    both act on an entry use the same key, and the provider charges it
//!    once.
//! 3. **An entry restored mid-attempt is a call that got no answer**: the
//!    previous owner's last call may still be running at the provider, so
//!    a reconciliation first waits it out
//!    ([`Policy::unanswered_wait`](crate::steps::Policy::unanswered_wait)).
//!
//! What cannot be fenced is a request already on the wire when the lease
//! ran out or the partition was revoked: it is never recalled. Its
//! successor waits it out (3.), and otherwise calls under the same key
//! (2.), which replays it. Brokers that accept commits without checking
//! the generation (tansu 0.6) weaken 1. to the session timeout that
//! librdkafka enforces itself.

use std::collections::{hash_map, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbuy_kafka::client::{
    failed, ConnectError, Connection, Failed, QuietContext, CONNECT_TIMEOUT,
};
use hashbuy_kafka::group::{
    committed, consumed_to, ends_at_start, member_settings, serve_main_queue, Assignment,
    GroupConsumer, GroupContext, Queue,
};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::lease::{session_timeout, Lease, Renewal, MAX_POLL_GAP};
use hashbuy_kafka::offsets::OffsetTracker;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_kafka::{chosen, lock};
use hashbuy_proto::v1::{DeadLetter, PaymentAck, PaymentCommand};
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::entry::{now_ms, Entry, Outcome, State};
use crate::group_commit::{FlushFailed, GroupCommit};
use crate::ledger::{encode, Ledger, LedgerError, PartitionLedger};
use crate::limits;
use crate::payments::{Payments, ProviderRefused};
use crate::steps::{self, Found, Policy, Reply, Step};

/// What the settler reads, writes, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Kafka is.
    pub connection: Connection,
    /// Consumer group.
    pub group: String,
    /// Tells settlers of one group apart (static group membership).
    pub instance: String,
    /// Payment commands are read here.
    pub commands_topic: String,
    /// Payment acks are produced here.
    pub acks_topic: String,
    /// Undecodable commands are produced here.
    pub dead_letters_topic: String,
    /// The ledger's changelog (compacted; at least as many partitions as
    /// the commands topic).
    pub ledger_topic: String,
    /// The ledger's directory.
    pub ledger_dir: PathBuf,
    /// Most commands in flight per partition.
    pub max_in_flight: usize,
    /// Stop once the group has settled what the commands topic held at
    /// start.
    pub exit_at_end: bool,
    /// Attempt budget and key lifetime.
    pub policy: Policy,
    /// A command undecided for longer than this is stuck (the provider
    /// cannot be reached to charge or reconcile it, and it is never failed
    /// on a guess): `/healthz` says so, naming it, and an error is logged.
    pub stuck_after: Duration,
}

/// The default of [`Config::stuck_after`]: well past what retries and
/// waits take when the provider answers (a reconciliation waits a minute,
/// a backoff at most 30 s, a `Retry-After` at most 5 min).
pub const STUCK_AFTER: Duration = Duration::from_secs(15 * 60);

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Commands read.
    pub commands: u64,
    /// Outcomes decided in this run, by kind.
    pub settled: u64,
    /// Declined by the card.
    pub declined: u64,
    /// Rejected by a limit or as invalid.
    pub rejected: u64,
    /// Given up.
    pub failed: u64,
    /// Acks delivered (re-emitted ones included).
    pub acks: u64,
    /// Undecodable commands set aside.
    pub dead_letters: u64,
    /// Commands whose id was known with other content.
    pub duplicates: u64,
    /// Undecided entries resumed at start.
    pub resumed: u64,
    /// From the first command read to the last ack delivered (the group
    /// join before excluded): what throughput is measured over.
    pub busy: Duration,
}

/// Why the settler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A Kafka operation failed.
    #[error(transparent)]
    Kafka(#[from] Failed),
    /// The changelog topic cannot hold every partition's history.
    #[error(
        "the ledger topic {ledger} has {ledger_partitions} partitions, fewer than the \
         {commands_partitions} of {commands}; create it with as many"
    )]
    LedgerTopicTooSmall {
        /// The ledger topic.
        ledger: String,
        /// Its partitions.
        ledger_partitions: usize,
        /// The commands topic.
        commands: String,
        /// Its partitions.
        commands_partitions: usize,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger's changelog could not be read to its end.
    #[error(
        "restoring partitions {partitions:?} from the ledger changelog {topic} read nothing for \
         {} s (last error: {}); they cannot start without their history",
        waited.as_secs(),
        last_error.as_deref().unwrap_or("none")
    )]
    RestoreStalled {
        /// The changelog topic.
        topic: String,
        /// The partitions being restored.
        partitions: Vec<i32>,
        /// How long it read nothing.
        waited: Duration,
        /// The last error reading it.
        last_error: Option<String>,
    },
    /// The ledger could not be made durable.
    #[error(transparent)]
    Flush(#[from] FlushFailed),
    /// The provider refused hashbuy's credentials.
    #[error(transparent)]
    Provider(#[from] ProviderRefused),
    /// A bug: a transition the ledger does not allow.
    #[error(transparent)]
    Transition(#[from] crate::entry::TransitionError),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// How long a Kafka call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often done offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How long a revocation waits for the partition's commands to reach a
/// recovery point.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// What the partition and command tasks share.
struct Shared {
    config: Config,
    payments: Payments,
    ledger: Ledger,
    commit: Arc<GroupCommit>,
    producer: FutureProducer<QuietContext>,
    summary: Mutex<Summary>,
    failure: Mutex<Option<RunError>>,
    /// Whether provider calls may be made; see the module docs.
    lease: Lease,
    /// Per partition, the offset below which everything is done, and the
    /// assignment whose task found it: only the current assignment's
    /// offsets are committed.
    done: Mutex<HashMap<i32, (u64, i64)>>,
    /// The number of the next partition task (an assignment of one
    /// partition).
    next_task: AtomicU64,
    /// The consumer, for the position of a partition read to its end.
    consumer: std::sync::OnceLock<std::sync::Weak<GroupConsumer<Members>>>,
    /// Partitions read to their end with nothing in flight.
    at_eof: Mutex<HashSet<i32>>,
    /// Commands being settled, since when.
    pending: Mutex<HashMap<String, Instant>>,
    /// When the first command was read, and the last ack delivered.
    first_read: std::sync::OnceLock<Instant>,
    last_ack: Mutex<Option<Instant>>,
}

impl Shared {
    fn fail(&self, error: RunError) {
        tracing::error!("{error}");
        lock(&self.failure).get_or_insert(error);
    }

    fn count(&self, f: impl FnOnce(&mut Summary)) {
        f(&mut lock(&self.summary));
    }

    /// Sends an entry's new state, as the ledger stored it, to the
    /// changelog, in its partition; with `wait`, until it is delivered.
    async fn changelog(
        &self,
        command_id: &str,
        stored: &[u8],
        partition: i32,
        wait: bool,
    ) -> Result<(), RunError> {
        let record = FutureRecord::to(&self.config.ledger_topic)
            .partition(partition)
            .key(command_id)
            .payload(stored);
        if wait {
            self.producer
                .send(record, Timeout::After(CALL_TIMEOUT))
                .await
                .map_err(|(e, _)| failed("cannot write the ledger changelog")(e))?;
        } else if let Err((e, _)) = self.producer.send_result(record) {
            // The next change of the entry is sent again, and waited for
            // once it is decided.
            tracing::warn!("cannot queue a ledger changelog record: {e}");
        }
        Ok(())
    }

    /// Produces a record and waits for its delivery.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        what: &'static str,
    ) -> Result<(), RunError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Timeout::After(CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(e, _)| failed(what)(e).into())
    }
}

/// A record taken from a partition's queue, owned.
enum Taken {
    Record {
        offset: i64,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    Eof,
}

/// The next record of a partition's queue, waiting for librdkafka's
/// non-empty callback when there is none.
async fn take(queue: &Queue<Members>, arrived: &Notify) -> Taken {
    loop {
        match queue.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                return Taken::Record {
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Taken::Eof,
            Some(Err(e)) => tracing::warn!("consumer: {e}"),
            // A permit stored by a callback since the poll wakes this at
            // once, so no arrival is missed.
            None => arrived.notified().await,
        }
    }
}

/// Where the consumer stands in `partition` of the commands topic: after a
/// partition's end is taken from its queue, its end, past any transaction
/// marker (the last record's offset + 1 is short of it on a topic written
/// in transactions, and `--exit-at-end` would wait for ever).
fn position(shared: &Shared, partition: i32) -> Option<i64> {
    let consumer = shared.consumer.get()?.upgrade()?;
    let positions = consumer.position().ok()?;
    match positions
        .find_partition(&shared.config.commands_topic, partition)?
        .offset()
    {
        Offset::Offset(end) => Some(end),
        _ => None,
    }
}

/// A piece of a partition's work: a command read at an offset, or an
/// undecided entry resumed at start (no offset).
struct Work {
    command: PaymentCommand,
    offset: Option<i64>,
}

/// What a command task reports.
struct Done {
    user: Option<String>,
    offset: Option<i64>,
    /// Stopped before an outcome (the partition is being revoked): the
    /// offset is not done.
    abandoned: bool,
}

/// Runs the settler until `stop` is raised or, with `exit_at_end`, the
/// group has settled what the commands topic held at start.
pub fn run(
    config: &Config,
    payments: Payments,
    stop: &AtomicBool,
    health: &Health,
) -> Result<Summary, RunError> {
    let commands = config
        .connection
        .check_topic(&config.commands_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.acks_topic, CONNECT_TIMEOUT)?;
    config
        .connection
        .check_topic(&config.dead_letters_topic, CONNECT_TIMEOUT)?;
    let ledger_partitions = config
        .connection
        .check_topic(&config.ledger_topic, CONNECT_TIMEOUT)?;
    if ledger_partitions < commands {
        return Err(RunError::LedgerTopicTooSmall {
            ledger: config.ledger_topic.clone(),
            ledger_partitions,
            commands: config.commands_topic.clone(),
            commands_partitions: commands,
        });
    }
    let ledger = Ledger::open(&config.ledger_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("settle")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let producer: FutureProducer<QuietContext> = config
        .connection
        .config_with(&[
            ("linger.ms", "5".to_owned()),
            ("enable.idempotence", "true".to_owned()),
        ])
        .create_with_context(QuietContext)
        .map_err(failed("cannot create the producer"))?;
    let commit = GroupCommit::new(ledger.clone());
    runtime.spawn(Arc::clone(&commit).run());
    let shared = Arc::new(Shared {
        config: config.clone(),
        payments,
        ledger,
        commit,
        producer,
        summary: Mutex::new(Summary::default()),
        failure: Mutex::new(None),
        lease: Lease::for_session(session_timeout(&config.connection.properties)),
        done: Mutex::new(HashMap::new()),
        next_task: AtomicU64::new(0),
        consumer: std::sync::OnceLock::new(),
        at_eof: Mutex::new(HashSet::new()),
        pending: Mutex::new(HashMap::new()),
        first_read: std::sync::OnceLock::new(),
        last_ack: Mutex::new(None),
    });
    let members = Members {
        shared: Arc::clone(&shared),
        runtime: runtime.handle().clone(),
        tasks: Mutex::new(HashMap::new()),
        joined: AtomicBool::new(false),
    };
    let consumer_settings = member_settings(&config.group, &config.instance, config.exit_at_end);
    let consumer = GroupContext::subscribe(
        &config.connection.config_with(&consumer_settings),
        &config.commands_topic,
        members,
    )
    .map_err(failed("cannot create the consumer"))?;
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    let ends = ends_at_start(
        &consumer,
        &config.commands_topic,
        commands,
        config.exit_at_end,
    )
    .map_err(failed("cannot read the end of the commands topic"))?;

    let result = coordinate(&consumer, &shared, &ends, stop, health);
    health.set_ready(false);
    let members = &consumer.context().assignment;
    let stopped = members.stop_partitions(None);
    let committed = commit_done(&consumer, &shared, &stopped, CommitMode::Sync);
    let summary = Summary {
        busy: shared
            .first_read
            .get()
            .zip(*lock(&shared.last_ack))
            .map_or(Duration::ZERO, |(first, last)| last - *first),
        ..lock(&shared.summary).clone()
    };
    drop(consumer);
    result?;
    committed?;
    Ok(summary)
}

/// The coordinator's loop; see the module docs.
fn coordinate(
    consumer: &Arc<GroupConsumer<Members>>,
    shared: &Shared,
    ends: &HashMap<i32, i64>,
    stop: &AtomicBool,
    health: &Health,
) -> Result<(), RunError> {
    let members = &consumer.context().assignment;
    let mut last_check = Instant::now();
    // The first renewal at once.
    let mut last_renewal = last_check.checked_sub(COMMIT_EVERY).unwrap_or(last_check);
    let mut renewal = Renewal::new(
        MAX_POLL_GAP,
        session_timeout(&shared.config.connection.properties),
    );
    while !stop.load(Ordering::Relaxed) {
        health.beat();
        let polled = Instant::now();
        let continuous = renewal.polled(polled);
        serve_main_queue(consumer, Duration::from_millis(50))
            .map_err(failed("the consumer failed"))?;
        if let Some(error) = lock(&shared.failure).take() {
            return Err(error);
        }
        health.set_ready(members.joined.load(Ordering::Relaxed));
        // Without the lease, commands wait: try again sooner.
        let renew_every = if shared.lease.holds() {
            COMMIT_EVERY
        } else {
            COMMIT_EVERY / 5
        };
        if last_renewal.elapsed() >= renew_every {
            last_renewal = Instant::now();
            renew_lease(consumer, shared, &mut renewal, polled, continuous);
        }
        if last_check.elapsed() >= COMMIT_EVERY {
            last_check = Instant::now();
            let oldest = lock(&shared.pending)
                .iter()
                .map(|(id, since)| (since.elapsed(), id.clone()))
                .max();
            let age = oldest.as_ref().map(|(age, _)| *age).unwrap_or_default();
            metrics::gauge!("hashbuy_settler_oldest_pending_seconds").set(age.as_secs_f64());
            let stuck = oldest
                .filter(|(age, _)| *age >= shared.config.stuck_after)
                .map(|(age, id)| {
                    format!(
                        "command {id} undecided for {} s (is the provider reachable? see \
                         hashbuy_settler_retries_total)",
                        age.as_secs()
                    )
                });
            if stuck.is_some() && health.stuck().is_none() {
                tracing::error!("{}", stuck.as_deref().unwrap_or_default());
            }
            health.set_stuck(stuck);
            if shared.config.exit_at_end {
                let at_eof = lock(&shared.at_eof).clone();
                if consumed_to(
                    consumer.as_ref(),
                    &shared.config.commands_topic,
                    ends,
                    &at_eof,
                )
                .map_err(failed("cannot read committed offsets"))?
                {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Renews the lease with a proof of membership: a synchronous commit the
/// broker accepted, or, with nothing to commit, the coordinator's
/// `continuous` polls (this one began at `polled`). A refused commit lapses
/// it: a revocation or a fatal error follows, or the next commit proves
/// membership again.
fn renew_lease(
    consumer: &GroupConsumer<Members>,
    shared: &Shared,
    renewal: &mut Renewal,
    polled: Instant,
    continuous: bool,
) {
    let held = shared.lease.holds();
    let sent = Instant::now();
    let owned = consumer.context().assignment.owned();
    match commit_done(consumer, shared, &owned, CommitMode::Sync) {
        Ok(true) => {
            shared.lease.renew(sent);
            renewal.proven();
        }
        Ok(false) if continuous => shared.lease.renew(polled),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!("{e}; provider calls wait until a commit is accepted");
            shared.lease.lapse();
        }
    }
    let holds = shared.lease.holds();
    if held && !holds {
        tracing::warn!(
            "the settler cannot show that it still owns its partitions (lease of {} s ran \
             out): provider calls wait",
            shared.lease.term().as_secs()
        );
    }
    metrics::gauge!("hashbuy_settler_lease_held").set(if holds { 1.0 } else { 0.0 });
}

/// Commits the done offsets that the tasks `owned` (partition and task
/// number) found; whether any were committed.
fn commit_done(
    consumer: &GroupConsumer<Members>,
    shared: &Shared,
    owned: &HashMap<i32, u64>,
    mode: CommitMode,
) -> Result<bool, RunError> {
    let done = owned_done(&lock(&shared.done), owned);
    let mut offsets = TopicPartitionList::new();
    for (&partition, &offset) in &done {
        offsets
            .add_partition_offset(
                &shared.config.commands_topic,
                partition,
                Offset::Offset(offset),
            )
            .map_err(failed("cannot list offsets"))?;
    }
    if offsets.count() == 0 {
        return Ok(false);
    }
    match consumer.commit(&offsets, mode) {
        Ok(()) => Ok(true),
        // Nothing new to commit is no error.
        Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(false),
        Err(e) => Err(failed("cannot commit offsets")(e).into()),
    }
}

/// Of the done offsets, those found by the task that owns the partition
/// now (`owned`: partition and task number): a task of an earlier
/// assignment, aborted or stopped late, may still have reported one, and
/// committing it would move the new owner's offset back.
fn owned_done(done: &HashMap<i32, (u64, i64)>, owned: &HashMap<i32, u64>) -> HashMap<i32, i64> {
    done.iter()
        .filter(|(partition, (task, _))| owned.get(partition) == Some(task))
        .map(|(&partition, &(_, offset))| (partition, offset))
        .collect()
}

/// The coordinator's state, shared with the rebalance callbacks (which run
/// on its thread, inside its poll).
struct Members {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    tasks: Mutex<HashMap<i32, PartitionTask>>,
    joined: AtomicBool,
}

impl Members {
    /// The partitions owned, each with the number of its task.
    fn owned(&self) -> HashMap<i32, u64> {
        lock(&self.tasks)
            .iter()
            .map(|(&partition, task)| (partition, task.number))
            .collect()
    }

    /// Stops the tasks of `partitions` (all when `None`) at their next
    /// recovery point, waiting at most [`REVOKE_WAIT`], then aborts those
    /// still running: their commands are resumed by the next owner. The
    /// partitions stopped, with the numbers of their tasks, whose done
    /// offsets are final.
    fn stop_partitions(&self, partitions: Option<&[i32]>) -> HashMap<i32, u64> {
        let stopped: Vec<_> = {
            let mut tasks = lock(&self.tasks);
            chosen(&tasks, partitions)
                .iter()
                .filter_map(|p| tasks.remove(p).map(|task| (*p, task)))
                .collect()
        };
        let numbers = stopped
            .iter()
            .map(|(partition, task)| (*partition, task.number))
            .collect();
        for (_, task) in &stopped {
            let _ = task.stop.send(true);
        }
        self.runtime.block_on(async {
            let mut handles: Vec<_> = stopped.into_iter().map(|(_, task)| task.handle).collect();
            let all = futures_join(handles.iter_mut());
            if tokio::time::timeout(REVOKE_WAIT, all).await.is_err() {
                tracing::warn!(
                    "partition tasks did not stop within {} s; aborted, their commands are \
                     resumed by the next owner",
                    REVOKE_WAIT.as_secs()
                );
                for handle in &handles {
                    handle.abort();
                }
                futures_join(handles.iter_mut()).await;
            }
        });
        metrics::gauge!("hashbuy_settler_partitions_assigned").set(lock(&self.tasks).len() as f64);
        numbers
    }
}

/// A partition's task, and how to stop it.
struct PartitionTask {
    /// Raised to stop it.
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    /// Tells it from the partition's earlier and later tasks.
    number: u64,
}

/// Waits for every task (an aborted one ends at its next await).
async fn futures_join(tasks: impl IntoIterator<Item = &mut tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

impl Assignment for Members {
    fn assigned(&self, consumer: &GroupConsumer<Self>, queues: Vec<(i32, Queue<Self>)>) {
        self.joined.store(true, Ordering::Relaxed);
        let partitions: Vec<i32> = queues.iter().map(|(partition, _)| *partition).collect();
        let topic = &self.shared.config.commands_topic;
        let committed =
            committed(consumer, topic, partitions.iter().copied()).unwrap_or_else(|e| {
                // Without them, decided entries not known to be acked are acked
                // again, which acks allow.
                tracing::warn!("cannot read the group's committed offsets of {topic}: {e}");
                HashMap::new()
            });
        let restore = Arc::new(Restore {
            partitions,
            committed,
            done: tokio::sync::OnceCell::new(),
        });
        let mut tasks = lock(&self.tasks);
        for (partition, mut queue) in queues {
            let arrived = Arc::new(Notify::new());
            let notify = Arc::clone(&arrived);
            queue.set_nonempty_callback(move || notify.notify_one());
            let (stop, stopped) = watch::channel(false);
            let shared = Arc::clone(&self.shared);
            let restore = Arc::clone(&restore);
            let number = shared.next_task.fetch_add(1, Ordering::Relaxed);
            let handle = self.runtime.spawn(async move {
                let task = PartitionRun {
                    partition,
                    number,
                    stopped,
                };
                if let Err(e) = partition_task(&shared, task, queue, arrived, restore).await {
                    shared.fail(e);
                }
            });
            tasks.insert(
                partition,
                PartitionTask {
                    stop,
                    handle,
                    number,
                },
            );
        }
        metrics::gauge!("hashbuy_settler_partitions_assigned").set(tasks.len() as f64);
    }

    fn revoking(&self, consumer: &GroupConsumer<Self>, partitions: &[i32]) {
        let stopped = self.stop_partitions(Some(partitions));
        if let Err(e) = commit_done(consumer, &self.shared, &stopped, CommitMode::Sync) {
            self.shared.fail(e);
        }
        let mut done = lock(&self.shared.done);
        let mut at_eof = lock(&self.shared.at_eof);
        for partition in partitions {
            done.remove(partition);
            at_eof.remove(partition);
        }
    }
}

/// Restores the ledgers of newly assigned partitions from the changelog,
/// with one reader for them all: an entry there that is further along than
/// the local one (written by another settler that owned the partition)
/// replaces it. How many entries each partition took.
fn restore(shared: &Shared, partitions: &[i32]) -> Result<HashMap<i32, usize>, RunError> {
    let mut ledgers = HashMap::new();
    for &partition in partitions {
        ledgers.insert(partition, shared.ledger.partition(partition)?);
    }
    let mut reader = TopicReader::open_partitions(
        &shared.config.connection,
        &shared.config.ledger_topic,
        Some(partitions),
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    for (&partition, &first) in reader.first_offsets() {
        if first > 0 {
            // A compacted topic keeps every key's last record from offset 0
            // on; a later start means deletion, and a command whose entry
            // went with it, arriving again after the provider forgot its
            // idempotency key, would be charged again.
            tracing::error!(
                topic = %shared.config.ledger_topic,
                partition,
                first,
                "the ledger changelog's records before offset {first} were deleted (retention; \
                 the embedded broker keeps 5 MB a partition): their commands are known here \
                 only if this settler's own ledger has them"
            );
            metrics::counter!("hashbuy_settler_changelog_gaps_total").increment(1);
        }
    }
    let mut restored: HashMap<i32, usize> = partitions.iter().map(|&p| (p, 0)).collect();
    let mut stall = Stall::new(Instant::now());
    while !reader.at_end() {
        stall
            .check(Instant::now())
            .map_err(|(waited, last_error)| RunError::RestoreStalled {
                topic: shared.config.ledger_topic.clone(),
                partitions: partitions.to_vec(),
                waited,
                last_error,
            })?;
        let Some(message) = reader.next(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // The client reconnects by itself; the stall check bounds
                // how long that may take.
                tracing::warn!("reading the ledger changelog: {e}; the restore goes on");
                stall.failed(e.to_string());
                continue;
            }
        };
        stall.progressed(Instant::now());
        let partition = message.partition();
        let (Some(ledger), Some(value)) = (ledgers.get(&partition), message.payload()) else {
            continue;
        };
        let remote: Entry = match serde_json::from_slice(value) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(
                    partition,
                    offset = message.offset(),
                    "unreadable ledger changelog record: {e}"
                );
                continue;
            }
        };
        let newer = match ledger.get(remote.command_id())? {
            Some(local) => progress(&remote) > progress(&local),
            None => true,
        };
        if newer {
            ledger.put(&remote)?;
            *restored.entry(partition).or_default() += 1;
        }
    }
    shared.ledger.flush()?;
    Ok(restored)
}

/// How long a restore may go without reading a record of the changelog
/// before it gives up: the brokers are gone, or the changelog cannot be
/// read, and the partitions cannot start without their history.
const RESTORE_STALL: Duration = Duration::from_secs(120);

/// Whether a restore still makes progress: errors reading the changelog
/// are retried (the client reconnects by itself) until [`RESTORE_STALL`]
/// passes without a record.
struct Stall {
    since: Instant,
    last_error: Option<String>,
}

impl Stall {
    fn new(now: Instant) -> Stall {
        Stall {
            since: now,
            last_error: None,
        }
    }

    fn progressed(&mut self, now: Instant) {
        self.since = now;
        self.last_error = None;
    }

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

/// The restore of one assignment's partitions, run once by whichever of
/// their tasks comes first, awaited by the others.
struct Restore {
    partitions: Vec<i32>,
    /// The group's committed offsets of the commands topic when the
    /// partitions were assigned: the previous owners' acks below them
    /// were delivered.
    committed: HashMap<i32, i64>,
    /// Entries taken, by partition; `Err` once the restore failed (the
    /// failure is reported by the task that ran it).
    done: tokio::sync::OnceCell<Result<HashMap<i32, usize>, ()>>,
}

impl Restore {
    /// How many entries `partition` took, once the whole restore is done;
    /// `None` if it failed.
    async fn restored(&self, shared: &Arc<Shared>, partition: i32) -> Option<usize> {
        let done = self
            .done
            .get_or_init(|| async {
                let restoring = Arc::clone(shared);
                let partitions = self.partitions.clone();
                let result = tokio::task::spawn_blocking(move || restore(&restoring, &partitions))
                    .await
                    .map_err(|e| RunError::Runtime(std::io::Error::other(e.to_string())))
                    .and_then(|restored| restored);
                result.map_err(|e| shared.fail(e))
            })
            .await;
        done.as_ref()
            .ok()
            .map(|r| r.get(&partition).copied().unwrap_or_default())
    }
}

/// How far along an entry is, for choosing between two copies.
fn progress(entry: &Entry) -> (u8, u32, bool, i64) {
    let stage = match entry.state {
        State::Received => 0,
        State::Attempting { .. } => 1,
        _ => 2,
    };
    (
        stage,
        entry.attempts,
        entry.acked_ms.is_some(),
        entry.changed_ms,
    )
}

/// Of a partition's unfinished entries, those left to do: a decided entry
/// whose command lies below the group's `committed` offset was acked (an
/// offset is committed only once its ack is delivered), by this settler
/// before a crash or by the partition's previous owner, and is marked so
/// instead of being acked again; after a hand-over that is the whole
/// history the changelog brought.
fn acked_earlier(
    ledger: &PartitionLedger,
    unfinished: Vec<Entry>,
    committed: Option<&i64>,
) -> Result<Vec<Entry>, RunError> {
    let mut left = Vec::with_capacity(unfinished.len());
    for mut entry in unfinished {
        let below = committed.is_some_and(|&c| (0..c).contains(&entry.offset));
        if below && entry.state.is_terminal() {
            entry.acked(now_ms())?;
            ledger.put(&entry)?;
        } else {
            left.push(entry);
        }
    }
    Ok(left)
}

/// Which partition task this is, and its stop signal.
struct PartitionRun {
    partition: i32,
    /// See [`PartitionTask::number`].
    number: u64,
    stopped: watch::Receiver<bool>,
}

/// A partition's task; see the module docs.
async fn partition_task(
    shared: &Arc<Shared>,
    task: PartitionRun,
    queue: Queue<Members>,
    arrived: Arc<Notify>,
    restore: Arc<Restore>,
) -> Result<(), RunError> {
    let PartitionRun {
        partition,
        number,
        mut stopped,
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
        restored,
        resuming = unfinished.len(),
        "partition ledger ready"
    );
    shared.count(|s| s.resumed += unfinished.len() as u64);

    let mut tracker = OffsetTracker::new();
    let mut users: HashMap<String, VecDeque<Work>> = HashMap::new();
    let mut running: JoinSet<Result<Done, RunError>> = JoinSet::new();
    let mut at_eof = false;
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
    for entry in unfinished {
        enqueue(
            Work {
                command: entry.command,
                offset: None,
            },
            &mut users,
            &mut running,
        );
    }
    loop {
        let room = tracker.in_flight() < shared.config.max_in_flight;
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let done = joined
                    .map_err(|e| RunError::Runtime(std::io::Error::other(e.to_string())))??;
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
            taken = take(&queue, &arrived), if room => match taken {
                Taken::Eof => {
                    at_eof = true;
                    if let Some(end) = position(shared, partition) {
                        tracker.reached(end);
                    }
                }
                Taken::Record { offset, key, value } => {
                    at_eof = false;
                    if tracker.start(offset).is_err() {
                        tracing::error!(partition, offset, "offsets went backwards; record skipped");
                        continue;
                    }
                    shared.count(|s| s.commands += 1);
                    shared.first_read.get_or_init(Instant::now);
                    match crate::command::decode(&value) {
                        Ok(command) => enqueue(
                            Work { command, offset: Some(offset) },
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
    Ok(())
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
        topic: shared.config.commands_topic.clone(),
        partition,
        offset,
        key: key.clone(),
        value,
        reason,
        stage: "settle".into(),
        dead_at_ms: now_ms(),
        ..Default::default()
    };
    shared
        .produce(
            &shared.config.dead_letters_topic,
            key.as_deref(),
            &letter.encode_to_vec(),
            "cannot produce a dead letter",
        )
        .await?;
    shared.count(|s| s.dead_letters += 1);
    metrics::counter!("hashbuy_settler_dead_letters_total").increment(1);
    Ok(())
}

/// Settles one command; see the module docs and [`crate::steps`].
async fn settle(
    shared: Arc<Shared>,
    ledger: PartitionLedger,
    work: Work,
    stopped: watch::Receiver<bool>,
) -> Result<Done, RunError> {
    let id = work.command.command_id.clone();
    lock(&shared.pending).insert(id.clone(), Instant::now());
    let result = settle_entry(&shared, &ledger, &work, stopped).await;
    lock(&shared.pending).remove(&id);
    let abandoned = !result?;
    Ok(Done {
        user: Some(work.command.user_id),
        offset: work.offset,
        abandoned,
    })
}

/// [`settle`]'s body; `false` if stopped before an outcome.
async fn settle_entry(
    shared: &Shared,
    ledger: &PartitionLedger,
    work: &Work,
    mut stopped: watch::Receiver<bool>,
) -> Result<bool, RunError> {
    let partition = ledger.partition();
    let policy = shared.config.policy;
    // The entry as last written here, for the changelog.
    let mut stored = None;
    let mut entry = match ledger.get(&work.command.command_id)? {
        Some(mut known) => {
            if !known.same_command(&work.command) {
                tracing::warn!(
                    command_id = %work.command.command_id,
                    partition,
                    offset = ?work.offset,
                    "a command arrived again with other content; the first one wins"
                );
                known.note(
                    format!(
                        "duplicate with other content at partition {partition} offset {:?} ignored",
                        work.offset
                    ),
                    now_ms(),
                );
                stored = Some(ledger.put(&known)?);
                shared.count(|s| s.duplicates += 1);
                metrics::counter!("hashbuy_settler_duplicates_total").increment(1);
            }
            known
        }
        None => {
            let mut fresh = Entry::received(
                work.command.clone(),
                partition,
                work.offset.unwrap_or(-1),
                now_ms(),
            );
            let history = ledger.history(&fresh.command.user_id)?;
            if let Err(reason) = limits::check(&fresh.command, &history) {
                fresh.decide(Outcome::Rejected { reason }, now_ms())?;
                stored = Some(ledger.put(&fresh)?);
                count_outcome(shared, &fresh);
            }
            // A command that goes on to a charge is first written with its
            // attempt: until then a crash loses nothing, as its offset is
            // not done and it is read again.
            fresh
        }
    };

    let mut last_error = String::new();
    // When a call under the key last got no answer.
    let mut unanswered = steps::unanswered_at_start(&entry).then(Instant::now);
    let mut step = steps::start(&entry, now_ms(), &policy);
    while let Some(next) = step.take() {
        step = match next {
            Step::Charge { key } => {
                entry.attempt(key.clone(), now_ms())?;
                let attempt = ledger.put(&entry)?;
                shared
                    .changelog(entry.command_id(), &attempt, partition, false)
                    .await?;
                stored = Some(attempt);
                // The attempt is on disk before the provider hears of it.
                shared.commit.durable().await?;
                if !lease_held(shared, &mut stopped).await {
                    return Ok(false);
                }
                let began = Instant::now();
                let key_attempt = match &entry.state {
                    State::Attempting { key_attempt, .. } => *key_attempt,
                    _ => entry.attempts,
                };
                let reply = shared
                    .payments
                    .charge(&entry.command, &key, key_attempt)
                    .await?;
                metrics::histogram!("hashbuy_settler_provider_seconds").record(began.elapsed());
                match &reply {
                    Reply::Retry { cause, after } => {
                        last_error = (*cause).to_owned();
                        if steps::unanswered(cause) {
                            unanswered = Some(Instant::now());
                        }
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => *cause)
                            .increment(1);
                        if entry.attempts < policy.max_attempts {
                            let delay =
                                shared
                                    .payments
                                    .delay(entry.command_id(), entry.attempts, *after);
                            if !pause(delay, &mut stopped).await {
                                return Ok(false);
                            }
                        }
                    }
                    Reply::Unknown { reason } => {
                        last_error = reason.clone();
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => "unknown")
                            .increment(1);
                    }
                    _ => {}
                }
                Some(steps::after_reply(&entry, reply, now_ms(), &policy))
            }
            Step::Reconcile => {
                let wait = steps::reconcile_wait(unanswered.map(|at| at.elapsed()), &policy);
                if !wait.is_zero() && !pause(wait, &mut stopped).await {
                    return Ok(false);
                }
                if !lease_held(shared, &mut stopped).await {
                    return Ok(false);
                }
                let received_ms = entry.received_ms.min(now_ms());
                match shared.payments.find(&entry.command, received_ms).await {
                    Ok(found) => {
                        if let Some(incident) = steps::double_charge(&found) {
                            tracing::error!(command_id = %entry.command_id(), "{incident}");
                            metrics::counter!("hashbuy_settler_double_charges_total").increment(1);
                            entry.note(incident.clone(), now_ms());
                            entry.review = Some(incident);
                        }
                        if matches!(found, Found::Pending { .. }) {
                            let delay =
                                shared
                                    .payments
                                    .delay(entry.command_id(), entry.attempts, None);
                            if !pause(delay, &mut stopped).await {
                                return Ok(false);
                            }
                        }
                        Some(steps::after_reconcile(&entry, found, &policy, &last_error))
                    }
                    Err(e) => {
                        // Never failed on a guess: the entry waits, pending.
                        tracing::warn!(command_id = %entry.command_id(), "cannot reconcile: {e}");
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => "reconcile")
                            .increment(1);
                        let delay = shared
                            .payments
                            .delay(entry.command_id(), entry.attempts, None);
                        if !pause(delay, &mut stopped).await {
                            return Ok(false);
                        }
                        Some(Step::Reconcile)
                    }
                }
            }
            Step::Decide(outcome) => {
                entry.decide(outcome, now_ms())?;
                stored = Some(ledger.put(&entry)?);
                count_outcome(shared, &entry);
                None
            }
        };
    }

    // The outcome is durable, and in the changelog, before its ack.
    shared.commit.durable().await?;
    let stored = match stored {
        Some(stored) => stored,
        None => encode(&entry)?,
    };
    shared
        .changelog(entry.command_id(), &stored, partition, true)
        .await?;
    let Some(ack) = entry.ack() else {
        return Ok(false);
    };
    send_ack(shared, &ack).await?;
    if entry.acked_ms.is_none() {
        // Local only: another owner restoring the entry without it sends
        // the same ack once more, which acks allow.
        entry.acked(now_ms())?;
        ledger.put(&entry)?;
    }
    Ok(true)
}

/// Waits until the settler holds its lease (see the module docs), unless
/// the partition is stopped first; whether the provider may be called.
async fn lease_held(shared: &Shared, stopped: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *stopped.borrow() {
            return false;
        }
        if shared.lease.holds() {
            return true;
        }
        if !pause(Duration::from_millis(50), stopped).await {
            return false;
        }
    }
}

/// Waits `delay` unless the partition is stopped first; whether it waited.
async fn pause(delay: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped.wait_for(|s| *s) => false,
    }
}

fn count_outcome(shared: &Shared, entry: &Entry) {
    let name = entry.state.name();
    metrics::counter!("hashbuy_settler_payments_total", "outcome" => name).increment(1);
    shared.count(|s| match entry.state {
        State::Settled { .. } => s.settled += 1,
        State::Declined { .. } => s.declined += 1,
        State::Rejected { .. } => s.rejected += 1,
        State::Failed { .. } => s.failed += 1,
        _ => {}
    });
}

async fn send_ack(shared: &Shared, ack: &PaymentAck) -> Result<(), RunError> {
    shared
        .produce(
            &shared.config.acks_topic,
            Some(ack.user_id.as_bytes()),
            &ack.encode_to_vec(),
            "cannot produce an ack",
        )
        .await?;
    shared.count(|s| s.acks += 1);
    *lock(&shared.last_ack) = Some(Instant::now());
    metrics::counter!("hashbuy_settler_acks_total").increment(1);
    Ok(())
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

    #[test]
    fn only_the_owning_tasks_offsets_are_committed() {
        // Partition 1 was revoked and given back: task 7 owns it now, and
        // task 3, of the earlier assignment, reported late. Partition 2 is
        // no longer owned at all.
        let done = HashMap::from([(0, (5, 100)), (1, (3, 40)), (2, (4, 90))]);
        let owned = HashMap::from([(0, 5), (1, 7)]);
        assert_eq!(owned_done(&done, &owned), HashMap::from([(0, 100)]));
    }
}
