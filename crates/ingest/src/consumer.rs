//! The Kafka consumer: one group member, one task per assigned partition.
//!
//! After each assignment every partition gets its own queue (librdkafka's
//! partition-queue split) and is handed to a [`PartitionHandler`], which owns
//! it until revocation. Before partitions are given up, the handler drains
//! them: in-flight work is finished, published and its offsets stored, and
//! then the stored offsets are committed synchronously.
//!
//! Invariant: this module never stores an offset itself. Offsets are stored
//! by the handler, only once the events they cover are applied and published
//! (`enable.auto.offset.store=false`); librdkafka's auto-commit then commits
//! nothing that was not stored.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::stream_consumer::{StreamConsumer, StreamPartitionQueue};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, TopicPartitionList};

/// Metric names this module reports (kept beside the sink's full list).
mod names {
    pub const REBALANCES: &str = "livetally_rebalances_total";
    pub const COMMIT_FAILURES: &str = "livetally_commit_failures_total";
    pub const CONSUMER_LAG: &str = "livetally_consumer_lag_records";
    pub const ASSIGNED_PARTITIONS: &str = "livetally_assigned_partitions";
}

/// The group member's consumer.
pub type IngestConsumer = StreamConsumer<IngestContext>;
/// One assigned partition's own message queue.
pub type PartitionQueue = StreamPartitionQueue<IngestContext>;

/// Who owns assigned partitions. Called from the consumer's polling thread,
/// inside rebalance callbacks: `revoked` may block until its work is drained.
pub trait PartitionHandler: Send + Sync + 'static {
    /// A new assignment is about to be handed over, partition by partition:
    /// `partitions` is all of it (so readiness can wait for every one).
    fn assigning(&self, partitions: &[i32]);
    /// `partition` of the input topic is ours now; consume it from `queue`.
    fn assigned(&self, partition: i32, queue: PartitionQueue);
    /// These partitions go away: finish, publish and store offsets, then return.
    fn revoked(&self, partitions: &[i32]);
}

/// Where to consume from.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The input topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Extra librdkafka consumer properties, applied last.
    pub extra: Vec<(String, String)>,
}

/// Rebalance and statistics callbacks of the consumer.
pub struct IngestContext {
    topic: String,
    handler: Arc<dyn PartitionHandler>,
    /// Set right after creation: callbacks need the consumer to split queues.
    consumer: OnceLock<Weak<IngestConsumer>>,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                // librdkafka reports -1 for partitions it does not consume.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    metrics::gauge!(names::CONSUMER_LAG, "partition" => partition.to_string())
                        .set(stats.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metrics::counter!(names::REBALANCES, "kind" => "revoke").increment(1);
                let partitions = self.partitions_of(tpl);
                tracing::info!(?partitions, "partitions revoked; draining");
                self.handler.revoked(&partitions);
                commit_stored(base);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                metrics::counter!(names::REBALANCES, "kind" => "error").increment(1);
                tracing::warn!(%error, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            metrics::counter!(names::REBALANCES, "kind" => "assign").increment(1);
            let partitions = self.partitions_of(tpl);
            tracing::info!(?partitions, "partitions assigned");
            let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
                tracing::error!("assignment before the consumer was registered");
                return;
            };
            self.handler.assigning(&partitions);
            for partition in partitions {
                match consumer.split_partition_queue(&self.topic, partition) {
                    Some(queue) => self.handler.assigned(partition, queue),
                    None => tracing::error!(partition, "cannot split the partition queue"),
                }
            }
        }
        if let Ok(assignment) = base.assignment() {
            metrics::gauge!(names::ASSIGNED_PARTITIONS).set(assignment.count() as f64);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                metrics::counter!(names::COMMIT_FAILURES).increment(1);
                tracing::warn!(%error, "offset commit failed");
            }
        }
    }
}

impl IngestContext {
    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

/// Commits the stored offsets synchronously; "nothing to commit" is fine.
pub fn commit_stored<C: Consumer<IngestContext>>(consumer: &C) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            metrics::counter!(names::COMMIT_FAILURES).increment(1);
            tracing::warn!(%error, "offset commit failed");
        }
    }
}

/// Creates the group member and subscribes it to the topic. The caller must
/// keep polling it (`recv`) for rebalances to happen.
pub fn subscribe(
    settings: &ConsumerSettings,
    handler: Arc<dyn PartitionHandler>,
) -> KafkaResult<Arc<IngestConsumer>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, only after publication.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "5000")
        .set("enable.partition.eof", "false")
        // Once a partition's queue holds `queued.min.messages`, librdkafka
        // postpones its next fetch by this long (1 s by default): a worker
        // that emptied its queue meanwhile waits idle. Catching up 4 M
        // events took 10.6–12.6 s with 10 ms, 13.9–14.4 s without
        // (docs/BENCHMARKS.md, "Morning").
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in &settings.extra {
        config.set(k, v);
    }
    let context = IngestContext {
        topic: settings.topic.clone(),
        handler,
        consumer: OnceLock::new(),
    };
    let consumer: Arc<IngestConsumer> = Arc::new(config.create_with_context(context)?);
    // Cannot fail: the cell was created empty just above.
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    consumer.subscribe(&[&settings.topic])?;
    Ok(consumer)
}

/// Why the cluster's metadata could not be read: librdkafka's error, and
/// what it reported meanwhile, such as a refused password or certificate
/// (its own error says only "broker transport failure").
#[derive(Debug, thiserror::Error)]
#[error("{error}{}", reported.iter().map(|r| format!("; {r}")).collect::<String>())]
pub struct MetadataError {
    /// librdkafka's error.
    pub error: KafkaError,
    /// Errors librdkafka reported on the way, newest last, without repeats.
    pub reported: Vec<String>,
}

/// Collects what a short-lived client logs as an error (a refused password
/// or certificate), for [`MetadataError`].
#[derive(Default)]
struct Reported(std::sync::Mutex<Vec<String>>);

impl Reported {
    fn keep(&self, text: &str) {
        let mut reported = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !reported.iter().any(|r| r == text) {
            reported.push(text.to_owned());
        }
    }
}

impl ClientContext for Reported {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", facility, message);
        if (level as i32) <= (RDKafkaLogLevel::Error as i32) {
            self.keep(message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.keep(&format!("{reason} ({error})"));
    }
}

impl ConsumerContext for Reported {}

/// Number of partitions of `topic` (0 when it does not exist), from the
/// cluster's metadata; `extra` are librdkafka properties (security, …).
pub fn partition_count(
    brokers: &str,
    topic: &str,
    extra: &[(String, String)],
    timeout: Duration,
) -> Result<usize, MetadataError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in extra {
        config.set(k, v);
    }
    // Errors are what `Reported` keeps, whatever the process logs.
    config.set_log_level(RDKafkaLogLevel::Error);
    let client: BaseConsumer<Reported> =
        config
            .create_with_context(Reported::default())
            .map_err(|error| MetadataError {
                error,
                reported: Vec::new(),
            })?;
    let metadata = match client.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata,
        Err(error) => {
            // librdkafka queues its logs and errors for polls to hand over,
            // one event a poll (a handled one reads as no message).
            for _ in 0..256 {
                let _ = client.poll(Duration::ZERO);
            }
            let reported =
                std::mem::take(&mut *client.context().0.lock().unwrap_or_else(|e| e.into_inner()));
            return Err(MetadataError { error, reported });
        }
    };
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a managed cluster asks of its clients, given under `[kafka]`:
    /// each must be accepted (librdkafka built with OpenSSL and zstd), so
    /// the lookup fails only for want of a broker.
    #[test]
    fn clients_take_tls_sasl_and_zstd_settings() {
        let settings: &[&[(&str, &str)]] = &[
            &[("security.protocol", "SSL")],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "livetally"),
                ("sasl.password", "secret"),
            ],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "key"),
                ("sasl.password", "secret"),
            ],
            &[("compression.type", "zstd")],
        ];
        for extra in settings {
            let extra: Vec<(String, String)> = extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            // Port 1: nothing listens, so the lookup times out.
            match partition_count("127.0.0.1:1", "t", &extra, Duration::from_millis(200)) {
                Err(MetadataError {
                    error: error @ (KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)),
                    ..
                }) => panic!("{extra:?} refused: {error}"),
                Err(_) => {}
                Ok(n) => panic!("{extra:?}: {n} partitions without a broker"),
            }
        }
    }
}
