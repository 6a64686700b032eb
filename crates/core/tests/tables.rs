//! Table files load from TOML and JSON, and every problem names the file,
//! the line, the key and what is wrong.

use hashbuy_core::hashtag::normalize;
use hashbuy_core::tables::{Accounts, Catalog, TableError};

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
