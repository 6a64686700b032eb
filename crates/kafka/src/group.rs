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

/// How long a member's session lasts on the embedded broker
/// (`session.timeout.ms`; librdkafka's default is 45 s).
///
/// librdkafka's mock cluster knows no static members, and it holds every
/// rebalance of a formed group open for the session timeout less a second,
/// waiting for members to join: with 45 s sessions, a member restarted
/// after a clean stop waited 44 s for its partitions, and one restarted
/// after a crash up to 90 s. With 5 s it waits about 4 s after a clean
/// stop. The broker runs on the same machine as its members, where a
/// heartbeat a second (`heartbeat.interval.ms`) is cheap. A shorter session
/// also shortens the settler's lease (a third of it), which its commits
/// renew every second.
pub const EMBEDDED_SESSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of a hashbuy group member (`group` and its member
/// `instance`):
///
/// - **Static membership** (`group.instance.id`), so that a member
///   restarted on a Kafka takes its partitions back at once instead of
///   after its session timeout, and the rest of the group is not
///   rebalanced. Not for a run to an end (`exit_at_end`), which is not
///   restarted and would only pay for it: tansu 0.6 holds each JoinGroup
///   and SyncGroup of a static member for 3 s, most of a short replay.
///   Not on the embedded broker (`embedded`), which ignores it; there a
///   member leaves the group when it stops, and its session is short
///   ([`EMBEDDED_SESSION_TIMEOUT`]), so its successor gets the partitions
///   within seconds.
/// - Offsets committed by hashbuy, never automatically; a new group starts
///   at the oldest record; only committed transactions are read; and, when
///   reading to an end, the end of each partition is reported.
pub fn member_settings(
    group: &str,
    instance: &str,
    exit_at_end: bool,
    embedded: bool,
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("group.id", group.to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("isolation.level", "read_committed".to_owned()),
        ("enable.partition.eof", exit_at_end.to_string()),
    ];
    if !exit_at_end && !embedded {
        settings.push(("group.instance.id", format!("{group}-{instance}")));
    }
    if embedded {
        settings.push((
            "session.timeout.ms",
            EMBEDDED_SESSION_TIMEOUT.as_millis().to_string(),
        ));
        settings.push(("heartbeat.interval.ms", "1000".to_owned()));
    }
    settings
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
