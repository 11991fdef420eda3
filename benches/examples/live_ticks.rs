//! The engine's work at a live rate, without Kafka, for repeatable
//! instruction counts under valgrind: records of a `gen --rate` file are
//! decoded and applied in ticks of event time (20 ms, as `run
//! --live-interval-ms 20` shows them), and after each tick every partition
//! publishes as `PartitionWork::flush` does at-least-once: `publish()`, the
//! read model's `show` with a live-feed subscriber (so each rollup's JSON is
//! made), every second the newest rollup per key encoded for the rollup
//! topic, every 5 s the changelog records.
//!
//! ```text
//! livetally gen --out live.ndjson --rate 50000 --duration 6s --streams 10000 --seed 2
//! cargo build --release -p livetally-benches --example live_ticks
//! valgrind --tool=callgrind --toggle-collect='*live_ticks::ticks*' \
//!     target/release/examples/live_ticks live.ndjson
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! `ticks` covers every tick; `apply_tick` (decode and apply) and
//! `flush_tick` (everything after) split it. Divide by the records for one
//! event. The second argument sets the tick (ms), the third the partitions
//! (12).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::hint::black_box;
use std::io::BufRead;

use livetally_aggregator::{AggregatorConfig, PartitionAggregator};
use livetally_ingest::{decode, DecodeConfig};
use livetally_sink::{ReadModel, RollupFormat, Shown};

const PUBLISH_EVERY_MS: i64 = 1_000;
const CHECKPOINT_EVERY_MS: i64 = 5_000;

/// One input partition's worker, without its consumer and producer.
struct Partition {
    aggregator: PartitionAggregator,
    unpublished: HashMap<(String, Option<i64>), Shown>,
    position: u64,
}

#[inline(never)]
fn apply_tick(partitions: &mut [Partition], records: &[(usize, &[u8])], config: &DecodeConfig) {
    for &(partition, record) in records {
        let partition = &mut partitions[partition];
        partition.position += 1;
        if let Ok(event) = decode(record, Some(b"application/json"), None, config) {
            let _ = black_box(partition.aggregator.apply(&event, partition.position));
        }
    }
}

/// What the partitions showed and sent at this tick: (rollups shown,
/// rollup bytes, changelog bytes).
#[inline(never)]
fn flush_tick(
    partitions: &mut [Partition],
    model: &ReadModel,
    publish: bool,
    checkpoint: bool,
) -> (usize, usize, usize) {
    let (mut shown_count, mut rollup_bytes, mut changelog_bytes) = (0, 0, 0);
    for partition in partitions {
        for shown in model.show(partition.aggregator.publish(), publish) {
            shown_count += 1;
            let key = (shown.rollup.stream_id.clone(), shown.rollup.window_start);
            partition.unpublished.insert(key, shown);
        }
        if !publish {
            continue;
        }
        let mut newest: Vec<_> = partition.unpublished.drain().collect();
        newest.sort_unstable_by(|((a, a_start), _), ((b, b_start), _)| {
            (a, a_start.is_none(), a_start).cmp(&(b, b_start.is_none(), b_start))
        });
        for (_, shown) in newest {
            model.settle(&shown);
            rollup_bytes += black_box(shown.encode(RollupFormat::Json)).value.len();
        }
        let changelog = if checkpoint {
            partition.aggregator.checkpoints()
        } else {
            partition.aggregator.first_checkpoints()
        };
        changelog_bytes += changelog
            .iter()
            .map(|r| r.key.len() + r.value.len())
            .sum::<usize>();
    }
    (shown_count, rollup_bytes, changelog_bytes)
}

#[inline(never)]
fn ticks(
    partitions: &mut [Partition],
    model: &ReadModel,
    records: &[(usize, i64, &[u8])],
    tick_ms: i64,
) -> [usize; 4] {
    let config = DecodeConfig::default();
    let mut live = model.subscribe();
    let [mut ticks, mut shown, mut rollup_bytes, mut changelog_bytes] = [0; 4];
    let Some(&(_, first_ts, _)) = records.first() else {
        return [0; 4];
    };
    let mut at = 0;
    let mut tick_end = first_ts + tick_ms;
    while at < records.len() {
        let upto = at + records[at..].partition_point(|r| r.1 < tick_end);
        let tick: Vec<(usize, &[u8])> = records[at..upto].iter().map(|r| (r.0, r.2)).collect();
        apply_tick(partitions, &tick, &config);
        let since_start = tick_end - first_ts;
        let (s, r, c) = flush_tick(
            partitions,
            model,
            since_start % PUBLISH_EVERY_MS < tick_ms,
            since_start % CHECKPOINT_EVERY_MS < tick_ms,
        );
        shown += s;
        rollup_bytes += r;
        changelog_bytes += c;
        // The SSE client's share: taking what was announced.
        while live.try_recv().is_ok() {}
        ticks += 1;
        at = upto;
        tick_end += tick_ms;
    }
    [ticks, shown, rollup_bytes, changelog_bytes]
}

/// The record's `ts` as epoch ms, for ordering ticks (`gen` writes numbers).
fn ts_of(record: &[u8]) -> Option<i64> {
    let at = record.windows(5).position(|w| w == b"\"ts\":")? + 5;
    let digits: Vec<u8> = record[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: live_ticks FILE.ndjson [TICK_MS] [PARTITIONS]");
    let tick_ms: i64 = args.next().map_or(20, |a| a.parse().expect("TICK_MS"));
    let count: usize = args.next().map_or(12, |a| a.parse().expect("PARTITIONS"));
    let lines: Vec<Vec<u8>> = std::io::BufReader::new(std::fs::File::open(&path)?)
        .split(b'\n')
        .collect::<Result<_, _>>()?;
    // Partitioned by key, as a keyed topic would be; in the file's order,
    // which `gen --rate` writes by event time give or take its lateness.
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut records: Vec<(usize, i64, &[u8])> = Vec::with_capacity(lines.len());
    let mut last_ts = i64::MIN;
    for line in &lines {
        let stream = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("stream_id")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        // Records arrive in file order; a tick takes them up to its end by
        // the latest `ts` seen, so late records go with the tick they arrive in.
        last_ts = last_ts.max(ts_of(line).unwrap_or(last_ts));
        let partition = (hasher.hash_one(&stream) % count as u64) as usize;
        records.push((partition, last_ts, line));
    }
    let mut partitions: Vec<Partition> = (0..count)
        .map(|_| Partition {
            aggregator: PartitionAggregator::new(AggregatorConfig::default()),
            unpublished: HashMap::new(),
            position: 0,
        })
        .collect();
    let model = ReadModel::new();
    let [ticks, shown, rollup_bytes, changelog_bytes] =
        ticks(&mut partitions, &model, &records, tick_ms);
    eprintln!(
        "{} records in {ticks} ticks of {tick_ms} ms over {count} partitions: {} streams, \
         {shown} rollups shown, {rollup_bytes} bytes of rollups to the topic, \
         {changelog_bytes} bytes of changelog",
        records.len(),
        model.len(),
    );
    Ok(())
}
