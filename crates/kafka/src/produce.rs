//! Producing: delivery reports counted, sending that waits out a full
//! queue instead of failing, and how large a record may be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

use hashbuy_proto::dead_letter::fit;
use hashbuy_proto::v1::DeadLetter;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message as _;

use crate::client::{failed, Failed};
use crate::now_ms;

/// A producer context that counts records the broker did not take.
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// How many records failed, and the first failure's message.
    pub fn failures(&self) -> Option<(u64, String)> {
        let failed = self.failed.load(Ordering::Relaxed);
        (failed > 0).then(|| {
            let first = self
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            (failed, first)
        })
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::client::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::client::error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Queues one record, serving delivery reports while the producer's queue
/// is full; `give_up` is asked between waits (a shutdown).
pub fn send_waiting(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    give_up: impl Fn() -> bool,
) -> Result<(), KafkaError> {
    send_to_partition_waiting(producer, topic, None, key, value, give_up)
}

/// [`send_waiting`] to a chosen partition (`None`: by the key, as the
/// producer's partitioner picks).
pub fn send_to_partition_waiting(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
    give_up: impl Fn() -> bool,
) -> Result<(), KafkaError> {
    loop {
        let mut record = BaseRecord::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if !give_up() => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits until every record queued on `producer` is delivered (or failed,
/// as counted by [`Deliveries`]), for at most `timeout`.
///
/// rdkafka's `BaseProducer::flush` serves delivery reports with
/// `poll(100 ms)`, and that `poll` always waits out its whole timeout, so
/// each flush that finds anything in flight takes at least 100 ms. This one
/// serves reports without waiting and sleeps 1 ms between looks (a `poll`
/// of 1 ms would spin: it rounds its remaining time down to 0 ms), so a
/// batch commit is not held up for longer than the broker takes. A `poll`
/// without waiting serves one event, and delivery reports come one event
/// per partition's batch, so it polls again at once while that brings the
/// count down: sleeping after each would cost a millisecond a partition
/// (a changelog round over 128 partitions took 100 to 150 ms that way).
pub fn flush_promptly(
    producer: &BaseProducer<Deliveries>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut in_flight = producer.in_flight_count();
    loop {
        producer.poll(Duration::ZERO);
        let left = producer.in_flight_count();
        if left == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::RequestTimedOut));
        }
        if left >= in_flight {
            std::thread::sleep(Duration::from_millis(1));
        }
        in_flight = left;
    }
}

/// Sends `offsets` to the open transaction as the group member `member`
/// (`metadata`: its group metadata, so a member that lost its partitions
/// in a rebalance cannot commit them) and commits it; `false` if the
/// transaction failed in a way that can be aborted and was aborted, so
/// its batch is to be done again. Each call waits at most `timeout`.
pub fn commit_transaction<C: ConsumerContext>(
    producer: &BaseProducer<Deliveries>,
    member: &BaseConsumer<C>,
    metadata: &ConsumerGroupMetadata,
    offsets: &TopicPartitionList,
    timeout: Duration,
) -> Result<bool, Failed> {
    // Delivered first: rdkafka's commit_transaction flushes too, in steps
    // of 100 ms (see `flush_promptly`), and finds nothing left this way.
    let committed = flush_promptly(producer, timeout)
        .and_then(|()| producer.send_offsets_to_transaction(offsets, metadata, timeout))
        .and_then(|()| producer.commit_transaction(timeout));
    match committed {
        Ok(()) => {
            // The transaction committed the offsets. librdkafka's mock
            // cluster (the embedded broker) answers TxnOffsetCommit without
            // storing them, so they are committed once more the plain way:
            // the same offsets again on a real Kafka, and refused there
            // only if the group moved on, which the transaction already
            // settled. A failure here therefore changes nothing.
            let _ = member.commit(offsets, CommitMode::Sync);
            Ok(true)
        }
        Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
            tracing::warn!("transaction aborted, its batch is done again: {e}");
            producer
                .abort_transaction(timeout)
                .map_err(failed("cannot abort a failed transaction"))?;
            Ok(false)
        }
        Err(e) => Err(failed("cannot commit a transaction")(e)),
    }
}

/// The dead letter of `message`, set aside by `stage` for `reason`: where
/// it came from and its bytes, fitted to `record_bytes`
/// ([`record_budget`]) so a poison record near or over the limit cannot
/// stop the stage that produces it.
pub fn dead_letter_of(
    message: &BorrowedMessage<'_>,
    reason: String,
    stage: &str,
    record_bytes: usize,
) -> DeadLetter {
    fit(
        DeadLetter {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            reason,
            stage: stage.to_owned(),
            dead_at_ms: now_ms(),
            ..DeadLetter::default()
        },
        record_bytes,
    )
}

/// librdkafka's default `message.max.bytes`: the largest record a producer
/// sends (below Kafka's default `max.message.bytes` of 1,048,588).
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// What librdkafka counts for a record besides its key and value (36 bytes
/// of v2 framing at most), with room to spare.
const RECORD_FRAMING_BYTES: usize = 512;

/// How many bytes of key and value one record may carry when produced
/// with `config`: its `message.max.bytes` (librdkafka's default unless
/// set, e.g. by `-X`) less the framing librdkafka counts. What dead letters
/// are fitted to (`hashbuy_proto::dead_letter::fit`).
pub fn record_budget(config: &ClientConfig) -> usize {
    config
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
        .saturating_sub(RECORD_FRAMING_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_message_max_bytes() {
        let mut config = ClientConfig::new();
        assert_eq!(record_budget(&config), 999_488);
        config.set("message.max.bytes", "2000000");
        assert_eq!(record_budget(&config), 1_999_488);
    }
}
