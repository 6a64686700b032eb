//! hashbuy's reservation step (`hashbuy stock`): limited offers' commands
//! in, each one sent on to the settler with a unit held for it, kept in
//! line, or rejected as sold out.
//!
//! The decisions are [`hashbuy_core::stock`]'s, which also argues why no
//! more settle than the stock. This crate puts them on Kafka:
//!
//! - **Input**: the `stock-requests` topic, keyed by offer id, so one
//!   member of the step's consumer group (default `hashbuy-stock`) owns
//!   every request of an offer: the matcher's limited commands
//!   (`StockRequest.reserve`) and the settler's word on each unit
//!   (`StockRequest.resolve`), written with the command's ack.
//! - **Outputs**: granted commands (marked `reserved`, naming the
//!   partition their unit's word must come back to) and sold-out ones
//!   (marked `sold_out`, for the settler to reject and keep in its
//!   ledger) to the commands topic keyed by user, as the matcher writes
//!   the others; records that are no request to the dead letters (stage
//!   `stock`), the stream going on. A word of the settler's that
//!   contradicts a line is logged as an error and counted
//!   (`hashbuy_stock_contradictions_total`).
//! - **State**: each partition's lines, restored from the compacted
//!   `stock-holds` changelog (the same partition number) before its first
//!   request, after the group's committed offsets are fetched (stable: a
//!   former owner's last transaction is over by then). A changelog whose
//!   oldest records were deleted stops the step: the units they held or
//!   sold would be forgotten.
//!
//! # Concurrency
//!
//! One thread, the coordinator of [`hashbuy_kafka::driver`], does
//! everything: limited offers' purchases are a small share of the
//! commands, so the step reads each owned partition's queue in turn,
//! decides, and makes the turn's requests durable as one batch:
//!
//! - **Exactly once**: the batch's outputs, changelog records and offsets
//!   in one transaction, sent with the group's metadata (a member that
//!   lost its partitions cannot commit). An aborted transaction puts the
//!   lines the batch touched back as they were and reads its requests
//!   again; five aborted in a row stop the step.
//! - **At least once** (brokers without transactions): the outputs are
//!   delivered, then the changelog records (an idempotent producer
//!   without gaps, so what lands is a prefix), then the offsets
//!   committed; a crash in between decides requests again as the first
//!   time, or finds them decided (see [`hashbuy_core::stock`]).
//!
//! At least once, nothing fences a member paused past its session: thawed,
//! it may grant from lines another member has served meanwhile, and so
//! sell past the stock. Exactly once, the broker refuses its transaction.
//! Limited stock is exact with transactions; run the step exactly once
//! wherever the broker has them.

mod restore;
pub mod run;
mod stage;

/// The stage name the step's dead letters carry.
pub const STAGE: &str = "stock";
