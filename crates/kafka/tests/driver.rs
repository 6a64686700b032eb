//! The group driver as a stage sees it: an error the stage recorded
//! outside its turn (in a rebalance, in a worker) ends the run with that
//! error: before the next turn, which may commit, and even when a stop
//! arrived meanwhile; a hand-over runs with the service's health saying
//! so, for `/healthz`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::{Connection, Failed};
use hashbuy_kafka::driver::{drive, DriveError, Member, Membership, Queue, Stage};
use hashbuy_kafka::health::{Health, Liveness};
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

/// The membership of member `instance` of `group`, reading `input`.
fn member_of(broker: &EmbeddedBroker, group: &str, instance: &str) -> Membership {
    Membership {
        connection: Connection {
            brokers: broker.bootstrap_servers(),
            properties: Vec::new(),
        },
        group: group.to_owned(),
        instance: instance.to_owned(),
        input: "input".to_owned(),
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
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
    let membership = member_of(&broker, group, "0");
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

/// A stage that keeps what the service's health said while it handed
/// partitions over, and then stops its run, and what it said as the run
/// finished.
struct Watching {
    health: Health,
    during_hand_over: Arc<Mutex<Option<Liveness>>>,
    during_finish: Arc<Mutex<Option<Liveness>>>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stage for Watching {
    type Error = Failed;
    type Output = ();

    fn assigned(&mut self, _: &Arc<Member<Self>>, _queues: Vec<(i32, Queue<Self>)>) {}

    fn revoking(&mut self, _: &Member<Self>, partitions: &[i32]) {
        if !partitions.is_empty() {
            *self.during_hand_over.lock().expect("lock") = Some(self.health.liveness());
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<(), Failed> {
        assert!(Instant::now() < self.deadline, "no hand-over came");
        Ok(())
    }

    fn at_eof(&self) -> HashSet<i32> {
        HashSet::new()
    }

    fn finish(&mut self, _: &Member<Self>, _failed: bool) -> Result<(), Failed> {
        *self.during_finish.lock().expect("lock") = Some(self.health.liveness());
        Ok(())
    }
}

/// A hand-over runs inside a poll, where the loop does not beat, and may
/// rightly take minutes (a settler waits for its provider calls): the
/// health a liveness probe reads says it is handing over, not stalled, and
/// once it is done, that the loop is live. A stop gives the partitions up
/// the same way.
#[test]
fn a_hand_over_runs_with_the_health_saying_so() {
    let broker = EmbeddedBroker::start(&["input"], 2).expect("broker starts");
    let group = "driver-hand-over";
    let deadline = Instant::now() + Duration::from_secs(90);
    let stage = |stop: &Arc<AtomicBool>, health: &Health| Watching {
        health: health.clone(),
        during_hand_over: Arc::new(Mutex::new(None)),
        during_finish: Arc::new(Mutex::new(None)),
        stop: Arc::clone(stop),
        deadline,
    };
    let (first, second) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (watched, joiner) = (Health::default(), Health::default());
    let (one, two) = (stage(&first, &watched), stage(&second, &joiner));
    let during_hand_over = Arc::clone(&one.during_hand_over);
    let during_finish = Arc::clone(&one.during_finish);
    std::thread::scope(|scope| {
        let membership = member_of(&broker, group, "0");
        let (stop, health) = (Arc::clone(&first), watched.clone());
        let watching = scope.spawn(move || drive(&membership, one, &stop, &health));
        // The second member joins once the first holds both partitions,
        // so that the first hands one over.
        while !watched.is_ready() {
            assert!(Instant::now() < deadline, "the first member never joined");
            std::thread::sleep(Duration::from_millis(20));
        }
        let membership = member_of(&broker, group, "1");
        let (stop, health) = (Arc::clone(&second), joiner.clone());
        let joining = scope.spawn(move || drive(&membership, two, &stop, &health));
        watching
            .join()
            .expect("no panic")
            .expect("the first member ran");
        second.store(true, Ordering::Relaxed);
        joining
            .join()
            .expect("no panic")
            .expect("the second member ran");
    });
    let seen = during_hand_over.lock().expect("lock").clone();
    assert!(
        matches!(seen, Some(Liveness::HandingOver(_))),
        "health during a hand-over: {seen:?}"
    );
    let seen = during_finish.lock().expect("lock").clone();
    assert!(
        matches!(seen, Some(Liveness::HandingOver(_))),
        "health as the run finished: {seen:?}"
    );
    assert_eq!(watched.liveness(), Liveness::Live);
}
