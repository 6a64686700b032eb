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
    pub topics: TopicsConfig,
}

/// The topics hashbuy reads and writes; each has a flag of the same name
/// (`--tweets-topic`, ...) that wins over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Tweets are read here (default `tweets`).
    pub tweets: Option<String>,
    /// Payment commands are written here (default `payment-commands`).
    pub commands: Option<String>,
    /// Payment acknowledgements are written here (default `payment-acks`).
    pub acks: Option<String>,
    /// Records that cannot be processed are written here (default
    /// `dead-letters`).
    pub dead_letters: Option<String>,
    /// The settler's ledger changelog (default `settler-ledger`).
    pub ledger: Option<String>,
}
