//! The live tables as a user runs them: `hashbuy catalog` and `hashbuy
//! accounts` change the `catalog` and `account-links` topics, and a
//! running `hashbuy match` decides each tweet by the tables at its own
//! time, over the table files; a bad table record is a dead letter and the
//! matcher goes on.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{finish, free_port, metric, poll_metrics, sigterm, succeeds, tail_values};
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::config::Topics;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

/// When the changes take effect: 2026-06-01T00:00:00Z.
const T: i64 = 1_780_272_000_000;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .output()
        .expect("hashbuy runs")
}

/// A tweet by `user` at `at_ms` saying `text`.
fn tweet(id: u64, user: &str, text: &str, at_ms: i64) -> String {
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}", "protected": false}}, "timestamp_ms": "{at_ms}"}}"#
    )
}

/// (tweet id, offer id) of every command on the broker.
fn bought(brokers: &str) -> BTreeSet<(String, String)> {
    tail_values(brokers, "payment-commands")
        .iter()
        .map(|c| {
            (
                c["tweet_id"].as_str().unwrap_or_default().to_owned(),
                c["offer_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Puts the live changes, starts `hashbuy match` (it reads the tables
/// whole before its first record), then replays `tweets` at `speed` into
/// it while it runs: what was bought once all four were committed.
fn changes_then_tweets(speed: &str, tweets: &Path) -> BTreeSet<(String, String)> {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let at = T.to_string();
    let later = (T + 60_000).to_string();
    succeeds(&[
        "catalog",
        "put",
        "--allow-past",
        "--offer",
        r#"{"hashtag": "BuyBlueCap", "offer_id": "blue-cap", "merchant_id": "acme",
            "amount": 1500, "currency": "usd"}"#,
        "--at",
        &at,
        "--brokers",
        &brokers,
    ]);
    succeeds(&[
        "catalog",
        "rm",
        "--allow-past",
        "#BUYREDSNEAKERS42",
        "--at",
        &at,
        "--brokers",
        &brokers,
    ]);
    succeeds(&[
        "accounts",
        "unlink",
        "--allow-past",
        "1212",
        "--at",
        &later,
        "--brokers",
        &brokers,
    ]);
    let samples = samples();
    let port = free_port();
    let mut matcher = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["match", "--brokers", &brokers, "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--catalog")
        .arg(samples.join("catalog.toml"))
        .arg("--accounts")
        .arg(samples.join("accounts.json"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("match starts");
    // Ready once it has its partitions, its tables read.
    poll_metrics(port, &mut matcher, Duration::from_secs(120), |body| {
        body.contains("hashbuy_matcher_partitions_assigned")
            && metric(body, "hashbuy_matcher_partitions_assigned") >= 4.0
    })
    .expect("the matcher runs");
    succeeds(&[
        "replay",
        &tweets.display().to_string(),
        "--speed",
        speed,
        "--brokers",
        &brokers,
    ]);
    poll_metrics(port, &mut matcher, Duration::from_secs(60), |body| {
        metric(body, "hashbuy_matcher_records_total") >= 4.0
    })
    .expect("the matcher runs");
    sigterm(&matcher);
    let (status, stderr) = finish(matcher);
    assert!(status.success(), "{stderr}");
    bought(&brokers)
}

#[test]
fn live_changes_take_effect_for_tweets_from_their_time_at_any_replay_speed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tweets = dir.path().join("tweets.jsonl");
    let lines = [
        tweet(1, "12345", "#BuyBlueCap #BuyRedSneakers42", T - 1_000),
        tweet(2, "12345", "#BuyBlueCap #BuyRedSneakers42", T),
        tweet(3, "1212", "#BuyBlueCap", T + 59_999),
        tweet(4, "1212", "#BuyBlueCap", T + 60_000),
    ];
    std::fs::write(&tweets, lines.join("\n") + "\n").expect("tweets written");
    let expected: BTreeSet<(String, String)> = [
        ("1", "red-sneakers-42"),
        ("2", "blue-cap"),
        ("3", "blue-cap"),
    ]
    .into_iter()
    .map(|(t, o)| (t.to_owned(), o.to_owned()))
    .collect();
    assert_eq!(changes_then_tweets("1000", &tweets), expected);
    assert_eq!(changes_then_tweets("max", &tweets), expected);
}

#[test]
fn catalog_ls_shows_the_catalog_at_a_time_and_a_clashing_offer_is_refused() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let at = T.to_string();
    succeeds(&[
        "catalog",
        "put",
        "--allow-past",
        &samples().join("catalog.toml").display().to_string(),
        "--at",
        &at,
        "--brokers",
        &brokers,
    ]);
    succeeds(&[
        "catalog",
        "rm",
        "--allow-past",
        "BuyWinterCoat",
        "--at",
        &(T + 5).to_string(),
        "--brokers",
        &brokers,
    ]);
    let ids = |at: i64| -> Vec<String> {
        succeeds(&[
            "catalog",
            "ls",
            "--at",
            &at.to_string(),
            "--brokers",
            &brokers,
        ])
        .lines()
        .map(|line| {
            let offer: Value = serde_json::from_str(line).expect("JSON lines");
            offer["offer_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
    };
    assert!(ids(T - 1).is_empty());
    assert!(ids(T).contains(&"winter-coat".to_owned()), "{:?}", ids(T));
    assert!(!ids(T + 5).contains(&"winter-coat".to_owned()));

    let out = run(&[
        "catalog",
        "put",
        "--allow-past",
        "--offer",
        r#"{"hashtag": "BuyHat", "offer_id": "hat", "merchant_id": "acme", "amount": 900,
            "currency": "usd", "mode": "confirm", "confirm_hashtag": "buyredsneakers42"}"#,
        "--at",
        &at,
        "--brokers",
        &brokers,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("offer \"hat\"") && stderr.contains("of offer \"red-sneakers-42\""),
        "{stderr}"
    );
    assert_eq!(ids(T).len(), 4, "nothing written");
}

#[test]
fn a_bad_table_record_is_a_dead_letter_and_the_matcher_goes_on() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("catalog")
                .key("buyjunk")
                .payload(&b"\xff not an offer"[..])
                .timestamp(T),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    producer
        .flush(std::time::Duration::from_secs(10))
        .expect("delivered");
    succeeds(&[
        "catalog",
        "put",
        "--allow-past",
        "--offer",
        r#"{"hashtag": "BuyBlueCap", "offer_id": "blue-cap", "merchant_id": "acme",
            "amount": 1500, "currency": "usd"}"#,
        "--at",
        &T.to_string(),
        "--brokers",
        &brokers,
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let tweets = dir.path().join("tweets.jsonl");
    std::fs::write(&tweets, tweet(7, "12345", "#BuyBlueCap", T + 1) + "\n").expect("written");
    succeeds(&[
        "replay",
        &tweets.display().to_string(),
        "--brokers",
        &brokers,
    ]);
    // No table files: the live tables alone, and the links from a file.
    succeeds(&[
        "match",
        "--brokers",
        &brokers,
        "--accounts",
        &samples().join("accounts.json").display().to_string(),
        "--exit-at-end",
    ]);
    assert_eq!(
        bought(&brokers),
        BTreeSet::from([("7".to_owned(), "blue-cap".to_owned())])
    );
    let letters = tail_values(&brokers, "dead-letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["stage"], "tables");
    assert_eq!(letters[0]["topic"], "catalog");
    assert!(
        letters[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a protobuf Offer")),
        "{}",
        letters[0]
    );
}

/// A change put late, after tweets of its time were decided: those stay as
/// they were decided, and the tweets decided after it is read, of its time
/// or later, take it.
#[test]
fn a_late_change_takes_effect_for_the_tweets_decided_after_it() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().expect("temp dir");
    let accounts = samples().join("accounts.json").display().to_string();
    let catalog = samples().join("catalog.toml").display().to_string();
    // A group of its own each time: the embedded broker holds a restarted
    // member's partitions until its session times out.
    let match_to_end = |group: &str| {
        succeeds(&[
            "match",
            "--brokers",
            &brokers,
            "--catalog",
            &catalog,
            "--accounts",
            &accounts,
            "--group",
            group,
            "--exit-at-end",
        ])
    };
    let replay = |name: &str, lines: &[String]| {
        let file = dir.path().join(name);
        std::fs::write(&file, lines.join("\n") + "\n").expect("tweets written");
        succeeds(&["replay", &file.display().to_string(), "--brokers", &brokers]);
    };
    replay(
        "first.jsonl",
        &[tweet(1, "12345", "#BuyRedSneakers42", T + 10)],
    );
    match_to_end("first");
    // Put after tweet 1 was decided, in effect from before it.
    succeeds(&[
        "catalog",
        "rm",
        "--allow-past",
        "BuyRedSneakers42",
        "--at",
        &T.to_string(),
        "--brokers",
        &brokers,
    ]);
    replay(
        "second.jsonl",
        &[
            tweet(2, "12345", "#BuyRedSneakers42", T + 5),
            tweet(3, "12345", "#BuyRedSneakers42", T + 20),
        ],
    );
    match_to_end("second");
    assert_eq!(
        bought(&brokers),
        BTreeSet::from([("1".to_owned(), "red-sneakers-42".to_owned())]),
        "tweet 1 stays bought; 2 and 3, decided after the change, buy nothing (nor does \
         tweet 1 again, read by the second group)"
    );
}

#[test]
fn a_change_in_the_past_needs_allow_past_and_a_time_in_seconds_is_refused() {
    let out = run(&[
        "catalog",
        "rm",
        "BuyX",
        "--at",
        &T.to_string(),
        "--brokers",
        "127.0.0.1:9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is in the past") && stderr.contains("--allow-past"),
        "{stderr}"
    );
    let out = run(&[
        "catalog",
        "rm",
        "BuyX",
        "--at",
        "1780272000",
        "--brokers",
        "127.0.0.1:9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not seconds"), "{stderr}");
}

/// A change put before its key's latest change is refused: compaction
/// keeps each key's last record, not its latest time, so it would outlive
/// the later change.
#[test]
fn a_change_before_its_key_s_latest_is_refused() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let in_an_hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        + 3_600_000)
        .to_string();
    let merchant =
        |account: &str| format!(r#"{{"merchant_id": "acme", "account_id": "{account}"}}"#);
    succeeds(&[
        "merchants",
        "put",
        "--merchant",
        &merchant("acct_2Later"),
        "--at",
        &in_an_hour,
        "--brokers",
        &brokers,
    ]);
    for args in [
        vec!["merchants", "put", "--merchant", &merchant("acct_1Now")],
        vec!["merchants", "rm", "acme"],
    ] {
        let out = run(&[&args[..], &["--brokers", &brokers]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("\"acme\" has a change in effect from"),
            "{stderr}"
        );
    }
    // At or after the latest, it is taken.
    succeeds(&[
        "merchants",
        "put",
        "--merchant",
        &merchant("acct_3Then"),
        "--at",
        &in_an_hour,
        "--brokers",
        &brokers,
    ]);
    let listed = succeeds(&[
        "merchants",
        "ls",
        "--at",
        &in_an_hour,
        "--brokers",
        &brokers,
    ]);
    assert!(listed.contains("acct_3Then"), "{listed}");
}

#[test]
fn without_live_tables_the_files_are_required() {
    let out = run(&[
        "match",
        "--brokers",
        "127.0.0.1:9",
        "--no-live-tables",
        "--accounts",
        &samples().join("accounts.json").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no catalog: give --catalog FILE"),
        "{stderr}"
    );
}
