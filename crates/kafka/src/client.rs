//! Connecting to Kafka: the client settings every hashbuy command shares,
//! and a bounded check that the brokers answer and a topic exists, so a
//! wrong address is an error after a few seconds rather than a silent hang.

use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Passes a librdkafka log line to `tracing`, under the target
/// `librdkafka` (so `HASHBUY_LOG` filters it).
///
/// librdkafka's warning that a property is for consumers (or producers)
/// only and ignored by this client is a debug line: `-X` gives every
/// client of a command the same properties, as documented.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let ignored_elsewhere = fac == "CONFWARN"
        && (message.contains("is a consumer property and will be ignored")
            || message.contains("is a producer property and will be ignored"));
    let level = if ignored_elsewhere {
        RDKafkaLogLevel::Debug
    } else {
        level
    };
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// Reports a librdkafka client error as a warning, except the end of a
/// partition, which is news for the partition's reader, not an error.
pub fn error(error: KafkaError, reason: &str) {
    if !matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    ) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

/// A Kafka call that failed, with what hashbuy was doing: the error both
/// services stop with when librdkafka refuses an operation.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Failed {
    /// What was being done.
    pub what: &'static str,
    /// What librdkafka said.
    pub source: KafkaError,
}

/// For `map_err`: librdkafka's error as a [`Failed`] doing `what`.
pub fn failed(what: &'static str) -> impl FnOnce(KafkaError) -> Failed {
    move |source| Failed { what, source }
}

/// The client context of hashbuy's plain consumers (tools, readers): logs
/// and errors through [`log`] and [`error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietContext;

impl rdkafka::ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, e: KafkaError, reason: &str) {
        error(e, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

/// A broker, told by the cluster id it names, where group membership
/// must differ ([`crate::group::member_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// hashbuy's embedded broker (librdkafka's mock cluster).
    Embedded,
    /// tansu, by the cluster id it names by default (`tansu_cluster`).
    Tansu,
    /// Any other: a Kafka, or a broker that behaves as one.
    Kafka,
}

/// The cluster id tansu names unless it is given another.
const TANSU_CLUSTER_ID: &str = "tansu_cluster";

impl BrokerKind {
    /// The kind of a broker naming cluster `id`.
    pub fn of_cluster(id: &str) -> BrokerKind {
        if crate::broker::is_embedded(id) {
            BrokerKind::Embedded
        } else if id == TANSU_CLUSTER_ID {
            BrokerKind::Tansu
        } else {
            BrokerKind::Kafka
        }
    }
}

/// Where Kafka is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `bootstrap.servers`: host:port, comma-separated.
    pub brokers: String,
    /// librdkafka properties for every client (`-X KEY=VALUE`): security,
    /// tuning. Given after hashbuy's own settings, so they win.
    pub properties: Vec<(String, String)>,
}

/// Where hashbuy's default differs from librdkafka's, for every client;
/// `-X` and the config file's `[kafka.properties]` override them.
///
/// `fetch.wait.max.ms` 10 (librdkafka: 500): the embedded broker, tansu
/// and noida-db answer a fetch that finds nothing new only when this wait
/// is over, even when records arrive meanwhile, so at 500 ms every stage of
/// a purchase (tweet to command, command to ack) waited up to half a second
/// and tansu capped a consumer near 9,000 records a second. A Kafka
/// answers as soon as a record arrives; there the cost is an idle
/// consumer's empty fetch every 10 ms to each broker it reads from,
/// instead of two a second.
pub const DEFAULTS: &[(&str, &str)] = &[("fetch.wait.max.ms", "10")];

/// A setting as librdkafka reads `config`: the value set last, or its
/// own default where unset.
pub fn setting(config: &ClientConfig, key: &str) -> Result<String, KafkaError> {
    config.create_native_config()?.get(key)
}

/// How long [`Connection::check_topic`] waits for the brokers by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why Kafka cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No broker answered in time.
    #[error("cannot reach Kafka at {brokers} within {} s ({cause}); is a broker running there? (`hashbuy broker` starts one)", .waited.as_secs())]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long it waited.
        waited: Duration,
        /// What librdkafka said.
        cause: KafkaError,
    },
    /// The brokers answered, without the topic.
    #[error("topic {topic:?} does not exist on {brokers}; create it (`hashbuy topics create`) or pick another")]
    MissingTopic {
        /// The topic asked for.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// A client could not be made from the settings.
    #[error("cannot create a Kafka client: {0}")]
    Client(#[from] KafkaError),
}

impl Connection {
    /// Client settings: the brokers, then the user's properties.
    pub fn config(&self) -> ClientConfig {
        self.config_with(&[])
    }

    /// Client settings: hashbuy's [`DEFAULTS`], its `settings` for one
    /// client (group id, transactional id, ...) and then the user's
    /// properties, which win.
    pub fn config_with(&self, settings: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in DEFAULTS {
            config.set(*key, *value);
        }
        for (key, value) in settings {
            config.set(*key, value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Checks, within `timeout`, that the brokers answer.
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), ConnectError> {
        self.metadata(None, timeout).map(|_| ())
    }

    fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata, ConnectError> {
        self.probe(topic, timeout).map(|(_, metadata)| metadata)
    }

    /// A plain client that has had the brokers' answer (about `topic`, or
    /// every topic), within `timeout`.
    fn probe(
        &self,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<(BaseConsumer<QuietContext>, Metadata), ConnectError> {
        let probe: BaseConsumer<QuietContext> = self.config().create_with_context(QuietContext)?;
        let metadata =
            probe
                .fetch_metadata(topic, timeout)
                .map_err(|cause| ConnectError::Unreachable {
                    brokers: self.brokers.clone(),
                    waited: timeout,
                    cause,
                })?;
        Ok((probe, metadata))
    }

    /// Which broker answers (by the cluster id it names), asked within
    /// `timeout`: hashbuy's embedded one, tansu, or another (a Kafka).
    pub fn broker_kind(&self, timeout: Duration) -> Result<BrokerKind, ConnectError> {
        Ok(self
            .cluster_id(timeout)?
            .map_or(BrokerKind::Kafka, |id| BrokerKind::of_cluster(&id)))
    }

    /// The cluster id the brokers name, asked within `timeout`; `None` from
    /// a broker too old to name one.
    pub fn cluster_id(&self, timeout: Duration) -> Result<Option<String>, ConnectError> {
        let (probe, _) = self.probe(None, timeout)?;
        Ok(probe.client().fetch_cluster_id(timeout))
    }

    /// Checks, within `timeout`, that the brokers answer and `topic` exists;
    /// its partition count.
    pub fn check_topic(&self, topic: &str, timeout: Duration) -> Result<usize, ConnectError> {
        let metadata = self.metadata(Some(topic), timeout)?;
        let missing = || ConnectError::MissingTopic {
            topic: topic.to_owned(),
            brokers: self.brokers.clone(),
        };
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(missing)?;
        if found.error().is_some() || found.partitions().is_empty() {
            return Err(missing());
        }
        Ok(found.partitions().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(properties: &[(&str, &str)]) -> Connection {
        Connection {
            brokers: "127.0.0.1:9092".to_owned(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn clients_wait_briefly_for_fetches_unless_the_user_says_otherwise() {
        let plain = connection(&[]).config_with(&[("group.id", "g".to_owned())]);
        assert_eq!(plain.get("fetch.wait.max.ms"), Some("10"));
        let asked = connection(&[("fetch.wait.max.ms", "500")])
            .config_with(&[("fetch.wait.max.ms", "20".to_owned())]);
        assert_eq!(asked.get("fetch.wait.max.ms"), Some("500"));
        let by_hashbuy = connection(&[]).config_with(&[("fetch.wait.max.ms", "20".to_owned())]);
        assert_eq!(by_hashbuy.get("fetch.wait.max.ms"), Some("20"));
    }
}
