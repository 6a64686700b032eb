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
    match drive(
        &membership(&broker, "driver-test"),
        stage,
        &stop,
        &Health::default(),
    ) {
        Err(DriveError::Stage(e)) => assert_eq!(e.what, "a worker failed"),
        other => panic!("the worker's failure was lost: {other:?}"),
    }
}

/// A stage that records a failure while partitions are assigned (inside
/// the poll, as the matcher does when it finds lost data) and must not get
/// another turn to commit in before that failure ends the run.
struct FailingAssignment {
    pending: Option<Failed>,
    deadline: Instant,
}

impl Stage for FailingAssignment {
    type Error = Failed;
    type Output = ();

    fn assigned(&mut self, _: &Arc<Member<Self>>, _queues: Vec<(i32, Queue<Self>)>) {
        self.pending = Some(Failed {
            what: "data lost before the assignment",
            source: KafkaError::Canceled,
        });
    }

    fn revoking(&mut self, _: &Member<Self>, _: &[i32]) {}

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<(), Failed> {
        assert!(
            self.pending.is_none(),
            "a turn (which may commit) ran after a failure was recorded"
        );
        assert!(Instant::now() < self.deadline, "never assigned");
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
fn a_failure_met_in_a_rebalance_ends_the_run_before_the_next_turn() {
    let broker = EmbeddedBroker::start(&["input"], 1).expect("broker starts");
    let stop = AtomicBool::new(false);
    let stage = FailingAssignment {
        pending: None,
        deadline: Instant::now() + Duration::from_secs(60),
    };
    match drive(
        &membership(&broker, "driver-test-2"),
        stage,
        &stop,
        &Health::default(),
    ) {
        Err(DriveError::Stage(e)) => assert_eq!(e.what, "data lost before the assignment"),
        other => panic!("the assignment's failure was lost: {other:?}"),
    }
}

/// A member of `group` reading the topic `input` of `broker`.
fn membership(broker: &EmbeddedBroker, group: &str) -> Membership {
    Membership {
        connection: Connection {
            brokers: broker.bootstrap_servers(),
            properties: Vec::new(),
        },
        group: group.to_owned(),
        instance: "0".to_owned(),
        input: "input".to_owned(),
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
    }
}
