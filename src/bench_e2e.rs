//! `hashbuy bench-e2e`: end-to-end latency, from a purchase tweet handed
//! to Kafka to its payment ack readable on Kafka, with every stage of
//! hashbuy running as it does in production, at a fixed offered rate.
//!
//! # What runs
//!
//! The embedded broker runs as a child process (`hashbuy broker`, 64
//! partitions by default). In this process, each on threads of its own:
//! paysim (one thread, answering in about `--latency-ms`, as `hashbuy
//! bench-settle` runs it); the matcher (`hashbuy match`'s loop with the
//! `[match]` defaults, `--delivery` and `--batch-ms` overriding them); and
//! the settler (`hashbuy settle`'s loop with the `[settle]` defaults and a
//! temporary ledger, charging paysim). The services are given the
//! generated catalog and accounts, join their groups, and only then is the
//! first tweet offered, so a group join is never counted as latency.
//!
//! `hashbuy gen` tweets (seed 42, `--purchase-share` of them buy) are then
//! offered to `tweets` at `--rate` tweets a second for `--seconds`, keyed
//! by user id as `hashbuy replay` keys them and with its producer settings
//! (`linger.ms` 5). Tweet `i` is due at `start + i / rate`: the offering
//! catches up after a late send instead of drifting, and the rate it
//! achieved is reported with how far it fell behind its schedule. The
//! bench decides each tweet with the purchase rules (as `hashbuy inspect`
//! would) to know which command ids to expect.
//!
//! # What is measured, from where to where
//!
//! Every time is this process's monotonic clock, read by the bench's own
//! threads; the services are not asked for any of them:
//!
//! - **offered**: when the bench hands the purchase tweet to its producer
//!   (not the record's timestamp, which librdkafka sets at the same call
//!   and in milliseconds only). The producer's linger is therefore part of
//!   the latency, as it is for any firehose connector.
//! - **command produced** and **command visible**: when the command
//!   (matched by its id) is read from `payment-commands` by the bench's
//!   readers, one `read_uncommitted`, one `read_committed` as a settler
//!   reads. Their difference is what waiting for the matcher's
//!   transaction to commit costs.
//! - **ack**: when the command's first ack is read from `payment-acks`.
//!
//! The bench's readers poll with `fetch.wait.max.ms` = 5 (see
//! [`OWN_SETTINGS`]), so they add at most a few milliseconds to what they
//! observe; the services' own clients keep their settings (hashbuy's
//! defaults unless `-X` says otherwise), since those are what is being
//! measured.
//!
//! Reported over the purchases (every expected command): tweet → command
//! produced, tweet → command visible, command visible → ack, tweet → ack,
//! each as p50, p99, p99.9 and max with its count. Beside them, from the
//! services' own histograms (captured in process by a `metrics` recorder
//! this bench installs; the services record them as they always do):
//!
//! - **paysim, one charge**: `hashbuy_settler_provider_seconds`, each
//!   provider call timed by the settler around the HTTP request, from
//!   sending it (after the settler's own waits for the lease) to reading
//!   its answer. paysim exposes no timing of its own; this is its time
//!   for a request plus loopback HTTP. The target is tweet → ack
//!   p99 ≤ this p99 + 25 ms.
//! - **ledger flush**: `hashbuy_settler_ledger_flush_seconds`, one group
//!   commit of the settler's ledger (each command waits for two).
//! - **matcher commit**: `hashbuy_matcher_commit_seconds`, one batch's
//!   transaction (or flush and offset commit, at least once).
//!
//! And a count of the commands that reached the settler while an earlier
//! command of the same user was still unacked: the settler settles one
//! user's commands one after another, so those waited for it. tweet → ack
//! is shown again over the other commands alone.
//!
//! # Why
//!
//! Throughput benches (`bench`, `bench-settle`) read a backlog as fast as
//! they can; a shopper waits for one tweet's ack, at a rate the system
//! keeps up with. What that wait costs beyond the provider's own answer
//! time is hashbuy's: batching, fetching, transactions, ledger flushes.
//!
//! # On the embedded broker
//!
//! Three things about librdkafka's mock cluster (`rdkafka_mock*.c`) shape
//! what this bench sees, so read its figures with them in mind:
//!
//! - A fetch that finds nothing is answered after the whole
//!   `fetch.wait.max.ms` (hashbuy's default: 10 ms, librdkafka's: 500 ms),
//!   even if records arrive meanwhile; a Kafka answers as soon as one
//!   does. `-X fetch.wait.max.ms=500` shows what librdkafka's default
//!   costs the services.
//! - It reports a partition's end as its last stable offset and writes no
//!   transaction markers, so `read_committed` readers get the records of
//!   open transactions at once: here, command produced and command
//!   visible are the same, and the matcher's batch time does not show. On
//!   a Kafka, a command is visible only once its batch commits.
//! - It finds a fetch's batch by walking the partition's batches from the
//!   oldest kept: its cost grows with the batches a partition holds (up
//!   to 5 MB), which at thousands of tweets a second and a few records a
//!   batch slows the matcher's fetches. Fewer `--partitions` mean fuller
//!   batches and fewer of them to walk.
//!
//! # Ending
//!
//! Once the offering ends, the bench waits (at most [`ACK_WAIT`]) for
//! every expected command to be visible and acked; a command that never
//! is, or one it did not expect, is an error naming the counts, never a
//! hang. Then the services are stopped through their stop flag (Ctrl-C
//! raises the same flag, and the bench stops with an error). A service
//! that stops early stops the bench with its error.
//!
//! # Output
//!
//! A Markdown table and two lines of summary, rendered from the result
//! document as `hashbuy bench-report` renders it ([`table`]); with
//! `--json`, the document itself: `bench` (`"e2e"`), `machine`, `partitions`, `latency_ms`
//! (paysim's median), `delivery`, `batch_ms`, `properties` (`-X`),
//! `purchase_share`, `offered` (`tweets`, `seconds`, `per_second`,
//! `asked_per_second`, `most_behind_ms`), `purchases` (tweets that buy),
//! `commands` (expected, each seen and acked), `acks` (`count`,
//! `settled`, `declined`, `rejected`, `failed`), `behind_same_user`,
//! `stages` (each of `tweet_to_command_produced`, `tweet_to_command`,
//! `command_to_ack`, `tweet_to_ack`, `tweet_to_ack_alone`,
//! `paysim_charge`, `ledger_flush`, `matcher_commit` as `count`,
//! `p50_ms`, `p99_ms`, `p999_ms`, `max_ms`),
//! `target` (`tweet_to_ack_p99_ms`, `limit_ms`: paysim's p99 + 25,
//! `met`), `cpu` (`process_cores`, `broker_cores`: CPU time over the
//! offering and the wait, over wall time), `matcher` and `settler` (their
//! run's counts).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hashbuy_core::decode::{decode, Record};
use hashbuy_core::tables::{Accounts, AccountsFile, Catalog, CatalogFile};
use hashbuy_core::Rules;
use hashbuy_gen::{Generator, Options};
use hashbuy_kafka::client::{Connection, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::lock;
use hashbuy_kafka::produce::{flush_promptly, send_waiting, Deliveries};
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_matcher::run as matching;
use hashbuy_matcher::Matcher;
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::{PaymentAck, PaymentCommand};
use hashbuy_provider::{Backoff, Provider, ProviderConfig, SecretString};
use hashbuy_settler::payments::Payments;
use hashbuy_settler::run as settling;
use indicatif::{ProgressBar, ProgressStyle};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message as _;

use crate::bench::{cpu_time, machine, BrokerChild};
use crate::config::{
    override_with, DeliveryArg, MatchConfig, SettleConfig, RECORDINGS_MAX_COMMAND_AGE,
};
use crate::kafka_args;
use crate::paysim::{self, InProcess};

/// Arguments of `hashbuy bench-e2e`.
#[derive(clap::Args)]
pub struct Args {
    /// Tweets offered a second, on a fixed schedule (tweet `i` at start +
    /// i / rate).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Seconds of offering.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Share of the offered tweets that buy, between 0 and 1, as `hashbuy
    /// gen --purchase-share`.
    #[arg(long, default_value_t = 0.01, value_parser = crate::gen::fraction)]
    purchase_share: f64,
    /// paysim's median answer time, in milliseconds (jittered, log-normal,
    /// as `hashbuy paysim --latency-ms`).
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Partitions of the embedded broker's topics.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// The matcher's delivery, as `hashbuy match --delivery` [default: as
    /// there, exactly-once].
    #[arg(long, value_enum)]
    delivery: Option<DeliveryArg>,
    /// Longest a matcher batch (transaction) collects records, in
    /// milliseconds, as `hashbuy match --batch-ms` [default: as there, 100].
    #[arg(long)]
    batch_ms: Option<u64>,
    /// A librdkafka property for the services' Kafka clients (the
    /// matcher's and the settler's), as KEY=VALUE (repeatable), e.g.
    /// `linger.ms=0`. The bench's own producer and readers take
    /// it too, but keep their `linger.ms`, queue size and
    /// `fetch.wait.max.ms`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = crate::kafka_args::property)]
    properties: Vec<(String, String)>,
    /// Print the results as one JSON document (with the machine) instead
    /// of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// The provider key the bench gives its own paysim.
const KEY: &str = "sk_test_hashbuy_bench_e2e";

/// The name of paysim's thread.
const PAYSIM_THREAD: &str = "paysim";

/// The settings of the bench's own clients, applied after `-X` so that
/// they hold whatever it says: the offered stream and the instruments
/// stay the same while the services' settings vary.
///
/// - `fetch.wait.max.ms` 5, for its readers. The embedded broker
///   (librdkafka's mock cluster) holds a fetch that finds nothing for the
///   whole `fetch.wait.max.ms` (hashbuy's default: 10 ms), even when
///   records arrive meanwhile, and the readers would add up to that to
///   every time they observe. At 5 ms they add at most that, for about
///   200 empty fetches a second each.
/// - `linger.ms` 5 and a deep queue, for its producer: `hashbuy replay`'s
///   settings.
const OWN_SETTINGS: [(&str, &str); 3] = [
    ("fetch.wait.max.ms", "5"),
    ("linger.ms", "5"),
    ("queue.buffering.max.messages", "1000000"),
];

/// How long the services may take to join their groups.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// How long, after the offering ends, every expected command may take to
/// be visible and acked.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// How long a service may take to stop once asked.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How long, after a failure, each service may take to stop and say why.
const FAIL_WAIT: Duration = Duration::from_secs(10);

/// The allowance over paysim's p99, in milliseconds.
const TARGET_OVER_PAYSIM_MS: f64 = 25.0;

/// Runs `hashbuy bench-e2e`.
pub fn run(args: Args) -> Result<()> {
    // One flag stops the services, the readers, and (raised by Ctrl-C or
    // SIGTERM) the bench.
    let stop = kafka_args::stop_flag()?;
    let captured = Captured::install()?;
    let broker = BrokerChild::start(args.partitions, &[])?;
    let connection = Connection {
        brokers: broker.address.clone(),
        properties: args.properties.clone(),
    };
    let mut own = connection.clone();
    own.properties
        .extend(OWN_SETTINGS.map(|(key, value)| (key.to_owned(), value.to_owned())));
    let topics = Topics::default();
    connection.check_topic(&topics.tweets, CONNECT_TIMEOUT)?;

    let mut generator = Generator::new(Options {
        purchase_share: args.purchase_share,
        ..Options::default()
    });
    let (catalog, accounts) = tables(generator.catalog(), generator.accounts())?;
    let mut settings = MatchConfig {
        group: format!("hashbuy-bench-e2e-matcher-{}", std::process::id()),
        // The generated tables alone, as `hashbuy bench`.
        live_tables: false,
        ..MatchConfig::default()
    };
    override_with(&mut settings.delivery, args.delivery);
    override_with(&mut settings.batch_ms, args.batch_ms);
    let matcher =
        Matcher::new(catalog.clone(), accounts.clone()).with_validation(settings.validation()?);
    let pipeline = Pipeline::start(
        &args,
        (&connection, &own),
        &topics,
        &settings,
        matcher,
        stop,
    )?;
    eprintln!(
        "waiting for the matcher and the settler to join their groups on {} partitions ...",
        args.partitions
    );
    if let Err(e) = pipeline.wait_ready() {
        return Err(pipeline.fail(e));
    }

    let cpu_before = cpu_time();
    let broker_before = broker.cpu_time();
    let began = Instant::now();
    let offering = offer(
        &args,
        &own,
        &topics.tweets,
        &mut generator,
        Rules::new(&catalog, &accounts),
        &pipeline.acked.seen,
        || pipeline.check(),
    );
    let offered = match offering {
        Ok(offered) => offered,
        Err(e) => return Err(pipeline.fail(e)),
    };
    if let Err(e) = pipeline.wait_acks(offered.commands.len() as u64, &topics.commands) {
        return Err(pipeline.fail(e));
    }
    let wall = began.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let broker_cpu = broker
        .cpu_time()
        .zip(broker_before)
        .map(|(after, before)| after.saturating_sub(before));
    let finished = pipeline.finish()?;

    let figures = Figures::of(&offered, &finished, &captured)?;
    let cores = |cpu: Duration| cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let report = Report {
        args: &args,
        settings: &settings,
        offered: &offered,
        finished: &finished,
        figures,
        process_cores: cores(cpu),
        broker_cores: broker_cpu.map(cores),
    };
    let document = report.json();
    if args.json {
        println!("{document:#}");
    } else {
        print!("{}", table(&document));
    }
    Ok(())
}

/// The services and the bench's readers, each on threads of its own,
/// with what they hold.
struct Pipeline {
    /// Stops all of them; raised by Ctrl-C too.
    stop: Arc<AtomicBool>,
    matcher: Running<matching::Summary>,
    matcher_health: Health,
    settler: Running<settling::Summary>,
    settler_health: Health,
    produced: Watch<PaymentCommand>,
    visible: Watch<PaymentCommand>,
    acked: Watch<PaymentAck>,
    /// Serves paysim.
    _paysim: tokio::runtime::Runtime,
    /// Holds the settler's ledger; removed when dropped.
    _ledger: tempfile::TempDir,
}

/// What the readers read and the services counted, once stopped.
struct Finished {
    matched: matching::Summary,
    settled: settling::Summary,
    produced: Vec<(Instant, PaymentCommand)>,
    visible: Vec<(Instant, PaymentCommand)>,
    acks: Vec<(Instant, PaymentAck)>,
}

impl Pipeline {
    /// Starts the readers on `own` (first: they read from the topics'
    /// beginnings long before the services have joined their groups),
    /// paysim, and on `connection` the matcher with `settings` and the
    /// settler with the `[settle]` defaults.
    fn start(
        args: &Args,
        (connection, own): (&Connection, &Connection),
        topics: &Topics,
        settings: &MatchConfig,
        matcher: Matcher,
        stop: Arc<AtomicBool>,
    ) -> Result<Pipeline> {
        let commands = |name, uncommitted| {
            Watch::start(name, own, &topics.commands, uncommitted, &stop, command_id)
        };
        let produced = commands("the commands reader (read_uncommitted)", true)?;
        let visible = commands("the commands reader (read_committed)", false)?;
        let acked = Watch::start(
            "the acks reader",
            own,
            &topics.acks,
            false,
            &stop,
            ack_command_id,
        )?;

        let match_config = settings.run_config(connection.clone(), topics.clone(), false);
        let matcher_health = Health::default();
        let matcher = Running::spawn("the matcher", {
            let (stop, health) = (Arc::clone(&stop), matcher_health.clone());
            move || {
                Ok(matching::run(
                    Arc::new(matcher),
                    &match_config,
                    &stop,
                    &health,
                )?)
            }
        })?;

        let InProcess { runtime, url, .. } = paysim::in_process(args.latency_ms, PAYSIM_THREAD)?;
        let ledger = tempfile::tempdir().context("no temporary directory for the ledger")?;
        let settle = SettleConfig {
            group: format!("hashbuy-bench-e2e-settler-{}", std::process::id()),
            max_command_age: RECORDINGS_MAX_COMMAND_AGE,
            ..SettleConfig::default()
        };
        let mut provider = ProviderConfig::new(SecretString::from(KEY.to_owned()));
        provider.base_url = url;
        provider.request_timeout = settle.request_timeout();
        let payments = Payments::new(
            Provider::new(provider).context("bad provider settings")?,
            Backoff::default(),
        );
        let settle_config = settle.run_config(
            connection.clone(),
            topics.clone(),
            ledger.path().join("ledger"),
            false,
        );
        let settler_health = Health::default();
        let settler = Running::spawn("the settler", {
            let (stop, health) = (Arc::clone(&stop), settler_health.clone());
            move || Ok(settling::run(&settle_config, payments, &stop, &health)?)
        })?;
        Ok(Pipeline {
            stop,
            matcher,
            matcher_health,
            settler,
            settler_health,
            produced,
            visible,
            acked,
            _paysim: runtime,
            _ledger: ledger,
        })
    }

    /// An error once Ctrl-C was pressed or anything stopped.
    fn check(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        for (name, alive) in [
            (self.matcher.name, self.matcher.alive()),
            (self.settler.name, self.settler.alive()),
            (self.produced.running.name, self.produced.running.alive()),
            (self.visible.running.name, self.visible.running.alive()),
            (self.acked.running.name, self.acked.running.alive()),
        ] {
            if !alive {
                bail!("{name} stopped early");
            }
        }
        Ok(())
    }

    /// Stops everything (waiting for each at most [`FAIL_WAIT`]); the
    /// error of whatever stopped with one, else `error`.
    fn fail(self, error: anyhow::Error) -> anyhow::Error {
        self.stop.store(true, Ordering::Relaxed);
        [
            self.matcher.error_within(FAIL_WAIT),
            self.settler.error_within(FAIL_WAIT),
            self.produced.running.error_within(FAIL_WAIT),
            self.visible.running.error_within(FAIL_WAIT),
            self.acked.running.error_within(FAIL_WAIT),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(error)
    }

    /// Waits (at most [`JOIN_WAIT`]) until both services have joined
    /// their groups.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + JOIN_WAIT;
        while !(self.matcher_health.is_ready() && self.settler_health.is_ready()) {
            self.check()?;
            if Instant::now() > deadline {
                bail!(
                    "the services did not join their groups within {} s (matcher: {}, settler: {})",
                    JOIN_WAIT.as_secs(),
                    joined(&self.matcher_health),
                    joined(&self.settler_health),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits (at most [`ACK_WAIT`]) until `expected` commands were read
    /// committed and acked.
    fn wait_acks(&self, expected: u64, commands_topic: &str) -> Result<()> {
        let progress = ProgressBar::new(expected).with_style(
            ProgressStyle::with_template("waiting for acks {bar:40} {human_pos}/{human_len}")
                .context("progress template")?,
        );
        let deadline = Instant::now() + ACK_WAIT;
        loop {
            let visible = self.visible.seen.load(Ordering::Relaxed);
            let acks = self.acked.seen.load(Ordering::Relaxed);
            progress.set_position(acks.min(expected));
            if visible >= expected && acks >= expected {
                progress.finish_and_clear();
                return Ok(());
            }
            self.check()?;
            if Instant::now() > deadline {
                bail!(
                    "{} of the {expected} commands expected were never acked within {} s after \
                     the offering ended ({} were never visible on {commands_topic})",
                    expected.saturating_sub(acks),
                    ACK_WAIT.as_secs(),
                    expected.saturating_sub(visible),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops everything through the stop flag and collects the results.
    fn finish(self) -> Result<Finished> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(Finished {
            matched: self.matcher.join_within(STOP_WAIT)?,
            settled: self.settler.join_within(STOP_WAIT)?,
            produced: self.produced.running.join_within(STOP_WAIT)?,
            visible: self.visible.running.join_within(STOP_WAIT)?,
            acks: self.acked.running.join_within(STOP_WAIT)?,
        })
    }
}

fn joined(health: &Health) -> &'static str {
    if health.is_ready() {
        "joined"
    } else {
        "not joined"
    }
}

/// What is printed.
struct Report<'a> {
    args: &'a Args,
    settings: &'a MatchConfig,
    offered: &'a Offered,
    finished: &'a Finished,
    figures: Figures,
    /// CPU time over wall time, from the first tweet to the last ack.
    process_cores: f64,
    broker_cores: Option<f64>,
}

impl Report<'_> {
    /// paysim's p99 plus the allowance: what tweet → ack p99 may be.
    fn limit_ms(&self) -> f64 {
        self.figures.paysim.p99_ms + TARGET_OVER_PAYSIM_MS
    }

    fn met(&self) -> bool {
        self.figures.tweet_to_ack.p99_ms <= self.limit_ms()
    }

    fn delivery(&self) -> String {
        clap::ValueEnum::to_possible_value(&self.settings.delivery)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// The `--json` document (see the module docs).
    fn json(&self) -> serde_json::Value {
        let (args, offered, figures) = (self.args, self.offered, &self.figures);
        let (matched, settled) = (&self.finished.matched, &self.finished.settled);
        let stages: serde_json::Map<String, serde_json::Value> = STAGES
            .iter()
            .zip(figures.stages())
            .map(|((name, _), spread)| ((*name).to_owned(), spread.json()))
            .collect();
        serde_json::json!({
            "bench": "e2e",
            "machine": machine(),
            "partitions": args.partitions,
            "latency_ms": args.latency_ms,
            "delivery": self.delivery(),
            "batch_ms": self.settings.batch_ms,
            "properties": args.properties.iter().cloned().collect::<HashMap<_, _>>(),
            "purchase_share": args.purchase_share,
            "offered": {
                "tweets": offered.tweets,
                "seconds": offered.took.as_secs_f64(),
                "per_second": offered.per_second(),
                "asked_per_second": args.rate,
                "most_behind_ms": ms(offered.most_behind),
            },
            "purchases": offered.purchases,
            "commands": offered.commands.len(),
            "acks": {
                "count": figures.outcomes.values().sum::<u64>(),
                "settled": figures.outcome(Status::Settled),
                "declined": figures.outcome(Status::Declined),
                "rejected": figures.outcome(Status::Rejected),
                "failed": figures.outcome(Status::Failed),
            },
            "behind_same_user": figures.behind_same_user,
            "stages": stages,
            "target": {
                "tweet_to_ack_p99_ms": figures.tweet_to_ack.p99_ms,
                "limit_ms": self.limit_ms(),
                "met": self.met(),
            },
            "cpu": {
                "process_cores": self.process_cores,
                "broker_cores": self.broker_cores,
            },
            "matcher": {
                "records": matched.records,
                "commands": matched.commands,
                "batches": matched.batches,
                "dead_letters": matched.dead_letters,
            },
            "settler": { "commands": settled.commands, "acks": settled.acks },
        })
    }
}

/// The generated tables, loaded as the matcher loads table files.
fn tables(catalog: CatalogFile, accounts: AccountsFile) -> Result<(Catalog, Accounts)> {
    let offers = catalog.offers.iter().map(|row| row.to_offer());
    let links = accounts.accounts.iter().map(|row| row.to_link());
    Ok((
        Catalog::new(offers.collect::<Result<_, _>>().map_err(|e| anyhow!(e))?)
            .map_err(|e| anyhow!("the generated catalog: {e}"))?,
        Accounts::new(links.collect::<Result<_, _>>().map_err(|e| anyhow!(e))?)
            .map_err(|e| anyhow!("the generated accounts: {e}"))?,
    ))
}

/// What the offering did.
struct Offered {
    tweets: u64,
    /// From the first send to the last.
    took: Duration,
    /// The furthest a send fell behind its schedule.
    most_behind: Duration,
    /// Tweets that buy.
    purchases: u64,
    /// Each expected command: when its tweet was offered, and its user.
    commands: HashMap<String, (Instant, String)>,
}

impl Offered {
    fn per_second(&self) -> f64 {
        self.tweets.saturating_sub(1) as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Offers `rate × seconds` generated tweets to `topic` on schedule
/// (`connection` has the producer's settings, [`OWN_SETTINGS`]), keyed by
/// user id as `hashbuy replay` keys them, remembering when each
/// purchase was handed to the producer. `check` is asked now and then
/// (the services are alive, no Ctrl-C).
fn offer(
    args: &Args,
    connection: &Connection,
    topic: &str,
    generator: &mut Generator,
    rules: Rules<'_>,
    acks: &AtomicU64,
    check: impl Fn() -> Result<()>,
) -> Result<Offered> {
    let producer: BaseProducer<Deliveries> = connection
        .config()
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    let total = args.rate * args.seconds;
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("offering {bar:40} {human_pos}/{human_len} tweets, {msg}")
            .context("progress template")?,
    );
    let mut offered = Offered {
        tweets: 0,
        took: Duration::ZERO,
        most_behind: Duration::ZERO,
        purchases: 0,
        commands: HashMap::new(),
    };
    let mut line = Vec::new();
    let start = Instant::now();
    let mut last = start;
    for i in 0..total {
        line.clear();
        generator.write_next(&mut line);
        let decoded = decode(&line);
        let decision = rules.decide_decoded(&decoded);
        let key = match &decoded {
            Ok(Record::Tweet(tweet)) => Some(tweet.user_id.to_string()),
            _ => None,
        };
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        let now = Instant::now();
        if due > now {
            producer.poll(Duration::ZERO);
            std::thread::sleep(due - now);
        } else {
            offered.most_behind = offered.most_behind.max(now - due);
        }
        last = Instant::now();
        send_waiting(
            &producer,
            topic,
            key.as_deref().map(str::as_bytes),
            &line,
            || false,
        )
        .context("cannot produce a tweet")?;
        offered.tweets += 1;
        if !decision.commands().is_empty() {
            offered.purchases += 1;
        }
        for command in decision.commands() {
            offered
                .commands
                .insert(command.command_id.clone(), (last, command.user_id.clone()));
        }
        if i % 1024 == 0 {
            check()?;
            progress.set_position(i);
            progress.set_message(format!(
                "{:.0}/s, {} purchases, {} acked",
                i as f64 / start.elapsed().as_secs_f64().max(1e-9),
                offered.purchases,
                acks.load(Ordering::Relaxed)
            ));
        }
    }
    offered.took = last - start;
    progress.finish_and_clear();
    flush_promptly(&producer, Duration::from_secs(30))
        .context("the tweets were not delivered within 30 s")?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} tweets were not delivered: {first}");
    }
    Ok(offered)
}

/// Work on a thread of its own, joined within a bound.
struct Running<T> {
    name: &'static str,
    thread: JoinHandle<Result<T>>,
}

impl<T: Send + 'static> Running<T> {
    fn spawn(
        name: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Self> {
        let thread = std::thread::Builder::new()
            .name("bench-e2e".to_owned())
            .spawn(work)
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Running { name, thread })
    }

    fn alive(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Whether it has ended, waiting at most `wait`.
    fn ended_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.alive() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Its result, once it ends within `wait` (asked to stop before).
    fn join_within(self, wait: Duration) -> Result<T> {
        if !self.ended_within(wait) {
            bail!("{} did not stop within {} s", self.name, wait.as_secs());
        }
        match self.thread.join() {
            Ok(result) => result.with_context(|| format!("{} stopped", self.name)),
            Err(_) => bail!("{} panicked", self.name),
        }
    }

    /// Its error, if it ends with one within `wait` (asked to stop
    /// before).
    fn error_within(self, wait: Duration) -> Option<anyhow::Error> {
        if self.ended_within(wait) {
            self.join_within(Duration::ZERO).err()
        } else {
            None
        }
    }
}

/// A bench reader of one topic, from its beginning, on a thread of its
/// own until the stop flag: each record decoded, with when it was read.
struct Watch<M: Send + 'static> {
    running: Running<Vec<(Instant, M)>>,
    /// Distinct command ids read so far.
    seen: Arc<AtomicU64>,
}

impl<M: prost::Message + Default + Send + 'static> Watch<M> {
    fn start(
        name: &'static str,
        connection: &Connection,
        topic: &str,
        read_uncommitted: bool,
        stop: &Arc<AtomicBool>,
        id: fn(&M) -> &String,
    ) -> Result<Self> {
        let options = ReadOptions {
            from_beginning: true,
            exit_at_end: false,
            read_uncommitted,
        };
        let mut reader = TopicReader::open(connection, topic, options)
            .with_context(|| format!("cannot read {topic}"))?;
        let seen = Arc::new(AtomicU64::new(0));
        let (stop, count, topic) = (Arc::clone(stop), Arc::clone(&seen), topic.to_owned());
        let running = Running::spawn(name, move || {
            let mut read = Vec::new();
            let mut ids = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                let Some(message) = reader.next(Duration::from_millis(50)) else {
                    continue;
                };
                let at = Instant::now();
                let message = message.with_context(|| format!("cannot read {topic}"))?;
                let decoded = M::decode(message.payload().unwrap_or_default())
                    .with_context(|| format!("a record of {topic} is not hashbuy's"))?;
                if ids.insert(id(&decoded).clone()) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                read.push((at, decoded));
            }
            Ok(read)
        })?;
        Ok(Watch { running, seen })
    }
}

fn command_id(command: &PaymentCommand) -> &String {
    &command.command_id
}

fn ack_command_id(ack: &PaymentAck) -> &String {
    &ack.command_id
}

/// The first time each command id was read.
fn first_seen<M>(read: &[(Instant, M)], id: fn(&M) -> &String) -> HashMap<&str, Instant> {
    let mut first = HashMap::new();
    for (at, message) in read {
        first.entry(id(message).as_str()).or_insert(*at);
    }
    first
}

/// p50, p99, p99.9 and max of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Spread {
    /// Of `values` in milliseconds; nearest-rank quantiles.
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
            values.get(rank - 1).copied().unwrap_or(0.0)
        };
        Spread {
            count: n,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: values.last().copied().unwrap_or(0.0),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Everything reported, computed once the services stopped.
struct Figures {
    tweet_to_produced: Spread,
    tweet_to_command: Spread,
    command_to_ack: Spread,
    tweet_to_ack: Spread,
    /// Over the commands that did not wait for their user's previous one.
    tweet_to_ack_alone: Spread,
    paysim: Spread,
    ledger_flush: Spread,
    matcher_commit: Spread,
    outcomes: HashMap<i32, u64>,
    behind_same_user: u64,
}

impl Figures {
    fn of(offered: &Offered, finished: &Finished, captured: &Captured) -> Result<Figures> {
        let produced_at = first_seen(&finished.produced, command_id);
        let visible_at = first_seen(&finished.visible, command_id);
        let acked_at = first_seen(&finished.acks, ack_command_id);
        for (what, ids) in [
            ("commands", &visible_at),
            ("uncommitted commands", &produced_at),
            ("acks", &acked_at),
        ] {
            let unexpected = ids
                .keys()
                .filter(|id| !offered.commands.contains_key(**id))
                .count();
            if unexpected > 0 {
                bail!("read {unexpected} {what} for no tweet the bench offered: a bug");
            }
        }
        let mut outcomes = HashMap::new();
        let mut counted = HashSet::new();
        for (_, ack) in &finished.acks {
            if counted.insert(ack.command_id.as_str()) {
                *outcomes.entry(ack.status).or_insert(0) += 1;
            }
        }

        let mut stages: [Vec<f64>; 4] = Default::default();
        // Per user, each command's (visible, acked, tweet → ack).
        let mut by_user: HashMap<&str, Vec<(Instant, Instant, f64)>> = HashMap::new();
        for (id, (offered_at, user)) in &offered.commands {
            let (Some(&made), Some(&seen), Some(&acked)) = (
                produced_at.get(id.as_str()),
                visible_at.get(id.as_str()),
                acked_at.get(id.as_str()),
            ) else {
                bail!("command {id} was offered but not read back with its ack: a bug");
            };
            stages[0].push(ms(made.saturating_duration_since(*offered_at)));
            stages[1].push(ms(seen.saturating_duration_since(*offered_at)));
            stages[2].push(ms(acked.saturating_duration_since(seen)));
            let total = ms(acked.saturating_duration_since(*offered_at));
            stages[3].push(total);
            by_user.entry(user).or_default().push((seen, acked, total));
        }
        // A command visible before its user's previous one was acked
        // waited for it.
        let mut behind_same_user = 0;
        let mut alone = Vec::new();
        for commands in by_user.values_mut() {
            commands.sort_by_key(|&(seen, _, _)| seen);
            for (i, &(seen, _, total)) in commands.iter().enumerate() {
                if i > 0 && seen < commands[i - 1].1 {
                    behind_same_user += 1;
                } else {
                    alone.push(total);
                }
            }
        }
        let [tweet_to_produced, tweet_to_command, command_to_ack, tweet_to_ack] =
            stages.map(Spread::of);
        let in_ms = |series: &Series| Spread::of(series.values().iter().map(|s| s * 1e3).collect());
        Ok(Figures {
            tweet_to_produced,
            tweet_to_command,
            command_to_ack,
            tweet_to_ack,
            tweet_to_ack_alone: Spread::of(alone),
            paysim: in_ms(&captured.provider),
            ledger_flush: in_ms(&captured.ledger_flush),
            matcher_commit: in_ms(&captured.matcher_commit),
            outcomes,
            behind_same_user,
        })
    }

    fn outcome(&self, status: Status) -> u64 {
        self.outcomes.get(&(status as i32)).copied().unwrap_or(0)
    }

    /// Each stage's figures, in the order of [`STAGES`].
    fn stages(&self) -> [Spread; 8] {
        [
            self.tweet_to_produced,
            self.tweet_to_command,
            self.command_to_ack,
            self.tweet_to_ack,
            self.tweet_to_ack_alone,
            self.paysim,
            self.ledger_flush,
            self.matcher_commit,
        ]
    }
}

/// Each stage's name in the JSON document, and its label in the table.
const STAGES: [(&str, &str); 8] = [
    (
        "tweet_to_command_produced",
        "tweet → command produced (read_uncommitted)",
    ),
    (
        "tweet_to_command",
        "tweet → command visible (read_committed)",
    ),
    ("command_to_ack", "command visible → ack"),
    ("tweet_to_ack", "**tweet → ack**"),
    (
        "tweet_to_ack_alone",
        "tweet → ack, not waiting for the user's previous command",
    ),
    ("paysim_charge", "paysim: one charge (timed by the settler)"),
    ("ledger_flush", "settler: one ledger flush (group commit)"),
    ("matcher_commit", "matcher: one batch commit"),
];

/// The Markdown table of a `bench-e2e --json` document and its summary:
/// what the bench prints without `--json`, and `hashbuy bench-report` for
/// a result file of it.
pub(crate) fn table(document: &serde_json::Value) -> String {
    let figure = |value: &serde_json::Value| {
        value
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
    };
    let mut out = String::from(
        "| stage | count | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for (name, label) in STAGES {
        let stage = &document["stages"][name];
        out += &format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            stage["count"],
            figure(&stage["p50_ms"]),
            figure(&stage["p99_ms"]),
            figure(&stage["p999_ms"]),
            figure(&stage["max_ms"]),
        );
    }
    let (offered, acks, target) = (&document["offered"], &document["acks"], &document["target"]);
    let properties: String = document["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!(" -X {key}={}", value.as_str().unwrap_or_default()))
        .collect();
    out += &format!(
        "\nOffered {} tweets in {} s: {} tweets/s (asked {}/s; at most {} ms behind \
         schedule). {} purchase tweets, {} commands, each acked: {} settled, {} declined, {} \
         rejected, {} failed; {} waited for an earlier command of their user. Matcher {}, \
         --batch-ms {}{properties}; {} partitions; paysim median {} ms; CPU: this process {} \
         cores, the broker {} cores; {}.\n",
        offered["tweets"],
        figure(&offered["seconds"]),
        offered["per_second"].as_f64().map_or(0.0, f64::round),
        offered["asked_per_second"],
        figure(&offered["most_behind_ms"]),
        document["purchases"],
        document["commands"],
        acks["settled"],
        acks["declined"],
        acks["rejected"],
        acks["failed"],
        document["behind_same_user"],
        document["delivery"].as_str().unwrap_or_default(),
        document["batch_ms"],
        document["partitions"],
        document["latency_ms"],
        number(&document["cpu"]["process_cores"]),
        number(&document["cpu"]["broker_cores"]),
        crate::bench_report::machine(document),
    );
    out += &format!(
        "Target: tweet → ack p99 {} ms ≤ paysim's p99 {} ms + {TARGET_OVER_PAYSIM_MS} ms = {} \
         ms: {}.\n",
        figure(&target["tweet_to_ack_p99_ms"]),
        figure(&document["stages"]["paysim_charge"]["p99_ms"]),
        figure(&target["limit_ms"]),
        if target["met"].as_bool() == Some(true) {
            "met"
        } else {
            "not met"
        },
    );
    out
}

/// A share of a core, or `-`.
fn number(value: &serde_json::Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The samples of one histogram of the services.
#[derive(Debug, Default)]
struct Series(Mutex<Vec<f64>>);

impl Series {
    fn values(&self) -> Vec<f64> {
        lock(&self.0).clone()
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        lock(&self.0).push(value);
    }
}

/// The services' histograms this bench reports, as they record them.
struct Captured {
    provider: Arc<Series>,
    ledger_flush: Arc<Series>,
    matcher_commit: Arc<Series>,
}

impl Captured {
    /// Installs the process's `metrics` recorder: it keeps every sample of
    /// the three histograms and drops everything else.
    fn install() -> Result<Captured> {
        let captured = Captured {
            provider: Arc::default(),
            ledger_flush: Arc::default(),
            matcher_commit: Arc::default(),
        };
        let recorder = Capture(vec![
            (
                "hashbuy_settler_provider_seconds",
                Arc::clone(&captured.provider),
            ),
            (
                "hashbuy_settler_ledger_flush_seconds",
                Arc::clone(&captured.ledger_flush),
            ),
            (
                "hashbuy_matcher_commit_seconds",
                Arc::clone(&captured.matcher_commit),
            ),
        ]);
        metrics::set_global_recorder(recorder)
            .map_err(|_| anyhow!("a metrics recorder is installed already"))?;
        Ok(captured)
    }
}

/// The recorder behind [`Captured`].
struct Capture(Vec<(&'static str, Arc<Series>)>);

impl metrics::Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .iter()
            .find(|(name, _)| *name == key.name())
            .map_or_else(Histogram::noop, |(_, series)| {
                Histogram::from_arc(Arc::clone(series))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let spread = Spread::of((1..=1000).rev().map(f64::from).collect());
        assert_eq!(
            (
                spread.count,
                spread.p50_ms,
                spread.p99_ms,
                spread.p999_ms,
                spread.max_ms
            ),
            (1000, 500.0, 990.0, 999.0, 1000.0)
        );
        let one = Spread::of(vec![7.0]);
        assert_eq!((one.p50_ms, one.p999_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Spread::of(Vec::new()).count, 0);
    }

    #[test]
    fn the_table_shows_every_stage_and_the_target_of_a_document() {
        let spread = |p99: f64| Spread {
            count: 3,
            p50_ms: 1.0,
            p99_ms: p99,
            p999_ms: p99,
            max_ms: p99,
        };
        let stages: serde_json::Map<String, serde_json::Value> = STAGES
            .iter()
            .map(|(name, _)| ((*name).to_owned(), spread(150.0).json()))
            .collect();
        let document = serde_json::json!({
            "bench": "e2e",
            "machine": {"cpus": 2, "cpu_model": "a CPU", "os": "linux", "arch": "x86_64"},
            "properties": {"fetch.wait.max.ms": "10"},
            "delivery": "exactly-once",
            "stages": stages,
            "target": {"tweet_to_ack_p99_ms": 150.0, "limit_ms": 175.0, "met": true},
        });
        let table = crate::bench_report::render(&document).expect("a table");
        for (_, label) in STAGES {
            assert!(
                table.contains(&format!("| {label} | 3 | 1.0 | 150.0 |")),
                "{table}"
            );
        }
        assert!(table.contains("-X fetch.wait.max.ms=10"), "{table}");
        assert!(table.contains("2 CPUs (a CPU)"), "{table}");
        assert!(table.contains("= 175.0 ms: met."), "{table}");
    }
}
