//! Restoring newly assigned partitions' pending purchases from their
//! changelog, before their workers read a record.
//!
//! The changelog has a partition for each tweets partition, written only
//! by the tweets partition's owner, in the same transaction as its outputs
//! and offsets (at least once: after its outputs, before its offsets; see
//! [`crate::batch`]). Read to its end with `read_committed`, it holds the
//! pending purchases as of the group's committed offset (exactly once) or
//! after it (at least once), which is where the new owner starts reading
//! tweets. A transaction still open on it (a previous owner's last batch,
//! being aborted or committed) holds the read back until it ends, which is
//! what makes the hand-over exact. Errors reading it are retried until
//! [`RESTORE_STALL`](hashbuy_kafka::reader::RESTORE_STALL) passes without
//! a record.
//!
//! Once read, each partition is claimed ([`PartitionFlow::claim`]): a
//! record of the new owner's epoch, and tombstones for users whose
//! purchases all ended below the group's committed offset, are written
//! and delivered before the partition's worker starts, so a former owner's
//! later writes are told apart by every later restore.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hashbuy_core::confirm::{PartitionFlow, Restored};
use hashbuy_kafka::client::failed;
use hashbuy_kafka::produce::{flush_promptly, send_to_partition_waiting, Deliveries};
use hashbuy_kafka::reader::{ReadOptions, Stall, TopicReader};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message;

use crate::run::{Config, RunError, CALL_TIMEOUT};

/// The pending purchases of `partitions`, read from the changelog and
/// claimed; `next` holds where each partition's reading starts (the
/// group's committed offset), where known.
pub(crate) fn restore(
    config: &Config,
    partitions: &[i32],
    next: &HashMap<i32, i64>,
) -> Result<HashMap<i32, PartitionFlow>, RunError> {
    let topic = &config.topics.pending;
    let mut flows: HashMap<i32, PartitionFlow> = partitions
        .iter()
        .map(|&p| (p, PartitionFlow::new()))
        .collect();
    if partitions.is_empty() {
        return Ok(flows);
    }
    let began = Instant::now();
    let mut reader = TopicReader::open_partitions(
        &config.connection,
        topic,
        Some(partitions),
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    for (&partition, &first) in reader.first_offsets() {
        if first > 0 {
            // Compaction keeps every key's last record from offset 0 on; a
            // later start means deletion, and with it pending purchases.
            tracing::error!(
                topic = %topic,
                partition,
                first,
                "the pending purchases' changelog records before offset {first} were deleted \
                 (retention; the embedded broker keeps 5 MB a partition): purchases pending in \
                 them are lost, and their confirmations will confirm nothing"
            );
            metrics::counter!("hashbuy_matcher_changelog_gaps_total").increment(1);
        }
    }
    let mut stall = Stall::new(Instant::now());
    let mut records = 0u64;
    while !reader.at_end() {
        stall
            .check(Instant::now())
            .map_err(|(waited, last_error)| RunError::RestoreStalled {
                topic: topic.clone(),
                partitions: partitions.to_vec(),
                waited,
                last_error,
            })?;
        let Some(message) = reader.next(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(
                    "reading the pending purchases' changelog: {e}; the restore goes on"
                );
                stall.failed(e.to_string());
                continue;
            }
        };
        stall.progressed(Instant::now());
        records += 1;
        let (Some(flow), Some(key)) = (flows.get_mut(&message.partition()), message.key()) else {
            continue;
        };
        match flow.restore(key, message.payload()) {
            Ok(Restored::Taken) => {}
            Ok(Restored::Fenced) => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "a pending purchases' changelog record written by a former owner after the \
                     partition moved on: left out"
                );
                metrics::counter!("hashbuy_matcher_changelog_fenced_total").increment(1);
            }
            Err(e) => {
                // Only hashbuy writes the changelog: a record it cannot read is
                // a bug or a foreign writer, and one user's purchases at most.
                tracing::error!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "{e}: left out of the restore"
                );
                metrics::counter!("hashbuy_matcher_changelog_unreadable_total").increment(1);
            }
        }
    }
    claim(config, &mut flows, next)?;
    let pending: usize = flows.values().map(PartitionFlow::pending).sum();
    tracing::info!(
        partitions = ?partitions,
        records,
        pending,
        "restored pending purchases in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(flows)
}

/// Claims each restored partition: writes its claim records
/// ([`PartitionFlow::claim`]) to its changelog partition and waits until
/// they are delivered. A plain producer writes them, outside the matcher's
/// transactions: a claim must be in the log before the partition's first
/// batch, whatever becomes of that batch.
fn claim(
    config: &Config,
    flows: &mut HashMap<i32, PartitionFlow>,
    next: &HashMap<i32, i64>,
) -> Result<(), RunError> {
    let producer: BaseProducer<Deliveries> = config
        .connection
        .config()
        .create_with_context(Deliveries::default())
        .map_err(failed("cannot create the changelog's producer"))?;
    let mut partitions: Vec<i32> = flows.keys().copied().collect();
    partitions.sort();
    let mut records = Vec::new();
    for partition in partitions {
        if let Some(flow) = flows.get_mut(&partition) {
            let claim = flow.claim(next.get(&partition).copied());
            records.extend(
                claim
                    .into_iter()
                    .map(|(key, value)| (partition, key, value)),
            );
        }
    }
    for (partition, key, value) in &records {
        send_to_partition_waiting(
            &producer,
            &config.topics.pending,
            Some(*partition),
            Some(key.as_bytes()),
            value.as_deref(),
            || false,
        )
        .map_err(failed("cannot write the pending purchases' changelog"))?;
    }
    flush_promptly(&producer, CALL_TIMEOUT)
        .map_err(failed("cannot deliver the pending purchases' claim"))?;
    if let Some((count, first)) = producer.context().failures() {
        return Err(RunError::Undelivered { count, first });
    }
    Ok(())
}
