//! A seeded byte mutator in the manner of libFuzzer's and AFL's "havoc"
//! stage: a stack of small edits (bit flips, interesting bytes, inserted
//! and deleted ranges, dictionary tokens, splices with other corpus
//! inputs), plus three that aim at the decoders: numbers swapped for
//! boundary values, runs of nesting around the JSON depth limit, and
//! protobuf field headers. The same seed gives the same edits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes that matter to JSON, UTF-8 and protobuf.
const INTERESTING_BYTES: &[u8] =
    b"{}[]\":,\\#0123456789 -+.eEnultrfa\x00\x01\x08\x0a\x12\x1a\x7f\x80\xbf\xc0\xef\xf0\xff\t\r\n";

/// Numbers at the edges of what ids, times and amounts hold.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "123456789012345678901",
    "1e999",
    "1.5",
    "1e3",
    "0001",
    "",
];

/// Openers and closers whose long runs probe the nesting limit (127).
const NESTING: &[&str] = &["[", "{\"a\":", "]", "}", "[{\"text\":", "{\"data\":"];

/// A seeded mutator.
#[derive(Debug)]
pub struct Mutator {
    rng: ChaCha8Rng,
    dict: Vec<Vec<u8>>,
    max_len: usize,
}

impl Mutator {
    /// A mutator whose edits follow from `seed`, inserting `dict`'s tokens
    /// among others, making inputs of at most `max_len` bytes.
    pub fn new(seed: u64, dict: Vec<Vec<u8>>, max_len: usize) -> Self {
        Mutator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dict,
            max_len: max_len.max(1),
        }
    }

    /// The random source, for the engine's own choices.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Applies a stack of 1 to 16 edits to `data`; `others` are inputs to
    /// splice from.
    pub fn mutate(&mut self, data: &mut Vec<u8>, others: &[Vec<u8>]) {
        let edits = 1usize << self.rng.gen_range(0..5);
        for _ in 0..edits {
            self.edit(data, others);
        }
        data.truncate(self.max_len);
    }

    fn pos(&mut self, len: usize) -> usize {
        self.rng.gen_range(0..=len)
    }

    /// A range of `data` of at most `max` bytes.
    fn range(&mut self, len: usize, max: usize) -> (usize, usize) {
        let start = self.rng.gen_range(0..len);
        let n = self.rng.gen_range(1..=max.min(len - start));
        (start, start + n)
    }

    fn token(&mut self) -> Vec<u8> {
        if self.dict.is_empty() || self.rng.gen_bool(0.1) {
            let n = self.rng.gen_range(1..=4);
            (0..n).map(|_| self.rng.gen()).collect()
        } else {
            self.dict[self.rng.gen_range(0..self.dict.len())].clone()
        }
    }

    fn edit(&mut self, data: &mut Vec<u8>, others: &[Vec<u8>]) {
        let len = data.len();
        match self.rng.gen_range(0..16) {
            // Flip a bit.
            0 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data[i] ^= 1 << self.rng.gen_range(0..8);
            }
            // A byte, random or interesting.
            1 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data[i] = self.rng.gen();
            }
            2 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data[i] = INTERESTING_BYTES[self.rng.gen_range(0..INTERESTING_BYTES.len())];
            }
            3 => {
                let i = self.pos(len);
                let b = INTERESTING_BYTES[self.rng.gen_range(0..INTERESTING_BYTES.len())];
                data.insert(i, b);
            }
            // Delete a range.
            4 if len > 0 => {
                let (a, b) = self.range(len, 32);
                data.drain(a..b);
            }
            // Duplicate a range elsewhere.
            5 if len > 0 => {
                let (a, b) = self.range(len, 128);
                let chunk = data[a..b].to_vec();
                let i = self.pos(len);
                data.splice(i..i, chunk);
            }
            // Insert or overwrite with a dictionary token.
            6 | 7 => {
                let token = self.token();
                let i = self.pos(len);
                data.splice(i..i, token);
            }
            8 if len > 0 => {
                let token = self.token();
                let i = self.rng.gen_range(0..len);
                let end = (i + token.len()).min(len);
                data.splice(i..end, token);
            }
            // Splice: this input's head and another's tail, or another's
            // range inserted.
            9 if !others.is_empty() => {
                let other = &others[self.rng.gen_range(0..others.len())];
                let i = self.pos(len);
                let j = self.rng.gen_range(0..=other.len());
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            10 if !others.is_empty() => {
                let other = &others[self.rng.gen_range(0..others.len())];
                if !other.is_empty() {
                    let (a, b) = self.range(other.len(), 256);
                    let i = self.pos(len);
                    data.splice(i..i, other[a..b].iter().copied());
                }
            }
            // Truncate.
            11 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data.truncate(i);
            }
            // Swap a run of digits for a boundary number.
            12 => {
                let number = INTERESTING_NUMBERS[self.rng.gen_range(0..INTERESTING_NUMBERS.len())];
                let start = self.pos(len);
                match data[start..].iter().position(u8::is_ascii_digit) {
                    Some(d) => {
                        let a = start + d;
                        let b = a + data[a..].iter().take_while(|b| b.is_ascii_digit()).count();
                        data.splice(a..b, number.bytes());
                    }
                    None => {
                        data.splice(start..start, number.bytes());
                    }
                }
            }
            // A run of nesting around the depth limit.
            13 => {
                let unit = NESTING[self.rng.gen_range(0..NESTING.len())].as_bytes();
                let n = self.rng.gen_range(120..=132);
                let i = self.pos(len);
                data.splice(i..i, unit.iter().copied().cycle().take(unit.len() * n));
            }
            // A protobuf field: a header for field 1..=20 of a random wire
            // type, and for length-delimited ones a length and bytes.
            14 => {
                let field: u64 = self.rng.gen_range(1..=20);
                let wire = [0, 1, 2, 5, 3, 4, 6][self.rng.gen_range(0..7)];
                let mut bytes = varint((field << 3) | wire);
                match wire {
                    0 => bytes.extend(varint(self.rng.gen::<u64>() >> self.rng.gen_range(0..64))),
                    1 => bytes.extend(self.rng.gen::<[u8; 8]>()),
                    5 => bytes.extend(self.rng.gen::<[u8; 4]>()),
                    2 => {
                        let payload = self.token();
                        let claimed = match self.rng.gen_range(0..4) {
                            0 => payload.len() as u64 + 1,
                            1 => u64::MAX,
                            _ => payload.len() as u64,
                        };
                        bytes.extend(varint(claimed));
                        bytes.extend(payload);
                    }
                    _ => {}
                }
                let i = self.pos(len);
                data.splice(i..i, bytes);
            }
            // Replace what stands between two quotes (a JSON string's
            // contents, roughly) with a token.
            15 if len > 0 => {
                let from = self.rng.gen_range(0..len);
                let quote = |d: &[u8], at: usize| d[at..].iter().position(|&b| b == b'"');
                if let Some(a) = quote(data, from).map(|q| from + q + 1) {
                    if let Some(b) = quote(data, a).map(|q| a + q) {
                        let token = self.token();
                        data.splice(a..b, token);
                    }
                }
            }
            // The edit needs bytes there are not: add some.
            _ => {
                let token = self.token();
                let i = self.pos(len);
                data.splice(i..i, token);
            }
        }
    }
}

/// `n` as a protobuf varint.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Parses a libFuzzer/AFL dictionary: one `"token"` (or `name="token"`) a
/// line, `#` comments, escapes `\\`, `\"` and `\xNN`.
pub fn parse_dict(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(a), Some(b)) = (line.find('"'), line.rfind('"')) else {
            return Err(format!("line {}: no quoted token", n + 1));
        };
        if a == b {
            return Err(format!("line {}: unterminated token", n + 1));
        }
        let raw = &line.as_bytes()[a + 1..b];
        let mut token = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != b'\\' {
                token.push(raw[i]);
                i += 1;
                continue;
            }
            match raw.get(i + 1) {
                Some(b'\\') | Some(b'"') => {
                    token.push(raw[i + 1]);
                    i += 2;
                }
                Some(b'x') => {
                    let hex = raw
                        .get(i + 2..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("line {}: bad \\x escape", n + 1))?;
                    token.push(hex);
                    i += 4;
                }
                _ => return Err(format!("line {}: bad escape", n + 1)),
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_as_libfuzzer_reads_them() {
        let dict = parse_dict("# c\n\"a\\\"b\"\nkw=\"\\x23\\\\\"\n\n").unwrap();
        assert_eq!(dict, [b"a\"b".to_vec(), b"#\\".to_vec()]);
        assert!(parse_dict("\"x").is_err());
    }

    #[test]
    fn the_same_seed_makes_the_same_edits() {
        let others = vec![b"{\"id\": 12}".to_vec()];
        let run = |seed| {
            let mut m = Mutator::new(seed, vec![b"#".to_vec()], 4096);
            let mut data = b"{\"text\": \"a #b\", \"n\": 5}".to_vec();
            for _ in 0..200 {
                m.mutate(&mut data, &others);
            }
            data
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn varints_are_protobufs() {
        assert_eq!(varint(1), [1]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
    }
}
