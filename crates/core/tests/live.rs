//! Live tables: changes take effect at their own time, over the files, so
//! a tweet is decided by the tables as they were at its time.

use hashbuy_core::hashtag::normalize;
use hashbuy_core::history::{History, Version};
use hashbuy_core::rules::{Rules, SkipReason};
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_proto::v1::offer::Mode;
use hashbuy_proto::v1::{AccountLink, Offer};
use proptest::prelude::*;

const T: i64 = 1_780_000_000_000;

fn offer(hashtag: &str, offer_id: &str) -> Offer {
    Offer {
        offer_id: offer_id.into(),
        merchant_id: "acme".into(),
        hashtag: hashtag.into(),
        amount: 4200,
        currency: "usd".into(),
        max_per_user: 1,
        ..Offer::default()
    }
}

fn confirm(hashtag: &str, offer_id: &str, confirm_hashtag: &str) -> Offer {
    Offer {
        mode: Mode::Confirm as i32,
        confirm_hashtag: confirm_hashtag.into(),
        ..offer(hashtag, offer_id)
    }
}

fn link(user_id: &str) -> AccountLink {
    AccountLink {
        user_id: user_id.into(),
        customer_id: format!("cus_{user_id}"),
        payment_method_id: "pm_card_visa".into(),
        spend_limit: None,
    }
}

fn tables() -> (Catalog, Accounts) {
    (
        Catalog::new(vec![offer("BuyRedSneakers42", "red")]).expect("catalog"),
        Accounts::new(vec![link("12345")]).expect("accounts"),
    )
}

fn tweet(id: &str, user: &str, text: &str, at_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"id_str": "{id}", "text": "{text}", "user": {{"id_str": "{user}", "protected": false}}, "timestamp_ms": "{at_ms}"}}"#
    )
    .into_bytes()
}

fn bought(catalog: &Catalog, accounts: &Accounts, bytes: &[u8]) -> Vec<String> {
    Rules::new(catalog, accounts)
        .decide_bytes(bytes)
        .commands()
        .iter()
        .map(|c| c.offer_id.clone())
        .collect()
}

#[test]
fn a_version_holds_from_its_time_on_over_the_base() {
    let mut history = History::default();
    assert_eq!(history.at("k", T), Version::Base);
    history.apply("k", T + 10, Some(2));
    history.apply("k", T, Some(1));
    history.apply("k", T + 20, None);
    assert_eq!(history.at("k", T - 1), Version::Base);
    assert_eq!(history.at("k", T), Version::Set(&1));
    assert_eq!(history.at("k", T + 19), Version::Set(&2));
    assert_eq!(history.at("k", T + 20), Version::Removed);
    // Of two changes with one time, the one applied later wins.
    history.apply("k", T + 10, Some(3));
    assert_eq!(history.at("k", T + 10), Version::Set(&3));
    assert_eq!(history.at("other", T + 10), Version::Base);
}

proptest! {
    /// Applied in any order, a key holds at each time the latest change at
    /// or before it, ties going to the change applied last.
    #[test]
    fn a_lookup_is_the_latest_change_at_or_before_its_time(
        changes in proptest::collection::vec((0i64..50, proptest::option::of(0u8..10)), 0..40),
        at in -1i64..60,
    ) {
        let mut history = History::default();
        for (from, value) in &changes {
            history.apply("k", *from, *value);
        }
        let expected = changes
            .iter()
            .enumerate()
            .filter(|(_, (from, _))| *from <= at)
            .max_by_key(|(i, (from, _))| (*from, *i))
            .map(|(_, (_, value))| *value);
        let found = match history.at("k", at) {
            Version::Base => None,
            Version::Set(v) => Some(Some(*v)),
            Version::Removed => Some(None),
        };
        prop_assert_eq!(found, expected);
    }
}

#[test]
fn an_offer_added_live_buys_from_its_time_and_one_removed_stops() {
    let (mut catalog, accounts) = tables();
    let hoodie = normalize("BuyBlueHoodie").into_owned();
    catalog
        .change(&hoodie, T, Some(offer("BuyBlueHoodie", "hoodie")))
        .expect("added");
    let red = normalize("BuyRedSneakers42").into_owned();
    catalog.change(&red, T + 1_000, None).expect("removed");
    let before = tweet("1", "12345", "#BuyBlueHoodie #BuyRedSneakers42", T - 1);
    let after = tweet("2", "12345", "#BuyBlueHoodie #BuyRedSneakers42", T);
    let later = tweet("3", "12345", "#BuyBlueHoodie #BuyRedSneakers42", T + 1_000);
    assert_eq!(bought(&catalog, &accounts, &before), ["red"]);
    assert_eq!(bought(&catalog, &accounts, &after), ["hoodie", "red"]);
    assert_eq!(bought(&catalog, &accounts, &later), ["hoodie"]);
    assert_eq!(catalog.offers_at(T - 1).len(), 1);
    assert_eq!(catalog.offers_at(T).len(), 2);
    assert_eq!(
        catalog.offers_at(T + 1_000).keys().collect::<Vec<_>>(),
        [&hoodie]
    );
}

#[test]
fn a_price_changed_live_applies_to_tweets_from_its_time() {
    let (mut catalog, accounts) = tables();
    let red = normalize("BuyRedSneakers42").into_owned();
    let dearer = Offer {
        amount: 5000,
        ..offer("BuyRedSneakers42", "red")
    };
    catalog.change(&red, T, Some(dearer)).expect("changed");
    let amount = |at| {
        Rules::new(&catalog, &accounts)
            .decide_bytes(&tweet("1", "12345", "#BuyRedSneakers42", at))
            .commands()[0]
            .amount
    };
    assert_eq!((amount(T - 1), amount(T)), (4200, 5000));
}

#[test]
fn an_unlinked_account_stops_buying_from_the_unlink_s_time() {
    let (catalog, mut accounts) = tables();
    accounts.change("12345", T, None).expect("unlinked");
    accounts
        .change("777", T + 5, Some(link("777")))
        .expect("linked");
    let decide = |user, at| {
        Rules::new(&catalog, &accounts).decide_bytes(&tweet("9", user, "#BuyRedSneakers42", at))
    };
    assert_eq!(decide("12345", T - 1).commands().len(), 1);
    assert_eq!(
        decide("12345", T).skip(),
        Some(SkipReason::AccountNotLinked)
    );
    assert_eq!(
        decide("777", T + 4).skip(),
        Some(SkipReason::AccountNotLinked)
    );
    assert_eq!(decide("777", T + 5).commands().len(), 1);
    assert_eq!(accounts.links_at(T).len(), 0);
    assert_eq!(accounts.links_at(T + 5).len(), 1);
}

#[test]
fn a_bad_change_is_refused_naming_the_key_and_the_other_offer() {
    let (mut catalog, mut accounts) = tables();
    let e = catalog
        .change("buyx", T, Some(offer("BuyY", "y")))
        .expect_err("key");
    assert_eq!(
        e,
        "hashtag: \"BuyY\" normalizes to \"buyy\", not to its key \"buyx\""
    );
    let e = catalog
        .change(
            "buyz",
            T,
            Some(Offer {
                amount: 0,
                ..offer("BuyZ", "z")
            }),
        )
        .expect_err("amount");
    assert!(e.starts_with("amount:"), "{e}");
    let e = catalog
        .change(
            "buyhoodie",
            T,
            Some(confirm("BuyHoodie", "hoodie", "BuyRedSneakers42")),
        )
        .expect_err("clash");
    assert!(
        e.contains("normalizes like the hashtag \"BuyRedSneakers42\" of offer \"red\""),
        "{e}"
    );
    catalog
        .change(
            "buyhoodie",
            T,
            Some(confirm("BuyHoodie", "hoodie", "ConfirmHoodie")),
        )
        .expect("a confirm-mode offer");
    let e = catalog
        .change(
            "buycap",
            T + 1,
            Some(confirm("BuyCap", "cap", "confirmHOODIE")),
        )
        .expect_err("shared confirmation");
    assert!(e.contains("of offer \"hoodie\""), "{e}");
    let e = catalog
        .change("confirmhoodie", T + 1, Some(offer("ConfirmHoodie", "c")))
        .expect_err("a purchase hashtag that confirms");
    assert!(
        e.contains("confirm_hashtag \"ConfirmHoodie\" of offer \"hoodie\""),
        "{e}"
    );
    let e = accounts
        .change("1", T, Some(link("2")))
        .expect_err("another user's");
    assert_eq!(e, "user_id: \"2\" is not its key \"1\"");
}

#[test]
fn a_confirmation_hashtag_changed_live_confirms_from_its_time() {
    let (mut catalog, _) = tables();
    assert!(!catalog.has_confirm_offers());
    catalog
        .change(
            "buyhoodie",
            T,
            Some(confirm("BuyHoodie", "hoodie", "ConfirmHoodie")),
        )
        .expect("added");
    assert!(catalog.has_confirm_offers());
    catalog
        .change(
            "buyhoodie",
            T + 10,
            Some(confirm("BuyHoodie", "hoodie", "YesHoodie")),
        )
        .expect("renamed");
    fn confirms(catalog: &Catalog, hashtag: &str, at: i64) -> Option<String> {
        catalog
            .get_by_confirm_hashtag_at(&normalize(hashtag), at)
            .map(|o| o.offer_id.clone())
    }
    assert_eq!(confirms(&catalog, "ConfirmHoodie", T - 1), None);
    assert_eq!(
        confirms(&catalog, "ConfirmHoodie", T),
        Some("hoodie".into())
    );
    assert_eq!(confirms(&catalog, "ConfirmHoodie", T + 10), None);
    assert_eq!(
        confirms(&catalog, "YesHoodie", T + 10),
        Some("hoodie".into())
    );
    catalog.change("buyhoodie", T + 20, None).expect("removed");
    assert_eq!(confirms(&catalog, "YesHoodie", T + 20), None);
    assert_eq!(
        confirms(&catalog, "YesHoodie", T + 19),
        Some("hoodie".into())
    );
}

#[test]
fn an_offer_id_is_one_offer_s_at_a_time() {
    let (mut catalog, _) = tables();
    let e = catalog
        .change("buyredv2", T, Some(offer("BuyRedV2", "red")))
        .expect_err("the file offer's id");
    assert_eq!(
        e,
        "offer_id: \"red\" is already the id of the offer of hashtag \"BuyRedSneakers42\""
    );
    // The same offer may change under its own hashtag.
    catalog
        .change(
            "buyredsneakers42",
            T,
            Some(offer("BUYREDSNEAKERS42", "red")),
        )
        .expect("the same offer");
    // Once the file offer is renamed, its old id is free.
    catalog
        .change(
            "buyredsneakers42",
            T + 10,
            Some(offer("BuyRedSneakers42", "red-old")),
        )
        .expect("renamed");
    catalog
        .change("buyredv2", T + 10, Some(offer("BuyRedV2", "red")))
        .expect("the id is free from then on");
    let e = catalog
        .change("buyredv3", T + 5, Some(offer("BuyRedV3", "red")))
        .expect_err("still taken at T + 5");
    assert!(e.contains("\"BUYREDSNEAKERS42\""), "{e}");
}

/// Whether the catalog shows an offer ended from a time on, which the
/// settler asks before it forgets the offer's `max_per_user` counts: an
/// end moved later, by a change before or after that time, keeps it on
/// sale, and so does a version of it under another hashtag; an offer the
/// catalog never held, a hashtag with no version yet at that time, and a
/// hashtag given to another offer tell too little to end it.
#[test]
fn an_offer_is_ended_from_a_time_only_when_every_version_from_then_says_so() {
    const DAY: i64 = 86_400_000;
    let ending = |end: i64| Offer {
        ends_at_ms: Some(end),
        ..offer("BuyRedSneakers42", "red")
    };
    let mut catalog = Catalog::new(vec![ending(T + 10 * DAY)]).expect("catalog");
    assert!(catalog.ended_from("red", T + 20 * DAY));
    assert!(!catalog.ended_from("red", T + 5 * DAY));
    assert!(!catalog.ended_from("blue", T), "never held");

    // Moved later while on sale: on sale until the new end.
    let key = normalize("BuyRedSneakers42").into_owned();
    catalog
        .change(&key, T + 5 * DAY, Some(ending(T + 60 * DAY)))
        .expect("extended");
    assert!(!catalog.ended_from("red", T + 20 * DAY));
    assert!(catalog.ended_from("red", T + 61 * DAY));

    // Ended early by a change after the time asked about: the version in
    // effect at that time still sold it.
    catalog
        .change(&key, T + 30 * DAY, Some(ending(T + 30 * DAY)))
        .expect("ended early");
    assert!(!catalog.ended_from("red", T + 20 * DAY));
    assert!(catalog.ended_from("red", T + 31 * DAY));

    // Put on sale again under another hashtag, without an end.
    catalog.change(&key, T + 40 * DAY, None).expect("removed");
    catalog
        .change(
            &normalize("BuyRedSneakersAgain"),
            T + 40 * DAY,
            Some(offer("BuyRedSneakersAgain", "red")),
        )
        .expect("again");
    assert!(!catalog.ended_from("red", T + 31 * DAY));

    // Changes put out of time order can leave one id under two hashtags:
    // the one still selling it counts, whichever the id moved to last.
    let mut twice = Catalog::default();
    twice
        .change(
            &normalize("BuyTwo"),
            T + 400,
            Some(Offer {
                ends_at_ms: Some(T + 500),
                ..offer("BuyTwo", "x")
            }),
        )
        .expect("put first, in effect later");
    twice
        .change(&normalize("BuyOne"), T + 100, Some(offer("BuyOne", "x")))
        .expect("put second, in effect earlier");
    assert!(!twice.ended_from("x", T + 600));

    // A hashtag given to another offer: a matcher whose files hold that
    // offer under another hashtag refuses the change and sells on.
    let mut reused = Catalog::default();
    let k = normalize("BuyK").into_owned();
    reused
        .change(&k, T, Some(offer("BuyK", "x")))
        .expect("x under K");
    reused
        .change(&k, T + DAY, Some(offer("BuyK", "z")))
        .expect("K to z");
    assert!(!reused.ended_from("x", T + 2 * DAY));
    let mut files = Catalog::new(vec![offer("BuyM", "z")]).expect("files");
    files
        .change(&k, T, Some(offer("BuyK", "x")))
        .expect("x under K");
    assert!(
        files.change(&k, T + DAY, Some(offer("BuyK", "z"))).is_err(),
        "refused where the files hold z"
    );

    // No version yet at the time asked about (older changes compacted
    // away): the offer may have been on sale then.
    let mut compacted = Catalog::default();
    compacted
        .change(
            &k,
            T + 10 * DAY,
            Some(Offer {
                ends_at_ms: Some(T + 9 * DAY),
                ..offer("BuyK", "x")
            }),
        )
        .expect("ended when put");
    assert!(!compacted.ended_from("x", T + 5 * DAY));
    assert!(compacted.ended_from("x", T + 11 * DAY));

    // Removed: nothing sells it from then on.
    let mut removed = Catalog::new(vec![offer("BuyRedSneakers42", "red")]).expect("catalog");
    removed.change(&key, T, None).expect("removed");
    assert!(removed.ended_from("red", T + DAY));
    assert!(!removed.ended_from("red", T - DAY));
}
