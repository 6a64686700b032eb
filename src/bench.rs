//! `hashbuy bench`: the matcher's throughput and CPU cost on Kafka, next
//! to the ceiling of the same client on the same broker and data.
//!
//! The broker runs in its own process (`hashbuy broker`, started here
//! unless `--brokers` names one), so the CPU time measured is the client's
//! alone. A generated stream is produced once; then, for each run, four
//! consumers read all of it, each in a fresh group:
//!
//! - **ceiling**: the same group consumer (a queue per partition, read
//!   by the same number of threads) that only counts records and bytes;
//! - **plain**: the matcher a user would write by hand (rdkafka's
//!   `StreamConsumer`, `serde_json::Value`, the same tables and commands,
//!   at least once; [`crate::bench_plain`]);
//! - **exactly-once** and **at-least-once**: `hashbuy match`'s loop.
//!
//! Each is timed from its first record to its last (the group join before
//! it is not the matcher's speed), and charged the process's CPU time
//! (user + system, all threads) over the whole read; the embedded broker's
//! CPU time over the same read is shown beside it, since on one machine the
//! two share the cores. Medians over the runs are printed, with the ratio
//! to the ceiling of the same run.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_gen::{Generator, Options};
use hashbuy_kafka::client::{Connection, QuietContext, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::driver::{drive, DriveError, DriverContext, Member, Membership, Queue, Stage};
use hashbuy_kafka::health::Health;
use hashbuy_kafka::pool::{PartitionWork, Pool};
use hashbuy_kafka::produce::{send_waiting, Deliveries};
use hashbuy_kafka::reader::nonempty_watermarks;
use hashbuy_matcher::run;
use hashbuy_matcher::Matcher;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Message;

use crate::bench_plain::plain;
use crate::bench_report;
use crate::config::{override_with, DeliveryArg, MatchConfig, ValidateArg};
use crate::replay::key_and_time;

/// Arguments of `hashbuy bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Tweets to generate and read in each run.
    #[arg(long, default_value_t = 100_000)]
    tweets: u64,
    /// Runs of each consumer; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Share of tweets that buy, between 0 and 1.
    #[arg(long, default_value_t = 0.01, value_parser = crate::gen::fraction)]
    purchase_share: f64,
    /// Share of the records that do not buy (tweets and notices) whose
    /// bytes hold a hashtag sign, between 0 and 1, as `hashbuy gen
    /// --hashtag-share` (0 and 1 bound what skipping records without a
    /// sign saves). The default is the share of tweets with a hashtag,
    /// 10.1% of 74 million (January to March 2010), in Suh, Hong, Pirolli
    /// and Chi, "Want to be Retweeted? Large Scale Analytics on Factors
    /// Impacting Retweet in Twitter Network", IEEE SocialCom 2010.
    #[arg(long, default_value_t = hashbuy_gen::DEFAULT_HASHTAG_SHARE, value_parser = crate::gen::fraction)]
    hashtag_share: f64,
    /// Share of the offers in confirm mode, between 0 and 1, as `hashbuy
    /// gen --confirm-share`: their purchases are held pending, prompted,
    /// confirmed or expired, and written to the `pending-purchases`
    /// changelog and the `replies` topic. Each matcher run gets a
    /// changelog of its own (`pending-purchases-<run>-<mode>`), so no run
    /// restores another's pending purchases; that needs the embedded
    /// broker. The plain matcher buys them directly.
    #[arg(long, default_value_t = 0.0, value_parser = crate::gen::fraction)]
    confirm_share: f64,
    /// Partitions of the embedded broker's topics. The embedded broker
    /// keeps at most 5 MB per partition, so this bounds `--tweets`
    /// (about 1,700 generated tweets a partition).
    #[arg(long, default_value_t = 128)]
    partitions: u32,
    /// Use this broker (its `tweets`, `payment-commands` and
    /// `dead-letters` topics must exist) instead of starting an embedded
    /// one. The tweets are produced to it.
    #[arg(long)]
    brokers: Option<String>,
    /// Longest a matcher batch (transaction) collects records, in
    /// milliseconds, as `hashbuy match --batch-ms` [default: as there, 100].
    #[arg(long)]
    batch_ms: Option<u64>,
    /// Most records in a matcher batch, as `hashbuy match
    /// --batch-records` [default: as there, 100000].
    #[arg(long)]
    batch_records: Option<usize>,
    /// How the matcher validates records, as `hashbuy match --validate`
    /// [default: as there, signed].
    #[arg(long, value_enum)]
    validate: Option<ValidateArg>,
    /// Print the results as one JSON document (every run's figures, the
    /// medians, and the machine) instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Threads reading the partitions, in the matcher and the ceiling
    /// alike, as `hashbuy match --workers` [default: the number of CPUs].
    #[arg(long)]
    workers: Option<usize>,
    /// A librdkafka property for every client, as KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = crate::kafka_args::property)]
    properties: Vec<(String, String)>,
}

/// One consumer's figures in one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    /// Records read.
    pub(crate) records: u64,
    /// From the first record read to the last committed.
    pub(crate) busy: Duration,
    /// The process's CPU time over the whole read.
    pub(crate) cpu: Duration,
    /// CPU time of the embedded broker process over the same read.
    pub(crate) broker_cpu: Option<Duration>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_record(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.records.max(1) as f64
    }

    fn broker_us_per_record(&self) -> Option<f64> {
        self.broker_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.records.max(1) as f64)
    }
}

/// Runs `hashbuy bench`.
pub fn run(args: Args) -> Result<()> {
    let modes = ["ceiling", "plain", "exactly-once", "at-least-once"];
    let changelogs: Vec<String> = if args.confirm_share > 0.0 {
        (0..args.runs)
            .flat_map(|run| modes[2..].iter().map(move |mode| pending_topic(run, mode)))
            .collect()
    } else {
        Vec::new()
    };
    let started_broker = match &args.brokers {
        Some(_) if !changelogs.is_empty() => bail!(
            "--confirm-share needs the embedded broker: each matcher run reads and writes a \
             pending-purchases changelog of its own, which hashbuy bench creates only there"
        ),
        Some(_) => None,
        None => Some(BrokerChild::start(args.partitions, &changelogs)?),
    };
    let connection = Connection {
        brokers: match (&args.brokers, &started_broker) {
            (Some(brokers), _) => brokers.clone(),
            (None, Some(broker)) => broker.address.clone(),
            (None, None) => unreachable!("a broker was started"),
        },
        properties: args.properties.clone(),
    };
    let topics = Topics::default();
    let partitions = connection.check_topic(&topics.tweets, CONNECT_TIMEOUT)?;

    let mut generator = Generator::new(Options {
        purchase_share: args.purchase_share,
        hashtag_share: args.hashtag_share,
        confirm_share: args.confirm_share,
        ..Options::default()
    });
    let catalog = Catalog::from_file_text(
        "generated catalog",
        &serde_json::to_string(&generator.catalog()).context("catalog renders")?,
    )?;
    let accounts = Accounts::from_file_text(
        "generated accounts",
        &serde_json::to_string(&generator.accounts()).context("accounts render")?,
    )?;
    let tables = (catalog.clone(), accounts.clone());
    // The generated tables alone: the bench measures deciding against
    // them, as the table topics' changes would not.
    let mut settings = MatchConfig {
        live_tables: false,
        ..MatchConfig::default()
    };
    override_with(&mut settings.batch_ms, args.batch_ms);
    override_with(&mut settings.batch_records, args.batch_records);
    override_with(&mut settings.workers, args.workers);
    override_with(&mut settings.validate, args.validate);
    let matcher = Arc::new(Matcher::new(catalog, accounts).with_validation(settings.validation()?));
    let bytes = produce(&connection, &topics.tweets, &mut generator, args.tweets)?;
    let probe: rdkafka::consumer::BaseConsumer<QuietContext> =
        connection.config().create_with_context(QuietContext)?;
    let stored: u64 = nonempty_watermarks(&probe, &topics.tweets, 0..partitions as i32)?
        .values()
        .map(|(low, high)| u64::try_from(high - low).unwrap_or(0))
        .sum();
    drop(probe);
    if args.brokers.is_none() && stored < args.tweets {
        bail!(
            "the embedded broker kept {stored} of {} tweets (it keeps 5 MB a partition): \
             give more --partitions or fewer --tweets",
            args.tweets
        );
    }
    eprintln!(
        "{} tweets ({:.1} MB, {:.2} KB each) on {} partitions; {} runs",
        args.tweets,
        bytes as f64 / 1e6,
        bytes as f64 / args.tweets as f64 / 1e3,
        partitions,
        args.runs
    );

    let mut results: HashMap<&'static str, Vec<Figures>> = HashMap::new();
    let workers = settings.workers.max(1);
    for run in 0..args.runs {
        for mode in modes {
            let group = format!("hashbuy-bench-{}-{mode}-{run}", std::process::id());
            let broker_before = started_broker.as_ref().and_then(BrokerChild::cpu_time);
            let mut figures = match mode {
                "ceiling" => ceiling(&connection, &group, stored, workers)?,
                "plain" => plain(
                    &connection,
                    &group,
                    (&topics.tweets, &topics.commands),
                    stored,
                    (&tables.0, &tables.1),
                )?,
                _ => {
                    let topics = Topics {
                        pending: pending_topic(run, mode),
                        ..Topics::default()
                    };
                    let config = MatchConfig {
                        group: group.clone(),
                        ..settings.clone()
                    };
                    matcher_run(&connection, config, topics, mode, Arc::clone(&matcher))?
                }
            };
            figures.broker_cpu = started_broker
                .as_ref()
                .and_then(BrokerChild::cpu_time)
                .zip(broker_before)
                .map(|(after, before)| after.saturating_sub(before));
            eprintln!(
                "run {}: {mode:>13}: {} records in {:.2} s, {:.0}/s, {:.2} µs CPU each{}",
                run + 1,
                figures.records,
                figures.busy.as_secs_f64(),
                figures.per_second(),
                figures.cpu_us_per_record(),
                figures
                    .broker_us_per_record()
                    .map(|us| format!(" (broker: {us:.2} µs)"))
                    .unwrap_or_default()
            );
            results.entry(mode).or_default().push(figures);
        }
    }

    let ceiling_rates: Vec<f64> = results["ceiling"].iter().map(Figures::per_second).collect();
    let consumers: serde_json::Map<String, serde_json::Value> = modes
        .iter()
        .map(|mode| {
            let figures = &results[mode];
            let ratios: Vec<f64> = figures
                .iter()
                .zip(&ceiling_rates)
                .map(|(f, ceiling)| f.per_second() / ceiling)
                .collect();
            (mode.to_string(), consumer_json(figures, &ratios))
        })
        .collect();
    let document = serde_json::json!({
        "bench": "matcher",
        "machine": machine(),
        "tweets": stored,
        "partitions": partitions,
        "workers": workers,
        "batch_ms": settings.batch_ms,
        "batch_records": settings.batch_records,
        "validate": settings.validate,
        "purchase_share": args.purchase_share,
        "hashtag_share": args.hashtag_share,
        "confirm_share": args.confirm_share,
        "runs": args.runs,
        "consumers": consumers,
    });
    if args.json {
        println!("{document:#}");
    } else {
        print!("{}", bench_report::render(&document)?);
    }
    drop(started_broker);
    Ok(())
}

/// One consumer's runs and medians, for `--json`; `of_ceiling` is each
/// run's ratio to the same run's ceiling.
fn consumer_json(figures: &[Figures], of_ceiling: &[f64]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = figures
        .iter()
        .zip(of_ceiling)
        .map(|(f, ratio)| {
            serde_json::json!({
                "records": f.records,
                "busy_s": f.busy.as_secs_f64(),
                "per_second": f.per_second(),
                "of_ceiling": ratio,
                "cpu_us_per_record": f.cpu_us_per_record(),
                "broker_cpu_us_per_record": f.broker_us_per_record(),
            })
        })
        .collect();
    let rates: Vec<f64> = figures.iter().map(Figures::per_second).collect();
    let cpu: Vec<f64> = figures.iter().map(Figures::cpu_us_per_record).collect();
    serde_json::json!({
        "runs": runs,
        "median": {
            "per_second": median(&rates),
            "of_ceiling": median(of_ceiling),
            "cpu_us_per_record": median(&cpu),
        },
    })
}

/// What a result was measured on: CPUs and their model (from
/// `/proc/cpuinfo` where there is one), the OS and the architecture.
pub(crate) fn machine() -> serde_json::Value {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "cpu_model": model,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Produces `tweets` generated tweets to `tweets`, keyed by user id as
/// `hashbuy replay` does; returns their bytes.
fn produce(
    connection: &Connection,
    topic: &str,
    generator: &mut Generator,
    tweets: u64,
) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = connection
        .config_with(&[("linger.ms", "20".to_owned())])
        .create_with_context(Deliveries::default())?;
    let progress = ProgressBar::new(tweets).with_style(
        ProgressStyle::with_template("producing {bar:40} {human_pos}/{human_len}, ETA {eta}")
            .context("progress template")?,
    );
    let mut line = Vec::new();
    let mut bytes = 0;
    for n in 0..tweets {
        line.clear();
        generator.write_next(&mut line);
        let (key, _) = key_and_time(&line);
        send_waiting(
            &producer,
            topic,
            key.as_deref().map(str::as_bytes),
            &line,
            || false,
        )?;
        bytes += line.len() as u64;
        if n % 1024 == 0 {
            progress.set_position(n);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("the tweets were not delivered within 120 s")?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} tweets were not delivered: {first}");
    }
    progress.finish_and_clear();
    Ok(bytes)
}

/// The matcher's loop in one delivery mode, to the end of the topic.
fn matcher_run(
    connection: &Connection,
    settings: MatchConfig,
    topics: Topics,
    mode: &str,
    matcher: Arc<Matcher>,
) -> Result<Figures> {
    let config = MatchConfig {
        delivery: if mode == "exactly-once" {
            DeliveryArg::ExactlyOnce
        } else {
            DeliveryArg::AtLeastOnce
        },
        ..settings
    }
    .run_config(connection.clone(), topics, true);
    let stop = AtomicBool::new(false);
    let cpu = cpu_time();
    let summary = run::run(matcher, &config, &stop, &Health::default())
        .with_context(|| format!("the {mode} matcher stopped"))?;
    Ok(Figures {
        records: summary.records,
        busy: summary.busy,
        cpu: cpu_time().saturating_sub(cpu),
        broker_cpu: None,
    })
}

/// The pending-purchases changelog of one matcher run (`--confirm-share`).
fn pending_topic(run: u32, mode: &str) -> String {
    format!("{}-{run}-{mode}", Topics::default().pending)
}

/// Reads `expected` records in a fresh group, counting bytes only: the
/// matcher's consumer (the same group driver and pool) with no work.
fn ceiling(connection: &Connection, group: &str, expected: u64, workers: usize) -> Result<Figures> {
    let membership = Membership {
        connection: connection.clone(),
        group: group.to_owned(),
        instance: "0".to_owned(),
        input: Topics::default().tweets,
        outputs: Vec::new(),
        exit_at_end: false,
        settings: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Counter {
        counts: Arc::default(),
        pool: Pool::new(workers, "count").context("cannot start the ceiling's threads")?,
        expected,
        deadline: Instant::now() + Duration::from_secs(600),
        stop: Arc::clone(&stop),
        cpu: cpu_time(),
    };
    let figures = drive(&membership, counter, &stop, &Health::default()).map_err(|e| match e {
        DriveError::Connect(e) => anyhow::Error::from(e),
        DriveError::Stage(e) => e,
    })?;
    if figures.records < expected {
        bail!(
            "the ceiling consumer stopped after {} records",
            figures.records
        );
    }
    Ok(figures)
}

/// What the ceiling consumer read.
#[derive(Default)]
struct Counts {
    records: AtomicU64,
    bytes: AtomicU64,
    first: OnceLock<Instant>,
}

/// The ceiling consumer's stage: its partitions' records counted on a
/// pool, until `expected` are.
struct Counter {
    counts: Arc<Counts>,
    pool: Pool<DriverContext<Counter>, Count>,
    expected: u64,
    deadline: Instant,
    /// Raised once every record is counted.
    stop: Arc<AtomicBool>,
    /// The process's CPU time when the ceiling started.
    cpu: Duration,
}

impl Counter {
    fn stop_all(&self) {
        let mut stopping = self.pool.stop(None);
        while let Ok(false) = stopping.finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Stage for Counter {
    type Error = anyhow::Error;
    type Output = Figures;

    fn assigned(&mut self, _: &Arc<Member<Self>>, queues: Vec<(i32, Queue<Self>)>) {
        for (partition, queue) in queues {
            self.pool
                .add(partition, queue, Count(Arc::clone(&self.counts)));
        }
    }

    fn revoking(&mut self, _: &Member<Self>, partitions: &[i32]) {
        let mut stopping = self.pool.stop(Some(partitions));
        while let Ok(false) = stopping.finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn tick(&mut self, _: &Arc<Member<Self>>, _: &Health) -> Result<()> {
        if self.counts.records.load(Ordering::Relaxed) >= self.expected {
            self.stop.store(true, Ordering::Relaxed);
        } else if Instant::now() > self.deadline {
            bail!("the ceiling consumer did not read the topic within 600 s");
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn at_eof(&self) -> HashSet<i32> {
        HashSet::new()
    }

    fn finish(&mut self, _: &Member<Self>, _failed: bool) -> Result<Figures> {
        let busy = self
            .counts
            .first
            .get()
            .map_or(Duration::ZERO, Instant::elapsed);
        let cpu = cpu_time().saturating_sub(self.cpu);
        self.stop_all();
        if self.counts.bytes.load(Ordering::Relaxed) == 0 {
            bail!("the ceiling consumer read no bytes");
        }
        Ok(Figures {
            records: self.counts.records.load(Ordering::Relaxed),
            busy,
            cpu,
            broker_cpu: None,
        })
    }
}

/// One partition's share of the counting.
struct Count(Arc<Counts>);

impl PartitionWork for Count {
    fn message(&mut self, message: KafkaResult<BorrowedMessage<'_>>) {
        if let Ok(message) = message {
            self.0.first.get_or_init(Instant::now);
            let size = message.payload().map_or(0, <[u8]>::len);
            self.0.bytes.fetch_add(size as u64, Ordering::Relaxed);
            self.0.records.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pause(&mut self) {}
}

/// CPU time of this process so far, all threads, user and system.
/// This process's peak resident set so far, in bytes (Linux counts
/// `ru_maxrss` in KiB); 0 if unknown.
pub(crate) fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A `hashbuy broker` child process, stopped when dropped.
pub(crate) struct BrokerChild {
    child: Child,
    pub(crate) address: String,
}

impl BrokerChild {
    /// Starts `hashbuy broker` with hashbuy's topics and `extra` ones.
    pub(crate) fn start(partitions: u32, extra: &[String]) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port")?
            .port();
        let exe = std::env::current_exe().context("cannot find the hashbuy binary")?;
        let child = Command::new(exe)
            .args(["broker", "--port", &port.to_string()])
            .args(["--partitions", &partitions.to_string()])
            .arg("--topics")
            .arg(
                Topics::default()
                    .all()
                    .into_iter()
                    .chain(extra.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the embedded broker")?;
        let broker = BrokerChild {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the embedded broker did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }
}

impl BrokerChild {
    /// The broker process's CPU time so far, user and system, from
    /// `/proc` (Linux).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        stat_cpu_time(&format!("/proc/{}/stat", self.child.id()))
    }
}

/// The CPU time (user and system) in a `/proc` `stat` file, of a process
/// or of one thread (Linux).
fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesized command name; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// The CPU time of this process's live threads named `name` (Linux; zero
/// elsewhere).
pub(crate) fn threads_cpu_time(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|task| stat_cpu_time(&task.path().join("stat").display().to_string()))
        .sum()
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
