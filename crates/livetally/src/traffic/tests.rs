//! The generator's promises, checked against the real decoder.

use std::collections::{HashMap, HashSet, VecDeque};

use livetally_aggregator::{Action, Event, EventType, InvalidReason};
use livetally_ingest::{decode, DecodeConfig};

use super::wire::{self, Spec, Wire};
use super::{events, Format, Record, RecordKind, Traffic, TrafficConfig, DUPLICATE_WINDOW};

fn config(seed: u64, format: Format) -> TrafficConfig {
    TrafficConfig {
        seed,
        format,
        ..TrafficConfig::default()
    }
}

fn decoded(record: &Record) -> Result<Event<'_>, InvalidReason> {
    decode(
        &record.payload,
        record.content_type.map(str::as_bytes),
        None,
        &DecodeConfig::default(),
    )
}

#[test]
fn same_config_same_records_other_seed_other_records() {
    let first: Vec<Record> = Traffic::new(config(7, Format::Mixed))
        .take(10_000)
        .collect();
    let again: Vec<Record> = Traffic::new(config(7, Format::Mixed))
        .take(10_000)
        .collect();
    assert!(first == again, "same config must give identical records");
    let other: Vec<Record> = Traffic::new(config(8, Format::Mixed))
        .take(10_000)
        .collect();
    let same = first.iter().zip(&other).filter(|(a, b)| a == b).count();
    assert!(
        same < 100,
        "a different seed must give different records ({same} equal)"
    );
}

#[test]
fn every_record_decodes_as_its_kind_says() {
    for format in [Format::Json, Format::Protobuf, Format::Mixed] {
        let mut reasons = HashMap::new();
        let mut kinds = [0usize; 3];
        let mut unlabelled = 0;
        for (i, record) in Traffic::new(config(42, format)).take(100_000).enumerate() {
            let got = decoded(&record).map(|_| ());
            match record.kind {
                RecordKind::Valid | RecordKind::Duplicate => {
                    assert_eq!(
                        got,
                        Ok(()),
                        "{format:?} record {i}: {:?}",
                        String::from_utf8_lossy(&record.payload)
                    );
                    kinds[usize::from(record.kind == RecordKind::Duplicate)] += 1;
                }
                RecordKind::Invalid(reason) => {
                    assert_eq!(
                        got,
                        Err(reason),
                        "{format:?} record {i}: {:?}",
                        String::from_utf8_lossy(&record.payload)
                    );
                    *reasons.entry(reason).or_insert(0) += 1;
                    kinds[2] += 1;
                }
            }
            unlabelled += usize::from(record.content_type.is_none());
            assert!(record.key.starts_with(b"live-"), "key {:?}", record.key);
        }
        for reason in [
            InvalidReason::Malformed,
            InvalidReason::MissingField,
            InvalidReason::UnknownType,
            InvalidReason::BadValue,
            InvalidReason::BadTimestamp,
        ] {
            assert!(
                reasons.contains_key(&reason),
                "{format:?}: no {reason} record in {reasons:?}"
            );
        }
        // 2 % duplicates and 0.5 % invalid, with sampling slack.
        assert!(
            (1_500..2_500).contains(&kinds[1]),
            "{format:?}: {} duplicates",
            kinds[1]
        );
        assert!(
            (350..650).contains(&kinds[2]),
            "{format:?}: {} invalid",
            kinds[2]
        );
        assert!(
            (18_000..22_000).contains(&unlabelled),
            "{format:?}: {unlabelled} unlabelled"
        );
    }
}

/// `gen --out` writes one record a line: no record may hold a newline, not
/// even random bytes (which did, so a file held more lines than records).
#[test]
fn no_record_holds_a_newline() {
    let records = Traffic::new(TrafficConfig {
        invalid_rate: 0.1,
        ..config(23, Format::Json)
    })
    .take(100_000);
    let mut malformed = 0;
    for record in records {
        assert!(
            !record.payload.contains(&b'\n'),
            "{:?}",
            String::from_utf8_lossy(&record.payload)
        );
        malformed += usize::from(record.kind == RecordKind::Invalid(InvalidReason::Malformed));
    }
    assert!(malformed > 1_000, "{malformed} malformed records");
}

#[test]
fn the_key_is_the_stream_id() {
    for record in Traffic::new(config(3, Format::Mixed)).take(20_000) {
        if let Ok(event) = decoded(&record) {
            assert_eq!(record.key, event.stream_id.as_bytes());
        }
    }
}

#[test]
fn duplicates_are_copies_of_recent_valid_records_and_ids_are_unique() {
    let mut recent: VecDeque<Record> = VecDeque::with_capacity(DUPLICATE_WINDOW);
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    for record in Traffic::new(config(11, Format::Mixed)).take(100_000) {
        match record.kind {
            RecordKind::Valid => {
                let event = decoded(&record).expect("valid records decode");
                let id = event.event_id.into_owned();
                assert!((16..=32).contains(&id.len()), "event_id {id}");
                assert!(ids.insert(id.clone()), "event_id {id} reused");
                if recent.len() == DUPLICATE_WINDOW {
                    recent.pop_front();
                }
                recent.push_back(Record {
                    kind: RecordKind::Duplicate,
                    ..record
                });
            }
            RecordKind::Duplicate => {
                duplicates += 1;
                assert!(
                    recent.contains(&record),
                    "duplicate of no recent valid record"
                );
            }
            RecordKind::Invalid(_) => {}
        }
    }
    assert!(duplicates > 1000);
}

#[test]
fn two_seeds_share_no_event_id() {
    let ids = |seed| -> HashSet<String> {
        events(config(seed, Format::Json))
            .take(5_000)
            .map(|e| e.event_id.into_owned())
            .collect()
    };
    assert!(ids(1).is_disjoint(&ids(2)));
}

#[test]
fn the_funnel_is_plausible() {
    let mut by_type: HashMap<EventType, usize> = HashMap::new();
    let mut by_stream: HashMap<String, usize> = HashMap::new();
    let mut lines_per_order: HashMap<String, usize> = HashMap::new();
    let mut currencies = HashSet::new();
    let mut viewers = HashSet::new();
    let mut purchases: HashMap<(String, String), (i64, livetally_aggregator::Currency)> =
        HashMap::new();
    let mut refunds = Vec::new();
    for record in Traffic::new(config(5, Format::Json)).take(200_000) {
        if record.kind != RecordKind::Valid {
            continue;
        }
        let event = decoded(&record).expect("valid").into_owned();
        *by_type.entry(event.action.event_type()).or_default() += 1;
        *by_stream.entry(event.stream_id.to_string()).or_default() += 1;
        viewers.insert(event.viewer_id.to_string());
        match &event.action {
            Action::Purchase(line) => {
                *lines_per_order
                    .entry(line.order_id.to_string())
                    .or_default() += 1;
                currencies.insert(line.currency);
                assert!((1..=3).contains(&line.quantity));
                assert!(line.unit_price > 0);
                purchases.insert(
                    (line.order_id.to_string(), line.product_id.to_string()),
                    (line.unit_price, line.currency),
                );
            }
            Action::Refund(line) => refunds.push(line.clone()),
            _ => {}
        }
    }
    let n = |t| by_type.get(&t).copied().unwrap_or(0);
    let (views, impressions, clicks) = (
        n(EventType::View),
        n(EventType::Impression),
        n(EventType::Click),
    );
    let (carts, buys) = (n(EventType::AddToCart), n(EventType::Purchase));
    assert!(views > impressions / 10, "{by_type:?}");
    assert!(clicks < impressions, "{by_type:?}");
    assert!(carts < clicks, "{by_type:?}");
    assert!(buys < carts, "{by_type:?}");
    assert!(buys > 0 && n(EventType::Leave) > views / 2, "{by_type:?}");
    for t in [
        EventType::Like,
        EventType::Comment,
        EventType::Share,
        EventType::Follow,
    ] {
        assert!(n(t) > 0, "no {t:?}: {by_type:?}");
    }
    // CTR around 8 %.
    let ctr = clicks as f64 / impressions as f64;
    assert!((0.06..0.10).contains(&ctr), "ctr {ctr}");

    // Refunds repeat a purchased line: same order, product, price, currency.
    assert!(!refunds.is_empty(), "no refunds: {by_type:?}");
    for line in &refunds {
        let bought = purchases.get(&(line.order_id.to_string(), line.product_id.to_string()));
        assert_eq!(
            bought,
            Some(&(line.unit_price, line.currency)),
            "refund of no purchase: {line:?}"
        );
    }
    let multi = lines_per_order.values().filter(|&&lines| lines > 1).count();
    assert!(multi > 0, "no multi-line orders");
    assert!(lines_per_order.values().all(|&lines| lines <= 3));
    assert!(currencies.len() >= 3, "{currencies:?}");
    assert!(viewers.len() > 10_000, "{} viewers", viewers.len());

    let mut sizes: Vec<usize> = by_stream.values().copied().collect();
    sizes.sort_unstable();
    let (top, median) = (sizes[sizes.len() - 1], sizes[sizes.len() / 2]);
    assert!(
        top > 20 * median,
        "top stream {top} events, median {median}"
    );
}

#[test]
fn event_time_advances_at_the_configured_density() {
    let cfg = TrafficConfig {
        events_per_second: 500,
        ..config(9, Format::Json)
    };
    let start = cfg.start_ts;
    let mut late = 0;
    let mut last = 0;
    let total = 100_000;
    for (i, record) in Traffic::new(cfg).take(total).enumerate() {
        let Ok(event) = decoded(&record) else {
            continue;
        };
        if i == 0 {
            assert_eq!(event.ts, start);
        }
        assert!(
            event.ts >= start - 60_000,
            "ts {} before start − 60 s",
            event.ts
        );
        // 500 ev/s → 2 ms per record, plus at most 2 ms of jitter.
        let expected = start + 2 * i as i64;
        assert!(
            event.ts <= expected + 2,
            "record {i} at {} ahead of {expected}",
            event.ts
        );
        if record.kind == RecordKind::Valid {
            late += usize::from(event.ts < expected - 500);
            last = event.ts;
        }
    }
    // ~1 % of valid events are late.
    assert!((700..1_300).contains(&late), "{late} late events");
    assert!((last - start - 2 * total as i64).abs() < 70_000);
}

#[test]
fn events_match_the_decoded_records() {
    let cfg = config(13, Format::Mixed);
    let from_records: Vec<Event<'static>> = Traffic::new(cfg.clone())
        .take(20_000)
        .filter(|r| !matches!(r.kind, RecordKind::Invalid(_)))
        .map(|r| decoded(&r).expect("decodes").into_owned())
        .collect();
    let direct: Vec<Event<'static>> = events(cfg).take(from_records.len()).collect();
    assert!(from_records == direct);
}

#[test]
fn hand_encoders_write_what_the_ingest_encoders_write() {
    let mut traffic = Traffic::new(config(17, Format::Mixed));
    let mut compared = 0;
    for _ in 0..20_000 {
        let super::Item::Valid(spec, wire) = traffic.next_item() else {
            continue;
        };
        if wire.ts_text {
            continue;
        }
        let event = wire::to_event(&spec, &traffic.tag);
        let reference = if wire.protobuf {
            livetally_ingest::encode::to_protobuf(&event)
        } else {
            livetally_ingest::encode::to_json(&event)
        };
        let mut ours = Vec::new();
        wire::encode(&spec, wire, &traffic.tag, &mut ours);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&reference)
        );
        compared += 1;
    }
    assert!(compared > 15_000);
}

#[test]
fn rfc3339_timestamps_round_trip() {
    let spec = |ts| Spec {
        id: 1,
        ty: EventType::View,
        stream: 1,
        viewer: 1,
        ts,
        seller: None,
        product: 0,
        order: 0,
        quantity: 0,
        unit_price: 0,
        currency: livetally_aggregator::Currency(*b"USD"),
    };
    let mut times = vec![
        0,
        1,
        999,
        86_399_999,
        951_782_400_000,
        1_709_164_800_123,
        1_764_115_200_000,
        253_402_300_799_999,
    ];
    let mut x = 1u64;
    times
        .extend((0..10_000).map(|_| (super::rng::splitmix64(&mut x) % 253_402_300_800_000) as i64));
    for ts in times {
        for protobuf in [false, true] {
            let mut out = Vec::new();
            wire::encode(
                &spec(ts),
                Wire {
                    protobuf,
                    ts_text: true,
                    labelled: true,
                },
                b"00000000",
                &mut out,
            );
            let ct = if protobuf {
                super::PROTOBUF
            } else {
                super::JSON
            };
            let event = decode(&out, Some(ct.as_bytes()), None, &DecodeConfig::default())
                .unwrap_or_else(|r| panic!("{ts}: {r} {:?}", String::from_utf8_lossy(&out)));
            assert_eq!(event.ts, ts, "{:?}", String::from_utf8_lossy(&out));
        }
    }
}

#[test]
fn rates_of_zero_give_only_valid_records() {
    let cfg = TrafficConfig {
        duplicate_rate: 0.0,
        invalid_rate: 0.0,
        late_rate: 0.0,
        ..config(1, Format::Protobuf)
    };
    assert!(Traffic::new(cfg)
        .take(20_000)
        .all(|r| r.kind == RecordKind::Valid));
}

#[test]
fn tiny_and_huge_configs_work() {
    let tiny = TrafficConfig {
        streams: 0,
        products_per_stream: 0,
        events_per_second: 0,
        ..config(1, Format::Mixed)
    };
    for record in Traffic::new(tiny).take(5_000) {
        if record.kind == RecordKind::Valid {
            decoded(&record).expect("valid");
        }
    }
    let huge = TrafficConfig {
        streams: 100_000,
        products_per_stream: 200,
        ..config(1, Format::Json)
    };
    assert_eq!(Traffic::new(huge).take(5_000).count(), 5_000);
}
