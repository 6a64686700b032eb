//! `hashbuy catalog`, `hashbuy accounts` and `hashbuy merchants`: change
//! the live tables, the compacted `catalog` and `account-links` topics the
//! matcher follows and the `merchants` topic the settler follows.
//!
//! A change is one record: the protobuf `Offer` keyed by its normalized
//! hashtag (or the `AccountLink` keyed by its user id), or a tombstone that
//! removes the key, with its record timestamp as the time it takes effect
//! (`--at`, default now): tweets at or after that time, by their own time,
//! are decided with it. Offers and links are checked as the table files
//! are, and against the table as it stands at that time (read from the
//! topic first), so a hashtag that normalizes like another offer's is
//! refused, naming both, before anything is written.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use hashbuy_core::hashtag::normalize;
use hashbuy_core::tables::{AccountRow, Accounts, Catalog, MerchantRow, Merchants, OfferRow};
use hashbuy_kafka::client::Connection;
use hashbuy_kafka::config::Topics;
use hashbuy_kafka::now_ms;
use hashbuy_kafka::produce::{flush_promptly, Deliveries};
use hashbuy_kafka::reader::read_to_end;
use hashbuy_kafka::tables::{self, Change};
use hashbuy_proto::v1::{AccountLink, Merchant, Offer};
use prost::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::inspect::{load_accounts, load_catalog, load_merchants};
use crate::kafka_args::KafkaArgs;

/// How long a change may take to be delivered.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `hashbuy catalog`.
#[derive(clap::Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(clap::Subcommand)]
enum CatalogCommand {
    /// Add or change offers: a catalog table file's, or one given as JSON.
    Put(PutArgs),
    /// End an offer, by its hashtag.
    Rm(RmArgs),
    /// Print the live catalog's offers at a time, as JSON lines.
    Ls(LsArgs),
}

/// Arguments of `hashbuy accounts`.
#[derive(clap::Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(clap::Subcommand)]
enum AccountsCommand {
    /// Link cards: an accounts table file's, or one given as JSON.
    Link(LinkArgs),
    /// Unlink a user's card, by user id.
    Unlink(RmArgs),
    /// Print the live account links at a time, as JSON lines.
    Ls(LsArgs),
}

/// Arguments of `hashbuy merchants`.
#[derive(clap::Args)]
pub struct MerchantsArgs {
    #[command(subcommand)]
    command: MerchantsCommand,
}

#[derive(clap::Subcommand)]
enum MerchantsCommand {
    /// Add or change merchants: a merchants table file's, or one as JSON.
    Put(MerchantPutArgs),
    /// Remove a merchant, by merchant id: its purchases from then on are
    /// rejected, never charged to the platform.
    Rm(RmArgs),
    /// Print the live merchants table at a time, as JSON lines.
    Ls(LsArgs),
}

/// Arguments of `hashbuy merchants put`.
#[derive(clap::Args)]
struct MerchantPutArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// A merchants table file (TOML or JSON), checked as `hashbuy settle
    /// --merchants` checks it.
    #[arg(required_unless_present = "merchant", conflicts_with = "merchant")]
    file: Option<std::path::PathBuf>,
    /// One merchant as JSON, with the keys of a table file's merchants
    /// (`{"merchant_id": "acme", "account_id": "acct_…", "fee_bps": 250}`).
    #[arg(long)]
    merchant: Option<String>,
    #[command(flatten)]
    at: At,
}

/// Arguments of `hashbuy catalog put`.
#[derive(clap::Args)]
struct PutArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// A catalog table file (TOML or JSON), checked as `hashbuy match
    /// --catalog` checks it.
    #[arg(required_unless_present = "offer", conflicts_with = "offer")]
    file: Option<std::path::PathBuf>,
    /// One offer as JSON, with the keys of a table file's offers
    /// (`{"hashtag": "BuyRedSneakers42", "offer_id": ..., ...}`).
    #[arg(long)]
    offer: Option<String>,
    #[command(flatten)]
    at: At,
}

/// Arguments of `hashbuy accounts link`.
#[derive(clap::Args)]
struct LinkArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// An accounts table file (TOML or JSON), checked as `hashbuy match
    /// --accounts` checks it.
    #[arg(required_unless_present = "account", conflicts_with = "account")]
    file: Option<std::path::PathBuf>,
    /// One link as JSON, with the keys of a table file's accounts
    /// (`{"user_id": "12345", "customer_id": "cus_…", ...}`).
    #[arg(long)]
    account: Option<String>,
    #[command(flatten)]
    at: At,
}

/// Arguments of `hashbuy catalog rm` and `hashbuy accounts unlink`.
#[derive(clap::Args)]
struct RmArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The offer's hashtag (any spelling that normalizes alike, with or
    /// without `#`), or the user id.
    key: String,
    #[command(flatten)]
    at: At,
}

/// Arguments of `hashbuy catalog ls` and `hashbuy accounts ls`.
#[derive(clap::Args)]
struct LsArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The time to show the table at: RFC 3339 (`2026-06-01T12:00:00Z`)
    /// or milliseconds since the Unix epoch [default: now].
    #[arg(long, value_parser = time_ms)]
    at: Option<i64>,
}

/// When a change takes effect.
#[derive(clap::Args)]
struct At {
    /// The time: RFC 3339 (`2026-06-01T12:00:00Z`) or milliseconds since
    /// the Unix epoch [default: now]. A change applies to tweets at or
    /// after it, by their own time.
    #[arg(long, value_parser = time_ms)]
    at: Option<i64>,
    /// Allow a time already past (recorded changes put before their
    /// stream is replayed). A past change is late for the tweets of its
    /// time already decided: they stay as decided, while tweets decided
    /// after it is read take it. At least once, a batch done again after a
    /// crash is one of those, so a command of it could be made again under
    /// another offer id, and charged again, if the change replaced the
    /// offer.
    #[arg(long)]
    allow_past: bool,
}

/// How far in the past a change may be without `--allow-past`: the time it
/// takes to type and send one.
const PAST_SLACK_MS: i64 = 60_000;

impl At {
    fn ms(&self) -> Result<i64> {
        let now = now_ms();
        match self.at {
            None => Ok(now),
            Some(at) if at < now - PAST_SLACK_MS && !self.allow_past => bail!(
                "--at {} is in the past: tweets of its time may be decided already, and a \
                 change is never applied to them (say --allow-past to put it anyway, e.g. \
                 recorded changes before their stream is replayed)",
                shown(at)
            ),
            Some(at) => Ok(at),
        }
    }
}

/// The smallest `--at` taken in milliseconds: 1973-03-03. A smaller number
/// is surely seconds.
const MIN_AT_MS: i64 = 100_000_000_000;

/// Parses `--at`: RFC 3339, or milliseconds since the epoch.
fn time_ms(s: &str) -> Result<i64, String> {
    let ms = match s.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                format!("{s:?} is neither RFC 3339 (2026-06-01T12:00:00Z) nor milliseconds: {e}")
            })?,
    };
    if ms < MIN_AT_MS {
        return Err(format!(
            "{s:?} is before 1973: give milliseconds since the epoch, not seconds"
        ));
    }
    Ok(ms)
}

/// Runs `hashbuy catalog`.
pub fn run_catalog(args: CatalogArgs) -> Result<()> {
    match args.command {
        CatalogCommand::Put(args) => {
            let offers: Vec<Offer> = match (&args.file, &args.offer) {
                (Some(path), _) => load_catalog(path)?.offers().to_vec(),
                (None, Some(json)) => vec![from_json(json, "offer", OfferRow::to_offer)?],
                (None, None) => bail!("give a catalog file or --offer JSON"),
            };
            let (connection, topic) = table_topic(&args.kafka, |t| t.catalog)?;
            let at = args.at.ms()?;
            let count = put_offers(&connection, &topic, at, offers)?;
            eprintln!(
                "put {count} offers on {topic}, in effect from {}",
                shown(at)
            );
            Ok(())
        }
        CatalogCommand::Rm(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.catalog)?;
            let at = args.at.ms()?;
            let (key, existed) = remove_offer(&connection, &topic, at, &args.key)?;
            if !existed {
                eprintln!(
                    "no offer of the topic has the hashtag {key:?} at {}; removed anyway (a \
                     table file's offer of it ends there too)",
                    shown(at)
                );
            }
            eprintln!("removed {key:?} from {topic}, from {}", shown(at));
            Ok(())
        }
        CatalogCommand::Ls(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.catalog)?;
            let live = read_catalog(&connection, &topic)?;
            print_lines(live.offers_at(args.at.unwrap_or_else(now_ms)))
        }
    }
}

/// Puts `offers` on the catalog topic `topic`, in effect from `at`,
/// checked first against the live catalog there (a clash, or a change
/// before a key's latest, is refused with nothing written): how many.
pub fn put_offers(
    connection: &Connection,
    topic: &str,
    at: i64,
    offers: Vec<Offer>,
) -> Result<usize> {
    let mut live = read_catalog(connection, topic)?;
    let mut changes = Vec::with_capacity(offers.len());
    for offer in offers {
        let key = normalize(&offer.hashtag).into_owned();
        not_before(&key, live.latest_change(&key), at)?;
        live.change(&key, at, Some(offer.clone()))
            .map_err(|e| anyhow::anyhow!("offer {:?}: {e}", offer.offer_id))?;
        changes.push((key, Some(offer.encode_to_vec())));
    }
    let count = changes.len();
    produce(connection, topic, at, changes)?;
    Ok(count)
}

/// Ends the offer of `hashtag` on the catalog topic `topic` from `at` (a
/// tombstone): its normalized key, and whether the topic had an offer of
/// it then.
pub fn remove_offer(
    connection: &Connection,
    topic: &str,
    at: i64,
    hashtag: &str,
) -> Result<(String, bool)> {
    let key = normalize(hashtag.trim_start_matches(['#', '＃'])).into_owned();
    let live = read_catalog(connection, topic)?;
    not_before(&key, live.latest_change(&key), at)?;
    let existed = live.get_at(&key, at).is_some();
    produce(connection, topic, at, vec![(key.clone(), None)])?;
    Ok((key, existed))
}

/// Runs `hashbuy accounts`.
pub fn run_accounts(args: AccountsArgs) -> Result<()> {
    match args.command {
        AccountsCommand::Link(args) => {
            let links: Vec<AccountLink> = match (&args.file, &args.account) {
                (Some(path), _) => {
                    // A file's links, before any change: all of them.
                    let accounts = load_accounts(path)?;
                    accounts.links_at(i64::MIN).into_values().cloned().collect()
                }
                (None, Some(json)) => vec![from_json(json, "account", AccountRow::to_link)?],
                (None, None) => bail!("give an accounts file or --account JSON"),
            };
            let (connection, topic) = table_topic(&args.kafka, |t| t.account_links)?;
            let at = args.at.ms()?;
            let live = read_accounts(&connection, &topic)?;
            for link in &links {
                not_before(&link.user_id, live.latest_change(&link.user_id), at)?;
            }
            let changes: Vec<(String, Option<Vec<u8>>)> = links
                .iter()
                .map(|link| (link.user_id.clone(), Some(link.encode_to_vec())))
                .collect();
            let count = changes.len();
            produce(&connection, &topic, at, changes)?;
            eprintln!("linked {count} accounts on {topic}, from {}", shown(at));
            Ok(())
        }
        AccountsCommand::Unlink(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.account_links)?;
            let at = args.at.ms()?;
            if !args.key.bytes().all(|b| b.is_ascii_digit()) || args.key.is_empty() {
                bail!("{:?} is not a decimal user id", args.key);
            }
            let live = read_accounts(&connection, &topic)?;
            not_before(&args.key, live.latest_change(&args.key), at)?;
            produce(&connection, &topic, at, vec![(args.key.clone(), None)])?;
            eprintln!("unlinked user {} on {topic}, from {}", args.key, shown(at));
            Ok(())
        }
        AccountsCommand::Ls(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.account_links)?;
            let live = read_accounts(&connection, &topic)?;
            print_lines(live.links_at(args.at.unwrap_or_else(now_ms)))
        }
    }
}

/// Runs `hashbuy merchants`.
pub fn run_merchants(args: MerchantsArgs) -> Result<()> {
    match args.command {
        MerchantsCommand::Put(args) => {
            let merchants: Vec<Merchant> = match (&args.file, &args.merchant) {
                (Some(path), _) => {
                    // A file's merchants, before any change: all of them.
                    let merchants = load_merchants(path)?;
                    merchants
                        .merchants_at(i64::MIN)
                        .into_values()
                        .cloned()
                        .collect()
                }
                (None, Some(json)) => vec![from_json(json, "merchant", MerchantRow::to_merchant)?],
                (None, None) => bail!("give a merchants file or --merchant JSON"),
            };
            let (connection, topic) = table_topic(&args.kafka, |t| t.merchants)?;
            let at = args.at.ms()?;
            let live = read_merchants(&connection, &topic)?;
            for merchant in &merchants {
                not_before(
                    &merchant.merchant_id,
                    live.latest_change(&merchant.merchant_id),
                    at,
                )?;
            }
            let changes: Vec<(String, Option<Vec<u8>>)> = merchants
                .iter()
                .map(|m| (m.merchant_id.clone(), Some(m.encode_to_vec())))
                .collect();
            let count = changes.len();
            produce(&connection, &topic, at, changes)?;
            eprintln!("put {count} merchants on {topic}, from {}", shown(at));
            Ok(())
        }
        MerchantsCommand::Rm(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.merchants)?;
            let at = args.at.ms()?;
            let live = read_merchants(&connection, &topic)?;
            not_before(&args.key, live.latest_change(&args.key), at)?;
            produce(&connection, &topic, at, vec![(args.key.clone(), None)])?;
            eprintln!(
                "removed merchant {:?} from {topic}, from {}",
                args.key,
                shown(at)
            );
            Ok(())
        }
        MerchantsCommand::Ls(args) => {
            let (connection, topic) = table_topic(&args.kafka, |t| t.merchants)?;
            let merchants = read_merchants(&connection, &topic)?;
            print_lines(merchants.merchants_at(args.at.unwrap_or_else(now_ms)))
        }
    }
}

/// The connection and the table topic `pick` names, as the config file
/// names the topics.
fn table_topic(kafka: &KafkaArgs, pick: fn(Topics) -> String) -> Result<(Connection, String)> {
    let (connection, file) = kafka.load()?;
    Ok((connection, pick(file.kafka.topics)))
}

/// One row given as JSON with `--<flag>` (a table file's keys), checked as
/// a file's row is.
fn from_json<R: serde::de::DeserializeOwned, T>(
    json: &str,
    flag: &str,
    to_wire: impl Fn(&R) -> Result<T, String>,
) -> Result<T> {
    let row: R = serde_json::from_str(json)
        .with_context(|| format!("--{flag} is not the JSON of a table file's row"))?;
    to_wire(&row).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// The live catalog as the topic holds it (bad records skipped, as the
/// matcher sets them aside).
fn read_catalog(connection: &Connection, topic: &str) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    read_table(connection, topic, |change| {
        let offer = change.value.map(Offer::decode).transpose().ok()?;
        catalog.change(change.key, change.at_ms, offer).ok()
    })?;
    Ok(catalog)
}

/// The live account links as the topic holds them.
fn read_accounts(connection: &Connection, topic: &str) -> Result<Accounts> {
    let mut accounts = Accounts::default();
    read_table(connection, topic, |change| {
        let link = change.value.map(AccountLink::decode).transpose().ok()?;
        accounts.change(change.key, change.at_ms, link).ok()
    })?;
    Ok(accounts)
}

/// The live merchants table as the topic holds it.
fn read_merchants(connection: &Connection, topic: &str) -> Result<Merchants> {
    let mut merchants = Merchants::default();
    read_table(connection, topic, |change| {
        let merchant = change.value.map(Merchant::decode).transpose().ok()?;
        merchants.change(change.key, change.at_ms, merchant).ok()
    })?;
    Ok(merchants)
}

/// Refuses a change of `key` at `at` before the key's latest change in
/// the topic: compaction keeps each key's last record, not its latest
/// time, so an earlier change put later would outlive the later one.
fn not_before(key: &str, latest: Option<i64>, at: i64) -> Result<()> {
    match latest {
        Some(latest) if latest > at => bail!(
            "{key:?} has a change in effect from {} already, later than {}: a change must \
             not come before its key's latest (compaction keeps each key's last record, so it \
             would outlive the later one); put it at or after {}",
            shown(latest),
            shown(at),
            shown(latest)
        ),
        _ => Ok(()),
    }
}

/// Reads a table topic to its end, handing each change to `apply`; a
/// record it refuses, or that is no change, is counted and said.
fn read_table(
    connection: &Connection,
    topic: &str,
    mut apply: impl FnMut(Change<'_>) -> Option<()>,
) -> Result<()> {
    let mut reader = tables::open(connection, topic)?.with_context(|| {
        format!("topic {topic} does not exist (hashbuy topics create makes it)")
    })?;
    let mut refused = 0u64;
    read_to_end(&mut reader, topic, |message| {
        let applied = Change::of(message).ok().and_then(&mut apply);
        refused += u64::from(applied.is_none());
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|_| anyhow::anyhow!("cannot read {topic} to its end"))?;
    if refused > 0 {
        eprintln!("{refused} records of {topic} are not changes the matcher takes; left out");
    }
    Ok(())
}

/// Produces `changes` (key, value or tombstone) to `topic`, stamped `at`,
/// and waits for their delivery.
fn produce(
    connection: &Connection,
    topic: &str,
    at: i64,
    changes: Vec<(String, Option<Vec<u8>>)>,
) -> Result<()> {
    connection.check_topic(topic, hashbuy_kafka::client::CONNECT_TIMEOUT)?;
    let producer: BaseProducer<Deliveries> = connection
        .config_with(&[("enable.idempotence", "true".to_owned())])
        .create_with_context(Deliveries::default())
        .context("cannot create the producer")?;
    for (key, value) in &changes {
        let mut record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(topic).key(key.as_str()).timestamp(at);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer
            .send(record)
            .map_err(|(e, _)| anyhow::anyhow!("cannot produce to {topic}: {e}"))?;
        producer.poll(Duration::ZERO);
    }
    flush_promptly(&producer, DELIVERY_WAIT)
        .with_context(|| format!("the changes were not delivered to {topic} within 30 s"))?;
    if let Some((count, first)) = producer.context().failures() {
        bail!("{count} changes were not delivered to {topic}: {first}");
    }
    Ok(())
}

/// Prints each row as one JSON line, in key order.
fn print_lines<T: serde::Serialize>(rows: BTreeMap<String, &T>) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for row in rows.values() {
        serde_json::to_writer(&mut out, row)?;
        writeln!(out)?;
    }
    Ok(())
}

/// A time as people read it.
pub fn shown(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
