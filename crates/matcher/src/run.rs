//! The matcher on Kafka: consume tweets, produce commands and dead
//! letters, commit offsets — in batches, a worker per partition.
//!
//! # Concurrency
//!
//! The consumer group is joined and driven by [`hashbuy_kafka::driver`],
//! as the settler's is; the matcher's part is its stage
//! ([`crate::stage`]), its partitions' workers ([`crate::worker`]) and
//! its batches ([`crate::batch`]).
//!
//! - **A worker per assigned partition**, run on a few threads
//!   ([`Config::workers`], a [`Pool`](hashbuy_kafka::pool::Pool)). Each
//!   reads its partition's own queue (split from the consumer's main
//!   queue by the driver), decodes and decides records in offset order,
//!   encodes the outputs, and sends them in chunks over one bounded
//!   channel. The channel is the backpressure: when the coordinator falls
//!   behind, workers block, stop polling, and librdkafka stops fetching
//!   once its read-ahead queue is full.
//! - **One coordinator** (the thread calling [`run`]) owns the producer and
//!   the stage, and drives the consumer: it polls the main queue
//!   (rebalances and errors only), takes chunks, produces their outputs,
//!   and makes each batch (up to [`Config::batch_records`] records or
//!   [`Config::batch_time`], or what came before the input paused for
//!   20 ms) durable as a whole:
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
//!   (moved past any transaction marker when it reaches the partition's
//!   end) against the log start when a record jumps past it. It is never
//!   passed over in silence: it is logged with the offsets lost, counted,
//!   and by default stops the matcher before anything after it is
//!   committed ([`OnDataLoss`]). A new group (nothing committed) on a partition
//!   whose log starts above 0 is told how many records were deleted before
//!   it, and goes on.
//! - **After a failure** nothing more is committed: the workers' work is
//!   thrown away and the open transaction aborted, so readers of committed
//!   records are not held up until the broker's transaction timeout.
//! - **Pending purchases** (confirm mode, [`crate::restore`]): each
//!   worker owns its partition's [`PartitionFlow`](hashbuy_core::confirm::PartitionFlow)
//!   and sends its changes with its chunks; the batch writes them to the
//!   changelog with its outputs and offsets. A newly assigned partition's
//!   are restored and claimed by the coordinator, in the rebalance, before
//!   its worker starts; after an aborted transaction they are restored
//!   again, as the same owner.
//! - **The live tables** ([`crate::live`]) are read whole by the thread
//!   calling [`run`] before the group is joined, then followed by a thread
//!   of their own, which applies each change under the tables' write lock;
//!   the workers take the read lock for each record they decide.
//! - **Poison records** never stop it: a dead letter is fitted to the
//!   producer's record limit ([`hashbuy_proto::dead_letter::fit`]), its
//!   payload cut if need be, with the original size and SHA-256.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hashbuy_kafka::client::{failed, ConnectError, Connection, Failed, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::driver::{drive, DriveError, Membership};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::loss::Gap;
use hashbuy_kafka::produce::{record_budget, Deliveries};
use hashbuy_kafka::tables::FollowError;
use rdkafka::producer::{BaseProducer, Producer};

use crate::live;
use crate::stage::Matching;
use crate::Matcher;

/// How outputs and offsets are made durable together (the choice the
/// reservation step shares).
pub use hashbuy_kafka::config::Delivery;

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
    /// The topics: tweets are read from `tweets`, commands produced to
    /// `commands`, undecodable records to `dead_letters`.
    pub topics: Topics,
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
    /// Follow the live tables, the `catalog` and `account-links` topics
    /// that exist, over the files' tables (see [`crate::live`]).
    pub live_tables: bool,
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
    /// Replies to buyers produced (confirm mode).
    pub replies: u64,
    /// Dead letters produced.
    pub dead_letters: u64,
    /// Records without a hashtag sign, decided from the prefilter's scan
    /// ([`crate::Validation::Signed`]).
    pub skimmed: u64,
    /// Of the skimmed records validated as a sample, those that did not
    /// decode.
    pub malformed_samples: u64,
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
    /// The pending purchases' changelog cannot hold every partition's.
    #[error(
        "the catalog has confirm-mode offers, and the pending purchases' topic {changelog} has \
         {changelog_partitions} partitions, fewer than the {tweets_partitions} of {tweets}; \
         create it with as many"
    )]
    ChangelogTopicTooSmall {
        /// The changelog topic.
        changelog: String,
        /// Its partitions.
        changelog_partitions: usize,
        /// The tweets topic.
        tweets: String,
        /// Its partitions.
        tweets_partitions: usize,
    },
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
    /// The pending purchases' changelog could not be read to its end.
    #[error(
        "restoring partitions {partitions:?} from the pending purchases' changelog {topic} read \
         nothing for {} s (last error: {}); they cannot start without their pending purchases",
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
    /// The live tables could not be read before the first record.
    #[error(transparent)]
    Tables(#[from] FollowError),
    /// No offers or no links: the files gave none and the table's topic
    /// does not exist.
    #[error(
        "no {table}: the files give none and topic {topic} does not exist; give the table \
         file, or create the topic (hashbuy topics create)"
    )]
    NoTable {
        /// Which table.
        table: &'static str,
        /// Its topic.
        topic: String,
    },
    /// Another matcher claimed a partition this one was working on: the
    /// group moved it on, and this member is no longer its owner.
    #[error(
        "partition {partition}'s pending purchases were claimed by another matcher: the group \
         gave the partition to it; restart this one to rejoin"
    )]
    PartitionClaimed {
        /// The partition.
        partition: i32,
    },
    /// Claims of partitions kept losing races with other matchers.
    #[error("claiming partitions {partitions:?}'s pending purchases lost {claims} races in a row")]
    ClaimsLost {
        /// How many claims were made.
        claims: usize,
        /// The partitions.
        partitions: Vec<i32>,
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
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the matcher until `stop` is raised or, with `exit_at_end`, the
/// group has consumed what the topic held at start. `health` is told when
/// the matcher has partitions and beats on every turn.
pub fn run(
    matcher: Arc<Matcher>,
    config: &Config,
    stop: &AtomicBool,
    health: &Health,
) -> Result<Summary, RunError> {
    // Before the first record: decisions read the tables at each tweet's
    // time, and a confirm-mode offer in them needs pending purchases kept.
    let _follower = live::follow(&matcher, config)?;
    // Limited offers may come with any catalog change, so their topic is
    // needed from the start.
    let mut outputs = vec![
        config.topics.commands.clone(),
        config.topics.dead_letters.clone(),
        config.topics.stock_requests.clone(),
    ];
    if matcher.keeps_pending() {
        outputs.push(config.topics.replies.clone());
    }
    let membership = Membership {
        connection: config.connection.clone(),
        group: config.group.clone(),
        instance: config.instance.clone(),
        input: config.topics.tweets.clone(),
        outputs,
        exit_at_end: config.exit_at_end,
        // Per-partition lag for the metrics.
        settings: vec![("statistics.interval.ms", "5000".to_owned())],
    };
    // Before transactions start, which wait for the broker far longer: an
    // unreachable broker or a missing topic is said as such, at once.
    let tweets_partitions = membership.check_topics()?;
    if matcher.keeps_pending() {
        let changelog_partitions = config
            .connection
            .check_topic(&config.topics.pending, CONNECT_TIMEOUT)?;
        if changelog_partitions < tweets_partitions {
            return Err(RunError::ChangelogTopicTooSmall {
                changelog: config.topics.pending.clone(),
                changelog_partitions,
                tweets: config.topics.tweets.clone(),
                tweets_partitions,
            });
        }
    }

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
    let stage = Matching::new(matcher, config, producer, letter_bytes)?;
    drive(&membership, stage, stop, health).map_err(|e| match e {
        DriveError::Connect(e) => e.into(),
        DriveError::Stage(e) => e,
    })
}
