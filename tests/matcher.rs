//! `hashbuy match` as a user runs it, against the embedded broker started
//! in this test process: a generated stream in, exactly the commands that
//! `hashbuy inspect` finds offline out — after a `kill -9` and a restart,
//! and with two matchers sharing the stream; metrics and health on
//! `--metrics-addr`; lost data stops the matcher, whatever the log level,
//! and a new group is told what was deleted before it started; bad
//! settings are named.
//!
//! About duplicates: librdkafka's mock cluster (the embedded broker)
//! answers transactions but does not hide aborted ones from
//! `read_committed` readers (its Fetch reports no aborted transactions and
//! the end of the log as the last stable offset), so what a killed
//! matcher's open transaction produced stays visible here. These tests
//! therefore check that nothing is missing and nothing unexpected appears;
//! "no duplicate after a kill" is checked against a real Kafka by
//! `tests/real_broker.rs` (`HASHBUY_TEST_TRANSACTIONS=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    finish, finish_within, free_port, get, inspected_command_ids, metric, poll_metrics, signal,
    sigterm, watermarks,
};
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::config::Topics;
use serde_json::Value;

fn hashbuy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .output()
        .expect("hashbuy runs")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `hashbuy match` on `brokers` with the bundled sample tables.
fn match_samples(brokers: &str) -> Command {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
    command
        .args(["match", "--brokers", brokers])
        .arg("--catalog")
        .arg(samples.join("catalog.toml"))
        .arg("--accounts")
        .arg(samples.join("accounts.json"));
    command
}

/// A broker with a generated stream replayed into it, and its tables.
struct Stream {
    broker: EmbeddedBroker,
    dir: tempfile::TempDir,
    /// Command ids `hashbuy inspect` finds in the stream.
    expected: BTreeSet<String>,
}

impl Stream {
    fn new(tweets: usize) -> Stream {
        // Many partitions: the mock keeps 5 MB of each.
        let broker = EmbeddedBroker::start(&Topics::default().all(), 32).expect("broker");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        ok(hashbuy(&[
            "gen",
            "--tweets",
            &tweets.to_string(),
            "--purchase-share",
            "0.05",
            "--out",
            &path("tweets.jsonl"),
            "--catalog-out",
            &path("catalog.toml"),
            "--accounts-out",
            &path("accounts.toml"),
        ]));
        let inspected = ok(hashbuy(&[
            "inspect",
            &path("tweets.jsonl"),
            "--catalog",
            &path("catalog.toml"),
            "--accounts",
            &path("accounts.toml"),
        ]));
        let expected = inspected_command_ids(&String::from_utf8_lossy(&inspected.stdout));
        assert!(
            expected.len() > tweets / 100,
            "the stream buys: {}",
            expected.len()
        );
        Stream {
            broker,
            dir,
            expected,
        }
    }

    /// A stream replayed whole.
    fn replayed(tweets: usize) -> Stream {
        let stream = Stream::new(tweets);
        stream.replay("tweets.jsonl");
        stream
    }

    fn replay(&self, file: &str) {
        ok(hashbuy(&[
            "replay",
            &self.path(file).display().to_string(),
            "--brokers",
            &self.brokers(),
        ]));
    }

    /// Writes the stream's first and second halves to `first.jsonl` and
    /// `second.jsonl`.
    fn split(&self) {
        let all = std::fs::read_to_string(self.path("tweets.jsonl")).expect("stream read");
        let lines: Vec<&str> = all.lines().collect();
        let (first, second) = lines.split_at(lines.len() / 2);
        std::fs::write(self.path("first.jsonl"), first.join("\n")).expect("written");
        std::fs::write(self.path("second.jsonl"), second.join("\n")).expect("written");
    }

    fn brokers(&self) -> String {
        self.broker.bootstrap_servers()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `hashbuy match` with the stream's tables and `extra` flags.
    fn matcher(&self, instance: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
        command
            .args(["match", "--brokers", &self.brokers()])
            .arg("--catalog")
            .arg(self.path("catalog.toml"))
            .arg("--accounts")
            .arg(self.path("accounts.toml"))
            .args(["--instance", instance, "--batch-ms", "20"])
            // A restarted or departed member is noticed within seconds on
            // the mock cluster.
            .args(["-X", "session.timeout.ms=6000"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Command ids committed on `payment-commands`, with how often each
    /// appears.
    fn committed_commands(&self) -> BTreeMap<String, usize> {
        let out = ok(hashbuy(&[
            "tail",
            "--topic",
            "payment-commands",
            "--from-beginning",
            "--exit-at-end",
            "--brokers",
            &self.brokers(),
        ]));
        let mut ids = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let record: Value = serde_json::from_str(line).expect("tail prints JSON");
            let id = record["value"]["command_id"]
                .as_str()
                .expect("a command id")
                .to_owned();
            *ids.entry(id).or_insert(0) += 1;
        }
        ids
    }
}

/// Waits (up to 60 s) until `done` holds for the metrics the matcher on
/// `port` serves, and returns them.
fn wait_for_metrics(port: u16, child: &mut Child, done: impl Fn(&str) -> bool) -> String {
    poll_metrics(port, child, Duration::from_secs(60), done).expect("the matcher exited early")
}

/// Waits until the matcher on `port` has committed a command.
fn wait_for_first_commands(port: u16, child: &mut Child) {
    wait_for_metrics(port, child, |body| {
        metric(body, "hashbuy_matcher_commands_total") > 0.0
    });
}

/// "matched N records" from a matcher's summary.
fn matched(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("matched ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary in: {stderr}"))
}

fn assert_same_commands(stream: &Stream) -> BTreeMap<String, usize> {
    let committed = stream.committed_commands();
    let ids: BTreeSet<String> = committed.keys().cloned().collect();
    let missing: Vec<_> = stream.expected.difference(&ids).collect();
    let unexpected: Vec<_> = ids.difference(&stream.expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{} missing (first {:?}), {} unexpected (first {:?})",
        missing.len(),
        missing.first(),
        unexpected.len(),
        unexpected.first()
    );
    committed
}

fn killed_and_restarted(delivery: &str) {
    let stream = Stream::replayed(40_000);
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut first = stream
        .matcher(
            "0",
            &["--delivery", delivery, "--metrics-addr", &metrics_addr],
        )
        .spawn()
        .expect("matcher starts");
    wait_for_first_commands(port, &mut first);
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let (status, err) = finish(
        stream
            .matcher("0", &["--delivery", delivery, "--exit-at-end"])
            .spawn()
            .expect("matcher restarts"),
    );
    assert!(status.success(), "{err}");
    assert!(
        matched(&err) > 0,
        "the restart had work left, so the kill was mid-stream: {err}"
    );
    assert_same_commands(&stream);
}

#[test]
fn a_matcher_killed_mid_stream_and_restarted_loses_no_command_exactly_once() {
    killed_and_restarted("exactly-once");
}

#[test]
fn a_matcher_killed_mid_stream_and_restarted_loses_no_command_at_least_once() {
    killed_and_restarted("at-least-once");
}

#[test]
fn two_matchers_in_one_group_share_the_stream_and_lose_nothing() {
    let stream = Stream::new(40_000);
    stream.split();
    stream.replay("first.jsonl");
    let (port_a, port_b) = (free_port(), free_port());
    let mut first = stream
        .matcher("a", &["--metrics-addr", &format!("127.0.0.1:{port_a}")])
        .spawn()
        .expect("first matcher starts");
    wait_for_first_commands(port_a, &mut first);
    // The second joins mid-stream: the group rebalances, and the first
    // hands over partitions only after committing what it did with them.
    let mut second = stream
        .matcher("b", &["--metrics-addr", &format!("127.0.0.1:{port_b}")])
        .spawn()
        .expect("second matcher starts");
    wait_for_metrics(port_b, &mut second, |body| {
        metric(body, "hashbuy_matcher_partitions_assigned") > 0.0
    });
    // The rest of the stream arrives while both run.
    stream.replay("second.jsonl");
    let consumed = |port, child: &mut Child| {
        let body = wait_for_metrics(port, child, |_| true);
        metric(&body, "hashbuy_matcher_records_total")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port_a, &mut first) + consumed(port_b, &mut second) < 40_000.0 {
        assert!(Instant::now() < deadline, "not consumed within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&first);
    sigterm(&second);
    let (first_status, first_err) = finish(first);
    let (second_status, second_err) = finish(second);
    assert!(first_status.success(), "{first_err}");
    assert!(second_status.success(), "{second_err}");
    assert!(
        matched(&second_err) > 0,
        "the second matcher took part: {second_err}"
    );
    let committed = assert_same_commands(&stream);
    // No transaction was aborted, so nothing can show twice even here.
    if first_err.contains("(0 aborted") && second_err.contains("(0 aborted") {
        let twice: Vec<_> = committed.iter().filter(|(_, &n)| n > 1).collect();
        assert!(twice.is_empty(), "duplicates: {twice:?}");
    }
}

#[test]
fn metrics_health_and_readiness_are_served() {
    let stream = Stream::replayed(2_000);
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut child = stream
        .matcher("0", &["--metrics-addr", &metrics_addr])
        .spawn()
        .expect("matcher starts");
    let expected = stream.expected.len() as f64;
    let body = wait_for_metrics(port, &mut child, |body| {
        metric(body, "hashbuy_matcher_commands_total") >= expected
    });
    assert_eq!(metric(&body, "hashbuy_matcher_records_total"), 2_000.0);
    assert_eq!(
        metric(&body, "hashbuy_matcher_commands_total") as usize,
        stream.expected.len()
    );
    for name in [
        "hashbuy_matcher_decisions_total{decision=\"retweet\"}",
        "hashbuy_matcher_records_total{kind=\"tweet\"}",
        "hashbuy_matcher_records_total{kind=\"skimmed\"}",
        "hashbuy_matcher_decisions_total{decision=\"no_hashtag_sign\"}",
        "hashbuy_matcher_samples_total{result=\"malformed\"} 0",
        "hashbuy_matcher_commit_seconds_bucket",
        "hashbuy_matcher_partitions_assigned",
    ] {
        assert!(body.contains(name), "{name} in:\n{body}");
    }
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(port, "/readyz").map(|r| r.0), Some(200));
    sigterm(&child);
    let (status, err) = finish(child);
    assert!(status.success(), "SIGTERM ends it cleanly: {err}");
    assert!(err.contains("matched 2000 records"), "{err}");
    assert!(
        err.contains("without a hashtag sign (0 malformed in the sample)"),
        "{err}"
    );
}

/// A producer of large records, to fill the embedded broker's 5 MB a
/// partition quickly.
fn bulk_producer(brokers: &str) -> rdkafka::producer::BaseProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer")
}

/// Sends `count` tweets of 10 KB (of a user no offer knows) to `tweets`.
fn send_bulk(producer: &rdkafka::producer::BaseProducer, count: usize) {
    use rdkafka::producer::{BaseRecord, Producer};
    let tweet = format!(
        r#"{{"id_str":"1","text":"{}","user":{{"id_str":"7"}},"timestamp_ms":"1"}}"#,
        "x".repeat(10_000)
    );
    for _ in 0..count {
        producer
            .send(BaseRecord::<(), _>::to("tweets").payload(&tweet))
            .expect("queued");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

// librdkafka's log level follows the log filter when a client is made, so
// these run with `HASHBUY_LOG=error`: lost data must be found without
// librdkafka's warning about the offset reset.

#[test]
fn lost_data_stops_the_matcher_and_names_the_offsets() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    // One partition, so filling it past the mock's 5 MB deletes the start.
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    // The group has read the first 10 records...
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "hashbuy-matcher")
        .create()
        .expect("consumer");
    let producer = bulk_producer(&brokers);
    send_bulk(&producer, 10);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("tweets", 0, Offset::Offset(10))
        .expect("offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("committed");
    // ...then 8 MB more arrive, and the mock drops the oldest.
    send_bulk(&producer, 800);
    let (low, _) = watermarks(&brokers, "tweets");
    assert!(low > 10, "the mock deleted the start: low watermark {low}");

    let run = |extra: &[&str]| {
        match_samples(&brokers)
            .arg("--exit-at-end")
            .args(["-X", "session.timeout.ms=6000"])
            .args(extra)
            .env("HASHBUY_LOG", "error")
            .output()
            .expect("matcher runs")
    };
    let stopped = run(&[]);
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "tweets partition 0 offsets 10..{low} were deleted"
        )),
        "{err}"
    );
    let skipped = ok(run(&["--on-data-loss", "skip"]));
    let err = String::from_utf8_lossy(&skipped.stderr);
    assert!(
        err.contains(&format!(
            "{} records lost to retention and skipped",
            low - 10
        )),
        "{err}"
    );
}

#[test]
fn data_deleted_while_the_matcher_runs_stops_it() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let producer = bulk_producer(&brokers);
    send_bulk(&producer, 10);
    let port = free_port();
    let mut child = match_samples(&brokers)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--batch-ms", "20", "-X", "session.timeout.ms=6000"])
        .env("HASHBUY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("matcher starts");
    // The ten are read and committed...
    wait_for_metrics(port, &mut child, |body| {
        metric(body, "hashbuy_matcher_batch_records_sum") >= 10.0
    });
    // ...and while the matcher is frozen, 8 MB arrive and the broker
    // deletes records it has not read.
    signal(&child, "STOP");
    send_bulk(&producer, 800);
    let (low, _) = watermarks(&brokers, "tweets");
    assert!(
        low > 10,
        "the mock deleted unread records: low watermark {low}"
    );
    signal(&child, "CONT");
    let (status, err) = finish_within(child, Duration::from_secs(120));
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "tweets partition 0 offsets 10..{low} were deleted"
        )),
        "{err}"
    );
}

/// The issue's measurement: 6,000 generated tweets replayed into a
/// one-partition embedded broker overflow its 5 MB, and a new matcher
/// group reading what is left must say how much is gone.
#[test]
fn an_overflowing_replay_and_a_new_group_after_it_say_how_many_records_are_gone() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(hashbuy(&[
        "gen",
        "--tweets",
        "6000",
        "--out",
        &path("tweets.jsonl"),
        "--catalog-out",
        &path("catalog.toml"),
        "--accounts-out",
        &path("accounts.toml"),
    ]));
    let replayed = ok(hashbuy(&[
        "replay",
        &path("tweets.jsonl"),
        "--brokers",
        &brokers,
    ]));
    let (low, high) = watermarks(&brokers, "tweets");
    assert!(
        low > 0 && high == 6000,
        "the partition overflowed: {low}..{high}"
    );
    let err = String::from_utf8_lossy(&replayed.stderr);
    assert!(
        err.contains(&format!(
            "tweets partition 0 overflowed the broker's retention: {low} records (offsets 0..{low})"
        )),
        "{err}"
    );

    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["match", "--brokers", &brokers])
        .args(["--catalog", &path("catalog.toml")])
        .args(["--accounts", &path("accounts.toml")])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("matcher starts");
    let body = wait_for_metrics(port, &mut child, |body| {
        metric(body, "hashbuy_matcher_batch_records_sum") >= (high - low) as f64
    });
    assert_eq!(
        metric(&body, "hashbuy_data_loss_before_group_records_total"),
        low as f64
    );
    sigterm(&child);
    let (status, err) = finish(child);
    // A new group is told, not stopped: it never read those records.
    assert!(status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "tweets partition 0: {low} records (offsets 0..{low}) were deleted before this group first read it"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{low} records were deleted before the group first read them"
        )),
        "the summary says so too: {err}"
    );
}

#[test]
fn an_unreachable_broker_is_an_error_within_seconds() {
    let port = free_port();
    let started = Instant::now();
    let out = match_samples(&format!("127.0.0.1:{port}"))
        .output()
        .expect("matcher runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded wait");
}

#[test]
fn a_missing_topic_is_named() {
    let broker = EmbeddedBroker::start(&["tweets"], 1).expect("broker");
    let out = match_samples(&broker.bootstrap_servers())
        .output()
        .expect("matcher runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("topic \"payment-commands\" does not exist"),
        "{err}"
    );
}

#[test]
fn a_config_file_is_read_and_its_mistakes_are_named() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let dir = tempfile::tempdir().expect("temp dir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    std::fs::copy(
        samples.join("catalog.toml"),
        dir.path().join("catalog.toml"),
    )
    .expect("copy");
    std::fs::copy(
        samples.join("accounts.json"),
        dir.path().join("accounts.json"),
    )
    .expect("copy");
    ok(hashbuy(&[
        "replay",
        &samples.join("tweets.jsonl").display().to_string(),
        "--brokers",
        &broker.bootstrap_servers(),
    ]));
    let config = dir.path().join("hashbuy.toml");
    let write = |text: &str| std::fs::write(&config, text).expect("config written");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hashbuy"))
            .arg("match")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .expect("matcher runs")
    };

    // Tables relative to the file, brokers and properties from it.
    write(&format!(
        "[kafka]\nbrokers = \"{}\"\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\n\
         [match]\ncatalog = \"catalog.toml\"\naccounts = \"accounts.json\"\ndelivery = \"at-least-once\"\n",
        broker.bootstrap_servers()
    ));
    let out = ok(run(&["--exit-at-end"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("matched 18 records"), "{err}");

    // A misspelt key: the file, the line and the key.
    write("[match]\ncatalog = \"catalog.toml\"\nbatch_recrods = 5\n");
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hashbuy.toml: at line 3") && err.contains("unknown field `batch_recrods`"),
        "{err}"
    );

    // A bad choice names the file, the line with its key, and the choices.
    write("[match]\ndelivery = \"twice\"\n");
    let out = run(&["--catalog", "x", "--accounts", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hashbuy.toml: at line 2")
            && err.contains("delivery = \"twice\"")
            && err.contains("expected `exactly-once` or `at-least-once`"),
        "{err}"
    );

    // A value of the wrong type, likewise; and a flag wins over the file.
    write("[match]\nbatch_ms = \"soon\"\n");
    let out = run(&["--catalog", "x", "--accounts", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hashbuy.toml: at line 2") && err.contains("batch_ms = \"soon\""),
        "{err}"
    );
}

#[test]
fn bench_reports_both_delivery_modes_and_the_plain_baseline_against_the_ceiling() {
    let out = ok(hashbuy(&[
        "bench",
        "--tweets",
        "3000",
        "--runs",
        "1",
        "--partitions",
        "8",
    ]));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(" |").next())
        .collect();
    assert_eq!(
        rows,
        [
            "consumer",
            "ceiling",
            "plain",
            "exactly-once",
            "at-least-once"
        ],
        "{table}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(": 3000 records in").count(), 4, "{err}");
}

#[test]
fn bench_writes_every_run_and_the_medians_as_json() {
    let out = ok(hashbuy(&[
        "bench",
        "--tweets",
        "1000",
        "--runs",
        "2",
        "--partitions",
        "4",
        "--json",
    ]));
    let document: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(document["bench"], "matcher");
    assert!(document["machine"]["cpus"].as_u64().is_some_and(|n| n > 0));
    // The stream's shares, so a result file says what it was measured on.
    assert_eq!(document["purchase_share"], 0.01);
    assert_eq!(document["hashtag_share"], 0.1);
    for consumer in ["ceiling", "plain", "exactly-once", "at-least-once"] {
        let runs = document["consumers"][consumer]["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("{consumer} has its runs: {document}"));
        assert_eq!(runs.len(), 2, "{consumer}");
        assert!(runs.iter().all(|r| r["records"] == 1000), "{consumer}");
        assert!(
            document["consumers"][consumer]["median"]["per_second"]
                .as_f64()
                .is_some_and(|rate| rate > 0.0),
            "{consumer}"
        );
    }
    assert_eq!(
        document["consumers"]["ceiling"]["median"]["of_ceiling"],
        1.0
    );
}
