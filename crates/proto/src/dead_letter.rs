//! Dead letters that always fit in one Kafka record.
//!
//! A dead letter carries the poison record it sets aside, and a poison
//! record can be as large as the broker took (or larger than hashbuy
//! decodes): copied whole, with the letter's own fields around it, it can
//! exceed what the producer may send, and a service that cannot produce
//! its dead letter stops and meets the same record after every restart.
//! [`fit`] is the one place both services make a letter safe to produce:
//! it always records the original value's size and SHA-256, and cuts the
//! key, the reason and the value to fit the record limit, saying so.
//!
//! SHA-256 (from `ring`, already in hashbuy's dependencies for TLS, and
//! maintained as the basis of rustls): an operator holding a copy of the
//! original record checks it against the letter with `sha256sum`.

use prost::Message;

use crate::v1::DeadLetter;

/// Longest `reason` kept, in bytes, when a letter must shrink.
pub const REASON_BYTES: usize = 1024;

/// Longest key kept, in bytes, when a letter must shrink.
pub const KEY_BYTES: usize = 1024;

/// The smallest record limit [`fit`] can always meet: a letter's fixed
/// fields (topic names are at most 249 bytes), a cut reason and key, and
/// some of the value.
pub const MIN_RECORD_BYTES: usize = 4096;

/// The size of the record `letter` is produced as: its key (the letter's
/// Kafka key is the poison record's key) and the letter encoded.
pub fn record_len(letter: &DeadLetter) -> usize {
    letter.encoded_len() + letter.key.as_ref().map_or(0, Vec::len)
}

/// Makes `letter` fit in a record of at most `max_record_bytes` bytes of
/// key and value (see [`record_len`]).
///
/// Always sets `value_size`, `value_sha256` and `key_size` from the
/// letter's value and key as they are (unless an earlier `fit` set them
/// already). A letter that fits is otherwise left alone. One that does not
/// gets its reason cut to [`REASON_BYTES`] and its key to [`KEY_BYTES`]
/// (`key_truncated`), and its value cut to what room is left
/// (`value_truncated`); what is kept is always the first bytes.
/// `max_record_bytes` below [`MIN_RECORD_BYTES`] is taken as that.
pub fn fit(mut letter: DeadLetter, max_record_bytes: usize) -> DeadLetter {
    let max = max_record_bytes.max(MIN_RECORD_BYTES);
    if letter.value_sha256.is_empty() && !letter.value_truncated {
        letter.value_size = letter.value.len() as u64;
        letter.value_sha256 = sha256_hex(&letter.value);
    }
    if !letter.key_truncated {
        letter.key_size = letter.key.as_ref().map_or(0, Vec::len) as u64;
    }
    if record_len(&letter) <= max {
        return letter;
    }
    cut_text(&mut letter.reason, REASON_BYTES);
    if let Some(key) = letter.key.as_mut().filter(|k| k.len() > KEY_BYTES) {
        key.truncate(KEY_BYTES);
        letter.key_truncated = true;
    }
    let mut value = std::mem::take(&mut letter.value);
    // Measured with the flag set, as it will be sent if the value is cut.
    letter.value_truncated = true;
    let fixed = record_len(&letter);
    // The value field costs a tag byte and a length of up to 5 bytes.
    let room = max.saturating_sub(fixed).saturating_sub(6);
    if value.len() <= room {
        letter.value_truncated = false;
    } else {
        value.truncate(room);
    }
    letter.value = value;
    letter
}

/// SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Cuts `text` to at most `max` bytes, at a character boundary, ending it
/// with `…` when cut.
fn cut_text(text: &mut String, max: usize) {
    const MARK: &str = "…";
    if text.len() <= max {
        return;
    }
    let mut end = max - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: Option<Vec<u8>>, value: Vec<u8>, reason: &str) -> DeadLetter {
        DeadLetter {
            topic: "tweets".into(),
            partition: 3,
            offset: 7,
            key,
            value,
            reason: reason.into(),
            stage: "match".into(),
            dead_at_ms: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_small_letter_is_whole_with_its_size_and_digest() {
        let fitted = fit(
            letter(Some(b"k".to_vec()), b"abc".to_vec(), "bad"),
            1_000_000,
        );
        assert_eq!(fitted.value, b"abc");
        assert_eq!(fitted.value_size, 3);
        // sha256sum of "abc".
        assert_eq!(
            fitted.value_sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fitted.key_size, 1);
        assert!(!fitted.value_truncated && !fitted.key_truncated);
        assert_eq!(fitted.reason, "bad");
    }

    #[test]
    fn a_large_letter_is_cut_to_the_limit_saying_so() {
        let value: Vec<u8> = (0..2_000_000).map(|i| (i % 251) as u8).collect();
        let reason = "é".repeat(2_000);
        for limit in [MIN_RECORD_BYTES, 10_000, 999_488, 1_000_000] {
            let fitted = fit(
                letter(Some(vec![b'k'; 600_000]), value.clone(), &reason),
                limit,
            );
            assert!(
                record_len(&fitted) <= limit,
                "{limit}: {}",
                record_len(&fitted)
            );
            // Little room is left unused.
            assert!(
                record_len(&fitted) + 16 >= limit,
                "{limit}: {}",
                record_len(&fitted)
            );
            assert!(fitted.value_truncated && fitted.key_truncated);
            assert_eq!(fitted.value_size, 2_000_000);
            assert_eq!(fitted.key_size, 600_000);
            assert!(value.starts_with(&fitted.value));
            assert_eq!(fitted.key.as_ref().map(Vec::len), Some(KEY_BYTES));
            assert!(fitted.reason.len() <= REASON_BYTES && fitted.reason.ends_with('…'));
            assert_eq!(fitted.value_sha256, sha256_hex(&value));
            // Fitting again changes nothing: the digest stays the
            // original's.
            assert_eq!(fit(fitted.clone(), limit), fitted);
        }
    }

    #[test]
    fn a_letter_too_large_only_by_its_key_keeps_its_value_whole() {
        let fitted = fit(
            letter(Some(vec![b'k'; 50_000]), b"{".to_vec(), "bad"),
            10_000,
        );
        assert!(fitted.key_truncated && !fitted.value_truncated);
        assert_eq!(fitted.value, b"{");
        assert!(record_len(&fitted) <= 10_000);
    }

    #[test]
    fn a_limit_below_the_minimum_is_the_minimum() {
        let fitted = fit(letter(None, vec![0; 100_000], "bad"), 10);
        assert!(record_len(&fitted) <= MIN_RECORD_BYTES);
        assert!(fitted.value_truncated);
    }
}
