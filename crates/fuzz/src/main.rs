//! `hashbuy-fuzz`: runs hashbuy's fuzz targets on the stable toolchain.
//!
//! ```text
//! hashbuy-fuzz run all --seed 1 --iterations 40000 --seconds 100   # CI's short run
//! hashbuy-fuzz run tweet_decoder --iterations 0 --seconds 3600       # a long one
//! hashbuy-fuzz repro tweet_decoder fuzz/artifacts/tweet_decoder/crash-...
//! hashbuy-fuzz seed                                                 # rewrite fuzz/corpus
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hashbuy_fuzz::engine::{self, Config};
use hashbuy_fuzz::{Target, TARGETS};

#[derive(Parser)]
#[command(about = "Fuzz hashbuy's tweet and command decoders on stable Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a target (or `all`, each on its own thread) over its corpus and
    /// seeded mutations of it.
    Run {
        /// `tweet_decoder`, `command_decoder` or `all`.
        target: String,
        /// Seed of the mutations: the same seed tries the same inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mutated inputs per target after the corpus; 0 for no limit.
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
        /// Stop each target after this many seconds, whatever the
        /// iterations (the inputs tried are a prefix of the full run's).
        #[arg(long)]
        seconds: Option<u64>,
        /// Largest input made by mutation, in bytes.
        #[arg(long, default_value_t = 64 * 1024)]
        max_len: usize,
        /// Corpus folder [fuzz/corpus/<target>]; the generated seeds when
        /// it holds no file.
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Print progress every this many seconds (0: never).
        #[arg(long, default_value_t = 10)]
        progress_s: u64,
    },
    /// Replays inputs through a target, saying which break a property.
    Repro {
        /// The target.
        target: String,
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Writes the generated seed corpora to fuzz/corpus/<target>/.
    Seed {
        /// Folder to write `<target>/` folders in [fuzz/corpus].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Lists the targets.
    List,
}

fn targets(name: &str) -> Result<Vec<Target>, String> {
    if name == "all" {
        return Ok(TARGETS.to_vec());
    }
    hashbuy_fuzz::target(name)
        .map(|t| vec![t])
        .ok_or_else(|| format!("no target {name:?}; try `hashbuy-fuzz list`"))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::List => {
            for t in TARGETS {
                println!("{}", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Seed { out } => {
            for t in TARGETS {
                let dir = match &out {
                    Some(out) => out.join(t.name),
                    None => hashbuy_fuzz::corpus_dir(t.name),
                };
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let seeds = hashbuy_fuzz::seeds::seeds(t.name);
                let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
                for (name, data) in &seeds {
                    let path = dir.join(name);
                    std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                println!("{}: {} seeds, {bytes} bytes", dir.display(), seeds.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Repro { target, files } => {
            let [target] = targets(&target)?[..] else {
                return Err("repro takes one target".into());
            };
            let mut failed = 0;
            for file in &files {
                let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
                match engine::execute(target, &data) {
                    Ok(_) => println!("{}: ok", file.display()),
                    Err(message) => {
                        failed += 1;
                        println!("{}: FAILED: {message}", file.display());
                    }
                }
            }
            println!("{} passed, {failed} failed", files.len() - failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run {
            target,
            seed,
            iterations,
            seconds,
            max_len,
            corpus,
            progress_s,
        } => {
            let chosen = targets(&target)?;
            let mut runs = Vec::new();
            for t in chosen {
                let corpus = corpus
                    .clone()
                    .unwrap_or_else(|| hashbuy_fuzz::corpus_dir(t.name));
                let seeds = hashbuy_fuzz::starting_inputs(t.name, &corpus)
                    .map_err(|e| format!("{}: {e}", corpus.display()))?;
                let dict = hashbuy_fuzz::load_dict(t.name)?;
                let config = Config {
                    seed,
                    iterations,
                    max_time: seconds.map(Duration::from_secs),
                    max_len,
                    artifacts: Some(hashbuy_fuzz::artifacts_dir(t.name)),
                    progress_every: (progress_s > 0).then(|| Duration::from_secs(progress_s)),
                };
                eprintln!(
                    "{}: {} seed inputs from {}, {} dictionary tokens, seed {seed}",
                    t.name,
                    seeds.len(),
                    corpus.display(),
                    dict.len()
                );
                runs.push(std::thread::spawn(move || {
                    engine::run(t, &seeds, dict, &config)
                }));
            }
            let mut failed = 0;
            let mut passed = 0;
            for handle in runs {
                match handle.join().map_err(|_| "a fuzz thread died")? {
                    Ok(report) => {
                        passed += 1;
                        println!("{report}");
                    }
                    Err(crash) => {
                        failed += 1;
                        println!("{crash}");
                    }
                }
            }
            println!("fuzz: {passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
