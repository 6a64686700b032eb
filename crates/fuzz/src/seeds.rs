//! The seed corpora, made from the repository's own inputs:
//! `hashbuy-fuzz seed` writes them to `fuzz/corpus/<target>/`, where both
//! engines read them.
//!
//! - `tweet_decoder`: every line of the bundled sample stream (v1.1 and v2
//!   tweets, notices, a broken line); a few dozen lines of a small
//!   `hashbuy gen` world ([`crate::targets::gen_options`]), one or two of
//!   each shape (purchases, retweets, quotes, long tweets, `\u`-escaped
//!   text, notices); protobuf `Tweet`s made from those, with and without
//!   entities; and hand-made edge cases: API v2 with `note_tweet` and
//!   protected authors, every notice, ids and times at their limits,
//!   nesting at the depth limit, escapes and bad UTF-8.
//! - `command_decoder`: the commands those tweets buy, encoded; commands
//!   missing each field charging needs; and protobuf edge cases (unknown
//!   fields, wrong wire types, truncation, overlong varints).

use std::collections::HashMap;

use hashbuy_core::decode::{decode, Record};
use hashbuy_core::Rules;
use hashbuy_proto::v1 as pb;
use prost::Message;
use serde_json::Value;

use crate::targets::{gen_options, tables};

/// A named seed input.
pub type Seed = (String, Vec<u8>);

/// Lines of the generated world kept, at most.
const GEN_LINES: usize = 36;
/// Lines of the generated world kept per shape, at most.
const GEN_PER_SHAPE: usize = 2;

/// The generated lines the corpus keeps: a few of each shape.
fn gen_lines() -> Vec<Vec<u8>> {
    let mut generator = hashbuy_gen::Generator::new(gen_options());
    let mut per_shape: HashMap<String, usize> = HashMap::new();
    let mut kept = Vec::new();
    let rules: Vec<Rules<'_>> = tables()
        .iter()
        .map(|t| Rules::new(&t.catalog, &t.accounts))
        .collect();
    for _ in 0..5_000 {
        if kept.len() == GEN_LINES {
            break;
        }
        let mut line = Vec::new();
        generator.write_next(&mut line);
        let has = |needle: &str| memchr::memmem::find(&line, needle.as_bytes()).is_some();
        let decision = rules[1].decide_bytes(&line);
        let shape = format!(
            "{}/{:?}/{}/{}/{}/{}",
            decode(&line).map_or("invalid", |r| r.kind()),
            decision.skip(),
            has("\\u"),
            has("extended_tweet"),
            has("quoted_status"),
            has("＃"),
        );
        let n = per_shape.entry(shape).or_default();
        if *n < GEN_PER_SHAPE {
            *n += 1;
            kept.push(line);
        }
    }
    kept
}

/// The text a JSON tweet's hashtags come from.
fn text_of(tweet: &Value) -> Option<&str> {
    tweet
        .pointer("/extended_tweet/full_text")
        .or_else(|| tweet.get("full_text"))
        .or_else(|| tweet.get("text"))
        .or_else(|| tweet.pointer("/data/note_tweet/text"))
        .or_else(|| tweet.pointer("/data/text"))
        .and_then(Value::as_str)
}

/// A protobuf `Tweet` for a JSON tweet, with or without its entities.
fn protobuf_of(json: &[u8], with_entities: bool) -> Option<Vec<u8>> {
    let Ok(Record::Tweet(t)) = decode(json) else {
        return None;
    };
    let value: Value = serde_json::from_slice(json).ok()?;
    let tweet = pb::Tweet {
        id: t.id.to_string(),
        user_id: t.user_id.to_string(),
        timestamp_ms: t.timestamp_ms,
        text: text_of(&value)?.to_owned(),
        user_protected: t.user_protected,
        retweeted_id: if t.retweet { "1".into() } else { String::new() },
        quoted_id: value
            .get("quoted_status_id_str")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        in_reply_to_id: value
            .get("in_reply_to_status_id_str")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        entities: with_entities.then(|| pb::Entities {
            hashtags: t.hashtags.iter().map(|h| h.to_string()).collect(),
        }),
    };
    Some(tweet.encode_to_vec())
}

/// Hand-made records at the edges of what the decoder reads.
const EDGE_RECORDS: &[(&str, &str)] = &[
    (
        "v2-note-tweet",
        r##"{"data": {"id": "1930000000000000101", "text": "short…", "author_id": "12345", "created_at": "2026-06-01T12:00:00.000Z", "note_tweet": {"text": "long… #BuyCafé", "entities": {"hashtags": [{"start": 7, "end": 15, "tag": "BuyCafé"}]}}}}"##,
    ),
    (
        "v2-protected",
        r##"{"data": {"id": "1930000000000000102", "text": "#BuyRedSneakers42", "author_id": "1212", "created_at": "2026-06-01T12:00:00Z"}, "includes": {"users": [{"id": "1212", "protected": true}, {"id": "5", "protected": null}]}}"##,
    ),
    (
        "v2-quote",
        r##"{"data": {"id": "1930000000000000103", "text": "me too #BuyRedSneakers42", "author_id": "12345", "created_at": "2026-06-01T12:00:00+02:00", "referenced_tweets": [{"type": "quoted", "id": "1"}]}}"##,
    ),
    (
        "v1-escaped-signs",
        r#"{"id_str": "1930000000000000104", "text": "\u0023BuyRedSneakers42 \uFF03BuyCaf\u00e9 \ud83d\udc5f", "user": {"id_str": "12345"}, "timestamp_ms": "1780315200000"}"#,
    ),
    (
        "v1-numeric-ids",
        r##"{"id": 18446744073709551615, "text": "#BuyRedSneakers42", "user": {"id": 12345, "protected": null}, "timestamp_ms": 1780315200000}"##,
    ),
    (
        "v1-created-at",
        r##"{"id_str": "1930000000000000105", "text": "#BuyConcertTicket", "user": {"id_str": "987654321098765432"}, "created_at": "Mon Jun 01 12:00:00 +0000 2026"}"##,
    ),
    (
        "v1-full-text",
        r##"{"id_str": "1930000000000000106", "full_text": "#BuyCafé full", "text": "x", "user": {"id_str": "1212"}, "timestamp_ms": "1780315200000", "entities": null}"##,
    ),
    (
        "v1-url-fragment",
        r##"{"id_str": "1930000000000000107", "text": "https://shop.example.com/#BuyRedSneakers42 x.co/#BuyCafé &#BuyCafé #123 #BuyCafé://", "user": {"id_str": "12345"}, "timestamp_ms": "1780315200000"}"##,
    ),
    (
        "v1-retweet-quote",
        r##"{"id_str": "1930000000000000108", "text": "#BuyCafé", "user": {"id_str": "12345"}, "timestamp_ms": "1780315200000", "retweeted_status": {"id_str": "1"}, "quoted_status": {"text": "#BuyRedSneakers42"}}"##,
    ),
    (
        "notices",
        r#"{"status_withheld": {"id": 1}, "user_withheld": {}, "disconnect": {"code": 4}, "warning": {"code": "FALLING_BEHIND"}, "delete": null}"#,
    ),
    (
        "delete-numeric",
        r#"{"delete": {"status": {"id": 1930000000000000001, "user_id": 12345}, "timestamp_ms": "1780315200000"}}"#,
    ),
    ("empty-object", "{}"),
    ("array", "[1, \"#BuyCafé\", {\"text\": null}]"),
    ("blank", " \t\r\n "),
    ("string", "\"#BuyRedSneakers42\""),
    ("bom", "\u{feff}{}"),
    (
        "numbers",
        r#"{"n": [0, -0, 1.5e300, -1E-300, 1e999, 123456789012345678901234567890], "id": -1, "timestamp_ms": 9223372036854775808}"#,
    ),
    (
        "lone-surrogate",
        r#"{"id_str": "1", "text": "\ud800 #a", "user": {"id_str": "2"}, "timestamp_ms": "3"}"#,
    ),
];

/// The `tweet_decoder` seeds.
pub fn tweet_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut json_tweets = Vec::new();
    let sample_lines = hashbuy_core::samples::TWEETS.lines();
    for (i, line) in sample_lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        seeds.push((format!("sample-{i:02}.json"), line.as_bytes().to_vec()));
        json_tweets.push(line.as_bytes().to_vec());
    }
    for (i, line) in gen_lines().into_iter().enumerate() {
        seeds.push((format!("gen-{i:02}.json"), line.clone()));
        json_tweets.push(line);
    }
    for (name, record) in EDGE_RECORDS {
        seeds.push((format!("edge-{name}.json"), record.as_bytes().to_vec()));
        json_tweets.push(record.as_bytes().to_vec());
    }
    // Nesting at serde_json's limit: the top object and `depth` arrays.
    for depth in [126, 127] {
        let record = format!(
            r##"{{"id_str": "1", "text": "#BuyCafé", "user": {{"id_str": "12345"}}, "timestamp_ms": "5", "x": {}{}}}"##,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        seeds.push((
            format!("edge-depth-{}.json", depth + 1),
            record.into_bytes(),
        ));
    }
    let protobufs = json_tweets
        .iter()
        .enumerate()
        .filter_map(|(i, json)| protobuf_of(json, i % 2 == 0))
        .take(24);
    for (i, bytes) in protobufs.enumerate() {
        seeds.push((format!("pb-{i:02}.bin"), bytes));
    }
    seeds.push((
        "invalid-utf8.json".into(),
        b"{\"text\": \"\xff\xfe\"}".to_vec(),
    ));
    seeds.push((
        "pb-not-a-tweet.bin".into(),
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
    ));
    seeds
}

fn whole_command() -> pb::PaymentCommand {
    pb::PaymentCommand {
        command_id: "5f0e7a3c-9b1d-5c2e-8f4a-1b2c3d4e5f60".into(),
        tweet_id: "1930000000000000001".into(),
        user_id: "12345".into(),
        tweet_timestamp_ms: 1_780_315_200_000,
        hashtag: "BuyRedSneakers42".into(),
        offer_id: "red-sneakers-42".into(),
        merchant_id: "acme".into(),
        amount: 4200,
        currency: "usd".into(),
        customer_id: "cus_jane".into(),
        payment_method_id: "pm_card_visa".into(),
        max_per_user: 1,
        spend_limit: Some(100_000),
        offer_title: "Red Sneakers".into(),
        stock: 100,
        reserved: true,
        sold_out: false,
        stock_partition: Some(3),
        offer_ends_at_ms: Some(1_780_920_000_000),
    }
}

/// The `command_decoder` seeds.
pub fn command_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut commands = Vec::new();
    let lines = hashbuy_core::samples::TWEETS
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .chain(gen_lines());
    for line in lines {
        for t in tables() {
            let rules = Rules::new(&t.catalog, &t.accounts);
            commands.extend(rules.decide_bytes(&line).commands().iter().cloned());
        }
    }
    for (i, command) in commands.iter().take(12).enumerate() {
        seeds.push((format!("bought-{i:02}.bin"), command.encode_to_vec()));
    }
    let whole = whole_command();
    seeds.push(("whole.bin".into(), whole.encode_to_vec()));
    type Clear = fn(&mut pb::PaymentCommand);
    let without: [(&str, Clear); 7] = [
        ("command_id", |c| c.command_id.clear()),
        ("user_id", |c| c.user_id.clear()),
        ("currency", |c| c.currency.clear()),
        ("customer_id", |c| c.customer_id.clear()),
        ("payment_method_id", |c| c.payment_method_id.clear()),
        ("amount", |c| c.amount = 0),
        ("spend_limit", |c| c.spend_limit = None),
    ];
    for (field, clear) in without {
        let mut command = whole.clone();
        clear(&mut command);
        seeds.push((format!("no-{field}.bin"), command.encode_to_vec()));
    }
    let bytes = whole.encode_to_vec();
    let mut unknown = bytes.clone();
    unknown.extend_from_slice(b"\xa0\x06\x01\xaa\x06\x03abc\xf5\x07\x01\x02\x03\x04");
    seeds.push(("unknown-fields.bin".into(), unknown));
    let mut wrong_wire = bytes.clone();
    wrong_wire.extend_from_slice(b"\x40\x05"); // amount (8) as a varint: fine
    wrong_wire.extend_from_slice(b"\x0d\x01\x02\x03\x04"); // command_id (1) as fixed32
    seeds.push(("wrong-wire-type.bin".into(), wrong_wire));
    seeds.push(("truncated.bin".into(), bytes[..bytes.len() / 2].to_vec()));
    let mut overlong = b"\x40".to_vec();
    overlong.extend_from_slice(&[0xff; 10]);
    overlong.push(0x01);
    seeds.push(("overlong-varint.bin".into(), overlong));
    seeds.push(("empty.bin".into(), Vec::new()));
    seeds.push((
        "json.bin".into(),
        br#"{"command_id": "c", "amount": 1}"#.to_vec(),
    ));
    seeds
}

/// The seeds of the target named `name`.
pub fn seeds(name: &str) -> Vec<Seed> {
    match name {
        "tweet_decoder" => tweet_seeds(),
        "command_decoder" => command_seeds(),
        _ => Vec::new(),
    }
}
