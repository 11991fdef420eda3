//! The physical limit of a consumer on this machine and broker: an rdkafka
//! `BaseConsumer` that reads every record of a topic and does nothing else.
//!
//! ```sh
//! cargo run --release -p livetally --example bare_consume -- \
//!     --brokers 127.0.0.1:9092 --topic events --expected 10000000 \
//!     --set fetch.queue.backoff.ms=10
//! # stdout: {"records":10000000,"seconds":5.5,"bytes":1574723196,...}
//! ```
//!
//! It is the limit `make bench-e2e` (`benches/e2e/run.py`) measures
//! `livetally run` against: one thread polling one consumer queue, nothing
//! done with the records but touching each payload (the lengths are summed
//! and one byte of each is read, so the records really are delivered to the
//! application). It does not join a group: it assigns every partition of the
//! topic from the beginning, so there is no rebalance wait (livetally pays
//! one; the harness reports it).
//!
//! Settings are librdkafka's defaults plus `--set key=value` (repeatable).
//! The harness passes `--set fetch.queue.backoff.ms=10`: with every partition
//! feeding one queue, the default 1 s fetch back-off (taken whenever the
//! queue holds `queued.min.messages`) leaves the fetcher idle most of the time
//! and caps a do-nothing consumer at about a fifth of what the broker
//! delivers, below livetally itself (which reads one queue per partition, so
//! its thresholds apply per partition). The harness also runs it once with
//! the defaults, for the record.
//!
//! `seconds` runs from the start of the process to the N-th record.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

struct Args {
    brokers: String,
    topic: String,
    expected: u64,
    timeout: Duration,
    /// Extra librdkafka properties (`--set key=value`, repeatable), applied last.
    extra: Vec<(String, String)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut brokers = "127.0.0.1:9092".to_string();
    let mut topic = None;
    let mut expected = None;
    let mut timeout = Duration::from_secs(3600);
    let mut extra = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => brokers = value()?,
            "--topic" => topic = Some(value()?),
            "--expected" => expected = Some(value()?.parse().context("--expected N")?),
            "--set" => {
                let pair = value()?;
                let (k, v) = pair.split_once('=').context("--set key=value")?;
                extra.push((k.to_string(), v.to_string()));
            }
            "--timeout-secs" => {
                timeout = Duration::from_secs(value()?.parse().context("--timeout-secs N")?)
            }
            "-h" | "--help" => {
                println!(
                    "bare_consume --brokers B --topic T --expected N [--timeout-secs S] [--set k=v]...\n\
                     Reads N records from every partition of T from the beginning, does nothing\n\
                     with them, prints {{\"records\",\"seconds\",\"bytes\"}} as JSON."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        brokers,
        topic: topic.context("--topic is required")?,
        expected: expected.context("--expected is required")?,
        timeout,
        extra,
    })
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = parse_args()?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        // Never used to commit: the partitions are assigned, not subscribed.
        .set("group.id", format!("bare-consume-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (k, v) in &args.extra {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().context("create the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))
        .context("read the topic's metadata")?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {:?} not found", args.topic);
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(&args.topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment).context("assign")?;

    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut fold = 0u64;
    let mut first_record = None;
    while records < args.expected {
        if started.elapsed() > args.timeout {
            bail!("timed out after {records} of {} records", args.expected);
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                if first_record.is_none() {
                    first_record = Some(started.elapsed());
                }
                if let Some(payload) = message.payload() {
                    bytes += payload.len() as u64;
                    fold = fold.wrapping_add(u64::from(
                        payload.get(payload.len() / 2).copied().unwrap_or(0),
                    ));
                }
                records += 1;
            }
            Some(Err(error)) => eprintln!("bare_consume: {error}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "records": records,
            "seconds": seconds,
            "bytes": bytes,
            "partitions": partitions,
            "first_record_seconds": first_record.map(|d| d.as_secs_f64()),
            "records_per_second": records as f64 / seconds.max(1e-9),
            "fold": fold,
        })
    );
    Ok(())
}
