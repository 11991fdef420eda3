//! A broker bounce: the broker stops for 10 s in the middle of a run and
//! starts again; the engine recovers by itself and the figures are exact.
//!
//! This test starts a broker of its own (`deploy/local/kafka.sh`), since
//! stopping the shared one would disturb the tests running beside it.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn the_engine_rides_out_a_broker_bounce() {
    // The shared broker's variable is required like everywhere, so that this
    // test only runs where brokers may be started (make test).
    let _ = brokers();
    let dir = std::env::temp_dir().join(unique("lt-bounce-broker"));
    let (broker, brokers) = OwnBroker::start(dir);
    let names = Names::new("bounce");
    create_topic(&brokers, &names.topic, 3);
    let start_ts = (now_ms() - 10 * 60_000).to_string();
    gen(
        &brokers,
        &names.topic,
        &[
            "--events",
            "20000",
            "--streams",
            "15",
            "--seed",
            "31",
            "--start-ts",
            &start_ts,
        ],
    );
    let mut livetally = Livetally::run(&brokers, &names);
    wait_for("some records consumed", DEADLINE, || {
        let consumed = livetally
            .metric("livetally_events_consumed_total", &[])
            .unwrap_or(0.0);
        if consumed > 0.0 {
            Ok(())
        } else {
            Err(format!("{consumed} consumed"))
        }
    });

    broker.down();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        livetally.get("/healthz").0,
        200,
        "alive while the broker is down"
    );
    assert_eq!(
        broker.up(),
        brokers,
        "the broker comes back on the same address"
    );
    // More records after the bounce, then everything must be counted once.
    gen(
        &brokers,
        &names.topic,
        &[
            "--events",
            "5000",
            "--streams",
            "15",
            "--seed",
            "32",
            "--start-ts",
            &start_ts,
        ],
    );

    let input = read_topic(&brokers, &names.topic);
    let reference = reference_of(&input);
    wait_all_committed(
        &brokers,
        &names,
        &input,
        "every record processed and committed after the bounce",
    );
    let listed = livetally.wait_caught_up(0);
    assert_no_problems(
        "after a broker bounce: GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    livetally.stop_cleanly();
    let latest = checked_latest_rollups(&brokers, &names.rollup, false);
    assert_no_problems(
        "after a broker bounce: rollup topic vs reference",
        &reference.diff_streams(&latest),
    );
}
