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
//! not compact (the embedded one) is every record ever written. The mark
//! is written once what was read is durable, and moved on past the
//! settler's own records as they are delivered ([`crate::frontier`]);
//! another process's records hold it below them. It names the last record
//! below it, which the restore reads first and must find as named: where
//! it is not (the changelog was made again, or compaction removed it), the
//! partition is read from its beginning. On tansu every restore reads the
//! whole changelog (see `run::resumable_cluster`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hashbuy_kafka::lock;
use hashbuy_kafka::reader::{read_to_end, ReadOptions, ReadToEnd, TopicReader};
use rdkafka::Message;

use crate::entry::{key_index, now_ms, Entry, State};
use crate::frontier::{Frontier, Seen};
use crate::horizon::Bought;
use crate::ledger::{
    decode_counts, decode_entry, decode_meta, Floor, MetaKey, PartitionLedger, Raise, ReadThrough,
};
use crate::run::{RunError, Shared};

/// The most counts a restore gathers for a partition before writing them.
const RAISE_AT_ONCE: usize = 4096;

/// Restores the ledgers of newly assigned partitions from the changelog,
/// with one reader for them all: an entry there that is further along than
/// the local one (written by another settler that owned the partition)
/// replaces it. What each partition read and took.
fn restore(
    shared: &Shared,
    partitions: &[i32],
    generation: u64,
) -> Result<HashMap<i32, Restored>, RunError> {
    let mut ledgers = HashMap::new();
    for &partition in partitions {
        ledgers.insert(partition, shared.ledger.partition(partition)?);
    }
    let topic = &shared.config.topics.ledger;
    // Offsets are the changelog's on one cluster: a mark taken on another
    // (a ledger moved to it) is not used.
    let mut resume = HashMap::new();
    if let Some(cluster) = &shared.cluster {
        for (&partition, ledger) in &ledgers {
            if let Some(mark) = ledger.changelog_read_through(cluster, topic)? {
                resume.insert(partition, mark);
            }
        }
    }
    let mut passes = match read_changelog(shared, &ledgers, partitions, &resume, generation) {
        // A broker that never ends a read resumed inside a record batch
        // (tansu under a cluster id of its own choosing, see
        // `run::resumable_cluster`): read from the beginning instead.
        Err(RunError::RestoreStalled { .. }) if !resume.is_empty() => {
            tracing::warn!(
                topic = %topic,
                "the ledger changelog read from where this ledger last got to never ended: \
                 read from its beginning"
            );
            read_changelog(shared, &ledgers, partitions, &HashMap::new(), generation)?
        }
        passes => passes?,
    };
    // A mark whose record is not where it says is not trusted: the
    // partition is read from its beginning. (One a newer restore has is
    // left to it.)
    let moved: Vec<i32> = resume
        .iter()
        .filter(|(partition, mark)| {
            passes.get(partition).and_then(|pass| pass.first) != Some(mark.last)
                && lock(&shared.restores).get(partition) == Some(&generation)
        })
        .map(|(&partition, _)| partition)
        .collect();
    if !moved.is_empty() {
        tracing::info!(
            topic = %topic,
            partitions = ?moved,
            "the ledger changelog no longer holds the record this ledger last read there as \
             it was (compacted away, or the topic made again): read from its beginning"
        );
        let again = read_changelog(shared, &ledgers, &moved, &HashMap::new(), generation)?;
        for (partition, mut pass) in again {
            if let Some(earlier) = passes.get(&partition) {
                pass.restored.read += earlier.restored.read;
                pass.restored.taken += earlier.restored.taken;
            }
            passes.insert(partition, pass);
        }
    }
    if let Some(cluster) = &shared.cluster {
        // What was taken in is durable before the marks say so.
        shared.ledger.flush()?;
        let newest = lock(&shared.restores);
        let mut frontiers = lock(&shared.frontiers);
        for (&partition, pass) in &passes {
            let (Some(ledger), Some(next)) = (ledgers.get(&partition), pass.next()) else {
                continue;
            };
            if newest.get(&partition) != Some(&generation) {
                continue;
            }
            let frontier = Frontier::new(generation, next, pass.last);
            if let Some(mark) = frontier.mark() {
                ledger.set_changelog_read_through(cluster, topic, &mark)?;
            }
            frontiers.insert(partition, frontier);
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
    Ok(passes
        .into_iter()
        .map(|(partition, pass)| (partition, pass.restored))
        .collect())
}

/// One read of a partition's changelog.
#[derive(Debug, Default)]
struct Pass {
    restored: Restored,
    /// The first record handed out.
    first: Option<Seen>,
    /// The last record handed out below `skipped` (`None` also if it had
    /// no timestamp).
    last: Option<Seen>,
    /// The first record that could not be taken in (unreadable): the
    /// ledger's mark stays below it, so that every later restore reads it
    /// again (a newer hashbuy's format, say, which the next version reads).
    skipped: Option<i64>,
    /// Where the reader got to (see `TopicReader::read_through`).
    read_through: Option<i64>,
}

impl Pass {
    /// The offset below which every record is taken in here.
    fn next(&self) -> Option<i64> {
        let through = self.read_through?;
        Some(self.skipped.map_or(through, |skipped| skipped.min(through)))
    }
}

/// Reads `partitions` of the changelog to their end, each from the last
/// record its mark in `resume` names, or from its beginning, for restore
/// number `generation` (which stops taking records into a partition that
/// a newer one has).
fn read_changelog(
    shared: &Shared,
    ledgers: &HashMap<i32, PartitionLedger>,
    partitions: &[i32],
    resume: &HashMap<i32, ReadThrough>,
    generation: u64,
) -> Result<HashMap<i32, Pass>, RunError> {
    let topic = &shared.config.topics.ledger;
    let starts: HashMap<i32, i64> = resume
        .iter()
        .map(|(&partition, mark)| (partition, mark.last.offset))
        .collect();
    let mut reader = TopicReader::open_resuming(
        &shared.config.connection,
        topic,
        Some(partitions),
        &starts,
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    for (&partition, &first) in reader.first_offsets() {
        if first > starts.get(&partition).copied().unwrap_or(0) {
            // A compacted topic keeps every key's last record from offset 0
            // on; a later start means deletion, and a command whose entry
            // went with it, arriving again after the provider forgot its
            // idempotency key, would be charged again.
            tracing::error!(
                topic = %topic,
                partition,
                first,
                "the ledger changelog's records before offset {first} were deleted (retention; \
                 the embedded broker keeps 5 MB a partition): their commands are known here \
                 only if this settler's own ledger has them"
            );
            metrics::counter!("hashbuy_settler_changelog_gaps_total").increment(1);
        }
    }
    let mut passes: HashMap<i32, Pass> = partitions
        .iter()
        .map(|&partition| {
            let restored = Restored {
                from: starts.get(&partition).copied(),
                ..Restored::default()
            };
            (
                partition,
                Pass {
                    restored,
                    ..Pass::default()
                },
            )
        })
        .collect();
    // Floors and counts are gathered and written a batch at a time: a
    // sled batch each seals the log's buffer, and a new owner restoring
    // 100,000 counts (and their entries' tombstones) one by one took
    // 12.4 s where batched it takes 3.3.
    let mut raises: HashMap<i32, Raise> = HashMap::new();
    let read = read_to_end(&mut reader, "the ledger changelog", |message| {
        let partition = message.partition();
        let (Some(ledger), Some(pass)) = (ledgers.get(&partition), passes.get_mut(&partition))
        else {
            return Ok(());
        };
        if lock(&shared.restores).get(&partition) != Some(&generation) {
            // A newer assignment's restore has the partition.
            return Ok(());
        }
        let offset = message.offset();
        let seen = message
            .timestamp()
            .to_millis()
            .map(|t| Seen::of(offset, t, message.key(), message.payload()));
        pass.restored.read += 1;
        if pass.restored.read == 1 {
            pass.first = seen;
        }
        // Each raise begins with the ledger's floor and keeps the floor
        // across batches: `take` judges entries by its line.
        let raise = match raises.entry(partition) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Raise {
                floor: ledger.floor()?,
                bought: Vec::new(),
            }),
        };
        let taken = take(ledger, message.key(), message.payload(), offset, raise)?;
        if raise.bought.len() >= RAISE_AT_ONCE {
            ledger.raise(raise)?;
            raise.bought.clear();
        }
        match taken {
            Taken::Unreadable => {
                pass.skipped.get_or_insert(offset);
            }
            Taken::Newer | Taken::Older if pass.skipped.is_none() => {
                pass.last = seen;
            }
            Taken::Newer | Taken::Older => {}
        }
        if taken == Taken::Newer {
            pass.restored.taken += 1;
        }
        Ok::<(), RunError>(())
    });
    // Taken whatever became of the read: a raise only ever raises, and a
    // tombstone taken before its count must not be left without it.
    for (partition, raise) in raises {
        if let Some(ledger) = ledgers.get(&partition) {
            ledger.raise(&raise)?;
        }
    }
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
    for (partition, &through) in reader.read_through() {
        if let Some(pass) = passes.get_mut(partition) {
            pass.read_through = Some(through);
        }
    }
    Ok(passes)
}

/// What [`take`] made of a changelog record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// An entry newer than the local one, written here.
    Newer,
    /// Nothing new to this ledger (or applied where it only raises).
    Older,
    /// Not readable: logged, and left for a later restore.
    Unreadable,
}

/// Takes a changelog record into `ledger`: an entry further along than the
/// local one, a tombstone (the entry was pruned), a floor or a count.
/// `raise` gathers floors and counts for the ledger; its floor is the
/// ledger's with those read so far.
fn take(
    ledger: &PartitionLedger,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    offset: i64,
    raise: &mut Raise,
) -> Result<Taken, RunError> {
    let partition = ledger.partition();
    let unreadable = |what: String| {
        tracing::warn!(
            partition,
            offset,
            "unreadable ledger changelog record: {what}"
        );
        Ok(Taken::Unreadable)
    };
    let Some(key) = key else {
        return unreadable("no key".to_owned());
    };
    if MetaKey::is_meta(key) {
        if value.is_none()
            && matches!(
                MetaKey::parse(key),
                Some(MetaKey::Bought { .. } | MetaKey::Counts { .. })
            )
        {
            // Counts forgotten by a pass (a bucket left empty), kept here
            // until this ledger's own pass forgets them: a count kept too
            // long can refuse a buyer of an offer put on sale again, never
            // let one buy twice (see `crate::horizon`).
            return Ok(Taken::Older);
        }
        return match meta_raise(key, value) {
            Ok(meta) => {
                raise.merge(meta);
                Ok(Taken::Older)
            }
            Err(what) => unreadable(what),
        };
    }
    let Some(value) = value else {
        // A tombstone: the entry was pruned (see `crate::horizon`).
        let command_id = String::from_utf8_lossy(key);
        // One held here for review stays, as a pass keeps it.
        if let Some(local) = ledger.get(&command_id)?.filter(|e| e.review.is_none()) {
            ledger.remove(&command_id, &local.command.user_id)?;
        }
        return Ok(Taken::Older);
    };
    let remote: Entry = match decode_entry(key, value) {
        Ok(entry) => entry,
        Err(e) => return unreadable(e.to_string()),
    };
    // Below the pruning line the partition's owner has decided every
    // entry (see `crate::horizon`): an undecided record of one read now
    // is one a settler that lost the partition sent late, and taking it in
    // would resume a purchase decided long ago, under a key the provider
    // has forgotten. (The drop after a restore looks below the line only
    // when the line rose.) A decided record is taken as any: it may still
    // owe its ack. One held for review is kept, as a pass keeps it.
    if !remote.state.is_terminal()
        && remote.review.is_none()
        && remote.command.tweet_timestamp_ms < raise.floor.pruned_below_ms
    {
        tracing::warn!(
            partition,
            offset,
            command_id = %remote.command_id(),
            "an undecided ledger changelog record of a command below the pruning line, sent \
             late by a settler that lost the partition: not taken in"
        );
        metrics::counter!("hashbuy_settler_late_records_skipped_total").increment(1);
        return Ok(Taken::Older);
    }
    let newer = match ledger.get(remote.command_id())? {
        Some(local) => progress(&remote) > progress(&local),
        None => true,
    };
    if !newer {
        return Ok(Taken::Older);
    }
    ledger.put(&remote)?;
    Ok(Taken::Newer)
}

/// A floor, a bucket of counts or a count (written before the buckets)
/// from the changelog, as a raise for the ledger to take (unless its own
/// is already as far); what is wrong with it if it cannot be read. A
/// bucket's counts are merged into the ledger's (a count the record lacks
/// is kept here, as for a count's tombstone above).
fn meta_raise(key: &[u8], value: Option<&[u8]>) -> Result<Raise, String> {
    let (Some(meta), Some(value)) = (MetaKey::parse(key), value) else {
        return Err(format!("key {:?}", String::from_utf8_lossy(key)));
    };
    Ok(match meta {
        MetaKey::Floor => Raise {
            floor: decode_meta::<Floor>(key, value).map_err(|e| e.to_string())?,
            bought: Vec::new(),
        },
        bought @ MetaKey::Bought { .. } => Raise {
            floor: Floor::default(),
            bought: vec![(
                bought,
                decode_meta::<Bought>(key, value).map_err(|e| e.to_string())?,
            )],
        },
        MetaKey::Counts { .. } => Raise {
            floor: Floor::default(),
            bought: decode_counts(key, value)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|((user_id, offer_id), bought)| {
                    (MetaKey::Bought { user_id, offer_id }, bought)
                })
                .collect(),
        },
    })
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
    /// Which restore of the run this is (see [`Restore::new`]).
    generation: u64,
    /// When the partitions were assigned.
    began: std::time::Instant,
    /// Entries taken, by partition; `Err` once the restore failed (the
    /// failure is reported by the task that ran it).
    done: tokio::sync::OnceCell<Result<HashMap<i32, Restored>, ()>>,
}

impl Restore {
    /// The restore of `partitions`, assigned when the group had `committed`
    /// these offsets of the commands topic.
    ///
    /// It becomes its partitions' newest restore: one of an earlier
    /// assignment still reading (on its blocking thread, past its task's
    /// end) takes nothing more into them and marks nothing.
    pub(crate) fn new(
        shared: &Shared,
        partitions: Vec<i32>,
        committed: HashMap<i32, i64>,
    ) -> Restore {
        let generation = shared.next_restore.fetch_add(1, Ordering::Relaxed) + 1;
        let mut newest = lock(&shared.restores);
        for &partition in &partitions {
            newest.insert(partition, generation);
        }
        Restore {
            partitions,
            committed,
            generation,
            began: std::time::Instant::now(),
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
                let generation = self.generation;
                let result = tokio::task::spawn_blocking(move || {
                    restore(&restoring, &partitions, generation)
                })
                .await
                .map_err(RunError::task)
                .and_then(|restored| restored);
                let took = self.began.elapsed();
                shared.count(|s| s.restoring = s.restoring.max(took));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::{self, Counts};
    use crate::horizon::NO_END;
    use crate::ledger::Ledger;

    fn bought(count: u32) -> Bought {
        Bought {
            count,
            through_ms: 10,
            offer_ends_ms: NO_END,
        }
    }

    fn count(user: &str, n: u32) -> (MetaKey, Bought) {
        let key = MetaKey::Bought {
            user_id: user.into(),
            offer_id: "o".into(),
        };
        (key, bought(n))
    }

    /// A bucket read from the changelog is merged into the one held, count
    /// by count: the higher of each, and the counts either side lacks kept;
    /// a count written one by one (before the buckets) is taken in as
    /// before; a bucket's tombstone takes nothing away here.
    #[test]
    fn a_restore_merges_buckets_and_still_reads_counts_written_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        // Users of one bucket.
        let users: Vec<String> = (0..)
            .map(|i| format!("user-{i}"))
            .filter(|u| counts::bucket_of(u) == 7)
            .take(4)
            .collect();
        p.raise(&Raise {
            floor: Floor::default(),
            bought: vec![count(&users[0], 2), count(&users[1], 1)],
        })
        .expect("raised");
        let bucket = MetaKey::Counts { bucket: 7 }.to_bytes();
        let remote = Counts::from([
            ((users[0].clone(), "o".to_owned()), bought(1)),
            ((users[2].clone(), "o".to_owned()), bought(3)),
        ]);
        let legacy = count(&users[3], 1).0.to_bytes();
        let mut raise = Raise::default();
        let records: [(&[u8], Option<Vec<u8>>); 3] = [
            (&bucket, Some(counts::encode(&remote))),
            (&legacy, Some(br#"{"count":1,"through_ms":10}"#.to_vec())),
            (&bucket, None),
        ];
        for (offset, (key, value)) in records.into_iter().enumerate() {
            let taken =
                take(&p, Some(key), value.as_deref(), offset as i64, &mut raise).expect("taken");
            assert_eq!(taken, Taken::Older);
        }
        p.raise(&raise).expect("raised");
        let held: Vec<u32> = users
            .iter()
            .map(|u| p.bought(u, "o").expect("read").count)
            .collect();
        assert_eq!(held, [2, 1, 3, 1]);
        let unreadable = take(&p, Some(&bucket), Some(b"\xff\xff"), 9, &mut raise);
        assert_eq!(unreadable.expect("taken"), Taken::Unreadable);
    }
}
