//! livetally's Prometheus metrics: names, units and the recorder.
//!
//! Naming follows Prometheus conventions (`livetally_` prefix, `_total` for
//! counters, base units `_seconds`/`_bytes`). Labels are bounded: `reason`
//! (the closed invalid set), `partition` (the input topic's partitions) and
//! `topic`-free kinds; never a stream, viewer or event id. Counters are
//! incremented once per batch, not per event.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Records read from the input topic.
pub const EVENTS_CONSUMED: &str = "livetally_events_consumed_total";
/// Invalid records, by `reason`.
pub const EVENTS_INVALID: &str = "livetally_events_invalid_total";
/// Duplicate events (same stream and event id), ignored.
pub const EVENTS_DUPLICATE: &str = "livetally_events_duplicate_total";
/// Events too late for any retained window (still counted cumulatively).
pub const EVENTS_LATE: &str = "livetally_events_late_total";
/// Records written to the dead-letter topic.
pub const DEAD_LETTERS: &str = "livetally_dead_letters_total";
/// Time to apply and publish one batch.
pub const BATCH_SECONDS: &str = "livetally_batch_processing_seconds";
/// Event time (`ts`) to publication of a rollup that includes it.
pub const END_TO_END_SECONDS: &str = "livetally_end_to_end_latency_seconds";
/// Records between the consumer's position and the partition's end, by `partition`.
pub const CONSUMER_LAG: &str = "livetally_consumer_lag_records";
/// Streams held in this instance's state.
pub const ACTIVE_STREAMS: &str = "livetally_active_streams";
/// Approximate size of the aggregation state.
pub const STATE_BYTES: &str = "livetally_state_bytes";
/// Ended streams held packed, by `partition`.
pub const STREAMS_PACKED: &str = "livetally_streams_packed";
/// Rollups published (topic and read model).
pub const ROLLUPS_PUBLISHED: &str = "livetally_rollups_published_total";
/// Consumer-group rebalances seen, by `kind` (assign, revoke, error).
pub const REBALANCES: &str = "livetally_rebalances_total";
/// Failed offset commits.
pub const COMMIT_FAILURES: &str = "livetally_commit_failures_total";
/// Failed publications (rollups, dead letters, changelog) that were retried.
pub const PUBLISH_FAILURES: &str = "livetally_publish_failures_total";
/// Streams seen on more than one input partition: the input is not keyed by
/// `stream_id`, and each partition counts only its share of such a stream.
pub const STREAMS_SPLIT: &str = "livetally_streams_split_total";
/// Exactly-once transactions, by `result` (commit, abort, fenced).
pub const TRANSACTIONS: &str = "livetally_transactions_total";
/// Seconds taken to restore a partition's state from the changelog.
pub const RESTORE_SECONDS: &str = "livetally_restore_seconds";
/// Changelog records still to read while a partition restores, by `partition`.
pub const CHANGELOG_LAG: &str = "livetally_changelog_lag_records";
/// Bytes of state checkpoints written to the changelog topic: each
/// publication writes every changed stream's whole state.
pub const CHANGELOG_BYTES: &str = "livetally_changelog_bytes_total";
/// Partitions currently assigned to this instance.
pub const ASSIGNED_PARTITIONS: &str = "livetally_assigned_partitions";

/// Installs the global Prometheus recorder and returns the handle `/metrics`
/// renders. Installing twice (tests, demo restarts) returns a fresh handle
/// that is not the global recorder, so callers never fail on it.
pub fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .expect("static bucket list is non-empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::debug!("metrics recorder already installed");
    }
    describe();
    handle
}

/// Registers help texts and zero values, so every series exists from start-up
/// (a dashboard can tell "zero" from "not yet reported").
fn describe() {
    use livetally_aggregator::InvalidReason;
    metrics::describe_counter!(EVENTS_CONSUMED, "Records read from the input topic.");
    metrics::describe_counter!(
        EVENTS_INVALID,
        "Invalid records sent to the dead-letter topic, by reason."
    );
    metrics::describe_counter!(EVENTS_DUPLICATE, "Duplicate events ignored.");
    metrics::describe_counter!(EVENTS_LATE, "Events too late for any retained window.");
    metrics::describe_counter!(DEAD_LETTERS, "Records written to the dead-letter topic.");
    metrics::describe_histogram!(
        BATCH_SECONDS,
        metrics::Unit::Seconds,
        "Time to apply and publish one batch."
    );
    metrics::describe_histogram!(
        END_TO_END_SECONDS,
        metrics::Unit::Seconds,
        "Event time to publication."
    );
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "Records behind the partition end, by partition."
    );
    metrics::describe_gauge!(ACTIVE_STREAMS, "Streams held in state.");
    metrics::describe_gauge!(
        STATE_BYTES,
        metrics::Unit::Bytes,
        "Approximate aggregation state size."
    );
    metrics::describe_gauge!(
        STREAMS_PACKED,
        "Ended streams held packed (figures kept for a later event), by partition."
    );
    metrics::describe_counter!(ROLLUPS_PUBLISHED, "Rollups published.");
    metrics::describe_counter!(REBALANCES, "Consumer-group rebalances, by kind.");
    metrics::describe_counter!(COMMIT_FAILURES, "Failed offset commits.");
    metrics::describe_counter!(PUBLISH_FAILURES, "Failed publications, retried.");
    metrics::describe_histogram!(
        RESTORE_SECONDS,
        metrics::Unit::Seconds,
        "Partition state restore time."
    );
    metrics::describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this instance.");
    metrics::counter!(EVENTS_CONSUMED).absolute(0);
    for reason in InvalidReason::ALL {
        metrics::counter!(EVENTS_INVALID, "reason" => reason.as_str()).absolute(0);
    }
    metrics::counter!(EVENTS_DUPLICATE).absolute(0);
    metrics::counter!(EVENTS_LATE).absolute(0);
    metrics::counter!(DEAD_LETTERS).absolute(0);
    metrics::counter!(ROLLUPS_PUBLISHED).absolute(0);
    metrics::counter!(COMMIT_FAILURES).absolute(0);
    metrics::counter!(PUBLISH_FAILURES).absolute(0);
    metrics::describe_counter!(
        STREAMS_SPLIT,
        "Streams seen on more than one input partition."
    );
    metrics::counter!(STREAMS_SPLIT).absolute(0);
    metrics::describe_counter!(TRANSACTIONS, "Exactly-once transactions, by result.");
    metrics::describe_counter!(
        CHANGELOG_BYTES,
        "Bytes of state checkpoints written to the changelog topic."
    );
    metrics::counter!(CHANGELOG_BYTES).absolute(0);
    metrics::describe_gauge!(
        CHANGELOG_LAG,
        "Changelog records still to read while a partition restores."
    );
}
