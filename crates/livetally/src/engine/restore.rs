//! Restoring a partition's state from the changelog topic.
//!
//! The changelog is compacted and partitioned like the input topic: partition
//! `p` holds the latest checkpoint of each stream of input partition `p`, as
//! a head keyed by the stream id and the pieces of its duplicate filter
//! (`livetally_aggregator::changelog`). Reading it from the beginning to its
//! end and keeping the last record per key gives the state as of the last
//! checkpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use livetally_aggregator::{changelog, StreamCheckpoint};
use livetally_sink::metrics::CHANGELOG_LAG;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Longest a restore may take before it is retried from the start.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads changelog partition `partition` to its end and returns the latest
/// checkpoint of every stream in it (tombstoned streams left out).
pub fn read_partition(
    brokers: &str,
    changelog_topic: &str,
    partition: i32,
    extra: &[(String, String)],
) -> anyhow::Result<Vec<(String, StreamCheckpoint)>> {
    // Only committed transactional data is state (exactly-once mode).
    let consumer: BaseConsumer = committed_reader(brokers, "livetally-restore", extra)
        .create()
        .context("create the restore consumer")?;
    let (low, high) = consumer
        .fetch_watermarks(changelog_topic, partition, Duration::from_secs(10))
        .with_context(|| format!("watermarks of {changelog_topic}/{partition}"))?;
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if high <= low {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog_topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut position = low;
    while position < high {
        if started.elapsed() > RESTORE_TIMEOUT {
            bail!(
                "restore of {changelog_topic}/{partition} timed out at offset {position} of {high}"
            );
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            // With transactions, the last offsets can be control records that
            // are never delivered: the position tells us we are past them.
            if let Ok(positions) = consumer.position() {
                if let Some(Offset::Offset(p)) = positions
                    .find_partition(changelog_topic, partition)
                    .map(|e| e.offset())
                {
                    position = position.max(p);
                }
            }
            continue;
        };
        let message = result.context("read the changelog")?;
        position = message.offset() + 1;
        if position % 1024 == 0 || position >= high {
            metrics::gauge!(CHANGELOG_LAG, "partition" => partition.to_string())
                .set((high - position).max(0) as f64);
        }
        let Some(key) = message.key() else { continue };
        changelog::keep_latest(&mut latest, key, message.payload().unwrap_or_default());
    }
    metrics::gauge!(CHANGELOG_LAG, "partition" => partition.to_string()).set(0.0);
    let restored = changelog::restore(&latest)
        .with_context(|| format!("restore {changelog_topic}/{partition}"))?;
    if restored.stray_pieces > 0 {
        tracing::info!(
            partition,
            pieces = restored.stray_pieces,
            "changelog pieces no checkpoint counts (left by a crash mid-batch); ignored"
        );
    }
    Ok(restored.checkpoints)
}

/// A consumer that reads assigned partitions of an internal topic
/// `read_committed` and commits nothing (`group_id` only names it): the
/// restore reader and the rollup follower.
pub(super) fn committed_reader(
    brokers: &str,
    group_id: &str,
    extra: &[(String, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in extra {
        config.set(k, v);
    }
    config
}
