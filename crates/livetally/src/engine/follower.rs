//! The rollup follower: every instance reads the whole rollup topic
//! (read committed) into its read model, so that its API and dashboard answer
//! for every stream, not only for the partitions it owns.
//!
//! Why a read model from the topic rather than routing to the owner: Kafka
//! gives no instance the others' HTTP addresses, the topic already carries
//! every figure (and each stream's top products), and a read path that does
//! not depend on other instances being up keeps serving through rebalances and
//! crashes. The cost is one extra consumer per instance and a delay of one
//! publication for streams owned elsewhere.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use livetally_aggregator::{RollupKind, StreamRollup};
use livetally_sink::{ReadModel, RollupFormat};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Windows kept per stream while its first cumulative rollup is not read yet.
const MAX_PENDING_WINDOWS: usize = 120;

/// A running follower; dropping it stops it.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Starts reading `topic` from its beginning into `model`.
    /// `input_topic` is only named in warnings. Rollups published by
    /// `own_instance` (this process) are already in the model and are not
    /// decoded again.
    pub fn start(
        brokers: &str,
        topic: &str,
        input_topic: &str,
        extra: &[(String, String)],
        own_instance: &str,
        model: Arc<ReadModel>,
    ) -> anyhow::Result<Follower> {
        let consumer: BaseConsumer =
            super::restore::committed_reader(brokers, "livetally-follower", extra)
                .create()
                .context("create the rollup follower")?;
        let partitions = livetally_ingest::consumer::partition_count(
            brokers,
            topic,
            extra,
            Duration::from_secs(10),
        )
        .context("read the rollup topic's metadata")?;
        let mut tpl = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&tpl).context("assign the rollup topic")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let input_topic = input_topic.to_owned();
            let own_instance = own_instance.to_owned();
            std::thread::Builder::new()
                .name("livetally-follower".into())
                .spawn(move || follow(consumer, model, stop, input_topic, own_instance))
                .context("start the follower thread")?
        };
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Remembers each stream's input partition and says when one shows up on a
/// second: its events are not all keyed by `stream_id`, so no single
/// partition sees all of them and its figures are split.
#[derive(Default)]
struct SplitStreams {
    partition_of: HashMap<String, i32>,
    reported: HashSet<String>,
}

impl SplitStreams {
    fn saw(&mut self, stream_id: &str, partition: i32, topic: &str) {
        match self.partition_of.get(stream_id) {
            None => {
                self.partition_of.insert(stream_id.to_owned(), partition);
            }
            Some(&first) if first != partition && self.reported.insert(stream_id.to_owned()) => {
                metrics::counter!(livetally_sink::metrics::STREAMS_SPLIT).increment(1);
                tracing::warn!(
                    stream_id,
                    first,
                    partition,
                    topic,
                    "stream seen on two input partitions: its records are not keyed by stream_id; \
                     re-key the input by stream_id, or run with --repartition"
                );
            }
            Some(_) => {}
        }
    }
}

/// What a rollup record's headers say about where it comes from.
#[derive(Debug, Default, PartialEq, Eq)]
struct Origin {
    content_type: Option<String>,
    /// The input partition whose events it counts.
    input_partition: Option<i32>,
    /// The process that published it.
    instance: Option<String>,
}

impl Origin {
    fn of<H: Headers>(headers: Option<&H>) -> Origin {
        let mut origin = Origin::default();
        let Some(headers) = headers else {
            return origin;
        };
        for header in headers.iter() {
            let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            if header
                .key
                .eq_ignore_ascii_case(livetally_sink::kafka::headers::CONTENT_TYPE)
            {
                origin.content_type = Some(value.to_owned());
            } else if header.key == livetally_sink::kafka::headers::INPUT_PARTITION {
                origin.input_partition = value.parse().ok();
            } else if header.key == livetally_sink::kafka::headers::INSTANCE {
                origin.instance = Some(value.to_owned());
            }
        }
        origin
    }
}

fn follow(
    consumer: BaseConsumer,
    model: Arc<ReadModel>,
    stop: Arc<AtomicBool>,
    input_topic: String,
    own_instance: String,
) {
    // Windows of streams whose cumulative rollup was not read yet (a stream's
    // windows are published just before its cumulative rollup).
    let mut early: HashMap<String, Vec<StreamRollup>> = HashMap::new();
    let mut split = SplitStreams::default();
    while !stop.load(Ordering::Acquire) {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "rollup follower");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let origin = Origin::of(message.headers());
        // The split check needs only the key and the input partition, so it
        // sees every rollup, this instance's own included.
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        if let (Some(stream_id), Some(partition)) = (key, origin.input_partition) {
            split.saw(stream_id, partition, &input_topic);
        }
        if origin.instance.as_deref() == Some(own_instance.as_str()) {
            // Published by this process, which put it in the model first.
            continue;
        }
        let Some(payload) = message.payload() else {
            continue;
        };
        let format =
            RollupFormat::from_content_type(origin.content_type.as_deref().map(str::as_bytes));
        let rollup = match format.decode(payload) {
            Ok(rollup) => rollup,
            Err(error) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), %error, "unreadable rollup");
                continue;
            }
        };
        let stream_id = rollup.stream_id.clone();
        let kind = rollup.kind;
        if key.is_none() {
            if let Some(partition) = origin.input_partition {
                split.saw(&stream_id, partition, &input_topic);
            }
        }
        if !model.merge(rollup.clone()) && kind == RollupKind::Window && !model.contains(&stream_id)
        {
            let waiting = early.entry(stream_id.clone()).or_default();
            if waiting.len() < MAX_PENDING_WINDOWS {
                waiting.push(rollup);
            }
        }
        if kind == RollupKind::Cumulative {
            for window in early.remove(&stream_id).unwrap_or_default() {
                model.merge(window);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollup_says_where_it_comes_from() {
        use livetally_sink::kafka::headers;
        use rdkafka::message::{Header, OwnedHeaders};
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "Content-Type",
                value: Some("application/x-protobuf"),
            })
            .insert(Header {
                key: headers::INPUT_PARTITION,
                value: Some("7"),
            })
            .insert(Header {
                key: headers::INSTANCE,
                value: Some("1f-abc"),
            });
        assert_eq!(
            Origin::of(Some(&headers)),
            Origin {
                content_type: Some("application/x-protobuf".into()),
                input_partition: Some(7),
                instance: Some("1f-abc".into()),
            }
        );
        assert_eq!(Origin::of::<OwnedHeaders>(None), Origin::default());
    }

    #[test]
    fn a_stream_on_two_partitions_is_reported_once() {
        let mut split = SplitStreams::default();
        split.saw("a", 0, "t");
        split.saw("a", 0, "t");
        split.saw("b", 1, "t");
        assert!(split.reported.is_empty(), "one partition each: fine");
        split.saw("a", 2, "t");
        split.saw("a", 3, "t");
        assert_eq!(split.reported.len(), 1);
        assert!(split.reported.contains("a"));
    }
}
