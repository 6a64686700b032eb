//! Group commit of the ledger: many tasks each wait for their writes to be
//! durable, and one flush serves all of them.
//!
//! A task writes its entry (buffered by sled), then awaits
//! [`GroupCommit::durable`]. The flusher task runs one flush at a time;
//! every write made before a flush started is durable when it ends, so a
//! waiter is released by the first flush that *started* after its write.
//! Under load, flushes run back to back and each covers every write that
//! arrived during the one before: one sync a batch, not one a payment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::ledger::Ledger;

/// The flusher's progress: flushes asked for and done, and its failure.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Tickets covered by a finished flush.
    done: u64,
    /// A flush failed: the ledger can no longer be trusted to persist.
    failed: Option<String>,
}

/// See the module docs.
pub struct GroupCommit {
    ledger: Ledger,
    /// The last ticket handed out.
    tickets: AtomicU64,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

/// The ledger could not be flushed; nothing after this is durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the ledger cannot be flushed: {0}")]
pub struct FlushFailed(pub String);

impl GroupCommit {
    /// A group commit of `ledger`; run its flusher with [`GroupCommit::run`].
    pub fn new(ledger: Ledger) -> Arc<GroupCommit> {
        Arc::new(GroupCommit {
            ledger,
            tickets: AtomicU64::new(0),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// Waits until everything this task wrote to the ledger before the
    /// call is durable.
    pub async fn durable(&self) -> Result<(), FlushFailed> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut progress = self.progress.subscribe();
        self.wake.notify_one();
        let seen = progress
            .wait_for(|p| p.done >= ticket || p.failed.is_some())
            .await
            .map_err(|_| FlushFailed("the flusher stopped".into()))?;
        match &seen.failed {
            Some(e) if seen.done < ticket => Err(FlushFailed(e.clone())),
            _ => Ok(()),
        }
    }

    /// The flusher: flushes whenever some task waits, until the last
    /// handle to the group commit is dropped elsewhere or a flush fails.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let upto = self.tickets.load(Ordering::SeqCst);
            if upto <= self.progress.borrow().done {
                continue;
            }
            let ledger = self.ledger.clone();
            let flushed = tokio::task::spawn_blocking(move || ledger.flush()).await;
            match flushed {
                Ok(Ok(took)) => {
                    metrics::histogram!("hashbuy_settler_ledger_flush_seconds").record(took);
                    self.progress.send_modify(|p| p.done = upto);
                }
                Ok(Err(e)) => {
                    let message = e.to_string();
                    tracing::error!("{message}");
                    self.progress.send_modify(|p| p.failed = Some(message));
                    return;
                }
                Err(e) => {
                    self.progress
                        .send_modify(|p| p.failed = Some(format!("the flush panicked: {e}")));
                    return;
                }
            }
            // Tickets taken during the flush need another.
            if self.tickets.load(Ordering::SeqCst) > upto {
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_is_released_by_a_flush_after_its_ticket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let commit = GroupCommit::new(ledger);
        let flusher = tokio::spawn(Arc::clone(&commit).run());
        let waiters: Vec<_> = (0..200)
            .map(|_| {
                let commit = Arc::clone(&commit);
                tokio::spawn(async move { commit.durable().await })
            })
            .collect();
        for waiter in waiters {
            waiter.await.expect("joined").expect("durable");
        }
        assert!(commit.progress.borrow().done >= 200);
        flusher.abort();
    }
}
