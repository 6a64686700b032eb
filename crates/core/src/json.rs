//! A validating, zero-allocation JSON scanner for the matcher's hot path.
//!
//! Most of a tweet's 2.5 KB is fields matching never reads (the user's
//! profile, URLs, counts). A general parser materializes them; this scanner
//! walks the bytes once, descends only into the fields the caller asks for,
//! and skips the rest while still checking them, so a malformed record is
//! rejected exactly where `serde_json` would reject it (the reference
//! decoder's property tests hold the two to that). Strings are returned as
//! raw slices and unescaped only when a caller needs their value.
//!
//! What it accepts is RFC 8259 JSON with `serde_json`'s limits: nesting
//! depth below 128, escaped surrogates paired, finite numbers.

use std::borrow::Cow;

/// Deepest nesting accepted, as `serde_json`'s recursion limit.
const MAX_DEPTH: u32 = 127;

/// Where and why a record is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// A JSON string as it appears in the record, unescaped on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text<'a> {
    /// Contents without escapes, or already unescaped.
    Plain(&'a str),
    /// Raw contents between the quotes, with escapes still in.
    Escaped(&'a str),
}

impl<'a> Text<'a> {
    /// The string's value.
    pub fn get(&self) -> Cow<'a, str> {
        match *self {
            Text::Plain(s) => Cow::Borrowed(s),
            Text::Escaped(raw) => Cow::Owned(unescape(raw)),
        }
    }

    /// Whether the value might contain a hashtag sign (`#` or `＃`). False
    /// means it certainly does not, which spares unescaping and extraction.
    /// Raw contents are searched for every spelling of a sign
    /// ([`crate::prefilter::holds_sign`]), escapes included.
    pub fn may_contain_hash_sign(&self) -> bool {
        match *self {
            Text::Plain(s) | Text::Escaped(s) => crate::prefilter::holds_sign(s.as_bytes()),
        }
    }
}

/// Decodes the escapes of a string the scanner validated. Total: an escape
/// it cannot read (impossible after validation) becomes U+FFFD.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let unit = hex4(&mut chars);
                let c = match unit {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        let lo = match (chars.next(), chars.next()) {
                            (Some('\\'), Some('u')) => hex4(&mut chars),
                            _ => None,
                        };
                        lo.and_then(|lo| {
                            char::from_u32(
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00)),
                            )
                        })
                    }
                    Some(u) => char::from_u32(u),
                    None => None,
                };
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut n = 0;
    for _ in 0..4 {
        n = n * 16 + chars.next()?.to_digit(16)?;
    }
    Some(n)
}

/// What kind of value comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// The kind's name for messages ("an object", "a string").
    pub fn described(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// A cursor over one JSON document.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    /// Always on a char boundary: the scanner moves over whole tokens, and
    /// multi-byte characters only occur inside strings.
    text: &'a str,
    pos: usize,
    depth: u32,
}

type Result<T> = std::result::Result<T, SyntaxError>;

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Scanner {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn error<T>(&self, what: &'static str) -> Result<T> {
        Err(SyntaxError {
            offset: self.pos,
            what,
        })
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.pos += 1;
        }
    }

    /// The kind of the next value, after skipping whitespace.
    pub fn peek(&mut self) -> Result<Kind> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'n') => Ok(Kind::Null),
            Some(_) => self.error("expected a value"),
            None => self.error("unexpected end of input"),
        }
    }

    /// Checks that only whitespace is left.
    pub fn finish(mut self) -> Result<()> {
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            self.error("trailing characters")
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error("nesting too deep");
        }
        Ok(())
    }

    /// Starts walking an object (the next value must be one): call
    /// [`Members::next`] for each key, and consume each value.
    #[inline]
    pub fn members(&mut self) -> Result<Members> {
        self.skip_ws();
        self.expect(b'{')?;
        self.enter()?;
        Ok(Members { first: true })
    }

    /// Starts walking an array (the next value must be one): call
    /// [`Elements::next`] before each element, and consume it.
    #[inline]
    pub fn elements(&mut self) -> Result<Elements> {
        self.skip_ws();
        self.expect(b'[')?;
        self.enter()?;
        Ok(Elements { first: true })
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        if self.bytes.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        if self.eat(b) {
            Ok(())
        } else if self.pos >= self.bytes.len() {
            self.error("unexpected end of input")
        } else {
            self.error(match b {
                b':' => "expected `:`",
                b'}' => "expected `,` or `}`",
                b']' => "expected `,` or `]`",
                _ => "expected a value",
            })
        }
    }

    /// Reads a string (the next value must be one).
    #[inline(always)]
    pub fn string(&mut self) -> Result<Text<'a>> {
        self.skip_ws();
        self.expect(b'"')?;
        let start = self.pos;
        let escaped = self.string_body()?;
        // `start` follows a quote and `self.pos - 1` is one: char boundaries.
        let raw = &self.text[start..self.pos - 1];
        Ok(if escaped {
            Text::Escaped(raw)
        } else {
            Text::Plain(raw)
        })
    }

    /// Moves past a string's contents and closing quote (the opening one is
    /// behind); whether it had escapes.
    #[inline(always)]
    fn string_body(&mut self) -> Result<bool> {
        let mut escaped = false;
        loop {
            self.pos = find_string_special(self.bytes, self.pos);
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    // One-character escapes (`\/` in every URL Twitter
                    // writes) stay in the loop; `\u` takes the long way.
                    match self.bytes.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 2
                        }
                        _ => {
                            self.pos += 1;
                            self.escape()?;
                        }
                    }
                }
                Some(_) => return self.error("control character in string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    /// Checks one escape after its backslash, pairing surrogates as
    /// `serde_json` requires.
    fn escape(&mut self) -> Result<()> {
        match self.bytes.get(self.pos) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                if (0xDC00..=0xDFFF).contains(&unit) {
                    return self.error("lone surrogate in escape");
                }
                if (0xD800..=0xDBFF).contains(&unit) {
                    if !(self.eat(b'\\') && self.eat(b'u')) {
                        return self.error("lone surrogate in escape");
                    }
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return self.error("lone surrogate in escape");
                    }
                }
                Ok(())
            }
            Some(_) => self.error("invalid escape"),
            None => self.error("unterminated string"),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut n = 0;
        for _ in 0..4 {
            let Some(d) = self
                .bytes
                .get(self.pos)
                .and_then(|&b| (b as char).to_digit(16))
            else {
                return self.error("invalid \\u escape");
            };
            n = n * 16 + d;
            self.pos += 1;
        }
        Ok(n)
    }

    /// Reads `true`, `false` (the next value must be one of them).
    pub fn boolean(&mut self) -> Result<bool> {
        self.skip_ws();
        if self.literal(b"true") {
            Ok(true)
        } else if self.literal(b"false") {
            Ok(false)
        } else {
            self.error("expected a value")
        }
    }

    /// Reads `null` (the next value must be it).
    pub fn null(&mut self) -> Result<()> {
        self.skip_ws();
        if self.literal(b"null") {
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Reads a number (the next value must be one); the value when it is a
    /// non-negative integer that fits in a u64.
    pub fn number(&mut self) -> Result<Option<u64>> {
        self.skip_ws();
        let start = self.pos;
        let integer = self.number_body()?;
        let literal = &self.text[start..self.pos];
        Ok(if integer {
            literal.parse::<u64>().ok()
        } else {
            None
        })
    }

    /// Moves past a number; whether it is an integer (no fraction, no
    /// exponent).
    #[inline(always)]
    fn number_body(&mut self) -> Result<bool> {
        let start = self.pos;
        self.eat(b'-');
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.error("invalid number"),
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return self.error("invalid number");
            }
            self.digits();
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return self.error("invalid number");
            }
            self.digits();
        }
        // serde_json refuses numbers beyond f64's range. An integer needs
        // over 300 digits for that; anything with a fraction or exponent is
        // checked by parsing (rare in tweets).
        if (!integer || self.pos - start > 300)
            && !self.text[start..self.pos]
                .parse::<f64>()
                .is_ok_and(f64::is_finite)
        {
            return self.error("number out of range");
        }
        Ok(integer)
    }

    #[inline]
    fn digits(&mut self) {
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    /// Checks and moves past the next value, whatever it is.
    #[inline(always)]
    pub fn skip(&mut self) -> Result<()> {
        // Scalars, most of what is skipped, without the container machinery.
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b'"') => {
                self.pos += 1;
                self.string_body().map(|_| ())
            }
            Some(b'-' | b'0'..=b'9') => self.number_body().map(|_| ()),
            _ => self.skip_any(),
        }
    }

    /// [`Scanner::skip`] for any value, containers included, without
    /// recursion (depth is bounded, but the stack needn't be involved).
    fn skip_any(&mut self) -> Result<()> {
        // One bit per open container: 1 for an object, 0 for an array.
        let mut stack: u128 = 0;
        let mut open: u32 = 0;
        'value: loop {
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    self.string_body()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number_body()?;
                }
                Some(b't') if self.literal(b"true") => {}
                Some(b'f') if self.literal(b"false") => {}
                Some(b'n') if self.literal(b"null") => {}
                Some(&open_byte @ (b'{' | b'[')) => {
                    let is_object = open_byte == b'{';
                    self.pos += 1;
                    self.enter()?;
                    self.skip_ws();
                    if self.eat(if is_object { b'}' } else { b']' }) {
                        self.depth -= 1;
                    } else {
                        stack = (stack << 1) | u128::from(is_object);
                        open += 1;
                        if is_object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(_) => return self.error("expected a value"),
                None => return self.error("unexpected end of input"),
            }
            // After a value: close what ends here, then find the next value.
            loop {
                if open == 0 {
                    return Ok(());
                }
                self.skip_ws();
                let in_object = stack & 1 == 1;
                if self.eat(b',') {
                    if in_object {
                        self.key()?;
                    }
                    continue 'value;
                }
                self.expect(if in_object { b'}' } else { b']' })?;
                stack >>= 1;
                open -= 1;
                self.depth -= 1;
            }
        }
    }

    /// A key and its colon, inside an object being skipped.
    fn key(&mut self) -> Result<()> {
        self.skip_ws();
        if !self.eat(b'"') {
            return self.error("expected a key");
        }
        self.string_body()?;
        self.skip_ws();
        self.expect(b':')
    }
}

/// A walk over an object's members, from [`Scanner::members`].
pub struct Members {
    first: bool,
}

impl Members {
    /// The next key, unescaped only if it has escapes, with its colon
    /// consumed; `None` after the closing brace.
    #[inline(always)]
    pub fn next<'a>(&mut self, s: &mut Scanner<'a>) -> Result<Option<Text<'a>>> {
        s.skip_ws();
        if std::mem::take(&mut self.first) {
            if s.eat(b'}') {
                s.depth -= 1;
                return Ok(None);
            }
        } else if s.eat(b',') {
            s.skip_ws();
        } else {
            s.expect(b'}')?;
            s.depth -= 1;
            return Ok(None);
        }
        if s.bytes.get(s.pos) != Some(&b'"') {
            return s.error("expected a key");
        }
        let key = s.string()?;
        s.skip_ws();
        s.expect(b':')?;
        Ok(Some(key))
    }
}

/// A walk over an array's elements, from [`Scanner::elements`].
pub struct Elements {
    first: bool,
}

impl Elements {
    /// Whether another element follows (to be consumed by the caller);
    /// false after the closing bracket.
    #[inline]
    pub fn next(&mut self, s: &mut Scanner<'_>) -> Result<bool> {
        s.skip_ws();
        if std::mem::take(&mut self.first) {
            if s.eat(b']') {
                s.depth -= 1;
                return Ok(false);
            }
            return Ok(true);
        }
        if s.eat(b',') {
            return Ok(true);
        }
        s.expect(b']')?;
        s.depth -= 1;
        Ok(false)
    }
}

/// The index of the first `"`, `\` or control character at or after `i`, or
/// the length when there is none.
#[inline(always)]
fn find_string_special(bytes: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    return x86::find_string_special_sse2(bytes, i);
    #[cfg(not(target_arch = "x86_64"))]
    find_string_special_tail(bytes, i)
}

/// Byte at a time, for the tail of the input (and other architectures).
#[inline]
fn find_string_special_tail(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::find_string_special_tail;

    /// 16 bytes a step.
    #[inline(always)]
    pub(super) fn find_string_special_sse2(bytes: &[u8], mut i: usize) -> usize {
        // SAFETY: SSE2 is part of the x86_64 baseline, and every load reads
        // 16 bytes that lie within `bytes` (loop condition).
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control_max = _mm_set1_epi8(0x1F);
            while i + 16 <= bytes.len() {
                let v = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    _mm_cmpeq_epi8(_mm_max_epu8(v, control_max), control_max),
                );
                let mask = _mm_movemask_epi8(hits) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
        find_string_special_tail(bytes, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        let mut s = Scanner::new(text);
        s.skip().is_ok() && s.finish().is_ok()
    }

    #[test]
    fn skip_agrees_with_serde_json_on_tricky_documents() {
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":[1,2,{"b":null}],"c":"x\"y\\z\u00e9\ud83d\ude00"}"#,
            r#" { "a" : [ true , false , null ] } "#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a"}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-0.5E-3}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#""just a string""#,
            r#"{"a":"unterminated}"#,
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
            "",
        ];
        for case in cases {
            let expected = serde_json::from_str::<serde_json::Value>(case).is_ok();
            assert_eq!(valid(case), expected, "{case:?}");
        }
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [126, 127, 128, 129] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let expected = serde_json::from_str::<serde_json::Value>(&doc).is_ok();
            assert_eq!(valid(&doc), expected, "depth {depth}");
        }
    }

    #[test]
    fn strings_unescape_only_when_escaped() {
        let mut s = Scanner::new(r#"["plain", "a\nb\u00e9\ud83d\ude00\/"]"#);
        let mut got = Vec::new();
        let mut elements = s.elements().expect("an array");
        while elements.next(&mut s).expect("valid") {
            got.push(s.string().expect("a string"));
        }
        assert_eq!(got[0], Text::Plain("plain"));
        assert!(matches!(got[1], Text::Escaped(_)));
        assert_eq!(got[1].get(), "a\nbé😀/");
    }

    #[test]
    fn hash_sign_check_sees_escaped_and_fullwidth_signs() {
        assert!(!Text::Plain("no tags here").may_contain_hash_sign());
        assert!(Text::Plain("a #tag").may_contain_hash_sign());
        assert!(Text::Plain("a ＃tag").may_contain_hash_sign());
        assert!(Text::Escaped(r"a \uff03tag").may_contain_hash_sign());
        assert!(Text::Escaped(r"a \u0023tag").may_contain_hash_sign());
        assert!(!Text::Escaped(r"a \n b").may_contain_hash_sign());
    }

    #[test]
    fn numbers_give_their_integer_value() {
        let mut s = Scanner::new("[18446744073709551615, 18446744073709551616, -1, 1.5, 7]");
        let mut got = Vec::new();
        let mut elements = s.elements().expect("an array");
        while elements.next(&mut s).expect("valid") {
            got.push(s.number().expect("a number"));
        }
        assert_eq!(got, [Some(u64::MAX), None, None, None, Some(7)]);
    }
}
