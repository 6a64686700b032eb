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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hashbuy_core::confirm::PartitionFlow;
use hashbuy_kafka::reader::{ReadOptions, Stall, TopicReader};
use rdkafka::Message;

use crate::run::{Config, RunError};

/// The pending purchases of `partitions`, read from the changelog.
pub(crate) fn restore(
    config: &Config,
    partitions: &[i32],
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
        if let Err(e) = flow.restore(key, message.payload()) {
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
