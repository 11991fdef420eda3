//! End to end against a real broker: `gen` → topic → `run` → API, metrics,
//! rollup and dead-letter topics, and `replay` over the same JSON records,
//! all checked figure by figure against an independent reference count.
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::reference::{diff_products, diff_rollup, Reference};
use common::*;
use serde_json::Value;

const EVENTS: usize = 30_000;
const STREAMS: usize = 25;
const REASONS: [&str; 7] = [
    "malformed",
    "missing_field",
    "unknown_type",
    "bad_value",
    "bad_timestamp",
    "too_large",
    "currency_mismatch",
];

#[test]
fn pipeline_matches_the_reference_everywhere() {
    let brokers = brokers();
    let names = Names::new("pipeline");
    create_topic(&brokers, &names.topic, 4);
    let start_ts = (now_ms() - 20 * 60_000).to_string();
    let events = EVENTS.to_string();
    let streams = STREAMS.to_string();
    gen(
        &brokers,
        &names.topic,
        &[
            "--events",
            &events,
            "--streams",
            &streams,
            "--seed",
            "7",
            "--start-ts",
            &start_ts,
            "--format",
            "mixed",
        ],
    );

    let input = read_topic(&brokers, &names.topic);
    assert_eq!(input.len(), EVENTS, "records in the input topic");
    let reference = reference_of(&input);
    check_the_data_exercises_the_contract(&reference, &input);

    replay_matches_a_json_only_reference(&input);

    let mut livetally = Livetally::run(&brokers, &names);
    assert_eq!(livetally.get("/healthz").0, 200, "/healthz");
    let listed = livetally.wait_caught_up(EVENTS as u64);
    assert_eq!(livetally.get("/readyz").0, 200, "/readyz");

    // (a) the API.
    assert_no_problems(
        "GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    check_sorted(&listed, "gmv");
    api_routes_match(&livetally, &reference);

    // Windows: every minute of every stream, summing to the cumulative figures.
    windows_sum_to_the_reference(&livetally, &reference);

    // (e) metrics.
    metrics_match(&livetally, &reference);

    // (f) clean shutdown.
    livetally.stop_cleanly();

    // (b) the rollup topic: newest cumulative rollup per stream.
    let rollups = read_topic(&brokers, &names.rollup);
    let (latest, problems) = latest_rollups(&rollups, true);
    assert_no_problems("rollup topic records", &problems);
    assert_no_problems(
        "rollup topic vs reference",
        &reference.diff_streams(&latest),
    );

    // The rollup topic's windows: the newest revision of each sums to the
    // cumulative reference too.
    let mut windows: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for record in &rollups {
        let w = record.json();
        if w["kind"] != "window" {
            continue;
        }
        let key = window_key(&w);
        let newer = windows
            .get(&key)
            .is_none_or(|old| old["revision"].as_u64() < w["revision"].as_u64());
        if newer {
            windows.insert(key, w);
        }
    }
    for (id, stream) in &reference.streams {
        let mine: Vec<Value> = windows
            .iter()
            .filter(|((s, _), _)| s == id)
            .map(|(_, w)| w.clone())
            .collect();
        assert_no_problems(
            &format!("rollup topic windows of {id}"),
            &window_sum_problems(id, &stream.expected(id), &mine),
        );
    }

    // (d) the dead-letter topic.
    let dlq = read_topic(&brokers, &names.dlq);
    assert_no_problems(
        "dead-letter topic vs reference",
        &check_dead_letters(&dlq, &input, &reference, &names.topic, true),
    );
    assert_eq!(
        dlq.len() as u64,
        reference.invalid().len() as u64,
        "dead letters"
    );
}

/// Guards against a silently weak test: the generated data must hold every
/// kind of record the assertions are about.
fn check_the_data_exercises_the_contract(reference: &Reference, input: &[Record]) {
    let invalid = reference.invalid_by_reason();
    eprintln!(
        "reference: {} records, {} counted, {} duplicates, invalid {invalid:?}, {} streams",
        input.len(),
        reference.counted(),
        reference.duplicates(),
        reference.streams.len()
    );
    for reason in [
        "malformed",
        "missing_field",
        "unknown_type",
        "bad_value",
        "bad_timestamp",
    ] {
        assert!(
            invalid.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} record in the data: {invalid:?}"
        );
    }
    assert!(
        reference.duplicates() > 100,
        "too few duplicates: {}",
        reference.duplicates()
    );
    let json = reference.json.values().filter(|j| **j).count();
    assert!(
        json > EVENTS / 4 && json < EVENTS * 3 / 4,
        "JSON records {json} of {EVENTS}: not a mix"
    );
    let unlabelled = input.iter().filter(|r| r.content_type().is_none()).count();
    assert!(
        unlabelled > 100,
        "only {unlabelled} records without content-type"
    );
    assert!(
        reference.streams.len() >= STREAMS - 5,
        "only {} streams",
        reference.streams.len()
    );
    let all = |f: fn(&Value) -> bool| {
        reference
            .streams
            .iter()
            .filter(|(id, s)| f(&s.expected(id)))
            .count()
    };
    assert!(
        all(|r| r["refunds"].as_i64().unwrap_or(0) > 0) > 0,
        "no refunds in the data"
    );
    assert!(
        all(|r| r["orders"].as_u64().unwrap_or(0) > 0) > 5,
        "too few streams with orders"
    );
    assert!(
        all(|r| r["ctr"].is_null()) < STREAMS,
        "ratios never defined"
    );
}

/// `livetally replay` over the JSON records (in input order) equals the
/// reference over the same records.
fn replay_matches_a_json_only_reference(input: &[Record]) {
    let mut reference = Reference::default();
    let path = std::env::temp_dir().join(format!("{}.ndjson", unique("livetally-replay")));
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&path).expect("create the NDJSON file"));
    let mut line = 0i64;
    for r in input {
        let payload = r.payload.as_deref().unwrap_or_default();
        let json = common::reference::is_json(r.payload.as_deref(), r.content_type());
        // A line break inside a (random-bytes) payload cannot be one NDJSON line.
        if !json
            || payload.contains(&b'\n')
            || payload.contains(&b'\r')
            || payload.iter().all(u8::is_ascii_whitespace)
        {
            continue;
        }
        file.write_all(payload)
            .and_then(|()| file.write_all(b"\n"))
            .expect("write NDJSON");
        line += 1;
        reference.add(0, line, Some(payload), Some(b"application/json"));
    }
    file.flush().expect("flush NDJSON");
    drop(file);
    let (rollups, summary) = replay(&path);
    let _ = std::fs::remove_file(&path);
    eprintln!("replay of {line} JSON lines: {summary}");
    assert_no_problems(
        "replay vs JSON-only reference",
        &reference.diff_streams(&rollups),
    );
    let ids: Vec<&str> = rollups
        .iter()
        .map(|r| r["stream_id"].as_str().unwrap_or_default())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "replay output sorted by stream_id");
    assert_eq!(summary["records"], line, "replay summary: records");
    assert_eq!(
        summary["valid"],
        reference.counted(),
        "replay summary: valid"
    );
    assert_eq!(
        summary["duplicates"],
        reference.duplicates(),
        "replay summary: duplicates"
    );
    assert_eq!(
        summary["streams"],
        reference.streams.len() as u64,
        "replay summary: streams"
    );
    let invalid = reference.invalid_by_reason();
    for reason in REASONS {
        let want = invalid.get(reason).copied().unwrap_or(0);
        assert_eq!(
            summary["invalid"][reason], want,
            "replay summary: invalid {reason}"
        );
    }
}

/// Every route of the read API against the reference.
fn api_routes_match(livetally: &Livetally, reference: &Reference) {
    for (id, stream) in &reference.streams {
        let (status, rollup) = livetally.get_json(&format!("/v1/streams/{id}"));
        assert_eq!(status, 200, "/v1/streams/{id}: {rollup}");
        assert_no_problems(
            &format!("GET /v1/streams/{id}"),
            &diff_rollup(&stream.expected(id), &rollup),
        );

        let (status, body) = livetally.get_json(&format!("/v1/streams/{id}/products?limit=1000"));
        assert_eq!(status, 200, "/v1/streams/{id}/products: {body}");
        let products = body["products"].as_array().cloned().unwrap_or_default();
        assert_no_problems(
            &format!("GET /v1/streams/{id}/products"),
            &diff_products(id, stream, &products),
        );
        let gmv: Vec<i64> = products
            .iter()
            .map(|p| p["gmv"].as_i64().unwrap_or(0))
            .collect();
        assert!(
            gmv.windows(2).all(|w| w[0] >= w[1]),
            "{id}: products not by gmv descending: {gmv:?}"
        );
    }

    for sort in ["views", "orders", "gmv"] {
        let (status, body) = livetally.get_json(&format!("/v1/streams?limit=1000&sort={sort}"));
        assert_eq!(status, 200, "sort={sort}: {body}");
        check_sorted(body["streams"].as_array().expect("streams"), sort);
    }
    let (status, body) = livetally.get_json("/v1/streams?limit=3");
    assert_eq!(status, 200);
    assert_eq!(body["streams"].as_array().map(Vec::len), Some(3), "limit=3");

    let (status, body) = livetally.get_json("/v1/streams/no-such-stream");
    assert_eq!(status, 404, "unknown stream: {body}");
    assert!(
        body["error"].is_string(),
        "unknown stream: JSON error expected, got {body}"
    );
    let (status, body) = livetally.get_json("/v1/streams/no-such-stream/products");
    assert_eq!(status, 404, "products of an unknown stream: {body}");
    assert!(
        body["error"].is_string(),
        "products of an unknown stream: {body}"
    );
    let (status, body) = livetally.get_json("/v1/streams?sort=price");
    assert_eq!(status, 400, "bad sort: {body}");
    assert!(
        body["error"].is_string(),
        "bad sort: JSON error expected, got {body}"
    );
    let (status, body) = livetally.get_json("/v1/streams?limit=-1");
    assert_eq!(status, 400, "bad limit: {body}");
    assert!(body["error"].is_string(), "bad limit: {body}");
}

/// `streams` is in descending order of `field`.
fn check_sorted(streams: &[Value], field: &str) {
    let values: Vec<i64> = streams
        .iter()
        .map(|s| s[field].as_i64().unwrap_or(i64::MIN))
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "streams not sorted by {field} descending: {values:?}"
    );
}

/// `/metrics` counts the same records as the reference.
fn metrics_match(livetally: &Livetally, reference: &Reference) {
    let (status, text) = livetally.get("/metrics");
    assert_eq!(status, 200, "/metrics");
    let sample = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics:\n{text}")) as u64
    };
    assert_eq!(
        sample("livetally_events_consumed_total", &[]),
        EVENTS as u64,
        "events consumed"
    );
    assert_eq!(
        sample("livetally_events_duplicate_total", &[]),
        reference.duplicates(),
        "duplicates"
    );
    let invalid = reference.invalid_by_reason();
    for reason in REASONS {
        let want = invalid.get(reason).copied().unwrap_or(0);
        assert_eq!(
            sample("livetally_events_invalid_total", &[("reason", reason)]),
            want,
            "invalid {reason}"
        );
    }
    let dead = reference.invalid().len() as u64;
    assert_eq!(
        sample("livetally_dead_letters_total", &[]),
        dead,
        "dead letters written"
    );
    // Every counted stream's state went to the changelog at least once.
    assert!(
        sample("livetally_changelog_bytes_total", &[]) >= reference.streams.len() as u64 * 50,
        "changelog bytes"
    );
}

/// The figures that add up across windows.
const ADDITIVE: [&str; 14] = [
    "views",
    "impressions",
    "clicks",
    "add_to_carts",
    "likes",
    "comments",
    "shares",
    "follows",
    "items_sold",
    "gmv",
    "refunds",
    "net_gmv",
    "orders",
    "unique_viewers",
];

/// Sums of window figures against the cumulative ones. Counts and money must
/// be equal; `orders` and `unique_viewers` can only be at least the
/// cumulative value (an order or viewer may span two windows).
fn window_sum_problems(id: &str, expected: &Value, windows: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    if windows.is_empty() {
        problems.push(format!("{id}: no windows"));
    }
    for w in windows {
        let (start, end) = (w["window_start"].as_i64(), w["window_end"].as_i64());
        if w["kind"] != "window"
            || start.is_none()
            || end.zip(start).map(|(e, s)| e - s) != Some(60_000)
        {
            problems.push(format!("{id}: bad window {w}"));
        }
        if start.is_some_and(|s| s % 60_000 != 0) {
            problems.push(format!("{id}: window not aligned to the minute: {w}"));
        }
    }
    for field in ADDITIVE {
        let sum: i64 = windows.iter().map(|w| w[field].as_i64().unwrap_or(0)).sum();
        let total = expected[field].as_i64().unwrap_or(0);
        let ok = if matches!(field, "orders" | "unique_viewers") {
            sum >= total
        } else {
            sum == total
        };
        if !ok {
            problems.push(format!(
                "{id}: windows sum {field} = {sum}, cumulative {total}"
            ));
        }
    }
    problems
}

fn windows_sum_to_the_reference(livetally: &Livetally, reference: &Reference) {
    for (id, stream) in &reference.streams {
        let (status, body) = livetally.get_json(&format!("/v1/streams/{id}/windows"));
        assert_eq!(status, 200, "/v1/streams/{id}/windows: {body}");
        let windows = body["windows"].as_array().cloned().unwrap_or_default();
        assert_no_problems(
            &format!("GET /v1/streams/{id}/windows"),
            &window_sum_problems(id, &stream.expected(id), &windows),
        );
        // from/to select by overlap.
        if let Some(first) = windows.first() {
            let start = first["window_start"].as_i64().unwrap_or_default();
            let (_, one) = livetally.get_json(&format!(
                "/v1/streams/{id}/windows?from={start}&to={}",
                start + 1
            ));
            assert_eq!(
                one["windows"].as_array().map(Vec::len),
                Some(1),
                "{id}: from/to"
            );
        }
    }
    let (status, body) = livetally.get_json("/v1/streams/nope/windows");
    assert_eq!(status, 404, "windows of an unknown stream: {body}");
}

/// Dashboards can move faster than the rollup topic is written: with
/// `--live-interval-ms`, the API shows each change within a live interval,
/// while the topic gets the newest rollup of each key once per publish
/// interval (here, one that does not pass before the shutdown's drain).
#[test]
fn the_api_moves_every_live_interval_and_the_topic_every_publication() {
    let brokers = brokers();
    let names = Names::new("live-interval");
    create_topic(&brokers, &names.topic, 1);
    let mut args = run_args(&brokers, &names);
    args.extend([
        "--live-interval-ms",
        "20",
        "--publish-interval-ms",
        "600000",
    ]);
    let mut livetally = Livetally::spawn(&args);
    let view = |id: &str, viewer: &str| Outgoing {
        key: Some(b"live-9".to_vec()),
        payload: Some(
            serde_json::json!({"event_id": id, "type": "view", "stream_id": "live-9",
                               "viewer_id": viewer, "ts": now_ms()})
            .to_string()
            .into_bytes(),
        ),
        headers: Vec::new(),
    };
    let revision_with_views = |views: u64| {
        wait_for(
            &format!("{views} views on the API"),
            Duration::from_secs(60),
            || {
                let (status, body) = livetally.get_json("/v1/streams/live-9");
                match body["revision"].as_u64() {
                    Some(revision) if status == 200 && body["views"] == views => Ok(revision),
                    _ => Err(format!("{status} {body}")),
                }
            },
        )
    };
    produce(&brokers, &names.topic, &[view("e1", "a")]);
    let first = revision_with_views(1);
    produce(&brokers, &names.topic, &[view("e2", "b")]);
    let second = revision_with_views(2);
    assert!(second > first, "revisions {first} then {second}");
    assert!(
        read_topic(&brokers, &names.rollup).is_empty(),
        "the rollup topic was written before its publish interval passed"
    );

    livetally.stop_cleanly();
    let records = read_topic(&brokers, &names.rollup);
    let rollups: Vec<Value> = records.iter().map(|r| r.json()).collect();
    let cumulative: Vec<&Value> = rollups
        .iter()
        .filter(|r| r["kind"] == "cumulative")
        .collect();
    // The drain wrote the newest, once: the revision the API showed last.
    assert_eq!(cumulative.len(), 1, "{rollups:?}");
    assert_eq!(cumulative[0]["views"], 2);
    assert_eq!(cumulative[0]["revision"], second);
    assert!(
        rollups.iter().any(|r| r["kind"] == "window"),
        "its window too: {rollups:?}"
    );
}

/// An input offset is stored as soon as the broker acknowledged the
/// publication covering it, not at the partition's next tick: with a 10 s
/// publish interval, it is committed well before the next publication.
#[test]
fn an_offset_is_committed_once_its_publication_is_acknowledged() {
    let brokers = brokers();
    let names = Names::new("acknowledged");
    create_topic(&brokers, &names.topic, 1);
    let mut args = run_args(&brokers, &names);
    args.extend([
        "--publish-interval-ms",
        "10000",
        "--checkpoint-interval-ms",
        "10000",
    ]);
    let mut livetally = Livetally::spawn(&args);
    let view = serde_json::json!({"event_id": "e1", "type": "view", "stream_id": "live-1",
                                  "viewer_id": "a", "ts": now_ms()});
    produce(
        &brokers,
        &names.topic,
        &[Outgoing {
            key: Some(b"live-1".to_vec()),
            payload: Some(view.to_string().into_bytes()),
            headers: Vec::new(),
        }],
    );
    wait_for("the rollup on its topic", DEADLINE, || {
        let records = read_topic(&brokers, &names.rollup);
        if records.is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(())
        }
    });
    // The next tick is 10 s away; auto-commit runs every second.
    wait_for("the offset committed", Duration::from_secs(5), || {
        let committed = committed_offsets(&brokers, &names.topic, &names.group);
        if committed.get(&0) == Some(&Some(1)) {
            Ok(())
        } else {
            Err(format!("committed {committed:?}"))
        }
    });
    livetally.stop_cleanly();
}
