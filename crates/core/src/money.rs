//! Amounts in words for shoppers: `4200 usd` is `$42.00`, `500 jpy` is
//! `¥500`.
//!
//! hashbuy's amounts are the provider's: integers in the currency's minor
//! unit as Stripe counts it. That count is Stripe's, not ISO 4217's, so
//! the lists are Stripe's (its "Supported currencies" page) rather than an
//! ISO currency crate's: Stripe counts ISK in hundredths where ISO 4217
//! gives it no minor unit, and an amount shown to a shopper must be the
//! amount charged.

/// Stripe's zero-decimal currencies: an amount is whole units (`500 jpy`
/// is ¥500).
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Stripe's three-decimal currencies: an amount is thousandths.
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// Currencies shown with a symbol before the amount; any other shows its
/// code after it (`42.00 CHF`), which no shopper misreads.
const SYMBOLS: [(&str, &str); 5] = [
    ("usd", "$"),
    ("eur", "€"),
    ("gbp", "£"),
    ("jpy", "¥"),
    ("inr", "₹"),
];

/// How many decimal digits an amount of `currency` (lowercase ISO 4217)
/// has: 0, 2 or 3.
pub fn minor_digits(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

/// `amount` minor units of `currency` as a shopper reads them: `$42.00`,
/// `¥500`, `1.500 KWD`, `12.00 CHF`. Digits are not grouped.
pub fn format_amount(amount: u64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let number = if digits == 0 {
        amount.to_string()
    } else {
        let scale = 10u64.pow(digits);
        format!(
            "{}.{:0width$}",
            amount / scale,
            amount % scale,
            width = digits as usize
        )
    };
    match SYMBOLS.iter().find(|(code, _)| *code == currency) {
        Some((_, symbol)) => format!("{symbol}{number}"),
        None => format!("{number} {}", currency.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_in_the_currency_s_own_units() {
        assert_eq!(format_amount(4200, "usd"), "$42.00");
        assert_eq!(format_amount(5, "eur"), "€0.05");
        assert_eq!(format_amount(500, "jpy"), "¥500");
        assert_eq!(format_amount(1500, "kwd"), "1.500 KWD");
        assert_eq!(format_amount(1200, "chf"), "12.00 CHF");
        assert_eq!(format_amount(3000, "krw"), "3000 KRW");
        assert_eq!(
            format_amount(10_000, "isk"),
            "100.00 ISK",
            "Stripe counts ISK in hundredths"
        );
    }
}
