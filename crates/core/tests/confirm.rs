//! The confirm flow by event time: what a sequence of tweets of one
//! partition comes to, through the rules and a [`PartitionFlow`], as the
//! matcher runs them.

use hashbuy_core::confirm::{reply_id, PartitionFlow, Step, ALLOWED_LATENESS_MS};
use hashbuy_core::decode::{decode, Record};
use hashbuy_core::rules::{command_id, Decision, Rules};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_proto::v1::reply::Kind;

/// The purchase tweets' time: 2026-06-01T00:00:00Z.
const T0: i64 = 1_780_272_000_000;
const MIN: i64 = 60_000;

fn tables() -> (Catalog, Accounts) {
    let catalog = Catalog::from_file_text(
        "catalog.json",
        r#"{"offers": [
            {"hashtag": "BuyRedSneakers42", "offer_id": "red", "merchant_id": "acme", "amount": 4200,
             "currency": "usd", "mode": "confirm", "title": "Red Sneakers"},
            {"hashtag": "BuyMatcha", "offer_id": "matcha", "merchant_id": "tea", "amount": 500,
             "currency": "jpy", "mode": "confirm", "confirm_window_s": 120},
            {"hashtag": "BuyLatte", "offer_id": "latte", "merchant_id": "cafe", "amount": 450,
             "currency": "usd"}]}"#,
    )
    .expect("catalog");
    let accounts = Accounts::from_file_text(
        "accounts.json",
        r#"{"accounts": [
            {"user_id": "1", "customer_id": "cus_1", "payment_method_id": "pm_1"},
            {"user_id": "2", "customer_id": "cus_2", "payment_method_id": "pm_2"}]}"#,
    )
    .expect("accounts");
    (catalog, accounts)
}

/// A v1.1 tweet `id` by `user` at `at_ms` saying `text`.
fn tweet(id: u64, user: u64, at_ms: i64, text: &str) -> String {
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}"}}, "timestamp_ms": "{at_ms}"}}"#
    )
}

fn retweet(id: u64, user: u64, at_ms: i64, text: &str) -> String {
    let inner = tweet(id + 1_000, 2, at_ms, text);
    format!(
        r#"{{"id_str": "{id}", "text": "RT {text}", "user": {{"id_str": "{user}"}}, "timestamp_ms": "{at_ms}", "retweeted_status": {inner}}}"#
    )
}

/// Runs `lines` through the rules and `flow`: each record's steps, as
/// `name:offer` (a command is `confirmed:offer`), with the direct buys as
/// `buy:offer`.
fn run(flow: &mut PartitionFlow, lines: &[String]) -> Vec<Vec<String>> {
    let (catalog, accounts) = tables();
    let rules = Rules::new(&catalog, &accounts);
    lines
        .iter()
        .map(|line| {
            let record = decode(line.as_bytes()).expect("a valid record");
            let decision = rules.decide(&record);
            let mut steps = Vec::new();
            let mut named: Vec<String> = decision
                .commands()
                .iter()
                .map(|c| format!("buy:{}", c.offer_id))
                .collect();
            if let Record::Tweet(tweet) = &record {
                let confirm = match &decision {
                    Decision::Confirm(steps) => Some(steps),
                    _ => None,
                };
                flow.tweet(tweet, confirm, &mut steps);
            }
            named.extend(steps.iter().map(describe));
            named
        })
        .collect()
}

fn describe(step: &Step) -> String {
    let offer = match step {
        Step::Pending(reply) | Step::Expired(reply) | Step::Cancelled(reply) => &reply.offer_id,
        Step::AlreadyPending { offer_id, .. } | Step::Unconfirmed { offer_id, .. } => offer_id,
        Step::Confirmed(command) => &command.offer_id,
    };
    format!("{}:{offer}", step.as_str())
}

fn steps(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[test]
fn a_confirmation_inside_the_window_charges_once_with_the_purchase_s_command() {
    let mut flow = PartitionFlow::new();
    let mut all = Vec::new();
    let out = {
        let (catalog, accounts) = tables();
        let rules = Rules::new(&catalog, &accounts);
        let lines = [
            tweet(10, 1, T0, "Want! #BuyRedSneakers42"),
            tweet(11, 1, T0 + 14 * MIN, "yes #confirmredsneakers42"),
            tweet(12, 1, T0 + 15 * MIN - 1, "again #ConfirmRedSneakers42"),
        ];
        for line in &lines {
            let record = decode(line.as_bytes()).expect("valid");
            let Record::Tweet(tweet) = &record else {
                panic!("a tweet")
            };
            let decision = rules.decide(&record);
            let Decision::Confirm(confirm) = &decision else {
                panic!("a step of the flow: {decision:?}")
            };
            assert!(
                decision.commands().is_empty(),
                "a confirm-mode offer never buys at once"
            );
            flow.tweet(tweet, Some(confirm), &mut all);
        }
        all
    };
    let [Step::Pending(prompt), Step::Confirmed(command), Step::Unconfirmed { .. }] = &out[..]
    else {
        panic!("pending, confirmed, then nothing left to confirm: {out:?}")
    };
    assert_eq!(
        prompt.text,
        "Tweet #ConfirmRedSneakers42 within 15 min to buy Red Sneakers for $42.00"
    );
    assert_eq!(
        (
            prompt.kind,
            prompt.in_reply_to_tweet_id.as_str(),
            prompt.user_id.as_str()
        ),
        (Kind::ConfirmPrompt as i32, "10", "1")
    );
    assert_eq!(
        prompt.reply_id,
        reply_id(&prompt.command_id, Kind::ConfirmPrompt).to_string()
    );
    assert_eq!(
        command.command_id,
        command_id("10", "red").to_string(),
        "the purchase tweet's id"
    );
    assert_eq!(prompt.command_id, command.command_id);
    assert_eq!(
        (
            command.tweet_id.as_str(),
            command.tweet_timestamp_ms,
            command.amount,
            command.customer_id.as_str()
        ),
        ("10", T0, 4200, "cus_1")
    );
    assert_eq!(flow.pending(), 0);
}

#[test]
fn after_the_window_nothing_is_charged_and_the_expiry_is_told_once_stream_time_passes() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            // Inside the window plus the lateness: still pending.
            tweet(20, 2, T0 + 15 * MIN + ALLOWED_LATENESS_MS - 1, "#BuyLatte"),
            tweet(11, 1, T0 + 15 * MIN, "#ConfirmRedSneakers42"),
            // Stream time reaches the window's end plus the lateness.
            tweet(21, 2, T0 + 15 * MIN + ALLOWED_LATENESS_MS, "#nothing"),
            tweet(12, 1, T0 + 15 * MIN + 2 * MIN, "#ConfirmRedSneakers42"),
        ],
    );
    assert_eq!(
        out,
        steps(&[
            &["pending:red"],
            &["buy:latte"],
            &["confirmation_after_window:red"],
            &["expired:red"],
            &["no_pending_purchase:red"],
        ])
    );
}

#[test]
fn a_late_confirmation_written_inside_the_window_counts_until_the_lateness_passes() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            tweet(20, 2, T0 + 15 * MIN + 30_000, "#BuyLatte"),
            tweet(11, 1, T0 + 15 * MIN - 1, "#ConfirmRedSneakers42"),
        ],
    );
    assert_eq!(
        out,
        steps(&[&["pending:red"], &["buy:latte"], &["confirmed:red"]])
    );
}

#[test]
fn a_confirmation_without_a_pending_purchase_or_before_it_does_nothing() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            // Read before its purchase: not kept for it.
            tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42"),
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            // Written before the purchase, read after it.
            tweet(9, 1, T0 - 1, "#ConfirmRedSneakers42"),
            // Another user's confirmation is not this user's.
            tweet(20, 2, T0 + MIN, "#ConfirmRedSneakers42"),
        ],
    );
    assert_eq!(
        out,
        steps(&[
            &["no_pending_purchase:red"],
            &["pending:red"],
            &["confirmation_before_purchase:red"],
            &["no_pending_purchase:red"],
        ])
    );
    assert_eq!(flow.pending(), 1);
}

#[test]
fn a_confirmation_names_one_offer_of_two_pending_and_a_second_purchase_changes_nothing() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42 and #BuyMatcha"),
            tweet(11, 1, T0 + MIN, "#BuyRedSneakers42 again"),
            tweet(12, 1, T0 + MIN, "#ConfirmMatcha"),
            tweet(13, 1, T0 + 2 * MIN, "#ConfirmRedSneakers42"),
        ],
    );
    assert_eq!(
        out,
        steps(&[
            &["pending:red", "pending:matcha"],
            &["already_pending:red"],
            &["confirmed:matcha"],
            &["confirmed:red"],
        ])
    );
    let (catalog, accounts) = tables();
    let rules = Rules::new(&catalog, &accounts);
    let line = tweet(10, 1, T0, "#BuyMatcha");
    let Decision::Confirm(steps) = rules.decide_bytes(line.as_bytes()) else {
        panic!("a step of the flow")
    };
    let mut fresh = PartitionFlow::new();
    let mut out = Vec::new();
    let Ok(Record::Tweet(t)) = decode(line.as_bytes()) else {
        panic!("a tweet")
    };
    fresh.tweet(&t, Some(&steps), &mut out);
    let [Step::Pending(prompt)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        prompt.text, "Tweet #ConfirmMatcha within 2 min to buy matcha for ¥500",
        "no title: the offer id; yen have no minor unit"
    );
}

/// A quote tweet `id` by `user` saying `text`, quoting a tweet of user 1
/// saying `quoted`.
fn quote(id: u64, user: u64, at_ms: i64, text: &str, quoted: &str) -> String {
    let inner = tweet(id + 1_000, 1, at_ms - 1, quoted);
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}"}}, "timestamp_ms": "{at_ms}", "is_quote_status": true, "quoted_status": {inner}}}"#
    )
}

#[test]
fn a_retweet_or_quote_of_a_confirmation_never_confirms() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            retweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42"),
            quote(12, 1, T0 + MIN, "this #one", "#ConfirmRedSneakers42"),
            tweet(13, 1, T0 + 2 * MIN, "#ConfirmRedSneakers42"),
        ],
    );
    assert_eq!(
        out,
        steps(&[&["pending:red"], &[], &[], &["confirmed:red"]])
    );
}

#[test]
fn a_tweet_never_confirms_its_own_purchase_but_confirms_the_one_before() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42 #ConfirmRedSneakers42"),
            tweet(
                11,
                1,
                T0 + MIN,
                "#BuyRedSneakers42 #ConfirmRedSneakers42 #BuyLatte",
            ),
        ],
    );
    assert_eq!(
        out,
        steps(&[
            &["no_pending_purchase:red", "pending:red"],
            &["buy:latte", "confirmed:red", "pending:red"],
        ])
    );
}

#[test]
fn a_purchase_read_after_its_window_closed_is_answered_with_its_expiry() {
    let mut flow = PartitionFlow::new();
    let out = run(
        &mut flow,
        &[
            tweet(20, 2, T0 + 20 * MIN, "#BuyLatte"),
            tweet(10, 1, T0, "#BuyRedSneakers42"),
        ],
    );
    assert_eq!(out, steps(&[&["buy:latte"], &["expired:red"]]));
    assert_eq!(flow.pending(), 0);
}

#[test]
fn a_delete_cancels_a_pending_purchase_and_nothing_once_confirmed() {
    let mut flow = PartitionFlow::new();
    run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42 #BuyMatcha"),
            tweet(11, 1, T0, "#BuyLatte"),
            tweet(12, 2, T0, "#BuyRedSneakers42"),
            tweet(13, 2, T0 + MIN, "#ConfirmRedSneakers42"),
        ],
    );
    let mut out = Vec::new();
    flow.delete("1", "11", Some(T0 + MIN), &mut out);
    flow.delete("2", "12", Some(T0 + MIN), &mut out);
    assert!(out.is_empty(), "neither is pending: {out:?}");
    flow.delete("1", "10", Some(T0 + 2 * MIN), &mut out);
    let texts: Vec<(&str, i32, i64)> = out
        .iter()
        .map(|step| match step {
            Step::Cancelled(reply) => (reply.offer_id.as_str(), reply.kind, reply.at_ms),
            other => panic!("only cancellations: {other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("red", Kind::Cancelled as i32, T0 + 2 * MIN),
            ("matcha", Kind::Cancelled as i32, T0 + 2 * MIN)
        ]
    );
    assert_eq!(flow.pending(), 0);
}

#[test]
fn a_restored_flow_decides_as_the_one_that_wrote_its_changelog() {
    let lines = [
        tweet(10, 1, T0, "#BuyRedSneakers42"),
        tweet(11, 2, T0 + MIN, "#BuyMatcha"),
        tweet(12, 2, T0 + 2 * MIN, "#BuyRedSneakers42"),
        // Stream time far on: user 2's matcha (2 min) closes.
        tweet(13, 1, T0 + 5 * MIN, "#BuyLatte"),
        tweet(14, 2, T0 + 5 * MIN, "#ConfirmRedSneakers42"),
        // The rest, after the hand-over.
        tweet(15, 1, T0 + 6 * MIN, "#ConfirmRedSneakers42"),
        tweet(16, 2, T0 + 7 * MIN, "#ConfirmMatcha"),
        // Its window closed by the stream time before the hand-over.
        tweet(17, 1, T0 + 3 * MIN, "#BuyMatcha"),
        tweet(18, 1, T0 + 20 * MIN, "#BuyLatte"),
    ];
    let (before, after) = lines.split_at(5);
    let mut whole = PartitionFlow::new();
    let expected = run(&mut whole, &lines);

    let mut first = PartitionFlow::new();
    let mut out = run(&mut first, before);
    // The changelog: every change, in order; a later record replaces an
    // earlier one of its key.
    let mut changelog = first.take_changes();
    assert!(
        changelog
            .iter()
            .any(|(key, value)| key == "1" && value.is_some()),
        "user 1 has a purchase pending: {changelog:?}"
    );
    changelog.insert(0, ("1".to_owned(), None));
    let mut second = PartitionFlow::new();
    for (key, value) in &changelog {
        second
            .restore(key.as_bytes(), value.as_deref())
            .expect("restores");
    }
    assert_eq!(second.pending(), first.pending());
    assert_eq!(second.stream_time_ms(), Some(T0 + 5 * MIN));
    out.extend(run(&mut second, after));
    assert_eq!(out, expected);
    assert_eq!(
        expected[3..],
        steps(&[
            &["buy:latte", "expired:matcha"],
            &["confirmed:red"],
            &["confirmed:red"],
            &["no_pending_purchase:matcha"],
            &["expired:matcha"],
            &["buy:latte"],
        ])[..],
        "user 1's red is confirmed after the hand-over; a purchase older than the restored \
         stream time's reach expires at once"
    );
}

#[test]
fn changes_are_written_once_a_key_and_a_tombstone_once_nothing_is_pending() {
    let mut flow = PartitionFlow::new();
    run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            tweet(11, 1, T0 + MIN, "#BuyMatcha"),
        ],
    );
    let keys: Vec<(String, bool)> = flow
        .take_changes()
        .into_iter()
        .map(|(k, v)| (k, v.is_some()))
        .collect();
    assert_eq!(keys, [("1".into(), true), ("stream-time".into(), true)]);
    assert!(flow.take_changes().is_empty(), "taken");
    run(
        &mut flow,
        &[tweet(
            12,
            1,
            T0 + 2 * MIN,
            "#ConfirmMatcha #ConfirmRedSneakers42",
        )],
    );
    let keys: Vec<(String, bool)> = flow
        .take_changes()
        .into_iter()
        .map(|(k, v)| (k, v.is_some()))
        .collect();
    assert_eq!(keys, [("1".into(), false), ("stream-time".into(), true)]);
    assert!(
        flow.restore(b"1", Some(b"\xff")).is_err(),
        "a bad record is refused"
    );
}

#[test]
fn the_bundled_confirm_sample_confirms_one_cancels_one_and_lets_one_expire() {
    let (catalog, accounts) = hashbuy_core::samples::confirm_tables();
    let rules = Rules::new(&catalog, &accounts);
    let mut flow = PartitionFlow::new();
    let mut steps = Vec::new();
    for line in hashbuy_core::samples::CONFIRM_TWEETS.lines() {
        let record = decode(line.as_bytes()).expect("a valid record");
        flow.record(&record, &rules.decide(&record), &mut steps);
    }
    let named: Vec<String> = steps.iter().map(describe).collect();
    assert_eq!(
        named,
        [
            "pending:blue-hoodie",
            "confirmed:blue-hoodie",
            "pending:blue-hoodie",
            "cancelled:blue-hoodie",
            "pending:blue-hoodie",
            "expired:blue-hoodie"
        ]
    );
    let Step::Pending(prompt) = &steps[0] else {
        panic!("a prompt")
    };
    assert_eq!(
        prompt.text,
        "Tweet #ConfirmBlueHoodie within 15 min to buy Blue Hoodie for $39.00"
    );
}
