//! Settling one command: its ledger entry, the limit check, the provider
//! calls and retries that [`crate::steps`] decides, and its ack.
//!
//! Each change of the entry is written to the ledger and to the changelog;
//! the attempt is durable ([`GroupCommit`](crate::group_commit::GroupCommit))
//! before the provider is called, and every call waits for the settler's
//! lease (see [`crate::run`], "Fenced ownership"); the outcome is durable,
//! and in the changelog, before the ack is produced. A limited offer's
//! command is charged only if the reservation step holds a unit for it
//! (`reserved`), and the unit's fate goes back to the step with the ack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbuy_core::connect::{route, Route};
use hashbuy_core::replies::{self, Refusal};
use hashbuy_core::stock::SOLD_OUT_REASON;
use hashbuy_kafka::lock;
use hashbuy_proto::v1::stock_request::Kind;
use hashbuy_proto::v1::{PaymentAck, PaymentCommand, StockRequest, StockResolution};
use prost::Message as _;
use tokio::sync::watch;

use crate::entry::{key_index, now_ms, Entry, Outcome, State};
use crate::horizon;
use crate::ledger::{encode, PartitionLedger};
use crate::limits;
use crate::partition::{Done, Work};
use crate::run::{self, RunError, Shared};
use crate::steps::{self, Found, Reply, Step};

/// Why a limited offer's command that holds no unit is rejected: only the
/// reservation step (`hashbuy stock`) may send a limited offer's command
/// on, so charging it would sell past the stock.
pub(crate) const UNRESERVED: &str = "a limited offer's command that holds no unit of its stock \
     (it did not come through the reservation step, hashbuy stock)";

/// Settles one command; see the module docs and [`crate::steps`].
pub(crate) async fn settle(
    shared: Arc<Shared>,
    ledger: PartitionLedger,
    work: Work,
    stopped: watch::Receiver<bool>,
) -> Result<Done, RunError> {
    let in_flight = InFlight::new(&shared, &work.command.command_id);
    let result = settle_entry(&shared, &ledger, &work, stopped).await;
    drop(in_flight);
    let abandoned = !result?;
    Ok(Done {
        user: Some(work.command.user_id),
        offset: work.offset,
        abandoned,
    })
}

/// A command in [`Shared::pending`] while it is settled, and out of it
/// when this is dropped: also when its task is aborted (a revocation that
/// waited too long), so an abandoned command is never reported stuck.
struct InFlight<'a> {
    shared: &'a Shared,
    id: String,
}

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared, id: &str) -> Self {
        lock(&shared.pending).insert(id.to_owned(), Instant::now());
        InFlight {
            shared,
            id: id.to_owned(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// [`settle`]'s body; `false` if stopped before an outcome.
async fn settle_entry(
    shared: &Shared,
    ledger: &PartitionLedger,
    work: &Work,
    mut stopped: watch::Receiver<bool>,
) -> Result<bool, RunError> {
    let partition = ledger.partition();
    let policy = shared.config.policy;
    // The entry as last written here, for the changelog.
    let mut stored = None;
    // A stale command some owner may have charged while it was fresh: its
    // reason, for when the provider holds no charge of it.
    let mut stale_lookup = None;
    let mut entry = match ledger.get(&work.command.command_id)? {
        Some(mut known) => {
            if !known.same_command(&work.command) {
                tracing::warn!(
                    command_id = %work.command.command_id,
                    partition,
                    offset = ?work.offset,
                    "a command arrived again with other content; the first one wins"
                );
                known.note(
                    format!(
                        "duplicate with other content at partition {partition} offset {:?} ignored",
                        work.offset
                    ),
                    now_ms(),
                );
                stored = Some(ledger.put(&known)?);
                shared.count(|s| s.duplicates += 1);
                metrics::counter!("hashbuy_settler_duplicates_total").increment(1);
            }
            known
        }
        None => {
            let mut fresh = Entry::received(
                work.command.clone(),
                partition,
                work.offset.unwrap_or(-1),
                now_ms(),
            );
            // Routed once, here: the entry keeps where its charge goes, so
            // a merchants table changed before a retry cannot change the
            // request a key was first used with.
            let command = &fresh.command;
            let floor = ledger.floor()?.floor_ms;
            let now = now_ms();
            let max_age = shared.config.max_command_age;
            let routed = if let Some(reason) =
                horizon::stale(command.tweet_timestamp_ms, now, max_age, floor)
            {
                if horizon::look_up_before_rejecting(
                    command.tweet_timestamp_ms,
                    now,
                    max_age,
                    work.written_ms,
                ) {
                    stale_lookup = Some(reason);
                    Ok(Route::Platform)
                } else {
                    Err(reason)
                }
            } else if command.sold_out {
                Err(SOLD_OUT_REASON.to_owned())
            } else if command.stock > 0 && !command.reserved {
                Err(UNRESERVED.to_owned())
            } else {
                route_now(shared, command).await?
            };
            let refused = match routed {
                Ok(Route::Platform) => None,
                Ok(Route::Connect(destination)) => {
                    fresh.destination = Some(destination);
                    None
                }
                Err(reason) => Some(reason),
            };
            let refused = match refused {
                Some(reason) => Some(reason),
                None if stale_lookup.is_some() => None,
                None => {
                    // The history before the count: a pruning pass writes
                    // the count before it deletes what it counted, so a
                    // pass in between leaves an entry in both (counted
                    // once, see `limits::check`), never in neither.
                    let c = &fresh.command;
                    let history = ledger.history(&c.user_id)?;
                    let pruned = ledger.bought(&c.user_id, &c.offer_id)?;
                    limits::check(c, &history, pruned).err()
                }
            };
            if let Some(reason) = refused {
                fresh.decide(Outcome::Rejected { reason }, now_ms())?;
                stored = Some(ledger.put(&fresh)?);
                count_outcome(shared, &fresh);
            }
            // A command that goes on to a charge is first written with its
            // attempt: until then a crash loses nothing, as its offset is
            // not done and it is read again.
            fresh
        }
    };

    if let Some(reason) = stale_lookup {
        if !decide_stale(shared, &mut entry, reason, &mut stopped).await? {
            return Ok(false);
        }
        stored = Some(ledger.put(&entry)?);
        count_outcome(shared, &entry);
    }

    let mut last_error = String::new();
    // When a call under the key last got no answer.
    let mut unanswered = steps::unanswered_at_start(&entry).then(Instant::now);
    // A resumed entry at a later key starts with a lookup (see
    // `steps::start`), whose finding nothing calls that key.
    let mut resumed_lookup = matches!(
        &entry.state,
        State::Attempting { key, .. } if key_index(entry.command_id(), key) > 1
    );
    let mut step = steps::start(&entry, now_ms(), &policy);
    while let Some(next) = step.take() {
        step = match next {
            Step::Charge { key } => {
                let new_key =
                    !matches!(&entry.state, State::Attempting { key: k, .. } if *k == key);
                if new_key && key_index(entry.command_id(), &key) > 1 && entry.destination.is_none()
                {
                    // An entry received before the merchants table was
                    // given: a key past the first is minted only once the
                    // provider is known to hold no charge, so it is a fresh
                    // request, routed as a fresh command would be.
                    match route_now(shared, &entry.command).await? {
                        Ok(Route::Platform) => {}
                        Ok(Route::Connect(destination)) => entry.destination = Some(destination),
                        Err(reason) => {
                            step = Some(Step::Decide(Outcome::Rejected { reason }));
                            continue;
                        }
                    }
                }
                entry.attempt(key.clone(), now_ms())?;
                let attempt = ledger.put(&entry)?;
                // A key past the first is in the changelog before the
                // provider hears of it: an owner that restored an older key
                // would charge again under it (the first key is the command
                // id, which any owner derives). So is a destination charge's
                // first attempt: its route came from this settler's
                // merchants table, which the next owner's may not match, so
                // without the record it could reject, or send another body
                // under the same key for, a command the provider charged.
                // So is the first attempt of a command within a day of the
                // horizon: an owner that took over without the record, the
                // command stale by then, would reject what may be charged.
                let near_horizon = horizon::stale(
                    entry.command.tweet_timestamp_ms,
                    now_ms().saturating_add(horizon::CLOCK_MARGIN_MS),
                    shared.config.max_command_age,
                    i64::MIN,
                )
                .is_some();
                let must_travel = key_index(entry.command_id(), &key) > 1
                    || entry.destination.is_some()
                    || near_horizon;
                shared
                    .changelog(
                        entry.command_id(),
                        &attempt,
                        partition,
                        new_key && must_travel,
                    )
                    .await?;
                stored = Some(attempt);
                // The attempt is on disk before the provider hears of it.
                shared.commit.durable().await?;
                let Some(epoch) = lease_held(shared, &mut stopped).await else {
                    return Ok(false);
                };
                let began = Instant::now();
                let key_attempt = match &entry.state {
                    State::Attempting { key_attempt, .. } => *key_attempt,
                    _ => entry.attempts,
                };
                // Checked again when the request leaves, after the waits for
                // a connection slot and the rate limiter: the lease, the
                // partition, and the key's age may all have run out.
                let key_old = AtomicBool::new(false);
                let go = || {
                    let old = !steps::key_usable(&entry, now_ms(), &policy);
                    key_old.store(old, Ordering::Relaxed);
                    !*stopped.borrow() && shared.lease.holds_since(epoch) && !old
                };
                let reply = shared
                    .payments
                    .charge(
                        &entry.command,
                        entry.destination.as_ref(),
                        &key,
                        key_attempt,
                        go,
                    )
                    .await?;
                let Some(reply) = reply else {
                    if key_old.load(Ordering::Relaxed) && !*stopped.borrow() {
                        step = Some(Step::Reconcile);
                        continue;
                    }
                    return Ok(false);
                };
                metrics::histogram!("hashbuy_settler_provider_seconds").record(began.elapsed());
                if !shared.lease.holds_since(epoch) {
                    // The partitions may have been another's meanwhile: that
                    // owner, or the next, learns the same from the provider
                    // under this key.
                    return Ok(false);
                }
                match &reply {
                    Reply::Retry { cause, after } => {
                        last_error = (*cause).to_owned();
                        if steps::unanswered(cause) {
                            unanswered = Some(Instant::now());
                        }
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => *cause)
                            .increment(1);
                        if entry.attempts < policy.max_attempts {
                            let delay =
                                shared
                                    .payments
                                    .delay(entry.command_id(), entry.attempts, *after);
                            if !pause(delay, &mut stopped).await {
                                return Ok(false);
                            }
                        }
                    }
                    Reply::Unknown { reason } => {
                        last_error = reason.clone();
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => "unknown")
                            .increment(1);
                    }
                    _ => {}
                }
                Some(steps::after_reply(&entry, reply, now_ms(), &policy))
            }
            Step::Reconcile => {
                let wait = steps::reconcile_wait(unanswered.map(|at| at.elapsed()), &policy);
                if !wait.is_zero() && !pause(wait, &mut stopped).await {
                    return Ok(false);
                }
                let Some(epoch) = lease_held(shared, &mut stopped).await else {
                    return Ok(false);
                };
                let received_ms = entry.received_ms.min(now_ms());
                let found = shared.payments.find(&entry.command, received_ms).await;
                if !shared.lease.holds_since(epoch) {
                    // What was found may be stale by now (another owner may
                    // have charged meanwhile): never decided on.
                    return Ok(false);
                }
                match found {
                    Ok(found) => {
                        flag_double_charge(&mut entry, &found);
                        if matches!(found, Found::Pending { .. }) {
                            let delay =
                                shared
                                    .payments
                                    .delay(entry.command_id(), entry.attempts, None);
                            if !pause(delay, &mut stopped).await {
                                return Ok(false);
                            }
                        }
                        Some(if std::mem::take(&mut resumed_lookup) {
                            steps::after_resumed_reconcile(
                                &entry,
                                found,
                                now_ms(),
                                &policy,
                                &last_error,
                            )
                        } else {
                            steps::after_reconcile(&entry, found, &policy, &last_error)
                        })
                    }
                    Err(e) => {
                        // Never failed on a guess: the entry waits, pending.
                        tracing::warn!(command_id = %entry.command_id(), "cannot reconcile: {e}");
                        metrics::counter!("hashbuy_settler_retries_total", "cause" => "reconcile")
                            .increment(1);
                        let delay = shared
                            .payments
                            .delay(entry.command_id(), entry.attempts, None);
                        if !pause(delay, &mut stopped).await {
                            return Ok(false);
                        }
                        Some(Step::Reconcile)
                    }
                }
            }
            Step::Decide(outcome) => {
                entry.decide(outcome, now_ms())?;
                stored = Some(ledger.put(&entry)?);
                count_outcome(shared, &entry);
                None
            }
        };
    }

    // The outcome is durable, and in the changelog, before its ack.
    shared.commit.durable().await?;
    let stored = match stored {
        Some(stored) => stored,
        None => encode(&entry, ledger.encoding())?,
    };
    shared
        .changelog(entry.command_id(), &stored, partition, true)
        .await?;
    let Some(ack) = entry.ack() else {
        return Ok(false);
    };
    // All before the entry is marked acked: a crash in between sends them
    // again, with the same ids (the reservation step takes a unit's fate
    // once). Side by side, so each costs no second round trip. A reply
    // that cannot be delivered is told and counted, and never holds up the
    // ack: the buyer's words must not decide whether a charge is acked.
    let (acked, resolved, replied) = tokio::join!(
        send_ack(shared, &ack),
        send_resolution(shared, &entry, &work.command),
        send_reply(shared, &entry, &ack)
    );
    acked?;
    resolved?;
    if let Err(e) = replied {
        tracing::warn!(
            command_id = entry.command_id(),
            "{e}: the buyer is not told this outcome"
        );
        metrics::counter!("hashbuy_settler_replies_failed_total").increment(1);
    }
    if entry.acked_ms.is_none() {
        // Local only: another owner restoring the entry without it sends
        // the same ack once more, which acks allow.
        entry.acked(now_ms())?;
        ledger.put(&entry)?;
    }
    Ok(true)
}

/// Decides a stale command some owner may have charged while it was fresh
/// (see [`horizon::look_up_before_rejecting`]) by what the provider holds of
/// it: a charge found is recorded, settled or declined, as a
/// reconciliation would; nothing found rejects it as stale (`reason`). The
/// lookup runs under the lease, is tried again while the provider cannot
/// answer or the charge is still moving, and is never decided on a guess.
/// `false` if stopped first.
async fn decide_stale(
    shared: &Shared,
    entry: &mut Entry,
    reason: String,
    stopped: &mut watch::Receiver<bool>,
) -> Result<bool, RunError> {
    loop {
        let Some(epoch) = lease_held(shared, stopped).await else {
            return Ok(false);
        };
        // Counted, so that the provider calls of a group reading stale
        // commands (days late, or a topic again from its start) show.
        metrics::counter!("hashbuy_settler_stale_lookups_total").increment(1);
        // From the tweet's time: any charge of it is later.
        let found = shared
            .payments
            .find(&entry.command, entry.command.tweet_timestamp_ms)
            .await;
        if !shared.lease.holds_since(epoch) {
            continue;
        }
        let found = match found {
            Ok(Found::Nothing) => {
                entry.decide(Outcome::Rejected { reason }, now_ms())?;
                return Ok(true);
            }
            Ok(found @ (Found::Charged { .. } | Found::Declined { .. })) => found,
            Ok(Found::Pending { .. }) | Err(_) => {
                if let Err(e) = &found {
                    tracing::warn!(command_id = %entry.command_id(), "cannot look a stale command up: {e}");
                }
                let delay = shared.payments.delay(entry.command_id(), 0, None);
                if !pause(delay, stopped).await {
                    return Ok(false);
                }
                continue;
            }
        };
        flag_double_charge(entry, &found);
        // A charge found decides as a reconciliation's does.
        let Step::Decide(outcome) = steps::after_reconcile(entry, found, &shared.config.policy, "")
        else {
            continue;
        };
        entry.note(
            "stale when it arrived here; the provider held a charge of it, made while it was \
             fresh"
                .into(),
            now_ms(),
        );
        // The charge was made under the command's first key.
        entry.attempt(crate::entry::first_key(entry.command_id()), now_ms())?;
        entry.decide(outcome, now_ms())?;
        return Ok(true);
    }
}

/// Flags an entry for an operator's review when `found` shows the provider
/// charged its command more than once.
fn flag_double_charge(entry: &mut Entry, found: &Found) {
    if let Some(incident) = steps::double_charge(found) {
        tracing::error!(command_id = %entry.command_id(), "{incident}");
        metrics::counter!("hashbuy_settler_double_charges_total").increment(1);
        entry.note(incident.clone(), now_ms());
        entry.review = Some(incident);
    }
}

/// Waits until the settler holds its lease (see [`crate::run`]), unless
/// the partition is stopped first; the lease's epoch, for the provider may
/// be called, or `None`.
pub(crate) async fn lease_held(
    shared: &Shared,
    stopped: &mut watch::Receiver<bool>,
) -> Option<u64> {
    loop {
        if *stopped.borrow() {
            return None;
        }
        if let Some(epoch) = shared.lease.epoch() {
            return Some(epoch);
        }
        if !pause(Duration::from_millis(50), stopped).await {
            return None;
        }
    }
}

/// Waits `delay` unless the partition is stopped first; whether it waited.
async fn pause(delay: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped.wait_for(|s| *s) => false,
    }
}

fn count_outcome(shared: &Shared, entry: &Entry) {
    let name = entry.state.name();
    metrics::counter!("hashbuy_settler_payments_total", "outcome" => name).increment(1);
    shared.count(|s| match entry.state {
        State::Settled { .. } => s.settled += 1,
        State::Declined { .. } => s.declined += 1,
        State::Rejected { .. } => s.rejected += 1,
        State::Failed { .. } => s.failed += 1,
        _ => {}
    });
}

/// Tells the buyer the outcome on the replies topic
/// ([`hashbuy_core::replies::outcome`]); which limit refused a rejected
/// command is read from its reason ([`limits::refusal`]).
async fn send_reply(shared: &Shared, entry: &Entry, ack: &PaymentAck) -> Result<(), RunError> {
    let refusal = match &entry.state {
        State::Rejected { reason } => limits::refusal(reason),
        _ => Refusal::Other,
    };
    let Some(reply) = replies::outcome(&entry.command, ack, refusal) else {
        return Ok(());
    };
    shared
        .produce(
            &shared.config.topics.replies,
            Some(reply.user_id.as_bytes()),
            &reply.encode_to_vec(),
            "cannot produce a reply",
        )
        .await?;
    shared.count(|s| s.replies += 1);
    metrics::counter!("hashbuy_settler_replies_total").increment(1);
    Ok(())
}

/// Tells the reservation step what became of the unit `arriving` holds
/// (a limited offer's command marked `reserved`: see `hashbuy_core::stock`),
/// on the partition it names (by its offer id if it names none, or one
/// the topic lacks): sold if its entry settled under a unit,
/// back to the offer's line otherwise. The entry is the ledger's first copy
/// of the command: one charged before the offer was limited (a recording
/// replayed after a stock was added) used no unit, so the unit goes back.
/// Nothing for a command without a unit.
async fn send_resolution(
    shared: &Shared,
    entry: &Entry,
    arriving: &PaymentCommand,
) -> Result<(), RunError> {
    if !arriving.reserved {
        return Ok(());
    }
    let request = StockRequest {
        kind: Some(Kind::Resolve(StockResolution {
            command_id: arriving.command_id.clone(),
            offer_id: arriving.offer_id.clone(),
            sold: entry.command.reserved && matches!(entry.state, State::Settled { .. }),
        })),
    };
    // A partition the topic lacks (recreated smaller, or a foreign writer)
    // would fail the produce on every restart: the word goes by its key
    // instead, as the matcher's request did.
    let partition = arriving.stock_partition.filter(|&p| {
        let exists = usize::try_from(p).is_ok_and(|p| p < shared.stock_partitions);
        if !exists {
            tracing::warn!(
                command_id = %arriving.command_id,
                partition = p,
                "the command's unit names stock-requests partition {p}, which does not exist \
                 ({} partitions): its word goes by the offer id",
                shared.stock_partitions
            );
        }
        exists
    });
    shared
        .produce_to(
            &shared.config.topics.stock_requests,
            partition,
            Some(arriving.offer_id.as_bytes()),
            &request.encode_to_vec(),
            "cannot tell the reservation step a unit's fate",
        )
        .await
}

async fn send_ack(shared: &Shared, ack: &PaymentAck) -> Result<(), RunError> {
    shared
        .produce(
            &shared.config.topics.acks,
            Some(ack.user_id.as_bytes()),
            &ack.encode_to_vec(),
            "cannot produce an ack",
        )
        .await?;
    shared.count(|s| s.acks += 1);
    *lock(&shared.last_ack) = Some(Instant::now());
    metrics::counter!("hashbuy_settler_acks_total").increment(1);
    Ok(())
}

/// [`route_of`], a refusal by the live merchants table made only once its
/// follower has shown it holds every change written so far: a merchant
/// put a moment ago is not refused for this settler's lag.
async fn route_now(
    shared: &Shared,
    command: &PaymentCommand,
) -> Result<Result<Route, String>, RunError> {
    let decided = Instant::now();
    let routed = route_of(shared, command);
    let (Err(_), Some(current)) = (&routed, &shared.merchants_current) else {
        return Ok(routed);
    };
    current
        .since(decided)
        .await?
        .map_err(RunError::MerchantsBehind)?;
    Ok(route_of(shared, command))
}

/// Where `command`'s charge goes, by the merchants table as it stood at
/// its purchase tweet's time.
fn route_of(shared: &Shared, command: &PaymentCommand) -> Result<Route, String> {
    let merchants = shared.config.merchants.as_deref().map(run::read);
    route(
        merchants.as_deref(),
        &command.merchant_id,
        command.amount,
        command.tweet_timestamp_ms,
    )
}
