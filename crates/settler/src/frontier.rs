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
//! A mark also names the last record below it by its offset and
//! timestamp ([`ReadThrough`]), which the next restore finds again before
//! it trusts the mark: a changelog deleted and made again under the same
//! name (or a tansu restarted in memory, whose cluster id never changes)
//! holds another record there, or none, and is read from its beginning.

use std::collections::BTreeMap;

use crate::ledger::ReadThrough;

/// The most delivered offsets a frontier keeps above a gap before it
/// gives up moving: a record another process wrote holds it for good, and
/// the offsets piling up above it would grow without end.
pub const MAX_AHEAD: usize = 100_000;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    /// Every record below it is in the ledger.
    next: i64,
    /// The record at `next - 1`, by offset and timestamp, when known.
    last: Option<(i64, i64)>,
    /// The settler's own records delivered above `next`, with their
    /// timestamps.
    ahead: BTreeMap<i64, i64>,
    /// Gave up moving: `ahead` grew past [`MAX_AHEAD`].
    stuck: bool,
}

impl Frontier {
    /// A frontier where a restore read the changelog to: `read_through`,
    /// with the last record below it (offset and timestamp) if known.
    pub fn new(read_through: i64, last: Option<(i64, i64)>) -> Frontier {
        Frontier {
            next: read_through,
            last,
            ahead: BTreeMap::new(),
            stuck: false,
        }
    }

    /// One of the settler's own records, sent with `timestamp_ms`, was
    /// delivered at `offset`.
    pub fn delivered(&mut self, offset: i64, timestamp_ms: i64) {
        if self.stuck || offset < self.next {
            return;
        }
        if offset > self.next {
            self.ahead.insert(offset, timestamp_ms);
            if self.ahead.len() > MAX_AHEAD {
                self.ahead = BTreeMap::new();
                self.stuck = true;
            }
            return;
        }
        let mut last = (offset, timestamp_ms);
        self.next += 1;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            last = (self.next, entry.remove());
            self.next += 1;
        }
        self.last = Some(last);
    }

    /// Every record below it is in the ledger.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// The mark to keep in the ledger; `None` while no record below the
    /// frontier is known (nothing read or sent yet).
    pub fn mark(&self) -> Option<ReadThrough> {
        self.last.map(|(offset, timestamp_ms)| ReadThrough {
            next: self.next,
            last_offset: offset,
            last_timestamp_ms: timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            let mut frontier = Frontier::new(start, None);
            for &offset in &offsets {
                if Some(offset) != foreign {
                    frontier.delivered(offset, offset * 10);
                }
            }
            let end = start + offsets.len() as i64;
            let next = foreign.unwrap_or(end);
            prop_assert_eq!(frontier.next(), next);
            let mark = frontier.mark();
            if next > start {
                prop_assert_eq!(mark, Some(ReadThrough {
                    next,
                    last_offset: next - 1,
                    last_timestamp_ms: (next - 1) * 10,
                }));
            } else {
                prop_assert_eq!(mark, None);
            }
        }
    }

    #[test]
    fn reports_below_the_frontier_change_nothing() {
        let mut frontier = Frontier::new(10, Some((9, 90)));
        frontier.delivered(3, 30);
        frontier.delivered(9, 91);
        assert_eq!(frontier.next(), 10);
        assert_eq!(frontier.mark().map(|m| m.last_timestamp_ms), Some(90));
        frontier.delivered(10, 100);
        frontier.delivered(10, 101);
        assert_eq!(frontier.next(), 11);
        assert_eq!(frontier.mark().map(|m| m.last_timestamp_ms), Some(100));
    }

    #[test]
    fn a_frontier_held_too_long_gives_up_and_stays() {
        let mut frontier = Frontier::new(0, None);
        for offset in 1..=MAX_AHEAD as i64 + 1 {
            frontier.delivered(offset, offset);
        }
        frontier.delivered(0, 0);
        assert_eq!(frontier.next(), 0, "it moves no further once stuck");
    }
}
