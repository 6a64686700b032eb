//! The plain baseline of `hashbuy bench`: the matcher a user would write
//! by hand with the usual crates, to set hashbuy's figures beside. It
//! reads with rdkafka's `StreamConsumer` (one async stream for every
//! partition), parses each record into a `serde_json::Value`, takes the
//! hashtags of the tweet's entities, looks each up in the same catalog
//! (the same normalization) and the author in the same accounts, and
//! produces the same `PaymentCommand`s, at least once: every
//! [`COMMIT_EVERY`] records, it waits for the commands' deliveries, then
//! commits the consumer's offsets.
//!
//! It is a baseline, not a second matcher: it skips what a hand-written
//! loop usually skips (retweets are recognized, protected authors, offer
//! windows, `extended_tweet` and text-only hashtags are not), and
//! dead-letters nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hashbuy_core::hashtag::normalize;
use hashbuy_core::rules::payment_command;
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_kafka::client::{Connection, QuietContext};
use hashbuy_proto::v1::PaymentCommand;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::Value;

use crate::bench::{cpu_time, Figures};

/// Records between two commits.
const COMMIT_EVERY: u64 = 10_000;

/// How long the baseline may take to read the topic.
const DEADLINE: Duration = Duration::from_secs(600);

/// Reads `expected` records of `tweets` in a fresh `group`, producing
/// commands to `commands`.
pub(crate) fn plain(
    connection: &Connection,
    group: &str,
    topics: (&str, &str),
    expected: u64,
    tables: (&Catalog, &Accounts),
) -> Result<Figures> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the plain baseline's runtime")?;
    let cpu = cpu_time();
    let (records, busy) = runtime.block_on(read(connection, group, topics, expected, tables))?;
    Ok(Figures {
        records,
        busy,
        cpu: cpu_time().saturating_sub(cpu),
        broker_cpu: None,
    })
}

async fn read(
    connection: &Connection,
    group: &str,
    (tweets, commands): (&str, &str),
    expected: u64,
    (catalog, accounts): (&Catalog, &Accounts),
) -> Result<(u64, Duration)> {
    let consumer: StreamConsumer = connection
        .config_with(&[
            ("group.id", group.to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("auto.offset.reset", "earliest".to_owned()),
        ])
        .create()
        .context("cannot create the plain baseline's consumer")?;
    consumer.subscribe(&[tweets])?;
    // Logging as hashbuy's clients do, so librdkafka's note that the
    // consumer default `fetch.wait.max.ms` means nothing to a producer is
    // not a warning in the bench's output.
    let producer: FutureProducer<QuietContext> = connection
        .config_with(&[("linger.ms", "5".to_owned())])
        .create_with_context(QuietContext)
        .context("cannot create the plain baseline's producer")?;
    let deadline = Instant::now() + DEADLINE;
    let mut first = None;
    let mut records = 0;
    let mut sent = Vec::new();
    while records < expected {
        let message = tokio::time::timeout_at(deadline.into(), consumer.recv())
            .await
            .context("the plain baseline did not read the topic within 600 s")??;
        first.get_or_insert_with(Instant::now);
        records += 1;
        let tweet: Value = match serde_json::from_slice(message.payload().unwrap_or_default()) {
            Ok(value) => value,
            Err(_) => continue,
        };
        for command in purchases(&tweet, catalog, accounts) {
            let value = command.encode_to_vec();
            let record = FutureRecord::to(commands)
                .key(&command.user_id)
                .payload(&value);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .context("cannot queue a command")?;
            sent.push(delivery);
        }
        if records % COMMIT_EVERY == 0 || records == expected {
            // At least once: the commands are delivered before the offsets
            // that read them are committed.
            for delivery in sent.drain(..) {
                delivery
                    .await
                    .context("a command's delivery was cancelled")?
                    .map_err(|(e, _)| e)
                    .context("a command was not delivered")?;
            }
            consumer
                .commit_consumer_state(CommitMode::Sync)
                .context("cannot commit offsets")?;
        }
    }
    let busy = first.map_or(Duration::ZERO, |first| first.elapsed());
    Ok((records, busy))
}

/// The commands a hand-written matcher makes of a tweet: one per entity
/// hashtag in the catalog, when the author is linked.
fn purchases(tweet: &Value, catalog: &Catalog, accounts: &Accounts) -> Vec<PaymentCommand> {
    let (Some(id), Some(user_id)) = (tweet["id_str"].as_str(), tweet["user"]["id_str"].as_str())
    else {
        return Vec::new();
    };
    if tweet.get("retweeted_status").is_some() {
        return Vec::new();
    }
    let Some(account) = accounts.get(user_id) else {
        return Vec::new();
    };
    let timestamp_ms = tweet["timestamp_ms"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let hashtags = tweet["entities"]["hashtags"].as_array();
    hashtags
        .into_iter()
        .flatten()
        .filter_map(|tag| {
            let text = tag["text"].as_str()?;
            let offer = catalog.get(&normalize(text))?;
            Some(payment_command(
                id,
                user_id,
                timestamp_ms,
                text,
                offer,
                account,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashbuy_gen::{Generator, Options};

    /// On tweets whose hashtags are all in their entities, the baseline
    /// buys what the matcher buys (it is a fair baseline: same work).
    #[test]
    fn the_baseline_buys_what_the_matcher_buys_on_ordinary_tweets() {
        let mut generator = Generator::new(Options {
            purchase_share: 0.3,
            ..Options::default()
        });
        let catalog = Catalog::from_file_text(
            "generated catalog",
            &serde_json::to_string(&generator.catalog()).expect("renders"),
        )
        .expect("catalog");
        let accounts = Accounts::from_file_text(
            "generated accounts",
            &serde_json::to_string(&generator.accounts()).expect("renders"),
        )
        .expect("accounts");
        let rules = hashbuy_core::Rules::new(&catalog, &accounts);
        let (mut agreed, mut bought) = (0, 0);
        let mut line = Vec::new();
        for _ in 0..2_000 {
            line.clear();
            generator.write_next(&mut line);
            let value: Value = serde_json::from_slice(&line).expect("JSON");
            let plain: Vec<String> = purchases(&value, &catalog, &accounts)
                .into_iter()
                .map(|c| c.command_id)
                .collect();
            let ours: Vec<String> = rules
                .decide_bytes(&line)
                .commands()
                .iter()
                .map(|c| c.command_id.clone())
                .collect();
            bought += usize::from(!ours.is_empty());
            agreed += usize::from(plain == ours);
        }
        assert!(bought > 100, "{bought} tweets bought");
        // The baseline skips protected authors and offer windows, and does
        // not read extended tweets: it disagrees on a few.
        assert!(agreed >= 1_900, "the baseline agreed on {agreed} of 2,000");
    }
}
