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
