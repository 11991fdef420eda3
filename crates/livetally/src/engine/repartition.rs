//! The opt-in repartition step (`--repartition`), as Kafka Streams does it:
//! when the input is not keyed by `stream_id`, each record is re-keyed by its
//! stream and written to an internal topic (`<group>.repartition`), which the
//! engine consumes instead. Then every stream lives in one partition again and
//! its figures are exact.
//!
//! Delivery: at-least-once (an input offset is stored once the re-keyed record
//! is acknowledged). A record written twice after a crash carries the same
//! `event_id` and is caught by the duplicate filter downstream. Records that do
//! not decode keep their key; the engine dead-letters them, naming the
//! original topic, partition and offset from the `livetally-origin-*` headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use livetally_ingest::{decode, DecodeConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

/// Header names of the original position, on re-keyed records.
pub mod origin {
    /// The input topic.
    pub const TOPIC: &str = "livetally-origin-topic";
    /// The input partition.
    pub const PARTITION: &str = "livetally-origin-partition";
    /// The input offset.
    pub const OFFSET: &str = "livetally-origin-offset";
}

/// How many re-keyed records may be in flight before offsets are stored.
const BATCH: usize = 5_000;

/// The internal topic's name for a consumer group.
pub fn topic_for(group: &str) -> String {
    format!("{group}.repartition")
}

/// Re-keys `input` into `internal` until `stop` turns true.
pub async fn run(
    brokers: String,
    input: String,
    internal: String,
    group: String,
    extra: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{group}.repartitioner"))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (k, v) in &extra {
        consumer_config.set(k, v);
        producer_config.set(k, v);
    }
    let consumer: Arc<StreamConsumer> = Arc::new(
        consumer_config
            .create()
            .context("create the repartition consumer")?,
    );
    let producer: FutureProducer = producer_config
        .create()
        .context("create the repartition producer")?;
    consumer
        .subscribe(&[&input])
        .context("subscribe the repartitioner")?;
    // Decoding only finds the stream: no size or clock rule here, the engine applies them.
    let lenient = DecodeConfig {
        max_event_bytes: usize::MAX,
        max_future_skew_ms: i64::MAX,
    };
    let mut messages = consumer.stream();
    let mut in_flight: Vec<DeliveryFuture> = Vec::with_capacity(BATCH);
    // Next offset to store per input partition, once its records are acknowledged.
    let mut next: HashMap<i32, i64> = HashMap::new();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !in_flight.is_empty() => None,
            message = messages.next() => message,
        };
        if let Some(result) = message {
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "repartition consumer");
                    continue;
                }
            };
            let payload = message.payload().unwrap_or_default();
            let content_type = message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                    .and_then(|h| h.value)
            });
            let stream_key: Option<Vec<u8>> = decode(payload, content_type, None, &lenient)
                .ok()
                .map(|e| e.stream_id.as_bytes().to_vec());
            let key = stream_key.or_else(|| message.key().map(<[u8]>::to_vec));
            let (partition, offset) = (
                message.partition().to_string(),
                message.offset().to_string(),
            );
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for h in original.iter() {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            headers = headers
                .insert(Header {
                    key: origin::TOPIC,
                    value: Some(message.topic()),
                })
                .insert(Header {
                    key: origin::PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: origin::OFFSET,
                    value: Some(offset.as_str()),
                });
            let mut record = FutureRecord::<[u8], [u8]>::to(&internal).headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => break in_flight.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => return Err(error).context("re-key a record"),
                }
            }
            next.insert(message.partition(), message.offset() + 1);
            if in_flight.len() < BATCH {
                continue;
            }
        }
        // Offsets are stored only once every re-keyed record is acknowledged.
        let failed = futures::future::join_all(in_flight.drain(..))
            .await
            .into_iter()
            .any(|r| !matches!(r, Ok(Ok(_))));
        if failed {
            anyhow::bail!(
                "re-keyed records were not acknowledged; restarting from the stored offsets"
            );
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next.drain() {
            offsets.add_partition_offset(&input, partition, Offset::Offset(offset))?;
        }
        if offsets.count() > 0 {
            consumer
                .store_offsets(&offsets)
                .context("store repartition offsets")?;
        }
    }
    let _ = futures::future::join_all(in_flight.drain(..)).await;
    Ok(())
}
