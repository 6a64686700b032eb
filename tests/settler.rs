//! `hashbuy settle` as a user runs it, against the embedded broker and
//! paysim, both started in this test process: every command gets exactly
//! one outcome and the provider at most one charge per command, through
//! injected 500s, 429s and dropped connections, and through `kill -9`s of
//! the settler; a repeated command charges once; an undecodable one is a
//! dead letter; the provider key appears nowhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    finish_within, free_port, json_document, metric, poll_metrics, read_all, signal, succeeds,
    watermarks, Provider, RECORDINGS_AGE,
};
use hashbuy_core::replies::reply_id;
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::produce::{flush_promptly, send_waiting, Deliveries};
use hashbuy_paysim::Config as PaysimConfig;
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::reply::Kind;
use hashbuy_proto::v1::{DeadLetter, PaymentAck, PaymentCommand, Reply};
use prost::Message as _;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

/// The provider key of every run: it must never be printed anywhere.
const CANARY_KEY: &str = "sk_test_canary_7c1d0e9f3b2a";

/// `count` commands of `users` users; every 20th card declines.
fn commands(count: usize, users: usize) -> Vec<PaymentCommand> {
    (0..count)
        .map(|i| PaymentCommand {
            command_id: format!("cmd-{i:05}"),
            tweet_id: format!("{}", 1_000_000 + i),
            user_id: format!("{}", 500 + i % users),
            tweet_timestamp_ms: 1_780_000_000_000 + i as i64,
            hashtag: format!("Buy{i}"),
            offer_id: format!("offer-{i}"),
            merchant_id: "acme".into(),
            amount: 100 + (i as u64 % 50),
            currency: "usd".into(),
            customer_id: format!("cus_{}", 500 + i % users),
            payment_method_id: if i % 20 == 7 {
                "pm_card_chargeDeclined".into()
            } else {
                "pm_card_visa".into()
            },
            max_per_user: 1,
            spend_limit: None,
            offer_title: String::new(),
            stock: 0,
            reserved: false,
            sold_out: false,
            stock_partition: None,
            offer_ends_at_ms: None,
        })
        .collect()
}

fn produce(brokers: &str, records: &[(String, Vec<u8>)]) {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .expect("producer");
    for (key, value) in records {
        send_waiting(
            &producer,
            "payment-commands",
            Some(key.as_bytes()),
            value,
            || false,
        )
        .expect("queued");
    }
    flush_promptly(&producer, Duration::from_secs(30)).expect("commands flushed");
    assert_eq!(producer.context().failures(), None, "commands delivered");
}

fn produce_commands(brokers: &str, commands: &[PaymentCommand]) {
    let records: Vec<(String, Vec<u8>)> = commands
        .iter()
        .map(|c| (c.user_id.clone(), c.encode_to_vec()))
        .collect();
    produce(brokers, &records);
}

/// `hashbuy settle` on `brokers` against `provider`, ledger in `ledger`,
/// with a horizon that reaches back to the tests' fixed dates.
fn settle(brokers: &str, provider: &Provider, ledger: &Path) -> Command {
    settle_with_age(brokers, provider, ledger, RECORDINGS_AGE[1])
}

/// [`settle`] with `--max-command-age` `age`.
fn settle_with_age(brokers: &str, provider: &Provider, ledger: &Path, age: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
    command
        .args([
            "settle",
            "--brokers",
            brokers,
            "--provider-url",
            &provider.url,
        ])
        .arg("--ledger")
        .arg(ledger)
        .env("HASHBUY_PROVIDER_KEY", CANARY_KEY)
        .env_remove("STRIPE_API_KEY")
        .args(["--max-attempts", "20", "--max-command-age", age]);
    command
}

fn finished(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(
        !stderr.contains(CANARY_KEY) && !String::from_utf8_lossy(&out.stdout).contains(CANARY_KEY),
        "the provider key was printed"
    );
    stderr
}

/// `hashbuy settle --exit-at-end`, run to its end: its stderr, checked as
/// [`finished`] does.
fn settle_to_end(brokers: &str, provider: &Provider, ledger: &Path) -> String {
    finished(
        settle(brokers, provider, ledger)
            .arg("--exit-at-end")
            .output()
            .expect("settle runs"),
    )
}

/// Checks the money-grade promise over `sent` commands: each has acks, all
/// its acks say the same, and the provider holds at most one charge for
/// it, which a SETTLED ack names; and each command's buyer is told its
/// outcome under one reply id, however often it was said again.
fn assert_settled_once(brokers: &str, provider: &Provider, sent: &[PaymentCommand]) {
    let acks: Vec<PaymentAck> = read_all(brokers, "payment-acks");
    let mut by_command: BTreeMap<String, BTreeSet<(i32, String)>> = BTreeMap::new();
    for ack in &acks {
        assert_ne!(ack.status(), Status::Unspecified, "{ack:?}");
        by_command
            .entry(ack.command_id.clone())
            .or_default()
            .insert((ack.status, ack.payment_intent_id.clone()));
    }
    let audit = provider.audit();
    let mut charges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for intent in &audit.payment_intents {
        if intent.status == "succeeded" {
            let command = intent.command_id.clone().expect("command id in metadata");
            charges.entry(command).or_default().push(intent.id.clone());
        }
    }
    for command in sent {
        let id = &command.command_id;
        let outcomes = by_command
            .get(id)
            .unwrap_or_else(|| panic!("no ack for {id}"));
        assert_eq!(outcomes.len(), 1, "{id} has one outcome: {outcomes:?}");
        let (status, intent) = outcomes.iter().next().expect("one");
        let charged = charges.get(id).cloned().unwrap_or_default();
        assert!(charged.len() <= 1, "{id} charged {} times", charged.len());
        if *status == Status::Settled as i32 {
            assert_eq!(
                charged,
                vec![intent.clone()],
                "{id}: SETTLED names its charge"
            );
        } else {
            assert!(charged.is_empty(), "{id}: not SETTLED, yet charged");
        }
        if command.payment_method_id == "pm_card_chargeDeclined" {
            assert_eq!(*status, Status::Declined as i32, "{id} declines");
        }
    }
    assert_eq!(by_command.len(), sent.len(), "acks only for commands sent");

    let replies: Vec<Reply> = read_all(brokers, "replies");
    let mut told: BTreeMap<String, BTreeSet<(i32, String, String)>> = BTreeMap::new();
    for reply in &replies {
        told.entry(reply.command_id.clone()).or_default().insert((
            reply.kind,
            reply.reply_id.clone(),
            reply.in_reply_to_tweet_id.clone(),
        ));
    }
    for command in sent {
        let id = &command.command_id;
        let status = by_command[id].iter().next().expect("one outcome").0;
        let kind = match Status::try_from(status) {
            Ok(Status::Settled) => Kind::Settled,
            Ok(Status::Declined) => Kind::Declined,
            Ok(Status::Rejected) => Kind::Rejected,
            _ => Kind::Failed,
        };
        let expected = BTreeSet::from([(
            kind as i32,
            reply_id(id, kind).to_string(),
            command.tweet_id.clone(),
        )]);
        assert_eq!(
            told.get(id),
            Some(&expected),
            "{id}: one reply, its outcome's"
        );
    }
}

#[test]
fn faults_at_the_provider_never_charge_twice_nor_lose_a_command() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 16).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        fail_500: 0.10,
        fail_429: 0.05,
        drop_after_charge: 0.02,
        seed: 11,
        ..PaysimConfig::default()
    });
    let sent = commands(10_000, 2_000);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end(&brokers, &provider, &dir.path().join("ledger"));
    assert!(stderr.contains("settled 10000 commands"), "{stderr}");
    assert_settled_once(&brokers, &provider, &sent);

    // The ledger agrees, and holds no key either.
    let export = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["ledger", "export", "--ledger"])
        .arg(dir.path().join("ledger"))
        .output()
        .expect("ledger runs");
    let export = String::from_utf8_lossy(&export.stdout);
    assert_eq!(export.lines().count(), 10_000);
    assert!(!export.contains(CANARY_KEY));
}

#[test]
fn a_settler_killed_again_and_again_still_charges_each_command_once() {
    let run = AtWork::prepare_with(PaysimConfig {
        latency_ms: 20,
        fail_500: 0.10,
        fail_429: 0.05,
        drop_after_charge: 0.02,
        seed: 5,
        ..PaysimConfig::default()
    });
    let (brokers, provider, ledger) = (&run.brokers, &run.provider, &run.ledger);
    let mut kills = 0;
    for round in 1..=4 {
        let port = free_port();
        let mut child = settle(brokers, provider, ledger)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("settle starts");
        // Killed once it has acked a few hundred (re-emitted acks count).
        if wait_for_acks(port, &mut child, 300.0 * f64::from(round)) {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills >= 2,
        "the settler was killed mid-stream ({kills} times)"
    );
    settle_to_end(brokers, provider, ledger);
    assert_settled_once(brokers, provider, &run.sent);
}

/// Waits until the settler on `port` has delivered `acks` acks in this
/// run; `false` if it exited first.
fn wait_for_acks(port: u16, child: &mut Child, acks: f64) -> bool {
    poll_metrics(port, child, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_settler_acks_total") >= acks
    })
    .is_some()
}

#[test]
fn a_repeated_command_charges_once_and_a_bad_one_is_a_dead_letter() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(3, 3);
    let mut dearer = sent[0].clone();
    dearer.amount += 1_000;
    let mut records: Vec<(String, Vec<u8>)> = sent
        .iter()
        .map(|c| (c.user_id.clone(), c.encode_to_vec()))
        .collect();
    records.push((sent[0].user_id.clone(), sent[0].encode_to_vec()));
    records.push((dearer.user_id.clone(), dearer.encode_to_vec()));
    records.push(("junk".into(), b"\xff\x00 not a command".to_vec()));
    produce(&brokers, &records);

    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end(&brokers, &provider, &dir.path().join("ledger"));
    assert!(stderr.contains("1 dead letters, 1 duplicates"), "{stderr}");
    assert_settled_once(&brokers, &provider, &sent);
    let charged = provider
        .audit()
        .payment_intents
        .iter()
        .filter(|p| p.command_id.as_deref() == Some(sent[0].command_id.as_str()))
        .count();
    assert_eq!(charged, 1, "three arrivals of one command id, one charge");
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    assert!(
        acks.iter()
            .filter(|a| a.command_id == sent[0].command_id)
            .all(|a| a.amount == sent[0].amount),
        "the first content wins"
    );
    let letters: Vec<DeadLetter> = read_all(&brokers, "dead-letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stage, "settle");
    assert_eq!(letters[0].key.as_deref(), Some(&b"junk"[..]));
    assert!(
        letters[0].reason.contains("PaymentCommand"),
        "{}",
        letters[0].reason
    );
}

/// With a merchants table every charge is a Stripe Connect destination
/// charge to its merchant's connected account, less the platform's fee; a
/// command for a merchant the table lacks is rejected, with a reply, and
/// never charged to the platform's own account.
#[test]
fn with_a_merchants_table_charges_go_to_the_merchants_connected_accounts() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned()]),
        ..PaysimConfig::default()
    });
    let mut sent = commands(4, 4);
    sent[3].merchant_id = "zed".into();
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    let merchants = dir.path().join("merchants.toml");
    std::fs::write(
        &merchants,
        "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"acct_1Acme\"\nfee_bps = 250\n\
         on_behalf_of = true\n",
    )
    .expect("merchants file");

    finished(
        settle(&brokers, &provider, &dir.path().join("ledger"))
            .arg("--merchants")
            .arg(&merchants)
            .arg("--exit-at-end")
            .output()
            .expect("settle runs"),
    );
    let acks: BTreeMap<String, PaymentAck> = read_all::<PaymentAck>(&brokers, "payment-acks")
        .into_iter()
        .map(|a| (a.command_id.clone(), a))
        .collect();
    for command in &sent[..3] {
        assert_eq!(acks[&command.command_id].status, Status::Settled as i32);
    }
    let zed = &acks[&sent[3].command_id];
    assert_eq!(zed.status, Status::Rejected as i32);
    assert!(
        zed.reason
            .contains("merchant \"zed\" has no connected account in the merchants table"),
        "{}",
        zed.reason
    );
    let audit = provider.audit();
    assert_eq!(audit.payment_intents.len(), 3, "nothing charged for zed");
    for intent in &audit.payment_intents {
        let command = sent
            .iter()
            .find(|c| intent.command_id.as_deref() == Some(c.command_id.as_str()))
            .expect("a command's charge");
        assert_eq!(intent.destination.as_deref(), Some("acct_1Acme"));
        assert_eq!(intent.on_behalf_of.as_deref(), Some("acct_1Acme"));
        assert_eq!(
            intent.application_fee_amount,
            Some(command.amount as i64 * 250 / 10_000).filter(|fee| *fee > 0)
        );
    }
    let replies: Vec<Reply> = read_all(&brokers, "replies");
    assert!(
        replies
            .iter()
            .any(|r| r.command_id == sent[3].command_id && r.kind == Kind::Rejected as i32),
        "zed's buyer is told"
    );
}

/// An entry keeps the route it was first charged by: after a crash, a
/// merchants table that moved its merchant to another account does not
/// change the request its key was first used with.
#[test]
fn a_resumed_charge_keeps_the_connected_account_it_was_first_routed_to() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned(), "acct_2Moved".to_owned()]),
        ..PaysimConfig::default()
    });
    let sent = commands(1, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_dir = dir.path().join("ledger");
    let now = hashbuy_settler::entry::now_ms();
    let mut entry = hashbuy_settler::entry::Entry::received(sent[0].clone(), 0, 0, now);
    entry.destination = Some(hashbuy_core::connect::Destination {
        account_id: "acct_1Acme".into(),
        application_fee_amount: Some(3),
        on_behalf_of: false,
    });
    entry
        .attempt(sent[0].command_id.clone(), now)
        .expect("attempt");
    ledger_holding(&ledger_dir, &entry);
    let merchants = dir.path().join("merchants.json");
    std::fs::write(
        &merchants,
        r#"{"merchants": [{"merchant_id": "acme", "account_id": "acct_2Moved", "fee_bps": 1000}]}"#,
    )
    .expect("merchants file");
    produce_commands(&brokers, &sent);
    finished(
        settle(&brokers, &provider, &ledger_dir)
            .arg("--merchants")
            .arg(&merchants)
            .args(["--exit-at-end", "--request-timeout-s", "2"])
            .output()
            .expect("settle runs"),
    );
    assert_settled_once(&brokers, &provider, &sent);
    let audit = provider.audit();
    assert_eq!(audit.payment_intents.len(), 1);
    let intent = &audit.payment_intents[0];
    assert_eq!(
        (intent.destination.as_deref(), intent.application_fee_amount),
        (Some("acct_1Acme"), Some(3))
    );
}

/// A settler with a merchants table killed right after its first charge,
/// with its changelog records held back, hands the partition to one whose
/// table lacks the merchant: the charge made stands (the route travelled
/// in the changelog before the provider heard of it), and the outcome is
/// SETTLED, not a rejection of a command the provider charged.
#[test]
fn a_charge_routed_by_a_settler_killed_after_it_is_settled_by_the_next_owner() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned()]),
        ..PaysimConfig::default()
    });
    let sent = commands(1, 1);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    let with_acme = dir.path().join("with-acme.toml");
    std::fs::write(
        &with_acme,
        "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"acct_1Acme\"\n",
    )
    .expect("merchants file");
    let without_acme = dir.path().join("without-acme.toml");
    std::fs::write(
        &without_acme,
        "[[merchants]]\nmerchant_id = \"other\"\naccount_id = \"acct_9Other\"\n",
    )
    .expect("merchants file");
    let mut a = settle(&brokers, &provider, &dir.path().join("a"))
        .arg("--merchants")
        .arg(&with_acme)
        .args(["--instance", "a", "-X", "linger.ms=3000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("settle starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while provider.audit().payment_intents.is_empty() {
        assert!(Instant::now() < deadline, "owner A never charged");
        assert!(a.try_wait().expect("status").is_none(), "owner A exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    finished(
        settle(&brokers, &provider, &dir.path().join("b"))
            .arg("--merchants")
            .arg(&without_acme)
            .args([
                "--instance",
                "b",
                "--exit-at-end",
                "--request-timeout-s",
                "1",
            ])
            .output()
            .expect("settle runs"),
    );
    assert_settled_once(&brokers, &provider, &sent);
    let audit = provider.audit();
    assert_eq!(audit.payment_intents.len(), 1);
    assert_eq!(
        audit.payment_intents[0].destination.as_deref(),
        Some("acct_1Acme")
    );
}

/// An entry received before `--merchants` was given, whose key the
/// provider has forgotten and holds no charge under: its next key is a
/// fresh request, routed by the table as a fresh command would be, not
/// charged to the platform's own account.
#[test]
fn a_new_key_for_an_entry_from_before_the_merchants_table_goes_to_the_merchant() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned()]),
        ..PaysimConfig::default()
    });
    let sent = commands(1, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_dir = dir.path().join("ledger");
    ledger_with_an_expired_attempt(&ledger_dir, &sent[0], hashbuy_settler::entry::now_ms());
    let merchants = dir.path().join("merchants.toml");
    std::fs::write(
        &merchants,
        "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"acct_1Acme\"\nfee_amount = 7\n",
    )
    .expect("merchants file");
    produce_commands(&brokers, &sent);
    finished(
        settle(&brokers, &provider, &ledger_dir)
            .arg("--merchants")
            .arg(&merchants)
            .args(["--exit-at-end", "--request-timeout-s", "2"])
            .output()
            .expect("settle runs"),
    );
    assert_settled_once(&brokers, &provider, &sent);
    let audit = provider.audit();
    assert_eq!(audit.payment_intents.len(), 1);
    let intent = &audit.payment_intents[0];
    assert_eq!(
        intent.idempotency_key.as_deref(),
        Some(format!("{}:2", sent[0].command_id).as_str())
    );
    assert_eq!(
        (intent.destination.as_deref(), intent.application_fee_amount),
        (Some("acct_1Acme"), Some(7))
    );
}

/// In Connect mode the live merchants table routes each command by the
/// table as it stood at its purchase tweet's time: a merchant moved to
/// another account takes the purchases from then on, and one removed has
/// its purchases rejected, never charged to the platform.
#[test]
fn the_live_merchants_table_routes_each_purchase_by_its_time() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned(), "acct_9Moved".to_owned()]),
        ..PaysimConfig::default()
    });
    // Tweet times 1_780_000_000_000 + i.
    let sent = commands(4, 4);
    let base = sent[0].tweet_timestamp_ms;
    let hashbuy = |args: &[&str]| {
        succeeds(&[args, &["--allow-past", "--brokers", &brokers]].concat());
    };
    let put = |account: &str, at: i64| {
        hashbuy(&[
            "merchants",
            "put",
            "--merchant",
            &format!(r#"{{"merchant_id": "acme", "account_id": "{account}"}}"#),
            "--at",
            &at.to_string(),
        ])
    };
    put("acct_1Acme", base - 1_000);
    put("acct_9Moved", base + 2);
    hashbuy(&["merchants", "rm", "acme", "--at", &(base + 3).to_string()]);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    finished(
        settle(&brokers, &provider, &dir.path().join("ledger"))
            .args(["--connect", "--exit-at-end"])
            .output()
            .expect("settle runs"),
    );
    let audit = provider.audit();
    let destination = |i: usize| {
        audit
            .payment_intents
            .iter()
            .find(|p| p.command_id.as_deref() == Some(sent[i].command_id.as_str()))
            .and_then(|p| p.destination.clone())
    };
    assert_eq!(destination(0).as_deref(), Some("acct_1Acme"));
    assert_eq!(destination(1).as_deref(), Some("acct_1Acme"));
    assert_eq!(destination(2).as_deref(), Some("acct_9Moved"));
    assert_eq!(
        audit.payment_intents.len(),
        3,
        "nothing charged after the removal"
    );
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    let last = acks
        .iter()
        .find(|a| a.command_id == sent[3].command_id)
        .expect("an ack");
    assert_eq!(last.status, Status::Rejected as i32, "{}", last.reason);
}

/// paysim holding acme's connected account, and acme put on the live
/// merchants table of `brokers` now.
fn acme_put_live(brokers: &str) -> Provider {
    let provider = Provider::start(PaysimConfig {
        connected_accounts: BTreeSet::from(["acct_1Acme".to_owned()]),
        ..PaysimConfig::default()
    });
    succeeds(&[
        "merchants",
        "put",
        "--brokers",
        brokers,
        "--merchant",
        r#"{"merchant_id": "acme", "account_id": "acct_1Acme"}"#,
    ]);
    provider
}

/// A merchant put on the live table after its first purchases were
/// tweeted (onboarding, a backlog of commands) still takes them: only a
/// removal at or before a purchase's time refuses it.
#[test]
fn a_merchant_put_after_its_purchases_were_tweeted_still_takes_them() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    // Tweeted in 2026-05, the merchant put now.
    let sent = commands(4, 4);
    let provider = acme_put_live(&brokers);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    finished(
        settle(&brokers, &provider, &dir.path().join("ledger"))
            .args(["--connect", "--exit-at-end"])
            .output()
            .expect("settle runs"),
    );
    assert_settled_once(&brokers, &provider, &sent);
    let audit = provider.audit();
    assert_eq!(audit.payment_intents.len(), 4);
    assert!(audit
        .payment_intents
        .iter()
        .all(|p| p.destination.as_deref() == Some("acct_1Acme")));
}

/// What a settler at work on 3,000 commands of 600 users runs with:
/// paysim answering in 20 ms, the embedded broker, its metrics on a port
/// of its own, its log in a file (not a pipe: nobody reads the log while
/// it runs).
struct AtWork {
    broker: EmbeddedBroker,
    brokers: String,
    provider: Provider,
    sent: Vec<PaymentCommand>,
    // Holds the ledger and the log.
    _dir: tempfile::TempDir,
    ledger: std::path::PathBuf,
    port: u16,
    log: std::path::PathBuf,
}

impl AtWork {
    /// The surroundings, the commands produced.
    fn prepare() -> AtWork {
        AtWork::prepare_with(PaysimConfig {
            latency_ms: 20,
            seed: 7,
            ..PaysimConfig::default()
        })
    }

    /// [`AtWork::prepare`] against paysim as `paysim` says.
    fn prepare_with(paysim: PaysimConfig) -> AtWork {
        let broker = EmbeddedBroker::start(&Topics::default().all(), 8).expect("broker");
        let brokers = broker.bootstrap_servers();
        let provider = Provider::start(paysim);
        let sent = commands(3_000, 600);
        produce_commands(&brokers, &sent);
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = dir.path().join("ledger");
        let port = free_port();
        let log = dir.path().join("settle.log");
        AtWork {
            broker,
            brokers,
            provider,
            sent,
            _dir: dir,
            ledger,
            port,
            log,
        }
    }

    /// Starts the settler.
    fn settle(&self) -> Child {
        settle(&self.brokers, &self.provider, &self.ledger)
            .args(["--metrics-addr", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("settle starts")
    }

    /// Its log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("the settler's log")
    }
}

/// A settler frozen (SIGSTOP) past its session: the broker drops it from
/// the group, and on thawing it finds its partitions lost and the group
/// refusing its commit. It rejoins and goes on, and nothing is charged
/// twice; it never stops for that refusal.
#[test]
fn a_settler_frozen_past_its_session_rejoins_and_goes_on() {
    let run = AtWork::prepare();
    let mut child = run.settle();
    assert!(
        wait_for_acks(run.port, &mut child, 300.0),
        "the settler acks"
    );
    signal(&child, "STOP");
    // Past the embedded broker's 5 s session: the broker's next check of
    // the group finds it gone.
    std::thread::sleep(Duration::from_secs(9));
    signal(&child, "CONT");
    let caught_up = poll_metrics(run.port, &mut child, Duration::from_secs(180), |body| {
        metric(body, "hashbuy_settler_acks_total") >= run.sent.len() as f64
    });
    let went_on = caught_up.is_some();
    if went_on {
        signal(&child, "TERM");
    }
    let (status, _) = finish_within(child, Duration::from_secs(60));
    let stderr = run.log();
    assert!(
        went_on && status.success(),
        "the thawed settler went on to ack every command ({status}): {stderr}"
    );
    assert!(
        stderr.contains("lost=true"),
        "its partitions were lost while it was frozen: {stderr}"
    );
    settle_to_end(&run.brokers, &run.provider, &run.ledger);
    assert_settled_once(&run.brokers, &run.provider, &run.sent);
}

/// A first SIGTERM stops the settler once its provider calls have
/// answered (here they take 20 s); a second one stops it at once, with
/// 143 (128 and SIGTERM's number), as a shell reports a process it killed:
/// what it leaves is what a crash leaves (see the kill tests above). The
/// first is said in the log, with what a second would do.
#[test]
fn a_second_sigterm_stops_the_settler_at_once() {
    let run = AtWork::prepare_with(PaysimConfig {
        latency_ms: 20_000,
        latency_sigma: 0.0,
        seed: 7,
        ..PaysimConfig::default()
    });
    let mut child = run.settle();
    let calling = poll_metrics(run.port, &mut child, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_settler_oldest_pending_seconds") >= 1.0
    });
    assert!(calling.is_some(), "a call was under way: {}", run.log());
    signal(&child, "TERM");
    let said = logged_within(
        &run.log,
        "a second Ctrl-C or SIGTERM stops at once",
        Instant::now(),
        Duration::from_secs(10),
    );
    assert!(said.is_some(), "the first SIGTERM is said: {}", run.log());
    signal(&child, "TERM");
    let (status, _) = finish_within(child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "stopped at once: {}", run.log());
}

/// A broker that stops taking the settler's records (every produce
/// answered with a retriable error, as a partition without its replicas
/// answers) stops the settler with the error after a bounded wait, rather
/// than leaving it to wait librdkafka's default five minutes: a record
/// still being retried could land after the next owner's records of the
/// same command, and the compacted changelog would then keep the older.
/// Once the broker takes records again, a settler started anew settles
/// every command once.
#[test]
fn a_settler_whose_records_the_broker_stops_taking_stops_with_the_error() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let run = AtWork::prepare();
    // Before the settler starts, so that it has commands left to settle
    // whatever the machine's pace; far more errors than its retries use.
    run.broker.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let refused = Instant::now();
    let (status, _) = finish_within(run.settle(), Duration::from_secs(150));
    let stderr = run.log();
    eprintln!(
        "the settler stopped {:.1} s after it started against a broker taking no records",
        refused.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "the settler failed: {stderr}");
    // librdkafka's idempotent producer, its records timed out, may find
    // its batches beyond repair and fail for good ("Fatal error: ...
    // unable to guarantee consistency"), failing the records still queued
    // as purged: then that is what the settler's log names.
    assert!(
        stderr.contains("Message timed out") || stderr.contains("Fatal error"),
        "the settler named the undelivered record: {stderr}"
    );
    assert!(!stderr.contains(CANARY_KEY), "the provider key was printed");
    run.broker
        .cluster()
        .clear_request_errors(RDKafkaApiKey::Produce);
    settle_to_end(&run.brokers, &run.provider, &run.ledger);
    assert_settled_once(&run.brokers, &run.provider, &run.sent);
}

/// A purchase whose merchant the live merchants table lacks is refused
/// only once the table's follower has shown it holds every change written
/// so far. With the table's broker down, it cannot: the settler stops,
/// naming why, rather than refusing a purchase of a merchant that may
/// have been put a moment ago. Started again once the broker is back, it
/// reads the table whole and refuses the purchase then: its merchant is
/// in no version of the table.
#[test]
fn a_merchant_missing_from_a_table_not_shown_current_refuses_no_purchase() {
    use rdkafka::mocking::MockCoordinator;

    let topics = Topics::default();
    let broker = EmbeddedBroker::start_brokers(&topics.all(), 2, 2).expect("broker");
    let cluster = broker.cluster();
    // Everything on broker 1 but the merchants table, on broker 2.
    for topic in topics.all() {
        let leader = if topic == topics.merchants { 2 } else { 1 };
        for partition in 0..topics.partitions_of(topic, 2) {
            cluster
                .partition_leader(topic, partition, Some(leader))
                .expect("a leader");
        }
    }
    cluster
        .coordinator(MockCoordinator::Group("hashbuy-settler".into()), 1)
        .expect("the group's coordinator");
    let brokers = broker.bootstrap_servers();
    let provider = acme_put_live(&brokers);
    let mut sent = commands(1, 1);
    sent[0].merchant_id = "nobody".into();
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let log = dir.path().join("settle.log");
    let (child, assigned) =
        started_with_partitions(settle(&brokers, &provider, &ledger).arg("--connect"), &log);
    cluster.broker_down(2).expect("the table's broker down");
    produce_commands(&brokers, &sent);
    let (status, _) = finish_within(child, Duration::from_secs(120));
    let stderr = std::fs::read_to_string(&log).expect("the settler's log");
    assert!(
        assigned.is_some(),
        "the settler got its partitions: {stderr}"
    );
    assert!(!status.success(), "the settler stopped: {stderr}");
    assert!(
        stderr.contains("cannot be shown to hold every change"),
        "it said why: {stderr}"
    );
    assert!(
        acks_of(&brokers, &BTreeSet::from(["cmd-00000".to_owned()])).is_empty(),
        "the purchase was not refused"
    );
    cluster.broker_up(2).expect("the table's broker up");
    let again = settle(&brokers, &provider, &ledger)
        .args(["--connect", "--exit-at-end"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("settle starts");
    let (status, stderr) = finish_within(again, Duration::from_secs(120));
    assert!(
        status.success(),
        "the settler started again ends well: {stderr}"
    );
    let acks = acks_of(&brokers, &BTreeSet::from(["cmd-00000".to_owned()]));
    assert!(
        acks.values()
            .flatten()
            .all(|ack| ack.status() == Status::Rejected),
        "refused once the table is read whole: {acks:?}"
    );
    assert!(!acks.is_empty(), "acked");
}

/// `hashbuy settle --exit-at-end` with `--max-command-age` `age`, run to
/// its end: its stderr, checked as [`finished`] does.
fn settle_to_end_with_age(brokers: &str, provider: &Provider, ledger: &Path, age: &str) -> String {
    finished(
        settle_with_age(brokers, provider, ledger, age)
            .arg("--exit-at-end")
            .output()
            .expect("settle runs"),
    )
}

/// The acks on `brokers` of the commands in `ids`, by command id, in the
/// order delivered.
fn acks_of(brokers: &str, ids: &BTreeSet<String>) -> BTreeMap<String, Vec<PaymentAck>> {
    let mut acks: BTreeMap<String, Vec<PaymentAck>> = BTreeMap::new();
    for ack in read_all::<PaymentAck>(brokers, "payment-acks") {
        if ids.contains(&ack.command_id) {
            acks.entry(ack.command_id.clone()).or_default().push(ack);
        }
    }
    acks
}

/// The succeeded charges paysim holds, by command id.
fn charges(provider: &Provider) -> BTreeMap<String, usize> {
    let mut charges = BTreeMap::new();
    for intent in provider.audit().payment_intents {
        if intent.status == "succeeded" {
            let id = intent.command_id.expect("command id in metadata");
            *charges.entry(id).or_default() += 1;
        }
    }
    charges
}

/// A recording replayed long after it was made (its tweets are from May
/// 2026, more than the default week ago) charges nothing: every command
/// is REJECTED as stale with a reason that says so, and no buyer is
/// written to.
#[test]
fn a_replayed_recording_older_than_the_horizon_charges_nothing_and_says_why() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(40, 10);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end_with_age(&brokers, &provider, &dir.path().join("ledger"), "7days");
    assert!(
        stderr.contains(": 0 settled, 0 declined, 40 rejected"),
        "{stderr}"
    );
    assert!(charges(&provider).is_empty(), "nothing was charged");
    let ids: BTreeSet<String> = sent.iter().map(|c| c.command_id.clone()).collect();
    let acks = acks_of(&brokers, &ids);
    assert_eq!(acks.len(), 40, "every command has its ack");
    for (id, acks) in &acks {
        for ack in acks {
            assert_eq!(ack.status(), Status::Rejected, "{id}");
            assert!(
                ack.reason.starts_with("stale: ") && ack.reason.contains("--max-command-age"),
                "{id}: {}",
                ack.reason
            );
        }
    }
    assert!(
        read_all::<Reply>(&brokers, "replies").is_empty(),
        "a stale purchase is not answered"
    );
}

/// [`commands`] of `count` buyers, tweeted `days` days ago.
fn tweeted_days_ago(count: usize, days: i64) -> Vec<PaymentCommand> {
    let then = hashbuy_settler::entry::now_ms() - days * 86_400_000;
    let mut sent = commands(count, count);
    for c in &mut sent {
        c.tweet_timestamp_ms += then - 1_780_000_000_000;
    }
    sent
}

/// Purchases of today by `count` buyers other than [`commands`]' (their
/// ids and users prefixed), each charged: a floor is never raised past
/// where a partition's newest tweet puts it.
fn purchases_of_today(count: usize) -> Vec<PaymentCommand> {
    let mut today = commands(count, count);
    for c in &mut today {
        c.command_id = format!("today-{}", c.command_id);
        c.user_id = format!("9{}", c.user_id);
        c.payment_method_id = "pm_card_visa".into();
        c.tweet_timestamp_ms = hashbuy_settler::entry::now_ms();
    }
    today
}

/// Decided entries past the horizon are pruned, from the ledger and the
/// changelog, and what they decided still holds: a command whose entry was
/// pruned, replayed, is rejected as stale (the partition's floor), to this
/// settler and to a new one that restores the changelog, and the buyer's
/// purchase of the offer still counts against `max_per_user`.
#[test]
fn pruned_entries_never_charge_again_and_still_count_against_the_limits() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = tweeted_days_ago(40, 3);
    // In both partitions.
    let today = purchases_of_today(20);
    produce_commands(&brokers, &sent);
    produce_commands(&brokers, &today);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let first = settle_to_end_with_age(&brokers, &provider, &ledger, "7days");
    assert!(first.contains(": 58 settled, 2 declined"), "{first}");
    let charged = charges(&provider);
    assert_eq!(charged.len(), 58);

    // A horizon of a minute: a pass at start puts the floor a day below
    // it, and prunes what lies a day below that: the 40 of three days ago.
    settle_to_end_with_age(&brokers, &provider, &ledger, "1m");
    let ledger_says = |command: &str| {
        succeeds(&[
            "ledger",
            command,
            "--ledger",
            ledger.to_str().expect("utf-8"),
        ])
    };
    let stats = ledger_says("stats");
    assert!(stats.contains(": 20 entries in 2 partitions"), "{stats}");
    assert!(stats.contains("floor: 2 of 2 partitions"), "{stats}");
    // Compacted by copy, the ledger holds what it held: its stats say so,
    // and the rest of this test, which its floor and counts answer, runs
    // on the copy.
    let compacted = ledger_says("compact");
    assert!(compacted.contains("bytes on disk before"), "{compacted}");
    let held = |stats: &str| -> Vec<String> {
        stats
            .lines()
            .filter(|line| !line.contains("bytes") && !line.contains("days ago"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(held(&ledger_says("stats")), held(&stats));
    // The changelog as `hashbuy tail` prints it: the entries in the
    // ledger's JSON form, the pruned ones' tombstones, and the buckets of
    // counts.
    let tailed = tail_changelog(&brokers);
    let values: Vec<serde_json::Value> = tailed
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("a JSON line")["value"].clone()
        })
        .collect();
    assert!(
        values
            .iter()
            .any(|v| v["command"]["command_id"] == sent[0].command_id.as_str()),
        "{tailed}"
    );
    assert!(values.iter().any(serde_json::Value::is_null), "{tailed}");
    assert!(
        values.iter().any(|v| v["counts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["count"] == 1))),
        "{tailed}"
    );
    // Each partition's changelog ends with its floor, written again after
    // the pass's tombstones: the record a restart's mark names then
    // outlives the tombstones, which compaction drops.
    let mut last = std::collections::BTreeMap::new();
    for line in tailed.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let offset: i64 = record["offset"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .expect("an offset");
        let partition = record["partition"].as_i64().expect("a partition");
        if last.get(&partition).is_none_or(|(at, _)| *at < offset) {
            last.insert(partition, (offset, record["key"].clone()));
        }
    }
    assert_eq!(last.len(), 2, "{tailed}");
    for (partition, (_, key)) in &last {
        assert_eq!(key, "\0floor", "partition {partition}: {tailed}");
    }

    // The same purchases again, and a new one of the first buyer's offer
    // (one per shopper), tweeted now: nothing is charged. The copies lie
    // below the floor, near enough to the horizon to be looked up at the
    // provider first: each is answered as at first, from its charge.
    let mut again = sent.clone();
    let mut second_buy = sent[0].clone();
    second_buy.command_id = "cmd-again".into();
    second_buy.tweet_id = "2000000".into();
    second_buy.tweet_timestamp_ms = hashbuy_settler::entry::now_ms();
    again.push(second_buy.clone());
    produce_commands(&brokers, &again);
    let replayed = settle_to_end_with_age(&brokers, &provider, &ledger, "7days");
    assert!(
        replayed.contains(": 38 settled, 2 declined, 1 rejected"),
        "{replayed}"
    );
    let ids: BTreeSet<String> = ["cmd-00000", "cmd-again"].map(String::from).into();
    let acks = acks_of(&brokers, &ids);
    let last = |id: &str| acks[id].last().expect("an ack").reason.clone();
    let first_copy = &acks["cmd-00000"];
    assert!(
        first_copy.len() == 2
            && first_copy.iter().all(|a| a.status() == Status::Settled
                && a.payment_intent_id == first_copy[0].payment_intent_id),
        "the copy is answered as the first was: {first_copy:?}"
    );
    assert!(
        last("cmd-again").contains("max_per_user is 1"),
        "{}",
        last("cmd-again")
    );

    // A settler elsewhere, with an empty ledger, restores the floor and the
    // counts from the changelog.
    let mut third_buy = second_buy;
    third_buy.command_id = "cmd-again-2".into();
    third_buy.tweet_id = "2000001".into();
    let mut once_more = sent.clone();
    once_more.push(third_buy);
    produce_commands(&brokers, &once_more);
    let elsewhere = dir.path().join("ledger-elsewhere");
    let restored = settle_to_end_with_age(&brokers, &provider, &elsewhere, "7days");
    assert!(
        restored.contains(": 38 settled, 2 declined, 1 rejected"),
        "{restored}"
    );
    let ids: BTreeSet<String> = ["cmd-again-2"].map(String::from).into();
    let acks = acks_of(&brokers, &ids);
    let reason = &acks["cmd-again-2"][0].reason;
    assert!(reason.contains("max_per_user is 1"), "{reason}");
    assert_eq!(
        charges(&provider),
        charged,
        "each command charged once, as at first"
    );
}

/// What `max_per_user` keeps of pruned purchases is forgotten once their
/// offer ended below the floor, as the live catalog (followed with
/// `--forget-ended-offers`) and the commands both say, and only then:
/// the ledger and the changelog
/// keep counts for the buyers of offers still on sale, so that what a new
/// owner restores does not grow with every purchase ever made. The ended
/// purchases' copies still charge nothing, and a second purchase of an
/// offer still on sale is refused, by a new owner too, though its end was
/// moved later after the first purchase.
#[test]
fn counts_of_an_offer_that_ended_below_the_floor_are_forgotten() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    // Forty buyers of forty offers three days ago, each command carrying
    // an end an hour after its tweet. The catalog agrees for the first
    // twenty; the others' ends were moved later, or removed, since.
    let mut sent = tweeted_days_ago(40, 3);
    for c in &mut sent {
        c.offer_ends_at_ms = Some(c.tweet_timestamp_ms + 3_600_000);
    }
    let today = purchases_of_today(20);
    produce_commands(&brokers, &sent);
    produce_commands(&brokers, &today);
    let rfc3339 = |ms: i64| {
        let at =
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).expect("after 1970"));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    // The offers go on the live catalog in effect long before the tweets,
    // as a matcher would have had them.
    let month_ago = hashbuy_settler::entry::now_ms() - 30 * 86_400_000;
    let mut catalog = String::new();
    let mut offer = |hashtag: &str, offer_id: &str, ends_ms: Option<i64>| {
        catalog += &format!(
            "[[offers]]\nhashtag = \"{hashtag}\"\noffer_id = \"{offer_id}\"\nmerchant_id = \"acme\"\n\
             amount = 100\ncurrency = \"usd\"\n"
        );
        if let Some(ends_ms) = ends_ms {
            catalog += &format!("ends_at = \"{}\"\n", rfc3339(ends_ms));
        }
    };
    for (i, c) in sent.iter().enumerate() {
        let ends = (i < 20).then_some(c.tweet_timestamp_ms + 3_600_000);
        offer(&c.hashtag, &c.offer_id, ends);
    }
    offer("BuyGone", "gone-offer", Some(month_ago));
    offer("BuyLegacy", "legacy-offer", Some(month_ago));
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog_file = dir.path().join("catalog.toml");
    std::fs::write(&catalog_file, catalog).expect("catalog written");
    succeeds(&[
        "catalog",
        "put",
        catalog_file.to_str().expect("utf-8"),
        "--brokers",
        &brokers,
        "--at",
        &(month_ago - 86_400_000).to_string(),
        "--allow-past",
    ]);
    // Three counts another owner wrote: of an offer that ended a month
    // ago, of one that did too but that the live catalog never held (a
    // matcher's file offer: it tells nothing), and one from before counts
    // kept their offer's end.
    let count_key = |user: &str, offer: &str| format!("\0bought\0{user}\0{offer}").into_bytes();
    write_changelog(
        &brokers,
        &[
            (
                count_key("7000", "gone-offer"),
                Some(
                    format!(
                        r#"{{"count":1,"through_ms":{month_ago},"offer_ends_ms":{month_ago}}}"#
                    )
                    .into_bytes(),
                ),
            ),
            (
                count_key("7002", "file-offer"),
                Some(
                    format!(
                        r#"{{"count":1,"through_ms":{month_ago},"offer_ends_ms":{month_ago}}}"#
                    )
                    .into_bytes(),
                ),
            ),
            (
                count_key("7001", "legacy-offer"),
                Some(format!(r#"{{"count":1,"through_ms":{month_ago}}}"#).into_bytes()),
            ),
        ],
    );
    let ledger = dir.path().join("ledger");
    let settle_to_end = |ledger: &Path, age: &str| {
        finished(
            settle_with_age(&brokers, &provider, ledger, age)
                .arg("--forget-ended-offers")
                .arg("--exit-at-end")
                .output()
                .expect("settle runs"),
        )
    };
    let stats = |ledger: &Path| {
        succeeds(&[
            "ledger",
            "stats",
            "--ledger",
            ledger.to_str().expect("utf-8"),
        ])
    };
    let counts_kept = |n: usize| format!("counts of pruned purchases (for max_per_user): {n}\n");
    // The buyers of `offer` in each record of a bucket of counts, in the
    // changelog's order, and in each bucket's latest record.
    let count_records = |offer: &str| -> (Vec<Vec<String>>, BTreeSet<String>) {
        let mut every = Vec::new();
        let mut latest = BTreeMap::new();
        for line in tail_changelog(&brokers).lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let Some(key) = record["key"]
                .as_str()
                .filter(|k| k.starts_with("\0counts\0"))
            else {
                continue;
            };
            let buyers: Vec<String> = record["value"]["counts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|count| count["offer_id"] == offer)
                .map(|count| count["user_id"].as_str().expect("a user").to_owned())
                .collect();
            latest.insert(key.to_owned(), buyers.clone());
            every.push(buyers);
        }
        (every, latest.into_values().flatten().collect())
    };
    // The live catalog is what the matchers read: without it, nothing.
    let refused = settle_with_age(&brokers, &provider, &ledger, "7days")
        .args(["--forget-ended-offers", "--no-live-tables", "--exit-at-end"])
        .output()
        .expect("settle runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--forget-ended-offers reads the live catalog"),
        "{said}"
    );
    let first = settle_to_end(&ledger, "7days");
    assert!(first.contains(": 58 settled, 2 declined"), "{first}");
    let charged = charges(&provider);
    // The first pass, under a week's horizon, forgets the month-old count.
    let after_first = stats(&ledger);
    assert!(after_first.contains(&counts_kept(2)), "{after_first}");
    let (_, gone) = count_records("gone-offer");
    assert!(
        gone.is_empty(),
        "a count forgotten goes from the changelog, its bucket written again: {gone:?}"
    );

    // A horizon of a minute puts the floor a day and a minute ago: past
    // every end the commands carried. Of each half, one was declined.
    settle_to_end(&ledger, "1m");
    let pruned = stats(&ledger);
    assert!(pruned.contains(": 20 entries in 2 partitions"), "{pruned}");
    assert!(pruned.contains(&counts_kept(21)), "{pruned}");
    let (ended, _) = count_records("offer-0");
    assert!(
        ended.iter().all(Vec::is_empty),
        "an ended offer's purchases are counted and forgotten in one pass, never written"
    );
    let (sent_with, on_sale) = count_records("offer-20");
    assert_eq!(on_sale.len(), 1, "an offer still on sale keeps its count");
    let times_sent = |sent: &[Vec<String>]| sent.iter().filter(|b| !b.is_empty()).count();
    let sent_before = times_sent(&sent_with);

    // A new owner restores the counts of the offers still on sale alone,
    // taking the tombstone without a word; a second purchase of such an
    // offer by its buyer, tweeted now, is refused, and the old purchases'
    // copies charge nothing.
    let mut second_buy = sent[20].clone();
    second_buy.command_id = "cmd-again".into();
    second_buy.tweet_id = "2000000".into();
    second_buy.tweet_timestamp_ms = hashbuy_settler::entry::now_ms();
    second_buy.offer_ends_at_ms = None;
    let mut again = sent.clone();
    again.push(second_buy);
    produce_commands(&brokers, &again);
    let elsewhere = dir.path().join("ledger-elsewhere");
    let restored = settle_to_end(&elsewhere, "7days");
    assert!(
        restored.contains(": 38 settled, 2 declined, 1 rejected"),
        "{restored}"
    );
    assert!(!restored.contains("unreadable"), "{restored}");
    // Its first pass raised no count, and sent every bucket again all the
    // same: one that a settler which lost the partition sent late is put
    // right.
    let (sent_with, _) = count_records("offer-20");
    assert!(
        times_sent(&sent_with) > sent_before,
        "{sent_before} then {sent_with:?}"
    );
    let ids: BTreeSet<String> = ["cmd-again"].map(String::from).into();
    let reason = &acks_of(&brokers, &ids)["cmd-again"][0].reason;
    assert!(reason.contains("max_per_user is 1"), "{reason}");
    let restored_stats = stats(&elsewhere);
    assert!(
        restored_stats.contains(&counts_kept(21)),
        "{restored_stats}"
    );
    assert_eq!(charges(&provider), charged, "each command charged once");
}

/// A restart soon after a pruning pass, under the same horizon, leaves the
/// next pass to its turn (an hour after the last) instead of reading every
/// entry again at start, so that what a restart costs does not grow with
/// the history; a shortened horizon is still pruned to at once.
#[test]
fn a_restart_soon_after_a_pruning_pass_leaves_the_next_to_its_turn() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 2).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let old = |prefix: &str| {
        let mut sent = tweeted_days_ago(20, 3);
        for c in &mut sent {
            c.command_id = format!("{prefix}-{}", c.command_id);
        }
        sent
    };
    // In both partitions, so that a floor may rise.
    let today = purchases_of_today(10);
    produce_commands(&brokers, &old("first"));
    produce_commands(&brokers, &today);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let entries = || {
        succeeds(&[
            "ledger",
            "stats",
            "--ledger",
            ledger.to_str().expect("utf-8"),
        ])
    };
    settle_to_end_with_age(&brokers, &provider, &ledger, "7days");
    assert!(entries().contains(": 30 entries in 2 partitions"));

    // A horizon of a minute: pruned at once, though a pass ran just now.
    let pruned = settle_to_end_with_age(&brokers, &provider, &ledger, "1m");
    let stats = entries();
    assert!(
        stats.contains(": 10 entries in 2 partitions"),
        "{pruned}\n{stats}"
    );

    // Twenty more of three days ago, rejected as stale; the restarts under
    // the same horizon within the hour leave them to the next pass.
    produce_commands(&brokers, &old("second"));
    let rejected = settle_to_end_with_age(&brokers, &provider, &ledger, "1m");
    assert!(rejected.contains("20 rejected"), "{rejected}");
    let restarted = settle_to_end_with_age(&brokers, &provider, &ledger, "1m");
    let stats = entries();
    assert!(
        stats.contains(": 30 entries in 2 partitions"),
        "{restarted}\n{stats}"
    );
    assert!(
        !restarted.contains("ledger entries past the horizon pruned"),
        "{restarted}"
    );
}

/// A partition handed from one settler to another and back within the
/// hour: the second prunes what the first settled; the first, back on its
/// own ledger, resumes the changelog from its mark and takes in the
/// other's floor, counts and tombstones, though its own next pass waits
/// its turn. Its ledger then holds only what is live, copies of the pruned
/// purchases charge nothing, and a buyer's pruned purchase still counts
/// against `max_per_user`.
#[test]
fn a_partition_handed_over_and_back_within_the_hour_keeps_what_the_other_owner_pruned() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let old = tweeted_days_ago(20, 3);
    let today = purchases_of_today(5);
    produce_commands(&brokers, &old);
    produce_commands(&brokers, &today);
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, other) = (dir.path().join("first"), dir.path().join("other"));
    let stats = |ledger: &Path| {
        succeeds(&[
            "ledger",
            "stats",
            "--ledger",
            ledger.to_str().expect("utf-8"),
        ])
    };
    settle_to_end_with_age(&brokers, &provider, &first, "7days");
    assert!(stats(&first).contains(": 25 entries in 1 partitions"));
    let charged = charges(&provider);
    assert_eq!(charged.len(), 24, "one card of the twenty declines");

    // The other owner, under a horizon of a minute, prunes the twenty of
    // three days ago.
    settle_to_end_with_age(&brokers, &provider, &other, "1m");
    assert!(stats(&other).contains(": 5 entries in 1 partitions"));

    // Back to the first, within the hour of its own pass.
    let back = settle_to_end_with_age(&brokers, &provider, &first, "7days");
    assert!(
        !back.contains("ledger entries past the horizon pruned"),
        "its own pass waits its turn: {back}"
    );
    let reads = changelog_reads(&back);
    assert!(
        reads.values().all(|(from, _)| from.is_some()),
        "resumed from its mark: {back}"
    );
    let held = stats(&first);
    assert!(held.contains(": 5 entries in 1 partitions"), "{held}");
    assert!(held.contains("floor: 1 of 1 partitions"), "{held}");

    // The same purchases again, and a second purchase of the first buyer's
    // offer (one per shopper): nothing more is charged.
    let mut again = old.clone();
    let mut second_buy = old[0].clone();
    second_buy.command_id = "cmd-again".into();
    second_buy.tweet_id = "2000000".into();
    second_buy.tweet_timestamp_ms = hashbuy_settler::entry::now_ms();
    again.push(second_buy);
    produce_commands(&brokers, &again);
    settle_to_end_with_age(&brokers, &provider, &first, "7days");
    let ids: BTreeSet<String> = ["cmd-again"].map(String::from).into();
    let reason = &acks_of(&brokers, &ids)["cmd-again"][0].reason;
    assert!(reason.contains("max_per_user is 1"), "{reason}");
    assert_eq!(charges(&provider), charged, "each command charged once");
}

/// A command a settler charged, and then died before the changelog had
/// its attempt, arrives at the next owner only once it is past the
/// horizon: just past it, the next owner looks it up at the provider
/// before it calls it stale, and records the charge it finds.
#[test]
fn a_command_charged_before_it_went_stale_is_found_not_rejected() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let mut charged = commands(2, 2);
    for c in &mut charged {
        c.payment_method_id = "pm_card_visa".into();
        c.tweet_timestamp_ms = hashbuy_settler::entry::now_ms() - 61_000;
    }
    // The first was charged under its first key by an owner that died;
    // the second never was.
    charge_outside(&provider, &charged[0], &[&charged[0].command_id]);
    produce_commands(&brokers, &charged);
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end_with_age(&brokers, &provider, &dir.path().join("ledger"), "1m");
    let ids: BTreeSet<String> = charged.iter().map(|c| c.command_id.clone()).collect();
    let acks = acks_of(&brokers, &ids);
    let first = &acks[&charged[0].command_id][0];
    assert_eq!(first.status(), Status::Settled, "{first:?}: {stderr}");
    let second = &acks[&charged[1].command_id][0];
    assert_eq!(second.status(), Status::Rejected, "{second:?}");
    assert!(second.reason.starts_with("stale: "), "{}", second.reason);
    let charges = charges(&provider);
    assert_eq!(charges.get(&charged[0].command_id), Some(&1));
    assert_eq!(charges.get(&charged[1].command_id), None);
}

/// A group that reads its commands days after they were written (it
/// lagged, or its settlers were down): a command written while it was
/// fresh may have been charged by an owner that then lost the partition,
/// its attempt in the changelog only late, below the pruning line (which a
/// restore does not take in), or not at all. However far past the horizon
/// it is by now, it is looked up at the provider before it is rejected,
/// and a charge found is recorded. A command written long after its tweet
/// (a recording replayed) is rejected unasked: no owner ever saw it fresh.
#[test]
fn a_command_written_while_fresh_and_read_days_late_is_looked_up_before_it_is_rejected() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let day = 86_400_000;
    let mut sent = commands(3, 3);
    for c in &mut sent {
        c.payment_method_id = "pm_card_visa".into();
        c.tweet_timestamp_ms = hashbuy_settler::entry::now_ms() - 12 * day;
    }
    // The first was charged by an owner that lost the partition, the
    // second never was; both were written by the matcher a minute after
    // their tweets. The third is a replay, written now: charged outside
    // too, to show it is not looked up.
    charge_outside(&provider, &sent[0], &[&sent[0].command_id]);
    charge_outside(&provider, &sent[2], &[&sent[2].command_id]);
    let written = sent[0].tweet_timestamp_ms + 60_000;
    let records = |commands: &[PaymentCommand]| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        commands
            .iter()
            .map(|c| (c.user_id.clone().into_bytes(), Some(c.encode_to_vec())))
            .collect()
    };
    write_partition_0(
        &brokers,
        "payment-commands",
        &records(&sent[..2]),
        Some(written),
    );
    write_partition_0(&brokers, "payment-commands", &records(&sent[2..]), None);
    let mut attempt = hashbuy_settler::entry::Entry::received(sent[0].clone(), 0, 0, written);
    attempt
        .attempt(
            hashbuy_settler::entry::first_key(&sent[0].command_id),
            written,
        )
        .expect("attempt");
    let value =
        hashbuy_settler::ledger::encode(&attempt, hashbuy_settler::ledger::Encoding::Protobuf)
            .expect("encoded");
    write_changelog(
        &brokers,
        &[
            floor_record(line_above(&sent[0])),
            (
                sent[0].command_id.clone().into_bytes(),
                Some(value.to_vec()),
            ),
        ],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end_with_age(&brokers, &provider, &dir.path().join("ledger"), "7days");

    let ids: BTreeSet<String> = sent.iter().map(|c| c.command_id.clone()).collect();
    let acks = acks_of(&brokers, &ids);
    let found = &acks[&sent[0].command_id];
    assert_eq!(found.len(), 1, "{found:?}: {stderr}");
    assert_eq!(found[0].status(), Status::Settled, "{found:?}: {stderr}");
    for c in &sent[1..] {
        let rejected = &acks[&c.command_id];
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].status(), Status::Rejected, "{rejected:?}");
        assert!(rejected[0].reason.starts_with("stale: "), "{rejected:?}");
    }
    let charges = charges(&provider);
    assert_eq!(charges.get(&sent[0].command_id), Some(&1), "{charges:?}");
    assert_eq!(charges.get(&sent[2].command_id), Some(&1), "{charges:?}");
    assert_eq!(charges.len(), 2, "{charges:?}");
}

/// How long after `since` the log file at `log` first holds `line`;
/// `None` if it does not within `wait`.
/// Starts `command` (a `hashbuy settle`) with its log in `log`, and waits
/// up to a minute for its partitions: the child, and how long they took
/// to come.
fn started_with_partitions(command: &mut Command, log: &Path) -> (Child, Option<Duration>) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("settle starts");
    let assigned = logged_within(log, "partitions assigned", started, Duration::from_secs(60));
    (child, assigned)
}

fn logged_within(log: &Path, line: &str, since: Instant, wait: Duration) -> Option<Duration> {
    while since.elapsed() < wait {
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains(line)) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A settler stopped and started again on the embedded broker gets its
/// partitions back within seconds. Before hashbuy set the embedded
/// broker's members' sessions, the restart waited 44 s (the mock holds a
/// formed group's rebalance open for the session timeout, 45 s by
/// default, less a second); the bound here is well under that, and the
/// time taken (about 4 s here) is printed, not asserted against a tight
/// target on a shared machine.
#[test]
fn a_restarted_settler_gets_its_partitions_back_within_seconds() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let mut waits = Vec::new();
    for run in 0..2 {
        let log = dir.path().join(format!("settle-{run}.log"));
        let (child, assigned) =
            started_with_partitions(&mut settle(&brokers, &provider, &ledger), &log);
        signal(&child, "TERM");
        let (status, _) = finish_within(child, Duration::from_secs(60));
        let stderr = std::fs::read_to_string(&log).expect("the settler's log");
        assert!(status.success(), "run {run} stopped cleanly: {stderr}");
        let assigned = assigned.unwrap_or_else(|| panic!("run {run} got no partitions: {stderr}"));
        waits.push(assigned);
    }
    eprintln!(
        "partitions assigned {:.1} s after the first start and {:.1} s after the restart",
        waits[0].as_secs_f64(),
        waits[1].as_secs_f64()
    );
    assert!(
        waits[1] < Duration::from_secs(20),
        "the restarted settler waited {:.1} s for its partitions (44 s when the embedded \
         broker's sessions were librdkafka's default)",
        waits[1].as_secs_f64()
    );
}

#[test]
fn a_partition_moves_to_another_settler_with_its_history() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(200, 200);
    produce_commands(&brokers, &sent);
    let first = tempfile::tempdir().expect("temp dir");
    settle_to_end(&brokers, &provider, &first.path().join("ledger"));
    // The same commands again, to a settler on another machine: a fresh
    // ledger directory, the same group and changelog.
    produce_commands(&brokers, &sent);
    let second = tempfile::tempdir().expect("temp dir");
    let stderr = settle_to_end(&brokers, &provider, &second.path().join("ledger"));
    assert!(
        stderr.contains("settled 200 commands") && stderr.contains(": 0 settled, 0 declined"),
        "the second settler decides nothing anew: {stderr}"
    );
    // The history below the group's committed offset was acked by the
    // first settler: only the commands read again are acked again.
    assert!(
        stderr.contains(" 200 acks,") && stderr.contains(" 0 resumed"),
        "nothing restored is acked again: {stderr}"
    );
    assert_settled_once(&brokers, &provider, &sent);
}

/// The changelog records each partition's restore read, from the
/// settler's log lines (`partition ledger ready`), by partition.
fn changelog_reads(stderr: &str) -> BTreeMap<u32, (Option<u64>, u64)> {
    let field = |line: &str, name: &str| {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        let value: String = line[at..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        Some(value)
    };
    stderr
        .lines()
        .filter(|line| line.contains("partition ledger ready"))
        .filter_map(|line| {
            let partition = field(line, "partition")?.parse().ok()?;
            let from = field(line, "changelog_from")?;
            let from = from
                .strip_prefix("Some(")
                .and_then(|f| f.strip_suffix(')'))
                .and_then(|f| f.parse().ok());
            let read = field(line, "changelog_read")?.parse().ok()?;
            Some((partition, (from, read)))
        })
        .collect()
}

/// A settler restarted on its own ledger reads only the changelog
/// records written since its last restore, however long the history, and
/// still takes in what another settler wrote meanwhile.
#[test]
fn a_restarted_settler_reads_only_the_changelog_written_since_its_last_run() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(60, 60);
    let (first, later) = sent.split_at(40);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let other = dir.path().join("other-ledger");
    produce_commands(&brokers, first);
    let fresh = changelog_reads(&settle_to_end(&brokers, &provider, &ledger));
    assert_eq!(fresh.len(), 4, "every partition starts: {fresh:?}");
    assert!(
        fresh.values().all(|&(from, _)| from.is_none()),
        "a new ledger reads the changelog from its beginning: {fresh:?}"
    );

    let again = changelog_reads(&settle_to_end(&brokers, &provider, &ledger));
    assert_eq!(again.len(), 4, "every partition starts: {again:?}");
    for (partition, (from, read)) in &again {
        assert!(from.is_some(), "partition {partition} resumes: {again:?}");
        assert_eq!(
            *read,
            1,
            "partition {partition}: the restart reads only the record its mark names (to \
             check it is still there), none of the {} commands' other records: {again:?}",
            first.len()
        );
    }

    // Another settler, on another ledger, settles more of the partitions'
    // commands; the first one's restart takes in its records alone.
    produce_commands(&brokers, later);
    settle_to_end(&brokers, &provider, &other);
    let stderr = settle_to_end(&brokers, &provider, &ledger);
    let after = changelog_reads(&stderr);
    assert!(
        after.values().all(|&(from, _)| from.is_some()),
        "the first ledger resumes every partition: {after:?}"
    );
    let read: u64 = after.values().map(|&(_, read)| read).sum();
    assert!(
        read >= later.len() as u64,
        "the other settler's records are read: {after:?}"
    );
    assert!(
        stderr.contains(" 0 resumed"),
        "nothing the other settler acked is resumed: {stderr}"
    );
    let stats = succeeds(&[
        "ledger",
        "stats",
        "--ledger",
        ledger.to_str().expect("utf-8"),
    ]);
    assert!(
        stats.contains(&format!(": {} entries in 4 partitions", sent.len())),
        "the first ledger holds every command, the other settler's too: {stats}"
    );
    assert_settled_once(&brokers, &provider, &sent);
}

/// A ledger's marks of how far it read the changelog are not trusted
/// when the record they name is not there: after the changelog topic is
/// made again under its name, or tansu (whose cluster id never changes)
/// starts again empty, a restore resuming from them would skip the
/// history and charge commands a previous owner settled.
#[test]
fn a_mark_naming_a_record_the_changelog_does_not_hold_is_read_from_the_beginning() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(200, 200);
    produce_commands(&brokers, &sent);
    let first = tempfile::tempdir().expect("temp dir");
    settle_to_end(&brokers, &provider, &first.path().join("ledger"));
    // Another settler's ledger holding marks from a changelog of the same
    // name before it was made again: each names the partition's last
    // record, as that changelog held it (another key, another time), so
    // that trusting them would skip all the history.
    let second = tempfile::tempdir().expect("temp dir");
    let ledger = second.path().join("ledger");
    let cluster = hashbuy_kafka::client::Connection {
        brokers: brokers.clone(),
        properties: Vec::new(),
    }
    .cluster_id(Duration::from_secs(10))
    .expect("the broker answers")
    .expect("a cluster id");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("consumer");
    {
        let seeded = hashbuy_settler::ledger::Ledger::open(&ledger).expect("ledger");
        for partition in 0..4 {
            let (_, high) = rdkafka::consumer::Consumer::fetch_watermarks(
                &consumer,
                "settler-ledger",
                partition,
                Duration::from_secs(10),
            )
            .expect("watermarks");
            assert!(high > 1, "partition {partition} has a history");
            let mark = hashbuy_settler::ledger::ReadThrough {
                next: high,
                last: hashbuy_settler::frontier::Seen::of(
                    high - 1,
                    1_780_000_000_000,
                    Some(b"cmd-of-the-old-topic"),
                    Some(b"{}"),
                ),
            };
            seeded
                .partition(partition)
                .expect("partition")
                .set_changelog_read_through(&cluster, "settler-ledger", &mark)
                .expect("marked");
        }
        seeded.flush().expect("flushed");
    }
    produce_commands(&brokers, &sent);
    let stderr = settle_to_end(&brokers, &provider, &ledger);
    assert!(
        stderr.contains("settled 200 commands") && stderr.contains(": 0 settled, 0 declined"),
        "the second settler takes the history in and decides nothing anew: {stderr}"
    );
    assert!(
        stderr.contains("no longer holds the record this ledger last read there"),
        "the moved changelog is told: {stderr}"
    );
    assert_settled_once(&brokers, &provider, &sent);
}

/// A changelog record a settler cannot read (a newer hashbuy's, say) is
/// read again by every later restore, never marked as taken in.
#[test]
fn an_unreadable_changelog_record_is_read_again_at_every_restart() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(40, 40);
    let (first, later) = sent.split_at(20);
    produce_commands(&brokers, first);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    // The ledger marks how far it read every partition.
    settle_to_end(&brokers, &provider, &ledger);
    // Then a record it cannot read lands after its mark, with more of its
    // own after it.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    producer
        .send(
            rdkafka::producer::BaseRecord::to("settler-ledger")
                .partition(0)
                .key("cmd-from-the-future")
                .payload(&[0xff_u8; 8][..]),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    producer.flush(Duration::from_secs(10)).expect("delivered");
    produce_commands(&brokers, later);
    for run in 0..3 {
        let stderr = settle_to_end(&brokers, &provider, &ledger);
        assert!(
            stderr.contains("unreadable ledger changelog record"),
            "run {run} reads the record it cannot take in: {stderr}"
        );
        let reads = changelog_reads(&stderr);
        assert!(
            reads.get(&0).is_some_and(|&(from, _)| from.is_some()),
            "run {run} resumes partition 0 below the record, not from its beginning: {reads:?}"
        );
    }
    assert_settled_once(&brokers, &provider, &sent);
}

#[test]
fn a_stuck_entry_is_listed_resolved_by_hand_and_acked_on_restart() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let sent = commands(5, 5);
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let ledger_arg = ledger.display().to_string();

    // A provider that is not there: every command stays `attempting`.
    let gone = Provider {
        url: format!("http://127.0.0.1:{}", free_port()),
        ..Provider::start(PaysimConfig::default())
    };
    let port = free_port();
    let mut child = settle(&brokers, &gone, &ledger)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--stuck-after-s", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("settle starts");
    poll_metrics(port, &mut child, Duration::from_secs(60), |body| {
        metric(body, "hashbuy_settler_retries_total") >= 5.0
    })
    .expect("the settler keeps retrying");
    // It is alive, but its payments get nowhere: /healthz says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        match common::get(port, "/healthz") {
            Some((503, body)) if body.contains("undecided") => break body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("/healthz never said the commands are stuck: {other:?}"),
        }
    };
    assert!(stuck.contains("cmd-"), "it names a command: {stuck}");
    common::sigterm(&child);
    assert!(
        child.wait().expect("exits").success(),
        "SIGTERM stops it cleanly"
    );

    let hashbuy = common::succeeds;
    let pending = hashbuy(&[
        "ledger",
        "ls",
        "--ledger",
        &ledger_arg,
        "--state",
        "pending",
    ]);
    assert_eq!(
        pending.lines().count(),
        1 + 5,
        "a header and five pending: {pending}"
    );
    let stuck = &sent[0].command_id;
    hashbuy(&[
        "ledger",
        "resolve",
        "--ledger",
        &ledger_arg,
        "--brokers",
        &brokers,
        // The embedded broker cannot list a group's members; the settler
        // above is stopped.
        "--force",
        stuck,
        "--outcome",
        "failed",
        "--reason",
        "checked by hand: no charge",
    ]);
    let shown = hashbuy(&["ledger", "show", "--ledger", &ledger_arg, stuck]);
    assert!(
        shown.contains("\"failed\"") && shown.contains("checked by hand"),
        "{shown}"
    );

    // With the provider back, the rest settle and the resolved one is acked
    // as FAILED without a charge, by a settler that knows the ledger only
    // from its changelog (the partition's next owner).
    let provider = Provider::start(PaysimConfig::default());
    let next_owner = dir.path().join("next-owner");
    settle_to_end(&brokers, &provider, &next_owner);
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    let resolved: Vec<&PaymentAck> = acks.iter().filter(|a| &a.command_id == stuck).collect();
    assert!(!resolved.is_empty(), "the resolved entry is acked");
    assert!(resolved.iter().all(|a| a.status() == Status::Failed));
    assert!(
        provider
            .audit()
            .payment_intents
            .iter()
            .all(|p| p.command_id.as_ref() != Some(stuck)),
        "resolved as failed: never charged"
    );
    assert_eq!(
        provider.audit().payment_intents.len(),
        4,
        "the other four were charged once each"
    );
}

#[test]
fn a_key_the_provider_refuses_is_an_error_at_start_that_does_not_show_it() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let provider = Provider::start(PaysimConfig {
        api_key: Some("sk_test_the_right_one".into()),
        ..PaysimConfig::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = settle(
        &broker.bootstrap_servers(),
        &provider,
        &dir.path().join("ledger"),
    )
    .arg("--exit-at-end")
    .output()
    .expect("settle runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused key stops the settler");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains(CANARY_KEY), "{stderr}");
}

/// Forgetting the counts of ended offers without the live catalog that
/// tells which ended is an error at start, naming the topic, and charges
/// nothing.
#[test]
fn forgetting_ended_offers_without_the_live_catalog_is_an_error_at_start() {
    let topics = Topics::default();
    let without: Vec<&str> = topics
        .all()
        .into_iter()
        .filter(|t| *t != topics.catalog)
        .collect();
    let broker = EmbeddedBroker::start(&without, 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    produce_commands(&brokers, &commands(3, 3));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = settle(&brokers, &provider, &dir.path().join("ledger"))
        .args(["--forget-ended-offers", "--exit-at-end"])
        .output()
        .expect("settle runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("needs the live catalog topic catalog")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(charges(&provider).is_empty(), "nothing charged");
}

/// A merchants table with no merchants would reject every command: it is
/// an error at start, naming the file, and so is a bad row.
#[test]
fn an_empty_or_bad_merchants_table_is_an_error_at_start() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    for (text, expected) in [
        ("merchants = []\n", "has no merchants"),
        (
            "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"cus_1\"\n",
            "merchants.toml:1: merchants[0].account_id",
        ),
    ] {
        let merchants = dir.path().join("merchants.toml");
        std::fs::write(&merchants, text).expect("merchants file");
        let out = settle(
            &broker.bootstrap_servers(),
            &provider,
            &dir.path().join("ledger"),
        )
        .arg("--merchants")
        .arg(&merchants)
        .arg("--exit-at-end")
        .output()
        .expect("settle runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Charges `command` at the provider under each of `keys`, outside any
/// settler (an owner of the partition whose keys went astray, say).
fn charge_outside(provider: &Provider, command: &PaymentCommand, keys: &[&str]) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut config =
        hashbuy_provider::ProviderConfig::new(hashbuy_provider::SecretString::from(CANARY_KEY));
    config.base_url = provider.url.clone();
    let client = hashbuy_provider::Provider::new(config).expect("client");
    let request = hashbuy_provider::ChargeRequest {
        amount: command.amount as i64,
        currency: command.currency.clone(),
        customer: command.customer_id.clone(),
        payment_method: command.payment_method_id.clone(),
        command_id: command.command_id.clone(),
        tweet_id: command.tweet_id.clone(),
        offer_id: command.offer_id.clone(),
        merchant_id: command.merchant_id.clone(),
        attempt: 1,
        description: None,
        metadata: BTreeMap::new(),
        destination: None,
    };
    for key in keys {
        let charged = runtime.block_on(client.charge(&request, key));
        assert!(
            matches!(charged, hashbuy_provider::ChargeOutcome::Succeeded { .. }),
            "{charged:?}"
        );
    }
}

/// A ledger in `dir` whose entry for `command`, first received at
/// `received_ms` by the settler's clock, is an attempt under a key the
/// provider has forgotten: the settler reconciles it.
fn ledger_with_an_expired_attempt(dir: &Path, command: &PaymentCommand, received_ms: i64) {
    let day_ago = hashbuy_settler::entry::now_ms() - 25 * 3600 * 1000;
    let mut entry = hashbuy_settler::entry::Entry::received(command.clone(), 0, 0, received_ms);
    entry
        .attempt(command.command_id.clone(), day_ago)
        .expect("attempt");
    ledger_holding(dir, &entry);
}

/// A ledger in `dir` holding `entry`, in partition 0, flushed.
fn ledger_holding(dir: &Path, entry: &hashbuy_settler::entry::Entry) {
    let ledger = hashbuy_settler::ledger::Ledger::open(dir).expect("ledger");
    ledger
        .partition(0)
        .expect("partition")
        .put(entry)
        .expect("put");
    ledger.flush().expect("flush");
}

/// `hashbuy settle --exit-at-end`, with a short request timeout: an attempt
/// found in the ledger is waited out (twice the request timeout) before a
/// reconciliation.
fn settle_quickly_to_end(brokers: &str, provider: &Provider, ledger: &Path) -> String {
    finished(
        settle(brokers, provider, ledger)
            .args(["--exit-at-end", "--request-timeout-s", "2"])
            .output()
            .expect("settle runs"),
    )
}

#[test]
fn a_double_charge_found_by_reconciliation_is_flagged_for_review() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(1, 1);
    let command = &sent[0];
    charge_outside(&provider, command, &["astray-1", "astray-2"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_dir = dir.path().join("ledger");
    ledger_with_an_expired_attempt(
        &ledger_dir,
        command,
        hashbuy_settler::entry::now_ms() - 25 * 3600 * 1000,
    );
    produce_commands(&brokers, &sent);
    let stderr = settle_quickly_to_end(&brokers, &provider, &ledger_dir);
    assert!(
        stderr.contains("double charge"),
        "an error names the incident: {stderr}"
    );
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    assert!(!acks.is_empty() && acks.iter().all(|a| a.status() == Status::Settled));
    let out = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["ledger", "ls", "--state", "review", "--ledger"])
        .arg(&ledger_dir)
        .output()
        .expect("hashbuy ledger runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.lines().any(|l| l.starts_with(&command.command_id)),
        "listed for review: {listed}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["ledger", "show", "--ledger"])
        .arg(&ledger_dir)
        .arg(&command.command_id)
        .output()
        .expect("hashbuy ledger runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("\"review\""), "{shown}");
}

#[test]
fn a_charge_by_a_provider_whose_clock_runs_behind_is_found_by_reconciliation() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    // The provider's clock runs ten minutes behind the settler's: the
    // charge it made after the command was received is dated before it.
    let provider = Provider::start(PaysimConfig {
        clock_skew_s: -600,
        ..PaysimConfig::default()
    });
    let sent = commands(1, 1);
    let command = &sent[0];
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_dir = dir.path().join("ledger");
    ledger_with_an_expired_attempt(&ledger_dir, command, hashbuy_settler::entry::now_ms());
    charge_outside(&provider, command, &["astray-1"]);
    produce_commands(&brokers, &sent);
    settle_quickly_to_end(&brokers, &provider, &ledger_dir);
    assert_settled_once(&brokers, &provider, &sent);
}

/// A provider that answers the first charge of a command with a 500 saved
/// nowhere (as Stripe does for a request that failed before it ran), and
/// keeps every later key's answer as Stripe does: the case where a settler
/// must move on to the command's next key.
struct StubProvider {
    url: String,
    /// Idempotency keys with their saved payment intent.
    saved: std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl StubProvider {
    fn start(command_id: &str) -> StubProvider {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let saved = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
        let first_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (keys, command) = (std::sync::Arc::clone(&saved), command_id.to_owned());
        runtime.spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (keys, command, first_failed) = (
                    std::sync::Arc::clone(&keys),
                    command.clone(),
                    std::sync::Arc::clone(&first_failed),
                );
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let key = head
                        .lines()
                        .find_map(|l| l.strip_prefix("idempotency-key:"))
                        .map(|k| k.trim().to_owned());
                    let intent = |id: &str| {
                        serde_json::json!({"id": id, "object": "payment_intent",
                            "status": "succeeded", "created": 1,
                            "metadata": {"command_id": command}})
                    };
                    let (status, body) = match key {
                        None => {
                            let data: Vec<_> = keys
                                .lock()
                                .expect("lock")
                                .values()
                                .map(|pi| intent(pi.as_str()))
                                .collect();
                            (
                                200,
                                serde_json::json!({"object": "list", "data": data,
                                "has_more": false}),
                            )
                        }
                        Some(key)
                            if key == command.to_lowercase()
                                && !first_failed
                                    .swap(true, std::sync::atomic::Ordering::SeqCst) =>
                        {
                            (
                                500,
                                serde_json::json!({"error": {"type": "api_error",
                                "message": "an error before the request ran"}}),
                            )
                        }
                        Some(key) => {
                            let mut saved = keys.lock().expect("lock");
                            let count = saved.len();
                            let pi = saved
                                .entry(key)
                                .or_insert_with(|| format!("pi_{count}"))
                                .clone();
                            (200, intent(&pi))
                        }
                    };
                    let body = body.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        StubProvider {
            url,
            saved,
            _runtime: runtime,
        }
    }

    /// The payment intents charged, by idempotency key.
    fn charged(&self) -> BTreeMap<String, String> {
        self.saved.lock().expect("lock").clone()
    }
}

#[test]
fn a_settler_killed_right_after_a_new_key_leaves_it_to_the_next_owner() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let sent = commands(1, 1);
    let id = sent[0].command_id.clone();
    let stub = StubProvider::start(&id);
    let provider = Provider {
        url: stub.url.clone(),
        ..Provider::start(PaysimConfig::default())
    };
    produce_commands(&brokers, &sent);
    let dir = tempfile::tempdir().expect("temp dir");
    // Owner A: its first key gets a 500, reconciliation finds nothing, and
    // it charges under the next key; it dies right then, with records to
    // the changelog held back (a long linger) as a crash would lose them.
    let mut a = settle(&brokers, &provider, &dir.path().join("a"))
        .args(["--instance", "a", "--request-timeout-s", "1"])
        .args(["-X", "linger.ms=10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("settle starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stub
        .charged()
        .contains_key(&format!("{}:2", id.to_lowercase()))
    {
        assert!(
            Instant::now() < deadline,
            "owner A never charged its next key"
        );
        assert!(a.try_wait().expect("status").is_none(), "owner A exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    // Owner B takes the partition with the changelog's history.
    finished(
        settle(&brokers, &provider, &dir.path().join("b"))
            .args([
                "--instance",
                "b",
                "--exit-at-end",
                "--request-timeout-s",
                "1",
            ])
            .output()
            .expect("settle runs"),
    );
    let charged = stub.charged();
    assert_eq!(charged.len(), 1, "charged once: {charged:?}");
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    assert!(
        !acks.is_empty()
            && acks.iter().all(|a| a.status() == Status::Settled
                && charged.values().any(|pi| *pi == a.payment_intent_id)),
        "{acks:?}"
    );
}

#[test]
fn an_entry_resolved_by_hand_is_acked_even_when_no_command_is_left_to_read() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let command = commands(1, 1).remove(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_dir = dir.path().join("ledger");
    let now = hashbuy_settler::entry::now_ms();
    let mut entry = hashbuy_settler::entry::Entry::received(command.clone(), 0, 0, now);
    entry
        .resolve(
            hashbuy_settler::entry::Outcome::Failed {
                reason: "checked by hand".into(),
            },
            "checked by hand",
            now,
        )
        .expect("resolved");
    ledger_holding(&ledger_dir, &entry);
    // The commands topic is empty (retention took it, say): the end is
    // reached at once, but the resolved entry still owes its ack.
    settle_to_end(&brokers, &provider, &ledger_dir);
    let acks: Vec<PaymentAck> = read_all(&brokers, "payment-acks");
    assert!(
        acks.iter()
            .any(|a| a.command_id == command.command_id && a.status() == Status::Failed),
        "{acks:?}"
    );
}

#[test]
fn a_poison_command_near_the_size_limit_is_a_dead_letter_and_the_stream_goes_on() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let sent = commands(1, 1);
    // Not a PaymentCommand, and so big that a dead letter copying it whole
    // would be refused by the broker.
    let poison = vec![0xffu8; 999_800];
    produce(
        &brokers,
        &[
            ("500".to_owned(), poison),
            (sent[0].user_id.clone(), sent[0].encode_to_vec()),
        ],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    settle_to_end(&brokers, &provider, &dir.path().join("ledger"));
    let letters: Vec<DeadLetter> = read_all(&brokers, "dead-letters");
    assert_eq!(letters.len(), 1, "one dead letter");
    assert!(letters[0].value_truncated && letters[0].value_size == 999_800);
    assert_settled_once(&brokers, &provider, &sent);
}

#[test]
fn commands_deleted_before_the_group_read_them_stop_the_settler() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let first = commands(1, 1);
    produce_commands(&brokers, &first);
    settle_to_end(&brokers, &provider, &ledger);
    // While no settler runs, more commands than the embedded broker keeps
    // (5 MB a partition) arrive: the oldest of them are deleted unread.
    produce_commands(&brokers, &past_retention());
    let out = settle(&brokers, &provider, &ledger)
        .arg("--exit-at-end")
        .output()
        .expect("settle runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a loss stops the settler: {stderr}");
    assert!(
        stderr.contains("were deleted") && stderr.contains("partition 0"),
        "{stderr}"
    );
}

/// Commands of 200 KB each, 12 MB in all: more than the embedded broker
/// keeps of a partition (5 MB), so the oldest are deleted unread.
fn past_retention() -> Vec<PaymentCommand> {
    let mut padded = commands(60, 60);
    for (i, c) in padded.iter_mut().enumerate() {
        c.command_id = format!("late-{i:05}");
        c.hashtag = "x".repeat(200_000);
    }
    padded
}

/// Commands deleted by retention while the settler runs (it was frozen,
/// its position fell off the log) are purchases never charged: found from
/// offsets, not from librdkafka's log (`HASHBUY_LOG=error`), and they stop
/// the settler with the offsets lost.
#[test]
fn commands_deleted_while_the_settler_runs_stop_it() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    produce_commands(&brokers, &commands(3, 3));
    let mut child = settle(&brokers, &provider, &dir.path().join("ledger"))
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("HASHBUY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("settler starts");
    assert!(wait_for_acks(port, &mut child, 3.0), "the settler exited");
    // While it is frozen, more commands than the embedded broker keeps (5 MB
    // a partition) arrive, and the oldest of them are deleted unread.
    signal(&child, "STOP");
    produce_commands(&brokers, &past_retention());
    let (low, _) = watermarks(&brokers, "payment-commands");
    assert!(
        low > 3,
        "the broker deleted unread commands: log starts at {low}"
    );
    signal(&child, "CONT");
    let (status, err) = finish_within(child, Duration::from_secs(120));
    assert!(!status.success(), "a loss stops the settler: {err}");
    assert!(
        err.contains(&format!(
            "commands at offsets 3..{low} of payment-commands partition 0 were deleted"
        )),
        "{err}"
    );
}

/// `ledger resolve` on a ledger that fell behind: another settler decided
/// the command since (the changelog says so). Resolving it again would ack
/// a second, different outcome for one command: refused, and the stale
/// ledger is left as it was.
#[test]
fn resolving_an_entry_another_settler_decided_is_refused() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let sent = commands(1, 1);
    produce_commands(&brokers, &sent);
    settle_to_end(&brokers, &provider, &dir.path().join("current"));
    // A copy of the ledger from before: the command still being attempted.
    let stale = dir.path().join("stale");
    ledger_with_an_expired_attempt(&stale, &sent[0], hashbuy_settler::entry::now_ms());
    let stale_arg = stale.display().to_string();
    let out = resolve_by_hand(&brokers, &stale, &sent[0].command_id)
        .output()
        .expect("hashbuy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} was decided as settled by a settler",
            sent[0].command_id
        )),
        "{stderr}"
    );
    let shown = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["ledger", "ls", "--ledger", &stale_arg, "--state", "pending"])
        .output()
        .expect("hashbuy runs");
    let listed = String::from_utf8_lossy(&shown.stdout);
    assert!(listed.contains(&sent[0].command_id), "{listed}");
}

/// `ledger resolve` on a ledger that fell behind, of a command another
/// settler has since decided, acked and pruned, once compaction has dropped
/// both its record and its tombstone: the changelog holds only the
/// partition's floor, whose pruning line lies above the command's tweet.
/// Writing a decision there would leave the changelog contradicting what
/// its owner acked: refused, and the stale ledger is left as it was. (The
/// embedded broker does not compact, so the test writes the changelog as
/// compaction leaves it: the floor alone.)
#[test]
fn resolving_an_entry_below_the_pruning_line_is_refused() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().expect("temp dir");
    let sent = commands(1, 1);
    let stale = dir.path().join("stale");
    ledger_with_an_expired_attempt(&stale, &sent[0], hashbuy_settler::entry::now_ms());
    write_changelog(&brokers, &[floor_record(line_above(&sent[0]))]);

    let stale_arg = stale.display().to_string();
    refused_below_the_line(
        resolve_by_hand(&brokers, &stale, &sent[0].command_id),
        &sent[0].command_id,
    );
    let tailed = tail_changelog(&brokers);
    assert_eq!(tailed.lines().count(), 1, "the floor alone: {tailed}");
    let shown = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["ledger", "ls", "--ledger", &stale_arg, "--state", "pending"])
        .output()
        .expect("hashbuy runs");
    let listed = String::from_utf8_lossy(&shown.stdout);
    assert!(listed.contains(&sent[0].command_id), "{listed}");
}

/// `ledger resolve` where the changelog says nothing of the partition's
/// floor (made anew, its records lost) but the ledger's own floor puts
/// the entry below the pruning line (a restore raised it and stopped
/// before dropping what lies below): refused, with the changelog and with
/// `--local-only` alike.
#[test]
fn a_ledgers_own_pruning_line_refuses_a_resolve_the_changelog_cannot() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().expect("temp dir");
    let sent = commands(1, 1);
    let stale = dir.path().join("stale");
    ledger_with_an_expired_attempt(&stale, &sent[0], hashbuy_settler::entry::now_ms());
    {
        let ledger = hashbuy_settler::ledger::Ledger::open(&stale).expect("ledger");
        let raise = hashbuy_settler::ledger::Raise {
            floor: line_above(&sent[0]),
            bought: Vec::new(),
        };
        ledger
            .partition(0)
            .expect("partition")
            .raise(&raise)
            .expect("raised");
        ledger.flush().expect("flush");
    }
    for local in [false, true] {
        let mut resolve = resolve_by_hand(&brokers, &stale, &sent[0].command_id);
        if local {
            resolve.arg("--local-only");
        }
        refused_below_the_line(resolve, &sent[0].command_id);
    }
    let tailed = tail_changelog(&brokers);
    assert_eq!(tailed, "", "nothing written to the changelog");
}

/// `hashbuy ledger resolve` of `command_id` in the ledger at `ledger`, as
/// failed, with `--force` (the embedded broker cannot list a group's
/// members).
fn resolve_by_hand(brokers: &str, ledger: &Path, command_id: &str) -> Command {
    let mut resolve = Command::new(env!("CARGO_BIN_EXE_hashbuy"));
    resolve
        .args(["ledger", "resolve", "--ledger"])
        .arg(ledger)
        .args(["--brokers", brokers, "--force", command_id])
        .args(["--outcome", "failed", "--reason", "checked by hand"]);
    resolve
}

/// Runs `resolve` (a `hashbuy ledger resolve` of `command_id` in
/// partition 0) and asserts that it fails because the entry lies below the
/// partition's pruning line.
fn refused_below_the_line(mut resolve: Command, command_id: &str) {
    let out = resolve.output().expect("hashbuy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{resolve:?}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{command_id} was tweeted below partition 0's pruning line"
        )),
        "{resolve:?}: {stderr}"
    );
}

/// The ledger changelog as `hashbuy tail` prints it, from its beginning.
fn tail_changelog(brokers: &str) -> String {
    succeeds(&[
        "tail",
        "--brokers",
        brokers,
        "--topic",
        "settler-ledger",
        "--from-beginning",
        "--exit-at-end",
    ])
}

/// A floor whose pruning line lies just above `command`'s tweet.
fn line_above(command: &PaymentCommand) -> hashbuy_settler::ledger::Floor {
    hashbuy_settler::ledger::Floor {
        floor_ms: command.tweet_timestamp_ms + 86_400_000,
        pruned_below_ms: command.tweet_timestamp_ms + 1,
    }
}

/// `floor` as the ledger changelog carries it.
fn floor_record(floor: hashbuy_settler::ledger::Floor) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        hashbuy_settler::ledger::MetaKey::Floor.to_bytes(),
        Some(serde_json::to_vec(&floor).expect("JSON")),
    )
}

/// Sends `records` (key, value; `None` a tombstone) to partition 0 of the
/// ledger changelog, as a settler would, and waits for their delivery.
fn write_changelog(brokers: &str, records: &[(Vec<u8>, Option<Vec<u8>>)]) {
    write_partition_0(brokers, "settler-ledger", records, None);
}

/// Sends `records` (key, value; `None` a tombstone) to partition 0 of
/// `topic`, stamped `written_ms` (ms since the epoch; `None`: now), and
/// waits for their delivery.
fn write_partition_0(
    brokers: &str,
    topic: &str,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    written_ms: Option<i64>,
) {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create_with_context(Deliveries::default())
        .expect("producer");
    for (key, value) in records {
        let mut record = rdkafka::producer::BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
            .partition(0)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(written_ms) = written_ms {
            record = record.timestamp(written_ms);
        }
        producer.send(record).map_err(|(e, _)| e).expect("queued");
    }
    flush_promptly(&producer, Duration::from_secs(30)).expect("records flushed");
    assert_eq!(producer.context().failures(), None, "records delivered");
}

/// A changelog record of an undecided entry below the partition's pruning
/// line, written after the floor (a settler that lost the partition and
/// sent it late, days after its owner decided, acked and pruned the
/// command): a restore resuming on a ledger that already dropped what lay
/// below that line does not take it in, so it is never charged again
/// under a key the provider has long forgotten.
#[test]
fn a_late_undecided_record_below_the_pruning_line_is_not_resumed() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let sent = commands(1, 1);
    produce_commands(&brokers, &sent);
    settle_to_end(&brokers, &provider, &ledger);
    let line = sent[0].tweet_timestamp_ms;
    let floor = hashbuy_settler::ledger::Floor {
        floor_ms: line + 86_400_000,
        pruned_below_ms: line,
    };
    write_changelog(&brokers, &[floor_record(floor)]);
    // The restart takes the floor in and drops what lies below its line.
    settle_to_end(&brokers, &provider, &ledger);

    let mut late = sent[0].clone();
    late.command_id = "cmd-late".into();
    late.tweet_id = "2000000".into();
    late.user_id = "777".into();
    late.tweet_timestamp_ms = line - 3 * 86_400_000;
    let entry = hashbuy_settler::entry::Entry::received(late.clone(), 0, 0, line);
    let value =
        hashbuy_settler::ledger::encode(&entry, hashbuy_settler::ledger::Encoding::Protobuf)
            .expect("encoded");
    write_changelog(
        &brokers,
        &[(late.command_id.as_bytes().to_vec(), Some(value.to_vec()))],
    );
    settle_to_end(&brokers, &provider, &ledger);
    let charged = charges(&provider);
    assert_eq!(charged.get("cmd-late"), None, "{charged:?}");
    assert_eq!(charged.get(&sent[0].command_id), Some(&1), "{charged:?}");
    let listed = succeeds(&["ledger", "ls", "--ledger", ledger.to_str().expect("utf-8")]);
    assert!(!listed.contains("cmd-late"), "{listed}");
}

#[test]
fn bench_settle_writes_its_figures_as_json() {
    let document = json_document(&[
        "bench-settle",
        "--commands",
        "300",
        "--latency-ms",
        "0",
        "--partitions",
        "4",
        "--baseline",
        "5",
        "--age-past-horizon",
        "1",
        "--offer-ended",
        "--json",
    ]);
    assert_eq!(document["bench"], "settler");
    assert_eq!(document["commands"], 300);
    assert!(document["settler"]["per_second"]
        .as_f64()
        .is_some_and(|rate| rate > 0.0));
    assert_eq!(document["one_at_a_time"]["commands"], 5);
    // Aged past the horizon: the 300 pruned, the fresh command of each of
    // the 4 partitions kept, and a restart reading one record a partition
    // (the last its ledger wrote, where its mark points); the bench's
    // offer ended (`--offer-ended`), so none of its counts.
    let aged = &document["aged_past_horizon"];
    assert_eq!(aged["pruned"], 300, "{aged}");
    assert_eq!(aged["entries_left"], 4, "{aged}");
    assert_eq!(aged["restart_changelog_read"], 4, "{aged}");
    // Their offer ended: no count of it kept.
    assert_eq!(aged["counts_left"], 0, "{aged}");
}
