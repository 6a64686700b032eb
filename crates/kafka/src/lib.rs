//! Kafka plumbing shared by hashbuy's services.
//!
//! - [`offsets`]: which offset a partition may commit while many of its
//!   records are in flight.
//! - [`config`]: the `[kafka]` table of the config file.
//! - [`client`]: client settings and a bounded check that Kafka answers.
//! - [`produce`]: delivery reports counted, sends that wait out a full
//!   queue.
//! - [`reader`]: a whole topic read outside any group, for tools.
//! - [`lease`]: how long a member may act outside Kafka (call a payment
//!   provider) before it proves again that it still owns its partitions.
//! - [`driver`]: one consumer-group driver for both services: each
//!   implements only its stage (partitions assigned, revoked, a tick).
//! - [`group`]: what every group member shares besides the driver's loop:
//!   its settings, the end of its input, the group's committed offsets.
//! - [`loss`]: records deleted before they were read, found from offsets
//!   (never from librdkafka's log), and what to do about them.
//! - [`pool`]: a few threads reading the queues of many partitions.
//! - [`health`]: liveness and readiness for `/healthz` and `/readyz`.
//! - [`broker`]: the embedded development broker (librdkafka's mock
//!   cluster) behind `hashbuy broker` and the in-process tests.
//! - [`tables`]: table topics read whole, then followed, by every
//!   instance.
//! - [`lock`] and [`chosen`]: what every owner of partitioned work does
//!   with its table of partitions; [`now_ms`]: the wall clock hashbuy
//!   stamps records with.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

pub mod broker;
pub mod client;
pub mod config;
pub mod driver;
pub mod group;
pub mod health;
pub mod lease;
pub mod loss;
pub mod offsets;
pub mod pool;
pub mod produce;
pub mod reader;
pub mod tables;

/// Locks a mutex, going on past a poisoned one: hashbuy's holders finish
/// each update before anything can panic, and a thread that panics is
/// reported through its join handle.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The partitions of `owned` among `partitions` (all of them when `None`):
/// what a revocation or a shutdown stops.
pub fn chosen<V>(owned: &HashMap<i32, V>, partitions: Option<&[i32]>) -> Vec<i32> {
    match partitions {
        Some(p) => p
            .iter()
            .copied()
            .filter(|p| owned.contains_key(p))
            .collect(),
        None => owned.keys().copied().collect(),
    }
}

/// Now, in milliseconds since the Unix epoch: the wall clock hashbuy stamps
/// dead letters, ledger entries and table changes with (never a tweet's
/// decision, which takes the tweet's own time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
