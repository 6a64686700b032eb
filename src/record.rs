//! `hashbuy record`: write a topic back to a recording that `hashbuy
//! replay` reads: JSON lines, or length-delimited records for binary
//! values (protobuf tweets).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use rdkafka::Message;

use crate::input;
use crate::kafka_args::{self, KafkaArgs};

/// Arguments of `hashbuy record`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to record [default: the tweets topic: `tweets`, or as the
    /// config file's `[kafka.topics]` names it].
    #[arg(long)]
    topic: Option<String>,
    /// The recording (`.gz` and `.zst` compress), or `-` for standard
    /// output.
    #[arg(long)]
    out: PathBuf,
    /// How records are framed: one per line (text values), or each after
    /// its varint length (any values, protobuf tweets among them).
    #[arg(long, value_enum, default_value = "lines")]
    format: Format,
    /// Record what arrives after the topic's current end too, until
    /// Ctrl-C, instead of stopping there.
    #[arg(long)]
    follow: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// JSON lines: each value on a line of its own.
    Lines,
    /// Length-delimited: each value after its length as a varint.
    Delimited,
}

/// Runs `hashbuy record`.
pub fn run(args: Args) -> Result<()> {
    let options = ReadOptions {
        from_beginning: true,
        exit_at_end: !args.follow,
        read_uncommitted: false,
    };
    let (connection, file) = args.kafka.load()?;
    let topic = args.topic.unwrap_or(file.kafka.topics.tweets);
    let mut reader = TopicReader::open(&connection, &topic, options)?;
    let stop = kafka_args::stop_flag()?;
    let mut out = input::create(&args.out)?;
    let started = Instant::now();
    let mut records: u64 = 0;
    while !stop.load(Ordering::Relaxed) && !reader.at_end() {
        let Some(message) = reader.next(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.context("cannot consume")?;
        let value = message.payload().unwrap_or_default();
        match args.format {
            Format::Lines => {
                if value.contains(&b'\n') {
                    bail!(
                        "the record at {}[{}] offset {} holds a line break; record with --format delimited",
                        topic,
                        message.partition(),
                        message.offset()
                    );
                }
                out.write_all(value)?;
                out.write_all(b"\n")?;
            }
            Format::Delimited => {
                let mut length = Vec::with_capacity(10);
                prost::encoding::encode_varint(value.len() as u64, &mut length);
                out.write_all(&length)?;
                out.write_all(value)?;
            }
        }
        records += 1;
    }
    out.finish()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "recorded {records} records of {} to {} in {:.1} s",
        topic,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
