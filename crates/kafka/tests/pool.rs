//! A group member's partitions read on a pool of two threads: every record
//! is handed over once, each partition's in offset order on one thread, and
//! stopping every partition empties the pool.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::group::{Assignment, GroupConsumer, GroupContext, Queue};
use hashbuy_kafka::pool::{PartitionWork, Pool};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

const PARTITIONS: i32 = 16;
const RECORDS: usize = 4_000;

/// What the works saw, per partition.
#[derive(Default)]
struct Seen {
    offsets: BTreeMap<i32, Vec<i64>>,
    threads: BTreeMap<i32, HashSet<ThreadId>>,
}

struct Member {
    seen: Arc<Mutex<Seen>>,
    pool: Pool<GroupContext<Member>, Work>,
}

impl Assignment for Member {
    fn assigned(&self, _: &GroupConsumer<Self>, queues: Vec<(i32, Queue<Self>)>) {
        for (partition, queue) in queues {
            let work = Work {
                partition,
                seen: Arc::clone(&self.seen),
            };
            self.pool.add(partition, queue, work);
        }
    }

    fn revoking(&self, _: &GroupConsumer<Self>, _: &[i32]) {}
}

struct Work {
    partition: i32,
    seen: Arc<Mutex<Seen>>,
}

impl PartitionWork for Work {
    fn message(&mut self, message: KafkaResult<BorrowedMessage<'_>>) {
        let Ok(message) = message else { return };
        let mut seen = self.seen.lock().expect("not poisoned");
        seen.offsets
            .entry(self.partition)
            .or_default()
            .push(message.offset());
        seen.threads
            .entry(self.partition)
            .or_default()
            .insert(std::thread::current().id());
    }

    fn pause(&mut self) {}
}

#[test]
fn a_pool_reads_every_partition_in_order_on_its_threads() {
    let broker = EmbeddedBroker::start(&["pooled"], PARTITIONS).expect("broker starts");
    let bootstrap = broker.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let key = format!("user-{}", i % 97);
        producer
            .send(BaseRecord::to("pooled").key(&key).payload("tweet"))
            .expect("queued");
    }
    producer
        .flush(Duration::from_secs(10))
        .expect("all delivered");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let member = Member {
        seen: Arc::clone(&seen),
        pool: Pool::new(2, "test-pool").expect("threads start"),
    };
    let consumer = GroupContext::subscribe(
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "pool-test")
            .set("auto.offset.reset", "earliest"),
        "pooled",
        member,
    )
    .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = || total_of(&seen.lock().expect("not poisoned"));
    while total() < RECORDS {
        assert!(Instant::now() < deadline, "only {} records read", total());
        consumer.poll(Duration::from_millis(10));
    }

    let pool = &consumer.context().assignment.pool;
    assert_eq!(pool.len(), PARTITIONS as usize);
    let mut stopping = pool.stop(None);
    assert_eq!(stopping.partitions().len(), PARTITIONS as usize);
    while !stopping.finished().expect("no thread lost") {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(pool.is_empty());

    let seen = seen.lock().expect("not poisoned");
    assert_eq!(total_of(&seen), RECORDS, "every record exactly once");
    for (partition, offsets) in &seen.offsets {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &expected, "partition {partition} in offset order");
    }
    let threads: HashSet<ThreadId> = seen.threads.values().flatten().copied().collect();
    assert!(threads.len() <= 2, "{} threads read", threads.len());
    for (partition, on) in &seen.threads {
        assert_eq!(on.len(), 1, "partition {partition} read on one thread");
    }
}

fn total_of(seen: &Seen) -> usize {
    seen.offsets.values().map(Vec::len).sum()
}
