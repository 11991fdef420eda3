//! `livetally replay`: NDJSON events in, one cumulative rollup per stream out.
//!
//! It runs the very code `run` runs (decode, then
//! [`PartitionAggregator::apply`]), with the line number as the input position,
//! as if every line came from one partition, but for one thing: a stream's
//! ids are hashed with a seed from its id and a fixed key
//! ([`IdSeeds::Keyed`]), not a random one, so that the same file always gives
//! the same figures (distinct counts beyond exact ones, estimated, depend on
//! the seed). Streams idle for the idle timeout
//! end as the events go, as they do at `run`'s publications: one that comes
//! back after that reopens without its viewers and event ids from before.

use std::io::{BufRead, Write};

use anyhow::Context;
use livetally_aggregator::{
    AggregatorConfig, IdSeeds, InvalidReason, Outcome, PartitionAggregator, StreamRollup,
};
use livetally_ingest::{decode, DecodeConfig};
use serde::Serialize;

/// What `replay` reports on stderr.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Non-blank lines read.
    pub records: u64,
    /// Events counted.
    pub valid: u64,
    /// Invalid lines by reason (every reason listed, zeros included).
    pub invalid: std::collections::BTreeMap<&'static str, u64>,
    /// Duplicate events ignored.
    pub duplicates: u64,
    /// Events too late for any retained window (counted cumulatively).
    pub late: u64,
    /// Streams in the output.
    pub streams: u64,
}

/// Reads every line of `input`, aggregates, and returns the cumulative
/// rollups sorted by stream id, with the summary. `now_ms` turns on the
/// wall-clock skew guard as in `run`.
pub fn aggregate(
    input: impl BufRead,
    aggregator: AggregatorConfig,
    decoding: &DecodeConfig,
    now_ms: Option<i64>,
) -> anyhow::Result<(Vec<StreamRollup>, Summary)> {
    /// The key of every replay's seeds: any fixed value would do.
    const SEED_KEY: u64 = 0x6c69_7665_7461_6c6c;
    let mut state = PartitionAggregator::new(aggregator).with_id_seeds(IdSeeds::Keyed(SEED_KEY));
    let mut summary = Summary {
        invalid: InvalidReason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
        ..Summary::default()
    };
    let mut input = input;
    let mut line = Vec::with_capacity(512);
    let mut position = 0u64;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line).context("read input")?;
        if n == 0 {
            break;
        }
        position += 1;
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.records += 1;
        let outcome = match decode(record, Some(b"application/json"), now_ms, decoding) {
            Ok(event) => state.apply(&event, position),
            Err(reason) => Outcome::Invalid(reason),
        };
        if outcome == Outcome::Counted {
            state.end_idle_streams();
        }
        match outcome {
            Outcome::Counted => summary.valid += 1,
            Outcome::Duplicate => summary.duplicates += 1,
            Outcome::Invalid(reason) => *summary.invalid.entry(reason.as_str()).or_default() += 1,
            Outcome::AlreadyApplied => {}
        }
    }
    summary.late = state.take_late();
    // The file's end ends every stream idle by then, whenever the last scan was.
    state.end_idle_streams_now();
    let mut rollups: Vec<StreamRollup> = state
        .publish()
        .into_iter()
        .filter(|p| p.rollup.kind == livetally_aggregator::RollupKind::Cumulative)
        .map(|p| p.rollup)
        .collect();
    rollups.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    summary.streams = rollups.len() as u64;
    Ok((rollups, summary))
}

/// Writes rollups as NDJSON.
pub fn write_ndjson(rollups: &[StreamRollup], mut out: impl Write) -> anyhow::Result<()> {
    for rollup in rollups {
        serde_json::to_writer(&mut out, rollup)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (Vec<StreamRollup>, Summary) {
        aggregate(
            input.as_bytes(),
            AggregatorConfig::default(),
            &DecodeConfig::default(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn counts_valid_invalid_and_duplicates() {
        let input = concat!(
            r#"{"event_id":"a","type":"view","stream_id":"s2","viewer_id":"v1","ts":1000}"#,
            "\n",
            "\n",
            r#"{"event_id":"a","type":"view","stream_id":"s2","viewer_id":"v1","ts":1000}"#,
            "\n",
            r#"{"event_id":"b","type":"purchase","stream_id":"s1","viewer_id":"v1","ts":1001,"product_id":"p","order_id":"o","quantity":2,"unit_price":150,"currency":"EUR"}"#,
            "\n",
            "not json\n",
            r#"{"event_id":"c","type":"teleport","stream_id":"s1","viewer_id":"v1","ts":1002}"#,
        );
        let (rollups, summary) = run(input);
        assert_eq!(summary.records, 5);
        assert_eq!(summary.valid, 2);
        assert_eq!(summary.duplicates, 1);
        assert_eq!(summary.invalid["malformed"], 1);
        assert_eq!(summary.invalid["unknown_type"], 1);
        let ids: Vec<&str> = rollups.iter().map(|r| r.stream_id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2"], "sorted by stream id");
        assert_eq!(rollups[0].gmv, 300);
        assert_eq!(rollups[0].currency.as_deref(), Some("EUR"));
        assert_eq!(rollups[1].views, 1);
    }

    #[test]
    fn a_stream_idle_past_the_timeout_ends_before_it_comes_back_as_in_run() {
        let line = |id: &str, kind: &str, stream: &str, viewer: &str, ts: i64| {
            format!(
                r#"{{"event_id":"{id}","type":"{kind}","stream_id":"{stream}","viewer_id":"{viewer}","ts":{ts}}}"#
            )
        };
        let minute = 60_000;
        let mut lines = vec![
            line("a", "view", "s", "v1", 0),
            line("b", "view", "s", "v2", 1),
        ];
        // Another stream moves the watermark 50 minutes on.
        lines.extend((1..=50).map(|m| line(&format!("o{m}"), "like", "t", "x", m * minute)));
        // `s` comes back: v2 leaves, v3 arrives, and `a` is sent again.
        lines.push(line("c", "leave", "s", "v2", 50 * minute + 1));
        lines.push(line("d", "view", "s", "v3", 50 * minute + 2));
        lines.push(line("a", "view", "s", "v1", 50 * minute + 3));
        let (rollups, summary) = run(&lines.join("\n"));
        let s = &rollups[0];
        assert_eq!(s.stream_id, "s");
        assert!(!s.is_final, "reopened");
        // Ended at 30 minutes idle: its viewers and event ids were released,
        // so `a` counts again and the viewers present are v3 and v1.
        assert_eq!(summary.duplicates, 0);
        assert_eq!((s.views, s.unique_viewers), (4, 3));
        assert_eq!(s.concurrent_viewers, 2);
        assert_eq!(s.peak_concurrent_viewers, 2);

        // A stream idle at the end ends, though the last scan, made while
        // reading, was less than a minute of event time before.
        let (rollups, _) = run(&[
            line("a", "view", "s", "v1", 0),
            line("b", "like", "t", "x", 29 * minute + 50_000),
            line("c", "like", "t", "x", 30 * minute + 20_000),
        ]
        .join("\n"));
        assert!(rollups[0].is_final, "{:?}", rollups[0]);
        assert_eq!(rollups[0].concurrent_viewers, 0);

        // Within the timeout nothing ends: v1 and v3 present, `a` a duplicate.
        let config = AggregatorConfig {
            idle_timeout_ms: 60 * minute,
            ..AggregatorConfig::default()
        };
        let (rollups, summary) = aggregate(
            lines.join("\n").as_bytes(),
            config,
            &DecodeConfig::default(),
            None,
        )
        .unwrap();
        assert_eq!(summary.duplicates, 1);
        assert_eq!((rollups[0].views, rollups[0].concurrent_viewers), (3, 2));
    }

    #[test]
    fn clock_guard_only_when_asked() {
        let line =
            r#"{"event_id":"a","type":"like","stream_id":"s","viewer_id":"v","ts":10000000}"#;
        let (_, without) = run(line);
        assert_eq!(without.valid, 1);
        let (_, with) = aggregate(
            line.as_bytes(),
            AggregatorConfig::default(),
            &DecodeConfig::default(),
            Some(0),
        )
        .unwrap();
        assert_eq!(with.invalid["bad_timestamp"], 1);
    }
}
