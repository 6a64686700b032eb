//! What the limit check reads of the ledger for each new command, on one
//! partition of a million buyers spread over 64 (15,625 buyers, each with
//! one settled entry and one count of an offer without an end: every
//! bucket of counts holds some 61).
//!
//! Four measurements, in one run so they compare as ratios: `count`
//! (`PartitionLedger::bought` of a buyer with a count: the bucket read and
//! decoded), `no_count` (of a buyer without one: the bucket read and
//! searched for the id), `history` (`PartitionLedger::history`, the user's
//! entries, which the check reads beside the count), and `entry`
//! (`PartitionLedger::get`, the lookup every command makes first).
//!
//! Run: `cargo bench --bench ledger` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion};
use hashbuy_proto::v1::PaymentCommand;
use hashbuy_settler::entry::Entry;
use hashbuy_settler::horizon::{Bought, NO_END};
use hashbuy_settler::ledger::{Floor, Ledger, MetaKey, Raise};

/// Buyers in the partition.
const BUYERS: usize = 15_625;

/// Lookups per iteration, each of another buyer.
const LOOKUPS: usize = 1_000;

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger = Ledger::open(dir.path()).expect("the ledger opens");
    let partition = ledger.partition(0).expect("a partition");
    let user = |i: usize| format!("{}", 1_000_000 + i * 64);
    let mut raise = Raise {
        floor: Floor::default(),
        bought: Vec::with_capacity(BUYERS),
    };
    for i in 0..BUYERS {
        let command = PaymentCommand {
            command_id: format!("cmd-{i}"),
            user_id: user(i),
            offer_id: "offer".into(),
            amount: 100,
            currency: "usd".into(),
            ..PaymentCommand::default()
        };
        partition
            .put(&Entry::received(command, 0, i as i64, 0))
            .expect("an entry written");
        raise.bought.push((
            MetaKey::Bought {
                user_id: user(i),
                offer_id: "offer".into(),
            },
            Bought {
                count: 1,
                through_ms: 1,
                offer_ends_ms: NO_END,
            },
        ));
    }
    partition.raise(&raise).expect("counts written");
    ledger.flush().expect("flushed");
    let step = BUYERS / LOOKUPS;

    let mut group = c.benchmark_group("ledger_lookups");
    group.sample_size(30);
    // Buyers from `BUYERS` on have no count.
    for (name, first) in [("count", 0), ("no_count", BUYERS)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                (0..LOOKUPS)
                    .map(|i| {
                        let buyer = user(first + i * step);
                        partition.bought(&buyer, "offer").expect("read").count
                    })
                    .sum::<u32>()
            })
        });
    }
    group.bench_function("history", |b| {
        b.iter(|| {
            (0..LOOKUPS)
                .map(|i| partition.history(&user(i * step)).expect("read").len())
                .sum::<usize>()
        })
    });
    group.bench_function("entry", |b| {
        b.iter(|| {
            (0..LOOKUPS)
                .filter(|i| {
                    partition
                        .get(&format!("cmd-{}", i * step))
                        .expect("read")
                        .is_some()
                })
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
