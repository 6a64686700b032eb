//! The horizon: how old a command may be and still be charged, and which
//! ledger entries may therefore be forgotten (pure; the ledger and the
//! settler apply it).
//!
//! # The rule
//!
//! - A command whose tweet is older than `--max-command-age` (default
//!   [`DEFAULT_MAX_COMMAND_AGE`], 7 days) when the settler first sees it
//!   (no entry for it in the ledger) is `REJECTED` as stale, with its
//!   reason ([`stale`]). The provider keeps an idempotency key for 24 h
//!   (Stripe), so a week is already far past what a retry can rely on;
//!   a purchase tweeted that long ago is not the buyer's intent of today.
//! - Each partition's ledger keeps a **floor**: every command tweeted before
//!   it is stale to every settler, whatever its clock or its
//!   `--max-command-age`. The floor only rises; a pruning pass raises it to
//!   [`floor_at`] (now, less the maximum age, less [`CLOCK_MARGIN_MS`]).
//! - An entry is **pruned** (deleted from the local ledger, and by a
//!   tombstone from the changelog) once it is decided and acked, nobody
//!   must review it, and its tweet lies more than a day
//!   ([`SPEND_WINDOW_MS`]) below the floor ([`prune_below`]).
//! - What the limits needed of a pruned settled entry, its place in the
//!   count of the user's purchases of the offer, is kept in a
//!   [`Bought`] per user and offer: the number of settled purchases
//!   tweeted before its `through_ms`.
//!
//! # Why no command can charge twice after pruning
//!
//! A command is charged only under its entry. Suppose its entry `E` was
//! pruned, and a copy of the command arrives later, at any settler that
//! owns the partition then. Pruning needs `tweet(E) < floor − 1 day`, and
//! the floor is durable in the local ledger, and delivered to the
//! changelog, before `E` is deleted from either. The settler that deleted
//! `E` has the floor locally; any other restores the changelog, where the
//! floor's record comes before `E`'s tombstone and compaction keeps its
//! latest value. So the settler finds no entry, and then the floor, above
//! the command's tweet: the copy is rejected as stale, never charged. The
//! floor is never lowered, so neither a settler whose clock lags nor one
//! given a longer `--max-command-age` lets the copy through.
//!
//! A command still in flight is never pruned: the floor may pass it, but
//! its entry stays until it is decided and acked, and a copy that
//! arrives meanwhile finds the entry.
//!
//! Nor is a pruned entry brought back undecided. Below the line
//! ([`prune_below`]) an owner has decided every entry, so an undecided
//! record of one in the changelog is an older record, or one a settler
//! that lost the partition sent late: a restore does not take it in
//! (`crate::restore`), and `hashbuy ledger resolve` refuses to decide one
//! by hand, which would contradict the ack its owner sent.
//!
//! The line stops at the oldest unfinished entry of the ledger that drew
//! it, not at a command its settler has yet to read. So a group that reads
//! its commands days late (it lagged, or its settlers were down) may find
//! below the line a command another settler attempted while it was fresh,
//! whose attempt a restore left out as late, or that never reached the
//! changelog: it has no entry, and is stale. Its record was written while
//! it was fresh, which the record's timestamp tells (a replayed
//! recording's is written long after its tweets): such a command is
//! looked up at the provider before it is rejected, however far past the
//! horizon ([`look_up_before_rejecting`]), and a charge found is recorded.
//!
//! # Why the limits stay right
//!
//! - `max_per_user` counts, for the user and offer, the [`Bought`] count
//!   plus the entries tweeted at or after its `through_ms`. A pass raising
//!   `through_ms` adds exactly the settled entries between the old and the
//!   new value, in the same local write as the new value, and only when
//!   no entry below the new value is still undecided ([`prune_below`] stops
//!   at the oldest unfinished tweet). Entries below `through_ms` that
//!   remain (not yet deleted, or kept for review) are not counted again,
//!   so deleting them later, or a crash between the two steps, changes no
//!   count. In the changelog each count carries its own `through_ms`, so a
//!   restoring owner counts it the same way. Counts are kept in buckets of
//!   users ([`crate::counts`]), each written whole.
//! - The 24 h spend limit looks a day either side of a purchase. A purchase
//!   that is charged is tweeted at or after the floor, and every pruned
//!   entry more than a day before the floor: none was in its window.
//!
//! # Counts of ended offers
//!
//! A [`Bought`] count is kept for good while its offer may still be
//! bought. The matcher buys an offer only by a tweet before its end
//! (`ends_at`), and each command carries that end; a count keeps the
//! latest end of the purchases it counts. With `--forget-ended-offers`,
//! a pass forgets a count once both of these say the offer ended at or
//! below the floor ([`ended_as_carried`]):
//!
//! - the live catalog (the `catalog` topic, which the settler then
//!   follows, as the matchers do): under every hashtag that held the
//!   offer, every version in effect at or after the floor removes the
//!   hashtag or is the offer ended by then
//!   (`hashbuy_core::tables::Catalog::ended_from`). A hashtag given to
//!   another offer, or with no version yet at the floor (older changes
//!   compacted away), tells too little: the counts stay. An end moved
//!   later while the offer is on sale reaches the commands only with the
//!   next purchase, but the catalog at once. A file is never asked: it is
//!   each process's own, and a settler's could lag its matchers'. An
//!   offer the live catalog never held (a matcher's file offer) keeps its
//!   counts. The settler reads the live catalog alone, so the flag is for
//!   matchers that do too (no catalog files): a matcher refuses a live
//!   change that clashes with its files and keeps the version before,
//!   while the settler, which has none, takes it; were it one that ends
//!   the offer, the settler would forget counts the matchers still
//!   need.
//! - the ends the commands carried: the count's, and those of every entry
//!   of the offer the partition still holds.
//!
//! Every command of the offer is then tweeted before the floor, so stale:
//! none is checked against the count again. The pass deletes the count
//! locally, and from the changelog (its bucket written again without it,
//! or a tombstone for a bucket left empty), after the floor is durable in
//! both, as it deletes entries. Nor can a pass forget a count
//! under a check under way: the limits are checked only for a command
//! seen for the first time and not stale, so tweeted within
//! `--max-command-age` of now, while a floor lies a day further down
//! ([`floor_at`]) on any clock within [`CLOCK_MARGIN_MS`]; a command
//! already past its check (in flight, or found charged by a lookup) is
//! not checked again.
//!
//! So the counts kept, and what a new owner restores, grow with the
//! buyers of the offers on sale or ended within the horizon, not with
//! every purchase ever made; an offer without an end keeps its counts for
//! good, as does every offer without `--forget-ended-offers`. A restore
//! does not take a count's tombstone, and the owner's own pass forgets
//! the count: a count kept too long can only refuse a buyer of an offer
//! put on sale again, never let one buy twice. An offer put on sale again
//! by a change written while a pass forgets its counts, or after (one
//! that moves its end later, or adds it again, whatever time it takes
//! effect from), is counted afresh: a buyer who bought it before may buy
//! it again. A pass asks the catalog twice, as it plans and again just
//! before it writes, so the window is the writes' own: the second time
//! once the catalog's follower has shown it holds every change written
//! so far (`hashbuy_kafka::tables::Progress::read_through_now`, on a
//! broker whose high watermark counts records), so a change written
//! before that is not missed for the follower's lag. A follower that
//! cannot show it forgets no count in that pass.
//!
//! # Charged while fresh, found stale
//!
//! An owner may charge a command while it is fresh and stop before the
//! changelog has its attempt; the next owner then finds no entry, and the
//! command may be stale by the time it arrives there. Two things keep
//! that from being rejected while charged:
//!
//! - a first attempt within a day of the horizon is in the changelog
//!   before the provider is called (`crate::settle`), so the next owner
//!   resumes it;
//! - a stale command no more than [`LOOKUP_PAST_HORIZON_MS`] past the
//!   horizon, or whose record was written while it was fresh, is looked
//!   up at the provider before it is rejected: a charge found is recorded
//!   as settled (or declined), as a reconciliation would. A command
//!   written long after its tweet, further past, was never fresh to any
//!   settler: it is rejected unasked, so a replay of an old recording
//!   costs no provider calls.
//!
//! Both assume the settlers of a group share `--max-command-age`, and
//! that the clock that stamps command records (the matcher's, or the
//! broker's under `LogAppendTime`) is within [`CLOCK_MARGIN_MS`] of
//! theirs.
//!
//! # What it costs
//!
//! A copy of a settled command replayed after its entry was pruned, more
//! than [`LOOKUP_PAST_HORIZON_MS`] past the horizon and written long after
//! its tweet, gets a `REJECTED` (stale) ack, where the first copy got
//! `SETTLED`: the ledger no longer knows. Consumers of acks take the first
//! outcome of a command id. Otherwise the lookup answers it as at first,
//! at the cost of a provider call: a group that reads its commands days
//! late, or again from the start (a new group name, offsets reset), looks
//! up every stale command it reads that was written while fresh.
//!
//! A charge found for a command below its user's [`Bought`] count's
//! `through_ms` (one read days late) is recorded, but not added to that
//! count: `max_per_user` then allows the user one purchase of the offer
//! too many.

use std::time::Duration;

use crate::entry::{Entry, State};
use crate::limits::SPEND_WINDOW_MS;

/// The default of `--max-command-age`.
pub const DEFAULT_MAX_COMMAND_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How a stale command's reason begins.
pub const STALE: &str = "stale: ";

/// The least `--max-command-age` taken (a smaller one is raised to it): a
/// command must live long enough to cross the pipeline.
pub const MIN_MAX_COMMAND_AGE: Duration = Duration::from_secs(60);

/// How far apart settlers' clocks (and the clock of the settler that
/// raised the floor, between two passes) may be without a command being
/// stale to one and not the others: a pass raises the floor only to a day
/// below its own horizon.
pub const CLOCK_MARGIN_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a command is stale, if it is: its tweet lies before the partition's
/// `floor`, or more than `max_age` before `now_ms`. The reason names both
/// times, so a replay of an old recording says why nothing was charged.
pub fn stale(tweet_ms: i64, now_ms: i64, max_age: Duration, floor_ms: i64) -> Option<String> {
    let age = millis(max_age);
    let horizon = now_ms.saturating_sub(age);
    if tweet_ms >= horizon && tweet_ms >= floor_ms {
        return None;
    }
    let words = |ms: i64| {
        let seconds = u64::try_from(ms / 1000).unwrap_or(0);
        humantime::format_duration(Duration::from_secs(seconds)).to_string()
    };
    Some(if tweet_ms < horizon {
        format!(
            "{STALE}tweeted {} before the settler first saw it; --max-command-age is {}",
            words(now_ms - tweet_ms),
            words(age)
        )
    } else {
        format!(
            "{STALE}tweeted before this partition's ledger floor ({floor_ms} ms since the epoch), \
             below which its entries may have been pruned"
        )
    })
}

/// How far past the horizon a stale command is looked up at the provider
/// before it is rejected, whenever its record was written: an owner may
/// have charged it while it was fresh and stopped before its changelog had
/// the attempt (attempts within a day of the horizon wait for theirs, see
/// `crate::settle`), and the partition may then have waited for its next
/// owner.
pub const LOOKUP_PAST_HORIZON_MS: i64 = 2 * 24 * 60 * 60 * 1000;

/// Whether a stale command (by [`stale`]) may have been charged by an
/// owner that saw it fresh, and so is looked up at the provider before it
/// is rejected: it is no more than [`LOOKUP_PAST_HORIZON_MS`] past the
/// horizon, or its record was written (`written_ms`, the record's Kafka
/// timestamp) while it was still fresh, give or take [`CLOCK_MARGIN_MS`]
/// for the writer's clock. A settler sees a command only after its record
/// is written, so a command written long after its tweet (a recording
/// replayed) was never fresh to any of them: it is rejected unasked, and a
/// replay costs no provider calls. One written while fresh and read days
/// later (a group that lagged) may have been charged by an owner that lost
/// the partition, whose attempt the changelog holds late, below the
/// pruning line, where a restore does not take it in, or not at all.
/// A record without a timestamp (`None`) is looked up.
pub fn look_up_before_rejecting(
    tweet_ms: i64,
    now_ms: i64,
    max_age: Duration,
    written_ms: Option<i64>,
) -> bool {
    let age = millis(max_age);
    let near = now_ms.saturating_sub(tweet_ms) < age.saturating_add(LOOKUP_PAST_HORIZON_MS);
    let written_fresh = written_ms.is_none_or(|written| {
        written.saturating_sub(tweet_ms) < age.saturating_add(CLOCK_MARGIN_MS)
    });
    near || written_fresh
}

/// The floor a pruning pass at `now_ms` raises a partition to: a day below
/// the horizon of `max_age` ([`CLOCK_MARGIN_MS`]).
pub fn floor_at(now_ms: i64, max_age: Duration) -> i64 {
    now_ms
        .saturating_sub(millis(max_age))
        .saturating_sub(CLOCK_MARGIN_MS)
}

/// The floor a pass at `now_ms` may raise a partition to, given the
/// newest tweet among its entries: [`floor_at`], but never above what the
/// newest tweet's own time would give. Tweet times come from the
/// firehose's clock, not this host's: a host whose clock runs days ahead
/// would otherwise raise a floor above every purchase to come, for good
/// (the floor is never lowered). A partition with no entries is not
/// raised.
pub fn floor_capped(now_ms: i64, max_age: Duration, newest_tweet_ms: Option<i64>) -> i64 {
    newest_tweet_ms.map_or(i64::MIN, |newest| {
        floor_at(now_ms, max_age).min(floor_at(newest, max_age))
    })
}

/// Below which tweet time a partition's entries may be pruned under
/// `floor_ms`: a day below it, and never past the tweet of an entry not
/// yet decided and acked (`oldest_unfinished_ms`), whose count must not
/// be taken before it is known.
pub fn prune_below(floor_ms: i64, oldest_unfinished_ms: Option<i64>) -> i64 {
    let below = floor_ms.saturating_sub(SPEND_WINDOW_MS);
    oldest_unfinished_ms.map_or(below, |oldest| below.min(oldest))
}

/// Whether an entry is done with: decided, acked, and not held for an
/// operator's review.
pub fn finished(entry: &Entry) -> bool {
    entry.state.is_terminal() && entry.acked_ms.is_some() && entry.review.is_none()
}

/// Whether a settled entry counts towards its user's purchases of its offer
/// (see [`Bought`]).
pub fn counts_as_bought(entry: &Entry) -> bool {
    matches!(entry.state, State::Settled { .. })
}

/// A user's settled purchases of one offer tweeted before `through_ms`,
/// whose entries may be pruned: what `max_per_user` needs of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bought {
    /// How many.
    pub count: u32,
    /// The tweet time they lie before, ms since the epoch; entries at or
    /// after it are counted one by one.
    pub through_ms: i64,
    /// The latest end of the offer ([`offer_end`]) among the purchases
    /// counted, ms since the epoch: once the floor passes it, the count
    /// is forgotten ([`ended_as_carried`]). A count written before hashbuy kept
    /// it reads as [`NO_END`].
    #[serde(default = "no_end")]
    pub offer_ends_ms: i64,
}

/// The end of an offer that has none.
pub const NO_END: i64 = i64::MAX;

fn no_end() -> i64 {
    NO_END
}

impl Default for Bought {
    /// None counted: every entry counts on its own.
    fn default() -> Bought {
        Bought {
            count: 0,
            through_ms: i64::MIN,
            offer_ends_ms: i64::MIN,
        }
    }
}

impl Bought {
    /// Whether an entry's purchase is in this count rather than counted on
    /// its own.
    pub fn covers(&self, entry: &Entry) -> bool {
        entry.command.tweet_timestamp_ms < self.through_ms
    }

    /// Counts `entry`'s purchase in: one more, and its offer's end.
    pub fn add(&mut self, entry: &Entry) {
        self.count += 1;
        self.offer_ends_ms = self.offer_ends_ms.max(offer_end(entry));
    }

    /// The higher of each field of two counts of one key: counts only
    /// grow, and an offer's end only moves later.
    pub fn higher(self, other: Bought) -> Bought {
        Bought {
            count: self.count.max(other.count),
            through_ms: self.through_ms.max(other.through_ms),
            offer_ends_ms: self.offer_ends_ms.max(other.offer_ends_ms),
        }
    }
}

/// The end of an entry's offer as its command carries it ([`NO_END`]
/// when it has none, or came from a matcher that did not say): its tweet
/// lies before it.
pub fn offer_end(entry: &Entry) -> i64 {
    entry.command.offer_ends_at_ms.unwrap_or(NO_END)
}

/// Whether a count's offer ended at or below `floor_ms` as the purchases
/// counted carried it, and as every entry of it that the partition still
/// holds carries it (`latest_end_held`, its latest [`offer_end`]; `None`
/// when none is held). A pass forgets the count when this holds and the
/// live catalog says no tweet at or after the floor can buy the offer
/// (see the module docs).
pub fn ended_as_carried(bought: &Bought, floor_ms: i64, latest_end_held: Option<i64>) -> bool {
    bought.offer_ends_ms <= floor_ms && latest_end_held.is_none_or(|end| end <= floor_ms)
}

/// A partition's last pruning pass, as its ledger remembers it (locally:
/// another owner's passes are its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastPass {
    /// When it planned, ms since the epoch.
    pub at_ms: i64,
    /// The floor it aimed at ([`floor_at`]), before any cap.
    pub aim_ms: i64,
}

/// How long a partition's first pruning pass after a start waits, given
/// its ledger's `last` pass: until `every` after that one, if it was less
/// than `every` ago and a pass now would aim no more than `every` higher
/// (as under the same `--max-command-age`): put off no longer than the
/// pass was due anyway, and pruning is housekeeping (the settler is right
/// without it). A pass reads every entry of the partition, so a
/// restart that ran one at once would cost as much as the history is
/// long. No wait after no pass, a clock set back, or a `--max-command-age`
/// shortened by more than `every`: that floor is raised at once.
pub fn first_pass_wait(
    last: Option<LastPass>,
    now_ms: i64,
    max_age: Duration,
    every: Duration,
) -> Duration {
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let every_ms = millis(every);
    let since = now_ms.saturating_sub(last.at_ms);
    let risen = floor_at(now_ms, max_age).saturating_sub(last.aim_ms);
    if (0..every_ms).contains(&since) && risen <= every_ms {
        Duration::from_millis(u64::try_from(every_ms - since).unwrap_or(0))
    } else {
        Duration::ZERO
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const WEEK: Duration = DEFAULT_MAX_COMMAND_AGE;

    #[test]
    fn a_command_older_than_the_age_or_the_floor_is_stale_and_says_why() {
        let now = 100 * DAY;
        assert_eq!(stale(now - 6 * DAY, now, WEEK, 0), None);
        let old = stale(now - 8 * DAY, now, WEEK, 0).expect("stale");
        assert!(
            old.contains("tweeted 8days") && old.contains("is 7days"),
            "{old}"
        );
        let below = stale(now - DAY, now, WEEK, now).expect("under the floor");
        assert!(below.contains("floor"), "{below}");
        assert_eq!(
            stale(now, now, WEEK, now),
            None,
            "at the floor is not below it"
        );
    }

    #[test]
    fn pruning_stays_a_day_below_the_floor_and_below_anything_unfinished() {
        let now = 100 * DAY;
        let floor = floor_at(now, WEEK);
        assert_eq!(floor, now - 8 * DAY);
        assert_eq!(prune_below(floor, None), floor - DAY);
        assert_eq!(prune_below(floor, Some(floor - 3 * DAY)), floor - 3 * DAY);
        assert_eq!(prune_below(floor, Some(now)), floor - DAY);
    }

    #[test]
    fn a_clock_far_ahead_raises_no_floor_past_the_newest_tweet() {
        let now = 100 * DAY;
        let ahead = now + 10 * DAY;
        let floor = floor_capped(ahead, WEEK, Some(now));
        assert_eq!(floor, floor_at(now, WEEK));
        assert_eq!(
            stale(now, now, WEEK, floor),
            None,
            "a purchase of now is not stale"
        );
        assert_eq!(floor_capped(now, WEEK, None), i64::MIN);
    }

    #[test]
    fn a_first_pass_waits_its_turn_only_after_a_recent_pass_aiming_as_high() {
        let now = 100 * DAY;
        let hour = Duration::from_secs(3600);
        let pass = |ago: i64, age: Duration| LastPass {
            at_ms: now - ago,
            aim_ms: floor_at(now - ago, age),
        };
        assert_eq!(first_pass_wait(None, now, WEEK, hour), Duration::ZERO);
        assert_eq!(
            first_pass_wait(Some(pass(600_000, WEEK)), now, WEEK, hour),
            Duration::from_secs(3000),
            "ten minutes after a pass, the next is in fifty"
        );
        assert_eq!(
            first_pass_wait(Some(pass(3_600_000, WEEK)), now, WEEK, hour),
            Duration::ZERO,
            "an hour after, at once"
        );
        assert_eq!(
            first_pass_wait(Some(pass(-600_000, WEEK)), now, WEEK, hour),
            Duration::ZERO,
            "a pass in the future (a clock set back) is not trusted"
        );
        let shorter = Duration::from_secs(6 * 86_400);
        assert_eq!(
            first_pass_wait(Some(pass(600_000, WEEK)), now, shorter, hour),
            Duration::ZERO,
            "a day less of age raises the floor a day: at once"
        );
        let longer = Duration::from_secs(30 * 86_400);
        assert_eq!(
            first_pass_wait(Some(pass(600_000, WEEK)), now, longer, hour),
            Duration::from_secs(3000),
            "a longer age prunes nothing more"
        );
    }

    #[test]
    fn a_command_just_past_the_horizon_or_written_while_fresh_is_looked_up() {
        let now = 100 * DAY;
        let replayed = Some(now);
        assert!(look_up_before_rejecting(now - 8 * DAY, now, WEEK, replayed));
        assert!(!look_up_before_rejecting(
            now - 9 * DAY,
            now,
            WEEK,
            replayed
        ));
        assert!(!look_up_before_rejecting(
            now - 200 * DAY,
            now,
            WEEK,
            replayed
        ));
        let tweet = now - 200 * DAY;
        assert!(
            look_up_before_rejecting(tweet, now, WEEK, Some(tweet + 60_000)),
            "written a minute after its tweet, read long after"
        );
        assert!(
            look_up_before_rejecting(tweet, now, WEEK, Some(tweet + 7 * DAY + DAY / 2)),
            "written just past the horizon by a clock that may run a day behind"
        );
        assert!(!look_up_before_rejecting(
            tweet,
            now,
            WEEK,
            Some(tweet + 8 * DAY)
        ));
        assert!(
            look_up_before_rejecting(tweet, now, WEEK, None),
            "a record without a timestamp"
        );
    }
}
