//! Start-up checks of the topics `run` uses, and creation of missing outputs.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::config::Settings;

/// Largest changelog record: the checkpoint of one stream, windows included.
pub const MAX_CHECKPOINT_BYTES: &str = "67108864";

/// Checks that the input topic exists and creates the rollup, dead-letter and
/// changelog topics when missing (when `create` is set). The changelog needs
/// at least as many partitions as the input: partition `p`'s state lives in
/// changelog partition `p`. Returns the input's partition count.
pub async fn ensure(settings: &Settings, create: bool) -> anyhow::Result<usize> {
    let extra = settings.kafka_extra();
    let input = partitions(&settings.brokers, &settings.topic, &extra)?;
    if input == 0 {
        bail!(
            "input topic {:?} does not exist on {}",
            settings.topic,
            settings.brokers
        );
    }
    let changelog = settings.changelog_topic();
    let mut missing = Vec::new();
    let internal = super::repartition::topic_for(&settings.group);
    let mut outputs = vec![
        (&settings.rollup_topic, false),
        (&settings.dlq_topic, false),
        (&changelog, true),
    ];
    if settings.repartition {
        outputs.push((&internal, false));
    }
    for (name, compact) in outputs {
        let have = partitions(&settings.brokers, name, &extra)?;
        if have == 0 {
            missing.push((name.clone(), compact));
        } else if compact && have < input {
            bail!("changelog topic {name:?} has {have} partitions; it needs {input}, one per input partition");
        }
    }
    if missing.is_empty() {
        return Ok(input);
    }
    if !create {
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        bail!("missing topics {names:?} (create them, or allow create_topics)");
    }
    let admin: AdminClient<DefaultClientContext> = settings
        .client(&[])
        .create()
        .context("create the admin client")?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(name, compact)| {
            let topic = NewTopic::new(name, input as i32, TopicReplication::Fixed(-1));
            if *compact {
                // One record holds one stream's whole state: allow big streams.
                topic
                    .set("cleanup.policy", "compact")
                    .set("max.message.bytes", MAX_CHECKPOINT_BYTES)
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(&new, &options)
        .await
        .context("create topics")?
    {
        match result {
            Ok(name) => tracing::info!(topic = name, partitions = input, "topic created"),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = name, "topic already exists")
            }
            Err((name, code)) => bail!("create topic {name:?}: {code}"),
        }
    }
    Ok(input)
}

fn partitions(brokers: &str, topic: &str, extra: &[(String, String)]) -> anyhow::Result<usize> {
    livetally_ingest::consumer::partition_count(brokers, topic, extra, Duration::from_secs(10))
        .with_context(|| format!("read metadata of {topic:?} from {brokers}"))
}
