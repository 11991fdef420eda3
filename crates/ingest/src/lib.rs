//! # livetally-ingest
//!
//! The input side: turns Kafka records into validated
//! [`livetally_aggregator::Event`]s, or into an
//! [`livetally_aggregator::InvalidReason`] that sends the record to the
//! dead-letter topic unchanged.
//!
//! It owns decoding and validation; it never aggregates and never publishes.
//!
//! ## Layout
//! - [`decode`](mod@decode): content-type / sniffing, JSON and protobuf decoding, and the
//!   contract's validation rules, shared by `run`, `replay` and `demo`.
//! - [`encode`]: the inverse, for the load generator and tests.
//! - [`consumer`]: the consumer-group member and its per-partition queues.

pub mod consumer;
pub mod decode;
pub mod encode;

pub use decode::{decode, DecodeConfig, Encoding};
