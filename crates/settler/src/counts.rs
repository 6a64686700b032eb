//! The counts of pruned purchases ([`Bought`], what `max_per_user` keeps
//! of entries past the horizon) as the ledger and its changelog hold them:
//! in buckets (pure).
//!
//! A partition's counts are split into [`BUCKETS`] buckets by a hash of
//! the user id ([`bucket_of`]), and each bucket is one record, in the
//! ledger and in the changelog alike (`hashbuy.v1.LedgerCounts`). An offer
//! without an end keeps every buyer's count for good, so a new owner's
//! restore would otherwise read one changelog record a buyer: a million
//! buyers took 17.5 s on noida-db, where a broker serves some 100,000
//! records a second however small. In buckets it reads at most
//! [`BUCKETS`] records a partition, whatever the number of buyers.
//!
//! A bucket is written whole, with every count it holds, so the
//! changelog's latest record of a bucket (all that compaction keeps) holds
//! all of its counts as its owner last sent them. Counts only grow
//! ([`Bought::higher`]), and a restore merges a bucket into the one it
//! holds, count by count: records read in any order leave the highest of
//! each, and a count a record lacks is kept.
//!
//! Written whole, a bucket that lands after the next owner's (sent by a
//! settler that lost the partition, paused with it in flight) is the one
//! compaction keeps, without the counts the next owner raised in it since
//! it took over; per count, such a record held only its own. So a pass
//! delivers every bucket it writes before it ends (a hand-over awaits the
//! pass), every pass sends every bucket of its partition, raised or not,
//! and a first pass that sent them soon after the partition came here
//! sends them again once any record of the last owner's has landed or
//! failed (the producer's delivery timeout and its margin): a late bucket
//! is put right within that time, and only a restore within it can read
//! the late bucket as the latest. This assumes every settler of the group
//! has the same delivery timeout, and does not fence a settler paused
//! between its lease check and the queueing of a record.
//!
//! A count is one buyer's of one offer, some 40 to 50 bytes with ids of
//! up to 19 digits: a changelog record, about 1 MB by Kafka's and
//! librdkafka's defaults, holds some 20,000, so a partition's buckets
//! fill at some 5 million counts. A pass with a bucket past what one
//! record may carry stops before it deletes anything, with an error that
//! names it and the settings to raise.

use std::collections::BTreeMap;

use hashbuy_proto::v1::{LedgerCount, LedgerCounts};
use prost::Message;

use crate::horizon::{Bought, NO_END};

/// How many buckets a partition's counts are split into. A bucket's number
/// is part of its key in every changelog written: changing it would leave
/// the old buckets behind, read but never written again.
pub const BUCKETS: u32 = 256;

/// A bucket's counts, by user and offer.
pub type Counts = BTreeMap<(String, String), Bought>;

/// The bucket a user's counts are kept in: the user id's XXH3 (64-bit,
/// seed 0: a specified algorithm, the same in every version and on every
/// machine, by `xxhash-rust`, which follows the reference's test
/// vectors), modulo [`BUCKETS`]. Not CRC-32: librdkafka's default
/// partitioner puts a command in partition CRC-32(user id) mod N, so
/// within a partition CRC-32 mod 256 takes only 256 / N values (4 buckets
/// a partition of 64); XXH3 is unrelated to it and to murmur2, the Java
/// client's.
pub fn bucket_of(user_id: &str) -> u16 {
    // Below BUCKETS, which is far below u16::MAX.
    (xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) % u64::from(BUCKETS)) as u16
}

/// A bucket's record: its counts as `hashbuy.v1.LedgerCounts`.
pub fn encode(counts: &Counts) -> Vec<u8> {
    LedgerCounts {
        counts: counts
            .iter()
            .map(|((user_id, offer_id), bought)| LedgerCount {
                user_id: user_id.clone(),
                offer_id: offer_id.clone(),
                count: bought.count,
                through_ms: bought.through_ms,
                offer_ends_ms: (bought.offer_ends_ms != NO_END).then_some(bought.offer_ends_ms),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A user's count of an offer in a bucket's record (none when it holds
/// none), without building the bucket's map; what is wrong with the
/// record if it cannot be read.
pub fn find(bytes: &[u8], user_id: &str, offer_id: &str) -> Result<Option<Bought>, String> {
    let stored = LedgerCounts::decode(bytes).map_err(|e| e.to_string())?;
    Ok(stored
        .counts
        .into_iter()
        .filter(|count| count.user_id == user_id && count.offer_id == offer_id)
        .map(|count| Bought {
            count: count.count,
            through_ms: count.through_ms,
            offer_ends_ms: count.offer_ends_ms.unwrap_or(NO_END),
        })
        .reduce(Bought::higher))
}

/// A bucket's counts from its record; what is wrong with it if it cannot
/// be read. A user and offer twice (no version writes that) keep the
/// higher of each field.
pub fn decode(bytes: &[u8]) -> Result<Counts, String> {
    let stored = LedgerCounts::decode(bytes).map_err(|e| e.to_string())?;
    let mut counts = Counts::new();
    for count in stored.counts {
        let bought = Bought {
            count: count.count,
            through_ms: count.through_ms,
            offer_ends_ms: count.offer_ends_ms.unwrap_or(NO_END),
        };
        counts
            .entry((count.user_id, count.offer_id))
            .and_modify(|held| *held = held.higher(bought))
            .or_insert(bought);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_users_bucket_is_the_same_in_every_version() {
        // Changelogs written by earlier runs name these buckets: XXH3 64
        // as the reference computes it (Python's `xxhash.xxh3_64`: no bytes
        // hash to 0x2d06800538d394c2, "12345" to 0xf34099ede96b5581).
        assert_eq!(bucket_of(""), 0xc2);
        assert_eq!(bucket_of("12345"), 0x81);
        assert!((0..10_000).all(|u| u32::from(bucket_of(&u.to_string())) < BUCKETS));
    }

    /// The users of one partition, as librdkafka's default partitioner
    /// places them (CRC-32 of the key, modulo the partitions), fill every
    /// bucket, however many partitions.
    #[test]
    fn one_partitions_users_fill_every_bucket() {
        for partitions in [4, 64] {
            let used: std::collections::BTreeSet<u16> = (0..200_000)
                .map(|u| u.to_string())
                .filter(|u| crc32fast::hash(u.as_bytes()) % partitions == 1)
                .map(|u| bucket_of(&u))
                .collect();
            assert_eq!(used.len() as u32, BUCKETS, "{partitions} partitions");
        }
    }

    proptest! {
        #[test]
        fn a_bucket_reads_back_as_written(
            counts in proptest::collection::btree_map(
                ("[a-z0-9]{0,12}", "[a-z0-9]{0,12}"),
                (any::<u32>(), any::<i64>(), any::<i64>()),
                0..50,
            )
        ) {
            let counts: Counts = counts
                .into_iter()
                .map(|(key, (count, through_ms, offer_ends_ms))| {
                    (key, Bought { count, through_ms, offer_ends_ms })
                })
                .collect();
            prop_assert_eq!(decode(&encode(&counts)), Ok(counts));
        }
    }

    #[test]
    fn a_count_is_found_as_the_bucket_holds_it() {
        let bought = |count| Bought {
            count,
            through_ms: 5,
            offer_ends_ms: NO_END,
        };
        let bucket = Counts::from([
            (("u".to_owned(), "o".to_owned()), bought(2)),
            (("u".to_owned(), "p".to_owned()), bought(3)),
            (("uu".to_owned(), "o".to_owned()), bought(4)),
        ]);
        let bytes = encode(&bucket);
        assert_eq!(find(&bytes, "u", "o"), Ok(Some(bought(2))));
        assert_eq!(find(&bytes, "uu", "o"), Ok(Some(bought(4))));
        assert_eq!(find(&bytes, "u", "q"), Ok(None));
        assert!(find(b"\xff\xff", "u", "o").is_err());
    }

    #[test]
    fn a_count_twice_in_a_record_reads_as_its_highest() {
        let count = |count, through_ms, offer_ends_ms| LedgerCount {
            user_id: "u".into(),
            offer_id: "o".into(),
            count,
            through_ms,
            offer_ends_ms,
        };
        let bytes = LedgerCounts {
            counts: vec![count(3, 10, Some(5)), count(2, 20, None)],
        }
        .encode_to_vec();
        let read = decode(&bytes).expect("readable");
        assert_eq!(
            read.get(&("u".to_owned(), "o".to_owned())),
            Some(&Bought {
                count: 3,
                through_ms: 20,
                offer_ends_ms: NO_END,
            })
        );
        assert!(decode(b"\xff\xff").is_err(), "garbage is named unreadable");
    }
}
