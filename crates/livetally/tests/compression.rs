//! Producers choose how their record batches are compressed, and livetally
//! reads whatever they chose: gzip, snappy, lz4 and zstd, all in one topic.
//! (librdkafka is built with zlib and zstd for this; lz4 and snappy are its
//! own.)
//!
//! Needs a broker: `make test`, or `LIVETALLY_TEST_BROKERS=127.0.0.1:PORT`.

mod common;

use common::reference::Reference;
use common::*;

const EVENTS: usize = 4_000;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

#[test]
fn every_compression_codec_is_read() {
    let brokers = brokers();
    let names = Names::new("compression");
    // gen's own records, compressed as gen does (lz4), are the events.
    let source = unique("compression-source");
    create_topic(&brokers, &source, 1);
    let start_ts = (now_ms() - 20 * 60_000).to_string();
    gen(
        &brokers,
        &source,
        &[
            "--events",
            &EVENTS.to_string(),
            "--streams",
            "8",
            "--seed",
            "11",
            "--start-ts",
            &start_ts,
            "--format",
            "mixed",
        ],
    );
    let generated = read_topic(&brokers, &source);
    assert_eq!(generated.len(), EVENTS, "records gen wrote");

    // The same records again, each fifth by a producer with another codec.
    create_topic(&brokers, &names.topic, 3);
    let chunk = EVENTS.div_ceil(CODECS.len());
    for (codec, records) in CODECS.iter().zip(generated.chunks(chunk)) {
        let records: Vec<Outgoing> = records.iter().map(Outgoing::from).collect();
        produce_with(
            &brokers,
            &names.topic,
            &records,
            &[("compression.type", codec)],
        );
    }
    let input = read_topic(&brokers, &names.topic);
    assert_eq!(input.len(), EVENTS, "records in the input topic");
    let reference: Reference = reference_of(&input);
    assert!(
        reference.counted() > EVENTS as u64 / 2,
        "the data counts: {} of {EVENTS}",
        reference.counted()
    );

    let mut livetally = Livetally::run(&brokers, &names);
    let listed = livetally.wait_caught_up(EVENTS as u64);
    assert_no_problems(
        "GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    assert_eq!(
        livetally.metric("livetally_events_consumed_total", &[]),
        Some(EVENTS as f64),
        "records consumed"
    );
    livetally.stop_cleanly();
    assert!(
        !livetally.log().contains("consume error"),
        "consume errors:\n{}",
        livetally.log()
    );
}
