//! Command-line settings every Kafka command shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use hashbuy_kafka::client::Connection;

/// Where Kafka is (`--brokers`) and extra librdkafka properties (`-X`).
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port, comma-separated.
    #[arg(long, env = "HASHBUY_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// A librdkafka property for every Kafka client of the command, as
    /// KEY=VALUE (repeatable, as in kcat): security settings,
    /// `fetch.wait.max.ms`, ...
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = property)]
    properties: Vec<(String, String)>,
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl KafkaArgs {
    /// The connection these settings describe.
    pub fn connection(&self) -> Connection {
        Connection {
            brokers: self.brokers.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// A flag raised by the first Ctrl-C or SIGTERM, for commands that stop
/// between records.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot watch for signals")?;
    }
    Ok(flag)
}
