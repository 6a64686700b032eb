//! Hashtag extraction against twitter-text's official conformance suite
//! (hashtag sections of `conformance/extract.yml`, copied into
//! `fixtures/twitter-text-hashtags.yml` with their source and license).

use hashbuy_core::hashtag::extract;
use serde::Deserialize;

#[derive(Deserialize)]
struct Suite {
    tests: Sections,
}

#[derive(Deserialize)]
struct Sections {
    hashtags: Vec<Case<Vec<String>>>,
    hashtags_from_astral: Vec<Case<Vec<String>>>,
    hashtags_with_indices: Vec<Case<Vec<WithIndices>>>,
}

#[derive(Deserialize)]
struct Case<T> {
    description: String,
    text: String,
    expected: T,
}

#[derive(Deserialize, Debug, PartialEq)]
struct WithIndices {
    hashtag: String,
    indices: [usize; 2],
}

fn suite() -> Sections {
    let text = include_str!("fixtures/twitter-text-hashtags.yml");
    serde_yaml::from_str::<Suite>(text)
        .expect("fixture parses")
        .tests
}

fn tags(text: &str) -> Vec<String> {
    extract(text)
        .into_iter()
        .map(|f| f.tag.to_owned())
        .collect()
}

/// twitter-text counts indices in UTF-16 code units.
fn utf16_offset(text: &str, byte: usize) -> usize {
    text[..byte].encode_utf16().count()
}

#[test]
fn every_hashtag_case_passes() {
    let sections = suite();
    let cases = sections
        .hashtags
        .iter()
        .chain(&sections.hashtags_from_astral);
    let mut failures = Vec::new();
    let mut count = 0;
    for case in cases {
        count += 1;
        let got = tags(&case.text);
        if got != case.expected {
            failures.push(format!(
                "{}: {:?} gave {:?}, expected {:?}",
                case.description, case.text, got, case.expected
            ));
        }
    }
    assert_eq!(count, 68, "the fixture's hashtag and astral sections");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_indices_case_passes() {
    let cases = suite().hashtags_with_indices;
    assert_eq!(cases.len(), 8);
    for case in cases {
        let got: Vec<WithIndices> = extract(&case.text)
            .into_iter()
            .map(|f| WithIndices {
                hashtag: f.tag.to_owned(),
                indices: [
                    utf16_offset(&case.text, f.start),
                    utf16_offset(&case.text, f.end),
                ],
            })
            .collect();
        assert_eq!(got, case.expected, "{}", case.description);
    }
}
