//! The prefilter changes no decision that matters: on `hashbuy gen`
//! tweets, whole and damaged, the matcher validating only signed records
//! ([`Validation::Signed`], the default) produces exactly what validating
//! every record ([`Validation::All`]) does on every record that holds a
//! hashtag sign; a record without one buys on neither path.

use hashbuy_core::prefilter::holds_sign;
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_core::SkipReason;
use hashbuy_gen::{Generator, Options};
use hashbuy_matcher::{Handled, Matcher, Output, Sampled, Source, Validation, SKIMMED};
use proptest::prelude::*;

/// A small generated world, a quarter of its tweets purchases, and its
/// first lines.
fn world() -> (Catalog, Accounts, Vec<Vec<u8>>) {
    let mut generator = Generator::new(Options {
        seed: 11,
        purchase_share: 0.25,
        offers: 8,
        linked_users: 16,
        users: 32,
        ..Options::default()
    });
    let catalog = serde_json::to_string(&generator.catalog()).expect("serializes");
    let accounts = serde_json::to_string(&generator.accounts()).expect("serializes");
    let lines = (0..400)
        .map(|_| {
            let mut line = Vec::new();
            generator.write_next(&mut line);
            line
        })
        .collect();
    (
        Catalog::from_file_text("catalog.json", &catalog).expect("loads"),
        Accounts::from_file_text("accounts.json", &accounts).expect("loads"),
        lines,
    )
}

fn handle(matcher: &Matcher, offset: i64, value: &[u8]) -> (Handled, Vec<Output>) {
    let source = Source {
        topic: "tweets",
        partition: 0,
        offset,
        key: None,
        value,
    };
    let mut out = Vec::new();
    let handled = matcher.handle(&source, 7, None, &mut out);
    (handled, out)
}

fn matchers() -> (Matcher, Matcher, Vec<Vec<u8>>) {
    let (catalog, accounts, lines) = world();
    let (catalog_all, accounts_all, _) = world();
    (
        Matcher::new(catalog, accounts).with_validation(Validation::signed(0.0)),
        Matcher::new(catalog_all, accounts_all).with_validation(Validation::All),
        lines,
    )
}

#[test]
fn generated_records_decide_alike_and_buy() {
    let (signed, all, lines) = matchers();
    let (mut skimmed, mut commands) = (0, 0);
    for (offset, line) in lines.iter().enumerate() {
        let offset = offset as i64;
        let (fast, fast_out) = handle(&signed, offset, line);
        let (full, full_out) = handle(&all, offset, line);
        if fast.kind == SKIMMED {
            skimmed += 1;
            assert!(!holds_sign(line));
            assert!(fast_out.is_empty());
            assert!(full.commands == 0 && full_out.is_empty());
        } else {
            assert_eq!((fast, &fast_out), (full, &full_out));
            commands += fast_out.len();
        }
    }
    // The stream exercises both paths.
    assert!(skimmed > 50, "{skimmed} skimmed");
    assert!(commands > 50, "{commands} commands");
}

#[test]
fn a_sample_of_skimmed_records_is_validated_and_never_changes_the_decision() {
    let (catalog, accounts, _) = world();
    let matcher = Matcher::new(catalog, accounts).with_validation(Validation::signed(0.1));
    // Framed and without a sign, but its id is no id: malformed.
    let malformed = br#"{"id_str": 5, "text": "no tag", "user": {"id_str": "1"}}"#;
    let mut sampled = Vec::new();
    for offset in 0..100 {
        let (handled, out) = handle(&matcher, offset, malformed);
        assert!(out.is_empty(), "a sampled record is never dead-lettered");
        assert_eq!(handled.skip, Some(SkipReason::NoHashtagSign));
        if let Some(result) = handled.sampled {
            assert!(matches!(result, Sampled::Malformed(_)), "{result:?}");
            sampled.push(offset);
        }
    }
    assert_eq!(sampled, (0..100).step_by(10).collect::<Vec<_>>());

    let (catalog, accounts, _) = world();
    let all = Matcher::new(catalog, accounts).with_validation(Validation::All);
    let (handled, out) = handle(&all, 3, malformed);
    assert_eq!(handled.skip, Some(SkipReason::Invalid));
    assert!(matches!(&out[..], [Output::DeadLetter(letter)] if letter.reason.contains("id_str")));
}

#[test]
fn sample_rates_round_to_one_record_in_a_whole_number() {
    assert_eq!(
        Validation::signed(0.01),
        Validation::Signed { sample_every: 100 }
    );
    assert_eq!(
        Validation::signed(1.0),
        Validation::Signed { sample_every: 1 }
    );
    assert_eq!(
        Validation::signed(0.0),
        Validation::Signed { sample_every: 0 }
    );
    assert_eq!(
        Validation::signed(0.3),
        Validation::Signed { sample_every: 3 }
    );
}

#[test]
fn a_vanishing_sample_rate_samples_nothing_past_offset_zero() {
    let (catalog, accounts, _) = world();
    // 1/rate saturates at u64::MAX.
    let matcher = Matcher::new(catalog, accounts).with_validation(Validation::signed(1e-30));
    let record = br#"{"id_str": "1", "text": "no tags", "user": {"id_str": "2"}}"#;
    for offset in 1..=3 {
        assert_eq!(handle(&matcher, offset, record).0.sampled, None);
    }
}

/// Ways to damage a record: cut it, overwrite a byte, insert a byte.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    Overwrite(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    let byte = prop::sample::select(b"{}[]\":,\\#0a \x00\xff\xef".to_vec());
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Damage::Overwrite(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Overwrite(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Damage::Insert(i, b) => {
            let i = i.index(bytes.len());
            bytes.insert(i, *b);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_records_decide_alike_where_they_hold_a_sign(
        line in any::<prop::sample::Index>(),
        damage in damage(),
    ) {
        static MATCHERS: std::sync::OnceLock<(Matcher, Matcher, Vec<Vec<u8>>)> =
            std::sync::OnceLock::new();
        let (signed, all, lines) = MATCHERS.get_or_init(matchers);
        let bytes = apply(lines[line.index(lines.len())].clone(), &damage);
        let (fast, fast_out) = handle(signed, 1, &bytes);
        let (full, full_out) = handle(all, 1, &bytes);
        if holds_sign(&bytes) {
            prop_assert_eq!((fast, fast_out), (full, full_out));
        } else if fast.kind == SKIMMED {
            prop_assert!(fast_out.is_empty());
            prop_assert_eq!(full.commands, 0);
        } else {
            // Failed the cheap checks: decoded completely, as `all` does.
            prop_assert_eq!((fast, fast_out), (full, full_out));
        }
    }
}

/// The confirm flow decides alike under both validations: a delete notice
/// whose `delete` key is not first, which the prefilter skims, cancels
/// nothing under `--validate all` either.
#[test]
fn the_confirm_flow_decides_alike_under_both_validations() {
    use hashbuy_core::confirm::PartitionFlow;
    let (catalog, accounts) = hashbuy_core::samples::confirm_tables();
    let (catalog_all, accounts_all) = hashbuy_core::samples::confirm_tables();
    let signed = Matcher::new(catalog, accounts).with_validation(Validation::signed(0.0));
    let all = Matcher::new(catalog_all, accounts_all).with_validation(Validation::All);
    let purchase = hashbuy_core::samples::CONFIRM_TWEETS
        .lines()
        .nth(2)
        .expect("jane's purchase");
    let records: Vec<&[u8]> = vec![
        purchase.as_bytes(),
        br#"{"timestamp_ms": "1780318920000", "delete": {"status": {"id_str": "2061432826229686275", "user_id_str": "12345"}}}"#,
    ];
    let run = |matcher: &Matcher| {
        let mut flow = PartitionFlow::new();
        let mut out = Vec::new();
        for (offset, value) in records.iter().enumerate() {
            let source = Source {
                topic: "tweets",
                partition: 0,
                offset: offset as i64,
                key: None,
                value,
            };
            matcher.handle(&source, 7, Some(&mut flow), &mut out);
        }
        (out, flow.pending())
    };
    let (signed_out, signed_pending) = run(&signed);
    let (all_out, all_pending) = run(&all);
    assert_eq!(signed_out, all_out);
    assert_eq!(
        (signed_pending, all_pending),
        (1, 1),
        "the purchase stays pending on both"
    );
}
