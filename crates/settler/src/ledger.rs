//! The ledger on disk: sled, one tree of entries per input partition (so a
//! partition's history can move to another settler on its own), an index
//! of each user's commands for the limit checks, and each partition's
//! horizon: its floor and the purchases counted past it
//! ([`crate::horizon`]), kept in a tree of their own under the same keys
//! as in the changelog ([`MetaKey`]).
//!
//! Writes are buffered; [`Ledger::flush`] makes everything written so far
//! durable with one sync. The settler writes a batch of changes, flushes
//! once, and only then acts on them (calls the provider, produces acks):
//! group commit, instead of a sync per payment.
//!
//! sled was chosen as an embedded, crash-safe ordered store in pure Rust
//! with atomic batches and explicit flushes, which is all the ledger needs.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbuy_proto::v1::LedgerEntry;
use prost::Message as _;

use hashbuy_kafka::lock;

use crate::counts::{self, Counts};
use crate::entry::Entry;
use crate::frontier::Seen;
use crate::horizon::{self, Bought, LastPass};

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The directory could not be opened as a ledger.
    #[error("cannot open the ledger at {path}: {source}")]
    Open {
        /// The ledger's directory.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
    /// Another process has the ledger open.
    #[error("the ledger at {path} is in use by another process (one settler a ledger directory)")]
    InUse {
        /// The ledger's directory.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("ledger storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The ledger's file could not be synced to disk.
    #[error("cannot sync the ledger file {path} to disk: {source}")]
    Sync {
        /// sled's log file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file or directory of the ledger could not be read, written,
    /// moved or removed.
    #[error("cannot {doing} {path}: {source}")]
    Files {
        /// What was being done.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A compaction's copy did not hold what the ledger holds, or could
    /// not be swapped in; the ledger is left as it was.
    #[error("cannot compact the ledger at {path}: {reason}")]
    Compaction {
        /// The ledger's directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An entry could not be read back.
    #[error("ledger entry {key} is unreadable: {reason}")]
    Corrupt {
        /// The entry's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// How the ledger writes entries, locally and to its changelog. Both are
/// always read ([`decode_entry`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// `hashbuy.v1.LedgerEntry`, about a third of the JSON (the default).
    #[default]
    Protobuf,
    /// JSON, as settlers before protobuf entries wrote and read, for a
    /// group upgraded one settler at a time: an older settler skips a
    /// changelog record it cannot read, so every settler must read
    /// protobuf before any writes it.
    Json,
}

/// The settler's ledger; see the module docs.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    encoding: Encoding,
    /// sled's log file, synced after each flush (see [`Ledger::flush`]).
    log: Arc<LogFile>,
    /// The ledger's own lock (see [`lock_dir`]), held while any clone,
    /// or any [`PartitionLedger`] of it, lives.
    lock: Arc<File>,
    /// Held while a floor or a bucket of counts is read, merged and
    /// written again ([`PartitionLedger::raise`], and the counts'
    /// [`PartitionLedger::forget`]): a restore of an earlier assignment
    /// still raising as a pass raises would otherwise write a bucket
    /// merged on a stale read over the pass's, and lose counts.
    merging: Arc<Mutex<()>>,
    /// sled's blob files synced so far, with the length each had then
    /// ([`Ledger::flush`]).
    synced_blobs: Arc<Mutex<HashMap<std::ffi::OsString, u64>>>,
}

/// sled's log file, opened to be synced.
struct LogFile {
    path: PathBuf,
    file: File,
}

/// The entries of one input partition.
#[derive(Clone)]
pub struct PartitionLedger {
    partition: i32,
    encoding: Encoding,
    entries: sled::Tree,
    users: sled::Tree,
    /// The floor and the [`Bought`] counts' buckets, by their [`MetaKey`]
    /// bytes, and the ledger's local marks.
    meta: sled::Tree,
    /// The ids of the entries with work left (undecided, or not yet
    /// acked), so that a partition starts by reading those alone, however
    /// long its history. A key may outlive its entry's work (a crash
    /// between the two writes); it is dropped when read.
    open: sled::Tree,
    /// The ledger's lock: its trees are the ledger's store, open.
    _lock: Arc<File>,
    /// The ledger's [`Ledger::merging`].
    merging: Arc<Mutex<()>>,
}

/// The local-only mark, in the meta tree, that the `open` index holds
/// every entry with work left (a ledger from before the index gets it
/// built once). Its key begins with a zero byte like the changelog's meta
/// keys but is none of them, and never leaves this ledger.
const OPEN_INDEXED_KEY: &[u8] = b"\0local\0open-indexed";

/// The local-only mark of how far [`PartitionLedger::drop_pruned`] went.
const DROPPED_BELOW_KEY: &[u8] = b"\0local\0dropped-below";

/// The local-only mark that the counts a ledger from before their buckets
/// held one by one are in the buckets
/// ([`PartitionLedger::bucket_loose_counts`]).
const COUNTS_BUCKETED_KEY: &[u8] = b"\0local\0counts-bucketed";

/// The local-only record of the partition's last pruning pass here.
const LAST_PASS_KEY: &[u8] = b"\0local\0last-pass";

/// The beginning of the local-only marks of how far the ledger has taken
/// a changelog in ([`PartitionLedger::changelog_read_through`]), followed
/// by the cluster's id and the topic's name.
const READ_THROUGH_PREFIX: &[u8] = b"\0local\0changelog-read-through\0";

/// How far a partition's ledger holds its changelog: every record below
/// `next` is in the ledger. The last record below it is what a restore
/// finds again before it trusts the mark (see [`crate::frontier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadThrough {
    /// Every record below it is in the ledger.
    pub next: i64,
    /// A record below `next`, the last one read or sent.
    pub last: Seen,
}

/// A partition's floor (see [`crate::horizon`]): commands tweeted before
/// `floor_ms` are stale to every settler, and entries tweeted before
/// `pruned_below_ms` may have been pruned, here or by another owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Floor {
    /// Commands tweeted before it are stale, ms since the epoch.
    pub floor_ms: i64,
    /// Entries tweeted before it may be gone, ms since the epoch.
    pub pruned_below_ms: i64,
}

impl Floor {
    /// The higher of each line of two floors: floors only rise.
    pub fn higher(self, other: Floor) -> Floor {
        Floor {
            floor_ms: self.floor_ms.max(other.floor_ms),
            pruned_below_ms: self.pruned_below_ms.max(other.pruned_below_ms),
        }
    }
}

impl Default for Floor {
    fn default() -> Floor {
        Floor {
            floor_ms: i64::MIN,
            pruned_below_ms: i64::MIN,
        }
    }
}

/// A record of the ledger that is not a command's entry, by its key: keys
/// begin with a zero byte, which command ids never hold, so they share the
/// changelog with the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaKey {
    /// The partition's [`Floor`].
    Floor,
    /// A user's [`Bought`] count of an offer: kept in its bucket
    /// ([`MetaKey::Counts`]). A changelog written before the buckets holds
    /// such records one by one, which a restore still reads.
    Bought {
        /// The user.
        user_id: String,
        /// The offer.
        offer_id: String,
    },
    /// A bucket of [`Bought`] counts ([`crate::counts`]); its number is
    /// written in decimal, so that the key reads as text.
    Counts {
        /// Which ([`crate::counts::bucket_of`]).
        bucket: u16,
    },
}

const FLOOR_KEY: &[u8] = b"\0floor";

/// The key of [`PartitionLedger::changelog_read_through`]'s mark.
fn read_through_key(cluster: &str, topic: &str) -> Vec<u8> {
    let mut key = READ_THROUGH_PREFIX.to_vec();
    key.extend_from_slice(cluster.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key
}
const BOUGHT_PREFIX: &[u8] = b"\0bought\0";
const COUNTS_PREFIX: &[u8] = b"\0counts\0";

impl MetaKey {
    /// The key's bytes, in the ledger and the changelog.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            MetaKey::Floor => FLOOR_KEY.to_vec(),
            MetaKey::Bought { user_id, offer_id } => {
                let mut key = BOUGHT_PREFIX.to_vec();
                key.extend_from_slice(user_id.as_bytes());
                key.push(0);
                key.extend_from_slice(offer_id.as_bytes());
                key
            }
            MetaKey::Counts { bucket } => {
                let mut key = COUNTS_PREFIX.to_vec();
                key.extend_from_slice(bucket.to_string().as_bytes());
                key
            }
        }
    }

    /// The meta key a record's key is, if it is one (`None`: a command's
    /// entry, or a key of no known kind).
    pub fn parse(key: &[u8]) -> Option<MetaKey> {
        if key == FLOOR_KEY {
            return Some(MetaKey::Floor);
        }
        if let Some(bucket) = key.strip_prefix(COUNTS_PREFIX) {
            return Some(MetaKey::Counts {
                bucket: std::str::from_utf8(bucket).ok()?.parse().ok()?,
            });
        }
        let rest = key.strip_prefix(BOUGHT_PREFIX)?;
        let split = rest.iter().position(|&b| b == 0)?;
        Some(MetaKey::Bought {
            user_id: String::from_utf8(rest[..split].to_vec()).ok()?,
            offer_id: String::from_utf8(rest[split + 1..].to_vec()).ok()?,
        })
    }

    /// Whether a record's key is meant as a meta key (begins with a zero
    /// byte), known or not.
    pub fn is_meta(key: &[u8]) -> bool {
        key.first() == Some(&0)
    }
}

/// What a pruning pass changes in a partition's ledger: written together
/// ([`PartitionLedger::raise`]) before any entry goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raise {
    /// The new floor.
    pub floor: Floor,
    /// The counts that changed, with their values.
    pub bought: Vec<(MetaKey, Bought)>,
}

impl Raise {
    /// Adds `other` to this raise: the higher of each floor, and its counts
    /// (which [`PartitionLedger::raise`] merges by their maxima, so the
    /// order they are added in does not matter).
    pub fn merge(&mut self, other: Raise) {
        self.floor = self.floor.higher(other.floor);
        self.bought.extend(other.bought);
    }
}

/// A ledger record by its key and value bytes, as the changelog carries it.
pub type Record = (Vec<u8>, Vec<u8>);

/// A ledger record by its key and value bytes, or its tombstone (no
/// value): what a pass sends the changelog.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// A pruning pass's plan for a partition ([`PartitionLedger::plan`]).
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// What to write first.
    pub raise: Raise,
    /// The entries to delete then, by command id with their users.
    pub doomed: Vec<(String, String)>,
    /// The counts to delete then, their offers ended below the floor
    /// ([`horizon::ended_as_carried`]), with the value this pass took for
    /// one it counted purchases into (to be written instead, should the
    /// offer turn out on sale again before the deletes).
    pub outlived: Vec<(MetaKey, Option<Bought>)>,
    /// Entries the partition keeps.
    pub kept: usize,
}

/// Whether the live catalog shows an offer ended from a floor on:
/// `ended(offer_id, floor_ms)` (`hashbuy_core::tables::Catalog::ended_from`).
pub type Ended = dyn Fn(&str, i64) -> bool;

impl PrunePlan {
    /// Keeps the counts to delete whose offers `ended(offer_id,
    /// floor_ms)` no longer says ended (asked again just before the pass
    /// writes): a stored one is left as it is, one this pass counted
    /// purchases into is written with the rest instead, as the entries it
    /// counts are deleted all the same.
    pub fn keep_on_sale(&mut self, ended: &Ended) {
        let floor_ms = self.raise.floor.floor_ms;
        let (outlived, on_sale): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outlived)
            .into_iter()
            .partition(|(count, _)| match count {
                MetaKey::Bought { offer_id, .. } => ended(offer_id, floor_ms),
                MetaKey::Floor | MetaKey::Counts { .. } => false,
            });
        self.outlived = outlived;
        self.raise.bought.extend(
            on_sale
                .into_iter()
                .filter_map(|(count, taken)| taken.map(|taken| (count, taken))),
        );
    }
}

const ENTRIES_PREFIX: &str = "entries-";

/// The file in a sled directory that holds its log (sled 0.34).
pub(crate) const SLED_LOG: &str = "db";

/// How long [`Ledger::open`] waits for a lock that is held: long past the
/// moments sled's threads take to let go of a dropped ledger's, and short
/// beside a settler's lifetime, which holds it for good.
pub(crate) const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How often [`Ledger::open`] tries a held lock again.
const LOCK_RETRY_EVERY: Duration = Duration::from_millis(20);

/// Opens sled in `dir` once, naming a lock held elsewhere as such.
pub(crate) fn open_sled(dir: &Path) -> Result<sled::Db, LedgerError> {
    sled::Config::new()
        .path(dir)
        // Durability comes from the settler's own flushes, one a batch.
        .flush_every_ms(None)
        // Entries are written once or twice and read back rarely: a
        // small cache (sled's default is 1 GiB) keeps the process lean.
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .map_err(|source| match &source {
            // sled reports a lock held elsewhere in words only, the OS
            // error's kind among them: a file system that cannot lock
            // (ENOLCK) is not a ledger in use, and is not waited for.
            sled::Error::Io(e)
                if e.to_string().contains("could not acquire lock")
                    && e.to_string().contains("WouldBlock") =>
            {
                LedgerError::InUse {
                    path: dir.to_owned(),
                }
            }
            _ => LedgerError::Open {
                path: dir.to_owned(),
                source,
            },
        })
}

/// The lock a process holds while it has the ledger open: on the ledger's
/// directory itself, which is never moved nor removed, where sled's lock
/// is on `db`, the file a compaction replaces ([`crate::compact`]): a
/// process that opened the old `db` just before would lock a file no
/// longer the ledger's.
fn lock_dir(dir: &Path) -> Result<Arc<File>, LedgerError> {
    let handle = File::open(dir).map_err(|source| LedgerError::Open {
        path: dir.to_owned(),
        source: sled::Error::Io(source),
    })?;
    Ok(Arc::new(lock_waiting(handle, dir, dir, LOCK_RELEASE_WAIT)?))
}

/// Locks `file` (as sled does, with `flock`), waiting up to `wait`;
/// [`LedgerError::InUse`] for `dir` after that.
pub(crate) fn lock_waiting(
    file: File,
    path: &Path,
    dir: &Path,
    wait: Duration,
) -> Result<File, LedgerError> {
    use fs2::FileExt as _;
    let began = Instant::now();
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if began.elapsed() >= wait {
                    return Err(LedgerError::InUse {
                        path: dir.to_owned(),
                    });
                }
                std::thread::sleep(LOCK_RETRY_EVERY);
            }
            Err(source) => {
                return Err(LedgerError::Files {
                    doing: "lock",
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// [`open_sled`], waiting up to [`LOCK_RELEASE_WAIT`] for a lock held.
pub(crate) fn open_sled_waiting(dir: &Path) -> Result<sled::Db, LedgerError> {
    let began = Instant::now();
    loop {
        match open_sled(dir) {
            Err(LedgerError::InUse { .. }) if began.elapsed() < LOCK_RELEASE_WAIT => {
                std::thread::sleep(LOCK_RETRY_EVERY);
            }
            opened => return opened,
        }
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`.
    ///
    /// A ledger that is in use is waited for up to two seconds before
    /// [`LedgerError::InUse`]: sled lets go of its lock from its own
    /// threads some moments after a ledger is dropped (sled issues 1234 and
    /// 1289), so a ledger closed and opened again in one process (a bench
    /// reading a stopped settler's ledger and then restarting it) would
    /// otherwise find it in use by itself.
    ///
    /// A compaction cut off part way ([`crate::compact`]) is finished or
    /// undone first.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let open_failed = |source| LedgerError::Open {
            path: dir.to_owned(),
            source: sled::Error::Io(source),
        };
        std::fs::create_dir_all(dir).map_err(open_failed)?;
        let lock = lock_dir(dir)?;
        crate::compact::finish_interrupted(dir)?;
        let db = open_sled_waiting(dir)?;
        // The directory entries of a new ledger's files are synced once, so
        // a power cut cannot lose the files themselves.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(open_failed)?;
        let path = dir.join(SLED_LOG);
        let file = File::open(&path).map_err(open_failed)?;
        Ok(Ledger {
            db,
            encoding: Encoding::default(),
            log: Arc::new(LogFile { path, file }),
            lock,
            merging: Arc::default(),
            synced_blobs: Arc::default(),
        })
    }

    /// The ledger, writing entries in `encoding` from now on.
    pub fn with_encoding(self, encoding: Encoding) -> Ledger {
        Ledger { encoding, ..self }
    }

    /// The entries of input partition `partition`. Counts a ledger from
    /// before their buckets holds one by one are copied into them first.
    pub fn partition(&self, partition: i32) -> Result<PartitionLedger, LedgerError> {
        let ledger = PartitionLedger {
            partition,
            encoding: self.encoding,
            entries: self.db.open_tree(format!("{ENTRIES_PREFIX}{partition}"))?,
            users: self.db.open_tree(format!("users-{partition}"))?,
            meta: self.db.open_tree(format!("meta-{partition}"))?,
            open: self.db.open_tree(format!("open-{partition}"))?,
            _lock: Arc::clone(&self.lock),
            merging: Arc::clone(&self.merging),
        };
        ledger.bucket_loose_counts()?;
        Ok(ledger)
    }

    /// The partitions the ledger has entries for, in order.
    pub fn partitions(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|name| {
                std::str::from_utf8(name)
                    .ok()?
                    .strip_prefix(ENTRIES_PREFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        partitions.sort_unstable();
        partitions
    }

    /// The bytes of the keys and values of every tree: what the ledger
    /// would take on disk with nothing added, to set beside
    /// [`Ledger::size_on_disk`].
    pub fn live_bytes(&self) -> Result<u64, LedgerError> {
        let mut bytes = 0;
        for name in self.db.tree_names() {
            for item in self.db.open_tree(name)?.iter() {
                let (key, value) = item?;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        Ok(bytes)
    }

    /// The sled store beneath, for [`crate::compact`] to copy.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The ledger's own lock, for [`crate::compact`] to hold past the
    /// ledger's close.
    pub(crate) fn lock(&self) -> Arc<File> {
        Arc::clone(&self.lock)
    }

    /// The bytes of the ledger's files on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64, LedgerError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Makes every write so far durable (one sync); how long it took.
    ///
    /// sled's flush writes its log and waits with `sync_file_range`, which
    /// neither flushes the disk's write cache nor records the file's new
    /// length: a process crash loses nothing after it, a power cut could.
    /// `fdatasync` on the log file completes it (measured here: about
    /// 0.2 ms, once a batch). sled writes a page over a quarter of its
    /// segment (128 KiB) to a blob file of its own, and syncs none: those
    /// written since the last flush are synced first (a page of buckets of
    /// counts grows that large at some 50,000 counts a partition).
    pub fn flush(&self) -> Result<Duration, LedgerError> {
        let began = Instant::now();
        // Before sled's flush as well, which makes the log that points to
        // them durable (as far as `sync_file_range` goes), and after it,
        // for those it wrote meanwhile.
        self.sync_blobs()?;
        self.db.flush()?;
        self.sync_blobs()?;
        self.log
            .file
            .sync_data()
            .map_err(|source| LedgerError::Sync {
                path: self.log.path.clone(),
                source,
            })?;
        Ok(began.elapsed())
    }
}

impl Ledger {
    /// Syncs the blob files sled wrote since the last call (or that grew
    /// since: sled writes one in parts), and their directory; those it
    /// removed since are forgotten.
    fn sync_blobs(&self) -> Result<(), LedgerError> {
        let dir = self.log.path.with_file_name("blobs");
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| LedgerError::Sync { path, source }
        };
        let listed = match std::fs::read_dir(&dir) {
            Ok(listed) => listed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(&dir)(e)),
        };
        let mut synced = lock(&self.synced_blobs);
        let mut present = HashMap::new();
        let mut new = false;
        for item in listed {
            let item = item.map_err(failed(&dir))?;
            let (name, path) = (item.file_name(), item.path());
            let synced_len = synced.get(&name).copied();
            let len = match File::open(&path).and_then(|file| {
                let len = file.metadata()?.len();
                if synced_len != Some(len) {
                    file.sync_data()?;
                }
                Ok(len)
            }) {
                Ok(len) => len,
                // Removed by sled meanwhile: nothing left to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(&path)(e)),
            };
            new |= synced_len != Some(len);
            present.insert(name, len);
        }
        if new {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(failed(&dir))?;
        }
        *synced = present;
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(value).map_err(|e| LedgerError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// `floor` as the changelog carries it; none for a floor never raised.
fn floor_record(floor: &Floor) -> Result<Option<Record>, LedgerError> {
    if floor.floor_ms == i64::MIN {
        return Ok(None);
    }
    Ok(Some((FLOOR_KEY.to_vec(), to_json(FLOOR_KEY, floor)?)))
}

/// A meta record as the changelog carries it, decoded.
pub fn decode_meta<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, LedgerError> {
    decode(key, bytes)
}

/// An entry as the ledger stores it, and its changelog carries it:
/// protobuf (`hashbuy.v1.LedgerEntry`), about a third the size of the JSON
/// that ledgers written before it hold ([`decode_entry`] reads both).
pub fn encode(entry: &Entry, encoding: Encoding) -> Result<sled::IVec, LedgerError> {
    match encoding {
        Encoding::Protobuf => Ok(sled::IVec::from(LedgerEntry::from(entry).encode_to_vec())),
        Encoding::Json => to_json(entry.command_id().as_bytes(), entry).map(sled::IVec::from),
    }
}

/// An entry as stored: protobuf, or JSON (its first byte `{`, which no
/// protobuf entry begins with: its first field is the command, tag 1).
pub fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry, LedgerError> {
    let corrupt = |reason: String| LedgerError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()));
    }
    let stored = LedgerEntry::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    Entry::try_from(stored).map_err(|e| corrupt(e.to_owned()))
}

/// A bucket of counts as stored, and as the changelog carries it
/// ([`crate::counts`]).
pub fn decode_counts(key: &[u8], bytes: &[u8]) -> Result<Counts, LedgerError> {
    counts::decode(bytes).map_err(counts_unreadable(key))
}

/// A bucket of counts at `key` that cannot be read, and why.
fn counts_unreadable(key: &[u8]) -> impl Fn(String) -> LedgerError + '_ {
    |reason| LedgerError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// Whether an entry has work left: undecided, or decided and not yet
/// acked.
fn has_work_left(entry: &Entry) -> bool {
    !entry.state.is_terminal() || entry.acked_ms.is_none()
}

/// The index key of a user's command: the user id, a zero byte (ids have
/// none), the command id.
fn user_key(user_id: &str, command_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 1 + command_id.len());
    key.extend_from_slice(user_id.as_bytes());
    key.push(0);
    key.extend_from_slice(command_id.as_bytes());
    key
}

impl PartitionLedger {
    /// The input partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// How its entries are written.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The entry of a command, if there is one.
    pub fn get(&self, command_id: &str) -> Result<Option<Entry>, LedgerError> {
        self.entries
            .get(command_id)?
            .map(|bytes| decode_entry(command_id.as_bytes(), &bytes))
            .transpose()
    }

    /// Writes an entry (durable at the next [`Ledger::flush`]); the entry
    /// as stored, which the changelog carries too.
    pub fn put(&self, entry: &Entry) -> Result<sled::IVec, LedgerError> {
        let bytes = encode(entry, self.encoding)?;
        // The index first: an index key whose entry is missing (a crash in
        // between) is skipped when read. An entry already stored has its
        // key, and a lookup costs far less than an insert.
        if !self.entries.contains_key(entry.command_id())? {
            self.users.insert(
                user_key(&entry.command.user_id, entry.command_id()),
                &[] as &[u8],
            )?;
        }
        // An entry with work left is in the open index before it is
        // stored, and leaves it only once stored done: a crash in between
        // leaves a key too many, never one too few.
        let id = entry.command_id();
        if has_work_left(entry) {
            self.open.insert(id, &[] as &[u8])?;
            self.entries.insert(id, bytes.clone())?;
        } else {
            self.entries.insert(id, bytes.clone())?;
            self.open.remove(id)?;
        }
        Ok(bytes)
    }

    /// A user's entries in this partition.
    pub fn history(&self, user_id: &str) -> Result<Vec<Entry>, LedgerError> {
        let mut prefix = user_id.as_bytes().to_vec();
        prefix.push(0);
        let mut entries = Vec::new();
        for key in self.users.scan_prefix(&prefix).keys() {
            let key = key?;
            let command_id = &key[prefix.len()..];
            if let Some(bytes) = self.entries.get(command_id)? {
                entries.push(decode_entry(command_id, &bytes)?);
            }
        }
        Ok(entries)
    }

    /// Every entry, by command id.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, LedgerError>> + '_ {
        self.entries.iter().map(|item| {
            let (key, bytes) = item?;
            decode_entry(&key, &bytes)
        })
    }

    /// The partition's floor (the lowest possible when never raised).
    pub fn floor(&self) -> Result<Floor, LedgerError> {
        self.meta
            .get(FLOOR_KEY)?
            .map(|bytes| decode(FLOOR_KEY, &bytes))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The partition's floor as the changelog carries it (none when never
    /// raised): what a pass sends, for sending again.
    pub fn floor_record(&self) -> Result<Option<Record>, LedgerError> {
        floor_record(&self.floor()?)
    }

    /// A user's purchases of an offer counted past the floor (none, counted
    /// from the beginning of time, when never counted).
    pub fn bought(&self, user_id: &str, offer_id: &str) -> Result<Bought, LedgerError> {
        let key = MetaKey::Counts {
            bucket: counts::bucket_of(user_id),
        }
        .to_bytes();
        let Some(bytes) = self.meta.get(&key)? else {
            return Ok(Bought::default());
        };
        // A bucket holds its users' ids as they are (protobuf strings): one
        // without the id has no count of the user, told without decoding
        // the bucket, as for most purchases (the limit check asks this of
        // every new command).
        if memchr::memmem::find(&bytes, user_id.as_bytes()).is_none() {
            return Ok(Bought::default());
        }
        counts::find(&bytes, user_id, offer_id)
            .map(Option::unwrap_or_default)
            .map_err(counts_unreadable(&key))
    }

    /// The counts of a bucket (none when it was never written).
    fn counts_of(&self, bucket: u16) -> Result<Counts, LedgerError> {
        let key = MetaKey::Counts { bucket }.to_bytes();
        match self.meta.get(&key)? {
            Some(bytes) => decode_counts(&key, &bytes),
            None => Ok(Counts::new()),
        }
    }

    /// The bucket `user_id`'s counts are in, among `held` (read into it
    /// when first asked for), and whether it has changed since.
    fn bucket_in<'h>(
        &self,
        held: &'h mut BTreeMap<u16, (Counts, bool)>,
        user_id: &str,
    ) -> Result<&'h mut (Counts, bool), LedgerError> {
        let bucket = counts::bucket_of(user_id);
        Ok(match held.entry(bucket) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((self.counts_of(bucket)?, false))
            }
        })
    }

    /// Merges `raised` (user, offer, count) into their buckets, by the
    /// maximum of each field, in `batch` (the buckets changed). The caller
    /// holds [`Ledger::merging`] until the batch is applied.
    fn merge_counts<'a>(
        &self,
        raised: impl IntoIterator<Item = (&'a str, &'a str, Bought)>,
        batch: &mut sled::Batch,
    ) -> Result<(), LedgerError> {
        let mut held = BTreeMap::new();
        for (user_id, offer_id, bought) in raised {
            let (counts, changed) = self.bucket_in(&mut held, user_id)?;
            let key = (user_id.to_owned(), offer_id.to_owned());
            let base = counts.get(&key).copied().unwrap_or_default();
            // Counts only grow with their line: a count taken on a stale
            // base (two passes overlapping) never lowers the one here.
            let merged = base.higher(bought);
            if merged != base {
                counts.insert(key, merged);
                *changed = true;
            }
        }
        for (bucket, (counts, changed)) in held {
            if changed {
                let key = MetaKey::Counts { bucket }.to_bytes();
                batch.insert(key, counts::encode(&counts));
            }
        }
        Ok(())
    }

    /// Copies the counts a ledger from before their buckets holds one by
    /// one into the buckets, once (a local mark says so), a bucket at a
    /// time. They are left where they are and never read again here: a
    /// hashbuy from before the buckets reads them alone, so one started on
    /// this ledger again still has the counts kept before this one ran
    /// (not those kept since, which it cannot read).
    fn bucket_loose_counts(&self) -> Result<(), LedgerError> {
        if self.meta.contains_key(COUNTS_BUCKETED_KEY)? {
            return Ok(());
        }
        let mut loose: BTreeMap<u16, Vec<(String, String, Bought)>> = BTreeMap::new();
        for item in self.meta.scan_prefix(BOUGHT_PREFIX) {
            let (key, bytes) = item?;
            if let Some(MetaKey::Bought { user_id, offer_id }) = MetaKey::parse(&key) {
                let bought = decode::<Bought>(&key, &bytes)?;
                loose
                    .entry(counts::bucket_of(&user_id))
                    .or_default()
                    .push((user_id, offer_id, bought));
            }
        }
        let _merging = lock(&self.merging);
        for held in loose.values() {
            let mut batch = sled::Batch::default();
            self.merge_counts(
                held.iter().map(|(user_id, offer_id, bought)| {
                    (user_id.as_str(), offer_id.as_str(), *bought)
                }),
                &mut batch,
            )?;
            self.meta.apply_batch(batch)?;
        }
        // Marked once every bucket is written: a crash before copies them
        // again, which changes nothing (a merge keeps the higher).
        self.meta.insert(COUNTS_BUCKETED_KEY, &[] as &[u8])?;
        Ok(())
    }

    /// Writes a floor and counts at once (durable at the next
    /// [`Ledger::flush`]), never lowering what is there: a value from the
    /// changelog older than the local one is ignored. What goes to the
    /// changelog then is the floor and the buckets as they stand
    /// ([`PartitionLedger::floor_record`],
    /// [`PartitionLedger::count_records`]), changed or not.
    pub fn raise(&self, raise: &Raise) -> Result<(), LedgerError> {
        let _merging = lock(&self.merging);
        let mut batch = sled::Batch::default();
        let higher = self.floor()?.higher(raise.floor);
        if let Some((key, value)) = floor_record(&higher)? {
            batch.insert(key, value);
        }
        // A raise can hold several of one key (a restore's, in the
        // changelog's order): each is merged with those before it, not only
        // with the stored one.
        self.merge_counts(
            raise.bought.iter().filter_map(|(key, bought)| match key {
                MetaKey::Bought { user_id, offer_id } => {
                    Some((user_id.as_str(), offer_id.as_str(), *bought))
                }
                MetaKey::Floor | MetaKey::Counts { .. } => None,
            }),
            &mut batch,
        )?;
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Deletes a command's entry and its index key, if there.
    pub fn remove(&self, command_id: &str, user_id: &str) -> Result<(), LedgerError> {
        self.entries.remove(command_id)?;
        self.users.remove(user_key(user_id, command_id))?;
        self.open.remove(command_id)?;
        Ok(())
    }

    /// Deletes the entries tweeted before the partition's `pruned_below_ms`
    /// that are not held for review: another owner pruned them, or
    /// decided them and will, so an undecided one here is an old copy that
    /// must not be resumed (see [`crate::horizon`]). How many went.
    ///
    /// Done once for each rise of the line: a local mark says how far it
    /// was done, so a restore that raised the line and stopped before this
    /// (the raise made durable by another partition's flush) is finished
    /// by the next.
    pub fn drop_pruned(&self) -> Result<usize, LedgerError> {
        let below = self.floor()?.pruned_below_ms;
        let dropped_below = self
            .meta
            .get(DROPPED_BELOW_KEY)?
            .map(|bytes| decode::<i64>(DROPPED_BELOW_KEY, &bytes))
            .transpose()?
            .unwrap_or(i64::MIN);
        if below <= dropped_below {
            return Ok(0);
        }
        let gone = self.drop_below(below)?;
        self.mark_dropped(below)?;
        Ok(gone)
    }

    /// Records that the entries below `below` were dropped, so that
    /// [`drop_pruned`](Self::drop_pruned) does not read them again: what a
    /// pruning pass says once it deleted what lay below its own line
    /// (nothing undecided lies there, as its plan stops at the oldest).
    pub fn mark_dropped(&self, below: i64) -> Result<(), LedgerError> {
        self.meta
            .insert(DROPPED_BELOW_KEY, to_json(DROPPED_BELOW_KEY, &below)?)?;
        Ok(())
    }

    /// The partition's last pruning pass here, if one ended (`None` too
    /// for a record it cannot read: a pass then runs at once).
    pub fn last_pass(&self) -> Result<Option<LastPass>, LedgerError> {
        Ok(self
            .meta
            .get(LAST_PASS_KEY)?
            .and_then(|bytes| decode(LAST_PASS_KEY, &bytes).ok()))
    }

    /// Records the partition's last pruning pass here (durable at the next
    /// [`Ledger::flush`]).
    pub fn set_last_pass(&self, pass: &LastPass) -> Result<(), LedgerError> {
        self.meta
            .insert(LAST_PASS_KEY, to_json(LAST_PASS_KEY, pass)?)?;
        Ok(())
    }

    /// Where a restore of this partition from `topic` on cluster `cluster`
    /// may resume: every record of the changelog below it is taken in here
    /// (see [`set_changelog_read_through`](Self::set_changelog_read_through)).
    /// `None` when never marked (a new ledger, or a ledger moved to another
    /// cluster or topic), and for a mark it cannot read (one of an older
    /// hashbuy's): the changelog is then read from its beginning.
    pub fn changelog_read_through(
        &self,
        cluster: &str,
        topic: &str,
    ) -> Result<Option<ReadThrough>, LedgerError> {
        let key = read_through_key(cluster, topic);
        Ok(self
            .meta
            .get(&key)?
            .and_then(|bytes| decode(&key, &bytes).ok()))
    }

    /// Records that every record of `topic` (on `cluster`) below
    /// `mark.next` is taken in here. Written only once they are durable
    /// (after a [`Ledger::flush`]), so that the mark never claims more than
    /// the ledger holds.
    pub fn set_changelog_read_through(
        &self,
        cluster: &str,
        topic: &str,
        mark: &ReadThrough,
    ) -> Result<(), LedgerError> {
        let key = read_through_key(cluster, topic);
        self.meta.insert(key.as_slice(), to_json(&key, mark)?)?;
        Ok(())
    }

    /// Forgets the mark of `topic` on `cluster`: the next restore reads the
    /// changelog from its beginning. Whether there was one.
    pub fn clear_changelog_read_through(
        &self,
        cluster: &str,
        topic: &str,
    ) -> Result<bool, LedgerError> {
        Ok(self
            .meta
            .remove(read_through_key(cluster, topic))?
            .is_some())
    }

    /// Deletes the entries tweeted before `below` that are not held for
    /// review; how many went.
    fn drop_below(&self, below: i64) -> Result<usize, LedgerError> {
        let mut gone = Vec::new();
        for item in self.entries.iter() {
            let (key, bytes) = item?;
            let entry = decode_entry(&key, &bytes)?;
            if entry.command.tweet_timestamp_ms < below && entry.review.is_none() {
                gone.push((entry.command.command_id, entry.command.user_id));
            }
        }
        for (command_id, user_id) in &gone {
            self.remove(command_id, user_id)?;
        }
        Ok(gone.len())
    }

    /// A pruning pass's plan at `now_ms` under `max_age`: the new floor,
    /// the counts it takes, and the entries it deletes (see
    /// [`crate::horizon`]). The floor is never raised past where the
    /// partition's newest tweet puts it ([`horizon::floor_capped`]), so a
    /// clock far ahead cannot make every purchase stale for good.
    ///
    /// `ended(offer_id, floor_ms)` tells whether the catalog says no tweet
    /// at or after the floor can buy the offer: only then are its counts
    /// forgotten ([`horizon::ended_as_carried`]). Without it (no catalog
    /// followed) none is, and the counts held are not read.
    pub fn plan(
        &self,
        now_ms: i64,
        max_age: std::time::Duration,
        ended: Option<&Ended>,
    ) -> Result<PrunePlan, LedgerError> {
        let old = self.floor()?;
        // Two reads of the entries rather than one held in memory: the
        // pass's memory then does not grow with the partition's history.
        // An entry written between the two reads is judged by its state in
        // the second, as one written after a single read would be by the
        // next pass. None written since can be unfinished below the line:
        // the line lies a day or more below a floor that is itself at
        // least the horizon (`max_age`) behind now, and a command older
        // than the horizon is decided stale on arrival.
        let mut oldest_unfinished: Option<i64> = None;
        let mut newest: Option<i64> = None;
        // Each offer's latest end among the entries held, whatever their
        // state: a count is kept while one of them says the offer is on.
        // Gathered only when counts may be forgotten (a catalog followed).
        let mut ends: HashMap<String, i64> = HashMap::new();
        for entry in self.entries() {
            let entry = entry?;
            let t = entry.command.tweet_timestamp_ms;
            if has_work_left(&entry) {
                oldest_unfinished = Some(oldest_unfinished.map_or(t, |o| o.min(t)));
            }
            newest = Some(newest.map_or(t, |n| n.max(t)));
            if ended.is_none() {
                continue;
            }
            let end = horizon::offer_end(&entry);
            match ends.get_mut(&entry.command.offer_id) {
                Some(latest) => *latest = (*latest).max(end),
                None => {
                    ends.insert(entry.command.offer_id.clone(), end);
                }
            }
        }
        let floor_ms = horizon::floor_capped(now_ms, max_age, newest).max(old.floor_ms);
        let below = horizon::prune_below(floor_ms, oldest_unfinished).max(old.pruned_below_ms);
        let mut counts = Counts::new();
        // The buckets of the counts raised, each read once.
        let mut held = BTreeMap::new();
        let mut plan = PrunePlan::default();
        for entry in self.entries() {
            let entry = entry?;
            let c = &entry.command;
            if c.tweet_timestamp_ms >= below {
                plan.kept += 1;
                continue;
            }
            if horizon::counts_as_bought(&entry) {
                let id = (c.user_id.clone(), c.offer_id.clone());
                let counted = match counts.entry(id) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let (bucket, _) = self.bucket_in(&mut held, &c.user_id)?;
                        let stored = bucket.get(v.key()).copied().unwrap_or_default();
                        v.insert(stored)
                    }
                };
                if !counted.covers(&entry) {
                    counted.add(&entry);
                }
            }
            if horizon::finished(&entry) {
                plan.doomed.push((c.command_id.clone(), c.user_id.clone()));
            } else {
                plan.kept += 1;
            }
        }
        // The catalog is asked last (most counts are of offers on sale),
        // and once an offer.
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut outlived = |offer_id: &str, bought: &Bought| {
            let held = ends.get(offer_id).copied();
            ended.is_some_and(|ended| {
                horizon::ended_as_carried(bought, floor_ms, held)
                    && *verdicts
                        .entry(offer_id.to_owned())
                        .or_insert_with(|| ended(offer_id, floor_ms))
            })
        };
        // The counts held that this pass does not raise, judged as they
        // stand; those it raises, as it leaves them (and then not written).
        drop(held);
        let buckets = ended.map(|_| self.meta.scan_prefix(COUNTS_PREFIX));
        for item in buckets.into_iter().flatten() {
            let (key, bytes) = item?;
            for (id, bought) in decode_counts(&key, &bytes)? {
                if counts.contains_key(&id) || !outlived(&id.1, &bought) {
                    continue;
                }
                let (user_id, offer_id) = id;
                plan.outlived
                    .push((MetaKey::Bought { user_id, offer_id }, None));
            }
        }
        let mut bought = Vec::with_capacity(counts.len());
        for ((user_id, offer_id), mut count) in counts {
            count.through_ms = count.through_ms.max(below);
            let outlived = outlived(&offer_id, &count);
            let key = MetaKey::Bought { user_id, offer_id };
            if outlived {
                plan.outlived.push((key, Some(count)));
            } else {
                bought.push((key, count));
            }
        }
        plan.raise = Raise {
            floor: Floor {
                floor_ms,
                pruned_below_ms: below,
            },
            bought,
        };
        Ok(plan)
    }

    /// Every bucket of counts as stored: what a pass sends, raised or not
    /// (see [`crate::counts`]).
    pub fn count_records(&self) -> Result<Vec<Record>, LedgerError> {
        self.meta
            .scan_prefix(COUNTS_PREFIX)
            .map(|item| {
                let (key, value) = item?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// How many [`Bought`] counts the partition holds.
    pub fn counts(&self) -> Result<usize, LedgerError> {
        let mut held = 0;
        for item in self.meta.scan_prefix(COUNTS_PREFIX) {
            let (key, bytes) = item?;
            held += decode_counts(&key, &bytes)?.len();
        }
        Ok(held)
    }

    /// Deletes counts (see [`horizon::ended_as_carried`]). The changelog
    /// records of the buckets that held any, each as it now stands: the
    /// bucket, or a tombstone for one left empty (none for counts that
    /// were not here, which no changelog holds either: a restore takes in
    /// every count).
    pub fn forget<'a>(
        &self,
        forgotten: impl IntoIterator<Item = &'a MetaKey>,
    ) -> Result<Vec<Change>, LedgerError> {
        let _merging = lock(&self.merging);
        let mut held = BTreeMap::new();
        for count in forgotten {
            let MetaKey::Bought { user_id, offer_id } = count else {
                continue;
            };
            let (counts, changed) = self.bucket_in(&mut held, user_id)?;
            if counts
                .remove(&(user_id.clone(), offer_id.clone()))
                .is_some()
            {
                *changed = true;
            }
        }
        let mut batch = sled::Batch::default();
        let mut records = Vec::new();
        for (bucket, (counts, changed)) in held {
            if !changed {
                continue;
            }
            let key = MetaKey::Counts { bucket }.to_bytes();
            if counts.is_empty() {
                batch.remove(key.as_slice());
                records.push((key, None));
            } else {
                let value = counts::encode(&counts);
                batch.insert(key.as_slice(), value.as_slice());
                records.push((key, Some(value)));
            }
        }
        self.meta.apply_batch(batch)?;
        Ok(records)
    }

    /// How many entries the partition holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the partition holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries with work left: undecided, or decided and not yet acked.
    /// Only the open index's entries are read, so a partition's start does
    /// not grow with its history; a ledger from before the index has it
    /// built first, once, from every entry.
    pub fn unfinished(&self) -> Result<Vec<Entry>, LedgerError> {
        if !self.meta.contains_key(OPEN_INDEXED_KEY)? {
            for item in self.entries.iter() {
                let (key, bytes) = item?;
                if has_work_left(&decode_entry(&key, &bytes)?) {
                    self.open.insert(key, &[] as &[u8])?;
                }
            }
            self.meta.insert(OPEN_INDEXED_KEY, &[] as &[u8])?;
        }
        let mut unfinished = Vec::new();
        for key in self.open.iter().keys() {
            let key = key?;
            match self.entries.get(&key)? {
                Some(bytes) => {
                    let entry = decode_entry(&key, &bytes)?;
                    if has_work_left(&entry) {
                        unfinished.push(entry);
                    } else {
                        self.open.remove(&key)?;
                    }
                }
                None => {
                    self.open.remove(&key)?;
                }
            }
        }
        Ok(unfinished)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mark_it_cannot_read_counts_as_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let mark = ReadThrough {
            next: 8,
            last: Seen::of(7, 70, Some(b"k"), None),
        };
        p.set_changelog_read_through("c", "t", &mark)
            .expect("marked");
        assert_eq!(
            p.changelog_read_through("c", "t").expect("read"),
            Some(mark)
        );
        assert_eq!(p.changelog_read_through("c", "u").expect("read"), None);
        // An older hashbuy's mark: an offset alone.
        p.meta
            .insert(read_through_key("c", "t"), b"8".as_slice())
            .expect("written");
        assert_eq!(p.changelog_read_through("c", "t").expect("read"), None);
    }

    /// An unreadable record of the last pass (a newer hashbuy's, say)
    /// reads as none, so that a pass runs at once rather than the
    /// partition going unpruned.
    #[test]
    fn a_last_pass_it_cannot_read_counts_as_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        assert_eq!(p.last_pass().expect("read"), None);
        let pass = LastPass {
            at_ms: 1_000,
            aim_ms: 500,
        };
        p.set_last_pass(&pass).expect("written");
        assert_eq!(p.last_pass().expect("read"), Some(pass));
        p.meta
            .insert(LAST_PASS_KEY, b"{\"at\":1}".as_slice())
            .expect("written");
        assert_eq!(p.last_pass().expect("read"), None);
    }

    use hashbuy_proto::v1::PaymentCommand;

    use std::collections::BTreeSet;

    use super::*;
    use crate::horizon::NO_END;

    use crate::entry::{first_key, Outcome};

    fn entry(id: &str, user: &str) -> Entry {
        Entry::received(
            PaymentCommand {
                command_id: id.into(),
                user_id: user.into(),
                amount: 100,
                currency: "usd".into(),
                ..PaymentCommand::default()
            },
            0,
            0,
            0,
        )
    }

    #[test]
    fn flushed_entries_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let ledger = Ledger::open(dir.path()).expect("opens");
            let p = ledger.partition(5).expect("tree");
            let mut e = entry("c-1", "u-1");
            e.attempt(first_key("c-1"), 1).expect("attempt");
            p.put(&e).expect("written");
            ledger.flush().expect("flushed");
        }
        let ledger = Ledger::open(dir.path()).expect("reopens");
        assert_eq!(ledger.partitions(), vec![5]);
        let e = ledger
            .partition(5)
            .expect("tree")
            .get("c-1")
            .expect("read")
            .expect("present");
        assert_eq!(e.state.name(), "attempting");
    }

    #[test]
    fn a_users_history_is_theirs_alone_and_per_partition() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        p.put(&entry("c-1", "u-1")).expect("written");
        p.put(&entry("c-2", "u-1")).expect("written");
        p.put(&entry("c-3", "u-10")).expect("written");
        ledger
            .partition(1)
            .expect("tree")
            .put(&entry("c-4", "u-1"))
            .expect("written");
        let ids: Vec<String> = p
            .history("u-1")
            .expect("read")
            .iter()
            .map(|e| e.command_id().to_owned())
            .collect();
        assert_eq!(ids, ["c-1", "c-2"], "u-10 shares a prefix, not a user");
    }

    #[test]
    fn unfinished_entries_are_the_undecided_and_the_unacked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let received = entry("c-1", "u");
        let mut decided = entry("c-2", "u");
        decided.attempt(first_key("c-2"), 1).expect("attempt");
        decided
            .decide(
                Outcome::Settled {
                    payment_intent: "pi".into(),
                },
                2,
            )
            .expect("decided");
        let mut acked = entry("c-3", "u");
        acked
            .decide(
                Outcome::Rejected {
                    reason: "limit".into(),
                },
                1,
            )
            .expect("rejected");
        acked.acked(2).expect("acked");
        for e in [&received, &decided, &acked] {
            p.put(e).expect("written");
        }
        let ids: Vec<String> = p
            .unfinished()
            .expect("read")
            .iter()
            .map(|e| e.command_id().to_owned())
            .collect();
        assert_eq!(ids, ["c-1", "c-2"]);
    }

    #[test]
    fn a_ledger_from_before_the_open_index_still_finds_its_unfinished_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let mut done = entry("c-1", "u");
        done.decide(
            Outcome::Rejected {
                reason: "limit".into(),
            },
            1,
        )
        .expect("rejected");
        done.acked(2).expect("acked");
        p.put(&done).expect("written");
        p.put(&entry("c-2", "u")).expect("written");
        // As an older hashbuy left it: entries, no index.
        p.open.clear().expect("cleared");
        let ids = |p: &PartitionLedger| -> Vec<String> {
            p.unfinished()
                .expect("read")
                .iter()
                .map(|e| e.command_id().to_owned())
                .collect()
        };
        assert_eq!(ids(&p), ["c-2"], "built from the entries");
        assert_eq!(p.open.len(), 1, "only the entry with work left");
        // Built once: a key whose entry was since done is dropped on read.
        let mut later = p.get("c-2").expect("read").expect("there");
        later
            .decide(
                Outcome::Rejected {
                    reason: "limit".into(),
                },
                3,
            )
            .expect("rejected");
        later.acked(4).expect("acked");
        p.entries
            .insert("c-2", encode(&later, Encoding::Protobuf).expect("encoded"))
            .expect("written behind the index's back");
        assert!(ids(&p).is_empty());
        assert!(p.open.is_empty());
    }

    #[test]
    fn entries_are_stored_as_protobuf_and_json_ones_still_read() {
        let states = [
            Outcome::Settled {
                payment_intent: "pi_1".into(),
            },
            Outcome::Declined {
                payment_intent: None,
                decline_code: "generic_decline".into(),
                reason: "declined".into(),
            },
            Outcome::Rejected {
                reason: "limit".into(),
            },
            Outcome::Failed {
                reason: "gone".into(),
            },
        ];
        let mut entries = vec![entry("c-0", "u")];
        let mut attempting = entry("c-1", "u");
        attempting.attempt("c-1:2".into(), 7).expect("attempt");
        entries.push(attempting);
        for (i, outcome) in states.into_iter().enumerate() {
            let mut e = entry(&format!("c-{}", i + 2), "u");
            e.note("seen again".into(), 5);
            e.review = Some("double charge".into());
            e.destination = Some(hashbuy_core::connect::Destination {
                account_id: "acct_1".into(),
                application_fee_amount: Some(30),
                on_behalf_of: true,
            });
            e.attempt(first_key(&format!("c-{}", i + 2)), 8)
                .expect("attempt");
            e.decide(outcome, 9).expect("decided");
            e.acked(10).expect("acked");
            entries.push(e);
        }
        for e in &entries {
            let stored = encode(e, Encoding::Protobuf).expect("encoded");
            assert_ne!(stored.first(), Some(&b'{'));
            assert_eq!(&decode_entry(b"k", &stored).expect("read"), e);
            let json = encode(e, Encoding::Json).expect("json");
            assert_eq!(
                &decode_entry(b"k", &json).expect("read"),
                e,
                "as older ledgers hold it"
            );
            assert!(
                stored.len() < json.len(),
                "{} >= {}",
                stored.len(),
                json.len()
            );
        }
    }

    #[test]
    fn copies_below_a_raised_line_are_dropped_even_after_a_stop_in_between() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let mut old_copy = entry("c-1", "u");
        old_copy.command.tweet_timestamp_ms = 10;
        old_copy.attempt(first_key("c-1"), 1).expect("attempt");
        p.put(&old_copy).expect("written");
        // A restore raised the line, and stopped before it dropped: the
        // next one finds the line already raised, and drops.
        let line = Raise {
            floor: Floor {
                floor_ms: 100,
                pruned_below_ms: 50,
            },
            bought: Vec::new(),
        };
        p.raise(&line).expect("raised");
        assert_eq!(p.drop_pruned().expect("dropped"), 1);
        assert!(p.unfinished().expect("read").is_empty(), "never resumed");
        p.put(&old_copy).expect("written again");
        assert_eq!(p.drop_pruned().expect("read"), 0, "once for each rise");
    }

    /// Users whose counts fall in bucket 0, one per number asked.
    fn users_of_bucket_zero(n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("user-{i}"))
            .filter(|u| counts::bucket_of(u) == 0)
            .take(n)
            .collect()
    }

    fn one_count(user_id: &str, count: u32) -> Raise {
        Raise {
            floor: Floor::default(),
            bought: vec![(
                MetaKey::Bought {
                    user_id: user_id.into(),
                    offer_id: "o".into(),
                },
                Bought {
                    count,
                    through_ms: 10,
                    offer_ends_ms: NO_END,
                },
            )],
        }
    }

    #[test]
    fn counts_are_kept_in_one_record_a_bucket_and_a_bucket_left_empty_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let mut raise = Raise::default();
        for user in &users {
            raise.merge(one_count(user, 1));
        }
        p.raise(&raise).expect("raised");
        let records = p.count_records().expect("read");
        assert_eq!(
            records.len(),
            counts::BUCKETS as usize,
            "one record a bucket"
        );
        assert_eq!(p.meta.scan_prefix(COUNTS_PREFIX).count(), records.len());
        assert_eq!(p.counts().expect("read"), users.len());
        for user in &users {
            assert_eq!(p.bought(user, "o").expect("read").count, 1, "{user}");
        }
        for (key, _) in &records {
            let parsed = MetaKey::parse(key).expect("a meta key");
            assert!(matches!(parsed, MetaKey::Counts { .. }), "{parsed:?}");
            assert_eq!(&parsed.to_bytes(), key);
            assert!(std::str::from_utf8(key).is_ok(), "a key that reads as text");
        }
        // Forgetting a bucket's every count but one writes it again;
        // forgetting the last one too sends its tombstone.
        let zero = users_of_bucket_zero(2);
        p.raise(&one_count(&zero[1], 1)).expect("raised");
        let key = |user: &String| MetaKey::Bought {
            user_id: user.clone(),
            offer_id: "o".into(),
        };
        let held: Vec<MetaKey> = users
            .iter()
            .chain(&zero)
            .filter(|u| counts::bucket_of(u) == 0 && **u != zero[0])
            .map(key)
            .collect();
        let rewritten = p.forget(&held).expect("forgotten");
        let bucket = MetaKey::Counts { bucket: 0 }.to_bytes();
        assert_eq!(rewritten.len(), 1);
        assert_eq!(rewritten[0].0, bucket);
        let value = rewritten[0]
            .1
            .as_ref()
            .expect("the bucket, not a tombstone");
        assert_eq!(
            decode_counts(&bucket, value)
                .expect("a bucket")
                .keys()
                .collect::<Vec<_>>(),
            [&(zero[0].clone(), "o".to_owned())]
        );
        assert_eq!(
            p.forget(&[key(&zero[0])]).expect("forgotten"),
            vec![(bucket.clone(), None)]
        );
        assert!(
            p.meta.get(&bucket).expect("read").is_none(),
            "gone here too"
        );
        assert!(
            p.forget(&[key(&zero[0])]).expect("forgotten").is_empty(),
            "nothing to send"
        );
    }

    /// sled's blob files (pages over a quarter of a segment, which it
    /// does not sync) are synced by a flush, again once one grew, and one
    /// sled removed is forgotten.
    #[test]
    fn a_flush_syncs_each_blob_file_it_finds_as_it_grows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        ledger.flush().expect("flushed without a blob directory");
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).expect("made");
        std::fs::write(blobs.join("4096"), b"a page").expect("written");
        ledger.flush().expect("flushed");
        assert_eq!(
            lock(&ledger.synced_blobs).get(std::ffi::OsStr::new("4096")),
            Some(&6)
        );
        // Written in parts: synced again once it grew.
        std::fs::write(blobs.join("4096"), b"a longer page").expect("written");
        ledger.flush().expect("flushed");
        assert_eq!(
            lock(&ledger.synced_blobs).get(std::ffi::OsStr::new("4096")),
            Some(&13)
        );
        std::fs::remove_file(blobs.join("4096")).expect("removed");
        ledger.flush().expect("flushed");
        assert!(lock(&ledger.synced_blobs).is_empty());
    }

    /// A restore of an earlier assignment can still be raising counts (it
    /// writes what it gathered however its read ended) while a pass raises
    /// the same buckets: each merge of a bucket is read and written whole,
    /// one at a time, so neither writes over the other's counts.
    #[test]
    fn raises_at_once_into_one_bucket_lose_no_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let users = users_of_bucket_zero(400);
        let halves: Vec<Vec<String>> = users.chunks(200).map(<[String]>::to_vec).collect();
        let raising: Vec<_> = halves
            .into_iter()
            .map(|half| {
                let p = ledger.partition(0).expect("tree");
                std::thread::spawn(move || {
                    for user in &half {
                        p.raise(&one_count(user, 1)).expect("raised");
                    }
                })
            })
            .collect();
        for thread in raising {
            thread.join().expect("raised");
        }
        let p = ledger.partition(0).expect("tree");
        let lost: Vec<&String> = users
            .iter()
            .filter(|u| p.bought(u, "o").expect("read").count != 1)
            .collect();
        assert!(lost.is_empty(), "{} counts lost: {lost:?}", lost.len());
    }

    fn bought_key() -> MetaKey {
        MetaKey::Bought {
            user_id: "u".into(),
            offer_id: "o".into(),
        }
    }

    #[test]
    fn a_count_taken_on_a_stale_base_never_lowers_the_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let raise = |count, through_ms| Raise {
            floor: Floor::default(),
            bought: vec![(
                bought_key(),
                Bought {
                    count,
                    through_ms,
                    offer_ends_ms: NO_END,
                },
            )],
        };
        p.raise(&raise(2, 10)).expect("raised");
        p.raise(&raise(1, 20)).expect("raised");
        assert_eq!(
            p.bought("u", "o").expect("read"),
            Bought {
                count: 2,
                through_ms: 20,
                offer_ends_ms: NO_END,
            }
        );
    }

    #[test]
    fn raises_merge_to_the_higher_floor_and_every_count() {
        let count = |user: &str, count| {
            (
                MetaKey::Bought {
                    user_id: user.into(),
                    offer_id: "o".into(),
                },
                Bought {
                    count,
                    through_ms: 5,
                    offer_ends_ms: NO_END,
                },
            )
        };
        let mut raise = Raise {
            floor: Floor {
                floor_ms: 10,
                pruned_below_ms: 3,
            },
            bought: vec![count("a", 1)],
        };
        raise.merge(Raise {
            floor: Floor {
                floor_ms: 7,
                pruned_below_ms: 4,
            },
            bought: vec![count("b", 2)],
        });
        raise.merge(Raise::default());
        assert_eq!(
            raise,
            Raise {
                floor: Floor {
                    floor_ms: 10,
                    pruned_below_ms: 4,
                },
                bought: vec![count("a", 1), count("b", 2)],
            }
        );
    }

    #[test]
    fn one_raise_with_several_counts_of_a_key_takes_their_maxima() {
        // A restore gathers a partition's counts from the changelog and
        // raises them together, the same key's in the order written; a
        // stale writer's lower count can come after a higher one.
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let count = |count, through_ms| {
            (
                bought_key(),
                Bought {
                    count,
                    through_ms,
                    offer_ends_ms: NO_END,
                },
            )
        };
        p.raise(&Raise {
            floor: Floor::default(),
            bought: vec![count(5, 90), count(3, 100), count(4, 80)],
        })
        .expect("raised");
        let records = p.count_records().expect("read");
        let highest = Bought {
            count: 5,
            through_ms: 100,
            offer_ends_ms: NO_END,
        };
        assert_eq!(p.bought("u", "o").expect("read"), highest);
        let sent: Vec<Counts> = records
            .iter()
            .map(|(key, value)| decode_counts(key, value).expect("a bucket"))
            .collect();
        assert_eq!(
            sent,
            vec![Counts::from([(("u".to_owned(), "o".to_owned()), highest)])],
            "one record a bucket, as it stands"
        );
    }

    /// A settled and acked purchase of `offer` by `user`, tweeted at
    /// `at_ms`, its offer ending at `ends_ms`.
    fn bought_at(id: &str, user: &str, offer: &str, at_ms: i64, ends_ms: Option<i64>) -> Entry {
        let mut e = entry(id, user);
        e.command.offer_id = offer.into();
        e.command.tweet_timestamp_ms = at_ms;
        e.command.offer_ends_at_ms = ends_ms;
        e.attempt(first_key(id), at_ms).expect("attempt");
        e.decide(
            Outcome::Settled {
                payment_intent: format!("pi-{id}"),
            },
            at_ms,
        )
        .expect("settled");
        e.acked(at_ms).expect("acked");
        e
    }

    #[test]
    fn a_pass_forgets_the_counts_of_offers_that_ended_below_the_floor() {
        const DAY: i64 = 86_400_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let now = 100 * DAY;
        // A day's horizon: the floor at 98 days, the line at 97.
        let age = Duration::from_millis(DAY as u64);
        for e in [
            bought_at("ended", "a", "ended", 90 * DAY, Some(91 * DAY)),
            bought_at("no-end", "a", "no-end", 90 * DAY, None),
            bought_at("ends-later", "a", "ends-later", 90 * DAY, Some(99 * DAY)),
            // Held, and bought again since its end was moved later.
            bought_at("reopened", "d", "reopened", now, Some(120 * DAY)),
        ] {
            p.put(&e).expect("written");
        }
        let count = |user: &str, offer: &str, ends: i64| {
            (
                MetaKey::Bought {
                    user_id: user.into(),
                    offer_id: offer.into(),
                },
                Bought {
                    count: 1,
                    through_ms: 50 * DAY,
                    offer_ends_ms: ends,
                },
            )
        };
        p.raise(&Raise {
            floor: Floor::default(),
            bought: vec![
                count("c", "ended-long-ago", 40 * DAY),
                count("c", "reopened", 40 * DAY),
                // Its end moved later while it was on sale: the catalog
                // knows, though no purchase since carried the new end.
                count("c", "extended", 40 * DAY),
            ],
        })
        .expect("raised");
        // A count written before counts kept their offer's end, and
        // before their buckets: moved into its bucket as the partition is
        // opened.
        let legacy = MetaKey::Bought {
            user_id: "c".into(),
            offer_id: "legacy".into(),
        }
        .to_bytes();
        p.meta
            .insert(legacy, &br#"{"count":1,"through_ms":1}"#[..])
            .expect("written");
        p.meta.remove(COUNTS_BUCKETED_KEY).expect("unmarked");
        let p = ledger.partition(0).expect("tree");
        assert_eq!(p.bought("c", "legacy").expect("read").count, 1);
        assert_eq!(
            p.meta.scan_prefix(BOUGHT_PREFIX).count(),
            1,
            "left for a hashbuy from before the buckets"
        );
        let without = p.plan(now, age, None).expect("planned");
        assert!(without.outlived.is_empty(), "no catalog: every count kept");
        assert_eq!(without.raise.bought.len(), 3, "and those counted written");
        let plan = p
            .plan(
                now,
                age,
                Some(&|offer, floor| {
                    assert_eq!(floor, 98 * DAY, "the catalog is asked of the floor");
                    offer != "extended"
                }),
            )
            .expect("planned");
        let key = |user: &str, offer: &str| (user.to_owned(), offer.to_owned());
        let keys = |counts: Vec<&MetaKey>| -> BTreeSet<(String, String)> {
            counts
                .into_iter()
                .map(|k| match k {
                    MetaKey::Bought { user_id, offer_id } => key(user_id, offer_id),
                    other => panic!("{other:?} among the counts"),
                })
                .collect()
        };
        assert_eq!(
            keys(plan.outlived.iter().map(|(k, _)| k).collect()),
            BTreeSet::from([key("a", "ended"), key("c", "ended-long-ago")]),
        );
        assert_eq!(
            keys(plan.raise.bought.iter().map(|(k, _)| k).collect()),
            BTreeSet::from([key("a", "no-end"), key("a", "ends-later")]),
            "counted, and kept"
        );
        assert_eq!(plan.doomed.len(), 3, "every purchase below the line goes");
        // Put on sale again before the pass writes: the one it counted
        // into is written instead, the stored one left.
        let mut again = plan.clone();
        again.keep_on_sale(&|offer, _| offer == "ended-long-ago");
        assert_eq!(
            keys(again.outlived.iter().map(|(k, _)| k).collect()),
            BTreeSet::from([key("c", "ended-long-ago")])
        );
        let written: Vec<_> = again
            .raise
            .bought
            .iter()
            .filter(|(k, _)| {
                *k == MetaKey::Bought {
                    user_id: "a".into(),
                    offer_id: "ended".into(),
                }
            })
            .collect();
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].1.count, 1, "the purchase counted in");
        let records = p
            .forget(plan.outlived.iter().map(|(count, _)| count))
            .expect("forgotten");
        let left: Vec<Option<Counts>> = records
            .iter()
            .map(|(key, value)| {
                value
                    .as_ref()
                    .map(|v| decode_counts(key, v).expect("a bucket"))
            })
            .collect();
        // a's count was never written (this pass counted it), so c's
        // bucket alone changed, and goes to the changelog with the counts
        // it keeps.
        assert_eq!(left.len(), 1, "{left:?}");
        let kept: Vec<&str> = left[0]
            .iter()
            .flat_map(|c| c.keys().map(|(_, offer)| offer.as_str()))
            .collect();
        assert_eq!(kept, ["extended", "legacy", "reopened"]);
        assert_eq!(
            p.counts().expect("read"),
            3,
            "the legacy, the reopened and the extended"
        );
    }

    #[test]
    fn every_raise_sends_the_floor_even_unchanged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        let floor = Raise {
            floor: Floor {
                floor_ms: 100,
                pruned_below_ms: 50,
            },
            bought: Vec::new(),
        };
        p.raise(&floor).expect("raised");
        // The first sending failed; a later pass, its clock stepped back,
        // plans a lower floor: the floor goes to the changelog again.
        let lower = Raise {
            floor: Floor {
                floor_ms: 80,
                pruned_below_ms: 30,
            },
            bought: Vec::new(),
        };
        p.raise(&lower).expect("raised");
        let sent: Vec<Floor> = p
            .floor_record()
            .expect("read")
            .iter()
            .filter(|(key, _)| MetaKey::parse(key) == Some(MetaKey::Floor))
            .map(|(key, value)| decode_meta(key, value).expect("a floor"))
            .collect();
        assert_eq!(sent, vec![floor.floor], "the floor as it stands");
    }

    #[test]
    fn a_pass_after_one_whose_sending_failed_sends_its_counts_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let p = ledger.partition(0).expect("tree");
        const DAY: i64 = 86_400_000;
        let now = 100 * DAY;
        let age = Duration::from_millis(DAY as u64);
        // A purchase of today lets the floor rise past the old one.
        for e in [
            bought_at("old", "a", "offer", 90 * DAY, None),
            bought_at("new", "b", "offer", now, None),
        ] {
            p.put(&e).expect("written");
        }
        // The first pass raised its count here, and its sending failed.
        let first = p.plan(now, age, None).expect("planned");
        p.raise(&first.raise).expect("raised");
        // The next plans the same: the entry is still there to delete.
        let next = p.plan(now, age, None).expect("planned");
        assert_eq!(next.doomed.len(), 1, "the entry is still to go");
        p.raise(&next.raise).expect("raised");
        let sent: Vec<Bought> = p
            .count_records()
            .expect("read")
            .iter()
            .flat_map(|(key, value)| decode_counts(key, value).expect("a bucket").into_values())
            .collect();
        assert_eq!(
            sent,
            vec![p.bought("a", "offer").expect("read")],
            "the count goes to the changelog before the entry it counts is deleted"
        );
        assert_eq!(sent[0].count, 1);
    }

    #[test]
    fn a_ledger_in_use_is_named_as_such() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = Ledger::open(dir.path()).expect("opens");
        let second = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "ledger::tests::open_from_child", "--nocapture"])
            .env("HASHBUY_TEST_LEDGER_DIR", dir.path())
            .output()
            .expect("child runs");
        let out = String::from_utf8_lossy(&second.stdout);
        assert!(out.contains("in use by another process"), "{out}");
    }

    /// A ledger closed while another open of it waits opens: sled lets go
    /// of a dropped ledger's lock from its own threads, a moment later, and
    /// a bench that reads a stopped settler's ledger and then restarts it
    /// opens it twice in one process.
    #[test]
    fn a_ledger_let_go_while_an_open_waits_for_it_opens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Ledger::open(dir.path()).expect("opens");
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(LOCK_RELEASE_WAIT / 10);
            drop(first);
        });
        let second = Ledger::open(dir.path());
        letting_go.join().expect("let go");
        assert!(second.is_ok(), "{:?}", second.err());
    }

    /// A ledger held for longer than the wait is named in use, after it.
    #[test]
    fn a_ledger_held_past_the_wait_is_named_in_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _held = Ledger::open(dir.path()).expect("opens");
        let path = dir.path().to_owned();
        let (opened, told) = std::sync::mpsc::channel();
        std::thread::spawn(move || opened.send(Ledger::open(&path).err()));
        match told.recv_timeout(LOCK_RELEASE_WAIT * 10) {
            Ok(Some(LedgerError::InUse { path })) => assert_eq!(path, dir.path()),
            Ok(other) => panic!("expected InUse, got {other:?}"),
            Err(_) => panic!("still waiting ten times the wait"),
        }
    }

    /// Run by `a_ledger_in_use_is_named_as_such` in a child process, as a
    /// second settler would be; does nothing on its own.
    #[test]
    fn open_from_child() {
        if let Some(dir) = std::env::var_os("HASHBUY_TEST_LEDGER_DIR") {
            match Ledger::open(Path::new(&dir)) {
                Ok(_) => println!("opened"),
                Err(e) => println!("{e}"),
            }
        }
    }
}
