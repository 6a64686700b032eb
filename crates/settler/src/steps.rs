//! What to do next with a command, from its entry and what the provider
//! said: the settler's decisions, pure, so each can be tested alone.
//!
//! - A new command is charged under its first key (its id).
//! - A command found `attempting` after a restart is charged again under
//!   the same key, which replays whatever the provider did with it; unless
//!   the key is older than the provider keeps keys, then it is reconciled.
//! - Timeouts, dropped connections, 429s, a key still in flight: the same
//!   key again, after a backoff, until the attempt budget is spent, then a
//!   reconciliation. A call that got no answer may still be running at the
//!   provider, so a reconciliation first waits out
//!   [`Policy::unanswered_wait`] after one.
//! - A 500 (saved under the key, so the key would only replay it), a key
//!   misused, a charge left pending: reconcile, i.e. look the command up in
//!   the provider's records. A charge found decides the command; none
//!   found means a fresh key, or `failed` once the budget is spent.

use std::time::Duration;

use crate::entry::{first_key, fresh_key, Entry, Outcome, State};

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
        State::Attempting {
            key, key_since_ms, ..
        } => {
            let age = now_ms.saturating_sub(*key_since_ms);
            if u128::try_from(age).unwrap_or(0) >= policy.key_lifetime.as_millis() {
                Some(Step::Reconcile)
            } else {
                Some(Step::Charge { key: key.clone() })
            }
        }
        _ => None,
    }
}

/// After a charge call.
pub fn after_reply(entry: &Entry, reply: Reply, policy: &Policy) -> Step {
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
            State::Attempting { key, .. } => Step::Charge { key: key.clone() },
            _ => Step::Reconcile,
        },
        Reply::Unknown { .. } => Step::Reconcile,
    }
}

/// After a reconciliation; `last_error` is what the last call said.
pub fn after_reconcile(entry: &Entry, found: Found, policy: &Policy, last_error: &str) -> Step {
    match found {
        Found::Charged { payment_intent } => Step::Decide(Outcome::Settled { payment_intent }),
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
        Found::Nothing => Step::Charge {
            key: fresh_key(entry.command_id(), entry.attempts + 1),
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
        let e = attempting(1, "c-1:2", 1_000);
        assert_eq!(start(&e, 2_000, &POLICY), Some(charge("c-1:2")));
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
            &POLICY,
        );
        assert!(matches!(declined, Step::Decide(Outcome::Declined { .. })));
        let rejected = after_reply(
            &e,
            Reply::Invalid {
                reason: "no such customer".into(),
            },
            &POLICY,
        );
        assert!(matches!(rejected, Step::Decide(Outcome::Rejected { .. })));
        let unknown = Reply::Unknown {
            reason: "500".into(),
        };
        assert_eq!(after_reply(&e, unknown, &POLICY), Step::Reconcile);
    }

    #[test]
    fn transient_failures_retry_the_same_key_until_the_budget_is_spent() {
        let retry = || Reply::Retry {
            cause: "timeout",
            after: None,
        };
        let e = attempting(2, "c-1", 0);
        assert_eq!(after_reply(&e, retry(), &POLICY), charge("c-1"));
        let spent = attempting(3, "c-1", 0);
        assert_eq!(after_reply(&spent, retry(), &POLICY), Step::Reconcile);
    }

    #[test]
    fn reconciliation_decides_or_tries_a_fresh_key_or_fails() {
        let e = attempting(1, "c-1", 0);
        let found = Found::Charged {
            payment_intent: "pi_9".into(),
        };
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
