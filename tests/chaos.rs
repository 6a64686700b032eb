//! The kill-and-freeze suite: hashbuy's money guarantees while its
//! processes die, freeze and hand partitions over, on a broker with real
//! transactions (noida-db in `.ci/run`, or a Kafka).
//!
//! Each part generates a seeded `hashbuy gen` stream (10% purchases),
//! creates topics of its own, serves paysim with 150 ms latency, 5% 500s,
//! 5% 429s and 2% charges whose connection is dropped, and replays the
//! stream in one chunk a round while it does harm:
//!
//! - **A**: the matcher (exactly once) and a settler, SIGKILLed together
//!   at a random moment of each round and restarted.
//! - **B**: two members of one settler group with ledgers of their own;
//!   member 1 is SIGKILLed at a random moment after it got partitions, and
//!   its partitions move, charges in flight, to another settler with a
//!   ledger of its own.
//! - **C**: member 1 is frozen with SIGSTOP past its session timeout (6 s),
//!   its partitions are taken over, then it is thawed with SIGCONT: fenced,
//!   it must stop (a rejoin is recorded too).
//!
//! How partitions are taken over ([`Takeover`], `HASHBUY_CHAOS_TAKEOVER`):
//! noida-db 0.2.3 never evicts a member whose heartbeats stopped, so there
//! (`standby`, the default) a standby settler with a ledger of its own
//! starts under member 1's static instance id and takes its partitions at
//! once, as an orchestrator restarting a pod does; member 1 is played by
//! ledgers `1a` and `1b` in turn. On a broker that evicts (a Kafka),
//! `group` lets settler 0 take them after the session timeout, and member 1
//! comes back with its own ledger.
//!
//! Then the matcher and the settlers run to the end (`--exit-at-end`) and
//! these must hold:
//!
//! - the commands topic holds exactly the command ids `hashbuy inspect`
//!   decides for the stream: none missing, none unexpected, none twice;
//! - every command has acks, all terminal and alike (status, and the
//!   payment intent of a `SETTLED`); no ack for an unknown command;
//! - paysim's audit holds at most one succeeded payment intent a command,
//!   none for a command not acked `SETTLED`, and each `SETTLED` ack names
//!   a succeeded intent of its command; the ledgers agree with the acks;
//! - `max_per_user` and `spend_limit` hold over what paysim charged;
//! - the provider key (a canary, `sk_test_` and 24 random hex digits) is
//!   in no log, ledger export or topic (raw dumps of the commands, acks,
//!   dead letters and ledger changelog topics), not even its first or
//!   last 10 digits.
//!
//! Every violation is collected, with the command ids, their acks, audit
//! intents, ledger entries and the chaos events near them, and the test
//! fails listing them all. The run directory (logs of every process,
//! `events.log`, topic dumps, ledger exports) is kept when it fails, and
//! its path printed.
//!
//! Seeds are deterministic: `HASHBUY_CHAOS_SEED` drives the stream,
//! paysim's faults and every kill moment (the moments are wall-clock
//! delays, so what a kill interrupts still varies with the machine).
//! Waits are bounded and fail naming what they waited for; no check is
//! about time.
//!
//! Settings (environment; defaults are the full run):
//!
//! | variable | default | |
//! |---|---|---|
//! | `HASHBUY_TEST_BROKERS` | (required) | a broker with transactions |
//! | `HASHBUY_TEST_KAFKA_PROPERTIES` | | e.g. `security.protocol=SSL` |
//! | `HASHBUY_CHAOS_SEED` | 1 | |
//! | `HASHBUY_CHAOS_TWEETS` | 20000 | lines of `hashbuy gen` |
//! | `HASHBUY_CHAOS_KILLS_A` | 20 | rounds of part A |
//! | `HASHBUY_CHAOS_KILLS_B` | 30 | rounds of part B |
//! | `HASHBUY_CHAOS_FREEZES_C` | 5 | rounds of part C |
//! | `HASHBUY_CHAOS_PARTITIONS` | 8 | of every topic |
//! | `HASHBUY_CHAOS_TAKEOVER` | standby | or `group` (see above) |
//! | `HASHBUY_CHAOS_END_S` | 600 | bound of the settlers' run to the end |
//! | `HASHBUY_CHAOS_DIR` | temp dir | where run directories go |
//! | `HASHBUY_CHAOS_KEEP` | 0 | 1 keeps the run directory when it passes |
//!
//! ```sh
//! HASHBUY_TEST_BROKERS=127.0.0.1:9093 \
//!     cargo test --test chaos -- --ignored --nocapture
//! ```
//!
//! The parts run one at a time whatever `--test-threads` says.

mod broker;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The parts share two cores with nothing: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// paysim's faults, as the issue sets them.
const PAYSIM_FAULTS: [&str; 8] = [
    "--latency-ms",
    "150",
    "--fail-500",
    "0.05",
    "--fail-429",
    "0.05",
    "--drop-after-charge",
    "0.02",
];
/// Share of the stream's lines that carry a catalog hashtag.
const PURCHASE_SHARE: &str = "0.1";
/// Properties of every group member here: a short session, so a frozen
/// or dead settler's partitions move within seconds.
const MEMBER_PROPERTIES: [&str; 2] = ["session.timeout.ms=6000", "heartbeat.interval.ms=1000"];
/// The session timeout of [`MEMBER_PROPERTIES`].
const SESSION: Duration = Duration::from_secs(6);
/// What the settlers of the rounds log: librdkafka's group protocol too
/// (with `-X debug=cgrp`), so that a join that stalls can be read in their
/// logs (part B's first round has twice waited over 120 s for a group of
/// two fresh members to form, until one was killed).
const ROUND_SETTLER_LOG: &str = "info,librdkafka=debug";
/// The settler's gauge of the partitions it holds.
const ASSIGNED: &str = "hashbuy_settler_partitions_assigned";
/// How long a group may take to move partitions (a session timeout and a
/// rebalance, on a loaded machine).
const MOVE_BOUND: Duration = Duration::from_secs(120);
/// How long a short command (replay, tail, ledger export) may take.
const COMMAND_BOUND: Duration = Duration::from_secs(300);
const DAY_MS: i64 = 24 * 3600 * 1000;

struct Settings {
    seed: u64,
    tweets: u64,
    kills_a: usize,
    kills_b: usize,
    freezes_c: usize,
    partitions: usize,
    end_bound: Duration,
    dir: PathBuf,
    keep: bool,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: a whole number, please")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            seed: env_number("HASHBUY_CHAOS_SEED", 1),
            tweets: env_number("HASHBUY_CHAOS_TWEETS", 20_000),
            kills_a: env_number("HASHBUY_CHAOS_KILLS_A", 20) as usize,
            kills_b: env_number("HASHBUY_CHAOS_KILLS_B", 30) as usize,
            freezes_c: env_number("HASHBUY_CHAOS_FREEZES_C", 5) as usize,
            partitions: env_number("HASHBUY_CHAOS_PARTITIONS", 8) as usize,
            end_bound: Duration::from_secs(env_number("HASHBUY_CHAOS_END_S", 600)),
            dir: std::env::var_os("HASHBUY_CHAOS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            keep: std::env::var("HASHBUY_CHAOS_KEEP").is_ok_and(|v| v == "1"),
        }
    }
}

/// splitmix64: the suite's seeded randomness, no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A delay between `lo` and `hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The last `n` lines of a file.
fn tail_lines(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `probe` every 100 ms until it gives a value, for at most `bound`.
fn wait_for<T>(bound: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(100));
    }
}

/// A long-running hashbuy process (matcher or settler), restartable with
/// the same arguments, its output appended to one log, metrics on a port
/// of its own.
struct Proc {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    port: u16,
    starts: u32,
}

impl Proc {
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        self.port = common::free_port();
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        writeln!(
            log,
            "==== chaos: {} start {} at {} ms",
            self.name,
            self.starts,
            epoch_ms()
        )
        .expect("log written");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut command = broker::command_at(&self.bin, &args);
        command.args(["--metrics-addr", &format!("127.0.0.1:{}", self.port)]);
        command
            .env_remove("STRIPE_API_KEY")
            .env_remove("HASHBUY_PROVIDER_KEY")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        self.child = Some(command.spawn().expect("hashbuy starts"));
    }

    /// Its status, if it has exited (reaped then).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("child status")?;
        self.child = None;
        Some(status)
    }

    fn running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGKILLs and reaps it; its status if it had exited on its own
    /// before.
    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(status) = child.try_wait().expect("child status") {
            return Some(status);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which is not reaped.
            let done = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            assert_eq!(done, 0, "signal {signal} to {}", self.name);
        }
    }

    /// A metric of its `/metrics`: `None` when it does not answer or has
    /// no such metric.
    fn metric(&self, name: &str) -> Option<f64> {
        let (200, body) = common::get(self.port, "/metrics")? else {
            return None;
        };
        body.lines()
            .any(|l| l.starts_with(name))
            .then(|| common::metric(&body, name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Topics {
    tweets: String,
    commands: String,
    acks: String,
    dead: String,
    ledger: String,
    replies: String,
}

/// One part's run: its directory, stream, topics, paysim, seeded
/// randomness, events and the violations found.
struct Run {
    part: &'static str,
    seed: u64,
    partitions: usize,
    end_bound: Duration,
    keep: bool,
    dir: PathBuf,
    bin: PathBuf,
    topics: Topics,
    matcher_group: String,
    settler_group: String,
    expected: BTreeSet<String>,
    chunks: Vec<PathBuf>,
    paysim: broker::Paysim,
    canary: String,
    rng: Rng,
    t0: Instant,
    events: Vec<(i64, String)>,
    failures: Vec<String>,
}

impl Run {
    fn new(part: &'static str, settings: &Settings, rounds: usize) -> Run {
        let run_id = format!("{part}-s{}-{}", settings.seed, std::process::id());
        let dir = settings.dir.join(format!("hashbuy-chaos-{run_id}"));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["logs", "dumps", "chunks"] {
            fs::create_dir_all(dir.join(sub)).expect("run directory");
        }
        eprintln!(
            "chaos {part}: seed {}, directory {}",
            settings.seed,
            dir.display()
        );
        // A copy: a build elsewhere in the target directory must not
        // change the binary between two restarts.
        let bin = dir.join("hashbuy");
        fs::copy(broker::bin(), &bin).expect("binary copied");
        let mut rng = Rng(settings.seed ^ (0x5eed_0000 + part.as_bytes()[0] as u64));
        let canary = format!(
            "sk_test_{:016x}{:08x}",
            rng.next(),
            rng.next() & 0xffff_ffff
        );
        let topics = Topics {
            tweets: format!("chaos-{run_id}-tweets"),
            commands: format!("chaos-{run_id}-commands"),
            acks: format!("chaos-{run_id}-acks"),
            dead: format!("chaos-{run_id}-dead"),
            ledger: format!("chaos-{run_id}-ledger"),
            replies: format!("chaos-{run_id}-replies"),
        };
        let path = |name: &str| dir.join(name).display().to_string();
        let seed = settings.seed.to_string();
        let tweets = settings.tweets.to_string();
        let status = Command::new(&bin)
            .args([
                "gen",
                "--tweets",
                &tweets,
                "--purchase-share",
                PURCHASE_SHARE,
            ])
            .args(["--seed", &seed, "--out", &path("tweets.jsonl")])
            .args(["--catalog-out", &path("catalog.toml")])
            .args(["--accounts-out", &path("accounts.toml")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("gen runs");
        assert!(status.success(), "hashbuy gen: {status}");
        let inspected = Command::new(&bin)
            .args(["inspect", &path("tweets.jsonl")])
            .args(["--catalog", &path("catalog.toml")])
            .args(["--accounts", &path("accounts.toml")])
            .output()
            .expect("inspect runs");
        let expected = common::inspected_command_ids(&broker::ok(inspected));
        assert!(!expected.is_empty(), "the stream buys something");

        // The stream, one chunk a round.
        let text = fs::read_to_string(dir.join("tweets.jsonl")).expect("stream");
        let lines: Vec<&str> = text.lines().collect();
        let per_chunk = lines.len().div_ceil(rounds.max(1));
        let chunks: Vec<PathBuf> = lines
            .chunks(per_chunk.max(1))
            .enumerate()
            .map(|(i, chunk)| {
                let file = dir.join("chunks").join(format!("{i:03}.jsonl"));
                fs::write(&file, chunk.join("\n") + "\n").expect("chunk written");
                file
            })
            .collect();

        let partitions = settings.partitions.to_string();
        let create = |names: &str, extra: &[&str]| {
            let out = broker::command_at(&bin, &["topics", "create", "--topics", names])
                .args(["--partitions", &partitions])
                .args(extra)
                .output()
                .expect("topics create runs");
            broker::ok(out);
        };
        // `stock-requests` by its default name: the matcher and the
        // settler need it, though no offer here is limited.
        create(
            &format!(
                "{},{},{},{},{},stock-requests",
                topics.tweets, topics.commands, topics.acks, topics.dead, topics.replies
            ),
            &[],
        );
        create(
            &topics.ledger,
            &["--topic-config", "cleanup.policy=compact"],
        );

        let paysim_log = fs::File::create(dir.join("logs/paysim.log")).expect("paysim log");
        let mut command = Command::new(&bin);
        command
            .env("HASHBUY_PAYSIM_API_KEY", &canary)
            .stdout(paysim_log.try_clone().expect("log"))
            .stderr(paysim_log);
        let mut paysim_args = PAYSIM_FAULTS.to_vec();
        paysim_args.extend(["--seed", &seed]);
        let paysim = broker::Paysim::start_with(command, &paysim_args);

        let mut run = Run {
            part,
            seed: settings.seed,
            partitions: settings.partitions,
            end_bound: settings.end_bound,
            keep: settings.keep,
            matcher_group: format!("chaos-{run_id}-matcher"),
            settler_group: format!("chaos-{run_id}-settler"),
            dir,
            bin,
            topics,
            expected,
            chunks,
            paysim,
            canary,
            rng,
            t0: Instant::now(),
            events: Vec::new(),
            failures: Vec::new(),
        };
        run.event(format!(
            "{} lines, {} commands expected, {} chunks, paysim on {} (seed {})",
            settings.tweets,
            run.expected.len(),
            run.chunks.len(),
            run.paysim.port,
            settings.seed
        ));
        run
    }

    fn event(&mut self, text: String) {
        let line = format!("[{:8.3} s] {text}", self.t0.elapsed().as_secs_f64());
        eprintln!("chaos {}: {line}", self.part);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.log"))
            .expect("events log");
        writeln!(file, "{} {line}", epoch_ms()).expect("event written");
        self.events.push((epoch_ms(), line));
    }

    fn fail(&mut self, text: String) {
        self.event(format!("FAILURE: {text}"));
        self.failures.push(text);
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn proc(&self, name: &str, args: Vec<String>, envs: Vec<(String, String)>) -> Proc {
        Proc {
            name: name.to_owned(),
            bin: self.bin.clone(),
            args,
            envs,
            log: self.log(name),
            child: None,
            port: 0,
            starts: 0,
        }
    }

    fn matcher_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "match",
            "--catalog",
            &self.dir.join("catalog.toml").display().to_string(),
            "--accounts",
            &self.dir.join("accounts.toml").display().to_string(),
            "--delivery",
            "exactly-once",
            "--group",
            &self.matcher_group,
            "--instance",
            "0",
            "--batch-ms",
            "20",
            "--tweets-topic",
            &self.topics.tweets,
            "--commands-topic",
            &self.topics.commands,
            "--dead-letters-topic",
            &self.topics.dead,
        ]
        .map(str::to_owned)
        .to_vec();
        for property in MEMBER_PROPERTIES {
            args.extend(["-X".to_owned(), property.to_owned()]);
        }
        args
    }

    /// The matcher, exactly once, instance 0.
    fn matcher(&self) -> Proc {
        self.proc("matcher", self.matcher_args(), Vec::new())
    }

    fn ledger_dir(&self, ledger: &str) -> PathBuf {
        self.dir.join(format!("ledger-{ledger}"))
    }

    fn settler_args(&self, instance: &str, ledger: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "settle",
            common::RECORDINGS_AGE[0],
            common::RECORDINGS_AGE[1],
            "--provider-url",
            &self.paysim.url(),
            "--ledger",
            &self.ledger_dir(ledger).display().to_string(),
            "--group",
            &self.settler_group,
            "--instance",
            instance,
            "--commands-topic",
            &self.topics.commands,
            "--acks-topic",
            &self.topics.acks,
            "--dead-letters-topic",
            &self.topics.dead,
            "--ledger-topic",
            &self.topics.ledger,
            "--replies-topic",
            &self.topics.replies,
        ]
        .map(str::to_owned)
        .to_vec();
        for property in MEMBER_PROPERTIES {
            args.extend(["-X".to_owned(), property.to_owned()]);
        }
        args
    }

    /// A settler of the part's group (member `instance`), with the canary
    /// key and the ledger `ledger` (`ledger-<ledger>`, its log
    /// `settler-<ledger>.log`).
    fn settler(&self, instance: &str, ledger: &str) -> Proc {
        self.proc(
            &format!("settler-{ledger}"),
            self.settler_args(instance, ledger),
            vec![("HASHBUY_PROVIDER_KEY".to_owned(), self.canary.clone())],
        )
    }

    /// A [`settler`](Run::settler) of the rounds, which also logs
    /// librdkafka's group protocol ([`ROUND_SETTLER_LOG`]).
    fn round_settler(&self, instance: &str, ledger: &str) -> Proc {
        let mut settler = self.settler(instance, ledger);
        settler
            .args
            .extend(["-X".to_owned(), "debug=cgrp".to_owned()]);
        settler
            .envs
            .push(("HASHBUY_LOG".to_owned(), ROUND_SETTLER_LOG.to_owned()));
        settler
    }

    /// Runs a short hashbuy command to its end, for at most `bound`: its
    /// standard output (kept in `dumps/<name>.out`), or `None` after
    /// recording why it failed. Its standard error goes to
    /// `logs/<name>.log`.
    fn run_command(&mut self, name: &str, args: &[&str], bound: Duration) -> Option<String> {
        let command = broker::command_at(&self.bin, args);
        self.run_child(name, args, command, bound)
    }

    /// [`Run::run_command`] for a command that takes no broker.
    fn run_offline(&mut self, name: &str, args: &[&str], bound: Duration) -> Option<String> {
        let mut command = Command::new(&self.bin);
        command.args(args);
        self.run_child(name, args, command, bound)
    }

    fn run_child(
        &mut self,
        name: &str,
        args: &[&str],
        mut command: Command,
        bound: Duration,
    ) -> Option<String> {
        let out_path = self.dir.join("dumps").join(format!("{name}.out"));
        let out = fs::File::create(&out_path).expect("output file");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .expect("log file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("hashbuy starts");
        let status = wait_for(bound, || child.try_wait().expect("child status"));
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            self.fail(format!(
                "`hashbuy {}` ({name}) did not end within {} s; its log ends with:\n{}",
                args.join(" "),
                bound.as_secs(),
                tail_lines(&self.log(name), 5)
            ));
            return None;
        };
        if !status.success() {
            self.fail(format!(
                "`hashbuy {}` ({name}) ended with {status}; its log ends with:\n{}",
                args.join(" "),
                tail_lines(&self.log(name), 5)
            ));
            return None;
        }
        Some(fs::read_to_string(&out_path).expect("output read"))
    }

    /// Replays chunk `round` of the stream, if there is one.
    fn replay(&mut self, round: usize) {
        let Some(chunk) = self.chunks.get(round).cloned() else {
            return;
        };
        let tweets = self.topics.tweets.clone();
        let chunk = chunk.display().to_string();
        if self
            .run_command(
                "replay",
                &["replay", &chunk, "--topic", &tweets],
                COMMAND_BOUND,
            )
            .is_none()
        {
            panic!("replaying {chunk} failed: {:?}", self.failures.last());
        }
    }

    /// Replays the chunks from `round` on.
    fn replay_rest(&mut self, round: usize) {
        for round in round..self.chunks.len() {
            self.replay(round);
        }
    }

    /// Starts `proc` if it is not running, recording a failure if it had
    /// stopped on its own.
    fn ensure_running(&mut self, proc: &mut Proc, round: usize) {
        if let Some(status) = proc.exited() {
            self.fail(format!(
                "round {round}: {} stopped on its own with {status}; its log ends with:\n{}",
                proc.name,
                tail_lines(&proc.log, 8)
            ));
        }
        if proc.child.is_none() {
            proc.start();
            self.event(format!(
                "round {round}: {} started ({})",
                proc.name, proc.starts
            ));
        }
    }

    /// Waits until `proc` answers `/readyz` (it joined its group); records
    /// a failure if it does not within [`MOVE_BOUND`].
    fn wait_ready(&mut self, proc: &mut Proc, round: usize) -> bool {
        let ready = wait_for(MOVE_BOUND, || {
            if !proc.running() {
                return Some(false);
            }
            matches!(common::get(proc.port, "/readyz"), Some((200, _))).then_some(true)
        });
        match ready {
            Some(true) => return true,
            Some(false) => self.fail(format!(
                "round {round}: waiting until {} is ready, it stopped; its log ends with:\n{}",
                proc.name,
                tail_lines(&proc.log, 8)
            )),
            None => self.fail(format!(
                "round {round}: {} not ready within {} s",
                proc.name,
                MOVE_BOUND.as_secs()
            )),
        }
        false
    }

    /// SIGKILLs `proc`, recording a failure if it had stopped on its own.
    fn kill(&mut self, proc: &mut Proc, round: usize) {
        match proc.kill() {
            None => self.event(format!("round {round}: SIGKILL {}", proc.name)),
            Some(status) => self.fail(format!(
                "round {round}: {} stopped on its own with {status} before its kill; its log ends with:\n{}",
                proc.name,
                tail_lines(&proc.log, 8)
            )),
        }
    }

    /// Waits until settler `proc` reports a number of partitions that
    /// `holds` accepts; records a failure naming `what` if it does not
    /// within [`MOVE_BOUND`].
    fn wait_partitions(
        &mut self,
        proc: &mut Proc,
        what: &str,
        round: usize,
        holds: impl Fn(f64) -> bool,
    ) -> bool {
        let mut last = None;
        let seen = wait_for(MOVE_BOUND, || {
            if !proc.running() {
                return Some(false);
            }
            last = proc.metric(ASSIGNED);
            last.is_some_and(&holds).then_some(true)
        });
        match seen {
            Some(true) => {
                self.event(format!(
                    "round {round}: {what} ({} holds {:?})",
                    proc.name, last
                ));
                true
            }
            Some(false) => {
                self.fail(format!(
                    "round {round}: waiting until {what}, {} stopped; its log ends with:\n{}",
                    proc.name,
                    tail_lines(&proc.log, 8)
                ));
                false
            }
            None => {
                self.fail(format!(
                    "round {round}: not within {} s: {what} ({} last reported {ASSIGNED} = {last:?})",
                    MOVE_BOUND.as_secs(),
                    proc.name
                ));
                false
            }
        }
    }

    /// Every record of `topic` as `tail` prints it (`kind` decodes it).
    fn tail(&mut self, name: &str, topic: &str, kind: &str) -> Vec<Value> {
        let args = [
            "tail",
            "--topic",
            topic,
            "--type",
            kind,
            "--from-beginning",
            "--exit-at-end",
        ];
        self.run_command(name, &args, COMMAND_BOUND)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("tail prints JSON lines"))
            .collect()
    }

    /// The command ids acked so far.
    fn acked(&mut self) -> BTreeSet<String> {
        let acks = self.topics.acks.clone();
        self.tail("tail-acks-progress", &acks, "ack")
            .iter()
            .filter_map(|a| a["value"]["command_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The matcher runs to the end (`--exit-at-end`), then the settlers
    /// `settlers` (member instance, ledger) together.
    fn run_to_the_end(&mut self, settlers: &[(&str, &str)]) {
        self.event("to the end: the matcher".to_owned());
        let mut args = self.matcher_args();
        args.push("--exit-at-end".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_command("end-matcher", &args, COMMAND_BOUND);

        self.event(format!("to the end: settlers {settlers:?}"));
        let mut settlers: Vec<Proc> = settlers
            .iter()
            .map(|(instance, ledger)| {
                let mut settler = self.settler(instance, ledger);
                settler.name = format!("end-settler-{ledger}");
                settler.log = self.log(&settler.name);
                settler.args.push("--exit-at-end".to_owned());
                settler.start();
                settler
            })
            .collect();
        let deadline = Instant::now() + self.end_bound;
        // Once every command is acked, the settlers have this long to see
        // that they are done.
        let grace = Duration::from_secs(60);
        let mut all_acked_at: Option<Instant> = None;
        let mut last_probe = Instant::now();
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; settlers.len()];
        loop {
            for (settler, status) in settlers.iter_mut().zip(&mut statuses) {
                if status.is_none() {
                    *status = settler.exited();
                }
            }
            let running = statuses.iter().filter(|s| s.is_none()).count();
            if running == 0 {
                break;
            }
            if all_acked_at.is_none() && last_probe.elapsed() >= Duration::from_secs(10) {
                last_probe = Instant::now();
                let acked = self.acked();
                let missing = self.expected.difference(&acked).count();
                if missing == 0 {
                    self.event("to the end: every command acked".to_owned());
                    all_acked_at = Some(Instant::now());
                }
            }
            if all_acked_at.is_some_and(|at| at.elapsed() >= grace) {
                self.fail(format!(
                    "`settle --exit-at-end` did not stop within {} s after every command was acked ({running} of {} still running; see logs/end-settler-*.log)",
                    grace.as_secs(),
                    settlers.len()
                ));
                break;
            }
            if Instant::now() >= deadline {
                let acked = self.acked();
                let missing: Vec<_> = self.expected.difference(&acked).cloned().collect();
                self.fail(format!(
                    "`settle --exit-at-end` did not stop within {} s; {} of {} commands unacked (first: {:?})",
                    self.end_bound.as_secs(),
                    missing.len(),
                    self.expected.len(),
                    missing.iter().take(5).collect::<Vec<_>>()
                ));
                break;
            }
            sleep(Duration::from_millis(200));
        }
        // Still running: asked to stop (drain, flush, commit, exit 0),
        // then killed.
        let asked: Vec<bool> = statuses.iter().map(Option::is_none).collect();
        for (settler, _) in settlers.iter().zip(&asked).filter(|(_, asked)| **asked) {
            settler.signal(libc::SIGTERM);
        }
        let stop_bound = Duration::from_secs(30);
        wait_for(stop_bound, || {
            for (settler, status) in settlers.iter_mut().zip(&mut statuses) {
                if status.is_none() {
                    *status = settler.exited();
                }
            }
            statuses.iter().all(Option::is_some).then_some(())
        });
        for ((settler, status), asked) in settlers.iter_mut().zip(&statuses).zip(&asked) {
            let last = tail_lines(&settler.log, 1);
            match status {
                None => {
                    settler.kill();
                    self.fail(format!(
                        "{} did not stop within {} s of a SIGTERM (killed); its last line: {last}",
                        settler.name,
                        stop_bound.as_secs()
                    ));
                }
                Some(status) if *asked => self.event(format!(
                    "{} stopped by SIGTERM with {status}: {last}",
                    settler.name
                )),
                Some(status) if !status.success() => self.fail(format!(
                    "`settle --exit-at-end` ({}) ended with {status}; its log ends with:\n{}",
                    settler.name,
                    tail_lines(&settler.log, 8)
                )),
                Some(_) => self.event(format!("{} ended: {last}", settler.name)),
            }
        }
    }

    /// Collects the end state and checks it; panics listing every
    /// violation (the run directory is kept then).
    fn check_and_finish(mut self, ledger_names: &[&str]) {
        let topics = [
            ("commands", self.topics.commands.clone(), "command"),
            ("acks", self.topics.acks.clone(), "ack"),
            ("dead", self.topics.dead.clone(), "dead-letter"),
        ];
        let mut tails: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (name, topic, kind) in &topics {
            let records = self.tail(&format!("tail-{name}"), topic, kind);
            tails.insert(*name, records);
        }
        // Raw dumps, for the canary (a value is bytes, whatever it holds).
        for (name, topic) in [
            ("commands", self.topics.commands.clone()),
            ("acks", self.topics.acks.clone()),
            ("dead", self.topics.dead.clone()),
            ("ledger", self.topics.ledger.clone()),
        ] {
            let out = self.dir.join("dumps").join(format!("{name}.raw"));
            let out = out.display().to_string();
            self.run_command(
                &format!("record-{name}"),
                &[
                    "record",
                    "--topic",
                    &topic,
                    "--format",
                    "delimited",
                    "--out",
                    &out,
                ],
                COMMAND_BOUND,
            );
        }
        let mut ledgers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for name in ledger_names {
            let dir = self.ledger_dir(name).display().to_string();
            if !Path::new(&dir).exists() {
                continue;
            }
            let exported = self
                .run_offline(
                    &format!("ledger-export-{name}"),
                    &["ledger", "export", "--ledger", &dir],
                    COMMAND_BOUND,
                )
                .unwrap_or_default();
            ledgers.insert(
                format!("ledger-{name}"),
                exported
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("ledger export prints JSON lines"))
                    .collect(),
            );
        }
        let audit = self.paysim.audit();
        fs::write(
            self.dir.join("dumps/audit.json"),
            serde_json::to_string_pretty(&audit).expect("JSON"),
        )
        .expect("audit written");

        let state = State::new(&tails, &ledgers, &audit);
        let summary = state.summary();
        self.event(format!("end state: {summary}"));
        let violations = state.violations(&self.expected);
        for (check, ids) in violations {
            let mut text = format!("{check}: {} command(s)", ids.len());
            for id in ids.iter().take(10) {
                text += &format!("\n  {}", state.detail(id, &self.events));
            }
            if ids.len() > 10 {
                text += &format!("\n  ... and {} more", ids.len() - 10);
            }
            self.fail(text);
        }
        let canary_hits = self.scan_canary();
        if !canary_hits.is_empty() {
            self.fail(format!(
                "the provider key (or 10 digits of it) is in: {}",
                canary_hits.join(", ")
            ));
        }

        let _ = fs::remove_file(&self.bin);
        if self.failures.is_empty() {
            self.event(format!(
                "part {} passed (seed {}) in {:.0} s",
                self.part,
                self.seed,
                self.t0.elapsed().as_secs_f64()
            ));
            if !self.keep {
                let _ = fs::remove_dir_all(&self.dir);
            }
            return;
        }
        let report = format!(
            "part {} (seed {}) found {} violation(s) in {:.0} s; run directory kept: {}\n\n{}",
            self.part,
            self.seed,
            self.failures.len(),
            self.t0.elapsed().as_secs_f64(),
            self.dir.display(),
            self.failures.join("\n\n")
        );
        fs::write(self.dir.join("failures.txt"), &report).expect("report written");
        panic!("{report}");
    }

    /// The files of the run directory that hold the canary key, its first
    /// or its last 10 hex digits.
    fn scan_canary(&self) -> Vec<String> {
        let secret = self.canary.trim_start_matches("sk_test_");
        let needles = [
            self.canary.as_bytes(),
            &secret.as_bytes()[..10],
            &secret.as_bytes()[secret.len() - 10..],
        ];
        let mut hits = Vec::new();
        for sub in ["logs", "dumps"] {
            let mut entries: Vec<_> = fs::read_dir(self.dir.join(sub))
                .expect("run directory")
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            for path in entries {
                let bytes = fs::read(&path).unwrap_or_default();
                if needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == *n))
                {
                    hits.push(format!(
                        "{sub}/{}",
                        path.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
        hits
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.bin);
    }
}

/// What the topics, the ledgers and paysim hold at the end, by command id.
struct State<'a> {
    /// The commands topic's records.
    commands: BTreeMap<String, Vec<&'a Value>>,
    /// Every ack.
    acks: BTreeMap<String, Vec<&'a Value>>,
    dead_letters: usize,
    /// Payment intents of paysim's audit.
    intents: BTreeMap<String, Vec<&'a Value>>,
    /// Every ledger's entries: (ledger, entry).
    entries: BTreeMap<String, Vec<(&'a str, &'a Value)>>,
    ledger_sizes: BTreeMap<&'a str, usize>,
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

impl<'a> State<'a> {
    fn new(
        tails: &'a BTreeMap<&str, Vec<Value>>,
        ledgers: &'a BTreeMap<String, Vec<Value>>,
        audit: &'a [Value],
    ) -> State<'a> {
        let by_id = |records: &'a [Value]| {
            let mut map: BTreeMap<String, Vec<&'a Value>> = BTreeMap::new();
            for record in records {
                let id = text(&record["value"]["command_id"]).to_owned();
                map.entry(id).or_default().push(record);
            }
            map
        };
        let mut intents: BTreeMap<String, Vec<&'a Value>> = BTreeMap::new();
        for intent in audit {
            intents
                .entry(text(&intent["command_id"]).to_owned())
                .or_default()
                .push(intent);
        }
        let mut entries: BTreeMap<String, Vec<(&'a str, &'a Value)>> = BTreeMap::new();
        let mut ledger_sizes = BTreeMap::new();
        for (ledger, list) in ledgers {
            ledger_sizes.insert(ledger.as_str(), list.len());
            for entry in list {
                entries
                    .entry(text(&entry["command"]["command_id"]).to_owned())
                    .or_default()
                    .push((ledger.as_str(), entry));
            }
        }
        State {
            commands: by_id(&tails["commands"]),
            acks: by_id(&tails["acks"]),
            dead_letters: tails["dead"].len(),
            intents,
            entries,
            ledger_sizes,
        }
    }

    fn summary(&self) -> String {
        let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ack_records = 0;
        for acks in self.acks.values() {
            ack_records += acks.len();
            *statuses
                .entry(text(&acks[0]["value"]["status"]))
                .or_default() += 1;
        }
        let mut intents: BTreeMap<&str, usize> = BTreeMap::new();
        for list in self.intents.values() {
            for intent in list {
                *intents.entry(text(&intent["status"])).or_default() += 1;
            }
        }
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for list in self.entries.values() {
            for (ledger, entry) in list {
                *states
                    .entry(format!("{ledger}:{}", text(&entry["state"]["state"])))
                    .or_default() += 1;
            }
        }
        format!(
            "{} command ids in the topic ({} records); {} acked ({ack_records} acks, first statuses {statuses:?}); \
             {} dead letters; paysim intents {intents:?}; ledgers {:?}, entries by state {states:?}",
            self.commands.len(),
            self.commands.values().map(Vec::len).sum::<usize>(),
            self.acks.len(),
            self.dead_letters,
            self.ledger_sizes
        )
    }

    /// The succeeded payment intents of a command.
    fn charges(&self, id: &str) -> Vec<&'a Value> {
        self.intents
            .get(id)
            .map(|list| {
                list.iter()
                    .filter(|i| i["status"] == "succeeded")
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each check that failed, with the command ids it failed for.
    fn violations(&self, expected: &BTreeSet<String>) -> Vec<(String, Vec<String>)> {
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        let mut check = |name: &str, ids: Vec<String>| {
            if !ids.is_empty() {
                found.push((name.to_owned(), ids));
            }
        };
        let seen: BTreeSet<String> = self.commands.keys().cloned().collect();
        check(
            "commands missing from the commands topic (inspect decides them)",
            expected.difference(&seen).cloned().collect(),
        );
        check(
            "commands in the topic that inspect does not decide",
            seen.difference(expected).cloned().collect(),
        );
        check(
            "commands in the topic more than once (the matcher runs exactly once)",
            self.commands
                .iter()
                .filter(|(_, records)| records.len() > 1)
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "dead letters (the stream has no undecodable line)",
            if self.dead_letters > 0 {
                vec![format!(
                    "{} dead letters: see dumps/tail-dead.out",
                    self.dead_letters
                )]
            } else {
                Vec::new()
            },
        );
        check(
            "commands without an ack after the run to the end",
            expected
                .iter()
                .filter(|id| !self.acks.contains_key(*id))
                .cloned()
                .collect(),
        );
        check(
            "acks of commands not in the commands topic",
            self.acks
                .keys()
                .filter(|id| !self.commands.contains_key(*id))
                .cloned()
                .collect(),
        );
        let terminal = ["SETTLED", "DECLINED", "REJECTED", "FAILED"];
        check(
            "acks that are not a terminal outcome",
            self.acks
                .iter()
                .filter(|(_, acks)| {
                    acks.iter()
                        .any(|a| !terminal.contains(&text(&a["value"]["status"])))
                })
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "commands acked with different outcomes (status or payment intent)",
            self.acks
                .iter()
                .filter(|(_, acks)| {
                    let outcome = |a: &Value| {
                        (
                            text(&a["value"]["status"]).to_owned(),
                            text(&a["value"]["payment_intent_id"]).to_owned(),
                        )
                    };
                    acks.iter().any(|a| outcome(a) != outcome(acks[0]))
                })
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "DOUBLE CHARGES: more than one succeeded payment intent for a command",
            self.intents
                .keys()
                .filter(|id| self.charges(id).len() > 1)
                .cloned()
                .collect(),
        );
        check(
            "succeeded charges for a command that is not a command of the stream",
            self.intents
                .keys()
                .filter(|id| !self.charges(id).is_empty() && !expected.contains(*id))
                .cloned()
                .collect(),
        );
        check(
            "SETTLED acks without a succeeded charge of that command under the payment intent they name",
            self.acks
                .iter()
                .filter(|(id, acks)| {
                    acks.iter().any(|a| {
                        a["value"]["status"] == "SETTLED"
                            && !self
                                .charges(id)
                                .iter()
                                .any(|c| c["id"] == a["value"]["payment_intent_id"])
                    })
                })
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "commands charged (paysim holds a succeeded intent) but acked other than SETTLED",
            self.acks
                .iter()
                .filter(|(id, acks)| {
                    !self.charges(id).is_empty()
                        && acks.iter().any(|a| a["value"]["status"] != "SETTLED")
                })
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "ledger entries decided otherwise than the acks say",
            self.entries
                .iter()
                .filter(|(id, list)| {
                    let Some(acks) = self.acks.get(*id) else {
                        return false;
                    };
                    let status = text(&acks[0]["value"]["status"]).to_lowercase();
                    list.iter().any(|(_, e)| {
                        let state = text(&e["state"]["state"]);
                        let decided =
                            ["settled", "declined", "rejected", "failed"].contains(&state);
                        let intent_differs = state == "settled"
                            && e["state"]["payment_intent"]
                                != acks[0]["value"]["payment_intent_id"];
                        decided && (state != status || intent_differs)
                    })
                })
                .map(|(id, _)| id.clone())
                .collect(),
        );
        check(
            "max_per_user exceeded: more succeeded charges of one offer to one user than it allows",
            self.over_max_per_user(),
        );
        check(
            "spend_limit exceeded: charges of one user and currency within 24 h of tweet time above the limit",
            self.over_spend_limit(),
        );
        found
    }

    /// The command (its topic record's value) of an id.
    fn command(&self, id: &str) -> Option<&'a Value> {
        self.commands.get(id).map(|records| &records[0]["value"])
    }

    /// Succeeded charges, by command: (command value, amount charged).
    fn charged_commands(&self) -> Vec<&'a Value> {
        self.intents
            .keys()
            .filter(|id| !self.charges(id).is_empty())
            .filter_map(|id| self.command(id))
            .collect()
    }

    fn over_max_per_user(&self) -> Vec<String> {
        let mut bought: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
        for command in self.charged_commands() {
            bought
                .entry((
                    text(&command["user_id"]).to_owned(),
                    text(&command["offer_id"]).to_owned(),
                ))
                .or_default()
                .push(command);
        }
        bought
            .values()
            .filter(|list| {
                let max = list[0]["max_per_user"].as_u64().unwrap_or(0).max(1);
                list.len() as u64 > max
            })
            .flat_map(|list| list.iter().map(|c| text(&c["command_id"]).to_owned()))
            .collect()
    }

    fn over_spend_limit(&self) -> Vec<String> {
        let number = |v: &Value| -> i64 {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_i64())
                .unwrap_or(0)
        };
        let mut spent: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
        for command in self.charged_commands() {
            if command["spend_limit"].is_null() {
                continue;
            }
            spent
                .entry((
                    text(&command["user_id"]).to_owned(),
                    text(&command["currency"]).to_owned(),
                ))
                .or_default()
                .push(command);
        }
        let mut over = Vec::new();
        for list in spent.values() {
            let limit = list
                .iter()
                .map(|c| number(&c["spend_limit"]))
                .min()
                .unwrap_or(0);
            for start in list {
                let from = number(&start["tweet_timestamp_ms"]);
                let window: Vec<&&Value> = list
                    .iter()
                    .filter(|c| {
                        let at = number(&c["tweet_timestamp_ms"]);
                        at >= from && at - from < DAY_MS
                    })
                    .collect();
                if window.iter().map(|c| number(&c["amount"])).sum::<i64>() > limit {
                    over.extend(window.iter().map(|c| text(&c["command_id"]).to_owned()));
                    break;
                }
            }
        }
        over.sort();
        over.dedup();
        over
    }

    /// Everything known about a command, and the chaos events around it.
    fn detail(&self, id: &str, events: &[(i64, String)]) -> String {
        let mut out = format!("command {id}");
        let mut times: Vec<i64> = Vec::new();
        if let Some(records) = self.commands.get(id) {
            let c = &records[0]["value"];
            out += &format!(
                " (user {}, offer {}, {} {}, max_per_user {}, spend_limit {}, commands partition {} offset {})",
                text(&c["user_id"]),
                text(&c["offer_id"]),
                text(&c["amount"]),
                text(&c["currency"]),
                c["max_per_user"],
                c["spend_limit"],
                records[0]["partition"],
                text(&records[0]["offset"])
            );
        }
        for ack in self.acks.get(id).into_iter().flatten() {
            let a = &ack["value"];
            let decided: i64 = text(&a["decided_at_ms"]).parse().unwrap_or(0);
            times.push(decided);
            out += &format!(
                "\n    ack {} {} attempts {} decided_at_ms {decided} (acks partition {} offset {}) reason {:?}",
                text(&a["status"]),
                text(&a["payment_intent_id"]),
                a["attempts"],
                ack["partition"],
                text(&ack["offset"]),
                text(&a["reason"]).chars().take(160).collect::<String>()
            );
        }
        for intent in self.intents.get(id).into_iter().flatten() {
            out += &format!(
                "\n    paysim {} {} key {}",
                text(&intent["id"]),
                text(&intent["status"]),
                text(&intent["idempotency_key"])
            );
        }
        for (ledger, entry) in self.entries.get(id).into_iter().flatten() {
            for field in ["received_ms", "changed_ms", "acked_ms"] {
                if let Some(t) = entry[field].as_i64() {
                    times.push(t);
                }
            }
            out += &format!(
                "\n    {ledger}: state {} attempts {} received_ms {} changed_ms {} acked_ms {} notes {}",
                entry["state"],
                entry["attempts"],
                entry["received_ms"],
                entry["changed_ms"],
                entry["acked_ms"],
                entry["notes"]
            );
        }
        if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) {
            let near: Vec<&String> = events
                .iter()
                .filter(|(at, _)| *at >= first - 20_000 && *at <= last + 5_000)
                .map(|(_, e)| e)
                .collect();
            let shown = near.len().saturating_sub(12);
            for event in &near[shown..] {
                out += &format!("\n    event {event}");
            }
        }
        out
    }
}

#[test]
#[ignore = "needs a broker with transactions: HASHBUY_TEST_BROKERS=host:port (see the file's docs)"]
fn a_matcher_and_settler_killed_together() {
    let _serial = serial();
    let settings = Settings::from_env();
    let rounds = settings.kills_a;
    let mut run = Run::new("a", &settings, rounds);
    let mut matcher = run.matcher();
    let mut settler = run.round_settler("0", "0");
    for round in 0..rounds {
        run.ensure_running(&mut matcher, round);
        run.ensure_running(&mut settler, round);
        run.wait_ready(&mut matcher, round);
        run.wait_ready(&mut settler, round);
        run.replay(round);
        let delay = run.rng.ms(0, 4000);
        let matcher_first = run.rng.next() % 2 == 0;
        sleep(delay);
        run.event(format!("round {round}: kill both after {delay:?}"));
        if matcher_first {
            run.kill(&mut matcher, round);
            run.kill(&mut settler, round);
        } else {
            run.kill(&mut settler, round);
            run.kill(&mut matcher, round);
        }
    }
    run.replay_rest(rounds);
    run.run_to_the_end(&[("0", "0")]);
    run.check_and_finish(&["0"]);
}

/// How the partitions of a dead or frozen settler reach another one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Takeover {
    /// The broker evicts the member after its session timeout and the
    /// group gives its partitions to the other settler (a Kafka).
    Group,
    /// A standby settler with a ledger of its own starts under the lost
    /// member's static instance id and takes its partitions at once, as
    /// an orchestrator restarting a pod does (noida-db 0.2.3, which never
    /// evicts a member whose heartbeats stopped: its partitions would
    /// wait forever).
    Standby,
}

fn takeover() -> Takeover {
    match std::env::var("HASHBUY_CHAOS_TAKEOVER").as_deref() {
        Ok("group") => Takeover::Group,
        Ok("standby") | Err(_) => Takeover::Standby,
        Ok(other) => panic!("HASHBUY_CHAOS_TAKEOVER={other}: group or standby"),
    }
}

/// Parts B and C: the matcher, settler 0 (ledger `0`), and member 1 of
/// the group played by settlers with ledgers `1a` and `1b` in turn (only
/// `1a` when the group takes partitions over).
struct Pair {
    matcher: Proc,
    s0: Proc,
    /// Member 1's settlers: the current one first.
    s1: [Proc; 2],
    takeover: Takeover,
}

impl Pair {
    fn start(run: &mut Run) -> Pair {
        let mut pair = Pair {
            matcher: run.matcher(),
            s0: run.round_settler("0", "0"),
            s1: [run.round_settler("1", "1a"), run.round_settler("1", "1b")],
            takeover: takeover(),
        };
        run.event(format!("partitions are taken over by: {:?}", pair.takeover));
        run.ensure_running(&mut pair.matcher, 0);
        run.ensure_running(&mut pair.s0, 0);
        run.ensure_running(&mut pair.s1[0], 0);
        run.wait_ready(&mut pair.matcher, 0);
        pair
    }

    /// Member 1 is played by the other settler from now on.
    fn swap(&mut self) {
        self.s1.swap(0, 1);
    }

    /// Waits until member 1's current settler holds partitions.
    /// Starts a round: every process running, member 1 in the group, the
    /// round's part of the stream replayed; then waits a random moment of
    /// up to 3 s (returned) before the round's fault.
    fn begin_round(&mut self, run: &mut Run, round: usize) -> Duration {
        run.ensure_running(&mut self.matcher, round);
        run.ensure_running(&mut self.s0, round);
        run.ensure_running(&mut self.s1[0], round);
        self.wait_member_1(run, round);
        run.replay(round);
        let delay = run.rng.ms(0, 3000);
        sleep(delay);
        delay
    }

    fn wait_member_1(&mut self, run: &mut Run, round: usize) -> bool {
        let all = run.partitions as f64;
        match self.takeover {
            // A settler rejoining after a thaw may report partitions it no
            // longer has: settler 0 holding fewer than all says it.
            Takeover::Group => {
                run.wait_partitions(&mut self.s0, "settler 1 holds partitions", round, |n| {
                    n < all
                })
            }
            Takeover::Standby => {
                let what = format!("{} holds partitions", self.s1[0].name);
                run.wait_partitions(&mut self.s1[0], &what, round, |n| n > 0.0)
            }
        }
    }

    fn finish(mut self, mut run: Run) {
        let rounds = run.chunks.len();
        run.replay_rest(rounds);
        let [s1a, s1b] = &mut self.s1;
        for proc in [&mut self.matcher, &mut self.s0, s1a, s1b] {
            if proc.child.is_some() {
                run.kill(proc, rounds);
            }
        }
        let current = self.s1[0].name.trim_start_matches("settler-").to_owned();
        run.run_to_the_end(&[("0", "0"), ("1", &current)]);
        run.check_and_finish(&["0", "1a", "1b"]);
    }
}

#[test]
#[ignore = "needs a broker with transactions: HASHBUY_TEST_BROKERS=host:port (see the file's docs)"]
fn b_partitions_move_as_a_settler_is_killed() {
    let _serial = serial();
    let settings = Settings::from_env();
    let rounds = settings.kills_b;
    let mut run = Run::new("b", &settings, rounds);
    let mut pair = Pair::start(&mut run);
    let all = run.partitions as f64;
    for round in 0..rounds {
        let delay = pair.begin_round(&mut run, round);
        run.event(format!(
            "round {round}: kill {} after {delay:?}",
            pair.s1[0].name
        ));
        run.kill(&mut pair.s1[0], round);
        if pair.takeover == Takeover::Group {
            run.wait_partitions(
                &mut pair.s0,
                "settler 0 holds every partition",
                round,
                |n| n == all,
            );
        } else {
            pair.swap();
        }
        let delay = run.rng.ms(0, 2000);
        sleep(delay);
        run.event(format!(
            "round {round}: start {} after {delay:?}",
            pair.s1[0].name
        ));
        run.ensure_running(&mut pair.s1[0], round);
    }
    pair.finish(run);
}

#[test]
#[ignore = "needs a broker with transactions: HASHBUY_TEST_BROKERS=host:port (see the file's docs)"]
fn c_a_settler_frozen_past_its_session_and_thawed() {
    let _serial = serial();
    let settings = Settings::from_env();
    let rounds = settings.freezes_c;
    let mut run = Run::new("c", &settings, rounds);
    let mut pair = Pair::start(&mut run);
    let all = run.partitions as f64;
    for round in 0..rounds {
        let delay = pair.begin_round(&mut run, round);
        let frozen_name = pair.s1[0].name.clone();
        run.event(format!(
            "round {round}: SIGSTOP {frozen_name} after {delay:?}"
        ));
        pair.s1[0].signal(libc::SIGSTOP);
        match pair.takeover {
            Takeover::Group => {
                run.wait_partitions(
                    &mut pair.s0,
                    "settler 0 holds every partition",
                    round,
                    |n| n == all,
                );
            }
            Takeover::Standby => {
                // Past the session timeout, then the standby takes member
                // 1's partitions.
                sleep(SESSION + Duration::from_secs(1));
                pair.swap();
                run.event(format!(
                    "round {round}: start {} while {frozen_name} is frozen",
                    pair.s1[0].name
                ));
                run.ensure_running(&mut pair.s1[0], round);
                pair.wait_member_1(&mut run, round);
            }
        }
        let delay = run.rng.ms(0, 3000);
        sleep(delay);
        run.event(format!(
            "round {round}: SIGCONT {frozen_name} after {delay:?}"
        ));
        let frozen = match pair.takeover {
            Takeover::Group => 0,
            Takeover::Standby => 1,
        };
        pair.s1[frozen].signal(libc::SIGCONT);
        // Thawed, it stops (fenced); or it rejoins: where the group took
        // its partitions, settler 0 gives some back; where a standby took
        // member 1 over, the thawed one's rejoin fences the standby.
        let mut last = None;
        let outcome = wait_for(MOVE_BOUND, || {
            if let Some(status) = pair.s1[frozen].exited() {
                return Some((
                    format!("{frozen_name} (thawed) stopped with {status}"),
                    false,
                ));
            }
            match pair.takeover {
                Takeover::Group => {
                    last = pair.s0.metric(ASSIGNED);
                    last.is_some_and(|n| n < all)
                        .then(|| (format!("{frozen_name} rejoined"), false))
                }
                Takeover::Standby => pair.s1[0].exited().map(|status| {
                    (
                        format!(
                            "{} (the standby) stopped with {status}: {frozen_name}, thawed, took member 1 back",
                            pair.s1[0].name
                        ),
                        true,
                    )
                }),
            }
        });
        let stopped = match outcome {
            Some((_, true)) => 0,
            _ => frozen,
        };
        // Far back: the round settlers log librdkafka's group protocol.
        let said = tail_lines(&pair.s1[stopped].log, 5000)
            .lines()
            .rfind(|l| l.contains("ERROR") || l.contains("Fenced") || l.contains("hashbuy:"))
            .unwrap_or_default()
            .to_owned();
        match outcome {
            Some((what, took_back)) => {
                run.event(format!(
                    "round {round}: {what}; its last error line: {said}"
                ));
                if took_back {
                    pair.swap();
                }
            }
            None => {
                run.fail(format!(
                    "round {round}: {frozen_name}, thawed, neither stopped nor rejoined within {} s \
                     (settler 0 reports {last:?}); its last error line: {said}",
                    MOVE_BOUND.as_secs()
                ));
                run.kill(&mut pair.s1[frozen], round);
            }
        }
    }
    pair.finish(run);
}
