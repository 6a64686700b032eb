//! hashbuy's pure domain: everything between a tweet's bytes and a payment
//! command, with no I/O, no clock and no async runtime.
//!
//! - [`decode`] reads a record (Twitter API v1.1 JSON, API v2 JSON or
//!   protobuf `Tweet`, detected per record) into the few facts matching
//!   needs, on a hot path that skips what it need not read ([`json`]).
//! - [`prefilter`] tells, from a byte scan, which records hold no hashtag
//!   sign in any spelling and so cannot buy.
//! - [`hashtag`] extracts hashtags by the twitter-text rules and normalizes
//!   them for matching (NFKC + lowercase).
//! - [`tables`] loads the catalog (hashtag → offer), account links
//!   (user → card) and merchants (merchant → connected account) from TOML
//!   or JSON table files.
//! - [`history`] keeps each table key's changes by the time they take
//!   effect, so live tables are read at a tweet's own time.
//! - [`money`] writes amounts as shoppers read them, per currency.
//! - [`connect`] routes a charge: to the platform's own account, or with a
//!   merchants table to the merchant's Stripe connected account less the
//!   platform's fee.
//! - [`confirm`] decides the confirm flow of confirm-mode offers against a
//!   partition's pending purchases, by event time.
//! - [`replies`] gives replies to the buyer their ids, and the settler's
//!   their words.
//! - [`stock`] decides limited offers' reservations: a unit held, a place
//!   in line, or sold out, never more settled than the stock.
//! - [`samples`] is the bundled sample stream and its tables.
//! - [`rules`] turns a decoded record and the tables into a [`Decision`]: the
//!   payment commands it causes, or the reason it buys nothing.
//!
//! ```
//! use hashbuy_core::{rules::Rules, tables::{Accounts, Catalog}};
//!
//! let catalog = Catalog::from_file_text("catalog.json", r#"{"offers": [{"hashtag": "BuyRedSneakers42",
//!     "offer_id": "red-sneakers-42", "merchant_id": "acme", "amount": 4200, "currency": "usd"}]}"#).unwrap();
//! let accounts = Accounts::from_file_text("accounts.json", r#"{"accounts": [{"user_id": "12345",
//!     "customer_id": "cus_123", "payment_method_id": "pm_card_visa"}]}"#).unwrap();
//! let tweet = br#"{"id_str": "1001", "text": "Love these! #buyredsneakers42",
//!     "user": {"id_str": "12345", "protected": false}, "timestamp_ms": "1780272000000"}"#;
//! let decision = Rules::new(&catalog, &accounts).decide_bytes(tweet);
//! assert_eq!(decision.commands()[0].amount, 4200);
//! ```

pub mod confirm;
pub mod connect;
pub mod decode;
pub mod hashtag;
pub mod history;
pub mod json;
pub mod money;
pub mod prefilter;
pub mod replies;
pub mod rules;
pub mod samples;
pub mod stock;
pub mod tables;

pub use decode::{decode, DecodeError, Record};
pub use rules::{Decision, Rules, SkipReason};
