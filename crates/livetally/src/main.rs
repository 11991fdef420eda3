//! # livetally
//!
//! The one binary: `demo`, `run`, `gen` and `replay` (spec §4).
//!
//! ## Layout
//! - [`config`]: settings layered from defaults, TOML, environment and flags.
//! - [`engine`]: the service: consumer group → partition workers → publisher.
//! - [`service`]: `run` and `demo` around the engine (HTTP, signals).
//! - [`replay`]: the same aggregation over an NDJSON file.
//! - [`gen`] and [`traffic`]: the synthetic live-shopping load generator.

mod config;
mod engine;
mod gen;
mod replay;
mod service;
mod traffic;

use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use config::Guarantee;
use livetally_sink::RollupFormat;

/// mimalloc, for Rust's allocations and (its `override` feature) for
/// librdkafka's `malloc`/`free` as well: catching up, librdkafka allocates
/// and frees several blocks per record, and glibc's arenas took a lock for
/// each (docs/BENCHMARKS.md, "29 November, morning").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time live-shopping analytics from Kafka.
#[derive(Parser)]
#[command(name = "livetally", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline on this machine: embedded cluster, traffic, engine, dashboard.
    Demo(DemoArgs),
    /// The service: consume viewer events, publish rollups, serve the API.
    Run(Box<RunArgs>),
    /// Load generator: realistic funnels, duplicates, late and invalid records.
    Gen(gen::GenArgs),
    /// Aggregate NDJSON events from a file (or `-`) and print one rollup per stream.
    Replay(ReplayArgs),
}

/// Flags of `run`; each overrides the config file and the environment.
#[derive(Args, Serialize, Default)]
struct RunArgs {
    /// TOML config file.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    brokers: Option<String>,
    /// Input topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Consumer group.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Rollup topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rollup_topic: Option<String>,
    /// Dead-letter topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dlq_topic: Option<String>,
    /// State changelog topic (default `<group>.changelog`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    changelog_topic: Option<String>,
    /// HTTP listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<SocketAddr>,
    /// Delivery guarantee.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    guarantee: Option<Guarantee>,
    /// Rollup encoding: json or protobuf.
    #[arg(long, value_parser = parse_format)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rollup_format: Option<RollupFormat>,
    /// Publication interval in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_interval_ms: Option<u64>,
    /// Interval of updates to the API and live feed in milliseconds
    /// (default: the publication interval).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    live_interval_ms: Option<u64>,
    /// At-least-once: checkpoint (and offset) interval in milliseconds
    /// (default 5000). Exactly-once: how often a partition that is behind
    /// commits (default 1000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_interval_ms: Option<u64>,
    /// The aggregation's settings, shared with `replay`.
    #[command(flatten)]
    #[serde(flatten)]
    aggregation: AggregationArgs,
    /// Quiet time after which a partition's event time moves on without events (at the wall clock's pace from its newest), milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_partition_ms: Option<u64>,
    /// Re-key input not keyed by stream_id through an internal topic first.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    repartition: Option<bool>,
}

/// Flags of the aggregation, for `run` and `replay` alike; each overrides
/// the config file and the environment.
#[derive(Args, Serialize, Default)]
struct AggregationArgs {
    /// Commission rate (`0.1`, `10%`) [default: 10%].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    commission_rate: Option<String>,
    /// Largest accepted record, bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_event_bytes: Option<usize>,
    /// Allowed clock skew of event times, milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_clock_skew_ms: Option<i64>,
    /// Tumbling window length, milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    window_ms: Option<i64>,
    /// Watermark lag behind the newest event time, milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_lateness_ms: Option<i64>,
    /// How long closed windows are kept for corrections, milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    window_retention_ms: Option<i64>,
    /// Event-time idleness after which a stream has ended, milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_ms: Option<i64>,
}

fn parse_format(raw: &str) -> Result<RollupFormat, String> {
    match raw {
        "json" => Ok(RollupFormat::Json),
        "protobuf" => Ok(RollupFormat::Protobuf),
        other => Err(format!("unknown format {other:?}: json or protobuf")),
    }
}

/// Flags of `demo`. Its engine takes `run`'s settings from the config file
/// and `LIVETALLY_*` variables too, but for the brokers and `[kafka]` (its
/// own embedded cluster), the group and the publish interval.
#[derive(Args, Serialize)]
struct DemoArgs {
    /// TOML config file (`run`'s).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// HTTP listen address of the dashboard [default: $LIVETALLY_HTTP, else
    /// the config file's, else 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<SocketAddr>,
    /// Synthetic events per second.
    #[arg(long, default_value_t = 2000)]
    #[serde(skip)]
    rate: u64,
    /// Live streams in the synthetic traffic.
    #[arg(long, default_value_t = 40)]
    #[serde(skip)]
    streams: usize,
}

/// Flags of `replay`. Its settings come from the same places as `run`'s:
/// flags, `LIVETALLY_*` variables, the `--config` file (whose other keys it
/// ignores), so that a replay of `run`'s input counts as `run` did.
#[derive(Args, Serialize)]
struct ReplayArgs {
    /// NDJSON file of events, or `-` for standard input.
    #[serde(skip)]
    input: String,
    /// TOML config file (`run`'s; replay uses its aggregation keys).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    aggregation: AggregationArgs,
    /// Guard event times against this wall clock (epoch ms) as `run` does;
    /// `now` for the current time. Off by default.
    #[arg(long)]
    #[serde(skip)]
    now: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVETALLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("livetally: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay(args) => replay_command(args),
        Command::Run(args) => {
            let settings = config::Settings::load(args.config.as_deref(), &*args)?;
            runtime()?.block_on(service::run(settings))
        }
        Command::Demo(args) => {
            let settings = config::Settings::load(args.config.as_deref(), &args)?;
            runtime()?.block_on(service::demo(settings, args.rate, args.streams))
        }
        Command::Gen(args) => runtime()?.block_on(gen::run(args)),
    }
}

/// The wall clock in epoch milliseconds (0 before 1970).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let settings = config::Settings::load(args.config.as_deref(), &args)?;
    let aggregator = settings.aggregator()?;
    let now_ms = match args.now.as_deref() {
        None => None,
        Some("now") => Some(wall_clock_ms()),
        Some(ms) => Some(
            ms.parse()
                .context("--now takes epoch milliseconds or `now`")?,
        ),
    };
    let input: Box<dyn Read> = if args.input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.input).with_context(|| format!("open {}", args.input))?)
    };
    let decoding = settings.decoding();
    let (rollups, summary) = replay::aggregate(
        BufReader::with_capacity(1 << 20, input),
        aggregator,
        &decoding,
        now_ms,
    )?;
    replay::write_ndjson(&rollups, std::io::BufWriter::new(std::io::stdout().lock()))?;
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
