//! [`PartitionAggregator`]: the aggregation state of one input partition.
//!
//! Invariant: one owner applies the partition's events in input order and
//! calls [`PartitionAggregator::publish`] between batches; nothing else
//! touches the state. A stream's [`StreamCheckpoint`] records the highest
//! input position applied to it, so after a restore the consumer may replay
//! from any earlier committed offset: events already in the state come back
//! as [`Outcome::AlreadyApplied`] and change nothing.

use std::fmt;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::commission::CommissionRate;
use crate::event::Event;
use crate::reason::InvalidReason;
use crate::rollup::{ProductRollup, StreamRollup};
use crate::stream::{StreamCheckpoint, StreamState};

/// How figures are computed; the same for every partition of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatorConfig {
    /// The commission on net GMV (default 10 %).
    pub commission: CommissionRate,
}

/// What [`PartitionAggregator::apply`] did with an event, for the caller's
/// metrics and dead-letter routing.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// New and valid: it changed the stream's figures.
    Counted,
    /// Its (`stream_id`, `event_id`) was already counted; nothing changed.
    Duplicate,
    /// Invalid against the stream's state (only `CurrencyMismatch` comes from
    /// here); nothing changed, the record belongs in the dead-letter topic.
    Invalid(InvalidReason),
    /// Its position is at or below the stream's restored checkpoint: its
    /// effect is already in the state. Neither counted nor a duplicate.
    AlreadyApplied,
}

/// What one stream publishes after a batch: its figures, and the checkpoint
/// that restores exactly the state behind them.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The cumulative figures, at the new revision.
    pub rollup: StreamRollup,
    /// Every product of the stream, by `gmv` descending then `product_id`.
    pub products: Vec<ProductRollup>,
    /// The stream's state at this revision, for the changelog topic.
    pub checkpoint: StreamCheckpoint,
}

/// The state of every stream of one input partition, with a single owner.
pub struct PartitionAggregator {
    config: AggregatorConfig,
    /// Keyed by `stream_id`; looked up by `&str` so existing streams cost no allocation.
    streams: HashMap<String, StreamState>,
    /// Streams changed since the last publication, each pushed once when it
    /// turns dirty so that publishing does not scan every stream.
    dirty: Vec<String>,
}

impl PartitionAggregator {
    /// An empty aggregator; restore checkpoints before applying events.
    pub fn new(config: AggregatorConfig) -> PartitionAggregator {
        PartitionAggregator {
            config,
            streams: HashMap::new(),
            dirty: Vec::new(),
        }
    }

    /// The configuration figures are computed with.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// Applies one valid event found at input `position` (the Kafka offset;
    /// in replay, the line number). A stream is created by its first counted
    /// event only.
    pub fn apply(&mut self, event: &Event<'_>, position: u64) -> Outcome {
        // A stream not yet here has no duplicates, currency or checkpoint, so
        // its first event is always counted: creating it up front is exact.
        let stream_id: &str = &event.stream_id;
        let state = self.streams.entry_ref(stream_id).or_default();
        let outcome = state.apply(event, position);
        if outcome == Outcome::Counted && !state.dirty {
            state.dirty = true;
            self.dirty.push(stream_id.to_owned());
        }
        outcome
    }

    /// The figures of every stream changed since the last call, each at a new
    /// revision, sorted by `stream_id`.
    pub fn publish(&mut self) -> Vec<Publication> {
        let mut stream_ids = std::mem::take(&mut self.dirty);
        // A restore in between can leave a stream listed twice or no longer dirty.
        stream_ids.sort_unstable();
        stream_ids.dedup();
        let rate = self.config.commission;
        let mut publications = Vec::with_capacity(stream_ids.len());
        for stream_id in stream_ids {
            let Some(state) = self.streams.get_mut(stream_id.as_str()) else {
                continue;
            };
            if !state.dirty {
                continue;
            }
            state.dirty = false;
            state.revision += 1;
            publications.push(Publication {
                products: state.products(),
                checkpoint: StreamCheckpoint::from_state(state.clone()),
                rollup: state.rollup(stream_id, rate),
            });
        }
        publications
    }

    /// The stream's figures now, at its current revision (no new revision).
    pub fn rollup(&self, stream_id: &str) -> Option<StreamRollup> {
        let state = self.streams.get(stream_id)?;
        Some(state.rollup(stream_id.to_owned(), self.config.commission))
    }

    /// Every stream's figures now, sorted by `stream_id` (the replay output).
    pub fn rollups(&self) -> Vec<StreamRollup> {
        self.stream_ids()
            .into_iter()
            .filter_map(|id| self.rollup(id))
            .collect()
    }

    /// The stream's products now, by `gmv` descending then `product_id`.
    pub fn products(&self, stream_id: &str) -> Option<Vec<ProductRollup>> {
        Some(self.streams.get(stream_id)?.products())
    }

    /// How many streams this partition holds, for the active-streams gauge.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Every stream held, sorted.
    pub fn stream_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.streams.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The stream's state now, as a checkpoint (at its current revision).
    pub fn checkpoint(&self, stream_id: &str) -> Option<StreamCheckpoint> {
        let state = self.streams.get(stream_id)?;
        Some(StreamCheckpoint::from_state(state.clone()))
    }

    /// Replaces the stream's state with a checkpoint, as after a restart or
    /// rebalance. Not dirty: nothing new to publish until an event counts.
    pub fn restore(&mut self, stream_id: &str, checkpoint: StreamCheckpoint) {
        let state = checkpoint.into_state();
        match self.streams.get_mut(stream_id) {
            Some(existing) => *existing = state,
            None => {
                self.streams.insert(stream_id.to_owned(), state);
            }
        }
    }

    /// Approximate bytes held, for the state-size gauge. Walks every stream,
    /// so call it per batch at most.
    pub fn state_bytes_estimate(&self) -> usize {
        let streams: usize = self
            .streams
            .iter()
            .map(|(id, s)| id.capacity() + s.bytes_estimate())
            .sum();
        std::mem::size_of::<Self>()
            + self.streams.capacity() * (std::mem::size_of::<(String, StreamState)>() + 1)
            + self.dirty.capacity() * std::mem::size_of::<String>()
            + streams
    }
}

impl fmt::Debug for PartitionAggregator {
    /// A summary: the state can hold millions of entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionAggregator")
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .field("dirty", &self.dirty.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
