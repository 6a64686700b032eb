//! The settler on Kafka: payment commands in, provider calls, payment acks
//! out.
//!
//! # Concurrency
//!
//! - **One coordinator** (the thread calling [`run`]) drives the consumer
//!   through [`hashbuy_kafka::driver`], which hands it rebalances as events:
//!   the settler's stage ([`Settling`]) owns the table of partition tasks,
//!   starts and stops them, commits the offsets they report as done once a
//!   second (renewing the lease, below), and says when a command is stuck.
//! - **One task per assigned partition** ([`crate::partition`], tokio),
//!   reading the partition's own queue. Before its first command the
//!   partition's ledger is restored from the changelog topic
//!   ([`crate::restore`]: one reader, on a blocking thread, for all the
//!   partitions assigned together), then
//!   the entries left undecided are resumed. It keeps up to
//!   [`Config::max_in_flight`] commands in flight, so settling is not
//!   bounded by provider latency, but settles the commands of one user one
//!   after another (they share a partition, being keyed by user), so limit
//!   checks never race. An [`OffsetTracker`] gives the offset below which
//!   every command is done. Decided entries below the group's committed
//!   offset are known to be acked, and are not acked again.
//! - **One task per command** in flight ([`crate::settle`]): ledger entry,
//!   limit check, provider calls and retries ([`crate::steps`]), ack. Each change of the entry is
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
//!   the current assignment. Their tasks ended, it seals the partitions
//!   (no changelog record of theirs is queued any more) and waits for
//!   what was queued to be delivered or failed ([`DELIVERY_TIMEOUT`]), so
//!   that nothing librdkafka still retries lands after the next owner's
//!   records (see [`Settling::stop_partitions`]).
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
//! The lease is checked again when a charge leaves (after the waits for a
//! connection slot and the rate limiter), and an answer (a charge's or a
//! reconciliation's) is acted on only if the lease held without a break
//! since the call was sent ([`Lease::holds_since`]): otherwise the
//! partitions may have been another's meanwhile, and the command is left
//! to its owner, who learns the same from the provider. A key past the
//! first is in the changelog before it is called, so an owner never
//! restores an older key than one already called.
//!
//! What cannot be fenced is a request already on the wire when the lease
//! ran out or the partition was revoked: it is never recalled. Its
//! successor waits it out (3.), and otherwise calls under the same key
//! (2.), which replays it. Nor are the settler's own Kafka writes fenced
//! (acks and changelog records go through an idempotent, not a
//! transactional, producer). A hand-over the settler takes part in waits
//! until what it queued for the partitions is delivered or failed, which
//! its delivery timeout bounds ([`DELIVERY_TIMEOUT`]), a request already
//! on its way to the broker aside (it cannot be called back); but a settler
//! thawed after a freeze, or cut off from the group and not from the
//! partition leaders, may still deliver records it had queued before
//! librdkafka finds them timed out, which the next owner's decisions
//! outrank on restore only while compaction keeps them. Brokers that
//! accept commits without checking
//! the generation (tansu 0.6) weaken 1. to the session timeout that
//! librdkafka enforces itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use hashbuy_core::tables::{Catalog, Merchants};
use hashbuy_kafka::client::{
    failed, BrokerKind, ConnectError, Connection, Failed, QuietContext, CONNECT_TIMEOUT,
};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::driver::{drive, DriveError, Member, Membership, Queue, Stage};
use hashbuy_kafka::group::{self, committed};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::lease::{Lease, Renewal, MAX_POLL_GAP};
use hashbuy_kafka::loss::{
    check_starts, report_before_group, report_lost, Continuity, Gap, OnDataLoss, PartitionOffsets,
};
use hashbuy_kafka::produce::record_budget;
use hashbuy_kafka::reader::TopicReader;
use hashbuy_kafka::tables::{self, Behind, FollowError, Follower, Letters, Progress};
use hashbuy_kafka::{chosen, lock};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::{Delivery, DeliveryFuture};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};

use crate::entry::now_ms;
use crate::frontier::{Frontier, Seen};
use crate::group_commit::{FlushFailed, GroupCommit};
use crate::ledger::{Encoding, Ledger, LedgerError};
use crate::partition::{partition_task, PartitionRun};
use crate::payments::{Payments, ProviderRefused};
use crate::restore::Restore;
use crate::steps::Policy;

/// What the settler reads, writes, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Kafka is.
    pub connection: Connection,
    /// Consumer group.
    pub group: String,
    /// Tells settlers of one group apart (static group membership).
    pub instance: String,
    /// The topics: commands are read from `commands`, acks produced to
    /// `acks`, the buyers' replies to `replies`, undecodable commands to
    /// `dead_letters`, and the ledger's
    /// changelog is `ledger` (compacted; at least as many partitions as
    /// the commands topic). `tweets` is not used.
    pub topics: Topics,
    /// The ledger's directory.
    pub ledger_dir: PathBuf,
    /// The merchants table: with one, each command is charged as a Stripe
    /// Connect destination charge to its merchant's connected account as
    /// the table stood at its purchase tweet's time (see
    /// [`hashbuy_core::connect`]), and one for a merchant the table lacks
    /// is rejected; `None`, the platform's own account. With
    /// [`Config::live_tables`], the live `merchants` topic's changes are
    /// applied over it while the settler runs.
    pub merchants: Option<Arc<RwLock<Merchants>>>,
    /// Follow the live `merchants` topic, if it exists, over
    /// [`Config::merchants`] (which must then be given).
    pub live_tables: bool,
    /// Follow the live `catalog` topic (which must exist, with
    /// [`Config::live_tables`]), so that a pruning pass forgets the
    /// `max_per_user` counts of an offer once it tells the offer ended
    /// below the floor (see [`crate::horizon`]); off, every count is kept
    /// for good. The live catalog alone is asked, never a file: it is the
    /// one the matchers read too, where a file is each process's own.
    pub forget_ended_offers: bool,
    /// Most commands in flight per partition.
    pub max_in_flight: usize,
    /// Stop once the group has settled what the commands topic held at
    /// start.
    pub exit_at_end: bool,
    /// Attempt budget and key lifetime.
    pub policy: Policy,
    /// What to do about commands deleted (retention) before the group read
    /// them: a deleted command is a purchase never charged.
    pub on_data_loss: OnDataLoss,
    /// A command undecided for longer than this is stuck (the provider
    /// cannot be reached to charge or reconcile it, and it is never failed
    /// on a guess): `/healthz` says so, naming it, and an error is logged.
    pub stuck_after: Duration,
    /// A command tweeted longer ago than this when first seen is rejected
    /// as stale, and entries far enough past it are pruned (see
    /// [`crate::horizon`]).
    pub max_command_age: Duration,
    /// How the ledger writes entries (see [`Encoding`]).
    pub ledger_encoding: Encoding,
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
    /// Replies to buyers delivered, one an ack.
    pub replies: u64,
    /// Undecodable commands set aside.
    pub dead_letters: u64,
    /// Commands whose id was known with other content.
    pub duplicates: u64,
    /// Undecided entries resumed at start.
    pub resumed: u64,
    /// From the first command read to the last ack delivered (the group
    /// join before excluded): what throughput is measured over.
    pub busy: Duration,
    /// The longest an assignment waited for its partitions' ledgers
    /// (restored from the changelog) before their first command.
    pub restoring: Duration,
    /// The pruning passes of this run, by partition: how much of the
    /// ledger's file they freed, told without reading the ledger.
    pub passes: std::collections::BTreeMap<i32, Passes>,
}

/// A partition's pruning passes in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passes {
    /// The most entries one pass pruned.
    pub largest: u64,
    /// The entries the partition kept after its latest pass.
    pub kept: u64,
}

/// Why the settler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The live merchants table could not be read before the first
    /// command.
    #[error(transparent)]
    Tables(#[from] FollowError),
    /// Ended offers' counts to be forgotten, and the live catalog that
    /// tells which offers ended cannot be followed.
    #[error(
        "--forget-ended-offers needs the live catalog topic {topic}, and {why}: the counts of \
         ended offers are forgotten only on the catalog the matchers read"
    )]
    CatalogNotFollowed {
        /// The catalog topic.
        topic: String,
        /// Why it cannot be followed.
        why: String,
    },
    /// Connect mode with no merchant: every command would be rejected.
    #[error(
        "the merchants table has no merchants (neither the file nor topic {topic} gives one): \
         every command would be rejected; give merchants, or leave Connect mode off to charge \
         the platform's own account"
    )]
    NoMerchants {
        /// The merchants topic.
        topic: String,
    },
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
    /// Commands were deleted before the group read them (`--on-data-loss
    /// stop`).
    #[error(
        "commands at offsets {}..{} of {} partition {} were deleted (retention) before this \
         group read them: their purchases were never charged; settle them from another copy, \
         then restart with --on-data-loss skip to go on from the oldest command left",
        gap.from, gap.to, gap.topic, gap.partition
    )]
    DataLoss {
        /// What was lost.
        gap: Gap,
    },
    /// A record for the ledger changelog is larger than one record may
    /// carry.
    #[error(
        "the ledger changelog record {key} of partition {partition} takes {bytes} bytes, over the \
         {budget} one record may carry (message.max.bytes): the partition is not pruned until \
         the settler's producer (-X message.max.bytes) and the topic (max.message.bytes) allow it"
    )]
    RecordTooLarge {
        /// The input partition.
        partition: i32,
        /// The record's key, as text.
        key: String,
        /// Its key and value.
        bytes: usize,
        /// What one record may carry.
        budget: usize,
    },
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
    /// The live merchants table refuses a purchase (its merchant missing,
    /// removed, or its fee), and could not be shown current: refusing it
    /// could lose a purchase of a merchant put a moment ago. A restart
    /// reads the table whole before its first command.
    #[error(
        "the live merchants table refuses a purchase, and cannot be shown to hold every change \
         written so far ({0}): the purchase is not refused on a table that may lack a change"
    )]
    MerchantsBehind(Behind),
    /// The user's settings leave a record's delivery unbounded, or bounded
    /// past what a hand-over may take.
    #[error(
        "-X message.timeout.ms={} (or an alias, delivery.timeout.ms): the settler needs its \
         records' delivery bounded, and a hand-over (up to {} s for its commands, this for \
         their records, {} s for the reports and the commit) within max.poll.interval.ms \
         {max_poll_ms}, so that a partition handed over gets none of its records after the \
         next owner's: at most {} ms here; leave it unset ({} ms), or raise \
         max.poll.interval.ms",
        timeout.as_millis(),
        REVOKE_WAIT.as_secs(),
        (hand_over_besides_delivery() - REVOKE_WAIT).as_secs(),
        most.as_millis(),
        DELIVERY_TIMEOUT.as_millis()
    )]
    UnboundedDelivery {
        /// The delivery timeout read (zero: never time out).
        timeout: Duration,
        /// The longest that fits.
        most: Duration,
        /// The consumer's `max.poll.interval.ms`.
        max_poll_ms: u64,
    },
    /// A Kafka setting in milliseconds that librdkafka reads as something
    /// else.
    #[error("the Kafka setting {key} is {value}, not a number of milliseconds")]
    NotMilliseconds {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A changelog record of a partition this settler handed over, from a
    /// task of it being aborted: the partition's records are the next
    /// owner's to write.
    #[error(
        "partition {partition} of the ledger changelog was handed over: its record is not sent"
    )]
    HandedOver {
        /// The partition.
        partition: i32,
    },
}

impl RunError {
    /// A task of the settler's runtime that failed to run to its end (it
    /// panicked, or its semaphore closed), as the runtime's error.
    pub(crate) fn task(e: impl std::fmt::Display) -> RunError {
        RunError::Runtime(std::io::Error::other(e.to_string()))
    }
}

/// How long a Kafka call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the settler waits for a live table's follower to show it has
/// read every change written so far ([`Progress::read_through_now`])
/// before it acts on what the table lacks.
pub(crate) const TABLES_WAIT: Duration = Duration::from_secs(10);

/// A live table's follower asked to show it holds every change written
/// so far ([`Progress::read_through_now`], on a blocking thread, about
/// [`TABLES_WAIT`] at most), one ask at a time (an ask whose caller went
/// away runs on, and the next may begin beside it): callers that found
/// the table lacking something at some moment share the answer of the
/// first ask begun after it, so refusals that come while an ask is under
/// way cost one more round trip to the broker, not one each.
pub(crate) struct TableCurrent {
    progress: Progress,
    /// When the last ask began, and what it found.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), Behind>)>>,
}

impl TableCurrent {
    fn new(progress: Progress) -> TableCurrent {
        TableCurrent {
            progress,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the follower has handed on every change written before
    /// `decided`.
    pub(crate) async fn since(&self, decided: Instant) -> Result<Result<(), Behind>, RunError> {
        let mut last = self.last.lock().await;
        if let Some((began, found)) = last.as_ref() {
            if *began >= decided {
                return Ok(found.clone());
            }
        }
        let began = Instant::now();
        let progress = self.progress.clone();
        let found = tokio::task::spawn_blocking(move || progress.read_through_now(TABLES_WAIT))
            .await
            .map_err(RunError::task)?;
        *last = Some((began, found.clone()));
        Ok(found)
    }
}

/// How often done offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How long a revocation waits for the partition's commands to reach a
/// recovery point.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// How long the settler's producer tries to deliver a record before it
/// reports it failed (librdkafka's `message.timeout.ms`, five minutes by
/// default): a waited write that the broker does not take stops the
/// settler with its error after this long, and a hand-over waits at most
/// this long (and [`DELIVERY_MARGIN`]) for the records of the partitions
/// it gives up (see [`Settling::stop_partitions`]). Kafka's own leader
/// elections take seconds.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What librdkafka may take past a record's delivery timeout to report
/// it: it looks for records that timed out once a second, and fails a
/// request in flight when its first record's time is up.
const DELIVERY_MARGIN: Duration = Duration::from_secs(5);

/// A setting in milliseconds as librdkafka reads `config` (its default
/// where unset).
fn setting_ms(config: &rdkafka::ClientConfig, key: &'static str) -> Result<u64, RunError> {
    let value = hashbuy_kafka::client::setting(config, key)
        .map_err(failed("cannot read the Kafka settings"))?;
    value
        .parse()
        .map_err(|_| RunError::NotMilliseconds { key, value })
}

/// What a hand-over may take besides its wait for records, within the
/// group's `max.poll.interval.ms`: [`REVOKE_WAIT`] for the commands, the
/// reports' margin twice (the wait, and the purge after one that ran
/// out), and the commit of the offsets, allowed [`CALL_TIMEOUT`]
/// (librdkafka's synchronous commit has no limit of its own: it waits for
/// the group coordinator's answer).
fn hand_over_besides_delivery() -> Duration {
    REVOKE_WAIT + DELIVERY_MARGIN * 2 + CALL_TIMEOUT
}

/// The names librdkafka takes for the delivery timeout: the first, and
/// the aliases moved to it ([`delivery_timeout`]).
const DELIVERY_TIMEOUT_NAMES: [&str; 4] = [
    "message.timeout.ms",
    "delivery.timeout.ms",
    "topic.message.timeout.ms",
    "topic.delivery.timeout.ms",
];

/// The delivery timeout the producer settings `config` give (the user's,
/// by any of [`DELIVERY_TIMEOUT_NAMES`], over [`DELIVERY_TIMEOUT`]), as
/// librdkafka reads them. A hand-over waits up to [`REVOKE_WAIT`] for the
/// partitions' commands and then up to this for their records, and the
/// group gives a member `max_poll_ms` (`max.poll.interval.ms`) before it
/// takes the partitions anyway. A timeout of 0 (never) is refused, as is
/// one the user set (`user_set`) longer than hashbuy's that does not fit;
/// one that does not fit because the user shortened
/// `max.poll.interval.ms` is said at start. The aliases, only ever the
/// user's, are moved to the first name: librdkafka takes settings in no
/// set order, so with two the one it kept would be chance.
fn delivery_timeout(
    config: &mut rdkafka::ClientConfig,
    max_poll_ms: u64,
    user_set: bool,
) -> Result<Duration, RunError> {
    let [name, aliases @ ..] = DELIVERY_TIMEOUT_NAMES;
    for alias in aliases {
        if let Some(value) = config.get(alias).map(str::to_owned) {
            config.remove(alias).set(name, value);
        }
    }
    let timeout = Duration::from_millis(setting_ms(config, name)?);
    let max_poll = Duration::from_millis(max_poll_ms);
    let most = max_poll.saturating_sub(hand_over_besides_delivery());
    let lengthened = user_set && timeout > DELIVERY_TIMEOUT;
    if timeout.is_zero() || (lengthened && timeout > most) {
        return Err(RunError::UnboundedDelivery {
            timeout,
            most,
            max_poll_ms,
        });
    }
    if timeout > most {
        tracing::warn!(
            "max.poll.interval.ms {max_poll_ms} is shorter than a hand-over may take ({} s: up \
             to {} s for the partitions' commands, {} s for their records): the group may give \
             partitions to another settler while this one still delivers their changelog \
             records; set it to {} ms at least",
            (hand_over_besides_delivery() + timeout).as_secs(),
            REVOKE_WAIT.as_secs(),
            timeout.as_secs(),
            (hand_over_besides_delivery() + timeout).as_millis()
        );
    }
    Ok(timeout)
}

/// The cluster whose changelog a restore may resume reading where the
/// ledger last got to (see [`crate::restore`]), by its id: `None` for a
/// broker that names none, and for tansu. tansu 0.6 answers a fetch from
/// an offset inside a record batch with the batch after it (measured: a
/// read from offset 100 began at 512), or, inside the last batch, with
/// nothing and no end, so a resumed read would skip records or wait until
/// it gives up.
fn resumable_cluster(connection: &Connection) -> Result<Option<String>, ConnectError> {
    let id = connection.cluster_id(CONNECT_TIMEOUT)?;
    Ok(id.filter(|id| BrokerKind::of_cluster(id) != BrokerKind::Tansu))
}

/// One of the settler's own changelog records was delivered, as `seen`,
/// having been sent under the frontier of restore `epoch` (`None`: none
/// was installed): its partition's frontier moves past it (see
/// [`crate::frontier`]).
fn delivered(
    frontiers: &Mutex<HashMap<i32, Frontier>>,
    delivery: &Delivery,
    seen: Seen,
    epoch: Option<u64>,
) {
    if let Some(frontier) = lock(frontiers).get_mut(&delivery.partition) {
        frontier.delivered(seen, epoch.unwrap_or(0));
    }
}

/// A changelog record queued, or the reason it is not with the record
/// back (to try again when the queue was full).
type Queued<'a> = Result<DeliveryFuture, (KafkaError, FutureRecord<'a, [u8], [u8]>)>;

/// What the partition and command tasks share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The catalog followed ([`follow_catalog`]).
    pub(crate) catalog: Option<SharedCatalog>,
    /// The catalog's follower, asked: a pruning pass forgets counts only
    /// on a catalog shown current.
    pub(crate) catalog_current: Option<TableCurrent>,
    /// The live merchants table's follower, asked: a purchase is refused
    /// by the table only once it is shown current.
    pub(crate) merchants_current: Option<TableCurrent>,
    pub(crate) payments: Payments,
    pub(crate) ledger: Ledger,
    pub(crate) commit: Arc<GroupCommit>,
    pub(crate) producer: FutureProducer<QuietContext>,
    /// The most a dead letter may take, to be sure the producer sends it.
    pub(crate) letter_bytes: usize,
    /// By when a record queued now has landed or failed: the producer's
    /// delivery timeout ([`delivery_timeout`]) and what librdkafka may
    /// take past it ([`DELIVERY_MARGIN`]). A settler that lost a partition
    /// queued its last records before its lease ran out, so by this long
    /// after the partition came here they have landed, or never will.
    pub(crate) records_settled_within: Duration,
    /// The partitions of the stock-requests topic at start.
    pub(crate) stock_partitions: usize,
    pub(crate) summary: Mutex<Summary>,
    pub(crate) failure: Mutex<Option<RunError>>,
    /// Whether provider calls may be made; see the module docs.
    pub(crate) lease: Lease,
    /// Per partition, the offset below which everything is done, and the
    /// assignment whose task found it: only the current assignment's
    /// offsets are committed.
    pub(crate) done: Mutex<HashMap<i32, (u64, i64)>>,
    /// The number of the next partition task (an assignment of one
    /// partition).
    pub(crate) next_task: AtomicU64,
    /// Partition tasks still starting ([`Counted`]).
    pub(crate) starting: std::sync::atomic::AtomicUsize,
    /// Entries resumed from the ledger and not yet done.
    pub(crate) resuming: std::sync::atomic::AtomicUsize,
    /// Partitions whose first pruning pass, run at start, has not ended
    /// ([`crate::prune`]; one left to its turn after a recent pass is not
    /// counted).
    pub(crate) pruning: std::sync::atomic::AtomicUsize,
    /// One pruning plan at a time: a plan reads every entry of its
    /// partition, and the first passes of every partition begin together
    /// at start, where they would take both cores from the settling and a
    /// blocking thread each.
    pub(crate) planning: tokio::sync::Semaphore,
    /// Partitions read to their end with nothing in flight.
    pub(crate) at_eof: Mutex<HashSet<i32>>,
    /// Commands being settled, since when.
    pub(crate) pending: Mutex<HashMap<String, Instant>>,
    /// When the first command was read, and the last ack delivered.
    pub(crate) first_read: std::sync::OnceLock<Instant>,
    pub(crate) last_ack: Mutex<Option<Instant>>,
    /// The id of the cluster the changelog is on, which names the offsets
    /// a restore resumes from; `None` where every restore reads the whole
    /// changelog ([`resumable_cluster`]).
    pub(crate) cluster: Option<String>,
    /// Per partition, how far its ledger holds the changelog, moved by the
    /// delivery reports of the settler's own records ([`Frontier`]).
    pub(crate) frontiers: Arc<Mutex<HashMap<i32, Frontier>>>,
    /// Partitions handed over: their changelog records are refused from
    /// the moment a hand-over waits for what was queued (a task aborted
    /// mid-step may still be running that step) until the partition is
    /// assigned again.
    pub(crate) sealed: Mutex<HashSet<i32>>,
    /// The number of the last restore begun ([`Restore::new`]).
    pub(crate) next_restore: AtomicU64,
    /// Per partition, the number of its newest restore.
    pub(crate) restores: Mutex<HashMap<i32, u64>>,
}

impl Shared {
    pub(crate) fn fail(&self, error: RunError) {
        tracing::error!("{error}");
        lock(&self.failure).get_or_insert(error);
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Summary)) {
        f(&mut lock(&self.summary));
    }

    /// Sends an entry's new state, as the ledger stored it, to the
    /// changelog, in its partition; with `wait`, until it is delivered.
    pub(crate) async fn changelog(
        &self,
        command_id: &str,
        stored: &[u8],
        partition: i32,
        wait: bool,
    ) -> Result<(), RunError> {
        self.changelog_record(command_id.as_bytes(), Some(stored), partition, wait)
            .await
    }

    /// Sends a record to the changelog, in `partition`: an entry, a meta
    /// record ([`crate::ledger::MetaKey`]), or a tombstone (no value); with
    /// `wait`, until it is delivered.
    pub(crate) async fn changelog_record(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        partition: i32,
        wait: bool,
    ) -> Result<(), RunError> {
        // Set here, not left to the client, so that the frontier knows it:
        // a delivery report's timestamp can be the broker's (the embedded
        // one reports a made-up log append time).
        let timestamp = now_ms();
        // Without a cluster to name marks by, no frontier is ever
        // installed: the digest and the wait for the report are skipped.
        let tracked = self.cluster.is_some();
        let epoch = lock(&self.frontiers).get(&partition).map(Frontier::epoch);
        let seen = |offset| Seen::of(offset, timestamp, Some(key), value);
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.topics.ledger)
            .partition(partition)
            .key(key)
            .timestamp(timestamp);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if wait {
            let deadline = Instant::now() + CALL_TIMEOUT;
            let queued = loop {
                match self.queue_changelog(record, partition)? {
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    queued => break queued,
                }
            };
            let delivery = match queued {
                Ok(delivery) => delivery
                    .await
                    .map_err(|_| KafkaError::Canceled)
                    .and_then(|delivered| delivered.map_err(|(e, _)| e)),
                Err((e, _)) => Err(e),
            }
            .map_err(failed("cannot write the ledger changelog"))?;
            if tracked {
                delivered(&self.frontiers, &delivery, seen(delivery.offset), epoch);
            }
        } else {
            match self.queue_changelog(record, partition)? {
                Ok(_) if !tracked => {}
                Ok(delivery) => {
                    let frontiers = Arc::clone(&self.frontiers);
                    // Named by its digest now: the record is gone once sent.
                    let named = seen(0);
                    tokio::spawn(async move {
                        if let Ok(Ok(delivery)) = delivery.await {
                            let seen = Seen {
                                offset: delivery.offset,
                                ..named
                            };
                            delivered(&frontiers, &delivery, seen, epoch);
                        }
                    });
                }
                // The next change of the entry is sent again, and waited
                // for once it is decided.
                Err((e, _)) => tracing::warn!("cannot queue a ledger changelog record: {e}"),
            }
        }
        Ok(())
    }

    /// Queues a changelog record of `partition`, once; refused once the
    /// partition is handed over ([`Shared::sealed`]). The check and the
    /// queueing are one step under the seal's lock, so a hand-over that
    /// seals and then waits for what was queued waits for every record it
    /// did not refuse.
    #[allow(clippy::result_large_err)]
    fn queue_changelog<'a>(
        &self,
        record: FutureRecord<'a, [u8], [u8]>,
        partition: i32,
    ) -> Result<Queued<'a>, RunError> {
        let sealed = lock(&self.sealed);
        if sealed.contains(&partition) {
            return Err(RunError::HandedOver { partition });
        }
        Ok(self.producer.send_result(record))
    }

    /// Marks in `partition`'s ledger how far it holds the changelog (its
    /// [`Frontier`]), so that a restart's restore reads only what came
    /// after: once everything written so far is durable, as the mark
    /// claims the records below it are.
    pub(crate) async fn mark_read_through(&self, partition: i32) -> Result<(), RunError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let (mark, reused) = match lock(&self.frontiers).get(&partition) {
            Some(frontier) => (frontier.mark(), frontier.reused()),
            None => return Ok(()),
        };
        let ledger = self.ledger.partition(partition)?;
        let topic = &self.config.topics.ledger;
        if reused {
            if ledger.clear_changelog_read_through(cluster, topic)? {
                tracing::warn!(
                    topic = %topic,
                    partition,
                    "the ledger changelog's offsets began again under this settler (its broker \
                     lost the log?): the next restore reads it from its beginning"
                );
            }
            return Ok(());
        }
        let Some(mark) = mark else {
            return Ok(());
        };
        self.commit.durable().await?;
        ledger.set_changelog_read_through(cluster, topic, &mark)?;
        Ok(())
    }

    /// Produces a record and waits for its delivery.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        what: &'static str,
    ) -> Result<(), RunError> {
        self.produce_to(topic, None, key, value, what).await
    }

    /// Produces a record to `partition` of `topic` (`None`: by its key)
    /// and waits for its delivery.
    pub(crate) async fn produce_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        what: &'static str,
    ) -> Result<(), RunError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Timeout::After(CALL_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(e, _)| failed(what)(e).into())
    }
}

/// Reads the live `merchants` topic, when the settler has a merchants
/// table and follows it, then follows it while the settler runs; a table
/// with no merchant at any time is an error (every command would be
/// rejected).
fn follow_merchants(config: &Config) -> Result<Option<Follower>, RunError> {
    let Some(merchants) = &config.merchants else {
        return Ok(None);
    };
    let mut follower = None;
    if config.live_tables {
        match tables::open(&config.connection, &config.topics.merchants)? {
            Some(reader) => {
                follower = Some(follow_table(
                    config,
                    &config.topics.merchants,
                    reader,
                    merchants,
                    ("Merchant", Merchants::change),
                )?);
            }
            None => tracing::info!(
                "the live merchants table is not followed: topic {} does not exist (hashbuy \
                 topics create makes it)",
                config.topics.merchants
            ),
        }
    }
    if !read(merchants).has_any() {
        return Err(RunError::NoMerchants {
            topic: config.topics.merchants.clone(),
        });
    }
    Ok(follower)
}

/// The catalog as the settler follows it, read by its pruning passes.
pub(crate) type SharedCatalog = Arc<RwLock<Catalog>>;

/// The live catalog, read to its end and then followed while the settler
/// runs, when [`Config::forget_ended_offers`] asks for it.
fn follow_catalog(config: &Config) -> Result<(Option<SharedCatalog>, Option<Follower>), RunError> {
    if !config.forget_ended_offers {
        return Ok((None, None));
    }
    let not_followed = |why: &str| RunError::CatalogNotFollowed {
        topic: config.topics.catalog.clone(),
        why: why.to_owned(),
    };
    if !config.live_tables {
        return Err(not_followed("live tables are off"));
    }
    let reader = tables::open(&config.connection, &config.topics.catalog)?
        .ok_or_else(|| not_followed("the topic does not exist (hashbuy topics create makes it)"))?;
    let catalog = Arc::new(RwLock::new(Catalog::default()));
    let follower = follow_table(
        config,
        &config.topics.catalog,
        reader,
        &catalog,
        ("Offer", Catalog::change),
    )?;
    Ok((Some(catalog), Some(follower)))
}

/// How a live table takes a change: the protobuf message its records
/// hold (named, for the dead letter of one that is not), and the table's
/// own `change(key, at_ms, value)`.
type TableChange<T, M> = (
    &'static str,
    fn(&mut T, &str, i64, Option<M>) -> Result<(), String>,
);

/// Reads the live table `topic` (from `reader`) to its end into `table`,
/// then follows it while the settler runs: each record decoded as `M`
/// and applied by `change`, one refused set aside as a dead letter.
fn follow_table<T, M>(
    config: &Config,
    topic: &str,
    reader: TopicReader,
    table: &Arc<RwLock<T>>,
    (kind, change): TableChange<T, M>,
) -> Result<Follower, RunError>
where
    T: Send + Sync + 'static,
    M: prost::Message + Default + 'static,
{
    let letters = Letters {
        topic: config.topics.dead_letters.clone(),
        stage: TABLES_STAGE,
    };
    let applying = Arc::clone(table);
    Ok(tables::follow(
        &config.connection,
        vec![(topic.to_owned(), reader)],
        letters,
        move |record| {
            let value = record
                .value
                .map(M::decode)
                .transpose()
                .map_err(|e| format!("not a protobuf {kind}: {e}"))?;
            change(&mut write(&applying), record.key, record.at_ms, value)
        },
    )?)
}

/// The stage name dead letters of the live tables carry.
pub const TABLES_STAGE: &str = "tables";

/// A live table, to read: a writer only applies a checked change, which
/// cannot panic half-way, so a poisoned lock still holds a whole table.
pub(crate) fn read<T>(table: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    table.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(table: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    table.write().unwrap_or_else(PoisonError::into_inner)
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
        .check_topic(&config.topics.commands, CONNECT_TIMEOUT)?;
    let ledger_partitions = config
        .connection
        .check_topic(&config.topics.ledger, CONNECT_TIMEOUT)?;
    if ledger_partitions < commands {
        return Err(RunError::LedgerTopicTooSmall {
            ledger: config.topics.ledger.clone(),
            ledger_partitions,
            commands: config.topics.commands.clone(),
            commands_partitions: commands,
        });
    }
    // A word on a unit goes to the partition its grant names, if it is one.
    let stock_partitions = config
        .connection
        .check_topic(&config.topics.stock_requests, CONNECT_TIMEOUT)?;
    // Before the first command: a command is routed by the merchants table
    // as it stood at its tweet's time.
    let merchants_follower = follow_merchants(config)?;
    let (catalog, catalog_follower) = follow_catalog(config)?;
    let ledger = Ledger::open(&config.ledger_dir)?.with_encoding(config.ledger_encoding);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("settle")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let membership = Membership {
        connection: config.connection.clone(),
        group: config.group.clone(),
        instance: config.instance.clone(),
        input: config.topics.commands.clone(),
        outputs: vec![
            config.topics.acks.clone(),
            config.topics.dead_letters.clone(),
            config.topics.replies.clone(),
            config.topics.stock_requests.clone(),
        ],
        exit_at_end: config.exit_at_end,
        settings: Vec::new(),
    };
    let member_settings = membership.consumer_settings()?;
    // The lease is a third of the session the member will have (a short
    // one on the embedded broker).
    let session = membership.session_timeout(&member_settings);
    let max_poll = setting_ms(
        &config.connection.config_with(&member_settings),
        "max.poll.interval.ms",
    )?;
    let mut producer_config = config.connection.config_with(&[
        ("linger.ms", "5".to_owned()),
        ("enable.idempotence", "true".to_owned()),
        (
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        ),
    ]);
    let user_set = config
        .connection
        .properties
        .iter()
        .any(|(key, _)| DELIVERY_TIMEOUT_NAMES.contains(&key.as_str()));
    let delivery_timeout = delivery_timeout(&mut producer_config, max_poll, user_set)?;
    let letter_bytes = record_budget(&producer_config);
    let producer: FutureProducer<QuietContext> = producer_config
        .create_with_context(QuietContext)
        .map_err(failed("cannot create the producer"))?;
    let commit = GroupCommit::new(ledger.clone());
    runtime.spawn(Arc::clone(&commit).run());
    let shared = Arc::new(Shared {
        config: config.clone(),
        catalog,
        catalog_current: catalog_follower
            .as_ref()
            .map(|f| TableCurrent::new(f.progress())),
        merchants_current: merchants_follower
            .as_ref()
            .map(|f| TableCurrent::new(f.progress())),
        payments,
        ledger,
        commit,
        producer,
        letter_bytes,
        records_settled_within: delivery_timeout + DELIVERY_MARGIN,
        stock_partitions,
        summary: Mutex::new(Summary::default()),
        failure: Mutex::new(None),
        lease: Lease::for_session(session),
        done: Mutex::new(HashMap::new()),
        next_task: AtomicU64::new(0),
        starting: std::sync::atomic::AtomicUsize::new(0),
        resuming: std::sync::atomic::AtomicUsize::new(0),
        pruning: std::sync::atomic::AtomicUsize::new(0),
        planning: tokio::sync::Semaphore::new(1),
        at_eof: Mutex::new(HashSet::new()),
        pending: Mutex::new(HashMap::new()),
        first_read: std::sync::OnceLock::new(),
        last_ack: Mutex::new(None),
        cluster: resumable_cluster(&config.connection)?,
        frontiers: Arc::new(Mutex::new(HashMap::new())),
        sealed: Mutex::new(HashSet::new()),
        next_restore: AtomicU64::new(0),
        restores: Mutex::new(HashMap::new()),
    });
    let now = Instant::now();
    let settling = Settling {
        shared: Arc::clone(&shared),
        runtime: runtime.handle().clone(),
        tasks: HashMap::new(),
        delivery_timeout,
        renewal: Renewal::new(MAX_POLL_GAP, session),
        // The first renewal at once.
        last_renewal: now.checked_sub(COMMIT_EVERY).unwrap_or(now),
        last_check: now,
    };
    let result = drive(&membership, settling, stop, health);
    let summary = Summary {
        busy: shared
            .first_read
            .get()
            .zip(*lock(&shared.last_ack))
            .map_or(Duration::ZERO, |(first, last)| last - *first),
        ..lock(&shared.summary).clone()
    };
    match result {
        Ok(()) => Ok(summary),
        Err(DriveError::Connect(e)) => Err(e.into()),
        Err(DriveError::Stage(e)) => Err(e),
    }
}

/// The settler's stage of the group driver: the coordinator's state, owned
/// by its thread; see the module docs.
pub(crate) struct Settling {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// The partitions owned, by partition.
    tasks: HashMap<i32, PartitionTask>,
    /// How long the producer tries to deliver a record
    /// ([`delivery_timeout`]).
    delivery_timeout: Duration,
    /// When the coordinator's turns renew the lease by themselves.
    renewal: Renewal,
    last_renewal: Instant,
    /// When the once-a-second checks (stuck commands, metrics) last ran.
    last_check: Instant,
}

impl Settling {
    /// The partitions owned, each with the number of its task.
    fn owned(&self) -> HashMap<i32, u64> {
        self.tasks
            .iter()
            .map(|(&partition, task)| (partition, task.number))
            .collect()
    }

    /// Stops the tasks of `partitions` (all when `None`) at their next
    /// recovery point, waiting at most [`REVOKE_WAIT`], then aborts those
    /// still running: their commands are resumed by the next owner. Then
    /// seals the partitions ([`Shared::sealed`]) and waits until every
    /// record the settler queued is delivered or has failed, for at most
    /// the delivery timeout ([`DELIVERY_TIMEOUT`]) and [`DELIVERY_MARGIN`]
    /// (and the margin again for the reports of a purge, below):
    /// a changelog record of a partition handed over (a state sent without
    /// waiting, or one an aborted task was waiting for) that librdkafka
    /// still retried could land after the next owner's records of the same
    /// key, and compaction keeps the latest, an older state of a command
    /// or a lower floor. Partitions `lost` (the group gave them away
    /// without this member) may be the next owner's already: what is
    /// still queued once their tasks have stopped is dropped instead of
    /// delivered, as is everything left when the wait runs out. A record
    /// on its way to the broker cannot be called back: librdkafka reports
    /// it failed, "possibly persisted", when its time is up, and the
    /// broker may append it still. With the default (eager) assignment
    /// every partition is stopped here, so what is queued is theirs; with
    /// a cooperative one (set by `-X`), the kept partitions' records are
    /// waited for too, and nothing is dropped. The partitions stopped,
    /// with the numbers of their tasks, whose done offsets are final.
    fn stop_partitions(&mut self, partitions: Option<&[i32]>, lost: bool) -> HashMap<i32, u64> {
        let stopped: Vec<(i32, PartitionTask)> = chosen(&self.tasks, partitions)
            .into_iter()
            .filter_map(|p| self.tasks.remove(&p).map(|task| (p, task)))
            .collect();
        let numbers: HashMap<i32, u64> = stopped
            .iter()
            .map(|(partition, task)| (*partition, task.number))
            .collect();
        for (_, task) in &stopped {
            let _ = task.stop.send(true);
        }
        self.runtime.block_on(async {
            let mut handles: Vec<_> = stopped.into_iter().map(|(_, task)| task.handle).collect();
            let all = join_all(handles.iter_mut());
            if tokio::time::timeout(REVOKE_WAIT, all).await.is_err() {
                tracing::warn!(
                    "partition tasks did not stop within {} s; aborted, their commands are \
                     resumed by the next owner",
                    REVOKE_WAIT.as_secs()
                );
                for handle in &handles {
                    handle.abort();
                }
                join_all(handles.iter_mut()).await;
            }
        });
        lock(&self.shared.sealed).extend(numbers.keys());
        let producer = &self.shared.producer;
        // A purge drops every partition's records: only once none is kept
        // (a cooperative assignment keeps some, whose waited writes would
        // fail).
        let none_kept = self.tasks.is_empty();
        if lost && none_kept {
            producer.purge(PurgeConfig::default().queue());
        }
        let wait = self.delivery_timeout + DELIVERY_MARGIN;
        if let Err(e) = producer.flush(wait) {
            tracing::error!(
                records = producer.in_flight_count(),
                "the settler's records were neither delivered nor failed within {} s ({e}): \
                 ledger changelog records among them could land after the next owner's",
                wait.as_secs()
            );
            if none_kept {
                producer.purge(PurgeConfig::default().queue().inflight());
                // Serves the reports the purge made ready.
                let _ = producer.flush(DELIVERY_MARGIN);
            }
        }
        metrics::gauge!("hashbuy_settler_partitions_assigned").set(self.tasks.len() as f64);
        numbers
    }

    /// Renews the lease with a proof of membership: a synchronous commit
    /// the broker accepted, or, with nothing to commit, the coordinator's
    /// continuous turns. A refused commit lapses it: a revocation or a
    /// fatal error follows, or the next commit proves membership again.
    fn renew_lease(&mut self, member: &Member<Settling>, turned: Instant) {
        let lease = &self.shared.lease;
        let continuous = self.renewal.polled(turned);
        let held = lease.holds();
        let renew_every = if held {
            // Twice a term at least, so a lease of a short session (the
            // embedded broker's) is renewed before it runs out.
            COMMIT_EVERY.min(lease.term() / 2)
        } else {
            // Without the lease, commands wait: try again sooner.
            COMMIT_EVERY / 5
        };
        if turned.saturating_duration_since(self.last_renewal) < renew_every {
            return;
        }
        self.last_renewal = turned;
        let sent = Instant::now();
        match commit_done(member, &self.shared, &self.owned(), CommitMode::Sync) {
            Ok(true) => {
                lease.renew(sent);
                self.renewal.proven();
            }
            Ok(false) if continuous => lease.renew(turned),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("{e}; provider calls wait until a commit is accepted");
                lease.lapse();
            }
        }
        let holds = lease.holds();
        if held && !holds {
            tracing::warn!(
                "the settler cannot show that it still owns its partitions (lease of {} s ran \
                 out): provider calls wait",
                lease.term().as_secs()
            );
        }
        metrics::gauge!("hashbuy_settler_lease_held").set(if holds { 1.0 } else { 0.0 });
    }

    /// The oldest command in flight, as a metric, and on `/healthz` once it
    /// is stuck.
    fn check_pending(&self, health: &Health) {
        let oldest = lock(&self.shared.pending)
            .iter()
            .map(|(id, since)| (since.elapsed(), id.clone()))
            .max();
        let age = oldest.as_ref().map(|(age, _)| *age).unwrap_or_default();
        metrics::gauge!("hashbuy_settler_oldest_pending_seconds").set(age.as_secs_f64());
        let stuck = oldest
            .filter(|(age, _)| *age >= self.shared.config.stuck_after)
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
    }
}

impl Stage for Settling {
    type Error = RunError;
    type Output = ();

    fn assigned(&mut self, member: &Arc<Member<Settling>>, queues: Vec<(i32, Queue<Settling>)>) {
        let partitions: Vec<i32> = queues.iter().map(|(partition, _)| *partition).collect();
        let topic = &self.shared.config.topics.commands;
        let committed = committed(member, topic, partitions.iter().copied()).unwrap_or_else(|e| {
            // Without them, decided entries not known to be acked are acked
            // again, which acks allow.
            tracing::warn!("cannot read the group's committed offsets of {topic}: {e}");
            HashMap::new()
        });
        {
            // What the group committed is committed again with every
            // renewal of the lease until the partition's task finds more:
            // an accepted commit is the lease's proof of membership.
            let mut done = lock(&self.shared.done);
            let next = self.shared.next_task.load(Ordering::Relaxed);
            for (i, partition) in partitions.iter().enumerate() {
                if let Some(&offset) = committed.get(partition) {
                    done.insert(*partition, (next + i as u64, offset));
                }
            }
        }
        // Commands deleted before they were read are purchases never
        // charged: judged before any task starts.
        let mut next = HashMap::new();
        match check_starts(member, topic, &partitions, CONNECT_TIMEOUT) {
            Ok(starts) => {
                for start in starts {
                    next.insert(start.partition, start.next);
                    if let Some(gap) = &start.before_group {
                        report_before_group(gap);
                    }
                    if let Some(gap) = start.lost {
                        report_lost(&gap);
                        if self.shared.config.on_data_loss == OnDataLoss::Stop {
                            self.shared.fail(RunError::DataLoss { gap });
                            return;
                        }
                    }
                }
            }
            Err(source) => {
                self.shared.fail(RunError::Kafka(Failed {
                    what: "cannot check the assigned partitions for lost commands",
                    source,
                }));
                return;
            }
        }
        // Sealed when this member last handed them over; its aborted tasks
        // are long gone.
        lock(&self.shared.sealed).retain(|p| !partitions.contains(p));
        let restore = Arc::new(Restore::new(&self.shared, partitions, committed));
        for (partition, mut queue) in queues {
            let arrived = Arc::new(Notify::new());
            let notify = Arc::clone(&arrived);
            queue.set_nonempty_callback(move || notify.notify_one());
            let (stop, stopped) = watch::channel(false);
            let shared = Arc::clone(&self.shared);
            let restore = Arc::clone(&restore);
            let number = shared.next_task.fetch_add(1, Ordering::Relaxed);
            let starting = Counted::new(&shared, |s| &s.starting);
            let continuity = Continuity::new(topic, partition, next.get(&partition).copied());
            let offsets = PartitionOffsets::new(member, topic, partition);
            let handle = self.runtime.spawn(async move {
                let task = PartitionRun {
                    partition,
                    number,
                    stopped,
                    starting,
                    continuity,
                    offsets,
                };
                if let Err(e) = partition_task(&shared, task, queue, arrived, restore).await {
                    shared.fail(e);
                }
            });
            self.tasks.insert(
                partition,
                PartitionTask {
                    stop,
                    handle,
                    number,
                },
            );
        }
        metrics::gauge!("hashbuy_settler_partitions_assigned").set(self.tasks.len() as f64);
    }

    fn revoking(&mut self, member: &Member<Settling>, partitions: &[i32]) {
        let stopped = self.stop_partitions(Some(partitions), member.assignment_lost());
        match commit_done(member, &self.shared, &stopped, CommitMode::Sync) {
            Ok(_) => {}
            // Lost with its session, or taken in a rebalance this member
            // missed: the next owner acks again what was done since the
            // last commit, and this member rejoins. Its membership is in
            // doubt too: partitions it keeps (a cooperative assignment)
            // wait for a commit that proves it.
            Err(e) if group::moved_on(&e.source) => {
                self.shared.lease.lapse();
                tracing::warn!(
                    partitions = ?partitions,
                    "{e}: the group moved on; their next owner acks again what this member \
                     settled since their last commit"
                );
            }
            Err(e) => self.shared.fail(e.into()),
        }
        let mut done = lock(&self.shared.done);
        let mut at_eof = lock(&self.shared.at_eof);
        for partition in partitions {
            done.remove(partition);
            at_eof.remove(partition);
        }
    }

    fn tick(&mut self, member: &Arc<Member<Settling>>, health: &Health) -> Result<(), RunError> {
        let turned = Instant::now();
        self.renew_lease(member, turned);
        if turned.saturating_duration_since(self.last_check) >= COMMIT_EVERY {
            self.last_check = turned;
            self.check_pending(health);
        }
        Ok(())
    }

    fn failure(&mut self) -> Option<RunError> {
        lock(&self.shared.failure).take()
    }

    fn at_eof(&self) -> HashSet<i32> {
        lock(&self.shared.at_eof).clone()
    }

    fn settled(&self) -> bool {
        self.shared.starting.load(Ordering::Relaxed) == 0
            && self.shared.resuming.load(Ordering::Relaxed) == 0
            && self.shared.pruning.load(Ordering::Relaxed) == 0
    }

    fn finish(&mut self, member: &Member<Settling>, _failed: bool) -> Result<(), RunError> {
        // Whatever happened, every task stops, and what is done (acked) is
        // committed: an offset is done only once its ack was delivered.
        let stopped = self.stop_partitions(None, false);
        commit_done(member, &self.shared, &stopped, CommitMode::Sync)?;
        Ok(())
    }
}

/// Commits the done offsets that the tasks `owned` (partition and task
/// number) found; whether any were committed.
fn commit_done(
    member: &Member<Settling>,
    shared: &Shared,
    owned: &HashMap<i32, u64>,
    mode: CommitMode,
) -> Result<bool, Failed> {
    let done = owned_done(&lock(&shared.done), owned);
    let mut offsets = TopicPartitionList::new();
    for (&partition, &offset) in &done {
        offsets
            .add_partition_offset(
                &shared.config.topics.commands,
                partition,
                Offset::Offset(offset),
            )
            .map_err(failed("cannot list offsets"))?;
    }
    if offsets.count() == 0 {
        return Ok(false);
    }
    match member.commit(&offsets, mode) {
        Ok(()) => Ok(true),
        // Nothing new to commit is no error.
        Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(false),
        Err(e) => Err(failed("cannot commit offsets")(e)),
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

/// One in a count of [`Shared`]'s that `--exit-at-end` waits out (a
/// partition task still starting, a first pruning pass not ended), counted
/// while this lives: dropped however its task ends, an abort too.
pub(crate) struct Counted {
    shared: Arc<Shared>,
    count: fn(&Shared) -> &std::sync::atomic::AtomicUsize,
}

impl Counted {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        count: fn(&Shared) -> &std::sync::atomic::AtomicUsize,
    ) -> Counted {
        count(shared).fetch_add(1, Ordering::Relaxed);
        Counted {
            shared: Arc::clone(shared),
            count,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.count)(&self.shared).fetch_sub(1, Ordering::Relaxed);
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
async fn join_all(tasks: impl IntoIterator<Item = &mut tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer_settings(user: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
        for (key, value) in user {
            config.set(*key, *value);
        }
        config
    }

    #[test]
    fn a_records_delivery_is_bounded_by_the_settler_or_by_the_user() {
        // librdkafka's default max.poll.interval.ms.
        const MAX_POLL_MS: u64 = 300_000;
        let bounded = |user: &[(&str, &str)]| {
            delivery_timeout(&mut producer_settings(user), MAX_POLL_MS, !user.is_empty())
        };
        assert_eq!(bounded(&[]).ok(), Some(DELIVERY_TIMEOUT));
        assert_eq!(
            bounded(&[("message.timeout.ms", "10000")]).ok(),
            Some(Duration::from_secs(10))
        );
        // Its alias is read as librdkafka reads it.
        assert_eq!(
            bounded(&[("delivery.timeout.ms", "120000")]).ok(),
            Some(Duration::from_secs(120))
        );
        // The longest a hand-over leaves room for: 300 s less 60 s for the
        // commands, 5 s twice for the reports and 30 s for the commit.
        assert_eq!(
            bounded(&[("message.timeout.ms", "200000")]).ok(),
            Some(Duration::from_secs(200))
        );
        for unbounded in ["0", "200001"] {
            match bounded(&[("message.timeout.ms", unbounded)]) {
                Err(e @ RunError::UnboundedDelivery { .. }) => assert!(
                    e.to_string()
                        .contains(&format!("-X message.timeout.ms={unbounded} ")),
                    "{e}"
                ),
                other => panic!("{unbounded} ms was taken: {other:?}"),
            }
        }
        // A group that gives a member less time than a hand-over takes: a
        // timeout the user lengthened is refused, naming the group's
        // setting; hashbuy's own, or one the user shortened, is kept (and
        // said at start).
        match delivery_timeout(
            &mut producer_settings(&[("message.timeout.ms", "40000")]),
            60_000,
            true,
        ) {
            Err(e @ RunError::UnboundedDelivery { .. }) => {
                assert!(e.to_string().contains("max.poll.interval.ms 60000"), "{e}")
            }
            other => panic!("taken: {other:?}"),
        }
        assert_eq!(
            delivery_timeout(&mut producer_settings(&[]), 60_000, false).ok(),
            Some(DELIVERY_TIMEOUT)
        );
        assert_eq!(
            delivery_timeout(
                &mut producer_settings(&[("message.timeout.ms", "5000")]),
                60_000,
                true
            )
            .ok(),
            Some(Duration::from_secs(5))
        );
        // librdkafka's topic-level spelling is the same setting.
        match bounded(&[("topic.message.timeout.ms", "600000")]) {
            Err(e @ RunError::UnboundedDelivery { .. }) => {
                assert!(e.to_string().contains("=600000 "), "{e}")
            }
            other => panic!("taken: {other:?}"),
        }
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
