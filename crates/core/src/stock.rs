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
//! - one arriving once `stock` units are **sold** goes on to the settler
//!   marked `sold_out` ([`Effects::sold_out`]), which rejects it with
//!   [`SOLD_OUT_REASON`] and a reply, and keeps it in its ledger: every
//!   command's one outcome is the ledger's, so a copy of the command that
//!   comes later by another way (a recording replayed after the offer lost
//!   its stock) is a duplicate there, never a charge;
//! - the settler writes each reserved command's fate back to the same
//!   partition with its ack ([`StockResolution`]): settled, the unit is
//!   **sold**; declined, rejected or failed, it is **released** and goes
//!   to the first command in line. When the last unit is sold, the line is
//!   rejected as sold out.
//!
//! The offer's stock is that of the command with the latest tweet time
//! seen: matcher partitions run at their own pace, so commands arrive out
//! of tweet order, and the catalog of the latest tweet is the newest one
//! known. Every change of a command's place is a changelog record
//! ([`StockHold`], keyed by offer and command; [`Effects::changelog`]),
//! restored by the partition's next owner before its first request
//! ([`Stock::restore`]).
//!
//! # Why no more settle than the stock
//!
//! A command charges only if it reaches the settler `reserved`, and only
//! the owner of its offer's partition grants that, one request at a time.
//! A unit is held only while `sold + held` is below the stock, so at
//! every step `sold + held ≤ stock` (a stock lowered below what is held
//! lets those units settle, and grants nothing more). A unit is sold only from held, at the settler's
//! word that the command settled, and the settler settles a command id
//! once. So the settled commands of an offer are at most its stock, if
//! the owner's state holds every grant it made. It does:
//!
//! - **Exactly once** (transactions), a request's grants, sold-out
//!   commands and changelog records commit in one transaction with its
//!   offset: a new owner restores exactly the state its first request
//!   follows.
//! - **At least once**, the outputs are delivered before the changelog
//!   records, and those before the offset is committed; the producer is
//!   idempotent without gaps, so what lands of one request's records (all
//!   on one partition) is a prefix of them, in order. A crash before any
//!   landed reads the request again against the older state, which
//!   decides it as the first time (decisions follow from the state and the
//!   log's order alone): the same grants go out again under the same
//!   command ids, which the settler takes once. A crash after all landed
//!   finds the request decided: [`Stock::reserve`] is idempotent by
//!   command id. A crash in between can only cut a word's serving of the
//!   line short (a reservation is one record): the word's own record
//!   landed first, and the same word read again serves the line again,
//!   handing out what the first serving did not record. A former owner
//!   paused past its session is fenced by nothing at least once; see the
//!   step's docs.
//!
//! A word from the settler may come more than once (acks are re-sent
//! after a crash): the same word again changes nothing but the serving
//! above. A word that contradicts the line (a sale after a release, which
//! only a settler's unfenced late write could cause) is reported, and a
//! sale is counted whatever came before, so no unit is granted past the
//! stock because of it. Every command decided keeps a small record, so a
//! request replayed later (a recording played again) is recognised: never
//! a second unit.

use std::collections::{BTreeMap, HashMap};

use hashbuy_proto::v1::stock_hold::State;
use hashbuy_proto::v1::{PaymentCommand, StockHold, StockResolution};
use prost::Message;

/// The reason a sold-out command is `REJECTED` with (by the settler, which
/// keeps it in its ledger).
pub const SOLD_OUT_REASON: &str = "sold out: every unit of the offer's stock is sold";

/// What deciding one request comes to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// Commands a unit is now held for, marked `reserved`, for the
    /// commands topic.
    pub grants: Vec<PaymentCommand>,
    /// Commands that found every unit sold, marked `sold_out`, for the
    /// commands topic: the settler rejects them, so their one outcome is
    /// in its ledger with every other command's.
    pub sold_out: Vec<PaymentCommand>,
    /// Changelog records: (key, record), in the order they are to be
    /// written.
    pub changelog: Vec<(String, StockHold)>,
    /// A word from the settler that contradicts the line (a sale after a
    /// release, a word on a command never granted), in words: never
    /// expected, so an operator is to be told.
    pub contradiction: Option<String>,
}

impl Effects {
    /// Whether the request changed nothing.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
            && self.sold_out.is_empty()
            && self.changelog.is_empty()
            && self.contradiction.is_none()
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
    /// The command was marked by the step before reaching it.
    #[error(
        "command {command_id}: already marked reserved or sold out before the reservation step"
    )]
    Marked {
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
    /// The stock of the command with the latest tweet time seen.
    stock: u64,
    /// That command's tweet time.
    stock_as_of_ms: Option<i64>,
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

/// One offer's line as it was, to put back ([`Stock::save`]).
#[derive(Debug, Clone)]
pub struct SavedLine {
    offer_id: String,
    line: Option<Line>,
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

    /// Decides `command` of a limited offer. A command seen before changes
    /// nothing. The offer's stock is that of the latest tweet seen, so a
    /// purchase tweeted before a change of the stock and read after it is
    /// held to the newer stock; a stock raised serves the line before the
    /// arriving command, which takes its place behind it.
    pub fn reserve(&mut self, command: PaymentCommand) -> Result<Effects, StockError> {
        if command.stock == 0 {
            return Err(StockError::Unlimited {
                command_id: command.command_id,
                offer_id: command.offer_id,
            });
        }
        if command.reserved || command.sold_out {
            return Err(StockError::Marked {
                command_id: command.command_id,
            });
        }
        let mut effects = Effects::default();
        let line = self.lines.entry(command.offer_id.clone()).or_default();
        if line.places.contains_key(&command.command_id) {
            return Ok(effects);
        }
        if line
            .stock_as_of_ms
            .is_none_or(|as_of| command.tweet_timestamp_ms >= as_of)
        {
            line.stock = command.stock;
            line.stock_as_of_ms = Some(command.tweet_timestamp_ms);
        }
        // A stock raised serves the line first; lowered below what is
        // sold, it ends the line.
        line.serve(&mut effects);
        line.seq += 1;
        let seq = line.seq;
        if line.sold >= line.stock {
            line.place(&command, seq, Place::SoldOut, &mut effects);
            effects.sold_out.push(marked_sold_out(command));
        } else if line.sold + line.held < line.stock && line.waiting.is_empty() {
            line.place(&command, seq, Place::Held, &mut effects);
            effects.grants.push(granted(command));
        } else {
            line.place(&command, seq, Place::Waiting(seq), &mut effects);
            line.waiting.insert(seq, command);
        }
        Ok(effects)
    }

    /// Takes the settler's word on a held unit: sold, or released to the
    /// first command in line. The same word again serves the line again
    /// (it finds it served, unless a crash cut the first serving short),
    /// and a word that contradicts the line is told in
    /// [`Effects::contradiction`]; a sale is counted whatever came before,
    /// and never undone.
    pub fn resolve(&mut self, resolution: &StockResolution) -> Effects {
        let mut effects = Effects::default();
        let (offer_id, command_id) = (&resolution.offer_id, &resolution.command_id);
        let Some(line) = self.lines.get_mut(offer_id) else {
            effects.contradiction = Some(format!(
                "the settler's word on command {command_id} of offer {offer_id}, of which no \
                 command was ever seen"
            ));
            return effects;
        };
        let place = line.places.get(command_id).copied();
        let next = match (place, resolution.sold) {
            (Some(Place::Held), true) => Some(Place::Sold),
            (Some(Place::Held), false) => Some(Place::Released),
            (Some(Place::Sold), true) | (Some(Place::Released), false) => None,
            (Some(Place::Sold), false) => {
                effects.contradiction = Some(format!(
                    "command {command_id} of offer {offer_id}: released after it was sold; it \
                     stays sold"
                ));
                None
            }
            (Some(Place::Released | Place::Waiting(_) | Place::SoldOut) | None, true) => {
                effects.contradiction = Some(format!(
                    "command {command_id} of offer {offer_id}: sold, but its unit was not held \
                     for it ({}); counted as sold, so no further unit is granted past the stock",
                    place.map_or("never seen", Place::name)
                ));
                Some(Place::Sold)
            }
            (Some(Place::Waiting(_) | Place::SoldOut) | None, false) => {
                effects.contradiction = Some(format!(
                    "command {command_id} of offer {offer_id}: released, but its unit was not \
                     held for it ({}); nothing changes",
                    place.map_or("never seen", Place::name)
                ));
                None
            }
        };
        if let Some(next) = next {
            // The line's last place, so a restore takes the stock this
            // record carries as the latest.
            let seq = line.seq;
            line.set(command_id, next);
            effects.changelog.push((
                hold_key(offer_id, command_id),
                line.record(offer_id, command_id, seq, next, None),
            ));
        }
        line.serve(&mut effects);
        effects
    }

    /// The line of `offer_id` as it is now, to put back with
    /// [`Stock::put_back`] if what follows is undone (a batch whose
    /// transaction aborted).
    pub fn save(&self, offer_id: &str) -> SavedLine {
        SavedLine {
            offer_id: offer_id.to_owned(),
            line: self.lines.get(offer_id).cloned(),
        }
    }

    /// Puts back a line [`Stock::save`]d.
    pub fn put_back(&mut self, saved: SavedLine) {
        match saved.line {
            Some(line) => self.lines.insert(saved.offer_id, line),
            None => self.lines.remove(&saved.offer_id),
        };
    }

    /// Takes one changelog record into the state, as its partition's next
    /// owner restores it. A record that is not a [`StockHold`] is an error
    /// naming why.
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
        line.seq = line.seq.max(hold.seq);
        if line
            .stock_as_of_ms
            .is_none_or(|as_of| hold.stock_as_of_ms >= as_of)
        {
            line.stock = hold.stock;
            line.stock_as_of_ms = Some(hold.stock_as_of_ms);
        }
        line.set(&hold.command_id, place);
        if let (Place::Waiting(seq), Some(command)) = (place, hold.command) {
            line.waiting.insert(seq, command);
        }
        Ok(())
    }
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Held => "held",
            Place::Waiting(_) => "waiting",
            Place::Sold => "sold",
            Place::Released => "released",
            Place::SoldOut => "sold out",
        }
    }
}

impl Line {
    /// Gives `command` its place, with its changelog record.
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
            stock_as_of_ms: self.stock_as_of_ms.unwrap_or_default(),
        }
    }

    /// Gives free units to the line, first in line first; once every unit
    /// is sold, rejects the line as sold out.
    fn serve(&mut self, effects: &mut Effects) {
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
                effects.sold_out.push(marked_sold_out(command));
            }
        }
    }
}

/// `command`, marked as holding a unit.
fn granted(mut command: PaymentCommand) -> PaymentCommand {
    command.reserved = true;
    command
}

/// `command`, marked as finding every unit sold.
fn marked_sold_out(mut command: PaymentCommand) -> PaymentCommand {
    command.sold_out = true;
    command
}
