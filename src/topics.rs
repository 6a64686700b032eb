//! `hashbuy topics create`: make hashbuy's topics on a real broker (Kafka,
//! tansu). The embedded broker makes its own at start-up.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashbuy_kafka::client::{QuietContext, CONNECT_TIMEOUT};
use hashbuy_kafka::config::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
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
    /// Create topics; ones that exist already are left as they are, and
    /// their settings compared with hashbuy's (an error where one it
    /// needs, such as a changelog's compaction, differs).
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
    let mut existing = Vec::new();
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
                eprintln!("{topic} exists already; left as it is");
                existing.push(topic);
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
    let lacking = compare_existing(
        &admin,
        &runtime,
        &options,
        &connection.brokers,
        &existing,
        &settings,
        &names,
    );
    if lacking > 0 {
        bail!(
            "{lacking} of the topics that exist already lack settings hashbuy needs (above); \
             change them before hashbuy uses them"
        );
    }
    Ok(())
}

/// Reads the settings of the `existing` topics and tells where they differ
/// from those hashbuy would create them with (`settings`, by topic; those
/// `names` says it needs are marked): a changelog that is not compacted loses the records
/// a new owner restores from, and a ledger changelog with a week's
/// segments makes each restore read a week. How many topics lack a
/// setting hashbuy needs (one not set counts: the broker's default is
/// Kafka's, deletion). A broker that cannot answer (one without
/// DescribeConfigs) is told of, not held against the topics.
fn compare_existing<'a>(
    admin: &AdminClient<QuietContext>,
    runtime: &tokio::runtime::Runtime,
    options: &AdminOptions,
    brokers: &str,
    existing: &'a [String],
    settings: &HashMap<&str, Vec<(String, String)>>,
    names: &Topics,
) -> usize {
    if existing.is_empty() {
        return 0;
    }
    let resources: Vec<ResourceSpecifier<'a>> = existing
        .iter()
        .map(|t| ResourceSpecifier::Topic(t))
        .collect();
    let described = match runtime.block_on(admin.describe_configs(&resources, options)) {
        Ok(described) => described,
        Err(e) => {
            eprintln!(
                "cannot read the settings of the topics that exist already ({e}); check them \
                 by hand against the ones above"
            );
            return 0;
        }
    };
    let mut lacking = 0;
    for (topic, result) in existing.iter().zip(described) {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) => {
                eprintln!("cannot read {topic}'s settings ({code}); check them by hand");
                continue;
            }
        };
        let wanted = settings.get(topic.as_str()).map_or(&[][..], Vec::as_slice);
        let unlike = unlike(wanted, &names.settings_of(topic), |key| {
            resource.get(key).and_then(|entry| entry.value.clone())
        });
        if unlike.iter().any(|u| u.needed) {
            lacking += 1;
        }
        for u in &unlike {
            // A broker may leave out what was never set on the topic
            // (tansu does): that is the broker's default.
            let theirs = u.theirs.as_deref().map_or_else(
                || format!("no {} set (the broker's default)", u.key),
                |theirs| format!("{}={theirs}", u.key),
            );
            let change = format!(
                "kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics \
                 --entity-name {topic} --add-config {}={}",
                u.key, u.ours
            );
            if u.needed {
                eprintln!(
                    "error: {topic} has {theirs}, where hashbuy needs {}={}: change it with \
                     {change}",
                    u.key, u.ours
                );
            } else {
                eprintln!(
                    "{topic} has {theirs}, where hashbuy would create it with {}={}; to change \
                     it: {change}",
                    u.key, u.ours
                );
            }
        }
    }
    lacking
}

/// A setting of a topic that exists already, unlike what hashbuy would
/// create it with.
#[derive(Debug, PartialEq)]
struct Unlike {
    key: String,
    /// The topic's (`None`: not set, the broker's default).
    theirs: Option<String>,
    /// hashbuy's.
    ours: String,
    /// Whether hashbuy needs it ([`Topics::settings_of`]) rather than only
    /// creating topics with it.
    needed: bool,
}

/// The settings of `wanted` that `theirs` (a topic's, by key) has
/// otherwise; those in `needed` are marked so.
fn unlike(
    wanted: &[(String, String)],
    needed: &[(&str, &str)],
    theirs: impl Fn(&str) -> Option<String>,
) -> Vec<Unlike> {
    wanted
        .iter()
        .filter_map(|(key, ours)| {
            let theirs = theirs(key);
            (theirs.as_deref() != Some(ours.as_str())).then(|| Unlike {
                key: key.clone(),
                theirs,
                ours: ours.clone(),
                needed: needed.iter().any(|(k, _)| k == key),
            })
        })
        .collect()
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

    #[test]
    fn an_existing_topic_is_unlike_in_each_setting_it_has_otherwise_or_leaves_unset() {
        let names = Topics::default();
        let wanted = settings(&names, "settler-ledger", &[]);
        let needed = names.settings_of("settler-ledger");
        let theirs = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let as_made = theirs(&[
            ("cleanup.policy", "compact"),
            ("segment.ms", "3600000"),
            ("delete.retention.ms", "3600000"),
            ("retention.ms", "604800000"),
        ]);
        assert_eq!(unlike(&wanted, &needed, as_made), []);
        let by_default = theirs(&[
            ("cleanup.policy", "delete"),
            ("segment.ms", "604800000"),
            ("delete.retention.ms", "3600000"),
        ]);
        assert_eq!(
            unlike(&wanted, &needed, by_default),
            [
                Unlike {
                    key: "cleanup.policy".into(),
                    theirs: Some("delete".into()),
                    ours: "compact".into(),
                    needed: true,
                },
                Unlike {
                    key: "segment.ms".into(),
                    theirs: Some("604800000".into()),
                    ours: "3600000".into(),
                    needed: false,
                },
            ]
        );
        let silent = unlike(&wanted, &needed, |_| None);
        assert_eq!(silent.len(), 3);
        assert!(silent.iter().all(|u| u.theirs.is_none()));
        assert_eq!(unlike(&settings(&names, "tweets", &[]), &[], |_| None), []);
    }
}
