//! The service's settings, layered: defaults < `--config` TOML file <
//! `LIVETALLY_*` environment variables < command-line flags.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use livetally_sink::RollupFormat;
use serde::{Deserialize, Serialize};

/// Delivery guarantee of `run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Offsets stored after publication: a crash may repeat rollup records,
    /// never lose one; figures stay exact through the state changelog.
    #[default]
    AtLeastOnce,
    /// Kafka transactions around rollups, changelog and offsets.
    ExactlyOnce,
}

/// Every setting of `run` (and of the engine inside `demo`). Field docs are
/// the user docs: each is also `--flag`, a TOML key and `LIVETALLY_<KEY>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Input topic of viewer events, keyed by `stream_id`.
    pub topic: String,
    /// Consumer group; instances with the same group share the partitions.
    pub group: String,
    /// Output topic of rollups.
    pub rollup_topic: String,
    /// Dead-letter topic for invalid records.
    pub dlq_topic: String,
    /// Compacted state changelog topic; default `<group>.changelog`.
    pub changelog_topic: Option<String>,
    /// HTTP listen address (API, dashboard, metrics).
    pub http: SocketAddr,
    /// Delivery guarantee.
    pub guarantee: Guarantee,
    /// Rollup value encoding: `json` or `protobuf`.
    pub rollup_format: RollupFormat,
    /// How often dirty streams are published, milliseconds.
    pub publish_interval_ms: u64,
    /// Commission rate: `0.1`, `10%`, `12.5%`.
    pub commission_rate: String,
    /// Largest accepted record value, bytes; larger ones are `too_large`.
    pub max_event_bytes: usize,
    /// How far ahead of the wall clock an event time may be, milliseconds.
    pub max_clock_skew_ms: i64,
    /// Create missing output topics (rollup, dead-letter, changelog) at start.
    pub create_topics: bool,
    /// Extra librdkafka properties for every client (TOML table only).
    pub kafka: std::collections::BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            brokers: "127.0.0.1:9092".into(),
            topic: "livetally.events".into(),
            group: "livetally".into(),
            rollup_topic: "livetally.rollups".into(),
            dlq_topic: "livetally.dlq".into(),
            changelog_topic: None,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            guarantee: Guarantee::AtLeastOnce,
            rollup_format: RollupFormat::Json,
            publish_interval_ms: 1000,
            commission_rate: "10%".into(),
            max_event_bytes: 65_536,
            max_clock_skew_ms: 300_000,
            create_topics: true,
            kafka: Default::default(),
        }
    }
}

impl Settings {
    /// Layers defaults, the optional TOML file, `LIVETALLY_*` variables and
    /// the flags given (`overrides` holds only flags that were set).
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("LIVETALLY_").ignore(&["log"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .context("invalid configuration")?;
        settings.commission()?;
        Ok(settings)
    }

    /// The changelog topic name.
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}.changelog", self.group))
    }

    /// The parsed commission rate.
    pub fn commission(&self) -> anyhow::Result<livetally_aggregator::CommissionRate> {
        self.commission_rate
            .parse()
            .map_err(|e| anyhow::anyhow!("commission_rate {:?}: {e}", self.commission_rate))
    }

    /// Extra librdkafka properties as pairs.
    pub fn kafka_extra(&self) -> Vec<(String, String)> {
        self.kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
