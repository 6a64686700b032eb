//! A group member's lease on its partitions: how long its work may act on
//! the world outside Kafka (a payment provider) before it must show again
//! that the group still counts it as a member.
//!
//! Kafka fences a member's writes to Kafka (generations, transactional
//! ids), but nothing fences its calls to a third party: a member frozen
//! past its session timeout (a long pause, a stopped process, a network cut)
//! wakes up still believing it owns partitions the group has given away.
//! The lease bounds that belief:
//!
//! - It is **renewed by proofs of membership**: a synchronous offset commit
//!   that the broker accepted (a commit carries the member's id and
//!   generation, and is refused once the group has moved on), dated when
//!   it was *sent*; or, while there is nothing to commit, the coordinator's
//!   own polls, as long as they come without a gap ([`Renewal`]).
//! - It **runs out** a [`term`](Lease::term) after its last proof, a third
//!   of `session.timeout.ms`: the group cannot give a partition away
//!   before the member's session has timed out, and a live member
//!   heartbeats many times in a session, so a member that stopped proving
//!   stops acting well before another can start.
//! - **After a gap** in the coordinator's polls (the process was frozen or
//!   starved), continuity proves nothing: the member may have been
//!   replaced meanwhile and not yet heard of it. Then only an accepted
//!   commit renews the lease, or, with nothing to commit, a whole session
//!   of further polls, after which librdkafka has either heard from the
//!   group or declared the assignment lost.
//!
//! What no lease can fence is a request already on the wire when the
//! lease ran out: its owner cannot recall it. Whoever takes the work over
//! must wait such a call out before judging what it did (the settler does,
//! see `hashbuy_settler::steps`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// The default of librdkafka's `session.timeout.ms`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The longest pause between two polls of the coordinator that still
/// counts as continuous: its loop polls every 50 ms.
pub const MAX_POLL_GAP: Duration = Duration::from_secs(2);

/// A member's lease; see the module docs. Shared between the coordinator,
/// which renews it, and the tasks that check it before each outside call.
#[derive(Debug)]
pub struct Lease {
    term: Duration,
    held: Mutex<Held>,
}

/// Until when the lease holds, and which holding it is.
#[derive(Debug, Default)]
struct Held {
    until: Option<Instant>,
    /// One more each time the lease is taken again after it ran out or
    /// lapsed: work begun under one holding must not be finished under a
    /// later one, as the partitions may have been another's in between.
    epoch: u64,
}

impl Lease {
    /// A lease not yet held, lasting `term` from each proof.
    pub fn new(term: Duration) -> Lease {
        Lease {
            term,
            held: Mutex::new(Held::default()),
        }
    }

    /// A lease for a member whose session times out after
    /// `session_timeout`: a third of it.
    pub fn for_session(session_timeout: Duration) -> Lease {
        Lease::new(session_timeout / 3)
    }

    /// How long the lease lasts after a proof.
    pub fn term(&self) -> Duration {
        self.term
    }

    /// Membership was proven at `at` (for a commit: when it was sent).
    pub fn renew(&self, at: Instant) {
        self.renew_at(at, Instant::now());
    }

    fn renew_at(&self, at: Instant, now: Instant) {
        let until = at + self.term;
        let mut held = lock(&self.held);
        if held.until.is_none_or(|v| v <= now) {
            held.epoch += 1;
        }
        if held.until.is_none_or(|v| v < until) {
            held.until = Some(until);
        }
    }

    /// Membership is in doubt (a commit was refused): nothing more until
    /// the next proof.
    pub fn lapse(&self) {
        lock(&self.held).until = None;
    }

    /// Whether the lease holds at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        lock(&self.held).until.is_some_and(|v| now < v)
    }

    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Which holding of the lease this is, if it holds now: pass it to
    /// [`holds_since`](Self::holds_since) to ask whether work begun now
    /// may still be finished.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch_at(Instant::now())
    }

    fn epoch_at(&self, now: Instant) -> Option<u64> {
        let held = lock(&self.held);
        held.until.is_some_and(|v| now < v).then_some(held.epoch)
    }

    /// Whether the lease has held without a break since it was `epoch`:
    /// nobody else can have owned the member's partitions meanwhile.
    pub fn holds_since(&self, epoch: u64) -> bool {
        self.epoch() == Some(epoch)
    }
}

/// The session timeout a member's client settings give, the last setting
/// winning as in a client's config (librdkafka's default when they set
/// none, or set it unreadably).
pub fn session_timeout<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Duration {
    settings
        .into_iter()
        .filter(|(k, _)| *k == "session.timeout.ms")
        .last()
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis)
}

/// When the coordinator's polls renew a [`Lease`] by themselves: while they
/// come without gaps. Pure: the caller passes the times.
#[derive(Debug, Clone)]
pub struct Renewal {
    max_gap: Duration,
    after_gap: Duration,
    last_poll: Option<Instant>,
    /// After a gap: when continuity counts again, unless a commit proves
    /// membership sooner.
    doubt_until: Option<Instant>,
}

impl Renewal {
    /// Polls further apart than `max_gap` are a gap; after one, polls renew
    /// again only `after_gap` later (a session timeout).
    pub fn new(max_gap: Duration, after_gap: Duration) -> Renewal {
        Renewal {
            max_gap,
            after_gap,
            last_poll: None,
            doubt_until: None,
        }
    }

    /// A poll of the coordinator begins at `at`: whether it renews the
    /// lease by itself (when there is nothing to commit).
    pub fn polled(&mut self, at: Instant) -> bool {
        if self
            .last_poll
            .is_some_and(|last| at.saturating_duration_since(last) > self.max_gap)
        {
            self.doubt_until = Some(at + self.after_gap);
        }
        self.last_poll = Some(at);
        match self.doubt_until {
            Some(until) if at < until => false,
            _ => {
                self.doubt_until = None;
                true
            }
        }
    }

    /// A commit was accepted: membership is proven, gap or not.
    pub fn proven(&mut self) {
        self.doubt_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_lease_holds_for_its_term_after_each_proof() {
        let t0 = Instant::now();
        let lease = Lease::new(10 * S);
        assert!(!lease.holds_at(t0), "not held before any proof");
        lease.renew(t0);
        assert!(lease.holds_at(t0 + 9 * S));
        assert!(!lease.holds_at(t0 + 10 * S));
        lease.renew(t0 + 5 * S);
        assert!(lease.holds_at(t0 + 14 * S));
        lease.renew(t0 + S);
        assert!(
            lease.holds_at(t0 + 14 * S),
            "an older proof does not shorten it"
        );
        lease.lapse();
        assert!(!lease.holds_at(t0 + 6 * S));
    }

    #[test]
    fn work_begun_under_one_holding_is_not_finished_under_the_next() {
        let t0 = Instant::now();
        let lease = Lease::new(10 * S);
        lease.renew_at(t0, t0);
        let first = lease.epoch_at(t0).expect("held");
        lease.renew_at(t0 + 5 * S, t0 + 5 * S);
        assert_eq!(lease.epoch_at(t0 + 12 * S), Some(first), "renewed in time");
        // It runs out (a freeze), and is taken again.
        lease.renew_at(t0 + 30 * S, t0 + 30 * S);
        let second = lease.epoch_at(t0 + 30 * S).expect("held again");
        assert_ne!(first, second);
        lease.lapse();
        assert_eq!(lease.epoch_at(t0 + 31 * S), None);
    }

    #[test]
    fn a_lease_is_a_third_of_the_session() {
        assert_eq!(Lease::for_session(DEFAULT_SESSION_TIMEOUT).term(), 15 * S);
        let set = |v: &'static str| [("session.timeout.ms", v)];
        assert_eq!(session_timeout(set("6000")), 6 * S);
        assert_eq!(session_timeout(set("six")), DEFAULT_SESSION_TIMEOUT);
        assert_eq!(session_timeout([]), DEFAULT_SESSION_TIMEOUT);
        let overridden = [
            ("session.timeout.ms", "5000"),
            ("session.timeout.ms", "9000"),
        ];
        assert_eq!(session_timeout(overridden), 9 * S, "the last one wins");
    }

    #[test]
    fn after_a_gap_polls_renew_only_once_a_session_has_passed_or_a_commit_proved() {
        let t0 = Instant::now();
        let mut r = Renewal::new(2 * S, 45 * S);
        assert!(r.polled(t0));
        assert!(r.polled(t0 + S));
        // Frozen for a minute, then polling every second.
        let thaw = t0 + 61 * S;
        for s in 0..45 {
            assert!(!r.polled(thaw + s * S), "{s} s after the thaw");
        }
        assert!(r.polled(thaw + 45 * S));
        assert!(r.polled(thaw + 46 * S));
        // Another gap, then a commit is accepted.
        assert!(!r.polled(thaw + 50 * S));
        r.proven();
        assert!(r.polled(thaw + 51 * S));
    }
}
