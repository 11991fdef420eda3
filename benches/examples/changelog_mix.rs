//! What the changelog is made of during a catch-up: an NDJSON file of
//! events (`livetally gen --out`) spread over partitions by `stream_id`,
//! each partition publishing and checkpointing every `--tick-events` of its
//! events, as `run` does once a second. Prints the bytes written by kind of
//! record, and what a head holds.
//!
//! ```text
//! livetally gen --events 3000000 --streams 10000 --seed 1 --duplicate-rate 0.02 \
//!     --invalid-rate 0.005 --start-ts 1795829323170 --out /tmp/gen3m.ndjson
//! cargo run --release -p livetally-benches --example changelog_mix -- /tmp/gen3m.ndjson
//! ```
//!
//! The defaults (12 partitions, a tick every 7,500 events of a partition)
//! are the end-to-end harness's catch-up at 90,000 events/s.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};

use livetally_aggregator::changelog::{Key, PieceKind, Record};
use livetally_aggregator::{AggregatorConfig, PartitionAggregator};
use livetally_ingest::{decode, DecodeConfig};

#[derive(Default)]
struct Tally {
    records: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, record: &Record) {
        self.records += 1;
        self.bytes += (record.key.len() + record.value.len()) as u64;
    }
}

#[derive(Default)]
struct Mix {
    heads: Tally,
    seen: Tally,
    presence: Tally,
    history: Tally,
    windows: Tally,
    tombstones: Tally,
    publications: u64,
    window_rollups: u64,
    /// Heads sampled for their windows: (count, windows, bytes).
    sampled: (u64, u64, u64),
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: changelog_mix EVENTS.ndjson [PARTITIONS] [TICK_EVENTS]");
    let partitions: usize = args.next().map_or(12, |a| a.parse().expect("partitions"));
    let tick: u64 = args
        .next()
        .map_or(7_500, |a| a.parse().expect("tick events"));

    let mut aggregators: Vec<PartitionAggregator> = (0..partitions)
        .map(|_| PartitionAggregator::new(AggregatorConfig::default()))
        .collect();
    let mut since_tick = vec![0u64; partitions];
    let mut mix = Mix::default();
    let decoding = DecodeConfig::default();
    let input = BufReader::new(std::fs::File::open(path)?);
    let mut position = 0u64;
    for line in input.split(b'\n') {
        let line = line?;
        position += 1;
        let Ok(event) = decode(&line, Some(b"application/json"), None, &decoding) else {
            continue;
        };
        let mut hasher = DefaultHasher::new();
        event.stream_id.hash(&mut hasher);
        let p = (hasher.finish() % partitions as u64) as usize;
        let _ = aggregators[p].apply(&event, position);
        since_tick[p] += 1;
        if since_tick[p] == tick {
            since_tick[p] = 0;
            flush(&mut aggregators[p], &mut mix);
        }
    }
    for aggregator in &mut aggregators {
        flush(aggregator, &mut mix);
    }

    let total = mix.heads.bytes
        + mix.seen.bytes
        + mix.presence.bytes
        + mix.history.bytes
        + mix.windows.bytes
        + mix.tombstones.bytes;
    println!("events {position}, partitions {partitions}, tick every {tick} events of a partition");
    println!(
        "publications {}, window rollups {}",
        mix.publications, mix.window_rollups
    );
    println!("| records | count | MB | share |");
    println!("|---|---:|---:|---:|");
    for (name, tally) in [
        ("heads", &mix.heads),
        ("duplicate-filter pieces", &mix.seen),
        ("presence pieces", &mix.presence),
        ("history pieces", &mix.history),
        ("windows pieces", &mix.windows),
        ("tombstones", &mix.tombstones),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} % |",
            tally.records,
            tally.bytes as f64 / 1e6,
            100.0 * tally.bytes as f64 / total as f64
        );
    }
    println!("| all | | {:.1} | |", total as f64 / 1e6);
    let (heads, windows, bytes) = mix.sampled;
    println!(
        "heads sampled {heads}: {:.1} windows retained and {:.0} bytes each on average",
        windows as f64 / heads as f64,
        bytes as f64 / heads as f64
    );
    Ok(())
}

fn flush(aggregator: &mut PartitionAggregator, mix: &mut Mix) {
    for publication in aggregator.publish() {
        mix.publications += 1;
        mix.window_rollups += publication.windows.len() as u64;
    }
    for record in aggregator.checkpoints() {
        if record.value.is_empty() {
            mix.tombstones.add(&record);
            continue;
        }
        match Key::parse(&record.key) {
            Some(Key::Head(stream_id)) => {
                mix.heads.add(&record);
                if mix.heads.records.is_multiple_of(64) {
                    let windows = aggregator.windows(stream_id).map_or(0, |w| w.len());
                    mix.sampled.0 += 1;
                    mix.sampled.1 += windows as u64;
                    mix.sampled.2 += record.value.len() as u64;
                }
            }
            Some(Key::Piece { kind, .. }) => match kind {
                PieceKind::Seen => mix.seen.add(&record),
                PieceKind::Presence => mix.presence.add(&record),
                PieceKind::History => mix.history.add(&record),
                PieceKind::Windows => mix.windows.add(&record),
            },
            None => panic!("a key livetally never writes"),
        }
    }
}
