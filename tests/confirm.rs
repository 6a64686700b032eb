//! Confirm mode as a user runs it: `hashbuy replay` and `hashbuy match` on
//! the embedded broker, with a recording whose purchases wait for their
//! confirmations. Windows close by event time, so the recording replayed
//! at its own pace (scaled ×1000) and at full speed gives the same
//! commands and replies, by id; and a second matcher joining the group
//! between purchases and confirmations changes none of them.
//!
//! The embedded broker shows an aborted transaction's records to
//! `read_committed` readers (see `tests/matcher.rs`), so these compare
//! the sets of ids; "no duplicate reply after a kill" is checked against
//! noida-db by `tests/real_broker.rs`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{finish, free_port, get, metric, poll_metrics, sigterm, succeeds, tail_values};
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::config::Topics;
use serde_json::Value;

/// The recording's first tweet: 2026-06-01T13:00:00Z.
const T0: i64 = 1_780_318_800_000;

/// Twitter's snowflake epoch.
const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

/// Linked shoppers of the sample's accounts.
const USERS: [&str; 4] = ["1212", "12345", "987654321098765432", "67890"];

/// Records in the recording.
const RECORDS: usize = 240;

/// A recording of the sample's shoppers buying the confirm-mode Blue
/// Hoodie (and the direct Red Sneakers): purchases, confirmations inside
/// and outside their windows, deletes, chatter; ten seconds apart, with a
/// twenty-minute lull every sixty records so that windows expire. Ids are
/// snowflakes of their times, as Twitter's are.
fn recording() -> String {
    let mut lines = Vec::new();
    let mut last_purchase: [Option<u64>; 4] = [None; 4];
    // A fixed 64-bit LCG (Knuth's MMIX constants) picks who does what.
    let mut x: u64 = 1;
    for i in 0..RECORDS {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = x >> 33;
        let at = T0 + i as i64 * 10_000 + (i / 60) as i64 * 20 * 60_000;
        let id = (((at - SNOWFLAKE_EPOCH_MS) as u64) << 22) | i as u64;
        let u = (r % 4) as usize;
        let user = USERS[u];
        let line = match (r >> 8) % 10 {
            0 | 1 => {
                last_purchase[u] = Some(id);
                tweet(id, user, at, "#BuyBlueHoodie please")
            }
            2 | 3 => tweet(id, user, at, "yes #ConfirmBlueHoodie"),
            4 => match last_purchase[u].take() {
                Some(deleted) => format!(
                    r#"{{"delete": {{"status": {{"id_str": "{deleted}", "user_id_str": "{user}"}}, "timestamp_ms": "{at}"}}}}"#
                ),
                None => tweet(id, user, at, "no purchase to delete #tour"),
            },
            5 => tweet(id, user, at, "and #BuyRedSneakers42"),
            6 | 7 => tweet(id, user, at, "soundcheck #tour"),
            _ => tweet(id, user, at, "nothing to see"),
        };
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

fn tweet(id: u64, user: &str, at: i64, text: &str) -> String {
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}"}}, "timestamp_ms": "{at}"}}"#
    )
}

/// A broker, the recording and the tables in a directory.
struct Setup {
    broker: EmbeddedBroker,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
        let dir = tempfile::tempdir().expect("temp dir");
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        let read = |name: &str| std::fs::read_to_string(samples.join(name)).expect("sample");
        // Two TOML files of [[offers]] make one by concatenation.
        let catalog = read("catalog.toml") + "\n" + &read("confirm-catalog.toml");
        std::fs::write(dir.path().join("catalog.toml"), catalog).expect("written");
        std::fs::write(dir.path().join("recording.jsonl"), recording()).expect("written");
        Setup { broker, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn brokers(&self) -> String {
        self.broker.bootstrap_servers()
    }

    /// `hashbuy match` as `instance` of the default group.
    fn command(&self, instance: &str) -> Command {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
        command
            .args(["match", "--brokers", &self.brokers()])
            .arg("--catalog")
            .arg(self.path("catalog.toml"))
            .arg("--accounts")
            .arg(samples.join("accounts.json"))
            .args(["--instance", instance, "--batch-ms", "20"])
            // A restarted member is noticed within seconds on the mock
            // cluster.
            .args(["-X", "session.timeout.ms=6000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// A running matcher, serving metrics on `port`.
    fn matcher(&self, instance: &str, port: u16) -> Child {
        self.command(instance)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .spawn()
            .expect("matcher starts")
    }

    /// Stops `matchers` once they have read `records`, then matches what
    /// is left to the end, restarted as instance `a`: whatever a stop left
    /// uncommitted is committed.
    fn stop_after(&self, records: usize, mut matchers: Vec<(u16, Child)>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while consumed(&mut matchers) < records as f64 {
            assert!(Instant::now() < deadline, "not consumed within 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, child) in &matchers {
            sigterm(child);
        }
        for (_, child) in matchers {
            let (status, stderr) = finish(child);
            assert!(status.success(), "{stderr}");
        }
        let out = self
            .command("a")
            .arg("--exit-at-end")
            .output()
            .expect("matcher runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn replay(&self, speed: &str, file: &Path) {
        succeeds(&[
            "replay",
            &file.display().to_string(),
            "--brokers",
            &self.brokers(),
            "--speed",
            speed,
        ]);
    }

    /// The ids of every committed record of `topic` (`field` of its
    /// value).
    fn ids(&self, topic: &str, field: &str) -> BTreeSet<String> {
        self.values(topic)
            .iter()
            .map(|value| value[field].as_str().expect("an id").to_owned())
            .collect()
    }

    /// The values of every committed record of `topic`.
    fn values(&self, topic: &str) -> Vec<Value> {
        tail_values(&self.brokers(), topic)
    }
}

/// Waits until the matcher on `port` is ready (it has partitions).
fn wait_until_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(port, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            child.try_wait().expect("status").is_none(),
            "the matcher exited"
        );
        assert!(Instant::now() < deadline, "not ready within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records the matchers consumed, re-reads after a hand-over included.
fn consumed(matchers: &mut [(u16, Child)]) -> f64 {
    matchers
        .iter_mut()
        .map(|(port, child)| {
            assert!(
                child.try_wait().expect("status").is_none(),
                "a matcher exited"
            );
            get(*port, "/metrics").map_or(0.0, |(_, body)| {
                metric(&body, "hashbuy_matcher_records_total")
            })
        })
        .sum()
}

/// What a run committed: command ids and reply ids.
type Committed = (BTreeSet<String>, BTreeSet<String>);

/// One matcher, the recording replayed at `speed` while it runs; with the
/// kinds of its replies and how many Blue Hoodies it bought.
fn matched_at(speed: &str) -> (Committed, BTreeSet<String>, usize) {
    let setup = Setup::new();
    let port = free_port();
    let mut matcher = setup.matcher("a", port);
    wait_until_ready(port, &mut matcher);
    setup.replay(speed, &setup.path("recording.jsonl"));
    setup.stop_after(RECORDS, vec![(port, matcher)]);
    (
        (
            setup.ids("payment-commands", "command_id"),
            setup.ids("replies", "reply_id"),
        ),
        setup.ids("replies", "kind"),
        setup
            .values("payment-commands")
            .iter()
            .filter(|command| command["offer_id"] == "blue-hoodie")
            .count(),
    )
}

#[test]
fn a_confirm_recording_gives_the_same_commands_and_replies_at_x1000_and_at_full_speed() {
    let (paced, kinds, confirmed) = matched_at("1000");
    let (fast, _, _) = matched_at("max");
    assert_eq!(paced.0, fast.0, "the same commands");
    assert_eq!(paced.1, fast.1, "the same replies");
    assert_eq!(
        kinds,
        BTreeSet::from(["CANCELLED", "CONFIRM_PROMPT", "EXPIRED"].map(String::from)),
        "the recording prompts, expires and cancels"
    );
    assert!(confirmed >= 5, "confirmations buy: {confirmed}");
}

#[test]
fn a_second_matcher_joining_between_purchases_and_confirmations_changes_nothing() {
    let (alone, _, _) = matched_at("max");

    let setup = Setup::new();
    let all = recording();
    let lines: Vec<&str> = all.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    std::fs::write(setup.path("first.jsonl"), first.join("\n") + "\n").expect("written");
    std::fs::write(setup.path("second.jsonl"), second.join("\n") + "\n").expect("written");
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = setup.matcher("a", port_a);
    wait_until_ready(port_a, &mut a);
    setup.replay("max", &setup.path("first.jsonl"));
    let body = poll_metrics(port_a, &mut a, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_matcher_records_total") >= first.len() as f64
    });
    assert!(body.is_some(), "the first matcher read the first half");
    // The second joins with purchases pending: the group rebalances, and
    // the partitions it takes bring their pending purchases along.
    let mut b = setup.matcher("b", port_b);
    poll_metrics(port_b, &mut b, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_matcher_partitions_assigned") > 0.0
    })
    .expect("the second matcher gets partitions");
    setup.replay("max", &setup.path("second.jsonl"));
    setup.stop_after(RECORDS, vec![(port_a, a), (port_b, b)]);
    assert_eq!(
        setup.ids("payment-commands", "command_id"),
        alone.0,
        "the same commands"
    );
    assert_eq!(
        setup.ids("replies", "reply_id"),
        alone.1,
        "the same replies"
    );
}
