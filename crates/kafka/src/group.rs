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

use crate::client::BrokerKind;

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
/// `instance`) on a `broker`:
///
/// - **Static membership** (`group.instance.id`), so that a restarted
///   member takes its partitions back at once, in the place of the one
///   that stopped (crashed or not), and the rest of the group is not
///   rebalanced. Two exceptions:
///   - On the embedded broker, which ignores it: members are dynamic,
///     leave the group when they stop, and have short sessions
///     ([`EMBEDDED_SESSION_TIMEOUT`]), so a successor gets the partitions
///     within seconds.
///   - On tansu, for a run to an end (`exit_at_end`, a batch replay or a
///     benchmark): tansu 0.6 holds each JoinGroup and SyncGroup of a static
///     member for 3 s, most of a short run. A killed run restarted there
///     waits for the dead member (tansu evicts none), where a static one
///     would have taken its place.
/// - Offsets committed by hashbuy, never automatically; a new group starts
///   at the oldest record; only committed transactions are read; and, when
///   reading to an end, the end of each partition is reported.
pub fn member_settings(
    group: &str,
    instance: &str,
    exit_at_end: bool,
    broker: BrokerKind,
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("group.id", group.to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("isolation.level", "read_committed".to_owned()),
        ("enable.partition.eof", exit_at_end.to_string()),
    ];
    let embedded = broker == BrokerKind::Embedded;
    let dynamic = embedded || (exit_at_end && broker == BrokerKind::Tansu);
    if !dynamic {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_static_but_on_the_embedded_broker_and_in_tansu_s_batch_runs() {
        let instance = |exit_at_end, broker| {
            member_settings("g", "0", exit_at_end, broker)
                .into_iter()
                .find(|(k, _)| *k == "group.instance.id")
                .map(|(_, v)| v)
        };
        for exit_at_end in [false, true] {
            assert_eq!(
                instance(exit_at_end, BrokerKind::Kafka).as_deref(),
                Some("g-0")
            );
            assert_eq!(instance(exit_at_end, BrokerKind::Embedded), None);
        }
        assert_eq!(instance(false, BrokerKind::Tansu).as_deref(), Some("g-0"));
        assert_eq!(instance(true, BrokerKind::Tansu), None);
        let embedded = member_settings("g", "0", false, BrokerKind::Embedded);
        assert!(embedded.contains(&("session.timeout.ms", "5000".to_owned())));
        assert_eq!(BrokerKind::of_cluster("tansu_cluster"), BrokerKind::Tansu);
        assert_eq!(
            BrokerKind::of_cluster("mockCluster1a2b"),
            BrokerKind::Embedded
        );
        assert_eq!(
            BrokerKind::of_cluster("MkU3OEVBNTctOEUyRi00"),
            BrokerKind::Kafka
        );
    }
}
