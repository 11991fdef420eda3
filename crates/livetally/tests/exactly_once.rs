//! Exactly-once against a real broker: `run --guarantee exactly-once` is
//! killed with SIGKILL at several points while it consumes, and restarted
//! each time. Read committed, the rollup topic then holds every stream's
//! figures exactly, with no revision published twice, and the dead-letter
//! topic holds every invalid record exactly once.
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use common::*;

/// Records produced; `make soak` sets `LIVETALLY_SOAK_EVENTS=1000000`.
fn events() -> usize {
    std::env::var("LIVETALLY_SOAK_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120_000)
}
const EXACTLY_ONCE: [&str; 2] = ["--guarantee", "exactly-once"];

#[test]
fn exactly_once_survives_kill9_with_nothing_published_twice() {
    let brokers = brokers();
    let names = Names::new("exactly-once");
    create_topic(&brokers, &names.topic, 6);
    let start_ts = (now_ms() - 10 * 60_000).to_string();
    let events = events();
    let rate = if events > 200_000 { 50_000 } else { 15_000 };
    let (rate_arg, duration) = (rate.to_string(), format!("{}ms", events * 1000 / rate));
    // Paced, so that no instance can finish the backlog before it is killed.
    let generator = gen_command(
        &brokers,
        &names.topic,
        &[
            "--rate",
            &rate_arg,
            "--duration",
            &duration,
            "--streams",
            "40",
            "--seed",
            "11",
            "--start-ts",
            &start_ts,
            "--format",
            "mixed",
        ],
    )
    .spawn()
    .expect("spawn livetally gen");

    // Three crashes while records keep arriving.
    for round in 0..3 {
        let mut livetally = Livetally::run_with(&brokers, &names, &EXACTLY_ONCE);
        wait_for(
            &format!("round {round}: records consumed"),
            DEADLINE,
            || {
                let consumed = livetally
                    .metric("livetally_events_consumed_total", &[])
                    .unwrap_or(0.0);
                // An earlier round may have finished the backlog: then this
                // one has nothing to consume, and is killed idle.
                if consumed >= 3_000.0 || all_consumed(&brokers, &names) {
                    Ok(())
                } else {
                    Err(format!("{consumed} consumed\n{}", livetally.log()))
                }
            },
        );
        // In exactly-once mode a record is counted only once its transaction
        // committed: an instance that counted some must report commits.
        let consumed = livetally
            .metric("livetally_events_consumed_total", &[])
            .unwrap_or(0.0);
        let commits = livetally
            .metric("livetally_transactions_total", &[("result", "commit")])
            .unwrap_or(0.0);
        assert!(
            consumed == 0.0 || commits > 0.0,
            "round {round}: {consumed} consumed, no commit reported"
        );
        livetally.kill9();
    }
    finish_gen(generator);
    let input = read_topic(&brokers, &names.topic);
    assert_eq!(input.len(), events);
    let reference = reference_of(&input);

    let mut livetally = Livetally::run_with(&brokers, &names, &EXACTLY_ONCE);
    wait_all_committed(
        &brokers,
        &names,
        &input,
        "every record committed in a transaction",
    );
    let listed = livetally.wait_caught_up(0);
    assert_no_problems(
        "exactly-once: GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    livetally.stop_cleanly();

    // Read committed: aborted work of the killed instances is invisible, so
    // every stream's revisions strictly increase and the newest is exact.
    let rollups = read_topic(&brokers, &names.rollup);
    let (latest, problems) = latest_rollups(&rollups, true);
    assert_no_problems("exactly-once: rollup topic records", &problems);
    assert_no_problems(
        "exactly-once: rollup topic vs reference",
        &reference.diff_streams(&latest),
    );
    let dlq = read_topic(&brokers, &names.dlq);
    assert_no_problems(
        "exactly-once: dead-letter topic",
        &check_dead_letters(&dlq, &input, &reference, &names.topic, true),
    );
    assert_eq!(
        dlq.len(),
        reference.invalid().len(),
        "each invalid record dead-lettered once"
    );
}

/// Whether the group committed the end of every input partition (with the
/// generator done, nothing is left to consume).
fn all_consumed(brokers: &str, names: &Names) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Ok(consumer) = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let committed = committed_offsets(brokers, &names.topic, &names.group);
    !committed.is_empty()
        && committed.iter().all(|(partition, offset)| {
            consumer
                .fetch_watermarks(&names.topic, *partition, std::time::Duration::from_secs(5))
                .is_ok_and(|(_, high)| *offset == Some(high))
        })
}
