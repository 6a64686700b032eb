//! Hashtags: extraction from text by the twitter-text rules, and the
//! normalization under which a tweet's hashtag matches a catalog entry.
//!
//! Extraction follows twitter-text's `validHashtag` and `endHashtagMatch`
//! expressions (the official library's, not a port's): a `#` or `＃` not
//! after a letter, mark, digit, hashtag special character or `&`; then a run
//! of letters, marks, digits and special characters holding at least one
//! letter or mark; a run followed by another sign or `://` is no hashtag.
//! It passes the hashtag cases of twitter-text's conformance suite
//! (`tests/fixtures/twitter-text-hashtags.yml`).
//!
//! A hashtag inside a URL does not count. twitter-text recognizes URLs with
//! its list of top-level domains; hashbuy takes a URL to be `http(s)://`
//! and a dotted host, or a dotted host whose last label is two or more ASCII
//! letters, followed by an optional port, path and query. On ordinary text
//! both agree; they can differ on dotted words whose last label is no real
//! top-level domain (`see.the/#tag`: twitter-text finds `tag`, hashbuy not).
//! A tweet's entities, when it has them, are held to its text by a looser
//! test ([`after_signs`]: the tag written right after a sign, URL or not),
//! so this approximation matters only for tweets without them.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// A hashtag found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'t> {
    /// The hashtag as written, without its sign.
    pub tag: &'t str,
    /// Byte offset of the sign (`#` or `＃`).
    pub start: usize,
    /// Byte offset just past the hashtag.
    pub end: usize,
}

/// The hashtags of `text`, in order, by the twitter-text rules.
pub fn extract(text: &str) -> Vec<Found<'_>> {
    let mut found = Vec::new();
    // The official library's own early exit, and the common case.
    if !text.contains(['#', '＃']) {
        return found;
    }
    let mut urls: Option<Vec<(usize, usize)>> = None;
    // Signs come in order and the spans are sorted: a cursor keeps the
    // test linear in a text of many signs and URLs.
    let mut next_url = 0;
    let mut prev: Option<char> = None;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if !is_hash_sign(c) || !may_precede_sign(prev) {
            prev = Some(c);
            continue;
        }
        let tag_start = i + c.len_utf8();
        let rest = &text[tag_start..];
        if rest.starts_with(['\u{FE0F}', '\u{20E3}']) {
            prev = Some(c);
            continue;
        }
        let run_len: usize = rest
            .chars()
            .take_while(|&c| is_hashtag_char(c))
            .map(char::len_utf8)
            .sum();
        let tag = &rest[..run_len];
        if !tag.chars().any(is_letter_or_mark) {
            prev = Some(c);
            continue;
        }
        let end = tag_start + run_len;
        // The match is consumed whether or not it counts, as in the
        // official library's scan.
        let after = &text[end..];
        let ends_well = !(after.starts_with(['#', '＃']) || after.starts_with("://"));
        let mut in_url = || {
            let spans = urls.get_or_insert_with(|| url_spans(text));
            while spans.get(next_url).is_some_and(|&(_, e)| e <= i) {
                next_url += 1;
            }
            spans.get(next_url).is_some_and(|&(s, _)| s <= i)
        };
        if ends_well && !in_url() {
            found.push(Found { tag, start: i, end });
        }
        while iter.peek().is_some_and(|&(j, _)| j < end) {
            iter.next();
        }
        prev = tag.chars().next_back();
    }
    found
}

/// The runs of hashtag characters right after each sign (`#` or `＃`) of
/// `text`, whatever precedes the sign and whether or not a URL holds it:
/// what the text carries after a sign. A tweet's listed hashtags are held
/// to this (see [`crate::rules`]) rather than to [`extract`], whose URL
/// rule is hashbuy's approximation of twitter-text's and would drop
/// hashtags Twitter itself listed.
pub fn after_signs(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices(['#', '＃'])
        .map(move |(i, sign)| {
            let rest = &text[i + sign.len()..];
            let len = rest
                .chars()
                .take_while(|&c| is_hashtag_char(c))
                .map(char::len_utf8)
                .sum();
            &rest[..len]
        })
        .filter(|run| !run.is_empty())
}

fn is_hash_sign(c: char) -> bool {
    c == '#' || c == '＃'
}

/// twitter-text's `hashtagBoundary`: start of text, a variation selector,
/// or anything but `&` and hashtag characters.
fn may_precede_sign(prev: Option<char>) -> bool {
    match prev {
        None | Some('\u{FE0E}' | '\u{FE0F}') => true,
        Some(c) => c != '&' && !is_hashtag_char(c),
    }
}

fn is_letter_or_mark(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark
    )
}

/// twitter-text's `hashtagAlphaNumeric`: letters, marks, decimal digits and
/// its list of special characters.
fn is_hashtag_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    is_letter_or_mark(c)
        || c.general_category() == GeneralCategory::DecimalNumber
        || matches!(
            c,
            '\u{200c}'
                | '\u{200d}'
                | '\u{a67e}'
                | '\u{05be}'
                | '\u{05f3}'
                | '\u{05f4}'
                | '\u{ff5e}'
                | '\u{301c}'
                | '\u{309b}'
                | '\u{309c}'
                | '\u{30a0}'
                | '\u{30fb}'
                | '\u{3003}'
                | '\u{0f0b}'
                | '\u{0f0c}'
                | '\u{00b7}'
        )
}

/// Byte spans of the URLs in `text` (see the module docs for what counts).
fn url_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // A URL starts with an ASCII letter or digit, so `i` is a char boundary.
        let starts_token =
            bytes[i].is_ascii_alphanumeric() && (i == 0 || !is_url_preceding_blocker(bytes[i - 1]));
        if starts_token {
            if let Some(end) = url_at(text, i) {
                spans.push((i, end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    spans
}

/// Characters after which no URL starts (twitter-text's
/// `validUrlPrecedingChars` and protocol-less rule, in ASCII).
fn is_url_preceding_blocker(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'@' | b'$' | b'#' | b'-' | b'_' | b'.' | b'/')
}

/// The end of a URL starting at `start`, if one does.
fn url_at(text: &str, start: usize) -> Option<usize> {
    let rest = &text[start..];
    let lower_prefix = |p: &str| {
        rest.len() >= p.len() && rest.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    let (host_start, has_scheme) = if lower_prefix("https://") {
        (start + 8, true)
    } else if lower_prefix("http://") {
        (start + 7, true)
    } else {
        (start, false)
    };
    let bytes = text.as_bytes();
    let host_len = bytes[host_start..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        .count();
    let host = text[host_start..host_start + host_len].trim_end_matches('.');
    let mut labels = host.rsplit('.');
    let last = labels.next().unwrap_or("");
    let dotted = labels.next().is_some_and(|l| !l.is_empty());
    // Without a scheme, the last label must look like a top-level domain.
    let tld_like = last.len() >= 2 && last.bytes().all(|b| b.is_ascii_alphabetic());
    if !dotted || !(has_scheme || tld_like) {
        return None;
    }
    let mut end = host_start + host.len();
    // Port.
    if bytes.get(end) == Some(&b':') {
        let digits = bytes[end + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            end += 1 + digits;
        }
    }
    // Path and query: the characters twitter-text allows in them, `#`
    // among them, trimmed back to an allowed last character.
    if matches!(bytes.get(end), Some(b'/' | b'?')) {
        let tail_len: usize = text[end..]
            .chars()
            .take_while(|&c| is_url_path_char(c))
            .map(char::len_utf8)
            .sum();
        let tail = text[end..end + tail_len].trim_end_matches(|c: char| !is_url_ending_char(c));
        end += tail.len();
    }
    Some(end)
}

fn is_url_path_char(c: char) -> bool {
    c.is_alphanumeric() || "!*';:=+,.$/%#[]-–_~|&@?()".contains(c)
}

fn is_url_ending_char(c: char) -> bool {
    c.is_alphanumeric() || "=_#/-+&)".contains(c)
}

/// The key a hashtag matches the catalog under: NFKC, then Unicode
/// lowercase, so `#BuyCafé`, `#buycafé` and `＃ＢｕｙＣａｆé` are one key.
/// ASCII hashtags, nearly all of them, take a fast path.
pub fn normalize(hashtag: &str) -> Cow<'_, str> {
    if hashtag.is_ascii() {
        if hashtag.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(hashtag.to_ascii_lowercase())
        } else {
            Cow::Borrowed(hashtag)
        }
    } else {
        Cow::Owned(hashtag.nfkc().flat_map(char::to_lowercase).collect())
    }
}

/// Whether `tag` (without its sign) is a whole hashtag a tweet can carry:
/// `#tag` extracts as exactly `tag`.
pub fn is_valid_hashtag(tag: &str) -> bool {
    let text = format!("#{tag}");
    matches!(extract(&text).as_slice(), [found] if found.tag == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(text: &str) -> Vec<&str> {
        extract(text).into_iter().map(|f| f.tag).collect()
    }

    #[test]
    fn normalization_folds_case_width_and_composition() {
        let composed = normalize("BuyCafé");
        assert_eq!(composed, "buycafé");
        assert_eq!(normalize("buycafe\u{301}"), composed);
        assert_eq!(normalize("ＢｕｙＣａｆé"), composed);
        assert!(matches!(normalize("already_lower1"), Cow::Borrowed(_)));
    }

    #[test]
    fn rules_the_conformance_suite_leaves_out() {
        assert_eq!(tags("#tag#two"), Vec::<&str>::new());
        assert_eq!(tags("1#tag _#tag &#tag"), Vec::<&str>::new());
        assert_eq!(tags("#tag＃"), Vec::<&str>::new());
        assert_eq!(tags("#foo://bar"), Vec::<&str>::new());
        assert_eq!(tags("##tag"), vec!["tag"]);
        assert_eq!(tags("#123 #1a2"), vec!["1a2"]);
        assert_eq!(tags("keycap #\u{FE0F}\u{20E3} #ok"), vec!["ok"]);
        assert_eq!(tags("http://localhost/#z"), vec!["z"]);
    }

    #[test]
    fn hashtags_inside_urls_do_not_count() {
        assert_eq!(
            tags("see https://shop.example.com/a?b=c#BuyNow"),
            Vec::<&str>::new()
        );
        assert_eq!(tags("shop.example.com/#BuyNow"), Vec::<&str>::new());
        assert_eq!(tags("visit shop.example.com #BuyNow"), vec!["BuyNow"]);
        assert_eq!(tags("https://t.co/abc #BuyNow!"), vec!["BuyNow"]);
    }

    #[test]
    fn valid_hashtags_are_whole_extractable_tags() {
        assert!(is_valid_hashtag("BuyRedSneakers42"));
        assert!(is_valid_hashtag("BuyCafé"));
        assert!(!is_valid_hashtag("42"));
        assert!(!is_valid_hashtag("Buy-Now"));
        assert!(!is_valid_hashtag(""));
    }
}
