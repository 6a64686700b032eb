//! Restoring newly assigned partitions' pending purchases from their
//! changelog, before their workers read a record.
//!
//! The changelog has a partition for each tweets partition, written only
//! by the tweets partition's owner, in the same transaction as its outputs
//! and offsets (at least once: after its outputs, before its offsets; see
//! [`crate::batch`]). Read to its end with `read_committed`, it holds the
//! pending purchases as of the group's committed offset (exactly once) or
//! after it (at least once), which is where the new owner starts reading
//! tweets. The read comes after the partitions' committed offsets were
//! fetched ([`hashbuy_kafka::loss::check_starts`]), which waits for them
//! to be stable: a previous owner's last transaction is committed or
//! aborted by then, so the read, which ends at the last stable offset,
//! holds all of it or none. That order is what makes the hand-over exact.
//! Errors reading it are retried until
//! [`RESTORE_STALL`](hashbuy_kafka::reader::RESTORE_STALL) passes without
//! a record.
//!
//! Once read, each newly assigned partition is claimed
//! ([`PartitionFlow::claim`]): a record of the new owner's epoch and id is
//! written and delivered before the partition's worker starts, so a
//! former owner's later writes are told apart by every later restore. The
//! changelog is then read again: the claim holds if that read names this
//! owner. A claim of the same epoch that came first (two members that read
//! the changelog before either claimed) is answered with a claim of the
//! next epoch; one of a later epoch means another member owns the
//! partition now, and this one stops. Read again after an aborted batch,
//! a partition is not claimed again: it must still be this owner's.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Instant;

use hashbuy_core::confirm::{Owner, PartitionFlow, Restored};
use hashbuy_kafka::client::failed;
use hashbuy_kafka::produce::{send_to_partition_waiting, Deliveries};
use hashbuy_kafka::reader::{read_to_end, ReadOptions, ReadToEnd, TopicReader};
use rdkafka::producer::BaseProducer;
use rdkafka::Message;

use crate::batch::deliver;
use crate::run::{Config, RunError};

/// How many claims of a partition may lose a race before the matcher
/// gives up on it.
const CLAIMS: usize = 3;

/// The pending purchases of `partitions`, read from the changelog, with
/// the owner each is written as. `owned` holds the partitions this matcher
/// claimed before (read again after an aborted batch), which must still be
/// its own; the others are claimed.
pub(crate) fn restore(
    config: &Config,
    partitions: &[i32],
    owned: &HashMap<i32, Owner>,
) -> Result<HashMap<i32, PartitionFlow>, RunError> {
    let began = Instant::now();
    let mut flows = read(config, partitions)?;
    let mut claims: HashMap<i32, Owner> = HashMap::new();
    for _ in 0..CLAIMS {
        let mut to_claim = Vec::new();
        for &partition in partitions {
            let Some(flow) = flows.get_mut(&partition) else {
                continue;
            };
            let restored = flow.restored_owner();
            match owned.get(&partition).or(claims.get(&partition)) {
                Some(&mine) if restored == mine => flow.resume(mine),
                // Another claim of our epoch came first: claim the next.
                Some(&mine) if restored.epoch == mine.epoch && claims.contains_key(&partition) => {
                    to_claim.push(partition)
                }
                Some(_) => return Err(RunError::PartitionClaimed { partition }),
                None => to_claim.push(partition),
            }
        }
        if to_claim.is_empty() {
            let pending: usize = flows.values().map(PartitionFlow::pending).sum();
            tracing::info!(
                partitions = ?partitions,
                pending,
                "restored pending purchases in {:.1} s",
                began.elapsed().as_secs_f64()
            );
            return Ok(flows);
        }
        claims.extend(claim(config, &mut flows, &to_claim)?);
        for (partition, flow) in read(config, &to_claim)? {
            flows.insert(partition, flow);
        }
    }
    Err(RunError::ClaimsLost {
        claims: CLAIMS,
        partitions: partitions.to_vec(),
    })
}

/// The changelog of `partitions`, read to its end.
fn read(config: &Config, partitions: &[i32]) -> Result<HashMap<i32, PartitionFlow>, RunError> {
    let topic = &config.topics.pending;
    let mut flows: HashMap<i32, PartitionFlow> = partitions
        .iter()
        .map(|&p| (p, PartitionFlow::new()))
        .collect();
    if partitions.is_empty() {
        return Ok(flows);
    }
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
    let mut records = 0u64;
    let read = read_to_end(&mut reader, "the pending purchases' changelog", |message| {
        records += 1;
        let (Some(flow), Some(key)) = (flows.get_mut(&message.partition()), message.key()) else {
            return Ok::<(), RunError>(());
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
                // Only hashbuy writes the changelog: a record it cannot
                // read is a bug or a foreign writer, and one user's
                // purchases at most.
                tracing::error!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "{e}: left out of the restore"
                );
                metrics::counter!("hashbuy_matcher_changelog_unreadable_total").increment(1);
            }
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(ReadToEnd::Record(e)) => return Err(e),
        Err(ReadToEnd::Stalled { waited, last_error }) => {
            return Err(RunError::RestoreStalled {
                topic: topic.clone(),
                partitions: partitions.to_vec(),
                waited,
                last_error,
            })
        }
    }
    tracing::debug!(partitions = ?partitions, records, "read the pending purchases' changelog");
    Ok(flows)
}

/// Claims `partitions` of `flows`, each as a new owner with a random id:
/// writes the claims with a plain producer, outside the matcher's
/// transactions (a claim must be in the log before the partition's first
/// batch, whatever becomes of that batch), and waits until they are
/// delivered. The owners claimed.
fn claim(
    config: &Config,
    flows: &mut HashMap<i32, PartitionFlow>,
    partitions: &[i32],
) -> Result<HashMap<i32, Owner>, RunError> {
    let producer: BaseProducer<Deliveries> = config
        .connection
        .config()
        .create_with_context(Deliveries::default())
        .map_err(failed("cannot create the changelog's producer"))?;
    let ids = RandomState::new();
    let mut owners = HashMap::new();
    for &partition in partitions {
        let Some(flow) = flows.get_mut(&partition) else {
            continue;
        };
        let (key, value) = flow.claim(ids.hash_one(partition));
        owners.insert(partition, flow.owner());
        send_to_partition_waiting(
            &producer,
            &config.topics.pending,
            Some(partition),
            Some(key.as_bytes()),
            &value,
            || false,
        )
        .map_err(failed("cannot write the pending purchases' changelog"))?;
    }
    deliver(&producer, "cannot deliver the pending purchases' claim")?;
    Ok(owners)
}
