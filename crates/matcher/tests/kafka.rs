//! The matcher on the embedded broker (librdkafka's mock cluster), in
//! process: the sample stream in, exactly the expected commands and dead
//! letters out, in both delivery modes; a restart resumes after what was
//! committed.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hashbuy_core::decode::{decode, Record};
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_matcher::run::{run, Config, Delivery, OnDataLoss, Summary};
use hashbuy_matcher::{Matcher, Output, Source};
use hashbuy_proto::v1::{DeadLetter, PaymentCommand};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

fn matcher() -> Arc<Matcher> {
    let (catalog, accounts) = hashbuy_core::samples::tables();
    Arc::new(Matcher::new(catalog, accounts))
}

fn connection(broker: &EmbeddedBroker) -> Connection {
    Connection {
        brokers: broker.bootstrap_servers(),
        // A restarted member rejoins within seconds on the mock cluster.
        properties: vec![("session.timeout.ms".into(), "6000".into())],
    }
}

/// Produces records to `tweets`, keyed by author as `hashbuy replay` does.
fn produce(connection: &Connection, records: &[&[u8]]) {
    let producer: BaseProducer = connection.config().create().expect("producer");
    for value in records {
        let key = match decode(value) {
            Ok(Record::Tweet(t)) => Some(t.user_id.into_owned()),
            _ => None,
        };
        let mut record = BaseRecord::to("tweets").payload(*value);
        if let Some(key) = &key {
            record = record.key(key);
        }
        producer.send(record).expect("queued");
    }
    producer.flush(Duration::from_secs(10)).expect("delivered");
}

fn sample_records() -> Vec<&'static [u8]> {
    hashbuy_core::samples::TWEETS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::as_bytes)
        .collect()
}

/// Command ids the sample should produce, computed offline.
fn expected_command_ids() -> BTreeSet<String> {
    let matcher = matcher();
    let mut out = Vec::new();
    for value in sample_records() {
        let source = Source {
            topic: "tweets",
            partition: 0,
            offset: 0,
            key: None,
            value,
        };
        matcher.handle(&source, 0, &mut out);
    }
    out.iter()
        .filter_map(|o| match o {
            Output::Command { command, .. } => Some(command.command_id.clone()),
            Output::DeadLetter(_) => None,
        })
        .collect()
}

fn config(connection: Connection, delivery: Delivery) -> Config {
    Config {
        connection,
        group: format!("matcher-{delivery:?}"),
        topics: Topics::default(),
        delivery,
        exit_at_end: true,
        batch_records: 7,
        batch_time: Duration::from_millis(50),
        instance: "0".into(),
        on_data_loss: OnDataLoss::Stop,
        workers: 2,
    }
}

/// Everything committed on `topic`, decoded.
fn read_all<M: prost::Message + Default>(
    connection: &Connection,
    topic: &str,
) -> Vec<(Option<String>, M)> {
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: true,
        read_uncommitted: false,
    };
    let mut reader = TopicReader::open(connection, topic, options).expect("reader");
    let mut all = Vec::new();
    while !reader.at_end() {
        if let Some(message) = reader.next(Duration::from_millis(100)) {
            let message = message.expect("no consumer error");
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            all.push((
                key,
                M::decode(message.payload().unwrap_or_default()).expect("decodes"),
            ));
        }
    }
    all
}

fn match_sample(delivery: Delivery) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let connection = connection(&broker);
    produce(&connection, &sample_records());
    let stop = AtomicBool::new(false);
    let summary = run(
        matcher(),
        &config(connection.clone(), delivery),
        &stop,
        &Health::default(),
    )
    .expect("matcher runs");
    assert_eq!(
        (summary.records, summary.commands, summary.dead_letters),
        (18, 6, 2),
        "{summary:?}"
    );

    let commands: Vec<(Option<String>, PaymentCommand)> = read_all(&connection, "payment-commands");
    let ids: BTreeSet<String> = commands.iter().map(|(_, c)| c.command_id.clone()).collect();
    assert_eq!(commands.len(), 6, "no duplicates");
    assert_eq!(ids, expected_command_ids());
    assert!(
        commands
            .iter()
            .all(|(key, c)| key.as_deref() == Some(c.user_id.as_str())),
        "keyed by user"
    );
    let letters: Vec<(Option<String>, DeadLetter)> = read_all(&connection, "dead-letters");
    let mut reasons: Vec<&str> = letters.iter().map(|(_, l)| l.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["invalid JSON at byte 59: unterminated string", "missing id"]
    );
    assert!(letters
        .iter()
        .all(|(_, l)| l.topic == "tweets" && l.stage == "match" && !l.value.is_empty()));

    // A restart resumes after the committed offsets: only the new records,
    // a poison one among them, are matched.
    produce(&connection, &[b"\xff\xfe not a tweet", sample_records()[0]]);
    let again: Summary = run(
        matcher(),
        &config(connection.clone(), delivery),
        &stop,
        &Health::default(),
    )
    .expect("matcher runs again");
    assert_eq!(
        (again.records, again.commands, again.dead_letters),
        (2, 1, 1),
        "{again:?}"
    );
    let letters: Vec<(Option<String>, DeadLetter)> = read_all(&connection, "dead-letters");
    assert!(
        letters
            .iter()
            .any(|(_, l)| l.reason.starts_with("not JSON, and not a protobuf Tweet")),
        "the poison record is set aside"
    );
}

#[test]
fn exactly_once_gives_each_command_once() {
    match_sample(Delivery::ExactlyOnce);
}

#[test]
fn at_least_once_gives_the_same_on_a_clean_run() {
    match_sample(Delivery::AtLeastOnce);
}
