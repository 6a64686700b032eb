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
