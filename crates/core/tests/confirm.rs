//! The confirm flow by event time: what a sequence of tweets of one
//! partition comes to, through the rules and a [`PartitionFlow`], as the
//! matcher runs them.

use hashbuy_core::confirm::{PartitionFlow, Step, ALLOWED_LATENESS_MS};
use hashbuy_core::decode::{decode, Record};
use hashbuy_core::replies::reply_id;
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

/// Runs `lines` through the rules and `flow`, as the records at offsets 0,
/// 1, ...: each record's steps, as `name:offer` (a command is
/// `confirmed:offer`), with the direct buys as `buy:offer`.
fn run(flow: &mut PartitionFlow, lines: &[String]) -> Vec<Vec<String>> {
    run_at(flow, 0, lines)
}

/// [`run`], the first record at offset `first`.
fn run_at(flow: &mut PartitionFlow, first: i64, lines: &[String]) -> Vec<Vec<String>> {
    let (catalog, accounts) = tables();
    let rules = Rules::new(&catalog, &accounts);
    lines
        .iter()
        .zip(first..)
        .map(|(line, offset)| {
            let record = decode(line.as_bytes()).expect("a valid record");
            let decision = rules.decide(&record);
            let mut steps = Vec::new();
            let mut named: Vec<String> = decision
                .commands()
                .iter()
                .map(|c| format!("buy:{}", c.offer_id))
                .collect();
            flow.record(&record, &decision, offset, &mut steps);
            named.extend(steps.iter().map(describe));
            named
        })
        .collect()
}

/// A changelog: records in offset order, `None` a tombstone.
type Changelog = Vec<(String, Option<Vec<u8>>)>;

/// Appends what `flow` changed, as of offset `as_of`, to `changelog`.
fn write(changelog: &mut Changelog, flow: &mut PartitionFlow, as_of: i64) {
    changelog.extend(
        flow.take_changes(as_of)
            .into_iter()
            .map(|(key, value)| (key, Some(value))),
    );
}

/// A flow restored from `changelog`, not claimed.
fn read(changelog: &Changelog) -> PartitionFlow {
    let mut flow = PartitionFlow::new();
    for (key, value) in changelog.iter() {
        flow.restore(key.as_bytes(), value.as_deref())
            .expect("restores");
    }
    flow
}

/// A new owner's flow, restored from `changelog` and claimed as owner
/// `id`; its claim is appended to the changelog.
fn restore(changelog: &mut Changelog, id: u64) -> PartitionFlow {
    let mut flow = read(changelog);
    let (key, value) = flow.claim(id);
    changelog.push((key, Some(value)));
    flow
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
    let mut changelog = Changelog::new();
    write(&mut changelog, &mut first, 5);
    assert!(
        changelog.iter().any(|(key, _)| key == "1"),
        "user 1 has a purchase pending: {changelog:?}"
    );
    let mut second = restore(&mut changelog, 5);
    assert_eq!(second.pending(), first.pending());
    assert_eq!(second.stream_time_ms(), Some(T0 + 5 * MIN));
    assert_eq!(second.owner().epoch, 1);
    out.extend(run_at(&mut second, 5, after));
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

/// At least once, a crash after the changelog is written and before the
/// offsets are committed reads a stretch again against a state that holds
/// it already: it must neither confirm a second purchase nor answer one
/// twice.
#[test]
fn records_read_again_against_a_state_that_holds_them_do_nothing_twice() {
    let mut flow = PartitionFlow::new();
    let mut changelog = Changelog::new();
    // Committed: the purchase, at offset 0.
    assert_eq!(
        run(&mut flow, &[tweet(10, 1, T0, "#BuyRedSneakers42")]),
        steps(&[&["pending:red"]])
    );
    write(&mut changelog, &mut flow, 1);
    // Its changelog written, its offsets not: a second purchase tweet
    // while pending, the confirmation, and a later tweet.
    let stretch = [
        tweet(11, 1, T0 + MIN, "#BuyRedSneakers42"),
        tweet(12, 1, T0 + 2 * MIN, "#ConfirmRedSneakers42"),
        tweet(13, 1, T0 + 17 * MIN, "#later"),
    ];
    let first = run_at(&mut flow, 1, &stretch);
    assert_eq!(
        first,
        steps(&[&["already_pending:red"], &["confirmed:red"], &[]])
    );
    write(&mut changelog, &mut flow, 4);

    // The crash: the next owner reads from offset 1 again.
    let mut again = restore(&mut changelog, 1);
    let replayed = run_at(&mut again, 1, &stretch);
    assert_eq!(
        replayed,
        steps(&[&[], &[], &[]]),
        "no new pending purchase from the second tweet, no confirmation of it, no expiry \
         of the confirmed one"
    );
    let after = run_at(
        &mut again,
        4,
        &[tweet(14, 1, T0 + 18 * MIN, "#ConfirmRedSneakers42")],
    );
    assert_eq!(after, steps(&[&["no_pending_purchase:red"]]));
}

/// When only some users' records of a stretch reached the changelog,
/// those users' records do nothing again, and the others' are done again
/// as the first time, with the same stream time.
#[test]
fn a_stretch_whose_changelog_was_written_in_part_is_done_again_for_the_rest() {
    let mut flow = PartitionFlow::new();
    let mut changelog = Changelog::new();
    run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            tweet(20, 2, T0, "#BuyRedSneakers42"),
        ],
    );
    write(&mut changelog, &mut flow, 2);
    let stretch = [
        tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42"),
        tweet(21, 2, T0 + 2 * MIN, "#ConfirmRedSneakers42"),
    ];
    let first = run_at(&mut flow, 2, &stretch);
    // Only user 1's record reached the changelog.
    let written: Vec<(String, Vec<u8>)> = flow.take_changes(4);
    changelog.extend(
        written
            .into_iter()
            .filter(|(key, _)| key == "1")
            .map(|(key, value)| (key, Some(value))),
    );
    let mut again = restore(&mut changelog, 2);
    let replayed = run_at(&mut again, 2, &stretch);
    assert_eq!(first, steps(&[&["confirmed:red"], &["confirmed:red"]]));
    assert_eq!(
        replayed,
        steps(&[&[], &["confirmed:red"]]),
        "user 2's confirmation, not in the changelog, confirms again (the same command)"
    );
}

#[test]
fn a_former_owner_s_late_writes_are_left_out_of_later_restores() {
    let mut changelog = Changelog::new();
    let mut owner = restore(&mut changelog, 7);
    run(&mut owner, &[tweet(10, 1, T0, "#BuyRedSneakers42")]);
    write(&mut changelog, &mut owner, 1);
    // The partition moves on: the next owner claims a higher epoch.
    let mut next = restore(&mut changelog, 8);
    assert_eq!((owner.owner().epoch, next.owner().epoch), (1, 2));
    // The former owner, not yet told, confirms and writes late.
    run_at(
        &mut owner,
        1,
        &[tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42")],
    );
    let stale = owner.take_changes(2);
    // The next owner makes a second purchase pending for user 1 after
    // doing the confirmation again.
    run_at(
        &mut next,
        1,
        &[
            tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42"),
            tweet(12, 1, T0 + 2 * MIN, "#BuyRedSneakers42"),
        ],
    );
    write(&mut changelog, &mut next, 3);
    changelog.extend(stale.into_iter().map(|(key, value)| (key, Some(value))));
    let third = read(&changelog);
    assert_eq!(
        third
            .pending_of("1")
            .iter()
            .map(|p| p.command.tweet_id.as_str())
            .collect::<Vec<_>>(),
        ["12"],
        "the former owner's record, written after the next owner's, is left out"
    );
    assert_eq!(third.restored_owner(), next.owner());
}

/// Two members that read the changelog before either claimed claim the
/// same epoch: the first claim in the log names the owner, the other's
/// records are left out, and its next claim (of the next epoch) wins.
#[test]
fn of_two_claims_of_one_epoch_the_first_in_the_log_wins() {
    let mut changelog = Changelog::new();
    let mut first = restore(&mut changelog, 1);
    run(&mut first, &[tweet(10, 1, T0, "#BuyRedSneakers42")]);
    write(&mut changelog, &mut first, 1);
    // Both read the changelog here; the slower's claim lands second.
    let mut fast = read(&changelog);
    let mut slow = read(&changelog);
    let fast_claim = fast.claim(2);
    let slow_claim = slow.claim(3);
    assert_eq!(fast.owner().epoch, slow.owner().epoch);
    changelog.push((fast_claim.0, Some(fast_claim.1)));
    changelog.push((slow_claim.0, Some(slow_claim.1)));
    assert_eq!(
        read(&changelog).restored_owner(),
        fast.owner(),
        "the first claim holds"
    );
    // The slow one confirms user 1's purchase and writes: left out.
    run_at(
        &mut slow,
        1,
        &[tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42")],
    );
    write(&mut changelog, &mut slow, 2);
    assert_eq!(
        read(&changelog).pending_of("1").len(),
        1,
        "the loser's write is left out"
    );
    // The slow one, reading its claim lost, claims the next epoch: it wins.
    let mut again = restore(&mut changelog, 3);
    assert_eq!(again.owner().epoch, 3);
    assert_eq!(read(&changelog).restored_owner(), again.owner());
    run_at(
        &mut again,
        1,
        &[tweet(11, 1, T0 + MIN, "#ConfirmRedSneakers42")],
    );
    write(&mut changelog, &mut again, 2);
    assert!(read(&changelog).pending_of("1").is_empty());
}

#[test]
fn changes_are_written_once_a_key_and_ended_users_keep_an_empty_record() {
    let mut flow = PartitionFlow::new();
    run(
        &mut flow,
        &[
            tweet(10, 1, T0, "#BuyRedSneakers42"),
            tweet(11, 1, T0 + MIN, "#BuyMatcha"),
        ],
    );
    let mut changelog = Changelog::new();
    write(&mut changelog, &mut flow, 2);
    let keys: Vec<&str> = changelog.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["1", "stream-time"]);
    assert!(flow.take_changes(2).is_empty(), "taken");
    run_at(
        &mut flow,
        2,
        &[tweet(
            12,
            1,
            T0 + 2 * MIN,
            "#ConfirmMatcha #ConfirmRedSneakers42",
        )],
    );
    write(&mut changelog, &mut flow, 3);
    assert_eq!(
        changelog
            .iter()
            .filter(|(key, value)| key == "1" && value.is_some())
            .count(),
        2,
        "user 1, ended, keeps an empty record, not a tombstone: {changelog:?}"
    );
    assert_eq!(read(&changelog).pending(), 0);
    let mut flow = PartitionFlow::new();
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
    for (line, offset) in hashbuy_core::samples::CONFIRM_TWEETS.lines().zip(0..) {
        let record = decode(line.as_bytes()).expect("a valid record");
        flow.record(&record, &rules.decide(&record), offset, &mut steps);
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

/// A snowflake id made at `at_ms`, as Twitter makes them.
fn snowflake(at_ms: i64) -> u64 {
    ((at_ms - 1_288_834_974_657) as u64) << 22
}

#[test]
fn a_tweet_with_a_corrupt_time_far_ahead_does_not_close_the_partition_s_windows() {
    let mut flow = PartitionFlow::new();
    let purchase = snowflake(T0);
    let corrupt = snowflake(T0 + MIN);
    let out = run(
        &mut flow,
        &[
            tweet(purchase, 1, T0, "#BuyRedSneakers42"),
            tweet(corrupt, 2, 9_000_000_000_000_000, "#hi"),
            tweet(
                snowflake(T0 + 5 * MIN),
                1,
                T0 + 5 * MIN,
                "#ConfirmRedSneakers42",
            ),
        ],
    );
    assert_eq!(out, steps(&[&["pending:red"], &[], &["confirmed:red"]]));
    assert_eq!(flow.stream_time_ms(), Some(T0 + 5 * MIN));
}

#[test]
fn a_delete_notice_does_not_move_stream_time() {
    let mut flow = PartitionFlow::new();
    run(&mut flow, &[tweet(10, 1, T0, "#BuyRedSneakers42")]);
    let mut out = Vec::new();
    flow.delete("2", "99", Some(T0 + 20 * MIN), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(flow.stream_time_ms(), Some(T0));
    assert_eq!(flow.pending(), 1);
}
