//! A poison corpus through `hashbuy match` on the embedded broker: every
//! kind of bad record a firehose can carry, with good tweets around them.
//! Each bad record is dead-lettered with its reason or decided (and so
//! counted), every dead letter fits in one Kafka record, the good tweets
//! still buy, and the matcher reads to the end and exits 0.
//!
//! The corpus is spread over four partitions by hand: the embedded broker
//! keeps only 5 MB of each, and it holds four records of about 1 MB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hashbuy_kafka::broker::EmbeddedBroker;
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_proto::v1::{DeadLetter, Entities, PaymentCommand, Tweet};
use prost::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message as _};

/// What the matcher's producer may put in one record by default
/// (librdkafka's `message.max.bytes`).
const PRODUCER_LIMIT: usize = 1_000_000;

/// One record of the corpus and what must become of it.
struct Case {
    name: &'static str,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    outcome: Outcome,
}

enum Outcome {
    /// A dead letter whose reason starts so.
    Dead(&'static str),
    /// Commands for these offers, caused by this tweet id.
    Buys(&'static str, &'static [&'static str]),
    /// Decided without buying (a notice, an unknown object).
    Decided,
}

/// A v1.1 tweet by `user` saying `text`, at a time every sample offer is
/// active.
fn tweet(id: &str, user: &str, text: &str) -> String {
    format!(
        r#"{{"id_str":"{id}","text":"{text}","user":{{"id_str":"{user}","protected":false}},"timestamp_ms":"1780315200000"}}"#
    )
}

/// A valid tweet padded with an unknown field to exactly `len` bytes.
fn padded_tweet(id: &str, user: &str, text: &str, len: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id_str":"{id}","text":"{text}","user":{{"id_str":"{user}"}},"timestamp_ms":"1780315200000","padding":""#
    );
    let tail = r#""}"#;
    let mut bytes = head.into_bytes();
    bytes.resize(len - tail.len(), b'x');
    bytes.extend_from_slice(tail.as_bytes());
    assert_eq!(bytes.len(), len);
    bytes
}

fn corpus() -> Vec<Case> {
    let case = |name, partition, value: Vec<u8>, outcome| Case {
        name,
        partition,
        key: None,
        value,
        outcome,
    };
    let good = tweet("1001", "12345", "Finally #BuyRedSneakers42");
    // The issue's reproduction: an unterminated JSON line of 999,900 bytes
    // between two good tweets.
    let mut unterminated = br#"{"id_str":"9","text":""#.to_vec();
    unterminated.resize(999_900, b'a');
    let mut bad_utf8 = tweet("1010", "12345", "caf\u{e9} #BuyCaf\u{e9}").into_bytes();
    let at = bad_utf8.iter().position(|&b| b == 0xc3).expect("an é");
    bad_utf8[at] = 0xff;
    let truncated = tweet("1011", "12345", "#BuyCaf\u{e9} today").into_bytes()[..40].to_vec();
    let deep = format!(
        r##"{{"id_str":"1012","text":"#BuyCafé","nest":{}{}}}"##,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let wrong_proto = PaymentCommand {
        command_id: "9b2f0a4e-0000-5000-8000-000000000000".into(),
        tweet_id: "1013".into(),
        user_id: "12345".into(),
        amount: 4200,
        ..Default::default()
    }
    .encode_to_vec();
    let proto_tweet = Tweet {
        id: "1006".into(),
        user_id: "12345".into(),
        timestamp_ms: 1_780_315_200_000,
        text: "Coffee time #BuyCafé".into(),
        entities: Some(Entities {
            hashtags: vec!["BuyCafé".into()],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    // Entities listing a tag its text does not carry: inconsistent, no
    // purchase.
    let inconsistent_tweet = Tweet {
        id: "1009".into(),
        user_id: "12345".into(),
        timestamp_ms: 1_780_315_200_000,
        text: "Coffee time".into(),
        entities: Some(Entities {
            hashtags: vec!["BuyCafé".into()],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let mut many_tags = String::from("#BuyRedSneakers42");
    for i in 0..5_000 {
        many_tags.push_str(&format!(" #tag{i}"));
    }
    for _ in 0..100 {
        many_tags.push_str(" #BuyRedSneakers42");
    }
    vec![
        case(
            "good tweet",
            0,
            good.into_bytes(),
            Outcome::Buys("1001", &["red-sneakers-42"]),
        ),
        case(
            "unterminated 999,900-byte line",
            0,
            unterminated,
            Outcome::Dead("invalid JSON"),
        ),
        case(
            "good tweet after it",
            0,
            tweet("1002", "67890", "#BuyCafé please").into_bytes(),
            Outcome::Buys("1002", &["cafe-latte"]),
        ),
        case(
            "tweet of exactly 1 MiB",
            1,
            padded_tweet("1003", "1212", "#BuyCafé", 1 << 20),
            Outcome::Buys("1003", &["cafe-latte"]),
        ),
        case(
            "tweet of 1 MiB and a byte",
            1,
            padded_tweet("1008", "1212", "#BuyCafé", (1 << 20) + 1),
            Outcome::Dead("record of 1048577 bytes is over the limit"),
        ),
        case(
            "good tweet after them",
            1,
            tweet("1004", "12345", "#BuyCafé").into_bytes(),
            Outcome::Buys("1004", &["cafe-latte"]),
        ),
        case(
            "invalid UTF-8",
            2,
            bad_utf8,
            Outcome::Dead("invalid UTF-8"),
        ),
        case(
            "truncated line",
            2,
            truncated,
            Outcome::Dead("invalid JSON"),
        ),
        case(
            "nesting 10,000 deep",
            2,
            deep.into_bytes(),
            Outcome::Dead("invalid JSON"),
        ),
        case("empty record", 2, Vec::new(), Outcome::Dead("empty record")),
        Case {
            name: "600 KB key and 500 KB of junk",
            partition: 2,
            key: Some(vec![b'k'; 600_000]),
            value: vec![b'{'; 500_000],
            outcome: Outcome::Dead("invalid JSON"),
        },
        case(
            "good tweet after them",
            2,
            tweet("1005", "67890", "#BuyCafé").into_bytes(),
            Outcome::Buys("1005", &["cafe-latte"]),
        ),
        case(
            "a PaymentCommand where a Tweet belongs",
            3,
            wrong_proto,
            Outcome::Dead(""),
        ),
        case(
            "protobuf with a length past its end",
            3,
            b"\x0a\xff\xff\xff\xff\x0f\x01".to_vec(),
            Outcome::Dead("not JSON, and not a protobuf Tweet"),
        ),
        case(
            "protobuf tweet",
            3,
            proto_tweet,
            Outcome::Buys("1006", &["cafe-latte"]),
        ),
        case(
            "protobuf tweet listing a tag its text lacks",
            3,
            inconsistent_tweet,
            Outcome::Decided,
        ),
        case(
            "unknown notice",
            3,
            r##"{"brand_new_notice":{"id_str":"5","note":"#BuyCafé"}}"##
                .as_bytes()
                .to_vec(),
            Outcome::Decided,
        ),
        case(
            "delete notice",
            3,
            br#"{"delete":{"status":{"id":1001,"id_str":"1001","user_id":12345,"user_id_str":"12345"},"timestamp_ms":"1780315201000"}}"#.to_vec(),
            Outcome::Decided,
        ),
        case(
            "5,101 hashtags, one offer named 101 times",
            3,
            tweet("1007", "12345", &many_tags).into_bytes(),
            Outcome::Buys("1007", &["red-sneakers-42"]),
        ),
    ]
}

fn produce(brokers: &str, corpus: &[Case]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    for case in corpus {
        let mut record = BaseRecord::to("tweets")
            .partition(case.partition)
            .payload(&case.value);
        if let Some(key) = &case.key {
            record = record.key(key);
        }
        producer
            .send(record)
            .unwrap_or_else(|(e, _)| panic!("{}: {e}", case.name));
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// A record read back: partition, offset, key, value.
type Read = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// Every record of `topic`.
fn read_all(brokers: &str, topic: &str) -> Vec<Read> {
    let connection = Connection {
        brokers: brokers.to_owned(),
        properties: Vec::new(),
    };
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: true,
        read_uncommitted: false,
    };
    let mut reader = TopicReader::open(&connection, topic, options).expect("reader");
    let mut all = Vec::new();
    while !reader.at_end() {
        if let Some(message) = reader.next(Duration::from_millis(100)) {
            let message = message.expect("no consumer error");
            all.push((
                message.partition(),
                message.offset(),
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    all
}

/// SHA-256 of `bytes` by the system's `sha256sum`, as an operator checks a
/// recovered record against its dead letter.
fn sha256sum(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("record");
    std::fs::write(&path, bytes).expect("written");
    let out = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .expect("a digest")
        .to_owned()
}

fn matcher(brokers: &str) -> Output {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    Command::new(env!("CARGO_BIN_EXE_hashbuy"))
        .args(["match", "--brokers", brokers, "--exit-at-end"])
        .arg("--catalog")
        .arg(samples.join("catalog.toml"))
        .arg("--accounts")
        .arg(samples.join("accounts.json"))
        .args(["-X", "session.timeout.ms=6000"])
        .output()
        .expect("matcher runs")
}

#[test]
fn a_poison_corpus_is_dead_lettered_or_decided_and_the_stream_goes_on() {
    let broker = EmbeddedBroker::start(&Topics::default().all(), 4).expect("broker");
    let brokers = broker.bootstrap_servers();
    let corpus = corpus();
    produce(&brokers, &corpus);
    // Where each case landed: records of a partition keep their order.
    let mut next = BTreeMap::<i32, i64>::new();
    let placed: BTreeMap<(i32, i64), &Case> = corpus
        .iter()
        .map(|case| {
            let offset = next.entry(case.partition).or_insert(0);
            *offset += 1;
            ((case.partition, *offset - 1), case)
        })
        .collect();

    let out = matcher(&brokers);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the matcher goes on: {err}");
    let dead = corpus
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Dead(_)))
        .count();
    let bought: usize = corpus
        .iter()
        .map(|c| match c.outcome {
            Outcome::Buys(_, offers) => offers.len(),
            _ => 0,
        })
        .sum();
    assert!(
        err.contains(&format!("matched {} records in", corpus.len()))
            && err.contains(&format!(": {bought} commands, {dead} dead letters,")),
        "every record is counted, as a decision or a dead letter: {err}"
    );

    // Each bad record has its dead letter, and none more.
    let letters = read_all(&brokers, "dead-letters");
    let mut lettered = BTreeSet::new();
    for (_, _, key, value) in &letters {
        assert!(
            key.as_ref().map_or(0, Vec::len) + value.len() <= PRODUCER_LIMIT,
            "a dead letter fits in one record"
        );
        let letter = DeadLetter::decode(value.as_slice()).expect("a DeadLetter");
        let case = placed
            .get(&(letter.partition, letter.offset))
            .unwrap_or_else(|| panic!("a letter for no record: {letter:?}"));
        let Outcome::Dead(reason) = case.outcome else {
            panic!("{} was dead-lettered: {}", case.name, letter.reason);
        };
        assert!(
            letter.reason.starts_with(reason) && !letter.reason.is_empty(),
            "{}: {}",
            case.name,
            letter.reason
        );
        assert_eq!(
            (letter.topic.as_str(), letter.stage.as_str()),
            ("tweets", "match")
        );
        // Whole or cut, the letter says how large the record was and
        // which it was.
        assert_eq!(letter.value_size, case.value.len() as u64, "{}", case.name);
        assert_eq!(letter.value_sha256, sha256sum(&case.value), "{}", case.name);
        assert!(case.value.starts_with(&letter.value), "{}", case.name);
        assert_eq!(
            letter.value_truncated,
            letter.value.len() < case.value.len(),
            "{}",
            case.name
        );
        let case_key = case.key.as_deref().unwrap_or_default();
        let letter_key = letter.key.as_deref().unwrap_or_default();
        assert_eq!(letter.key_size, case_key.len() as u64, "{}", case.name);
        assert!(case_key.starts_with(letter_key), "{}", case.name);
        assert_eq!(letter.key_truncated, letter_key.len() < case_key.len());
        lettered.insert(case.name);
    }
    for case in &corpus {
        if matches!(case.outcome, Outcome::Dead(_)) {
            assert!(
                lettered.contains(case.name),
                "no dead letter for {}",
                case.name
            );
        }
    }
    assert_eq!(letters.len(), dead, "one dead letter a bad record");
    let letter = |name: &str| {
        letters
            .iter()
            .map(|(_, _, _, v)| DeadLetter::decode(v.as_slice()).expect("a DeadLetter"))
            .find(|l| placed[&(l.partition, l.offset)].name == name)
            .expect("its letter")
    };
    for name in [
        "unterminated 999,900-byte line",
        "tweet of 1 MiB and a byte",
    ] {
        assert!(letter(name).value_truncated, "{name} is cut to fit");
    }
    let key_cut = letter("600 KB key and 500 KB of junk");
    assert!(
        key_cut.key_truncated && !key_cut.value_truncated,
        "the key is cut, and then the value fits whole"
    );

    // The good tweets around them bought, each offer once.
    let commands: BTreeSet<(String, String)> = read_all(&brokers, "payment-commands")
        .iter()
        .map(|(_, _, _, v)| {
            let c = PaymentCommand::decode(v.as_slice()).expect("a PaymentCommand");
            (c.tweet_id, c.offer_id)
        })
        .collect();
    let expected: BTreeSet<(String, String)> = corpus
        .iter()
        .flat_map(|c| match c.outcome {
            Outcome::Buys(tweet, offers) => offers
                .iter()
                .map(|o| (tweet.to_owned(), (*o).to_owned()))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(commands, expected);
}
