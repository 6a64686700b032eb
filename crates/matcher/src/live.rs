//! The live tables: the `catalog` and `account-links` topics, read whole
//! before the matcher's first record and followed while it runs
//! ([`hashbuy_kafka::tables`]).
//!
//! Each record is a change over the tables' files: a protobuf `Offer`
//! keyed by its normalized hashtag, or an `AccountLink` keyed by its user
//! id, or a tombstone that removes the key. A change takes effect at its
//! record's timestamp (what `hashbuy catalog put --at` sets), for tweets
//! at or after it by their own time ([`hashbuy_core::history`]). A record
//! that is not the protobuf, an invalid offer or link, or an offer clashing
//! with another (a hashtag or an id) is a dead letter with its reason, and
//! the tables go on without it.
//!
//! A change read after tweets of its time or later were decided (it was
//! produced late, or read while they were being decided) takes effect for
//! the tweets decided from then on; decisions made stand.

use std::sync::Arc;

use hashbuy_kafka::tables::{self, Change, Follower, Letters};
use hashbuy_proto::v1::{AccountLink, Offer};
use prost::Message as _;

use crate::run::{Config, RunError};
use crate::Matcher;

/// The stage name dead letters of the live tables carry.
pub const STAGE: &str = "tables";

/// Reads the table topics of `config` that exist to their end into
/// `matcher`, then follows them until the [`Follower`] is dropped; `None`
/// when neither exists (the tables are the files alone). A missing table
/// topic is said at start, and is an error when the files gave that table
/// nothing either.
pub(crate) fn follow(
    matcher: &Arc<Matcher>,
    config: &Config,
) -> Result<Option<Follower>, RunError> {
    if !config.live_tables {
        return Ok(None);
    }
    let (catalog, accounts) = (
        config.topics.catalog.clone(),
        config.topics.account_links.clone(),
    );
    let mut followed = Vec::new();
    for (name, topic, is_catalog) in [
        ("catalog", &catalog, true),
        ("account links", &accounts, false),
    ] {
        match tables::open(&config.connection, topic)? {
            Some(reader) => followed.push((topic.clone(), reader)),
            None if matcher.table_is_empty(is_catalog) => {
                return Err(RunError::NoTable {
                    table: name,
                    topic: topic.clone(),
                })
            }
            None => tracing::info!(
                "the live {name} is not followed: topic {topic} does not exist (hashbuy topics \
                 create makes it)"
            ),
        }
    }
    if followed.is_empty() {
        return Ok(None);
    }
    let follows_catalog = followed.iter().any(|(topic, _)| *topic == catalog);
    let letters = Letters {
        topic: config.topics.dead_letters.clone(),
        stage: STAGE,
    };
    let applying = Arc::clone(matcher);
    let follower = tables::follow(&config.connection, followed, letters, move |change| {
        apply(&applying, &catalog, change)
    })?;
    if follows_catalog {
        matcher.follow_live_catalog();
    }
    Ok(Some(follower))
}

/// Applies one change to `matcher`'s catalog (read from `catalog`) or
/// account links.
fn apply(matcher: &Matcher, catalog: &str, change: Change<'_>) -> Result<(), String> {
    if change.topic == catalog {
        let offer = change
            .value
            .map(Offer::decode)
            .transpose()
            .map_err(|e| format!("not a protobuf Offer: {e}"))?;
        matcher.change_catalog(change.key, change.at_ms, offer)
    } else {
        let link = change
            .value
            .map(AccountLink::decode)
            .transpose()
            .map_err(|e| format!("not a protobuf AccountLink: {e}"))?;
        matcher.change_account(change.key, change.at_ms, link)
    }
}
