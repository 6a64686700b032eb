//! What every hashbuy group member shares, apart from the driver's loop
//! ([`crate::driver`]): its consumer settings, the end of its input at
//! start and whether the group has committed it (`--exit-at-end`), the
//! group's committed offsets, and serving the main queue, where only
//! rebalances and errors arrive.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

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

/// Whether a refused commit says the group has moved on without this
/// member (a rebalance under way, or an assignment lost when its session
/// ran out): the partitions' next owner starts from the offsets committed
/// before, so what this member finished since is read and done again
/// there, which hashbuy's outputs allow (a settler acks again what its
/// ledger decided; at least once, a matcher produces again). Any other
/// refusal is an error of its own.
pub fn moved_on(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error,
        KafkaError::ConsumerCommit(
            Code::IllegalGeneration | Code::UnknownMemberId | Code::RebalanceInProgress
        )
    )
}
