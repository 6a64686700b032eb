//! The embedded broker carries records end to end, through its own port and
//! through a forwarded one.

use std::time::{Duration, Instant};

use hashbuy_kafka::broker::{forward, EmbeddedBroker};
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

const RECORDS: usize = 200;

/// Produces `RECORDS` records to `topic` and reads them back with a fresh
/// consumer group, both through `bootstrap`.
fn round_trip(bootstrap: &str, topic: &str) -> Vec<(String, String)> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let key = format!("user-{}", i % 7);
        let value = format!("tweet-{i}");
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value))
            .expect("queued");
    }
    producer
        .flush(Duration::from_secs(10))
        .expect("all delivered");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < RECORDS && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("no consumer error");
            let text =
                |b: Option<&[u8]>| String::from_utf8(b.expect("present").to_vec()).expect("UTF-8");
            got.push((text(message.key()), text(message.payload())));
        }
    }
    got.sort();
    got
}

fn expected() -> Vec<(String, String)> {
    let mut all: Vec<_> = (0..RECORDS)
        .map(|i| (format!("user-{}", i % 7), format!("tweet-{i}")))
        .collect();
    all.sort();
    all
}

#[test]
fn records_round_trip_through_the_brokers_own_port() {
    let broker = EmbeddedBroker::start(&["tweets"], 8).expect("broker starts");
    assert_eq!(broker.topic_capacity_bytes(), 8 * 5 * 1024 * 1024);
    assert_eq!(
        round_trip(&broker.bootstrap_servers(), "tweets"),
        expected()
    );
}

#[test]
fn records_round_trip_through_a_forwarded_port() {
    let broker = EmbeddedBroker::start(&["payment-commands"], 4).expect("broker starts");
    let target = broker.bootstrap_servers().parse().expect("host:port");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listener");
    let port = listener.local_addr().expect("bound").port();
    runtime.spawn(forward(listener, target));
    assert_eq!(
        round_trip(&format!("127.0.0.1:{port}"), "payment-commands"),
        expected()
    );
}

/// The embedded broker deletes a partition's oldest records past 5 MB, and
/// a reader of the whole topic is told where what is left begins.
#[test]
fn a_reader_is_told_where_a_partition_begins_after_retention() {
    let broker = EmbeddedBroker::start(&["full", "fresh"], 1).expect("broker starts");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let record = vec![b'x'; 100 * 1024];
    for _ in 0..70 {
        producer
            .send(BaseRecord::<(), _>::to("full").payload(&record))
            .expect("queued");
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(10))
        .expect("all delivered");
    producer
        .send(BaseRecord::<(), _>::to("fresh").payload("one"))
        .expect("queued");
    producer
        .flush(Duration::from_secs(10))
        .expect("all delivered");

    let connection = Connection {
        brokers: broker.bootstrap_servers(),
        properties: Vec::new(),
    };
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: true,
        read_uncommitted: false,
    };
    let full = TopicReader::open(&connection, "full", options).expect("reader");
    let first = full.first_offsets().get(&0).copied();
    assert!(first.is_some_and(|f| f > 0 && f < 70), "{first:?}");
    let fresh = TopicReader::open(&connection, "fresh", options).expect("reader");
    assert_eq!(fresh.first_offsets().get(&0), Some(&0));
}
