//! `hashbuy ledger`: operators look into the settler's ledger: list entries
//! (pending ones first), show one, export all, sum it up (`stats`),
//! resolve a stuck one by hand, and compact it. The settler holds the
//! ledger's lock while it runs, so these work on a stopped settler's
//! ledger.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashbuy_kafka::client::CONNECT_TIMEOUT;
use hashbuy_kafka::produce::{flush_promptly, Deliveries};
use hashbuy_kafka::reader::{ReadOptions, TopicReader};
use hashbuy_settler::entry::{now_ms, Entry, Outcome, State};
use hashbuy_settler::ledger::{
    decode_entry, decode_meta, encode, Encoding, Floor, Ledger, MetaKey, PartitionLedger,
};
use hashbuy_settler::restore::progress;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::kafka_args::KafkaArgs;

/// Arguments of `hashbuy ledger`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(clap::Subcommand)]
enum LedgerCommand {
    /// List entries, one a line: those an operator must review first, then
    /// undecided, then decided but not acked, then acked; oldest first
    /// within each.
    Ls(LsArgs),
    /// Print one entry as JSON.
    Show(ShowArgs),
    /// Print every entry as JSON lines, for reconciliation.
    Export(LedgerDir),
    /// Decide a stuck (undecided) entry by hand, with a reason kept in the
    /// entry. The resolution goes to the ledger's changelog topic first, so
    /// whichever settler owns the partition next knows it; the settler
    /// emits its ack when it next runs.
    Resolve(ResolveArgs),
    /// Sum the ledger up: entries by state, the oldest undecided, bytes on
    /// disk, each partition's floor, and what pruning would remove now.
    Stats(StatsArgs),
    /// Copy the ledger afresh, giving back to the file system the space
    /// pruning freed (sled gives back only free segments at the end of
    /// its file), and print its size before and after. A settler does
    /// this itself on a clean stop after each partition's largest pass
    /// pruned as much as it kept, when its file takes over 8 times its
    /// keys and values and over 64 MiB.
    Compact(LedgerDir),
}

#[derive(clap::Args)]
struct StatsArgs {
    #[command(flatten)]
    dir: LedgerDir,
    /// The settler's `--max-command-age`, for what pruning would remove
    /// (words as "7days", "36h").
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7days")]
    max_command_age: Duration,
}

/// Where the ledger is.
#[derive(clap::Args)]
struct LedgerDir {
    /// The settler's ledger directory.
    #[arg(long, env = "HASHBUY_LEDGER")]
    ledger: PathBuf,
}

#[derive(clap::Args)]
struct LsArgs {
    #[command(flatten)]
    dir: LedgerDir,
    /// Only entries in this state (`received`, `attempting`, `settled`,
    /// `declined`, `rejected`, `failed`, or `pending` for the first two),
    /// or `review` for those an operator must look at (a double charge).
    #[arg(long)]
    state: Option<String>,
    /// Most entries listed.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    dir: LedgerDir,
    /// The command id.
    command_id: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ResolvedAs {
    Settled,
    Declined,
    Rejected,
    Failed,
}

#[derive(clap::Args)]
struct ResolveArgs {
    #[command(flatten)]
    dir: LedgerDir,
    /// The command id.
    command_id: String,
    /// The outcome, as checked with the provider.
    #[arg(long, value_enum)]
    outcome: ResolvedAs,
    /// Why (kept in the entry), e.g. a ticket and what the provider showed.
    #[arg(long)]
    reason: String,
    /// The provider's payment intent (required for `settled`).
    #[arg(long)]
    payment_intent: Option<String>,
    /// The decline code (for `declined`).
    #[arg(long, default_value = "unknown")]
    decline_code: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The ledger's changelog topic [default: settler-ledger].
    #[arg(long, env = "HASHBUY_LEDGER_TOPIC")]
    ledger_topic: Option<String>,
    /// Change only this ledger, not the changelog (when the brokers are
    /// gone for good): a settler that restores the partition from the
    /// changelog would then attempt the entry again.
    #[arg(long)]
    local_only: bool,
    /// The settlers' consumer group, which must have no running member:
    /// a settler that owns the partition would go on settling the entry
    /// without hearing of the resolution [default: hashbuy-settler].
    #[arg(long, env = "HASHBUY_SETTLE_GROUP")]
    group: Option<String>,
    /// Resolve even while settlers of the group run.
    #[arg(long)]
    force: bool,
}

/// Runs `hashbuy ledger`.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        LedgerCommand::Ls(args) => ls(args),
        LedgerCommand::Show(args) => show(args),
        LedgerCommand::Export(dir) => export(dir),
        LedgerCommand::Resolve(args) => resolve(args),
        LedgerCommand::Stats(args) => stats(args),
        LedgerCommand::Compact(dir) => compact(dir),
    }
}

/// `hashbuy ledger compact`.
fn compact(dir: LedgerDir) -> Result<()> {
    eprintln!("compacting the ledger at {} ...", dir.ledger.display());
    let done = hashbuy_settler::compact::compact(existing(&dir)?)?;
    println!(
        "ledger at {}: {} bytes on disk before, {} after, for {} bytes of keys and values; \
         took {:.1} s",
        dir.ledger.display(),
        done.before,
        done.after,
        done.live,
        done.took.as_secs_f64()
    );
    Ok(())
}

/// The ledger's directory, if there is one: a command on a ledger must
/// not make an empty one of a mistyped path.
fn existing(dir: &LedgerDir) -> Result<&std::path::Path> {
    if !dir.ledger.exists() {
        bail!("no ledger at {}", dir.ledger.display());
    }
    Ok(&dir.ledger)
}

fn open(dir: &LedgerDir) -> Result<Ledger> {
    Ok(Ledger::open(existing(dir)?)?)
}

/// `hashbuy ledger stats`.
fn stats(args: StatsArgs) -> Result<()> {
    let ledger = open(&args.dir)?;
    let bytes = ledger.size_on_disk()?;
    let now = now_ms();
    let mut by_state: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let live = ledger.live_bytes()?;
    let (mut entries, mut review, mut doomed) = (0u64, 0u64, 0u64);
    let mut counts = 0u64;
    let mut oldest: Option<Entry> = None;
    let mut floors = Vec::new();
    let partitions = ledger.partitions();
    for &partition in &partitions {
        let tree = ledger.partition(partition)?;
        for entry in tree.entries() {
            let entry = entry?;
            entries += 1;
            let counts = by_state.entry(entry.state.name()).or_default();
            counts.0 += 1;
            counts.1 += u64::from(entry.acked_ms.is_some());
            review += u64::from(entry.review.is_some());
            if !entry.state.is_terminal()
                && oldest
                    .as_ref()
                    .is_none_or(|o| entry.received_ms < o.received_ms)
            {
                oldest = Some(entry);
            }
        }
        let floor = tree.floor()?;
        if floor.floor_ms != i64::MIN {
            floors.push(floor.floor_ms);
        }
        counts += tree.counts()? as u64;
        // Counts of ended offers aside: which offers ended, the live
        // catalog a running settler follows tells.
        doomed += tree.plan(now, args.max_command_age, None)?.doomed.len() as u64;
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let per_entry = bytes.checked_div(entries).unwrap_or(0);
    writeln!(
        out,
        "ledger at {}: {entries} entries in {} partitions, {bytes} bytes on disk ({per_entry} \
         bytes an entry)",
        args.dir.ledger.display(),
        partitions.len()
    )?;
    writeln!(
        out,
        "  keys and values: {live} bytes ({} an entry); sled's files take {:.1} times that",
        live.checked_div(entries).unwrap_or(0),
        bytes as f64 / live.max(1) as f64
    )?;
    for (state, (count, acked)) in &by_state {
        writeln!(out, "  {state}: {count} ({acked} acked)")?;
    }
    writeln!(out, "  held for review: {review}")?;
    match &oldest {
        Some(e) => writeln!(
            out,
            "  oldest undecided: {} (partition {}), received {:.1} h ago",
            e.command_id(),
            e.partition,
            (now - e.received_ms) as f64 / 3_600_000.0
        )?,
        None => writeln!(out, "  oldest undecided: none")?,
    }
    match floors.iter().min() {
        Some(lowest) => writeln!(
            out,
            "  floor: {} of {} partitions have one; the lowest is {:.1} days ago",
            floors.len(),
            partitions.len(),
            (now - lowest) as f64 / 86_400_000.0
        )?,
        None => writeln!(out, "  floor: none yet (nothing pruned)")?,
    }
    writeln!(
        out,
        "  counts of pruned purchases (for max_per_user): {counts}"
    )?;
    writeln!(
        out,
        "  pruning now, with --max-command-age {}, would remove {doomed} entries",
        humantime::format_duration(args.max_command_age)
    )?;
    out.flush()?;
    Ok(())
}

/// Every entry of every partition.
fn all_entries(ledger: &Ledger) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for partition in ledger.partitions() {
        for entry in ledger.partition(partition)?.entries() {
            entries.push(entry?);
        }
    }
    Ok(entries)
}

/// Where an entry sorts: for review, undecided, decided but not acked,
/// acked.
fn urgency(entry: &Entry) -> u8 {
    match (&entry.state, entry.acked_ms) {
        _ if entry.review.is_some() => 0,
        (State::Received | State::Attempting { .. }, _) => 1,
        (_, None) => 2,
        (_, Some(_)) => 3,
    }
}

fn ls(args: LsArgs) -> Result<()> {
    let ledger = open(&args.dir)?;
    let mut entries: Vec<Entry> = all_entries(&ledger)?
        .into_iter()
        .filter(|e| match args.state.as_deref() {
            None => true,
            Some("pending") => !e.state.is_terminal(),
            Some("review") => e.review.is_some(),
            Some(state) => e.state.name() == state,
        })
        .collect();
    entries.sort_by_key(|e| (urgency(e), e.received_ms));
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(
        out,
        "{:<38} {:<10} {:>5} {:>8} {:<12} {:>10} {:<4} {:<5} changed_ms",
        "command_id", "state", "calls", "part", "user", "amount", "cur", "acked"
    )?;
    for e in entries.iter().take(args.limit) {
        let c = &e.command;
        writeln!(
            out,
            "{:<38} {:<10} {:>5} {:>8} {:<12} {:>10} {:<4} {:<5} {}",
            c.command_id,
            e.state.name(),
            e.attempts,
            e.partition,
            c.user_id,
            c.amount,
            c.currency,
            if e.acked_ms.is_some() { "yes" } else { "no" },
            e.changed_ms
        )?;
    }
    if entries.len() > args.limit {
        writeln!(
            out,
            "... {} more (--limit, --state)",
            entries.len() - args.limit
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The partition ledger holding `command_id`, and its entry.
fn find(ledger: &Ledger, command_id: &str) -> Result<(PartitionLedger, Entry)> {
    for partition in ledger.partitions() {
        let tree = ledger.partition(partition)?;
        if let Some(entry) = tree.get(command_id)? {
            return Ok((tree, entry));
        }
    }
    bail!("no command {command_id} in the ledger")
}

fn show(args: ShowArgs) -> Result<()> {
    let ledger = open(&args.dir)?;
    let (_, entry) = find(&ledger, &args.command_id)?;
    println!("{}", serde_json::to_string_pretty(&entry)?);
    Ok(())
}

fn export(dir: LedgerDir) -> Result<()> {
    let ledger = open(&dir)?;
    let mut out = BufWriter::new(io::stdout().lock());
    for entry in all_entries(&ledger)? {
        serde_json::to_writer(&mut out, &entry)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

fn resolve(args: ResolveArgs) -> Result<()> {
    let ledger = open(&args.dir)?;
    let (tree, mut entry) = find(&ledger, &args.command_id)?;
    let local_floor = tree.floor()?;
    let kafka = if args.local_only {
        refuse_below_pruning_line(&entry, tree.partition(), local_floor, None)?;
        None
    } else {
        let (connection, file) = args.kafka.load()?;
        let topic = args.ledger_topic.unwrap_or(file.kafka.topics.ledger);
        let group = args.group.unwrap_or(file.settle.group);
        if !args.force {
            let members = group_members(&connection, &group)?;
            if members > 0 {
                bail!(
                    "{members} settler(s) of group {group} are running: one of them may own \
                     the partition and settle {} meanwhile; stop them first (or --force)",
                    args.command_id
                );
            }
        }
        // Another settler may have owned the partition since this ledger
        // last did: its copy in the changelog is the one to resolve, and a
        // decided one is not resolved again.
        let (latest, floor) =
            latest_in_changelog(&connection, &topic, tree.partition(), &args.command_id)?;
        if let Some(latest) = latest {
            if latest.state.is_terminal() {
                bail!(
                    "{} was decided as {} by a settler (the changelog {topic} says so); \
                     nothing to resolve",
                    args.command_id,
                    latest.state.name()
                );
            }
            if progress(&latest) > progress(&entry) {
                entry = latest;
            }
        }
        // The local floor too: a changelog made anew (its records lost)
        // holds none, while this ledger still knows its line.
        refuse_below_pruning_line(
            &entry,
            tree.partition(),
            floor.higher(local_floor),
            Some(&topic),
        )?;
        Some((connection, topic))
    };
    let outcome = match args.outcome {
        ResolvedAs::Settled => Outcome::Settled {
            payment_intent: args
                .payment_intent
                .context("--payment-intent is required to resolve as settled")?,
        },
        ResolvedAs::Declined => Outcome::Declined {
            payment_intent: args.payment_intent,
            decline_code: args.decline_code,
            reason: args.reason.clone(),
        },
        ResolvedAs::Rejected => Outcome::Rejected {
            reason: args.reason.clone(),
        },
        ResolvedAs::Failed => Outcome::Failed {
            reason: args.reason.clone(),
        },
    };
    entry.resolve(outcome, &args.reason, now_ms())?;
    if let Some((connection, topic)) = kafka {
        write_changelog(&connection, &topic, tree.partition(), &entry).with_context(|| {
            format!(
                "cannot write the resolution to the changelog {topic} at {}; the ledger is \
                 unchanged (--local-only changes only this ledger)",
                connection.brokers
            )
        })?;
    } else {
        eprintln!(
            "warning: --local-only: a settler that restores partition {} from the changelog \
             attempts {} again",
            tree.partition(),
            args.command_id
        );
    }
    tree.put(&entry)?;
    ledger.flush()?;
    eprintln!(
        "{} resolved as {}; its ack goes out when the settler next runs",
        args.command_id,
        entry.state.name()
    );
    Ok(())
}

/// How many members `group` has now.
fn group_members(connection: &hashbuy_kafka::client::Connection, group: &str) -> Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = connection.config().create()?;
    let groups = client
        .fetch_group_list(Some(group), CONNECT_TIMEOUT)
        .with_context(|| {
            format!(
                "cannot ask the brokers whether settlers of group {group} run (the embedded \
                 broker cannot list groups): make sure none does, then give --force"
            )
        })?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}

/// Refuses to resolve an undecided `entry` when it was tweeted below
/// `floor`'s pruning line (the changelog `topic`'s and the local ledger's,
/// or the local ledger's alone where `None`); a decided one is left to
/// [`Entry::resolve`], which refuses it in its own words. The line never
/// passes an entry its owner had not decided, so one below it was decided
/// and acked by whichever settler owned the partition since this ledger
/// did, and may be pruned; once compaction drops its record and
/// tombstone, the floor is all that says so. A decision written there
/// would contradict the ack the buyer has.
fn refuse_below_pruning_line(
    entry: &Entry,
    partition: i32,
    floor: Floor,
    topic: Option<&str>,
) -> Result<()> {
    let line = floor.pruned_below_ms;
    if !entry.state.is_terminal() && entry.command.tweet_timestamp_ms < line {
        let whose = topic.map_or_else(
            || "this ledger's floor".to_owned(),
            |topic| format!("the changelog {topic} or this ledger's floor"),
        );
        bail!(
            "{} was tweeted below partition {partition}'s pruning line ({}, says {whose}): \
             the partition's owner decided and acked it, and may have pruned it; nothing to \
             resolve",
            entry.command_id(),
            crate::tables_cmd::shown(line),
        );
    }
    Ok(())
}

/// The last copy of `command_id`'s entry in `partition` of the changelog,
/// and the partition's floor there.
fn latest_in_changelog(
    connection: &hashbuy_kafka::client::Connection,
    topic: &str,
    partition: i32,
    command_id: &str,
) -> Result<(Option<Entry>, Floor)> {
    use rdkafka::Message;
    let mut reader = TopicReader::open_partitions(
        connection,
        topic,
        Some(&[partition]),
        ReadOptions {
            from_beginning: true,
            exit_at_end: true,
            read_uncommitted: false,
        },
    )?;
    let mut latest = None;
    let mut floor = Floor::default();
    let floor_key = MetaKey::Floor.to_bytes();
    let deadline = std::time::Instant::now() + CHANGELOG_WAIT;
    while !reader.at_end() {
        if std::time::Instant::now() >= deadline {
            bail!(
                "the changelog {topic} was not read to its end within {} s",
                CHANGELOG_WAIT.as_secs()
            );
        }
        let Some(message) = reader.next(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        if message.key() == Some(floor_key.as_slice()) {
            // Unreadable, it could hide a pruning line: nothing is resolved
            // on a guess.
            let raised: Floor = decode_meta(&floor_key, message.payload().unwrap_or_default())
                .with_context(|| {
                    format!("partition {partition}'s floor in {topic} is unreadable")
                })?;
            floor = floor.higher(raised);
        } else if message.key() == Some(command_id.as_bytes()) {
            let Some(value) = message.payload() else {
                bail!(
                    "the changelog pruned {command_id} (a tombstone): it was decided and acked \
                     long ago; there is nothing to resolve"
                );
            };
            latest = Some(decode_entry(command_id.as_bytes(), value).with_context(|| {
                format!("the changelog's record of {command_id} is unreadable")
            })?);
        }
    }
    Ok((latest, floor))
}

/// How long the changelog record of a resolution may take to be delivered.
const CHANGELOG_WAIT: Duration = Duration::from_secs(30);

/// Writes `entry` to the ledger's changelog `topic`, in its `partition`, as
/// the settler would, and waits for its delivery.
fn write_changelog(
    connection: &hashbuy_kafka::client::Connection,
    topic: &str,
    partition: i32,
    entry: &Entry,
) -> Result<()> {
    connection.check_topic(topic, CONNECT_TIMEOUT)?;
    let producer: BaseProducer<Deliveries> = connection
        .config_with(&[("enable.idempotence", "true".to_owned())])
        .create_with_context(Deliveries::default())?;
    // JSON, which every settler reads, whatever its version.
    let stored = encode(entry, Encoding::Json)?;
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(entry.command_id())
                .payload(stored.as_ref()),
        )
        .map_err(|(e, _)| e)?;
    flush_promptly(&producer, CHANGELOG_WAIT)?;
    if let Some((_, error)) = producer.context().failures() {
        bail!("not delivered: {error}");
    }
    Ok(())
}
