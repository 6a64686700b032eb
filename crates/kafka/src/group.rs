//! A consumer group member whose partitions each get their own queue, for
//! one worker per partition, and whose rebalances wait for the work of
//! revoked partitions to be made durable.
//!
//! [`GroupContext`] is the rdkafka consumer context. In librdkafka a
//! rebalance runs inside the `poll` of the thread that drives the consumer;
//! there the context:
//!
//! - on **assignment**, splits each new partition's queue from the main
//!   queue *before* librdkafka starts fetching it (so no record of it ever
//!   reaches the main queue) and hands the queues to
//!   [`Assignment::assigned`], which starts a worker per partition;
//! - on **revocation**, calls [`Assignment::revoking`] and returns to
//!   librdkafka only when it has: the owner stops the workers of those
//!   partitions, makes what they finished durable and commits it, so the
//!   next owner starts where this one stopped.
//!
//! Records deleted before they were read are found by [`crate::loss`],
//! from offsets: at assignment ([`crate::loss::check_starts`], which the
//! owner calls from [`Assignment::assigned`]) and while reading
//! ([`crate::loss::Continuity`], with [`GroupContext::log_start`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// The consumer type of a group member.
pub type GroupConsumer<A> = BaseConsumer<GroupContext<A>>;

/// A partition's own queue.
pub type Queue<A> = PartitionQueue<GroupContext<A>>;

/// What a group member does when partitions come and go. Both calls run on
/// the thread that polls the consumer, inside its `poll`.
pub trait Assignment: Send + Sync + Sized + 'static {
    /// Partitions were given to this member, each with its own queue;
    /// fetching starts when this returns. The consumer is there for what
    /// the group knows of them, e.g. [`committed`] offsets.
    fn assigned(&self, consumer: &GroupConsumer<Self>, queues: Vec<(i32, Queue<Self>)>);

    /// Partitions are being taken away: stop their workers and make what
    /// they finished durable before returning.
    fn revoking(&self, consumer: &GroupConsumer<Self>, partitions: &[i32]);

    /// librdkafka's statistics (every `statistics.interval.ms`), e.g. for
    /// consumer lag.
    fn statistics(&self, _statistics: Statistics) {}
}

/// The consumer context of a group member; see the module docs.
pub struct GroupContext<A: Assignment> {
    /// What to do on rebalances.
    pub assignment: A,
    topic: String,
    consumer: OnceLock<Weak<GroupConsumer<A>>>,
}

impl<A: Assignment> GroupContext<A> {
    /// Creates a consumer of `topic` from `config` (which must carry
    /// `group.id`) and subscribes it.
    pub fn subscribe(
        config: &ClientConfig,
        topic: &str,
        assignment: A,
    ) -> KafkaResult<Arc<GroupConsumer<A>>> {
        use rdkafka::consumer::Consumer;
        let context = GroupContext {
            assignment,
            topic: topic.to_owned(),
            consumer: OnceLock::new(),
        };
        let consumer: Arc<GroupConsumer<A>> = Arc::new(config.create_with_context(context)?);
        // Splitting a queue needs the consumer itself; the context only
        // gets a borrow of it in callbacks, so it keeps a weak handle
        // (weak, or the consumer would own itself).
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// A handle for the log starts of the member's partitions, for their
    /// workers.
    pub fn log_starts(&self) -> LogStarts<A> {
        LogStarts {
            consumer: self.consumer.get().cloned().unwrap_or_default(),
            topic: self.topic.clone(),
        }
    }
}

/// Where a group member's partitions' logs start, asked from a partition's
/// worker when its offsets jump ([`crate::loss::Continuity::read`]). It
/// holds the consumer weakly: workers never keep it alive.
pub struct LogStarts<A: Assignment> {
    consumer: Weak<GroupConsumer<A>>,
    topic: String,
}

impl<A: Assignment> Clone for LogStarts<A> {
    fn clone(&self) -> Self {
        LogStarts {
            consumer: Weak::clone(&self.consumer),
            topic: self.topic.clone(),
        }
    }
}

impl<A: Assignment> LogStarts<A> {
    /// The log start of `partition`: librdkafka's cached one, else the
    /// broker's answer within `timeout` ([`crate::loss::log_start`]);
    /// `None` if unknown or the consumer is gone.
    pub fn get(&self, partition: i32, timeout: Duration) -> Option<i64> {
        let consumer = self.consumer.upgrade()?;
        crate::loss::log_start(&consumer, &self.topic, partition, timeout)
    }
}

impl<A: Assignment> ClientContext for GroupContext<A> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client::log(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        self.assignment.statistics(statistics);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::client::error(error, reason);
    }
}

impl<A: Assignment> ConsumerContext for GroupContext<A> {
    fn pre_rebalance(&self, consumer: &GroupConsumer<A>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let Some(owner) = self.consumer.get().and_then(Weak::upgrade) else {
                    return;
                };
                let queues = list
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                    .filter_map(|e| {
                        let queue = owner.split_partition_queue(e.topic(), e.partition());
                        queue.map(|q| (e.partition(), q))
                    })
                    .collect();
                tracing::info!(partitions = ?partitions(list), "partitions assigned");
                self.assignment.assigned(consumer, queues);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = ?partitions(list), "partitions revoked");
                self.assignment.revoking(consumer, &partitions(list));
            }
            Rebalance::Error(e) => tracing::error!("rebalance failed: {e}"),
        }
    }
}

/// The settings of a hashbuy group member (`group` and its member
/// `instance`): static membership, so a restarted member takes its
/// partitions back at once instead of after the session timeout; offsets
/// committed by hashbuy, never automatically; a new group starts at the
/// oldest record; only committed transactions are read; and, when reading
/// to an end (`exit_at_end`), the end of each partition is reported.
pub fn member_settings(
    group: &str,
    instance: &str,
    exit_at_end: bool,
) -> Vec<(&'static str, String)> {
    vec![
        ("group.id", group.to_owned()),
        ("group.instance.id", format!("{group}-{instance}")),
        ("enable.auto.commit", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("isolation.level", "read_committed".to_owned()),
        ("enable.partition.eof", exit_at_end.to_string()),
    ]
}

/// The end of each of `topic`'s `partitions` that holds records, as the
/// member starts: what `--exit-at-end` reads to. Empty unless
/// `exit_at_end`.
pub fn ends_at_start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: usize,
    exit_at_end: bool,
) -> KafkaResult<HashMap<i32, i64>> {
    if !exit_at_end {
        return Ok(HashMap::new());
    }
    Ok(
        crate::reader::nonempty_watermarks(consumer, topic, 0..partitions as i32)?
            .into_iter()
            .map(|(partition, (_, high))| (partition, high))
            .collect(),
    )
}

/// Serves the member's main queue once, waiting at most `timeout`:
/// rebalances and client errors arrive there; records never do, as every
/// partition's queue is split off before it is fetched (one that does is
/// logged and left to the partition's next owner). Only a fatal consumer
/// error is returned.
pub fn serve_main_queue<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    use rdkafka::Message;
    match consumer.poll(timeout) {
        None | Some(Err(KafkaError::PartitionEOF(_))) => Ok(()),
        Some(Ok(message)) => {
            tracing::error!(
                partition = message.partition(),
                offset = message.offset(),
                "a record reached the main queue; it is left to the partition's next owner"
            );
            Ok(())
        }
        Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => Err(e),
        Some(Err(e)) => {
            tracing::warn!("consumer: {e}");
            Ok(())
        }
    }
}

/// Whether the group has committed, for every partition, the end `ends`
/// it had when the member started (`--exit-at-end`), and this member has
/// seen the end of each partition it owns (`at_eof`). The second test
/// guards against brokers that report high watermarks short of the real
/// end, as tansu 0.6 does.
pub fn consumed_to<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    ends: &HashMap<i32, i64>,
    at_eof: &HashSet<i32>,
) -> KafkaResult<bool> {
    use rdkafka::consumer::Consumer;
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 && !ends.is_empty() {
        return Ok(false);
    }
    if assignment
        .elements()
        .iter()
        .any(|e| !at_eof.contains(&e.partition()) && ends.contains_key(&e.partition()))
    {
        return Ok(false);
    }
    let committed = committed(consumer, topic, ends.keys().copied())?;
    Ok(ends
        .iter()
        .all(|(partition, &end)| committed.get(partition).is_some_and(|&o| o >= end)))
}

/// The offsets the group has committed for `partitions` of `topic`; a
/// partition it never committed is absent.
pub fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> KafkaResult<HashMap<i32, i64>> {
    use rdkafka::consumer::Consumer;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, CONSUMED_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// How long [`consumed_to`] and [`committed`] wait for the committed
/// offsets.
const CONSUMED_TIMEOUT: Duration = Duration::from_secs(30);

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}
