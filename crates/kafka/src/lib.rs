//! Kafka plumbing shared by hashbuy's services.
//!
//! - [`offsets`]: which offset a partition may commit while many of its
//!   records are in flight.
pub mod offsets;
