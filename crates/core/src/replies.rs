//! Replies to the buyer: their ids, and the words of the settler's.
//!
//! A reply's id is derived from its command and kind, so a reply repeated
//! by a replay, a redelivery or a hand-over has the same id and a
//! connector posts it once. The matcher's replies (prompt, expiry,
//! cancellation) are written by [`crate::confirm`]; the settler's tell a
//! command's outcome ([`outcome`]), in words a shopper can act on: a
//! decline says what to do about the card (never why a bank suspects
//! fraud, as Stripe advises), a rejection which limit it met.

use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::reply::Kind;
use hashbuy_proto::v1::{PaymentAck, PaymentCommand, Reply};
use uuid::Uuid;

use crate::money::format_amount;

/// The namespace of reply ids: UUIDv5 of the URL namespace and
/// `"https://hashbuy.dev/ns/reply"`. Fixed forever: a connector posts a
/// reply id once.
pub const REPLY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x4e58_aad5_a3c8_5db2_b941_e855_eb34_eff3);

/// The id of the reply of `kind` about command `command_id`: UUIDv5 in
/// [`REPLY_ID_NAMESPACE`] over `"<command id>:<kind>"`, the kind as its
/// proto name (`CONFIRM_PROMPT`).
pub fn reply_id(command_id: &str, kind: Kind) -> Uuid {
    let name = format!("{command_id}:{}", kind.as_str_name());
    Uuid::new_v5(&REPLY_ID_NAMESPACE, name.as_bytes())
}

/// A reply of `kind` about `command`, in reply to its purchase tweet.
pub fn about(command: &PaymentCommand, kind: Kind, text: String, at_ms: i64) -> Reply {
    Reply {
        reply_id: reply_id(&command.command_id, kind).to_string(),
        in_reply_to_tweet_id: command.tweet_id.clone(),
        user_id: command.user_id.clone(),
        kind: kind as i32,
        text,
        command_id: command.command_id.clone(),
        offer_id: command.offer_id.clone(),
        at_ms,
    }
}

/// What the shopper is told an offer is: its title, else its id.
pub fn title(command: &PaymentCommand) -> &str {
    if command.offer_title.is_empty() {
        &command.offer_id
    } else {
        &command.offer_title
    }
}

/// Which rule refused a `REJECTED` command, for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The offer's `max_per_user`, reached.
    MaxPerUser(u32),
    /// The shopper's `spend_limit` over a rolling day, which the purchase
    /// would pass.
    SpendLimit(u64),
    /// The offer's stock, sold.
    SoldOut,
    /// The purchase's tweet is past the settler's horizon (a replay of an
    /// old recording): not answered, as the buyer tweeted days ago and a
    /// replay must not write to its buyers.
    Stale,
    /// Anything else: the provider refused the request.
    Other,
}

/// The reply telling the buyer `ack`'s outcome of `command`, at the time
/// the outcome was recorded; `refusal` says which rule refused a
/// `REJECTED` one. `None` for an ack without an outcome.
pub fn outcome(command: &PaymentCommand, ack: &PaymentAck, refusal: Refusal) -> Option<Reply> {
    let title = title(command);
    let amount = format_amount(command.amount, &command.currency);
    let (kind, text) = match ack.status() {
        Status::Unspecified => return None,
        Status::Settled => (
            Kind::Settled,
            format!("Bought: {title} for {amount}. Thank you!"),
        ),
        Status::Declined => (
            Kind::Declined,
            format!(
                "{title} was not bought: {}. Nothing was charged.",
                decline_words(&ack.decline_code)
            ),
        ),
        Status::Rejected if refusal == Refusal::Stale => return None,
        Status::Rejected => (
            Kind::Rejected,
            match refusal {
                Refusal::MaxPerUser(1) => format!(
                    "{title} was not bought: it is one per shopper, and you have it already. \
                     Nothing was charged."
                ),
                Refusal::MaxPerUser(max) => format!(
                    "{title} was not bought: it is {max} per shopper, and you have bought {max}. \
                     Nothing was charged."
                ),
                Refusal::SpendLimit(limit) => format!(
                    "{title} was not bought: it would take you over your spending limit of {} a \
                     day. Nothing was charged.",
                    format_amount(limit, &command.currency)
                ),
                Refusal::SoldOut => {
                    format!("{title} was not bought: it is sold out. Nothing was charged.")
                }
                Refusal::Other | Refusal::Stale => {
                    format!("{title} could not be bought, and nothing was charged.")
                }
            },
        ),
        Status::Failed => (
            Kind::Failed,
            format!(
                "{title} could not be bought just now, and nothing was charged. Please tweet \
                 again later."
            ),
        ),
    };
    Some(about(command, kind, text, ack.decided_at_ms))
}

/// A card issuer's decline code (Stripe's `decline_code`) as what the
/// shopper can do. Codes that tell of suspected fraud get the generic
/// words, as Stripe advises.
fn decline_words(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "your card has insufficient funds; use another card",
        "expired_card" => "your card has expired; link a new one",
        "incorrect_cvc"
        | "invalid_cvc"
        | "incorrect_number"
        | "invalid_number"
        | "invalid_expiry_month"
        | "invalid_expiry_year"
        | "incorrect_zip" => "the card details on file are wrong; link the card again",
        "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
            "your card's limit was reached; contact your bank or use another card"
        }
        "authentication_required" => {
            "your bank asks you to approve this payment, which a tweet cannot do; use another card"
        }
        "card_not_supported" | "currency_not_supported" => {
            "your card does not support this purchase; use another card"
        }
        _ => "your bank declined the payment; contact your bank or use another card",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_namespace_is_the_documented_derivation() {
        let derived = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://hashbuy.dev/ns/reply");
        assert_eq!(REPLY_ID_NAMESPACE, derived);
    }

    fn command() -> PaymentCommand {
        PaymentCommand {
            command_id: "c".into(),
            tweet_id: "10".into(),
            user_id: "1".into(),
            offer_id: "red".into(),
            offer_title: "Red Sneakers".into(),
            amount: 4200,
            currency: "usd".into(),
            ..PaymentCommand::default()
        }
    }

    fn ack(status: Status, decline_code: &str) -> PaymentAck {
        let mut ack = PaymentAck {
            decline_code: decline_code.into(),
            decided_at_ms: 7,
            ..PaymentAck::default()
        };
        ack.set_status(status);
        ack
    }

    fn text(status: Status, code: &str, refusal: Refusal) -> String {
        outcome(&command(), &ack(status, code), refusal)
            .expect("a reply")
            .text
    }

    #[test]
    fn each_outcome_is_told_in_words_a_shopper_can_act_on() {
        let settled =
            outcome(&command(), &ack(Status::Settled, ""), Refusal::Other).expect("a reply");
        assert_eq!(settled.text, "Bought: Red Sneakers for $42.00. Thank you!");
        assert_eq!(
            (
                settled.kind,
                settled.in_reply_to_tweet_id.as_str(),
                settled.at_ms
            ),
            (Kind::Settled as i32, "10", 7)
        );
        assert_eq!(settled.reply_id, reply_id("c", Kind::Settled).to_string());
        assert_eq!(
            text(Status::Declined, "insufficient_funds", Refusal::Other),
            "Red Sneakers was not bought: your card has insufficient funds; use another card. \
             Nothing was charged."
        );
        assert!(
            text(Status::Declined, "stolen_card", Refusal::Other)
                .contains("your bank declined the payment"),
            "suspected fraud is not told"
        );
        assert!(text(Status::Rejected, "", Refusal::MaxPerUser(1)).contains("one per shopper"));
        assert!(text(Status::Rejected, "", Refusal::SpendLimit(10_000))
            .contains("your spending limit of $100.00 a day"));
        assert!(text(Status::Failed, "", Refusal::Other).contains("tweet again later"));
        assert!(outcome(&command(), &PaymentAck::default(), Refusal::Other).is_none());
        let stale = outcome(&command(), &ack(Status::Rejected, ""), Refusal::Stale);
        assert!(stale.is_none(), "a stale purchase is not answered");
    }
}
