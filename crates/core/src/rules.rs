//! Purchase rules: from a decoded record and the tables to a [`Decision`].
//!
//! Rules are evaluated at the tweet's own time, never the wall clock, so a
//! replay gives the same answer. A tweet's hashtags are those its text
//! carries, by the twitter-text rules; when it has hashtag entities, only
//! those of them its text also carries (a listed hashtag the text does not
//! carry is an inconsistent record, and buys nothing). In order, the first
//! rule that applies decides:
//!
//! 1. a notice (or a JSON object of no known shape) never buys: `notice`;
//! 2. a retweet never buys: `retweet`;
//! 3. a protected author never buys (purchases are public by design):
//!    `protected_author`;
//! 4. a tweet none of whose hashtags is in the catalog: `no_catalog_hashtag`;
//! 5. an author without a linked card: `account_not_linked`;
//! 6. catalog hashtags whose offers are all outside their active window at
//!    the tweet's time: `offer_inactive`.
//!
//! Otherwise the tweet buys every active offer it names, once each, with
//! amount and currency from the catalog. Counting limits (`max_per_user`,
//! `spend_limit`) are the settler's to enforce: it sees every command of a
//! user. They are copied into the command.
//!
//! An offer in confirm mode is not bought by its purchase tweet: the tweet
//! makes a pending purchase, and a confirmation hashtag names a pending
//! purchase to confirm. Those depend on what the user's earlier tweets
//! left, which these rules do not see: they give them as
//! [`Decision::Confirm`], and [`crate::confirm`] decides them against the
//! partition's pending purchases. For rules 4 to 6 a confirmation hashtag
//! counts as a catalog hashtag of an offer that is always active (its
//! purchase was active when made).

use std::fmt;

use hashbuy_proto::v1::offer::Mode;
use hashbuy_proto::v1::{AccountLink, Offer, PaymentCommand};
use uuid::Uuid;

use crate::confirm::Pending;
use crate::decode::{self, DecodeError, Record, Tweet};
use crate::hashtag::normalize;
use crate::tables::{Accounts, Catalog};

/// The namespace of command ids: UUIDv5 of the URL namespace and
/// `"https://hashbuy.dev/ns/payment-command"`. Fixed forever: changing it
/// would let a replayed tweet charge again.
pub const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x177f_1e1b_f1af_5c65_b652_03d3_32f4_a39c);

/// The command id of a purchase: UUIDv5 in [`COMMAND_ID_NAMESPACE`] over
/// `"<tweet id>:<offer id>"`. The same tweet yields the same id, and the id
/// is the provider's Idempotency-Key, so a duplicate cannot charge twice.
pub fn command_id(tweet_id: &str, offer_id: &str) -> Uuid {
    let name = format!("{tweet_id}:{offer_id}");
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, name.as_bytes())
}

/// Why a record buys nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The record holds no hashtag sign in any spelling, so it cannot buy;
    /// the matcher decides it from a byte scan ([`crate::prefilter`])
    /// without decoding it. [`Rules`] never gives it: a complete decode
    /// says what else the record is.
    NoHashtagSign,
    /// A streaming notice, or an object of no known shape.
    Notice,
    /// A retweet.
    Retweet,
    /// The author's account is protected.
    ProtectedAuthor,
    /// No hashtag of the tweet is in the catalog.
    NoCatalogHashtag,
    /// The author has no linked card.
    AccountNotLinked,
    /// Every offer named is outside its active window at the tweet's time.
    OfferInactive,
    /// The record cannot be decoded.
    Invalid,
}

impl SkipReason {
    /// Every reason, in rule order.
    pub const ALL: [SkipReason; 8] = [
        SkipReason::NoHashtagSign,
        SkipReason::Notice,
        SkipReason::Retweet,
        SkipReason::ProtectedAuthor,
        SkipReason::NoCatalogHashtag,
        SkipReason::AccountNotLinked,
        SkipReason::OfferInactive,
        SkipReason::Invalid,
    ];

    /// The reason's snake_case name, as JSON output and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoHashtagSign => "no_hashtag_sign",
            SkipReason::Notice => "notice",
            SkipReason::Retweet => "retweet",
            SkipReason::ProtectedAuthor => "protected_author",
            SkipReason::NoCatalogHashtag => "no_catalog_hashtag",
            SkipReason::AccountNotLinked => "account_not_linked",
            SkipReason::OfferInactive => "offer_inactive",
            SkipReason::Invalid => "invalid",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a record comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Payment commands of direct-mode offers, one per offer bought (at
    /// least one).
    Buy(Vec<PaymentCommand>),
    /// A tweet that names a confirm-mode offer or carries a confirmation
    /// hashtag: what it does depends on the user's pending purchases
    /// ([`crate::confirm`]).
    Confirm(ConfirmSteps),
    /// Nothing to buy, and why.
    Skip(SkipReason),
}

/// What a tweet of the confirm flow asks, in the order it is done:
/// direct purchases at once, then its confirmations, then its purchases
/// (so a tweet never confirms its own purchase).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfirmSteps {
    /// Commands of the direct-mode offers it buys, as [`Decision::Buy`].
    pub direct: Vec<PaymentCommand>,
    /// The confirm-mode offers it names, each as the pending purchase it
    /// makes.
    pub purchases: Vec<Pending>,
    /// The offers whose confirmation hashtags it carries.
    pub confirmations: Vec<Confirmation>,
}

/// A confirmation hashtag in a tweet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// The offer it confirms.
    pub offer_id: String,
    /// The hashtag as written, without its sign.
    pub hashtag: String,
}

impl Decision {
    /// The commands it buys at once; empty for a skip.
    pub fn commands(&self) -> &[PaymentCommand] {
        match self {
            Decision::Buy(commands) => commands,
            Decision::Confirm(steps) => &steps.direct,
            Decision::Skip(_) => &[],
        }
    }

    /// The commands it buys at once, taken out.
    pub fn into_commands(self) -> Vec<PaymentCommand> {
        match self {
            Decision::Buy(commands) => commands,
            Decision::Confirm(steps) => steps.direct,
            Decision::Skip(_) => Vec::new(),
        }
    }

    /// The skip reason; `None` for a purchase or a step of the confirm flow.
    pub fn skip(&self) -> Option<SkipReason> {
        match self {
            Decision::Buy(_) | Decision::Confirm(_) => None,
            Decision::Skip(reason) => Some(*reason),
        }
    }
}

/// The purchase rules over one catalog and one accounts table.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'t> {
    catalog: &'t Catalog,
    accounts: &'t Accounts,
}

impl<'t> Rules<'t> {
    /// Rules over these tables.
    pub fn new(catalog: &'t Catalog, accounts: &'t Accounts) -> Self {
        Rules { catalog, accounts }
    }

    /// Decodes a raw record on the hot path and decides it. An undecodable
    /// record is `Skip(Invalid)`; callers that need the reason use
    /// [`decode::decode`] and [`Rules::decide`].
    pub fn decide_bytes(&self, bytes: &[u8]) -> Decision {
        self.decide_decoded(&decode::decode(bytes))
    }

    /// The plain-path twin of [`Rules::decide_bytes`], through
    /// [`decode::decode_reference`]; it decides alike.
    pub fn decide_bytes_reference(&self, bytes: &[u8]) -> Decision {
        self.decide_decoded(&decode::decode_reference(bytes))
    }

    /// Decides the outcome of decoding.
    pub fn decide_decoded(&self, decoded: &Result<Record<'_>, DecodeError>) -> Decision {
        match decoded {
            Ok(record) => self.decide(record),
            Err(_) => Decision::Skip(SkipReason::Invalid),
        }
    }

    /// Decides a decoded record.
    pub fn decide(&self, record: &Record<'_>) -> Decision {
        let tweet = match record {
            Record::Tweet(tweet) => tweet,
            Record::Notice(_) | Record::Other => return Decision::Skip(SkipReason::Notice),
        };
        if tweet.retweet {
            return Decision::Skip(SkipReason::Retweet);
        }
        if tweet.user_protected {
            return Decision::Skip(SkipReason::ProtectedAuthor);
        }
        let offers = self.catalog_offers(tweet);
        let confirmations = self.confirmations(tweet);
        if offers.is_empty() && confirmations.is_empty() {
            return Decision::Skip(SkipReason::NoCatalogHashtag);
        }
        let Some(account) = self.accounts.get_at(&tweet.user_id, tweet.timestamp_ms) else {
            return Decision::Skip(SkipReason::AccountNotLinked);
        };
        let mut steps = ConfirmSteps {
            confirmations,
            ..ConfirmSteps::default()
        };
        for (hashtag, offer) in offers {
            if !is_active(offer, tweet.timestamp_ms) {
                continue;
            }
            let command = command(tweet, hashtag, offer, account);
            if offer.mode == Mode::Confirm as i32 {
                steps.purchases.push(pending_purchase(command, offer));
            } else {
                steps.direct.push(command);
            }
        }
        if steps.purchases.is_empty() && steps.confirmations.is_empty() {
            if steps.direct.is_empty() {
                Decision::Skip(SkipReason::OfferInactive)
            } else {
                Decision::Buy(steps.direct)
            }
        } else {
            Decision::Confirm(steps)
        }
    }

    /// The confirmations a tweet carries, once an offer, in order of first
    /// mention, with the hashtag as first written.
    fn confirmations(&self, tweet: &Tweet<'_>) -> Vec<Confirmation> {
        if !self.catalog.has_confirm_offers() {
            return Vec::new();
        }
        let mut confirmations: Vec<Confirmation> = Vec::new();
        for hashtag in &tweet.hashtags {
            if let Some(offer) = self
                .catalog
                .get_by_confirm_hashtag_at(&normalize(hashtag), tweet.timestamp_ms)
            {
                if !confirmations.iter().any(|c| c.offer_id == offer.offer_id) {
                    confirmations.push(Confirmation {
                        offer_id: offer.offer_id.clone(),
                        hashtag: hashtag.to_string(),
                    });
                }
            }
        }
        confirmations
    }

    /// The catalog offers a tweet names, once each, in order of first
    /// mention, with the hashtag as first written.
    fn catalog_offers<'a>(&self, tweet: &'a Tweet<'_>) -> Vec<(&'a str, &'t Offer)> {
        let mut offers: Vec<(&str, &Offer)> = Vec::new();
        for hashtag in &tweet.hashtags {
            if let Some(offer) = self.catalog.get_at(&normalize(hashtag), tweet.timestamp_ms) {
                if !offers.iter().any(|(_, o)| o.offer_id == offer.offer_id) {
                    offers.push((hashtag, offer));
                }
            }
        }
        offers
    }
}

/// Whether an offer is on sale at `at_ms`: from `starts_at` (inclusive) to
/// `ends_at` (exclusive).
pub fn is_active(offer: &Offer, at_ms: i64) -> bool {
    offer.starts_at_ms.is_none_or(|start| start <= at_ms)
        && offer.ends_at_ms.is_none_or(|end| at_ms < end)
}

fn command(
    tweet: &Tweet<'_>,
    hashtag: &str,
    offer: &Offer,
    account: &AccountLink,
) -> PaymentCommand {
    payment_command(
        &tweet.id,
        &tweet.user_id,
        tweet.timestamp_ms,
        hashtag,
        offer,
        account,
    )
}

/// The pending purchase a confirm-mode `offer`'s purchase tweet makes,
/// whose confirmation will produce `command`.
fn pending_purchase(command: PaymentCommand, offer: &Offer) -> Pending {
    let window_ms = i64::from(offer.confirm_window_s) * 1000;
    Pending {
        window_end_ms: command.tweet_timestamp_ms.saturating_add(window_ms),
        command,
        confirm_hashtag: offer.confirm_hashtag.clone(),
        confirm_window_s: offer.confirm_window_s,
    }
}

/// The payment command of a purchase: tweet `tweet_id` by `user_id` at
/// `tweet_timestamp_ms` named `hashtag` (as written), which is `offer`'s,
/// and the author's card is `account`. Its id is [`command_id`].
pub fn payment_command(
    tweet_id: &str,
    user_id: &str,
    tweet_timestamp_ms: i64,
    hashtag: &str,
    offer: &Offer,
    account: &AccountLink,
) -> PaymentCommand {
    PaymentCommand {
        command_id: command_id(tweet_id, &offer.offer_id).to_string(),
        tweet_id: tweet_id.to_owned(),
        user_id: user_id.to_owned(),
        tweet_timestamp_ms,
        hashtag: hashtag.to_owned(),
        offer_id: offer.offer_id.clone(),
        merchant_id: offer.merchant_id.clone(),
        amount: offer.amount,
        currency: offer.currency.clone(),
        customer_id: account.customer_id.clone(),
        payment_method_id: account.payment_method_id.clone(),
        max_per_user: offer.max_per_user,
        spend_limit: account.spend_limit,
        offer_title: offer.title.clone(),
        stock: offer.stock,
        reserved: false,
        sold_out: false,
        stock_partition: None,
        offer_ends_at_ms: offer.ends_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_namespace_is_the_documented_derivation() {
        let derived = Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            b"https://hashbuy.dev/ns/payment-command",
        );
        assert_eq!(COMMAND_ID_NAMESPACE, derived);
    }

    #[test]
    fn command_ids_are_stable_and_distinct() {
        let a = command_id("1", "offer-a");
        assert_eq!(a, command_id("1", "offer-a"));
        assert_ne!(a, command_id("1", "offer-b"));
        assert_ne!(a, command_id("2", "offer-a"));
        assert_eq!(a.get_version_num(), 5);
    }
}
