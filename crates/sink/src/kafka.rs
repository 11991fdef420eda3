//! Everything the engine writes to Kafka: rollups, dead letters and the state
//! changelog, sent together and acknowledged together.
//!
//! Invariant: [`Publisher::send`] returns `Ok` only once the broker has
//! acknowledged every record of the batch. The caller stores input offsets
//! only after that, so a crash can repeat a publication but never lose one.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use livetally_aggregator::changelog::Record;
use livetally_aggregator::{InvalidReason, StreamRollup};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};

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
    /// On rollup records: the input partition whose events the rollup counts.
    pub const INPUT_PARTITION: &str = "livetally-input-partition";
    /// On rollup records: the instance that published it (a process's
    /// random id), so that its own rollup follower can skip what it
    /// already holds.
    pub const INSTANCE: &str = "livetally-instance";
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
    /// Exactly-once: the producer's `transactional.id`, one per input
    /// partition so that a new owner fences every older one.
    pub transactional_id: Option<String>,
    /// This process's id, written on every rollup ([`headers::INSTANCE`]).
    pub instance_id: String,
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

/// A rollup on its way to the rollup topic, encoded once
/// ([`crate::Shown::encode`] reuses the JSON written for the live feed).
#[derive(Clone, Debug)]
pub struct OutRollup {
    /// The rollup; its `stream_id` is the record key.
    pub rollup: Arc<StreamRollup>,
    /// The record value, in the topic's format.
    pub value: Arc<[u8]>,
}

/// One partition's output since its last publication.
#[derive(Debug, Default)]
pub struct OutBatch {
    /// Rollups for the rollup topic, keyed by stream id.
    pub rollups: Vec<OutRollup>,
    /// Changelog records, in order (an empty value is a tombstone).
    pub changelog: Vec<Record>,
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
    /// The transaction was aborted; the same batch may be sent again.
    #[error("transaction aborted: {0}")]
    Aborted(#[source] rdkafka::error::KafkaError),
    /// This producer was fenced by a newer owner of the partition, or hit a
    /// fatal error: it must stop, its partition belongs to someone else.
    #[error("producer fenced or failed: {0}")]
    Fenced(#[source] rdkafka::error::KafkaError),
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
    config: Arc<PublisherConfig>,
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
            .set("message.timeout.ms", "30000")
            // A changelog head is a stream's state but for its duplicate
            // filter, and a first piece a whole generation of it: either can
            // be large (the changelog topic is created to accept as much).
            .set("message.max.bytes", "67108864");
        for (k, v) in &config.extra {
            client.set(k, v);
        }
        if let Some(id) = &config.transactional_id {
            client
                .set("transactional.id", id)
                .set("transaction.timeout.ms", "60000");
        }
        let producer: FutureProducer = client.create().map_err(PublishError::Create)?;
        if config.transactional_id.is_some() {
            // Blocks until the coordinator fenced any older producer with this id.
            producer
                .init_transactions(TXN_TIMEOUT)
                .map_err(PublishError::Fenced)?;
        }
        Ok(Publisher {
            producer,
            config: Arc::new(config),
        })
    }

    /// Sends a batch and commits `offsets` (the next offsets to read of the
    /// input partition) in one Kafka transaction: the rollups, the dead
    /// letters, the changelog records and the consumer offsets become
    /// visible together or not at all. Blocks a worker thread while the
    /// transaction commits (`block_in_place`), so call it from a
    /// multi-threaded runtime.
    pub async fn send_transaction(
        &self,
        batch: &OutBatch,
        changelog_partition: i32,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), PublishError> {
        self.producer.begin_transaction().map_err(classify)?;
        let sent = async {
            let deliveries = self.deliveries(batch, changelog_partition, Part::All);
            Sending::new(self.config.clone(), deliveries, None)
                .finish()
                .await?;
            tokio::task::block_in_place(|| {
                if offsets.count() > 0 {
                    self.producer
                        .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)?;
                }
                self.producer.commit_transaction(TXN_TIMEOUT)
            })
            .map_err(classify)
        }
        .await;
        match sent {
            Ok(()) => {
                metrics::counter!(crate::metrics::TRANSACTIONS, "result" => "commit").increment(1);
                self.count(batch);
                Ok(())
            }
            Err(PublishError::Fenced(error)) => {
                metrics::counter!(crate::metrics::TRANSACTIONS, "result" => "fenced").increment(1);
                Err(PublishError::Fenced(error))
            }
            Err(error) => {
                metrics::counter!(crate::metrics::TRANSACTIONS, "result" => "abort").increment(1);
                tokio::task::block_in_place(|| self.producer.abort_transaction(TXN_TIMEOUT))
                    .map_err(classify)?;
                Err(error)
            }
        }
    }

    fn count(&self, batch: &OutBatch) {
        count(batch.rollups.len(), batch.dead_letters.len());
    }

    /// The configuration in use.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// Sends a batch; changelog records go to `changelog_partition` (the
    /// input partition whose state they hold). Returns once all are acknowledged.
    ///
    /// Dead letters need no order against changelog records: an event that
    /// was invalid is invalid again when read again after a restore, so its
    /// dead letter is written again unless its offset was stored, which
    /// happens only after this returns.
    ///
    /// Its changelog records go only once its rollups and dead letters are
    /// acknowledged ([`Publisher::start_changelog`]).
    pub async fn send(
        &self,
        batch: &OutBatch,
        changelog_partition: i32,
    ) -> Result<(), PublishError> {
        self.start(batch, changelog_partition).finish().await?;
        self.start_changelog(batch, changelog_partition)
            .finish()
            .await
    }

    /// Hands a batch's dead letters and rollups to the producer and returns
    /// without waiting for the broker: the caller goes on working while
    /// [`Sending`] collects the acknowledgements. Records of one partition
    /// are delivered in the order handed over (the producer is idempotent),
    /// batch after batch.
    ///
    /// The batch's changelog records wait for [`Publisher::start_changelog`],
    /// once these are acknowledged (and every earlier batch's): a checkpoint
    /// must never land before the rollups of the state it holds. Records of
    /// different topics land independently, so a crash could otherwise keep
    /// a checkpoint and lose its rollups; the state restored from it counts
    /// the events read again as already applied, publishes nothing for a
    /// stream that gets no new event, and the rollup topic would keep the
    /// older figures for good.
    pub fn start(&self, batch: &OutBatch, changelog_partition: i32) -> Sending {
        let deliveries = self.deliveries(batch, changelog_partition, Part::Output);
        let counts = (batch.rollups.len(), batch.dead_letters.len());
        Sending::new(self.config.clone(), deliveries, Some(counts))
    }

    /// Hands a batch's changelog records to the producer, after
    /// [`Publisher::start`] sent its rollups and they were acknowledged.
    pub fn start_changelog(&self, batch: &OutBatch, changelog_partition: i32) -> Sending {
        let deliveries = self.deliveries(batch, changelog_partition, Part::Changelog);
        Sending::new(self.config.clone(), deliveries, None)
    }

    /// Starts sending the records of the batch that `part` names: dead
    /// letters first, then rollups, then changelog records.
    fn deliveries(
        &self,
        batch: &OutBatch,
        changelog_partition: i32,
        part: Part,
    ) -> Vec<(Destination, Queued)> {
        let c = &self.config;
        let (output, changelog) = match part {
            Part::All => (true, true),
            Part::Output => (true, false),
            Part::Changelog => (false, true),
        };
        let mut deliveries = Vec::with_capacity(
            batch.rollups.len() + batch.changelog.len() + batch.dead_letters.len(),
        );
        for letter in batch.dead_letters.iter().filter(|_| output) {
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
            deliveries.push((Destination::DeadLetters, self.enqueue(record)));
        }
        let input_partition = changelog_partition.to_string();
        let content_type = OwnedHeaders::new()
            .insert(Header {
                key: headers::CONTENT_TYPE,
                value: Some(c.format.content_type()),
            })
            .insert(Header {
                key: headers::INPUT_PARTITION,
                value: Some(input_partition.as_str()),
            })
            .insert(Header {
                key: headers::INSTANCE,
                value: Some(c.instance_id.as_str()),
            });
        for out in batch.rollups.iter().filter(|_| output) {
            let record = FutureRecord::<[u8], [u8]>::to(&c.rollup_topic)
                .key(out.rollup.stream_id.as_bytes())
                .payload(&*out.value)
                .headers(content_type.clone());
            deliveries.push((Destination::Rollups, self.enqueue(record)));
        }
        for Record { key, value } in batch.changelog.iter().filter(|_| changelog) {
            let mut record = FutureRecord::<[u8], [u8]>::to(&c.changelog_topic)
                .key(key.as_slice())
                .partition(changelog_partition);
            if !value.is_empty() {
                record = record.payload(value.as_slice());
            }
            deliveries.push((Destination::Changelog, self.enqueue(record)));
        }
        deliveries
    }

    /// Queues one record; when librdkafka's queue is full, waits for room by
    /// polling (the producer's own thread drains it) and tries again.
    fn enqueue(&self, mut record: FutureRecord<'_, [u8], [u8]>) -> Queued {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

/// A record handed to the producer, or the error that kept it out.
type Queued = Result<DeliveryFuture, KafkaError>;

/// Which records of a batch [`Publisher::deliveries`] hands over.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// Every record (one transaction).
    All,
    /// Dead letters and rollups.
    Output,
    /// Changelog records.
    Changelog,
}

/// Which of the publisher's topics a record goes to.
#[derive(Clone, Copy, Debug)]
enum Destination {
    DeadLetters,
    Rollups,
    Changelog,
}

impl PublisherConfig {
    fn topic(&self, destination: Destination) -> &str {
        match destination {
            Destination::DeadLetters => &self.dlq_topic,
            Destination::Rollups => &self.rollup_topic,
            Destination::Changelog => &self.changelog_topic,
        }
    }
}

fn count(rollups: usize, dead_letters: usize) {
    metrics::counter!(crate::metrics::ROLLUPS_PUBLISHED).increment(rollups as u64);
    metrics::counter!(crate::metrics::DEAD_LETTERS).increment(dead_letters as u64);
}

/// Records handed to the producer whose acknowledgements are still coming
/// ([`Publisher::start`]).
pub struct Sending {
    config: Arc<PublisherConfig>,
    /// Not acknowledged yet.
    pending: Vec<(Destination, DeliveryFuture)>,
    /// The first record that failed, and why.
    failed: Option<(Destination, KafkaError)>,
    /// Rollups and dead letters, counted in the metrics once all are
    /// acknowledged (`None`: the caller counts them).
    counts: Option<(usize, usize)>,
}

impl Sending {
    fn new(
        config: Arc<PublisherConfig>,
        deliveries: Vec<(Destination, Queued)>,
        counts: Option<(usize, usize)>,
    ) -> Sending {
        let mut sending = Sending {
            config,
            pending: Vec::with_capacity(deliveries.len()),
            failed: None,
            counts,
        };
        for (destination, queued) in deliveries {
            match queued {
                Ok(future) => sending.pending.push((destination, future)),
                Err(error) => sending.fail(destination, error),
            }
        }
        sending
    }

    fn fail(&mut self, destination: Destination, error: KafkaError) {
        metrics::counter!(crate::metrics::PUBLISH_FAILURES).increment(1);
        self.failed.get_or_insert((destination, error));
    }

    /// Without waiting: `None` while acknowledgements are still coming,
    /// then the outcome (the first failure is the batch's error).
    pub fn poll_settled(&mut self) -> Option<Result<(), PublishError>> {
        while let Some((destination, future)) = self.pending.last_mut() {
            let destination = *destination;
            let result = future.now_or_never()?;
            self.pending.pop();
            self.record(destination, result);
        }
        Some(self.outcome())
    }

    /// Whether every record was acknowledged or failed.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits until [`Sending::is_settled`]; [`Sending::poll_settled`] then
    /// answers at once. Cancel-safe: an answer is recorded as it arrives.
    pub async fn settled(&mut self) {
        while let Some((destination, future)) = self.pending.last_mut() {
            let destination = *destination;
            let result = future.await;
            self.pending.pop();
            self.record(destination, result);
        }
    }

    /// Waits for every acknowledgement; the first failure is the batch's error.
    pub async fn finish(&mut self) -> Result<(), PublishError> {
        let (destinations, futures): (Vec<_>, Vec<_>) = self.pending.drain(..).unzip();
        for (destination, result) in destinations.into_iter().zip(join_all(futures).await) {
            self.record(destination, result);
        }
        self.outcome()
    }

    fn record(
        &mut self,
        destination: Destination,
        result: <DeliveryFuture as std::future::Future>::Output,
    ) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => self.fail(destination, error),
            Err(_) => self.fail(destination, KafkaError::Canceled),
        }
    }

    fn outcome(&mut self) -> Result<(), PublishError> {
        match self.failed.clone() {
            None => {
                if let Some((rollups, dead_letters)) = self.counts.take() {
                    count(rollups, dead_letters);
                }
                Ok(())
            }
            Some((destination, source)) => Err(PublishError::Delivery {
                topic: self.config.topic(destination).to_string(),
                source,
            }),
        }
    }
}

/// Longest a transaction call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Sorts a transactional error: fatal or fenced means stop, anything else
/// means abort and retry.
fn classify(error: KafkaError) -> PublishError {
    let fenced = match &error {
        KafkaError::Transaction(e) => {
            e.is_fatal()
                || matches!(
                    e.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        _ => false,
    };
    if fenced {
        PublishError::Fenced(error)
    } else {
        PublishError::Aborted(error)
    }
}

#[cfg(test)]
mod tests {
    use livetally_aggregator::{Action, AggregatorConfig, Event, PartitionAggregator};

    use super::*;

    /// A publisher whose broker never answers (nothing listens on port 1 of
    /// the loopback): what it is handed stays queued.
    fn unanswered() -> Publisher {
        Publisher::new(PublisherConfig {
            brokers: "127.0.0.1:1".into(),
            rollup_topic: "rollups".into(),
            dlq_topic: "dead-letters".into(),
            changelog_topic: "changelog".into(),
            format: RollupFormat::Json,
            extra: Vec::new(),
            transactional_id: None,
            instance_id: "test".into(),
        })
        .expect("a producer needs no broker to be made")
    }

    fn batch() -> OutBatch {
        let mut agg = PartitionAggregator::new(AggregatorConfig::default());
        let view = Event {
            event_id: "e".into(),
            stream_id: "s".into(),
            viewer_id: "v".into(),
            ts: 1_764_120_000_000,
            seller_id: None,
            action: Action::View,
        };
        let _ = agg.apply(&view, 0);
        let publication = agg.publish().remove(0);
        let changelog = agg.checkpoints();
        assert!(changelog.len() >= 2, "a head and its pieces");
        let rollup = Arc::new(publication.rollup);
        OutBatch {
            rollups: vec![OutRollup {
                value: crate::encode::to_json(&rollup).into(),
                rollup,
            }],
            changelog,
            dead_letters: Vec::new(),
        }
    }

    #[test]
    fn a_batchs_changelog_waits_until_its_rollups_are_sent_for() {
        let publisher = unanswered();
        let batch = batch();
        let mut rollups = publisher.start(&batch, 0);
        let topics = |sending: &Sending| -> Vec<&str> {
            let config = &publisher.config;
            sending
                .pending
                .iter()
                .map(|(d, _)| config.topic(*d))
                .collect()
        };
        assert_eq!(topics(&rollups), ["rollups"], "the rollup alone");
        assert!(rollups.poll_settled().is_none(), "nothing answers");
        let changelog = publisher.start_changelog(&batch, 0);
        assert_eq!(topics(&changelog), vec!["changelog"; batch.changelog.len()]);
    }
}
