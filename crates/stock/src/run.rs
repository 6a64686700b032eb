//! The reservation step on Kafka: its configuration, its errors, and
//! [`run`].

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hashbuy_kafka::client::{failed, ConnectError, Connection, Failed};
use hashbuy_kafka::config::{Delivery, Topics};
use hashbuy_kafka::driver::{drive, DriveError, Membership};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{record_budget, Deliveries};
use rdkafka::producer::{BaseProducer, Producer};

use crate::stage::Reserving;

/// How long one Kafka call (a transaction's step, a flush) may wait.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the step reads, writes, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Kafka is.
    pub connection: Connection,
    /// Consumer group (default `hashbuy-stock`).
    pub group: String,
    /// This member's name in its group: its transactional id and static
    /// membership.
    pub instance: String,
    /// The topics: requests are read from `stock_requests`, the lines'
    /// changelog is `stock` (at least as many partitions), granted and
    /// sold-out commands go to `commands`, and records that are no
    /// request to `dead_letters`.
    pub topics: Topics,
    /// Exactly once (transactions) or at least once.
    pub delivery: Delivery,
    /// Stop once the group has consumed what the requests topic held at
    /// start.
    pub exit_at_end: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests read and committed.
    pub requests: u64,
    /// Commands sent on with a unit held.
    pub granted: u64,
    /// Commands rejected as sold out.
    pub sold_out: u64,
    /// Units the settler said were sold.
    pub sold: u64,
    /// Units that came back.
    pub released: u64,
    /// Records that were no request.
    pub dead_letters: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batches whose transaction was aborted, read again.
    pub retried_batches: u64,
}

/// Why the step stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A Kafka call failed.
    #[error(transparent)]
    Kafka(#[from] Failed),
    /// The changelog has fewer partitions than the requests.
    #[error(
        "the stock changelog {changelog} has {changelog_partitions} partitions, fewer than the \
         {requests_partitions} of {requests}: give it as many (hashbuy topics create does)"
    )]
    ChangelogTopicTooSmall {
        /// The changelog topic.
        changelog: String,
        /// Its partitions.
        changelog_partitions: usize,
        /// The requests topic.
        requests: String,
        /// Its partitions.
        requests_partitions: usize,
    },
    /// Records were not delivered.
    #[error("{count} records were not delivered; the first: {first}")]
    Undelivered {
        /// How many.
        count: u64,
        /// The first failure.
        first: String,
    },
    /// The changelog could not be read to its end.
    #[error(
        "cannot restore the stock lines of partitions {partitions:?} from {topic}: no record in \
         {} s{}",
        waited.as_secs(),
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    RestoreStalled {
        /// The changelog.
        topic: String,
        /// The partitions being restored.
        partitions: Vec<i32>,
        /// How long it waited.
        waited: Duration,
        /// The last error reading.
        last_error: Option<String>,
    },
    /// The changelog lost records to retention: the units they held or
    /// sold are forgotten, and the offers could sell past their stock.
    #[error(
        "the stock changelog {topic} partition {partition} starts at offset {first}: its \
         records before it were deleted (retention; the embedded broker keeps 5 MB a \
         partition), and with them units held or sold; the step does not start, as its offers \
         could sell past their stock. Give the topic compaction without deletion \
         (hashbuy topics create does)"
    )]
    ChangelogGap {
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Where it starts now.
        first: i64,
    },
    /// Transactions kept aborting.
    #[error("{times} transactions in a row were aborted; the step stops (see the warnings above)")]
    Aborted {
        /// How many.
        times: u32,
    },
    /// The member has no group metadata for a transaction.
    #[error("the consumer has no group metadata for the transaction")]
    NoGroup,
}

/// Runs the step until `stop` is raised or, with
/// [`Config::exit_at_end`], the requests topic is consumed to the end it
/// had at start; `health` beats on every turn and is ready once the group
/// has answered. What it did.
pub fn run(config: &Config, stop: &AtomicBool, health: &Health) -> Result<Summary, RunError> {
    let membership = Membership {
        connection: config.connection.clone(),
        group: config.group.clone(),
        instance: config.instance.clone(),
        input: config.topics.stock_requests.clone(),
        outputs: vec![
            config.topics.commands.clone(),
            config.topics.dead_letters.clone(),
        ],
        exit_at_end: config.exit_at_end,
        settings: Vec::new(),
    };
    let requests_partitions = membership.check_topics()?;
    let changelog_partitions = config
        .connection
        .check_topic(&config.topics.stock, CALL_TIMEOUT)?;
    if changelog_partitions < requests_partitions {
        return Err(RunError::ChangelogTopicTooSmall {
            changelog: config.topics.stock.clone(),
            changelog_partitions,
            requests: config.topics.stock_requests.clone(),
            requests_partitions,
        });
    }
    let mut settings = vec![("linger.ms", "1".to_owned())];
    match config.delivery {
        Delivery::ExactlyOnce => settings.push((
            "transactional.id",
            format!("hashbuy-stock-{}-{}", config.group, config.instance),
        )),
        // What lands of a request's changelog records is then a prefix of
        // them, in order, as `hashbuy_core::stock` needs: retries cannot
        // reorder or duplicate, and a record given up on is a fatal
        // error, never a gap.
        Delivery::AtLeastOnce => settings.extend([
            ("enable.idempotence", "true".to_owned()),
            ("enable.gapless.guarantee", "true".to_owned()),
        ]),
    }
    let client = config.connection.config_with(&settings);
    let letter_bytes = record_budget(&client);
    let producer: BaseProducer<Deliveries> = client
        .create_with_context(Deliveries::default())
        .map_err(failed("cannot create the producer"))?;
    if config.delivery == Delivery::ExactlyOnce {
        producer
            .init_transactions(CALL_TIMEOUT)
            .map_err(failed("cannot start transactions"))?;
    }
    let stage = Reserving::new(config.clone(), producer, letter_bytes);
    drive(&membership, stage, stop, health).map_err(|e| match e {
        DriveError::Connect(e) => RunError::Connect(e),
        DriveError::Stage(e) => e,
    })
}
