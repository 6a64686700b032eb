//! What `cargo test` checks of fuzzing: every committed corpus input and
//! every kept regression holds every property, a short seeded run of the
//! stable engine finds nothing, and the engine itself catches, shrinks and
//! reproduces what it finds.

use hashbuy_fuzz::engine::{self, Config};
use hashbuy_fuzz::targets::has_duplicate_key;
use hashbuy_fuzz::{
    corpus_dir, load_dict, read_inputs, regressions_dir, seeds, starting_inputs, Target, TARGETS,
};

#[test]
fn every_corpus_and_regression_input_holds_every_property() {
    for t in TARGETS {
        let mut inputs = 0;
        for dir in [corpus_dir(t.name), regressions_dir(t.name)] {
            for (path, data) in read_inputs(&dir).expect("reads") {
                if let Err(message) = engine::execute(t, &data) {
                    panic!("{}: {message}", path.display());
                }
                inputs += 1;
            }
        }
        assert!(inputs >= 20, "{}: a corpus is committed", t.name);
    }
}

#[test]
fn generated_seeds_hold_every_property() {
    for t in TARGETS {
        for (name, data) in seeds::seeds(t.name) {
            if let Err(message) = engine::execute(t, &data) {
                panic!("{}/{name}: {message}", t.name);
            }
        }
    }
}

#[test]
fn records_at_and_over_the_size_limit_hold_every_property() {
    use hashbuy_core::decode::MAX_RECORD_BYTES;
    let t = hashbuy_fuzz::target("tweet_decoder").expect("exists");
    let tweet = br##"{"id_str": "1", "text": "#BuyCafe", "user": {"id_str": "1212"}, "timestamp_ms": "5"}"##;
    for len in [MAX_RECORD_BYTES, MAX_RECORD_BYTES + 1] {
        let mut record = tweet.to_vec();
        record.resize(len, b' ');
        engine::execute(t, &record).unwrap_or_else(|m| panic!("{len} bytes: {m}"));
    }
}

#[test]
fn dictionaries_load() {
    for t in TARGETS {
        let dict = load_dict(t.name).expect("parses");
        assert!(dict.len() >= 20, "{}: a dictionary is committed", t.name);
    }
}

fn short_run(t: Target, seed: u64, iterations: u64) -> engine::Report {
    let seeds = starting_inputs(t.name, &corpus_dir(t.name)).expect("reads");
    let config = Config {
        seed,
        iterations,
        ..Config::default()
    };
    engine::run(t, &seeds, load_dict(t.name).expect("parses"), &config)
        .unwrap_or_else(|crash| panic!("{crash}"))
}

#[test]
fn a_short_seeded_run_finds_nothing() {
    for t in TARGETS {
        let report = short_run(t, 7, 3_000);
        assert_eq!(report.execs, report.seeds as u64 + 3_000);
        assert!(report.signatures > 10, "{report}");
    }
}

#[test]
fn the_same_seed_tries_the_same_inputs() {
    let t = hashbuy_fuzz::target("tweet_decoder").expect("exists");
    let (a, b) = (short_run(t, 11, 500), short_run(t, 11, 500));
    assert_eq!(
        (a.execs, a.signatures, a.corpus),
        (b.execs, b.signatures, b.corpus)
    );
}

#[test]
fn a_broken_property_is_caught_shrunk_and_replayable() {
    let toy = Target {
        name: "toy",
        run: |data| {
            assert!(!data.windows(3).any(|w| w == b"BUG"), "the input holds BUG");
            0
        },
    };
    let seeds = vec![b"{\"a\": 1}".to_vec(), b"xx BUG yy".to_vec()];
    let crash = engine::run(toy, &seeds, Vec::new(), &Config::default()).expect_err("found");
    assert!(crash.message.contains("the input holds BUG"), "{crash}");
    assert_eq!(crash.input, b"xx BUG yy");
    assert_eq!(crash.minimized, b"BUG");
    assert!(engine::execute(toy, &crash.minimized).is_err());
    // The engine stays usable, and quiet, after a caught panic.
    assert_eq!(engine::execute(toy, b"fine"), Ok(0));
}

#[test]
fn the_duplicate_key_regression_is_recognized() {
    let path = regressions_dir("tweet_decoder").join("duplicate-text-key.json");
    let data = std::fs::read(&path).expect("kept");
    assert!(has_duplicate_key(&data));
    assert!(has_duplicate_key(br#"{"a": [{"b": 1, "b": 2}]}"#));
    assert!(!has_duplicate_key(br#"{"a": {"b": 1}, "b": {"a": 2}}"#));
    assert!(!has_duplicate_key(b"not json"));
}

/// The divergence the tweet target sets aside (`has_duplicate_key`'s
/// docs): the hot path reads the first of two `text` keys, the reference
/// decoder the last, so one buys and the other does not. Ignored until the
/// product decides which reading is right; then un-ignore it and drop the
/// exclusion in `targets::tweet_decoder`.
#[test]
#[ignore = "known divergence on duplicate JSON keys, awaiting a product decision"]
fn duplicate_keys_are_read_alike_on_both_paths() {
    use hashbuy_core::decode::{decode, decode_reference};
    let data = std::fs::read(regressions_dir("tweet_decoder").join("duplicate-text-key.json"))
        .expect("kept");
    assert_eq!(
        decode(&data).map(|r| r.into_owned()),
        decode_reference(&data)
    );
}
