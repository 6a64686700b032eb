//! `hashbuy bench-settle`: the settler's throughput with a durable ledger
//! against a provider that takes `--latency-ms` a call, next to settling
//! one command at a time.
//!
//! The embedded broker runs as a child process; paysim runs in this process
//! on a thread of its own, whose CPU time is shown apart from the
//! settler's (all three share the machine's cores). The
//! commands (one a user and offer, so no limit rejects them) are produced
//! first; then `hashbuy settle`'s loop reads them in a fresh group with a
//! fresh ledger, timed from the first command read to the last ack
//! delivered. The baseline settles `--baseline` commands strictly one after
//! another with the same ledger and provider client: entry, flush, charge,
//! outcome, flush — what a settler without concurrency or group commit
//! does.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_kafka::client::{Connection, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::health::Health;
use hashbuy_kafka::produce::{flush_promptly, send_to_partition_waiting, send_waiting, Deliveries};
use hashbuy_proto::v1::{Offer, PaymentCommand};
use hashbuy_provider::{Backoff, Provider, ProviderConfig, SecretString};
use hashbuy_settler::entry::{first_key, now_ms, Entry};
use hashbuy_settler::horizon::DEFAULT_MAX_COMMAND_AGE;
use hashbuy_settler::ledger::Ledger;
use hashbuy_settler::payments::Payments;
use hashbuy_settler::run;
use hashbuy_settler::steps::{self, Policy, Step};
use prost::Message as _;
use rdkafka::producer::{BaseProducer, Producer};

use crate::bench::{cpu_time, machine, median, peak_rss_bytes, threads_cpu_time, BrokerChild};
use crate::config::{override_with, LedgerEncodingArg, SettleConfig, RECORDINGS_MAX_COMMAND_AGE};
use crate::paysim::{self, InProcess};
use crate::tables_cmd::put_offers;

/// Arguments of `hashbuy bench-settle`.
#[derive(clap::Args)]
pub struct Args {
    /// Commands the settler settles.
    #[arg(long, default_value_t = 20_000)]
    commands: u64,
    /// Median latency of every provider call, in milliseconds (jittered
    /// as paysim does).
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Use this broker (hashbuy's topics must exist, `hashbuy topics
    /// create`, and hold no commands yet) instead of starting an embedded
    /// one: for runs larger than the embedded broker keeps (5 MB a
    /// partition), such as a million commands on tansu.
    #[arg(long)]
    brokers: Option<String>,
    /// A librdkafka property for every client, the settlers it starts
    /// included, as KEY=VALUE (repeatable): for a broker that needs one,
    /// such as a larger `receive.message.max.bytes`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = crate::kafka_args::property)]
    properties: Vec<(String, String)>,
    /// Partitions of the embedded broker's topics.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Most commands in flight per partition, as `hashbuy settle
    /// --max-in-flight` [default: as there, 256].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// How the ledger writes entries, as `hashbuy settle
    /// --ledger-encoding` (to compare their bytes on disk) [default: as
    /// there, protobuf].
    #[arg(long, value_enum)]
    ledger_encoding: Option<LedgerEncodingArg>,
    /// Print the results as one JSON document (with the machine) instead
    /// of a Markdown table.
    #[arg(long)]
    json: bool,
    /// After the restart and restore, age the history past the horizon
    /// and measure them again: one fresh command a partition, then a
    /// settler with the default `--max-command-age` prunes every entry
    /// before, and a restart and a new owner's restore follow. A broker
    /// that compacts the changelog drops the pruned entries' records;
    /// this long is given it to do so before the restore, while the bench
    /// writes each partition's floor anew every second, in place of the
    /// records a running settler writes (a broker compacts a segment only
    /// once it is closed and dirty enough, and closes one only on a write:
    /// see its `segment.ms` and `min.cleanable.dirty.ratio`).
    #[arg(long, value_name = "SECONDS")]
    age_past_horizon: Option<u64>,
    /// The bench's commands buy an offer that ended an hour after their
    /// tweets (a campaign over), so that `--age-past-horizon`'s pass
    /// forgets their buyers' counts with their entries. Without it the
    /// offer has no end, and every buyer's count is kept for good (what
    /// `max_per_user` needs; each command is its own buyer, the worst
    /// case). The ended offer is put on the live catalog topic (which must
    /// then exist), and the bench's settlers follow it
    /// (`--forget-ended-offers`).
    #[arg(long)]
    offer_ended: bool,
    /// Commands the one-at-a-time baseline settles.
    #[arg(long, default_value_t = 100)]
    baseline: u64,
}

/// The name of paysim's threads, whose CPU time is told apart.
const PAYSIM_THREAD: &str = "paysim";

/// The provider key the bench uses with its own paysim.
const KEY: &str = "sk_test_hashbuy_bench";

/// The bench's commands: each of its own user, all with Stripe's
/// succeeding test card.
fn command(i: u64, prefix: &str) -> PaymentCommand {
    PaymentCommand {
        command_id: format!("{prefix}-{i}"),
        tweet_id: i.to_string(),
        user_id: format!("{}", 10_000_000 + i),
        tweet_timestamp_ms: 1_780_000_000_000,
        hashtag: "BuyBench".into(),
        offer_id: "bench-offer".into(),
        merchant_id: "bench".into(),
        amount: 1_000,
        currency: "usd".into(),
        customer_id: format!("cus_bench{i}"),
        payment_method_id: "pm_card_visa".into(),
        max_per_user: 1,
        spend_limit: None,
        offer_title: String::new(),
        stock: 0,
        reserved: false,
        sold_out: false,
        stock_partition: None,
        offer_ends_at_ms: None,
    }
}

/// The offers `--offer-ended` puts on the live catalog, which the bench's
/// settlers then follow (`--forget-ended-offers`): the one the bench's
/// commands buy, ended an hour after their tweets (as they say), and the
/// one of the fresh commands of `--age-past-horizon`.
fn bench_offers() -> Vec<Offer> {
    let offer = |hashtag: &str, offer_id: &str| Offer {
        hashtag: hashtag.into(),
        offer_id: offer_id.into(),
        merchant_id: "bench".into(),
        amount: 1_000,
        currency: "usd".into(),
        max_per_user: 1,
        ..Offer::default()
    };
    let bought = command(0, "bench");
    vec![
        Offer {
            ends_at_ms: Some(bought.tweet_timestamp_ms + OFFER_LASTS_MS),
            ..offer(&bought.hashtag, &bought.offer_id)
        },
        offer("BuyBenchFresh", "bench-fresh-offer"),
    ]
}

/// How long after its tweets the offer of `--offer-ended` ended.
const OFFER_LASTS_MS: i64 = 3_600_000;

/// Runs `hashbuy bench-settle`.
pub fn run(args: Args) -> Result<()> {
    let broker = match &args.brokers {
        Some(_) => None,
        None => Some(BrokerChild::start(args.partitions, &[])?),
    };
    let connection = Connection {
        brokers: match (&args.brokers, &broker) {
            (Some(brokers), _) => brokers.clone(),
            (None, Some(broker)) => broker.address.clone(),
            (None, None) => bail!("no broker"),
        },
        properties: args.properties.clone(),
    };
    let topics = Topics::default();
    let partitions = connection.check_topic(&topics.commands, CONNECT_TIMEOUT)?;
    // paysim stands in for a provider on other machines: one thread of
    // its own. With two workers beside the settler's two, on two cores,
    // the threads spent a tenth of the CPU switching (measured: 4,700
    // settlements/s against 5,100).
    let InProcess { runtime, url, .. } = paysim::in_process(args.latency_ms, PAYSIM_THREAD)?;
    let provider = || -> Result<Provider> {
        let mut config = ProviderConfig::new(SecretString::from(KEY.to_owned()));
        config.base_url = url.clone();
        Ok(Provider::new(config)?)
    };

    // On the live catalog a day before the bench's tweets, as a matcher
    // would have had them.
    if args.offer_ended {
        put_offers(
            &connection,
            &topics.catalog,
            command(0, "bench").tweet_timestamp_ms - 86_400_000,
            bench_offers(),
        )
        .context("cannot put the bench's offers on the live catalog")?;
    }
    eprintln!(
        "producing {} commands to {partitions} partitions ...",
        args.commands
    );
    let producer: BaseProducer<Deliveries> = connection
        .config_with(&[("linger.ms", "5".to_owned())])
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    for i in 0..args.commands {
        let mut command = command(i, "bench");
        if args.offer_ended {
            command.offer_ends_at_ms = Some(command.tweet_timestamp_ms + OFFER_LASTS_MS);
        }
        send_waiting(
            &producer,
            &topics.commands,
            Some(command.user_id.as_bytes()),
            &command.encode_to_vec(),
            || false,
        )?;
    }
    flush_promptly(&producer, Duration::from_secs(60))?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} commands were not delivered: {first}");
    }

    let dir = tempfile::tempdir().context("no temporary directory")?;
    let mut settings = SettleConfig {
        group: format!("hashbuy-bench-settle-{}", std::process::id()),
        max_command_age: RECORDINGS_MAX_COMMAND_AGE,
        ..SettleConfig::default()
    };
    override_with(&mut settings.max_in_flight, args.max_in_flight);
    override_with(&mut settings.ledger_encoding, args.ledger_encoding);
    settings.forget_ended_offers = args.offer_ended;
    let config = settings.run_config(
        connection.clone(),
        topics.clone(),
        dir.path().join("ledger"),
        true,
    );
    eprintln!("settling them ...");
    let cpu = cpu_time();
    let paysim_cpu = threads_cpu_time(PAYSIM_THREAD);
    let broker_before = broker.as_ref().and_then(BrokerChild::cpu_time);
    let summary = run::run(
        &config,
        Payments::new(provider()?, Backoff::default()),
        &AtomicBool::new(false),
        &Health::default(),
    )
    .context("the settler stopped")?;
    let cpu = cpu_time().saturating_sub(cpu);
    let paysim_cpu = threads_cpu_time(PAYSIM_THREAD).saturating_sub(paysim_cpu);
    let settler_cpu = cpu.saturating_sub(paysim_cpu);
    let broker_cpu = broker
        .as_ref()
        .and_then(BrokerChild::cpu_time)
        .zip(broker_before)
        .map(|(after, before)| after.saturating_sub(before));
    if summary.settled != args.commands {
        bail!(
            "the settler settled {} of {} commands: {summary:?}",
            summary.settled,
            args.commands
        );
    }
    let rate = summary.settled as f64 / summary.busy.as_secs_f64().max(1e-9);

    let peak_rss = peak_rss_bytes();
    eprintln!("restarting the settler on its ledger, with nothing to do ...");
    let restart =
        settle_child(&config, &url, &config.ledger_dir).context("the restarted settler")?;
    eprintln!("a settler with an empty ledger restoring it from the changelog ...");
    let restore = settle_child(&config, &url, &dir.path().join("ledger-restored"))
        .context("the restoring settler")?;
    let ledger = ledger_figures(&config.ledger_dir, summary.settled)?;
    let aged = match args.age_past_horizon {
        Some(wait) => Some(age_past_horizon(
            &config,
            &url,
            &producer,
            (dir.path(), i32::try_from(partitions)?, args.commands),
            Duration::from_secs(wait),
        )?),
        None => None,
    };

    eprintln!("settling {} one at a time ...", args.baseline);
    let baseline = runtime.block_on(one_at_a_time(
        &provider()?,
        &Ledger::open(&dir.path().join("baseline"))?,
        args.baseline,
        &config.policy,
    ))?;

    let per = |d: Duration| d.as_secs_f64() * 1e6 / summary.settled.max(1) as f64;
    let document = serde_json::json!({
        "bench": "settler",
        "machine": machine(),
        "commands": summary.settled,
        "partitions": partitions,
        "max_in_flight": config.max_in_flight,
        "latency_ms": args.latency_ms,
        "settler": {
            "per_second": rate,
            "busy_s": summary.busy.as_secs_f64(),
            "settler_cpu_us_per_settlement": per(settler_cpu),
            "paysim_cpu_us_per_settlement": per(paysim_cpu),
            "broker_cpu_us_per_settlement": broker_cpu.map(per),
            "vs_one_at_a_time": rate / baseline.max(1e-9),
        },
        "one_at_a_time": { "commands": args.baseline, "per_second": baseline },
        "ledger": {
            "encoding": format!("{:?}", config.ledger_encoding).to_lowercase(),
            "bytes_on_disk": ledger.bytes,
            "bytes_per_entry": ledger.bytes as f64 / summary.settled.max(1) as f64,
            "live_bytes_per_entry": ledger.live as f64 / summary.settled.max(1) as f64,
            "space_amplification": ledger.bytes as f64 / ledger.live.max(1) as f64,
            "restart_s": restart.took.as_secs_f64(),
            "restart_ledgers_ready_s": restart.ready,
            "restart_peak_rss_bytes": restart.peak_rss,
            "restore_s": restore.took.as_secs_f64(),
            "restore_ledgers_ready_s": restore.ready,
            "restore_peak_rss_bytes": restore.peak_rss,
            "bench_process_peak_rss_bytes": peak_rss,
            "open_entries_by_index_ms": ledger.by_index.as_secs_f64() * 1e3,
            "open_entries_by_scan_ms": ledger.by_scan.as_secs_f64() * 1e3,
            "restart_changelog_read": restart.changelog_read,
            "restore_changelog_read": restore.changelog_read,
        },
        "aged_past_horizon": aged.map(|aged| serde_json::json!({
            "pruned": aged.pruning.pruned,
            "pruning_s": aged.pruning.took.as_secs_f64(),
            "offer_ended": args.offer_ended,
            "entries_left": aged.entries,
            "counts_left": aged.counts,
            "bytes_on_disk": aged.bytes,
            "compaction_wait_s": aged.waited.as_secs_f64(),
            "restart_s": aged.restart.took.as_secs_f64(),
            "restart_ledgers_ready_s": aged.restart.ready,
            "restart_peak_rss_bytes": aged.restart.peak_rss,
            "restart_changelog_read": aged.restart.changelog_read,
            "restore_s": aged.restore.took.as_secs_f64(),
            "restore_ledgers_ready_s": aged.restore.ready,
            "restore_peak_rss_bytes": aged.restore.peak_rss,
            "restore_changelog_read": aged.restore.changelog_read,
        })),
    });
    if args.json {
        println!("{document:#}");
    } else {
        print!("{}", crate::bench_report::render(&document)?);
    }
    Ok(())
}

/// A run of `hashbuy settle` as a process of its own.
struct ChildRun {
    /// From its start to its exit.
    took: Duration,
    /// Its peak resident memory, apart from the bench's (paysim's) and the
    /// broker's.
    peak_rss: u64,
    /// How long its partitions' ledgers took to be ready once assigned
    /// (the group join excluded), as its last line says.
    ready: Option<f64>,
    /// Changelog records its restores read, as its log says.
    changelog_read: u64,
    /// Ledger entries its pruning passes deleted, as its log says.
    pruned: u64,
}

/// A log line's `name=N` field, 0 where it has none.
fn field(line: &str, name: &str) -> u64 {
    line.split_once(&format!(" {name}="))
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `hashbuy settle --exit-at-end` as a child process, as `config`
/// has it (broker, group, encoding, in flight, horizon, ended offers) but on `ledger`,
/// against the bench's paysim at `url`, and waits for it to end.
fn settle_child(config: &run::Config, url: &str, ledger: &std::path::Path) -> Result<ChildRun> {
    let exe = std::env::current_exe().context("cannot find the hashbuy binary")?;
    let encoding = format!("{:?}", config.ledger_encoding).to_lowercase();
    let began = Instant::now();
    let mut child = std::process::Command::new(exe)
        .args([
            "settle",
            "--exit-at-end",
            "--brokers",
            &config.connection.brokers,
        ])
        .args(["--group", &config.group, "--instance", &config.instance])
        .args(["--provider-url", url, "--ledger-encoding", &encoding])
        .args(["--max-in-flight", &config.max_in_flight.to_string()])
        .arg("--max-command-age")
        .arg(humantime::format_duration(config.max_command_age).to_string())
        .args(
            config
                .connection
                .properties
                .iter()
                .flat_map(|(key, value)| ["-X".to_owned(), format!("{key}={value}")]),
        )
        .arg("--ledger")
        .arg(ledger)
        .args(
            config
                .forget_ended_offers
                .then_some("--forget-ended-offers"),
        )
        .env("HASHBUY_PROVIDER_KEY", KEY)
        .env_remove("STRIPE_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start hashbuy settle")?;
    // Its log passed on as it comes, and its last line read.
    let log = child.stderr.take().context("no stderr of hashbuy settle")?;
    let read = std::thread::spawn(move || {
        let (mut ready, mut changelog_read, mut pruned) = (None, 0, 0);
        for line in std::io::BufRead::lines(std::io::BufReader::new(log)).map_while(Result::ok) {
            eprintln!("{line}");
            if let Some((_, after)) = line.split_once("ledgers ready ") {
                ready = after.split(' ').next().and_then(|s| s.parse().ok());
            }
            changelog_read += field(&line, "changelog_read");
            pruned += field(&line, "pruned");
        }
        (ready, changelog_read, pruned)
    });
    let (status, peak_rss) = wait_with_peak_rss(child)?;
    let took = began.elapsed();
    let (ready, changelog_read, pruned) = read.join().unwrap_or_default();
    if !status.success() {
        bail!("hashbuy settle ended with {status}");
    }
    Ok(ChildRun {
        took,
        peak_rss,
        ready,
        changelog_read,
        pruned,
    })
}

/// Waits for `child` to end: how it ended, and its peak resident memory,
/// read from its `VmHWM` (Linux) as it runs. Not `wait4`'s: a child
/// started by fork or vfork counts the parent's resident memory at the
/// start as its own peak (Linux records it at exec), and the bench holds
/// paysim's intents.
fn wait_with_peak_rss(mut child: std::process::Child) -> Result<(std::process::ExitStatus, u64)> {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // Gone once it has exited: the last read is its peak, to within a
        // poll's growth.
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait().context("cannot wait for hashbuy settle")? {
            return Ok((status, peak));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What aging the bench's history past the horizon did, and the restart
/// and restore after it (`--age-past-horizon`).
struct Aged {
    /// The settler that settled the fresh commands and pruned the rest.
    pruning: ChildRun,
    /// The entries its ledger kept.
    entries: u64,
    /// The counts its ledger kept for `max_per_user`.
    counts: u64,
    /// sled's count of the ledger's bytes after pruning.
    bytes: u64,
    /// How long the broker was given to compact the changelog.
    waited: Duration,
    /// A restart on the pruned ledger, with nothing to do.
    restart: ChildRun,
    /// A new owner's restore into an empty ledger.
    restore: ChildRun,
}

/// Ages the bench's history past the horizon: a fresh command (tweeted
/// now) to each of the `partitions`, a settler under the default
/// horizon that settles them and prunes every entry before, a restart,
/// `wait` for the broker to compact the changelog, then a new owner's
/// restore (into a ledger under `dir`). `base` numbers the fresh
/// commands' users apart from the bench's.
fn age_past_horizon(
    config: &run::Config,
    url: &str,
    producer: &BaseProducer<Deliveries>,
    (dir, partitions, base): (&std::path::Path, i32, u64),
    wait: Duration,
) -> Result<Aged> {
    eprintln!(
        "aging the history past the horizon: a fresh command a partition, and a settler \
         under the default --max-command-age that prunes the rest ..."
    );
    let now = now_ms();
    for partition in 0..partitions {
        let mut fresh = command(base + u64::try_from(partition)?, "fresh");
        fresh.tweet_timestamp_ms = now;
        // An offer of today: one of the bench's offer bought now would say
        // it is on sale, and keep its counts.
        fresh.offer_id = "bench-fresh-offer".into();
        fresh.hashtag = "BuyBenchFresh".into();
        send_to_partition_waiting(
            producer,
            &config.topics.commands,
            Some(partition),
            Some(fresh.user_id.as_bytes()),
            &fresh.encode_to_vec(),
            || false,
        )?;
    }
    flush_promptly(producer, Duration::from_secs(60))?;
    let aged = run::Config {
        max_command_age: DEFAULT_MAX_COMMAND_AGE,
        ..config.clone()
    };
    let pruning = settle_child(&aged, url, &config.ledger_dir).context("the pruning settler")?;
    let (entries, counts, bytes) = {
        let ledger = Ledger::open(&config.ledger_dir)?;
        let (mut entries, mut counts) = (0, 0);
        for partition in ledger.partitions() {
            let partition = ledger.partition(partition)?;
            entries += partition.len() as u64;
            counts += partition.counts()? as u64;
        }
        (entries, counts, ledger.size_on_disk()?)
    };
    eprintln!(
        "{} entries pruned, {entries} kept, and {counts} counts; restarting the settler on its \
         pruned ledger ...",
        pruning.pruned,
    );
    // Restarted before the bench writes to the changelog: those records are
    // not the settler's own, and a restart reads what lies past its mark.
    let restart = settle_child(&aged, url, &config.ledger_dir).context("the restarted settler")?;
    eprintln!(
        "giving the broker {} s to compact the changelog ...",
        wait.as_secs()
    );
    keep_the_changelog_written(config, producer, wait)?;
    eprintln!("a settler with an empty ledger restoring the pruned one from the changelog ...");
    let restore =
        settle_child(&aged, url, &dir.join("ledger-aged")).context("the restoring settler")?;
    Ok(Aged {
        pruning,
        entries,
        counts,
        bytes,
        waited: wait,
        restart,
        restore,
    })
}

/// How often [`keep_the_changelog_written`] writes each partition's floor.
const FLOORS_EVERY: Duration = Duration::from_secs(1);

/// Waits `wait` for the broker to compact the ledger changelog, writing
/// each partition's floor as it stands (read from the stopped settler's
/// ledger) every [`FLOORS_EVERY`], in place of the records a running
/// settler writes for every command: a broker compacts only a segment it
/// has closed, and closes one only when a record is written to its
/// partition after `segment.ms`. A changelog left idle for the wait would
/// keep every pruned record in an open segment.
fn keep_the_changelog_written(
    config: &run::Config,
    producer: &BaseProducer<Deliveries>,
    wait: Duration,
) -> Result<()> {
    let ledger = Ledger::open(&config.ledger_dir)?;
    let partitions = ledger
        .partitions()
        .into_iter()
        .map(|p| ledger.partition(p))
        .collect::<Result<Vec<_>, _>>()?;
    let began = Instant::now();
    loop {
        let left = wait.saturating_sub(began.elapsed());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(FLOORS_EVERY));
        for partition in &partitions {
            if let Some((key, value)) = partition.floor_record()? {
                send_to_partition_waiting(
                    producer,
                    &config.topics.ledger,
                    Some(partition.partition()),
                    Some(&key),
                    &value,
                    || false,
                )?;
            }
        }
        flush_promptly(producer, Duration::from_secs(60))?;
        if let Some((count, first)) = producer.context().failures() {
            bail!("{count} floors were not written to the ledger changelog: {first}");
        }
    }
}

/// What the ledger of a settled run holds, and what reading it at a start
/// costs.
struct LedgerFigures {
    /// sled's own count of its files' bytes.
    bytes: u64,
    /// The bytes of the keys and values held, in every tree.
    live: u64,
    /// The median time to read every partition's entries with work left
    /// through the open index (what a partition's start reads).
    by_index: Duration,
    /// The same found by reading every entry (what a start read before the
    /// index), in the same sitting.
    by_scan: Duration,
}

/// Measures the ledger in `dir` (of a stopped settler): three reads each
/// way, alternating, medians.
fn ledger_figures(dir: &std::path::Path, settled: u64) -> Result<LedgerFigures> {
    let ledger = Ledger::open(dir)?;
    let partitions = ledger
        .partitions()
        .into_iter()
        .map(|p| ledger.partition(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut by_index, mut by_scan) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let began = Instant::now();
        let mut open = 0;
        for partition in &partitions {
            open += partition.unfinished()?.len();
        }
        by_index.push(began.elapsed().as_secs_f64());
        let began = Instant::now();
        let mut scanned = 0u64;
        for partition in &partitions {
            for entry in partition.entries() {
                let entry = entry?;
                scanned += 1;
                if entry.state.is_terminal() && entry.acked_ms.is_some() {
                    continue;
                }
                open -= 1;
            }
        }
        by_scan.push(began.elapsed().as_secs_f64());
        if open != 0 || scanned != settled {
            bail!("the ledger's open index and its entries disagree ({open} apart, {scanned} entries)");
        }
    }
    Ok(LedgerFigures {
        bytes: ledger.size_on_disk()?,
        live: ledger.live_bytes()?,
        by_index: Duration::from_secs_f64(median(&by_index)),
        by_scan: Duration::from_secs_f64(median(&by_scan)),
    })
}

/// Settles `count` commands strictly one after another, each change
/// flushed on its own; settlements per second.
async fn one_at_a_time(
    provider: &Provider,
    ledger: &Ledger,
    count: u64,
    policy: &Policy,
) -> Result<f64> {
    let payments = Payments::new(provider.clone(), Backoff::default());
    let tree = ledger.partition(0)?;
    let started = Instant::now();
    for i in 0..count {
        let mut entry = Entry::received(command(i, "baseline"), 0, i as i64, now_ms());
        tree.put(&entry)?;
        ledger.flush()?;
        entry.attempt(first_key(entry.command_id()), now_ms())?;
        tree.put(&entry)?;
        ledger.flush()?;
        let reply = payments
            .charge(
                &entry.command,
                entry.destination.as_ref(),
                &first_key(entry.command_id()),
                1,
                || true,
            )
            .await?
            .context("the baseline's charge was not sent")?;
        match steps::after_reply(&entry, reply, now_ms(), policy) {
            Step::Decide(outcome) => entry.decide(outcome, now_ms())?,
            other => bail!("the baseline's charge did not decide: {other:?}"),
        }
        tree.put(&entry)?;
        ledger.flush()?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
