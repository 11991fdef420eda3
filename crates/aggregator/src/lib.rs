//! # livetally-aggregator
//!
//! The pure core of livetally: validated [`Event`]s in, per-stream figures
//! ([`StreamRollup`], [`ProductRollup`]) out.
//!
//! It owns the per-partition state and nothing else. It never does I/O, never
//! reads a clock and never locks: time arrives inside events, and each
//! [`PartitionAggregator`] has exactly one owner (the task of its input
//! partition). Readers get the snapshots that [`PartitionAggregator::publish`]
//! returns.
//!
//! ## Layout
//! - [`event`]: the validated event the ingest layer hands over.
//! - [`reason`]: the closed set of invalid reasons.
//! - [`rollup`]: the published figures.
//! - [`commission`]: the commission rate, an exact decimal.
//! - [`distinct`]: distinct counts, exact while small, a HyperLogLog sketch beyond.
//! - [`partition`]: [`PartitionAggregator`], the state of one input partition.
//! - [`stream`]: the state of one stream, its figure arithmetic and its
//!   checkpoint.
//! - [`changelog`]: the changelog records a checkpoint is written as (a
//!   head, and the pieces of the duplicate filter), and the restore.
//! - `ids` (private): the stable id hashes that distinct sets and checkpoints keep.

pub mod changelog;
pub mod commission;
pub mod distinct;
pub mod event;
mod ids;
pub mod partition;
pub mod reason;
pub mod rollup;
pub mod stream;
#[cfg(test)]
mod testkit;

pub use commission::{CommissionRate, CommissionRateError};
pub use event::{Action, Currency, Event, EventTime, EventType, OrderLine};
pub use partition::{AggregatorConfig, IdSeeds, Outcome, PartitionAggregator, Publication};
pub use reason::InvalidReason;
pub use rollup::{Derived, ProductRollup, RollupKind, StreamRollup, TOP_PRODUCTS};
pub use stream::{CheckpointError, StateBytes, StreamCheckpoint};
