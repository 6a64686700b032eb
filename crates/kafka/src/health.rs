//! Liveness and readiness of a running service, as `/healthz` and
//! `/readyz` report them.
//!
//! The service's loop beats on every turn and says when it is ready (it
//! has joined its group and can make progress); the HTTP side only reads.
//!
//! A hand-over of partitions (a rebalance taking them away) runs inside
//! one poll of the loop and may rightly take minutes: the settler waits
//! for its provider calls, its records and its commit, within the group's
//! `max.poll.interval.ms`. The driver marks it ([`Health::handing_over`]),
//! so that a liveness probe does not call the service dead, and restart it,
//! in the middle of one; a hand-over past what the group allows is a
//! stall.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// A loop that has not turned for this long, outside a hand-over, is
/// reported stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// Shared between a service's loop, its group driver and its health
/// endpoints: a clone is a handle on the same state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// Milliseconds after `started` of the loop's last turn.
    beat_ms: AtomicU64,
    ready: AtomicBool,
    /// Work that turns without getting anywhere, in the service's words.
    stuck: Mutex<Option<String>>,
    /// The hand-over under way, if one is: when it began, and how long
    /// the group allows it.
    hand_over: Mutex<Option<(Instant, Duration)>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stuck: Mutex::new(None),
            hand_over: Mutex::new(None),
        }
    }
}

/// What `/healthz` says of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The loop turns.
    Live,
    /// The loop is handing partitions over, for this long so far, within
    /// what the group allows.
    HandingOver(Duration),
    /// The loop has not turned for this long: past [`STALLED_AFTER`], or
    /// in a hand-over past what the group allows.
    Stalled(Duration),
    /// The loop turns, and this work gets nowhere.
    Stuck(String),
}

impl Liveness {
    /// Whether a probe should count the service alive.
    pub fn is_alive(&self) -> bool {
        matches!(self, Liveness::Live | Liveness::HandingOver(_))
    }

    /// Says what `/healthz` says: how the loop stands, from how long ago
    /// it last turned (`since_beat`), the hand-over under way (how long it
    /// has taken, and how long the group allows it) and the work stuck.
    /// Pure: the caller passes the times.
    pub fn judge(
        since_beat: Duration,
        hand_over: Option<(Duration, Duration)>,
        stuck: Option<String>,
    ) -> Liveness {
        match hand_over {
            Some((took, allowed)) if took < allowed => Liveness::HandingOver(took),
            Some(_) => Liveness::Stalled(since_beat),
            None if since_beat >= STALLED_AFTER => Liveness::Stalled(since_beat),
            None => stuck.map_or(Liveness::Live, Liveness::Stuck),
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Liveness::Live => write!(f, "ok"),
            Liveness::HandingOver(took) => {
                write!(f, "ok: handing partitions over for {} s", took.as_secs())
            }
            Liveness::Stalled(since) => write!(f, "stalled: no progress for {} s", since.as_secs()),
            Liveness::Stuck(stuck) => write!(f, "stuck: {stuck}"),
        }
    }
}

/// A hand-over under way, from [`Health::handing_over`]; it ends when this
/// is dropped, and counts as a turn of the loop.
#[must_use = "the hand-over ends when this is dropped"]
#[derive(Debug)]
pub struct HandingOver<'a> {
    health: &'a Health,
}

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        *lock(&self.health.state.hand_over) = None;
        self.health.beat();
    }
}

impl Health {
    /// Records a turn of the loop.
    pub fn beat(&self) {
        let state = &self.state;
        let now = u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.beat_ms.store(now, Ordering::Relaxed);
    }

    /// Says whether the service can do its work.
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the service said it is ready.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Relaxed)
    }

    /// Says what work is stuck (the loop turns, but that work gets nowhere,
    /// e.g. a payment the provider cannot be asked about), or that none is.
    pub fn set_stuck(&self, stuck: Option<String>) {
        *lock(&self.state.stuck) = stuck;
    }

    /// What work is stuck, if any.
    pub fn stuck(&self) -> Option<String> {
        lock(&self.state.stuck).clone()
    }

    /// How long ago the loop last turned.
    pub fn since_beat(&self) -> Duration {
        let state = &self.state;
        let beat = Duration::from_millis(state.beat_ms.load(Ordering::Relaxed));
        state.started.elapsed().saturating_sub(beat)
    }

    /// Marks a hand-over of partitions, which the group allows `allowed`
    /// (its `max.poll.interval.ms`), until the guard is dropped.
    pub fn handing_over(&self, allowed: Duration) -> HandingOver<'_> {
        *lock(&self.state.hand_over) = Some((Instant::now(), allowed));
        HandingOver { health: self }
    }

    /// How the loop stands now ([`Liveness::judge`]).
    pub fn liveness(&self) -> Liveness {
        let hand_over =
            (*lock(&self.state.hand_over)).map(|(began, allowed)| (began.elapsed(), allowed));
        Liveness::judge(self.since_beat(), hand_over, self.stuck())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_POLL: Duration = Duration::from_secs(300);

    #[test]
    fn a_hand_over_within_what_the_group_allows_is_alive_however_long_the_loop_waits() {
        // The settler's hand-over may take some 130 s with its defaults.
        for secs in [1, 59, 61, 130, 299] {
            let took = Duration::from_secs(secs);
            let liveness = Liveness::judge(took, Some((took, MAX_POLL)), None);
            assert_eq!(liveness, Liveness::HandingOver(took));
            assert!(liveness.is_alive(), "{secs} s: {liveness}");
        }
    }

    #[test]
    fn a_hand_over_past_what_the_group_allows_is_a_stall() {
        let took = Duration::from_secs(301);
        let liveness = Liveness::judge(took, Some((took, MAX_POLL)), None);
        assert_eq!(liveness, Liveness::Stalled(took));
        assert!(!liveness.is_alive());
    }

    #[test]
    fn outside_a_hand_over_a_loop_still_for_a_minute_is_stalled_and_stuck_work_is_said() {
        let stuck = || Some("command c-1".to_owned());
        assert_eq!(
            Liveness::judge(STALLED_AFTER, None, stuck()),
            Liveness::Stalled(STALLED_AFTER)
        );
        let turning = Duration::from_secs(1);
        assert_eq!(
            Liveness::judge(turning, None, stuck()),
            Liveness::Stuck("command c-1".to_owned())
        );
        assert!(!Liveness::judge(turning, None, stuck()).is_alive());
        assert_eq!(Liveness::judge(turning, None, None), Liveness::Live);
    }

    #[test]
    fn a_hand_over_is_marked_until_its_guard_is_dropped_and_counts_as_a_turn() {
        let health = Health::default();
        let shared = health.clone();
        {
            let _handing = health.handing_over(MAX_POLL);
            assert!(matches!(shared.liveness(), Liveness::HandingOver(_)));
        }
        assert_eq!(shared.liveness(), Liveness::Live);
        assert!(shared.since_beat() < STALLED_AFTER);
    }
}
