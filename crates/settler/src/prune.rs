//! A partition's pruning passes: the floor raised and the entries past the
//! horizon deleted, here and from the changelog (see [`crate::horizon`]
//! for the rule and the argument).
//!
//! A pass runs when a partition task starts and then every
//! [`PRUNE_EVERY`], beside the commands (a pass touches only decided,
//! acked entries, and the limit check reads in the order that makes a
//! pass in between harmless). A start within [`PRUNE_EVERY`] of the
//! ledger's last pass leaves the first to its turn
//! ([`horizon::first_pass_wait`]): a pass reads every entry, and a
//! restart is to cost the same however long the history. Its order is
//! what makes a pass safe:
//!
//! 1. the plan: the new floor, the counts it takes and the entries to go,
//!    from one read of the partition's entries (on a blocking thread);
//! 2. the floor and the counts, written locally, made durable, and
//!    delivered to the changelog (the live catalog asked again first: an
//!    offer on sale again keeps its counts);
//! 3. only then the entries, and the counts of offers that ended below
//!    the floor, deleted locally, with a tombstone each in the changelog
//!    (not waited for: a tombstone lost is an entry the next owner drops
//!    at its restore, by the floor), their buckets written again without
//!    the counts (delivered: see [`crate::counts`]), and
//!    the floor once more after them, delivered, for a restart's mark.
//!
//! A pass stopped at any point (a revocation, a crash) has deleted nothing
//! whose floor and count are not already durable in both places.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::entry::now_ms;
use crate::horizon::{self, LastPass};
use crate::ledger::{Change, Ended, PartitionLedger};
use crate::run::{self, Counted, RunError, Shared};
use crate::settle::lease_held;

/// How often a partition is pruned after its first pass.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Changelog records in flight at once during a pass.
const SENDS_AT_ONCE: usize = 10_000;

/// Runs a pass now (or at its turn, after a recent one:
/// [`horizon::first_pass_wait`]) and then every [`PRUNE_EVERY`] until
/// `stopped`. A first pass run at start is counted in [`Shared::pruning`]
/// until it ends (for `--exit-at-end`), by `first_pass`; one left to its
/// turn is not. A failed pass is logged and tried again at the next turn:
/// pruning is housekeeping, and the settler is right without it.
pub(crate) async fn prune_partition(
    shared: Arc<Shared>,
    ledger: PartitionLedger,
    mut stopped: watch::Receiver<bool>,
    first_pass: Counted,
) {
    let partition = ledger.partition();
    let last = ledger.last_pass().unwrap_or_else(|e| {
        tracing::warn!(
            partition,
            "cannot read when the ledger was last pruned: {e}"
        );
        None
    });
    let wait = horizon::first_pass_wait(last, now_ms(), shared.config.max_command_age, PRUNE_EVERY);
    // The buckets of counts a first pass sends right away may land before
    // a record the partition's last owner had in flight (a settler paused
    // past its session), which compaction would then keep over them (see
    // `crate::counts`): sent again once such a record has landed or failed.
    let send_again_at = Instant::now() + shared.records_settled_within;
    let mut first_pass = Some(first_pass);
    if !wait.is_zero() {
        drop(first_pass.take());
        tracing::debug!(
            partition,
            next_in = ?wait,
            "pruned recently: the next pruning pass waits its turn"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
    let mut send_again = Instant::now() < send_again_at;
    loop {
        match pass(&shared, &ledger, &stopped).await {
            Ok(Some((pruned, kept))) => {
                if pruned > 0 {
                    tracing::info!(partition, pruned, "ledger entries past the horizon pruned");
                }
                shared.count(|s| {
                    let passes = s.passes.entry(partition).or_default();
                    passes.largest = passes.largest.max(pruned as u64);
                    passes.kept = kept as u64;
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(partition, "pruning the ledger failed: {e}"),
        }
        drop(first_pass.take());
        // Whatever became of the pass: one that failed after it sent its
        // buckets has sent them early all the same.
        if std::mem::take(&mut send_again) {
            tokio::select! {
                _ = tokio::time::sleep_until(send_again_at.into()) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            if let Err(e) = send_buckets_again(&shared, &ledger, &stopped).await {
                tracing::warn!(partition, "cannot send the buckets of counts again: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Sends the floor and every bucket of counts to the changelog again, as
/// they stand, under the lease, as a pass does.
async fn send_buckets_again(
    shared: &Arc<Shared>,
    ledger: &PartitionLedger,
    stopped: &watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut watching = stopped.clone();
    let Some(epoch) = lease_held(shared, &mut watching).await else {
        return Ok(());
    };
    // The floor too: a late one of the last owner's would otherwise be
    // the latest until the next pass.
    let records = floor_and_buckets(shared, ledger)?;
    if !shared.lease.holds_since(epoch) {
        return Ok(());
    }
    send_all(shared, ledger.partition(), records, true).await
}

/// The partition's floor and every bucket of its counts, as they stand,
/// for the changelog, each checked to fit in one record.
fn floor_and_buckets(shared: &Shared, ledger: &PartitionLedger) -> Result<Vec<Change>, RunError> {
    let records: Vec<Change> = ledger
        .floor_record()?
        .into_iter()
        .chain(ledger.count_records()?)
        .map(|(key, value)| (key, Some(value)))
        .collect();
    fits(ledger.partition(), &records, shared.letter_bytes)?;
    Ok(records)
}

/// One pass; how many entries it deleted and how many the partition kept
/// (`None`: stopped before it deleted any).
async fn pass(
    shared: &Arc<Shared>,
    ledger: &PartitionLedger,
    stopped: &watch::Receiver<bool>,
) -> Result<Option<(usize, usize)>, RunError> {
    let partition = ledger.partition();
    // A pass runs under the lease, as a provider call does: a settler
    // paused past its session must not publish a floor, nor delete, for a
    // partition another may own by now.
    let mut watching = stopped.clone();
    let Some(epoch) = lease_held(shared, &mut watching).await else {
        return Ok(None);
    };
    let (now, max_age) = (now_ms(), shared.config.max_command_age);
    let mut plan = {
        // A stopped partition gives up its place in the queue: its task
        // awaits this pass, and the hand-over awaits its task.
        let _turn = tokio::select! {
            turn = shared.planning.acquire() => turn
                .map_err(RunError::task)?,
            _ = watching.wait_for(|s| *s) => return Ok(None),
        };
        let ledger = ledger.clone();
        let ended = ended_on(shared);
        tokio::task::spawn_blocking(move || {
            let ended = ended.as_ref().map(|e| e as &Ended);
            ledger.plan(now, max_age, ended)
        })
        .await
        .map_err(RunError::task)??
    };
    // The catalog's follower shown to hold every change written so far,
    // before the check below, so that nothing is waited for between the
    // check and the writes; a stop meanwhile ends the pass. One that fell
    // behind, or stopped, would miss an offer put on sale again before
    // the pass.
    let current = match (&shared.catalog_current, plan.outlived.is_empty()) {
        (Some(current), false) => tokio::select! {
            shown = current.since(Instant::now()) => Some(shown?),
            _ = watching.wait_for(|s| *s) => return Ok(None),
        },
        _ => None,
    };
    // Stopped while it planned (a hand-over, with the lease unbroken): the
    // partition's next owner may be writing counts by now, and this plan's
    // must not land after theirs.
    if *stopped.borrow() || !shared.lease.holds_since(epoch) {
        return Ok(None);
    }
    // The catalog asked again, as late as the raise allows: an offer put on
    // sale again while the pass planned keeps its counts, and one this
    // pass counted purchases into is written instead; on a catalog not
    // shown current, every count is kept.
    if let Some(ended) = ended_on(shared) {
        match current {
            Some(Err(behind)) => {
                tracing::warn!(
                    partition,
                    "{behind}: this pass forgets no count of an ended offer"
                );
                plan.keep_on_sale(&|_: &str, _| false);
            }
            _ => plan.keep_on_sale(&ended),
        }
    }
    ledger.raise(&plan.raise)?;
    // The floor and every bucket of counts, raised or not, as they stand:
    // a pass whose earlier sending failed (or was aborted by a hand-over)
    // has raised them here, and must not delete the entries they count
    // before they are in the changelog; and a bucket that a settler which
    // lost the partition sent late is put right by the next pass (see
    // `crate::counts`).
    let records = floor_and_buckets(shared, ledger)?;
    shared.commit.durable().await?;
    // Paused in the wait past the lease: the next owner may be writing
    // these buckets by now.
    if !shared.lease.holds_since(epoch) {
        return Ok(None);
    }
    send_all(shared, partition, records, true).await?;
    if *stopped.borrow() || !shared.lease.holds_since(epoch) {
        return Ok(None);
    }
    let mut tombstones = Vec::with_capacity(plan.doomed.len());
    for (command_id, user_id) in &plan.doomed {
        ledger.remove(command_id, user_id)?;
        tombstones.push((command_id.as_bytes().to_vec(), None));
    }
    // Their buckets as they are left (smaller than they were), or a
    // tombstone for one left empty.
    let forgotten = ledger.forget(plan.outlived.iter().map(|(count, _)| count))?;
    // Nothing undecided lies below the line (a pass stops at the oldest),
    // so a restore's drop has nothing to look for under it: said, instead
    // of a second read of every entry.
    ledger.mark_dropped(plan.raise.floor.pruned_below_ms)?;
    ledger.set_last_pass(&LastPass {
        at_ms: now,
        aim_ms: horizon::floor_at(now, max_age),
    })?;
    shared.commit.durable().await?;
    let tombstoned = !tombstones.is_empty() || !forgotten.is_empty();
    // The buckets are delivered before the pass ends, as the raise's: a
    // hand-over awaits the pass, and a bucket that landed after the next
    // owner's would be the one compaction keeps, without the counts that
    // owner raised in it since. A settler paused in the wait past the
    // lease sends nothing more: the next owner drops the entries by the
    // floor, and keeps the counts until its own pass forgets them.
    if shared.lease.holds_since(epoch) {
        send_all(shared, partition, forgotten, true).await?;
        send_all(shared, partition, tombstones, false).await?;
    }
    // The floor once more, after the tombstones: a restart reads the
    // changelog past the last record its ledger wrote, and finds that
    // record again first. A tombstone is gone at a compaction an hour on,
    // which would send a settler that wrote nothing after its pass back
    // to the partition's beginning; the floor's latest record stays until
    // a later floor replaces it. Under the lease and delivered before the
    // pass ends, as the first: a floor that landed after the next owner's
    // would be the one compaction keeps. The ledger's own, which only
    // rises. Its failure is only a restart's cost: logged, and the pass
    // done.
    if tombstoned && !*stopped.borrow() && shared.lease.holds_since(epoch) {
        let sent = async {
            let floor = ledger
                .floor_record()?
                .map(|(key, value)| (key, Some(value)));
            send_all(shared, partition, floor.into_iter().collect(), true).await
        };
        if let Err(e) = sent.await {
            tracing::warn!(
                partition,
                "cannot send the floor again after a pass's tombstones: {e}"
            );
        }
    }
    metrics::counter!("hashbuy_settler_entries_pruned_total").increment(plan.doomed.len() as u64);
    metrics::counter!("hashbuy_settler_counts_forgotten_total")
        .increment(plan.outlived.len() as u64);
    Ok(Some((plan.doomed.len(), plan.kept)))
}

/// Whether the live catalog the settler follows shows an offer ended from
/// a floor on (`Catalog::ended_from`); `None` without one
/// (`--forget-ended-offers` off).
fn ended_on(shared: &Shared) -> Option<impl Fn(&str, i64) -> bool + Send + 'static> {
    let catalog = shared.catalog.clone()?;
    Some(move |offer_id: &str, floor_ms| run::read(&catalog).ended_from(offer_id, floor_ms))
}

/// Whether each of `records` fits in one changelog record of `budget`
/// bytes (key and value): a bucket of counts can outgrow it.
fn fits(partition: i32, records: &[Change], budget: usize) -> Result<(), RunError> {
    for (key, value) in records {
        let bytes = key.len() + value.as_ref().map_or(0, Vec::len);
        if bytes > budget {
            return Err(RunError::RecordTooLarge {
                partition,
                key: String::from_utf8_lossy(key).escape_debug().to_string(),
                bytes,
                budget,
            });
        }
    }
    Ok(())
}

/// Sends `records` to the changelog, [`SENDS_AT_ONCE`] at a time; with
/// `wait`, each is delivered before this returns.
async fn send_all(
    shared: &Arc<Shared>,
    partition: i32,
    records: Vec<Change>,
    wait: bool,
) -> Result<(), RunError> {
    let mut sends = JoinSet::new();
    for (key, value) in records {
        if sends.len() >= SENDS_AT_ONCE {
            joined(sends.join_next().await)?;
        }
        let shared = Arc::clone(shared);
        sends.spawn(async move {
            shared
                .changelog_record(&key, value.as_deref(), partition, wait)
                .await
        });
    }
    while let Some(done) = sends.join_next().await {
        joined(Some(done))?;
    }
    Ok(())
}

fn joined(
    done: Option<Result<Result<(), RunError>, tokio::task::JoinError>>,
) -> Result<(), RunError> {
    match done {
        Some(done) => done.map_err(RunError::task)?,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::{self, Counts};
    use crate::horizon::{Bought, NO_END};

    #[test]
    fn a_bucket_past_what_a_record_carries_is_named_before_anything_is_sent() {
        let bucket: Counts = (0..30_000)
            .map(|i| {
                let bought = Bought {
                    count: 1,
                    through_ms: 1_765_000_000_000,
                    offer_ends_ms: NO_END,
                };
                (
                    (
                        format!("{}", 1_234_567_890_123_456_789u64 + i),
                        "offer-1".to_owned(),
                    ),
                    bought,
                )
            })
            .collect();
        let records = vec![
            (b"cmd-1".to_vec(), None),
            (b"\0counts\x007".to_vec(), Some(counts::encode(&bucket))),
        ];
        let budget = hashbuy_kafka::produce::record_budget(&rdkafka::ClientConfig::new());
        let said = fits(3, &records, budget)
            .expect_err("too large")
            .to_string();
        assert!(
            said.contains("\\0counts\\07 of partition 3")
                && said.contains("over the 999488 one record may carry"),
            "{said}"
        );
        assert!(fits(3, &records[..1], budget).is_ok());
    }
}
