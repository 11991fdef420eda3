//! Streams that end, against a real broker: `run` finalises idle streams,
//! packs them once their final rollup is checkpointed, reopens them from
//! their figures when a late event arrives (a refund days later, a viewer
//! back), and keeps all of that across a SIGKILL and a restore. And streams
//! that do not: a pause in a backlog of old events ends none of them.
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use std::time::Duration;

use common::reference::{diff_products, Reference};
use common::*;
use serde_json::{json, Value};

/// Streams that end before the late events.
const ENDED: usize = 8;

/// Idle streams end after 10 minutes of event time, windows are kept one
/// minute, a quiet partition's event time moves on after 1 s, and
/// checkpoints follow every half second (publications every 200 ms, the
/// harness's setting).
const FLAGS: [&str; 8] = [
    "--idle-timeout-ms",
    "600000",
    "--window-retention-ms",
    "60000",
    "--idle-partition-ms",
    "1000",
    "--checkpoint-interval-ms",
    "500",
];

fn record(event: Value) -> Outgoing {
    Outgoing {
        key: Some(
            event["stream_id"]
                .as_str()
                .expect("stream_id")
                .as_bytes()
                .to_vec(),
        ),
        payload: Some(serde_json::to_vec(&event).expect("JSON")),
        headers: vec![("content-type".into(), Some(b"application/json".to_vec()))],
    }
}

fn purchase(id: &str, stream: &str, viewer: &str, ts: i64, order: &str, currency: &str) -> Value {
    json!({"event_id": id, "type": "purchase", "stream_id": stream, "viewer_id": viewer,
           "ts": ts, "product_id": "p1", "order_id": order, "quantity": 2,
           "unit_price": 1999, "currency": currency})
}

/// A 50-second show per stream: four viewers come, see and click product
/// cards, two buy, and all leave.
fn shows(t0: i64) -> Vec<Outgoing> {
    let mut events = Vec::new();
    for n in 0..ENDED {
        let stream = format!("end-{n}");
        let id = |what: &str| format!("{stream}-{what}");
        for v in 0..4 {
            let viewer = format!("v{v}");
            let ts = t0 + 1_000 * v;
            events.push(json!({"event_id": id(&format!("view-{v}")), "type": "view",
                "stream_id": stream, "viewer_id": viewer, "ts": ts, "seller_id": "shop-1"}));
            events.push(
                json!({"event_id": id(&format!("imp-{v}")), "type": "impression",
                "stream_id": stream, "viewer_id": viewer, "ts": ts + 5_000, "product_id": "p1"}),
            );
            events.push(
                json!({"event_id": id(&format!("click-{v}")), "type": "click",
                "stream_id": stream, "viewer_id": viewer, "ts": ts + 6_000, "product_id": "p1"}),
            );
            events.push(
                json!({"event_id": id(&format!("leave-{v}")), "type": "leave",
                "stream_id": stream, "viewer_id": viewer, "ts": t0 + 50_000 + v}),
            );
        }
        events.push(purchase(
            &id("buy-0"),
            &stream,
            "v0",
            t0 + 20_000,
            &id("o0"),
            "USD",
        ));
        events.push(purchase(
            &id("buy-1"),
            &stream,
            "v1",
            t0 + 30_000,
            &id("o1"),
            "USD",
        ));
    }
    events.into_iter().map(record).collect()
}

/// Differences between `rollups` and the reference. A final rollup has
/// nobody in the room (the stream ended, whatever its viewers' last
/// presence events): its `concurrent_viewers` must be 0, and the rest is
/// compared with the reference, which knows nothing of endings.
fn diff_ended(reference: &Reference, rollups: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = rollups.to_vec();
    for rollup in &mut seen {
        let id = rollup["stream_id"].as_str().unwrap_or_default().to_owned();
        if rollup["final"] != true {
            continue;
        }
        if rollup["concurrent_viewers"] != 0 {
            problems.push(format!(
                "{id}: final with {} viewers",
                rollup["concurrent_viewers"]
            ));
        }
        if let Some(stream) = reference.streams.get(&id) {
            rollup["concurrent_viewers"] = stream.expected(&id)["concurrent_viewers"].clone();
        }
    }
    problems.extend(reference.diff_streams(&seen));
    problems
}

/// `/v1/streams` agrees with the reference over `input`, products too.
fn figures_match(livetally: &Livetally, input: &[Record], phase: &str) -> Reference {
    let reference = reference_of(input);
    let problems = wait_for(phase, DEADLINE, || {
        let problems = diff_ended(&reference, &livetally.streams());
        if problems.is_empty() {
            Ok(problems)
        } else {
            Err(problems.join("\n"))
        }
    });
    assert_no_problems(phase, &problems);
    let mut problems = Vec::new();
    for (id, stream) in &reference.streams {
        let (_, body) = livetally.get_json(&format!("/v1/streams/{id}/products?limit=100"));
        let products = body["products"].as_array().cloned().unwrap_or_default();
        problems.extend(diff_products(id, stream, &products));
    }
    assert_no_problems(&format!("{phase}: products"), &problems);
    reference
}

/// Waits until every stream of the shows is final on `/v1/streams`.
fn wait_all_final(livetally: &Livetally, what: &str) {
    wait_for(what, DEADLINE, || {
        let streams = livetally.streams();
        let finals = streams.iter().filter(|s| s["final"] == true).count();
        (finals == ENDED)
            .then_some(())
            .ok_or(format!("{finals} final: {streams:?}"))
    });
}

fn packed(livetally: &Livetally) -> f64 {
    livetally
        .metric("livetally_streams_packed", &[("partition", "0")])
        .unwrap_or(0.0)
}

#[test]
fn ended_streams_are_packed_reopen_from_their_figures_and_survive_kill9() {
    let brokers = brokers();
    let names = Names::new("ended");
    create_topic(&brokers, &names.topic, 1);
    let t0 = (now_ms() - 40 * 60_000) / 60_000 * 60_000;

    // The shows, 40 minutes ago, then a viewer of another stream now: the
    // partition's event time is 40 minutes past the shows, which have all
    // ended.
    let mut first = Livetally::run_with(&brokers, &names, &FLAGS);
    let mut events = shows(t0);
    events.push(record(
        json!({"event_id": "c-0", "type": "view", "stream_id": "clock",
            "viewer_id": "c", "ts": now_ms()}),
    ));
    produce(&brokers, &names.topic, &events);
    let input = read_topic(&brokers, &names.topic);
    first.wait_caught_up(input.len() as u64);
    wait_all_final(&first, "final rollups");
    figures_match(&first, &input, "ended");

    // Their final rollups checkpointed, a minute more of event time packs
    // them: one viewer of another stream, a minute ahead of the wall clock.
    std::thread::sleep(Duration::from_secs(2));
    let ahead = now_ms() + 70_000;
    produce(
        &brokers,
        &names.topic,
        &[record(
            json!({"event_id": "c-1", "type": "view", "stream_id": "clock",
            "viewer_id": "c", "ts": ahead}),
        )],
    );
    wait_for("ended streams packed", DEADLINE, || {
        let packed = packed(&first);
        (packed == ENDED as f64)
            .then_some(())
            .ok_or(format!("{packed} packed"))
    });

    // Late events for packed streams: a refund, a purchase, a viewer back,
    // and one in the wrong currency (invalid, changes nothing).
    let late = [
        json!({"event_id": "late-refund", "type": "refund", "stream_id": "end-0",
            "viewer_id": "v0", "ts": t0 + 40_000, "product_id": "p1",
            "order_id": "end-0-o0", "quantity": 1, "unit_price": 1999, "currency": "USD"}),
        purchase("late-buy", "end-1", "v9", t0 + 55_000, "end-1-o9", "USD"),
        json!({"event_id": "late-view", "type": "view", "stream_id": "end-2",
            "viewer_id": "v8", "ts": t0 + 56_000}),
        purchase("late-eur", "end-3", "v0", t0 + 57_000, "end-3-o9", "EUR"),
    ];
    produce(&brokers, &names.topic, &late.map(record));
    let input = read_topic(&brokers, &names.topic);
    first.wait_caught_up(input.len() as u64);
    let reference = figures_match(&first, &input, "late events into packed streams");
    assert_eq!(
        reference.invalid_by_reason().get("currency_mismatch"),
        Some(&1)
    );
    let end0 = first.get_json("/v1/streams/end-0").1;
    assert_eq!(
        (end0["refunds"].as_i64(), end0["gmv"].as_i64()),
        (Some(1999), Some(4 * 1999))
    );

    // SIGKILL, then a new instance restores every stream from the changelog.
    first.kill9();
    // Its first idle scan ends again the three streams the late events
    // reopened: no event for them in 10 minutes of event time.
    let second = Livetally::run_with(&brokers, &names, &FLAGS);
    figures_match(&second, &input, "after kill -9");
    wait_all_final(&second, "reopened streams ended again");
    wait_for("restored ended streams packed", DEADLINE, || {
        let packed = packed(&second);
        (packed >= (ENDED - 3) as f64)
            .then_some(())
            .ok_or(format!("{packed} packed"))
    });

    // A late refund into a stream restored packed.
    let refund = json!({"event_id": "late-refund-5", "type": "refund", "stream_id": "end-5",
        "viewer_id": "v1", "ts": t0 + 45_000, "product_id": "p1",
        "order_id": "end-5-o1", "quantity": 2, "unit_price": 1999, "currency": "USD"});
    produce(&brokers, &names.topic, &[record(refund)]);
    let input = read_topic(&brokers, &names.topic);
    figures_match(&second, &input, "a late refund after the restore");
    let mut second = second;
    second.stop_cleanly();

    // The rollup topic: revisions only increase per stream, through the
    // kill and the reopenings, and its newest records are the figures.
    let latest = checked_latest_rollups(&brokers, &names.rollup, false);
    assert_no_problems(
        "rollup topic vs reference",
        &diff_ended(&reference_of(&input), &latest),
    );
}

/// A backlog an hour old pauses for longer than `--idle-partition-ms`, then
/// goes on with more events and with producer retries of events from before
/// the pause. The quiet partition's event time moves on by the pause, not to
/// the wall clock: no stream ends, and no retry counts twice.
#[test]
fn a_pause_in_a_backlog_ends_no_stream_and_counts_no_duplicate_twice() {
    let brokers = brokers();
    let names = Names::new("backlog-pause");
    create_topic(&brokers, &names.topic, 1);
    let t0 = (now_ms() - 60 * 60_000) / 60_000 * 60_000;
    let mut before = shows(t0);
    let after: Vec<Outgoing> = before
        .iter()
        .step_by(3)
        .cloned()
        .chain((0..ENDED).map(|n| {
            let stream = format!("end-{n}");
            record(purchase(
                &format!("{stream}-buy-2"),
                &stream,
                "v2",
                t0 + 80_000,
                &format!("{stream}-o2"),
                "USD",
            ))
        }))
        .collect();
    assert!(after.len() > ENDED * 2);

    let mut livetally = Livetally::run_with(&brokers, &names, &FLAGS);
    produce(&brokers, &names.topic, &before);
    livetally.wait_caught_up(before.len() as u64);
    // Ten times the idle-partition setting, ticks every 200 ms.
    std::thread::sleep(Duration::from_secs(10));
    let ended: Vec<_> = livetally
        .streams()
        .into_iter()
        .filter(|s| s["final"] == true)
        .map(|s| s["stream_id"].clone())
        .collect();
    assert!(ended.is_empty(), "ended during the pause: {ended:?}");

    produce(&brokers, &names.topic, &after);
    before.extend(after);
    let input = read_topic(&brokers, &names.topic);
    assert_eq!(input.len(), before.len());
    livetally.wait_caught_up(input.len() as u64);
    let reference = figures_match(&livetally, &input, "after the pause");
    assert!(
        reference.duplicates() > ENDED as u64,
        "retries in the input"
    );
    assert!(livetally.streams().iter().all(|s| s["final"] != true));
    livetally.stop_cleanly();
    let latest = checked_latest_rollups(&brokers, &names.rollup, false);
    assert_no_problems(
        "rollup topic vs reference",
        &reference.diff_streams(&latest),
    );
}
