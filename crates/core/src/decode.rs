//! Decoding of tweet records, detected per record: Twitter API v1.1 JSON
//! (tweets and streaming notices), API v2 JSON (`{"data":…,"includes":…}`)
//! and hashbuy's protobuf `Tweet`.
//!
//! Only what matching needs is decoded, borrowing from the record: ids,
//! author, time, whether it is a retweet, whether the author is protected,
//! and the hashtags its text carries (narrowed to those its entities list,
//! when it has entities). Everything else is checked for well-formedness
//! and skipped.
//!
//! Two decoders read JSON. [`decode`] is the hot path: the [`json`]
//! scanner, which materializes nothing it need not. [`decode_reference`]
//! parses a whole `serde_json::Value` first, the plain way; it exists to
//! hold the hot path to the same answers (property tests compare them on
//! generated and corrupted tweets) and as the baseline of the benches. Both
//! fill the same [`Facts`] and share every rule after that.
//!
//! Bad input is a [`DecodeError`] with a reason, never a panic.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::DateTime;
use hashbuy_proto::v1 as pb;
use prost::Message;

use crate::hashtag;
use crate::json::{Kind, Scanner, SyntaxError, Text};

/// Largest record decoded; a tweet's JSON is a few KB, retweets with their
/// quoted tweets a few tens.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A tweet.
    Tweet(Tweet<'a>),
    /// A streaming notice: counted, never a purchase.
    Notice(Notice<'a>),
    /// A JSON object of no known shape.
    Other,
}

/// What matching needs of a tweet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tweet<'a> {
    /// The tweet's id, decimal.
    pub id: Cow<'a, str>,
    /// The author's user id, decimal.
    pub user_id: Cow<'a, str>,
    /// The tweet's own time, ms since the epoch: its `timestamp_ms`, else
    /// its `created_at`, else the time its id carries ([`snowflake_ms`]).
    pub timestamp_ms: i64,
    /// A retweet (never buys).
    pub retweet: bool,
    /// The author's account is protected (never buys).
    pub user_protected: bool,
    /// The hashtags as written, without their sign, in order.
    pub hashtags: Vec<Cow<'a, str>>,
}

/// A streaming notice of the v1.1 API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A tweet was deleted; `id` is the deleted tweet's, when given.
    Delete {
        /// The deleted tweet's id.
        id: Option<Cow<'a, str>>,
        /// Its author's user id, when given: the key the stream's producer
        /// gives the notice, so it reaches the partition of the author's
        /// tweets.
        user_id: Option<Cow<'a, str>>,
        /// When it was deleted (`delete.timestamp_ms`), when given.
        timestamp_ms: Option<i64>,
    },
    /// Tweets were withheld by rate limiting.
    Limit,
    /// Location data of a user's tweets is to be removed.
    ScrubGeo,
    /// A tweet is withheld in some countries.
    StatusWithheld,
    /// A user is withheld in some countries.
    UserWithheld,
    /// The stream is closing.
    Disconnect,
    /// The stream is falling behind.
    Warning,
}

impl Notice<'_> {
    /// The notice's key in the v1.1 stream (`delete`, `limit`, ...).
    pub fn name(&self) -> &'static str {
        NOTICES[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            Notice::Delete { .. } => 0,
            Notice::Limit => 1,
            Notice::ScrubGeo => 2,
            Notice::StatusWithheld => 3,
            Notice::UserWithheld => 4,
            Notice::Disconnect => 5,
            Notice::Warning => 6,
        }
    }
}

/// Notice keys, in the order they win when a record has several.
const NOTICES: [&str; 7] = [
    "delete",
    "limit",
    "scrub_geo",
    "status_withheld",
    "user_withheld",
    "disconnect",
    "warning",
];

/// Why a record cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing but whitespace.
    #[error("empty record")]
    Empty,
    /// Over [`MAX_RECORD_BYTES`].
    #[error("record of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8 (JSON must be).
    #[error("invalid UTF-8 at byte {offset}")]
    Utf8 {
        /// Where the first bad byte is.
        offset: usize,
    },
    /// Not well-formed JSON.
    #[error("invalid JSON at byte {offset}: {what}")]
    Json {
        /// Where the problem is.
        offset: usize,
        /// What it is.
        what: String,
    },
    /// Well-formed JSON, but not an object.
    #[error("JSON {found}, not an object")]
    NotAnObject {
        /// What it is ("an array", ...).
        found: &'static str,
    },
    /// A field matching reads has the wrong type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// The field's path (`user.protected`).
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field a tweet needs is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An id that is no decimal number.
    #[error("{field}: {value:?} is not a decimal id")]
    BadId {
        /// The field's path.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A time that cannot be read.
    #[error("{field}: {value:?} is not a time ({expected})")]
    BadTime {
        /// The field's path.
        field: &'static str,
        /// Its value.
        value: String,
        /// The format expected.
        expected: &'static str,
    },
    /// Neither JSON nor a protobuf `Tweet`.
    #[error("not JSON, and not a protobuf Tweet: {0}")]
    Protobuf(String),
}

impl From<SyntaxError> for DecodeError {
    fn from(e: SyntaxError) -> Self {
        DecodeError::Json {
            offset: e.offset,
            what: e.what.to_owned(),
        }
    }
}

/// Decodes one record on the hot path.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    match classify(bytes)? {
        Format::Protobuf => decode_protobuf(bytes),
        Format::Json => {
            let text = simdutf8::basic::from_utf8(bytes).map_err(|_| utf8_error(bytes))?;
            let mut scanner = Scanner::new(text);
            let kind = scanner.peek()?;
            if kind != Kind::Object {
                scanner.skip()?;
                scanner.finish()?;
                return Err(DecodeError::NotAnObject {
                    found: kind.described(),
                });
            }
            let mut facts = Facts::default();
            scan_top(&mut scanner, &mut facts)?;
            scanner.finish()?;
            facts.interpret(&Text::may_contain_hash_sign)
        }
    }
}

/// Decodes one record the plain way, through a whole `serde_json::Value`.
/// Gives the same answers as [`decode`] (errors of the same kind, their
/// JSON syntax messages aside), slower; see the module docs.
pub fn decode_reference(bytes: &[u8]) -> Result<Record<'static>, DecodeError> {
    match classify(bytes)? {
        Format::Protobuf => decode_protobuf(bytes).map(Record::into_owned),
        Format::Json => {
            let text = std::str::from_utf8(bytes).map_err(|_| utf8_error(bytes))?;
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| DecodeError::Json {
                    offset: e.column(),
                    what: e.to_string(),
                })?;
            let serde_json::Value::Object(top) = &value else {
                return Err(DecodeError::NotAnObject {
                    found: reference::kind(&value).described(),
                });
            };
            let mut facts = Facts::default();
            reference::fill_top(top, &mut facts)?;
            facts.interpret(&|_| true).map(Record::into_owned)
        }
    }
}

impl Record<'_> {
    /// The record's kind as hashbuy's JSON lines and metrics name it:
    /// `tweet`, `delete`, `limit`, or `other` (other notices and objects of
    /// no known shape).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Tweet(_) => "tweet",
            Record::Notice(Notice::Delete { .. }) => "delete",
            Record::Notice(Notice::Limit) => "limit",
            Record::Notice(_) | Record::Other => "other",
        }
    }

    /// The tweet's id; for a delete notice, the deleted tweet's.
    pub fn id(&self) -> Option<&str> {
        match self {
            Record::Tweet(t) => Some(&t.id),
            Record::Notice(Notice::Delete { id, .. }) => id.as_deref(),
            _ => None,
        }
    }

    /// The record with everything owned.
    pub fn into_owned(self) -> Record<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Record::Tweet(t) => Record::Tweet(Tweet {
                id: own(t.id),
                user_id: own(t.user_id),
                timestamp_ms: t.timestamp_ms,
                retweet: t.retweet,
                user_protected: t.user_protected,
                hashtags: t.hashtags.into_iter().map(own).collect(),
            }),
            Record::Notice(Notice::Delete {
                id,
                user_id,
                timestamp_ms,
            }) => Record::Notice(Notice::Delete {
                id: id.map(own),
                user_id: user_id.map(own),
                timestamp_ms,
            }),
            Record::Notice(Notice::Limit) => Record::Notice(Notice::Limit),
            Record::Notice(Notice::ScrubGeo) => Record::Notice(Notice::ScrubGeo),
            Record::Notice(Notice::StatusWithheld) => Record::Notice(Notice::StatusWithheld),
            Record::Notice(Notice::UserWithheld) => Record::Notice(Notice::UserWithheld),
            Record::Notice(Notice::Disconnect) => Record::Notice(Notice::Disconnect),
            Record::Notice(Notice::Warning) => Record::Notice(Notice::Warning),
            Record::Other => Record::Other,
        }
    }
}

enum Format {
    Json,
    Protobuf,
}

/// JSON starts, after whitespace, with a printable ASCII character; a
/// protobuf `Tweet` starts with the tag of its id field (0x0A, then a
/// length byte below 0x20 for any decimal id): [`looks_like_text`] tells
/// them apart.
fn classify(bytes: &[u8]) -> Result<Format, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_RECORD_BYTES,
        });
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(DecodeError::Empty),
        Some(_) if looks_like_text(bytes) => Ok(Format::Json),
        Some(_) => Ok(Format::Protobuf),
    }
}

/// Whether a record is text (JSON or not) rather than a protobuf `Tweet`:
/// its first non-whitespace byte is printable ASCII, unless it opens as a
/// `Tweet` does, with its id field: `0x0A`, a length, and that many
/// decimal digits. The length byte of a 9-, 10-, 12- or 13-digit id is
/// itself ASCII whitespace, so without that test such a tweet would be
/// read as text from its id's first digit on (see [`decode`]'s format
/// detection).
pub fn looks_like_text(bytes: &[u8]) -> bool {
    if let [0x0A, len, rest @ ..] = bytes {
        let len = usize::from(*len);
        if (1..=20).contains(&len)
            && rest
                .get(..len)
                .is_some_and(|id| id.iter().all(u8::is_ascii_digit))
        {
            return false;
        }
    }
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(u8::is_ascii_graphic)
}

fn utf8_error(bytes: &[u8]) -> DecodeError {
    DecodeError::Utf8 {
        offset: std::str::from_utf8(bytes)
            .err()
            .map_or(0, |e| e.valid_up_to()),
    }
}

fn decode_protobuf(bytes: &[u8]) -> Result<Record<'static>, DecodeError> {
    let tweet = pb::Tweet::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let id = decimal_id("id", Some(Cow::Owned(tweet.id)))?.ok_or(DecodeError::Missing("id"))?;
    let user_id = decimal_id("user_id", Some(Cow::Owned(tweet.user_id)))?
        .ok_or(DecodeError::Missing("user_id"))?;
    let timestamp_ms = if tweet.timestamp_ms > 0 {
        tweet.timestamp_ms
    } else {
        snowflake_ms(&id).ok_or(DecodeError::Missing("timestamp_ms or a snowflake id"))?
    };
    let hashtags = match tweet.entities {
        Some(entities) => carried(
            entities.hashtags.into_iter().map(Cow::Owned).collect(),
            &tweet.text,
        ),
        None => extract_owned(&tweet.text),
    };
    Ok(Record::Tweet(Tweet {
        id,
        user_id,
        timestamp_ms,
        retweet: !tweet.retweeted_id.is_empty(),
        user_protected: tweet.user_protected,
        hashtags,
    }))
}

fn extract_owned(text: &str) -> Vec<Cow<'static, str>> {
    hashtag::extract(text)
        .into_iter()
        .map(|f| Cow::Owned(f.tag.to_owned()))
        .collect()
}

/// The first snowflake tweet id (November 2010). Ids below it were
/// handed out in sequence and carry no time; the boundary is TweetedAt's
/// (oduwsdl/tweetedat, `TimestampEstimator.py`).
pub const FIRST_SNOWFLAKE_ID: u64 = 29_700_859_247;

/// Snowflake's epoch, ms since the Unix epoch: a snowflake id holds the
/// milliseconds since then above its 22 bits of machine and sequence.
pub const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

/// The moment a decimal tweet id carries, ms since the Unix epoch, when it
/// is a snowflake; `None` for an older id or one that is no `u64`.
pub fn snowflake_ms(id: &str) -> Option<i64> {
    let id: u64 = id.parse().ok()?;
    // (u64::MAX >> 22) fits an i64 with room for the epoch.
    (id >= FIRST_SNOWFLAKE_ID).then(|| (id >> 22) as i64 + SNOWFLAKE_EPOCH_MS)
}

/// An id field's value, checked to be decimal; `None` when absent or empty.
fn decimal_id<'a>(
    field: &'static str,
    value: Option<Cow<'a, str>>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v)),
        Some(v) => Err(DecodeError::BadId {
            field,
            value: v.into_owned(),
        }),
    }
}

/// An id given as a string (`id_str`) or, failing that, as a number (`id`).
#[derive(Debug, Default)]
struct IdFacts<'a> {
    string: Option<Text<'a>>,
    number: Option<u64>,
}

impl<'a> IdFacts<'a> {
    fn resolve(&self, field: &'static str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match &self.string {
            Some(s) => decimal_id(field, Some(s.get())),
            None => Ok(self.number.map(|n| Cow::Owned(n.to_string()))),
        }
    }
}

/// A list of hashtag entities, or a text to extract them from.
#[derive(Debug, Default)]
struct HashtagFacts<'a> {
    listed: Option<Vec<Text<'a>>>,
    text: Option<Text<'a>>,
}

/// What a JSON record says, as far as matching reads it: filled by the
/// scanner ([`scan_top`]) or from a `Value` ([`reference::fill_top`]).
/// Absent and `null` fields are both `None`.
#[derive(Debug, Default)]
struct Facts<'a> {
    /// Bit i set: the notice `NOTICES[i]` is present.
    notices: u8,
    deleted: IdFacts<'a>,
    /// The deleted tweet's author (`delete.status.user_id_str`).
    deleter: IdFacts<'a>,
    /// `delete.timestamp_ms`.
    deleted_at: Option<i64>,
    /// Whether any v1.1 tweet field is present.
    tweet_fields: bool,
    id: IdFacts<'a>,
    /// Top-level `text`, or `full_text` (extended mode) when present.
    body: HashtagFacts<'a>,
    /// `extended_tweet`, for a long tweet in the stream.
    extended: Option<HashtagFacts<'a>>,
    user: Option<UserFacts<'a>>,
    retweet: bool,
    created_at: Option<Text<'a>>,
    timestamp_ms: Option<i64>,
    v2: Option<V2Facts<'a>>,
}

#[derive(Debug, Default)]
struct UserFacts<'a> {
    id: IdFacts<'a>,
    protected: Option<bool>,
}

#[derive(Debug, Default)]
struct V2Facts<'a> {
    id: Option<Text<'a>>,
    author_id: Option<Text<'a>>,
    created_at: Option<Text<'a>>,
    body: HashtagFacts<'a>,
    note: Option<HashtagFacts<'a>>,
    retweet: bool,
    /// Ids of `includes.users` marked protected.
    protected_users: Vec<Text<'a>>,
}

/// The format of v1.1 `created_at`.
const V1_TIME_FORMAT: &str = "%a %b %d %H:%M:%S %z %Y";

impl<'a> Facts<'a> {
    /// Turns facts into a record. `may_have_hashtags` is the hot path's
    /// prefilter: false for a text that certainly has no hashtag sign.
    fn interpret(
        self,
        may_have_hashtags: &dyn Fn(&Text<'a>) -> bool,
    ) -> Result<Record<'a>, DecodeError> {
        if let Some(v2) = self.v2 {
            return v2.interpret(may_have_hashtags);
        }
        if self.notices != 0 {
            let first = self.notices.trailing_zeros();
            return Ok(Record::Notice(match first {
                0 => Notice::Delete {
                    id: self.deleted.resolve("delete.status.id_str").ok().flatten(),
                    user_id: self
                        .deleter
                        .resolve("delete.status.user_id_str")
                        .ok()
                        .flatten(),
                    timestamp_ms: self.deleted_at,
                },
                1 => Notice::Limit,
                2 => Notice::ScrubGeo,
                3 => Notice::StatusWithheld,
                4 => Notice::UserWithheld,
                5 => Notice::Disconnect,
                _ => Notice::Warning,
            }));
        }
        if !self.tweet_fields {
            return Ok(Record::Other);
        }
        let id = self
            .id
            .resolve("id_str")?
            .ok_or(DecodeError::Missing("id"))?;
        let user = self.user.ok_or(DecodeError::Missing("user"))?;
        let user_id = user
            .id
            .resolve("user.id_str")?
            .ok_or(DecodeError::Missing("user.id"))?;
        let timestamp_ms = match (self.timestamp_ms, &self.created_at) {
            (Some(ms), _) => ms,
            (None, Some(created_at)) => parse_time("created_at", created_at, V1_TIME_FORMAT)?,
            (None, None) => snowflake_ms(&id).ok_or(DecodeError::Missing(
                "timestamp_ms, created_at or a snowflake id",
            ))?,
        };
        let source = self.body.or_long(self.extended);
        Ok(Record::Tweet(Tweet {
            id,
            user_id,
            timestamp_ms,
            retweet: self.retweet,
            user_protected: user.protected.unwrap_or(false),
            hashtags: source.hashtags("text", may_have_hashtags)?,
        }))
    }
}

impl<'a> V2Facts<'a> {
    fn interpret(
        self,
        may_have_hashtags: &dyn Fn(&Text<'a>) -> bool,
    ) -> Result<Record<'a>, DecodeError> {
        let id = decimal_id("data.id", self.id.map(|t| t.get()))?
            .ok_or(DecodeError::Missing("data.id"))?;
        let user_id = decimal_id("data.author_id", self.author_id.map(|t| t.get()))?
            .ok_or(DecodeError::Missing("data.author_id"))?;
        // API v2 gives `created_at` only when asked for it.
        let timestamp_ms = match self.created_at {
            Some(created_at) => parse_rfc3339("data.created_at", &created_at)?,
            None => snowflake_ms(&id).ok_or(DecodeError::Missing(
                "data.created_at or a snowflake data.id",
            ))?,
        };
        let user_protected = self.protected_users.iter().any(|u| u.get() == user_id);
        let source = self.body.or_long(self.note);
        Ok(Record::Tweet(Tweet {
            id,
            user_id,
            timestamp_ms,
            retweet: self.retweet,
            user_protected,
            hashtags: source.hashtags("data.text", may_have_hashtags)?,
        }))
    }
}

impl<'a> HashtagFacts<'a> {
    /// Where a tweet's hashtags are read: its long form (`extended_tweet`,
    /// v2 `note_tweet`) when that has text or entities, else the tweet's
    /// own; long entities without a long text are held to the tweet's own
    /// text.
    fn or_long(self, long: Option<HashtagFacts<'a>>) -> HashtagFacts<'a> {
        match long {
            Some(long) if long.listed.is_some() || long.text.is_some() => HashtagFacts {
                text: long.text.or(self.text),
                listed: long.listed,
            },
            _ => self,
        }
    }

    /// The hashtags that count: without entities, the text's by the
    /// twitter-text rules; with them, those listed that the text carries
    /// ([`carried`]).
    fn hashtags(
        self,
        text_field: &'static str,
        may_have_hashtags: &dyn Fn(&Text<'a>) -> bool,
    ) -> Result<Vec<Cow<'a, str>>, DecodeError> {
        let Some(text) = self.text else {
            return match self.listed {
                Some(_) => Ok(Vec::new()),
                None => Err(DecodeError::Missing(text_field)),
            };
        };
        if !may_have_hashtags(&text) {
            return Ok(Vec::new());
        }
        Ok(match (self.listed, text) {
            (Some(listed), text) => carried(listed.iter().map(Text::get).collect(), &text.get()),
            (None, Text::Plain(text)) => hashtag::extract(text)
                .into_iter()
                .map(|f| Cow::Borrowed(f.tag))
                .collect(),
            (None, text) => extract_owned(&text.get()),
        })
    }
}

/// The listed hashtags of a tweet that count for purchases: those its
/// text carries right after a sign ([`hashtag::after_signs`]), compared as
/// the catalog compares them, normalized. A listed hashtag its text does
/// not carry makes the tweet inconsistent, and what a shopper did not
/// write never buys; this is also what lets the prefilter
/// ([`crate::prefilter`]) skip records without a sign. A set, so a record
/// listing many tags over a text of many signs stays linear.
fn carried<'a>(listed: Vec<Cow<'a, str>>, text: &str) -> Vec<Cow<'a, str>> {
    let written: HashSet<Cow<'_, str>> =
        hashtag::after_signs(text).map(hashtag::normalize).collect();
    if written.is_empty() {
        return Vec::new();
    }
    listed
        .into_iter()
        .filter(|tag| written.contains(&hashtag::normalize(tag)))
        .collect()
}

fn parse_time(
    field: &'static str,
    text: &Text<'_>,
    format: &'static str,
) -> Result<i64, DecodeError> {
    let value = text.get();
    DateTime::parse_from_str(&value, format)
        .map(|t| t.timestamp_millis())
        .map_err(|_| DecodeError::BadTime {
            field,
            value: value.into_owned(),
            expected: "like \"Wed Oct 10 20:19:24 +0000 2018\"",
        })
}

fn parse_rfc3339(field: &'static str, text: &Text<'_>) -> Result<i64, DecodeError> {
    let value = text.get();
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| DecodeError::BadTime {
            field,
            value: value.into_owned(),
            expected: "RFC 3339",
        })
}

/// `timestamp_ms` as the stream writes it (a decimal string) or a number.
fn timestamp_from_text(text: &Text<'_>) -> Option<i64> {
    text.get().parse::<i64>().ok().filter(|&ms| ms > 0)
}

/// Reads a `timestamp_ms`: a decimal string or a number of milliseconds;
/// anything else (or a value not after the epoch) is no time.
fn scan_timestamp(s: &mut Scanner<'_>) -> Result<Option<i64>, DecodeError> {
    Ok(match s.peek()? {
        Kind::String => timestamp_from_text(&s.string()?),
        Kind::Number => s
            .number()?
            .and_then(|n| i64::try_from(n).ok())
            .filter(|&n| n > 0),
        _ => {
            s.skip()?;
            None
        }
    })
}

type ScanResult = Result<(), DecodeError>;

fn wrong(field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::WrongType { field, expected }
}

/// Reads a string or `null`; anything else is a `WrongType` for `field`.
fn scan_opt_string<'a>(
    s: &mut Scanner<'a>,
    field: &'static str,
) -> Result<Option<Text<'a>>, DecodeError> {
    match s.peek()? {
        Kind::String => Ok(Some(s.string()?)),
        Kind::Null => {
            s.null()?;
            Ok(None)
        }
        _ => Err(wrong(field, "a string")),
    }
}

/// Reads a number's u64 value, or skips any other value (ids given as
/// numbers are only a fallback for their string forms).
fn scan_opt_u64(s: &mut Scanner<'_>) -> Result<Option<u64>, DecodeError> {
    if s.peek()? == Kind::Number {
        Ok(s.number()?)
    } else {
        s.skip()?;
        Ok(None)
    }
}

/// Whether the next value is `null` (consumed) or of kind `want` (left for
/// the caller); anything else is a `WrongType`.
fn scan_present(s: &mut Scanner<'_>, want: Kind, field: &'static str) -> Result<bool, DecodeError> {
    let kind = s.peek()?;
    if kind == want {
        Ok(true)
    } else if kind == Kind::Null {
        s.null()?;
        Ok(false)
    } else {
        Err(wrong(field, want.described()))
    }
}

fn scan_top<'a>(s: &mut Scanner<'a>, f: &mut Facts<'a>) -> ScanResult {
    scan_fields(s, |s, key| scan_top_field(s, key, f))
}

fn scan_top_field<'a>(s: &mut Scanner<'a>, key: &str, f: &mut Facts<'a>) -> ScanResult {
    match key {
        "id_str" => {
            f.id.string = scan_opt_string(s, "id_str")?;
            f.tweet_fields |= f.id.string.is_some();
        }
        "id" => {
            let kind = s.peek()?;
            f.id.number = scan_opt_u64(s)?;
            f.tweet_fields |= kind != Kind::Null;
        }
        "text" => {
            if let Some(text) = scan_opt_string(s, "text")? {
                f.tweet_fields = true;
                // Extended mode's `full_text` wins over `text`.
                f.body.text.get_or_insert(text);
            }
        }
        "full_text" => {
            if let Some(text) = scan_opt_string(s, "full_text")? {
                f.tweet_fields = true;
                f.body.text = Some(text);
            }
        }
        "entities" => {
            if scan_present(s, Kind::Object, "entities")? {
                f.body.listed = scan_entities(s, "entities.hashtags", "text")?;
            }
        }
        "extended_tweet" => {
            if scan_present(s, Kind::Object, EXTENDED_TWEET.object)? {
                f.extended = Some(scan_long_text(s, &EXTENDED_TWEET)?);
            }
        }
        "user" => {
            if scan_present(s, Kind::Object, "user")? {
                f.tweet_fields = true;
                let mut user = UserFacts::default();
                scan_fields(s, |s, key| {
                    match key {
                        "id_str" => user.id.string = scan_opt_string(s, "user.id_str")?,
                        "id" => user.id.number = scan_opt_u64(s)?,
                        "protected" => {
                            user.protected = match s.peek()? {
                                Kind::Bool => Some(s.boolean()?),
                                Kind::Null => {
                                    s.null()?;
                                    None
                                }
                                _ => return Err(wrong("user.protected", "a boolean")),
                            }
                        }
                        _ => s.skip()?,
                    }
                    Ok(())
                })?;
                f.user = Some(user);
            }
        }
        "retweeted_status" => {
            f.retweet = s.peek()? != Kind::Null;
            s.skip()?;
        }
        "created_at" => f.created_at = scan_opt_string(s, "created_at")?,
        "timestamp_ms" => f.timestamp_ms = scan_timestamp(s)?,
        "delete" => {
            if s.peek()? == Kind::Null {
                s.null()?;
                return Ok(());
            }
            f.notices |= 1;
            if s.peek()? != Kind::Object {
                return Ok(s.skip()?);
            }
            let (deleted, deleter, deleted_at) =
                (&mut f.deleted, &mut f.deleter, &mut f.deleted_at);
            scan_fields(s, |s, key| {
                if key == "timestamp_ms" {
                    *deleted_at = scan_timestamp(s)?;
                    return Ok(());
                }
                if key != "status" || s.peek()? != Kind::Object {
                    return Ok(s.skip()?);
                }
                scan_fields(s, |s, key| {
                    match (key, s.peek()?) {
                        ("id_str", Kind::String) => deleted.string = Some(s.string()?),
                        ("id", Kind::Number) => deleted.number = s.number()?,
                        ("user_id_str", Kind::String) => deleter.string = Some(s.string()?),
                        ("user_id", Kind::Number) => deleter.number = s.number()?,
                        _ => s.skip()?,
                    }
                    Ok(())
                })
            })?;
        }
        "data" => {
            if scan_present(s, Kind::Object, "data")? {
                let v2 = f.v2.get_or_insert_with(V2Facts::default);
                scan_v2_data(s, v2)?;
            }
        }
        "includes" => {
            if scan_present(s, Kind::Object, "includes")? {
                let v2 = f.v2.get_or_insert_with(V2Facts::default);
                scan_fields(s, |s, key| {
                    if key != "users" {
                        return Ok(s.skip()?);
                    }
                    if !scan_present(s, Kind::Array, "includes.users")? {
                        return Ok(());
                    }
                    scan_items(s, |s| {
                        if s.peek()? != Kind::Object {
                            return Err(wrong("includes.users", "an array of objects"));
                        }
                        let mut id = None;
                        let mut protected = false;
                        scan_fields(s, |s, key| {
                            match key {
                                "id" => id = scan_opt_string(s, "includes.users.id")?,
                                "protected" => {
                                    protected = match s.peek()? {
                                        Kind::Bool => s.boolean()?,
                                        Kind::Null => {
                                            s.null()?;
                                            false
                                        }
                                        _ => {
                                            return Err(wrong(
                                                "includes.users.protected",
                                                "a boolean",
                                            ))
                                        }
                                    }
                                }
                                _ => s.skip()?,
                            }
                            Ok(())
                        })?;
                        if let (Some(id), true) = (id, protected) {
                            v2.protected_users.push(id);
                        }
                        Ok(())
                    })
                })?;
            }
        }
        "limit" => scan_notice(s, f, 1)?,
        "scrub_geo" => scan_notice(s, f, 2)?,
        "status_withheld" => scan_notice(s, f, 3)?,
        "user_withheld" => scan_notice(s, f, 4)?,
        "disconnect" => scan_notice(s, f, 5)?,
        "warning" => scan_notice(s, f, 6)?,
        _ => s.skip()?,
    }
    Ok(())
}

/// Marks notice `NOTICES[index]` present unless its value is `null`.
fn scan_notice(s: &mut Scanner<'_>, f: &mut Facts<'_>, index: u8) -> ScanResult {
    if s.peek()? != Kind::Null {
        f.notices |= 1 << index;
    }
    Ok(s.skip()?)
}

fn scan_v2_data<'a>(s: &mut Scanner<'a>, v2: &mut V2Facts<'a>) -> ScanResult {
    scan_fields(s, |s, key| {
        match key {
            "id" => v2.id = scan_opt_string(s, "data.id")?,
            "author_id" => v2.author_id = scan_opt_string(s, "data.author_id")?,
            "created_at" => v2.created_at = scan_opt_string(s, "data.created_at")?,
            "text" => v2.body.text = scan_opt_string(s, "data.text")?,
            "entities" => {
                if scan_present(s, Kind::Object, "data.entities")? {
                    v2.body.listed = scan_entities(s, "data.entities.hashtags", "tag")?;
                }
            }
            "note_tweet" => {
                if scan_present(s, Kind::Object, NOTE_TWEET.object)? {
                    v2.note = Some(scan_long_text(s, &NOTE_TWEET)?);
                }
            }
            "referenced_tweets" => {
                if scan_present(s, Kind::Array, "data.referenced_tweets")? {
                    scan_items(s, |s| {
                        if s.peek()? != Kind::Object {
                            return Err(wrong("data.referenced_tweets", "an array of objects"));
                        }
                        scan_fields(s, |s, key| {
                            if key == "type" {
                                let kind = scan_opt_string(s, "data.referenced_tweets.type")?;
                                v2.retweet |= kind.is_some_and(|k| k.get() == "retweeted");
                            } else {
                                s.skip()?;
                            }
                            Ok(())
                        })
                    })?;
                }
            }
            _ => s.skip()?,
        }
        Ok(())
    })
}

/// Where a long tweet keeps its full text and entities: v1.1's
/// `extended_tweet`, v2's `note_tweet`.
struct LongText {
    object: &'static str,
    text_key: &'static str,
    text: &'static str,
    entities: &'static str,
    hashtags: &'static str,
    tag_key: &'static str,
}

const EXTENDED_TWEET: LongText = LongText {
    object: "extended_tweet",
    text_key: "full_text",
    text: "extended_tweet.full_text",
    entities: "extended_tweet.entities",
    hashtags: "extended_tweet.entities.hashtags",
    tag_key: "text",
};

const NOTE_TWEET: LongText = LongText {
    object: "data.note_tweet",
    text_key: "text",
    text: "data.note_tweet.text",
    entities: "data.note_tweet.entities",
    hashtags: "data.note_tweet.entities.hashtags",
    tag_key: "tag",
};

/// Reads a long tweet's object (the next value must be one).
fn scan_long_text<'a>(
    s: &mut Scanner<'a>,
    paths: &LongText,
) -> Result<HashtagFacts<'a>, DecodeError> {
    let mut facts = HashtagFacts::default();
    scan_fields(s, |s, key| {
        if key == paths.text_key {
            facts.text = scan_opt_string(s, paths.text)?;
        } else if key == "entities" {
            if scan_present(s, Kind::Object, paths.entities)? {
                facts.listed = scan_entities(s, paths.hashtags, paths.tag_key)?;
            }
        } else {
            s.skip()?;
        }
        Ok(())
    })?;
    Ok(facts)
}

/// Reads an entities object's hashtag list: `[{"<tag_key>": "..."}, ...]`.
fn scan_entities<'a>(
    s: &mut Scanner<'a>,
    field: &'static str,
    tag_key: &'static str,
) -> Result<Option<Vec<Text<'a>>>, DecodeError> {
    let mut listed = None;
    scan_fields(s, |s, key| {
        if key != "hashtags" {
            return Ok(s.skip()?);
        }
        if !scan_present(s, Kind::Array, field)? {
            listed = None;
            return Ok(());
        }
        let mut tags = Vec::new();
        scan_items(s, |s| {
            if s.peek()? != Kind::Object {
                return Err(wrong(field, "an array of objects"));
            }
            let mut tag = None;
            scan_fields(s, |s, key| {
                if key == tag_key {
                    tag = scan_opt_string(s, field)?;
                } else {
                    s.skip()?;
                }
                Ok(())
            })?;
            tags.push(tag.ok_or(DecodeError::Missing(field))?);
            Ok(())
        })?;
        listed = Some(tags);
        Ok(())
    })?;
    Ok(listed)
}

/// Walks an object, calling `field` with each key; `field` must consume the
/// value.
#[inline]
fn scan_fields<'a>(
    s: &mut Scanner<'a>,
    mut field: impl FnMut(&mut Scanner<'a>, &str) -> ScanResult,
) -> ScanResult {
    let mut members = s.members()?;
    while let Some(key) = members.next(s)? {
        match key {
            Text::Plain(k) => field(s, k)?,
            Text::Escaped(_) => field(s, &key.get())?,
        }
    }
    Ok(())
}

/// Walks an array, calling `item` for each element; `item` must consume it.
#[inline]
fn scan_items<'a>(
    s: &mut Scanner<'a>,
    mut item: impl FnMut(&mut Scanner<'a>) -> ScanResult,
) -> ScanResult {
    let mut elements = s.elements()?;
    while elements.next(s)? {
        item(s)?;
    }
    Ok(())
}

/// The plain decoder's walk over a `serde_json::Value`, filling the same
/// facts by the same rules as the scanner.
mod reference {
    use serde_json::{Map, Value};

    use super::*;

    pub(super) fn kind(value: &Value) -> Kind {
        match value {
            Value::Object(_) => Kind::Object,
            Value::Array(_) => Kind::Array,
            Value::String(_) => Kind::String,
            Value::Number(_) => Kind::Number,
            Value::Bool(_) => Kind::Bool,
            Value::Null => Kind::Null,
        }
    }

    fn opt_string<'a>(
        value: Option<&'a Value>,
        field: &'static str,
    ) -> Result<Option<Text<'a>>, DecodeError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Text::Plain(s))),
            Some(_) => Err(wrong(field, "a string")),
        }
    }

    fn opt_object<'a>(
        value: Option<&'a Value>,
        field: &'static str,
    ) -> Result<Option<&'a Map<String, Value>>, DecodeError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(wrong(field, "an object")),
        }
    }

    fn opt_array<'a>(
        value: Option<&'a Value>,
        field: &'static str,
    ) -> Result<Option<&'a Vec<Value>>, DecodeError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(wrong(field, "an array")),
        }
    }

    fn opt_bool(value: Option<&Value>, field: &'static str) -> Result<Option<bool>, DecodeError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong(field, "a boolean")),
        }
    }

    fn present(value: Option<&Value>) -> bool {
        !matches!(value, None | Some(Value::Null))
    }

    fn entities<'a>(
        object: &'a Map<String, Value>,
        field: &'static str,
        tag_key: &str,
    ) -> Result<Option<Vec<Text<'a>>>, DecodeError> {
        let Some(items) = opt_array(object.get("hashtags"), field)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|item| {
                let Value::Object(item) = item else {
                    return Err(wrong(field, "an array of objects"));
                };
                opt_string(item.get(tag_key), field)?.ok_or(DecodeError::Missing(field))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn long_text<'a>(
        object: &'a Map<String, Value>,
        paths: &LongText,
    ) -> Result<HashtagFacts<'a>, DecodeError> {
        let mut facts = HashtagFacts {
            text: opt_string(object.get(paths.text_key), paths.text)?,
            listed: None,
        };
        if let Some(e) = opt_object(object.get("entities"), paths.entities)? {
            facts.listed = entities(e, paths.hashtags, paths.tag_key)?;
        }
        Ok(facts)
    }

    pub(super) fn fill_top<'a>(
        top: &'a Map<String, Value>,
        f: &mut Facts<'a>,
    ) -> Result<(), DecodeError> {
        f.id.string = opt_string(top.get("id_str"), "id_str")?;
        f.id.number = top.get("id").and_then(Value::as_u64);
        let text = opt_string(top.get("text"), "text")?;
        let full_text = opt_string(top.get("full_text"), "full_text")?;
        f.body.text = full_text.or(text);
        f.tweet_fields = f.id.string.is_some() || present(top.get("id")) || f.body.text.is_some();
        if let Some(entities_obj) = opt_object(top.get("entities"), "entities")? {
            f.body.listed = entities(entities_obj, "entities.hashtags", "text")?;
        }
        if let Some(ext) = opt_object(top.get("extended_tweet"), EXTENDED_TWEET.object)? {
            f.extended = Some(long_text(ext, &EXTENDED_TWEET)?);
        }
        if let Some(user) = opt_object(top.get("user"), "user")? {
            f.tweet_fields = true;
            f.user = Some(UserFacts {
                id: IdFacts {
                    string: opt_string(user.get("id_str"), "user.id_str")?,
                    number: user.get("id").and_then(Value::as_u64),
                },
                protected: opt_bool(user.get("protected"), "user.protected")?,
            });
        }
        f.retweet = present(top.get("retweeted_status"));
        f.created_at = opt_string(top.get("created_at"), "created_at")?;
        f.timestamp_ms = timestamp(top.get("timestamp_ms"));
        for (i, name) in NOTICES.iter().enumerate() {
            if present(top.get(*name)) {
                f.notices |= 1 << i;
            }
        }
        if let Some(Value::Object(delete)) = top.get("delete") {
            f.deleted_at = timestamp(delete.get("timestamp_ms"));
            if let Some(Value::Object(status)) = delete.get("status") {
                let id = |string: &str, number: &str| IdFacts {
                    string: match status.get(string) {
                        Some(Value::String(s)) => Some(Text::Plain(s)),
                        _ => None,
                    },
                    number: status.get(number).and_then(Value::as_u64),
                };
                f.deleted = id("id_str", "id");
                f.deleter = id("user_id_str", "user_id");
            }
        }
        let data = opt_object(top.get("data"), "data")?;
        let includes = opt_object(top.get("includes"), "includes")?;
        if data.is_some() || includes.is_some() {
            f.v2 = Some(fill_v2(data, includes)?);
        }
        Ok(())
    }

    /// A `timestamp_ms` as the scanner reads it ([`super::scan_timestamp`]).
    fn timestamp(value: Option<&Value>) -> Option<i64> {
        match value {
            Some(Value::String(s)) => timestamp_from_text(&Text::Plain(s)),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| i64::try_from(n).ok())
                .filter(|&n| n > 0),
            _ => None,
        }
    }

    fn fill_v2<'a>(
        data: Option<&'a Map<String, Value>>,
        includes: Option<&'a Map<String, Value>>,
    ) -> Result<V2Facts<'a>, DecodeError> {
        let mut v2 = V2Facts::default();
        if let Some(data) = data {
            v2.id = opt_string(data.get("id"), "data.id")?;
            v2.author_id = opt_string(data.get("author_id"), "data.author_id")?;
            v2.created_at = opt_string(data.get("created_at"), "data.created_at")?;
            v2.body.text = opt_string(data.get("text"), "data.text")?;
            if let Some(e) = opt_object(data.get("entities"), "data.entities")? {
                v2.body.listed = entities(e, "data.entities.hashtags", "tag")?;
            }
            if let Some(note) = opt_object(data.get("note_tweet"), NOTE_TWEET.object)? {
                v2.note = Some(long_text(note, &NOTE_TWEET)?);
            }
            if let Some(refs) = opt_array(data.get("referenced_tweets"), "data.referenced_tweets")?
            {
                for r in refs {
                    let Value::Object(r) = r else {
                        return Err(wrong("data.referenced_tweets", "an array of objects"));
                    };
                    let kind = opt_string(r.get("type"), "data.referenced_tweets.type")?;
                    v2.retweet |= kind.is_some_and(|k| k.get() == "retweeted");
                }
            }
        }
        if let Some(users) = includes
            .map(|i| opt_array(i.get("users"), "includes.users"))
            .transpose()?
            .flatten()
        {
            for user in users {
                let Value::Object(user) = user else {
                    return Err(wrong("includes.users", "an array of objects"));
                };
                let id = opt_string(user.get("id"), "includes.users.id")?;
                let protected = opt_bool(user.get("protected"), "includes.users.protected")?;
                if let (Some(id), Some(true)) = (id, protected) {
                    v2.protected_users.push(id);
                }
            }
        }
        Ok(v2)
    }
}
