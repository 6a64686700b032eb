//! `hashbuy topics create`: make hashbuy's topics on a real broker (Kafka,
//! tansu). The embedded broker makes its own at start-up.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashbuy_kafka::client::{QuietContext, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka_args::KafkaArgs;

/// Arguments of `hashbuy topics`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(clap::Subcommand)]
enum TopicsCommand {
    /// Create topics; ones that exist already are left as they are.
    Create(CreateArgs),
}

/// Arguments of `hashbuy topics create`.
#[derive(clap::Args)]
struct CreateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Partitions of each topic but the tables, which get one. Commands of
    /// one user share a partition, so this bounds how many settle in
    /// parallel.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Replicas of each partition.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    replication: i32,
    /// Topics to create (comma-separated) [default: hashbuy's topics, named
    /// as the config file's `[kafka.topics]` names them].
    #[arg(long, value_delimiter = ',')]
    topics: Option<Vec<String>>,
    /// A topic setting, as KEY=VALUE (repeatable), for every topic created
    /// (`retention.ms=...`). The state changelogs (the settler's
    /// `settler-ledger`, the matcher's `pending-purchases`) and the tables
    /// (`catalog`, `account-links`, `merchants`, one partition each) are
    /// always compacted. The ledger changelog gets `segment.ms` and
    /// `delete.retention.ms` of an hour unless given here: a new owner's
    /// restore then reads its live entries and about an hour's records,
    /// not the week Kafka's defaults leave uncompacted.
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::kafka_args::property)]
    topic_config: Vec<(String, String)>,
}

/// Runs `hashbuy topics`.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        TopicsCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let (connection, file) = args.kafka.load()?;
    let names = file.kafka.topics;
    let topics: Vec<String> = args
        .topics
        .unwrap_or_else(|| names.all().map(String::from).to_vec());
    connection.check_reachable(CONNECT_TIMEOUT)?;
    let admin: AdminClient<QuietContext> = connection
        .config()
        .create_with_context(QuietContext)
        .context("cannot create an admin client")?;
    let settings: HashMap<&str, Vec<(String, String)>> = topics
        .iter()
        .map(|t| (t.as_str(), settings(&names, t, &args.topic_config)))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                t,
                names.partitions_of(t, args.partitions),
                TopicReplication::Fixed(args.replication),
            );
            settings[t.as_str()]
                .iter()
                .fold(topic, |topic, (key, value)| topic.set(key, value))
        })
        .collect();
    for topic in &topics {
        for (key, value) in names.settings_of(topic) {
            if args.topic_config.iter().any(|(k, _)| k == key) {
                eprintln!("{topic} keeps {key}={value}: --topic-config {key} is not applied to it");
            }
        }
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let results = runtime
        .block_on(admin.create_topics(&new_topics, &options))
        .context("the broker did not create the topics within 15 s (the embedded broker cannot create topics: it makes its own at start-up)")?;
    let mut failed = 0;
    for result in results {
        match result {
            Ok(topic) => {
                let settings: String = settings
                    .get(topic.as_str())
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!(", {k}={v}"))
                    .collect();
                eprintln!(
                    "created {topic} ({} partitions, replication {}{settings})",
                    names.partitions_of(&topic, args.partitions),
                    args.replication,
                )
            }
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("{topic} exists already; left as it is")
            }
            Err((topic, code)) => {
                failed += 1;
                eprintln!("cannot create {topic}: {code}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} topics were not created");
    }
    Ok(())
}

/// The settings `topic` is created with: hashbuy's own
/// ([`Topics::settings_of`]: a changelog or a table stays compacted, and a
/// table keeps its history, whatever `--topic-config` says), then its
/// defaults ([`Topics::defaults_of`]) but those `asked` names, then the
/// rest of `asked`.
fn settings(names: &Topics, topic: &str, asked: &[(String, String)]) -> Vec<(String, String)> {
    let fixed = names.settings_of(topic);
    let is_fixed = |key: &str| fixed.iter().any(|(k, _)| *k == key);
    let is_asked = |key: &str| asked.iter().any(|(k, _)| k == key);
    fixed
        .iter()
        .chain(
            names
                .defaults_of(topic)
                .iter()
                .filter(|(k, _)| !is_asked(k)),
        )
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .chain(asked.iter().filter(|(k, _)| !is_fixed(k)).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_topic_config_overrides_the_ledgers_defaults_but_never_its_compaction() {
        let names = Topics::default();
        let told = asked(&[
            ("cleanup.policy", "delete"),
            ("segment.ms", "1000"),
            ("retention.ms", "60000"),
        ]);
        assert_eq!(
            settings(&names, "settler-ledger", &told),
            asked(&[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "3600000"),
                ("segment.ms", "1000"),
                ("retention.ms", "60000"),
            ])
        );
        assert_eq!(
            settings(&names, "settler-ledger", &[]),
            asked(&[
                ("cleanup.policy", "compact"),
                ("segment.ms", "3600000"),
                ("delete.retention.ms", "3600000"),
            ])
        );
        assert_eq!(settings(&names, "tweets", &told), told);
        assert_eq!(
            settings(&names, "catalog", &asked(&[("delete.retention.ms", "1")]))
                .iter()
                .filter(|(k, _)| k == "delete.retention.ms")
                .count(),
            1,
            "a table keeps its tombstones for good"
        );
    }
}
