//! Limited stock: never more units sold than the stock, a unit that comes
//! back goes to the next in line, sold out only once every unit is sold,
//! and the same decisions after a crash, a replay or a hand-over.

use std::collections::{HashMap, HashSet};

use hashbuy_core::stock::{Effects, Stock, StockError};
use hashbuy_proto::v1::{PaymentCommand, StockResolution};
use proptest::prelude::*;

/// A purchase tweet's time.
const T: i64 = 1_780_272_000_000;
use prost::Message;

fn command(i: usize, stock: u64) -> PaymentCommand {
    PaymentCommand {
        command_id: format!("cmd-{i:04}"),
        tweet_id: format!("{}", 9000 + i),
        user_id: format!("{}", 100 + i),
        offer_id: "limited-1".into(),
        merchant_id: "acme".into(),
        amount: 4200,
        currency: "usd".into(),
        offer_title: "Limited Sneakers".into(),
        stock,
        ..PaymentCommand::default()
    }
}

fn resolution(command_id: &str, sold: bool) -> StockResolution {
    StockResolution {
        command_id: command_id.into(),
        offer_id: "limited-1".into(),
        sold,
    }
}

fn granted(effects: &Effects) -> Vec<String> {
    effects
        .grants
        .iter()
        .map(|c| c.command_id.clone())
        .collect()
}

fn rejected(effects: &Effects) -> Vec<String> {
    effects
        .sold_out
        .iter()
        .map(|c| c.command_id.clone())
        .collect()
}

#[test]
fn units_are_held_then_the_line_waits_then_a_unit_back_goes_to_the_first_in_line() {
    let mut stock = Stock::new();
    let mut grants = Vec::new();
    for i in 0..4 {
        let effects = stock.reserve(command(i, 2)).expect("limited");
        grants.extend(granted(&effects));
        assert!(effects.sold_out.is_empty(), "nothing is sold yet");
    }
    assert_eq!(grants, ["cmd-0000", "cmd-0001"]);
    assert_eq!(stock.waiting("limited-1"), 2);
    assert!(
        stock.reserve(command(0, 2)).expect("limited").is_empty(),
        "a command seen before changes nothing"
    );

    let sold = stock.resolve(&resolution("cmd-0000", true));
    assert!(granted(&sold).is_empty() && rejected(&sold).is_empty());
    assert_eq!(stock.counts("limited-1"), (1, 1));

    // The second buyer's card declined: its unit goes to the first in line.
    let back = stock.resolve(&resolution("cmd-0001", false));
    assert_eq!(granted(&back), ["cmd-0002"]);
    assert!(back.grants.iter().all(|c| c.reserved));
    assert!(
        stock.resolve(&resolution("cmd-0001", false)).is_empty(),
        "a second word on a unit changes nothing"
    );

    // The last unit sold: the rest of the line is sold out.
    let last = stock.resolve(&resolution("cmd-0002", true));
    assert_eq!(rejected(&last), ["cmd-0003"]);
    assert!(
        last.sold_out.iter().all(|c| c.sold_out && !c.reserved),
        "marked for the settler to reject"
    );
    assert_eq!(stock.counts("limited-1"), (2, 0));

    let late = stock.reserve(command(9, 2)).expect("limited");
    assert_eq!(rejected(&late), ["cmd-0009"]);
}

#[test]
fn an_unlimited_or_already_reserved_command_is_refused() {
    let mut stock = Stock::new();
    assert!(matches!(
        stock.reserve(command(1, 0)),
        Err(StockError::Unlimited { .. })
    ));
    let mut reserved = command(2, 5);
    reserved.reserved = true;
    assert!(matches!(
        stock.reserve(reserved),
        Err(StockError::Marked { .. })
    ));
}

/// Restores a fresh line from `records` (key, record), in order.
fn restored(records: &[&hashbuy_proto::v1::StockHold]) -> Stock {
    let mut stock = Stock::new();
    for hold in records {
        stock
            .restore(&hold.encode_to_vec())
            .expect("a record of ours");
    }
    stock
}

#[test]
fn a_release_read_again_after_only_part_of_its_records_landed_still_hands_the_unit_on() {
    let mut first = Stock::new();
    let a = first.reserve(command(0, 1)).expect("limited");
    let b = first.reserve(command(1, 1)).expect("limited");
    let back = first.resolve(&resolution("cmd-0000", false));
    assert_eq!(granted(&back), ["cmd-0001"]);
    assert_eq!(back.changelog.len(), 2, "the release, then the grant");
    // A crash after the release's record landed, before the grant's (at
    // least once: the records of one request are a prefix, in order).
    let mut next = restored(&[&a.changelog[0].1, &b.changelog[0].1, &back.changelog[0].1]);
    let again = next.resolve(&resolution("cmd-0000", false));
    assert_eq!(
        granted(&again),
        ["cmd-0001"],
        "the unit goes on, as the first time"
    );
    assert_eq!(next.counts("limited-1"), (0, 1));
    let late = next.reserve(command(2, 1)).expect("limited");
    assert!(granted(&late).is_empty(), "no second unit of a stock of 1");
}

#[test]
fn the_line_takes_the_stock_of_the_latest_tweet_not_of_the_latest_arrival() {
    let mut stock = Stock::new();
    for i in 0..3 {
        let mut raised = command(i, 2);
        raised.tweet_timestamp_ms = T + 100 + i as i64;
        stock.reserve(raised).expect("limited");
    }
    // A purchase tweeted before the stock was raised to 2, arriving late.
    let mut early = command(3, 1);
    early.tweet_timestamp_ms = T;
    stock.reserve(early).expect("limited");
    let sold = stock.resolve(&resolution("cmd-0000", true));
    assert!(
        !rejected(&sold).contains(&"cmd-0002".to_owned()),
        "one of two units is sold: the line still has one held"
    );
    assert_eq!(stock.counts("limited-1"), (1, 1));
    // And the other way: lowered to 1 by a later tweet, an earlier one
    // arriving late is not granted past it.
    let mut lowered = Stock::new();
    let mut later = command(0, 1);
    later.tweet_timestamp_ms = T + 100;
    lowered.reserve(later).expect("limited");
    let mut earlier = command(1, 2);
    earlier.tweet_timestamp_ms = T;
    let effects = lowered.reserve(earlier).expect("limited");
    assert!(granted(&effects).is_empty(), "the later stock of 1 binds");
}

#[test]
fn a_raised_stock_serves_the_line_before_a_later_buyer() {
    let mut stock = Stock::new();
    let mut c0 = command(0, 1);
    c0.tweet_timestamp_ms = T;
    let mut c1 = command(1, 1);
    c1.tweet_timestamp_ms = T + 1;
    stock.reserve(c0).expect("limited");
    stock.reserve(c1).expect("limited");
    assert_eq!(stock.waiting("limited-1"), 1);
    // Tweeted after the stock was raised to 2: the unit it frees goes to
    // the first in line, and the newcomer waits behind.
    let mut c2 = command(2, 2);
    c2.tweet_timestamp_ms = T + 2;
    let effects = stock.reserve(c2).expect("limited");
    assert_eq!(granted(&effects), ["cmd-0001"]);
    assert_eq!(stock.waiting("limited-1"), 1);
    stock.resolve(&resolution("cmd-0000", true));
    let last = stock.resolve(&resolution("cmd-0001", true));
    assert_eq!(
        rejected(&last),
        ["cmd-0002"],
        "sold out once both units sold"
    );
}

#[test]
fn a_word_contradicting_the_first_is_reported_and_a_sale_is_never_undone() {
    let mut stock = Stock::new();
    stock.reserve(command(0, 1)).expect("limited");
    stock.resolve(&resolution("cmd-0000", false));
    let contradicted = stock.resolve(&resolution("cmd-0000", true));
    assert!(contradicted.contradiction.is_some(), "told");
    assert_eq!(stock.counts("limited-1"), (1, 0), "the sale counts");
    let late = stock.reserve(command(1, 1)).expect("limited");
    assert_eq!(rejected(&late), ["cmd-0001"], "no unit is left to grant");
    let undone = stock.resolve(&resolution("cmd-0000", false));
    assert!(undone.contradiction.is_some());
    assert_eq!(
        stock.counts("limited-1"),
        (1, 0),
        "a sold unit never comes back"
    );
}

/// A request of the `stock-requests` log.
#[derive(Debug, Clone)]
enum Request {
    Reserve(usize),
    Resolve(String, bool),
}

/// The reservation step and the settlers, played out: purchasers arrive,
/// the settler settles every granted command unless its card declines
/// (and says so, sometimes twice), and the step's owner crashes at random
/// points, restoring from what its changelog holds and reading again from
/// its last committed request (at least once: outputs, then changelog,
/// then offset).
struct World {
    stock: Stock,
    /// The changelog, as delivered: (key, value) in order.
    changelog: Vec<(String, Vec<u8>)>,
    /// The request log, and the offset committed.
    log: Vec<Request>,
    committed: usize,
    /// Every grant and rejection delivered, by command id.
    grants: HashMap<String, usize>,
    sold_out: HashSet<String>,
    /// What the settler decided per command id (first wins, as the
    /// ledger does).
    settled: HashMap<String, bool>,
}

impl World {
    fn new(purchasers: usize) -> Self {
        World {
            stock: Stock::new(),
            changelog: Vec::new(),
            log: (0..purchasers).map(Request::Reserve).collect(),
            committed: 0,
            grants: HashMap::new(),
            sold_out: HashSet::new(),
            settled: HashMap::new(),
        }
    }

    /// Reads the next request; a `crash` below 4 stops after the outputs
    /// and that many of the request's changelog records (a prefix, as an
    /// idempotent producer delivers one partition's records), else it
    /// goes on.
    fn step(&mut self, stock: u64, declines: &HashSet<usize>, crash: u8, double_word: bool) {
        let Some(request) = self.log.get(self.committed).cloned() else {
            return;
        };
        let effects = match request {
            Request::Reserve(i) => self.stock.reserve(command(i, stock)).expect("limited"),
            Request::Resolve(id, sold) => self.stock.resolve(&resolution(&id, sold)),
        };
        assert_eq!(
            effects.contradiction, None,
            "no contradiction without a fault"
        );
        for command in &effects.sold_out {
            self.sold_out.insert(command.command_id.clone());
        }
        for granted in &effects.grants {
            *self.grants.entry(granted.command_id.clone()).or_default() += 1;
            // The settler, which takes a command id once, and writes its
            // word back to the log (with its ack, maybe twice).
            if !self.settled.contains_key(&granted.command_id) {
                let i: usize = granted.command_id[4..].parse().expect("ours");
                let sold = !declines.contains(&i);
                self.settled.insert(granted.command_id.clone(), sold);
            }
            let sold = self.settled[&granted.command_id];
            self.log
                .push(Request::Resolve(granted.command_id.clone(), sold));
            if double_word {
                self.log
                    .push(Request::Resolve(granted.command_id.clone(), sold));
            }
        }
        let landed = if crash < 4 {
            effects.changelog.len().min(crash as usize)
        } else {
            effects.changelog.len()
        };
        for (key, hold) in &effects.changelog[..landed] {
            self.changelog.push((key.clone(), hold.encode_to_vec()));
        }
        if crash < 4 {
            return self.restart();
        }
        self.committed += 1;
    }

    /// A new owner: the changelog compacted to each key's last record,
    /// restored.
    fn restart(&mut self) {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (at, (key, _)) in self.changelog.iter().enumerate() {
            last.insert(key, at);
        }
        let mut kept: Vec<usize> = last.into_values().collect();
        kept.sort_unstable();
        self.stock = Stock::new();
        for at in kept {
            self.stock
                .restore(&self.changelog[at].1)
                .expect("a record of ours");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    #[test]
    fn never_more_sold_than_the_stock_and_every_purchaser_gets_one_answer(
        stock in 1u64..8,
        purchasers in 1usize..30,
        declines in proptest::collection::hash_set(0usize..30, 0..10),
        crashes in proptest::collection::vec(0u8..12, 200),
        double_words in proptest::collection::vec(any::<bool>(), 200),
    ) {
        let mut world = World::new(purchasers);
        let mut turn = 0;
        while world.committed < world.log.len() {
            let crash = crashes[turn % crashes.len()];
            world.step(stock, &declines, crash, double_words[turn % double_words.len()]);
            turn += 1;
            prop_assert!(turn < 10_000, "the log is read to its end");
        }
        let sold: Vec<&String> = world.settled.iter().filter(|(_, &s)| s).map(|(id, _)| id).collect();
        let buyers = (0..purchasers).filter(|i| !declines.contains(i)).count();
        prop_assert_eq!(sold.len() as u64, stock.min(buyers as u64), "every unit sold while a buyer was left");
        for i in 0..purchasers {
            let id = format!("cmd-{i:04}");
            let granted = world.grants.contains_key(&id);
            prop_assert!(granted != world.sold_out.contains(&id), "{} gets one answer", id);
            if world.sold_out.contains(&id) {
                prop_assert_eq!(sold.len() as u64, stock, "rejected only once sold out");
            }
        }
        prop_assert_eq!(world.stock.counts("limited-1"), (sold.len() as u64, 0));
        prop_assert_eq!(world.stock.waiting("limited-1"), 0);
    }
}
