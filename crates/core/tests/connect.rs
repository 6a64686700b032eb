//! A charge goes to the platform without a merchants table, and to the
//! merchant's connected account less the platform's fee with one; a
//! merchant the table lacks is refused, never charged to the platform.

use hashbuy_core::connect::{fee, route, Destination, Route};
use hashbuy_core::tables::Merchants;
use hashbuy_proto::v1::Merchant;
use proptest::prelude::*;

/// A purchase tweet's time.
const T: i64 = 1_780_272_000_000;

fn merchants() -> Merchants {
    Merchants::from_file_text(
        "merchants.toml",
        "[[merchants]]\nmerchant_id = \"acme\"\naccount_id = \"acct_1Acme\"\nfee_bps = 250\n\
         on_behalf_of = true\n\n[[merchants]]\nmerchant_id = \"bolt\"\naccount_id = \"acct_2Bolt\"\n\
         fee_amount = 500\n\n[[merchants]]\nmerchant_id = \"free\"\naccount_id = \"acct_3Free\"\n",
    )
    .expect("loads")
}

#[test]
fn without_a_merchants_table_every_charge_is_the_platform_s() {
    assert_eq!(route(None, "acme", 4200, T), Ok(Route::Platform));
    assert_eq!(route(None, "anyone", 1, T), Ok(Route::Platform));
}

#[test]
fn with_one_a_charge_goes_to_the_merchant_less_the_fee() {
    let merchants = merchants();
    assert_eq!(
        route(Some(&merchants), "acme", 4200, T),
        Ok(Route::Connect(Destination {
            account_id: "acct_1Acme".into(),
            application_fee_amount: Some(105),
            on_behalf_of: true,
        }))
    );
    // 2.5% of 999 is 24.975: rounded down, the merchant's way.
    assert_eq!(
        route(Some(&merchants), "acme", 999, T),
        Ok(Route::Connect(Destination {
            account_id: "acct_1Acme".into(),
            application_fee_amount: Some(24),
            on_behalf_of: true,
        }))
    );
    assert_eq!(
        route(Some(&merchants), "bolt", 4200, T),
        Ok(Route::Connect(Destination {
            account_id: "acct_2Bolt".into(),
            application_fee_amount: Some(500),
            on_behalf_of: false,
        }))
    );
    // No fee: none sent.
    assert_eq!(
        route(Some(&merchants), "free", 4200, T),
        Ok(Route::Connect(Destination {
            account_id: "acct_3Free".into(),
            application_fee_amount: None,
            on_behalf_of: false,
        }))
    );
}

#[test]
fn a_merchant_missing_from_the_table_or_a_fee_over_the_amount_is_refused() {
    let merchants = merchants();
    assert_eq!(
        route(Some(&merchants), "zed", 4200, T),
        Err("merchant \"zed\" has no connected account in the merchants table".into())
    );
    // An empty table is a table: nothing falls through to the platform.
    assert!(route(Some(&Merchants::default()), "acme", 4200, T).is_err());
    assert_eq!(
        route(Some(&merchants), "bolt", 499, T),
        Err(
            "the platform fee of merchant \"bolt\", 500, is more than the amount, 499 (minor units)"
                .into()
        )
    );
    assert!(
        route(Some(&merchants), "bolt", 500, T).is_ok(),
        "a fee of all of it"
    );
}

proptest! {
    #[test]
    fn a_fee_in_basis_points_is_the_amount_s_share_rounded_down(
        amount in 0u64..=u64::MAX,
        bps in 0u32..=10_000,
    ) {
        let merchant = Merchant { fee_bps: Some(bps), ..Merchant::default() };
        let fee = fee(&merchant, amount);
        prop_assert!(fee <= amount);
        let exact = u128::from(amount) * u128::from(bps);
        prop_assert!(u128::from(fee) * 10_000 <= exact);
        prop_assert!(exact < (u128::from(fee) + 1) * 10_000);
    }
}

#[test]
fn a_live_change_of_the_merchants_table_routes_purchases_from_its_time() {
    let mut merchants = merchants();
    let moved = Merchant {
        merchant_id: "acme".into(),
        account_id: "acct_9Moved".into(),
        ..Merchant::default()
    };
    merchants
        .change("acme", T + 10, Some(moved))
        .expect("moved");
    merchants.change("bolt", T + 20, None).expect("removed");
    let account = |merchant: &str, at: i64| match route(Some(&merchants), merchant, 4200, at) {
        Ok(Route::Connect(destination)) => Ok(destination.account_id),
        Ok(Route::Platform) => Ok("platform".into()),
        Err(reason) => Err(reason),
    };
    assert_eq!(account("acme", T + 9), Ok("acct_1Acme".into()));
    assert_eq!(account("acme", T + 10), Ok("acct_9Moved".into()));
    assert_eq!(account("bolt", T + 19), Ok("acct_2Bolt".into()));
    assert!(
        account("bolt", T + 20).is_err(),
        "removed: refused, never the platform"
    );
    assert_eq!(merchants.merchants_at(T + 20).len(), 2);
    let e = merchants
        .change(
            "zed",
            T,
            Some(Merchant {
                merchant_id: "other".into(),
                account_id: "acct_1".into(),
                ..Merchant::default()
            }),
        )
        .expect_err("another id");
    assert_eq!(e, "merchant_id: \"other\" is not its key \"zed\"");
}

#[test]
fn a_merchant_added_after_a_purchase_takes_it_and_one_removed_before_does_not() {
    let mut merchants = merchants();
    let newco = Merchant {
        merchant_id: "newco".into(),
        account_id: "acct_5Newco".into(),
        ..Merchant::default()
    };
    merchants
        .change("newco", T + 100, Some(newco))
        .expect("added later");
    merchants.change("acme", T + 5, None).expect("removed");
    let routed = |merchant: &str, at: i64| match route(Some(&merchants), merchant, 4200, at) {
        Ok(Route::Connect(destination)) => Some(destination.account_id),
        _ => None,
    };
    assert_eq!(
        routed("newco", T),
        Some("acct_5Newco".into()),
        "onboarded after"
    );
    assert_eq!(routed("acme", T + 4), Some("acct_1Acme".into()));
    assert_eq!(routed("acme", T + 5), None, "removed by then");
    assert_eq!(routed("zed", T), None, "never on the table");
}
