//! Black-box specs of the synthetic firehose, through the public API only.

use std::collections::HashSet;

use hashbuy_core::hashtag::normalize;
use hashbuy_core::tables::{Accounts, Catalog};
use hashbuy_gen::{Generator, Options};
use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Small worlds keep debug-build tests quick.
fn small(seed: u64, purchase_share: f64) -> Options {
    Options {
        seed,
        purchase_share,
        offers: 500,
        linked_users: 1_000,
        users: 20_000,
        ..Options::default()
    }
}

fn lines(generator: &mut Generator, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut line = Vec::new();
            generator.write_next(&mut line);
            line
        })
        .collect()
}

fn parse(line: &[u8]) -> Result<Value> {
    Ok(serde_json::from_slice(line)?)
}

const NOTICES: [&str; 6] = [
    "delete",
    "limit",
    "scrub_geo",
    "status_withheld",
    "user_withheld",
    "warning",
];

fn is_notice(v: &Value) -> bool {
    NOTICES.iter().any(|k| v.get(k).is_some())
}

/// The hashtags a tweet's own text carries (its `extended_tweet`'s when
/// truncated).
fn own_hashtags(tweet: &Value) -> Vec<String> {
    let entities = if tweet["truncated"] == Value::Bool(true) {
        &tweet["extended_tweet"]["entities"]
    } else {
        &tweet["entities"]
    };
    entities["hashtags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn catalog_keys(generator: &Generator) -> HashSet<String> {
    generator
        .catalog()
        .offers
        .iter()
        .map(|o| normalize(&o.hashtag).into_owned())
        .collect()
}

fn carries_catalog_tag(tweet: &Value, keys: &HashSet<String>) -> bool {
    own_hashtags(tweet)
        .iter()
        .any(|t| keys.contains(normalize(t).as_ref()))
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let mut a = Generator::new(small(7, 0.05));
    let mut b = Generator::new(small(7, 0.05));
    let mut c = Generator::new(small(8, 0.05));
    assert_eq!(a.catalog(), b.catalog());
    assert_eq!(a.accounts(), b.accounts());
    assert_ne!(a.catalog(), c.catalog());
    let (la, lb, lc) = (
        lines(&mut a, 3_000),
        lines(&mut b, 3_000),
        lines(&mut c, 3_000),
    );
    assert_eq!(la, lb);
    assert_ne!(la, lc);
}

#[test]
fn every_line_is_one_json_object_without_newline() -> Result {
    let mut generator = Generator::new(small(1, 0.05));
    let mut out = Vec::new();
    for i in 0..20_000 {
        out.clear();
        generator.write_next(&mut out);
        assert!(!out.contains(&b'\n'), "line {i} holds a raw newline");
        let value =
            parse(&out).map_err(|e| format!("line {i}: {e}: {}", String::from_utf8_lossy(&out)))?;
        assert!(value.is_object(), "line {i} is not an object");
    }
    Ok(())
}

#[test]
fn write_next_appends() -> Result {
    let mut generator = Generator::new(small(3, 0.01));
    let mut out = b"prefix".to_vec();
    generator.write_next(&mut out);
    assert!(out.starts_with(b"prefix{"));
    parse(&out[6..])?;
    Ok(())
}

#[test]
fn shares_roughly_hold() -> Result {
    let n = 20_000;
    let share = 0.05;
    let mut generator = Generator::new(small(11, share));
    let keys = catalog_keys(&generator);
    let linked: HashSet<String> = generator
        .accounts()
        .accounts
        .into_iter()
        .map(|a| a.user_id)
        .collect();
    let (mut notices, mut deletes, mut retweets, mut quotes, mut long) = (0, 0, 0, 0, 0);
    let (mut purchases, mut purchase_linked, mut purchase_retweets, mut ordinary_tags) =
        (0, 0, 0, 0);
    let (mut escaped, mut raw_utf8) = (0, 0);
    for line in lines(&mut generator, n) {
        if line.windows(2).any(|w| w == b"\\u") {
            escaped += 1;
        }
        if !line.is_ascii() {
            raw_utf8 += 1;
        }
        let v = parse(&line)?;
        if is_notice(&v) {
            notices += 1;
            if v.get("delete").is_some() {
                deletes += 1;
            }
            continue;
        }
        let retweet = v.get("retweeted_status").is_some();
        retweets += usize::from(retweet);
        quotes += usize::from(v.get("quoted_status").is_some());
        long += usize::from(v["truncated"] == Value::Bool(true));
        if carries_catalog_tag(&v, &keys) {
            purchases += 1;
            if retweet {
                purchase_retweets += 1;
            } else if v["user"]["id_str"]
                .as_str()
                .is_some_and(|id| linked.contains(id))
            {
                purchase_linked += 1;
            }
        } else if !own_hashtags(&v).is_empty() {
            ordinary_tags += 1;
        }
    }
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    let within = |name: &str, k: usize, lo: f64, hi: f64| {
        let p = pct(k);
        assert!((lo..=hi).contains(&p), "{name}: {p:.2}% not in {lo}..={hi}");
    };
    within("notices", notices, 1.8, 3.2);
    assert!(deletes * 10 > notices * 7, "deletes are most notices");
    within("retweets", retweets, 17.0, 23.0);
    within("quotes", quotes, 2.0, 4.5);
    within("long", long, 3.5, 7.0);
    within("purchases", purchases, 4.0, 6.0);
    // The default hashtag share, 10% of the 95% of lines that do not buy,
    // less retweets whose text is cut before the retweeted hashtags.
    within("ordinary hashtags", ordinary_tags, 7.5, 11.5);
    within("escaped lines", escaped, 15.0, 35.0);
    assert!(raw_utf8 > n / 4, "many lines carry raw UTF-8");
    assert!(purchase_retweets > 0, "some purchase lines are retweets");
    let own = purchases - purchase_retweets;
    let linked_share = purchase_linked as f64 / own as f64;
    assert!(
        (0.84..=0.96).contains(&linked_share),
        "linked authors: {linked_share:.3}"
    );
    Ok(())
}

#[test]
fn purchase_share_zero_and_one() -> Result {
    let mut none = Generator::new(small(5, 0.0));
    let keys = catalog_keys(&none);
    for line in lines(&mut none, 3_000) {
        let v = parse(&line)?;
        if !is_notice(&v) {
            assert!(
                !carries_catalog_tag(&v, &keys),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }
    let mut all = Generator::new(small(5, 1.0));
    let keys = catalog_keys(&all);
    for line in lines(&mut all, 1_000) {
        let v = parse(&line)?;
        assert!(
            carries_catalog_tag(&v, &keys),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }
    Ok(())
}

/// Whether a line's bytes hold a hashtag sign in any spelling a matcher's
/// byte scan looks for: `#`, the UTF-8 of `＃` (U+FF03), or a `\u0023` or
/// `\uff03` escape in any case of hex digits.
fn holds_sign(line: &[u8]) -> bool {
    let lower = line.to_ascii_lowercase();
    [&b"#"[..], "＃".as_bytes(), b"\\u0023", b"\\uff03"]
        .iter()
        .any(|sign| lower.windows(sign.len()).any(|w| w == *sign))
}

/// Whether a line buys or retweets a purchase tweet: the purchase lines,
/// whose share `purchase_share` sets.
fn is_purchase_line(v: &Value, keys: &HashSet<String>) -> bool {
    carries_catalog_tag(v, keys)
        || v.get("retweeted_status")
            .is_some_and(|rt| carries_catalog_tag(rt, keys))
}

/// What a stream's lines hold, counted over `n` lines.
#[derive(Debug, Default)]
struct Signs {
    lines: usize,
    purchases: usize,
    /// Purchase lines that hold a sign (all should).
    purchases_signed: usize,
    /// Lines that do not buy.
    others: usize,
    /// Lines that do not buy and hold a sign somewhere in their bytes.
    others_signed: usize,
    /// Lines that do not buy whose own text (a retweet: the retweeted
    /// tweet's) carries a hashtag entity.
    others_tagged: usize,
    notices: usize,
}

fn count_signs(options: Options, n: usize) -> Result<Signs> {
    let mut generator = Generator::new(options);
    let keys = catalog_keys(&generator);
    let mut signs = Signs {
        lines: n,
        ..Signs::default()
    };
    for (i, line) in lines(&mut generator, n).into_iter().enumerate() {
        let v = parse(&line)?;
        let signed = holds_sign(&line);
        if is_purchase_line(&v, &keys) {
            signs.purchases += 1;
            signs.purchases_signed += usize::from(signed);
            continue;
        }
        signs.others += 1;
        signs.others_signed += usize::from(signed);
        if is_notice(&v) {
            signs.notices += 1;
            continue;
        }
        let own = v.get("retweeted_status").unwrap_or(&v);
        if !own_hashtags(own).is_empty() {
            signs.others_tagged += 1;
            let at = format!("line {i}");
            check_tweet(&v, &at);
            for key in ["retweeted_status", "quoted_status"] {
                if let Some(embedded) = v.get(key) {
                    check_tweet(embedded, &format!("{at}.{key}"));
                }
            }
        }
    }
    Ok(signs)
}

/// Asserts that `k` of `n` draws is a share `p` up to binomial noise: 4.5
/// standard deviations, which a fair draw exceeds about once in 150,000
/// seeds; exactly `p` when `p` is 0 or 1, where there is no noise.
fn assert_share(name: &str, k: usize, n: usize, p: f64) {
    let measured = k as f64 / n.max(1) as f64;
    let sd = (p * (1.0 - p) / n.max(1) as f64).sqrt();
    assert!(
        (measured - p).abs() <= 4.5 * sd,
        "{name}: {k} of {n} is {measured:.4}, expected {p} ± {:.4}",
        4.5 * sd
    );
}

/// The default hashtag share is the published one: Suh et al. (SocialCom
/// 2010) counted a hashtag in 10.1% of 74 million tweets.
#[test]
fn the_default_hashtag_share_is_a_tenth() {
    assert_eq!(Options::default().hashtag_share, 0.10);
    assert_eq!(hashbuy_gen::DEFAULT_HASHTAG_SHARE, 0.10);
}

/// Over 20,000 lines, the share of the lines that do not buy holding any
/// sign is the option's, within binomial noise; the purchase share and the
/// notices' share among the other lines stay what they were.
#[test]
fn hashtag_share_sets_the_share_of_other_lines_holding_a_sign() -> Result {
    let purchase_share = 0.05;
    for (seed, hashtag_share) in [(31, 0.1), (32, 0.5)] {
        let signs = count_signs(
            Options {
                hashtag_share,
                ..small(seed, purchase_share)
            },
            20_000,
        )?;
        let at = format!("share {hashtag_share}: {signs:?}");
        assert_share(&at, signs.others_signed, signs.others, hashtag_share);
        assert_share(&at, signs.purchases, signs.lines, purchase_share);
        assert_eq!(signs.purchases_signed, signs.purchases, "{at}");
        assert_share(&at, signs.notices, signs.others, 0.025);
        // The signs are hashtags in the text, never only in profiles,
        // links or a quoted tweet: each line holding one carries a
        // hashtag entity of its own, and no other line does.
        assert_eq!(signs.others_tagged, signs.others_signed, "{at}");
    }
    Ok(())
}

/// At 0 no line that does not buy holds a sign in any spelling anywhere:
/// not in its text, profiles, links, source or embedded tweets.
#[test]
fn hashtag_share_zero_leaves_no_sign_outside_purchases() -> Result {
    let purchase_share = 0.05;
    let signs = count_signs(
        Options {
            hashtag_share: 0.0,
            ..small(33, purchase_share)
        },
        20_000,
    )?;
    assert_eq!(signs.others_signed, 0, "{signs:?}");
    assert_eq!(signs.others_tagged, 0, "{signs:?}");
    assert_eq!(signs.purchases_signed, signs.purchases, "{signs:?}");
    assert_share("purchases", signs.purchases, signs.lines, purchase_share);
    assert_share("notices", signs.notices, signs.others, 0.025);
    Ok(())
}

/// At 1 every line that does not buy is a tweet carrying a hashtag of its
/// own, with entities that agree with its text (checked as it is counted),
/// so no notices.
#[test]
fn hashtag_share_one_puts_a_hashtag_on_every_other_line() -> Result {
    let purchase_share = 0.05;
    let signs = count_signs(
        Options {
            hashtag_share: 1.0,
            ..small(34, purchase_share)
        },
        20_000,
    )?;
    assert_eq!(signs.others_signed, signs.others, "{signs:?}");
    assert_eq!(signs.notices, 0, "{signs:?}");
    assert_eq!(signs.others_tagged, signs.others, "{signs:?}");
    assert_share("purchases", signs.purchases, signs.lines, purchase_share);
    Ok(())
}

#[test]
fn tables_load_through_core() -> Result {
    // The default sizes: 10,000 offers must not collide under NFKC +
    // lowercase, 10,000 accounts must be distinct.
    let generator = Generator::new(Options::default());
    let catalog_json = serde_json::to_string(&generator.catalog())?;
    let catalog = Catalog::from_file_text("catalog.json", &catalog_json)?;
    assert_eq!(catalog.len(), 10_000);
    let accounts_json = serde_json::to_string(&generator.accounts())?;
    let accounts = Accounts::from_file_text("accounts.json", &accounts_json)?;
    assert_eq!(accounts.len(), 10_000);

    let file = generator.catalog();
    let start = chrono_ms(hashbuy_gen::DEFAULT_START_MS);
    let expired = file
        .offers
        .iter()
        .filter(|o| o.ends_at.is_some_and(|e| e <= start))
        .count();
    let future = file
        .offers
        .iter()
        .filter(|o| o.starts_at.is_some_and(|s| s > start))
        .count();
    assert!(
        expired > 50 && future > 50,
        "expired {expired}, future {future}"
    );
    assert!(
        file.offers.iter().any(|o| !o.hashtag.is_ascii()),
        "some accented hashtags"
    );
    assert!(file
        .offers
        .iter()
        .all(|o| (100..=50_000).contains(&o.amount)));
    let merchants: HashSet<&str> = file.offers.iter().map(|o| o.merchant_id.as_str()).collect();
    assert!(
        (100..=1000).contains(&merchants.len()),
        "{} merchants",
        merchants.len()
    );
    let accounts = generator.accounts().accounts;
    assert!(accounts.iter().all(|a| a.customer_id.starts_with("cus_")));
    assert!(accounts
        .iter()
        .any(|a| a.payment_method_id == "pm_card_chargeDeclined"));
    assert!(accounts.iter().any(|a| a.spend_limit.is_some()));
    Ok(())
}

fn chrono_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Checks that each entity of `entities` sits in `text` at its indices.
fn check_entities(text: &str, entities: &Value, at: &str) {
    let chars: Vec<char> = text.chars().collect();
    let slice = |e: &Value| -> String {
        let i0 = e["indices"][0].as_u64().unwrap_or(u64::MAX) as usize;
        let i1 = e["indices"][1].as_u64().unwrap_or(0) as usize;
        assert!(
            i0 < i1 && i1 <= chars.len(),
            "{at}: bad indices {e} in {text:?}"
        );
        chars[i0..i1].iter().collect()
    };
    let list = |key: &str| entities[key].as_array().cloned().unwrap_or_default();
    for tag in list("hashtags") {
        let shown = slice(&tag);
        let name = tag["text"].as_str().unwrap_or("?");
        assert!(
            shown == format!("#{name}") || shown == format!("＃{name}"),
            "{at}: hashtag {name:?} is {shown:?} in {text:?}"
        );
    }
    for m in list("user_mentions") {
        assert_eq!(
            slice(&m),
            format!("@{}", m["screen_name"].as_str().unwrap_or("?")),
            "{at}"
        );
    }
    for u in list("urls").into_iter().chain(list("media")) {
        assert_eq!(slice(&u), u["url"].as_str().unwrap_or("?"), "{at}");
    }
    for s in list("symbols") {
        assert_eq!(
            slice(&s),
            format!("${}", s["text"].as_str().unwrap_or("?")),
            "{at}"
        );
    }
}

fn check_tweet(t: &Value, at: &str) {
    let text = t["text"].as_str().unwrap_or_default();
    check_entities(text, &t["entities"], at);
    assert!(
        text.chars().count() <= 140,
        "{at}: classic text over 140: {text:?}"
    );
    assert_eq!(
        t["id"].as_u64().map(|id| id.to_string()).as_deref(),
        t["id_str"].as_str(),
        "{at}"
    );
    let user = &t["user"];
    assert_eq!(
        user["id"].as_u64().map(|id| id.to_string()).as_deref(),
        user["id_str"].as_str(),
        "{at}"
    );
    if t["truncated"] == Value::Bool(true) {
        assert!(text.ends_with('…'), "{at}: truncated text ends with …");
        let ext = &t["extended_tweet"];
        let full = ext["full_text"].as_str().unwrap_or_default();
        assert!(full.chars().count() > 140, "{at}: full text is long");
        check_entities(full, &ext["entities"], at);
        assert_eq!(
            ext["display_text_range"][1].as_u64(),
            Some(full.chars().count() as u64),
            "{at}"
        );
    } else {
        assert!(t.get("extended_tweet").is_none(), "{at}");
    }
}

#[test]
fn entities_agree_with_text() -> Result {
    let mut generator = Generator::new(small(21, 0.05));
    let mut last_id = 0;
    let mut big_ids = 0;
    for (i, line) in lines(&mut generator, 20_000).into_iter().enumerate() {
        let v = parse(&line)?;
        if is_notice(&v) {
            continue;
        }
        let at = format!("line {i}");
        check_tweet(&v, &at);
        if let Some(rt) = v.get("retweeted_status") {
            check_tweet(rt, &format!("{at}.retweeted_status"));
            let text = v["text"].as_str().unwrap_or_default();
            assert!(text.starts_with("RT @"), "{at}: {text:?}");
        }
        if let Some(q) = v.get("quoted_status") {
            check_tweet(q, &format!("{at}.quoted_status"));
            assert_eq!(v["is_quote_status"], Value::Bool(true));
            assert_eq!(v["quoted_status_id_str"], q["id_str"]);
        }
        let id = v["id"].as_u64().ok_or("id")?;
        assert!(id > last_id, "{at}: ids increase");
        last_id = id;
        big_ids += usize::from(id > 1 << 53);
        let ts: i64 = v["timestamp_ms"]
            .as_str()
            .ok_or("timestamp_ms is a string")?
            .parse()?;
        assert!(ts >= hashbuy_gen::DEFAULT_START_MS);
    }
    assert!(big_ids > 10_000);
    Ok(())
}

#[test]
fn times_follow_the_pace() -> Result {
    let mut generator = Generator::new(Options {
        tweets_per_second: 1_000,
        ..small(2, 0.01)
    });
    let all = lines(&mut generator, 5_000);
    let last = parse(&all[4_999])?;
    let ts = |v: &Value| -> Option<i64> {
        let inner = NOTICES.iter().find_map(|k| v.get(k)).unwrap_or(v);
        inner["timestamp_ms"].as_str().and_then(|s| s.parse().ok())
    };
    // Line 4999 at 1,000 lines/s is 4.999 s in (a warning carries no time).
    if let Some(t) = ts(&last) {
        assert_eq!(t, hashbuy_gen::DEFAULT_START_MS + 4_999);
    }
    let first = parse(&all[0])?;
    if first.get("created_at").is_some() {
        assert_eq!(first["created_at"], "Mon Jun 01 00:00:00 +0000 2026");
    }
    Ok(())
}

#[test]
fn odd_options_do_not_panic() -> Result {
    let cases = [
        Options {
            users: 0,
            linked_users: 0,
            offers: 0,
            ..Options::default()
        },
        Options {
            users: 1,
            linked_users: 5,
            offers: 1,
            purchase_share: f64::NAN,
            ..Options::default()
        },
        Options {
            users: 10,
            linked_users: 10,
            offers: 2,
            purchase_share: 7.0,
            tweets_per_second: 0,
            ..Options::default()
        },
        Options {
            users: 50,
            linked_users: 0,
            offers: 3,
            purchase_share: -1.0,
            start_ms: i64::MAX - 5,
            ..Options::default()
        },
        Options {
            users: 50,
            linked_users: 3,
            offers: 30,
            purchase_share: 0.5,
            start_ms: 0,
            ..Options::default()
        },
        Options {
            users: 20,
            linked_users: 2,
            offers: 5,
            hashtag_share: f64::NAN,
            ..Options::default()
        },
        Options {
            users: 20,
            linked_users: 2,
            offers: 0,
            hashtag_share: 7.0,
            ..Options::default()
        },
        Options {
            users: 20,
            linked_users: 2,
            offers: 5,
            hashtag_share: -1.0,
            ..Options::default()
        },
        Options {
            users: 20,
            linked_users: 2,
            offers: 5,
            hashtag_share: 0.99,
            ..Options::default()
        },
    ];
    for options in cases {
        let mut generator = Generator::new(options.clone());
        Catalog::from_file_text("c.json", &serde_json::to_string(&generator.catalog())?)?;
        Accounts::from_file_text("a.json", &serde_json::to_string(&generator.accounts())?)?;
        for line in lines(&mut generator, 500) {
            assert!(parse(&line)?.is_object(), "{options:?}");
        }
    }
    Ok(())
}

#[test]
fn confirm_share_puts_offers_in_confirm_mode_and_their_buyers_confirm() -> Result {
    use hashbuy_core::tables::ModeRow;
    use std::collections::HashMap;

    let options = Options {
        confirm_share: 0.5,
        tweets_per_second: 100,
        ..small(11, 0.2)
    };
    let mut generator = Generator::new(options);
    let file = generator.catalog();
    let catalog = Catalog::from_file_text("catalog.json", &serde_json::to_string(&file)?)?;
    assert_eq!(catalog.len(), 500);
    // Confirmation hashtag -> purchase hashtag, both normalized.
    let confirm: HashMap<String, String> = file
        .offers
        .iter()
        .filter(|o| o.mode == Some(ModeRow::Confirm))
        .map(|o| {
            let confirmation = o.confirm_hashtag.as_deref().unwrap_or_default();
            (
                normalize(confirmation).into_owned(),
                normalize(&o.hashtag).into_owned(),
            )
        })
        .collect();
    assert_eq!(confirm.len(), 250, "half the offers, evenly");
    let confirm_offers: HashSet<&String> = confirm.values().collect();

    // (author, purchase hashtag) and time of each purchase and confirmation.
    let mut purchases: Vec<((String, String), i64)> = Vec::new();
    let mut confirmations: Vec<((String, String), i64)> = Vec::new();
    for line in lines(&mut generator, 30_000) {
        let tweet = parse(&line)?;
        if is_notice(&tweet)
            || tweet.get("retweeted_status").is_some()
            || tweet.get("quoted_status").is_some()
        {
            continue;
        }
        let author = tweet["user"]["id_str"].as_str().unwrap_or_default();
        let ms: i64 = tweet["timestamp_ms"]
            .as_str()
            .and_then(|ms| ms.parse().ok())
            .ok_or("a tweet has a time")?;
        for tag in own_hashtags(&tweet) {
            let key = normalize(&tag).into_owned();
            if let Some(offer) = confirm.get(&key) {
                confirmations.push(((author.to_owned(), offer.clone()), ms));
            } else if confirm_offers.contains(&key) {
                purchases.push(((author.to_owned(), key), ms));
            }
        }
    }
    // Every confirmation follows its author's purchase of the offer by at
    // most two minutes.
    for (bought, ms) in &confirmations {
        assert!(
            purchases
                .iter()
                .any(|(p, at)| p == bought && (0..=120_000).contains(&(ms - at))),
            "{bought:?} confirmed at {ms} with no purchase in the two minutes before"
        );
    }
    // About 80% of the purchases made two minutes before the end are
    // confirmed.
    let end = purchases.last().map_or(0, |(_, ms)| *ms);
    let early: Vec<_> = purchases
        .iter()
        .filter(|(_, ms)| end - ms > 120_000)
        .collect();
    let confirmed = early
        .iter()
        .filter(|(bought, at)| {
            confirmations
                .iter()
                .any(|(c, ms)| c == bought && (0..=120_000).contains(&(ms - at)))
        })
        .count();
    assert!(early.len() > 500, "{} early purchases", early.len());
    assert_share("confirmed purchases", confirmed, early.len(), 0.8);
    Ok(())
}
