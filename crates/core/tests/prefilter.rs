//! The hot path decides exactly as the plain path does.
//!
//! `Rules::decide_bytes` scans records without parsing what matching does
//! not read and skips hashtag work for texts without a hashtag sign;
//! `Rules::decide_bytes_reference` parses a whole `serde_json::Value`
//! first. These properties compare them on generated tweets (v1.1 and v2,
//! with and without entities, raw UTF-8 or `\uXXXX`-escaped, fullwidth
//! signs and letters, URLs with fragments) and on corruptions of them, and
//! check that no input makes the decoder panic.

use hashbuy_core::decode::{decode, decode_reference};
use hashbuy_core::prefilter::{holds_sign, skim, Skim};
use hashbuy_core::Rules;
use proptest::prelude::*;

/// Words a tweet is made of: catalog hashtags in many spellings, other
/// hashtags, and the characters that make hashtag rules interesting.
const WORDS: &[&str] = &[
    "#BuyRedSneakers42",
    "#buyredsneakers42",
    "＃BUYREDSNEAKERS42",
    "#ＢｕｙＲｅｄＳｎｅａｋｅｒｓ42",
    "#BuyCafé",
    "#BuyCafe\u{301}",
    "＃ｂｕｙｃａｆé",
    "#BuyWinterCoat",
    "#BuyConcertTicket",
    "#monday",
    "#123",
    "#日本語",
    "#café_au_lait",
    "x#BuyCafé",
    "&#BuyCafé",
    "1#BuyCafé",
    "#BuyCafé#",
    "#BuyCafé://",
    "https://shop.example.com/#BuyCafé",
    "shop.example.com/#BuyRedSneakers42",
    "https://t.co/AbC123",
    "@someone",
    "hello",
    "world",
    "and",
    "😀",
    "👟",
    "日本",
    "naïve",
    "\"quoted\"",
    "line\nbreak",
    "tab\there",
    "back\\slash",
    "&amp;",
    "#",
    "＃",
    "\u{FE0F}",
    "#\u{20E3}",
];

#[derive(Debug, Clone)]
struct Spec {
    words: Vec<usize>,
    escape: Vec<bool>,
    v2: bool,
    entities: Option<Vec<usize>>,
    retweet: bool,
    protected: bool,
    user: usize,
    extended: bool,
    created_at: bool,
    /// The author's profile and the retweeted tweet hold a sign.
    signs_elsewhere: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(0..WORDS.len(), 0..12),
        prop::collection::vec(any::<bool>(), 64),
        any::<bool>(),
        prop::option::of(prop::collection::vec(0..WORDS.len(), 0..3)),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        0..5usize,
        prop::bool::weighted(0.2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                words,
                escape,
                v2,
                entities,
                retweet,
                protected,
                user,
                extended,
                created_at,
                signs_elsewhere,
            )| Spec {
                words,
                escape,
                v2,
                entities,
                retweet,
                protected,
                user,
                extended,
                created_at,
                signs_elsewhere,
            },
        )
}

/// Specs whose records hold no sign anywhere: no signed words, and no sign
/// in the profile or the retweeted tweet; their entities may still list
/// catalog hashtags.
fn unsigned_spec() -> impl Strategy<Value = Spec> {
    spec().prop_map(|mut spec| {
        spec.words.retain(|&i| !WORDS[i].contains(['#', '＃']));
        spec.signs_elsewhere = false;
        spec
    })
}

/// A JSON string literal of `s`, each character raw or `\u`-escaped as
/// `escape` says (cycled).
fn json_string(s: &str, escape: &[bool]) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let esc = escape[i % escape.len()];
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if esc => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const USERS: [&str; 5] = ["12345", "67890", "1212", "987654321098765432", "555"];

fn render(spec: &Spec) -> String {
    let text: Vec<&str> = spec.words.iter().map(|&i| WORDS[i]).collect();
    let text = json_string(&text.join(" "), &spec.escape);
    let tags = |list: &Vec<usize>, key: &str| {
        let items: Vec<String> = list
            .iter()
            .map(|&i| {
                format!(
                    "{{\"{key}\": {}}}",
                    json_string(WORDS[i].trim_start_matches(['#', '＃']), &spec.escape)
                )
            })
            .collect();
        format!("{{\"hashtags\": [{}], \"urls\": []}}", items.join(","))
    };
    let user = USERS[spec.user];
    let sign = if spec.signs_elsewhere { "#" } else { "" };
    if spec.v2 {
        let mut data = format!(
            r#""id": "1930000000000000077", "text": {text}, "author_id": "{user}", "created_at": "2026-06-01T12:00:00.000Z""#
        );
        if let Some(list) = &spec.entities {
            data.push_str(&format!(", \"entities\": {}", tags(list, "tag")));
        }
        if spec.retweet {
            data.push_str(r#", "referenced_tweets": [{"type": "retweeted", "id": "1"}]"#);
        }
        format!(
            r#"{{"data": {{{data}}}, "includes": {{"users": [{{"id": "{user}", "protected": {}}}]}}}}"#,
            spec.protected
        )
    } else {
        let mut fields = format!(
            r##""id": 1930000000000000000, "id_str": "1930000000000000077", "text": {text}, "user": {{"id": 1, "id_str": "{user}", "protected": {}, "description": "{sign}BuyCafé fan"}}"##,
            spec.protected
        );
        if let Some(list) = &spec.entities {
            let entities = tags(list, "text");
            if spec.extended {
                fields.push_str(&format!(r#", "truncated": true, "extended_tweet": {{"full_text": {text}, "entities": {entities}}}"#));
            } else {
                fields.push_str(&format!(", \"entities\": {entities}"));
            }
        }
        if spec.retweet {
            fields.push_str(&format!(
                r#", "retweeted_status": {{"id_str": "1", "text": "{sign}BuyCafé"}}"#
            ));
        }
        if spec.created_at {
            fields.push_str(r#", "created_at": "Mon Jun 01 12:00:00 +0000 2026""#);
        } else {
            fields.push_str(r#", "timestamp_ms": "1780315200000""#);
        }
        format!("{{{fields}}}")
    }
}

/// Ways to damage a record: cut it, overwrite a byte, insert a byte.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    Overwrite(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    let byte = prop::sample::select(b"{}[]\":,\\#0a \x00\xff".to_vec());
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Damage::Overwrite(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Overwrite(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Damage::Insert(i, b) => {
            let i = i.index(bytes.len());
            bytes.insert(i, *b);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x4a5b), ..ProptestConfig::default() })]

    #[test]
    fn fast_and_plain_paths_decide_alike(spec in spec()) {
        let (catalog, accounts) = hashbuy_core::samples::tables();
        let rules = Rules::new(&catalog, &accounts);
        let record = render(&spec);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&record).is_ok(), "generator makes valid JSON: {}", record);
        let fast = rules.decide_bytes(record.as_bytes());
        let plain = rules.decide_bytes_reference(record.as_bytes());
        prop_assert_eq!(&fast, &plain, "{}", record);
        prop_assert_eq!(decode(record.as_bytes()).map(|r| r.into_owned()), decode_reference(record.as_bytes()));
    }

    #[test]
    fn damaged_records_are_judged_alike(spec in spec(), damage in damage()) {
        let (catalog, accounts) = hashbuy_core::samples::tables();
        let rules = Rules::new(&catalog, &accounts);
        let bytes = apply(render(&spec).into_bytes(), &damage);
        prop_assert_eq!(rules.decide_bytes(&bytes), rules.decide_bytes_reference(&bytes), "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn records_without_a_sign_cannot_buy(spec in unsigned_spec(), damage in prop::option::of(damage())) {
        let (catalog, accounts) = hashbuy_core::samples::tables();
        let rules = Rules::new(&catalog, &accounts);
        let mut bytes = render(&spec).into_bytes();
        if let Some(damage) = &damage {
            bytes = apply(bytes, damage);
        }
        prop_assume!(!holds_sign(&bytes));
        prop_assert!(rules.decide_bytes_reference(&bytes).commands().is_empty(), "{}", String::from_utf8_lossy(&bytes));
        prop_assert!(rules.decide_bytes(&bytes).commands().is_empty());
    }

    #[test]
    fn records_with_a_sign_are_never_skimmed(spec in spec(), damage in prop::option::of(damage())) {
        let mut bytes = render(&spec).into_bytes();
        if let Some(damage) = &damage {
            bytes = apply(bytes, damage);
        }
        let skimmed = skim(&bytes) == Skim::NoSign;
        prop_assert!(!(skimmed && holds_sign(&bytes)));
        // What is skimmed is framed as a JSON object and valid UTF-8.
        if skimmed {
            let text = std::str::from_utf8(&bytes).map(str::trim);
            let framed = text.is_ok_and(|t| t.starts_with('{') && t.ends_with('}'));
            prop_assert!(framed, "{:?}", text);
        }
    }

    #[test]
    fn json_like_noise_is_judged_alike(text in "[\\[\\]{}\",:0-9a-z\\\\ .eE+#-]{0,40}") {
        prop_assert_eq!(decode(text.as_bytes()).is_ok(), decode_reference(text.as_bytes()).is_ok(), "{:?}", text);
    }

    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = decode_reference(&bytes);
    }
}
