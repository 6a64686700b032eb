//! Limited stock: the reservation step's decisions, free of Kafka.
//!
//! An offer may carry a `stock`. Commands are keyed by user, so no one
//! settler sees every command of an offer, and a counter kept by the
//! settlers would race. So a limited offer's command takes a detour: the
//! matcher writes it to the `stock-requests` topic keyed by its offer id,
//! where one member of the reservation step's group (`hashbuy stock`)
//! owns each partition and so every command of an offer, in the order of
//! the log. That owner keeps, per offer, a line ([`Stock`]):
//!
//! - a command arriving while fewer than `stock` units are sold or held
//!   gets a unit: it is **held** for it, and the command goes on to the
//!   settler marked `reserved` ([`Effects::grants`]);
//! - one arriving while every unit is held or sold, but not every one
//!   sold, **waits** in line: a held unit may yet come back;
//! - one arriving once `stock` units are **sold** is `REJECTED` as sold
//!   out, with an ack and a reply ([`Effects::sold_out`]);
//! - the settler writes each reserved command's fate back to the same
//!   topic with its ack ([`StockResolution`]): settled, the unit is
//!   **sold**; declined, rejected or failed, it is **released** and goes
//!   to the first command in line. When the last unit is sold, the line is
//!   rejected as sold out.
//!
//! Every change of a command's place is a changelog record ([`StockHold`],
//! keyed by offer and command; [`Effects::changelog`]), restored by the
//! partition's next owner before its first request ([`Stock::restore`]).
//!
//! # Why no more settle than the stock
//!
//! A command charges only if it reaches the settler `reserved`, and only
//! the owner of its offer's partition grants that, one request at a time.
//! At every step `sold + held ≤ stock` (the stock of the latest command;
//! a unit is held only while the sum is below it). A unit is sold only
//! from held, at the settler's word that the command settled, and the
//! settler settles a command id once. So the settled commands of an offer
//! are at most its stock, if the owner's state holds every grant it made.
//! It does:
//!
//! - **Exactly once** (transactions), a request's grants, rejections and
//!   changelog records commit in one transaction with its offset: a new
//!   owner restores exactly the state its first request follows.
//! - **At least once**, the grants and rejections are delivered before the
//!   changelog records, and those before the offset is committed. A crash
//!   between reads requests again against an older state, which decides
//!   them as the first time (the decisions follow from the state and the
//!   log's order alone, and times come from the records): the same grants
//!   go out again under the same command ids, which the settler takes
//!   once. A crash after the changelog reads requests the state already
//!   holds, which change nothing ([`Stock::reserve`] and
//!   [`Stock::resolve`] are idempotent by command id). A former owner
//!   paused past its session is fenced by nothing at least once; see the
//!   step's docs.
//!
//! A resolution from the settler may come more than once (acks are
//! re-sent after a crash); a command's place changes from held only, so a
//! second word is nothing. Every command decided keeps a small record,
//! so a request replayed later (a recording played again) is recognised:
//! never a second unit, never a rejection after a grant.

use std::collections::{BTreeMap, HashMap};

use hashbuy_proto::v1::payment_ack::Status;
use hashbuy_proto::v1::stock_hold::State;
use hashbuy_proto::v1::{PaymentAck, PaymentCommand, Reply, StockHold, StockResolution};
use prost::Message;

use crate::replies::{self, Refusal};

/// The reason a sold-out command's ack gives.
pub const SOLD_OUT_REASON: &str = "sold out: every unit of the offer's stock is sold";

/// What deciding one request comes to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// Commands a unit is now held for, marked `reserved`, for the
    /// commands topic.
    pub grants: Vec<PaymentCommand>,
    /// Commands rejected as sold out: their ack and reply.
    pub sold_out: Vec<(PaymentAck, Reply)>,
    /// Changelog records: (key, record).
    pub changelog: Vec<(String, StockHold)>,
}

impl Effects {
    /// Whether the request changed nothing.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.sold_out.is_empty() && self.changelog.is_empty()
    }
}

/// Why a request cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    /// The command's offer is not limited.
    #[error("command {command_id}: its offer {offer_id} has no stock, so it needs no reservation")]
    Unlimited {
        /// The command.
        command_id: String,
        /// Its offer.
        offer_id: String,
    },
    /// The command was marked reserved before reaching the step.
    #[error("command {command_id}: already marked reserved before the reservation step")]
    Reserved {
        /// The command.
        command_id: String,
    },
}

/// Where a command stands at its offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Held,
    Waiting(u64),
    Sold,
    Released,
    SoldOut,
}

/// One limited offer's line.
#[derive(Debug, Default, Clone)]
struct Line {
    /// The stock of the latest command.
    stock: u64,
    /// The last place in line given out.
    seq: u64,
    sold: u64,
    held: u64,
    /// Every command seen, and where it stands.
    places: HashMap<String, Place>,
    /// The commands waiting, by their place in line.
    waiting: BTreeMap<u64, PaymentCommand>,
}

/// The lines of the limited offers of one `stock-requests` partition; see
/// the module docs.
#[derive(Debug, Default, Clone)]
pub struct Stock {
    lines: HashMap<String, Line>,
}

/// The changelog key of `command_id`'s place at `offer_id`.
pub fn hold_key(offer_id: &str, command_id: &str) -> String {
    format!("{offer_id}/{command_id}")
}

impl Stock {
    /// No offers yet.
    pub fn new() -> Self {
        Stock::default()
    }

    /// How many units of `offer_id` are sold and held now.
    pub fn counts(&self, offer_id: &str) -> (u64, u64) {
        self.lines
            .get(offer_id)
            .map_or((0, 0), |line| (line.sold, line.held))
    }

    /// How many commands wait for a unit of `offer_id`.
    pub fn waiting(&self, offer_id: &str) -> usize {
        self.lines
            .get(offer_id)
            .map_or(0, |line| line.waiting.len())
    }

    /// Decides `command` of a limited offer, arriving at `at_ms` (its
    /// request record's time, so a request read again is decided alike).
    /// A command seen before changes nothing.
    pub fn reserve(&mut self, command: PaymentCommand, at_ms: i64) -> Result<Effects, StockError> {
        if command.stock == 0 {
            return Err(StockError::Unlimited {
                command_id: command.command_id,
                offer_id: command.offer_id,
            });
        }
        if command.reserved {
            return Err(StockError::Reserved {
                command_id: command.command_id,
            });
        }
        let mut effects = Effects::default();
        let line = self.lines.entry(command.offer_id.clone()).or_default();
        if line.places.contains_key(&command.command_id) {
            return Ok(effects);
        }
        line.stock = command.stock;
        line.seq += 1;
        let seq = line.seq;
        if line.sold >= line.stock {
            line.place(&command, seq, Place::SoldOut, &mut effects);
            effects.sold_out.push(sold_out(&command, at_ms));
        } else if line.sold + line.held < line.stock {
            line.place(&command, seq, Place::Held, &mut effects);
            effects.grants.push(granted(command));
        } else {
            line.place(&command, seq, Place::Waiting(seq), &mut effects);
            line.waiting.insert(seq, command);
        }
        Ok(effects)
    }

    /// Takes the settler's word on a held unit, given at `at_ms`: sold,
    /// or released to the first command in line. A word on a command not
    /// held (said before, or about a command never granted) changes
    /// nothing; [`Effects::is_empty`] tells.
    pub fn resolve(&mut self, resolution: &StockResolution, at_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let Some(line) = self.lines.get_mut(&resolution.offer_id) else {
            return effects;
        };
        if line.places.get(&resolution.command_id) != Some(&Place::Held) {
            return effects;
        }
        // The line's last place, so a restore takes the stock this record
        // carries as the latest.
        let seq = line.seq;
        let place = if resolution.sold {
            Place::Sold
        } else {
            Place::Released
        };
        line.set(&resolution.command_id, place);
        effects.changelog.push((
            hold_key(&resolution.offer_id, &resolution.command_id),
            line.record(
                &resolution.offer_id,
                &resolution.command_id,
                seq,
                place,
                None,
            ),
        ));
        line.serve(at_ms, &mut effects);
        effects
    }

    /// Takes one changelog record (key, value) into the state, as its
    /// partition's next owner restores it. A record that is not a
    /// [`StockHold`] is an error naming why.
    pub fn restore(&mut self, value: &[u8]) -> Result<(), String> {
        let hold = StockHold::decode(value).map_err(|e| format!("not a StockHold: {e}"))?;
        let place = match hold.state() {
            State::Unspecified => return Err("a StockHold without a state".into()),
            State::Held => Place::Held,
            State::Waiting => Place::Waiting(hold.seq),
            State::Sold => Place::Sold,
            State::Released => Place::Released,
            State::SoldOut => Place::SoldOut,
        };
        let line = self.lines.entry(hold.offer_id.clone()).or_default();
        if hold.seq >= line.seq {
            line.seq = hold.seq;
            line.stock = hold.stock;
        }
        line.set(&hold.command_id, place);
        if let (Place::Waiting(seq), Some(command)) = (place, hold.command) {
            line.waiting.insert(seq, command);
        }
        Ok(())
    }
}

impl Line {
    /// Gives `command` its first place, with its changelog record.
    fn place(&mut self, command: &PaymentCommand, seq: u64, place: Place, effects: &mut Effects) {
        self.set(&command.command_id, place);
        let body = matches!(place, Place::Waiting(_)).then(|| command.clone());
        effects.changelog.push((
            hold_key(&command.offer_id, &command.command_id),
            self.record(&command.offer_id, &command.command_id, seq, place, body),
        ));
    }

    /// Moves `command_id` to `place`, keeping the counts.
    fn set(&mut self, command_id: &str, place: Place) {
        match self.places.insert(command_id.to_owned(), place) {
            Some(Place::Held) => self.held -= 1,
            Some(Place::Sold) => self.sold -= 1,
            Some(Place::Waiting(seq)) => {
                self.waiting.remove(&seq);
            }
            _ => {}
        }
        match place {
            Place::Held => self.held += 1,
            Place::Sold => self.sold += 1,
            _ => {}
        }
    }

    /// The changelog record of `command_id` at `place`.
    fn record(
        &self,
        offer_id: &str,
        command_id: &str,
        seq: u64,
        place: Place,
        command: Option<PaymentCommand>,
    ) -> StockHold {
        let state = match place {
            Place::Held => State::Held,
            Place::Waiting(_) => State::Waiting,
            Place::Sold => State::Sold,
            Place::Released => State::Released,
            Place::SoldOut => State::SoldOut,
        };
        StockHold {
            offer_id: offer_id.to_owned(),
            command_id: command_id.to_owned(),
            state: state as i32,
            seq,
            stock: self.stock,
            command,
        }
    }

    /// Gives units back to the line: to the first in line while units are
    /// free; once every unit is sold, rejects the line as sold out.
    fn serve(&mut self, at_ms: i64, effects: &mut Effects) {
        while self.sold + self.held < self.stock {
            let Some((_, command)) = self.waiting.pop_first() else {
                return;
            };
            let seq = self.seq;
            self.place(&command, seq, Place::Held, effects);
            effects.grants.push(granted(command));
        }
        if self.sold >= self.stock {
            while let Some((_, command)) = self.waiting.pop_first() {
                let seq = self.seq;
                self.place(&command, seq, Place::SoldOut, effects);
                effects.sold_out.push(sold_out(&command, at_ms));
            }
        }
    }
}

/// `command`, marked as holding a unit.
fn granted(mut command: PaymentCommand) -> PaymentCommand {
    command.reserved = true;
    command
}

/// The ack and reply of `command` rejected as sold out at `at_ms`.
pub fn sold_out(command: &PaymentCommand, at_ms: i64) -> (PaymentAck, Reply) {
    let ack = PaymentAck {
        command_id: command.command_id.clone(),
        tweet_id: command.tweet_id.clone(),
        user_id: command.user_id.clone(),
        offer_id: command.offer_id.clone(),
        status: Status::Rejected as i32,
        amount: command.amount,
        currency: command.currency.clone(),
        reason: SOLD_OUT_REASON.to_owned(),
        decided_at_ms: at_ms,
        ..PaymentAck::default()
    };
    let reply =
        replies::outcome(command, &ack, Refusal::SoldOut).expect("a REJECTED ack has an outcome");
    (ack, reply)
}
