//! The hashtag-sign prefilter: which records can be decided without a
//! complete decode.
//!
//! A purchase needs a catalog hashtag in the tweet's text (a hashtag its
//! entities list but its text does not carry buys nothing: see
//! [`crate::rules`]), and a hashtag in a text needs a sign, `#` or `＃`
//! (U+FF03). In a record's bytes a sign is spelled `#`, the UTF-8 of `＃`
//! (`EF BC 83`), or, in JSON, the escape `\u0023` or `\uFF03` (hex digits
//! in any case). So a record whose bytes hold none of these cannot buy,
//! whatever else it says, and [`skim`] lets the matcher decide it
//! `no_hashtag_sign` after a byte scan instead of a complete decode: most
//! of the firehose holds no hashtag at all.
//!
//! The scan is conservative: any spelling anywhere in the record (a
//! profile description, a URL, a quoted tweet, an escaped backslash
//! before `u0023`) sends the record to the complete decode. What a skimmed
//! JSON record is still checked for is what catches corruption cheaply:
//! valid UTF-8 (`simdutf8`), and its first and last non-whitespace bytes
//! are `{` and `}`, so a record cut short or run together with the next is
//! decoded, and dead-lettered, as before.
//!
//! Delete notices (`{"delete": …}`, as the v1.1 stream writes them: their
//! one key first) are never skimmed either, though they hold no sign: a
//! deletion matters to a purchase (it can cancel one still waiting for its
//! confirmation), so it is decoded and counted as the notice it is. They
//! are a few hundred bytes, and rare beside tweets.
//!
//! Protobuf `Tweet` records are never skimmed. Under the same rule as JSON
//! they could be (their `Entities.hashtags` list tags without a sign, but
//! those buy only where the text carries them, and the text's bytes are in
//! the record as they are), but a complete prost decode of such a compact
//! record costs about what checking its framing would, and it also
//! dead-letters a message of another type sent to the tweets topic, which
//! a framing check cannot tell from a tweet.
//!
//! Everything else a complete decode checks (ids, times, field types, JSON
//! syntax inside the object) is not checked on a skimmed record: the
//! matcher validates a sample of them completely and counts the malformed
//! ones, and `hashbuy match --validate all` decodes every record.
//!
//! All searching is `memchr`'s, which picks SSE2 or AVX2 at run time, so
//! release binaries need no `-C target-cpu` to use the CPU's vector units.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::decode::{looks_like_text, MAX_RECORD_BYTES};

/// What the prefilter makes of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skim {
    /// The record may hold a hashtag sign, or failed a cheap check: decode
    /// it completely.
    Decode,
    /// No hashtag sign in any spelling, and well framed: it cannot buy.
    NoSign,
}

/// The UTF-8 of `＃`, the fullwidth number sign U+FF03.
const FULLWIDTH_SIGN: &[u8] = "＃".as_bytes();

static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));

/// Whether a record can be decided without a complete decode.
pub fn skim(bytes: &[u8]) -> Skim {
    if bytes.len() > MAX_RECORD_BYTES
        || bytes.iter().all(u8::is_ascii_whitespace)
        || holds_sign(bytes)
    {
        // Refused (too large, empty) or possibly a purchase.
        return Skim::Decode;
    }
    if looks_like_text(bytes) && !delete_notice(bytes) && json_framed(bytes) {
        Skim::NoSign
    } else {
        Skim::Decode
    }
}

/// Whether `bytes` open a JSON object whose first key is `delete`, as the
/// stream writes its delete notices: those [`skim`] never skims. A delete
/// notice with its key elsewhere is skimmed (without a sign), so only
/// these may act, alike under every validation.
pub fn delete_notice(bytes: &[u8]) -> bool {
    trim_start(bytes)
        .strip_prefix(b"{")
        .is_some_and(|inside| trim_start(inside).starts_with(b"\"delete\""))
}

/// `bytes` without their leading JSON whitespace.
fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_json_space(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Whether `bytes` hold a hashtag sign in any spelling: `#`, the UTF-8 of
/// `＃`, or a `\u0023` / `\uFF03` escape in any case.
pub fn holds_sign(bytes: &[u8]) -> bool {
    // `#` and the first byte of `＃` in one pass: that byte starts only
    // fullwidth forms and a few other rare characters.
    memchr::memchr2_iter(b'#', FULLWIDTH_SIGN[0], bytes)
        .any(|at| bytes[at] == b'#' || bytes[at..].starts_with(FULLWIDTH_SIGN))
        || ESCAPE.find_iter(bytes).any(|at| {
            bytes.get(at + 2..at + 6).is_some_and(|hex| {
                hex.eq_ignore_ascii_case(b"0023") || hex.eq_ignore_ascii_case(b"ff03")
            })
        })
}

/// JSON's whitespace (RFC 8259).
fn is_json_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Valid UTF-8 whose first and last non-whitespace bytes are `{` and `}`.
fn json_framed(bytes: &[u8]) -> bool {
    let first = bytes.iter().position(|b| !is_json_space(b));
    let last = bytes.iter().rposition(|b| !is_json_space(b));
    match (first, last) {
        (Some(first), Some(last)) => {
            bytes[first] == b'{'
                && bytes[last] == b'}'
                && first < last
                && simdutf8::basic::from_utf8(bytes).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_spelling_of_the_sign_is_found() {
        for spelling in [
            r#"{"text": "a #tag"}"#,
            r#"{"text": "a ＃tag"}"#,
            r#"{"text": "a \u0023tag"}"#,
            r#"{"text": "a \uff03tag"}"#,
            r#"{"text": "a \uFF03tag"}"#,
            r#"{"text": "a \uFf03tag"}"#,
        ] {
            assert!(holds_sign(spelling.as_bytes()), "{spelling}");
            assert_eq!(skim(spelling.as_bytes()), Skim::Decode, "{spelling}");
        }
    }

    #[test]
    fn other_escapes_and_near_misses_are_no_sign() {
        for text in [
            r#"{"text": "caf\u00e9 \u0024 \uff04 \u002 \n"}"#,
            r#"{"text": "a \u"}"#,
            r#"{"text": "fullwidth dollar ＄ and ﹟ small sign"}"#,
        ] {
            assert!(!holds_sign(text.as_bytes()), "{text}");
            assert_eq!(skim(text.as_bytes()), Skim::NoSign, "{text}");
        }
    }

    #[test]
    fn broken_framing_and_bad_utf8_go_to_the_complete_decode() {
        for bytes in [
            &b"{\"text\": \"cut off"[..],
            b"\"text\": \"no brace\"}",
            b"[1, 2]",
            b"{\"text\": \"caf\xc3\"}",
            b"   ",
            b"",
            b"{",
        ] {
            assert_eq!(
                skim(bytes),
                Skim::Decode,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(skim(b" \n{\"a\": 1}\r\n"), Skim::NoSign);
    }

    #[test]
    fn delete_notices_are_decoded_though_they_hold_no_sign() {
        for notice in [
            r#"{"delete":{"status":{"id":1,"id_str":"1","user_id":3,"user_id_str":"3"},"timestamp_ms":"5"}}"#,
            " {\n \"delete\" : {\"status\": {\"id_str\": \"1\"}}}",
        ] {
            assert!(!holds_sign(notice.as_bytes()), "{notice}");
            assert_eq!(skim(notice.as_bytes()), Skim::Decode, "{notice}");
        }
        for other in [
            r#"{"limit":{"track":5,"timestamp_ms":"5"}}"#,
            r#"{"text": "delete", "deleted": true}"#,
        ] {
            assert_eq!(skim(other.as_bytes()), Skim::NoSign, "{other}");
        }
    }

    #[test]
    fn protobuf_records_are_always_decoded() {
        let tweet = hashbuy_proto::v1::Tweet {
            id: "1".into(),
            user_id: "2".into(),
            text: "no tags here".into(),
            timestamp_ms: 3,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(skim(&tweet), Skim::Decode);
    }

    #[test]
    fn records_over_the_limit_are_decoded_to_be_refused() {
        let mut big = vec![b' '; MAX_RECORD_BYTES + 1];
        big[0] = b'{';
        big[MAX_RECORD_BYTES] = b'}';
        assert_eq!(skim(&big), Skim::Decode);
    }
}
