//! Liveness and readiness of a running service, as `/healthz` and
//! `/readyz` report them.
//!
//! The service's loop beats on every turn and says when it is ready (it
//! has joined its group and can make progress); the HTTP side only reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// Shared between a service's loop and its health endpoints.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the loop's last turn.
    beat_ms: AtomicU64,
    ready: AtomicBool,
    /// Work that turns without getting anywhere, in the service's words.
    stuck: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stuck: Mutex::new(None),
        }
    }
}

impl Health {
    /// Records a turn of the loop.
    pub fn beat(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat_ms.store(now, Ordering::Relaxed);
    }

    /// Says whether the service can do its work.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the service said it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Says what work is stuck (the loop turns, but that work gets nowhere,
    /// e.g. a payment the provider cannot be asked about), or that none is.
    pub fn set_stuck(&self, stuck: Option<String>) {
        *lock(&self.stuck) = stuck;
    }

    /// What work is stuck, if any.
    pub fn stuck(&self) -> Option<String> {
        lock(&self.stuck).clone()
    }

    /// How long ago the loop last turned.
    pub fn since_beat(&self) -> Duration {
        let beat = Duration::from_millis(self.beat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(beat)
    }
}
