//! The service's settings, layered: defaults < `--config` TOML file <
//! `LIVETALLY_*` environment variables < command-line flags.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
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
    /// How often dirty streams are published to the rollup topic, milliseconds.
    pub publish_interval_ms: u64,
    /// How often dirty streams are shown to the API and its live feed,
    /// milliseconds: dashboards can move faster than the rollup topic is
    /// written. Default (and at most): the publish interval.
    pub live_interval_ms: Option<u64>,
    /// At-least-once: how often changed streams' checkpoints (and the input
    /// offsets they cover) are published, milliseconds. Exactly-once
    /// checkpoints with every publication, and a partition that is behind
    /// commits at most this often. Default: 5 s at-least-once, 1 s
    /// exactly-once ([`Settings::checkpoint_interval_ms()`]).
    pub checkpoint_interval_ms: Option<u64>,
    /// Commission rate: `0.1`, `10%`, `12.5%`.
    #[serde(deserialize_with = "livetally_aggregator::commission::rate_text")]
    pub commission_rate: String,
    /// Largest accepted record value, bytes; larger ones are `too_large`.
    pub max_event_bytes: usize,
    /// How far ahead of the wall clock an event time may be, milliseconds.
    pub max_clock_skew_ms: i64,
    /// Create missing output topics (rollup, dead-letter, changelog) at start.
    pub create_topics: bool,
    /// Tumbling window length, milliseconds.
    pub window_ms: i64,
    /// Watermark lag behind the newest event time, milliseconds.
    pub allowed_lateness_ms: i64,
    /// How long closed windows are kept for corrected revisions, milliseconds.
    pub window_retention_ms: i64,
    /// Event-time idleness after which a stream has ended, milliseconds.
    pub idle_timeout_ms: i64,
    /// Wall-clock quiet time after which a partition's event time moves on
    /// without events, at the wall clock's pace from its newest, milliseconds.
    pub idle_partition_ms: u64,
    /// Re-key input that is not keyed by `stream_id` through the internal
    /// topic `<group>.repartition` before aggregating it.
    pub repartition: bool,
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
            live_interval_ms: None,
            checkpoint_interval_ms: None,
            commission_rate: "10%".into(),
            max_event_bytes: 65_536,
            max_clock_skew_ms: 300_000,
            create_topics: true,
            window_ms: 60_000,
            allowed_lateness_ms: 5_000,
            window_retention_ms: 3_600_000,
            idle_timeout_ms: 1_800_000,
            idle_partition_ms: 30_000,
            repartition: false,
            kafka: Default::default(),
        }
    }
}

impl Settings {
    /// At-least-once checkpoints when none is set: as Kafka Streams, whose
    /// at-least-once commit interval is 30 s, a crash re-reads a few seconds
    /// of records rather than every second rewriting each changed stream's
    /// state (a catch-up of 3 M events wrote a third of the changelog, with
    /// 16 % less CPU, than at 1 s: `docs/BENCHMARKS.md`).
    pub const AT_LEAST_ONCE_CHECKPOINT_MS: u64 = 5_000;
    /// Exactly-once, when none is set: how often a partition that is behind
    /// commits, and so shows its figures.
    pub const EXACTLY_ONCE_BEHIND_MS: u64 = 1_000;

    /// The checkpoint interval in effect, milliseconds.
    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.checkpoint_interval_ms.unwrap_or(match self.guarantee {
            Guarantee::AtLeastOnce => Self::AT_LEAST_ONCE_CHECKPOINT_MS,
            Guarantee::ExactlyOnce => Self::EXACTLY_ONCE_BEHIND_MS,
        })
    }

    /// The keys read from `LIVETALLY_*` variables. Other variables with that
    /// prefix (`LIVETALLY_LOG`, a test harness's own) are not settings and are
    /// left alone rather than refused.
    const KEYS: [&'static str; 22] = [
        "brokers",
        "topic",
        "group",
        "rollup_topic",
        "dlq_topic",
        "changelog_topic",
        "http",
        "guarantee",
        "rollup_format",
        "publish_interval_ms",
        "live_interval_ms",
        "checkpoint_interval_ms",
        "commission_rate",
        "max_event_bytes",
        "max_clock_skew_ms",
        "create_topics",
        "window_ms",
        "allowed_lateness_ms",
        "window_retention_ms",
        "idle_timeout_ms",
        "idle_partition_ms",
        "repartition",
    ];

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
        // Lossy: a number or a boolean may come as text (the variables').
        let settings: Settings = figment
            .merge(Variables)
            .merge(Serialized::defaults(overrides))
            .extract_lossy()
            .context("invalid configuration")?;
        settings.aggregator()?;
        Ok(settings)
    }

    /// The changelog topic name.
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}.changelog", self.group))
    }

    /// The aggregation settings.
    pub fn aggregator(&self) -> anyhow::Result<livetally_aggregator::AggregatorConfig> {
        anyhow::ensure!(self.window_ms > 0, "window_ms must be positive");
        anyhow::ensure!(
            self.allowed_lateness_ms >= 0,
            "allowed_lateness_ms must not be negative"
        );
        anyhow::ensure!(
            self.window_retention_ms >= 0,
            "window_retention_ms must not be negative"
        );
        anyhow::ensure!(self.idle_timeout_ms > 0, "idle_timeout_ms must be positive");
        Ok(livetally_aggregator::AggregatorConfig {
            commission: self.commission()?,
            window_ms: self.window_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
            window_retention_ms: self.window_retention_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            ..Default::default()
        })
    }

    /// The decoder's limits.
    pub fn decoding(&self) -> livetally_ingest::DecodeConfig {
        livetally_ingest::DecodeConfig {
            max_event_bytes: self.max_event_bytes,
            max_future_skew_ms: self.max_clock_skew_ms,
        }
    }

    /// The parsed commission rate.
    pub fn commission(&self) -> anyhow::Result<livetally_aggregator::CommissionRate> {
        self.commission_rate
            .parse()
            .map_err(|e| anyhow::anyhow!("commission_rate {:?}: {e}", self.commission_rate))
    }

    /// A client configuration for the cluster: the brokers, the client's
    /// own `properties`, then `[kafka]`, which overrides them as it does
    /// for every client.
    pub fn client(&self, properties: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in properties {
            config.set(*key, *value);
        }
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        config
    }

    /// Extra librdkafka properties as pairs.
    pub fn kafka_extra(&self) -> Vec<(String, String)> {
        self.kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The `LIVETALLY_<KEY>` variables of [`Settings::KEYS`], each value the
/// text as given, trimmed, and without one pair of enclosing double quotes
/// (`LIVETALLY_GROUP='"42"'`, the way to give figment's `Env` a text it
/// would read as a number). figment's own `Env` reads `42` as a number and
/// `true` as a boolean, which a text setting then refuses
/// (`LIVETALLY_GROUP=42`, `LIVETALLY_COMMISSION_RATE=0.1`), and `1.50`
/// would lose its zero; the numeric and boolean settings take the text
/// through `extract_lossy`.
struct Variables;

const PREFIX: &str = "LIVETALLY_";

impl Provider for Variables {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, keys: &[&str]| {
                let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
                format!("{PREFIX}{}", keys.join("."))
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (name, value) in std::env::vars_os() {
            let Some(key) = name
                .to_str()
                .filter(|n| n.len() > PREFIX.len() && n.is_char_boundary(PREFIX.len()))
                .and_then(|n| {
                    let (prefix, key) = n.split_at(PREFIX.len());
                    prefix
                        .eq_ignore_ascii_case(PREFIX)
                        .then(|| key.to_ascii_lowercase())
                })
                .filter(|key| Settings::KEYS.contains(&key.as_str()))
            else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                figment::Error::from(format!("{} is not UTF-8", name.to_string_lossy()))
            })?;
            let text = value.trim();
            let text = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            dict.insert(key, Value::from(text.to_owned()));
        }
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
// figment's Jail returns its own large error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoFlags {}

    #[test]
    fn every_scalar_setting_is_an_environment_key() {
        let value = serde_json::to_value(Settings::default()).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.retain(|k| *k != "kafka");
        fields.sort_unstable();
        let mut keys = Settings::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    #[test]
    fn layers_file_environment_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "livetally.toml",
                "topic = \"from-file\"\ngroup = \"file-group\"\ncommission_rate = \"8%\"\n",
            )?;
            jail.set_env("LIVETALLY_GROUP", "env-group");
            jail.set_env("LIVETALLY_PUBLISH_INTERVAL_MS", "250");
            // Not a setting: must be ignored, not refused.
            jail.set_env("LIVETALLY_TEST_BROKERS", "127.0.0.1:1");
            #[derive(Serialize)]
            struct Flags {
                publish_interval_ms: u64,
            }
            let settings = Settings::load(
                Some(Path::new("livetally.toml")),
                &Flags {
                    publish_interval_ms: 100,
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(settings.topic, "from-file");
            assert_eq!(settings.group, "env-group", "environment beats the file");
            assert_eq!(
                settings.publish_interval_ms, 100,
                "flags beat the environment"
            );
            assert_eq!(settings.commission().unwrap().to_string(), "8%");
            assert_eq!(settings.changelog_topic(), "env-group.changelog");
            Ok(())
        });
    }

    #[test]
    fn variables_are_text_as_given_and_numbers_where_one_is_due() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LIVETALLY_COMMISSION_RATE", "0.125");
            jail.set_env("LIVETALLY_TOPIC", "2026");
            jail.set_env("LIVETALLY_GROUP", "1.50");
            jail.set_env("LIVETALLY_BROKERS", "true");
            jail.set_env("livetally_publish_interval_ms", "250");
            jail.set_env("LIVETALLY_CREATE_TOPICS", "false\r");
            jail.set_env("LIVETALLY_LIVE_INTERVAL_MS", " 20 ");
            jail.set_env("LIVETALLY_DLQ_TOPIC", "\"7\"");
            let settings = Settings::load(None, &NoFlags {}).map_err(|e| format!("{e:#}"))?;
            assert_eq!(settings.commission().unwrap().to_string(), "12.5%");
            assert_eq!(settings.topic, "2026");
            assert_eq!(settings.group, "1.50", "the text, not a float's");
            assert_eq!(settings.brokers, "true");
            assert_eq!(settings.publish_interval_ms, 250);
            assert!(!settings.create_topics);
            assert_eq!(settings.live_interval_ms, Some(20));
            assert_eq!(settings.dlq_topic, "7", "enclosing quotes go");
            Ok(())
        });
    }

    #[test]
    fn a_bare_number_is_a_commission_rate_in_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("livetally.toml", "commission_rate = 0.1\n")?;
            let settings = Settings::load(Some(Path::new("livetally.toml")), &NoFlags {})
                .map_err(|e| format!("{e:#}"))?;
            assert_eq!(settings.commission().unwrap().to_string(), "10%");
            Ok(())
        });
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LIVETALLY_COMMISSION_RATE", "150%");
            let error = Settings::load(None, &NoFlags {}).unwrap_err().to_string();
            assert!(error.contains("commission_rate"), "{error}");
            jail.set_env("LIVETALLY_COMMISSION_RATE", "10%");
            jail.set_env("LIVETALLY_PUBLISH_INTERVAL_MS", "soon");
            let error = format!("{:#}", Settings::load(None, &NoFlags {}).unwrap_err());
            assert!(error.contains("LIVETALLY_PUBLISH_INTERVAL_MS"), "{error}");
            Ok(())
        });
        let missing = Settings::load(Some(Path::new("/nonexistent/livetally.toml")), &NoFlags {});
        assert!(missing.unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn kafka_table_overrides_a_clients_own_properties() {
        let settings = Settings {
            brokers: "kafka-1:9092".into(),
            kafka: [("linger.ms".to_string(), "50".to_string())].into(),
            ..Settings::default()
        };
        let config = settings.client(&[("linger.ms", "5"), ("batch.size", "1000")]);
        assert_eq!(config.get("bootstrap.servers"), Some("kafka-1:9092"));
        assert_eq!(config.get("linger.ms"), Some("50"), "[kafka] comes last");
        assert_eq!(config.get("batch.size"), Some("1000"));
    }
}
