//! Everything fixed at construction: users (pre-rendered in pieces),
//! profile templates, links, photos, places, the catalog and the accounts.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use hashbuy_core::hashtag::normalize;
use hashbuy_core::tables::{
    default_confirm_hashtag, AccountRow, AccountsFile, CatalogFile, ModeRow, OfferRow,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::json::{push_escaped, push_string, push_twitter_date, push_u64};
use crate::pools;

/// Twitter's snowflake epoch (2010-11-04T01:42:54.657Z).
pub(crate) const TWEPOCH_MS: i64 = 1_288_834_974_657;

/// How many profile templates users share (a template is ~1 KB).
const TEMPLATES: usize = 2048;
/// Links in the pool.
const LINKS: usize = 4096;
/// Photos in the pool.
const PHOTOS: usize = 1024;

/// `true` with probability `p`.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// A uniformly chosen element; `slice` must not be empty.
pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, slice: &'a [T]) -> &'a T {
    &slice[rng.gen_range(0..slice.len())]
}

/// A uniformly chosen word; `words` must not be empty.
pub(crate) fn word(rng: &mut ChaCha8Rng, words: &[&'static str]) -> &'static str {
    words[rng.gen_range(0..words.len())]
}

/// `len` random characters of `[0-9A-Za-z]`.
pub(crate) fn base62(rng: &mut ChaCha8Rng, out: &mut String, len: usize) {
    const CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..len {
        out.push(char::from(CHARS[rng.gen_range(0..62)]));
    }
}

/// A snowflake id for a time, with random low bits.
pub(crate) fn snowflake(rng: &mut ChaCha8Rng, ms: i64) -> u64 {
    let since = ms.saturating_sub(TWEPOCH_MS).max(0) as u64;
    (since << 22) | rng.gen_range(0..1u64 << 22)
}

/// A user. Its strings live in [`World::arena`] at `off`, in this order:
/// id, name (JSON string with quotes), screen name, created_at.
pub(crate) struct User {
    pub id: u64,
    off: u32,
    id_len: u8,
    name_len: u16,
    sn_len: u8,
    created_len: u8,
    pub template: u32,
    pub protected: bool,
    pub linked: bool,
}

/// The shared bulk of user objects, in pieces around per-user fields.
pub(crate) struct Template {
    /// `"location":…,"url":…,"description":…,"translator_type":"none",`
    a: String,
    /// `a` with its description's `#` signs left out, when it has any: for
    /// lines that must hold no hashtag sign.
    a_plain: Option<String>,
    /// `"verified":…` through `"statuses_count":N,`
    b: String,
    /// `"utc_offset":null,` through `"profile_image_url_https":"…",`
    c: String,
    /// Time of the profile banner, when there is one.
    banner: Option<u64>,
    /// `"default_profile":…` through the closing `}`.
    d: String,
}

/// A catalog hashtag and the spellings tweets use.
pub(crate) struct OfferTag {
    pub tag: String,
    pub lower: String,
    pub upper: String,
    /// Decomposed (NFD) spelling, for accented hashtags.
    pub nfd: Option<String>,
    /// The confirmation hashtag of a confirm-mode offer.
    pub confirm: Option<String>,
}

/// A link: how it appears in text and its entity up to the indices.
pub(crate) struct Link {
    pub shown: String,
    pub json: String,
}

/// A photo: t.co link and rendered pieces of its media entity.
pub(crate) struct Photo {
    pub shown: String,
    /// From `"media_url"` to the start of the expanded URL's screen name.
    pub head: String,
    /// From `\/photo\/1"` to the end of `"sizes"` (no closing brace).
    pub tail: String,
}

/// Everything fixed at construction.
pub(crate) struct World {
    pub users: Vec<User>,
    arena: String,
    pub templates: Vec<Template>,
    /// Linked users, in accounts order.
    pub linked: Vec<u32>,
    pub offers: Vec<OfferTag>,
    pub links: Vec<Link>,
    /// Indices of the links that hold no `#` (in the text or the entity),
    /// for lines that must hold no hashtag sign.
    pub plain_links: Vec<u32>,
    pub photos: Vec<Photo>,
    pub places: Vec<String>,
    pub catalog: CatalogFile,
    pub accounts: AccountsFile,
}

impl World {
    /// Builds users, templates, catalog and accounts for the options.
    pub fn new(
        rng: &mut ChaCha8Rng,
        users: usize,
        linked: usize,
        offers: usize,
        confirm_share: f64,
        start_ms: i64,
    ) -> World {
        let users = users.max(linked).max(1);
        let templates = (0..TEMPLATES.min(users)).map(|_| template(rng)).collect();
        let (mut users, arena) = build_users(rng, users, TEMPLATES.min(users), start_ms);
        // Choose the linked users: a partial Fisher-Yates shuffle.
        let mut order: Vec<u32> = (0..users.len() as u32).collect();
        let linked = linked.min(order.len());
        for k in 0..linked {
            let j = rng.gen_range(k..order.len());
            order.swap(k, j);
        }
        order.truncate(linked);
        for &u in &order {
            users[u as usize].linked = true;
        }
        let links: Vec<Link> = (0..LINKS).map(|_| link(rng)).collect();
        let plain_links = (0..links.len() as u32)
            .filter(|&i| {
                let l = &links[i as usize];
                !l.shown.contains('#') && !l.json.contains('#')
            })
            .collect();
        let mut world = World {
            users,
            arena,
            templates,
            linked: order,
            offers: Vec::new(),
            links,
            plain_links,
            photos: (0..PHOTOS).map(|_| photo(rng)).collect(),
            places: pools::PLACES.iter().map(place).collect(),
            catalog: CatalogFile::default(),
            accounts: AccountsFile::default(),
        };
        world.build_catalog(rng, offers, confirm_share, start_ms);
        world.build_accounts(rng);
        world
    }

    fn slice(&self, from: usize, len: usize) -> &str {
        self.arena.get(from..from + len).unwrap_or("")
    }

    /// The user's id as a string.
    pub fn id_str(&self, u: u32) -> &str {
        let user = &self.users[u as usize];
        self.slice(user.off as usize, user.id_len.into())
    }

    /// The user's name as a JSON string (quoted, escaped).
    pub fn name_json(&self, u: u32) -> &str {
        let user = &self.users[u as usize];
        self.slice(
            user.off as usize + usize::from(user.id_len),
            user.name_len.into(),
        )
    }

    /// The user's screen name.
    pub fn screen_name(&self, u: u32) -> &str {
        let user = &self.users[u as usize];
        let from = user.off as usize + usize::from(user.id_len) + usize::from(user.name_len);
        self.slice(from, user.sn_len.into())
    }

    fn created(&self, u: u32) -> &str {
        let user = &self.users[u as usize];
        let from = user.off as usize
            + usize::from(user.id_len)
            + usize::from(user.name_len)
            + usize::from(user.sn_len);
        self.slice(from, user.created_len.into())
    }

    /// Appends the user object; `plain`: with no hashtag sign in its
    /// description (the only part of a profile that can hold one).
    pub fn write_user(&self, out: &mut Vec<u8>, u: u32, plain: bool) {
        let user = &self.users[u as usize];
        let t = &self.templates[user.template as usize];
        let id = self.id_str(u).as_bytes();
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(id);
        out.extend_from_slice(b",\"id_str\":\"");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\",\"name\":");
        out.extend_from_slice(self.name_json(u).as_bytes());
        out.extend_from_slice(b",\"screen_name\":\"");
        out.extend_from_slice(self.screen_name(u).as_bytes());
        out.extend_from_slice(b"\",");
        let a = match &t.a_plain {
            Some(a_plain) if plain => a_plain,
            _ => &t.a,
        };
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(if user.protected {
            b"\"protected\":true,"
        } else {
            b"\"protected\":false,"
        });
        out.extend_from_slice(t.b.as_bytes());
        out.extend_from_slice(b"\"created_at\":\"");
        out.extend_from_slice(self.created(u).as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(t.c.as_bytes());
        if let Some(banner) = t.banner {
            out.extend_from_slice(
                b"\"profile_banner_url\":\"https:\\/\\/pbs.twimg.com\\/profile_banners\\/",
            );
            out.extend_from_slice(id);
            out.extend_from_slice(b"\\/");
            push_u64(out, banner);
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(t.d.as_bytes());
    }

    /// Appends a `user_mentions` entry.
    pub fn write_mention(&self, out: &mut Vec<u8>, u: u32, i0: u32, i1: u32) {
        let id = self.id_str(u).as_bytes();
        out.extend_from_slice(b"{\"screen_name\":\"");
        out.extend_from_slice(self.screen_name(u).as_bytes());
        out.extend_from_slice(b"\",\"name\":");
        out.extend_from_slice(self.name_json(u).as_bytes());
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id);
        out.extend_from_slice(b",\"id_str\":\"");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\",\"indices\":[");
        push_u64(out, i0.into());
        out.push(b',');
        push_u64(out, i1.into());
        out.extend_from_slice(b"]}");
    }

    fn build_catalog(
        &mut self,
        rng: &mut ChaCha8Rng,
        offers: usize,
        confirm_share: f64,
        start_ms: i64,
    ) {
        let merchants = offers.div_ceil(30).clamp(1, 300);
        let merchant_ids: Vec<String> = (0..merchants)
            .map(|j| {
                let a = pools::MERCHANT_A.len();
                let b = pools::MERCHANT_B.len();
                format!(
                    "{}-{}",
                    pools::MERCHANT_A[j % a],
                    pools::MERCHANT_B[(j / a + j) % b]
                )
            })
            .collect();
        let mut keys: HashSet<String> = pools::TAGS
            .iter()
            .map(|t| normalize(t).into_owned())
            .collect();
        let mut ids: HashSet<String> = HashSet::new();
        let day = 86_400_000i64;
        for i in 0..offers {
            let accented = chance(rng, 0.015);
            let mut found = None;
            for _ in 0..40 {
                let verb = word(rng, pools::VERBS);
                let number: u32 = if chance(rng, 0.7) {
                    rng.gen_range(1..=99)
                } else {
                    rng.gen_range(100..=9999)
                };
                let (tag, nfd, slug) = if accented {
                    let (noun, decomposed, ascii) = *pick(rng, pools::ACCENTED_NOUNS);
                    (
                        format!("{verb}{noun}{number}"),
                        Some(format!("{verb}{decomposed}{number}")),
                        format!("{ascii}-{number}"),
                    )
                } else {
                    let adj = *pick(rng, pools::ADJECTIVES);
                    let noun = *pick(rng, pools::NOUNS);
                    let slug = format!("{adj}-{noun}-{number}").to_ascii_lowercase();
                    (format!("{verb}{adj}{noun}{number}"), None, slug)
                };
                if keys.insert(normalize(&tag).into_owned()) {
                    found = Some((tag, nfd, slug));
                    break;
                }
            }
            let (tag, nfd, slug) = found.unwrap_or_else(|| {
                // A dense catalog: fall back to numbered items.
                let mut k = 0usize;
                loop {
                    let tag = format!("BuyItem{i}x{k}");
                    if keys.insert(normalize(&tag).into_owned()) {
                        break (tag, None, format!("item-{i}-{k}"));
                    }
                    k += 1;
                }
            });
            let offer_id = if ids.insert(slug.clone()) {
                slug
            } else {
                let id = format!("{slug}-{i}");
                ids.insert(id.clone());
                id
            };
            // Times: mostly started, some with an end; a few expired, a
            // few not yet started.
            let hour = 3_600_000i64;
            let round = |ms: i64| ms - ms.rem_euclid(hour);
            let r: f64 = rng.gen();
            let (starts, ends) = if r < 0.02 {
                let s = start_ms.saturating_sub(rng.gen_range(10..90) * day);
                let e = start_ms.saturating_sub(rng.gen_range(1..9) * day);
                (Some(round(s)), Some(round(e)))
            } else if r < 0.03 {
                let s = start_ms.saturating_add(rng.gen_range(1..60) * 60_000);
                (Some(s - s.rem_euclid(60_000)), None)
            } else if r < 0.04 {
                let s = round(start_ms.saturating_add(rng.gen_range(1..30) * day));
                (Some(s), Some(s.saturating_add(30 * day)))
            } else {
                let s = if chance(rng, 0.1) {
                    None
                } else {
                    Some(round(start_ms.saturating_sub(rng.gen_range(1..180) * day)))
                };
                let e = if chance(rng, 0.65) {
                    None
                } else {
                    Some(round(start_ms.saturating_add(rng.gen_range(7..120) * day)))
                };
                (s, e)
            };
            // Far-off start times saturate; never write an empty window.
            let ends = match (starts, ends) {
                (Some(s), Some(e)) if e <= s => None,
                _ => ends,
            };
            let currency = match rng.gen_range(0..100) {
                0..=84 => "usd",
                85..=92 => "eur",
                93..=97 => "gbp",
                _ => "jpy",
            };
            let amount = if currency == "jpy" {
                rng.gen_range(1..=500u64) * 100
            } else {
                let units = rng.gen_range(1..=499u64);
                let cents = *pick(rng, &[0u64, 0, 99, 99, 50, 95]);
                units * 100 + cents
            };
            let max_per_user = if chance(rng, 0.3) {
                None
            } else {
                Some(rng.gen_range(1..=3))
            };
            let lower = tag.to_lowercase();
            let upper = tag.to_uppercase();
            let confirm = in_share(i, confirm_share).then(|| {
                let derived = default_confirm_hashtag(&tag);
                let mut confirm = derived.clone();
                let mut k = 0;
                while !keys.insert(normalize(&confirm).into_owned()) {
                    k += 1;
                    confirm = format!("{derived}x{k}");
                }
                confirm
            });
            self.catalog.offers.push(OfferRow {
                hashtag: tag.clone(),
                offer_id,
                merchant_id: pick(rng, &merchant_ids).clone(),
                amount,
                currency: currency.to_owned(),
                starts_at: starts.and_then(DateTime::<Utc>::from_timestamp_millis),
                ends_at: ends.and_then(DateTime::<Utc>::from_timestamp_millis),
                max_per_user,
                title: None,
                mode: confirm.is_some().then_some(ModeRow::Confirm),
                confirm_hashtag: confirm.clone(),
                confirm_window_s: None,
                stock: None,
            });
            self.offers.push(OfferTag {
                tag,
                lower,
                upper,
                nfd,
                confirm,
            });
        }
    }

    fn build_accounts(&mut self, rng: &mut ChaCha8Rng) {
        for k in 0..self.linked.len() {
            let u = self.linked[k];
            let mut customer_id = String::from("cus_");
            base62(rng, &mut customer_id, 14);
            let payment_method_id = match rng.gen_range(0..100) {
                0..=1 => "pm_card_chargeDeclined",
                2..=3 => "pm_card_chargeDeclinedInsufficientFunds",
                _ => "pm_card_visa",
            };
            let spend_limit = if chance(rng, 0.2) {
                Some(*pick(
                    rng,
                    &[5_000u64, 10_000, 20_000, 50_000, 100_000, 200_000],
                ))
            } else {
                None
            };
            self.accounts.accounts.push(AccountRow {
                user_id: self.id_str(u).to_owned(),
                customer_id,
                payment_method_id: payment_method_id.to_owned(),
                spend_limit,
            });
        }
    }
}

/// A user id and the time of the account: old numeric ids (2006–2015) or
/// snowflake ids (later), most recent ids above 2^53.
fn user_id(rng: &mut ChaCha8Rng, start_ms: i64) -> (u64, i64) {
    const Y2006: i64 = 1_143_000_000_000; // 2006-03
    const Y2015: i64 = 1_430_000_000_000; // 2015-04
    let r: f64 = rng.gen();
    if r < 0.5 {
        // Sequential era: ids grow with time, roughly linearly.
        let id = if r < 0.05 {
            rng.gen_range(12..10_000_000u64)
        } else {
            rng.gen_range(10_000_000..4_200_000_000u64)
        };
        let frac = id as f64 / 4_200_000_000f64;
        (id, Y2006 + ((Y2015 - Y2006) as f64 * frac) as i64)
    } else {
        let ms = rng.gen_range(Y2015..start_ms.max(Y2015 + 1));
        (snowflake(rng, ms), ms)
    }
}

fn build_users(
    rng: &mut ChaCha8Rng,
    n: usize,
    templates: usize,
    start_ms: i64,
) -> (Vec<User>, String) {
    let mut users = Vec::with_capacity(n);
    let mut arena = String::with_capacity(n * 48);
    let mut ids: HashSet<u64> = HashSet::with_capacity(n);
    let mut names: HashSet<String> = HashSet::with_capacity(n);
    let mut buf = Vec::with_capacity(64);
    for i in 0..n {
        let (id, created_ms) = loop {
            let (id, ms) = user_id(rng, start_ms);
            if ids.insert(id) {
                break (id, ms);
            }
        };
        let (first, first_h) = *pick(rng, pools::FIRST);
        let (last, last_h) = *pick(rng, pools::LAST);
        let extra = word(rng, pools::NAME_EXTRA);
        let emoji = word(rng, pools::EMOJI);
        let display = match rng.gen_range(0..100) {
            0..=34 => format!("{first} {last}"),
            35..=54 => first.to_owned(),
            55..=64 => format!("{first} {last} {emoji}"),
            65..=71 => first.to_lowercase(),
            72..=79 => format!("{first} | {extra}"),
            80..=84 => format!("Dr. {first} {last}"),
            85..=89 => format!(
                "{first} \"{}\" {last}",
                first_h.to_uppercase().get(..2).unwrap_or("J")
            ),
            _ => format!("{first}{emoji}"),
        };
        let mut sn = String::new();
        for attempt in 0..12 {
            // Short forms first; crowded ones get digits.
            let form = if attempt < 2 {
                rng.gen_range(0..6)
            } else {
                rng.gen_range(2..6)
            };
            let digits = rng.gen_range(0..10u32.pow(2 + attempt.min(3)));
            let candidate = match form {
                0 => format!("{first_h}{last_h}"),
                1 => format!("{first_h}_{last_h}"),
                2 => format!("{first_h}{digits}"),
                3 => format!("{first_h}_{last_h}{digits}"),
                4 => format!("the{first_h}{digits}"),
                _ => {
                    let mut s = String::new();
                    for part in [first_h, last_h] {
                        let mut cs = part.chars();
                        if let Some(c) = cs.next() {
                            s.push(c.to_ascii_uppercase());
                            s.extend(cs);
                        }
                    }
                    s.push_str(&digits.to_string());
                    s
                }
            };
            if candidate.len() <= 15 && names.insert(candidate.to_ascii_lowercase()) {
                sn = candidate;
                break;
            }
        }
        if sn.is_empty() {
            // Still crowded: a numbered handle, unique by construction.
            let mut k = i;
            sn = loop {
                let s = format!("user{k}");
                if names.insert(s.clone()) {
                    break s;
                }
                k += n;
            };
        }
        let off = arena.len() as u32;
        let id_str = id.to_string();
        arena.push_str(&id_str);
        buf.clear();
        push_string(&mut buf, &display);
        let name_json = String::from_utf8_lossy(&buf).into_owned();
        arena.push_str(&name_json);
        arena.push_str(&sn);
        buf.clear();
        push_twitter_date(&mut buf, created_ms);
        let created = String::from_utf8_lossy(&buf).into_owned();
        arena.push_str(&created);
        users.push(User {
            id,
            off,
            id_len: id_str.len() as u8,
            name_len: name_json.len().min(u16::MAX.into()) as u16,
            sn_len: sn.len() as u8,
            created_len: created.len().min(255) as u8,
            template: rng.gen_range(0..templates.max(1)) as u32,
            protected: chance(rng, 0.02),
            linked: false,
        });
    }
    (users, arena)
}

/// A count spread evenly over orders of magnitude, at most `max`.
/// Integer-only, so identical on every platform.
pub(crate) fn count(rng: &mut ChaCha8Rng, max: u64) -> u64 {
    let digits = max.max(1).ilog10().min(19);
    let scale = 10u64.pow(rng.gen_range(0..=digits));
    rng.gen_range(0..=scale).min(max)
}

fn hex_color(rng: &mut ChaCha8Rng) -> String {
    format!("{:06X}", rng.gen_range(0..0x100_0000u32))
}

fn template(rng: &mut ChaCha8Rng) -> Template {
    let mut out = Vec::with_capacity(1024);
    // a
    out.extend_from_slice(b"\"location\":");
    match *pick(rng, pools::LOCATIONS) {
        Some(l) => push_string(&mut out, l),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"url\":");
    if chance(rng, 0.35) {
        let (host, _) = *pick(rng, pools::SITES);
        let mut url = format!("https://{host}/");
        base62(rng, &mut url, 6);
        push_string(&mut out, &url);
    } else {
        out.extend_from_slice(b"null");
    }
    let description = (!chance(rng, 0.1)).then(|| word(rng, pools::DESCRIPTIONS));
    let before_description = out.len();
    let push_description = |out: &mut Vec<u8>, description: Option<&str>| {
        out.extend_from_slice(b",\"description\":");
        match description {
            Some(d) => push_string(out, d),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"translator_type\":\"none\",");
    };
    push_description(&mut out, description);
    let a = String::from_utf8_lossy(&out).into_owned();
    // The same profile without the description's signs ("Proud BuyLocal
    // supporter"): a user may look a little different from line to line,
    // which real profiles do too as users edit them.
    let a_plain = description.filter(|d| d.contains('#')).map(|d| {
        out.truncate(before_description);
        push_description(&mut out, Some(&d.replace('#', "")));
        String::from_utf8_lossy(&out).into_owned()
    });
    // b
    out.clear();
    let verified = chance(rng, 0.01);
    out.extend_from_slice(if verified {
        b"\"verified\":true,"
    } else {
        b"\"verified\":false,"
    });
    let followers = if verified {
        10_000 + count(rng, 5_000_000)
    } else {
        count(rng, 200_000)
    };
    for (key, value) in [
        ("followers_count", followers),
        ("friends_count", count(rng, 10_000)),
        ("listed_count", count(rng, 1_000)),
        ("favourites_count", count(rng, 200_000)),
        ("statuses_count", 1 + count(rng, 300_000)),
    ] {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_u64(&mut out, value);
        out.push(b',');
    }
    let b = String::from_utf8_lossy(&out).into_owned();
    // c
    out.clear();
    let default_profile = chance(rng, 0.45);
    out.extend_from_slice(b"\"utc_offset\":null,\"time_zone\":null,\"geo_enabled\":");
    out.extend_from_slice(if chance(rng, 0.3) { b"true" } else { b"false" });
    out.extend_from_slice(
        b",\"lang\":null,\"contributors_enabled\":false,\"is_translator\":false,",
    );
    let (bg, link, border, fill, text) = if default_profile {
        (
            "F5F8FA".to_owned(),
            "1DA1F2".to_owned(),
            "C0DEED".to_owned(),
            "DDEEF6".to_owned(),
            "333333".to_owned(),
        )
    } else {
        (
            hex_color(rng),
            hex_color(rng),
            hex_color(rng),
            hex_color(rng),
            hex_color(rng),
        )
    };
    let theme = rng.gen_range(1..=15);
    let fields = [
        format!("\"profile_background_color\":\"{bg}\","),
        if default_profile {
            "\"profile_background_image_url\":null,\"profile_background_image_url_https\":null,"
                .to_owned()
        } else {
            format!(
                "\"profile_background_image_url\":\"http:\\/\\/abs.twimg.com\\/images\\/themes\\/theme{theme}\\/bg.png\",\"profile_background_image_url_https\":\"https:\\/\\/abs.twimg.com\\/images\\/themes\\/theme{theme}\\/bg.png\","
            )
        },
        format!(
            "\"profile_background_tile\":{},",
            !default_profile && chance(rng, 0.2)
        ),
        format!("\"profile_link_color\":\"{link}\","),
        format!("\"profile_sidebar_border_color\":\"{border}\","),
        format!("\"profile_sidebar_fill_color\":\"{fill}\","),
        format!("\"profile_text_color\":\"{text}\","),
        "\"profile_use_background_image\":true,".to_owned(),
    ];
    for f in &fields {
        out.extend_from_slice(f.as_bytes());
    }
    let mut image = format!(
        "pbs.twimg.com\\/profile_images\\/{}\\/",
        rng.gen_range(1_000_000_000_000_000_000u64..1_900_000_000_000_000_000)
    );
    base62(rng, &mut image, 8);
    image.push_str("_normal.jpg");
    out.extend_from_slice(format!("\"profile_image_url\":\"http:\\/\\/{image}\",\"profile_image_url_https\":\"https:\\/\\/{image}\",").as_bytes());
    let c = String::from_utf8_lossy(&out).into_owned();
    let banner = chance(rng, 0.6).then(|| rng.gen_range(1_300_000_000..1_780_000_000u64));
    let d = format!(
        "\"default_profile\":{default_profile},\"default_profile_image\":false,\"following\":null,\"follow_request_sent\":null,\"notifications\":null,\"withheld_in_countries\":[]}}"
    );
    Template {
        a,
        a_plain,
        b,
        c,
        banner,
        d,
    }
}

fn link(rng: &mut ChaCha8Rng) -> Link {
    let (host, path) = *pick(rng, pools::SITES);
    let mut expanded = format!("https://{host}{path}");
    if path.ends_with('#') {
        expanded.push_str(word(
            rng,
            &[
                "install", "specials", "shipping", "comments", "History", "top",
            ],
        ));
    } else if path.ends_with('=') || path.ends_with('/') && path.len() > 1 {
        base62(rng, &mut expanded, 11);
    } else {
        base62(rng, &mut expanded, 8);
    }
    let bare = expanded
        .trim_start_matches("https://")
        .trim_start_matches("www.");
    let display = if bare.chars().count() > 26 {
        let mut d: String = bare.chars().take(25).collect();
        d.push('…');
        d
    } else {
        bare.to_owned()
    };
    // Now and then a link written out in full (as old clients did), so a
    // `#fragment` sits in the text inside a URL.
    let shown = if expanded.contains('#') && chance(rng, 0.3) {
        expanded.clone()
    } else {
        let mut s = String::from("https://t.co/");
        base62(rng, &mut s, 10);
        s
    };
    let mut json = Vec::with_capacity(160);
    json.extend_from_slice(b"{\"url\":");
    push_string(&mut json, &shown);
    json.extend_from_slice(b",\"expanded_url\":");
    push_string(&mut json, &expanded);
    json.extend_from_slice(b",\"display_url\":");
    push_string(&mut json, &display);
    json.extend_from_slice(b",\"indices\":[");
    Link {
        shown,
        json: String::from_utf8_lossy(&json).into_owned(),
    }
}

fn photo(rng: &mut ChaCha8Rng) -> Photo {
    let mut code = String::new();
    base62(rng, &mut code, 10);
    let mut key = String::new();
    base62(rng, &mut key, 15);
    let (w, h) = *pick(
        rng,
        &[
            (1200u32, 900u32),
            (900, 1200),
            (1080, 1080),
            (1920, 1080),
            (1536, 2048),
        ],
    );
    let head = format!(
        "\"media_url\":\"http:\\/\\/pbs.twimg.com\\/media\\/{key}.jpg\",\"media_url_https\":\"https:\\/\\/pbs.twimg.com\\/media\\/{key}.jpg\",\"url\":\"https:\\/\\/t.co\\/{code}\",\"display_url\":\"pic.twitter.com\\/{code}\",\"expanded_url\":\"https:\\/\\/twitter.com\\/"
    );
    let fit = |max: u32| {
        let scale = f64::from(max) / f64::from(w.max(h));
        if scale >= 1.0 {
            (w, h)
        } else {
            ((f64::from(w) * scale) as u32, (f64::from(h) * scale) as u32)
        }
    };
    let (mw, mh) = fit(1200);
    let (sw, sh) = fit(680);
    let (lw, lh) = fit(2048);
    let tail = format!(
        "\\/photo\\/1\",\"type\":\"photo\",\"sizes\":{{\"thumb\":{{\"w\":150,\"h\":150,\"resize\":\"crop\"}},\"medium\":{{\"w\":{mw},\"h\":{mh},\"resize\":\"fit\"}},\"small\":{{\"w\":{sw},\"h\":{sh},\"resize\":\"fit\"}},\"large\":{{\"w\":{lw},\"h\":{lh},\"resize\":\"fit\"}}}}"
    );
    Photo {
        shown: format!("https://t.co/{code}"),
        head,
        tail,
    }
}

fn place(p: &pools::PlaceRow) -> String {
    let (id, kind, name, full, cc, country, lon, lat) = *p;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"url\":\"https:\\/\\/api.twitter.com\\/1.1\\/geo\\/id\\/");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b".json\",\"place_type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"name\":");
    push_string(&mut out, name);
    out.extend_from_slice(b",\"full_name\":");
    push_string(&mut out, full);
    out.extend_from_slice(b",\"country_code\":\"");
    push_escaped(&mut out, cc);
    out.extend_from_slice(b"\",\"country\":");
    push_string(&mut out, country);
    let (w, e, s, n) = (lon - 0.12, lon + 0.12, lat - 0.09, lat + 0.09);
    out.extend_from_slice(
        format!(
            ",\"bounding_box\":{{\"type\":\"Polygon\",\"coordinates\":[[[{w:.6},{s:.6}],[{w:.6},{n:.6}],[{e:.6},{n:.6}],[{e:.6},{s:.6}]]]}},\"attributes\":{{}}}}"
        )
        .as_bytes(),
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Centre of a place of [`pools::PLACES`].
pub(crate) fn place_centre(i: usize) -> (f64, f64) {
    pools::PLACES.get(i).map_or((0.0, 0.0), |p| (p.6, p.7))
}

/// Whether item `i` of a sequence is among a `share` of its items spread
/// evenly (exactly `floor(n * share)` of the first `n`), without drawing
/// from the generator: a share of 0 leaves every other draw, and so the
/// bytes, as they were.
fn in_share(i: usize, share: f64) -> bool {
    let before = (i as f64 * share).floor();
    ((i + 1) as f64 * share).floor() > before
}
