//! `run` and `demo`: the engine with its HTTP API, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use livetally_ingest::consumer::ConsumerSettings;
use livetally_sink::http::{self, ApiState};
use livetally_sink::{PublisherConfig, ReadModel};
use tokio::sync::watch;

use crate::config::{Guarantee, Settings};
use crate::engine::follower::Follower;
use crate::engine::{repartition, topics, Engine, EngineConfig};

/// Runs the service until SIGTERM or Ctrl-C, then drains, commits and returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = livetally_sink::metrics::install();
    topics::ensure(&settings, settings.create_topics).await?;
    let model = Arc::new(ReadModel::new());
    let (stop_http, http_stopped) = watch::channel(false);
    let (addr, server) = serve_http(settings.http, model.clone(), metrics, http_stopped).await?;
    tracing::info!(%addr, topic = settings.topic, group = settings.group, "livetally running");
    eprintln!("livetally: serving http://{addr}/");
    let (stop_repartition, repartition_stopped) = watch::channel(false);
    let mut config = engine_config(&settings)?;
    let repartitioner = if settings.repartition {
        let internal = repartition::topic_for(&settings.group);
        config.consumer.topic = internal.clone();
        tracing::info!(
            input = settings.topic,
            internal,
            "re-keying the input by stream_id"
        );
        Some(tokio::spawn(repartition_until_stopped(
            settings.clone(),
            internal,
            repartition_stopped,
        )))
    } else {
        None
    };
    let instance = config.publisher.instance_id.clone();
    let engine = Engine::start(config, model.clone())?;
    let follower = Follower::start(
        &settings.brokers,
        &settings.rollup_topic,
        &settings.topic,
        &settings.kafka_extra(),
        &instance,
        model,
    )?;
    let server = tokio::spawn(server);
    shutdown_signal().await;
    drop(follower);
    tracing::info!("shutting down: draining partitions");
    let _ = stop_repartition.send(true);
    if let Some(task) = repartitioner {
        let _ = task.await;
    }
    engine.shutdown().await;
    let _ = stop_http.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the repartition step, restarting it after a failure, until stopped.
async fn repartition_until_stopped(
    settings: Settings,
    internal: String,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let result = repartition::run(
            settings.brokers.clone(),
            settings.topic.clone(),
            internal.clone(),
            settings.group.clone(),
            settings.kafka_extra(),
            stop.clone(),
        )
        .await;
        if let Err(error) = result {
            tracing::warn!(
                error = format!("{error:#}"),
                "repartition step failed; restarting"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A random id for this process, written on its rollups: the process id and
/// the start time are unique enough among the instances of one group.
fn instance_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}

/// The engine's configuration from the settings.
pub fn engine_config(settings: &Settings) -> anyhow::Result<EngineConfig> {
    let extra = settings.kafka_extra();
    let exactly_once = settings.guarantee == Guarantee::ExactlyOnce;
    let mut consumer_extra = Vec::new();
    if exactly_once {
        // Offsets are committed inside each partition's transaction.
        consumer_extra.push(("enable.auto.commit".to_string(), "false".to_string()));
        consumer_extra.push(("isolation.level".to_string(), "read_committed".to_string()));
    }
    consumer_extra.extend(extra.iter().cloned());
    Ok(EngineConfig {
        consumer: ConsumerSettings {
            brokers: settings.brokers.clone(),
            topic: settings.topic.clone(),
            group: settings.group.clone(),
            extra: consumer_extra,
        },
        publisher: PublisherConfig {
            brokers: settings.brokers.clone(),
            rollup_topic: settings.rollup_topic.clone(),
            dlq_topic: settings.dlq_topic.clone(),
            changelog_topic: settings.changelog_topic(),
            format: settings.rollup_format,
            extra,
            transactional_id: None,
            instance_id: instance_id(),
        },
        aggregator: settings.aggregator()?,
        decode: settings.decoding(),
        publish_interval: Duration::from_millis(settings.publish_interval_ms.max(1)),
        live_interval: Duration::from_millis(
            settings
                .live_interval_ms
                .unwrap_or(settings.publish_interval_ms)
                .clamp(1, settings.publish_interval_ms.max(1)),
        ),
        checkpoint_interval: Duration::from_millis(settings.checkpoint_interval_ms()),
        clock_guard: true,
        idle_partition: Duration::from_millis(settings.idle_partition_ms.max(1)),
        exactly_once,
    })
}

/// Serves the API on its own thread and single-threaded runtime, so that
/// health checks, `/metrics` and the live feed answer promptly while the
/// partition workers keep the main runtime busy (a catch-up publishes
/// thousands of streams at a time). Returns the bound address and a future
/// that ends when the server has stopped.
async fn serve_http(
    addr: SocketAddr,
    model: Arc<ReadModel>,
    metrics: livetally_sink::metrics::PrometheusHandle,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("livetally-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = bound_tx.send(Err(error));
                    return;
                }
            };
            let result = runtime.block_on(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                match http::serve(addr, ApiState { model, metrics }, shutdown).await {
                    Ok((local, server)) => {
                        let _ = bound_tx.send(Ok(local));
                        server.await
                    }
                    Err(error) => {
                        let _ = bound_tx.send(Err(error));
                        Ok(())
                    }
                }
            });
            let _ = done_tx.send(result);
        })
        .context("start the HTTP thread")?;
    let local = bound_rx
        .await
        .context("the HTTP thread stopped before listening")?
        .with_context(|| format!("listen on {addr}"))?;
    let server = async move {
        done_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the HTTP thread panicked")))
    };
    Ok((local, server))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `demo`: librdkafka's in-process mock cluster, the traffic generator at
/// `rate` events/s over `streams` streams, the engine and the dashboard.
pub async fn demo(settings: Settings, rate: u64, streams: usize) -> anyhow::Result<()> {
    let cluster =
        rdkafka::mocking::MockCluster::new(1).context("start the embedded Kafka cluster")?;
    let brokers = cluster.bootstrap_servers();
    let settings = Settings {
        brokers: brokers.clone(),
        group: "livetally-demo".into(),
        publish_interval_ms: 500,
        // The embedded cluster takes plaintext, whatever a real one needs.
        kafka: Default::default(),
        ..settings
    };
    const PARTITIONS: i32 = 4;
    for topic in [
        &settings.topic,
        &settings.rollup_topic,
        &settings.dlq_topic,
        &settings.changelog_topic(),
    ] {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("create {topic}"))?;
    }
    let metrics = livetally_sink::metrics::install();
    let model = Arc::new(ReadModel::new());
    let (stop_http, http_stopped) = watch::channel(false);
    let (addr, server) = serve_http(settings.http, model.clone(), metrics, http_stopped).await?;
    let server = tokio::spawn(server);
    let engine = Engine::start(engine_config(&settings)?, model)?;
    let generator = tokio::spawn(demo_traffic(brokers, settings.topic.clone(), rate, streams));
    eprintln!("livetally: serving http://{addr}/");
    println!("livetally demo: open http://{addr}/  (Ctrl-C to stop)");
    shutdown_signal().await;
    generator.abort();
    engine.shutdown().await;
    let _ = stop_http.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    drop(cluster);
    Ok(())
}

async fn demo_traffic(brokers: String, topic: String, rate: u64, streams: usize) {
    let (start_ts, clock_started) = crate::gen::clock_now();
    let config = crate::traffic::TrafficConfig {
        seed: start_ts as u64,
        streams,
        start_ts,
        events_per_second: rate.max(1),
        ..crate::traffic::TrafficConfig::default()
    };
    let producer: rdkafka::producer::FutureProducer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(error) => {
            tracing::error!(%error, "demo traffic cannot start");
            return;
        }
    };
    if let Err(error) = crate::gen::produce(
        &producer,
        &topic,
        crate::traffic::Traffic::new(config),
        Some(crate::gen::Pace {
            per_second: rate.max(1),
            from: clock_started,
        }),
    )
    .await
    {
        tracing::error!(%error, "demo traffic stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(guarantee: Guarantee, publish_ms: u64, checkpoint_ms: u64) -> EngineConfig {
        config_live(guarantee, None, publish_ms, checkpoint_ms)
    }

    fn config_live(
        guarantee: Guarantee,
        live_ms: Option<u64>,
        publish_ms: u64,
        checkpoint_ms: u64,
    ) -> EngineConfig {
        let settings = Settings {
            guarantee,
            live_interval_ms: live_ms,
            publish_interval_ms: publish_ms,
            checkpoint_interval_ms: Some(checkpoint_ms),
            ..Settings::default()
        };
        engine_config(&settings).expect("valid settings")
    }

    #[test]
    fn checkpoints_default_to_every_5_s_at_least_once_and_1_s_when_behind_exactly_once() {
        let default = |guarantee| {
            let settings = Settings {
                guarantee,
                ..Settings::default()
            };
            engine_config(&settings).expect("valid").checkpoint_interval
        };
        assert_eq!(default(Guarantee::AtLeastOnce), Duration::from_secs(5));
        assert_eq!(default(Guarantee::ExactlyOnce), Duration::from_secs(1));
        for guarantee in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce] {
            let set = config_with(guarantee, 1000, 250).checkpoint_interval;
            assert_eq!(set, Duration::from_millis(250));
        }
    }

    #[test]
    fn restored_revisions_skip_what_may_have_followed_the_checkpoint() {
        // Checkpoints with every publication: only those in flight.
        let in_flight = crate::engine::MAX_IN_FLIGHT as u64;
        let same = config_with(Guarantee::AtLeastOnce, 1000, 1000);
        assert_eq!(same.revisions_between_checkpoints(), in_flight);
        assert_eq!(
            config_with(Guarantee::AtLeastOnce, 1000, 10).revisions_between_checkpoints(),
            in_flight
        );
        // 20 ms publications, 1 s checkpoints: 50 ticks, plus a late one and
        // a drain, plus those in flight.
        let decoupled = config_with(Guarantee::AtLeastOnce, 20, 1000);
        assert_eq!(decoupled.checkpoint_interval, Duration::from_secs(1));
        assert_eq!(decoupled.revisions_between_checkpoints(), 52 + in_flight);
        assert_eq!(
            config_with(Guarantee::AtLeastOnce, 30, 1000).revisions_between_checkpoints(),
            36 + in_flight
        );
        // Exactly-once checkpoints in every transaction, whatever the setting.
        assert_eq!(
            config_with(Guarantee::ExactlyOnce, 20, 1000).revisions_between_checkpoints(),
            0
        );
    }

    #[test]
    fn live_updates_between_publications_are_revisions_to_skip_too() {
        let live = |guarantee, live_ms, publish_ms| {
            config_live(guarantee, Some(live_ms), publish_ms, 1000)
        };
        let in_flight = crate::engine::MAX_IN_FLIGHT as u64;
        // 20 ms live updates, rollups and checkpoints every second: 50 live
        // revisions per checkpoint, plus a late tick, a drain and those in flight.
        let alo = live(Guarantee::AtLeastOnce, 20, 1000);
        assert_eq!(alo.live_interval, Duration::from_millis(20));
        assert_eq!(alo.revisions_between_checkpoints(), 52 + in_flight);
        // Checkpoints go out with publications: every 5 s, not every second.
        assert_eq!(
            live(Guarantee::AtLeastOnce, 20, 5000).revisions_between_checkpoints(),
            252 + in_flight
        );
        // Exactly-once: the live revisions between two transactions.
        assert_eq!(
            live(Guarantee::ExactlyOnce, 20, 100).revisions_between_checkpoints(),
            7
        );
        // The live interval is at most the publish interval, and defaults to it.
        assert_eq!(
            live(Guarantee::AtLeastOnce, 5000, 1000).live_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            config_with(Guarantee::AtLeastOnce, 300, 1000).live_interval,
            Duration::from_millis(300)
        );
    }

    /// A blocking HTTP/1.1 GET with a 5 s timeout: the status line.
    fn get_status_line(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        Ok(text.lines().next().unwrap_or_default().to_owned())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_api_answers_while_the_engine_runtime_is_busy() {
        let (stop, stopped) = watch::channel(false);
        let (addr, server) = serve_http(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(ReadModel::new()),
            livetally_sink::metrics::install(),
            stopped,
        )
        .await
        .expect("serve");
        // This runtime's only thread is now held, as a long publication holds
        // a worker thread: the API must answer from its own thread anyway.
        for path in ["/healthz", "/metrics"] {
            let status = get_status_line(addr, path).expect("an answer within 5 s");
            assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        }
        stop.send(true).unwrap();
        server.await.expect("server stops cleanly");
    }

    #[test]
    fn instance_ids_differ_between_calls() {
        let a = instance_id();
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, instance_id());
        assert!(a.starts_with(&format!("{:x}-", std::process::id())));
    }
}
