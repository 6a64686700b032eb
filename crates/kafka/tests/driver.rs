//! The group driver as a stage sees it: an error the stage recorded
//! outside its turn (in a rebalance, in a worker) ends the run with that
//! error: before the next turn, which may commit, and even when a stop
//! arrived meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::{Connection, Failed};
use hashbuy_kafka::driver::{drive, DriveError, Member, Membership, Queue, Stage};
use hashbuy_kafka::health::Health;
use rdkafka::error::KafkaError;

/// When the stage meets its failure.
#[derive(Clone, Copy)]
enum When {
    /// In a worker, after a turn, while the process is asked to stop: the
    /// two land between two turns.
    AfterATurnWithAStop,
    /// While partitions are assigned (inside the poll, as the matcher does
    /// when it finds lost data): no turn may run after it.
    OnAssignment,
}

struct Failing {
    when: When,
    stop: Arc<AtomicBool>,
    assigned: bool,
    pending: Option<Failed>,
    deadline: Instant,
}

impl Failing {
    fn fail(&mut self) {
        self.pending = Some(Failed {
            what: "the stage failed",
            source: KafkaError::Canceled,
        });
    }
}

impl Stage for Failing {
    type Error = Failed;
    type Output = ();

    fn assigned(&mut self, _: &Arc<Member<Self>>, _queues: Vec<(i32, Queue<Self>)>) {
        self.assigned = true;
        if let When::OnAssignment = self.when {
            self.fail();
        }
    }

    fn revoking(&mut self, _: &Member<Self>, _: &[i32]) {}

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<(), Failed> {
        assert!(Instant::now() < self.deadline, "never assigned");
        assert!(
            self.pending.is_none(),
            "a turn (which may commit) ran after a failure was recorded"
        );
        if let When::AfterATurnWithAStop = self.when {
            if self.assigned && !self.stop.load(Ordering::Relaxed) {
                self.fail();
                self.stop.store(true, Ordering::Relaxed);
            }
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

/// Drives a stage failing `when`, in a group of its own: the run must end
/// with the stage's error.
fn drive_failing(when: When, group: &str) {
    let broker = EmbeddedBroker::start(&["input"], 1).expect("broker starts");
    let stop = Arc::new(AtomicBool::new(false));
    let stage = Failing {
        when,
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
        group: group.to_owned(),
        instance: "0".to_owned(),
        input: "input".to_owned(),
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
    };
    match drive(&membership, stage, &stop, &Health::default()) {
        Err(DriveError::Stage(e)) => assert_eq!(e.what, "the stage failed"),
        other => panic!("the stage's failure was lost: {other:?}"),
    }
}

#[test]
fn a_failure_recorded_between_turns_is_returned_though_a_stop_came_too() {
    drive_failing(When::AfterATurnWithAStop, "driver-between-turns");
}

#[test]
fn a_failure_met_in_a_rebalance_ends_the_run_before_the_next_turn() {
    drive_failing(When::OnAssignment, "driver-on-assignment");
}
