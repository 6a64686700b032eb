//! The group driver as a stage sees it: an error the stage recorded
//! outside its turn (in a rebalance, in a worker) ends the run with that
//! error, even when a stop arrived meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::{Connection, Failed};
use hashbuy_kafka::driver::{drive, DriveError, Member, Membership, Queue, Stage};
use hashbuy_kafka::health::Health;
use rdkafka::error::KafkaError;

/// A stage whose worker fails once the member has partitions, while the
/// process is asked to stop: the two land between two turns.
struct FailingWorker {
    stop: Arc<AtomicBool>,
    assigned: bool,
    pending: Option<Failed>,
    deadline: Instant,
}

impl Stage for FailingWorker {
    type Error = Failed;
    type Output = ();

    fn assigned(&mut self, _: &Arc<Member<Self>>, _queues: Vec<(i32, Queue<Self>)>) {
        self.assigned = true;
    }

    fn revoking(&mut self, _: &Member<Self>, _: &[i32]) {}

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<(), Failed> {
        assert!(Instant::now() < self.deadline, "never assigned");
        if self.assigned && !self.stop.load(Ordering::Relaxed) {
            // As a worker would, after this turn took the stage's errors.
            self.pending = Some(Failed {
                what: "a worker failed",
                source: KafkaError::Canceled,
            });
            self.stop.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn failure(&mut self) -> Option<Failed> {
        self.pending.take()
    }

    fn at_eof(&self) -> HashSet<i32> {
        HashSet::new()
    }

    fn finish(&mut self, _: &Member<Self>, failed: bool) -> Result<(), Failed> {
        assert!(failed, "finished as if the run had gone well");
        Ok(())
    }
}

#[test]
fn a_failure_recorded_between_turns_is_returned_though_a_stop_came_too() {
    let broker = EmbeddedBroker::start(&["input"], 1).expect("broker starts");
    let stop = Arc::new(AtomicBool::new(false));
    let stage = FailingWorker {
        stop: Arc::clone(&stop),
        assigned: false,
        pending: None,
        deadline: Instant::now() + Duration::from_secs(60),
    };
    let membership = Membership {
        connection: Connection {
            brokers: broker.bootstrap_servers(),
            properties: Vec::new(),
        },
        group: "driver-test".to_owned(),
        instance: "0".to_owned(),
        input: "input".to_owned(),
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
    };
    match drive(&membership, stage, &stop, &Health::default()) {
        Err(DriveError::Stage(e)) => assert_eq!(e.what, "a worker failed"),
        other => panic!("the worker's failure was lost: {other:?}"),
    }
}
