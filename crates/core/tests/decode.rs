//! Every decoding branch, through the public API. Each case is decoded by
//! both the hot path and the reference decoder, which must agree.

use std::borrow::Cow;

use hashbuy_core::decode::{
    decode, decode_reference, DecodeError, Notice, Record, Tweet, MAX_RECORD_BYTES,
};
use hashbuy_proto::v1 as pb;
use prost::Message;

/// Decodes with both decoders, checks they agree, returns the hot path's.
fn both(bytes: &[u8]) -> Result<Record<'static>, DecodeError> {
    let fast = decode(bytes).map(Record::into_owned);
    let reference = decode_reference(bytes);
    match (&fast, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(
            a,
            b,
            "decoders disagree on {:?}",
            String::from_utf8_lossy(bytes)
        ),
        (Err(DecodeError::Json { .. }), Err(DecodeError::Json { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "decoders fail differently"),
        _ => panic!("decoders disagree: {fast:?} vs {reference:?}"),
    }
    fast
}

fn tweet(json: &str) -> Tweet<'static> {
    match both(json.as_bytes()) {
        Ok(Record::Tweet(t)) => t,
        other => panic!("expected a tweet, got {other:?}"),
    }
}

fn error(bytes: &[u8]) -> DecodeError {
    both(bytes).expect_err("expected an error")
}

fn tags<'t>(t: &'t Tweet<'_>) -> Vec<&'t str> {
    t.hashtags.iter().map(Cow::as_ref).collect()
}

const USER: &str =
    r##""user": {"id": 12345, "id_str": "12345", "protected": false, "description": "#notme"}"##;

#[test]
fn v1_tweet_uses_its_entities() {
    let t = tweet(&format!(
        r#"{{"id": 1, "id_str": "1", "text": "hi #Listed #also", "entities": {{"hashtags": [{{"text": "Listed", "indices": [3, 10]}}]}}, {USER}, "timestamp_ms": "1780315200000"}}"#
    ));
    assert_eq!(t.id, "1");
    assert_eq!(t.user_id, "12345");
    assert_eq!(t.timestamp_ms, 1_780_315_200_000);
    assert_eq!(tags(&t), ["Listed"], "entities win over the text");
    assert!(!t.retweet && !t.user_protected);
}

#[test]
fn listed_hashtags_the_text_does_not_carry_do_not_count() {
    let v1 = tweet(&format!(
        r#"{{"id_str": "1", "text": "hi #Listed", "entities": {{"hashtags": [{{"text": "Listed"}}, {{"text": "Absent"}}, {{"text": "LISTED"}}]}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&v1), ["Listed", "LISTED"], "compared normalized");
    let no_sign = tweet(&format!(
        r#"{{"id_str": "1", "text": "hi Listed", "entities": {{"hashtags": [{{"text": "Listed"}}]}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(no_sign.hashtags.is_empty());
    let no_text = tweet(&format!(
        r#"{{"id_str": "1", "entities": {{"hashtags": [{{"text": "Listed"}}]}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(no_text.hashtags.is_empty());
    let extended = tweet(&format!(
        r#"{{"id_str": "4", "text": "cut #Late", "extended_tweet": {{"full_text": "cut… no tag", "entities": {{"hashtags": [{{"text": "Late"}}]}}}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(extended.hashtags.is_empty(), "the full text is the text");
    let v2 = tweet(
        r#"{"data":{"id":"20","text":"v2 plain","author_id":"30","created_at":"2026-06-01T12:00:00.000Z","entities":{"hashtags":[{"tag":"Listed"}]}}}"#,
    );
    assert!(v2.hashtags.is_empty());
}

#[test]
fn listed_hashtags_count_after_a_sign_even_where_hashbuys_url_rule_sees_a_url() {
    // twitter-text lists these; hashbuy's own URL rule would take the tag
    // for part of a URL, and so must not be what the listed tags are held to.
    for text in [
        "(details at shop.example.com/sale)#BuyRedSneakers42",
        "shop.example.jp/\u{65b0}\u{4f5c}/#BuyRedSneakers42",
    ] {
        let t = tweet(&format!(
            r#"{{"id_str": "1", "text": "{text}", "entities": {{"hashtags": [{{"text": "BuyRedSneakers42"}}]}}, {USER}, "timestamp_ms": "5"}}"#
        ));
        assert_eq!(tags(&t), ["BuyRedSneakers42"], "{text}");
    }
}

#[test]
fn long_entities_without_a_long_text_are_held_to_the_tweets_own_text() {
    let t = tweet(&format!(
        r##"{{"id_str": "1", "text": "#Late", "extended_tweet": {{"entities": {{"hashtags": [{{"text": "Late"}}]}}}}, {USER}, "timestamp_ms": "5"}}"##
    ));
    assert_eq!(tags(&t), ["Late"]);
    let v2 = tweet(
        r#"{"data":{"id":"20","text":"v2 #Late","author_id":"30","created_at":"2026-06-01T12:00:00.000Z","note_tweet":{"entities":{"hashtags":[{"tag":"Late"}]}}}}"#,
    );
    assert_eq!(tags(&v2), ["Late"]);
}

#[test]
fn v1_tweet_without_entities_extracts_from_text() {
    let t = tweet(&format!(
        r#"{{"id_str": "2", "text": "a #One and ＃Two, not x#three", {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&t), ["One", "Two"]);
}

#[test]
fn escaped_text_is_unescaped_before_extraction() {
    let t = tweet(&format!(
        r#"{{"id_str": "3", "text": "\u0023Escaped \uff03Wide \"q\" \ud83d\ude00 #Emoji", {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&t), ["Escaped", "Wide", "Emoji"]);
}

#[test]
fn extended_tweet_gives_full_text_and_entities() {
    let t = tweet(&format!(
        r#"{{"id_str": "4", "text": "cut…", "truncated": true, "extended_tweet": {{"full_text": "cut… #Late", "entities": {{"hashtags": [{{"text": "Late"}}]}}}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&t), ["Late"]);
    let t = tweet(&format!(
        r#"{{"id_str": "4", "text": "cut…", "truncated": true, "extended_tweet": {{"full_text": "cut… #OnlyText"}}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&t), ["OnlyText"]);
}

#[test]
fn extended_mode_full_text_wins_over_text() {
    let t = tweet(&format!(
        r#"{{"id_str": "5", "text": "short", "full_text": "short #Full", {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(tags(&t), ["Full"]);
}

#[test]
fn retweets_quotes_and_replies() {
    let inner = format!(r##"{{"id_str": "9", "text": "#Inner", {USER}, "timestamp_ms": "5"}}"##);
    let rt = tweet(&format!(
        r#"{{"id_str": "6", "text": "RT @x: #Inner", "retweeted_status": {inner}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(rt.retweet);
    let quote = tweet(&format!(
        r#"{{"id_str": "7", "text": "look", "is_quote_status": true, "quoted_status_id_str": "9", "quoted_status": {inner}, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(!quote.retweet);
    assert!(tags(&quote).is_empty(), "a quote buys only by its own text");
    let reply = tweet(&format!(
        r#"{{"id_str": "8", "text": "@x #Reply", "in_reply_to_status_id_str": "9", "retweeted_status": null, {USER}, "timestamp_ms": "5"}}"#
    ));
    assert!(!reply.retweet);
    assert_eq!(tags(&reply), ["Reply"]);
}

#[test]
fn ids_prefer_their_string_form() {
    let t = tweet(
        r#"{"id": 1930000000000000000, "id_str": "1930000000000000123", "text": "x", "user": {"id": 9007199254740993, "id_str": "9007199254740993"}, "timestamp_ms": "5"}"#,
    );
    assert_eq!(t.id, "1930000000000000123");
    assert_eq!(t.user_id, "9007199254740993");
    let t = tweet(r#"{"id": 42, "text": "x", "user": {"id": 7}, "timestamp_ms": "5"}"#);
    assert_eq!((t.id.as_ref(), t.user_id.as_ref()), ("42", "7"));
}

#[test]
fn time_comes_from_timestamp_ms_or_created_at() {
    let t = tweet(&format!(
        r#"{{"id_str": "1", "text": "x", {USER}, "created_at": "Mon Jun 01 12:00:00 +0000 2026"}}"#
    ));
    assert_eq!(t.timestamp_ms, 1_780_315_200_000);
    let t = tweet(&format!(
        r#"{{"id_str": "1", "text": "x", {USER}, "timestamp_ms": 1780315200001}}"#
    ));
    assert_eq!(t.timestamp_ms, 1_780_315_200_001);
}

/// A snowflake id and the moment it carries: (id >> 22) + 1288834974657
/// ms, here 2026-06-01T12:00:00.000Z.
const SNOWFLAKE: (&str, i64) = ("2061417475077058617", 1_780_315_200_000);

#[test]
fn a_tweet_without_a_time_takes_it_from_its_snowflake_id() {
    let (id, ms) = SNOWFLAKE;
    let t = tweet(&format!(r#"{{"id_str": "{id}", "text": "x", {USER}}}"#));
    assert_eq!(t.timestamp_ms, ms);
    // A time the record gives wins over its id's.
    let t = tweet(&format!(
        r#"{{"id_str": "{id}", "text": "x", {USER}, "timestamp_ms": "5"}}"#
    ));
    assert_eq!(t.timestamp_ms, 5);
    let t = tweet(&format!(
        r#"{{"data":{{"id":"{id}","text":"v2","author_id":"30"}}}}"#
    ));
    assert_eq!(t.timestamp_ms, ms);
    let message = pb::Tweet {
        id: id.into(),
        user_id: "50".into(),
        text: "x".into(),
        ..Default::default()
    };
    match both(&message.encode_to_vec()) {
        Ok(Record::Tweet(t)) => assert_eq!(t.timestamp_ms, ms),
        other => panic!("a tweet: {other:?}"),
    }
    // The first snowflake id; below it, ids were sequential and carry no
    // time (TweetedAt's boundary, oduwsdl/tweetedat).
    let t = tweet(&format!(
        r#"{{"id_str": "29700859247", "text": "x", {USER}}}"#
    ));
    assert_eq!(
        t.timestamp_ms,
        (29_700_859_247_i64 >> 22) + 1_288_834_974_657
    );
    for old in ["29700859246", "1"] {
        assert_eq!(
            error(format!(r#"{{"id_str": "{old}", "text": "x", {USER}}}"#).as_bytes()),
            DecodeError::Missing("timestamp_ms, created_at or a snowflake id")
        );
        assert_eq!(
            error(
                format!(r#"{{"data":{{"id":"{old}","text":"v2","author_id":"30"}}}}"#).as_bytes()
            ),
            DecodeError::Missing("data.created_at or a snowflake data.id")
        );
    }
    // Twenty digits pass as an id, but past u64 they are no snowflake.
    assert_eq!(
        error(format!(r#"{{"id_str": "99999999999999999999", "text": "x", {USER}}}"#).as_bytes()),
        DecodeError::Missing("timestamp_ms, created_at or a snowflake id")
    );
}

#[test]
fn protected_authors_are_marked() {
    let t = tweet(
        r#"{"id_str": "1", "text": "x", "user": {"id_str": "2", "protected": true}, "timestamp_ms": "5"}"#,
    );
    assert!(t.user_protected);
}

#[test]
fn streaming_notices() {
    let delete = both(br#"{"delete":{"status":{"id":1234,"id_str":"1234","user_id":3,"user_id_str":"3"},"timestamp_ms":"5"}}"#);
    assert_eq!(
        delete,
        Ok(Record::Notice(Notice::Delete {
            id: Some("1234".into()),
            user_id: Some("3".into()),
            timestamp_ms: Some(5),
        }))
    );
    let by_number = both(br#"{"delete":{"status":{"id":1234,"user_id":3},"timestamp_ms":6}}"#);
    assert_eq!(
        by_number,
        Ok(Record::Notice(Notice::Delete {
            id: Some("1234".into()),
            user_id: Some("3".into()),
            timestamp_ms: Some(6),
        })),
        "numeric ids and time, as the stream also writes them"
    );
    assert_eq!(
        delete.as_ref().map(|r| (r.kind(), r.id())),
        Ok(("delete", Some("1234")))
    );
    let cases: [(&str, Notice<'static>); 6] = [
        (
            r#"{"limit":{"track":10,"timestamp_ms":"5"}}"#,
            Notice::Limit,
        ),
        (
            r#"{"scrub_geo":{"user_id":1,"user_id_str":"1","up_to_status_id":2}}"#,
            Notice::ScrubGeo,
        ),
        (
            r#"{"status_withheld":{"id":1,"user_id":2,"withheld_in_countries":["DE"]}}"#,
            Notice::StatusWithheld,
        ),
        (
            r#"{"user_withheld":{"id":1,"withheld_in_countries":["DE"]}}"#,
            Notice::UserWithheld,
        ),
        (
            r#"{"disconnect":{"code":4,"stream_name":"x","reason":"y"}}"#,
            Notice::Disconnect,
        ),
        (
            r#"{"warning":{"code":"FALLING_BEHIND","message":"m","percent_full":60}}"#,
            Notice::Warning,
        ),
    ];
    for (json, notice) in cases {
        let name = notice.name();
        assert_eq!(both(json.as_bytes()), Ok(Record::Notice(notice)), "{name}");
    }
}

#[test]
fn objects_of_no_known_shape_are_other() {
    assert_eq!(
        both(br#"{"keep_alive": true, "delete": null}"#),
        Ok(Record::Other)
    );
    assert_eq!(both(b"{}"), Ok(Record::Other));
}

#[test]
fn v2_tweets() {
    let t = tweet(
        r#"{"data":{"id":"20","text":"v2 #Listed #text","author_id":"30","created_at":"2026-06-01T12:00:00.000Z","entities":{"hashtags":[{"start":3,"end":10,"tag":"Listed"}]}},"includes":{"users":[{"id":"30","protected":false}]}}"#,
    );
    assert_eq!(
        (t.id.as_ref(), t.user_id.as_ref(), t.timestamp_ms),
        ("20", "30", 1_780_315_200_000)
    );
    assert_eq!(tags(&t), ["Listed"]);
    let rt = tweet(
        r#"{"data":{"id":"21","text":"RT","author_id":"30","created_at":"2026-06-01T12:00:00Z","referenced_tweets":[{"type":"quoted","id":"1"},{"type":"retweeted","id":"2"}]}}"#,
    );
    assert!(rt.retweet);
    let note = tweet(
        r#"{"data":{"id":"22","text":"short","author_id":"30","created_at":"2026-06-01T12:00:00Z","note_tweet":{"text":"long #Note"}}}"#,
    );
    assert_eq!(tags(&note), ["Note"]);
    let protected = tweet(
        r#"{"data":{"id":"23","text":"x","author_id":"30","created_at":"2026-06-01T12:00:00Z"},"includes":{"users":[{"id":"31","protected":false},{"id":"30","protected":true}]}}"#,
    );
    assert!(protected.user_protected);
}

#[test]
fn protobuf_tweets() {
    let mut message = pb::Tweet {
        id: "40".into(),
        user_id: "50".into(),
        timestamp_ms: 1_780_315_200_000,
        text: "proto #FromText".into(),
        ..Default::default()
    };
    let t = match both(&message.encode_to_vec()) {
        Ok(Record::Tweet(t)) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(tags(&t), ["FromText"]);
    // Listed tags count only where the text carries them: `Listed` is not
    // in the text, so it is no hashtag of the tweet.
    message.entities = Some(pb::Entities {
        hashtags: vec!["Listed".into(), "fromtext".into()],
    });
    message.retweeted_id = "1".into();
    message.user_protected = true;
    let Ok(Record::Tweet(t)) = both(&message.encode_to_vec()) else {
        panic!("a tweet")
    };
    assert_eq!(tags(&t), ["fromtext"]);
    assert!(t.retweet && t.user_protected);
    message.timestamp_ms = 0;
    message.id = "1".into();
    assert_eq!(
        error(&message.encode_to_vec()),
        DecodeError::Missing("timestamp_ms or a snowflake id")
    );
    assert!(matches!(
        error(&[0x0a, 0xff, 0x01]),
        DecodeError::Protobuf(_)
    ));
    // Ids of 9, 10, 12 and 13 digits have a length byte that is ASCII
    // whitespace (tab, newline, form feed, carriage return).
    for id in ["123456789", "1234567890", "123456789012", "1234567890123"] {
        let message = pb::Tweet {
            id: id.into(),
            user_id: "50".into(),
            timestamp_ms: 1_780_315_200_000,
            text: "#FromText".into(),
            ..Default::default()
        };
        match both(&message.encode_to_vec()) {
            Ok(Record::Tweet(t)) => assert_eq!(t.id, id),
            other => panic!("a tweet with id {id}: {other:?}"),
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(matches!(
        error(br#"{"id_str": "1", "text": "unterminated"#),
        DecodeError::Json { .. }
    ));
    assert!(matches!(
        error(b"{\"text\": \"\xff\"}"),
        DecodeError::Utf8 { offset: 10 }
    ));
    assert_eq!(
        error(b"[1, 2]"),
        DecodeError::NotAnObject { found: "an array" }
    );
    assert_eq!(error(b"  \t "), DecodeError::Empty);
    assert_eq!(error(b""), DecodeError::Empty);
    assert_eq!(
        error(format!(r#"{{"text": "x", {USER}, "timestamp_ms": "5"}}"#).as_bytes()),
        DecodeError::Missing("id")
    );
    assert_eq!(
        error(br#"{"id_str": "1", "text": "x", "timestamp_ms": "5"}"#),
        DecodeError::Missing("user")
    );
    assert_eq!(
        error(format!(r#"{{"id_str": "1", "text": "x", {USER}}}"#).as_bytes()),
        DecodeError::Missing("timestamp_ms, created_at or a snowflake id")
    );
    assert!(matches!(
        error(
            format!(r#"{{"id_str": "1", "text": "x", {USER}, "created_at": "yesterday"}}"#)
                .as_bytes()
        ),
        DecodeError::BadTime {
            field: "created_at",
            ..
        }
    ));
    assert!(matches!(
        error(
            format!(r#"{{"id_str": "12a", "text": "x", {USER}, "timestamp_ms": "5"}}"#).as_bytes()
        ),
        DecodeError::BadId { .. }
    ));
    assert_eq!(
        error(br#"{"id_str": "1", "text": "x", "user": {"id_str": "2", "protected": "no"}, "timestamp_ms": "5"}"#),
        DecodeError::WrongType { field: "user.protected", expected: "a boolean" }
    );
    assert_eq!(
        error(br#"{"id_str": "1", "text": "x", "user": {"id_str": "2"}, "entities": {"hashtags": ["x"]}, "timestamp_ms": "5"}"#),
        DecodeError::WrongType { field: "entities.hashtags", expected: "an array of objects" }
    );
    let huge = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_RECORD_BYTES));
    assert!(matches!(
        error(huge.as_bytes()),
        DecodeError::TooLarge { .. }
    ));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert!(matches!(error(deep.as_bytes()), DecodeError::Json { .. }));
}

#[test]
fn errors_read_as_reasons() {
    assert_eq!(
        error(br#"{"id_str": "1", "text": "x", "user": {"id_str": "2", "protected": 1}, "timestamp_ms": "5"}"#).to_string(),
        "user.protected: expected a boolean"
    );
    assert_eq!(
        error(br#"{"a": tru}"#).to_string(),
        "invalid JSON at byte 6: expected a value"
    );
}
