//! Core throughput: decode + extract + match on `hashbuy gen` output (1% of
//! tweets with a catalog hashtag, a catalog of 10,000 offers), on one core.
//!
//! Six measurements over the same bytes, in one run so they compare as
//! ratios: `prefiltered` (what the matcher runs by default: records
//! without a hashtag sign decided by `prefilter::skim`, the rest by
//! `Rules::decide_bytes`), `skim_only` (the prefilter's byte scan alone,
//! on every record), `hot_path` (`Rules::decide_bytes` on every
//! record, `hashbuy match --validate all`),
//! `plain_path` (the same decisions through a whole `serde_json::Value`,
//! `Rules::decide_bytes_reference`), `serde_json_value` (only
//! `serde_json::from_slice::<Value>`, the general-purpose baseline), and
//! `serde_json_ignored` (`serde_json::from_slice::<IgnoredAny>`: a syntax
//! check that builds nothing, and checks less than the hot path does,
//! neither UTF-8 nor surrogate escapes; a floor for any decoder that reads
//! every byte).
//! Criterion reports MB/s; tweets/s is printed beside it at start-up
//! (MB/s ÷ average record size).
//!
//! Run: `cargo bench --bench core` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hashbuy_core::prefilter::{skim, Skim};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_core::Rules;
use hashbuy_gen::{Generator, Options};

/// Records per iteration: enough for a stable mix of shapes.
const RECORDS: usize = 20_000;

struct Data {
    records: Vec<Vec<u8>>,
    bytes: u64,
    catalog: Catalog,
    accounts: Accounts,
}

fn data() -> Data {
    let mut generator = Generator::new(Options {
        purchase_share: 0.01,
        offers: 10_000,
        ..Options::default()
    });
    let catalog_json = serde_json::to_string(&generator.catalog()).expect("catalog renders");
    let accounts_json = serde_json::to_string(&generator.accounts()).expect("accounts render");
    let catalog =
        Catalog::from_file_text("catalog.json", &catalog_json).expect("generated catalog loads");
    let accounts =
        Accounts::from_file_text("accounts.json", &accounts_json).expect("generated accounts load");
    let records: Vec<Vec<u8>> = (0..RECORDS)
        .map(|_| {
            let mut line = Vec::new();
            generator.write_next(&mut line);
            line
        })
        .collect();
    let bytes = records.iter().map(|r| r.len() as u64).sum();
    Data {
        records,
        bytes,
        catalog,
        accounts,
    }
}

fn throughput(c: &mut Criterion) {
    let data = data();
    let rules = Rules::new(&data.catalog, &data.accounts);
    let buys = data
        .records
        .iter()
        .filter(|r| !rules.decide_bytes(r).commands().is_empty())
        .count();
    let signed = data
        .records
        .iter()
        .filter(|r| skim(r) == Skim::Decode)
        .count();
    eprintln!(
        "{} records ({signed} decoded by the prefiltered path), {:.0} bytes on average, {} buy; \
         tweets/s = MB/s × {:.0}",
        data.records.len(),
        data.bytes as f64 / data.records.len() as f64,
        buys,
        1e6 / (data.bytes as f64 / data.records.len() as f64),
    );

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Bytes(data.bytes));
    group.sample_size(20);
    group.bench_function("prefiltered", |b| {
        b.iter(|| {
            data.records
                .iter()
                .map(|r| match skim(r) {
                    Skim::NoSign => 0,
                    Skim::Decode => rules.decide_bytes(r).commands().len(),
                })
                .sum::<usize>()
        })
    });
    group.bench_function("skim_only", |b| {
        b.iter(|| {
            data.records
                .iter()
                .filter(|r| skim(r) == Skim::NoSign)
                .count()
        })
    });
    group.bench_function("hot_path", |b| {
        b.iter(|| {
            data.records
                .iter()
                .map(|r| rules.decide_bytes(r).commands().len())
                .sum::<usize>()
        })
    });
    group.bench_function("plain_path", |b| {
        b.iter(|| {
            data.records
                .iter()
                .map(|r| rules.decide_bytes_reference(r).commands().len())
                .sum::<usize>()
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            data.records
                .iter()
                .filter(|r| serde_json::from_slice::<serde_json::Value>(r).is_ok())
                .count()
        })
    });
    group.bench_function("serde_json_ignored", |b| {
        b.iter(|| {
            data.records
                .iter()
                .filter(|r| serde_json::from_slice::<serde::de::IgnoredAny>(r).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
