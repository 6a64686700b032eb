//! How far a partition's ledger holds its changelog, kept up while the
//! settler writes to it (pure).
//!
//! A restore reads a partition's changelog to its end and marks where it
//! got to ([`crate::restore`]). From then on, the records the settler
//! itself sends to the partition are in its ledger already (an entry is
//! written locally before it is sent), so the mark may move past them: a
//! restart then reads only what was written since, not the whole run's
//! records again. It may move past nothing else: a record another process
//! wrote (a previous owner still finishing a call, the next owner after a
//! rebalance, `hashbuy ledger resolve`) holds the mark below it, and the
//! next restore reads it.
//!
//! The producer is idempotent, so each record sent has one offset, which
//! its delivery report names; reports arrive in any order.
//! [`Frontier::next`] is the lowest offset neither read by the restore nor
//! known to be one of the settler's own: every record below it is in the
//! ledger.
//!
//! A mark also names the last record below it by its offset, timestamp
//! and a digest of its key and value ([`Seen`]), which the next restore
//! finds again before it trusts the mark: a changelog deleted and made
//! again under the same name holds another record there, or none, and a
//! record compacted away is gone; the partition is then read from its
//! beginning. While the settler runs, one of its own records landing below
//! the frontier means the log's offsets began again: the mark is dropped.

use std::collections::BTreeMap;

use crate::ledger::ReadThrough;

/// The most delivered offsets a frontier keeps above a gap before it
/// gives up moving: a record another process wrote holds it for good, and
/// the offsets piling up above it would grow without end.
pub const MAX_AHEAD: usize = 100_000;

/// A changelog record as a mark names it: where it is, its timestamp,
/// and a digest of its key and value, so that another record at the same
/// offset with the same millisecond is still told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// CRC-32 of its key and value (see [`Seen::of`]).
    pub digest: u32,
}

impl Seen {
    /// The record at `offset` with `timestamp_ms`, `key` and `value`.
    pub fn of(offset: i64, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Seen {
        let mut hasher = crc32fast::Hasher::new();
        for part in [key, value] {
            // A missing part and an empty one differ (a tombstone's value).
            match part {
                Some(bytes) => {
                    hasher.update(&[1]);
                    hasher.update(&(bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => hasher.update(&[0]),
            }
        }
        Seen {
            offset,
            timestamp_ms,
            digest: hasher.finalize(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    /// Which restore installed it: a record sent under this frontier
    /// cannot land below `next` unless the log's offsets were used again.
    epoch: u64,
    /// Every record below it is in the ledger.
    next: i64,
    /// The record at `next - 1`, when known.
    last: Option<Seen>,
    /// The settler's own records delivered above `next`.
    ahead: BTreeMap<i64, Seen>,
    /// Gave up moving: `ahead` grew past [`MAX_AHEAD`].
    stuck: bool,
    /// A record sent under this frontier landed below it: the changelog's
    /// offsets began again (a broker that lost its log), and no mark of
    /// it can be trusted.
    reused: bool,
}

impl Frontier {
    /// A frontier installed by restore number `epoch` where it read the
    /// changelog to: `read_through`, with the last record below it if
    /// known.
    pub fn new(epoch: u64, read_through: i64, last: Option<Seen>) -> Frontier {
        Frontier {
            epoch,
            next: read_through,
            last,
            ahead: BTreeMap::new(),
            stuck: false,
            reused: false,
        }
    }

    /// Which restore installed it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// One of the settler's own records was delivered as `seen`; it was
    /// sent while the frontier of restore `sent_epoch` was installed.
    pub fn delivered(&mut self, seen: Seen, sent_epoch: u64) {
        if self.stuck || self.reused {
            return;
        }
        if seen.offset < 0 {
            // librdkafka reports a duplicate it cannot place (the broker's
            // DUPLICATE_SEQUENCE_NUMBER) as delivered at no offset: the
            // frontier cannot know where the record is.
            self.stuck = true;
            return;
        }
        if seen.offset < self.next {
            // From an earlier frontier's time, it may lie below (the
            // restore read it); sent under this one, it cannot.
            if sent_epoch == self.epoch {
                self.reused = true;
                self.ahead = BTreeMap::new();
            }
            return;
        }
        if seen.offset > self.next {
            if self
                .ahead
                .insert(seen.offset, seen)
                .is_some_and(|earlier| earlier != seen)
            {
                // Two of its own records at one offset: the log was cut
                // back and written again.
                self.reused = true;
                self.ahead = BTreeMap::new();
                return;
            }
            if self.ahead.len() > MAX_AHEAD {
                self.ahead = BTreeMap::new();
                self.stuck = true;
            }
            return;
        }
        let mut last = seen;
        self.next += 1;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            last = entry.remove();
            self.next += 1;
        }
        self.last = Some(last);
    }

    /// Every record below it is in the ledger.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Whether the changelog's offsets were seen to begin again, so that
    /// the ledger's mark must go.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The mark to keep in the ledger; `None` while no record below the
    /// frontier is known (nothing read or sent yet), or once offsets were
    /// used again.
    pub fn mark(&self) -> Option<ReadThrough> {
        if self.reused {
            return None;
        }
        self.last.map(|last| ReadThrough {
            next: self.next,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record of the tests, at `offset`.
    fn seen(offset: i64) -> Seen {
        Seen::of(offset, offset * 10, Some(b"k"), Some(&offset.to_le_bytes()))
    }

    proptest! {
        /// Reports in any order of a run of the settler's own records move
        /// the frontier to the run's end; with one offset of the run left
        /// out (another process's record), to that offset and no further.
        #[test]
        fn the_frontier_stops_at_the_first_record_not_its_own(
            (start, offsets, foreign) in (0i64..1_000, 1usize..200)
                .prop_flat_map(|(start, len)| {
                    let offsets: Vec<i64> = (start..start + len as i64).collect();
                    (
                        Just(start),
                        Just(offsets).prop_shuffle(),
                        proptest::option::of(start..start + len as i64),
                    )
                })
        ) {
            let mut frontier = Frontier::new(1, start, None);
            for &offset in &offsets {
                if Some(offset) != foreign {
                    frontier.delivered(seen(offset), 1);
                }
            }
            let end = start + offsets.len() as i64;
            let next = foreign.unwrap_or(end);
            prop_assert_eq!(frontier.next(), next);
            let mark = frontier.mark();
            if next > start {
                prop_assert_eq!(mark, Some(ReadThrough { next, last: seen(next - 1) }));
            } else {
                prop_assert_eq!(mark, None);
            }
        }
    }

    #[test]
    fn reports_of_an_earlier_frontier_below_this_one_change_nothing() {
        let mut frontier = Frontier::new(2, 10, Some(seen(9)));
        frontier.delivered(seen(3), 1);
        frontier.delivered(seen(9), 1);
        assert_eq!(frontier.next(), 10);
        assert_eq!(frontier.mark().map(|m| m.last), Some(seen(9)));
        frontier.delivered(seen(10), 2);
        assert_eq!(frontier.next(), 11);
        assert_eq!(frontier.mark().map(|m| m.last), Some(seen(10)));
    }

    /// The changelog's offsets began again under a running settler (a
    /// broker that lost its log): its own records land below the frontier,
    /// and a mark moved on past them would name a record of the new log
    /// while every record another process wrote there lies below it.
    #[test]
    fn a_record_sent_under_the_frontier_landing_below_it_ends_every_mark() {
        let mut frontier = Frontier::new(1, 100, Some(seen(99)));
        for offset in 0..=105 {
            frontier.delivered(seen(offset), 1);
        }
        assert!(frontier.reused());
        assert_eq!(frontier.mark(), None);
    }

    /// The log cut back below records still waiting above the frontier,
    /// and written again: one of its own records lands where another of
    /// its own was.
    #[test]
    fn two_records_of_its_own_at_one_offset_end_every_mark() {
        let mut frontier = Frontier::new(1, 100, Some(seen(99)));
        frontier.delivered(seen(101), 1);
        frontier.delivered(seen(102), 1);
        frontier.delivered(Seen::of(102, 7, Some(b"other"), None), 1);
        frontier.delivered(seen(100), 1);
        assert!(frontier.reused());
        assert_eq!(frontier.mark(), None);
    }

    #[test]
    fn a_delivery_at_no_offset_holds_the_frontier_where_it_is() {
        let mut frontier = Frontier::new(1, 100, Some(seen(99)));
        frontier.delivered(Seen::of(-1, 7, Some(b"k"), None), 1);
        frontier.delivered(seen(100), 1);
        assert!(!frontier.reused());
        assert_eq!(frontier.mark().map(|m| m.next), Some(100));
    }

    #[test]
    fn records_differing_only_in_key_or_value_have_different_digests() {
        let a = Seen::of(5, 50, Some(b"cmd-1"), Some(b"x"));
        assert_ne!(a, Seen::of(5, 50, Some(b"cmd-2"), Some(b"x")));
        assert_ne!(a, Seen::of(5, 50, Some(b"cmd-1"), Some(b"y")));
        assert_ne!(a, Seen::of(5, 50, Some(b"cmd-1"), None));
        assert_eq!(a, Seen::of(5, 50, Some(b"cmd-1"), Some(b"x")));
    }

    #[test]
    fn a_frontier_held_too_long_gives_up_and_stays() {
        let mut frontier = Frontier::new(1, 0, None);
        for offset in 1..=MAX_AHEAD as i64 + 1 {
            frontier.delivered(seen(offset), 1);
        }
        frontier.delivered(seen(0), 1);
        assert_eq!(frontier.next(), 0, "it moves no further once stuck");
    }
}
