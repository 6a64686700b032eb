//! End to end against a real broker process (tansu in CI, or a Kafka):
//! create topics, replay the sample stream, read it back; match it; settle
//! its commands through paysim (a child process) to acks, hand the
//! partitions to a settler elsewhere, and settle them again in another
//! group.
//!
//! Ignored by a plain `cargo test`, which needs no broker. Run it with
//! `HASHBUY_TEST_BROKERS=host:port cargo test --test real_broker -- --ignored`;
//! `.ci/run` starts tansu and does so. Extra librdkafka properties for the
//! broker go in `HASHBUY_TEST_KAFKA_PROPERTIES` as space-separated
//! KEY=VALUE pairs (security settings, say).
//!
//! The matcher runs at least once here unless `HASHBUY_TEST_TRANSACTIONS=1`
//! says the broker has transactions with `read_committed` (a Kafka), in
//! which case a matcher killed mid-stream must also leave no duplicate.
//! Against a Kafka:
//!
//! ```sh
//! HASHBUY_TEST_BROKERS=kafka:9092 HASHBUY_TEST_TRANSACTIONS=1 \
//!     cargo test --test real_broker -- --ignored
//! ```

mod broker;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::{command, hashbuy, ok, transactions, Paysim};
use common::{inspected_command_ids, metric, poll_metrics, RECORDINGS_AGE};
use serde_json::Value;

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
        keyed, 6,
        "the sample's five tweets by user 12345 and the delete notice of one, all keyed by \
         that user"
    );
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn match_at_least_once_on_a_real_broker() {
    let (tweets, commands, dead) = matcher_topics("m");
    let report = replay_and_match_sample(&tweets, &commands, &dead);
    assert!(report.contains("matched 18 records"), "{report}");
    let printed = tail_commands(&commands);
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

/// Replays the sample stream to `tweets` and matches it at least once,
/// in a group of its own, to `commands` and `dead`; the matcher's report.
fn replay_and_match_sample(tweets: &str, commands: &str, dead: &str) -> String {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let sample = |name: &str| samples.join(name).display().to_string();
    ok(hashbuy(&[
        "replay",
        &sample("tweets.jsonl"),
        "--topic",
        tweets,
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
        &format!("{tweets}-matcher"),
        "--tweets-topic",
        tweets,
        "--commands-topic",
        commands,
        "--dead-letters-topic",
        dead,
    ]);
    let report = String::from_utf8_lossy(&matched.stderr).into_owned();
    ok(matched);
    report
}

/// Creates a tweets, a commands and a dead-letters topic of this run, 4
/// partitions each, named with `prefix`, and the `stock-requests` topic
/// the matcher and the settler need (shared by the suite's tests: none
/// has a limited offer).
fn matcher_topics(prefix: &str) -> (String, String, String) {
    let run = std::process::id();
    let names = (
        format!("{prefix}-tweets-{run}"),
        format!("{prefix}-commands-{run}"),
        format!("{prefix}-dead-{run}"),
    );
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{},{},{},stock-requests", names.0, names.1, names.2),
        "--partitions",
        "4",
    ]));
    names
}

/// Every committed record of a commands topic, as `tail` prints it.
fn tail_commands(topic: &str) -> String {
    ok(hashbuy(&[
        "tail",
        "--topic",
        topic,
        "--type",
        "command",
        "--from-beginning",
        "--exit-at-end",
    ]))
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn a_matcher_killed_mid_stream_and_restarted_loses_nothing_on_a_real_broker() {
    let run = std::process::id();
    let (tweets, commands, dead) = matcher_topics("k");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let generated = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["gen", "--tweets", "20000", "--purchase-share", "0.05"])
        .args(["--out", &path("t.jsonl"), "--catalog-out", &path("c.toml")])
        .args(["--accounts-out", &path("a.toml")])
        .output()
        .expect("gen runs");
    ok(generated);
    let inspected = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["inspect", &path("t.jsonl"), "--catalog", &path("c.toml")])
        .args(["--accounts", &path("a.toml")])
        .output()
        .expect("inspect runs");
    let expected = inspected_command_ids(&ok(inspected));
    ok(hashbuy(&["replay", &path("t.jsonl"), "--topic", &tweets]));

    let delivery = if transactions() {
        "exactly-once"
    } else {
        "at-least-once"
    };
    let port = common::free_port();
    let matcher = |extra: &[&str]| {
        let mut matcher = command(&["match", "--catalog", &path("c.toml")]);
        matcher
            .args(["--accounts", &path("a.toml"), "--delivery", delivery])
            .args(["--group", &format!("k-{run}"), "--batch-ms", "20"])
            .args(["-X", "session.timeout.ms=6000"])
            .args(["--tweets-topic", &tweets, "--commands-topic", &commands])
            .args(["--dead-letters-topic", &dead])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        matcher
    };
    let mut first = matcher(&["--metrics-addr", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("matcher starts");
    poll_metrics(port, &mut first, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_matcher_commands_total") >= 1.0
    })
    .expect("the matcher exited early");
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let restarted = matcher(&["--exit-at-end"])
        .output()
        .expect("matcher restarts");
    let report = String::from_utf8_lossy(&restarted.stderr).into_owned();
    ok(restarted);
    assert!(
        !report.contains("matched 0 records"),
        "the kill was mid-stream: {report}"
    );

    let printed = tail_commands(&commands);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in printed.lines() {
        let value: Value = serde_json::from_str(line).expect("JSON line");
        let id = value["value"]["command_id"]
            .as_str()
            .expect("id")
            .to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    let ids: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        expected.difference(&ids).count(),
        0,
        "no command is missing"
    );
    assert_eq!(ids.difference(&expected).count(), 0, "nothing unexpected");
    if transactions() {
        let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        assert!(twice.is_empty(), "exactly once: {twice:?}");
    }
}

/// Every ack of a topic: command id, status and payment intent, in topic
/// order.
fn tail_acks(topic: &str) -> Vec<(String, String, String)> {
    ok(hashbuy(&[
        "tail",
        "--topic",
        topic,
        "--type",
        "ack",
        "--from-beginning",
        "--exit-at-end",
    ]))
    .lines()
    .map(|l| {
        let ack = &serde_json::from_str::<Value>(l).expect("JSON line")["value"];
        let field = |name: &str| ack[name].as_str().unwrap_or_default().to_owned();
        (
            field("command_id"),
            field("status"),
            field("payment_intent_id"),
        )
    })
    .collect()
}

/// A ledger changelog that exists already without compaction (made by
/// hand, or by a broker's auto-creation) would lose the records a new
/// owner restores from: `topics create` says which setting differs and
/// the command that changes it, and fails; one it made itself passes.
#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn an_existing_ledger_changelog_without_compaction_is_an_error_saying_how_to_change_it() {
    let run = std::process::id();
    let (plain, made) = (format!("plain-ledger-{run}"), format!("made-ledger-{run}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |ledger: &str| {
        let path = dir.path().join(format!("{ledger}.toml"));
        std::fs::write(&path, format!("[kafka.topics]\nledger = \"{ledger}\"\n")).expect("written");
        path.display().to_string()
    };
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &plain,
        "--partitions",
        "2",
    ]));
    let again = hashbuy(&[
        "topics",
        "create",
        "--config",
        &config(&plain),
        "--topics",
        &plain,
        "--partitions",
        "2",
    ]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{said}");
    // A Kafka says the policy it has; tansu leaves out what was not set.
    let has = [
        "cleanup.policy=delete",
        "no cleanup.policy set (the broker's default)",
    ];
    assert!(
        has.iter().any(|has| said.contains(&format!(
            "error: {plain} has {has}, where hashbuy needs cleanup.policy=compact"
        ))) && said.contains(&format!(
            "--entity-name {plain} --add-config cleanup.policy=compact"
        )),
        "{said}"
    );

    let made_config = config(&made);
    let create = |topic: &str| {
        hashbuy(&[
            "topics",
            "create",
            "--config",
            &made_config,
            "--topics",
            topic,
            "--partitions",
            "2",
        ])
    };
    ok(create(&made));
    let again = create(&made);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("exists already") && !said.contains(" has "),
        "{said}"
    );
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn tweets_to_acks_on_a_real_broker() {
    let run = std::process::id();
    let (tweets, commands, dead) = matcher_topics("s");
    let acks = format!("s-acks-{run}");
    let replies = format!("s-replies-{run}");
    let ledger_topic = format!("s-ledger-{run}");
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{acks},{replies}"),
        "--partitions",
        "4",
    ]));
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &ledger_topic,
        "--partitions",
        "4",
        "--topic-config",
        "cleanup.policy=compact",
    ]));
    replay_and_match_sample(&tweets, &commands, &dead);

    let paysim = Paysim::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let settle = |group: &str, ledger: &str| {
        let out = command(&["settle", "--exit-at-end", "--group", group])
            .args(RECORDINGS_AGE)
            .args([
                "--provider-url",
                &format!("http://127.0.0.1:{}", paysim.port),
            ])
            .arg("--ledger")
            .arg(dir.path().join(ledger))
            .args(["--commands-topic", &commands, "--acks-topic", &acks])
            .args([
                "--dead-letters-topic",
                &dead,
                "--ledger-topic",
                &ledger_topic,
                "--replies-topic",
                &replies,
            ])
            .env("HASHBUY_PROVIDER_KEY", "sk_test_real_broker")
            .env_remove("STRIPE_API_KEY")
            .output()
            .expect("settle runs");
        let report = String::from_utf8_lossy(&out.stderr).into_owned();
        ok(out);
        report
    };

    // The sample's six commands: user 12345 buys the sneakers twice (one
    // a user: the second is rejected) and a latte; 67890's card declines.
    let report = settle(&format!("s-settle-{run}"), "first");
    assert!(
        report.contains("4 settled, 1 declined, 1 rejected"),
        "{report}"
    );
    let first = tail_acks(&acks);
    let statuses: BTreeMap<String, (String, String)> = first
        .iter()
        .map(|(id, status, charge)| (id.clone(), (status.clone(), charge.clone())))
        .collect();
    assert_eq!(first.len(), 6, "one ack a command: {first:?}");
    assert_eq!(statuses.len(), 6, "for six commands: {first:?}");
    let charges = paysim.charges();
    assert_eq!(charges.len(), 4, "four commands charged: {charges:?}");
    for (id, (status, charge)) in &statuses {
        match charges.get(id) {
            Some(intents) => {
                assert_eq!(intents.len(), 1, "{id} charged once: {intents:?}");
                assert_eq!(status, "SETTLED", "{id}");
                assert_eq!(charge, &intents[0], "{id}'s ack names its charge");
            }
            None => assert_ne!(status, "SETTLED", "{id} settled without a charge"),
        }
    }

    // The first group's partitions move to a settler elsewhere (the same
    // group, an empty ledger): the history comes along from the changelog,
    // and what the group committed is known to be acked, so nothing is
    // acked again.
    let report = settle(&format!("s-settle-{run}"), "second");
    assert!(report.contains(" 0 acks,"), "{report}");
    assert_eq!(tail_acks(&acks).len(), 6, "no ack repeated");
    assert_eq!(paysim.charges(), charges, "no new charge");

    // The same commands to a settler of another group, with an empty
    // ledger: it restores the history from the changelog topic on this
    // broker, charges nothing, and acks every command again as before
    // (this group never committed them, so it acks both what it restored
    // and what it reads).
    let report = settle(&format!("s-settle-again-{run}"), "third");
    assert!(
        report.contains(": 0 settled, 0 declined, 0 rejected"),
        "{report}"
    );
    assert_eq!(paysim.charges(), charges, "no new charge");
    let again = tail_acks(&acks);
    for (id, status, charge) in &again {
        assert_eq!(
            statuses.get(id),
            Some(&(status.clone(), charge.clone())),
            "{id} acked as before"
        );
    }
    let mut times: BTreeMap<&String, usize> = BTreeMap::new();
    for (id, _, _) in &again {
        *times.entry(id).or_default() += 1;
    }
    assert!(
        times.len() == 6 && times.values().all(|&n| n >= 2),
        "every command acked again: {times:?}"
    );
}

/// Linked shoppers for the confirm-mode test.
const SHOPPERS: u64 = 120;

/// A confirm-mode test's tweet `id` by user `user` at `at_ms`.
fn confirm_tweet(id: u64, user: u64, at_ms: i64, text: &str) -> String {
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}"}}, "timestamp_ms": "{at_ms}"}}"#
    )
}

/// A matcher killed (SIGKILL) while shoppers' confirm-mode purchases are
/// being made pending, then restarted after their confirmations arrive:
/// each purchase is bought once, under its purchase tweet's command id,
/// and each buyer is prompted once. Exactly once needs transactions, so
/// `.ci/run` runs it on noida-db only (named like the other kill test).
#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn a_matcher_killed_between_purchase_and_confirmation_buys_once_and_prompts_once() {
    let run = std::process::id();
    let (tweets, commands, dead) = matcher_topics("c");
    let replies = format!("c-replies-{run}");
    let pending = format!("c-pending-{run}");
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &replies,
        "--partitions",
        "4",
    ]));
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &pending,
        "--partitions",
        "4",
        "--topic-config",
        "cleanup.policy=compact",
    ]));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        path("catalog.toml"),
        "[[offers]]\nhashtag = \"BuyBlueHoodie\"\noffer_id = \"blue-hoodie\"\n\
         merchant_id = \"acme\"\namount = 3900\ncurrency = \"usd\"\nmode = \"confirm\"\n",
    )
    .expect("written");
    let accounts: Vec<String> = (1..=SHOPPERS)
        .map(|u| {
            format!(
                "{{\"user_id\": \"{u}\", \"customer_id\": \"cus_{u}\", \"payment_method_id\": \"pm_card_visa\"}}"
            )
        })
        .collect();
    std::fs::write(
        path("accounts.json"),
        format!("{{\"accounts\": [{}]}}", accounts.join(",\n")),
    )
    .expect("written");
    // Purchases first, chatter between them so that the kill lands while
    // they are being read; every confirmation well inside its window.
    let t0: i64 = 1_780_318_800_000;
    let mut purchases = Vec::new();
    for u in 1..=SHOPPERS {
        purchases.push(confirm_tweet(u, u, t0 + u as i64, "#BuyBlueHoodie"));
        for c in 0..40 {
            purchases.push(confirm_tweet(
                100_000 + u * 100 + c,
                u,
                t0 + u as i64,
                "chatter",
            ));
        }
    }
    std::fs::write(path("purchases.jsonl"), purchases.join("\n") + "\n").expect("written");
    let confirmations: Vec<String> = (1..=SHOPPERS)
        .map(|u| confirm_tweet(1_000 + u, u, t0 + 60_000 + u as i64, "#ConfirmBlueHoodie"))
        .collect();
    std::fs::write(path("confirmations.jsonl"), confirmations.join("\n") + "\n").expect("written");
    ok(hashbuy(&[
        "replay",
        &path("purchases.jsonl"),
        "--topic",
        &tweets,
    ]));

    let delivery = if transactions() {
        "exactly-once"
    } else {
        "at-least-once"
    };
    let port = common::free_port();
    let matcher = |extra: &[&str]| {
        let mut matcher = command(&["match", "--catalog", &path("catalog.toml")]);
        matcher
            .args(["--accounts", &path("accounts.json"), "--delivery", delivery])
            .args(["--group", &format!("c-{run}"), "--batch-ms", "20"])
            .args(["--batch-records", "500"])
            .args(["-X", "session.timeout.ms=6000"])
            .args(["--tweets-topic", &tweets, "--commands-topic", &commands])
            .args(["--dead-letters-topic", &dead, "--replies-topic", &replies])
            .args(["--pending-topic", &pending])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        matcher
    };
    let mut first = matcher(&["--metrics-addr", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("matcher starts");
    poll_metrics(port, &mut first, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_matcher_replies_total") >= 1.0
    })
    .expect("the matcher exited early");
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    ok(hashbuy(&[
        "replay",
        &path("confirmations.jsonl"),
        "--topic",
        &tweets,
    ]));
    let restarted = matcher(&["--exit-at-end"])
        .output()
        .expect("matcher restarts");
    ok(restarted);

    let values = |topic: &str, kind: &str| -> Vec<Value> {
        ok(hashbuy(&[
            "tail",
            "--topic",
            topic,
            "--type",
            kind,
            "--from-beginning",
            "--exit-at-end",
        ]))
        .lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).expect("JSON line");
            record["value"].take()
        })
        .collect()
    };
    let bought: Vec<(String, String)> = values(&commands, "command")
        .iter()
        .map(|c| {
            (
                c["tweet_id"].as_str().expect("tweet").to_owned(),
                c["command_id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let distinct: BTreeSet<&(String, String)> = bought.iter().collect();
    let purchase_tweets: BTreeSet<String> = (1..=SHOPPERS).map(|u| u.to_string()).collect();
    assert_eq!(
        distinct
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>(),
        purchase_tweets,
        "every purchase is bought, under its purchase tweet"
    );
    assert_eq!(distinct.len() as u64, SHOPPERS, "one command id a purchase");
    let prompts: Vec<String> = values(&replies, "reply")
        .iter()
        .filter(|r| r["kind"] == "CONFIRM_PROMPT")
        .map(|r| r["reply_id"].as_str().expect("id").to_owned())
        .collect();
    let distinct_prompts: BTreeSet<&String> = prompts.iter().collect();
    assert_eq!(
        distinct_prompts.len() as u64,
        SHOPPERS,
        "each buyer prompted"
    );
    if transactions() {
        assert_eq!(
            bought.len() as u64,
            SHOPPERS,
            "no command twice: {bought:?}"
        );
        assert_eq!(prompts.len() as u64, SHOPPERS, "no prompt twice");
    }
}

/// Every ack of a topic: user id and status, in topic order.
fn tail_ack_users(topic: &str) -> Vec<(String, String)> {
    ok(hashbuy(&[
        "tail",
        "--topic",
        topic,
        "--type",
        "ack",
        "--from-beginning",
        "--exit-at-end",
    ]))
    .lines()
    .map(|l| {
        let ack = &serde_json::from_str::<Value>(l).expect("JSON line")["value"];
        let field = |name: &str| ack[name].as_str().unwrap_or_default().to_owned();
        (field("user_id"), field("status"))
    })
    .collect()
}

#[test]
#[ignore = "needs a broker: HASHBUY_TEST_BROKERS=host:port"]
fn limited_stock_on_a_real_broker() {
    let run = std::process::id();
    let name = |role: &str| format!("l-{role}-{run}");
    let (tweets, commands, dead, acks, replies) = (
        name("tweets"),
        name("commands"),
        name("dead"),
        name("acks"),
        name("replies"),
    );
    let (ledger, requests, holds) = (name("ledger"), name("requests"), name("holds"));
    // One tweets partition: the buyers reach the reservation step in the
    // order they tweeted.
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &tweets,
        "--partitions",
        "1",
    ]));
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{commands},{dead},{acks},{replies},{requests}"),
        "--partitions",
        "4",
    ]));
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{ledger},{holds}"),
        "--partitions",
        "4",
        "--topic-config",
        "cleanup.policy=compact",
    ]));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |file: &str| dir.path().join(file).display().to_string();
    std::fs::write(
        path("catalog.json"),
        r#"{"offers": [{"hashtag": "BuyLimitedDrop", "offer_id": "limited-drop",
            "merchant_id": "acme", "amount": 5000, "currency": "usd", "stock": 2}]}"#,
    )
    .expect("written");
    let accounts: Vec<String> = (0..4)
        .map(|i| {
            let card = if i == 0 {
                "pm_card_chargeDeclined"
            } else {
                "pm_card_visa"
            };
            format!(
                r#"{{"user_id": "{}", "customer_id": "cus_{i}", "payment_method_id": "{card}"}}"#,
                7000 + i
            )
        })
        .collect();
    std::fs::write(
        path("accounts.json"),
        format!(r#"{{"accounts": [{}]}}"#, accounts.join(",")),
    )
    .expect("written");
    let lines: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r##"{{"id_str": "{}", "text": "#BuyLimitedDrop", "user": {{"id_str": "{}", "protected": false}}, "timestamp_ms": "{}"}}"##,
                950_000 + i,
                7000 + i,
                1_780_272_000_000_i64 + i
            )
        })
        .collect();
    std::fs::write(path("tweets.jsonl"), lines.join("\n") + "\n").expect("written");
    ok(hashbuy(&[
        "replay",
        &path("tweets.jsonl"),
        "--topic",
        &tweets,
    ]));

    let delivery = if transactions() {
        "exactly-once"
    } else {
        "at-least-once"
    };
    ok(command(&["match", "--no-live-tables", "--exit-at-end"])
        .args(["--catalog", &path("catalog.json")])
        .args(["--accounts", &path("accounts.json"), "--delivery", delivery])
        .args(["--group", &name("matcher"), "--tweets-topic", &tweets])
        .args(["--commands-topic", &commands, "--dead-letters-topic", &dead])
        .args(["--stock-requests-topic", &requests])
        .output()
        .expect("match runs"));

    let paysim = Paysim::start();
    let mut step = command(&["stock", "--delivery", delivery, "--group", &name("stock")])
        .args(["--stock-requests-topic", &requests, "--stock-topic", &holds])
        .args(["--commands-topic", &commands, "--dead-letters-topic", &dead])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stock starts");
    let mut settler = command(&["settle", "--group", &name("settler")])
        .args(RECORDINGS_AGE)
        .args(["--provider-url", &paysim.url()])
        .arg("--ledger")
        .arg(dir.path().join("ledger"))
        .args(["--commands-topic", &commands, "--acks-topic", &acks])
        .args(["--dead-letters-topic", &dead, "--ledger-topic", &ledger])
        .args([
            "--replies-topic",
            &replies,
            "--stock-requests-topic",
            &requests,
        ])
        .env("HASHBUY_PROVIDER_KEY", "sk_test_real_broker")
        .env_remove("STRIPE_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("settle starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let outcomes = loop {
        let acked: BTreeMap<String, String> = tail_ack_users(&acks).into_iter().collect();
        if acked.len() == 4 {
            break acked;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 4 buyers acked within 120 s: {acked:?}",
            acked.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for child in [&mut step, &mut settler] {
        common::sigterm(child);
        assert!(child.wait().expect("waited").success());
    }
    assert_eq!(
        outcomes.into_values().collect::<Vec<_>>(),
        ["DECLINED", "SETTLED", "SETTLED", "REJECTED"],
        "buyers 7000 to 7003: the declined card's unit went to 7002; 7003 found it sold out"
    );
    assert_eq!(paysim.charges().len(), 2, "two units, two charges");
}

/// A restore reads the changelog to its high watermark, not to the last
/// stable offset: on a Kafka, a read-committed end stops short of records
/// committed after another member's transaction still open, and a step
/// restoring only that far forgot a unit it had granted. (noida-db 0.2.3,
/// which `.ci/run` uses, answers the end the same either way, so there the
/// test passes with or without the fix; it guards a Kafka.)
#[test]
#[ignore = "needs a broker with transactions: HASHBUY_TEST_BROKERS=host:port HASHBUY_TEST_TRANSACTIONS=1"]
fn a_step_restoring_past_another_member_s_open_transaction_keeps_its_units() {
    use hashbuy_proto::v1::stock_request::Kind;
    use hashbuy_proto::v1::{PaymentCommand, StockRequest};
    use prost::Message as _;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    if !transactions() {
        eprintln!("skipped: the broker has no transactions (HASHBUY_TEST_TRANSACTIONS=1)");
        return;
    }
    let run = std::process::id();
    let name = |role: &str| format!("z-{role}-{run}");
    let (requests, holds, commands, dead) = (
        name("requests"),
        name("holds"),
        name("commands"),
        name("dead"),
    );
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &format!("{requests},{commands},{dead}"),
        "--partitions",
        "1",
    ]));
    ok(hashbuy(&[
        "topics",
        "create",
        "--topics",
        &holds,
        "--partitions",
        "1",
        "--topic-config",
        "cleanup.policy=compact",
    ]));
    let client = |extra: &[(&str, &str)]| {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", broker::brokers());
        for property in broker::kafka_properties() {
            if let Some((key, value)) = property.split_once('=') {
                config.set(key, value);
            }
        }
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    };
    let requests_producer: BaseProducer = client(&[]).create().expect("producer");
    let reserve = |i: u32| {
        let request = StockRequest {
            kind: Some(Kind::Reserve(PaymentCommand {
                command_id: format!("z-cmd-{i}"),
                tweet_id: format!("{}", 990_000 + i),
                user_id: format!("{}", 8000 + i),
                offer_id: "z-limited".into(),
                amount: 100,
                currency: "usd".into(),
                stock: 1,
                tweet_timestamp_ms: 1_780_272_000_000,
                ..PaymentCommand::default()
            })),
        }
        .encode_to_vec();
        requests_producer
            .send(BaseRecord::to(&requests).key("z-limited").payload(&request))
            .map_err(|(e, _)| e)
            .expect("sent");
        requests_producer
            .flush(Duration::from_secs(30))
            .expect("delivered");
    };
    let step = || {
        let mut step = command(&["stock", "--group", &name("stock")]);
        step.args(["--stock-requests-topic", &requests, "--stock-topic", &holds])
            .args(["--commands-topic", &commands, "--dead-letters-topic", &dead])
            .args(["-X", "session.timeout.ms=6000"]);
        step
    };
    let grants = || -> Vec<Value> {
        ok(hashbuy(&[
            "tail",
            "--topic",
            &commands,
            "--type",
            "command",
            "--from-beginning",
            "--exit-at-end",
        ]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line")["value"].clone())
        .filter(|c| c["reserved"] == true)
        .collect()
    };

    // A member runs; another, frozen mid-batch, holds a transaction open
    // on the changelog; the running member grants the one unit after it.
    let port = common::free_port();
    let mut first = step()
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stock starts");
    // Ready once its partition is assigned and its line restored.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::get(port, "/readyz").map(|(status, _)| status) != Some(200) {
        assert!(
            first.try_wait().expect("status").is_none(),
            "the step stopped"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the step was not ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let zombie: BaseProducer = client(&[("transactional.id", &name("zombie"))])
        .create()
        .expect("producer");
    zombie
        .init_transactions(Duration::from_secs(30))
        .expect("transactions");
    zombie.begin_transaction().expect("begun");
    zombie
        .send(BaseRecord::to(&holds).key("other/none").payload(&[][..]))
        .map_err(|(e, _)| e)
        .expect("sent");
    zombie.flush(Duration::from_secs(30)).expect("delivered");
    reserve(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while grants().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first buyer was not granted within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    common::sigterm(&first);
    assert!(first.wait().expect("waited").success());

    // The next member (a restart) restores the line while the transaction
    // is still open; the broker ends it a few seconds later, as its
    // timeout would. A second buyer must find no unit.
    reserve(2);
    let ender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        zombie
            .abort_transaction(Duration::from_secs(30))
            .expect("aborted");
    });
    ok(step().arg("--exit-at-end").output().expect("stock runs"));
    ender.join().expect("ended");
    let granted = grants();
    assert_eq!(
        granted.len(),
        1,
        "one unit, one grant, whatever transaction was open: {granted:?}"
    );
}
