//! The engine: wires ingest → aggregate → publish for every partition this
//! instance owns.
//!
//! - [`topics`]: checks the input topic and creates missing output topics.
//! - [`follower`]: reads the rollup topic so the API answers for every stream.
//! - [`repartition`]: the opt-in re-keying of input not keyed by `stream_id`.
//! - [`restore`]: rebuilds a partition's state from the changelog.
//! - [`worker`]: the task that owns one partition: decode, apply, publish,
//!   store offsets.
//!
//! Threads: the consumer is polled on a thread of its own (rebalance callbacks
//! run there and may block while partitions drain); partition workers are
//! tokio tasks.

pub mod follower;
pub mod repartition;
pub mod restore;
pub mod topics;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use livetally_aggregator::AggregatorConfig;
use livetally_ingest::consumer::{
    self, ConsumerSettings, IngestConsumer, PartitionHandler, PartitionQueue,
};
use livetally_ingest::DecodeConfig;
use livetally_sink::{Publisher, PublisherConfig, ReadModel};
use rdkafka::Message;
use tokio::sync::{mpsc, watch};

use worker::{Control, WorkerContext};

/// Longest wait for a partition to drain on revocation or shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// At-least-once: most publications a partition hands to the producer before
/// it waits for the oldest one's acknowledgement.
pub const MAX_IN_FLIGHT: usize = 8;

impl EngineConfig {
    /// How many revisions of a stream readers may have seen after its last
    /// checkpoint that reached the changelog: a restored stream's revisions
    /// move this far on, so that they keep increasing past any shown or
    /// published after the checkpoint. Zero exactly-once when every
    /// revision goes out in a transaction with its checkpoint.
    ///
    /// Revisions advance once per live interval. At-least-once, checkpoints
    /// go out with publications, at most every checkpoint interval, and up
    /// to [`MAX_IN_FLIGHT`] publications are handed to the producer before
    /// the oldest is acknowledged, so a crash can leave their rollups
    /// written and a checkpoint among them not.
    pub fn revisions_between_checkpoints(&self) -> u64 {
        let ticks = |interval: Duration| {
            let n = interval
                .as_nanos()
                .div_ceil(self.live_interval.as_nanos().max(1));
            // One tick may fire late and the next at once; a drain adds one more.
            u64::try_from(n).unwrap_or(u64::MAX / 4) + 2
        };
        if self.exactly_once {
            if self.live_interval >= self.publish_interval {
                return 0;
            }
            // Live revisions between two transactions.
            return ticks(self.publish_interval);
        }
        let in_flight = MAX_IN_FLIGHT as u64;
        let between = self.checkpoint_interval.max(self.publish_interval);
        if between <= self.live_interval {
            return in_flight;
        }
        ticks(between) + in_flight
    }
}

/// Everything the engine needs to run.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Input side.
    pub consumer: ConsumerSettings,
    /// Output side.
    pub publisher: PublisherConfig,
    /// Figures.
    pub aggregator: AggregatorConfig,
    /// Validation.
    pub decode: DecodeConfig,
    /// How often dirty streams are published to the rollup topic.
    pub publish_interval: Duration,
    /// How often dirty streams are shown to the read model and its live
    /// feed (at most the publish interval): each is a new revision.
    pub live_interval: Duration,
    /// At-least-once: how often the changed streams' checkpoints are
    /// published, with the input offsets they cover. Exactly-once
    /// checkpoints every publication, and a partition that is behind (its
    /// queue has not run dry since its last transaction) commits at most
    /// this often.
    pub checkpoint_interval: Duration,
    /// Whether decoding guards event time against the wall clock (live
    /// mode); also lets an idle partition's event time move on without events.
    pub clock_guard: bool,
    /// How long a partition may go without records before its event time
    /// moves on without them, at the wall clock's pace from its newest.
    pub idle_partition: Duration,
    /// Kafka transactions per partition instead of stored offsets.
    pub exactly_once: bool,
}

/// A running engine; [`Engine::shutdown`] drains and commits.
pub struct Engine {
    consumer: Arc<IngestConsumer>,
    partitions: Arc<Partitions>,
    stop: watch::Sender<bool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Joins the group and starts consuming. Must be called inside a tokio runtime.
    pub fn start(config: EngineConfig, model: Arc<ReadModel>) -> anyhow::Result<Engine> {
        let publisher = Publisher::new(config.publisher.clone()).context("create the producer")?;
        let partitions = Arc::new(Partitions {
            runtime: tokio::runtime::Handle::current(),
            workers: Mutex::new(HashMap::new()),
            context: Arc::new(WorkerContext {
                config: config.clone(),
                publisher,
                model,
                consumer: OnceLock::new(),
            }),
        });
        let consumer = consumer::subscribe(&config.consumer, partitions.clone())
            .context("join the consumer group")?;
        let _ = partitions.context.consumer.set(Arc::downgrade(&consumer));
        let (stop, stopped) = watch::channel(false);
        let poller = {
            let consumer = consumer.clone();
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("livetally-consumer".into())
                .spawn(move || runtime.block_on(poll(consumer, stopped)))
                .context("start the consumer thread")?
        };
        Ok(Engine {
            consumer,
            partitions,
            stop,
            poller: Some(poller),
        })
    }

    /// Clean stop: every partition finishes its batch, publishes and stores
    /// offsets; the offsets are committed; the consumer leaves the group.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(poller) = self.poller.take() {
            let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        }
        let partitions = self.partitions.clone();
        let consumer = self.consumer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let all: Vec<i32> = partitions.owned();
            partitions.revoked(&all);
            consumer::commit_stored(consumer.as_ref());
        })
        .await;
        // Dropping the last reference closes the consumer and leaves the group.
        drop(self.consumer);
    }
}

/// Polls the group member: rebalances and errors arrive here, messages go to
/// the partition queues.
async fn poll(consumer: Arc<IngestConsumer>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = consumer.recv() => match message {
                Ok(m) => {
                    // Only possible if librdkafka fetched before the queue split.
                    tracing::error!(partition = m.partition(), offset = m.offset(), "message on the main queue; it will be redelivered");
                    let mut tpl = rdkafka::TopicPartitionList::new();
                    if tpl.add_partition_offset(m.topic(), m.partition(), rdkafka::Offset::Offset(m.offset())).is_ok() {
                        let _ = rdkafka::consumer::Consumer::seek_partitions(consumer.as_ref(), tpl, Duration::from_secs(5));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// The partitions this instance owns, each with its worker task.
struct Partitions {
    runtime: tokio::runtime::Handle,
    /// Changed only on rebalances (never per event), from the consumer thread
    /// and at shutdown; a mutex is enough.
    workers: Mutex<HashMap<i32, mpsc::UnboundedSender<Control>>>,
    context: Arc<WorkerContext>,
}

impl Partitions {
    fn owned(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, mpsc::UnboundedSender<Control>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PartitionHandler for Partitions {
    fn assigning(&self, partitions: &[i32]) {
        self.context.model.readiness().assigned(partitions);
    }

    fn assigned(&self, partition: i32, queue: PartitionQueue) {
        let (control, inbox) = mpsc::unbounded_channel();
        let context = self.context.clone();
        self.runtime
            .spawn(worker::run(context, partition, queue, inbox));
        if let Some(old) = self.lock().insert(partition, control) {
            tracing::warn!(
                partition,
                "partition assigned twice; the old worker is dropped"
            );
            drop(old);
        }
    }

    fn revoked(&self, partitions: &[i32]) {
        let mut acks = Vec::new();
        for partition in partitions {
            if let Some(control) = self.lock().remove(partition) {
                let (ack, done) = std::sync::mpsc::sync_channel(1);
                if control.send(Control::Drain(ack)).is_ok() {
                    acks.push((*partition, done));
                }
            }
        }
        for (partition, done) in acks {
            if done.recv_timeout(DRAIN_TIMEOUT).is_err() {
                tracing::error!(
                    partition,
                    "partition did not drain in time; its last batch will be reprocessed"
                );
            }
        }
        self.context.model.readiness().revoked(partitions);
    }
}

/// Keeps the consumer reachable from workers without keeping it alive.
pub(crate) type ConsumerRef = OnceLock<Weak<IngestConsumer>>;
