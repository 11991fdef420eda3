//! Everything the engine writes to Kafka: rollups, dead letters and the state
//! changelog, sent together and acknowledged together.
//!
//! Invariant: [`Publisher::send`] returns `Ok` only once the broker has
//! acknowledged every record of the batch. The caller stores input offsets
//! only after that, so a crash can repeat a publication but never lose one.

use std::time::Duration;

use futures::future::join_all;
use livetally_aggregator::{InvalidReason, StreamRollup};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::encode::RollupFormat;

/// Header names written on dead letters.
pub mod headers {
    /// The invalid reason (`malformed`, `missing_field`, …).
    pub const REASON: &str = "livetally-reason";
    /// The input topic the record came from.
    pub const SOURCE_TOPIC: &str = "livetally-source-topic";
    /// Its partition, decimal.
    pub const SOURCE_PARTITION: &str = "livetally-source-partition";
    /// Its offset, decimal.
    pub const SOURCE_OFFSET: &str = "livetally-source-offset";
    /// Content type of rollup records.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// Where and how the publisher writes.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The rollup topic.
    pub rollup_topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// The state changelog topic (compacted; one partition per input partition).
    pub changelog_topic: String,
    /// Encoding of rollup values.
    pub format: RollupFormat,
    /// Extra librdkafka producer properties (`key`, `value`).
    pub extra: Vec<(String, String)>,
}

/// An invalid input record, kept unchanged for the dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The record key, unchanged.
    pub key: Option<Vec<u8>>,
    /// The record value, unchanged.
    pub payload: Option<Vec<u8>>,
    /// The record's own headers, unchanged.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Why it is invalid.
    pub reason: InvalidReason,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// One partition's output since its last publication.
#[derive(Debug, Default)]
pub struct OutBatch {
    /// Rollups for the rollup topic, keyed by stream id.
    pub rollups: Vec<StreamRollup>,
    /// Changelog records: (stream id, checkpoint bytes; empty = tombstone).
    pub changelog: Vec<(String, Vec<u8>)>,
    /// Invalid records.
    pub dead_letters: Vec<DeadLetter>,
}

impl OutBatch {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.rollups.is_empty() && self.changelog.is_empty() && self.dead_letters.is_empty()
    }
}

/// Errors from publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created.
    #[error("create producer: {0}")]
    Create(#[source] rdkafka::error::KafkaError),
    /// A record was not acknowledged.
    #[error("deliver to {topic}: {source}")]
    Delivery {
        /// The topic written.
        topic: String,
        /// What the producer said.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// The producer of rollups, dead letters and changelog records.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    config: PublisherConfig,
}

impl Publisher {
    /// An idempotent producer (no duplicates or reordering from its own retries).
    pub fn new(config: PublisherConfig) -> Result<Publisher, PublishError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000");
        for (k, v) in &config.extra {
            client.set(k, v);
        }
        let producer = client.create().map_err(PublishError::Create)?;
        Ok(Publisher { producer, config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// Sends a batch; changelog records go to `changelog_partition` (the
    /// input partition whose state they hold). Returns once all are acknowledged.
    ///
    /// Dead letters go first and are acknowledged before any changelog record
    /// is sent: a changelog record marks the records before it as applied, so
    /// a crash between the two must not leave an invalid record unreported.
    pub async fn send(
        &self,
        batch: &OutBatch,
        changelog_partition: i32,
    ) -> Result<(), PublishError> {
        let c = &self.config;
        let encoded: Vec<(&str, Vec<u8>)> = batch
            .rollups
            .iter()
            .map(|r| (r.stream_id.as_str(), c.format.encode(r)))
            .collect();
        let mut deliveries = Vec::with_capacity(
            batch.rollups.len() + batch.changelog.len() + batch.dead_letters.len(),
        );
        for letter in &batch.dead_letters {
            let mut hdrs = OwnedHeaders::new_with_capacity(letter.headers.len() + 4);
            for (k, v) in &letter.headers {
                hdrs = hdrs.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let partition = letter.partition.to_string();
            let offset = letter.offset.to_string();
            hdrs = hdrs
                .insert(Header {
                    key: headers::REASON,
                    value: Some(letter.reason.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE_TOPIC,
                    value: Some(letter.topic.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE_OFFSET,
                    value: Some(offset.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&c.dlq_topic).headers(hdrs);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload.as_slice());
            }
            deliveries.push((
                c.dlq_topic.as_str(),
                self.producer.send(record, Duration::from_secs(30)),
            ));
        }
        settle(std::mem::take(&mut deliveries)).await?;
        let content_type = OwnedHeaders::new().insert(Header {
            key: headers::CONTENT_TYPE,
            value: Some(c.format.content_type()),
        });
        for (key, value) in &encoded {
            let record = FutureRecord::<[u8], [u8]>::to(&c.rollup_topic)
                .key(key.as_bytes())
                .payload(value.as_slice())
                .headers(content_type.clone());
            deliveries.push((
                c.rollup_topic.as_str(),
                self.producer.send(record, Duration::from_secs(30)),
            ));
        }
        for (key, value) in &batch.changelog {
            let mut record = FutureRecord::<[u8], [u8]>::to(&c.changelog_topic)
                .key(key.as_bytes())
                .partition(changelog_partition);
            if !value.is_empty() {
                record = record.payload(value.as_slice());
            }
            deliveries.push((
                c.changelog_topic.as_str(),
                self.producer.send(record, Duration::from_secs(30)),
            ));
        }
        settle(deliveries).await?;
        metrics::counter!(crate::metrics::ROLLUPS_PUBLISHED).increment(batch.rollups.len() as u64);
        metrics::counter!(crate::metrics::DEAD_LETTERS).increment(batch.dead_letters.len() as u64);
        Ok(())
    }
}

/// Awaits every delivery; the first failure is the batch's error.
async fn settle<F>(deliveries: Vec<(&str, F)>) -> Result<(), PublishError>
where
    F: std::future::Future<Output = rdkafka::producer::future_producer::OwnedDeliveryResult>,
{
    let (topics, futures): (Vec<&str>, Vec<F>) = deliveries.into_iter().unzip();
    let results = join_all(futures).await;
    for (topic, result) in topics.into_iter().zip(results) {
        if let Err((source, _)) = result {
            metrics::counter!(crate::metrics::PUBLISH_FAILURES).increment(1);
            return Err(PublishError::Delivery {
                topic: topic.to_string(),
                source,
            });
        }
    }
    Ok(())
}
