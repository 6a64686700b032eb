//! Tables that change while the stream flows, read by event time.
//!
//! A change to a table (an offer added or ended, a card linked or
//! unlinked) takes effect for tweets at or after its time, never by the
//! wall clock, so a recorded stream replayed together with its recorded
//! changes decides alike at any speed. Each key keeps its versions in time
//! order; a lookup at a tweet's time takes the latest version at or before
//! it, and, when the key has none, the value of the table's files: the
//! changes lie over the files, key by key, from their times on.
//!
//! A change read late, after tweets of later times were decided, takes
//! effect for the tweets decided from then on, by their own times; it never
//! undoes a decision made (a payment command produced stays produced).

use std::collections::{BTreeMap, HashMap};

/// What a key holds at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version<'a, V> {
    /// No change of the key at or before that time: the files' value.
    Base,
    /// Set by a change.
    Set(&'a V),
    /// Removed by a change (a tombstone).
    Removed,
}

/// Each key's versions by the time they take effect.
#[derive(Debug, Clone)]
pub struct History<V> {
    versions: HashMap<String, Vec<(i64, Option<V>)>>,
}

impl<V> Default for History<V> {
    fn default() -> Self {
        History {
            versions: HashMap::new(),
        }
    }
}

impl<V> History<V> {
    /// Records that `key` holds `value` (`None`: removed) from `from_ms`
    /// on. Of two changes of one key with the same time, the one applied
    /// later wins, as a table topic's later record does.
    pub fn apply(&mut self, key: &str, from_ms: i64, value: Option<V>) {
        let versions = self.versions.entry(key.to_owned()).or_default();
        let at = versions.partition_point(|(t, _)| *t <= from_ms);
        versions.insert(at, (from_ms, value));
    }

    /// What `key` holds at `at_ms`.
    pub fn at(&self, key: &str, at_ms: i64) -> Version<'_, V> {
        let Some(versions) = self.versions.get(key) else {
            return Version::Base;
        };
        match versions.partition_point(|(t, _)| *t <= at_ms) {
            0 => Version::Base,
            i => match &versions[i - 1].1 {
                Some(value) => Version::Set(value),
                None => Version::Removed,
            },
        }
    }

    /// What `key` holds at `at_ms`, over a base layer: the latest change at
    /// or before then, else `base()` (the files' value); `None` once removed.
    pub fn at_over<'a>(
        &'a self,
        key: &str,
        at_ms: i64,
        base: impl FnOnce() -> Option<&'a V>,
    ) -> Option<&'a V> {
        // The files alone, the common case: no lookup of the key.
        if self.is_empty() {
            return base();
        }
        match self.at(key, at_ms) {
            Version::Base => base(),
            Version::Set(value) => Some(value),
            Version::Removed => None,
        }
    }

    /// Every key holding a value at `at_ms`, of `base_keys` and of the
    /// changes, with its value as `get_at` reads it.
    pub fn all_at<'a>(
        &'a self,
        base_keys: impl Iterator<Item = &'a str>,
        get_at: impl Fn(&str) -> Option<&'a V>,
    ) -> BTreeMap<String, &'a V> {
        base_keys
            .chain(self.keys())
            .filter_map(|key| Some((key.to_owned(), get_at(key)?)))
            .collect()
    }

    /// The times of `key`'s changes at or after `from_ms`, in order.
    pub fn times_from(&self, key: &str, from_ms: i64) -> impl Iterator<Item = i64> + '_ {
        let versions = self.versions.get(key).map_or(&[][..], Vec::as_slice);
        let first = versions.partition_point(|(t, _)| *t < from_ms);
        versions[first..].iter().map(|(t, _)| *t)
    }

    /// Every value a change of `key` set, at any time.
    pub fn values(&self, key: &str) -> impl Iterator<Item = &V> + '_ {
        self.versions
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_ref())
    }

    /// The time of `key`'s latest change, if it has one.
    pub fn latest_time(&self, key: &str) -> Option<i64> {
        self.versions.get(key)?.last().map(|(t, _)| *t)
    }

    /// Whether some change, at any time, set a value (not only removals).
    pub fn sets_any(&self) -> bool {
        self.versions
            .values()
            .any(|versions| versions.iter().any(|(_, v)| v.is_some()))
    }

    /// Whether no change was applied.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The keys with changes, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.versions.keys().map(String::as_str)
    }
}
