//! A ledger compacted by copy, to give back the space pruning frees.
//!
//! sled reuses a segment of its file only once most of it is garbage, and
//! gives back to the file system only free segments at the very end of
//! the file: a ledger pruned from a million entries down to a few dozen
//! still took 1.27 GB, and every open of it rebuilds sled's page table of
//! that file in memory. The one way sled offers to shed that is a fresh
//! store holding the same keys and values, so compaction copies the
//! ledger into one and swaps the copy's file in.
//!
//! # Steps, and why a crash at any of them loses nothing
//!
//! Every process that opens the ledger first locks its directory
//! (`Ledger::open`), which is never moved; the compaction holds that lock
//! from before the copy until the old store is gone, so no settler,
//! `hashbuy ledger` command or other compaction opens the ledger, old file
//! or new, in between: nothing is written to it that the copy lacks.
//! (sled's own lock is on `db`, the very file the swap replaces.)
//!
//! 1. Every tree is copied into a new sled store in `compacting/`, inside
//!    the ledger's directory (which may be a volume's mount point, so
//!    never beside it). The copy is flushed, synced, closed, opened again
//!    from its file, and compared with the ledger key by key and value by
//!    value. A copy that differs, or that has blobs (below), is removed
//!    and the ledger is left as it was. The copy's store is closed, and
//!    its file's lock waited for: sled has let go of it then.
//! 2. The copy is marked whole (`compacting/whole`, synced), naming the
//!    ledger's file as it stands (device, inode, length, modification
//!    time).
//! 3. The ledger's snapshots (`snap.*`, sled's record of where its pages
//!    lie in `db`, which it rebuilds from `db` alone when there is none;
//!    sled writes one only as it opens a store) are removed, and the
//!    copy's `db` is renamed over the ledger's: one atomic step from the
//!    old file to the new. The directory is synced between the two, so no
//!    old snapshot is ever beside the new file.
//! 4. The old store is closed, and its file's lock waited for: until
//!    then sled's threads may still flush to that file (gone from the
//!    directory, harmless) and remove its blobs by their paths.
//! 5. The old file's blobs (`blobs/`, page fragments over a quarter of a
//!    segment, kept in files of their own and named by their place in the
//!    log, which a new blob could take) are removed, then `compacting/`.
//!
//! Cut off before 2, the ledger is whole and the copy is removed when the
//! ledger is next opened; from 2 on, the copy is whole and the next open
//! ([`finish_interrupted`], under the ledger's lock) carries on from 3,
//! or from 5 if the rename was done. Either way the ledger holds every
//! key and value it held, in the old file or in the new. A ledger's file
//! that is no longer the one the mark names, or that holds other keys or
//! values than the copy (written since, by a hashbuy from before
//! compaction, which does not look for a copy, within the tick of a file
//! system's clock), keeps its place, and the copy is removed.
//!
//! A settler compacts its ledger when it stops cleanly, if its passes in
//! that run freed much of it ([`pruned_enough`]) and the ledger's file
//! has grown to [`COMPACT_ABOVE_RATIO`] times its keys and values and
//! over [`COMPACT_ABOVE_BYTES`] ([`worth_compacting`]); `hashbuy ledger
//! compact` does it on demand.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ledger::{
    lock_waiting, open_sled, open_sled_waiting, Ledger, LedgerError, LOCK_RELEASE_WAIT, SLED_LOG,
};

/// Where the copy is built, inside the ledger's directory.
const COPY_DIR: &str = "compacting";

/// The mark, in the copy's directory, that the copy is whole and verified.
const WHOLE: &str = "whole";

/// How sled names its snapshot files.
const SNAPSHOT_PREFIX: &str = "snap.";

/// Where sled keeps page fragments over a quarter of a segment.
const BLOBS: &str = "blobs";

/// How long a swap waits for the old store to let go of its file: far
/// past the moments sled's threads take, since the compaction then gives
/// up the ledger's lock with them still running.
const OLD_STORE_WAIT: Duration = Duration::from_secs(60);

/// How many keys the copy writes a batch.
const COPY_BATCH: usize = 10_000;

/// A ledger smaller than this is never compacted on stop: what it could
/// give back is not worth a slower stop.
pub const COMPACT_ABOVE_BYTES: u64 = 64 << 20;

/// How many times its keys and values a ledger's file must take before a
/// stop compacts it. sled's files take 4.5 to 5.5 times the keys and
/// values of a ledger that is only written (measured at 100,000 and a
/// million commands), so a ledger reaches this by pruning, not by use.
pub const COMPACT_ABOVE_RATIO: u64 = 8;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The ledger's bytes on disk before.
    pub before: u64,
    /// Its bytes on disk after.
    pub after: u64,
    /// The bytes of its keys and values.
    pub live: u64,
    /// How long it took.
    pub took: Duration,
}

/// Whether a run's passes, the largest of each partition's pruning
/// `pruned` entries in all, and the partitions keeping `kept`, freed
/// enough of the ledger's file to look at it for a compaction on stop
/// ([`compact_if_worth`] reads every key and value): half of what they
/// held. With sled's files at 4.5 to 5.5 times their keys and values,
/// that leaves them at 9 to 11 times what is kept, past
/// [`COMPACT_ABOVE_RATIO`]. The hourly passes of a settler that runs on
/// each prune an hour of a week's entries, and leave a file sled goes on
/// reusing; a pass after a long stop, or under a shorter horizon, prunes
/// the lot.
pub fn pruned_enough(pruned: u64, kept: u64) -> bool {
    pruned > 0 && pruned >= kept
}

/// Whether a ledger whose file takes `size_on_disk` bytes for `live`
/// bytes of keys and values is worth compacting on stop.
pub fn worth_compacting(size_on_disk: u64, live: u64) -> bool {
    worth(size_on_disk, live, COMPACT_ABOVE_BYTES)
}

fn worth(size_on_disk: u64, live: u64, above_bytes: u64) -> bool {
    size_on_disk > above_bytes && size_on_disk / COMPACT_ABOVE_RATIO > live
}

/// Compacts the ledger in `dir` if it is [`worth_compacting`]; `None`
/// if it is not. The ledger must not be open.
pub fn compact_if_worth(dir: &Path) -> Result<Option<Compaction>, LedgerError> {
    compact_if_above(dir, COMPACT_ABOVE_BYTES)
}

fn compact_if_above(dir: &Path, above_bytes: u64) -> Result<Option<Compaction>, LedgerError> {
    let began = Instant::now();
    let ledger = Ledger::open(dir)?;
    let before = ledger.size_on_disk()?;
    // The keys and values are read only when the file could be worth it.
    if before <= above_bytes {
        return Ok(None);
    }
    let live = ledger.live_bytes()?;
    if !worth(before, live, above_bytes) {
        return Ok(None);
    }
    compact_open(ledger, dir, (before, live), began, &|| {}).map(Some)
}

/// Compacts the ledger in `dir` whatever its size. The ledger must not
/// be open.
pub fn compact(dir: &Path) -> Result<Compaction, LedgerError> {
    let began = Instant::now();
    let ledger = Ledger::open(dir)?;
    let sizes = (ledger.size_on_disk()?, ledger.live_bytes()?);
    compact_open(ledger, dir, sizes, began, &|| {})
}

/// Steps 1 to 5 of the module docs, for `ledger`, open from `dir`;
/// `verified` runs once the copy is verified (tests stand other
/// processes there).
fn compact_open(
    ledger: Ledger,
    dir: &Path,
    (before, live): (u64, u64),
    began: Instant,
    verified: &dyn Fn(),
) -> Result<Compaction, LedgerError> {
    tracing::info!(
        ledger = %dir.display(),
        bytes_on_disk = before,
        keys_and_values = live,
        "compacting the ledger"
    );
    let copy = dir.join(COPY_DIR);
    let after = match copy_verified(ledger.db(), &copy, dir) {
        Ok(after) => after,
        Err(e) => {
            // Best effort: the next open removes a copy not marked whole.
            let _ = fs::remove_dir_all(&copy);
            return Err(e);
        }
    };
    verified();
    let log = dir.join(SLED_LOG);
    let whole = copy.join(WHOLE);
    fs::write(&whole, identity(&log)?)
        .and_then(|()| File::open(&whole)?.sync_all())
        .map_err(files("mark the copy whole at", &whole))?;
    sync_dir(&copy)?;
    let lock = ledger.lock();
    swap_and_close(dir, ledger)?;
    finish_swap(dir)?;
    drop(lock);
    Ok(Compaction {
        before,
        after,
        live,
        took: began.elapsed(),
    })
}

/// Finishes a compaction of the ledger in `dir` that was cut off after its
/// copy was marked whole, or removes a copy that was not: see the module
/// docs. The caller holds the ledger's lock (`Ledger::open`). Nothing to
/// do (no copy) costs one look at the directory.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), LedgerError> {
    let copy = dir.join(COPY_DIR);
    if !exists(&copy)? {
        return Ok(());
    }
    let whole = copy.join(WHOLE);
    if exists(&whole)? {
        if !exists(&copy.join(SLED_LOG))? {
            tracing::warn!(ledger = %dir.display(), "finishing a compaction that was cut off");
            return finish_swap(dir);
        }
        let named = fs::read_to_string(&whole).map_err(files("read", &whole))?;
        // The file's identity first, then (a file system may keep its
        // times to the second) every key and value.
        if named != identity(&dir.join(SLED_LOG))? {
            return outdated(dir, "the ledger's file is not the one the copy was made of");
        }
        // The ledger stays open (sled's lock on the file the rename
        // replaces) until the swap is done, as a compaction holds it.
        let held = open_sled_waiting(dir)?;
        let mut copy_closed = Ok(());
        let compared = open_sled_waiting(&copy).and_then(|copied| {
            let differs = difference(&held, &copied);
            copy_closed = close(copied, &copy, dir);
            differs
        });
        // A copy whose store has not let go is not removed under it.
        if let Err(e) = copy_closed {
            close(held, dir, dir)?;
            return Err(e);
        }
        let differs = match compared {
            Ok(differs) => differs,
            Err(e) => Some(format!("the copy cannot be read: {e}")),
        };
        let Some(differs) = differs else {
            tracing::warn!(ledger = %dir.display(), "finishing a compaction that was cut off");
            swap_and_close(dir, held)?;
            return finish_swap(dir);
        };
        close(held, dir, dir)?;
        outdated(dir, &differs)
    } else {
        remove_copy(dir)
    }
}

/// Removes a copy marked whole that is not the ledger's (`why`).
fn outdated(dir: &Path, why: &str) -> Result<(), LedgerError> {
    tracing::warn!(
        ledger = %dir.display(),
        "the ledger was written after a compaction's copy of it was made ({why}): the copy is \
         removed, the ledger kept as it is"
    );
    remove_copy(dir)
}

/// Copies every tree of `db` into a new sled store at `copy`, makes it
/// durable, and checks, opened again from its file, that it holds every
/// key and value `db` holds and no other; the copy's bytes on disk.
fn copy_verified(db: &sled::Db, copy: &Path, dir: &Path) -> Result<u64, LedgerError> {
    let refused = |reason: String| LedgerError::Compaction {
        path: dir.to_owned(),
        reason,
    };
    if exists(copy)? {
        fs::remove_dir_all(copy).map_err(files("remove an earlier copy", copy))?;
    }
    let new = open_sled(copy)?;
    let names = db.tree_names();
    for name in &names {
        let (from, to) = (db.open_tree(name)?, new.open_tree(name)?);
        let mut batch = sled::Batch::default();
        let mut held = 0;
        for item in from.iter() {
            let (key, value) = item?;
            batch.insert(key, value);
            held += 1;
            if held % COPY_BATCH == 0 {
                to.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(batch)?;
    }
    new.flush()?;
    let log = copy.join(SLED_LOG);
    File::open(&log)
        .and_then(|f| f.sync_all())
        .map_err(files("sync the copy", &log))?;
    sync_dir(copy)?;
    drop(new);
    // Read back from the file, not from what sled still holds in memory.
    let new = open_sled_waiting(copy)?;
    if let Some(differs) = difference(db, &new)? {
        return Err(refused(differs));
    }
    let size = new.size_on_disk()?;
    close(new, copy, dir)
        .map_err(|_| refused("the copy's store did not let go of its file".into()))?;
    // The swap moves `db` alone: a copy with page fragments in blob files
    // of their own (over a quarter of a segment; an entry is a few KB) is
    // refused.
    let blobs = copy.join(BLOBS);
    if exists(&blobs)?
        && fs::read_dir(&blobs)
            .map_err(files("read", &blobs))?
            .next()
            .is_some()
    {
        return Err(refused(
            "sled keeps some of its pages in blob files of their own".into(),
        ));
    }
    Ok(size)
}

/// How the store `theirs` differs from `ours`, if it does: their trees,
/// or a tree's keys or values.
fn difference(theirs: &sled::Db, ours: &sled::Db) -> Result<Option<String>, LedgerError> {
    let mut names = theirs.tree_names();
    let mut copied = ours.tree_names();
    names.sort();
    copied.sort();
    if copied != names {
        return Ok(Some("the copy does not hold the ledger's trees".into()));
    }
    for name in &names {
        let (held, copied) = (theirs.open_tree(name)?, ours.open_tree(name)?);
        let name = String::from_utf8_lossy(name);
        if held.len() != copied.len() {
            return Ok(Some(format!(
                "the copy of tree {name} holds {} keys, the ledger {}",
                copied.len(),
                held.len()
            )));
        }
        let (mut held, mut copied) = (held.iter(), copied.iter());
        loop {
            match (held.next().transpose()?, copied.next().transpose()?) {
                (None, None) => break,
                (a, b) if a == b => {}
                _ => {
                    return Ok(Some(format!(
                        "the copy of tree {name} differs from the ledger"
                    )))
                }
            }
        }
    }
    Ok(None)
}

/// Closes `store`, opened from `at`, and waits for sled's threads to let
/// go of its file: they do so a moment on, and once its lock is had
/// nothing of the store is left to write.
fn close(store: sled::Db, at: &Path, dir: &Path) -> Result<(), LedgerError> {
    let log = at.join(SLED_LOG);
    let file = File::open(&log).map_err(files("open", &log))?;
    drop(store);
    drop(lock_waiting(file, &log, dir, LOCK_RELEASE_WAIT)?);
    Ok(())
}

/// Removes a copy that is not to be swapped in: its mark first, so that a
/// removal cut off part way never leaves a mark without the copy's file,
/// which would read as a rename done.
fn remove_copy(dir: &Path) -> Result<(), LedgerError> {
    let copy = dir.join(COPY_DIR);
    let whole = copy.join(WHOLE);
    if exists(&whole)? {
        fs::remove_file(&whole).map_err(files("remove the mark", &whole))?;
        sync_dir(&copy)?;
    }
    fs::remove_dir_all(&copy).map_err(files("remove the copy", &copy))?;
    sync_dir(dir)
}

/// Steps 3 and 4 of the module docs: the swap with the old store (`old`,
/// of the ledger's file) still open, holding sled's lock on the file the
/// rename replaces, then the store closed and let go of, whether the swap
/// went through or not: until then its threads may remove its blobs by
/// their paths.
fn swap_and_close<T>(dir: &Path, old: T) -> Result<(), LedgerError> {
    let log = dir.join(SLED_LOG);
    let file = File::open(&log).map_err(files("open", &log))?;
    let swapped = swap(dir);
    drop(old);
    // Once swapped, the store is gone from the directory and will let go:
    // it is waited for past a busy moment, as the lock that keeps others
    // out is given up after.
    let wait = match swapped {
        Ok(()) => OLD_STORE_WAIT,
        Err(_) => LOCK_RELEASE_WAIT,
    };
    let let_go = lock_waiting(file, &log, dir, wait);
    swapped?;
    drop(let_go?);
    Ok(())
}

/// Step 3 of the module docs: the copy's file in place of the ledger's.
fn swap(dir: &Path) -> Result<(), LedgerError> {
    for item in fs::read_dir(dir).map_err(files("read", dir))? {
        let path = item.map_err(files("read", dir))?.path();
        let snapshot = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(SNAPSHOT_PREFIX));
        if snapshot {
            fs::remove_file(&path).map_err(files("remove the snapshot", &path))?;
        }
    }
    sync_dir(dir)?;
    let (new_log, log) = (dir.join(COPY_DIR).join(SLED_LOG), dir.join(SLED_LOG));
    fs::rename(&new_log, &log).map_err(files("move the copy's file over", &log))?;
    sync_dir(dir)
}

/// Step 5 of the module docs, the old store gone.
fn finish_swap(dir: &Path) -> Result<(), LedgerError> {
    let blobs = dir.join(BLOBS);
    if exists(&blobs)? {
        for item in fs::read_dir(&blobs).map_err(files("read", &blobs))? {
            let path = item.map_err(files("read", &blobs))?.path();
            // Gone already is done: a store cut off closing removes its own.
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(files("remove the old blob", &path)(e))
                }
                _ => {}
            }
        }
        sync_dir(&blobs)?;
    }
    let copy = dir.join(COPY_DIR);
    fs::remove_dir_all(&copy).map_err(files("remove the copy", &copy))?;
    sync_dir(dir)
}

/// What names the file at `path` as it stands: its device and inode, its
/// length and its modification time.
fn identity(path: &Path) -> Result<String, LedgerError> {
    use std::os::unix::fs::MetadataExt as _;
    let held = fs::metadata(path).map_err(files("look at", path))?;
    Ok(format!(
        "{} {} {} {}.{:09}",
        held.dev(),
        held.ino(),
        held.len(),
        held.mtime(),
        held.mtime_nsec()
    ))
}

fn exists(path: &Path) -> Result<bool, LedgerError> {
    path.try_exists().map_err(files("look for", path))
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(files("sync the directory", dir))
}

fn files(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LedgerError {
    let path: PathBuf = path.to_owned();
    move |source| LedgerError::Files {
        doing,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Dump = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

    /// Every tree's keys and values, in order, as `Ledger::open` finds
    /// them.
    fn dump(dir: &Path) -> Dump {
        dump_of(&Ledger::open(dir).expect("opens"))
    }

    fn dump_of(ledger: &Ledger) -> Dump {
        dump_of_db(ledger.db())
    }

    fn dump_of_db(db: &sled::Db) -> Dump {
        let mut names = db.tree_names();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).expect("tree");
                let items = tree
                    .iter()
                    .map(|item| {
                        let (k, v) = item.expect("reads");
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (name.to_vec(), items)
            })
            .collect()
    }

    /// A ledger in `dir` that held `written` keys of 500 bytes over four
    /// trees and keeps one in `keep_every`: a pruned ledger's file. sled
    /// writes its snapshot when it next opens it.
    fn pruned_ledger(dir: &Path, written: usize, keep_every: usize) {
        let ledger = Ledger::open(dir).expect("opens");
        let trees: Vec<_> = (0..4)
            .map(|t| ledger.db().open_tree(format!("entries-{t}")).expect("tree"))
            .collect();
        for i in 0..written {
            let value = vec![u8::try_from(i % 251).expect("small"); 500];
            trees[i % 4]
                .insert(format!("command-{i:08}"), value)
                .expect("inserts");
        }
        ledger.flush().expect("flushes");
        for i in (0..written).filter(|i| i % keep_every != 0) {
            trees[i % 4]
                .remove(format!("command-{i:08}"))
                .expect("removes");
        }
        ledger.flush().expect("flushes");
    }

    fn snapshots(dir: &Path) -> usize {
        fs::read_dir(dir)
            .expect("reads")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .starts_with(SNAPSHOT_PREFIX)
            })
            .count()
    }

    #[test]
    fn a_pruned_ledger_compacts_to_its_live_size_and_keeps_every_key_and_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        pruned_ledger(dir.path(), 40_000, 100);
        let held = dump(dir.path());
        assert!(snapshots(dir.path()) > 0, "sled left a snapshot to remove");
        // A blob of the old file's, which the new one must not find.
        let old_blob = dir.path().join(BLOBS).join("4096");
        fs::write(&old_blob, b"an old page").expect("writes");
        let done = compact(dir.path()).expect("compacts");
        assert!(!old_blob.exists(), "the old file's blobs are gone");
        assert_eq!(
            snapshots(dir.path()),
            0,
            "the old file's snapshots are gone"
        );
        assert!(
            done.after * 4 < done.before,
            "gave back most of the file: {done:?}"
        );
        assert!(!dir.path().join(COPY_DIR).exists(), "the copy is gone");
        assert_eq!(dump(dir.path()), held);
        // And it is a ledger that goes on being written.
        let ledger = Ledger::open(dir.path()).expect("opens");
        ledger
            .db()
            .open_tree("entries-0")
            .expect("tree")
            .insert("after", "compaction")
            .expect("inserts");
        ledger.flush().expect("flushes");
        drop(ledger);
        let keys =
            |dump: &Dump| -> Vec<usize> { dump.iter().map(|(_, items)| items.len()).collect() };
        let mut more = keys(&held);
        let first = held
            .iter()
            .position(|(name, _)| name == b"entries-0")
            .expect("held");
        more[first] += 1;
        assert_eq!(keys(&dump(dir.path())), more);
    }

    #[test]
    fn a_stop_compacts_only_a_ledger_mostly_garbage_and_large() {
        assert!(pruned_enough(1_000_000, 64), "a pass after a long stop");
        assert!(!pruned_enough(0, 0), "no pass");
        assert!(!pruned_enough(6, 1_000), "an hourly pass");
        let mib = 1 << 20;
        assert!(!worth_compacting(64 * mib, 0), "small");
        assert!(worth_compacting(100 * mib, 10 * mib), "ten times");
        assert!(!worth_compacting(100 * mib, 20 * mib), "as sled keeps it");
        // Below the least size, and above it (a smaller least, here).
        let dir = tempfile::tempdir().expect("tempdir");
        pruned_ledger(dir.path(), 40_000, 100);
        let held = dump(dir.path());
        assert_eq!(compact_if_worth(dir.path()).expect("looks"), None);
        let done = compact_if_above(dir.path(), mib)
            .expect("looks")
            .expect("compacts");
        assert!(done.after * 4 < done.before, "{done:?}");
        assert_eq!(dump(dir.path()), held);
        // Above it, but every entry live: as sled keeps a ledger in use.
        let live = tempfile::tempdir().expect("tempdir");
        pruned_ledger(live.path(), 40_000, 1);
        assert_eq!(compact_if_above(live.path(), mib).expect("looks"), None);
    }

    #[test]
    fn a_compaction_cut_off_before_its_copy_was_whole_leaves_the_ledger_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        pruned_ledger(dir.path(), 8_000, 10);
        let ledger = Ledger::open(dir.path()).expect("opens");
        copy_verified(ledger.db(), &dir.path().join(COPY_DIR), dir.path()).expect("copies");
        // Written after the copy: only the ledger kept has it.
        let tree = ledger.db().open_tree("entries-0").expect("tree");
        tree.insert("after-the-copy", "kept").expect("inserts");
        ledger.flush().expect("flushes");
        let held = dump_of(&ledger);
        drop((tree, ledger));
        assert_eq!(dump(dir.path()), held);
        assert!(!dir.path().join(COPY_DIR).exists(), "the copy is removed");
    }

    /// Cut off at each point after the copy was marked whole: with every
    /// snapshot left, with the snapshots removed, and after the rename.
    /// And the ledger's file written since the mark, by a hashbuy from
    /// before compaction: the copy is not the ledger any more.
    #[test]
    fn a_compaction_cut_off_after_its_copy_was_whole_is_finished_on_open() {
        let cuts = [
            "marked",
            "snapshots removed",
            "renamed",
            "written since",
            "written since, in the same tick",
        ];
        for cut in cuts {
            let dir = tempfile::tempdir().expect("tempdir");
            pruned_ledger(dir.path(), 20_000, 100);
            let held = dump(dir.path());
            let ledger = Ledger::open(dir.path()).expect("opens");
            let before = ledger.size_on_disk().expect("size");
            let copy = dir.path().join(COPY_DIR);
            copy_verified(ledger.db(), &copy, dir.path()).expect("copies");
            drop(ledger);
            // sled has let go of the old file (and flushed) once its lock is had.
            let log = dir.path().join(SLED_LOG);
            let file = File::open(&log).expect("opens");
            drop(lock_waiting(file, &log, dir.path(), LOCK_RELEASE_WAIT).expect("let go"));
            fs::write(copy.join(WHOLE), identity(&log).expect("names")).expect("marks");
            if cut.starts_with("written since") {
                let older = open_sled_waiting(dir.path()).expect("opens as before");
                let tree = older.open_tree("entries-0").expect("tree");
                tree.insert("written-since", "kept").expect("inserts");
                older.flush().expect("flushes");
                let held = dump_of_db(&older);
                drop(tree);
                close(older, dir.path(), dir.path()).expect("let go");
                if cut.ends_with("tick") {
                    // As a file system that keeps times to the second may
                    // show it: the file named as it was at the mark.
                    fs::write(copy.join(WHOLE), identity(&log).expect("names")).expect("marks");
                }
                assert_eq!(dump(dir.path()), held, "the file written since is kept");
                assert!(!copy.exists(), "the outdated copy is removed");
                continue;
            }
            if cut != "marked" {
                for e in fs::read_dir(dir.path()).expect("reads") {
                    let path = e.expect("entry").path();
                    if path.to_string_lossy().contains(SNAPSHOT_PREFIX) {
                        fs::remove_file(path).expect("removes");
                    }
                }
            }
            if cut == "renamed" {
                fs::rename(copy.join(SLED_LOG), dir.path().join(SLED_LOG)).expect("renames");
            }
            assert_eq!(dump(dir.path()), held, "cut off {cut}");
            assert!(!copy.exists(), "cut off {cut}: the copy is gone");
            let after = Ledger::open(dir.path()).expect("opens");
            assert!(
                after.size_on_disk().expect("size") * 4 < before,
                "cut off {cut}: the compacted file is the one kept"
            );
        }
    }

    /// Another process (a settler, `hashbuy ledger resolve --local-only`)
    /// opening the ledger while a compaction runs: it is told the ledger
    /// is in use after two seconds' wait, and what it writes once in is in
    /// the ledger after, the compacted one.
    #[test]
    fn nothing_written_while_a_compaction_runs_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        pruned_ledger(dir.path(), 8_000, 10);
        let ledger = Ledger::open(dir.path()).expect("opens");
        let sizes = (ledger.size_on_disk().expect("size"), 0);
        let path = dir.path().to_owned();
        let opener = std::sync::Mutex::new(None);
        let elsewhere = || {
            // Kept out for as long as the wait...
            let refused = Ledger::open(dir.path()).map(|_| ()).expect_err("kept out");
            assert!(matches!(refused, LedgerError::InUse { .. }), "{refused}");
            // ...and one that comes now is in once the compaction is done.
            let path = path.clone();
            *opener.lock().expect("unpoisoned") = Some(std::thread::spawn(move || {
                // Tried again while in use, as an operator would: a busy
                // machine may hold the compaction past one wait.
                let began = Instant::now();
                let other = loop {
                    match Ledger::open(&path) {
                        Err(LedgerError::InUse { .. })
                            if began.elapsed() < Duration::from_secs(60) => {}
                        opened => break opened?,
                    }
                };
                let tree = other.db().open_tree("entries-0")?;
                tree.insert("opened-elsewhere", "meanwhile")?;
                other.flush()?;
                Ok::<_, LedgerError>(())
            }));
        };
        compact_open(ledger, dir.path(), sizes, Instant::now(), &elsewhere).expect("compacts");
        let opened = opener
            .into_inner()
            .expect("unpoisoned")
            .expect("started")
            .join()
            .expect("ran");
        let kept = dump(dir.path())
            .iter()
            .flat_map(|(_, items)| items)
            .any(|(k, _)| k == b"opened-elsewhere");
        opened.expect("in once the compaction is done");
        assert!(kept, "what was written once in is kept");
    }

    /// sled keeps a page fragment over a quarter of a segment in a file of
    /// its own, which the swap would not carry: such a ledger is refused,
    /// and left as it was.
    #[test]
    fn a_ledger_with_blobs_is_refused_and_left_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let tree = ledger.db().open_tree("entries-0").expect("tree");
        tree.insert("big", vec![7u8; 300_000]).expect("inserts");
        tree.insert("small", "entry").expect("inserts");
        ledger.flush().expect("flushes");
        drop((tree, ledger));
        let held = dump(dir.path());
        let refused = compact(dir.path()).expect_err("refused");
        assert!(refused.to_string().contains("blob"), "{refused}");
        assert!(!dir.path().join(COPY_DIR).exists(), "the copy is removed");
        assert_eq!(dump(dir.path()), held);
    }

    #[test]
    fn a_ledger_in_use_is_not_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        pruned_ledger(dir.path(), 1_000, 10);
        let held = Ledger::open(dir.path()).expect("opens");
        let refused = compact(dir.path()).expect_err("in use");
        assert!(matches!(refused, LedgerError::InUse { .. }), "{refused}");
        drop(held);
    }
}
