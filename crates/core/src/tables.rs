//! The tables tweets are joined against: the catalog (hashtag → offer) and
//! the account links (user → customer + payment method); and the one the
//! settler charges by, the merchants (merchant → Stripe connected account
//! and the platform's fee).
//!
//! Both load from table files, TOML or JSON, in the format of design.md
//! ("Table files"). Loading is pure: the caller reads the file and passes its
//! name (for messages) and text. Every error names the file, the line of the
//! entry, the key and the problem, because a bad catalog found at start-up is
//! cheap and one found by a shopper's tweet is not.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use hashbuy_proto::v1::offer::Mode;
use hashbuy_proto::v1::{AccountLink, Merchant, Offer};
use serde::{Deserialize, Serialize};

use crate::hashtag::{self, normalize};
use crate::history::{History, Version};

/// How a table file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// JSON: `{"offers": [...]}` or `{"accounts": [...]}`.
    Json,
    /// TOML: `[[offers]]` or `[[accounts]]` tables.
    Toml,
}

impl TableFormat {
    /// The format a file name implies: `.toml` is TOML, anything else JSON.
    pub fn from_file_name(name: &str) -> Self {
        if name.to_ascii_lowercase().ends_with(".toml") {
            TableFormat::Toml
        } else {
            TableFormat::Json
        }
    }
}

/// A table file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct TableError {
    /// The file's name as the user gave it.
    pub file: String,
    /// 1-based line of the problem (of the entry, for a problem with one).
    pub line: usize,
    /// What is wrong, naming the entry and key.
    pub problem: String,
}

/// One catalog entry as written in a table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferRow {
    /// The purchase hashtag, without `#` (a leading `#` is accepted).
    pub hashtag: String,
    /// The merchant's stable id of the offer.
    pub offer_id: String,
    /// The merchant selling it.
    pub merchant_id: String,
    /// Price in the currency's minor unit, at least 1.
    pub amount: u64,
    /// Lowercase ISO 4217 code, as Stripe writes it (`usd`).
    pub currency: String,
    /// Active from this RFC 3339 time on (inclusive); absent: always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Active until this RFC 3339 time (exclusive); absent or null: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// How many times one user may buy it; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<u32>,
    /// What the shopper buys, in words, for the replies; default: the
    /// offer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// How a purchase tweet buys; default [`ModeRow::Direct`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeRow>,
    /// Confirm mode only: the hashtag that confirms, without `#`; default
    /// [`default_confirm_hashtag`] of the purchase hashtag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_hashtag: Option<String>,
    /// Confirm mode only: seconds after the purchase tweet within which its
    /// confirmation buys; default [`DEFAULT_CONFIRM_WINDOW_S`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_window_s: Option<u32>,
    /// How many units may ever be sold, at least 1; absent: unlimited. A
    /// limited offer's commands pass through the reservation step
    /// (`hashbuy stock`, see [`crate::stock`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<u64>,
}

/// How a purchase tweet buys, as a table file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRow {
    /// `"direct"`: the purchase tweet buys at once.
    Direct,
    /// `"confirm"`: the purchase tweet waits for the same user's
    /// confirmation tweet within the window.
    Confirm,
}

/// One account link as written in a table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRow {
    /// The shopper's Twitter user id, a decimal string.
    pub user_id: String,
    /// The provider's customer id (`cus_…`).
    pub customer_id: String,
    /// The provider's payment method id (`pm_…`).
    pub payment_method_id: String,
    /// Most the shopper spends per currency over a rolling 24 h, in minor
    /// units; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_limit: Option<u64>,
}

/// A catalog table file: `{"offers": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// The offers, in file order.
    pub offers: Vec<OfferRow>,
}

/// An accounts table file: `{"accounts": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsFile {
    /// The account links, in file order.
    pub accounts: Vec<AccountRow>,
}

/// One merchant as written in a merchants table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantRow {
    /// The merchant's id, as offers name it.
    pub merchant_id: String,
    /// Its Stripe connected account (`acct_…`), where its charges go.
    pub account_id: String,
    /// The platform's fee in basis points of the amount (0 to 10000),
    /// rounded down to the minor unit; at most one of the two fees, and no
    /// fee when both are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_bps: Option<u32>,
    /// The platform's fee in minor units of the charge's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_amount: Option<u64>,
    /// The merchant is the settlement merchant (Stripe's `on_behalf_of`):
    /// its name on the statement, its country's rules. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<bool>,
}

/// A merchants table file: `{"merchants": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantsFile {
    /// The merchants, in file order.
    pub merchants: Vec<MerchantRow>,
}

/// The default of `max_per_user` when an offer leaves it out.
pub const DEFAULT_MAX_PER_USER: u32 = 1;

/// The default of `confirm_window_s`: 15 minutes, as the first
/// buy-by-tweet launches gave.
pub const DEFAULT_CONFIRM_WINDOW_S: u32 = 900;

/// The longest `confirm_window_s`: a week. A pending purchase is state the
/// matcher keeps and restores, so it must end.
pub const MAX_CONFIRM_WINDOW_S: u32 = 7 * 24 * 3600;

/// The confirmation hashtag an offer gets when it names none:
/// `BuyRedSneakers42` → `ConfirmRedSneakers42` (the prefix `buy` in any
/// case), any other hashtag `h` → `Confirmh`.
pub fn default_confirm_hashtag(hashtag: &str) -> String {
    let rest = match hashtag.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("buy") && hashtag.len() > 3 => &hashtag[3..],
        _ => hashtag,
    };
    format!("Confirm{rest}")
}

/// Strips one leading hashtag sign, as table files may write it.
fn strip_sign(hashtag: &str) -> &str {
    hashtag.strip_prefix(['#', '＃']).unwrap_or(hashtag)
}

impl OfferRow {
    /// The offer as hashbuy's wire type, checked. Errors name the key.
    pub fn to_offer(&self) -> Result<Offer, String> {
        let hashtag = strip_sign(&self.hashtag);
        let mode = match self.mode {
            None | Some(ModeRow::Direct) => Mode::Direct,
            Some(ModeRow::Confirm) => Mode::Confirm,
        };
        let offer = Offer {
            offer_id: self.offer_id.clone(),
            merchant_id: self.merchant_id.clone(),
            hashtag: hashtag.to_owned(),
            amount: self.amount,
            currency: self.currency.clone(),
            starts_at_ms: self.starts_at.map(|t| t.timestamp_millis()),
            ends_at_ms: self.ends_at.map(|t| t.timestamp_millis()),
            max_per_user: self.max_per_user.unwrap_or(DEFAULT_MAX_PER_USER),
            mode: mode as i32,
            confirm_hashtag: self
                .confirm_hashtag
                .as_deref()
                .map_or_else(String::new, |h| strip_sign(h).to_owned()),
            // 0 is not a default here: written, it is refused below.
            confirm_window_s: match self.confirm_window_s {
                Some(0) => return Err("confirm_window_s: must be at least 1".into()),
                window => window.unwrap_or(0),
            },
            title: self.title.clone().unwrap_or_default(),
            // 0 means unlimited on the wire; written, it is refused.
            stock: match self.stock {
                Some(0) => {
                    return Err("stock: must be at least 1 (leave it out for no limit)".into())
                }
                stock => stock.unwrap_or(0),
            },
        };
        let offer = with_defaults(offer);
        check_offer(&offer)?;
        Ok(offer)
    }
}

impl AccountRow {
    /// The link as hashbuy's wire type, checked. Errors name the key.
    pub fn to_link(&self) -> Result<AccountLink, String> {
        let link = AccountLink {
            user_id: self.user_id.clone(),
            customer_id: self.customer_id.clone(),
            payment_method_id: self.payment_method_id.clone(),
            spend_limit: self.spend_limit,
        };
        check_link(&link)?;
        Ok(link)
    }
}

impl MerchantRow {
    /// The merchant as hashbuy's wire type, checked. Errors name the key.
    pub fn to_merchant(&self) -> Result<Merchant, String> {
        let merchant = Merchant {
            merchant_id: self.merchant_id.clone(),
            account_id: self.account_id.clone(),
            fee_bps: self.fee_bps,
            fee_amount: self.fee_amount,
            on_behalf_of: self.on_behalf_of.unwrap_or(false),
        };
        check_merchant(&merchant)?;
        Ok(merchant)
    }
}

/// Checks one merchant on its own; the message names the key at fault.
pub fn check_merchant(merchant: &Merchant) -> Result<(), String> {
    if merchant.merchant_id.is_empty() {
        return Err("merchant_id: must not be empty".into());
    }
    let account = &merchant.account_id;
    let well_formed = account
        .strip_prefix("acct_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !well_formed {
        return Err(format!(
            "account_id: {account:?} is not a Stripe connected account id (acct_ and letters \
             or digits)"
        ));
    }
    if let Some(bps) = merchant.fee_bps {
        if bps > 10_000 {
            return Err(format!("fee_bps: {bps} is over 10000 (100% of the amount)"));
        }
    }
    if merchant.fee_bps.is_some() && merchant.fee_amount.is_some() {
        return Err("fee_amount: give fee_bps or fee_amount, not both".into());
    }
    Ok(())
}

/// Checks one offer on its own; the message names the key at fault.
pub fn check_offer(offer: &Offer) -> Result<(), String> {
    if offer.offer_id.is_empty() {
        return Err("offer_id: must not be empty".into());
    }
    if offer.merchant_id.is_empty() {
        return Err("merchant_id: must not be empty".into());
    }
    if !hashtag::is_valid_hashtag(&offer.hashtag) {
        return Err(format!(
            "hashtag: {:?} is not a hashtag a tweet can carry (letters, marks, digits and `_`, not all digits)",
            offer.hashtag
        ));
    }
    if offer.amount == 0 {
        return Err("amount: must be at least 1 (minor units, e.g. cents)".into());
    }
    check_currency(&offer.currency)?;
    if let (Some(start), Some(end)) = (offer.starts_at_ms, offer.ends_at_ms) {
        if end <= start {
            return Err("ends_at: must be after starts_at".into());
        }
    }
    if offer.max_per_user == 0 {
        return Err("max_per_user: must be at least 1".into());
    }
    match Mode::try_from(offer.mode) {
        Ok(Mode::Direct) => {
            if !offer.confirm_hashtag.is_empty() {
                return Err(
                    "confirm_hashtag: only a confirm-mode offer has one (\"mode\": \"confirm\")"
                        .into(),
                );
            }
            if offer.confirm_window_s != 0 {
                return Err(
                    "confirm_window_s: only a confirm-mode offer has one (\"mode\": \"confirm\")"
                        .into(),
                );
            }
        }
        Ok(Mode::Confirm) => {
            if !hashtag::is_valid_hashtag(&offer.confirm_hashtag) {
                return Err(format!(
                    "confirm_hashtag: {:?} is not a hashtag a tweet can carry (letters, marks, digits and `_`, not all digits)",
                    offer.confirm_hashtag
                ));
            }
            if normalize(&offer.confirm_hashtag) == normalize(&offer.hashtag) {
                return Err(format!(
                    "confirm_hashtag: {:?} normalizes like the offer's own hashtag {:?}; a purchase would confirm itself",
                    offer.confirm_hashtag, offer.hashtag
                ));
            }
            if !(1..=MAX_CONFIRM_WINDOW_S).contains(&offer.confirm_window_s) {
                return Err(format!(
                    "confirm_window_s: {} is not between 1 and {MAX_CONFIRM_WINDOW_S} (a week)",
                    offer.confirm_window_s
                ));
            }
        }
        Err(_) => return Err(format!("mode: {} is not a purchase mode", offer.mode)),
    }
    Ok(())
}

/// The offer with its confirm-mode defaults filled in: a confirm-mode
/// offer without a confirmation hashtag gets [`default_confirm_hashtag`],
/// one without a window [`DEFAULT_CONFIRM_WINDOW_S`]. Offers of other modes
/// are returned as they are.
pub fn with_defaults(mut offer: Offer) -> Offer {
    if offer.mode == Mode::Confirm as i32 {
        if offer.confirm_hashtag.is_empty() {
            offer.confirm_hashtag = default_confirm_hashtag(&offer.hashtag);
        }
        if offer.confirm_window_s == 0 {
            offer.confirm_window_s = DEFAULT_CONFIRM_WINDOW_S;
        }
    }
    offer
}

/// Checks one account link on its own; the message names the key at fault.
pub fn check_link(link: &AccountLink) -> Result<(), String> {
    if link.user_id.is_empty() || !link.user_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "user_id: {:?} is not a decimal user id",
            link.user_id
        ));
    }
    if link.customer_id.is_empty() {
        return Err("customer_id: must not be empty".into());
    }
    if link.payment_method_id.is_empty() {
        return Err("payment_method_id: must not be empty".into());
    }
    if link.spend_limit == Some(0) {
        return Err("spend_limit: must be at least 1, or left out for no limit".into());
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "currency: {currency:?} is not a lowercase ISO 4217 code (e.g. \"usd\")"
        ))
    }
}

/// Offers by normalized hashtag, and confirm-mode offers by normalized
/// confirmation hashtag: the files' offers, and the live catalog's changes
/// over them by the time they take effect ([`crate::history`]).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    offers: Vec<Offer>,
    by_hashtag: HashMap<String, usize>,
    by_confirm_hashtag: HashMap<String, usize>,
    by_offer_id: HashMap<String, usize>,
    /// Live changes, by normalized hashtag.
    changes: History<Offer>,
    /// Live confirmation hashtags (normalized) → the normalized hashtag of
    /// the offer they confirm.
    confirm_changes: History<String>,
    /// Whether a live change ever set a confirm-mode offer (asked of every
    /// tweet, so kept rather than searched for).
    confirm_changed: bool,
    /// Live offer ids → the normalized hashtag of the offer with that id.
    id_changes: History<String>,
}

impl Catalog {
    /// Builds a catalog, filling in confirm-mode defaults
    /// ([`with_defaults`]) and refusing an invalid offer, a repeated offer
    /// id, two hashtags that normalize alike, and a confirmation hashtag
    /// that normalizes like another offer's confirmation or purchase
    /// hashtag (a tweet could not tell which it meant). The error names
    /// both offers, by index.
    pub fn new(offers: Vec<Offer>) -> Result<Self, String> {
        let offers: Vec<Offer> = offers.into_iter().map(with_defaults).collect();
        let mut by_hashtag = HashMap::with_capacity(offers.len());
        let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(offers.len());
        for (i, offer) in offers.iter().enumerate() {
            check_offer(offer).map_err(|e| format!("offers[{i}].{e}"))?;
            if let Some(first) = by_id.insert(&offer.offer_id, i) {
                return Err(format!(
                    "offers[{i}].offer_id: {:?} is already the id of offers[{first}]",
                    offer.offer_id
                ));
            }
            if let Some(first) = by_hashtag.insert(normalize(&offer.hashtag).into_owned(), i) {
                return Err(format!(
                    "offers[{i}].hashtag: {:?} normalizes like {:?} of offers[{first}] (offer_id {:?}); a tweet could not tell them apart",
                    offer.hashtag, offers[first].hashtag, offers[first].offer_id
                ));
            }
        }
        let mut by_confirm_hashtag = HashMap::new();
        for (i, offer) in offers.iter().enumerate() {
            if offer.mode != Mode::Confirm as i32 {
                continue;
            }
            let normalized = normalize(&offer.confirm_hashtag).into_owned();
            if let Some(&other) = by_hashtag.get(&normalized) {
                return Err(format!(
                    "offers[{i}].confirm_hashtag: {:?} normalizes like the hashtag {:?} of offers[{other}] (offer_id {:?}); a tweet could not tell a confirmation from a purchase",
                    offer.confirm_hashtag, offers[other].hashtag, offers[other].offer_id
                ));
            }
            if let Some(first) = by_confirm_hashtag.insert(normalized, i) {
                return Err(format!(
                    "offers[{i}].confirm_hashtag: {:?} normalizes like the confirm_hashtag {:?} of offers[{first}] (offer_id {:?}); a confirmation could not tell them apart",
                    offer.confirm_hashtag, offers[first].confirm_hashtag, offers[first].offer_id
                ));
            }
        }
        let by_offer_id = by_id
            .into_iter()
            .map(|(id, i)| (id.to_owned(), i))
            .collect();
        Ok(Catalog {
            offers,
            by_hashtag,
            by_confirm_hashtag,
            by_offer_id,
            changes: History::default(),
            confirm_changes: History::default(),
            confirm_changed: false,
            id_changes: History::default(),
        })
    }

    /// Loads a catalog table file (`name` is for messages only).
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, TableError> {
        let rows: Vec<Located<OfferRow>> = parse_rows(name, text, "offers")?;
        let offers = convert(name, &rows, "offers", OfferRow::to_offer)?;
        Catalog::new(offers).map_err(|problem| entry_error(name, &rows, &problem))
    }

    /// The offer a hashtag buys: `normalized` must come from
    /// [`normalize`](crate::hashtag::normalize).
    pub fn get(&self, normalized: &str) -> Option<&Offer> {
        self.by_hashtag.get(normalized).map(|&i| &self.offers[i])
    }

    /// The confirm-mode offer a confirmation hashtag confirms:
    /// `normalized` must come from [`normalize`](crate::hashtag::normalize).
    pub fn get_by_confirm_hashtag(&self, normalized: &str) -> Option<&Offer> {
        self.by_confirm_hashtag
            .get(normalized)
            .map(|&i| &self.offers[i])
    }

    /// The offer a hashtag buys at `at_ms` (a tweet's time): the live
    /// catalog's latest change of it at or before then, else the files'
    /// offer. `normalized` must come from
    /// [`normalize`](crate::hashtag::normalize).
    pub fn get_at(&self, normalized: &str, at_ms: i64) -> Option<&Offer> {
        self.changes
            .at_over(normalized, at_ms, || self.get(normalized))
    }

    /// The confirm-mode offer a confirmation hashtag confirms at `at_ms`,
    /// as [`Catalog::get_at`] reads the catalog.
    pub fn get_by_confirm_hashtag_at(&self, normalized: &str, at_ms: i64) -> Option<&Offer> {
        if self.changes.is_empty() {
            return self.get_by_confirm_hashtag(normalized);
        }
        let offer = match self.confirm_changes.at(normalized, at_ms) {
            Version::Set(key) => self.get_at(key, at_ms),
            Version::Removed => None,
            Version::Base => {
                let base = self.get_by_confirm_hashtag(normalized)?;
                self.get_at(&normalize(&base.hashtag), at_ms)
            }
        };
        // The offer may have changed since: it confirms only if it still
        // names this confirmation hashtag.
        offer.filter(|o| {
            o.mode == Mode::Confirm as i32 && normalize(&o.confirm_hashtag) == normalized
        })
    }

    /// Applies a change of the live catalog: `offer` for the normalized
    /// hashtag `key` from `at_ms` on, or the key's removal (`None`). The
    /// change is refused, with the key at fault, when the offer is invalid,
    /// its hashtag does not normalize to `key`, its id is another offer's,
    /// or its purchase or confirmation hashtag normalizes like another
    /// offer's, as the catalog reads at `at_ms` (a tweet could not tell
    /// them apart).
    pub fn change(&mut self, key: &str, at_ms: i64, offer: Option<Offer>) -> Result<(), String> {
        let confirm_of = |offer: &Offer| {
            (offer.mode == Mode::Confirm as i32)
                .then(|| normalize(&offer.confirm_hashtag).into_owned())
        };
        let previous = self.get_at(key, at_ms).and_then(confirm_of);
        let previous_id = self.get_at(key, at_ms).map(|o| o.offer_id.clone());
        let Some(offer) = offer else {
            self.changes.apply(key, at_ms, None);
            if let Some(previous) = previous {
                self.confirm_changes.apply(&previous, at_ms, None);
            }
            if let Some(previous_id) = previous_id {
                self.id_changes.apply(&previous_id, at_ms, None);
            }
            return Ok(());
        };
        let offer = with_defaults(offer);
        check_offer(&offer)?;
        let normalized = normalize(&offer.hashtag);
        if normalized != key {
            return Err(format!(
                "hashtag: {:?} normalizes to {normalized:?}, not to its key {key:?}",
                offer.hashtag
            ));
        }
        if let Some(other) = self.get_by_confirm_hashtag_at(key, at_ms) {
            return Err(format!(
                "hashtag: {:?} normalizes like the confirm_hashtag {:?} of offer {:?}; a tweet \
                 could not tell a purchase from a confirmation",
                offer.hashtag, other.confirm_hashtag, other.offer_id
            ));
        }
        if let Some(other) = self.get_by_id_at(&offer.offer_id, at_ms) {
            if normalize(&other.hashtag) != key {
                return Err(format!(
                    "offer_id: {:?} is already the id of the offer of hashtag {:?}",
                    offer.offer_id, other.hashtag
                ));
            }
        }
        let confirm = confirm_of(&offer);
        if let Some(confirm) = &confirm {
            if let Some(other) = self.get_at(confirm, at_ms) {
                return Err(format!(
                    "confirm_hashtag: {:?} normalizes like the hashtag {:?} of offer {:?}; a tweet \
                     could not tell a confirmation from a purchase",
                    offer.confirm_hashtag, other.hashtag, other.offer_id
                ));
            }
            if let Some(other) = self.get_by_confirm_hashtag_at(confirm, at_ms) {
                if normalize(&other.hashtag) != key {
                    return Err(format!(
                        "confirm_hashtag: {:?} normalizes like the confirm_hashtag {:?} of offer \
                         {:?}; a confirmation could not tell them apart",
                        offer.confirm_hashtag, other.confirm_hashtag, other.offer_id
                    ));
                }
            }
        }
        if let Some(previous_id) = previous_id.filter(|p| *p != offer.offer_id) {
            self.id_changes.apply(&previous_id, at_ms, None);
        }
        self.id_changes
            .apply(&offer.offer_id, at_ms, Some(key.to_owned()));
        self.changes.apply(key, at_ms, Some(offer));
        if let Some(previous) = previous.filter(|p| Some(p) != confirm.as_ref()) {
            self.confirm_changes.apply(&previous, at_ms, None);
        }
        if let Some(confirm) = confirm {
            self.confirm_changes
                .apply(&confirm, at_ms, Some(key.to_owned()));
            self.confirm_changed = true;
        }
        Ok(())
    }

    /// The offer with id `offer_id` at `at_ms`, as [`Catalog::get_at`]
    /// reads the catalog.
    fn get_by_id_at(&self, offer_id: &str, at_ms: i64) -> Option<&Offer> {
        let offer = match self.id_changes.at(offer_id, at_ms) {
            Version::Set(key) => self.get_at(key, at_ms),
            Version::Removed => None,
            Version::Base => {
                let base = &self.offers[*self.by_offer_id.get(offer_id)?];
                self.get_at(&normalize(&base.hashtag), at_ms)
            }
        };
        // The offer may have changed since: it counts only if it still has
        // this id.
        offer.filter(|o| o.offer_id == offer_id)
    }

    /// Whether this catalog shows the offer with id `offer_id` ended for
    /// every tweet at or after `from_ms` (changes still to come aside):
    /// under every hashtag that ever held it, the version in effect at
    /// `from_ms`, and at each later change of that hashtag, removes the
    /// hashtag or is the offer itself, ended by then. Anything else tells
    /// too little, and is not an end: no hashtag ever held the offer; the
    /// hashtag had no version yet (a catalog whose older changes were
    /// compacted away, or that lacks a matcher's files); or it held
    /// another offer. A change this catalog took that another, with other
    /// files, refused is read as taken: catalogs agree only on the same
    /// files. The settler forgets what `max_per_user` keeps of an offer
    /// only when this holds at its floor.
    pub fn ended_from(&self, offer_id: &str, from_ms: i64) -> bool {
        // Every hashtag that held the offer, in the files or by a change,
        // once each: a version read by hashtag, not through the id's
        // latest hashtag, since changes put out of time order can leave
        // the id under two at once.
        let mut keys: Vec<String> = self
            .by_offer_id
            .get(offer_id)
            .map(|&i| normalize(&self.offers[i].hashtag).into_owned())
            .into_iter()
            .chain(self.id_changes.values(offer_id).cloned())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // A hashtag's version changes only at its own changes.
        let ended_at = |key: &str, t: i64| match self.changes.at(key, t) {
            Version::Removed => true,
            Version::Set(offer) => {
                offer.offer_id == offer_id && offer.ends_at_ms.is_some_and(|end| end <= t)
            }
            Version::Base => self.get(key).is_some_and(|offer| {
                offer.offer_id == offer_id && offer.ends_at_ms.is_some_and(|end| end <= t)
            }),
        };
        !keys.is_empty()
            && keys.iter().all(|key| {
                ended_at(key, from_ms)
                    && self
                        .changes
                        .times_from(key, from_ms)
                        .all(|t| ended_at(key, t))
            })
    }

    /// The time of the latest live change of `key`, if it has one.
    pub fn latest_change(&self, key: &str) -> Option<i64> {
        self.changes.latest_time(key)
    }

    /// The offers on the catalog at `at_ms`, files and changes together,
    /// by normalized hashtag.
    pub fn offers_at(&self, at_ms: i64) -> BTreeMap<String, &Offer> {
        let keys = self.by_hashtag.keys().map(String::as_str);
        self.changes.all_at(keys, |key| self.get_at(key, at_ms))
    }

    /// Whether any offer, in the files or among the live changes, is in
    /// confirm mode (and the matcher so keeps pending purchases).
    pub fn has_confirm_offers(&self) -> bool {
        !self.by_confirm_hashtag.is_empty() || self.confirm_changed
    }

    /// All offers, in load order.
    pub fn offers(&self) -> &[Offer] {
        &self.offers
    }

    /// How many offers there are.
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }
}

/// Account links by user id: the files' links, and the live account
/// links' changes over them by the time they take effect.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    by_user: HashMap<String, AccountLink>,
    changes: History<AccountLink>,
}

impl Accounts {
    /// Builds the table, refusing an invalid link and a repeated user id.
    pub fn new(links: Vec<AccountLink>) -> Result<Self, String> {
        let mut by_user = HashMap::with_capacity(links.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(links.len());
        for (i, link) in links.into_iter().enumerate() {
            check_link(&link).map_err(|e| format!("accounts[{i}].{e}"))?;
            if let Some(first) = index.insert(link.user_id.clone(), i) {
                return Err(format!(
                    "accounts[{i}].user_id: {:?} is already linked by accounts[{first}]",
                    link.user_id
                ));
            }
            by_user.insert(link.user_id.clone(), link);
        }
        Ok(Accounts {
            by_user,
            changes: History::default(),
        })
    }

    /// Loads an accounts table file (`name` is for messages only).
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, TableError> {
        let rows: Vec<Located<AccountRow>> = parse_rows(name, text, "accounts")?;
        let links = convert(name, &rows, "accounts", AccountRow::to_link)?;
        Accounts::new(links).map_err(|problem| entry_error(name, &rows, &problem))
    }

    /// The link of a user.
    pub fn get(&self, user_id: &str) -> Option<&AccountLink> {
        self.by_user.get(user_id)
    }

    /// The link of a user at `at_ms` (a tweet's time): the live links'
    /// latest change at or before then, else the files' link.
    pub fn get_at(&self, user_id: &str, at_ms: i64) -> Option<&AccountLink> {
        self.changes.at_over(user_id, at_ms, || self.get(user_id))
    }

    /// Applies a change of the live account links: `link` for `user_id`
    /// from `at_ms` on, or an unlink (`None`); refused, naming the key, when
    /// the link is invalid or is another user's.
    pub fn change(
        &mut self,
        user_id: &str,
        at_ms: i64,
        link: Option<AccountLink>,
    ) -> Result<(), String> {
        if let Some(link) = &link {
            check_keyed(link, check_link, "user_id", &link.user_id, user_id)?;
        }
        self.changes.apply(user_id, at_ms, link);
        Ok(())
    }

    /// The time of the latest live change of `user_id`, if it has one.
    pub fn latest_change(&self, user_id: &str) -> Option<i64> {
        self.changes.latest_time(user_id)
    }

    /// The links at `at_ms`, files and changes together, by user id.
    pub fn links_at(&self, at_ms: i64) -> BTreeMap<String, &AccountLink> {
        let keys = self.by_user.keys().map(String::as_str);
        self.changes.all_at(keys, |key| self.get_at(key, at_ms))
    }

    /// How many links there are.
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

/// Merchants by merchant id: the file's, and the live merchants table's
/// changes over them by the time they take effect.
#[derive(Debug, Clone, Default)]
pub struct Merchants {
    by_id: HashMap<String, Merchant>,
    changes: History<Merchant>,
}

impl Merchants {
    /// Builds the table, refusing an invalid merchant and a repeated
    /// merchant id.
    pub fn new(merchants: Vec<Merchant>) -> Result<Self, String> {
        let mut by_id = HashMap::with_capacity(merchants.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(merchants.len());
        for (i, merchant) in merchants.into_iter().enumerate() {
            check_merchant(&merchant).map_err(|e| format!("merchants[{i}].{e}"))?;
            if let Some(first) = index.insert(merchant.merchant_id.clone(), i) {
                return Err(format!(
                    "merchants[{i}].merchant_id: {:?} is already given by merchants[{first}]",
                    merchant.merchant_id
                ));
            }
            by_id.insert(merchant.merchant_id.clone(), merchant);
        }
        Ok(Merchants {
            by_id,
            changes: History::default(),
        })
    }

    /// Loads a merchants table file (`name` is for messages only).
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, TableError> {
        let rows: Vec<Located<MerchantRow>> = parse_rows(name, text, "merchants")?;
        let merchants = convert(name, &rows, "merchants", MerchantRow::to_merchant)?;
        Merchants::new(merchants).map_err(|problem| entry_error(name, &rows, &problem))
    }

    /// The merchant with this id.
    pub fn get(&self, merchant_id: &str) -> Option<&Merchant> {
        self.by_id.get(merchant_id)
    }

    /// The merchant with this id at `at_ms` (a purchase tweet's time): the
    /// live table's latest change at or before then, else the file's.
    pub fn get_at(&self, merchant_id: &str, at_ms: i64) -> Option<&Merchant> {
        self.changes
            .at_over(merchant_id, at_ms, || self.get(merchant_id))
    }

    /// Applies a change of the live merchants table: `merchant` for
    /// `merchant_id` from `at_ms` on, or its removal (`None`); refused,
    /// naming the key, when the merchant is invalid or is another id's.
    pub fn change(
        &mut self,
        merchant_id: &str,
        at_ms: i64,
        merchant: Option<Merchant>,
    ) -> Result<(), String> {
        if let Some(merchant) = &merchant {
            check_keyed(
                merchant,
                check_merchant,
                "merchant_id",
                &merchant.merchant_id,
                merchant_id,
            )?;
        }
        self.changes.apply(merchant_id, at_ms, merchant);
        Ok(())
    }

    /// The merchant a purchase tweeted at `at_ms` is charged for: the
    /// table at that time, and for a merchant not yet in it then (added
    /// after the tweet, never removed before it) the merchant as the table
    /// has it last, so a merchant put on the table after its first
    /// purchases were tweeted (onboarding, a backlog) still takes them. A
    /// merchant removed at or before the tweet takes none.
    pub fn for_purchase(&self, merchant_id: &str, at_ms: i64) -> Option<&Merchant> {
        match self.changes.at(merchant_id, at_ms) {
            Version::Set(merchant) => Some(merchant),
            Version::Removed => None,
            Version::Base => {
                self.get(merchant_id)
                    .or(match self.changes.at(merchant_id, i64::MAX) {
                        Version::Set(merchant) => Some(merchant),
                        Version::Base | Version::Removed => None,
                    })
            }
        }
    }

    /// The time of the latest change of `merchant_id`, if it has one.
    pub fn latest_change(&self, merchant_id: &str) -> Option<i64> {
        self.changes.latest_time(merchant_id)
    }

    /// Whether there is a merchant at some time: in the file, or set by a
    /// change.
    pub fn has_any(&self) -> bool {
        !self.by_id.is_empty() || self.changes.sets_any()
    }

    /// The merchants at `at_ms`, file and changes together, by id.
    pub fn merchants_at(&self, at_ms: i64) -> BTreeMap<String, &Merchant> {
        let keys = self.by_id.keys().map(String::as_str);
        self.changes.all_at(keys, |key| self.get_at(key, at_ms))
    }

    /// How many merchants there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Checks a live table's row, and that its id `field` (`own`) is the
/// record's `key`.
fn check_keyed<V>(
    row: &V,
    check: impl Fn(&V) -> Result<(), String>,
    field: &str,
    own: &str,
    key: &str,
) -> Result<(), String> {
    check(row)?;
    if own != key {
        return Err(format!("{field}: {own:?} is not its key {key:?}"));
    }
    Ok(())
}

/// A row with the line it starts on.
struct Located<T> {
    line: usize,
    row: T,
}

fn parse_rows<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
    key: &str,
) -> Result<Vec<Located<T>>, TableError> {
    match TableFormat::from_file_name(name) {
        TableFormat::Json => parse_json_rows(name, text, key),
        TableFormat::Toml => parse_toml_rows(name, text, key),
    }
}

fn parse_json_rows<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
    key: &str,
) -> Result<Vec<Located<T>>, TableError> {
    use serde_json::value::RawValue;
    let json_error = |e: serde_json::Error, base_line: usize, context: &str| {
        // The line goes in front, as for every table error; serde_json's
        // own "at line L column C" would repeat it.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        let column = if base_line == 1 && e.line() == 1 {
            format!(" (column {})", e.column())
        } else {
            String::new()
        };
        TableError {
            file: name.to_owned(),
            line: base_line + e.line().saturating_sub(1),
            problem: format!("{context}{message}{column}"),
        }
    };
    let top: HashMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| json_error(e, 1, ""))?;
    let unknown: Vec<&str> = top
        .keys()
        .map(String::as_str)
        .filter(|k| *k != key)
        .collect();
    if !unknown.is_empty() {
        return Err(TableError {
            file: name.to_owned(),
            line: 1,
            problem: format!(
                "unknown key {:?}; a {key} table has only {key:?}",
                unknown[0]
            ),
        });
    }
    let Some(list) = top.get(key) else {
        return Err(missing_key(name, key));
    };
    let list_line = line_of(text, list.get());
    let items: Vec<&RawValue> = serde_json::from_str(list.get())
        .map_err(|e| json_error(e, list_line, &format!("{key}: ")))?;
    // Items come in file order, so lines are counted onwards from the last
    // item rather than from the top each time (catalogs run to 10^5 rows).
    let mut lines = LineCounter {
        text,
        offset: 0,
        line: 1,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let line = lines.line_of(item.get());
            let row = serde_json::from_str(item.get())
                .map_err(|e| json_error(e, line, &format!("{key}[{i}]: ")))?;
            Ok(Located { line, row })
        })
        .collect()
}

fn parse_toml_rows<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
    key: &str,
) -> Result<Vec<Located<T>>, TableError> {
    let mut top: toml::Table = text.parse().map_err(|e: toml::de::Error| TableError {
        file: name.to_owned(),
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        problem: e.message().to_owned(),
    })?;
    if let Some(other) = top.keys().find(|k| *k != key) {
        return Err(TableError {
            file: name.to_owned(),
            line: find_line(text, other),
            problem: format!("unknown key {other:?}; a {key} table has only [[{key}]]"),
        });
    }
    let Some(list) = top.remove(key) else {
        return Err(missing_key(name, key));
    };
    let toml::Value::Array(items) = list else {
        return Err(TableError {
            file: name.to_owned(),
            line: find_line(text, key),
            problem: format!("{key}: must be an array of tables ([[{key}]])"),
        });
    };
    // toml::Table keeps no spans, so an entry's line is the line of its
    // `[[key]]` header (or the `key = [` line for an inline array).
    let headers = header_lines(text, key);
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let line = headers
                .get(i)
                .copied()
                .unwrap_or_else(|| find_line(text, key));
            let row = T::deserialize(item).map_err(|e| TableError {
                file: name.to_owned(),
                line,
                problem: format!("{key}[{i}]: {}", e.message()),
            })?;
            Ok(Located { line, row })
        })
        .collect()
}

fn convert<R, T>(
    name: &str,
    rows: &[Located<R>],
    key: &str,
    to_wire: impl Fn(&R) -> Result<T, String>,
) -> Result<Vec<T>, TableError> {
    rows.iter()
        .enumerate()
        .map(|(i, located)| {
            to_wire(&located.row).map_err(|problem| TableError {
                file: name.to_owned(),
                line: located.line,
                problem: format!("{key}[{i}].{problem}"),
            })
        })
        .collect()
}

/// Attaches the line of the entry a table-level problem starts with
/// (`offers[3]…`, `accounts[3]…`, `merchants[3]…`).
fn entry_error<R>(name: &str, rows: &[Located<R>], problem: &str) -> TableError {
    let index = problem
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    TableError {
        file: name.to_owned(),
        line: index.and_then(|i| rows.get(i)).map_or(1, |r| r.line),
        problem: problem.to_owned(),
    }
}

fn missing_key(name: &str, key: &str) -> TableError {
    TableError {
        file: name.to_owned(),
        line: 1,
        problem: format!("missing key {key:?}"),
    }
}

/// The 1-based line at which `part`, a slice of `text`, starts.
fn line_of(text: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    line_at(text, offset)
}

/// Lines of slices of one text, asked for in increasing order.
struct LineCounter<'t> {
    text: &'t str,
    offset: usize,
    line: usize,
}

impl LineCounter<'_> {
    fn line_of(&mut self, part: &str) -> usize {
        let offset = (part.as_ptr() as usize)
            .saturating_sub(self.text.as_ptr() as usize)
            .clamp(self.offset, self.text.len());
        self.line += memchr::memchr_iter(b'\n', &self.text.as_bytes()[self.offset..offset]).count();
        self.offset = offset;
        self.line
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + memchr::memchr_iter(b'\n', &text.as_bytes()[..end]).count()
}

/// The line of the first line that starts with `key` (a TOML key or header).
fn find_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('[');
            l.starts_with(key)
        })
        .map_or(1, |i| i + 1)
}

fn header_lines(text: &str, key: &str) -> Vec<usize> {
    let header = format!("[[{key}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .map(|(i, _)| i + 1)
        .collect()
}
