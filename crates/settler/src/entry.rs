//! A command's ledger entry and the transitions between its states.
//!
//! Every change is a method that checks it is allowed from the current
//! state, so a bug cannot, say, attempt a charge for a command already
//! settled: it gets a [`TransitionError`] instead. Nothing here does I/O;
//! the caller makes each change durable ([`crate::ledger`]) before acting
//! on it.

use hashbuy_core::connect::Destination;
use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::{
    ledger_entry, LedgerAttempting, LedgerDeclined, LedgerDestination, LedgerEntry, LedgerNote,
    LedgerReceived, LedgerRefused, LedgerSettled, PaymentAck, PaymentCommand,
};
use prost::Message;
use serde::{Deserialize, Serialize};

/// Where a command stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Read from Kafka; nothing sent to the provider yet.
    Received,
    /// A provider call may have been made: resume it with the same key,
    /// never start over.
    Attempting {
        /// The idempotency key of the current call.
        key: String,
        /// The key's place in the command's chain of keys ([`key_index`]),
        /// sent with every call under it as `metadata[attempt]`: a key's
        /// requests must not differ, whichever settler sends them.
        key_attempt: u32,
        /// When the current key was first used, ms since the epoch (a key
        /// older than the provider keeps keys is reconciled, not retried).
        key_since_ms: i64,
    },
    /// The card was charged.
    Settled {
        /// The provider's payment intent.
        payment_intent: String,
    },
    /// The card said no; never retried.
    Declined {
        /// The provider's payment intent, when it made one.
        payment_intent: Option<String>,
        /// The issuer's decline code.
        decline_code: String,
        /// The provider's words.
        reason: String,
    },
    /// A rule of hashbuy's (a limit) or an invalid request.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Given up, after reconciliation showed the provider holds no charge.
    Failed {
        /// The last error.
        reason: String,
    },
}

impl State {
    /// The state's name, as `hashbuy ledger` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Received => "received",
            State::Attempting { .. } => "attempting",
            State::Settled { .. } => "settled",
            State::Declined { .. } => "declined",
            State::Rejected { .. } => "rejected",
            State::Failed { .. } => "failed",
        }
    }

    /// Whether the outcome is decided.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, State::Received | State::Attempting { .. })
    }
}

/// Something worth keeping about an entry beyond its state: a duplicate
/// seen, a key misused, an operator's resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// What.
    pub text: String,
}

/// One command's entry in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The command as first received (a later one with the same id and
    /// other content is a duplicate, and loses).
    pub command: PaymentCommand,
    /// Where the command was first read.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// When it was first received, ms since the epoch.
    pub received_ms: i64,
    /// Where it stands.
    pub state: State,
    /// Provider calls made (or possibly made) so far.
    pub attempts: u32,
    /// When the state last changed (for a terminal state: when the outcome
    /// was decided, which every re-emitted ack repeats).
    pub changed_ms: i64,
    /// When its ack was delivered, once it was.
    pub acked_ms: Option<i64>,
    /// What else happened to it.
    pub notes: Vec<Note>,
    /// Why an operator must look at it (the provider charged the command
    /// more than once); `hashbuy ledger ls --state review` lists these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// Where its charge goes when it is a Stripe Connect destination
    /// charge: decided once, when the command is first received, and kept,
    /// because every call under a key must send the request that key was
    /// first used with, whatever the merchants table says by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
}

/// A change not allowed from the entry's state: a bug in the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command {command_id}: cannot {change} while {state}")]
pub struct TransitionError {
    /// The command.
    pub command_id: String,
    /// What was tried.
    pub change: &'static str,
    /// The state it was in.
    pub state: &'static str,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Charged.
    Settled {
        /// The provider's payment intent.
        payment_intent: String,
    },
    /// Declined by the card.
    Declined {
        /// The provider's payment intent, when it made one.
        payment_intent: Option<String>,
        /// The issuer's decline code.
        decline_code: String,
        /// The provider's words.
        reason: String,
    },
    /// Refused by a rule of hashbuy's or as an invalid request.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Given up (only once the provider is known to hold no charge).
    Failed {
        /// The last error.
        reason: String,
    },
}

impl From<Outcome> for State {
    fn from(outcome: Outcome) -> State {
        match outcome {
            Outcome::Settled { payment_intent } => State::Settled { payment_intent },
            Outcome::Declined {
                payment_intent,
                decline_code,
                reason,
            } => State::Declined {
                payment_intent,
                decline_code,
                reason,
            },
            Outcome::Rejected { reason } => State::Rejected { reason },
            Outcome::Failed { reason } => State::Failed { reason },
        }
    }
}

/// Now, in ms since the epoch: the ledger's clock.
pub use hashbuy_kafka::now_ms;

/// The idempotency key of a command's first provider call: its id, so the
/// same command can never charge twice under its first key.
pub fn first_key(command_id: &str) -> String {
    command_id.to_owned()
}

/// The key after `key` in a command's chain of keys, for a fresh call once
/// reconciliation showed that the provider holds no charge for the command
/// (the old key would replay its saved failure): `<id>`, then `<id>:2`,
/// `<id>:3`, ... It depends only on the key the provider answered, never on
/// how many calls were made, so every settler holding the entry mints the
/// same one (see [`crate::steps`]).
pub fn next_key(command_id: &str, key: &str) -> String {
    format!(
        "{command_id}:{}",
        key_index(command_id, key).saturating_add(1)
    )
}

/// A key's place in its command's chain: 1 for the command id, `n` for
/// `<id>:n` (see [`next_key`]).
pub fn key_index(command_id: &str, key: &str) -> u32 {
    key.strip_prefix(command_id)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1)
}

impl From<&Entry> for LedgerEntry {
    /// The entry as the ledger stores it (`hashbuy.v1.LedgerEntry`).
    fn from(entry: &Entry) -> LedgerEntry {
        use ledger_entry::State as Stored;
        let state = match &entry.state {
            State::Received => Stored::Received(LedgerReceived {}),
            State::Attempting {
                key,
                key_attempt,
                key_since_ms,
            } => Stored::Attempting(LedgerAttempting {
                key: key.clone(),
                key_attempt: *key_attempt,
                key_since_ms: *key_since_ms,
            }),
            State::Settled { payment_intent } => Stored::Settled(LedgerSettled {
                payment_intent: payment_intent.clone(),
            }),
            State::Declined {
                payment_intent,
                decline_code,
                reason,
            } => Stored::Declined(LedgerDeclined {
                payment_intent: payment_intent.clone(),
                decline_code: decline_code.clone(),
                reason: reason.clone(),
            }),
            State::Rejected { reason } => Stored::Rejected(LedgerRefused {
                reason: reason.clone(),
            }),
            State::Failed { reason } => Stored::Failed(LedgerRefused {
                reason: reason.clone(),
            }),
        };
        LedgerEntry {
            command: Some(entry.command.clone()),
            partition: entry.partition,
            offset: entry.offset,
            received_ms: entry.received_ms,
            state: Some(state),
            attempts: entry.attempts,
            changed_ms: entry.changed_ms,
            acked_ms: entry.acked_ms,
            notes: entry
                .notes
                .iter()
                .map(|n| LedgerNote {
                    at_ms: n.at_ms,
                    text: n.text.clone(),
                })
                .collect(),
            review: entry.review.clone(),
            destination: entry.destination.as_ref().map(|d| LedgerDestination {
                account_id: d.account_id.clone(),
                application_fee_amount: d.application_fee_amount,
                on_behalf_of: d.on_behalf_of,
            }),
        }
    }
}

impl TryFrom<LedgerEntry> for Entry {
    type Error = &'static str;

    /// The entry a stored one is; an error names what it lacks.
    fn try_from(stored: LedgerEntry) -> Result<Entry, &'static str> {
        use ledger_entry::State as Stored;
        let state = match stored.state.ok_or("no state")? {
            Stored::Received(_) => State::Received,
            Stored::Attempting(a) => State::Attempting {
                key: a.key,
                key_attempt: a.key_attempt,
                key_since_ms: a.key_since_ms,
            },
            Stored::Settled(s) => State::Settled {
                payment_intent: s.payment_intent,
            },
            Stored::Declined(d) => State::Declined {
                payment_intent: d.payment_intent,
                decline_code: d.decline_code,
                reason: d.reason,
            },
            Stored::Rejected(r) => State::Rejected { reason: r.reason },
            Stored::Failed(r) => State::Failed { reason: r.reason },
        };
        Ok(Entry {
            command: stored.command.ok_or("no command")?,
            partition: stored.partition,
            offset: stored.offset,
            received_ms: stored.received_ms,
            state,
            attempts: stored.attempts,
            changed_ms: stored.changed_ms,
            acked_ms: stored.acked_ms,
            notes: stored
                .notes
                .into_iter()
                .map(|n| Note {
                    at_ms: n.at_ms,
                    text: n.text,
                })
                .collect(),
            review: stored.review,
            destination: stored.destination.map(|d| Destination {
                account_id: d.account_id,
                application_fee_amount: d.application_fee_amount,
                on_behalf_of: d.on_behalf_of,
            }),
        })
    }
}

impl Entry {
    /// A command just read.
    pub fn received(command: PaymentCommand, partition: i32, offset: i64, now_ms: i64) -> Entry {
        Entry {
            command,
            partition,
            offset,
            received_ms: now_ms,
            state: State::Received,
            attempts: 0,
            changed_ms: now_ms,
            acked_ms: None,
            notes: Vec::new(),
            review: None,
            destination: None,
        }
    }

    /// The command id.
    pub fn command_id(&self) -> &str {
        &self.command.command_id
    }

    fn refuse(&self, change: &'static str) -> TransitionError {
        TransitionError {
            command_id: self.command.command_id.clone(),
            change,
            state: self.state.name(),
        }
    }

    /// Records a provider call about to be made under `key`: the first
    /// with [`first_key`], a retry with the same key, or a call under a
    /// [`next_key`]. Returns the attempt number.
    pub fn attempt(&mut self, key: String, now_ms: i64) -> Result<u32, TransitionError> {
        let (key_attempt, key_since_ms) = match &self.state {
            State::Attempting {
                key: current,
                key_attempt,
                key_since_ms,
            } if *current == key => (*key_attempt, *key_since_ms),
            State::Received | State::Attempting { .. } => {
                (key_index(&self.command.command_id, &key), now_ms)
            }
            _ => return Err(self.refuse("attempt a charge")),
        };
        self.state = State::Attempting {
            key,
            key_attempt,
            key_since_ms,
        };
        self.attempts += 1;
        self.changed_ms = now_ms;
        Ok(self.attempts)
    }

    /// Records the outcome. A rejection may come straight from `received`
    /// (a limit, checked before any call); every other outcome needs an
    /// attempt.
    pub fn decide(&mut self, outcome: Outcome, now_ms: i64) -> Result<(), TransitionError> {
        let allowed = matches!(
            (&self.state, &outcome),
            (State::Attempting { .. }, _) | (State::Received, Outcome::Rejected { .. })
        );
        if !allowed {
            return Err(self.refuse("decide an outcome"));
        }
        self.state = outcome.into();
        self.changed_ms = now_ms;
        Ok(())
    }

    /// Records that the ack was delivered.
    pub fn acked(&mut self, now_ms: i64) -> Result<(), TransitionError> {
        if !self.state.is_terminal() {
            return Err(self.refuse("ack"));
        }
        self.acked_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// An operator decides a stuck entry by hand, with a reason kept in
    /// its notes.
    pub fn resolve(
        &mut self,
        outcome: Outcome,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), TransitionError> {
        if self.state.is_terminal() {
            return Err(self.refuse("resolve by hand"));
        }
        self.note(format!("resolved by hand: {reason}"), now_ms);
        self.state = outcome.into();
        self.changed_ms = now_ms;
        Ok(())
    }

    /// Keeps a note.
    pub fn note(&mut self, text: String, now_ms: i64) {
        self.notes.push(Note {
            at_ms: now_ms,
            text,
        });
    }

    /// Whether `command` is this entry's command, byte for byte (the same
    /// id with other content is a duplicate, which loses).
    pub fn same_command(&self, command: &PaymentCommand) -> bool {
        self.command.encode_to_vec() == command.encode_to_vec()
    }

    /// The ack of a decided command; the same every time it is asked for.
    pub fn ack(&self) -> Option<PaymentAck> {
        let c = &self.command;
        let mut ack = PaymentAck {
            command_id: c.command_id.clone(),
            tweet_id: c.tweet_id.clone(),
            user_id: c.user_id.clone(),
            offer_id: c.offer_id.clone(),
            amount: c.amount,
            currency: c.currency.clone(),
            attempts: self.attempts,
            decided_at_ms: self.changed_ms,
            ..PaymentAck::default()
        };
        match &self.state {
            State::Received | State::Attempting { .. } => return None,
            State::Settled { payment_intent } => {
                ack.set_status(Status::Settled);
                ack.payment_intent_id = payment_intent.clone();
            }
            State::Declined {
                payment_intent,
                decline_code,
                reason,
            } => {
                ack.set_status(Status::Declined);
                ack.payment_intent_id = payment_intent.clone().unwrap_or_default();
                ack.decline_code = decline_code.clone();
                ack.reason = reason.clone();
            }
            State::Rejected { reason } => {
                ack.set_status(Status::Rejected);
                ack.reason = reason.clone();
            }
            State::Failed { reason } => {
                ack.set_status(Status::Failed);
                ack.reason = reason.clone();
            }
        }
        Some(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> PaymentCommand {
        PaymentCommand {
            command_id: "c-1".into(),
            tweet_id: "t-1".into(),
            user_id: "u-1".into(),
            offer_id: "o-1".into(),
            amount: 4200,
            currency: "usd".into(),
            customer_id: "cus_1".into(),
            payment_method_id: "pm_card_visa".into(),
            max_per_user: 1,
            ..PaymentCommand::default()
        }
    }

    fn settled() -> Outcome {
        Outcome::Settled {
            payment_intent: "pi_1".into(),
        }
    }

    #[test]
    fn a_command_is_attempted_then_decided_then_acked() {
        let mut e = Entry::received(command(), 3, 17, 1_000);
        assert_eq!(e.ack(), None, "no ack before an outcome");
        assert_eq!(e.attempt(first_key("c-1"), 1_001), Ok(1));
        assert_eq!(e.attempt(first_key("c-1"), 1_002), Ok(2));
        assert_eq!(
            e.state,
            State::Attempting {
                key: "c-1".into(),
                key_attempt: 1,
                key_since_ms: 1_001
            },
            "a retry keeps the key and its age"
        );
        assert_eq!(e.attempts, 2);
        e.decide(settled(), 1_003).expect("decided");
        e.acked(1_004).expect("acked");
        let ack = e.ack().expect("an ack");
        assert_eq!(ack.status(), Status::Settled);
        assert_eq!(ack.payment_intent_id, "pi_1");
        assert_eq!(ack.attempts, 2);
        assert_eq!(ack.decided_at_ms, 1_003);
        assert_eq!(e.acked_ms, Some(1_004));
    }

    #[test]
    fn every_owner_sends_the_same_request_under_a_key() {
        // One owner retried its first key three times, the other once:
        // both then call under the next key, with the same metadata.
        let mut busy = Entry::received(command(), 0, 0, 0);
        let mut quiet = busy.clone();
        for at in 1..=3 {
            busy.attempt(first_key("c-1"), at).expect("retry");
        }
        quiet.attempt(first_key("c-1"), 1).expect("first");
        busy.attempt(next_key("c-1", "c-1"), 10).expect("next");
        quiet.attempt(next_key("c-1", "c-1"), 20).expect("next");
        let sent = |e: &Entry| match &e.state {
            State::Attempting {
                key, key_attempt, ..
            } => (key.clone(), *key_attempt),
            other => panic!("{other:?}"),
        };
        assert_eq!(sent(&busy), ("c-1:2".into(), 2));
        assert_eq!(sent(&busy), sent(&quiet));
    }

    #[test]
    fn a_fresh_key_restarts_the_key_age_and_counts_on() {
        let mut e = Entry::received(command(), 0, 0, 0);
        e.attempt(first_key("c-1"), 10).expect("first");
        e.attempt(next_key("c-1", "c-1"), 20).expect("fresh");
        assert_eq!(
            e.state,
            State::Attempting {
                key: "c-1:2".into(),
                key_attempt: 2,
                key_since_ms: 20
            }
        );
        assert_eq!(e.attempts, 2);
    }

    #[test]
    fn a_decided_command_is_never_attempted_again() {
        let mut e = Entry::received(command(), 0, 0, 0);
        e.attempt(first_key("c-1"), 1).expect("first");
        e.decide(settled(), 2).expect("decided");
        let before = e.clone();
        assert!(e.attempt(first_key("c-1"), 3).is_err());
        assert!(e.decide(settled(), 3).is_err());
        assert!(e.resolve(settled(), "by hand", 3).is_err());
        assert_eq!(e, before, "refused changes change nothing");
        assert_eq!(e.ack(), before.ack(), "the same ack every time");
    }

    #[test]
    fn only_a_rejection_skips_the_attempt() {
        let mut e = Entry::received(command(), 0, 0, 0);
        assert!(e.decide(settled(), 1).is_err(), "no charge without a call");
        assert!(e.acked(1).is_err(), "nothing to ack yet");
        e.decide(
            Outcome::Rejected {
                reason: "over the limit".into(),
            },
            2,
        )
        .expect("a limit rejects before any call");
        let ack = e.ack().expect("an ack");
        assert_eq!(ack.status(), Status::Rejected);
        assert_eq!(ack.attempts, 0);
        assert_eq!(ack.reason, "over the limit");
    }

    #[test]
    fn a_declined_ack_carries_the_decline_code() {
        let mut e = Entry::received(command(), 0, 0, 0);
        e.attempt(first_key("c-1"), 1).expect("first");
        e.decide(
            Outcome::Declined {
                payment_intent: Some("pi_2".into()),
                decline_code: "insufficient_funds".into(),
                reason: "Your card has insufficient funds.".into(),
            },
            2,
        )
        .expect("decided");
        let ack = e.ack().expect("an ack");
        assert_eq!(ack.status(), Status::Declined);
        assert_eq!(ack.decline_code, "insufficient_funds");
        assert_eq!(ack.payment_intent_id, "pi_2");
    }

    #[test]
    fn a_stuck_entry_is_resolved_by_hand_with_its_reason() {
        let mut e = Entry::received(command(), 0, 0, 0);
        e.attempt(first_key("c-1"), 1).expect("first");
        e.resolve(
            Outcome::Failed {
                reason: "provider confirmed no charge".into(),
            },
            "ticket 42",
            5,
        )
        .expect("resolved");
        assert_eq!(e.state.name(), "failed");
        assert!(e.notes.iter().any(|n| n.text.contains("ticket 42")));
        assert_eq!(e.ack().expect("an ack").attempts, 1);
    }

    #[test]
    fn other_content_under_the_same_id_is_not_the_same_command() {
        let e = Entry::received(command(), 0, 0, 0);
        assert!(e.same_command(&command()));
        let mut dearer = command();
        dearer.amount += 1;
        assert!(!e.same_command(&dearer));
    }

    #[test]
    fn entries_round_trip_through_json() {
        let mut e = Entry::received(command(), 1, 2, 3);
        e.attempt(first_key("c-1"), 4).expect("first");
        let json = serde_json::to_string(&e).expect("serializes");
        assert!(json.contains("\"state\":\"attempting\""), "{json}");
        let back: Entry = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, e);
    }
}
