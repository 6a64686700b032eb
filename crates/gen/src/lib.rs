//! A seeded generator of a realistic synthetic Twitter firehose for hashbuy,
//! with the catalog and accounts its purchase tweets refer to.
//!
//! # Overview
//!
//! [`Generator::new`] builds, from [`Options`], a world of users (some with
//! a linked card, a few protected), a catalog of offers and their purchase
//! hashtags, and pools of links, photos and places. [`Generator::write_next`]
//! then appends one line of a Twitter API v1.1 *streaming* firehose at a
//! time: ordinary tweets, replies, retweets (with `retweeted_status`), quote
//! tweets (with `quoted_status`), long tweets (`truncated` with an
//! `extended_tweet`), and notices (`delete`, `limit`, `scrub_geo`,
//! `status_withheld`, `user_withheld`, `warning`). A share of the lines are
//! purchase tweets carrying a catalog hashtag. [`Generator::catalog`] and
//! [`Generator::accounts`] give the table files (design.md, "Table files")
//! the matcher joins against.
//!
//! ```
//! use hashbuy_gen::{Generator, Options};
//!
//! let options = Options { users: 1_000, linked_users: 100, offers: 50, ..Options::default() };
//! let mut generator = Generator::new(options);
//! let catalog_json = serde_json::to_string(&generator.catalog())?; // a table file
//! let mut line = Vec::new();
//! generator.write_next(&mut line); // one JSON object, no newline
//! let tweet: serde_json::Value = serde_json::from_slice(&line)?;
//! assert!(tweet.is_object());
//! # let _ = catalog_json;
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! # What the stream looks like
//!
//! Shares are of all lines, drawn independently per line, so they hold
//! roughly: notices ~2.5%, retweets ~20%, quote tweets ~3%, long tweets ~5%,
//! replies ~9%, a photo on ~8%, a link on ~18%. A share
//! [`Options::hashtag_share`] (default 10%, after Suh et al., SocialCom
//! 2010) of the lines that do not buy hold a hashtag sign, as ordinary
//! hashtags in their text; the others hold none anywhere in their bytes
//! (see [Hashtag signs](#hashtag-signs)). A tweet of its own averages
//! about 2.4 KB, like real ones; a retweet or quote, which embeds a second
//! full tweet, about 5 KB; all lines together about 2.9 KB.
//!
//! Field names, types and order follow Twitter's v1.1 streaming output:
//! `id` a number and `id_str` the same as a string (snowflake ids, above
//! 2^53, increasing from line to line), `created_at` as
//! `Mon Jun 01 00:00:00 +0000 2026`, `timestamp_ms` a string of the same
//! time, a full `user` object, `/` written as `\/`. Text is English,
//! Spanish, Portuguese, French, Japanese and Chinese, with accented
//! letters, emoji (astral ones, ZWJ sequences, flags), `@mentions`, t.co
//! links, quotes and newlines. About a quarter of the lines write every
//! non-ASCII character as a `\uXXXX` escape (surrogate pairs for astral
//! ones), as Twitter's own serializer does; the rest write raw UTF-8.
//!
//! Entities (`hashtags`, `urls`, `user_mentions`, `symbols`, `media`) agree
//! with the text: their `indices` are code-point offsets, and a hashtag's
//! span starts at its `#` or `＃`. `&amp;`, `&lt;` and `&gt;` (Twitter
//! HTML-escapes those three) occur only after a tweet's last entity, so the
//! indices hold however a reader counts them. Profile descriptions carry
//! `#words` too (on lines that hold a sign), which are not tweet hashtags.
//!
//! # Hashtag signs
//!
//! A matcher may decide a record whose bytes hold no hashtag sign (`#`, the
//! UTF-8 of `＃`, or a `\u0023` / `\uff03` escape in any case) without
//! decoding it, so the share of such records sets its cost, and the
//! generator controls it exactly. Each line that does not buy is drawn to
//! hold a sign with probability [`Options::hashtag_share`]:
//!
//! - one that does carries one to three ordinary hashtags in its own text
//!   (a retweet: in the retweeted tweet, which its text repeats, perhaps
//!   cut), with entities to match; the rest of it is as it comes: profile
//!   descriptions with `#words`, links with a `#fragment`, Twitter for
//!   iPad's `#!` source, a quoted tweet with hashtags or a catalog hashtag;
//! - one that does not holds no sign anywhere: no hashtags, descriptions
//!   rendered without their `#`, only links without a `#`, the iPad source
//!   without its `#!`, and an embedded tweet held to the same.
//!
//! Notices hold no sign, so they are drawn among the lines without one, at
//! the rate that keeps them 2.5% of the lines that do not buy while the
//! share is at most 0.975 (above it, every line without a sign is a
//! notice). Purchase lines always hold their catalog hashtag's sign.
//!
//! # Purchase tweets
//!
//! A share [`Options::purchase_share`] of the lines carry a catalog hashtag
//! in their own text (or only in `extended_tweet.full_text`, for some long
//! ones); ~5% of those carry two different ones. The hashtag is written as
//! the catalog writes it or in another case (`#buyredsneakers42`,
//! `#BUYREDSNEAKERS42`), now and then with the fullwidth sign `＃`, and for
//! accented hashtags sometimes decomposed (`Cafe` + U+0301, which NFKC folds
//! back to `Café`). Authors are linked users ~90% of the time (the rest are
//! not linked); ~2% of users are protected. ~10% of the purchase lines are
//! retweets of a purchase tweet (they never buy), ~4% quote tweets whose own
//! text buys; besides, ~20% of the ordinary quote tweets that hold a sign
//! quote a tweet that carries a catalog hashtag (only the quoting text
//! counts, so those never buy; a quote without a sign cannot quote one). Offers are chosen with a skew (a few hot offers) and so are linked
//! buyers (a few heavy buyers), so `max_per_user` and `spend_limit` bite.
//!
//! With [`Options::confirm_share`], a share of the offers are in confirm
//! mode (README, "Confirm mode"), and most purchase tweets of one are
//! followed, seconds to two minutes later, by a tweet of the same author
//! with the offer's confirmation hashtag; the others expire.
//!
//! # Catalog and accounts
//!
//! Offers have hashtags like `BuyRedSneakers42` (a few accented, like
//! `BuyCafé7`; no two normalize alike, and none normalizes like an ordinary
//! hashtag of the stream), a few hundred merchants, amounts of 100..=50_000
//! minor units, mostly `usd` (some `eur`, `gbp`, `jpy`), `max_per_user`
//! 1..=3 or left out. ~2% ended before [`Options::start_ms`] (their tweets
//! are skipped as `offer_inactive`), ~2% start after it (half within the
//! first hour). Accounts link user ids that the stream's users carry, to
//! `cus_…` customers paying with `pm_card_visa`, ~2% each with
//! `pm_card_chargeDeclined` and `pm_card_chargeDeclinedInsufficientFunds`;
//! ~20% have a `spend_limit`.
//!
//! # Determinism and speed
//!
//! Everything comes from one ChaCha8 generator seeded with
//! [`Options::seed`]: the same options give byte-identical catalogs,
//! accounts and lines. Nothing reads a clock; tweet times advance from
//! [`Options::start_ms`] at [`Options::tweets_per_second`]. Users are
//! pre-rendered in pieces at construction and lines are appended from
//! those pieces, so a release build writes about 200,000 lines (600 MB) a
//! second on one core (`cargo run --release -p hashbuy-gen --example
//! speed`); `examples/dump.rs` prints lines and writes the table files.

#![warn(missing_docs)]

mod json;
mod pools;
mod text;
mod tweet;
mod world;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use hashbuy_core::tables::{AccountsFile, CatalogFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::json::{push_i64, push_id_pair, push_u64};
use crate::text::{MediaEnt, Text, UrlKind};
use crate::tweet::{write_status, Embed, Status};
use crate::world::{chance, pick, place_centre, snowflake, word, World};

/// 2026-06-01T00:00:00Z in milliseconds, the default [`Options::start_ms`].
pub const DEFAULT_START_MS: i64 = 1_780_272_000_000;

/// The default [`Options::hashtag_share`]: 10%, the share of tweets that
/// carried a hashtag in Suh, Hong, Pirolli and Chi, "Want to be Retweeted?
/// Large Scale Analytics on Factors Impacting Retweet in Twitter Network",
/// IEEE SocialCom 2010 (10.1% of 74 million tweets, January to March
/// 2010). A published count over a large sample, rather than a guess, so
/// that a matcher that only decodes records holding a sign is measured on
/// a realistic mix.
pub const DEFAULT_HASHTAG_SHARE: f64 = 0.10;

/// Share of notice lines (`delete`, `limit`, …).
const NOTICE_SHARE: f64 = 0.025;
/// Share of retweet lines.
const RETWEET_SHARE: f64 = 0.20;
/// Share of quote-tweet lines.
const QUOTE_SHARE: f64 = 0.03;
/// Share of long (truncated) tweet lines.
const LONG_SHARE: f64 = 0.05;
/// Share of lines written with `\uXXXX` escapes for non-ASCII.
const ESCAPED_SHARE: f64 = 0.25;
/// Share of embedded tweets free to carry signs (the quoted tweet of a
/// quote that holds a sign or buys) that carry ordinary hashtags.
const EMBEDDED_TAG_SHARE: f64 = 0.15;
/// How many recent tweets replies and deletes refer to.
const RECENT: usize = 4096;

/// What to generate. Every field has a default; see [`Options::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Seed of the random generator; the same options give the same bytes.
    /// Default 42.
    pub seed: u64,
    /// Share of lines (0..=1) carrying a catalog hashtag in their own text.
    /// Values outside are clamped; NaN counts as 0. Default 0.01.
    pub purchase_share: f64,
    /// Share (0..=1) of the lines that are not purchases (tweets and
    /// notices alike) whose bytes hold a hashtag sign in any spelling: `#`,
    /// the UTF-8 of `＃` (U+FF03), or a `\u0023` or `\uff03` escape. Such
    /// a line carries one to three ordinary hashtags in its own text (a
    /// retweet: in the retweeted tweet's); any other non-purchase line
    /// holds no sign anywhere, in its text, profiles, links, source or
    /// embedded tweets, since a matcher may skip exactly those records
    /// after a byte scan. Notices hold no sign, so above `0.975` fewer
    /// than the usual 2.5% of lines are notices (none at 1). Purchase
    /// lines always hold their catalog hashtag's sign and are not counted.
    /// Values outside are clamped; NaN counts as 0. Default
    /// [`DEFAULT_HASHTAG_SHARE`], 0.10 (Suh et al., SocialCom 2010: 10.1%
    /// of 74 million tweets carried a hashtag).
    pub hashtag_share: f64,
    /// Catalog size. With 0 there are no purchase tweets. Default 10_000.
    pub offers: usize,
    /// Users with a linked card (the accounts file). Default 10_000.
    pub linked_users: usize,
    /// All distinct authors, linked ones included (raised to
    /// `linked_users` and to at least 1). Default 200_000.
    pub users: usize,
    /// Time of the first line, milliseconds since the Unix epoch. Default
    /// [`DEFAULT_START_MS`], 2026-06-01T00:00:00Z.
    pub start_ms: i64,
    /// Pace of line times: line `n` is at `start_ms + n * 1000 /
    /// tweets_per_second` (0 counts as 1). Default 6_000.
    pub tweets_per_second: u32,
    /// Share (0..=1) of the offers in confirm mode, spread evenly over the
    /// catalog, each with its confirmation hashtag written out. A purchase
    /// tweet of one (a tweet of its own; retweets never buy, and quotes
    /// are left unconfirmed) is followed, with probability
    /// [`CONFIRMED_SHARE`], by its author's tweet with the confirmation
    /// hashtag between 1 second and [`CONFIRM_AFTER_S`] seconds of stream
    /// time later (log-uniform: most shoppers confirm within seconds); the
    /// rest expire, and confirmations due after the last line are never
    /// written. Choosing the offers draws nothing from the generator, so 0
    /// gives the bytes it gave before the option existed. Values outside
    /// are clamped; NaN counts as 0. Default 0.
    pub confirm_share: f64,
}

/// Share of the purchases of confirm-mode offers that their author
/// confirms (see [`Options::confirm_share`]).
pub const CONFIRMED_SHARE: f64 = 0.8;

/// Longest a confirmation follows its purchase, in seconds of stream
/// time: inside the default window of 15 minutes, so a confirmed purchase
/// buys.
pub const CONFIRM_AFTER_S: u64 = 120;

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 42,
            purchase_share: 0.01,
            hashtag_share: DEFAULT_HASHTAG_SHARE,
            offers: 10_000,
            linked_users: 10_000,
            users: 200_000,
            start_ms: DEFAULT_START_MS,
            tweets_per_second: 6_000,
            confirm_share: 0.0,
        }
    }
}

/// The language of a tweet's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    En,
    Es,
    Pt,
    Fr,
    Ja,
    Zh,
    /// Emoji only: Twitter says `und`.
    Und,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Pt => "pt",
            Lang::Fr => "fr",
            Lang::Ja => "ja",
            Lang::Zh => "zh",
            Lang::Und => "und",
        }
    }

    fn phrases(self) -> &'static [&'static str] {
        match self {
            Lang::En | Lang::Und => pools::EN,
            Lang::Es => pools::ES,
            Lang::Pt => pools::PT,
            Lang::Fr => pools::FR,
            Lang::Ja => pools::JA,
            Lang::Zh => pools::ZH,
        }
    }

    fn spaced(self) -> bool {
        !matches!(self, Lang::Ja | Lang::Zh)
    }
}

/// Where in the text an entity goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pos {
    Early,
    Mid,
    Late,
}

/// An entity the text carries.
#[derive(Clone, Copy)]
enum Item {
    Catalog(u32),
    /// The confirmation hashtag of a confirm-mode offer.
    Confirm(u32),
    Tag(&'static str),
    Mention(u32),
    Cashtag(&'static str),
}

/// What an ordinary (not buying) tweet may hold of hashtag signs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signs {
    /// One to three ordinary hashtags in its own text; profiles, links and
    /// source as they come. The own text of a line drawn to hold a sign.
    Require,
    /// No sign anywhere: no hashtags, and the sign-free variants of
    /// profiles, links and source. Every part of a line drawn to hold none.
    Forbid,
    /// Ordinary hashtags on some, the rest as it comes: embedded tweets of
    /// lines that hold a sign anyway (purchases, or lines drawn to hold
    /// one), whose signs change no line's count.
    Free,
}

/// What a line is, once drawn: a purchase, or a line that holds a sign or
/// none (see [`Options::hashtag_share`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Purchase,
    Signed,
    Unsigned,
}

/// What a tweet's text is made of.
struct Plan {
    lang: Lang,
    long: bool,
    reply: Option<(u64, u32)>,
    purchase_phrase: bool,
    items: [Option<(Pos, Item)>; 6],
    url: bool,
    media: bool,
    quote: Option<(u64, u32)>,
    amp: bool,
    /// Nothing of the tweet may hold a hashtag sign: its link comes from
    /// the sign-free ones, its profile and source render without one.
    plain: bool,
}

impl Plan {
    fn new(lang: Lang) -> Plan {
        Plan {
            lang,
            long: false,
            reply: None,
            purchase_phrase: false,
            items: [None; 6],
            url: false,
            media: false,
            quote: None,
            amp: false,
            plain: false,
        }
    }

    fn add(&mut self, pos: Pos, item: Item) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some((pos, item));
        }
    }
}

/// The texts a tweet shows: `text`, and the whole text when truncated.
#[derive(Clone, Copy)]
struct Shown<'a> {
    text: &'a Text,
    full: Option<&'a Text>,
}

impl<'a> Shown<'a> {
    fn of(full: &'a Text, view: &'a Text, cut: bool) -> Shown<'a> {
        if cut {
            Shown {
                text: view,
                full: Some(full),
            }
        } else {
            Shown {
                text: full,
                full: None,
            }
        }
    }
}

/// A seeded firehose: the world fixed at construction, then one line per
/// [`write_next`](Generator::write_next).
pub struct Generator {
    options: Options,
    world: World,
    rng: ChaCha8Rng,
    purchase_share: f64,
    hashtag_share: f64,
    tps: u64,
    lines: u64,
    last_id: u64,
    id_ms: i64,
    low: u64,
    recent: Vec<(u64, u32)>,
    recent_next: usize,
    limit_track: u64,
    texts: [Text; 4],
    tmp: Vec<u8>,
    /// Confirmations to write: (line, author, offer), the earliest first.
    confirmations: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("options", &self.options)
            .field("users", &self.world.users.len())
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Builds the world for `options`: users, catalog, accounts and the
    /// pools lines are made from. Takes a fraction of a second for the
    /// defaults (200,000 users) in a release build.
    pub fn new(options: Options) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let world = World::new(
            &mut rng,
            options.users,
            options.linked_users,
            options.offers,
            share(options.confirm_share),
            options.start_ms,
        );
        Generator {
            purchase_share: share(options.purchase_share),
            hashtag_share: share(options.hashtag_share),
            tps: u64::from(options.tweets_per_second.max(1)),
            options,
            world,
            rng,
            lines: 0,
            last_id: 0,
            id_ms: i64::MIN,
            low: 0,
            recent: Vec::with_capacity(RECENT),
            recent_next: 0,
            limit_track: 0,
            texts: Default::default(),
            tmp: Vec::new(),
            confirmations: BinaryHeap::new(),
        }
    }

    /// The catalog the purchase tweets use, as a table file
    /// (`serde_json::to_string` gives the JSON form of design.md).
    pub fn catalog(&self) -> CatalogFile {
        self.world.catalog.clone()
    }

    /// The linked users, as an accounts table file.
    pub fn accounts(&self) -> AccountsFile {
        self.world.accounts.clone()
    }

    /// Appends the next line: one JSON object, without a trailing newline.
    pub fn write_next(&mut self, out: &mut Vec<u8>) {
        let n = self.lines;
        self.lines += 1;
        let offset = (u128::from(n) * 1000 / u128::from(self.tps)).min(i64::MAX as u128) as i64;
        let ms = self.options.start_ms.saturating_add(offset);
        let start = out.len();
        let escape = chance(&mut self.rng, ESCAPED_SHARE);
        let mut texts = std::mem::take(&mut self.texts);
        let due = match self.confirmations.peek() {
            Some(Reverse((line, ..))) if *line <= n => self.confirmations.pop(),
            _ => None,
        };
        if let Some(Reverse((_, author, offer))) = due {
            let mut plan = Plan::new(Lang::En);
            plan.add(Pos::Mid, Item::Confirm(offer));
            self.single(out, ms, &mut texts, author, &plan);
        } else if self.rng.gen::<f64>() < self.purchase_share && !self.world.offers.is_empty() {
            self.purchase(out, ms, &mut texts);
        } else {
            self.other(out, ms, &mut texts);
        }
        self.texts = texts;
        if escape {
            json::escape_non_ascii(out, start, &mut self.tmp);
        }
    }

    // ---- ids, times, people ----

    /// The id of a new top-level tweet at `ms`: a snowflake, always above
    /// the previous one.
    fn next_id(&mut self, ms: i64) -> u64 {
        let since = ms.saturating_sub(world::TWEPOCH_MS).max(0) as u64;
        if ms != self.id_ms {
            self.id_ms = ms;
            self.low = self.rng.gen_range(0..1 << 18);
        } else {
            self.low = self.low.saturating_add(self.rng.gen_range(1..=4096));
        }
        let id = (since << 22)
            .saturating_add(self.low)
            .max(self.last_id.saturating_add(1));
        self.last_id = id;
        id
    }

    /// A time before `ms`: mostly minutes, sometimes days or months.
    fn old_time(&mut self, ms: i64) -> i64 {
        let r: f64 = self.rng.gen();
        let back = if r < 0.7 {
            self.rng.gen_range(10_000..3_600_000)
        } else if r < 0.95 {
            self.rng.gen_range(3_600_000..259_200_000)
        } else {
            self.rng.gen_range(259_200_000..31_536_000_000)
        };
        ms.saturating_sub(back)
    }

    /// Remembers a top-level tweet for later replies and deletes.
    fn remember(&mut self, id: u64, user: u32) {
        if self.recent.len() < RECENT {
            self.recent.push((id, user));
        } else {
            self.recent[self.recent_next] = (id, user);
            self.recent_next = (self.recent_next + 1) % RECENT;
        }
    }

    /// A tweet from before `ms`: a recent one, or an older one made up.
    fn earlier_tweet(&mut self, ms: i64) -> (u64, u32) {
        let floor = (ms.saturating_sub(world::TWEPOCH_MS).max(0) as u64) << 22;
        if !self.recent.is_empty() && chance(&mut self.rng, 0.7) {
            let recent = *pick(&mut self.rng, &self.recent);
            if recent.0 < floor {
                return recent;
            }
        }
        let t = self.old_time(ms);
        let id = snowflake(&mut self.rng, t);
        (id, self.author())
    }

    /// An author of an ordinary tweet: some users tweet a lot more.
    fn author(&mut self) -> u32 {
        let n = self.world.users.len();
        let active = (n / 20).max(1);
        let pool = if chance(&mut self.rng, 0.4) {
            active
        } else {
            n
        };
        self.rng.gen_range(0..pool) as u32
    }

    /// Another user than `not` (when there is one).
    fn other_user(&mut self, not: u32) -> u32 {
        for _ in 0..4 {
            let u = self.author();
            if u != not {
                return u;
            }
        }
        not
    }

    /// An author of a purchase tweet: ~90% linked (a few heavy buyers).
    fn purchase_author(&mut self) -> u32 {
        let linked = &self.world.linked;
        if !linked.is_empty() && chance(&mut self.rng, 0.9) {
            let heavy = (linked.len() / 50).max(1);
            let pool = if chance(&mut self.rng, 0.3) {
                heavy
            } else {
                linked.len()
            };
            return linked[self.rng.gen_range(0..pool)];
        }
        let n = self.world.users.len();
        let mut u = 0;
        for _ in 0..16 {
            u = self.rng.gen_range(0..n);
            if !self.world.users[u].linked {
                break;
            }
        }
        u as u32
    }

    /// A catalog offer: half the time one of a few hot ones.
    fn pick_offer(&mut self) -> u32 {
        let n = self.world.offers.len();
        let hot = (n / 20).max(1);
        let pool = if chance(&mut self.rng, 0.5) { hot } else { n };
        self.rng.gen_range(0..pool.max(1)) as u32
    }

    fn pick_lang(&mut self) -> Lang {
        match self.rng.gen_range(0..100) {
            0..=67 => Lang::En,
            68..=77 => Lang::Ja,
            78..=84 => Lang::Es,
            85..=89 => Lang::Pt,
            90..=93 => Lang::Fr,
            94..=96 => Lang::Zh,
            _ => Lang::Und,
        }
    }

    // ---- plans ----

    /// A tweet that does not buy, holding signs as `signs` says.
    fn ordinary_plan(
        &mut self,
        author: u32,
        ms: i64,
        long: bool,
        may_reply: bool,
        signs: Signs,
    ) -> Plan {
        let mut plan = Plan::new(self.pick_lang());
        plan.long = long;
        plan.plain = signs == Signs::Forbid;
        if long && plan.lang == Lang::Und {
            plan.lang = Lang::En;
        }
        if may_reply && chance(&mut self.rng, 0.12) {
            plan.reply = Some(self.earlier_tweet(ms));
        }
        let r: f64 = self.rng.gen();
        let mentions = if r < 0.02 {
            2
        } else if r < 0.10 {
            1
        } else {
            0
        };
        for _ in 0..mentions {
            let u = self.other_user(author);
            let pos = if chance(&mut self.rng, 0.3) {
                Pos::Early
            } else {
                Pos::Mid
            };
            plan.add(pos, Item::Mention(u));
        }
        let tags = match signs {
            Signs::Require => true,
            Signs::Forbid => false,
            Signs::Free => chance(&mut self.rng, EMBEDDED_TAG_SHARE),
        };
        if tags {
            // The first tag always goes in (nothing is used yet), so a
            // required sign is always there.
            let n = *pick(&mut self.rng, &[1, 1, 1, 1, 2, 2, 3]);
            let mut used: [&str; 3] = [""; 3];
            for k in 0..n {
                let tag = word(&mut self.rng, pools::TAGS);
                if used.contains(&tag) {
                    continue;
                }
                used[k] = tag;
                let pos = match self.rng.gen_range(0..10) {
                    0 => Pos::Early,
                    1..=3 => Pos::Mid,
                    _ => Pos::Late,
                };
                plan.add(pos, Item::Tag(tag));
            }
        }
        if chance(&mut self.rng, 0.01) {
            plan.add(
                Pos::Mid,
                Item::Cashtag(word(&mut self.rng, pools::CASHTAGS)),
            );
        }
        plan.url = chance(&mut self.rng, 0.18);
        plan.media = chance(&mut self.rng, 0.09);
        plan.amp = !plan.url && !plan.media && chance(&mut self.rng, 0.04);
        plan
    }

    /// A purchase tweet's plan; `early` puts the catalog hashtag(s) first
    /// (for retweets, whose text is cut).
    fn purchase_plan(&mut self, author: u32, ms: i64, long: bool, early: bool) -> Plan {
        let lang = match self.rng.gen_range(0..10) {
            0 => Lang::Es,
            1 => Lang::Ja,
            _ => Lang::En,
        };
        let mut plan = Plan::new(lang);
        plan.long = long;
        plan.purchase_phrase = true;
        let first = self.pick_offer();
        let mut offers = [Some(first), None];
        if self.world.offers.len() > 1 && chance(&mut self.rng, 0.05) {
            let mut second = self.pick_offer();
            while second == first {
                second = self.rng.gen_range(0..self.world.offers.len()) as u32;
            }
            offers[1] = Some(second);
        }
        for offer in offers.into_iter().flatten() {
            let pos = if early {
                Pos::Early
            } else if long && chance(&mut self.rng, 0.5) {
                Pos::Late
            } else {
                match self.rng.gen_range(0..10) {
                    0..=3 => Pos::Early,
                    4..=6 => Pos::Mid,
                    _ => Pos::Late,
                }
            };
            plan.add(pos, Item::Catalog(offer));
        }
        if !early && chance(&mut self.rng, 0.06) {
            plan.reply = Some(self.earlier_tweet(ms));
        }
        if chance(&mut self.rng, 0.08) {
            let u = self.other_user(author);
            plan.add(Pos::Mid, Item::Mention(u));
        }
        if chance(&mut self.rng, 0.15) {
            plan.add(Pos::Late, Item::Tag(word(&mut self.rng, pools::TAGS)));
        }
        plan.media = chance(&mut self.rng, 0.2);
        plan.url = !plan.media && chance(&mut self.rng, 0.08);
        plan
    }

    // ---- lines ----

    /// Per-tweet details: (source, place, coordinates, counts).
    #[allow(clippy::type_complexity)]
    fn details(&mut self, top: bool) -> (usize, Option<usize>, Option<(f64, f64)>, [u64; 4]) {
        let source = match self.rng.gen_range(0..100) {
            0..=39 => 0,
            40..=69 => 1,
            70..=85 => 2,
            86..=88 => 3,
            89..=91 => 4,
            92..=93 => 5,
            94..=95 => 6,
            96..=97 => 7,
            _ => 8,
        };
        let place = chance(&mut self.rng, 0.03).then(|| self.rng.gen_range(0..pools::PLACES.len()));
        let coords = match place {
            Some(p) if chance(&mut self.rng, 0.35) => {
                let (lon, lat) = place_centre(p);
                Some((
                    lon + self.rng.gen_range(-0.05..0.05),
                    lat + self.rng.gen_range(-0.05..0.05),
                ))
            }
            _ => None,
        };
        let counts = if top {
            [0; 4]
        } else {
            let rts = world::count(&mut self.rng, 20_000);
            let favs = rts * self.rng.gen_range(1..6) + self.rng.gen_range(0..10);
            [rts / 10, rts / 4, rts, favs]
        };
        (source, place, coords, counts)
    }

    /// Fills `full` for `plan` and `view` with its classic view; returns
    /// whether the tweet is truncated.
    fn compose(
        &mut self,
        full: &mut Text,
        view: &mut Text,
        plan: &Plan,
        id: u64,
        author: u32,
        ms: i64,
    ) -> bool {
        gen_text(&mut self.rng, &self.world, full, plan, id, author, ms);
        view.view_of(full, None)
    }

    fn status<'a>(
        &mut self,
        id: u64,
        ms: i64,
        user: u32,
        shown: Shown<'a>,
        plan: &Plan,
        top: bool,
    ) -> Status<'a> {
        let (source, place, coords, counts) = self.details(top);
        Status {
            id,
            ms,
            user,
            text: shown.text,
            full: shown.full,
            reply: plan.reply,
            source,
            lang: plan.lang.code(),
            place,
            coords,
            counts,
            plain: plan.plain,
        }
    }

    /// A tweet of its own: plain, reply or long.
    fn single(
        &mut self,
        out: &mut Vec<u8>,
        ms: i64,
        texts: &mut [Text; 4],
        author: u32,
        plan: &Plan,
    ) {
        let id = self.next_id(ms);
        let [full, view, ..] = texts;
        let cut = self.compose(full, view, plan, id, author, ms);
        let st = self.status(id, ms, author, Shown::of(full, view, cut), plan, true);
        self.remember(id, author);
        write_status(out, &self.world, &st, &Embed::None, true);
    }

    /// A retweet of a purchase tweet, or of an ordinary one whose hashtags
    /// (or their absence) make the line's signs: the retweet's own text is
    /// the retweeted one's.
    fn retweet(&mut self, out: &mut Vec<u8>, ms: i64, texts: &mut [Text; 4], line: Line) {
        let id = self.next_id(ms);
        let inner_ms = self.old_time(ms);
        let inner_id = snowflake(&mut self.rng, inner_ms).min(id.saturating_sub(1));
        let (inner_author, plan) = if line == Line::Purchase {
            let a = self.purchase_author();
            (a, self.purchase_plan(a, inner_ms, false, true))
        } else {
            let a = self.author();
            let long = chance(&mut self.rng, 0.08);
            let signs = if line == Line::Signed {
                Signs::Require
            } else {
                Signs::Forbid
            };
            (a, self.ordinary_plan(a, inner_ms, long, true, signs))
        };
        let [full, view, outer, _] = texts;
        let cut = self.compose(full, view, &plan, inner_id, inner_author, inner_ms);
        let inner = self.status(
            inner_id,
            inner_ms,
            inner_author,
            Shown::of(full, view, cut),
            &plan,
            false,
        );
        let author = self.other_user(inner_author);
        outer.view_of(
            full,
            Some((inner_author, self.world.screen_name(inner_author))),
        );
        let (source, _, _, _) = self.details(true);
        let st = Status {
            id,
            ms,
            user: author,
            text: outer,
            full: None,
            reply: None,
            source,
            lang: inner.lang,
            place: None,
            coords: None,
            counts: [0; 4],
            plain: line == Line::Unsigned,
        };
        self.remember(id, author);
        write_status(out, &self.world, &st, &Embed::Retweet(&inner), true);
    }

    /// A quote tweet: its own text buys ([`Line::Purchase`]), or carries
    /// ordinary hashtags ([`Line::Signed`]), or neither it nor the quoted
    /// tweet holds a sign ([`Line::Unsigned`]).
    fn quote(&mut self, out: &mut Vec<u8>, ms: i64, texts: &mut [Text; 4], line: Line) {
        let id = self.next_id(ms);
        let inner_ms = self.old_time(ms);
        let inner_id = snowflake(&mut self.rng, inner_ms).min(id.saturating_sub(1));
        // A fifth of quoted tweets are purchase tweets: quoting one buys
        // nothing. Their catalog hashtag is a sign, so never on a line that
        // must hold none.
        let decoy =
            line != Line::Unsigned && !self.world.offers.is_empty() && chance(&mut self.rng, 0.2);
        let inner_signs = if line == Line::Unsigned {
            Signs::Forbid
        } else {
            Signs::Free
        };
        let (inner_author, inner_plan) = if decoy {
            let a = self.purchase_author();
            (a, self.purchase_plan(a, inner_ms, false, false))
        } else {
            let a = self.author();
            let long = chance(&mut self.rng, 0.08);
            (a, self.ordinary_plan(a, inner_ms, long, false, inner_signs))
        };
        let [ifull, iview, ofull, oview] = texts;
        let icut = self.compose(ifull, iview, &inner_plan, inner_id, inner_author, inner_ms);
        let inner = self.status(
            inner_id,
            inner_ms,
            inner_author,
            Shown::of(ifull, iview, icut),
            &inner_plan,
            false,
        );
        let (author, mut plan) = if line == Line::Purchase {
            let a = self.purchase_author();
            (a, self.purchase_plan(a, ms, false, false))
        } else {
            let a = self.other_user(inner_author);
            let signs = if line == Line::Signed {
                Signs::Require
            } else {
                Signs::Forbid
            };
            (a, self.ordinary_plan(a, ms, false, false, signs))
        };
        plan.url = false;
        plan.media = false;
        plan.amp = false;
        plan.quote = Some((inner_id, inner_author));
        let cut = self.compose(ofull, oview, &plan, id, author, ms);
        let st = self.status(id, ms, author, Shown::of(ofull, oview, cut), &plan, true);
        self.remember(id, author);
        write_status(out, &self.world, &st, &Embed::Quote(&inner), true);
    }

    /// A line that does not buy: it holds a hashtag sign with probability
    /// [`Options::hashtag_share`], and none at all otherwise, so the share
    /// holds exactly in expectation. Notices can hold no sign, so they are
    /// drawn among the lines without one, at the rate that keeps them
    /// [`NOTICE_SHARE`] of all these lines (all of the lines without a
    /// sign when the share leaves less room); tweet kinds keep their
    /// shares among tweets whatever the hashtag share.
    fn other(&mut self, out: &mut Vec<u8>, ms: i64, texts: &mut [Text; 4]) {
        let (line, signs) = if chance(&mut self.rng, self.hashtag_share) {
            (Line::Signed, Signs::Require)
        } else {
            (Line::Unsigned, Signs::Forbid)
        };
        let notices = match line {
            // At a share of 1 no line is drawn without a sign, and the
            // quotient's infinity is capped all the same.
            Line::Unsigned => (NOTICE_SHARE / (1.0 - self.hashtag_share)).min(1.0),
            _ => 0.0,
        };
        if chance(&mut self.rng, notices) {
            self.notice(out, ms);
            return;
        }
        // A tweet: `r` spans the tweet kinds' part of the old thresholds.
        let r = NOTICE_SHARE + self.rng.gen::<f64>() * (1.0 - NOTICE_SHARE);
        if r < NOTICE_SHARE + RETWEET_SHARE {
            self.retweet(out, ms, texts, line);
        } else if r < NOTICE_SHARE + RETWEET_SHARE + QUOTE_SHARE {
            self.quote(out, ms, texts, line);
        } else {
            let long = r < NOTICE_SHARE + RETWEET_SHARE + QUOTE_SHARE + LONG_SHARE;
            let author = self.author();
            let plan = self.ordinary_plan(author, ms, long, true, signs);
            self.single(out, ms, texts, author, &plan);
        }
    }

    /// A purchase line: mostly a tweet of its own, some retweets of one,
    /// some quote tweets that buy.
    fn purchase(&mut self, out: &mut Vec<u8>, ms: i64, texts: &mut [Text; 4]) {
        let r: f64 = self.rng.gen();
        if r < 0.10 {
            self.retweet(out, ms, texts, Line::Purchase);
        } else if r < 0.14 {
            self.quote(out, ms, texts, Line::Purchase);
        } else {
            let author = self.purchase_author();
            let long = chance(&mut self.rng, 0.06);
            let plan = self.purchase_plan(author, ms, long, false);
            self.single(out, ms, texts, author, &plan);
            self.schedule_confirmations(author, &plan);
        }
    }

    /// Schedules the confirmations of the confirm-mode offers a purchase
    /// tweet by `author` buys (see [`Options::confirm_share`]). Draws only
    /// for such offers, so a catalog without them leaves the bytes alone.
    fn schedule_confirmations(&mut self, author: u32, plan: &Plan) {
        for (_, item) in plan.items.iter().flatten() {
            let Item::Catalog(offer) = *item else {
                continue;
            };
            let confirm_mode = self
                .world
                .offers
                .get(offer as usize)
                .is_some_and(|o| o.confirm.is_some());
            if confirm_mode && chance(&mut self.rng, CONFIRMED_SHARE) {
                let ms = self
                    .rng
                    .gen_range(0f64..(CONFIRM_AFTER_S as f64).ln())
                    .exp()
                    * 1e3;
                let after = (ms * self.tps as f64 / 1e3) as u64;
                let line = self.lines.saturating_add(after);
                self.confirmations.push(Reverse((line, author, offer)));
            }
        }
    }

    /// A notice: mostly `delete`, some `limit`, rarely the others.
    fn notice(&mut self, out: &mut Vec<u8>, ms: i64) {
        let r: f64 = self.rng.gen();
        if r < 0.85 {
            let (id, user) = self.earlier_tweet(ms);
            out.extend_from_slice(b"{\"delete\":{\"status\":{");
            push_id_pair(out, "id", id);
            out.push(b',');
            push_id_pair(out, "user_id", self.world.users[user as usize].id);
            out.extend_from_slice(b"},\"timestamp_ms\":\"");
            push_i64(out, ms);
            out.extend_from_slice(b"\"}}");
        } else if r < 0.95 {
            self.limit_track += self.rng.gen_range(1..=400);
            out.extend_from_slice(b"{\"limit\":{\"track\":");
            push_u64(out, self.limit_track);
            out.extend_from_slice(b",\"timestamp_ms\":\"");
            push_i64(out, ms);
            out.extend_from_slice(b"\"}}");
        } else if r < 0.97 {
            let (id, user) = self.earlier_tweet(ms);
            out.extend_from_slice(b"{\"scrub_geo\":{");
            push_id_pair(out, "user_id", self.world.users[user as usize].id);
            out.push(b',');
            push_id_pair(out, "up_to_status_id", id);
            out.extend_from_slice(b",\"timestamp_ms\":\"");
            push_i64(out, ms);
            out.extend_from_slice(b"\"}}");
        } else if r < 0.98 {
            let (id, user) = self.earlier_tweet(ms);
            out.extend_from_slice(b"{\"status_withheld\":{\"id\":");
            push_u64(out, id);
            out.extend_from_slice(b",\"user_id\":");
            push_u64(out, self.world.users[user as usize].id);
            out.extend_from_slice(
                b",\"withheld_in_countries\":[\"DE\",\"FR\"],\"timestamp_ms\":\"",
            );
            push_i64(out, ms);
            out.extend_from_slice(b"\"}}");
        } else if r < 0.99 {
            let user = self.author();
            out.extend_from_slice(b"{\"user_withheld\":{\"id\":");
            push_u64(out, self.world.users[user as usize].id);
            out.extend_from_slice(b",\"withheld_in_countries\":[\"TR\"],\"timestamp_ms\":\"");
            push_i64(out, ms);
            out.extend_from_slice(b"\"}}");
        } else {
            let percent = *pick(&mut self.rng, &[60u64, 70, 80, 90]);
            out.extend_from_slice(b"{\"warning\":{\"code\":\"FALLING_BEHIND\",\"message\":\"Your connection is falling behind and messages are being queued for delivery to you. Your queue is now over ");
            push_u64(out, percent);
            out.extend_from_slice(
                b"% full. You will be disconnected when the queue is full.\",\"percent_full\":",
            );
            push_u64(out, percent);
            out.extend_from_slice(b"}}");
        }
    }
}

/// A share option as used: clamped to 0..=1, NaN as 0.
fn share(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

/// Appends a separator between phrases.
fn separator(rng: &mut ChaCha8Rng, t: &mut Text, lang: Lang, after_entity: bool) {
    if t.is_empty() || t.at_boundary() {
        return;
    }
    let after_punct =
        t.s.ends_with(['.', '?', '!', '…', '。', '！', '？', ',', ':']);
    if after_entity || after_punct {
        t.push(if chance(rng, 0.9) { " " } else { "\n" });
        return;
    }
    let sep = if lang.spaced() {
        match rng.gen_range(0..100) {
            0..=49 => " ",
            50..=64 => ". ",
            65..=70 => "! ",
            71..=78 => ", ",
            79..=86 => "\n",
            87..=90 => "\n\n",
            91..=93 => " - ",
            94..=97 => "... ",
            _ => " — ",
        }
    } else {
        match rng.gen_range(0..100) {
            0..=39 => "",
            40..=64 => "。",
            65..=74 => "！",
            75..=84 => " ",
            _ => "\n",
        }
    };
    t.push(sep);
}

/// Code points an item takes, with a space.
fn item_len(w: &World, item: Item) -> u32 {
    let n = match item {
        Item::Catalog(o) => w
            .offers
            .get(o as usize)
            .map_or(0, |o| o.tag.chars().count()),
        Item::Confirm(o) => w
            .offers
            .get(o as usize)
            .and_then(|o| o.confirm.as_ref())
            .map_or(0, |c| c.chars().count()),
        Item::Tag(s) | Item::Cashtag(s) => s.chars().count(),
        Item::Mention(u) => w.screen_name(u).len(),
    };
    n as u32 + 2
}

/// Appends an item, preceded by whitespace.
fn place_item(rng: &mut ChaCha8Rng, w: &World, t: &mut Text, item: Item) {
    t.space();
    match item {
        Item::Catalog(o) => {
            let Some(offer) = w.offers.get(o as usize) else {
                return;
            };
            let sign = if chance(rng, 0.05) { "＃" } else { "#" };
            let r: f64 = rng.gen();
            match &offer.nfd {
                Some(nfd) if r < 0.1 => t.push_tag(sign, nfd),
                _ if r < 0.55 => t.push_tag(sign, &offer.tag),
                _ if r < 0.80 => t.push_tag(sign, &offer.lower),
                _ if r < 0.88 => t.push_tag(sign, &offer.upper),
                _ => {
                    let mut chars = offer.tag.chars();
                    let mut tag: String = chars
                        .next()
                        .into_iter()
                        .flat_map(char::to_lowercase)
                        .collect();
                    tag.extend(chars);
                    t.push_tag(sign, &tag);
                }
            }
        }
        Item::Confirm(o) => {
            if let Some(confirm) = w.offers.get(o as usize).and_then(|o| o.confirm.as_ref()) {
                t.push_tag("#", confirm);
            }
        }
        Item::Tag(tag) => {
            let sign = if chance(rng, 0.01) { "＃" } else { "#" };
            t.push_tag(sign, tag);
        }
        Item::Mention(u) => t.push_mention(u, w.screen_name(u)),
        Item::Cashtag(sym) => t.push_symbol(sym),
    }
}

/// Writes a tweet's whole text for `plan` into `t`.
fn gen_text(
    rng: &mut ChaCha8Rng,
    w: &World,
    t: &mut Text,
    plan: &Plan,
    id: u64,
    author: u32,
    ms: i64,
) {
    t.clear();
    if let Some((_, user)) = plan.reply {
        t.push_mention(user, w.screen_name(user));
        t.push(" ");
        t.display_start = t.cp;
    }
    let items = || plan.items.iter().flatten();
    let links =
        (u32::from(plan.url) + u32::from(plan.media) + u32::from(plan.quote.is_some())) * 24;
    let mut reserve = links
        + items()
            .filter(|(p, _)| *p != Pos::Early)
            .map(|(_, i)| item_len(w, *i))
            .sum::<u32>();
    let (target, cap) = if plan.long {
        (rng.gen_range(150..=250), 275)
    } else {
        (rng.gen_range(12..=100), text::CLASSIC_LEN)
    };
    let mut after_entity = false;
    for (_, item) in items().filter(|(p, _)| *p == Pos::Early) {
        place_item(rng, w, t, *item);
        after_entity = true;
    }
    let mut mid_done = false;
    let place_mid = |rng: &mut ChaCha8Rng, t: &mut Text, reserve: &mut u32| {
        let mut any = false;
        for (_, item) in items().filter(|(p, _)| *p == Pos::Mid) {
            place_item(rng, w, t, *item);
            *reserve = reserve.saturating_sub(item_len(w, *item));
            any = true;
        }
        any
    };
    if plan.lang == Lang::Und {
        separator(rng, t, plan.lang, after_entity);
        for _ in 0..rng.gen_range(1..=4) {
            t.push(word(rng, pools::EMOJI));
        }
    } else {
        let pool = plan.lang.phrases();
        let mut first = true;
        loop {
            let phrase = if first && plan.purchase_phrase {
                word(rng, pools::PURCHASE)
            } else if chance(rng, 0.04) {
                word(rng, pools::EN)
            } else {
                word(rng, pool)
            };
            let len = phrase.chars().count() as u32 + 3;
            if (!first && t.cp >= target) || t.cp + len + reserve > cap {
                break;
            }
            separator(rng, t, plan.lang, after_entity);
            let at_start = t.cp == t.display_start;
            let spaced = plan.lang.spaced();
            let quotes = (spaced && chance(rng, 0.05)).then(|| {
                if chance(rng, 0.7) {
                    ("\"", "\"")
                } else {
                    ("“", "”")
                }
            });
            if let Some((open, _)) = quotes {
                t.push(open);
            }
            let mut chars = phrase.chars();
            if at_start && spaced && chance(rng, 0.5) {
                if let Some(c) = chars.next() {
                    t.push(&c.to_uppercase().to_string());
                }
            }
            t.push(chars.as_str());
            if let Some((_, close)) = quotes {
                t.push(close);
            }
            if plan.lang == Lang::En && chance(rng, 0.05) {
                t.push(" ");
                t.push(word(rng, pools::ACCENTED));
            }
            if chance(rng, 0.15) {
                if spaced && chance(rng, 0.6) {
                    t.push(" ");
                }
                let emoji = word(rng, pools::EMOJI);
                for _ in 0..*pick(rng, &[1, 1, 1, 2, 3]) {
                    t.push(emoji);
                }
            }
            first = false;
            after_entity = false;
            if !mid_done && t.cp >= target / 2 {
                mid_done = true;
                after_entity = place_mid(rng, t, &mut reserve);
            }
        }
    }
    if !mid_done {
        place_mid(rng, t, &mut reserve);
    }
    for (_, item) in items().filter(|(p, _)| *p == Pos::Late) {
        place_item(rng, w, t, *item);
    }
    if plan.url {
        let link = if plan.plain {
            (!w.plain_links.is_empty()).then(|| *pick(rng, &w.plain_links) as usize)
        } else {
            Some(rng.gen_range(0..w.links.len()))
        };
        if let Some(p) = link {
            t.space();
            t.push_url(UrlKind::Pool(p as u32), &w.links[p].shown);
        }
    }
    if let Some((qid, quser)) = plan.quote {
        let mut code = [0u8; 10];
        let mut s = String::with_capacity(10);
        world::base62(rng, &mut s, 10);
        code.copy_from_slice(&s.as_bytes()[..10]);
        t.space();
        t.push_url(
            UrlKind::Quote {
                code,
                id: qid,
                user: quser,
            },
            &format!("https://t.co/{s}"),
        );
    }
    if plan.media {
        let p = rng.gen_range(0..w.photos.len());
        let media = MediaEnt {
            pool: p as u32,
            media_id: {
                let before = ms.saturating_sub(rng.gen_range(2_000..120_000));
                snowflake(rng, before).min(id.saturating_sub(1))
            },
            owner_id: id,
            owner_user: author,
            i0: 0,
            i1: 0,
        };
        t.space();
        t.push_media(media, &w.photos[p].shown);
    }
    if plan.amp {
        t.space();
        t.push(word(rng, pools::AMP));
    }
    if t.is_empty() {
        t.push(word(rng, pools::EMOJI));
    }
}
