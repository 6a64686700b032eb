//! End to end against a real broker process (tansu in CI, or a Kafka):
//! create topics, replay the sample stream, read it back.
//!
//! Ignored by a plain `cargo test`, which needs no broker. Run it with
//! `HASHBUY_TEST_BROKERS=host:port cargo test --test real_broker -- --ignored`;
//! `.ci/run` starts tansu and does so. Extra librdkafka properties for the
//! broker go in `HASHBUY_TEST_KAFKA_PROPERTIES` as space-separated
//! KEY=VALUE pairs (tansu wants `fetch.wait.max.ms=10`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn brokers() -> String {
    std::env::var("HASHBUY_TEST_BROKERS")
        .expect("set HASHBUY_TEST_BROKERS=host:port to a running broker (see this file's docs)")
}

/// `hashbuy` with `--brokers` and the test's -X properties appended.
fn hashbuy(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
    command.args(args).args(["--brokers", &brokers()]);
    for property in std::env::var("HASHBUY_TEST_KAFKA_PROPERTIES")
        .unwrap_or_default()
        .split_whitespace()
    {
        command.args(["-X", property]);
    }
    command.output().expect("hashbuy runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn topics_replay_and_tail_on_a_real_broker() {
    let topic = format!("e2e-tweets-{}", std::process::id());
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &topic,
        "--partitions",
        "4",
    ]));
    let again = hashbuy(&["topics", "create", "--topics", &topic, "--partitions", "4"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "creating twice is harmless"
    );
    ok(again);

    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tweets.jsonl");
    ok(hashbuy(&[
        "replay",
        sample.to_str().expect("path"),
        "--topic",
        &topic,
    ]));
    let printed = ok(hashbuy(&[
        "tail",
        "--topic",
        &topic,
        "--from-beginning",
        "--exit-at-end",
    ]));
    let lines: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 18, "every non-blank sample line");
    let keyed = lines.iter().filter(|l| l["key"] == "12345").count();
    assert_eq!(
        keyed, 5,
        "the sample's tweets by user 12345, all keyed by that user"
    );
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn match_at_least_once_on_a_real_broker() {
    let run = std::process::id();
    let (tweets, commands, dead) = (
        format!("m-tweets-{run}"),
        format!("m-commands-{run}"),
        format!("m-dead-{run}"),
    );
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{tweets},{commands},{dead}"),
        "--partitions",
        "4",
    ]));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let sample = |name: &str| samples.join(name).display().to_string();
    ok(hashbuy(&[
        "replay",
        &sample("tweets.jsonl"),
        "--topic",
        &tweets,
    ]));
    let matched = hashbuy(&[
        "match",
        "--catalog",
        &sample("catalog.toml"),
        "--accounts",
        &sample("accounts.json"),
        "--delivery",
        "at-least-once",
        "--exit-at-end",
        "--group",
        &format!("e2e-{run}"),
        "--tweets-topic",
        &tweets,
        "--commands-topic",
        &commands,
        "--dead-letters-topic",
        &dead,
    ]);
    let report = String::from_utf8_lossy(&matched.stderr).into_owned();
    ok(matched);
    assert!(report.contains("matched 18 records"), "{report}");
    let printed = ok(hashbuy(&[
        "tail",
        "--topic",
        &commands,
        "--type",
        "command",
        "--from-beginning",
        "--exit-at-end",
    ]));
    let offers: Vec<String> = printed
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON line")["value"]["offer_id"]
                .as_str()
                .expect("offer")
                .to_owned()
        })
        .collect();
    assert_eq!(offers.len(), 6, "{offers:?}");
    let printed = ok(hashbuy(&[
        "tail",
        "--topic",
        &dead,
        "--type",
        "dead-letter",
        "--from-beginning",
        "--exit-at-end",
    ]));
    assert_eq!(printed.lines().count(), 2);
}
