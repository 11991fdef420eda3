//! # livetally-sink
//!
//! The output side: everything that leaves the engine. It owns the rollup
//! topic, the dead-letter topic and the state changelog (as Kafka records),
//! the read model that HTTP readers see, the HTTP/SSE API with its dashboard,
//! and the Prometheus metric names.
//!
//! It never aggregates: it receives finished [`livetally_aggregator::Publication`]s
//! from the partition that owns them and only encodes, stores and serves them.
//!
//! ## Layout
//! - [`metrics`]: every metric name, and the recorder install.
//! - [`readmodel`]: the published snapshots HTTP serves, and the live feed.
//! - [`encode`]: rollups as JSON or protobuf.
//! - [`kafka`]: the producer for rollups, dead letters and changelog records.
//! - [`http`]: the axum routes, SSE and the dashboard page.

pub mod encode;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod readmodel;

pub use encode::RollupFormat;
pub use kafka::{DeadLetter, OutBatch, OutRollup, Publisher, PublisherConfig};
pub use readmodel::{ReadModel, Readiness, Shown, SortKey};
