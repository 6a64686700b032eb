//! What to do next with a command, from its entry and what the provider
//! said: the settler's decisions, pure, so each can be tested alone.
//!
//! - A new command is charged under its first key (its id).
//! - A command found `attempting` after a restart or a hand-over is
//!   charged again under the same key, which replays whatever the provider
//!   did with it. Its last call is one that got no answer (the owner that
//!   made it is gone), so a reconciliation waits it out first.
//! - A key is called only while more than [`Policy::unanswered_wait`] of
//!   its lifetime at the provider is left: a call sent later could reach
//!   the provider after it forgot the key, and charge again. An older key
//!   is reconciled instead, before every call, retries included.
//! - Timeouts, dropped connections, 429s, a key still in flight: the same
//!   key again, after a backoff, until the attempt budget is spent, then a
//!   reconciliation. A call that got no answer may still be running at the
//!   provider, so a reconciliation first waits out
//!   [`Policy::unanswered_wait`] after one.
//! - A 500 (saved under the key, so the key would only replay it), a key
//!   misused, a charge left pending: reconcile, i.e. look the command up in
//!   the provider's records. A charge found decides the command; none
//!   found means the next key of the command's chain ([`next_key`]), or
//!   `failed` once the budget is spent. The chain depends only on the key
//!   that was answered, never on how many calls this process made, so two
//!   settlers that both hold the entry (one of them a zombie, or both
//!   around a hand-over) mint the same key, and the provider's idempotency
//!   charges it once.

use std::time::Duration;

use crate::entry::{first_key, key_index, next_key, Entry, Outcome, State};

/// What one charge call told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Charged.
    Charged {
        /// The provider's payment intent.
        payment_intent: String,
    },
    /// The card said no.
    Declined {
        /// The provider's payment intent, when it made one.
        payment_intent: Option<String>,
        /// The issuer's decline code.
        decline_code: String,
        /// The provider's words.
        reason: String,
    },
    /// The request is wrong (unknown customer, bad amount): rejected.
    Invalid {
        /// The provider's words.
        reason: String,
    },
    /// Call again with the same key: nothing happened, or the key will
    /// replay what did.
    Retry {
        /// Why, for the metrics (`timeout`, `connection`, `rate_limited`,
        /// `in_flight`).
        cause: &'static str,
        /// The provider's `Retry-After`.
        after: Option<Duration>,
    },
    /// Whether it charged cannot be told from the key: look it up.
    Unknown {
        /// What the provider said.
        reason: String,
    },
}

/// What a reconciliation found for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A charge that succeeded.
    Charged {
        /// Its payment intent.
        payment_intent: String,
        /// How many of the command's payment intents succeeded: more than
        /// one is a double charge ([`double_charge`]).
        charges: usize,
    },
    /// A charge the card declined (and none that succeeded).
    Declined {
        /// Its payment intent.
        payment_intent: String,
        /// The issuer's decline code.
        decline_code: String,
    },
    /// A charge still in progress (`processing`, ...): the money may yet
    /// move, so nothing is decided until it settles.
    Pending {
        /// Its payment intent.
        payment_intent: String,
    },
    /// No charge for the command.
    Nothing,
}

/// Limits of the settler's patience.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Provider calls for one command before a charge the provider cannot
    /// confirm is given up as `failed` (after reconciliation).
    pub max_attempts: u32,
    /// How long the provider keeps an idempotency key's response; an
    /// attempt older than that is reconciled, never retried.
    pub key_lifetime: Duration,
    /// How long a call that got no answer (a timeout, a dropped
    /// connection, the key still in flight) may go on running at the
    /// provider. A reconciliation sooner could miss the charge it is
    /// making, and fail the command or charge it again under a fresh key:
    /// so a reconciliation waits this long after such a call.
    pub unanswered_wait: Duration,
}

/// Whether a retry's cause leaves a call under the key possibly still
/// running at the provider: it timed out, the connection dropped, or the
/// provider said the key is in flight. A rate limit answers before
/// anything runs.
pub fn unanswered(cause: &str) -> bool {
    matches!(cause, "timeout" | "connection" | "conflict")
}

/// How long to wait before reconciling, `since` the last call that got no
/// answer (if any).
pub fn reconcile_wait(since: Option<Duration>, policy: &Policy) -> Duration {
    since.map_or(Duration::ZERO, |since| {
        policy.unanswered_wait.saturating_sub(since)
    })
}

/// Whether an entry read from the ledger (resumed after a restart, or
/// restored from another owner's changelog) stands at a call that got no
/// answer: an `attempting` entry's last call may still be running at the
/// provider, or be on its way there from a settler that lost the partition.
pub fn unanswered_at_start(entry: &Entry) -> bool {
    matches!(entry.state, State::Attempting { .. })
}

/// Whether `entry`'s current key may still be called at `now_ms`: more
/// than [`Policy::unanswered_wait`] of its lifetime at the provider is
/// left, so a call sent now reaches the provider while it keeps the key.
pub fn key_usable(entry: &Entry, now_ms: i64, policy: &Policy) -> bool {
    let State::Attempting { key_since_ms, .. } = &entry.state else {
        return true;
    };
    let age = u128::try_from(now_ms.saturating_sub(*key_since_ms)).unwrap_or(0);
    let usable = policy
        .key_lifetime
        .saturating_sub(policy.unanswered_wait)
        .as_millis();
    age < usable
}

/// A call under `key` now, or a reconciliation if `entry` has used the key
/// for so long that a call could reach the provider after it forgot it.
fn call_or_reconcile(entry: &Entry, key: String, now_ms: i64, policy: &Policy) -> Step {
    let current = matches!(&entry.state, State::Attempting { key: k, .. } if *k == key);
    if current && !key_usable(entry, now_ms, policy) {
        return Step::Reconcile;
    }
    Step::Charge { key }
}

/// What an operator must hear of a reconciliation: the provider charged
/// the command more than once. The command is settled (the money moved),
/// and the extra charges are the operator's to refund; never settled in
/// silence.
pub fn double_charge(found: &Found) -> Option<String> {
    match found {
        Found::Charged {
            payment_intent,
            charges,
        } if *charges > 1 => Some(format!(
            "double charge: the provider holds {charges} successful charges of the command; \
             settled as {payment_intent}, refund the others"
        )),
        _ => None,
    }
}

/// The next thing to do for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Call the provider under this key.
    Charge {
        /// The idempotency key.
        key: String,
    },
    /// Look the command up in the provider's records.
    Reconcile,
    /// Record this outcome.
    Decide(Outcome),
}

/// Where an undecided command starts (for a new one, or one resumed after
/// a restart); `None` for a decided one.
pub fn start(entry: &Entry, now_ms: i64, policy: &Policy) -> Option<Step> {
    match &entry.state {
        State::Received => Some(Step::Charge {
            key: first_key(entry.command_id()),
        }),
        // A later key than the first was minted after a 500 and a
        // reconciliation that found nothing; but another owner that never
        // saw it may have charged under an earlier key since (a 500 before
        // the request ran leaves that key free to run again). So it is
        // looked up first, and called only if nothing is found
        // ([`after_resumed_reconcile`]).
        State::Attempting { key, .. } if key_index(entry.command_id(), key) > 1 => {
            Some(Step::Reconcile)
        }
        State::Attempting { key, .. } => {
            Some(call_or_reconcile(entry, key.clone(), now_ms, policy))
        }
        _ => None,
    }
}

/// After the reconciliation a resumed entry starts with ([`start`]): as
/// [`after_reconcile`], except that nothing found calls the entry's own key
/// (which may never have been sent) rather than minting the next.
pub fn after_resumed_reconcile(
    entry: &Entry,
    found: Found,
    now_ms: i64,
    policy: &Policy,
    last_error: &str,
) -> Step {
    match (&found, &entry.state) {
        (Found::Nothing, State::Attempting { key, .. }) => {
            call_or_reconcile(entry, key.clone(), now_ms, policy)
        }
        _ => after_reconcile(entry, found, policy, last_error),
    }
}

/// After a charge call answered at `now_ms`.
pub fn after_reply(entry: &Entry, reply: Reply, now_ms: i64, policy: &Policy) -> Step {
    match reply {
        Reply::Charged { payment_intent } => Step::Decide(Outcome::Settled { payment_intent }),
        Reply::Declined {
            payment_intent,
            decline_code,
            reason,
        } => Step::Decide(Outcome::Declined {
            payment_intent,
            decline_code,
            reason,
        }),
        Reply::Invalid { reason } => Step::Decide(Outcome::Rejected {
            reason: format!("the provider refused the request: {reason}"),
        }),
        Reply::Retry { .. } if entry.attempts >= policy.max_attempts => Step::Reconcile,
        Reply::Retry { .. } => match &entry.state {
            State::Attempting { key, .. } => call_or_reconcile(entry, key.clone(), now_ms, policy),
            _ => Step::Reconcile,
        },
        Reply::Unknown { .. } => Step::Reconcile,
    }
}

/// After a reconciliation; `last_error` is what the last call said.
pub fn after_reconcile(entry: &Entry, found: Found, policy: &Policy, last_error: &str) -> Step {
    match found {
        Found::Charged { payment_intent, .. } => Step::Decide(Outcome::Settled { payment_intent }),
        Found::Declined {
            payment_intent,
            decline_code,
        } => Step::Decide(Outcome::Declined {
            payment_intent: Some(payment_intent),
            decline_code,
            reason: "declined (found by reconciliation)".into(),
        }),
        Found::Pending { .. } => Step::Reconcile,
        Found::Nothing if entry.attempts >= policy.max_attempts => Step::Decide(Outcome::Failed {
            reason: format!(
                "gave up after {} provider calls; the provider holds no charge for the \
                     command; last error: {last_error}",
                entry.attempts
            ),
        }),
        Found::Nothing => match &entry.state {
            State::Attempting { key, .. } => Step::Charge {
                key: next_key(entry.command_id(), key),
            },
            _ => Step::Charge {
                key: first_key(entry.command_id()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use hashbuy_proto::v1::PaymentCommand;

    use super::*;

    const POLICY: Policy = Policy {
        max_attempts: 3,
        key_lifetime: Duration::from_secs(24 * 3600),
        unanswered_wait: Duration::from_secs(60),
    };

    fn entry() -> Entry {
        Entry::received(
            PaymentCommand {
                command_id: "c-1".into(),
                ..PaymentCommand::default()
            },
            0,
            0,
            0,
        )
    }

    fn attempting(attempts: u32, key: &str, since_ms: i64) -> Entry {
        let mut e = entry();
        for _ in 0..attempts {
            e.attempt(key.into(), since_ms).expect("attempt");
        }
        e
    }

    fn charge(key: &str) -> Step {
        Step::Charge { key: key.into() }
    }

    #[test]
    fn a_new_command_is_charged_under_its_id() {
        assert_eq!(start(&entry(), 0, &POLICY), Some(charge("c-1")));
    }

    #[test]
    fn a_resumed_attempt_reuses_its_key_while_the_provider_keeps_it() {
        let e = attempting(1, "c-1", 1_000);
        assert_eq!(start(&e, 2_000, &POLICY), Some(charge("c-1")));
        let day_ms = 24 * 3600 * 1000;
        assert_eq!(start(&e, 1_000 + day_ms, &POLICY), Some(Step::Reconcile));
    }

    #[test]
    fn a_decided_command_has_no_step() {
        let mut e = attempting(1, "c-1", 0);
        e.decide(
            Outcome::Settled {
                payment_intent: "pi".into(),
            },
            1,
        )
        .expect("decided");
        assert_eq!(start(&e, 2, &POLICY), None);
    }

    #[test]
    fn answers_decide_and_doubt_reconciles() {
        let e = attempting(1, "c-1", 0);
        let settled = after_reply(
            &e,
            Reply::Charged {
                payment_intent: "pi".into(),
            },
            0,
            &POLICY,
        );
        assert!(matches!(settled, Step::Decide(Outcome::Settled { .. })));
        let declined = after_reply(
            &e,
            Reply::Declined {
                payment_intent: None,
                decline_code: "insufficient_funds".into(),
                reason: "no".into(),
            },
            0,
            &POLICY,
        );
        assert!(matches!(declined, Step::Decide(Outcome::Declined { .. })));
        let rejected = after_reply(
            &e,
            Reply::Invalid {
                reason: "no such customer".into(),
            },
            0,
            &POLICY,
        );
        assert!(matches!(rejected, Step::Decide(Outcome::Rejected { .. })));
        let unknown = Reply::Unknown {
            reason: "500".into(),
        };
        assert_eq!(after_reply(&e, unknown, 0, &POLICY), Step::Reconcile);
    }

    #[test]
    fn transient_failures_retry_the_same_key_until_the_budget_is_spent() {
        let retry = || Reply::Retry {
            cause: "timeout",
            after: None,
        };
        let e = attempting(2, "c-1", 0);
        assert_eq!(after_reply(&e, retry(), 0, &POLICY), charge("c-1"));
        let spent = attempting(3, "c-1", 0);
        assert_eq!(after_reply(&spent, retry(), 0, &POLICY), Step::Reconcile);
    }

    #[test]
    fn reconciliation_decides_or_tries_a_fresh_key_or_fails() {
        let e = attempting(1, "c-1", 0);
        let found = Found::Charged {
            payment_intent: "pi_9".into(),
            charges: 1,
        };
        assert_eq!(double_charge(&found), None);
        assert_eq!(
            after_reconcile(&e, found, &POLICY, "500"),
            Step::Decide(Outcome::Settled {
                payment_intent: "pi_9".into()
            })
        );
        assert_eq!(
            after_reconcile(&e, Found::Nothing, &POLICY, "500"),
            charge("c-1:2"),
            "a fresh key, derived from the attempt"
        );
        let pending = Found::Pending {
            payment_intent: "pi_3".into(),
        };
        assert_eq!(
            after_reconcile(&e, pending, &POLICY, "500"),
            Step::Reconcile,
            "a charge in progress is waited for, never retried"
        );
        let spent = attempting(3, "c-1", 0);
        match after_reconcile(&spent, Found::Nothing, &POLICY, "500 api_error") {
            Step::Decide(Outcome::Failed { reason }) => {
                assert!(reason.contains("no charge") && reason.contains("500 api_error"))
            }
            other => panic!("expected failed, got {other:?}"),
        }
    }

    #[test]
    fn every_owner_mints_the_same_key_after_a_500() {
        // Owner A retried 429s under c-1 before its 500; owner B restored
        // the entry after one call. Both find nothing and charge again:
        // under one key, so the provider charges at most once.
        let patient = Policy {
            max_attempts: 10,
            ..POLICY
        };
        let a = attempting(4, "c-1", 0);
        let b = attempting(1, "c-1", 0);
        let next_a = after_reconcile(&a, Found::Nothing, &patient, "500");
        let next_b = after_reconcile(&b, Found::Nothing, &patient, "500");
        assert_eq!(next_a, charge("c-1:2"));
        assert_eq!(next_b, next_a);
        let later = attempting(7, "c-1:2", 0);
        assert_eq!(
            after_reconcile(&later, Found::Nothing, &patient, "500"),
            charge("c-1:3"),
            "the chain goes on from the key, whatever the calls"
        );
    }

    #[test]
    fn a_key_is_never_called_near_or_past_its_lifetime() {
        let day_ms = 24 * 3600 * 1000;
        let e = attempting(1, "c-1", 0);
        let retry = || Reply::Retry {
            cause: "rate_limited",
            after: None,
        };
        assert_eq!(after_reply(&e, retry(), 1_000, &POLICY), charge("c-1"));
        // A call sent now may reach the provider after the key expired: the
        // key is done once less than `unanswered_wait` of its life is left.
        let late = day_ms - POLICY.unanswered_wait.as_millis() as i64;
        assert_eq!(after_reply(&e, retry(), late, &POLICY), Step::Reconcile);
        assert_eq!(start(&e, late, &POLICY), Some(Step::Reconcile));
        assert_eq!(start(&e, late - 1, &POLICY), Some(charge("c-1")));
    }

    #[test]
    fn a_resumed_later_key_is_looked_up_before_it_is_called() {
        // Owner A minted c-1:2 and died before the changelog had it; owner
        // B charged under c-1 meanwhile. A, resuming c-1:2, must find
        // B's charge rather than charge again.
        let e = attempting(1, "c-1:2", 1_000);
        assert_eq!(start(&e, 2_000, &POLICY), Some(Step::Reconcile));
        let found = Found::Charged {
            payment_intent: "pi_b".into(),
            charges: 1,
        };
        assert_eq!(
            after_resumed_reconcile(&e, found, 2_000, &POLICY, ""),
            Step::Decide(Outcome::Settled {
                payment_intent: "pi_b".into()
            })
        );
        assert_eq!(
            after_resumed_reconcile(&e, Found::Nothing, 2_000, &POLICY, ""),
            charge("c-1:2"),
            "nothing found: its own key, which may never have been sent"
        );
        assert_eq!(
            start(&attempting(1, "c-1", 1_000), 2_000, &POLICY),
            Some(charge("c-1"))
        );
    }

    #[test]
    fn an_entry_restored_mid_call_is_a_call_that_got_no_answer() {
        assert!(!unanswered_at_start(&entry()));
        assert!(unanswered_at_start(&attempting(1, "c-1", 0)));
    }

    #[test]
    fn a_double_charge_settles_and_is_raised() {
        let e = attempting(1, "c-1", 0);
        let twice = Found::Charged {
            payment_intent: "pi_2".into(),
            charges: 2,
        };
        let raised = double_charge(&twice).expect("an incident");
        assert!(raised.contains("2 successful charges") && raised.contains("pi_2"));
        assert_eq!(
            after_reconcile(&e, twice, &POLICY, "500"),
            Step::Decide(Outcome::Settled {
                payment_intent: "pi_2".into()
            })
        );
    }

    #[test]
    fn a_reconciliation_waits_out_a_call_that_got_no_answer() {
        assert_eq!(reconcile_wait(None, &POLICY), Duration::ZERO);
        assert_eq!(
            reconcile_wait(Some(Duration::from_secs(15)), &POLICY),
            Duration::from_secs(45)
        );
        assert_eq!(
            reconcile_wait(Some(Duration::from_secs(90)), &POLICY),
            Duration::ZERO
        );
        assert!(unanswered("timeout") && unanswered("connection") && unanswered("conflict"));
        assert!(!unanswered("rate_limited"));
    }
}
