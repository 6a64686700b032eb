//! Purchase rules on the bundled sample stream (`samples/`), which has one
//! record for every decision, and on focused cases.

use hashbuy_core::rules::{command_id, is_active, Decision, Rules, SkipReason};
use hashbuy_proto::v1::Offer;

fn sample_lines() -> Vec<&'static str> {
    include_str!("../../../samples/tweets.jsonl")
        .lines()
        .collect()
}

/// (offer ids bought) or the skip reason, per sample line.
fn outcome(decision: &Decision) -> Result<Vec<&str>, SkipReason> {
    match decision {
        Decision::Buy(commands) => Ok(commands.iter().map(|c| c.offer_id.as_str()).collect()),
        Decision::Skip(reason) => Err(*reason),
        Decision::Confirm(_) => panic!("the sample tables have no confirm-mode offer"),
    }
}

#[test]
fn sample_stream_covers_every_decision() {
    use SkipReason::*;
    let (catalog, accounts) = hashbuy_core::samples::tables();
    let rules = Rules::new(&catalog, &accounts);
    let expected: Vec<Result<Vec<&str>, SkipReason>> = vec![
        Ok(vec!["red-sneakers-42"]),
        Ok(vec!["red-sneakers-42", "cafe-latte"]),
        Err(Retweet),
        Err(ProtectedAuthor),
        Err(NoCatalogHashtag),
        Err(AccountNotLinked),
        Err(OfferInactive),
        Err(Notice),
        Err(Notice),
        Err(Notice),
        Err(Invalid),
        Err(Invalid),
        Ok(vec!["concert-ticket"]),
        Err(Retweet),
        Ok(vec!["cafe-latte"]),
        Err(NoCatalogHashtag),
        Err(Notice),
        Err(Invalid),
        Ok(vec!["red-sneakers-42"]),
    ];
    let lines = sample_lines();
    assert_eq!(lines.len(), expected.len());
    let mut reasons_seen = std::collections::BTreeSet::new();
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let decision = rules.decide_bytes(line.as_bytes());
        assert_eq!(outcome(&decision), *want, "line {}", i + 1);
        assert_eq!(
            decision,
            rules.decide_bytes_reference(line.as_bytes()),
            "line {}",
            i + 1
        );
        if let Some(reason) = decision.skip() {
            reasons_seen.insert(reason);
        }
    }
    assert_eq!(
        reasons_seen.len(),
        SkipReason::ALL.len() - 1,
        "every skip reason of the rules appears (no_hashtag_sign is the matcher's prefilter's)"
    );
}

#[test]
fn commands_carry_catalog_terms_and_account_limits() {
    let (catalog, accounts) = hashbuy_core::samples::tables();
    let rules = Rules::new(&catalog, &accounts);
    let line = sample_lines()[0];
    let Decision::Buy(commands) = rules.decide_bytes(line.as_bytes()) else {
        panic!("buys")
    };
    let c = &commands[0];
    assert_eq!(
        c.command_id,
        command_id("1930000000000000001", "red-sneakers-42").to_string()
    );
    assert_eq!(
        (c.tweet_id.as_str(), c.user_id.as_str()),
        ("1930000000000000001", "12345")
    );
    assert_eq!(
        (c.amount, c.currency.as_str(), c.merchant_id.as_str()),
        (4200, "usd", "acme")
    );
    assert_eq!(
        (c.customer_id.as_str(), c.payment_method_id.as_str()),
        ("cus_jane", "pm_card_visa")
    );
    assert_eq!((c.max_per_user, c.spend_limit), (1, Some(100_000)));
    assert_eq!(c.hashtag, "BuyRedSneakers42");
    assert_eq!(c.tweet_timestamp_ms, 1_780_315_200_000);
}

#[test]
fn one_offer_named_twice_buys_once_and_replays_give_the_same_ids() {
    let (catalog, accounts) = hashbuy_core::samples::tables();
    let rules = Rules::new(&catalog, &accounts);
    let line = r##"{"id_str": "77", "text": "#BuyRedSneakers42 #buyredsneakers42 $1 #BuyCafé", "user": {"id_str": "12345"}, "timestamp_ms": "1780315200000"}"##;
    let first = rules.decide_bytes(line.as_bytes());
    let ids: Vec<_> = first
        .commands()
        .iter()
        .map(|c| (c.offer_id.clone(), c.hashtag.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            ("red-sneakers-42".to_owned(), "BuyRedSneakers42".to_owned()),
            ("cafe-latte".to_owned(), "BuyCafé".to_owned())
        ]
    );
    assert_eq!(first, rules.decide_bytes(line.as_bytes()));
}

#[test]
fn activity_window_is_judged_at_the_tweets_time() {
    let offer = Offer {
        starts_at_ms: Some(100),
        ends_at_ms: Some(200),
        ..Default::default()
    };
    assert!(!is_active(&offer, 99));
    assert!(is_active(&offer, 100));
    assert!(is_active(&offer, 199));
    assert!(!is_active(&offer, 200));
    assert!(is_active(&Offer::default(), i64::MIN));
}

#[test]
fn a_command_carries_its_offers_end_for_the_settler() {
    let (catalog, accounts) = hashbuy_core::samples::tables();
    let rules = Rules::new(&catalog, &accounts);
    // 2026-01-15, while the winter coat is on sale; the sneakers have no end.
    let line = r##"{"id_str": "78", "text": "#BuyWinterCoat #BuyRedSneakers42", "user": {"id_str": "12345"}, "timestamp_ms": "1768435200000"}"##;
    let ends: Vec<_> = rules
        .decide_bytes(line.as_bytes())
        .commands()
        .iter()
        .map(|c| (c.offer_id.clone(), c.offer_ends_at_ms))
        .collect();
    assert_eq!(
        ends,
        [
            ("winter-coat".to_owned(), Some(1_772_323_200_000)),
            ("red-sneakers-42".to_owned(), None)
        ]
    );
}
