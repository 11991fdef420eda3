//! `livetally gen`: synthetic live-shopping traffic into a topic (or NDJSON).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::FutureExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::config::Settings;
use crate::traffic::{Format, Traffic, TrafficConfig};

/// Flags of `gen`.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// TOML config file (`run`'s: gen uses its `brokers`, `topic` and `[kafka]`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers [default: $LIVETALLY_BROKERS, else the config
    /// file's, else 127.0.0.1:9092].
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to produce to; created with `--partitions` when missing
    /// [default: $LIVETALLY_TOPIC, else the config file's, else livetally.events].
    #[arg(long)]
    pub topic: Option<String>,
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
    /// The traffic model these flags describe, its event clock starting at
    /// `now_ms` unless `--start-ts` says otherwise.
    pub fn traffic(&self, now_ms: i64) -> TrafficConfig {
        TrafficConfig {
            seed: self.seed,
            streams: self.streams,
            start_ts: self.start_ts.unwrap_or(now_ms),
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

/// Where gen writes (`brokers`, `topic`, `[kafka]`), from its flags and
/// `run`'s settings: flags over `LIVETALLY_*` variables over the config file
/// over the defaults.
fn target(args: &GenArgs) -> anyhow::Result<Settings> {
    #[derive(Serialize)]
    struct Flags<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        brokers: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
    }
    let flags = Flags {
        brokers: args.brokers.as_deref(),
        topic: args.topic.as_deref(),
    };
    Settings::load(args.config.as_deref(), &flags)
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
        for record in Traffic::new(args.traffic(clock_now().0)).take(total as usize) {
            out.write_all(&record.payload)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(());
    }
    let target = target(&args)?;
    ensure_topic(&target, args.partitions).await?;
    // Paced, gen stands in for live producers: librdkafka's default linger
    // (5 ms), so that batching adds no more delay than a real client's. A
    // bulk load batches longer, for throughput.
    let linger_ms = if args.rate.is_some() { "5" } else { "20" };
    let producer: FutureProducer = target
        .client(&[
            ("enable.idempotence", "true"),
            ("linger.ms", linger_ms),
            ("batch.size", "1000000"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "500000"),
        ])
        .create()
        .context("create the producer")?;
    // The event clock starts now, not before the topic check and the
    // producer, and paced records are due from the instant its start was
    // read: a paced record is sent when its `ts` comes, however long
    // building the traffic model took.
    let (now_ms, clock_started) = clock_now();
    let traffic = Traffic::new(args.traffic(now_ms)).take(total as usize);
    let pace = args.rate.map(|rate| Pace {
        per_second: rate,
        from: clock_started,
    });
    let sent = produce(&producer, &target.topic, traffic, pace).await?;
    let seconds = clock_started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        serde_json::json!({"produced": sent, "topic": target.topic, "seconds": seconds, "records_per_second": (sent as f64 / seconds.max(1e-9)) as u64})
    );
    Ok(())
}

/// The wall clock in epoch ms, and the monotonic instant read with it: an
/// event clock that starts at that ms paces its records from that instant.
pub fn clock_now() -> (i64, Instant) {
    let instant = Instant::now();
    (crate::wall_clock_ms(), instant)
}

/// When paced records are due: record `n` at `from` + `n / per_second`,
/// the moment its event clock gives it as `ts`.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub per_second: u64,
    pub from: Instant,
}

impl Pace {
    /// How long after `from` record `n` is due.
    fn due(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.per_second.max(1) as f64)
    }

    /// How long to wait before record `n`, `elapsed` after `from`: `None`
    /// once it is due. Never sends a record early.
    fn wait_before(&self, n: u64, elapsed: Duration) -> Option<Duration> {
        let due = self.due(n);
        (due > elapsed).then(|| due - elapsed)
    }
}

/// Records handed to librdkafka and not yet acknowledged at most: past
/// this, gen waits for the oldest (2 s of records at 50,000 a second).
const MAX_IN_FLIGHT: usize = 100_000;

/// Produces every record, each no earlier than `pace` makes it due; returns
/// the count once all are acknowledged. Acknowledgements are taken as they
/// arrive, so waiting for them never holds a due record back (unless
/// [`MAX_IN_FLIGHT`] are outstanding).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: impl Iterator<Item = crate::traffic::Record>,
    pace: Option<Pace>,
) -> anyhow::Result<u64> {
    let mut in_flight = InFlight::default();
    let mut sent = 0u64;
    for record in records {
        // Sleeps last a millisecond at least: the records due meanwhile
        // then go out together, none before its time.
        if let Some(wait) = pace.and_then(|pace| pace.wait_before(sent, pace.from.elapsed())) {
            tokio::time::sleep(wait).await;
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
                    in_flight.0.push_back(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    pending = back;
                    if !in_flight.wait_oldest().await? {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err((error, _)) => return Err(error).context("produce"),
            }
        }
        sent += 1;
        in_flight.take_arrived()?;
        if in_flight.0.len() >= MAX_IN_FLIGHT {
            in_flight.wait_oldest().await?;
        }
    }
    while in_flight.wait_oldest().await? {}
    Ok(sent)
}

/// Deliveries not yet taken, oldest first.
#[derive(Default)]
struct InFlight(VecDeque<DeliveryFuture>);

impl InFlight {
    /// Takes the acknowledgements that have arrived, oldest first, without
    /// waiting; an error if a record failed.
    fn take_arrived(&mut self) -> anyhow::Result<()> {
        while let Some(oldest) = self.0.front_mut() {
            let Some(result) = oldest.now_or_never() else {
                break;
            };
            self.0.pop_front();
            delivered(result)?;
        }
        Ok(())
    }

    /// Waits for the oldest acknowledgement; false if none is outstanding.
    async fn wait_oldest(&mut self) -> anyhow::Result<bool> {
        match self.0.pop_front() {
            Some(oldest) => delivered(oldest.await).map(|()| true),
            None => Ok(false),
        }
    }
}

fn delivered(result: <DeliveryFuture as std::future::Future>::Output) -> anyhow::Result<()> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error).context("delivery failed"),
        Err(_) => anyhow::bail!("producer closed before delivery"),
    }
}

async fn ensure_topic(target: &Settings, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let existing = livetally_ingest::consumer::partition_count(
        &target.brokers,
        &target.topic,
        &target.kafka_extra(),
        Duration::from_secs(10),
    )
    .with_context(|| format!("read metadata from {}", target.brokers))?;
    if existing > 0 {
        return Ok(());
    }
    let admin: AdminClient<_> = target.client(&[]).create()?;
    let topic = NewTopic::new(&target.topic, partitions, TopicReplication::Fixed(-1));
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
    use rdkafka::ClientConfig;

    #[test]
    fn a_paced_record_waits_until_it_is_due_and_never_goes_early() {
        let pace = Pace {
            per_second: 50_000,
            from: Instant::now(),
        };
        let ms = Duration::from_millis;
        // Record 500 is due 10 ms after the clock started.
        assert_eq!(pace.due(500), ms(10));
        assert_eq!(pace.wait_before(500, ms(0)), Some(ms(10)));
        assert_eq!(pace.wait_before(500, ms(9)), Some(ms(1)));
        assert_eq!(
            pace.wait_before(500, Duration::from_micros(9_999)),
            Some(Duration::from_micros(1))
        );
        assert_eq!(pace.wait_before(500, ms(10)), None);
        // Behind (a slow start, a stall): sent at once, to catch up.
        assert_eq!(pace.wait_before(500, ms(250)), None);
    }

    /// Against librdkafka's mock cluster: every record is delivered, and
    /// none was handed to the producer (its `CreateTime`) before its `ts`
    /// came, the generator's jitter aside. The event clock started 200 ms
    /// before the first send, as a slow start would have it: the records
    /// due by then go out at once, the rest on time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paced_records_are_all_delivered_none_before_their_ts() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;

        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("paced", 2, 1).expect("topic");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let (now_ms, now) = clock_now();
        let (start_ms, from) = (now_ms - 200, now - Duration::from_millis(200));
        let config = TrafficConfig {
            streams: 5,
            start_ts: start_ms,
            events_per_second: 2_000,
            ..TrafficConfig::default()
        };
        let total = 800;
        let records = Traffic::new(config).take(total);
        let pace = Pace {
            per_second: 2_000,
            from,
        };
        let sent = produce(&producer, "paced", records, Some(pace))
            .await
            .expect("produce");
        assert_eq!(sent, total as u64);

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "paced-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&["paced"]).expect("subscribe");
        let (mut read, mut checked) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while read < total && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("read");
            read += 1;
            let created = message.timestamp().to_millis().expect("CreateTime");
            if let Some(ts) = message.payload().and_then(json_ts) {
                // ms floors on both clocks: one ms of slack.
                assert!(
                    created >= ts - crate::traffic::JITTER_MS as i64 - 1,
                    "record sent at {created}, before its ts {ts}"
                );
                checked += 1;
            }
        }
        assert_eq!(read, total, "every record delivered");
        assert!(checked > total / 2, "most records carry a numeric ts");
    }

    /// The numeric `ts` of a JSON record; `None` for protobuf, invalid or
    /// RFC 3339 ones.
    fn json_ts(payload: &[u8]) -> Option<i64> {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        value.get("ts")?.as_i64()
    }

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
