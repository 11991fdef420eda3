//! The hot path, each bench beside its limit in the same criterion group.
//!
//! One iteration runs over the whole data set ([`bench_events`] events, the
//! same ones in every group), and every group declares
//! `Throughput::Elements(events)`, so criterion's `thrpt` line is events per
//! second on one core and `time / events` is the cost of one event.
//!
//! | group | livetally | its limit |
//! |---|---|---|
//! | `decode_json` | `decode` (parse + validate), live clock guard on | a plain `#[derive(Deserialize)]` struct via `serde_json::from_slice`, no validation |
//! | `decode_protobuf` | `decode` with the `content-type` header | bare `prost::Message::decode` of `ViewerEvent` |
//! | `apply` | `PartitionAggregator::apply` of pre-decoded events, into a fresh aggregator, into one warmed with the same minute (every presence event late) and into one warmed with the minute before (steady) | a bare `hashbrown` map `stream_id → (count, gmv)`: one lookup and one add per event (and, for scale, the same plus a duplicate check) |
//! | `whole_path` | `decode` + `apply` per payload, fresh aggregator | serde derive (or bare prost) + the bare keyed sum |
//!
//! A ratio is livetally's time over its limit's time in the same group.
//! Run with `make bench` (`cargo bench -p livetally-benches`); add a filter to
//! run one group, e.g. `cargo bench -p livetally-benches -- apply`.

use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use hashbrown::{DefaultHashBuilder, HashMap, HashSet};
use livetally_aggregator::{Action, AggregatorConfig, Event, PartitionAggregator};
use livetally_benches::{
    bench_events, DataSet, DataSetConfig, JSON_CONTENT_TYPE, NOW_MS, PROTOBUF_CONTENT_TYPE,
};
use livetally_ingest::{decode, DecodeConfig};
use livetally_proto::v1::ViewerEvent;
use prost::Message;

/// What a plain `#[derive(Deserialize)]` decoder reads: owned strings, no
/// validation, unknown fields skipped (serde's default).
#[derive(serde::Deserialize)]
#[allow(dead_code)] // fields are read by the derive only, except a few
struct DerivedEvent {
    event_id: String,
    #[serde(rename = "type")]
    ty: String,
    stream_id: String,
    viewer_id: String,
    ts: i64,
    seller_id: Option<String>,
    product_id: Option<String>,
    order_id: Option<String>,
    quantity: Option<i64>,
    unit_price: Option<i64>,
    currency: Option<String>,
}

/// The same with borrowed strings: what the reference costs without its
/// allocations (it would fail on strings with escapes; the data set has none).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct BorrowedDerivedEvent<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    stream_id: &'a str,
    viewer_id: &'a str,
    ts: i64,
    seller_id: Option<&'a str>,
    product_id: Option<&'a str>,
    order_id: Option<&'a str>,
    quantity: Option<i64>,
    unit_price: Option<i64>,
    currency: Option<&'a str>,
}

/// Per stream: (events, gmv in minor units). The floor keeps one of these.
type KeyedSum = (u64, i64);

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    events: usize,
) -> BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(events as u64))
        // One iteration is a whole pass over the data set (tens of ms): flat
        // sampling keeps the sample count affordable on a small machine.
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

fn decode_json(c: &mut Criterion, data: &DataSet) {
    let config = DecodeConfig::default();
    let mut g = group(c, "decode_json", data.len());
    g.bench_function("livetally", |b| {
        b.iter(|| {
            for payload in &data.json {
                let event = decode(
                    black_box(payload),
                    Some(JSON_CONTENT_TYPE),
                    Some(NOW_MS),
                    &config,
                );
                black_box(&event);
            }
        })
    });
    g.bench_function("serde_json_derive", |b| {
        b.iter(|| {
            for payload in &data.json {
                let event = serde_json::from_slice::<DerivedEvent>(black_box(payload));
                black_box(&event);
            }
        })
    });
    g.bench_function("serde_json_derive_borrowed", |b| {
        b.iter(|| {
            for payload in &data.json {
                let event = serde_json::from_slice::<BorrowedDerivedEvent<'_>>(black_box(payload));
                black_box(&event);
            }
        })
    });
    g.finish();
}

fn decode_protobuf(c: &mut Criterion, data: &DataSet) {
    let config = DecodeConfig::default();
    let mut g = group(c, "decode_protobuf", data.len());
    g.bench_function("livetally", |b| {
        b.iter(|| {
            for payload in &data.protobuf {
                let event = decode(
                    black_box(payload),
                    Some(PROTOBUF_CONTENT_TYPE),
                    Some(NOW_MS),
                    &config,
                );
                black_box(&event);
            }
        })
    });
    g.bench_function("prost_decode", |b| {
        b.iter(|| {
            for payload in &data.protobuf {
                let event = ViewerEvent::decode(black_box(payload.as_slice()));
                black_box(&event);
            }
        })
    });
    g.finish();
}

/// Applies every event to `aggregator`, input positions from `first_position`.
fn apply_all(aggregator: &mut PartitionAggregator, events: &[Event<'_>], first_position: u64) {
    for (position, event) in (first_position..).zip(events) {
        let _ = black_box(aggregator.apply(black_box(event), position));
    }
}

/// The floor: one map lookup and one add per event, nothing else.
fn keyed_sum<'e>(sums: &mut HashMap<&'e str, KeyedSum>, events: &'e [Event<'_>]) {
    for event in events {
        let sum = sums.entry(&*event.stream_id).or_default();
        sum.0 += 1;
        if let Action::Purchase(line) = &event.action {
            sum.1 += line.amount();
        }
    }
}

/// The floor plus the one thing no correct aggregator can skip: a duplicate
/// check, one insert of the event id's hash into a set that grows with the
/// traffic (a probe into a large table per event).
fn keyed_sum_with_dedup<'e>(
    sums: &mut HashMap<&'e str, KeyedSum>,
    seen: &mut HashSet<u64>,
    events: &'e [Event<'_>],
) {
    let hasher = DefaultHashBuilder::default();
    for event in events {
        if !seen.insert(hasher.hash_one(&*event.event_id)) {
            continue;
        }
        let sum = sums.entry(&*event.stream_id).or_default();
        sum.0 += 1;
        if let Action::Purchase(line) = &event.action {
            sum.1 += line.amount();
        }
    }
}

fn apply(c: &mut Criterion, data: &DataSet, warm_up: &DataSet, minute_before: &[Event<'static>]) {
    let mut g = group(c, "apply", data.len());
    // A partition that just started: every stream, viewer and product is new.
    g.bench_function("livetally_fresh", |b| {
        b.iter_batched(
            || PartitionAggregator::new(AggregatorConfig::default()),
            |mut aggregator| {
                apply_all(&mut aggregator, &data.events, 0);
                aggregator // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    // A partition that already holds as many other events of the same
    // streams (distinct event ids), so the measured ones still count. They
    // cover the same minute of event time, so the watermark has passed
    // nearly all the measured events: every presence event among them is
    // later than the lateness and plays its window again.
    g.bench_function("livetally_warm", |b| {
        b.iter_batched(
            || {
                let mut aggregator = PartitionAggregator::new(AggregatorConfig::default());
                apply_all(&mut aggregator, &warm_up.events, 0);
                aggregator
            },
            |mut aggregator| {
                apply_all(&mut aggregator, &data.events, warm_up.len() as u64);
                aggregator
            },
            BatchSize::LargeInput,
        )
    });
    // The same warm-up a minute earlier, as live traffic leaves a
    // partition: the measured minute follows it, late only as the data set
    // makes 2 % of its events.
    g.bench_function("livetally_steady", |b| {
        b.iter_batched(
            || {
                let mut aggregator = PartitionAggregator::new(AggregatorConfig::default());
                apply_all(&mut aggregator, minute_before, 0);
                aggregator
            },
            |mut aggregator| {
                apply_all(&mut aggregator, &data.events, minute_before.len() as u64);
                aggregator
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("bare_keyed_sum", |b| {
        b.iter_batched(
            HashMap::<&str, KeyedSum>::new,
            |mut sums| {
                keyed_sum(&mut sums, &data.events);
                sums
            },
            BatchSize::LargeInput,
        )
    });
    // Not a limit from the issue: shows how much of the gap to the floor any
    // exactly-once-per-event aggregator pays.
    g.bench_function("bare_keyed_sum_with_dedup", |b| {
        b.iter_batched(
            || (HashMap::<&str, KeyedSum>::new(), HashSet::<u64>::new()),
            |(mut sums, mut seen)| {
                keyed_sum_with_dedup(&mut sums, &mut seen, &data.events);
                (sums, seen)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// livetally's whole per-record path: decode (with the live clock guard), then
/// apply each valid event at its position.
fn decode_and_apply(
    aggregator: &mut PartitionAggregator,
    payloads: &[Vec<u8>],
    content_type: &[u8],
    config: &DecodeConfig,
) {
    for (position, payload) in (0..).zip(payloads) {
        match decode(black_box(payload), Some(content_type), Some(NOW_MS), config) {
            Ok(event) => {
                let _ = black_box(aggregator.apply(&event, position));
            }
            Err(reason) => {
                black_box(reason);
            }
        }
    }
}

fn whole_path(c: &mut Criterion, data: &DataSet) {
    let config = DecodeConfig::default();
    let mut g = group(c, "whole_path", data.len());
    g.bench_function("livetally_json", |b| {
        b.iter_batched(
            || PartitionAggregator::new(AggregatorConfig::default()),
            |mut aggregator| {
                decode_and_apply(&mut aggregator, &data.json, JSON_CONTENT_TYPE, &config);
                aggregator
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("floor_json_serde_derive_keyed_sum", |b| {
        b.iter_batched(
            HashMap::<String, KeyedSum>::new,
            |mut sums| {
                for payload in &data.json {
                    let Ok(event) = serde_json::from_slice::<DerivedEvent>(black_box(payload))
                    else {
                        continue;
                    };
                    // `entry_ref` allocates the key only for a new stream.
                    let sum = sums.entry_ref(event.stream_id.as_str()).or_default();
                    sum.0 += 1;
                    if event.ty == "purchase" {
                        sum.1 += event.quantity.unwrap_or(0) * event.unit_price.unwrap_or(0);
                    }
                }
                sums
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("livetally_protobuf", |b| {
        b.iter_batched(
            || PartitionAggregator::new(AggregatorConfig::default()),
            |mut aggregator| {
                decode_and_apply(
                    &mut aggregator,
                    &data.protobuf,
                    PROTOBUF_CONTENT_TYPE,
                    &config,
                );
                aggregator
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("floor_protobuf_prost_keyed_sum", |b| {
        b.iter_batched(
            HashMap::<String, KeyedSum>::new,
            |mut sums| {
                for payload in &data.protobuf {
                    let Ok(event) = ViewerEvent::decode(black_box(payload.as_slice())) else {
                        continue;
                    };
                    let sum = sums
                        .entry_ref(event.stream_id.as_deref().unwrap_or_default())
                        .or_default();
                    sum.0 += 1;
                    if event.r#type == livetally_proto::v1::EventType::Purchase as i32 {
                        sum.1 += event.quantity.unwrap_or(0) * event.unit_price.unwrap_or(0);
                    }
                }
                sums
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn main() {
    let data = DataSet::build(&DataSetConfig::default());
    // Other events of the same streams, for the warmed aggregator.
    let warm_up = DataSet::build(&DataSetConfig {
        seed: DataSetConfig::default().seed ^ 0x5eed,
        ..DataSetConfig::default()
    });
    let minute_before = warm_up.events_earlier_by(60_000);
    eprintln!(
        "data set: {} events (bench_events() = {}), mean {:.0} B JSON, {:.0} B protobuf",
        data.len(),
        bench_events(),
        data.mean_json_bytes(),
        data.mean_protobuf_bytes(),
    );
    let mut c = Criterion::default().configure_from_args();
    decode_json(&mut c, &data);
    decode_protobuf(&mut c, &data);
    apply(&mut c, &data, &warm_up, &minute_before);
    whole_path(&mut c, &data);
    c.final_summary();
}
