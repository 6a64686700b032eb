//! The confirm flow of confirm-mode offers, for one partition of the
//! tweets topic: pending purchases, their confirmations, their windows,
//! and the replies to the buyer.
//!
//! A purchase tweet of a confirm-mode offer does not buy: it makes a
//! *pending purchase* and a prompt ("Tweet #ConfirmRedSneakers42 within
//! 15 min to buy Red Sneakers for $42.00"). A tweet or reply by the same
//! user carrying the offer's confirmation hashtag, with an event time in
//! the window (from the purchase tweet's time, inclusive, to that time plus
//! the offer's `confirm_window_s`, exclusive), turns it into its payment
//! command: the command the purchase tweet would have made in direct mode,
//! with its id, price and card, so a replay gives the same command. The
//! window's end, or a delete of the purchase tweet, ends it with a reply
//! instead.
//!
//! Tweets are keyed by user, so a user's tweets share a partition and the
//! partition's [`PartitionFlow`] sees all of them, in order. It is the state
//! the matcher restores from its changelog ([`PartitionFlow::restore`],
//! [`PartitionFlow::take_changes`]), written in the same transaction as the
//! commands, the replies and the offsets.
//!
//! # Time
//!
//! Windows close by event time, never by the wall clock: a recording gives
//! the same steps at any replay speed. The partition's *stream time* is the
//! latest event time among the tweets it has read that carry a hashtag.
//! (Records without a hashtag sign are not decoded at all on the matcher's
//! hot path, so their times cannot count, and counting them only when they
//! are decoded, `--validate all`, would make the steps depend on the
//! validation.) A tweet whose id is a snowflake counts at its id's time
//! when its own time is more than [`IMPLAUSIBLE_MS`] away from it: one
//! record with a corrupt time far in the future would otherwise close
//! every window of its partition, for good. Delete notices, whose time
//! nothing vouches for, do not move it. A pending purchase *closes*, with
//! an expiry reply, once stream time reaches its window's end plus
//! [`ALLOWED_LATENESS_MS`]: a confirmation written inside the window may
//! arrive that much after later tweets of the partition and still count.
//!
//! # Decisions
//!
//! - **A confirmation hashtag names one offer**, so a user with pending
//!   purchases of two offers confirms the one whose hashtag the tweet
//!   carries; a tweet carrying both hashtags confirms both. A user has at
//!   most one pending purchase an offer.
//! - **A second purchase tweet of an offer already pending** changes
//!   nothing ([`Step::AlreadyPending`]): the first purchase keeps its
//!   window and no second prompt is sent (a shopper repeating a tweet is
//!   not prompted twice). Once the first is confirmed, expired or
//!   cancelled, a new purchase tweet starts again.
//! - **A confirmation read before its purchase** (a disordered stream)
//!   confirms nothing, and is not kept for the purchase that may follow: a
//!   confirmation answers a prompt, which cannot have been seen yet. Nor
//!   does one whose event time is before the purchase tweet's
//!   ([`Unconfirmed::BeforePurchase`]) or at or after the window's end
//!   ([`Unconfirmed::AfterWindow`]).
//! - **A retweet never confirms** (the rules skip retweets), and the
//!   confirmation hashtags a tweet's own text does not carry count for
//!   nothing, so quoting a confirmation does not confirm.
//! - **A tweet carrying a purchase and a confirmation hashtag** of one
//!   offer confirms the purchase pending before it (if any), then makes a
//!   new pending purchase: confirmations go first, so a tweet never
//!   confirms itself.
//! - **A purchase tweet read after its window has closed** (stream time is
//!   past its end plus the lateness) is not kept: it is answered at once
//!   with an expiry.
//! - **A delete** of a purchase tweet whose purchase is pending cancels it,
//!   with a reply, if the notice opens with its `delete` key as the stream
//!   writes it ([`takes_part`]). Once its command was produced, a delete changes nothing:
//!   the charge is the settler's, and a refund is not a tweet's to ask.

use std::collections::{BTreeSet, HashMap};

use hashbuy_proto::v1::reply::Kind;
use hashbuy_proto::v1::{PaymentCommand, PendingPurchase, PendingPurchases, Reply, StreamTime};
use prost::Message;

use crate::decode::{snowflake_ms, Notice, Record, Tweet};
use crate::money::format_amount;
use crate::prefilter;
use crate::replies;
use crate::rules::{ConfirmSteps, Confirmation, Decision};

/// How long after a window's end (in stream time) a confirmation written
/// inside the window may still arrive: a minute. The firehose delivers a
/// partition's tweets within seconds of their time; a minute covers a
/// producer's retries without holding purchases open much past their
/// window.
pub const ALLOWED_LATENESS_MS: i64 = 60_000;

/// How far a tweet's own time may be from the time its snowflake id
/// carries before stream time takes the id's instead: an hour. Twitter
/// assigns both when the tweet is made; they differ by milliseconds.
pub const IMPLAUSIBLE_MS: i64 = 3_600_000;

/// The changelog key of a partition's stream time; user ids, the other
/// keys, are decimal.
pub const STREAM_TIME_KEY: &str = "stream-time";

/// Whether a decoded record, whose bytes are `bytes`, takes part in the
/// flow: any but a delete notice that does not open with its `delete` key
/// (see [`prefilter::delete_notice`]), which the matcher skims without
/// decoding under its default validation, and so must not act under
/// another.
pub fn takes_part(record: &Record<'_>, bytes: &[u8]) -> bool {
    !matches!(record, Record::Notice(Notice::Delete { .. })) || prefilter::delete_notice(bytes)
}

/// A pending purchase: what a purchase tweet of a confirm-mode offer
/// leaves until its confirmation, its window's end or its delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The command its confirmation produces, made at the purchase tweet's
    /// time: its price and card are those the shopper was prompted with.
    pub command: PaymentCommand,
    /// A confirmation counts if its event time is before this: the
    /// purchase tweet's time plus the offer's window.
    pub window_end_ms: i64,
    /// The offer's confirmation hashtag, as the shopper was prompted with
    /// it.
    pub confirm_hashtag: String,
    /// The offer's window, as the shopper was prompted with it.
    pub confirm_window_s: u32,
}

impl Pending {
    /// As the changelog holds it.
    pub fn to_proto(&self) -> PendingPurchase {
        PendingPurchase {
            command: Some(self.command.clone()),
            window_end_ms: self.window_end_ms,
            confirm_hashtag: self.confirm_hashtag.clone(),
            confirm_window_s: self.confirm_window_s,
        }
    }

    /// From the changelog; `None` without its command.
    pub fn from_proto(purchase: PendingPurchase) -> Option<Pending> {
        Some(Pending {
            command: purchase.command?,
            window_end_ms: purchase.window_end_ms,
            confirm_hashtag: purchase.confirm_hashtag,
            confirm_window_s: purchase.confirm_window_s,
        })
    }
}

/// What one record did in the flow, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A purchase is pending; the reply is its prompt.
    Pending(Reply),
    /// A purchase tweet of an offer the user already has pending: nothing
    /// changes.
    AlreadyPending {
        /// The offer.
        offer_id: String,
        /// The purchase tweet that is pending.
        pending_tweet_id: String,
    },
    /// A pending purchase is confirmed: its command is to be produced.
    Confirmed(PaymentCommand),
    /// A confirmation that confirms nothing.
    Unconfirmed {
        /// The offer its hashtag names.
        offer_id: String,
        /// Why.
        why: Unconfirmed,
    },
    /// A pending purchase's window closed without a confirmation (or a
    /// purchase tweet was read after its window closed); the reply says so.
    Expired(Reply),
    /// A pending purchase's tweet was deleted; the reply says so.
    Cancelled(Reply),
}

impl Step {
    /// The step's snake_case name, as metrics and `inspect` spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Pending(_) => "pending",
            Step::AlreadyPending { .. } => "already_pending",
            Step::Confirmed(_) => "confirmed",
            Step::Unconfirmed { why, .. } => why.as_str(),
            Step::Expired(_) => "expired",
            Step::Cancelled(_) => "cancelled",
        }
    }
}

/// Why a confirmation confirms nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconfirmed {
    /// The user has no pending purchase of the offer.
    NoPending,
    /// Its event time is before the pending purchase tweet's.
    BeforePurchase,
    /// Its event time is at or after the window's end.
    AfterWindow,
}

impl Unconfirmed {
    /// The reason's snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Unconfirmed::NoPending => "no_pending_purchase",
            Unconfirmed::BeforePurchase => "confirmation_before_purchase",
            Unconfirmed::AfterWindow => "confirmation_after_window",
        }
    }
}

/// A changelog record that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changelog record {key:?}: {problem}")]
pub struct RestoreError {
    /// The record's key, as text.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// An owner of a partition's changelog: its epoch, and its id within the
/// epoch (see [`PartitionFlow`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    /// Higher for each owner.
    pub epoch: u64,
    /// Random: tells apart two owners that claimed the same epoch.
    pub id: u64,
}

impl Owner {
    fn of(epoch: u64, id: u64) -> Owner {
        Owner { epoch, id }
    }
}

/// What became of a changelog record taken in by
/// [`PartitionFlow::restore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// It is part of the state.
    Taken,
    /// A former owner wrote it after a later owner had claimed the
    /// partition: left out.
    Fenced,
}

/// One partition's pending purchases and stream time; see the module docs.
///
/// # The changelog
///
/// Each user's record carries its *as-of offset*: the state includes the
/// effect of every record of the partition before it. A record read again
/// after a crash (at least once, where the changelog may be written and
/// the offsets not) whose author's restored state is as of a later offset
/// has done its part already: it only moves stream time
/// ([`PartitionFlow::record`]). So reading a stretch again against a state
/// that already holds it confirms nothing twice and makes no second
/// pending purchase. A user whose purchases all ended keeps an empty
/// record, for its as-of offset: a tombstone written to delete it could
/// land after a later owner's record of the user (the writer paused
/// between its check and its write), and no epoch fences a tombstone.
/// Compaction keeps one record a user who ever had a purchase pending.
///
/// Each record also carries its writer's *owner*: an epoch and a random
/// id. An owner claims an epoch above any in the changelog when it
/// restores, and writes the claim there at once ([`PartitionFlow::claim`]).
/// The first record of the highest epoch names the partition's owner; a
/// record of a lower epoch after it, or of the same epoch and another id
/// (a claim that lost a race), was written by a former owner that had not
/// yet learnt it lost the partition, and is left out of every later
/// restore ([`Restored::Fenced`]). Exactly once, a former owner's writes
/// are fenced by the broker besides (its transaction cannot commit); at
/// least once, compaction may have removed a later owner's record of a
/// user that a former owner's late write then outlives, and the fenced
/// write leaves the user without a record: their pending purchases are
/// lost (a confirmation then buys nothing; the shopper can tweet again),
/// never charged twice (see the README).
#[derive(Debug, Default)]
pub struct PartitionFlow {
    stream_time_ms: Option<i64>,
    /// Pending purchases by user, in the order they were made.
    users: HashMap<String, Vec<Pending>>,
    /// `(closes at, user, offer)` of every pending purchase, to close them
    /// in order as stream time passes.
    closing: BTreeSet<(i64, String, String)>,
    /// Users whose pending purchases changed since the last
    /// [`PartitionFlow::take_changes`].
    changed: BTreeSet<String>,
    stream_time_changed: bool,
    /// This owner, once claimed: what it writes its records as.
    owner: Owner,
    /// The partition's owner as restored: the first of the highest epoch.
    restored_owner: Owner,
    /// The as-of offsets restored, by user.
    as_of: HashMap<String, i64>,
}

impl PartitionFlow {
    /// A partition with nothing pending and no stream time yet.
    pub fn new() -> Self {
        PartitionFlow::default()
    }

    /// The latest event time read, if any.
    pub fn stream_time_ms(&self) -> Option<i64> {
        self.stream_time_ms
    }

    /// How many purchases are pending.
    pub fn pending(&self) -> usize {
        self.closing.len()
    }

    /// The pending purchases of `user_id`, in the order they were made.
    pub fn pending_of(&self, user_id: &str) -> &[Pending] {
        self.users.get(user_id).map_or(&[], Vec::as_slice)
    }

    /// The owner this flow writes as: the default until
    /// [`PartitionFlow::claim`] or [`PartitionFlow::resume`].
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The partition's owner as the changelog restored names it.
    pub fn restored_owner(&self) -> Owner {
        self.restored_owner
    }

    /// Takes in one changelog record, as [`PartitionFlow::take_changes`]
    /// or [`PartitionFlow::claim`] wrote it (`None`: a tombstone). Records
    /// are taken in offset order; a later one replaces an earlier one of
    /// its key, unless a former owner wrote it late (see the type's docs).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<Restored, RestoreError> {
        let key = String::from_utf8_lossy(key).into_owned();
        let problem = |problem: String| RestoreError {
            key: key.clone(),
            problem,
        };
        let Some(value) = value else {
            // hashbuy writes none (see the type's docs); an operator's
            // tombstone deletes the user's state.
            self.set_user(&key, Vec::new());
            self.as_of.remove(&key);
            return Ok(Restored::Taken);
        };
        if key == STREAM_TIME_KEY {
            let time =
                StreamTime::decode(value).map_err(|e| problem(format!("not a StreamTime: {e}")))?;
            if !self.fence(Owner::of(time.epoch, time.owner)) {
                return Ok(Restored::Fenced);
            }
            self.stream_time_ms = time.stream_time_ms.max(self.stream_time_ms);
            return Ok(Restored::Taken);
        }
        let record = PendingPurchases::decode(value)
            .map_err(|e| problem(format!("not a PendingPurchases: {e}")))?;
        if !self.fence(Owner::of(record.epoch, record.owner)) {
            return Ok(Restored::Fenced);
        }
        let purchases: Vec<Pending> = record
            .purchases
            .into_iter()
            .map(Pending::from_proto)
            .collect::<Option<_>>()
            .ok_or_else(|| problem("a pending purchase without its command".into()))?;
        self.set_user(&key, purchases);
        self.as_of.insert(key, record.as_of_offset);
        Ok(Restored::Taken)
    }

    /// Whether a record written by `writer` is taken: of a higher epoch
    /// than the owner restored before it (it names the new owner), or of
    /// that owner.
    fn fence(&mut self, writer: Owner) -> bool {
        if writer.epoch > self.restored_owner.epoch {
            self.restored_owner = writer;
        }
        writer == self.restored_owner
    }

    fn set_user(&mut self, user: &str, purchases: Vec<Pending>) {
        if let Some(old) = self.users.remove(user) {
            for purchase in &old {
                self.closing.remove(&closing_entry(user, purchase));
            }
        }
        if !purchases.is_empty() {
            for purchase in &purchases {
                self.closing.insert(closing_entry(user, purchase));
            }
            self.users.insert(user.to_owned(), purchases);
        }
    }

    /// Claims the partition restored, as the owner with id `id`, in the
    /// epoch after the restored owner's: the record to write to the
    /// changelog at once, before any other. The claim holds if a restore
    /// that reads it names this owner (a claim of the same epoch may have
    /// come first).
    pub fn claim(&mut self, id: u64) -> (String, Vec<u8>) {
        self.owner = Owner {
            epoch: self.restored_owner.epoch + 1,
            id,
        };
        self.stream_time_changed = false;
        (STREAM_TIME_KEY.to_owned(), self.stream_time_record())
    }

    /// Goes on writing as `owner`, which claimed the partition before
    /// (a restore again, after an aborted batch, claims nothing).
    pub fn resume(&mut self, owner: Owner) {
        self.owner = owner;
    }

    fn stream_time_record(&self) -> Vec<u8> {
        StreamTime {
            stream_time_ms: self.stream_time_ms,
            epoch: self.owner.epoch,
            owner: self.owner.id,
        }
        .encode_to_vec()
    }

    /// The changelog records of what changed since the last call, as of
    /// `as_of` (the offset after the last record handled), in key order:
    /// each changed user's pending purchases (none left: an empty record),
    /// then the stream time if it moved.
    pub fn take_changes(&mut self, as_of: i64) -> Vec<(String, Vec<u8>)> {
        let mut records: Vec<(String, Vec<u8>)> = std::mem::take(&mut self.changed)
            .into_iter()
            .map(|user| {
                let purchases = self
                    .users
                    .get(&user)
                    .map(|purchases| purchases.iter().map(Pending::to_proto).collect())
                    .unwrap_or_default();
                let value = PendingPurchases {
                    purchases,
                    as_of_offset: as_of,
                    epoch: self.owner.epoch,
                    owner: self.owner.id,
                }
                .encode_to_vec();
                (user, value)
            })
            .collect();
        if std::mem::take(&mut self.stream_time_changed) {
            records.push((STREAM_TIME_KEY.to_owned(), self.stream_time_record()));
        }
        records
    }

    /// Handles the decoded record at `offset`, which the rules decided
    /// `decision`: a tweet ([`PartitionFlow::tweet`]) or a delete notice
    /// that names the deleted tweet and its author
    /// ([`PartitionFlow::delete`]); any other record does nothing here.
    /// A record its author's restored state holds already (see the type's
    /// docs) only moves stream time. What happened is appended to `out`.
    pub fn record(
        &mut self,
        record: &Record<'_>,
        decision: &Decision,
        offset: i64,
        out: &mut Vec<Step>,
    ) {
        let (author, at_ms) = match record {
            Record::Tweet(tweet) => (&tweet.user_id, clock_time(tweet)),
            Record::Notice(Notice::Delete {
                user_id: Some(user_id),
                ..
            }) => (user_id, None),
            _ => return,
        };
        if let Some(at_ms) = at_ms {
            self.advance(at_ms, out);
        }
        if self
            .as_of
            .get(author.as_ref())
            .is_some_and(|&as_of| offset < as_of)
        {
            return;
        }
        match record {
            Record::Tweet(tweet) => {
                let steps = match decision {
                    Decision::Confirm(steps) => Some(steps),
                    _ => None,
                };
                self.steps(tweet, steps, out);
            }
            Record::Notice(Notice::Delete {
                id: Some(id),
                user_id: Some(user_id),
                timestamp_ms,
            }) => self.delete(user_id, id, *timestamp_ms, out),
            _ => {}
        }
    }

    /// Handles a tweet the rules decided: stream time moves to its time if
    /// it carries a hashtag (see the module docs), windows that closed by
    /// then expire, and then its confirmations and purchases (`steps`, from
    /// [`Decision::Confirm`]; `None` for any other decision) are done. What
    /// happened is appended to `out`.
    pub fn tweet(&mut self, tweet: &Tweet<'_>, steps: Option<&ConfirmSteps>, out: &mut Vec<Step>) {
        if let Some(at_ms) = clock_time(tweet) {
            self.advance(at_ms, out);
        }
        self.steps(tweet, steps, out);
    }

    /// Does a tweet's confirmations, then its purchases.
    fn steps(&mut self, tweet: &Tweet<'_>, steps: Option<&ConfirmSteps>, out: &mut Vec<Step>) {
        let Some(steps) = steps else {
            return;
        };
        for confirmation in &steps.confirmations {
            self.confirm(tweet, confirmation, out);
        }
        for purchase in &steps.purchases {
            self.purchase(purchase, out);
        }
    }

    /// Handles a delete notice of tweet `tweet_id` by `user_id`, at
    /// `at_ms` (when the notice gives its time, which the cancellation's
    /// reply carries; it does not move stream time): the user's purchases
    /// pending on that tweet are cancelled.
    pub fn delete(
        &mut self,
        user_id: &str,
        tweet_id: &str,
        at_ms: Option<i64>,
        out: &mut Vec<Step>,
    ) {
        let Some(purchases) = self.users.get_mut(user_id) else {
            return;
        };
        let (cancelled, kept): (Vec<Pending>, Vec<Pending>) = purchases
            .drain(..)
            .partition(|p| p.command.tweet_id == tweet_id);
        *purchases = kept;
        if cancelled.is_empty() {
            return;
        }
        self.changed.insert(user_id.to_owned());
        if self.users.get(user_id).is_some_and(Vec::is_empty) {
            self.users.remove(user_id);
        }
        for purchase in cancelled {
            self.closing.remove(&closing_entry(user_id, &purchase));
            let at = at_ms
                .or(self.stream_time_ms)
                .unwrap_or(purchase.window_end_ms);
            let text = format!(
                "Your tweet was deleted, so {} was not bought and nothing was charged.",
                title(&purchase)
            );
            out.push(Step::Cancelled(reply(&purchase, Kind::Cancelled, text, at)));
        }
    }

    /// Moves stream time to `at_ms` if that is later, and closes the
    /// windows that ends by then, oldest first.
    fn advance(&mut self, at_ms: i64, out: &mut Vec<Step>) {
        if self.stream_time_ms.is_some_and(|t| t >= at_ms) {
            return;
        }
        self.stream_time_ms = Some(at_ms);
        self.stream_time_changed = true;
        while let Some((closes_at, _, _)) = self.closing.first() {
            if *closes_at > at_ms {
                break;
            }
            let Some((_, user, offer_id)) = self.closing.pop_first() else {
                break;
            };
            if let Some(purchase) = self.remove(&user, &offer_id) {
                out.push(Step::Expired(expiry(&purchase)));
            }
        }
    }

    fn confirm(&mut self, tweet: &Tweet<'_>, confirmation: &Confirmation, out: &mut Vec<Step>) {
        let offer_id = &confirmation.offer_id;
        let unconfirmed = |why| Step::Unconfirmed {
            offer_id: offer_id.clone(),
            why,
        };
        let Some(purchase) = self.find(&tweet.user_id, offer_id) else {
            out.push(unconfirmed(Unconfirmed::NoPending));
            return;
        };
        if tweet.timestamp_ms < purchase.command.tweet_timestamp_ms {
            out.push(unconfirmed(Unconfirmed::BeforePurchase));
            return;
        }
        if tweet.timestamp_ms >= purchase.window_end_ms {
            out.push(unconfirmed(Unconfirmed::AfterWindow));
            return;
        }
        if let Some(purchase) = self.remove(&tweet.user_id, offer_id) {
            self.closing
                .remove(&closing_entry(&tweet.user_id, &purchase));
            out.push(Step::Confirmed(purchase.command.clone()));
        }
    }

    fn purchase(&mut self, purchase: &Pending, out: &mut Vec<Step>) {
        let command = &purchase.command;
        if let Some(pending) = self.find(&command.user_id, &command.offer_id) {
            out.push(Step::AlreadyPending {
                offer_id: command.offer_id.clone(),
                pending_tweet_id: pending.command.tweet_id.clone(),
            });
            return;
        }
        let user = command.user_id.clone();
        let entry = closing_entry(&user, purchase);
        if self.stream_time_ms.is_some_and(|t| t >= entry.0) {
            out.push(Step::Expired(expiry(purchase)));
            return;
        }
        let text = format!(
            "Tweet #{} within {} to buy {} for {}",
            purchase.confirm_hashtag,
            window_words(purchase.confirm_window_s),
            title(purchase),
            format_amount(command.amount, &command.currency)
        );
        let prompt = reply(
            purchase,
            Kind::ConfirmPrompt,
            text,
            command.tweet_timestamp_ms,
        );
        self.closing.insert(entry);
        self.users
            .entry(user.clone())
            .or_default()
            .push(purchase.clone());
        self.changed.insert(user);
        out.push(Step::Pending(prompt));
    }

    fn find(&self, user_id: &str, offer_id: &str) -> Option<&Pending> {
        self.users
            .get(user_id)?
            .iter()
            .find(|p| p.command.offer_id == offer_id)
    }

    /// Removes the user's pending purchase of the offer from the users
    /// (the caller keeps `closing` right).
    fn remove(&mut self, user_id: &str, offer_id: &str) -> Option<Pending> {
        let purchases = self.users.get_mut(user_id)?;
        let at = purchases
            .iter()
            .position(|p| p.command.offer_id == offer_id)?;
        let purchase = purchases.remove(at);
        if purchases.is_empty() {
            self.users.remove(user_id);
        }
        self.changed.insert(user_id.to_owned());
        Some(purchase)
    }
}

/// The time a tweet moves stream time to: none without a hashtag; its own,
/// or its snowflake id's when the two are further apart than
/// [`IMPLAUSIBLE_MS`].
fn clock_time(tweet: &Tweet<'_>) -> Option<i64> {
    if tweet.hashtags.is_empty() {
        return None;
    }
    Some(match snowflake_ms(&tweet.id) {
        Some(id_ms) if tweet.timestamp_ms.abs_diff(id_ms) > IMPLAUSIBLE_MS as u64 => id_ms,
        _ => tweet.timestamp_ms,
    })
}

fn closing_entry(user_id: &str, purchase: &Pending) -> (i64, String, String) {
    (
        purchase.window_end_ms.saturating_add(ALLOWED_LATENESS_MS),
        user_id.to_owned(),
        purchase.command.offer_id.clone(),
    )
}

fn title(purchase: &Pending) -> &str {
    replies::title(&purchase.command)
}

fn expiry(purchase: &Pending) -> Reply {
    let text = format!(
        "No #{} within {}, so {} was not bought and nothing was charged.",
        purchase.confirm_hashtag,
        window_words(purchase.confirm_window_s),
        title(purchase)
    );
    reply(purchase, Kind::Expired, text, purchase.window_end_ms)
}

fn reply(purchase: &Pending, kind: Kind, text: String, at_ms: i64) -> Reply {
    replies::about(&purchase.command, kind, text, at_ms)
}

/// A window in words: `15 min`, `2 h`, `90 s`.
fn window_words(seconds: u32) -> String {
    if seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_in_the_largest_whole_unit() {
        assert_eq!(window_words(900), "15 min");
        assert_eq!(window_words(7200), "2 h");
        assert_eq!(window_words(90), "90 s");
    }
}
