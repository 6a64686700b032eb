//! Restoring newly assigned partitions' ledgers from the changelog topic,
//! and deciding which of their entries are left to do.
//!
//! The partitions assigned together are restored by one reader, on a
//! blocking thread, run once by whichever of their tasks comes first and
//! awaited by the others. An entry in the changelog that is further along
//! than the local one (written by another settler that owned the
//! partition) replaces it. Errors reading the changelog are retried until
//! [`RESTORE_STALL`](hashbuy_kafka::reader::RESTORE_STALL) passes without
//! a record.
//!
//! A restore resumes where the ledger last held the changelog to (a mark
//! per partition, kept in the ledger with the cluster's id and the
//! topic's name): a settler restarted on its own ledger reads only what
//! was written since, not the whole history, which on a broker that does
//! not compact (the embedded one, tansu) is every record ever written.
//! The mark is written once what was read is durable, and moved on past
//! the settler's own records as they are delivered
//! ([`crate::frontier`]); another process's records hold it below them. A changelog deleted and made again under
//! the same name on the same cluster is read from its beginning only if it
//! is shorter than the mark: past it, the ledgers must go with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hashbuy_kafka::lock;
use hashbuy_kafka::reader::{read_to_end, ReadOptions, ReadToEnd, TopicReader};
use rdkafka::Message;

use crate::entry::{key_index, now_ms, Entry, State};
use crate::frontier::Frontier;
use crate::horizon::Bought;
use crate::ledger::{decode_entry, decode_meta, Floor, MetaKey, PartitionLedger, Raise};
use crate::run::{RunError, Shared};

/// Restores the ledgers of newly assigned partitions from the changelog,
/// with one reader for them all: an entry there that is further along than
/// the local one (written by another settler that owned the partition)
/// replaces it. What each partition read and took.
fn restore(shared: &Shared, partitions: &[i32]) -> Result<HashMap<i32, Restored>, RunError> {
    let mut ledgers = HashMap::new();
    for &partition in partitions {
        ledgers.insert(partition, shared.ledger.partition(partition)?);
    }
    let topic = &shared.config.topics.ledger;
    // Offsets are the changelog's on one cluster: a mark taken on another
    // (a ledger moved, an embedded broker started again) is not used.
    let cluster = &shared.cluster;
    let mut resume = HashMap::new();
    if let Some(cluster) = cluster {
        for (&partition, ledger) in &ledgers {
            if let Some(offset) = ledger.changelog_read_through(cluster, topic)? {
                resume.insert(partition, offset);
            }
        }
    }
    let mut reader = TopicReader::open_resuming(
        &shared.config.connection,
        topic,
        Some(partitions),
        &resume,
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    for (&partition, &first) in reader.first_offsets() {
        if first > resume.get(&partition).copied().unwrap_or(0) {
            // A compacted topic keeps every key's last record from offset 0
            // on; a later start means deletion, and a command whose entry
            // went with it, arriving again after the provider forgot its
            // idempotency key, would be charged again.
            tracing::error!(
                topic = %shared.config.topics.ledger,
                partition,
                first,
                "the ledger changelog's records before offset {first} were deleted (retention; \
                 the embedded broker keeps 5 MB a partition): their commands are known here \
                 only if this settler's own ledger has them"
            );
            metrics::counter!("hashbuy_settler_changelog_gaps_total").increment(1);
        }
    }
    let mut restored: HashMap<i32, Restored> = partitions
        .iter()
        .map(|&p| {
            let from = resume.get(&p).copied();
            (
                p,
                Restored {
                    from,
                    ..Restored::default()
                },
            )
        })
        .collect();
    let mut reset = HashSet::new();
    let read = read_to_end(&mut reader, "the ledger changelog", |message| {
        let partition = message.partition();
        if let Some(&from) = resume.get(&partition) {
            if message.offset() < from && reset.insert(partition) {
                tracing::warn!(
                    topic = %topic,
                    partition,
                    "the ledger changelog ends before offset {from}, where this ledger read it \
                     to last time: the topic was made again; it is read from its beginning"
                );
            }
        }
        if let Some(restored) = restored.get_mut(&partition) {
            restored.read += 1;
        }
        let (Some(ledger), Some(key)) = (ledgers.get(&partition), message.key()) else {
            return Ok(());
        };
        if MetaKey::is_meta(key) {
            return restore_meta(ledger, key, message.payload(), message.offset());
        }
        let Some(value) = message.payload() else {
            // A tombstone: the entry was pruned (see `crate::horizon`).
            let command_id = String::from_utf8_lossy(key);
            // One held here for review stays, as a pass keeps it.
            if let Some(local) = ledger.get(&command_id)?.filter(|e| e.review.is_none()) {
                ledger.remove(&command_id, &local.command.user_id)?;
            }
            return Ok(());
        };
        let remote: Entry = match decode_entry(key, value) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(
                    partition,
                    offset = message.offset(),
                    "unreadable ledger changelog record: {e}"
                );
                return Ok(());
            }
        };
        let newer = match ledger.get(remote.command_id())? {
            Some(local) => progress(&remote) > progress(&local),
            None => true,
        };
        if newer {
            ledger.put(&remote)?;
            if let Some(restored) = restored.get_mut(&partition) {
                restored.taken += 1;
            }
        }
        Ok::<(), RunError>(())
    });
    match read {
        Ok(()) => {}
        Err(ReadToEnd::Record(e)) => return Err(e),
        Err(ReadToEnd::Stalled { waited, last_error }) => {
            return Err(RunError::RestoreStalled {
                topic: shared.config.topics.ledger.clone(),
                partitions: partitions.to_vec(),
                waited,
                last_error,
            })
        }
    }
    if let Some(cluster) = cluster {
        // What was taken in is durable before the marks say so.
        shared.ledger.flush()?;
        let mut frontiers = lock(&shared.frontiers);
        for (&partition, &through) in reader.read_through() {
            if let Some(ledger) = ledgers.get(&partition) {
                ledger.set_changelog_read_through(cluster, topic, through)?;
                frontiers.insert(partition, Frontier::new(through));
            }
        }
    }
    // Entries below the floor's pruning line are gone from the
    // changelog, or soon will be: a local copy, decided or not, is one
    // the partition's owner pruned since. Looked for once for each rise of
    // the line, so that a restore does not read every entry.
    for (&partition, ledger) in &ledgers {
        let dropped = ledger.drop_pruned()?;
        if dropped > 0 {
            tracing::info!(
                partition,
                dropped,
                "entries pruned by the partition's last owner dropped"
            );
        }
    }
    shared.ledger.flush()?;
    Ok(restored)
}

/// Takes a floor or a count from the changelog, unless the local one is
/// already as far.
fn restore_meta(
    ledger: &PartitionLedger,
    key: &[u8],
    value: Option<&[u8]>,
    offset: i64,
) -> Result<(), RunError> {
    let partition = ledger.partition();
    let unreadable = |what: String| {
        tracing::warn!(
            partition,
            offset,
            "unreadable ledger changelog record: {what}"
        );
        Ok(())
    };
    let (Some(meta), Some(value)) = (MetaKey::parse(key), value) else {
        return unreadable(format!("key {:?}", String::from_utf8_lossy(key)));
    };
    let raise = match meta {
        MetaKey::Floor => match decode_meta::<Floor>(key, value) {
            Ok(floor) => Raise {
                floor,
                bought: Vec::new(),
            },
            Err(e) => return unreadable(e.to_string()),
        },
        bought @ MetaKey::Bought { .. } => match decode_meta::<Bought>(key, value) {
            Ok(count) => Raise {
                floor: Floor::default(),
                bought: vec![(bought, count)],
            },
            Err(e) => return unreadable(e.to_string()),
        },
    };
    ledger.raise(&raise)?;
    Ok(())
}

/// What a partition's restore did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Restored {
    /// The changelog offset it resumed from, if a mark was there.
    pub(crate) from: Option<i64>,
    /// Changelog records read.
    pub(crate) read: usize,
    /// Entries taken from them (newer than the local copy, or new here).
    pub(crate) taken: usize,
}

/// The restore of one assignment's partitions, run once by whichever of
/// their tasks comes first, awaited by the others.
pub(crate) struct Restore {
    partitions: Vec<i32>,
    /// The group's committed offsets of the commands topic when the
    /// partitions were assigned: the previous owners' acks below them
    /// were delivered.
    pub(crate) committed: HashMap<i32, i64>,
    /// Entries taken, by partition; `Err` once the restore failed (the
    /// failure is reported by the task that ran it).
    done: tokio::sync::OnceCell<Result<HashMap<i32, Restored>, ()>>,
}

impl Restore {
    /// The restore of `partitions`, assigned when the group had `committed`
    /// these offsets of the commands topic.
    pub(crate) fn new(partitions: Vec<i32>, committed: HashMap<i32, i64>) -> Restore {
        Restore {
            partitions,
            committed,
            done: tokio::sync::OnceCell::new(),
        }
    }

    /// What `partition`'s restore did, once the whole restore is done;
    /// `None` if it failed.
    pub(crate) async fn restored(&self, shared: &Arc<Shared>, partition: i32) -> Option<Restored> {
        let done = self
            .done
            .get_or_init(|| async {
                let restoring = Arc::clone(shared);
                let partitions = self.partitions.clone();
                let result = tokio::task::spawn_blocking(move || restore(&restoring, &partitions))
                    .await
                    .map_err(|e| RunError::Runtime(std::io::Error::other(e.to_string())))
                    .and_then(|restored| restored);
                result.map_err(|e| shared.fail(e))
            })
            .await;
        done.as_ref()
            .ok()
            .map(|r| r.get(&partition).copied().unwrap_or_default())
    }
}

/// How far along an entry is, for choosing between two copies (a local one
/// and the changelog's): the greater is kept.
pub fn progress(entry: &Entry) -> (u8, u32, u32, bool, i64) {
    let (stage, key) = match &entry.state {
        State::Received => (0, 0),
        State::Attempting { key, .. } => (1, key_index(entry.command_id(), key)),
        _ => (2, 0),
    };
    // A later key of the chain is further along than more calls under an
    // earlier one: those may be an owner's retries never published.
    (
        stage,
        key,
        entry.attempts,
        entry.acked_ms.is_some(),
        entry.changed_ms,
    )
}

/// Of a partition's unfinished entries, those left to do: a decided entry
/// whose command lies below the group's `committed` offset was acked (an
/// offset is committed only once its ack is delivered), by this settler
/// before a crash or by the partition's previous owner, and is marked so
/// instead of being acked again; after a hand-over that is the whole
/// history the changelog brought.
pub(crate) fn acked_earlier(
    ledger: &PartitionLedger,
    unfinished: Vec<Entry>,
    committed: Option<&i64>,
) -> Result<Vec<Entry>, RunError> {
    let mut left = Vec::with_capacity(unfinished.len());
    for mut entry in unfinished {
        let below = committed.is_some_and(|&c| (0..c).contains(&entry.offset));
        if below && entry.state.is_terminal() {
            entry.acked(now_ms())?;
            ledger.put(&entry)?;
        } else {
            left.push(entry);
        }
    }
    Ok(left)
}
