//! Limited stock as a user runs it: `hashbuy match`, `hashbuy stock` and
//! `hashbuy settle` on the embedded broker, paysim in this process. No
//! more purchases settle than the stock, with two settlers and one of them
//! SIGKILLed midway; every other purchaser is rejected as sold out, once;
//! and a declined card's unit is sold to the next purchaser in line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    finish_within, free_port, metric, poll_metrics, read_all, sigterm, succeeds, Provider,
    RECORDINGS_AGE,
};
use hashbuy_core::stock::SOLD_OUT_REASON;
use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::config::Topics;
use hashbuy_paysim::Config as PaysimConfig;
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::reply::Kind;
use hashbuy_proto::v1::{PaymentAck, Reply};

/// The purchase tweets' time: 2026-06-01T00:00:00Z.
const T: i64 = 1_780_272_000_000;

/// The properties every group member of these tests runs with: the
/// embedded broker keeps a killed member until its session times out.
const MEMBER: [&str; 4] = [
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "max.poll.interval.ms=10000",
];

/// Writes the catalog (one offer of `stock` units, unlimited if `None`), the accounts of
/// `buyers` (the first one's card declines if `first_declines`) and one
/// purchase tweet a buyer, in order, into `dir`; replays the tweets onto
/// `brokers` and matches them to the end.
fn purchases(dir: &Path, brokers: &str, stock: Option<u64>, buyers: usize, first_declines: bool) {
    let catalog = dir.join("catalog.json");
    let stock = stock.map_or_else(String::new, |n| format!(r#", "stock": {n}"#));
    std::fs::write(
        &catalog,
        format!(
            r#"{{"offers": [{{"hashtag": "BuyLimitedDrop", "offer_id": "limited-drop",
                "merchant_id": "acme", "amount": 5000, "currency": "usd", "title": "Limited Drop"
                {stock}}}]}}"#
        ),
    )
    .expect("catalog written");
    let accounts: Vec<String> = (0..buyers)
        .map(|i| {
            let card = if i == 0 && first_declines {
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
    let accounts_file = dir.join("accounts.json");
    std::fs::write(
        &accounts_file,
        format!(r#"{{"accounts": [{}]}}"#, accounts.join(",")),
    )
    .expect("accounts written");
    let tweets: Vec<String> = (0..buyers)
        .map(|i| {
            format!(
                r#"{{"id_str": "{}", "text": "Mine! #BuyLimitedDrop", "user": {{"id_str": "{}", "protected": false}}, "timestamp_ms": "{}"}}"#,
                900_000 + i,
                7000 + i,
                T + i as i64
            )
        })
        .collect();
    let tweets_file = dir.join("tweets.jsonl");
    std::fs::write(&tweets_file, tweets.join("\n") + "\n").expect("tweets written");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    succeeds(&["replay", &path(&tweets_file), "--brokers", brokers]);
    succeeds(&[
        "match",
        "--brokers",
        brokers,
        "--catalog",
        &path(&catalog),
        "--accounts",
        &path(&accounts_file),
        "--no-live-tables",
        "--exit-at-end",
    ]);
}

/// A running `hashbuy` with `args`, its log in `log`.
fn start(args: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(args)
        .args(MEMBER)
        .env("HASHBUY_PROVIDER_KEY", "sk_test_stock")
        .env_remove("STRIPE_API_KEY")
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log file"))
        .spawn()
        .expect("hashbuy starts")
}

/// `hashbuy settle` as member `instance`, ledger in `dir`, at most
/// `in_flight` commands at once, metrics on `port`.
fn settler(brokers: &str, provider: &Provider, dir: &Path, instance: &str, port: u16) -> Child {
    let ledger = dir.join(format!("ledger-{instance}"));
    start(
        &[
            "settle",
            "--brokers",
            brokers,
            "--provider-url",
            &provider.url,
            RECORDINGS_AGE[0],
            RECORDINGS_AGE[1],
            "--ledger",
            ledger.to_str().expect("utf-8 path"),
            "--instance",
            instance,
            "--max-in-flight",
            "2",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &dir.join(format!("settle-{instance}.log")),
    )
}

/// The acks on `brokers` by user, once every one of `buyers` has one,
/// waiting at most `wait`.
fn acks_of_all(brokers: &str, buyers: usize, wait: Duration) -> BTreeMap<String, Vec<PaymentAck>> {
    let deadline = Instant::now() + wait;
    loop {
        let mut by_user: BTreeMap<String, Vec<PaymentAck>> = BTreeMap::new();
        for ack in read_all::<PaymentAck>(brokers, "payment-acks") {
            by_user.entry(ack.user_id.clone()).or_default().push(ack);
        }
        if by_user.len() >= buyers {
            return by_user;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {buyers} buyers acked within {} s",
            by_user.len(),
            wait.as_secs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Each buyer's one status (all its acks say the same).
fn statuses(acks: &BTreeMap<String, Vec<PaymentAck>>) -> BTreeMap<String, (Status, String)> {
    acks.iter()
        .map(|(user, acks)| {
            let said: BTreeSet<(i32, &str)> =
                acks.iter().map(|a| (a.status, a.reason.as_str())).collect();
            assert_eq!(said.len(), 1, "{user}: one outcome, said alike: {acks:?}");
            (user.clone(), (acks[0].status(), acks[0].reason.clone()))
        })
        .collect()
}

/// Stops a running child with SIGTERM: it must stop cleanly.
fn stop(child: Child, name: &str, log: &Path) {
    sigterm(&child);
    let (status, _) = finish_within(child, Duration::from_secs(60));
    assert!(
        status.success(),
        "{name} exited {status}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn stock_of_100_among_1000_buyers_and_two_settlers_one_killed_sells_exactly_100() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 8).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig {
        latency_ms: 200,
        seed: 3,
        ..PaysimConfig::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    purchases(dir.path(), &brokers, Some(100), 1000, false);

    let stock_log = dir.path().join("stock.log");
    let step = start(&["stock", "--brokers", &brokers], &stock_log);
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = settler(&brokers, &provider, dir.path(), "a", port_a);
    let b = settler(&brokers, &provider, dir.path(), "b", port_b);
    // Midway: once settler a has acked a few of its commands, it dies
    // with the rest in flight, and b takes its partitions over.
    poll_metrics(port_a, &mut a, Duration::from_secs(120), |body| {
        metric(body, "hashbuy_settler_acks_total") >= 5.0
    })
    .expect("settler a acks some commands before it is killed");
    a.kill().expect("SIGKILL");
    a.wait().expect("reaped");

    let acks = acks_of_all(&brokers, 1000, Duration::from_secs(300));
    stop(b, "settler b", &dir.path().join("settle-b.log"));
    stop(step, "hashbuy stock", &stock_log);

    let statuses = statuses(&acks);
    let settled: Vec<&String> = statuses
        .iter()
        .filter(|(_, (s, _))| *s == Status::Settled)
        .map(|(u, _)| u)
        .collect();
    let sold_out = statuses
        .values()
        .filter(|(s, reason)| *s == Status::Rejected && reason == SOLD_OUT_REASON)
        .count();
    assert_eq!(settled.len(), 100, "exactly the stock settles");
    assert_eq!(sold_out, 900, "everyone else is told it sold out");

    let charged = charges(&provider);
    assert_eq!(charged.len(), 100, "paysim charged 100 buyers");
    assert!(
        charged.values().all(|&n| n == 1),
        "no buyer charged twice: {charged:?}"
    );
    let charged_users: BTreeSet<String> = charged
        .keys()
        .map(|c| {
            format!(
                "{}",
                7000 + c["cus_".len()..].parse::<usize>().expect("ours")
            )
        })
        .collect();
    let settled_users: BTreeSet<String> = settled.into_iter().cloned().collect();
    assert_eq!(charged_users, settled_users, "the charged are the SETTLED");

    let told_sold_out = read_all::<Reply>(&brokers, "replies")
        .into_iter()
        .filter(|r| r.kind() == Kind::Rejected && r.text.contains("sold out"))
        .map(|r| r.user_id)
        .collect::<BTreeSet<_>>();
    assert_eq!(told_sold_out.len(), 900, "each sold-out buyer is told");
}

/// Two units, four buyers in this order, the first one's card declining,
/// with the reservation step run `delivery`: the declined unit goes to the
/// third buyer, and the fourth finds it sold out.
fn a_declined_unit_goes_to_the_next_in_line(delivery: &str) {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    purchases(dir.path(), &brokers, Some(2), 4, true);
    let stock_log = dir.path().join("stock.log");
    let step = start(
        &["stock", "--brokers", &brokers, "--delivery", delivery],
        &stock_log,
    );
    let port = free_port();
    let settler = settler(&brokers, &provider, dir.path(), "a", port);
    let acks = acks_of_all(&brokers, 4, Duration::from_secs(120));
    stop(settler, "settler", &dir.path().join("settle-a.log"));
    stop(step, "hashbuy stock", &stock_log);

    let statuses: Vec<Status> = statuses(&acks).into_values().map(|(s, _)| s).collect();
    assert_eq!(
        statuses,
        [
            Status::Declined,
            Status::Settled,
            Status::Settled,
            Status::Rejected
        ],
        "buyers 7000 to 7003: the declined unit went to 7002, and 7003 found it sold out"
    );
}

#[test]
fn a_declined_card_s_unit_is_sold_to_the_next_buyer_in_line() {
    a_declined_unit_goes_to_the_next_in_line("exactly-once");
}

#[test]
fn at_least_once_too_a_declined_card_s_unit_is_sold_to_the_next_buyer_in_line() {
    a_declined_unit_goes_to_the_next_in_line("at-least-once");
}

/// The acks on `brokers`, once there are at least `count`, waiting at most
/// `wait`.
fn acks_at_least(brokers: &str, count: usize, wait: Duration) -> Vec<PaymentAck> {
    let deadline = Instant::now() + wait;
    loop {
        let acks = read_all::<PaymentAck>(brokers, "payment-acks");
        if acks.len() >= count {
            return acks;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} acks within {} s",
            acks.len(),
            wait.as_secs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// How many times paysim charged each customer.
fn charges(provider: &Provider) -> BTreeMap<String, usize> {
    let mut charged: BTreeMap<String, usize> = BTreeMap::new();
    for intent in provider
        .audit()
        .payment_intents
        .iter()
        .filter(|i| i.status == "succeeded")
    {
        *charged
            .entry(intent.customer.clone().unwrap_or_default())
            .or_default() += 1;
    }
    charged
}

#[test]
fn a_sold_out_purchase_replayed_after_the_offer_lost_its_stock_charges_nothing() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let stock_log = dir.path().join("stock.log");
    let step = start(&["stock", "--brokers", &brokers], &stock_log);
    let settler = settler(&brokers, &provider, dir.path(), "a", free_port());
    // One unit, two buyers: the second finds it sold out.
    purchases(dir.path(), &brokers, Some(1), 2, false);
    acks_at_least(&brokers, 2, Duration::from_secs(120));
    // The catalog file edited to drop the stock, and the recording played
    // again: the same tweets, the same command ids, now unlimited.
    purchases(dir.path(), &brokers, None, 2, false);
    let acks = acks_at_least(&brokers, 4, Duration::from_secs(120));
    stop(settler, "settler", &dir.path().join("settle-a.log"));
    stop(step, "hashbuy stock", &stock_log);

    let second: BTreeSet<(i32, String)> = acks
        .iter()
        .filter(|a| a.user_id == "7001")
        .map(|a| (a.status, a.reason.clone()))
        .collect();
    assert_eq!(
        second,
        BTreeSet::from([(Status::Rejected as i32, SOLD_OUT_REASON.to_owned())]),
        "the sold-out buyer's one outcome stands"
    );
    assert_eq!(
        charges(&provider),
        BTreeMap::from([("cus_0".to_owned(), 1)]),
        "one charge, the first buyer's"
    );
}

#[test]
fn a_purchase_charged_before_the_offer_was_limited_and_replayed_gives_its_unit_back() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let stock_log = dir.path().join("stock.log");
    let step = start(&["stock", "--brokers", &brokers], &stock_log);
    let settler = settler(&brokers, &provider, dir.path(), "a", free_port());
    // Bought while the offer was unlimited.
    purchases(dir.path(), &brokers, None, 1, false);
    acks_at_least(&brokers, 1, Duration::from_secs(120));
    // The offer limited to one unit, and the recording played again with a
    // new buyer: the first purchase's copy is granted the unit, which the
    // settler, knowing it charged without one, gives back.
    purchases(dir.path(), &brokers, Some(1), 2, false);
    let acks = acks_at_least(&brokers, 3, Duration::from_secs(120));
    stop(settler, "settler", &dir.path().join("settle-a.log"));
    stop(step, "hashbuy stock", &stock_log);

    let newcomer: Vec<Status> = acks
        .iter()
        .filter(|a| a.user_id == "7001")
        .map(PaymentAck::status)
        .collect();
    assert_eq!(
        newcomer,
        [Status::Settled],
        "the unit went to the new buyer"
    );
    assert_eq!(
        charges(&provider),
        BTreeMap::from([("cus_0".to_owned(), 1), ("cus_1".to_owned(), 1)]),
        "each buyer charged once"
    );
}

#[test]
fn a_reserved_command_naming_a_partition_that_does_not_exist_is_settled_and_its_word_sent_by_key() {
    use hashbuy_proto::v1::stock_request::Kind as RequestKind;
    use hashbuy_proto::v1::{PaymentCommand, StockRequest};
    use prost::Message as _;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::ClientConfig;

    let broker = EmbeddedBroker::start(&Topics::default().all(), 1).expect("broker");
    let brokers = broker.bootstrap_servers();
    let provider = Provider::start(PaysimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    // As the step would have granted it, but naming partition 7 of a
    // one-partition stock-requests topic (recreated smaller, say).
    let command = PaymentCommand {
        command_id: "odd-partition-1".into(),
        tweet_id: "970001".into(),
        user_id: "7100".into(),
        offer_id: "limited-drop".into(),
        merchant_id: "acme".into(),
        amount: 5000,
        currency: "usd".into(),
        customer_id: "cus_7100".into(),
        payment_method_id: "pm_card_visa".into(),
        max_per_user: 1,
        tweet_timestamp_ms: T,
        stock: 1,
        reserved: true,
        stock_partition: Some(7),
        ..PaymentCommand::default()
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("payment-commands")
                .key("7100")
                .payload(&command.encode_to_vec()),
        )
        .map_err(|(e, _)| e)
        .expect("sent");
    producer.flush(Duration::from_secs(30)).expect("delivered");

    let ledger = dir.path().join("ledger");
    let out = Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args([
            "settle",
            "--brokers",
            &brokers,
            "--provider-url",
            &provider.url,
            RECORDINGS_AGE[0],
            RECORDINGS_AGE[1],
        ])
        .arg("--ledger")
        .arg(&ledger)
        .arg("--exit-at-end")
        .env("HASHBUY_PROVIDER_KEY", "sk_test_stock")
        .env_remove("STRIPE_API_KEY")
        .output()
        .expect("settle runs");
    assert!(
        out.status.success(),
        "the settler goes on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = read_all::<PaymentAck>(&brokers, "payment-acks");
    assert_eq!(
        acks.iter().map(PaymentAck::status).collect::<Vec<_>>(),
        [Status::Settled]
    );
    let words: Vec<bool> = read_all::<StockRequest>(&brokers, "stock-requests")
        .into_iter()
        .filter_map(|r| match r.kind {
            Some(RequestKind::Resolve(word)) => Some(word.sold),
            _ => None,
        })
        .collect();
    assert_eq!(
        words,
        [true],
        "the word went by key, to the partition there is"
    );
}
