//! Command-line settings every Kafka command shares.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use hashbuy_kafka::client::Connection;

use crate::config;

/// The config file (`--config`), where Kafka is (`--brokers`) and extra
/// librdkafka properties (`-X`).
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Config file (TOML): a `[kafka]` table and one per command; flags and
    /// `HASHBUY_…` variables win over it.
    #[arg(long, env = "HASHBUY_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port, comma-separated [default:
    /// 127.0.0.1:9092].
    #[arg(long, env = "HASHBUY_BROKERS")]
    brokers: Option<String>,
    /// A librdkafka property for every Kafka client of the command, as
    /// KEY=VALUE (repeatable, as in kcat): security settings,
    /// `fetch.wait.max.ms`, ... Applied after the config file's
    /// `[kafka.properties]`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = property)]
    properties: Vec<(String, String)>,
}

/// Parses `-X KEY=VALUE`.
pub fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl KafkaArgs {
    /// Reads the config file and merges it under the flags: the connection,
    /// and the file for command-specific settings.
    pub fn load(&self) -> Result<(Connection, config::File)> {
        let file = config::File::load(self.config.as_deref())?;
        let mut properties: Vec<(String, String)> = file
            .kafka
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.extend(self.properties.iter().cloned());
        let brokers = self
            .brokers
            .clone()
            .or_else(|| file.kafka.brokers.clone())
            .unwrap_or_else(|| "127.0.0.1:9092".to_owned());
        Ok((
            Connection {
                brokers,
                properties,
            },
            file,
        ))
    }
}

/// A flag raised by the first Ctrl-C or SIGTERM, for commands that stop
/// between records, and said in the log. A second signal ends the process
/// at once, with 128 and the signal's number (130 for Ctrl-C, 143 for
/// SIGTERM), as a shell reports a process it killed: a stop can wait
/// minutes on work under way (a settler's provider calls, records and
/// commit, then its ledger's compaction), and an operator who will not
/// wait gets what a crash leaves. Only a signal arms that: a command that
/// raises the flag itself to stop its own threads (`demo`, `bench-e2e`)
/// still takes one signal as the first.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // First, so that it sees `signalled` as an earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&signalled),
        )
        .context("cannot watch for signals")?;
        signal_hook::flag::register(signal, Arc::clone(&signalled))
            .context("cannot watch for signals")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot watch for signals")?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot watch for signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = if signal == SIGINT {
                    "Ctrl-C"
                } else {
                    "SIGTERM"
                };
                tracing::info!(
                    "{name}: stopping once the work under way is done; a second Ctrl-C or \
                     SIGTERM stops at once, as a crash would"
                );
            }
        })
        .context("cannot start the signal thread")?;
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// `demo` and `bench-e2e` raise the flag themselves to stop their own
    /// threads: a signal then is still the first, and stops nothing at
    /// once. (Were it taken as a second, this test's process would end
    /// with 143 here.) The flag stays raised.
    #[test]
    fn a_flag_raised_by_the_command_does_not_make_the_next_signal_a_second() {
        let flag = stop_flag().expect("signals watched");
        flag.store(true, Ordering::Relaxed);
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).expect("raised");
        assert!(flag.load(Ordering::Relaxed));
    }
}
