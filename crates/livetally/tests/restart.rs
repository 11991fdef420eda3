//! Restarts against a real broker: figures stay exact when `run` is stopped
//! with SIGTERM mid-stream, when records are re-sent (at-least-once
//! producers), and when it is killed with SIGKILL mid-stream and restarted
//! from its state changelog.
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Child;

use common::reference::{diff_products, Outcome, Reference};
use common::*;

const STREAMS: &str = "20";
/// Records per paced `gen` run: 5000 a second for 3 seconds.
const PACED: [&str; 4] = ["--rate", "5000", "--duration", "3s"];
const PACED_RECORDS: usize = 15_000;
/// Stop (or kill) the instance once it has consumed this many of them.
const STOP_AFTER: f64 = 2_000.0;
const RESENDS: usize = 500;

#[test]
fn figures_stay_exact_across_sigterm_resends_and_kill9() {
    let brokers = brokers();
    let names = Names::new("restart");
    create_topic(&brokers, &names.topic, 4);
    let t0 = now_ms() - 15 * 60_000;

    // Phase 1: SIGTERM while records are still arriving.
    let mut first = Livetally::run(&brokers, &names);
    wait_ready(&first);
    let generator = spawn_gen(&brokers, &names.topic, "101", t0, &PACED);
    let consumed = wait_consumed(&first, STOP_AFTER);
    first.stop_cleanly();
    finish_gen(generator);
    let phase1 = read_topic(&brokers, &names.topic);
    assert_eq!(phase1.len(), PACED_RECORDS, "records after phase 1");
    eprintln!("phase 1: stopped after about {consumed} of {PACED_RECORDS} records");

    // Phase 2: exact re-sends of phase-1 records around a new batch, then a
    // restart in the same group.
    let step = phase1.len() / RESENDS;
    let resends: Vec<Outgoing> = phase1
        .iter()
        .step_by(step)
        .take(RESENDS)
        .map(Outgoing::from)
        .collect();
    let (early, late) = resends.split_at(RESENDS / 2);
    produce(&brokers, &names.topic, early);
    gen(
        &brokers,
        &names.topic,
        &[
            "--events",
            "8000",
            "--streams",
            STREAMS,
            "--seed",
            "202",
            "--start-ts",
            &(t0 + 60_000).to_string(),
        ],
    );
    produce(&brokers, &names.topic, late);
    let committed = committed_offsets(&brokers, &names.topic, &names.group);
    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    let resent: HashSet<&[u8]> = resends
        .iter()
        .filter_map(|r| r.payload.as_deref())
        .collect();
    let phase1_ends: HashMap<i32, i64> =
        phase1.iter().map(|r| (r.partition, r.offset + 1)).collect();
    let resent_duplicates = input
        .iter()
        .filter(|r| r.offset >= phase1_ends.get(&r.partition).copied().unwrap_or(0))
        .filter(|r| r.payload.as_deref().is_some_and(|p| resent.contains(p)))
        .filter(|r| reference.outcomes[&(r.partition, r.offset)] == Outcome::Duplicate)
        .count();
    let phase1_end = phase1.len();
    eprintln!(
        "phase 2: {} records after {phase1_end}, {} counted, {} duplicates ({resent_duplicates} of the re-sends), invalid {:?}",
        input.len(),
        reference.counted(),
        reference.duplicates(),
        reference.invalid_by_reason()
    );
    assert!(
        resent_duplicates >= RESENDS * 9 / 10,
        "re-sends not seen as duplicates by the reference"
    );
    assert!(
        reference
            .invalid_by_reason()
            .contains_key("currency_mismatch"),
        "two seeds should disagree on some stream's currency"
    );

    let mut second = Livetally::run(&brokers, &names);
    let pending = pending_records(&input, &committed);
    let listed = second.wait_caught_up(pending.len() as u64);
    assert_no_problems(
        "phase 2: GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    products_match(&second, &reference, "phase 2");
    exact_run_metrics(&second, &reference, &pending);
    second.stop_cleanly();
    all_committed(&brokers, &names, &input, "phase 2");
    rollups_match(&brokers, &names, &reference, true, "phase 2");
    let dlq = read_topic(&brokers, &names.dlq);
    assert_no_problems(
        "phase 2: dead-letter topic",
        &check_dead_letters(&dlq, &input, &reference, &names.topic, true),
    );

    // Phase 3: the restored state alone, then SIGKILL while records arrive.
    // This instance never auto-commits, so the kill loses every offset it
    // consumed while its state changelog holds them all: the next instance
    // re-reads records already applied and must skip each of them exactly.
    let config = std::env::temp_dir().join(format!("{}.toml", unique("livetally-no-commit")));
    std::fs::write(
        &config,
        "[kafka]\n\"auto.commit.interval.ms\" = \"3600000\"\n",
    )
    .expect("write config");
    let mut third = Livetally::run_with(
        &brokers,
        &names,
        &["--config", config.to_str().expect("UTF-8 path")],
    );
    wait_ready(&third);
    assert_no_problems(
        "phase 3: restored state before any new record",
        &reference.diff_streams(&third.streams()),
    );
    let generator = spawn_gen(&brokers, &names.topic, "303", t0 + 120_000, &PACED);
    let consumed = wait_consumed(&third, STOP_AFTER);
    third.kill9();
    let _ = std::fs::remove_file(&config);
    eprintln!("phase 3: killed after about {consumed} records");
    finish_gen(generator);

    let committed = committed_offsets(&brokers, &names.topic, &names.group);
    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    let pending = pending_records(&input, &committed);
    eprintln!(
        "phase 3: {} records in all, {} to consume again from the committed offsets",
        input.len(),
        pending.len()
    );
    assert!(
        pending.len() >= PACED_RECORDS,
        "the killed instance committed offsets ({committed:?}); the restart would not re-read applied records"
    );
    restarted_instance_is_exact(
        Livetally::run(&brokers, &names),
        &brokers,
        &names,
        &input,
        &reference,
        pending.len(),
    );
    let dlq = read_topic(&brokers, &names.dlq);
    assert_no_problems(
        "after kill -9: dead-letter topic",
        &check_dead_letters(&dlq, &input, &reference, &names.topic, false),
    );
    eprintln!(
        "dead letters: {} for {} invalid records",
        dlq.len(),
        reference.invalid().len()
    );
}

#[test]
fn checkpoints_less_frequent_than_publications_stay_exact_across_kill9() {
    // At-least-once with rollups every 200 ms (the harness's setting) and
    // checkpoints (with the offsets they cover) every 5 s: a kill loses up
    // to 5 s of state behind rollups already published. Each restart must
    // resume from the last checkpoint, count every record once, and keep
    // revisions increasing past those published after the checkpoint.
    let brokers = brokers();
    let names = Names::new("ckpt");
    create_topic(&brokers, &names.topic, 4);
    // Event time crosses a minute 0.8 s (4,000 records) in, well before the
    // first kill: the new windows are opened, and published several times,
    // after the streams' first checkpoints.
    let t0 = (now_ms() - 15 * 60_000) / 60_000 * 60_000 + 60_000 - 800;
    let flags = ["--checkpoint-interval-ms", "5000"];
    let mut first = Livetally::run_with(&brokers, &names, &flags);
    wait_ready(&first);
    let generator = spawn_gen(&brokers, &names.topic, "404", t0, &PACED);
    // About 1.6 s of records: several publications after each stream's
    // first checkpoint, before any full one.
    let consumed = wait_consumed(&first, 8_000.0);
    first.kill9();
    eprintln!("killed after about {consumed} records");
    finish_gen(generator);

    // The next instance restores, moves revisions on, publishes, and is
    // killed too before its first full checkpoint: the instance after it must
    // still go past what it published.
    let mut second = Livetally::run_with(&brokers, &names, &flags);
    wait_ready(&second);
    let consumed = wait_consumed(&second, 1_000.0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    second.kill9();
    eprintln!("second instance killed after about {consumed} records");

    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    let committed = committed_offsets(&brokers, &names.topic, &names.group);
    let pending = pending_records(&input, &committed);
    restarted_instance_is_exact(
        Livetally::run_with(&brokers, &names, &flags),
        &brokers,
        &names,
        &input,
        &reference,
        pending.len(),
    );
    // Window rollups too: each (stream, window) only ever moves forward, also
    // for windows opened after the last checkpoint before the kill.
    let mut latest: HashMap<(String, i64), u64> = HashMap::new();
    let mut problems = Vec::new();
    for record in read_topic(&brokers, &names.rollup) {
        let rollup = record.json();
        if rollup["kind"] != "window" {
            continue;
        }
        let key = window_key(&rollup);
        let revision = rollup["revision"].as_u64().unwrap_or_default();
        let before = latest.entry(key.clone()).or_insert(0);
        if revision < *before {
            problems.push(format!(
                "{key:?}: window revision {revision} after {before}"
            ));
        }
        *before = (*before).max(revision);
    }
    assert!(!latest.is_empty(), "no window rollups read");
    assert_no_problems("after kill -9: window revisions", &problems);
}

/// The instance started after a kill -9 catches up on the `pending` records
/// it reads again; then its API and products, the committed offsets and the
/// rollup topic all match the reference count of `input`, and it stops
/// cleanly.
fn restarted_instance_is_exact(
    mut livetally: Livetally,
    brokers: &str,
    names: &Names,
    input: &[Record],
    reference: &Reference,
    pending: usize,
) {
    let listed = livetally.wait_caught_up(pending as u64);
    assert_no_problems(
        "after kill -9: GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    products_match(&livetally, reference, "after kill -9");
    livetally.stop_cleanly();
    all_committed(brokers, names, input, "after kill -9");
    rollups_match(brokers, names, reference, false, "after kill -9");
}

/// Records at or after the committed offset of their partition: what a
/// restarted instance reads.
fn pending_records(input: &[Record], committed: &BTreeMap<i32, Option<i64>>) -> Vec<(i32, i64)> {
    input
        .iter()
        .filter(|r| r.offset >= committed.get(&r.partition).copied().flatten().unwrap_or(0))
        .map(|r| (r.partition, r.offset))
        .collect()
}

/// Two instances in one group: partitions move to a second instance while
/// records arrive, then all move back to it when the first stops. Every
/// handover is clean, so each record is processed exactly once overall.
#[test]
fn figures_stay_exact_when_partitions_move_between_instances() {
    let brokers = brokers();
    let names = Names::new("rebalance");
    create_topic(&brokers, &names.topic, 4);
    let t0 = now_ms() - 10 * 60_000;
    let mut first = Livetally::run(&brokers, &names);
    wait_ready(&first);
    let generator = spawn_gen(
        &brokers,
        &names.topic,
        "404",
        t0,
        &["--rate", "5000", "--duration", "4s"],
    );
    wait_consumed(&first, STOP_AFTER);
    let mut second = Livetally::run(&brokers, &names);
    wait_for("partitions shared by both instances", DEADLINE, || {
        let owned = |l: &Livetally| {
            l.get_json("/readyz").1["partitions"]
                .as_array()
                .map_or(0, Vec::len)
        };
        match (owned(&first), owned(&second)) {
            (a, b) if a > 0 && b > 0 && a + b == 4 => Ok(()),
            (a, b) => Err(format!("first owns {a}, second owns {b}")),
        }
    });
    finish_gen(generator);
    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    wait_all_committed(
        &brokers,
        &names,
        &input,
        "every record processed and committed",
    );
    let counter = |l: &Livetally, name: &str| l.metric(name, &[]).unwrap_or(-1.0) as i64;
    let consumed_first = counter(&first, "livetally_events_consumed_total");
    let duplicates_first = counter(&first, "livetally_events_duplicate_total");
    first.stop_cleanly();

    wait_for("the second instance owns every partition", DEADLINE, || {
        let (status, body) = second.get_json("/readyz");
        match body["partitions"].as_array().map_or(0, Vec::len) {
            4 if status == 200 => Ok(()),
            n => Err(format!("{status}, {n} partitions: {body}")),
        }
    });
    let listed = second.wait_caught_up(0);
    assert_no_problems(
        "after the handovers: GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    products_match(&second, &reference, "after the handovers");
    let consumed = consumed_first + counter(&second, "livetally_events_consumed_total");
    let duplicates = duplicates_first + counter(&second, "livetally_events_duplicate_total");
    assert_eq!(
        consumed,
        input.len() as i64,
        "records consumed by both instances"
    );
    assert_eq!(
        duplicates,
        reference.duplicates() as i64,
        "duplicates counted by both instances"
    );
    second.stop_cleanly();
    all_committed(&brokers, &names, &input, "after the handovers");
    rollups_match(&brokers, &names, &reference, true, "after the handovers");
    let dlq = read_topic(&brokers, &names.dlq);
    assert_no_problems(
        "after the handovers: dead-letter topic",
        &check_dead_letters(&dlq, &input, &reference, &names.topic, true),
    );
}

/// After a clean stop with nothing left to read, the group's committed
/// offsets are the ends of every partition.
fn all_committed(brokers: &str, names: &Names, input: &[Record], phase: &str) {
    let ends: BTreeMap<i32, Option<i64>> = input
        .iter()
        .map(|r| (r.partition, Some(r.offset + 1)))
        .collect();
    let committed = committed_offsets(brokers, &names.topic, &names.group);
    assert_eq!(committed, ends, "{phase}: committed offsets after SIGTERM");
}

fn wait_ready(livetally: &Livetally) {
    wait_for("/readyz 200", DEADLINE, || match livetally.get("/readyz") {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status} {body}\n{}", livetally.log())),
    });
}

/// Waits until `livetally_events_consumed_total` reaches `at_least`; returns it.
fn wait_consumed(livetally: &Livetally, at_least: f64) -> f64 {
    wait_for("records consumed", DEADLINE, || {
        let consumed = livetally
            .metric("livetally_events_consumed_total", &[])
            .unwrap_or(0.0);
        if consumed >= at_least {
            Ok(consumed)
        } else {
            Err(format!("{consumed} consumed\n{}", livetally.log()))
        }
    })
}

fn spawn_gen(brokers: &str, topic: &str, seed: &str, start_ts: i64, pace: &[&str]) -> Child {
    let start_ts = start_ts.to_string();
    let mut args = vec![
        "--streams",
        STREAMS,
        "--seed",
        seed,
        "--start-ts",
        &start_ts,
    ];
    args.extend_from_slice(pace);
    gen_command(brokers, topic, &args)
        .spawn()
        .expect("spawn livetally gen")
}

/// Every stream's product list equals the reference.
fn products_match(livetally: &Livetally, reference: &Reference, phase: &str) {
    let mut problems = Vec::new();
    for (id, stream) in &reference.streams {
        let (status, body) = livetally.get_json(&format!("/v1/streams/{id}/products?limit=1000"));
        assert_eq!(status, 200, "{phase}: products of {id}: {body}");
        let products = body["products"].as_array().cloned().unwrap_or_default();
        problems.extend(diff_products(id, stream, &products));
    }
    assert_no_problems(&format!("{phase}: products vs reference"), &problems);
}

/// After a clean handover, an instance consumes exactly the records from the
/// committed offsets on: its counters equal the reference's over those.
fn exact_run_metrics(livetally: &Livetally, reference: &Reference, pending: &[(i32, i64)]) {
    let (_, text) = livetally.get("/metrics");
    let sample =
        |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(-1.0) as i64;
    let outcome = |at: &(i32, i64)| reference.outcomes[at];
    let duplicates = pending
        .iter()
        .filter(|at| outcome(at) == Outcome::Duplicate)
        .count() as i64;
    assert_eq!(
        sample("livetally_events_consumed_total", &[]),
        pending.len() as i64,
        "records consumed after restart"
    );
    assert_eq!(
        sample("livetally_events_duplicate_total", &[]),
        duplicates,
        "duplicates after restart"
    );
    let mut invalid: BTreeMap<&str, i64> = BTreeMap::new();
    for at in pending {
        if let Outcome::Invalid(reason) = outcome(at) {
            *invalid.entry(reason).or_default() += 1;
        }
    }
    for reason in [
        "malformed",
        "missing_field",
        "unknown_type",
        "bad_value",
        "bad_timestamp",
        "currency_mismatch",
    ] {
        let want = invalid.get(reason).copied().unwrap_or(0);
        assert_eq!(
            sample("livetally_events_invalid_total", &[("reason", reason)]),
            want,
            "invalid {reason} after restart"
        );
    }
}

/// The newest cumulative rollup per stream on the rollup topic equals the reference.
fn rollups_match(brokers: &str, names: &Names, reference: &Reference, strict: bool, phase: &str) {
    let records = read_topic(brokers, &names.rollup);
    let (latest, problems) = latest_rollups(&records, strict);
    assert_no_problems(&format!("{phase}: rollup topic records"), &problems);
    assert_no_problems(
        &format!("{phase}: rollup topic vs reference"),
        &reference.diff_streams(&latest),
    );
}
