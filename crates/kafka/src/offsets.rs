//! Contiguous offset tracking: many records of a partition in flight, and
//! an offset to commit that never passes an unfinished one.
//!
//! A consumer that works on records concurrently finishes them out of
//! order. Committing offset `n` tells the group that every record before
//! `n` is done, so the committable offset is the lowest offset still in
//! flight, or one past the last started when none is. Offsets need not be
//! contiguous (compaction and transaction markers leave gaps): only the
//! offsets handed to [`OffsetTracker::start`] count.

use std::collections::BTreeSet;

/// Offsets of one partition: started, finished, and what may be committed.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset started.
    next: Option<i64>,
}

/// Misuse of an [`OffsetTracker`]: a bug in the caller, reported rather
/// than ignored because a wrong commit loses or repeats records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// Offsets must be started in increasing order, as a partition delivers
    /// them.
    #[error("offset {offset} started after offset {last}")]
    OutOfOrder {
        /// The offset started.
        offset: i64,
        /// The highest offset started before it.
        last: i64,
    },
    /// Only an offset in flight can finish.
    #[error("offset {0} finished but was not in flight")]
    NotInFlight(i64),
}

impl OffsetTracker {
    /// A tracker with nothing started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `offset` as in flight. Offsets must increase.
    pub fn start(&mut self, offset: i64) -> Result<(), OffsetError> {
        if let Some(next) = self.next {
            if offset < next {
                return Err(OffsetError::OutOfOrder {
                    offset,
                    last: next - 1,
                });
            }
        }
        self.in_flight.insert(offset);
        self.next = Some(offset + 1);
        Ok(())
    }

    /// Marks `offset` as done.
    pub fn finish(&mut self, offset: i64) -> Result<(), OffsetError> {
        if self.in_flight.remove(&offset) {
            Ok(())
        } else {
            Err(OffsetError::NotInFlight(offset))
        }
    }

    /// The partition was read to `end`, its position after the last record
    /// delivered: offsets below it that were never started (transaction
    /// markers, records compacted away) will never come, so once nothing is
    /// in flight the offset to commit is `end`, not one past the last
    /// record. Without this, a partition ending in a transaction marker
    /// could never be committed to its end. An `end` at or below what was
    /// started changes nothing.
    pub fn reached(&mut self, end: i64) {
        if self.next.is_none_or(|next| end > next) {
            self.next = Some(end);
        }
    }

    /// The offset to commit: every record before it is done. `None` before
    /// anything started.
    pub fn committable(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }

    /// How many records are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commits_stop_at_the_oldest_record_in_flight() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.committable(), None);
        for offset in [10, 11, 12, 15] {
            t.start(offset).expect("increasing");
        }
        assert_eq!(t.committable(), Some(10));
        t.finish(11).expect("in flight");
        t.finish(12).expect("in flight");
        assert_eq!(t.committable(), Some(10), "10 is still in flight");
        t.finish(10).expect("in flight");
        assert_eq!(t.committable(), Some(15), "gaps between offsets are fine");
        t.finish(15).expect("in flight");
        assert_eq!(t.committable(), Some(16));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_partition_read_to_its_end_commits_past_the_markers_there() {
        let mut t = OffsetTracker::new();
        t.reached(7);
        assert_eq!(t.committable(), Some(7), "only markers before 7");
        t.start(8).expect("after the end");
        t.reached(10);
        assert_eq!(t.committable(), Some(8), "8 is still in flight");
        t.finish(8).expect("in flight");
        assert_eq!(t.committable(), Some(10), "9 was the commit marker");
        t.reached(9);
        assert_eq!(t.committable(), Some(10), "an end never goes back");
        t.start(11).expect("a later record");
    }

    #[test]
    fn misuse_is_an_error() {
        let mut t = OffsetTracker::new();
        t.start(5).expect("first");
        assert_eq!(
            t.start(5),
            Err(OffsetError::OutOfOrder { offset: 5, last: 5 })
        );
        assert_eq!(t.finish(4), Err(OffsetError::NotInFlight(4)));
        t.finish(5).expect("in flight");
        assert_eq!(t.finish(5), Err(OffsetError::NotInFlight(5)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// Whatever order records finish in, the committable offset never
        /// passes an unfinished record, never goes back, and reaches the end.
        #[test]
        fn never_passes_an_unfinished_record(
            gaps in prop::collection::vec(1i64..4, 1..60),
            order in any::<prop::sample::Index>(),
        ) {
            let mut offsets = Vec::new();
            let mut offset = 100;
            for gap in gaps {
                offsets.push(offset);
                offset += gap;
            }
            let mut t = OffsetTracker::new();
            for &o in &offsets {
                t.start(o).expect("increasing");
            }
            let mut pending = offsets.clone();
            let mut last = t.committable().expect("started");
            let mut pick = order.index(usize::MAX);
            while !pending.is_empty() {
                pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let done = pending.swap_remove(pick % pending.len());
                t.finish(done).expect("in flight");
                let now = t.committable().expect("started");
                prop_assert!(now >= last, "went back from {} to {}", last, now);
                prop_assert!(pending.iter().all(|&p| p >= now), "passed an unfinished record");
                last = now;
            }
            prop_assert_eq!(last, offsets[offsets.len() - 1] + 1);
        }
    }
}
