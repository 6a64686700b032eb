//! Kafka plumbing shared by hashbuy's services.
//!
//! - [`offsets`]: which offset a partition may commit while many of its
//!   records are in flight.
//! - [`config`]: the `[kafka]` table of the config file.
//! - [`client`]: client settings and a bounded check that Kafka answers.
//! - [`produce`]: delivery reports counted, sends that wait out a full
//!   queue.
//! - [`reader`]: a whole topic read outside any group, for tools.
//! - [`group`]: a consumer group member with a queue per partition, whose
//!   rebalances wait for revoked work to be committed, and which notices
//!   lost data.
//! - [`pool`]: a few threads reading the queues of many partitions.
//! - [`health`]: liveness and readiness for `/healthz` and `/readyz`.
//! - [`broker`]: the embedded development broker (librdkafka's mock
//!   cluster) behind `hashbuy broker` and the in-process tests.
pub mod broker;
pub mod client;
pub mod config;
pub mod group;
pub mod health;
pub mod offsets;
pub mod pool;
pub mod produce;
pub mod reader;
