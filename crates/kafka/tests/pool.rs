//! A driven group member's partitions read on a pool of two threads: every
//! record is handed over once, each partition's in offset order on one
//! thread, and stopping every partition empties the pool.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::{Connection, Failed};
use hashbuy_kafka::driver::{drive, DriverContext, Member, Membership, Queue, Stage};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::pool::{PartitionWork, Pool};
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

/// What the pool held when every record was read, and after stopping it.
#[derive(Debug, Default)]
struct Stopped {
    partitions_before: usize,
    stopping: usize,
    empty_after: bool,
}

struct Reading {
    seen: Arc<Mutex<Seen>>,
    pool: Pool<DriverContext<Reading>, Work>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stage for Reading {
    type Error = Failed;
    type Output = Stopped;

    fn assigned(&mut self, _: &Arc<Member<Self>>, queues: Vec<(i32, Queue<Self>)>) {
        for (partition, queue) in queues {
            let work = Work {
                partition,
                seen: Arc::clone(&self.seen),
            };
            self.pool.add(partition, queue, work);
        }
    }

    fn revoking(&mut self, _: &Member<Self>, _: &[i32]) {}

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<(), Failed> {
        let total = total_of(&self.seen.lock().expect("not poisoned"));
        assert!(Instant::now() < self.deadline, "only {total} records read");
        if total >= RECORDS {
            self.stop.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn at_eof(&self) -> HashSet<i32> {
        HashSet::new()
    }

    fn finish(&mut self, _: &Member<Self>, _: bool) -> Result<Stopped, Failed> {
        let partitions_before = self.pool.len();
        let mut stopping = self.pool.stop(None);
        let count = stopping.partitions().len();
        while !stopping.finished().expect("no thread lost") {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Stopped {
            partitions_before,
            stopping: count,
            empty_after: self.pool.is_empty(),
        })
    }
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
    let stop = Arc::new(AtomicBool::new(false));
    let reading = Reading {
        seen: Arc::clone(&seen),
        pool: Pool::new(2, "test-pool").expect("threads start"),
        stop: Arc::clone(&stop),
        deadline: Instant::now() + Duration::from_secs(60),
    };
    let membership = Membership {
        connection: Connection {
            brokers: bootstrap,
            properties: Vec::new(),
        },
        group: "pool-test".to_owned(),
        instance: "0".to_owned(),
        input: "pooled".to_owned(),
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
    };
    let stopped = drive(&membership, reading, &stop, &Health::default()).expect("driven");
    assert_eq!(stopped.partitions_before, PARTITIONS as usize);
    assert_eq!(stopped.stopping, PARTITIONS as usize);
    assert!(stopped.empty_after);

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
