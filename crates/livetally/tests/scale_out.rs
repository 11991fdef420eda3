//! Scale-out against a real broker: three instances in one consumer group
//! share a six-partition topic while records flow; one is killed, another
//! joins. At the end every partition has exactly one owner, and every
//! instance's API answers for every stream with the exact figures (each
//! instance follows the rollup topic for the streams it does not own).
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use std::collections::BTreeMap;

use common::*;

const PARTITIONS: usize = 6;

#[test]
fn three_instances_share_the_work_and_each_answers_for_every_stream() {
    let brokers = brokers();
    let names = Names::new("scale-out");
    create_topic(&brokers, &names.topic, PARTITIONS as i32);
    let start_ts = (now_ms() - 10 * 60_000).to_string();
    let generator = gen_command(
        &brokers,
        &names.topic,
        &[
            "--rate",
            "8000",
            "--duration",
            "8s",
            "--streams",
            "30",
            "--seed",
            "21",
            "--start-ts",
            &start_ts,
        ],
    )
    .spawn()
    .expect("spawn livetally gen");

    let mut a = Livetally::run(&brokers, &names);
    let mut b = Livetally::run(&brokers, &names);
    let c = Livetally::run(&brokers, &names);
    wait_for("three instances sharing the partitions", DEADLINE, || {
        let owned: Vec<usize> = [&a, &b, &c]
            .iter()
            .map(|l| partitions_of(l).len())
            .collect();
        if owned.iter().all(|n| *n > 0) && owned.iter().sum::<usize>() == PARTITIONS {
            Ok(())
        } else {
            Err(format!("partitions per instance: {owned:?}"))
        }
    });
    // One dies mid-stream; a new one joins.
    b.kill9();
    let d = Livetally::run(&brokers, &names);

    finish_gen(generator);
    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    wait_all_committed(
        &brokers,
        &names,
        &input,
        "every record processed and committed",
    );

    let live = [&a, &c, &d];
    wait_for(
        "every partition owned by exactly one live instance",
        DEADLINE,
        || {
            let mut owners: BTreeMap<i64, usize> = BTreeMap::new();
            for l in live {
                for p in partitions_of(l) {
                    *owners.entry(p).or_default() += 1;
                }
            }
            let expected: BTreeMap<i64, usize> = (0..PARTITIONS as i64).map(|p| (p, 1)).collect();
            if owners == expected {
                Ok(())
            } else {
                Err(format!("owners per partition: {owners:?}"))
            }
        },
    );
    for (name, l) in [("a", &a), ("c", &c), ("d", &d)] {
        let listed = wait_for(
            &format!("instance {name} shows every stream exactly"),
            DEADLINE,
            || {
                let listed = l.streams();
                let problems = reference.diff_streams(&listed);
                if problems.is_empty() {
                    Ok(listed)
                } else {
                    Err(problems.join("\n"))
                }
            },
        );
        assert_eq!(
            listed.len(),
            reference.streams.len(),
            "instance {name}: streams"
        );
    }
    a.stop_cleanly();
    let (mut c, mut d) = (c, d);
    c.stop_cleanly();
    d.stop_cleanly();
}

fn partitions_of(livetally: &Livetally) -> Vec<i64> {
    livetally.get_json("/readyz").1["partitions"]
        .as_array()
        .map(|v| v.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default()
}

#[test]
fn input_not_keyed_by_stream_is_detected() {
    let brokers = brokers();
    let (names, _) = mis_keyed_input(&brokers, "mis-keyed", "3000", "3", "41");
    let mut livetally = Livetally::run(&brokers, &names);
    wait_for("the split streams reported", DEADLINE, || {
        match livetally.metric("livetally_streams_split_total", &[]) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!(
                "livetally_streams_split_total = {other:?}\n{}",
                livetally.log()
            )),
        }
    });
    assert!(
        livetally.log().contains("not keyed by stream_id"),
        "a warning names the problem"
    );
    livetally.stop_cleanly();
}

#[test]
fn repartition_makes_mis_keyed_input_exact() {
    let brokers = brokers();
    let (names, source) = mis_keyed_input(&brokers, "repartition", "6000", "5", "43");
    // The same records in one partition: the reference needs one order per stream.
    let reference = reference_of(&source);
    let mut livetally = Livetally::run_with(&brokers, &names, &["--repartition"]);
    let listed = wait_for(
        "exact figures through the repartition topic",
        DEADLINE,
        || {
            let listed = livetally.streams();
            let problems = reference.diff_streams(&listed);
            if problems.is_empty() {
                Ok(listed)
            } else {
                Err(problems.join("\n"))
            }
        },
    );
    assert_eq!(listed.len(), reference.streams.len());
    assert_eq!(
        livetally.metric("livetally_streams_split_total", &[]),
        Some(0.0),
        "no split after re-keying"
    );
    livetally.stop_cleanly();
    // Invalid records are dead-lettered, naming their place in the input topic.
    let dlq = read_topic(&brokers, &names.dlq);
    assert!(
        dlq.len() >= reference.invalid().len(),
        "every invalid record dead-lettered"
    );
    for letter in &dlq {
        assert_eq!(
            letter.header_str("livetally-source-topic"),
            Some(names.topic.as_str())
        );
        assert!(letter
            .headers
            .iter()
            .all(|(k, _)| !k.starts_with("livetally-origin-")));
    }
}

/// Generates `events` records into a one-partition staging topic, then
/// produces the same records to a three-partition input keyed by their
/// position instead of their stream, so every stream is spread over all
/// partitions. Returns the input's names and the staging records (one order
/// per stream, for the reference).
fn mis_keyed_input(
    brokers: &str,
    prefix: &str,
    events: &str,
    streams: &str,
    seed: &str,
) -> (Names, Vec<Record>) {
    let staging = Names::new(&format!("{prefix}-source"));
    let names = Names::new(prefix);
    create_topic(brokers, &staging.topic, 1);
    create_topic(brokers, &names.topic, 3);
    let start_ts = (now_ms() - 10 * 60_000).to_string();
    gen(
        brokers,
        &staging.topic,
        &[
            "--events",
            events,
            "--streams",
            streams,
            "--seed",
            seed,
            "--start-ts",
            &start_ts,
        ],
    );
    let source = read_topic(brokers, &staging.topic);
    let misrouted: Vec<Outgoing> = source
        .iter()
        .map(|r| Outgoing {
            key: Some(r.offset.to_string().into_bytes()),
            ..Outgoing::from(r)
        })
        .collect();
    produce(brokers, &names.topic, &misrouted);
    (names, source)
}
