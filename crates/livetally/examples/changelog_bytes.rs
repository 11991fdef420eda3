//! What the state changelog costs per event: the records `run` would write
//! for a file of events, without a broker.
//!
//! ```sh
//! livetally gen --rate 50000 --duration 45s --streams 10000 --seed 2 --out /tmp/events.ndjson
//! cargo run --release -p livetally --example changelog_bytes -- /tmp/events.ndjson 5000
//! # stdout: {"events":2250101,"records":...,"bytes_per_event":...,...}
//! ```
//!
//! The events are split over 12 partitions by a hash of `stream_id`, decoded
//! and applied as `run` does, and every N records (default 5,000: 100 ms at
//! 50,000 events/s, the exactly-once latency run's transaction interval)
//! every partition publishes and takes its checkpoints, as an exactly-once
//! transaction does. It counts the changelog records (heads, duplicate-filter
//! pieces, tombstones) and their bytes, keys included, and what a restore
//! would read once the topic is compacted (the latest record of each key
//! still live at the end). `gen --out` does not
//! pace, so the file takes about a second to write. The figures depend only
//! on the file and N.

use std::io::BufRead;

use livetally_aggregator::changelog::Key;
use livetally_aggregator::{AggregatorConfig, PartitionAggregator};
use livetally_ingest::{decode, DecodeConfig};

const PARTITIONS: u64 = 12;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: changelog_bytes EVENTS.ndjson [RECORDS_PER_CHECKPOINT]")
    })?;
    let every: u64 = args.next().map_or(Ok(5_000), |n| n.parse())?;
    let input = std::io::BufReader::new(std::fs::File::open(&path)?);
    let mut partitions: Vec<PartitionAggregator> = (0..PARTITIONS)
        .map(|_| PartitionAggregator::new(AggregatorConfig::default()))
        .collect();
    let decoding = DecodeConfig::default();
    let (mut events, mut heads, mut pieces, mut tombstones) = (0u64, 0u64, 0u64, 0u64);
    let (mut bytes, mut largest) = (0u64, 0usize);
    // The topic once compacted: the latest value size of each live key.
    let mut compacted: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for line in input.split(b'\n') {
        let line = line?;
        events += 1;
        if let Ok(event) = decode(&line, Some(b"application/json"), None, &decoding) {
            let partition = fnv1a(event.stream_id.as_bytes()) % PARTITIONS;
            let _ = partitions[partition as usize].apply(&event, events);
        }
        if events.is_multiple_of(every) {
            for partition in &mut partitions {
                let _ = partition.publish();
                for record in partition.checkpoints() {
                    bytes += (record.key.len() + record.value.len()) as u64;
                    if record.value.is_empty() {
                        compacted.remove(&record.key);
                    } else {
                        compacted.insert(record.key.clone(), record.key.len() + record.value.len());
                    }
                    largest = largest.max(record.value.len());
                    match Key::parse(&record.key) {
                        _ if record.value.is_empty() => tombstones += 1,
                        Some(Key::Piece { .. }) => pieces += 1,
                        _ => heads += 1,
                    }
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "records_per_checkpoint": every,
            "records": heads + pieces + tombstones,
            "heads": heads,
            "pieces": pieces,
            "tombstones": tombstones,
            "bytes": bytes,
            "bytes_per_event": bytes / events.max(1),
            "largest_record_bytes": largest,
            "compacted_records": compacted.len(),
            "compacted_bytes": compacted.values().sum::<usize>(),
        })
    );
    Ok(())
}

/// A fixed hash, so that the split is the same on every machine and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
