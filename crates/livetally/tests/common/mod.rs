//! Integration-test harness: a real Kafka broker, the `livetally` binary as a
//! child process, and an independent reference count ([`reference`]).
//!
//! - The broker comes from `LIVETALLY_TEST_BROKERS` (`make test` starts one);
//!   every test uses its own topics and group ([`Names`]) so tests can share it.
//! - [`Livetally`] runs `livetally run`, finds its HTTP address on stderr,
//!   keeps its log for failure messages and kills it when dropped.
//! - [`read_topic`] reads a whole topic, every partition to its high
//!   watermark; [`produce`] writes records with keys and headers.
//! - Waits poll with a deadline and panic with what they last saw; no test
//!   asserts on timing beyond such deadlines.

#![allow(dead_code)]

pub mod reference;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use reference::Reference;

/// Longest wait for anything a test waits for (catch-up, start-up, reads).
pub const DEADLINE: Duration = Duration::from_secs(120);
/// Longest a clean shutdown may take (spec §4: SIGTERM → exit 0).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// The broker under test, from `LIVETALLY_TEST_BROKERS`.
pub fn brokers() -> String {
    match std::env::var("LIVETALLY_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
        _ => panic!(
            "LIVETALLY_TEST_BROKERS is not set: run `make test`, which starts a broker, \
             or set LIVETALLY_TEST_BROKERS=127.0.0.1:PORT (B=$(deploy/local/kafka.sh start DIR) prints one)"
        ),
    }
}

/// `prefix` with a random suffix, unique across tests and runs.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:012x}",
        std::process::id(),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// Wall clock, epoch ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The topics and group of one test.
#[derive(Clone, Debug)]
pub struct Names {
    pub topic: String,
    pub group: String,
    pub rollup: String,
    pub dlq: String,
}

impl Names {
    /// Fresh names for test `test`.
    pub fn new(test: &str) -> Names {
        let base = unique(&format!("lt-{test}"));
        Names {
            topic: format!("{base}.events"),
            group: format!("{base}.group"),
            rollup: format!("{base}.rollups"),
            dlq: format!("{base}.dlq"),
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start a tokio runtime")
        .block_on(future)
}

/// Creates `name` with `partitions` partitions (replication 1) and waits
/// until its metadata shows them.
pub fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("create the admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics([&topic], &options)).expect("create topics");
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name}: {code}");
        }
    }
    wait_for(
        &format!("topic {name} in metadata"),
        Duration::from_secs(30),
        || {
            let n = partition_count(brokers, name);
            if n == partitions as usize {
                Ok(())
            } else {
                Err(format!("{n} partitions"))
            }
        },
    );
}

/// Partitions of `topic` (0 when it does not exist).
pub fn partition_count(brokers: &str, topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("create a client");
    match client.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()),
        Err(_) => 0,
    }
}

/// One Kafka record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A header as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The record's `content-type` header.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header("content-type")
    }

    /// The payload as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).unwrap_or_else(|e| {
            panic!("record {}/{} is not JSON: {e}", self.partition, self.offset)
        })
    }
}

/// Every record of `topic`, from the beginning of each partition to its high
/// watermark at the time of the call, sorted by (partition, offset).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("lt-test-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create the reader");
    let partitions = partition_count(brokers, topic);
    assert!(partitions > 0, "topic {topic} does not exist");
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("fetch watermarks");
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("add partition");
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    while !ends.is_empty() {
        assert!(
            started.elapsed() < DEADLINE,
            "reading {topic} timed out with partitions {ends:?} unfinished ({} records read)",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let (partition, offset) = (m.partition(), m.offset());
                records.push(Record {
                    partition,
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
                if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
                    ends.remove(&partition);
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                // Control records (transactions) are never delivered: trust the position.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let Offset::Offset(at) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|end| at >= *end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// A record to produce.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl From<&Record> for Outgoing {
    /// An exact re-send: same key, value and headers.
    fn from(r: &Record) -> Outgoing {
        Outgoing {
            key: r.key.clone(),
            payload: r.payload.clone(),
            headers: r.headers.clone(),
        }
    }
}

/// Produces `records` in order (idempotent producer) and waits for every acknowledgement.
pub fn produce(brokers: &str, topic: &str, records: &[Outgoing]) {
    produce_with(brokers, topic, records, &[]);
}

/// [`produce`] with more producer `settings` (librdkafka properties).
pub fn produce_with(brokers: &str, topic: &str, records: &[Outgoing], settings: &[(&str, &str)]) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: FutureProducer = config.create().expect("create the producer");
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &r.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &r.payload {
            record = record.payload(payload.as_slice());
        }
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => panic!("produce to {topic}: {e}"),
        }
    }
    for result in block_on(futures::future::join_all(deliveries)) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("delivery to {topic} failed: {e}"),
            Err(_) => panic!("producer closed before delivery"),
        }
    }
}

/// The next offset to read of every partition `input` has records in.
pub fn partition_ends(input: &[Record]) -> BTreeMap<i32, Option<i64>> {
    input
        .iter()
        .map(|r| (r.partition, Some(r.offset + 1)))
        .collect()
}

/// Waits until `names.group` has committed the end of every partition of
/// `input`: every record processed (and, in exactly-once mode, committed).
pub fn wait_all_committed(brokers: &str, names: &Names, input: &[Record], what: &str) {
    let ends = partition_ends(input);
    wait_for(what, DEADLINE, || {
        let committed = committed_offsets(brokers, &names.topic, &names.group);
        if committed == ends {
            Ok(())
        } else {
            Err(format!("committed {committed:?}, ends {ends:?}"))
        }
    });
}

/// Offsets committed by `group` on `topic`, per partition (`None`: nothing committed).
pub fn committed_offsets(brokers: &str, topic: &str, group: &str) -> BTreeMap<i32, Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partition_count(brokers, topic) as i32 {
        tpl.add_partition(topic, p);
    }
    // A loaded machine can time out a request, and a coordinator can be
    // loading or moving: try for a while.
    let mut attempts = 0;
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(committed) => break committed,
            Err(e) if attempts < 20 => {
                // Transient: a timeout, or the group coordinator loading or moving.
                attempts += 1;
                eprintln!("committed offsets: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("committed offsets: {e}"),
        }
    };
    committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), offset)
        })
        .collect()
}

/// The reference count over records read back from a topic.
pub fn reference_of(records: &[Record]) -> Reference {
    let mut reference = Reference::default();
    for r in records {
        reference.add(
            r.partition,
            r.offset,
            r.payload.as_deref(),
            r.content_type(),
        );
    }
    reference
}

/// `run`'s flags for the topics and group of `names`, on a free port, with
/// every interval at its default.
pub fn run_args<'a>(brokers: &'a str, names: &'a Names) -> Vec<&'a str> {
    vec![
        "run",
        "--brokers",
        brokers,
        "--topic",
        &names.topic,
        "--group",
        &names.group,
        "--rollup-topic",
        &names.rollup,
        "--dlq-topic",
        &names.dlq,
        "--http",
        "127.0.0.1:0",
    ]
}

/// A `livetally` command with a clean environment: no `LIVETALLY_*`
/// variable of the caller (the test's own ones included) leaks into it.
pub fn livetally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_livetally"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIVETALLY_") {
            command.env_remove(&key);
        }
    }
    command.env("LIVETALLY_LOG", "info,rdkafka=warn");
    command
}

/// Runs `livetally gen` to completion; panics with its output on failure.
pub fn gen(brokers: &str, topic: &str, args: &[&str]) {
    let output = gen_command(brokers, topic, args)
        .output()
        .expect("run livetally gen");
    assert!(
        output.status.success(),
        "livetally gen {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `livetally gen --brokers B --topic T ARGS`, to spawn.
pub fn gen_command(brokers: &str, topic: &str, args: &[&str]) -> Command {
    let mut command = livetally();
    command
        .args(["gen", "--brokers", brokers, "--topic", topic])
        .args(args);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// Waits for a spawned [`gen_command`] and asserts that it succeeded.
pub fn finish_gen(generator: std::process::Child) {
    let output = generator
        .wait_with_output()
        .expect("wait for livetally gen");
    assert!(
        output.status.success(),
        "livetally gen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `livetally replay FILE`: the rollups on stdout and the summary on stderr.
pub fn replay(file: &Path) -> (Vec<Value>, Value) {
    let output = livetally()
        .arg("replay")
        .arg(file)
        .output()
        .expect("run livetally replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "livetally replay failed: {}\n{stderr}",
        output.status
    );
    let rollups = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("replay printed a non-JSON line {l:?}: {e}"))
        })
        .collect();
    let summary = stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("no JSON summary on replay's stderr:\n{stderr}"));
    (rollups, summary)
}

/// A `livetally run` child process, killed (SIGKILL) when dropped.
pub struct Livetally {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its stderr so far.
    log: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Livetally {
    /// `livetally run` against `names`, HTTP on a free port, publishing every
    /// 200 ms; returns once it listens.
    pub fn run(brokers: &str, names: &Names) -> Livetally {
        Livetally::run_with(brokers, names, &[])
    }

    /// [`Livetally::run`] with more flags (e.g. `--config FILE`).
    pub fn run_with(brokers: &str, names: &Names, extra: &[&str]) -> Livetally {
        let mut args = run_args(brokers, names);
        args.extend(["--publish-interval-ms", "200"]);
        args.extend_from_slice(extra);
        Livetally::spawn(&args)
    }

    /// `livetally ARGS`; ARGS must make it print `livetally: serving http://ADDR/`.
    pub fn spawn(args: &[&str]) -> Livetally {
        let mut child = livetally()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn livetally");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("livetally: serving http://") {
                        let _ = found.send(rest.trim_end_matches('/').to_string());
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut process = Livetally {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            status: None,
        };
        let started = Instant::now();
        loop {
            match address.recv_timeout(Duration::from_millis(200)) {
                Ok(addr) => {
                    process.addr = addr
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address {addr:?}: {e}"));
                    return process;
                }
                Err(_) => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        process.status = Some(status);
                        std::thread::sleep(Duration::from_millis(200));
                        panic!(
                            "livetally {args:?} exited with {status} before listening:\n{}",
                            process.log()
                        );
                    }
                    assert!(
                        started.elapsed() < DEADLINE,
                        "livetally {args:?} did not print its address:\n{}",
                        process.log()
                    );
                }
            }
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.url(path)).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    /// `GET path` as JSON: status and value (panics when the body is not JSON).
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} → {status}: body is not JSON ({e}): {body:?}"));
        (status, value)
    }

    /// The `streams` of `GET /v1/streams?limit=1000`.
    pub fn streams(&self) -> Vec<Value> {
        let (status, body) = self.get_json("/v1/streams?limit=1000");
        assert_eq!(status, 200, "/v1/streams: {body}");
        body["streams"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/v1/streams has no streams array: {body}"))
    }

    /// One sample of `/metrics`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics");
        metric(&text, name, labels)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    /// Waits for the exit, up to `timeout` (`None` if still running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_timeout(Duration::from_secs(u64::MAX / 4))
            .expect("exit status")
    }

    /// SIGTERM, then asserts a clean exit (status 0) within [`SHUTDOWN_DEADLINE`].
    pub fn stop_cleanly(&mut self) {
        let started = Instant::now();
        self.terminate();
        match self.wait_timeout(SHUTDOWN_DEADLINE) {
            Some(status) => assert!(
                status.success(),
                "livetally exited with {status} after SIGTERM (expected 0):\n{}",
                self.log()
            ),
            None => panic!(
                "livetally still running {SHUTDOWN_DEADLINE:?} after SIGTERM:\n{}",
                self.log()
            ),
        }
        eprintln!("livetally stopped cleanly in {:.1?}", started.elapsed());
    }

    /// Waits until the instance is ready, has consumed at least `consumed`
    /// records and its `/v1/streams` answer no longer changes; returns it.
    pub fn wait_caught_up(&self, consumed: u64) -> Vec<Value> {
        let started = Instant::now();
        let mut last: Option<Vec<Value>> = None;
        let mut same = 0;
        loop {
            let ready = self.get("/readyz").0 == 200;
            let seen = self
                .metric("livetally_events_consumed_total", &[])
                .unwrap_or(0.0) as u64;
            let streams = self.streams();
            if ready && seen >= consumed && last.as_ref() == Some(&streams) {
                same += 1;
                if same >= 3 {
                    eprintln!(
                        "caught up after {:.1?} ({seen} records consumed)",
                        started.elapsed()
                    );
                    return streams;
                }
            } else {
                same = 0;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "not caught up after {DEADLINE:?}: ready={ready}, consumed {seen} of {consumed}, {} streams\n{}",
                streams.len(),
                self.log()
            );
            last = Some(streams);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Livetally {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("---- livetally stderr ----\n{}", self.log());
            }
        }
    }
}

/// `GET url`: status and body.
pub fn http_get(url: &str) -> Result<(u16, String), reqwest::Error> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client")
    });
    let response = client.get(url).send()?;
    let status = response.status().as_u16();
    Ok((status, response.text()?))
}

/// The value of sample `name{labels}` in Prometheus text (labels given must
/// match; others are ignored).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind(' ') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => continue,
        };
        let (series_name, series_labels) = match series.find('{') {
            Some(at) => (&series[..at], series[at + 1..].trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let have: Vec<(&str, &str)> = series_labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            return value.parse().ok();
        }
    }
    None
}

/// Polls `check` every 200 ms until it returns `Ok`, or panics after
/// `timeout` with what it last said.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    started.elapsed() < timeout,
                    "timed out after {timeout:?} waiting for {what}: {last}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// A window rollup's key on the rollup topic: (`stream_id`, `window_start`).
pub fn window_key(rollup: &Value) -> (String, i64) {
    (
        rollup["stream_id"].as_str().unwrap_or_default().to_owned(),
        rollup["window_start"].as_i64().unwrap_or_default(),
    )
}

/// [`latest_rollups`] of the topic `rollups` as it stands, once its records
/// have no problem.
pub fn checked_latest_rollups(brokers: &str, rollups: &str, strict: bool) -> Vec<Value> {
    let (latest, problems) = latest_rollups(&read_topic(brokers, rollups), strict);
    assert_no_problems("rollup topic records", &problems);
    latest
}

/// The newest cumulative rollup per stream on the rollup topic: highest
/// `revision`, the later record on a tie. Also checks every record's key and
/// header, and that revisions never go down per key (`strict`: always go up).
pub fn latest_rollups(records: &[Record], strict: bool) -> (Vec<Value>, Vec<String>) {
    let mut problems = Vec::new();
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    let mut repeats = 0;
    for r in records {
        let rollup = r.json();
        if rollup["kind"] != "cumulative" {
            continue;
        }
        let id = rollup["stream_id"].as_str().unwrap_or_default().to_string();
        if r.key.as_deref() != Some(id.as_bytes()) {
            problems.push(format!(
                "rollup {}/{} for {id} has key {:?}",
                r.partition, r.offset, r.key
            ));
        }
        if r.content_type() != Some(b"application/json") {
            problems.push(format!(
                "rollup {}/{} has content-type {:?}",
                r.partition,
                r.offset,
                r.header_str("content-type")
            ));
        }
        let revision = rollup["revision"].as_u64().unwrap_or(0);
        if let Some(previous) = latest.get(&id) {
            let before = previous["revision"].as_u64().unwrap_or(0);
            if revision < before || (strict && revision == before) {
                problems.push(format!(
                    "{id}: revision {revision} after {before} (record {}/{})",
                    r.partition, r.offset
                ));
            }
            if revision == before {
                repeats += 1;
            }
            if revision < before {
                continue;
            }
        }
        latest.insert(id, rollup);
    }
    if repeats > 0 {
        eprintln!("rollup topic: {repeats} records repeat the previous revision of their stream");
    }
    (latest.into_values().collect(), problems)
}

/// Checks the dead-letter topic against the reference: every invalid input
/// record is there with its reason and source headers, byte-identical;
/// nothing else is. `exactly_once`: each exactly once (no crash happened).
pub fn check_dead_letters(
    dlq: &[Record],
    input: &[Record],
    reference: &Reference,
    topic: &str,
    exactly_once: bool,
) -> Vec<String> {
    let invalid = reference.invalid();
    let by_position: HashMap<(i32, i64), &Record> =
        input.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut problems = Vec::new();
    let mut found: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    for letter in dlq {
        let at = format!("dead letter {}/{}", letter.partition, letter.offset);
        if letter.header_str("livetally-source-topic") != Some(topic) {
            problems.push(format!(
                "{at}: source topic {:?}",
                letter.header_str("livetally-source-topic")
            ));
        }
        let partition = letter
            .header_str("livetally-source-partition")
            .and_then(|p| p.parse::<i32>().ok());
        let offset = letter
            .header_str("livetally-source-offset")
            .and_then(|o| o.parse::<i64>().ok());
        let (Some(partition), Some(offset)) = (partition, offset) else {
            problems.push(format!(
                "{at}: no source partition/offset headers: {:?}",
                letter.headers
            ));
            continue;
        };
        *found.entry((partition, offset)).or_default() += 1;
        let Some(reason) = invalid.get(&(partition, offset)) else {
            let outcome = reference.outcomes.get(&(partition, offset));
            problems.push(format!(
                "{at}: source {partition}/{offset} is not invalid in the reference ({outcome:?}, reason header {:?})",
                letter.header_str("livetally-reason")
            ));
            continue;
        };
        if letter.header_str("livetally-reason") != Some(reason) {
            problems.push(format!(
                "{at} (source {partition}/{offset}): reason {:?}, expected {reason:?}",
                letter.header_str("livetally-reason")
            ));
        }
        let source = by_position[&(partition, offset)];
        if letter.payload != source.payload {
            problems.push(format!(
                "{at}: payload differs from source {partition}/{offset}"
            ));
        }
        if letter.key != source.key {
            problems.push(format!(
                "{at}: key {:?} differs from source {:?}",
                letter.key, source.key
            ));
        }
        for (name, value) in &source.headers {
            if letter.header(name) != value.as_deref() {
                problems.push(format!("{at}: source header {name:?} not kept"));
            }
        }
    }
    for (at, reason) in &invalid {
        match found.get(at) {
            None => problems.push(format!(
                "invalid record {}/{} ({reason}) not dead-lettered",
                at.0, at.1
            )),
            Some(n) if *n > 1 && exactly_once => problems.push(format!(
                "invalid record {}/{} ({reason}) dead-lettered {n} times",
                at.0, at.1
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Panics listing `problems` (at most 60) when there are any.
pub fn assert_no_problems(what: &str, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let shown: Vec<&String> = problems.iter().take(60).collect();
    panic!(
        "{what}: {} problem(s){}:\n  {}",
        problems.len(),
        if problems.len() > shown.len() {
            " (first 60)"
        } else {
            ""
        },
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// A broker of a test's own (`deploy/local/kafka.sh`), stopped and forgotten
/// on drop: for a test that stops it, or that needs other listeners.
pub struct OwnBroker {
    dir: PathBuf,
}

impl OwnBroker {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/kafka.sh")
    }

    /// A broker in `dir`, and its address.
    pub fn start(dir: PathBuf) -> (OwnBroker, String) {
        let broker = OwnBroker { dir };
        let address = broker.up();
        (broker, address)
    }

    /// A broker in `dir` with a second listener, TLS and SCRAM-SHA-512, as
    /// managed clusters have: its plaintext address, its SASL_SSL address,
    /// and a `--config` file with the client settings for that one.
    pub fn start_sasl_ssl(dir: PathBuf) -> (OwnBroker, String, String, PathBuf) {
        std::fs::create_dir_all(&dir).expect("make the broker's directory");
        let broker = OwnBroker { dir };
        let address = broker.run_script("start", Some(("LIVETALLY_KAFKA_SASL_SSL", "1")));
        let secure = std::fs::read_to_string(broker.dir.join("bootstrap-sasl-ssl"))
            .expect("kafka.sh wrote the SASL_SSL address");
        let config = broker.dir.join("sasl-ssl.toml");
        (broker, address, secure.trim().to_string(), config)
    }

    /// Starts the broker again (same address); returns its address.
    pub fn up(&self) -> String {
        self.run_script("start", None)
    }

    fn run_script(&self, command: &str, env: Option<(&str, &str)>) -> String {
        let mut script = Command::new(Self::script());
        script.arg(command).arg(&self.dir);
        if let Some((key, value)) = env {
            script.env(key, value);
        }
        let output = script.output().expect("run kafka.sh");
        assert!(
            output.status.success(),
            "kafka.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Stops the broker, keeping its data.
    pub fn down(&self) {
        self.run_script("stop", None);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        // Not `down`: no panic while a test is unwinding.
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
