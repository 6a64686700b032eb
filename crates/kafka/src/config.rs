//! The `[kafka]` table of hashbuy's config file: where Kafka is, how to
//! talk to it (security), and the topic names.
//!
//! Every field is optional: a value missing here comes from the
//! environment (`HASHBUY_…`) or a flag, which win over the file, or from
//! the default. Unknown keys are an error, so a misspelt setting is not
//! silently ignored.
//!
//! ```toml
//! [kafka]
//! brokers = "kafka-1:9093,kafka-2:9093"
//!
//! [kafka.properties]
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanisms" = "PLAIN"
//! "sasl.username" = "hashbuy"
//!
//! [kafka.topics]
//! tweets = "firehose"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// Kafka settings shared by every command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, host:port, comma-separated (`--brokers`,
    /// `HASHBUY_BROKERS`; default `127.0.0.1:9092`).
    pub brokers: Option<String>,
    /// librdkafka properties for every Kafka client: security (SASL, SSL),
    /// tuning. `-X KEY=VALUE` flags are applied after these.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Topic names.
    #[serde(default)]
    pub topics: Topics,
}

/// The topics hashbuy reads and writes, by role. Each has a flag
/// (`--tweets-topic`, ...) that wins over the file; a topic the file leaves
/// out keeps its default name, given here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Tweets are read here (default `tweets`).
    pub tweets: String,
    /// Payment commands are written here (default `payment-commands`).
    pub commands: String,
    /// Payment acknowledgements are written here (default `payment-acks`).
    pub acks: String,
    /// Records that cannot be processed are written here (default
    /// `dead-letters`).
    pub dead_letters: String,
    /// The settler's ledger changelog: compacted, keyed by command id, with
    /// as many partitions as the payment commands, so a partition's history
    /// moves with it (default `settler-ledger`).
    pub ledger: String,
    /// Answers to buyers, for a connector to post (default `replies`).
    pub replies: String,
    /// The matcher's changelog of pending purchases (confirm mode):
    /// compacted, keyed by user id, with as many partitions as the tweets,
    /// so a partition's pending purchases move with it (default
    /// `pending-purchases`).
    pub pending: String,
    /// The live catalog: compacted, keyed by normalized hashtag, a
    /// protobuf `Offer` or a tombstone that removes it (default `catalog`).
    pub catalog: String,
    /// The live account links: compacted, keyed by user id, a protobuf
    /// `AccountLink` or a tombstone that unlinks (default `account-links`).
    pub account_links: String,
    /// The live merchants table (Stripe Connect): compacted, keyed by
    /// merchant id, a protobuf `Merchant` or a tombstone (default
    /// `merchants`).
    pub merchants: String,
    /// Limited offers' commands on their way to the reservation step, and
    /// the settler's word on each unit held: keyed by offer id, so one
    /// member of the step's group sees every command of an offer (default
    /// `stock-requests`).
    pub stock_requests: String,
    /// The reservation step's changelog: compacted, keyed by offer and
    /// command, with as many partitions as the stock requests, so a
    /// partition's units move with it (default `stock-holds`).
    pub stock: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            tweets: "tweets".to_owned(),
            commands: "payment-commands".to_owned(),
            acks: "payment-acks".to_owned(),
            dead_letters: "dead-letters".to_owned(),
            ledger: "settler-ledger".to_owned(),
            replies: "replies".to_owned(),
            pending: "pending-purchases".to_owned(),
            catalog: "catalog".to_owned(),
            account_links: "account-links".to_owned(),
            merchants: "merchants".to_owned(),
            stock_requests: "stock-requests".to_owned(),
            stock: "stock-holds".to_owned(),
        }
    }
}

/// How a stage that reads, decides and writes on Kafka (the matcher, the
/// reservation step) makes its outputs and offsets durable together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Kafka transactions: each batch's outputs and offsets commit as one.
    ExactlyOnce,
    /// Produce, flush, then commit offsets; a crash may repeat a batch.
    AtLeastOnce,
}

/// How long a table topic keeps every change of each key before
/// compaction may drop all but the latest: a week, in milliseconds.
pub const TABLE_HISTORY_MS: &str = "604800000";

/// How long the settler's ledger changelog writes to a segment before it
/// starts another, and keeps a tombstone after compacting its entry away:
/// an hour each, in milliseconds.
///
/// Compaction never touches the segment being written, and Kafka's own
/// defaults (a week a segment, a gigabyte, and tombstones kept a day) would
/// leave a new owner's restore reading every record of up to a week and
/// every pruned entry's tombstone of a day. A tombstone the restore misses
/// costs nothing: its entry lies below the partition's floor, whose record
/// comes before it and is the key's latest, and the restore drops every
/// entry below the floor (see the settler's `horizon` and `prune`).
pub const LEDGER_COMPACTED_AFTER_MS: &str = "3600000";

impl Topics {
    /// Every topic, in the data's order: tweets, commands, acks, dead
    /// letters, the ledger changelog, replies, the pending purchases'
    /// changelog, then the tables: catalog, account links, merchants; then
    /// the reservation step's requests and changelog.
    pub fn all(&self) -> [&str; 12] {
        [
            &self.tweets,
            &self.commands,
            &self.acks,
            &self.dead_letters,
            &self.ledger,
            &self.replies,
            &self.pending,
            &self.catalog,
            &self.account_links,
            &self.merchants,
            &self.stock_requests,
            &self.stock,
        ]
    }

    /// Whether `topic` is a state changelog (the settler's ledger, the
    /// pending purchases, the stock holds).
    pub fn is_changelog(&self, topic: &str) -> bool {
        topic == self.ledger || topic == self.pending || topic == self.stock
    }

    /// Whether `topic` is a table (catalog, account links, merchants): read
    /// whole by every instance, so one partition keeps it simple to follow.
    pub fn is_table(&self, topic: &str) -> bool {
        topic == self.catalog || topic == self.account_links || topic == self.merchants
    }

    /// The topic settings hashbuy creates `topic` with: compaction for a
    /// changelog; for a table also its tombstones kept for good
    /// (`delete.retention.ms`), since a removal compacted away would bring
    /// a table file's row back at the next start, and a week of every
    /// key's history kept whole (`min.compaction.lag.ms`), for tweets of
    /// that week read again (a replay, a batch done again) to be decided
    /// by the versions of their time. Older history keeps each key's
    /// latest change, with its time.
    pub fn settings_of(&self, topic: &str) -> Vec<(&'static str, &'static str)> {
        if self.is_table(topic) {
            vec![
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "9223372036854775807"),
                ("min.compaction.lag.ms", TABLE_HISTORY_MS),
            ]
        } else if self.is_changelog(topic) {
            vec![("cleanup.policy", "compact")]
        } else {
            Vec::new()
        }
    }

    /// The settings hashbuy creates `topic` with unless told others
    /// (`hashbuy topics create --topic-config`): for the settler's ledger
    /// changelog, segments of an hour and tombstones kept an hour
    /// ([`LEDGER_COMPACTED_AFTER_MS`]), so that a restore reads the live
    /// entries and about the last hour's records, not a week's.
    pub fn defaults_of(&self, topic: &str) -> Vec<(&'static str, &'static str)> {
        if topic == self.ledger {
            vec![
                ("segment.ms", LEDGER_COMPACTED_AFTER_MS),
                ("delete.retention.ms", LEDGER_COMPACTED_AFTER_MS),
            ]
        } else {
            Vec::new()
        }
    }

    /// How many partitions `topic` gets when hashbuy creates it: one for a
    /// table, `partitions` for the others.
    pub fn partitions_of(&self, topic: &str, partitions: i32) -> i32 {
        if self.is_table(topic) {
            1
        } else {
            partitions
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_their_tombstones_and_a_week_of_history_and_one_partition() {
        let topics = Topics::default();
        for table in ["catalog", "account-links", "merchants"] {
            let settings = topics.settings_of(table);
            assert!(settings.contains(&("cleanup.policy", "compact")));
            assert!(settings.contains(&("delete.retention.ms", "9223372036854775807")));
            assert!(settings.contains(&("min.compaction.lag.ms", "604800000")));
            assert_eq!(topics.partitions_of(table, 16), 1);
        }
        assert_eq!(
            topics.settings_of("settler-ledger"),
            [("cleanup.policy", "compact")]
        );
        assert!(topics.settings_of("tweets").is_empty());
        assert_eq!(topics.partitions_of("tweets", 16), 16);
    }

    #[test]
    fn only_the_ledger_changelog_is_compacted_within_an_hour_by_default() {
        let topics = Topics::default();
        assert_eq!(
            topics.defaults_of("settler-ledger"),
            [
                ("segment.ms", "3600000"),
                ("delete.retention.ms", "3600000")
            ]
        );
        for other in ["tweets", "pending-purchases", "stock-holds", "catalog"] {
            assert!(topics.defaults_of(other).is_empty(), "{other}");
        }
    }
}
