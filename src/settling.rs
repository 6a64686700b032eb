//! `hashbuy settle`: payment commands in, charges through the payment
//! provider, payment acks out (see `hashbuy_settler::run`). Settings come
//! from flags, `HASHBUY_…` variables and the config file's `[kafka]` and
//! `[settle]` tables, in that order; the provider key only from the
//! environment or a key file.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hashbuy_core::tables::Merchants;
use hashbuy_kafka::health::Health;
use hashbuy_provider::{Backoff, Provider, ProviderConfig, ProviderError, SecretString};
use hashbuy_settler::compact;
use hashbuy_settler::payments::Payments;
use hashbuy_settler::run;

use crate::config::{override_with, LedgerEncodingArg, OnDataLossArg};
use crate::inspect::load_merchants;
use crate::kafka_args::{self, KafkaArgs};
use crate::telemetry;

/// Arguments of `hashbuy settle`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The ledger's directory (created if missing) [config: settle.ledger].
    #[arg(long, env = "HASHBUY_LEDGER")]
    ledger: Option<PathBuf>,
    /// Merchants table file (TOML or JSON): merchant id → Stripe connected
    /// account and platform fee. With it, each charge is a Stripe Connect
    /// destination charge to its merchant's account, and a command for a
    /// merchant not in it is rejected; without it, every charge goes to the
    /// platform's own account [config: settle.merchants].
    #[arg(long, env = "HASHBUY_MERCHANTS")]
    merchants: Option<PathBuf>,
    /// Charge through Stripe Connect with the merchants of the live
    /// `merchants` topic, with or without --merchants (which implies it)
    /// [config: settle.connect].
    #[arg(long)]
    connect: bool,
    /// Follow the live `catalog` topic (which must exist), and forget the
    /// `max_per_user` counts of an offer once the live catalog and its
    /// purchases say it ended more than --max-command-age and a day ago,
    /// so that the ledger does not keep a count for every purchase ever
    /// made. Only offers put through the live catalog (`hashbuy catalog
    /// put`) are ever forgotten, and moving an offer's end later must then
    /// go through it too. For matchers that read the live catalog alone
    /// (no --catalog file): a live change a matcher refuses for clashing
    /// with its files would look to the settler like taken
    /// [config: settle.forget_ended_offers].
    #[arg(long)]
    forget_ended_offers: bool,
    /// Do not follow the live `merchants` topic: the --merchants file alone
    /// [config: settle.live_tables = false].
    #[arg(long)]
    no_live_tables: bool,
    /// The payment provider's base URL: Stripe, or paysim / a
    /// Stripe-compatible mock at http://127.0.0.1:PORT
    /// [default: https://api.stripe.com].
    #[arg(long, env = "HASHBUY_PROVIDER_URL")]
    provider_url: Option<String>,
    /// A file holding the provider's secret key, used when neither
    /// HASHBUY_PROVIDER_KEY nor STRIPE_API_KEY is set.
    #[arg(long)]
    provider_key_file: Option<PathBuf>,
    /// Accept a live-mode key (`sk_live_…`), which charges real cards.
    #[arg(long)]
    allow_live: bool,
    /// Stop once the group has settled what the commands topic held at
    /// start.
    #[arg(long)]
    exit_at_end: bool,
    /// Most commands in flight per partition [default: 256].
    #[arg(long, env = "HASHBUY_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Provider requests per second at most [default: 25 for sk_test_ and
    /// 90 for sk_live_ keys on api.stripe.com; unlimited elsewhere].
    #[arg(long, env = "HASHBUY_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// Provider calls for one command before it is given up as FAILED,
    /// which happens only once the provider shows no charge for it
    /// [default: 10].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Attempts older than this are reconciled (looked up at the
    /// provider), never retried blindly: the provider's idempotency-key
    /// lifetime, in seconds [default: 86400].
    #[arg(long)]
    reconcile_after_s: Option<u64>,
    /// How long one provider request may take, in seconds; a call that got
    /// no answer (a timeout, a dropped connection, an attempt found in the
    /// ledger after a restart or a hand-over) may still be running at the
    /// provider, so it is waited out for twice as long before the command
    /// is looked up there [default: 30].
    #[arg(long)]
    request_timeout_s: Option<u64>,
    /// A command undecided for longer than this many seconds is stuck (the
    /// provider cannot be reached to charge or look it up, and the settler
    /// never fails a payment on a guess): `/healthz` answers 503 naming it,
    /// and an error is logged [default: 900].
    #[arg(long)]
    stuck_after_s: Option<u64>,
    /// A command whose tweet is older than this when the settler first
    /// sees it is REJECTED as stale (its reason says so; no reply goes to
    /// the buyer), and decided, acked entries tweeted more than this and
    /// two days before are pruned from the ledger and its changelog, so
    /// the ledger holds about this much history. Far past the 24 h a
    /// provider (Stripe) keeps an idempotency key. Words as "7days",
    /// "36h"; at least a minute [default: 7days].
    #[arg(long, value_parser = humantime::parse_duration)]
    max_command_age: Option<Duration>,
    /// How the ledger writes entries, locally and to its changelog
    /// (both are always read) [default: protobuf]. A settler from before
    /// protobuf entries cannot read them, and skips such changelog
    /// records: while any settler of the group runs one, give `json`.
    #[arg(long, value_enum)]
    ledger_encoding: Option<LedgerEncodingArg>,
    /// When commands were deleted (retention) before the group read them:
    /// `stop` with an error naming the offsets lost (their purchases were
    /// never charged), or `skip` them, logged and counted [default: stop].
    /// A new group is only told what was deleted before its first read.
    #[arg(long, value_enum, env = "HASHBUY_ON_DATA_LOSS")]
    on_data_loss: Option<OnDataLossArg>,
    /// Consumer group [default: hashbuy-settler].
    #[arg(long, env = "HASHBUY_SETTLE_GROUP")]
    group: Option<String>,
    /// This settler's name in its group (static membership): each running
    /// settler needs its own, and a restarted one (or its replacement, with
    /// another ledger) the same. A second settler under a running one's
    /// name takes its place at once: the first then stops calling the
    /// provider at its next refused commit (within a second) [default: 0].
    #[arg(long, env = "HASHBUY_INSTANCE")]
    instance: Option<String>,
    /// Topic payment commands are read from [default: payment-commands].
    #[arg(long, env = "HASHBUY_COMMANDS_TOPIC")]
    commands_topic: Option<String>,
    /// Topic payment acks are produced to [default: payment-acks].
    #[arg(long, env = "HASHBUY_ACKS_TOPIC")]
    acks_topic: Option<String>,
    /// Topic undecodable commands are produced to [default: dead-letters].
    #[arg(long, env = "HASHBUY_DEAD_LETTERS_TOPIC")]
    dead_letters_topic: Option<String>,
    /// Topic each outcome's reply to the buyer is produced to [default:
    /// replies].
    #[arg(long, env = "HASHBUY_REPLIES_TOPIC")]
    replies_topic: Option<String>,
    /// Topic the settler's word on each unit a limited offer's command
    /// held goes to, for the reservation step (`hashbuy stock`) [default:
    /// stock-requests].
    #[arg(long, env = "HASHBUY_STOCK_REQUESTS_TOPIC")]
    stock_requests_topic: Option<String>,
    /// The ledger's changelog topic: compacted, with at least as many
    /// partitions as the commands topic [default: settler-ledger].
    #[arg(long, env = "HASHBUY_LEDGER_TOPIC")]
    ledger_topic: Option<String>,
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, at
    /// this host:port [default: off].
    #[arg(long, env = "HASHBUY_METRICS_ADDR")]
    metrics_addr: Option<String>,
}

/// The provider key: `HASHBUY_PROVIDER_KEY`, else `STRIPE_API_KEY`, else
/// the key file. Never logged, never in an error.
fn provider_key(file: Option<PathBuf>) -> Result<SecretString> {
    for variable in ["HASHBUY_PROVIDER_KEY", "STRIPE_API_KEY"] {
        if let Ok(key) = std::env::var(variable) {
            if !key.trim().is_empty() {
                return Ok(SecretString::from(key.trim().to_owned()));
            }
        }
    }
    let Some(path) = file else {
        bail!(
            "no provider key: set HASHBUY_PROVIDER_KEY or STRIPE_API_KEY, or give \
             --provider-key-file FILE"
        );
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the provider key file {}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        bail!("the provider key file {} is empty", path.display());
    }
    Ok(SecretString::from(key.to_owned()))
}

/// How long the start-up check waits for the provider.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// One cheap read at start-up, so that a wrong key or URL is an error at
/// once. A provider that does not answer is only a warning: the settler
/// keeps commands pending until it does, as it would in an outage.
fn check_provider(provider: &Provider) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let checked =
        runtime.block_on(async { tokio::time::timeout(CHECK_TIMEOUT, provider.check()).await });
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(
            e @ (ProviderError::Unauthorized { .. } | ProviderError::Api { status: 404, .. }),
        )) => {
            bail!(
                "the payment provider at {} refused the settler: {e}",
                provider.base_url()
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(
                url = provider.base_url(),
                "the payment provider does not answer ({e}); commands stay pending until it does"
            );
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                url = provider.base_url(),
                "the payment provider did not answer within {} s; commands stay pending until \
                 it does",
                CHECK_TIMEOUT.as_secs()
            );
            Ok(())
        }
    }
}

/// Runs `hashbuy settle`.
pub fn run(args: Args) -> Result<()> {
    let (connection, file) = args.kafka.load()?;
    let mut topics = file.kafka.topics;
    let mut settings = file.settle;
    override_with(&mut topics.commands, args.commands_topic);
    override_with(&mut topics.acks, args.acks_topic);
    override_with(&mut topics.dead_letters, args.dead_letters_topic);
    override_with(&mut topics.replies, args.replies_topic);
    override_with(&mut topics.stock_requests, args.stock_requests_topic);
    override_with(&mut topics.ledger, args.ledger_topic);
    override_with(&mut settings.provider_url, args.provider_url);
    override_with(&mut settings.group, args.group);
    override_with(&mut settings.instance, args.instance);
    override_with(&mut settings.max_in_flight, args.max_in_flight);
    override_with(&mut settings.max_attempts, args.max_attempts);
    override_with(&mut settings.reconcile_after_s, args.reconcile_after_s);
    override_with(&mut settings.request_timeout_s, args.request_timeout_s);
    override_with(&mut settings.stuck_after_s, args.stuck_after_s);
    override_with(&mut settings.max_command_age, args.max_command_age);
    override_with(&mut settings.ledger_encoding, args.ledger_encoding);
    override_with(&mut settings.on_data_loss, args.on_data_loss);
    let ledger_dir = args.ledger.or(settings.ledger.take()).context(
        "no ledger: give --ledger DIR (or HASHBUY_LEDGER, or settle.ledger in the config file)",
    )?;
    let key = provider_key(args.provider_key_file.or(settings.provider_key_file.take()))?;
    let mut provider_config = ProviderConfig::new(key);
    provider_config.request_timeout = settings.request_timeout();
    provider_config.base_url = settings.provider_url.clone();
    provider_config.rate_limit = args.rate_limit.or(settings.rate_limit);
    provider_config.allow_live = args.allow_live;
    let provider = Provider::new(provider_config).context("bad provider settings")?;
    if args.no_live_tables {
        settings.live_tables = false;
    }
    if args.forget_ended_offers {
        settings.forget_ended_offers = true;
    }
    if settings.forget_ended_offers && !settings.live_tables {
        bail!(
            "--forget-ended-offers reads the live catalog topic, which --no-live-tables leaves \
             unread: the counts of ended offers are forgotten only on the catalog the matchers read"
        );
    }
    let mut config = settings.run_config(connection, topics, ledger_dir, args.exit_at_end);
    // Connect mode: a merchants file, or the live merchants table alone.
    let merchants = match args.merchants.or(settings.merchants.take()) {
        Some(path) => Some(load_merchants(&path)?),
        None if args.connect || settings.connect => {
            if !config.live_tables {
                bail!(
                    "--connect without --merchants takes the merchants from the live merchants \
                     topic, which --no-live-tables leaves unread: give --merchants FILE"
                );
            }
            Some(Merchants::default())
        }
        None => None,
    };
    config.merchants = merchants.map(|m| Arc::new(RwLock::new(m)));

    check_provider(&provider)?;
    let payments = Payments::new(provider, Backoff::default());
    let health = Health::default();
    if let Some(addr) = args.metrics_addr.or(settings.metrics_addr) {
        telemetry::serve(&addr, health.clone())?;
    }
    let stop = kafka_args::stop_flag()?;
    let started = Instant::now();
    let summary = run::run(&config, payments, &stop, &health).context("the settler stopped")?;
    eprintln!(
        "settled {} commands in {:.1} s: {} settled, {} declined, {} rejected, {} failed; \
         {} acks, {} dead letters, {} duplicates, {} resumed; ledgers ready {:.2} s after \
         their partitions were assigned",
        summary.commands,
        started.elapsed().as_secs_f64(),
        summary.settled,
        summary.declined,
        summary.rejected,
        summary.failed,
        summary.acks,
        summary.dead_letters,
        summary.duplicates,
        summary.resumed,
        summary.restoring.as_secs_f64(),
    );
    compact_on_stop(&config.ledger_dir, &summary);
    Ok(())
}

/// Gives back what pruning freed, on a clean stop, when this run's largest
/// passes pruned at least as many entries as their partitions kept and the
/// ledger's file has grown far past its keys and values
/// (`hashbuy_settler::compact`): the next start then opens a small file,
/// and holds a small page table. Only then are the keys and values read
/// (a million took 2 s and 185 MB more at a stop): a run that pruned
/// little leaves a file sled goes on reusing. The settling is done by
/// then, so a compaction that fails is told, not made the stop's
/// failure: the ledger still holds all it held.
fn compact_on_stop(dir: &std::path::Path, summary: &run::Summary) {
    let passes = summary.passes.values();
    let (largest, kept) = passes.fold((0, 0), |(l, k), p| (l + p.largest, k + p.kept));
    if !compact::pruned_enough(largest, kept) {
        return;
    }
    match compact::compact_if_worth(dir) {
        Ok(Some(done)) => eprintln!(
            "compacted the ledger in {:.1} s: {} MB on disk for {} MB of keys and values, now \
             {} MB",
            done.took.as_secs_f64(),
            done.before >> 20,
            done.live >> 20,
            done.after >> 20,
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            ledger = %dir.display(),
            "the ledger was not compacted: {e}; it holds all it held (a compaction cut off is \
             finished or undone when the ledger is next opened)"
        ),
    }
}
