//! `hashbuy replay`: produce recorded tweet streams to a topic, keyed by
//! user id, at their original pace, faster, or as fast as possible.
//!
//! A broker may delete records while they are replayed: the embedded one
//! keeps only 5 MB a partition, silently. So the topic's log starts are
//! looked at before and after, and a partition whose log start moved is
//! named with the records deleted, which no consumer that had not read
//! them yet will see.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_core::decode::{decode, Notice, Record};
use hashbuy_kafka::client::{Connection, QuietContext, CONNECT_TIMEOUT};
use hashbuy_kafka::loss::{deleted_between, Gap};
use hashbuy_kafka::produce::{send_waiting, Deliveries};
use hashbuy_kafka::reader::watermarks;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, Producer};

use crate::input::{self, Framing};
use crate::kafka_args::{self, KafkaArgs};

/// Arguments of `hashbuy replay`.
#[derive(clap::Args)]
pub struct Args {
    /// Recordings: JSON lines of tweets, or length-delimited protobuf
    /// `Tweet`s; plain, gzip or zstd. Blank lines are skipped.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to produce to [default: the tweets topic: `tweets`, or as the
    /// config file's `[kafka.topics]` names it].
    #[arg(long)]
    topic: Option<String>,
    /// Pace: `original` (the tweets' own times), a factor of it (`10` is
    /// ten times faster), or `max` (as fast as possible).
    #[arg(long, default_value = "max", value_parser = speed)]
    speed: Speed,
    /// Start over at the end, until Ctrl-C.
    #[arg(long = "loop")]
    repeat: bool,
}

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// No waiting.
    Max,
    /// The recording's own pace, times this factor.
    Factor(f64),
}

fn speed(s: &str) -> Result<Speed, String> {
    match s {
        "max" => Ok(Speed::Max),
        "original" => Ok(Speed::Factor(1.0)),
        _ => match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "{s:?} is not `original`, `max` or a positive factor"
            )),
        },
    }
}

/// Maps the tweets' own times to wall-clock times.
struct Pacer {
    factor: f64,
    /// The first timed record's time and when it was sent.
    origin: Option<(i64, Instant)>,
}

impl Pacer {
    /// How long to wait before sending a record of time `at_ms`.
    fn wait(&mut self, at_ms: i64) -> Duration {
        let (first_ms, started) = *self.origin.get_or_insert((at_ms, Instant::now()));
        let due =
            Duration::from_secs_f64(((at_ms - first_ms).max(0) as f64 / 1000.0) / self.factor);
        due.saturating_sub(started.elapsed())
    }
}

/// Runs `hashbuy replay`.
pub fn run(args: Args) -> Result<()> {
    let (connection, file) = args.kafka.load()?;
    let topic = args.topic.unwrap_or(file.kafka.topics.tweets);
    let partitions = connection.check_topic(&topic, CONNECT_TIMEOUT)?;
    let retention = Retention::look(&connection, &topic, partitions);
    let producer: BaseProducer<Deliveries> = connection
        .config()
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    let stop = kafka_args::stop_flag()?;

    let total: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bar:40} {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
        )
        .context("progress template")?,
    );
    let read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pacer = match args.speed {
        Speed::Max => None,
        Speed::Factor(factor) => Some(Pacer {
            factor,
            origin: None,
        }),
    };
    let mut sent: u64 = 0;
    let mut bytes: u64 = 0;
    let mut record = Vec::new();
    'replay: loop {
        read.store(0, Ordering::Relaxed);
        for file in &args.files {
            let mut reader = input::open_counted(Some(file), Arc::clone(&read))?;
            let framing = input::framing(&mut *reader)?;
            loop {
                let more = match framing {
                    Framing::JsonLines => input::next_line(&mut *reader, &mut record)?,
                    Framing::LengthDelimited => input::next_delimited(&mut *reader, &mut record)
                        .with_context(|| format!("in {}", file.display()))?,
                };
                if !more || stop.load(Ordering::Relaxed) {
                    break;
                }
                if record.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let (key, at_ms) = key_and_time(&record);
                if let (Some(pacer), Some(at_ms)) = (pacer.as_mut(), at_ms) {
                    let wait = pacer.wait(at_ms);
                    if !wait.is_zero() {
                        producer.poll(Duration::ZERO);
                        std::thread::sleep(wait);
                    }
                }
                send_waiting(
                    &producer,
                    &topic,
                    key.as_deref().map(str::as_bytes),
                    &record,
                    || stop.load(Ordering::Relaxed),
                )
                .context("cannot produce")?;
                sent += 1;
                bytes += record.len() as u64;
                if sent % 1024 == 0 {
                    progress.set_position(read.load(Ordering::Relaxed).min(total));
                    progress.set_message(format!(
                        "{sent} records, {:.0}/s",
                        sent as f64 / started.elapsed().as_secs_f64()
                    ));
                }
            }
            progress.set_position(read.load(Ordering::Relaxed).min(total));
            if stop.load(Ordering::Relaxed) {
                break 'replay;
            }
        }
        if !args.repeat {
            break;
        }
        pacer = pacer.map(|p| Pacer { origin: None, ..p });
    }
    progress.finish_and_clear();
    producer
        .flush(Duration::from_secs(30))
        .context("records still undelivered after 30 s")?;
    let failures = producer.context().failures();
    let failed = failures.as_ref().map_or(0, |(count, _)| *count);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {sent} records ({:.1} MB) to {} in {seconds:.1} s ({:.0} records/s), {failed} not delivered",
        bytes as f64 / 1e6,
        topic,
        sent as f64 / seconds.max(1e-9),
    );
    retention.warn_of_deleted();
    if let Some((count, first)) = failures {
        bail!("{count} records were not delivered; the first error: {first}");
    }
    Ok(())
}

/// The log starts of the topic's partitions before the replay, to name
/// what the broker deleted during it.
struct Retention {
    consumer: Option<BaseConsumer<QuietContext>>,
    topic: String,
    partitions: usize,
    before: std::collections::HashMap<i32, (i64, i64)>,
}

impl Retention {
    /// Looks at the watermarks now. A failure only loses the warning (it is
    /// said), never the replay.
    fn look(connection: &Connection, topic: &str, partitions: usize) -> Retention {
        let consumer = connection
            .config()
            .create_with_context(QuietContext)
            .map_err(|e| eprintln!("warning: cannot watch for deleted records: {e}"))
            .ok();
        let before = consumer
            .as_ref()
            .and_then(|c| Self::marks(c, topic, partitions))
            .unwrap_or_default();
        Retention {
            consumer,
            topic: topic.to_owned(),
            partitions,
            before,
        }
    }

    fn marks(
        consumer: &BaseConsumer<QuietContext>,
        topic: &str,
        partitions: usize,
    ) -> Option<std::collections::HashMap<i32, (i64, i64)>> {
        watermarks(consumer, topic, 0..partitions as i32, CONNECT_TIMEOUT)
            .map_err(|e| {
                eprintln!(
                    "warning: cannot read {topic}'s offsets to watch for deleted records: {e}"
                )
            })
            .ok()
    }

    /// Names each partition whose oldest records were deleted since
    /// [`Retention::look`].
    fn warn_of_deleted(&self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let Some(after) = Self::marks(consumer, &self.topic, self.partitions) else {
            return;
        };
        let gaps = deleted_between(&self.topic, &self.before, &after);
        for Gap {
            topic,
            partition,
            from,
            to,
        } in &gaps
        {
            eprintln!(
                "warning: {topic} partition {partition} overflowed the broker's retention: \
                 {} records (offsets {from}..{to}) were deleted during this replay, and a \
                 consumer that had not read them will never see them",
                to - from
            );
        }
        if !gaps.is_empty() {
            eprintln!(
                "(the embedded broker keeps {} MB a partition: give its topics more \
                 partitions with `hashbuy broker --partitions N`, or replay less at once)",
                hashbuy_kafka::broker::PARTITION_RETENTION_BYTES / (1024 * 1024)
            );
        }
    }
}

/// A record's Kafka key (its author's user id, so a user's tweets keep
/// their order) and its time, for tweets and for delete notices (keyed by
/// the deleted tweet's author, so a delete follows the tweets it can
/// cancel into their partition); neither for anything else.
pub(crate) fn key_and_time(record: &[u8]) -> (Option<String>, Option<i64>) {
    match decode(record) {
        Ok(Record::Tweet(tweet)) => (Some(tweet.user_id.into_owned()), Some(tweet.timestamp_ms)),
        Ok(Record::Notice(Notice::Delete {
            user_id,
            timestamp_ms,
            ..
        })) => (user_id.map(Cow::into_owned), timestamp_ms),
        _ => (None, None),
    }
}
