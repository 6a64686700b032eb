//! `hashbuy topics create`: make hashbuy's topics on a real broker (Kafka,
//! tansu). The embedded broker makes its own at start-up.

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
    /// always compacted.
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
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                t,
                names.partitions_of(t, args.partitions),
                TopicReplication::Fixed(args.replication),
            );
            // A changelog or a table keeps every key's latest state, for
            // good: a retention policy given for all topics does not apply.
            let topic = names
                .settings_of(t)
                .into_iter()
                .fold(topic, |topic, (key, value)| topic.set(key, value));
            args.topic_config
                .iter()
                .filter(|(key, _)| applies(&names, t, key))
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
                let settings: String = names
                    .settings_of(&topic)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .chain(
                        args.topic_config
                            .iter()
                            .filter(|(key, _)| applies(&names, &topic, key))
                            .cloned(),
                    )
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

/// Whether a `--topic-config` setting applies to `topic`: all do, except
/// one of the settings hashbuy gives it ([`Topics::settings_of`]): a
/// changelog or a table stays compacted, and a table keeps its history.
fn applies(names: &Topics, topic: &str, key: &str) -> bool {
    !names.settings_of(topic).iter().any(|(k, _)| *k == key)
}
