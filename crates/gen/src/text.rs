//! A tweet's text under construction, with its entities kept in step:
//! every entity's indices are code-point offsets into the text, as Twitter
//! gives them.

/// Twitter's classic length: longer texts are `truncated` in the top-level
/// `text` and carried whole in `extended_tweet`.
pub(crate) const CLASSIC_LEN: u32 = 140;

/// A range of a text: bytes of the entity's own text (a hashtag without its
/// sign) and code-point indices of the whole entity (with the sign).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub b0: u32,
    pub b1: u32,
    pub i0: u32,
    pub i1: u32,
}

/// An `@name` of a user.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mention {
    pub user: u32,
    pub i0: u32,
    pub i1: u32,
}

/// Which link a URL entity is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UrlKind {
    /// A link of the world's pool.
    Pool(u32),
    /// The permalink of a quoted tweet: t.co code, tweet id, author.
    Quote { code: [u8; 10], id: u64, user: u32 },
}

/// A URL entity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UrlEnt {
    pub kind: UrlKind,
    pub i0: u32,
    pub i1: u32,
}

/// An attached photo: its pool entry, id, and the tweet it was posted with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MediaEnt {
    pub pool: u32,
    pub media_id: u64,
    pub owner_id: u64,
    pub owner_user: u32,
    pub i0: u32,
    pub i1: u32,
}

/// Text and entities.
#[derive(Default, Debug)]
pub(crate) struct Text {
    pub s: String,
    pub cp: u32,
    pub tags: Vec<Span>,
    pub symbols: Vec<Span>,
    pub mentions: Vec<Mention>,
    pub urls: Vec<UrlEnt>,
    pub media: Option<MediaEnt>,
    /// Code point where the displayed text starts (after leading reply
    /// mentions), for `display_text_range`.
    pub display_start: u32,
}

fn cps(s: &str) -> u32 {
    s.chars().count() as u32
}

impl Text {
    pub fn clear(&mut self) {
        self.s.clear();
        self.cp = 0;
        self.tags.clear();
        self.symbols.clear();
        self.mentions.clear();
        self.urls.clear();
        self.media = None;
        self.display_start = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    /// Appends plain text.
    pub fn push(&mut self, s: &str) {
        self.s.push_str(s);
        self.cp += cps(s);
    }

    /// Whether the text ends with whitespace or is empty.
    pub fn at_boundary(&self) -> bool {
        self.s.chars().next_back().is_none_or(char::is_whitespace)
    }

    /// Appends a space unless at a boundary already.
    pub fn space(&mut self) {
        if !self.at_boundary() {
            self.push(" ");
        }
    }

    /// Appends a hashtag: `sign` (`#` or `＃`) then `tag`.
    pub fn push_tag(&mut self, sign: &str, tag: &str) {
        let i0 = self.cp;
        self.push(sign);
        let b0 = self.s.len() as u32;
        self.push(tag);
        self.tags.push(Span {
            b0,
            b1: self.s.len() as u32,
            i0,
            i1: self.cp,
        });
    }

    /// Appends a cashtag `$SYM`.
    pub fn push_symbol(&mut self, sym: &str) {
        let i0 = self.cp;
        self.push("$");
        let b0 = self.s.len() as u32;
        self.push(sym);
        self.symbols.push(Span {
            b0,
            b1: self.s.len() as u32,
            i0,
            i1: self.cp,
        });
    }

    /// Appends `@screen_name`.
    pub fn push_mention(&mut self, user: u32, screen_name: &str) {
        let i0 = self.cp;
        self.push("@");
        self.push(screen_name);
        self.mentions.push(Mention {
            user,
            i0,
            i1: self.cp,
        });
    }

    /// Appends a link as it appears in the text.
    pub fn push_url(&mut self, kind: UrlKind, shown: &str) {
        let i0 = self.cp;
        self.push(shown);
        self.urls.push(UrlEnt {
            kind,
            i0,
            i1: self.cp,
        });
    }

    /// Appends a photo link.
    pub fn push_media(&mut self, mut media: MediaEnt, shown: &str) {
        media.i0 = self.cp;
        self.push(shown);
        media.i1 = self.cp;
        self.media = Some(media);
    }

    /// The text of a hashtag or cashtag span.
    pub fn span_text(&self, span: &Span) -> &str {
        self.s.get(span.b0 as usize..span.b1 as usize).unwrap_or("")
    }

    /// The code-point spans of all entities.
    fn entity_spans(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.tags
            .iter()
            .chain(self.symbols.iter())
            .map(|s| (s.i0, s.i1))
            .chain(self.mentions.iter().map(|m| (m.i0, m.i1)))
            .chain(self.urls.iter().map(|u| (u.i0, u.i1)))
            .chain(self.media.iter().map(|m| (m.i0, m.i1)))
    }

    /// Makes `self` the classic (at most 140 code points) view of `prefix`
    /// + `src`: all of it when it fits, else cut at a word boundary (never
    ///   inside an entity) and ended with `…`. `prefix` is a retweet's
    ///   `RT @name: ` (the mention becomes an entity). Returns whether it
    ///   was cut.
    pub fn view_of(&mut self, src: &Text, rt: Option<(u32, &str)>) -> bool {
        self.clear();
        if let Some((user, name)) = rt {
            self.push("RT ");
            self.push_mention(user, name);
            self.push(": ");
        }
        let shift_b = self.s.len() as u32;
        let shift_i = self.cp;
        let fits = shift_i + src.cp <= CLASSIC_LEN;
        let limit = if fits {
            src.cp
        } else {
            (CLASSIC_LEN - 1).saturating_sub(shift_i)
        };
        // Cut point in src code points: the last whitespace at or before
        // the limit, unless that throws away more than half.
        let mut cut = limit;
        if !fits {
            let mut last_ws = None;
            for (i, c) in src.s.chars().enumerate() {
                let i = i as u32;
                if i > limit {
                    break;
                }
                if c.is_whitespace() {
                    last_ws = Some(i);
                }
            }
            if let Some(ws) = last_ws.filter(|&ws| ws * 2 >= limit) {
                cut = ws;
            }
            // Never inside an entity.
            loop {
                let inside = src.entity_spans().find(|&(i0, i1)| i0 < cut && cut < i1);
                match inside {
                    Some((i0, _)) => cut = i0,
                    None => break,
                }
            }
        }
        // Byte offset of the cut, trimming whitespace before it.
        let mut cut_b = src
            .s
            .char_indices()
            .nth(cut as usize)
            .map_or(src.s.len(), |(b, _)| b);
        if !fits {
            let kept = src.s[..cut_b].trim_end();
            cut = cut.saturating_sub(cps(&src.s[kept.len()..cut_b]));
            cut_b = kept.len();
        }
        self.s.push_str(&src.s[..cut_b]);
        self.cp += cut;
        let keep = |i1: u32| i1 <= cut;
        let shift = |s: &Span| Span {
            b0: s.b0 + shift_b,
            b1: s.b1 + shift_b,
            i0: s.i0 + shift_i,
            i1: s.i1 + shift_i,
        };
        self.tags
            .extend(src.tags.iter().filter(|s| keep(s.i1)).map(shift));
        self.symbols
            .extend(src.symbols.iter().filter(|s| keep(s.i1)).map(shift));
        self.mentions
            .extend(src.mentions.iter().filter(|m| keep(m.i1)).map(|m| Mention {
                user: m.user,
                i0: m.i0 + shift_i,
                i1: m.i1 + shift_i,
            }));
        self.urls
            .extend(src.urls.iter().filter(|u| keep(u.i1)).map(|u| UrlEnt {
                kind: u.kind,
                i0: u.i0 + shift_i,
                i1: u.i1 + shift_i,
            }));
        self.media = src.media.filter(|m| keep(m.i1)).map(|m| MediaEnt {
            i0: m.i0 + shift_i,
            i1: m.i1 + shift_i,
            ..m
        });
        if !fits {
            self.push("…");
        }
        !fits
    }
}
