//! Low-level JSON writing: numbers, escaped strings, Twitter dates, and the
//! pass that rewrites a line's non-ASCII characters as `\uXXXX` escapes.

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in decimal, with a sign when negative.
pub(crate) fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Appends `"key":N,"key_str":"N"` — Twitter's pair of a number and the same
/// number as a string.
pub(crate) fn push_id_pair(out: &mut Vec<u8>, key: &str, n: u64) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    push_u64(out, n);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"_str\":\"");
    push_u64(out, n);
    out.push(b'"');
}

/// Appends `s` JSON-escaped the way Twitter does (quotes, backslashes,
/// control characters, and `/` as `\/`), without the surrounding quotes.
/// Non-ASCII characters are written raw; see [`escape_non_ascii`].
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'/' => b"\\/",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `s` as a quoted JSON string.
pub(crate) fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Rewrites every non-ASCII character of `out[start..]` as `\uXXXX`
/// (astral characters as a surrogate pair), as Twitter's own serializer
/// does. Valid because non-ASCII only ever occurs inside JSON strings.
/// `tmp` is scratch space.
pub(crate) fn escape_non_ascii(out: &mut Vec<u8>, start: usize, tmp: &mut Vec<u8>) {
    let Some(region) = out.get(start..) else {
        return;
    };
    let Some(first) = region.iter().position(|b| !b.is_ascii()) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&region[first..]) else {
        return;
    };
    tmp.clear();
    let bytes = text.as_bytes();
    let mut units = [0u16; 2];
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .position(|b| !b.is_ascii())
            .unwrap_or(bytes.len() - i);
        tmp.extend_from_slice(&bytes[i..i + run]);
        i += run;
        // `i` is at the start of a non-ASCII character (or the end).
        let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        for u in c.encode_utf16(&mut units).iter() {
            tmp.extend_from_slice(b"\\u");
            for shift in [12u16, 8, 4, 0] {
                tmp.push(HEX[usize::from((u >> shift) & 0xf)]);
            }
        }
        i += c.len_utf8();
    }
    out.truncate(start + first);
    out.extend_from_slice(tmp);
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn push_2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Appends a time in Twitter's `created_at` form,
/// `Mon Jun 01 00:00:00 +0000 2026` (no quotes).
pub(crate) fn push_twitter_date(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    out.extend_from_slice(WEEKDAYS[days.rem_euclid(7) as usize].as_bytes());
    out.push(b' ');
    out.extend_from_slice(MONTHS[(m as usize).saturating_sub(1).min(11)].as_bytes());
    out.push(b' ');
    push_2(out, d);
    out.push(b' ');
    push_2(out, sod / 3600);
    out.push(b':');
    push_2(out, sod / 60 % 60);
    out.push(b':');
    push_2(out, sod % 60);
    out.extend_from_slice(b" +0000 ");
    push_i64(out, y);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let mut out = Vec::new();
        push_twitter_date(&mut out, 1_780_272_000_000);
        assert_eq!(out, b"Mon Jun 01 00:00:00 +0000 2026");
        out.clear();
        push_twitter_date(&mut out, 0);
        assert_eq!(out, b"Thu Jan 01 00:00:00 +0000 1970");
        out.clear();
        push_twitter_date(&mut out, 951_782_400_000 + 3_723_000);
        assert_eq!(out, b"Tue Feb 29 01:02:03 +0000 2000");
    }

    #[test]
    fn escapes() {
        let mut out = Vec::new();
        push_string(&mut out, "a\"b\\c/d\ne\u{1}");
        assert_eq!(out, br#""a\"b\\c\/d\ne\u0001""#);
        let mut tmp = Vec::new();
        let mut out = b"{\"x\":\"".to_vec();
        out.extend_from_slice("é😂a".as_bytes());
        escape_non_ascii(&mut out, 0, &mut tmp);
        assert_eq!(out, br#"{"x":"\u00e9\ud83d\ude02a"#);
    }
}
