//! The stable engine: a seeded, corpus-mutating fuzz loop that needs
//! nothing but the stable toolchain.
//!
//! It runs every seed input, then mutates inputs picked from a working
//! corpus ([`crate::mutate::Mutator`]) for a number of iterations or a
//! time, whichever ends first. With no coverage instrumentation on stable,
//! its feedback is each target's outcome signature: an input whose
//! signature is new joins the working corpus, so an edit that reaches a new
//! kind of record, error or decision is built upon. The same seed, corpus
//! and dictionary give the same inputs in the same order, so a time limit
//! only shortens a run, it never changes what was tried.
//!
//! A panic (a property broken) stops the run: the input is shrunk while it
//! still fails at the same place, both are saved, and the report says how
//! to replay them.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::mutate::Mutator;
use crate::targets::Target;

/// How long a run goes and where it writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the mutations.
    pub seed: u64,
    /// Mutated inputs to try after the seeds; 0 for no limit.
    pub iterations: u64,
    /// Stop after this long, whatever the iterations.
    pub max_time: Option<Duration>,
    /// Largest input made by mutation.
    pub max_len: usize,
    /// Where failing inputs are saved (`fuzz/artifacts/<target>`); `None`
    /// saves nothing.
    pub artifacts: Option<PathBuf>,
    /// Print progress every this often.
    pub progress_every: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            iterations: 10_000,
            max_time: None,
            max_len: 64 * 1024,
            artifacts: None,
            progress_every: None,
        }
    }
}

/// A run that found nothing.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// The seed.
    pub seed: u64,
    /// Seed inputs run.
    pub seeds: usize,
    /// Inputs run, seeds included.
    pub execs: u64,
    /// Distinct outcome signatures seen.
    pub signatures: usize,
    /// The working corpus at the end (seeds included).
    pub corpus: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether the time limit ended it before its iterations.
    pub timed_out: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: seed {}, {} inputs ({} seeds) in {:.1} s ({:.0}/s), {} outcomes, corpus {}{}",
            self.target,
            self.seed,
            self.execs,
            self.seeds,
            secs,
            self.execs as f64 / secs.max(1e-9),
            self.signatures,
            self.corpus,
            if self.timed_out {
                ", stopped by the time limit"
            } else {
                ""
            }
        )
    }
}

/// A broken property.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The target's name.
    pub target: &'static str,
    /// The panic's message and place.
    pub message: String,
    /// The input that failed.
    pub input: Vec<u8>,
    /// A smaller input that fails at the same place.
    pub minimized: Vec<u8>,
    /// Where they were saved.
    pub saved: Vec<PathBuf>,
    /// The seed, and how many inputs ran before this one.
    pub seed: u64,
    /// Inputs run before.
    pub execs: u64,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: property broken (seed {}, after {} inputs): {}",
            self.target, self.seed, self.execs, self.message
        )?;
        writeln!(
            f,
            "  input ({} bytes): {}",
            self.input.len(),
            preview(&self.input)
        )?;
        writeln!(
            f,
            "  minimized ({} bytes): {}",
            self.minimized.len(),
            preview(&self.minimized)
        )?;
        for path in &self.saved {
            writeln!(
                f,
                "  saved: {}  (replay: cargo run -p hashbuy-fuzz -- repro {} {})",
                path.display(),
                self.target,
                path.display()
            )?;
        }
        write!(
            f,
            "  keep it as a regression test: copy it into fuzz/regressions/{}/",
            self.target
        )
    }
}

fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let shown = bytes[..bytes.len().min(MAX)].escape_ascii().to_string();
    if bytes.len() > MAX {
        format!("b\"{shown}\"...")
    } else {
        format!("b\"{shown}\"")
    }
}

thread_local! {
    /// Set while this thread runs a target: its panics are caught and
    /// kept here instead of printed.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Installs, once, a panic hook that keeps the panics of targets quiet.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let caught = CAUGHT.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let message = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        let place = info
                            .location()
                            .map(|l| format!("{}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        *slot = Some(format!("{message} [at {place}]"));
                        true
                    }
                    None => false,
                }
            });
            if !caught {
                default(info);
            }
        }));
    });
}

/// Runs `target` on `input`: `Ok(signature)`, or the panic's message.
pub fn execute(target: Target, input: &[u8]) -> Result<u64, String> {
    install_hook();
    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let message = CAUGHT.with(|c| c.borrow_mut().take().flatten());
    result.map_err(|_| message.unwrap_or_else(|| "(panic without a message)".into()))
}

/// Where a panic message says it happened.
fn place(message: &str) -> &str {
    message.rsplit_once("[at ").map_or(message, |(_, p)| p)
}

/// Runs `target` over `seeds`, then over mutations of them.
pub fn run(
    target: Target,
    seeds: &[Vec<u8>],
    dict: Vec<Vec<u8>>,
    config: &Config,
) -> Result<Report, Box<Crash>> {
    let started = Instant::now();
    let mut mutator = Mutator::new(seed_for(config.seed, target.name), dict, config.max_len);
    let mut signatures = HashSet::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut execs = 0u64;
    let crash = |input: &[u8], message: String, execs: u64| {
        Box::new(crashed(target, input, message, config, execs))
    };
    for input in seeds {
        let signature = execute(target, input).map_err(|m| crash(input, m, execs))?;
        execs += 1;
        signatures.insert(signature);
        corpus.push(input.clone());
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut last_progress = started;
    let mut timed_out = false;
    let mut tried = 0u64;
    let mut input = Vec::new();
    while config.iterations == 0 || tried < config.iterations {
        if tried % 64 == 0 {
            let now = Instant::now();
            if config.max_time.is_some_and(|t| now - started >= t) {
                timed_out = config.iterations != 0;
                break;
            }
            if config
                .progress_every
                .is_some_and(|every| now - last_progress >= every)
            {
                last_progress = now;
                eprintln!(
                    "{}: {} inputs in {:.0} s, {} outcomes, corpus {}",
                    target.name,
                    execs,
                    (now - started).as_secs_f64(),
                    signatures.len(),
                    corpus.len()
                );
            }
        }
        let parent = mutator.rng().gen_range(0..corpus.len());
        input.clear();
        input.extend_from_slice(&corpus[parent]);
        mutator.mutate(&mut input, &corpus);
        let signature = execute(target, &input).map_err(|m| crash(&input, m, execs))?;
        execs += 1;
        tried += 1;
        if signatures.insert(signature) && corpus.len() < 20_000 {
            corpus.push(input.clone());
        }
    }
    Ok(Report {
        target: target.name,
        seed: config.seed,
        seeds: seeds.len(),
        execs,
        signatures: signatures.len(),
        corpus: corpus.len(),
        elapsed: started.elapsed(),
        timed_out,
    })
}

/// Each target's mutations have their own stream, from the run's seed.
fn seed_for(seed: u64, name: &str) -> u64 {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    seed ^ h
}

fn crashed(target: Target, input: &[u8], message: String, config: &Config, execs: u64) -> Crash {
    let minimized = minimize(target, input, place(&message));
    let mut saved = Vec::new();
    if let Some(dir) = &config.artifacts {
        for (prefix, bytes) in [("crash", input), ("minimized", &minimized[..])] {
            if let Some(path) = save(dir, prefix, bytes) {
                saved.push(path);
            }
        }
    }
    Crash {
        target: target.name,
        message,
        input: input.to_vec(),
        minimized,
        saved,
        seed: config.seed,
        execs,
    }
}

fn save(dir: &Path, prefix: &str, bytes: &[u8]) -> Option<PathBuf> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let path = dir.join(format!("{prefix}-{:016x}", h.finish()));
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, bytes)) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("cannot save {}: {e}", path.display());
            None
        }
    }
}

/// Shrinks a failing input by cutting ranges while it still fails at
/// `place`: halves first, then smaller pieces, within a bounded budget.
pub fn minimize(target: Target, input: &[u8], place_wanted: &str) -> Vec<u8> {
    let fails =
        |candidate: &[u8]| execute(target, candidate).is_err_and(|m| place(&m) == place_wanted);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut best = input.to_vec();
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && Instant::now() < deadline {
        let mut at = 0;
        let mut progressed = false;
        while at < best.len() && Instant::now() < deadline {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            if fails(&candidate) {
                best = candidate;
                progressed = true;
            } else {
                at += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    best
}
