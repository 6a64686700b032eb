//! The purchase limits a command carries, checked against the user's
//! earlier entries before any provider call.
//!
//! Commands are keyed by user id, so all of a user's commands reach the
//! same partition and the same ledger, in order: the check sees every
//! earlier purchase and cannot race another settler. What counts is what
//! was charged or may yet be (settled, and received or attempting);
//! declined, rejected and failed purchases do not.
//!
//! - `max_per_user` (per offer; 0 is read as the default, 1): how many
//!   times the user may buy the offer.
//! - `spend_limit` (per currency, minor units): most the user spends in
//!   any 24 h, measured at the tweets' own times, so a replay decides the
//!   same. Tweets reach the settler out of time order (a firehose is
//!   disordered, and a user's commands are settled in offset order), so a
//!   purchase is checked against every 24 h window it falls in, those
//!   reaching back from its tweet and those reaching forward: a purchase
//!   tweeted at 09:00 and read after one tweeted at 10:00 shares the day
//!   from 09:00 with it.

use hashbuy_core::replies::Refusal;
use hashbuy_core::stock::SOLD_OUT_REASON;
use hashbuy_proto::v1::PaymentCommand;

use crate::entry::{Entry, State};
use crate::horizon::{Bought, STALE};

/// The spend limit's window.
pub const SPEND_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether an entry's purchase counts against the limits.
fn counts(entry: &Entry) -> bool {
    matches!(
        entry.state,
        State::Received | State::Attempting { .. } | State::Settled { .. }
    )
}

/// Checks `command` against the user's `earlier` entries (other commands
/// are ignored, as is the command's own entry) and `pruned`, the user's
/// purchases of the offer counted when their entries were pruned (an
/// entry it covers is not counted again; see [`crate::horizon`]); the
/// reason when it is over a limit.
pub fn check<'a>(
    command: &PaymentCommand,
    earlier: impl IntoIterator<Item = &'a Entry>,
    pruned: Bought,
) -> Result<(), String> {
    let max_per_user = command.max_per_user.max(1);
    let mut bought = pruned.count;
    let t = command.tweet_timestamp_ms;
    // The user's purchases in this currency less than a day from this one,
    // either way: (tweet time, amount).
    let mut near = Vec::new();
    for entry in earlier {
        let other = &entry.command;
        if other.user_id != command.user_id
            || other.command_id == command.command_id
            || !counts(entry)
        {
            continue;
        }
        if other.offer_id == command.offer_id && !pruned.covers(entry) {
            bought += 1;
        }
        let apart = t.saturating_sub(other.tweet_timestamp_ms).saturating_abs();
        if other.currency == command.currency && apart < SPEND_WINDOW_MS {
            near.push((other.tweet_timestamp_ms, other.amount));
        }
    }
    if bought >= max_per_user {
        return Err(format!(
            "user {} already bought offer {} {bought} time(s); max_per_user is {max_per_user}",
            command.user_id, command.offer_id
        ));
    }
    if let Some(limit) = command.spend_limit {
        let total = most_in_a_day(t, &near).saturating_add(command.amount);
        if total > limit {
            return Err(format!(
                "user {} would spend {total} {} in 24 h with this purchase; spend_limit is {limit}",
                command.user_id, command.currency
            ));
        }
    }
    Ok(())
}

/// Which limit a rejection's reason, as [`check`] words it, names; a
/// reason of another rule (the provider's) is [`Refusal::Other`]. The
/// reason is what the ledger keeps of a rejection, so the reply to the
/// buyer is told from it alike by any owner of the entry.
pub fn refusal(reason: &str) -> Refusal {
    let limit = |name: &str| {
        reason
            .rsplit_once(&format!("; {name} is "))
            .and_then(|(_, value)| value.parse::<u64>().ok())
    };
    if reason == SOLD_OUT_REASON {
        Refusal::SoldOut
    } else if reason.starts_with(STALE) {
        Refusal::Stale
    } else if let Some(max) = limit("max_per_user").and_then(|max| u32::try_from(max).ok()) {
        Refusal::MaxPerUser(max)
    } else if let Some(limit) = limit("spend_limit") {
        Refusal::SpendLimit(limit)
    } else {
        Refusal::Other
    }
}

/// The most spent by `purchases` (tweet time, amount) in one window
/// `[s, s + 24 h)` that holds time `t`. The sum changes only where a
/// purchase enters the window as it slides, so the windows starting at
/// `t - 24 h + 1` and a day before each later purchase are all there is to
/// try.
fn most_in_a_day(t: i64, purchases: &[(i64, u64)]) -> u64 {
    let first = t.saturating_sub(SPEND_WINDOW_MS - 1);
    let starts = std::iter::once(first).chain(
        purchases
            .iter()
            .map(|&(at, _)| at.saturating_sub(SPEND_WINDOW_MS - 1))
            .filter(|&s| s > first && s <= t),
    );
    starts
        .map(|s| {
            purchases
                .iter()
                .filter(|&&(at, _)| at >= s && at - s < SPEND_WINDOW_MS)
                .fold(0u64, |sum, &(_, amount)| sum.saturating_add(amount))
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::entry::{first_key, Outcome};
    use crate::horizon::NO_END;

    fn command(id: &str, offer: &str, amount: u64, at_ms: i64) -> PaymentCommand {
        PaymentCommand {
            command_id: id.into(),
            user_id: "u-1".into(),
            offer_id: offer.into(),
            amount,
            currency: "usd".into(),
            tweet_timestamp_ms: at_ms,
            max_per_user: 1,
            ..PaymentCommand::default()
        }
    }

    fn settled(c: PaymentCommand) -> Entry {
        let mut e = Entry::received(c, 0, 0, 0);
        e.attempt(first_key("k"), 0).expect("attempt");
        e.decide(
            Outcome::Settled {
                payment_intent: "pi".into(),
            },
            0,
        )
        .expect("settled");
        e
    }

    #[test]
    fn an_offer_is_bought_at_most_max_per_user_times() {
        let first = settled(command("c-1", "o-1", 100, 0));
        assert!(check(&command("c-2", "o-2", 100, 1), [&first], Bought::default()).is_ok());
        let again = check(&command("c-2", "o-1", 100, 1), [&first], Bought::default());
        assert!(again.expect_err("over").contains("max_per_user is 1"));
        let mut twice = command("c-2", "o-1", 100, 1);
        twice.max_per_user = 2;
        assert!(check(&twice, [&first], Bought::default()).is_ok());
    }

    #[test]
    fn in_flight_purchases_count_and_failed_ones_do_not() {
        let pending = Entry::received(command("c-1", "o-1", 100, 0), 0, 0, 0);
        assert!(check(
            &command("c-2", "o-1", 100, 1),
            [&pending],
            Bought::default()
        )
        .is_err());
        let mut declined = pending.clone();
        declined.attempt(first_key("c-1"), 0).expect("attempt");
        declined
            .decide(
                Outcome::Declined {
                    payment_intent: None,
                    decline_code: "generic_decline".into(),
                    reason: "declined".into(),
                },
                0,
            )
            .expect("declined");
        assert!(check(
            &command("c-2", "o-1", 100, 1),
            [&declined],
            Bought::default()
        )
        .is_ok());
    }

    #[test]
    fn a_rejection_s_reason_tells_which_limit_for_the_reply() {
        let first = settled(command("c-1", "o-1", 600, 0));
        let mut twice = command("c-2", "o-1", 100, 1);
        twice.max_per_user = 1;
        let reason = check(&twice, [&first], Bought::default()).expect_err("over");
        assert_eq!(refusal(&reason), Refusal::MaxPerUser(1));
        let mut spender = command("c-3", "o-2", 500, 1);
        spender.spend_limit = Some(1_000);
        let reason = check(&spender, [&first], Bought::default()).expect_err("over");
        assert_eq!(refusal(&reason), Refusal::SpendLimit(1_000));
        let stale = crate::horizon::stale(
            0,
            9 * 86_400_000,
            crate::horizon::DEFAULT_MAX_COMMAND_AGE,
            0,
        );
        assert_eq!(refusal(&stale.expect("stale")), Refusal::Stale);
        assert_eq!(
            refusal("the provider refused the request: amount too small"),
            Refusal::Other
        );
    }

    #[test]
    fn a_purchase_counted_when_pruned_counts_once() {
        let first = settled(command("c-1", "o-1", 100, 10));
        let mut twice = command("c-2", "o-1", 100, 20);
        twice.max_per_user = 2;
        let counted = |count| Bought {
            count,
            through_ms: 15,
            offer_ends_ms: NO_END,
        };
        let none = std::iter::empty::<&Entry>();
        assert!(check(&twice, none.clone(), counted(1)).is_ok(), "pruned");
        assert!(
            check(&twice, [&first], counted(1)).is_ok(),
            "counted and not yet deleted: once"
        );
        assert!(check(&twice, [&first], Bought::default()).is_ok());
        let over = check(&twice, none, counted(2)).expect_err("two counted");
        assert!(over.contains("2 time(s)"), "{over}");
    }

    #[test]
    fn a_commands_own_entry_does_not_count_against_it() {
        let own = Entry::received(command("c-1", "o-1", 100, 0), 0, 0, 0);
        assert!(check(&command("c-1", "o-1", 100, 0), [&own], Bought::default()).is_ok());
    }

    #[test]
    fn spending_is_limited_over_a_rolling_day_of_tweet_time() {
        let day = SPEND_WINDOW_MS;
        let earlier = settled(command("c-1", "o-1", 600, 0));
        let mut next = command("c-2", "o-2", 500, day - 1);
        next.spend_limit = Some(1_000);
        let over =
            check(&next, [&earlier], Bought::default()).expect_err("1100 > 1000 within a day");
        assert!(over.contains("spend_limit is 1000"), "{over}");
        next.tweet_timestamp_ms = day;
        assert!(
            check(&next, [&earlier], Bought::default()).is_ok(),
            "a day later it has rolled off"
        );
        next.tweet_timestamp_ms = day - 1;
        next.currency = "eur".into();
        assert!(
            check(&next, [&earlier], Bought::default()).is_ok(),
            "per currency"
        );
    }

    #[test]
    fn an_earlier_tweet_read_later_counts_against_the_window_it_falls_in() {
        // c1 at 10:00 settles, then c2, tweeted at 09:00, arrives: both lie
        // in the day from 09:00, so c2 is over a limit of 100.
        let hour = 3_600_000;
        let c1 = settled(command("c-1", "o-1", 100, 10 * hour));
        let mut c2 = command("c-2", "o-2", 100, 9 * hour);
        c2.spend_limit = Some(100);
        let over =
            check(&c2, [&c1], Bought::default()).expect_err("200 > 100 in the day from 09:00");
        assert!(over.contains("spend_limit is 100"), "{over}");
        c2.tweet_timestamp_ms = 10 * hour - SPEND_WINDOW_MS;
        assert!(
            check(&c2, [&c1], Bought::default()).is_ok(),
            "a day and more apart, no day holds both"
        );
    }

    proptest! {
        /// Settling with the check never exceeds either limit, for any
        /// sequence of purchases in any order of their tweets' times.
        #[test]
        fn checked_purchases_never_exceed_the_limits(
            purchases in proptest::collection::vec((0u8..3, 1u64..500, 0i64..3 * SPEND_WINDOW_MS), 1..40),
            limit in 1u64..2_000,
        ) {
            let mut ledger: Vec<Entry> = Vec::new();
            for (i, (offer, amount, at)) in purchases.into_iter().enumerate() {
                let mut c = command(&format!("c-{i}"), &format!("o-{offer}"), amount, at);
                c.spend_limit = Some(limit);
                if check(&c, &ledger, Bought::default()).is_ok() {
                    ledger.push(settled(c));
                }
            }
            for e in &ledger {
                let c = &e.command;
                let same_offer = ledger.iter().filter(|o| o.command.offer_id == c.offer_id).count();
                prop_assert!(same_offer <= 1);
                let window: u64 = ledger
                    .iter()
                    .filter(|o| (0..SPEND_WINDOW_MS).contains(&(c.tweet_timestamp_ms - o.command.tweet_timestamp_ms)))
                    .map(|o| o.command.amount)
                    .sum();
                prop_assert!(window <= limit, "{window} > {limit}");
            }
        }
    }
}
