//! Fuzzing for hashbuy's two decoders of untrusted bytes: the tweet
//! decoder the matcher runs on every record of the tweets topic
//! (`hashbuy_core::decode` and the purchase rules after it) and the
//! command decoder the settler runs on every record of the commands topic
//! (`hashbuy_settler::command::decode`).
//!
//! # Targets and properties
//!
//! [`targets`] holds the targets, plain `fn(&[u8])` that panic when a
//! property fails, and lists the properties: beyond "no input panics",
//! determinism, the hot and plain decoders agreeing, format detection, ids
//! being decimal, "no hashtag sign, no purchase", and purchases following
//! the rules.
//!
//! # Two engines, one set of targets and corpora
//!
//! - **Stable, in CI and `cargo test`**: [`engine`], a seeded mutation
//!   loop (libFuzzer-style havoc edits, a dictionary, splicing; [`mutate`])
//!   over the seed corpus, with each target's outcome signature as feedback
//!   in place of coverage. `hashbuy-fuzz run all --seed 1 --iterations N`
//!   tries the same inputs on every machine. The crate's tests replay the
//!   corpora and the kept regressions and run a few thousand mutations.
//! - **Coverage-guided, for long runs**: `fuzz/` at the repository's root
//!   is a cargo-fuzz (libFuzzer) crate, outside the workspace, whose
//!   targets call the same functions and read the same corpora
//!   (`fuzz/corpus/<target>/`) and dictionaries (`fuzz/dict/`).
//!   `cargo fuzz run <target> -s none` works on the stable toolchain (no
//!   sanitizer, which safe Rust needs little); nightly adds AddressSanitizer.
//!
//! Why this split: cargo-fuzz's coverage guidance is the strongest search,
//! but its instrumented build of the settler's dependency tree (librdkafka,
//! sled, tokio, rustls) takes minutes, cargo-fuzz itself must be installed,
//! and libFuzzer's runs are not reproducible input for input, so it suits
//! long runs, not a two-minute CI step. bolero was weighed too: its
//! `cargo test` engine runs on stable, but it replays its corpus files and
//! otherwise draws fresh random inputs from a seed, never mutating the
//! corpus, so its inputs seldom get past the first bytes of a 3 KB tweet;
//! its libFuzzer mode needs `cargo-bolero` and a nightly toolchain anyway. A small engine of our own,
//! mutating the seeds from the repository's samples and `hashbuy gen`
//! output, reaches deep into real records on stable, reuses the build
//! `cargo test` has already made, is deterministic by seed, and keeps the
//! targets plain functions that any engine can drive.
//!
//! # Corpora
//!
//! `fuzz/corpus/<target>/` is written by `hashbuy-fuzz seed` ([`seeds`]):
//! the sample stream, a small `hashbuy gen` world, protobuf encodings and
//! hand-made edge cases. `fuzz/regressions/<target>/` keeps each input
//! that once broke a property; both are replayed by `cargo test`.

pub mod engine;
pub mod mutate;
pub mod seeds;
pub mod targets;

use std::path::{Path, PathBuf};

pub use targets::{target, Target, TARGETS};

/// The repository's `fuzz/` folder: corpora, dictionaries, regressions and
/// the cargo-fuzz crate.
pub fn fuzz_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/fuzz -> the repository's root.
    let root = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    root.join("fuzz")
}

/// `fuzz/corpus/<target>`: the seed corpus (cargo-fuzz's default corpus).
pub fn corpus_dir(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

/// `fuzz/regressions/<target>`: inputs that once broke a property.
pub fn regressions_dir(target: &str) -> PathBuf {
    fuzz_dir().join("regressions").join(target)
}

/// `fuzz/artifacts/<target>`: where failing inputs are saved (cargo-fuzz's
/// default too; not committed).
pub fn artifacts_dir(target: &str) -> PathBuf {
    fuzz_dir().join("artifacts").join(target)
}

/// `fuzz/dict/<target>.dict`: the target's dictionary, in libFuzzer's
/// format.
pub fn dict_path(target: &str) -> PathBuf {
    fuzz_dir().join("dict").join(format!("{target}.dict"))
}

/// The files of `dir`, sorted by name; none if it does not exist.
pub fn read_inputs(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(&p).map(|bytes| (p, bytes)))
        .collect()
}

/// A target's dictionary; none if it has no file.
pub fn load_dict(target: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = dict_path(target);
    match std::fs::read_to_string(&path) {
        Ok(text) => mutate::parse_dict(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// What a run starts from: the files of `corpus` (or, when it has none,
/// the seeds [`seeds`] makes) and the target's regressions.
pub fn starting_inputs(target: &str, corpus: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut inputs: Vec<Vec<u8>> = read_inputs(corpus)?.into_iter().map(|(_, b)| b).collect();
    if inputs.is_empty() {
        inputs = seeds::seeds(target).into_iter().map(|(_, b)| b).collect();
    }
    inputs.extend(
        read_inputs(&regressions_dir(target))?
            .into_iter()
            .map(|(_, b)| b),
    );
    Ok(inputs)
}
