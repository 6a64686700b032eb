//! The bundled sample stream (`samples/` at the repository's root): one
//! record for every decision and kind, with its catalog and accounts. The
//! README's first command, the tests and the demo use it.

use crate::tables::{Accounts, Catalog};

/// JSON lines of tweets and notices, a blank and broken line among them.
pub const TWEETS: &str = include_str!("../../../samples/tweets.jsonl");

/// The catalog, as TOML.
pub const CATALOG_TOML: &str = include_str!("../../../samples/catalog.toml");

/// The account links, as JSON.
pub const ACCOUNTS_JSON: &str = include_str!("../../../samples/accounts.json");

/// The confirm-mode part of the sample: a purchase confirmed, one
/// cancelled by deleting its tweet, and one left to expire, by the sample's
/// shoppers.
pub const CONFIRM_TWEETS: &str = include_str!("../../../samples/confirm.jsonl");

/// The confirm-mode offer the confirm-mode part buys, as TOML.
pub const CONFIRM_CATALOG_TOML: &str = include_str!("../../../samples/confirm-catalog.toml");

/// Tweets of the live part of the demo, in time order (2026-06-01 from
/// 14:09): a purchase tweet before the limited offer of
/// [`LIVE_CATALOG_TOML`] exists, three after it, and two around the
/// café offer's removal at [`LIVE_REMOVAL_MS`].
pub const LIVE_TWEETS: &str = include_str!("../../../samples/live.jsonl");

/// The limited offer the demo puts live, from [`LIVE_CHANGE_MS`].
pub const LIVE_CATALOG_TOML: &str = include_str!("../../../samples/live-catalog.toml");

/// When the demo's live offer takes effect: 2026-06-01T14:10:00Z.
pub const LIVE_CHANGE_MS: i64 = 1_780_323_000_000;

/// The hashtag whose offer the demo removes live, at [`LIVE_REMOVAL_MS`].
pub const LIVE_REMOVED_HASHTAG: &str = "BuyCafé";

/// When the demo's removal takes effect: 2026-06-01T14:20:00Z.
pub const LIVE_REMOVAL_MS: i64 = 1_780_323_600_000;

/// The limited offer the demo puts live, loaded.
pub fn live_catalog() -> Catalog {
    Catalog::from_file_text("samples/live-catalog.toml", LIVE_CATALOG_TOML)
        .expect("the bundled live catalog loads")
}

/// The sample's tables with the confirm-mode offer added to the catalog.
pub fn confirm_tables() -> (Catalog, Accounts) {
    let (catalog, accounts) = tables();
    let confirm = Catalog::from_file_text("samples/confirm-catalog.toml", CONFIRM_CATALOG_TOML)
        .expect("the bundled confirm-mode catalog loads");
    let offers = catalog
        .offers()
        .iter()
        .chain(confirm.offers())
        .cloned()
        .collect();
    let catalog = Catalog::new(offers).expect("the two bundled catalogs go together");
    (catalog, accounts)
}

/// The sample's tables, loaded.
pub fn tables() -> (Catalog, Accounts) {
    // Both files are part of this crate and covered by its tests, so a
    // failure here is a bug in them, not bad input.
    let catalog = Catalog::from_file_text("samples/catalog.toml", CATALOG_TOML)
        .expect("the bundled catalog loads");
    let accounts = Accounts::from_file_text("samples/accounts.json", ACCOUNTS_JSON)
        .expect("the bundled accounts load");
    (catalog, accounts)
}
