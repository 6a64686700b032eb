//! hashbuy's matcher: tweets in, payment commands and dead letters out.
//!
//! This crate starts with the matcher's step for one record, free of
//! Kafka: [`Matcher::handle`] decodes a tweet record, decides it against
//! the tables, and appends what the record produces: one
//! [`Output::Command`] per offer bought (keyed by the user id, so a user's
//! commands share a partition and settle in order; a limited offer's goes
//! to the reservation step first, keyed by the offer: see
//! [`Output::to_record`] and `hashbuy_core::stock`), or one
//! [`Output::DeadLetter`] for a record that cannot be decoded, carrying
//! where it came from, its bytes and the reason. A record holding no
//! hashtag sign is decided `no_hashtag_sign` from a byte scan instead of a
//! decode ([`Validation`]; the argument is in [`hashbuy_core::prefilter`]):
//! most of the firehose, and most of the matcher's work before it.
//!
//! When the catalog has confirm-mode offers, each partition also keeps its
//! pending purchases ([`PartitionFlow`], the argument in
//! [`hashbuy_core::confirm`]): a purchase tweet adds one and an
//! [`Output::Reply`] prompting the buyer, a confirmation turns one into its
//! command, and the window's end or a delete of the purchase tweet ends one
//! with a reply. [`run`] puts it on Kafka: consuming, producing, and
//! committing in batches, exactly once with transactions or at least once,
//! with each partition's pending purchases written to their changelog in
//! the same batch as its outputs and offsets, and with the live tables
//! (the `catalog` and `account-links` topics) followed over the files, each
//! tweet decided by the tables at its own time ([`Matcher::change_catalog`],
//! [`Matcher::change_account`]).

mod batch;
mod live;
mod restore;
pub mod run;
mod stage;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use hashbuy_core::confirm::{takes_part, PartitionFlow, Step};
use hashbuy_core::decode::{decode, DecodeError, Record};
use hashbuy_core::prefilter::{skim, Skim};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_core::{Rules, SkipReason};
use hashbuy_proto::v1::stock_request::Kind;
use hashbuy_proto::v1::{AccountLink, DeadLetter, Offer, PaymentCommand, Reply, StockRequest};
use prost::Message;

/// The stage name dead letters of the matcher carry.
pub const STAGE: &str = "match";

/// A record as read from the tweets topic.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Where it was read.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: &'a [u8],
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A payment command, for the commands topic.
    Command {
        /// The user id: the record's key.
        key: String,
        /// The command.
        command: PaymentCommand,
    },
    /// An answer to the buyer, for the replies topic.
    Reply {
        /// The user id: the record's key.
        key: String,
        /// The reply.
        reply: Reply,
    },
    /// An undecodable record, for the dead-letters topic.
    DeadLetter(DeadLetter),
}

impl Output {
    /// The Kafka key and protobuf value to produce. A limited offer's
    /// command (one with a `stock`) is a [`StockRequest`] for the
    /// reservation step, keyed by its offer id (the stock-requests topic),
    /// so every command of an offer meets at one owner; any other command
    /// is keyed by its user.
    pub fn to_record(&self) -> (Option<Vec<u8>>, Vec<u8>) {
        match self {
            Output::Command { command, .. } if command.stock > 0 => (
                Some(command.offer_id.clone().into_bytes()),
                StockRequest {
                    kind: Some(Kind::Reserve(command.clone())),
                }
                .encode_to_vec(),
            ),
            Output::Command { key, command } => {
                (Some(key.clone().into_bytes()), command.encode_to_vec())
            }
            Output::Reply { key, reply } => (Some(key.clone().into_bytes()), reply.encode_to_vec()),
            Output::DeadLetter(letter) => (letter.key.clone(), letter.encode_to_vec()),
        }
    }
}

/// What one record came to, for counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The record's kind (`tweet`, `delete`, `limit`, `other`, `invalid`,
    /// or `skimmed`: no hashtag sign, decided without a complete decode).
    pub kind: &'static str,
    /// Why it bought nothing, or `None` if it bought.
    pub skip: Option<SkipReason>,
    /// Commands it caused.
    pub commands: usize,
    /// Its decision, for the metrics: the skip reason, or `buy` if it
    /// bought a direct-mode offer; `None` if it only took steps of the
    /// confirm flow.
    pub decision: Option<&'static str>,
    /// The steps of the confirm flow it took ([`Step::as_str`]), in order,
    /// the expiries its time caused included.
    pub steps: Vec<&'static str>,
    /// For a skimmed record taken in the sample, what its complete decode
    /// found.
    pub sampled: Option<Sampled>,
}

/// What the complete decode of a sampled skimmed record found. It never
/// changes the record's decision (no sign, no purchase), only the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampled {
    /// It decodes.
    Valid,
    /// It does not: `--validate all` would have dead-lettered it.
    Malformed(DecodeError),
}

/// The kind [`Handled`] gives a record decided from the prefilter's scan.
pub const SKIMMED: &str = "skimmed";

/// How completely the matcher validates records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Decode completely the records that hold a hashtag sign; decide the
    /// rest `no_hashtag_sign` from the prefilter's byte scan
    /// ([`hashbuy_core::prefilter`]), and decode every `sample_every`-th
    /// of those (by offset; 0: none) completely to count corruption.
    Signed {
        /// One skimmed record in this many (by offset) is validated.
        sample_every: u64,
    },
    /// Decode and validate every record completely.
    All,
}

/// The default share of skimmed records validated completely: 1%.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.01;

impl Validation {
    /// [`Validation::Signed`] validating a share `rate` (0 to 1) of the
    /// skimmed records, rounded to one in a whole number.
    pub fn signed(rate: f64) -> Validation {
        let sample_every = if rate > 0.0 {
            // At most u64::MAX by the cast's saturation; 1 at rate 1.
            (1.0 / rate.min(1.0)).round() as u64
        } else {
            0
        };
        Validation::Signed { sample_every }
    }
}

impl Default for Validation {
    fn default() -> Self {
        Validation::signed(DEFAULT_SAMPLE_RATE)
    }
}

/// The matcher's tables and how it validates records.
#[derive(Debug)]
pub struct Matcher {
    /// Read by every record's decision; written only by a live table's
    /// change, which is rare, so readers seldom wait.
    tables: RwLock<Tables>,
    /// The live catalog is followed: a confirm-mode offer may come at any
    /// time, so pending purchases are kept from the start.
    live_catalog: AtomicBool,
    validation: Validation,
}

/// The catalog and the account links.
#[derive(Debug)]
struct Tables {
    catalog: Catalog,
    accounts: Accounts,
}

impl Matcher {
    /// A matcher over these tables, validating as [`Validation::default`].
    pub fn new(catalog: Catalog, accounts: Accounts) -> Self {
        Matcher {
            tables: RwLock::new(Tables { catalog, accounts }),
            live_catalog: AtomicBool::new(false),
            validation: Validation::default(),
        }
    }

    /// The same matcher, validating as `validation` says.
    pub fn with_validation(self, validation: Validation) -> Self {
        Matcher { validation, ..self }
    }

    /// Whether each partition keeps a [`PartitionFlow`] for
    /// [`Matcher::handle`]: the catalog has confirm-mode offers, or it is
    /// followed live, where one may come at any time.
    pub fn keeps_pending(&self) -> bool {
        self.live_catalog.load(Ordering::Relaxed) || self.tables().catalog.has_confirm_offers()
    }

    /// Applies a change of the live catalog (see
    /// [`Catalog::change`](hashbuy_core::tables::Catalog::change)): the
    /// offer of normalized hashtag `key` from `at_ms` on, or its removal.
    pub fn change_catalog(
        &self,
        key: &str,
        at_ms: i64,
        offer: Option<Offer>,
    ) -> Result<(), String> {
        self.tables_mut().catalog.change(key, at_ms, offer)
    }

    /// Applies a change of the live account links (see
    /// [`Accounts::change`](hashbuy_core::tables::Accounts::change)).
    pub fn change_account(
        &self,
        user_id: &str,
        at_ms: i64,
        link: Option<AccountLink>,
    ) -> Result<(), String> {
        self.tables_mut().accounts.change(user_id, at_ms, link)
    }

    /// When the catalog's latest change of normalized hashtag `key` takes
    /// effect, if it has one: for a program that put a change and waits
    /// until a running matcher has it.
    pub fn catalog_changed_at(&self, key: &str) -> Option<i64> {
        self.tables().catalog.latest_change(key)
    }

    /// Whether the files gave no offers (`catalog`) or no links: with no
    /// live table over them either, the matcher could buy nothing.
    pub(crate) fn table_is_empty(&self, catalog: bool) -> bool {
        let tables = self.tables();
        if catalog {
            tables.catalog.is_empty()
        } else {
            tables.accounts.is_empty()
        }
    }

    /// Marks the catalog as followed live, before the first record.
    pub(crate) fn follow_live_catalog(&self) {
        self.live_catalog.store(true, Ordering::Relaxed);
    }

    fn tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // A writer only applies a checked change, which cannot panic
        // half-way; the tables stay whole either way.
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn tables_mut(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles one record, appending what it produces to `out`. `now_ms`
    /// stamps dead letters; decisions use the tweet's own time. `flow` is
    /// the record's partition's pending purchases: given when
    /// [`Matcher::keeps_pending`], else `None`.
    pub fn handle(
        &self,
        source: &Source<'_>,
        now_ms: i64,
        flow: Option<&mut PartitionFlow>,
        out: &mut Vec<Output>,
    ) -> Handled {
        if let Validation::Signed { sample_every } = self.validation {
            if skim(source.value) == Skim::NoSign {
                // In u64: cast to i64, a sample_every near u64::MAX would
                // be -1, of which every offset is a multiple.
                let sampled = (sample_every > 0
                    && u64::try_from(source.offset).is_ok_and(|o| o % sample_every == 0))
                .then(|| match decode(source.value) {
                    Ok(_) => Sampled::Valid,
                    Err(error) => Sampled::Malformed(error),
                });
                return Handled {
                    kind: SKIMMED,
                    skip: Some(SkipReason::NoHashtagSign),
                    commands: 0,
                    decision: Some(SkipReason::NoHashtagSign.as_str()),
                    steps: Vec::new(),
                    sampled,
                };
            }
        }
        let tables = self.tables();
        let rules = Rules::new(&tables.catalog, &tables.accounts);
        match decode(source.value) {
            Ok(record) => {
                let decision = rules.decide(&record);
                let mut handled = Handled {
                    kind: record.kind(),
                    skip: decision.skip(),
                    commands: decision.commands().len(),
                    decision: match decision.skip() {
                        Some(skip) => Some(skip.as_str()),
                        None if decision.commands().is_empty() => None,
                        None => Some("buy"),
                    },
                    steps: Vec::new(),
                    sampled: None,
                };
                let mut steps = Vec::new();
                if let Some(flow) = flow.filter(|_| takes_part(&record, source.value)) {
                    flow.record(&record, &decision, source.offset, &mut steps);
                }
                if let Record::Tweet(tweet) = &record {
                    out.extend(decision.into_commands().into_iter().map(|command| {
                        Output::Command {
                            key: tweet.user_id.to_string(),
                            command,
                        }
                    }));
                }
                for step in steps {
                    handled.steps.push(step.as_str());
                    match step {
                        Step::Confirmed(command) => {
                            handled.commands += 1;
                            out.push(Output::Command {
                                key: command.user_id.clone(),
                                command,
                            });
                        }
                        Step::Pending(reply) | Step::Expired(reply) | Step::Cancelled(reply) => out
                            .push(Output::Reply {
                                key: reply.user_id.clone(),
                                reply,
                            }),
                        Step::AlreadyPending { .. } | Step::Unconfirmed { .. } => {}
                    }
                }
                handled
            }
            Err(error) => {
                out.push(Output::DeadLetter(dead_letter(source, &error, now_ms)));
                Handled {
                    kind: "invalid",
                    skip: Some(SkipReason::Invalid),
                    commands: 0,
                    decision: Some(SkipReason::Invalid.as_str()),
                    steps: Vec::new(),
                    sampled: None,
                }
            }
        }
    }
}

fn dead_letter(source: &Source<'_>, error: &DecodeError, now_ms: i64) -> DeadLetter {
    DeadLetter {
        topic: source.topic.to_owned(),
        partition: source.partition,
        offset: source.offset,
        key: source.key.map(<[u8]>::to_vec),
        value: source.value.to_vec(),
        reason: error.to_string(),
        stage: STAGE.to_owned(),
        dead_at_ms: now_ms,
        ..DeadLetter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Matcher {
        let (catalog, accounts) = hashbuy_core::samples::tables();
        Matcher::new(catalog, accounts)
    }

    fn source(offset: i64, value: &[u8]) -> Source<'_> {
        Source {
            topic: "tweets",
            partition: 3,
            offset,
            key: Some(b"k"),
            value,
        }
    }

    #[test]
    fn the_sample_stream_gives_commands_keyed_by_user_and_dead_letters() {
        let matcher = matcher();
        let mut out = Vec::new();
        let mut handled = Vec::new();
        for (i, line) in hashbuy_core::samples::TWEETS.lines().enumerate() {
            handled.push(matcher.handle(&source(i as i64, line.as_bytes()), 99, None, &mut out));
        }
        let commands: Vec<(&str, &str)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Command { key, command } => Some((key.as_str(), command.offer_id.as_str())),
                Output::DeadLetter(_) | Output::Reply { .. } => None,
            })
            .collect();
        assert_eq!(
            commands,
            [
                ("12345", "red-sneakers-42"),
                ("12345", "red-sneakers-42"),
                ("12345", "cafe-latte"),
                ("987654321098765432", "concert-ticket"),
                ("67890", "cafe-latte"),
                ("987654321098765432", "red-sneakers-42"),
            ]
        );
        let letters: Vec<&DeadLetter> = out
            .iter()
            .filter_map(|o| match o {
                Output::DeadLetter(letter) => Some(letter),
                Output::Command { .. } | Output::Reply { .. } => None,
            })
            .collect();
        assert_eq!(
            letters.iter().map(|l| l.offset).collect::<Vec<_>>(),
            [10, 11, 17]
        );
        let cut = letters[0];
        assert_eq!(
            (
                cut.topic.as_str(),
                cut.partition,
                cut.stage.as_str(),
                cut.dead_at_ms
            ),
            ("tweets", 3, "match", 99)
        );
        assert_eq!(cut.key.as_deref(), Some(&b"k"[..]));
        assert!(cut.reason.starts_with("invalid JSON"), "{}", cut.reason);
        assert_eq!(letters[1].reason, "empty record");
        assert_eq!(letters[2].reason, "missing id");
        assert_eq!(
            handled.iter().map(|h| h.commands).sum::<usize>(),
            commands.len()
        );
        assert_eq!(
            handled[2],
            Handled {
                kind: "tweet",
                skip: Some(SkipReason::Retweet),
                commands: 0,
                decision: Some("retweet"),
                steps: Vec::new(),
                sampled: None,
            }
        );
    }

    #[test]
    fn outputs_encode_as_their_protobuf_with_the_user_as_key() {
        let matcher = matcher();
        let mut out = Vec::new();
        let line = hashbuy_core::samples::TWEETS
            .lines()
            .next()
            .expect("a line");
        matcher.handle(&source(0, line.as_bytes()), 0, None, &mut out);
        let (key, value) = out[0].to_record();
        assert_eq!(key.as_deref(), Some(&b"12345"[..]));
        let command = PaymentCommand::decode(value.as_slice()).expect("a PaymentCommand");
        assert_eq!(command.amount, 4200);
    }
}
