//! The settler: payment commands in, charges through the payment provider,
//! payment acks out, each command charged at most once and never lost.
//!
//! The ledger is the source of truth, one entry per command id, and moves
//! through Stripe-style recovery points ([`entry::State`]):
//! `received` → `attempting(n, key)` → `settled | declined | rejected |
//! failed`, then acked. The attempt is durable before the provider is
//! called, the result before the ack is produced, and the offset is stored
//! only after the ack is delivered; a crash anywhere resumes from the last
//! recovery point with the same idempotency key, so the provider charges
//! once.
//!
//! - [`command`]: a command record decoded and checked (pure).
//! - [`entry`]: a command's ledger entry and its transitions (pure).
//! - [`limits`]: `max_per_user` and the rolling 24 h `spend_limit`, checked
//!   against the user's earlier entries (pure).
//! - [`ledger`]: entries in sled, per input partition, with a user index.
//! - [`counts`]: the counts of pruned purchases, kept in buckets (pure).
//! - [`group_commit`]: one flush for the writes of many tasks.
//! - [`compact`]: a ledger copied afresh, to give back what pruning freed.
//! - [`horizon`]: how old a command may be, and which entries may be
//!   pruned; the argument that pruning charges nothing twice (pure).
//! - [`steps`]: what to do next with a command, from what the provider
//!   said (pure).
//! - [`payments`]: the provider (`hashbuy_provider`) in the settler's
//!   terms.
//! - [`run`]: the settler on Kafka, on the group driver
//!   (`hashbuy_kafka::driver`): partitions assigned and revoked, the lease,
//!   commits.
//! - [`restore`]: a partition's ledger restored from the changelog.
//! - [`frontier`]: how far a partition's ledger holds the changelog, so
//!   that a restart reads only what came after (pure).
//! - [`prune`]: a partition's pruning passes.
//! - [`partition`]: a partition's task, many commands in flight.
//! - [`settle`]: one command, from its entry to its ack.
pub mod command;
pub mod compact;
pub mod counts;
pub mod entry;
pub mod frontier;
pub mod group_commit;
pub mod horizon;
pub mod ledger;
pub mod limits;
pub mod partition;
pub mod payments;
pub mod prune;
pub mod restore;
pub mod run;
pub mod settle;
pub mod steps;
