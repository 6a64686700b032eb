//! Where a charge's money goes.
//!
//! Without a merchants table hashbuy is a single merchant (a brand selling
//! its own goods): every charge lands in the platform's own Stripe account
//! and the merchant is only `metadata[merchant_id]`. With one, every charge
//! is a Stripe Connect *destination charge*: created on the platform,
//! its funds transferred to the merchant's connected account
//! (`transfer_data[destination]`), less the platform's fee
//! (`application_fee_amount`), with the merchant as the settlement
//! merchant (`on_behalf_of`) where the table says so. A command for a
//! merchant the table lacks is refused with its reason, never charged to
//! the platform by accident, and so is one whose fee would exceed its
//! amount (Stripe refuses that too, but only after the request is sent).

use hashbuy_proto::v1::Merchant;

use crate::tables::Merchants;

/// Where the funds of one charge go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The platform's own account: no merchants table.
    Platform,
    /// A destination charge to a merchant's connected account.
    Connect(Destination),
}

/// A destination charge's Connect parameters, as Stripe's PaymentIntent
/// takes them. Serializable, as the settler's ledger keeps the one each
/// command was first routed to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    /// The connected account (`acct_…`): `transfer_data[destination]`.
    pub account_id: String,
    /// The platform's fee in minor units (`application_fee_amount`); `None`
    /// for no fee, which is then left out of the request.
    pub application_fee_amount: Option<u64>,
    /// Whether `on_behalf_of` names the connected account too.
    pub on_behalf_of: bool,
}

/// Routes a charge of `amount` minor units for `merchant_id`, bought at
/// `at_ms` (the purchase tweet's time): the platform's account without a
/// merchants table, else the merchant's connected account as the table
/// stood then ([`Merchants::for_purchase`]: a merchant added later takes
/// it too, one removed by then does not); `Err` with the reason a command
/// is refused.
pub fn route(
    merchants: Option<&Merchants>,
    merchant_id: &str,
    amount: u64,
    at_ms: i64,
) -> Result<Route, String> {
    let Some(merchants) = merchants else {
        return Ok(Route::Platform);
    };
    let Some(merchant) = merchants.for_purchase(merchant_id, at_ms) else {
        return Err(format!(
            "merchant {merchant_id:?} has no connected account in the merchants table"
        ));
    };
    let fee = fee(merchant, amount);
    if fee > amount {
        return Err(format!(
            "the platform fee of merchant {merchant_id:?}, {fee}, is more than the amount, \
             {amount} (minor units)"
        ));
    }
    Ok(Route::Connect(Destination {
        account_id: merchant.account_id.clone(),
        application_fee_amount: (fee > 0).then_some(fee),
        on_behalf_of: merchant.on_behalf_of,
    }))
}

/// The platform's fee on `amount`: the fixed fee, or the basis points of
/// the amount rounded down (to the merchant's benefit, never above it).
pub fn fee(merchant: &Merchant, amount: u64) -> u64 {
    match (merchant.fee_amount, merchant.fee_bps) {
        (Some(fixed), _) => fixed,
        (None, Some(bps)) => {
            let fee = u128::from(amount) * u128::from(bps) / 10_000;
            u64::try_from(fee).unwrap_or(u64::MAX)
        }
        (None, None) => 0,
    }
}
