//! A table follower's progress asked while it runs, on a real client (the
//! embedded broker): `read_through_now` returns only once every change
//! written before it was asked has been handed on, and says so when the
//! follower cannot get there within the wait.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::tables::{self, Behind, Letters};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const TOPIC: &str = "merchants";
const WAIT: Duration = Duration::from_secs(10);

/// Writes one change of `key` to the table topic.
fn put(broker: &EmbeddedBroker, key: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to(TOPIC)
                .key(key)
                .payload("value")
                .timestamp(1_780_000_000_000),
        )
        .expect("queued");
    producer.flush(WAIT).expect("delivered");
}

/// A gate the follower's `apply` waits at while it is shut.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self.open.lock().expect("gate");
        while !*open {
            open = self.opened.wait(open).expect("gate");
        }
    }

    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }
}

struct OpenedOnDrop(Arc<Gate>);

impl Drop for OpenedOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[test]
fn a_follower_is_current_only_once_it_has_handed_on_what_was_written_before() {
    let broker = EmbeddedBroker::start(&[TOPIC, "dead-letters"], 1).expect("broker");
    put(&broker, "before-start");
    let connection = Connection {
        brokers: broker.bootstrap_servers(),
        properties: Vec::new(),
    };
    let applied = Arc::new(Mutex::new(Vec::<String>::new()));
    let gate = Arc::new(Gate::default());
    let follower = {
        let applied = Arc::clone(&applied);
        let gate = Arc::clone(&gate);
        let reader = tables::open(&connection, TOPIC)
            .expect("opens")
            .expect("the topic exists");
        tables::follow(
            &connection,
            vec![(TOPIC.to_owned(), reader)],
            Letters {
                topic: "dead-letters".into(),
                stage: "tables",
            },
            move |change| {
                // Changes after the start wait at the gate: a follower
                // that has read a change and not yet handed it on.
                if change.key != "before-start" {
                    gate.pass();
                }
                applied.lock().expect("applied").push(change.key.to_owned());
                Ok(())
            },
        )
        .expect("follows")
    };
    // Opened on the way out too: a failed check must not leave the
    // follower's thread, which its drop joins, waiting at the gate.
    let _opened = OpenedOnDrop(Arc::clone(&gate));
    let progress = follower.progress();
    progress
        .read_through_now(WAIT)
        .expect("current with what it read at start");

    put(&broker, "while-running");
    // Long enough for the broker's answers on a slow machine; the
    // follower waits at the gate however long it is.
    match progress.read_through_now(Duration::from_secs(3)) {
        Err(Behind::Follower {
            topic, partition, ..
        }) => assert_eq!((topic.as_str(), partition), (TOPIC, 0)),
        other => panic!("a follower stuck before the change was taken for current: {other:?}"),
    }
    assert_eq!(
        *applied.lock().expect("applied"),
        vec!["before-start".to_owned()],
        "the change waits at the gate"
    );

    gate.open();
    progress
        .read_through_now(WAIT)
        .expect("current once the change is handed on");
    assert_eq!(
        *applied.lock().expect("applied"),
        vec!["before-start".to_owned(), "while-running".to_owned()],
        "what was written before the ask was handed on when it returned"
    );
}
