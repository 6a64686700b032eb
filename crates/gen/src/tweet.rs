//! Rendering a tweet object (Twitter API v1.1 field order) from its parts.

use crate::json::{push_escaped, push_id_pair, push_string, push_twitter_date, push_u64};
use crate::pools;
use crate::text::{Span, Text, UrlKind};
use crate::world::World;

/// A tweet to render.
pub(crate) struct Status<'a> {
    pub id: u64,
    pub ms: i64,
    pub user: u32,
    /// The classic `text` (cut to 140 with `…` when `full` is set).
    pub text: &'a Text,
    /// The whole text, for `extended_tweet`, when the tweet is truncated.
    pub full: Option<&'a Text>,
    /// Replied-to tweet id and author.
    pub reply: Option<(u64, u32)>,
    pub source: usize,
    pub lang: &'static str,
    pub place: Option<usize>,
    /// `[lon, lat]` of an exact location.
    pub coords: Option<(f64, f64)>,
    /// quote, reply, retweet, favorite counts.
    pub counts: [u64; 4],
    /// Render the sign-free variants of the author's profile and of the
    /// source, for a line that must hold no hashtag sign.
    pub plain: bool,
}

/// What a tweet embeds.
pub(crate) enum Embed<'a> {
    None,
    Retweet(&'a Status<'a>),
    Quote(&'a Status<'a>),
}

/// Appends `"indices":[i0,i1]`.
fn push_indices_only(out: &mut Vec<u8>, i0: u32, i1: u32) {
    out.extend_from_slice(b"\"indices\":[");
    push_u64(out, i0.into());
    out.push(b',');
    push_u64(out, i1.into());
    out.push(b']');
}

/// Appends `"indices":[i0,i1]}`, closing an entity.
fn push_indices(out: &mut Vec<u8>, i0: u32, i1: u32) {
    push_indices_only(out, i0, i1);
    out.push(b'}');
}

/// Appends `"twitter.com\/name\/status\/ID"`-style permalink pieces.
fn push_permalink(out: &mut Vec<u8>, w: &World, id: u64, user: u32, https: bool, short: bool) {
    if https {
        out.extend_from_slice(b"https:\\/\\/");
    }
    out.extend_from_slice(b"twitter.com\\/");
    out.extend_from_slice(w.screen_name(user).as_bytes());
    out.extend_from_slice(b"\\/status\\/");
    if short {
        let mut digits = Vec::with_capacity(20);
        push_u64(&mut digits, id);
        out.extend_from_slice(&digits[..digits.len().min(4)]);
        out.extend_from_slice("…".as_bytes());
    } else {
        push_u64(out, id);
    }
}

fn push_media(out: &mut Vec<u8>, w: &World, t: &Text, status_id: u64) {
    let Some(m) = t.media else { return };
    let Some(photo) = w.photos.get(m.pool as usize) else {
        return;
    };
    out.push(b'{');
    push_id_pair(out, "id", m.media_id);
    out.push(b',');
    push_indices_only(out, m.i0, m.i1);
    out.push(b',');
    out.extend_from_slice(photo.head.as_bytes());
    out.extend_from_slice(w.screen_name(m.owner_user).as_bytes());
    out.extend_from_slice(b"\\/status\\/");
    push_u64(out, m.owner_id);
    out.extend_from_slice(photo.tail.as_bytes());
    if m.owner_id != status_id {
        out.push(b',');
        push_id_pair(out, "source_status_id", m.owner_id);
        out.push(b',');
        push_id_pair(out, "source_user_id", w.users[m.owner_user as usize].id);
    }
    out.push(b'}');
}

/// Appends hashtag or cashtag entities: `{"text":…,"indices":[…]}`, comma
/// separated.
fn push_text_spans(out: &mut Vec<u8>, t: &Text, spans: &[Span]) {
    for (k, s) in spans.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"text\":");
        push_string(out, t.span_text(s));
        out.push(b',');
        push_indices(out, s.i0, s.i1);
    }
}

/// Appends an `entities` object (and `,"extended_entities":{…}` after it
/// when `extended` and there is a photo).
fn push_entities(out: &mut Vec<u8>, w: &World, t: &Text, status_id: u64, extended: bool) {
    out.extend_from_slice(b"{\"hashtags\":[");
    push_text_spans(out, t, &t.tags);
    out.extend_from_slice(b"],\"urls\":[");
    for (k, u) in t.urls.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        match u.kind {
            UrlKind::Pool(p) => {
                let Some(link) = w.links.get(p as usize) else {
                    continue;
                };
                out.extend_from_slice(link.json.as_bytes());
                push_u64(out, u.i0.into());
                out.push(b',');
                push_u64(out, u.i1.into());
                out.extend_from_slice(b"]}");
            }
            UrlKind::Quote { code, id, user } => {
                out.extend_from_slice(b"{\"url\":\"https:\\/\\/t.co\\/");
                out.extend_from_slice(&code);
                out.extend_from_slice(b"\",\"expanded_url\":\"");
                push_permalink(out, w, id, user, true, false);
                out.extend_from_slice(b"\",\"display_url\":\"");
                push_permalink(out, w, id, user, false, true);
                out.extend_from_slice(b"\",");
                push_indices(out, u.i0, u.i1);
            }
        }
    }
    out.extend_from_slice(b"],\"user_mentions\":[");
    for (k, m) in t.mentions.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        w.write_mention(out, m.user, m.i0, m.i1);
    }
    out.extend_from_slice(b"],\"symbols\":[");
    push_text_spans(out, t, &t.symbols);
    out.push(b']');
    if t.media.is_some() {
        out.extend_from_slice(b",\"media\":[");
        push_media(out, w, t, status_id);
        out.push(b']');
    }
    out.push(b'}');
    if extended && t.media.is_some() {
        out.extend_from_slice(b",\"extended_entities\":{\"media\":[");
        push_media(out, w, t, status_id);
        out.extend_from_slice(b"]}");
    }
}

fn push_text(out: &mut Vec<u8>, t: &Text) {
    out.push(b'"');
    push_escaped(out, &t.s);
    out.push(b'"');
}

/// Appends a tweet object. `top` adds `timestamp_ms` (embedded tweets of
/// the streaming API carry none).
pub(crate) fn write_status(out: &mut Vec<u8>, w: &World, st: &Status, embed: &Embed, top: bool) {
    out.extend_from_slice(b"{\"created_at\":\"");
    push_twitter_date(out, st.ms);
    out.extend_from_slice(b"\",");
    push_id_pair(out, "id", st.id);
    out.extend_from_slice(b",\"text\":");
    push_text(out, st.text);
    out.extend_from_slice(b",\"source\":");
    out.extend_from_slice(pools::source(st.source, st.plain).as_bytes());
    out.extend_from_slice(if st.full.is_some() {
        b",\"truncated\":true,"
    } else {
        b",\"truncated\":false,"
    });
    match st.reply {
        Some((id, user)) => {
            push_id_pair(out, "in_reply_to_status_id", id);
            out.push(b',');
            push_id_pair(out, "in_reply_to_user_id", w.users[user as usize].id);
            out.extend_from_slice(b",\"in_reply_to_screen_name\":\"");
            out.extend_from_slice(w.screen_name(user).as_bytes());
            out.extend_from_slice(b"\",");
        }
        None => out.extend_from_slice(
            b"\"in_reply_to_status_id\":null,\"in_reply_to_status_id_str\":null,\"in_reply_to_user_id\":null,\"in_reply_to_user_id_str\":null,\"in_reply_to_screen_name\":null,",
        ),
    }
    out.extend_from_slice(b"\"user\":");
    w.write_user(out, st.user, st.plain);
    match st.coords {
        Some((lon, lat)) => {
            use std::io::Write;
            let _ = write!(
                out,
                ",\"geo\":{{\"type\":\"Point\",\"coordinates\":[{lat:.7},{lon:.7}]}},\"coordinates\":{{\"type\":\"Point\",\"coordinates\":[{lon:.7},{lat:.7}]}}"
            );
        }
        None => out.extend_from_slice(b",\"geo\":null,\"coordinates\":null"),
    }
    out.extend_from_slice(b",\"place\":");
    match st.place.and_then(|p| w.places.get(p)) {
        Some(place) => out.extend_from_slice(place.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"contributors\":null,");
    match embed {
        Embed::None => out.extend_from_slice(b"\"is_quote_status\":false,"),
        Embed::Retweet(inner) => {
            out.extend_from_slice(b"\"retweeted_status\":");
            write_status(out, w, inner, &Embed::None, false);
            out.extend_from_slice(b",\"is_quote_status\":false,");
        }
        Embed::Quote(inner) => {
            push_id_pair(out, "quoted_status_id", inner.id);
            out.extend_from_slice(b",\"quoted_status\":");
            write_status(out, w, inner, &Embed::None, false);
            let own = st.full.unwrap_or(st.text);
            let link = own.urls.iter().find_map(|u| match u.kind {
                UrlKind::Quote { code, id, user } => Some((code, id, user)),
                UrlKind::Pool(_) => None,
            });
            if let Some((code, id, user)) = link {
                out.extend_from_slice(
                    b",\"quoted_status_permalink\":{\"url\":\"https:\\/\\/t.co\\/",
                );
                out.extend_from_slice(&code);
                out.extend_from_slice(b"\",\"expanded\":\"");
                push_permalink(out, w, id, user, true, false);
                out.extend_from_slice(b"\",\"display\":\"");
                push_permalink(out, w, id, user, false, true);
                out.extend_from_slice(b"\"}");
            }
            out.extend_from_slice(b",\"is_quote_status\":true,");
        }
    }
    if let Some(full) = st.full {
        out.extend_from_slice(b"\"extended_tweet\":{\"full_text\":");
        push_text(out, full);
        out.extend_from_slice(b",\"display_text_range\":[");
        push_u64(out, full.display_start.into());
        out.push(b',');
        push_u64(out, full.cp.into());
        out.extend_from_slice(b"],\"entities\":");
        push_entities(out, w, full, st.id, true);
        out.extend_from_slice(b"},");
    }
    for (key, n) in [
        "quote_count",
        "reply_count",
        "retweet_count",
        "favorite_count",
    ]
    .iter()
    .zip(st.counts)
    {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_u64(out, n);
        out.push(b',');
    }
    out.extend_from_slice(b"\"entities\":");
    push_entities(out, w, st.text, st.id, true);
    out.extend_from_slice(b",\"favorited\":false,\"retweeted\":false,");
    let own = st.full.unwrap_or(st.text);
    if !own.urls.is_empty() || own.media.is_some() {
        out.extend_from_slice(b"\"possibly_sensitive\":false,");
    }
    out.extend_from_slice(b"\"filter_level\":\"low\",\"lang\":\"");
    out.extend_from_slice(st.lang.as_bytes());
    out.push(b'"');
    if top {
        out.extend_from_slice(b",\"timestamp_ms\":\"");
        crate::json::push_i64(out, st.ms);
        out.push(b'"');
    }
    out.push(b'}');
}
