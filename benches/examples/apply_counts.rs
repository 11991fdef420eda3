//! `PartitionAggregator::apply` of the criterion data set into a warmed
//! aggregator, once, for repeatable instruction and cache-miss counts under
//! valgrind (criterion's times move by a third on a shared machine):
//!
//! ```text
//! cargo build --release -p livetally-benches --example apply_counts
//! valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*measured*' \
//!     target/release/examples/apply_counts
//! ```
//!
//! Only `measured` (the 100,000 events applied into the warmed aggregator,
//! as `apply/livetally_warm` does) is counted; divide by 100,000 for one
//! event. The data set is built and the aggregator warmed outside it.
//! With the argument `fresh`, the events go into a new aggregator instead,
//! as `apply/livetally_fresh` does; with `steady`, into one warmed with the
//! warm-up a minute earlier, as `apply/livetally_steady` does.

use std::hint::black_box;

use livetally_aggregator::{AggregatorConfig, Event, PartitionAggregator};
use livetally_benches::{DataSet, DataSetConfig};

#[inline(never)]
fn measured(aggregator: &mut PartitionAggregator, events: &[Event<'_>], first_position: u64) {
    for (position, event) in (first_position..).zip(events) {
        let _ = black_box(aggregator.apply(black_box(event), position));
    }
}

fn main() {
    let data = DataSet::build(&DataSetConfig::default());
    let warm_up = DataSet::build(&DataSetConfig {
        seed: DataSetConfig::default().seed ^ 0x5eed,
        ..DataSetConfig::default()
    });
    // `fresh`: into a new aggregator, as `apply/livetally_fresh` does;
    // `steady`: warmed with the minute before, as `apply/livetally_steady`.
    let mode = std::env::args().nth(1).unwrap_or_default();
    let warm_up: Vec<Event<'static>> = match mode.as_str() {
        "fresh" => Vec::new(),
        "steady" => warm_up.events_earlier_by(60_000),
        _ => warm_up.events,
    };
    let mut aggregator = PartitionAggregator::new(AggregatorConfig::default());
    for (position, event) in (0..).zip(&warm_up) {
        let _ = aggregator.apply(event, position);
    }
    measured(&mut aggregator, &data.events, warm_up.len() as u64);
    eprintln!(
        "applied {} events into an aggregator warmed with {} ({}); {} streams",
        data.len(),
        warm_up.len(),
        if mode.is_empty() { "warm" } else { &mode },
        aggregator.stream_count()
    );
}
