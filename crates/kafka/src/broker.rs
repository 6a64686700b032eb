//! The embedded development broker: librdkafka's mock cluster, so that
//! hashbuy runs, and its tests start a broker, without a Kafka.
//!
//! It is a development broker with bounded retention, not a Kafka: it keeps
//! everything in memory, at most [`PARTITION_RETENTION_BYTES`] (and 100,000
//! batches) per partition, and silently deletes older data (fixed in
//! librdkafka's `rdkafka_mock.c`). Its topics therefore get many partitions
//! ([`DEFAULT_PARTITIONS`]); a consumer that falls further behind than that
//! loses data, which hashbuy's consumers report as data loss rather than
//! skip. It supports consumer groups and transactions, but not the
//! CreateTopics admin API: its topics are made here, at start-up.
//!
//! Its consumer groups answer a first join at once: librdkafka's mock
//! waits `group.initial.rebalance.delay.ms` (3 s, as a Kafka does) for more
//! members before it forms a new group, which is most of a short run; the
//! embedded broker sets it to 0. Its members learn that the broker is the
//! embedded one from its cluster id ([`is_embedded`]) and take shorter
//! sessions there (see `hashbuy_kafka::group::member_settings`).
//!
//! The mock cluster listens on an ephemeral loopback port. For a fixed
//! port, [`forward`] relays a listener to it; clients bootstrap through the
//! fixed port and then follow the broker's metadata to the ephemeral one,
//! which works for clients on this machine.

use std::net::SocketAddr;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Topics;

/// Partitions per topic unless asked otherwise: at 5 MB each, 64 hold about
/// 120,000 tweets of 2.5 KB per topic before the oldest are deleted.
pub const DEFAULT_PARTITIONS: i32 = 64;

/// What the mock cluster keeps per partition before deleting the oldest.
pub const PARTITION_RETENTION_BYTES: u64 = 5 * 1024 * 1024;

/// How librdkafka's mock cluster names itself (`mockCluster` and a
/// number): what tells a client that its broker is the embedded one.
const MOCK_CLUSTER_ID_PREFIX: &str = "mockCluster";

/// Whether a cluster id (`Client::fetch_cluster_id`) is the embedded
/// broker's.
pub fn is_embedded(cluster_id: &str) -> bool {
    cluster_id.starts_with(MOCK_CLUSTER_ID_PREFIX)
}

/// A running embedded broker; stops when dropped.
pub struct EmbeddedBroker {
    /// The client that hosts the mock cluster (`test.mock.num.brokers`):
    /// the cluster lives as long as it does, and its handle reaches the
    /// mock's settings that rust-rdkafka does not wrap.
    host: BaseProducer,
    partitions: i32,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics`, each of `partitions`
    /// partitions but hashbuy's tables (by their default names), which get
    /// one ([`Topics::partitions_of`]).
    pub fn start(topics: &[&str], partitions: i32) -> Result<Self, KafkaError> {
        Self::start_brokers(topics, partitions, 1)
    }

    /// [`EmbeddedBroker::start`] with `brokers` brokers (ids 1 and up),
    /// each partition led by one of them: for tests that take one broker
    /// down, or slow it, while the others answer.
    pub fn start_brokers(
        topics: &[&str],
        partitions: i32,
        brokers: i32,
    ) -> Result<Self, KafkaError> {
        let host: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()?;
        let broker = EmbeddedBroker { host, partitions };
        let names = Topics::default();
        for topic in topics {
            broker
                .cluster()
                .create_topic(topic, names.partitions_of(topic, partitions), 1)?;
        }
        // SAFETY: the handle is the host client's own, alive as long as
        // `broker`; the call only stores a number in the mock's settings.
        unsafe {
            let mock =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(broker.host.client().native_ptr());
            if mock.is_null() {
                return Err(KafkaError::MockCluster(RDKafkaErrorCode::Fail));
            }
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, 0);
        }
        Ok(broker)
    }

    /// The `bootstrap.servers` of the broker's own (ephemeral) port.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster().bootstrap_servers()
    }

    /// The mock cluster itself, for tests that make it answer with errors.
    pub fn cluster(&self) -> MockCluster<'_, DefaultProducerContext> {
        // The host was made with `test.mock.num.brokers`, so it has one.
        self.host
            .client()
            .mock_cluster()
            .expect("the host client of a mock cluster has one")
    }

    /// How much each topic keeps before deleting its oldest data.
    pub fn topic_capacity_bytes(&self) -> u64 {
        PARTITION_RETENTION_BYTES * self.partitions as u64
    }
}

/// Relays every connection accepted on `listener` to `target` (the broker's
/// own port) until the task is dropped.
pub async fn forward(listener: TcpListener, target: SocketAddr) -> std::io::Result<()> {
    loop {
        let (mut inbound, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client that hangs up ends its relay; nothing to report.
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
