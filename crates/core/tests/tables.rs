//! Table files load from TOML and JSON, and every problem names the file,
//! the line, the key and what is wrong.

use hashbuy_core::hashtag::normalize;
use hashbuy_core::tables::{Accounts, Catalog, Merchants, TableError};

fn catalog_error(name: &str, text: &str) -> TableError {
    Catalog::from_file_text(name, text).expect_err("expected an error")
}

const OFFER: &str =
    r#""hashtag": "BuyX", "offer_id": "x", "merchant_id": "m", "amount": 100, "currency": "usd""#;

#[test]
fn json_and_toml_load_alike() {
    let json = Catalog::from_file_text(
        "c.json",
        r##"{"offers": [{"hashtag": "#BuyRedSneakers42", "offer_id": "red", "merchant_id": "acme", "amount": 4200,
            "currency": "usd", "starts_at": "2026-01-01T00:00:00Z", "ends_at": null, "max_per_user": 2}]}"##,
    )
    .expect("json");
    let toml = Catalog::from_file_text(
        "c.toml",
        "[[offers]]\nhashtag = \"BuyRedSneakers42\"\noffer_id = \"red\"\nmerchant_id = \"acme\"\namount = 4200\ncurrency = \"usd\"\nstarts_at = \"2026-01-01T00:00:00Z\"\nmax_per_user = 2\n",
    )
    .expect("toml");
    assert_eq!(json.offers(), toml.offers());
    let offer = json
        .get(&normalize("buyREDsneakers42"))
        .expect("found by normalized hashtag");
    assert_eq!(
        offer.hashtag, "BuyRedSneakers42",
        "a leading # is accepted and dropped"
    );
    assert_eq!(
        (offer.starts_at_ms, offer.ends_at_ms, offer.max_per_user),
        (Some(1_767_225_600_000), None, 2)
    );
    let defaults = Catalog::from_file_text("c.json", &format!(r#"{{"offers": [{{{OFFER}}}]}}"#))
        .expect("defaults");
    assert_eq!(defaults.offers()[0].max_per_user, 1);
}

#[test]
fn problems_name_file_line_and_key() {
    let cases = [
        (format!("{{\"offers\": [\n{{{OFFER}}},\n{{{OFFER}, \"colour\": \"red\"}}]}}"), 3, "offers[1]: unknown field `colour`"),
        ("{\"offers\": [\n{\"hashtag\": \"BuyX\"}]}".to_owned(), 2, "offers[0]: missing field `offer_id`"),
        (format!("{{\"offers\": [\n{{{}}}]}}", OFFER.replace("usd", "USD")), 2, "offers[0].currency: \"USD\" is not a lowercase ISO 4217 code"),
        (format!("{{\"offers\": [\n{{{}}}]}}", OFFER.replace("100", "0")), 2, "offers[0].amount: must be at least 1"),
        (format!("{{\"offers\": [\n{{{}}}]}}", OFFER.replace("BuyX", "Buy-X")), 2, "offers[0].hashtag: \"Buy-X\" is not a hashtag"),
        (format!("{{\"offers\": [\n{{{}}}]}}", OFFER.replace("BuyX", "1234")), 2, "offers[0].hashtag"),
        (format!("{{\"offers\": [\n{{{OFFER}, \"starts_at\": \"2026-02-01T00:00:00Z\", \"ends_at\": \"2026-01-01T00:00:00Z\"}}]}}"), 2, "offers[0].ends_at: must be after starts_at"),
        (format!("{{\"offers\": [\n{{{OFFER}, \"starts_at\": \"soon\"}}]}}"), 2, "offers[0]: "),
        ("{\"offers\": [}".to_owned(), 1, "expected value (column 13)"),
        ("{\"offer\": []}".to_owned(), 1, "unknown key \"offer\""),
        ("{}".to_owned(), 1, "missing key \"offers\""),
    ];
    for (text, line, problem) in cases {
        let e = catalog_error("catalog.json", &text);
        assert_eq!(e.file, "catalog.json");
        assert_eq!(e.line, line, "{e}");
        assert!(
            e.problem.starts_with(problem),
            "{e:?} should start with {problem:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("catalog.json:{line}: ")),
            "{e}"
        );
    }
}

#[test]
fn hashtags_that_normalize_alike_are_refused_naming_both() {
    let text = format!(
        "{{\"offers\": [\n{{{OFFER}}},\n{{{}}}]}}",
        OFFER.replace("BuyX", "ＢｕｙＸ").replace("\"x\"", "\"y\"")
    );
    let e = catalog_error("catalog.json", &text);
    assert_eq!(e.line, 3);
    assert!(
        e.problem.contains("offers[1].hashtag")
            && e.problem.contains("offers[0]")
            && e.problem.contains("\"x\""),
        "{e}"
    );
    let e = catalog_error(
        "catalog.json",
        &format!(
            "{{\"offers\": [{{{OFFER}}}, {{{}}}]}}",
            OFFER.replace("BuyX", "BuyY")
        ),
    );
    assert!(
        e.problem
            .contains("offers[1].offer_id: \"x\" is already the id of offers[0]"),
        "{e}"
    );
}

#[test]
fn toml_problems_point_at_the_entry() {
    let text = "# catalog\n\n[[offers]]\nhashtag = \"BuyX\"\noffer_id = \"x\"\nmerchant_id = \"m\"\namount = 1\ncurrency = \"usd\"\n\n[[offers]]\nhashtag = \"BuyY\"\noffer_id = \"y\"\nmerchant_id = \"m\"\namount = -5\ncurrency = \"usd\"\n";
    let e = catalog_error("catalog.toml", text);
    assert_eq!(e.line, 10, "{e}");
    assert!(e.problem.starts_with("offers[1]: "), "{e}");
    let e = catalog_error("catalog.toml", "[[offers]]\nhashtag = \n");
    assert_eq!(e.line, 2, "{e}");
}

#[test]
fn accounts_load_and_refuse_bad_links() {
    let accounts = Accounts::from_file_text(
        "accounts.toml",
        "[[accounts]]\nuser_id = \"12345\"\ncustomer_id = \"cus_1\"\npayment_method_id = \"pm_card_visa\"\nspend_limit = 5000\n",
    )
    .expect("loads");
    assert_eq!(
        accounts.get("12345").and_then(|a| a.spend_limit),
        Some(5000)
    );
    let link = r#""customer_id": "cus_1", "payment_method_id": "pm_card_visa""#;
    let e = Accounts::from_file_text(
        "a.json",
        &format!("{{\"accounts\": [\n{{\"user_id\": \"jane\", {link}}}]}}"),
    )
    .expect_err("bad id");
    assert_eq!(
        (e.line, e.problem.as_str()),
        (2, "accounts[0].user_id: \"jane\" is not a decimal user id")
    );
    let e = Accounts::from_file_text(
        "a.json",
        &format!(
            "{{\"accounts\": [{{\"user_id\": \"1\", {link}}},\n{{\"user_id\": \"1\", {link}}}]}}"
        ),
    )
    .expect_err("repeated");
    assert_eq!(e.line, 2);
    assert!(e.problem.contains("already linked by accounts[0]"), "{e}");
}

#[test]
fn merchants_load_from_toml_and_json_and_refuse_bad_rows_naming_line_and_key() {
    let toml = Merchants::from_file_text(
        "merchants.toml",
        "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"acct_1Acme\"\nfee_bps = 250\n\
         on_behalf_of = true\n\n[[merchants]]\nmerchant_id = \"bolt\"\naccount_id = \"acct_2Bolt\"\n\
         fee_amount = 30\n",
    )
    .expect("loads");
    let json = Merchants::from_file_text(
        "merchants.json",
        r#"{"merchants": [{"merchant_id": "acme", "account_id": "acct_1Acme", "fee_bps": 250, "on_behalf_of": true},
            {"merchant_id": "bolt", "account_id": "acct_2Bolt", "fee_amount": 30}]}"#,
    )
    .expect("loads");
    for merchants in [&toml, &json] {
        assert_eq!(merchants.len(), 2);
        let acme = merchants.get("acme").expect("acme");
        assert_eq!(
            (acme.account_id.as_str(), acme.fee_bps, acme.on_behalf_of),
            ("acct_1Acme", Some(250), true)
        );
        let bolt = merchants.get("bolt").expect("bolt");
        assert_eq!((bolt.fee_amount, bolt.on_behalf_of), (Some(30), false));
    }

    let row = |fields: &str| format!("{{\"merchants\": [\n{{\"merchant_id\": \"m\", {fields}}}]}}");
    for (fields, problem) in [
        (
            r#""account_id": "cus_1""#,
            "merchants[0].account_id: \"cus_1\" is not a Stripe connected account id (acct_ and \
             letters or digits)",
        ),
        (
            r#""account_id": "acct_""#,
            "merchants[0].account_id: \"acct_\" is not a Stripe connected account id (acct_ and \
             letters or digits)",
        ),
        (
            r#""account_id": "acct_1", "fee_bps": 10001"#,
            "merchants[0].fee_bps: 10001 is over 10000 (100% of the amount)",
        ),
        (
            r#""account_id": "acct_1", "fee_bps": 100, "fee_amount": 30"#,
            "merchants[0].fee_amount: give fee_bps or fee_amount, not both",
        ),
    ] {
        let e = Merchants::from_file_text("m.json", &row(fields)).expect_err(fields);
        assert_eq!(
            (e.file.as_str(), e.line, e.problem.as_str()),
            ("m.json", 2, problem)
        );
    }
    let e = Merchants::from_file_text("m.json", &row(r#""account": "acct_1""#))
        .expect_err("unknown key");
    assert!(e.problem.contains("unknown field `account`"), "{e}");

    let e = Merchants::from_file_text(
        "m.json",
        "{\"merchants\": [{\"merchant_id\": \"m\", \"account_id\": \"acct_1\"},\n\
         {\"merchant_id\": \"m\", \"account_id\": \"acct_2\"}]}",
    )
    .expect_err("repeated");
    assert_eq!(
        (e.line, e.problem.as_str()),
        (
            2,
            "merchants[1].merchant_id: \"m\" is already given by merchants[0]"
        )
    );
}

fn one_offer(extra: &str) -> String {
    format!("{{\"offers\": [\n{{{OFFER}{extra}}}]}}")
}

#[test]
fn confirm_mode_offers_get_a_derived_hashtag_and_the_default_window() {
    use hashbuy_proto::v1::offer::Mode;
    let catalog = Catalog::from_file_text(
        "c.json",
        &format!(
            "{{\"offers\": [{{{OFFER}, \"mode\": \"confirm\", \"title\": \"X\"}},\n\
             {{\"hashtag\": \"#latte\", \"offer_id\": \"l\", \"merchant_id\": \"m\", \"amount\": 5, \"currency\": \"usd\", \"mode\": \"confirm\", \"confirm_window_s\": 60}},\n\
             {{\"hashtag\": \"BUYz\", \"offer_id\": \"z\", \"merchant_id\": \"m\", \"amount\": 5, \"currency\": \"usd\", \"mode\": \"confirm\", \"confirm_hashtag\": \"#YesZ\"}},\n\
             {{\"hashtag\": \"Buy\", \"offer_id\": \"b\", \"merchant_id\": \"m\", \"amount\": 5, \"currency\": \"usd\", \"mode\": \"direct\"}}]}}"
        ),
    )
    .expect("a valid catalog");
    let found = |confirm: &str| {
        catalog
            .get_by_confirm_hashtag(&normalize(confirm))
            .map(|o| (o.offer_id.as_str(), o.confirm_window_s))
    };
    assert_eq!(found("confirmx"), Some(("x", 900)), "Buy… → Confirm…");
    assert_eq!(
        found("ConfirmLatte"),
        Some(("l", 60)),
        "else Confirm + the hashtag"
    );
    assert_eq!(found("yesz"), Some(("z", 900)), "given, its # dropped");
    assert_eq!(
        found("ConfirmZ"),
        None,
        "a given hashtag replaces the derived one"
    );
    assert_eq!(found("Confirm"), None, "a direct offer has no confirmation");
    let x = catalog.get(&normalize("BuyX")).expect("offer x");
    assert_eq!(
        (
            Mode::try_from(x.mode),
            x.confirm_hashtag.as_str(),
            x.title.as_str()
        ),
        (Ok(Mode::Confirm), "ConfirmX", "X")
    );
    let direct = catalog.get(&normalize("Buy")).expect("offer b");
    assert_eq!(
        (
            Mode::try_from(direct.mode),
            direct.confirm_hashtag.as_str(),
            direct.confirm_window_s
        ),
        (Ok(Mode::Direct), "", 0)
    );
    assert!(catalog.has_confirm_offers());
    let plain = Catalog::from_file_text("c.json", &one_offer("")).expect("a direct offer");
    assert!(!plain.has_confirm_offers(), "direct is the default mode");
}

#[test]
fn confirm_fields_are_checked_naming_the_key() {
    let cases = [
        (
            ", \"mode\": \"later\"",
            "offers[0]: unknown variant `later`",
        ),
        (
            ", \"confirm_hashtag\": \"OkX\"",
            "offers[0].confirm_hashtag: only a confirm-mode offer has one",
        ),
        (
            ", \"confirm_window_s\": 60",
            "offers[0].confirm_window_s: only a confirm-mode offer has one",
        ),
        (
            ", \"mode\": \"confirm\", \"confirm_window_s\": 0",
            "offers[0].confirm_window_s: must be at least 1",
        ),
        (
            ", \"mode\": \"confirm\", \"confirm_window_s\": 604801",
            "offers[0].confirm_window_s: 604801 is not between 1 and 604800",
        ),
        (
            ", \"mode\": \"confirm\", \"confirm_hashtag\": \"ok-x\"",
            "offers[0].confirm_hashtag: \"ok-x\" is not a hashtag",
        ),
        (
            ", \"mode\": \"confirm\", \"confirm_hashtag\": \"#buyx\"",
            "offers[0].confirm_hashtag: \"buyx\" normalizes like the offer's own hashtag",
        ),
    ];
    for (extra, problem) in cases {
        let e = catalog_error("catalog.json", &one_offer(extra));
        assert_eq!(
            (e.file.as_str(), e.line),
            ("catalog.json", 2),
            "{extra}: {e}"
        );
        assert!(e.problem.starts_with(problem), "{extra}: {e}");
    }
}

#[test]
fn a_confirmation_hashtag_shared_or_clashing_with_a_purchase_is_refused_naming_both() {
    let offer = |hashtag: &str, id: &str, extra: &str| {
        format!("{{\"hashtag\": \"{hashtag}\", \"offer_id\": \"{id}\", \"merchant_id\": \"m\", \"amount\": 5, \"currency\": \"usd\"{extra}}}")
    };
    let shared = catalog_error(
        "c.json",
        &format!(
            "{{\"offers\": [\n{},\n{}]}}",
            offer(
                "BuyA",
                "a",
                ", \"mode\": \"confirm\", \"confirm_hashtag\": \"Yes\""
            ),
            offer(
                "BuyB",
                "b",
                ", \"mode\": \"confirm\", \"confirm_hashtag\": \"YES\""
            )
        ),
    );
    assert_eq!(shared.line, 3, "{shared}");
    assert_eq!(
        shared.problem,
        "offers[1].confirm_hashtag: \"YES\" normalizes like the confirm_hashtag \"Yes\" of offers[0] \
         (offer_id \"a\"); a confirmation could not tell them apart"
    );
    let clash = catalog_error(
        "c.json",
        &format!(
            "{{\"offers\": [\n{},\n{}]}}",
            offer("BuyA", "a", ", \"mode\": \"confirm\""),
            offer("ConfirmA", "c", "")
        ),
    );
    assert_eq!(clash.line, 2, "{clash}");
    assert_eq!(
        clash.problem,
        "offers[0].confirm_hashtag: \"ConfirmA\" normalizes like the hashtag \"ConfirmA\" of offers[1] \
         (offer_id \"c\"); a tweet could not tell a confirmation from a purchase"
    );
}
