//! Lost data found from offsets on a real client (the embedded broker),
//! with librdkafka's log never looked at: a committed offset that
//! retention deleted, a reader whose position was deleted under it, a new
//! group on a log that starts above 0.

use std::time::Duration;

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::loss::{cached_log_start, check_starts, Continuity, Gap};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(10);

/// A one-partition topic filled with 800 records of 10 KB: past the
/// embedded broker's 5 MB, so its oldest records are deleted.
fn overflowed() -> (EmbeddedBroker, i64) {
    let broker = EmbeddedBroker::start(&["t"], 1).expect("broker");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .expect("producer");
    let value = vec![b'x'; 10_000];
    for _ in 0..800 {
        producer
            .send(BaseRecord::<(), _>::to("t").payload(&value))
            .expect("queued");
        producer.poll(Duration::ZERO);
    }
    producer.flush(WAIT).expect("delivered");
    let probe = consumer(&broker, "probe");
    let (low, high) = probe.fetch_watermarks("t", 0, WAIT).expect("watermarks");
    assert!(low > 10 && high == 800, "deleted the oldest: {low}..{high}");
    (broker, low)
}

fn consumer(broker: &EmbeddedBroker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // Whatever librdkafka would log, nobody hears it.
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
        .create()
        .expect("consumer")
}

fn gap(from: i64, to: i64) -> Option<Gap> {
    Some(Gap {
        topic: "t".into(),
        partition: 0,
        from,
        to,
    })
}

#[test]
fn a_committed_offset_that_was_deleted_is_a_gap_at_assignment() {
    let (broker, low) = overflowed();
    let member = consumer(&broker, "g");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("t", 0, Offset::Offset(10))
        .expect("offset");
    member
        .commit(&offsets, CommitMode::Sync)
        .expect("committed");
    let starts = check_starts(&member, "t", &[0], WAIT).expect("checked");
    assert_eq!(starts.len(), 1);
    assert_eq!((starts[0].next, &starts[0].lost), (low, &gap(10, low)));
    assert_eq!(starts[0].before_group, None);

    // A new group is told what was deleted before it, not given a loss.
    let fresh = check_starts(&consumer(&broker, "new"), "t", &[0], WAIT).expect("checked");
    assert_eq!((fresh[0].next, &fresh[0].lost), (low, &None));
    assert_eq!(fresh[0].before_group, gap(0, low));
}

#[test]
fn a_position_deleted_under_the_reader_is_a_gap_at_the_first_record_after_it() {
    let (broker, low) = overflowed();
    let reader = consumer(&broker, "r");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("t", 0, Offset::Offset(10))
        .expect("offset");
    reader.assign(&assignment).expect("assigned");
    // librdkafka resets the position to the oldest record left, silently.
    let first = loop {
        if let Some(message) = reader.poll(WAIT) {
            break message.expect("a record").offset();
        }
    };
    assert_eq!(first, low);
    // The log start comes from the last fetch, with no broker call.
    assert_eq!(cached_log_start(&reader, "t", 0), Some(low));
    let mut continuity = Continuity::new("t", 0, Some(10));
    assert_eq!(
        continuity.read(first, || cached_log_start(&reader, "t", 0)),
        gap(10, low)
    );
    assert_eq!(continuity.read(first + 1, || None), None);
}

/// A ListOffsets answer that librdkafka retries (a leader moving, say)
/// still gives every partition's watermarks: the loss check at assignment
/// never stops a service for a retry.
#[test]
fn watermarks_are_read_through_a_retried_request() {
    use hashbuy_kafka::reader::watermarks;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = MockCluster::new(1).expect("cluster");
    cluster.create_topic("t", 4, 1).expect("topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .expect("producer");
    for _ in 0..3 {
        producer
            .send(BaseRecord::<(), _>::to("t").partition(1).payload("x"))
            .expect("queued");
    }
    producer.flush(WAIT).expect("delivered");
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
        .create()
        .expect("consumer");
    cluster.request_errors(
        RDKafkaApiKey::ListOffsets,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE],
    );
    let marks = watermarks(&reader, "t", 0..4, WAIT).expect("watermarks");
    assert_eq!(marks.len(), 4);
    assert_eq!(marks[&1], (0, 3));
    assert_eq!(marks[&0], (0, 0));
}
