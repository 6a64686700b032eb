//! `hashbuy tail`: print a topic as JSON lines, decoding hashbuy's protobuf
//! types, like kcat. Reads only committed transactions unless told
//! otherwise, and commits nothing.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use hashbuy_core::confirm::STREAM_TIME_KEY;
use hashbuy_core::decode::looks_like_text;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_proto::v1 as pb;
use hashbuy_settler::ledger::{decode_entry, MetaKey};
use rdkafka::Message;
use serde::Serialize;
use serde_json::Value;

use crate::kafka_args::{self, KafkaArgs};

/// Arguments of `hashbuy tail`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to print.
    #[arg(long)]
    topic: String,
    /// Start at the oldest record the broker keeps, not at the end.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after printing what the topic held when tail started.
    #[arg(long)]
    exit_at_end: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// How to decode values; `auto` goes by the topic's role (the commands,
    /// acks, dead-letters, replies, pending-purchases and settler-ledger
    /// topics, by their default names or as the config file's
    /// `[kafka.topics]` names them; else tweets).
    #[arg(long = "type", value_enum, default_value = "auto")]
    kind: ValueType,
    /// Also print records of transactions not (yet) committed.
    #[arg(long)]
    read_uncommitted: bool,
}

/// What a topic's values are.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ValueType {
    /// By the topic's name.
    Auto,
    /// Tweets: JSON as objects, protobuf `Tweet`s decoded, other text as
    /// strings.
    Tweet,
    /// `PaymentCommand`.
    Command,
    /// `PaymentAck`.
    Ack,
    /// `DeadLetter`.
    DeadLetter,
    /// `Reply`.
    Reply,
    /// The matcher's pending purchases' changelog: `PendingPurchases` by
    /// user, `StreamTime` under the key `stream-time`.
    Pending,
    /// The settler's ledger changelog: entries by command id (protobuf
    /// `LedgerEntry`, or JSON from older settlers) in the ledger's JSON
    /// form, and floors and counts (JSON) under keys that begin with a
    /// zero byte.
    Ledger,
}

impl ValueType {
    fn for_topic(self, topic: &str, names: &Topics) -> ValueType {
        match self {
            ValueType::Auto if topic == names.commands => ValueType::Command,
            ValueType::Auto if topic == names.acks => ValueType::Ack,
            ValueType::Auto if topic == names.dead_letters => ValueType::DeadLetter,
            ValueType::Auto if topic == names.replies => ValueType::Reply,
            ValueType::Auto if topic == names.pending => ValueType::Pending,
            ValueType::Auto if topic == names.ledger => ValueType::Ledger,
            ValueType::Auto => ValueType::Tweet,
            chosen => chosen,
        }
    }
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: i32,
    offset: String,
    key: Option<String>,
    timestamp_ms: Option<String>,
    value: Value,
}

/// Runs `hashbuy tail`.
pub fn run(args: Args) -> Result<()> {
    let options = ReadOptions {
        from_beginning: args.from_beginning,
        exit_at_end: args.exit_at_end,
        read_uncommitted: args.read_uncommitted,
    };
    let (connection, file) = args.kafka.load()?;
    let mut reader = TopicReader::open(&connection, &args.topic, options)?;
    let kind = args.kind.for_topic(&args.topic, &file.kafka.topics);
    let stop = kafka_args::stop_flag()?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed: u64 = 0;
    while !stop.load(Ordering::Relaxed)
        && !reader.at_end()
        && args.max.is_none_or(|max| printed < max)
    {
        let Some(message) = reader.next(Duration::from_millis(100)) else {
            out.flush().context("cannot write output")?;
            continue;
        };
        let message = message.context("cannot consume")?;
        let line = Line {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset().to_string(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            timestamp_ms: message.timestamp().to_millis().map(|t| t.to_string()),
            value: message
                .payload()
                .map_or(Value::Null, |v| decode_value(kind, message.key(), v)),
        };
        serde_json::to_writer(&mut out, &line).context("cannot write output")?;
        out.write_all(b"\n").context("cannot write output")?;
        printed += 1;
    }
    out.flush().context("cannot write output")
}

/// A value as JSON: hashbuy's messages in their JSON mapping, JSON tweets
/// as objects, other text as a string, and anything else as
/// `{"undecodable": reason, "base64": bytes}`. `key` tells the pending
/// purchases' records apart.
fn decode_value(kind: ValueType, key: Option<&[u8]>, bytes: &[u8]) -> Value {
    let decoded = match kind {
        ValueType::Reply => message_json::<pb::Reply>(bytes),
        ValueType::Pending if key == Some(STREAM_TIME_KEY.as_bytes()) => {
            message_json::<pb::StreamTime>(bytes)
        }
        ValueType::Pending => message_json::<pb::PendingPurchases>(bytes),
        ValueType::Ledger => ledger_json(key, bytes),
        ValueType::Command => message_json::<pb::PaymentCommand>(bytes),
        ValueType::Ack => message_json::<pb::PaymentAck>(bytes),
        ValueType::DeadLetter => message_json::<pb::DeadLetter>(bytes),
        ValueType::Tweet | ValueType::Auto => tweet_json(bytes),
    };
    decoded.unwrap_or_else(|reason| {
        serde_json::json!({
            "undecodable": reason,
            "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    })
}

/// A ledger changelog record's value: an entry, a bucket of counts, or a
/// floor or count (JSON).
fn ledger_json(key: Option<&[u8]>, bytes: &[u8]) -> Result<Value, String> {
    match key {
        Some(key) if !MetaKey::is_meta(key) => {
            let entry = decode_entry(key, bytes).map_err(|e| e.to_string())?;
            serde_json::to_value(&entry).map_err(|e| e.to_string())
        }
        Some(key) if matches!(MetaKey::parse(key), Some(MetaKey::Counts { .. })) => {
            message_json::<pb::LedgerCounts>(bytes)
        }
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

fn message_json<M: prost::Message + Default + Serialize>(bytes: &[u8]) -> Result<Value, String> {
    let message = M::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&message).map_err(|e| e.to_string())
}

fn tweet_json(bytes: &[u8]) -> Result<Value, String> {
    if !looks_like_text(bytes) {
        return message_json::<pb::Tweet>(bytes);
    }
    if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
        return Ok(json);
    }
    std::str::from_utf8(bytes)
        .map(|text| Value::String(text.to_owned()))
        .map_err(|e| format!("text that is not UTF-8: {e}"))
}
