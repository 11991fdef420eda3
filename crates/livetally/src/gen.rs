//! `livetally gen`: synthetic live-shopping traffic into a topic (or NDJSON).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::traffic::{Format, Traffic, TrafficConfig};

/// Flags of `gen`.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to produce to; created with `--partitions` when missing.
    #[arg(long, default_value = "livetally.events")]
    pub topic: String,
    /// Number of records to produce (default when neither this nor --rate is given: 100000).
    #[arg(long, conflicts_with = "rate")]
    pub events: Option<u64>,
    /// Records per second, with --duration.
    #[arg(long, requires = "duration")]
    pub rate: Option<u64>,
    /// How long to produce at --rate: `30s`, `5m`, `1h` or seconds.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Live streams.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Record encoding: json, protobuf or mixed.
    #[arg(long, default_value = "json", value_parser = parse_format)]
    pub format: Format,
    /// Random seed: the same seed and flags give the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first event, epoch ms (default: now).
    #[arg(long)]
    pub start_ts: Option<i64>,
    /// Fraction of records that re-send an earlier event.
    #[arg(long, default_value_t = 0.02)]
    pub duplicate_rate: f64,
    /// Fraction of records that are invalid.
    #[arg(long, default_value_t = 0.005)]
    pub invalid_rate: f64,
    /// Partitions of the topic if gen creates it.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Write NDJSON to this file (`-` for stdout) instead of Kafka (json format only).
    #[arg(long)]
    pub out: Option<String>,
}

fn parse_format(raw: &str) -> Result<Format, String> {
    match raw {
        "json" => Ok(Format::Json),
        "protobuf" => Ok(Format::Protobuf),
        "mixed" => Ok(Format::Mixed),
        other => Err(format!("unknown format {other:?}: json, protobuf or mixed")),
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {raw:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration unit in {raw:?}: ms, s, m or h")),
    }
}

impl GenArgs {
    /// The traffic model these flags describe.
    pub fn traffic(&self) -> TrafficConfig {
        let start_ts = self.start_ts.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        });
        TrafficConfig {
            seed: self.seed,
            streams: self.streams,
            start_ts,
            events_per_second: self.rate.unwrap_or(1000).max(1),
            duplicate_rate: self.duplicate_rate,
            invalid_rate: self.invalid_rate,
            format: self.format,
            ..TrafficConfig::default()
        }
    }

    fn total(&self) -> u64 {
        match (self.events, self.rate, self.duration) {
            (Some(n), _, _) => n,
            (None, Some(rate), Some(d)) => (rate as f64 * d.as_secs_f64()) as u64,
            _ => 100_000,
        }
    }
}

/// Runs `gen`.
pub async fn run(args: GenArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.duplicate_rate) || !(0.0..=1.0).contains(&args.invalid_rate) {
        bail!("--duplicate-rate and --invalid-rate are fractions from 0 to 1");
    }
    let total = args.total();
    if let Some(path) = &args.out {
        if args.format != Format::Json {
            bail!("--out writes NDJSON: use --format json");
        }
        let out: Box<dyn Write> = if path == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(path).with_context(|| format!("create {path}"))?)
        };
        let mut out = std::io::BufWriter::new(out);
        for record in Traffic::new(args.traffic()).take(total as usize) {
            out.write_all(&record.payload)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(());
    }
    ensure_topic(&args).await?;
    // Paced, gen stands in for live producers: librdkafka's default linger
    // (5 ms), so that batching adds no more delay than a real client's. A
    // bulk load batches longer, for throughput.
    let linger_ms = if args.rate.is_some() { "5" } else { "20" };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .context("create the producer")?;
    // The event clock starts now, not before the topic check and the
    // producer: paced records then carry a `ts` of when they are sent.
    let traffic = Traffic::new(args.traffic()).take(total as usize);
    let started = Instant::now();
    let sent = produce(&producer, &args.topic, traffic, args.rate).await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        serde_json::json!({"produced": sent, "topic": args.topic, "seconds": seconds, "records_per_second": (sent as f64 / seconds.max(1e-9)) as u64})
    );
    Ok(())
}

/// Produces every record, pacing to `rate` per second when given; returns
/// the count once all are acknowledged.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: impl Iterator<Item = crate::traffic::Record>,
    rate: Option<u64>,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut in_flight = Vec::with_capacity(10_000);
    let mut sent = 0u64;
    for record in records {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(2) {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let mut headers = OwnedHeaders::new();
        if let Some(ct) = record.content_type {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(ct),
            });
        }
        let mut pending = FutureRecord::to(topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(headers);
        loop {
            match producer.send_result(pending) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    pending = back;
                    settle(&mut in_flight).await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return Err(error).context("produce"),
            }
        }
        sent += 1;
        if in_flight.len() >= 10_000 {
            settle(&mut in_flight).await?;
        }
    }
    settle(&mut in_flight).await?;
    Ok(sent)
}

async fn settle(in_flight: &mut Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    for result in join_all(in_flight.drain(..)).await {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error).context("delivery failed"),
            Err(_) => anyhow::bail!("producer closed before delivery"),
        }
    }
    Ok(())
}

async fn ensure_topic(args: &GenArgs) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let existing = livetally_ingest::consumer::partition_count(
        &args.brokers,
        &args.topic,
        &[],
        Duration::from_secs(10),
    )
    .with_context(|| format!("read metadata from {}", args.brokers))?;
    if existing > 0 {
        return Ok(());
    }
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("create topic {name:?}: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
