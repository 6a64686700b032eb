//! `hashbuy broker`: the embedded development broker on a fixed port, until
//! Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use hashbuy_kafka::broker::{
    forward, EmbeddedBroker, DEFAULT_PARTITIONS, PARTITION_RETENTION_BYTES,
};
use hashbuy_kafka::config::Topics;

/// Arguments of `hashbuy broker`.
#[derive(clap::Args)]
pub struct Args {
    /// Port to serve on, on 127.0.0.1.
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Partitions of each topic. The broker keeps at most 5 MB per
    /// partition and silently deletes older data, so more partitions hold
    /// more.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Topics to create (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = Topics::default().all().map(String::from))]
    topics: Vec<String>,
}

/// Runs `hashbuy broker`.
pub fn run(args: Args) -> Result<()> {
    let topics: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    let broker = EmbeddedBroker::start(&topics, args.partitions)
        .context("cannot start the embedded broker")?;
    let target = broker
        .bootstrap_servers()
        .parse()
        .context("the embedded broker gave an unexpected address")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let address = format!("127.0.0.1:{}", args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| {
                format!("cannot listen on {address} (is another broker there? try --port)")
            })?;
        eprintln!(
            "hashbuy broker: development broker on {address}, topics {} with {} partitions each.\n\
             It keeps everything in memory, at most {} MB per partition ({} MB per topic); \
             older data is deleted silently. Ctrl-C stops it.",
            topics.join(", "),
            args.partitions,
            PARTITION_RETENTION_BYTES / (1024 * 1024),
            broker.topic_capacity_bytes() / (1024 * 1024),
        );
        tokio::select! {
            served = forward(listener, target) => served.context("the broker's port failed"),
            signal = shutdown_signal() => signal,
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot watch for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}
