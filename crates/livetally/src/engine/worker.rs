//! The owner of one input partition: decode → apply → publish → store offset.
//!
//! Invariant (at-least-once): the offset of a record is stored only after the
//! batch that applied it was published and every record of that publication
//! (rollups, dead letters, changelog), and of every publication before it,
//! was acknowledged. A publication's changelog records are sent only once
//! its rollups and dead letters, and every earlier publication, are
//! acknowledged: a checkpoint never lands without the rollups of its state.
//! Publications are pipelined: the worker reads on while
//! up to [`MAX_IN_FLIGHT`] await their acknowledgements, and acts on each as
//! soon as it arrives (offsets stored, counts reported). The changelog record of
//! each stream carries the highest offset applied to it, so after a crash the
//! restored state skips exactly the records it already holds: figures stay
//! exact even though records are read twice.
//!
//! Exactly-once, a publication is one transaction with the input offsets it
//! covers, taken when it starts. It commits on a task of its own while the
//! worker applies the records that follow; one is open at a time, and until
//! it commits the worker shows readers nothing new, so every revision they
//! see goes out in a transaction with its checkpoint. The commit's result is
//! taken as soon as it is in; the next publication waits for the next tick.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use livetally_aggregator::{InvalidReason, Outcome, PartitionAggregator};
use livetally_ingest::consumer::PartitionQueue;
use livetally_ingest::decode;
use livetally_sink::kafka::{PublishError, Sending};
use livetally_sink::metrics as names;
use livetally_sink::{DeadLetter, OutBatch, Publisher, ReadModel, Shown};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{repartition, ConsumerRef, EngineConfig, MAX_IN_FLIGHT};
use crate::wall_clock_ms;

/// Longest a draining partition keeps retrying a failed publication.
const DRAIN_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Most records a worker applies in one turn of its loop, of those already
/// queued, before it looks at its ticks and its control channel again.
const RECORDS_PER_TURN: usize = 256;

/// What the rebalance handler tells a worker.
pub enum Control {
    /// Finish, publish, store offsets, acknowledge, and stop.
    Drain(std::sync::mpsc::SyncSender<()>),
}

/// What all workers share.
pub struct WorkerContext {
    /// The engine's settings.
    pub config: EngineConfig,
    /// Writes rollups, dead letters and changelog records.
    pub publisher: Publisher,
    /// Where HTTP readers see published snapshots.
    pub model: Arc<ReadModel>,
    /// For storing offsets; set once the consumer exists.
    pub consumer: ConsumerRef,
}

/// Counts since the last publication, reported once per batch.
#[derive(Default)]
struct BatchCounts {
    consumed: u64,
    duplicates: u64,
    invalid: [u64; InvalidReason::ALL.len()],
    newest_ts: Option<i64>,
}

/// One partition's work in progress.
struct PartitionWork {
    context: Arc<WorkerContext>,
    partition: i32,
    aggregator: PartitionAggregator,
    dead_letters: Vec<DeadLetter>,
    /// Offset of the last record applied and not yet stored.
    last_offset: Option<i64>,
    counts: BatchCounts,
    /// Wall clock for the skew guard, refreshed every tick (the guard's
    /// tolerance is minutes, so a tick-old clock is exact enough).
    now_ms: i64,
    /// When the last record arrived, for idle-partition handling.
    last_record: Instant,
    /// Whether the queue ran dry since the last publication. Exactly-once, a
    /// partition whose queue did not is behind, and commits less often.
    ran_dry: bool,
    /// Exactly-once: this partition's own transactional producer.
    transactional: Option<Publisher>,
    /// When the state-size gauge was last set: measuring walks every
    /// stream, so it is done at most once a second, not every publication.
    state_measured: Option<Instant>,
    /// When checkpoints were last published (with the offsets they cover).
    last_checkpoint: Instant,
    /// At-least-once: publications handed to the producer whose
    /// acknowledgements are still coming, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Rollups readers have seen since the last publication to the rollup
    /// topic, the newest per (stream, window start).
    unpublished: HashMap<(String, Option<i64>), Shown>,
    /// When the rollup topic was last written.
    last_publication: Instant,
    /// Exactly-once: the transaction committing on a task of its own while
    /// the worker reads on. One at a time: the next publication waits for it.
    committing: Option<Committing>,
}

impl Drop for PartitionWork {
    /// A partition that stops without publishing what readers were shown
    /// (given up, fenced, or assigned twice) leaves those rollups packed:
    /// nothing else would pack them, as no publication of it follows.
    fn drop(&mut self) {
        self.context.model.settle_all(self.unpublished.values());
    }
}

/// An exactly-once transaction on its way: its rollups, changelog records
/// and input offsets commit together; meanwhile the worker applies the
/// records that follow them.
struct Committing {
    /// Kept to send again, in a new transaction, if this one fails.
    batch: Arc<OutBatch>,
    /// The input offsets it commits, taken when it started.
    offsets: TopicPartitionList,
    /// The transaction's task, until its result is taken into `result`.
    task: Option<tokio::task::JoinHandle<Result<(), PublishError>>>,
    result: Option<Result<Result<(), PublishError>, tokio::task::JoinError>>,
    counts: BatchCounts,
    streams: usize,
    started: Instant,
}

impl Committing {
    /// Waits for the transaction's result. Cancel-safe, and at once when it
    /// is already in.
    async fn wait(&mut self) {
        if let Some(task) = &mut self.task {
            self.result = Some(task.await);
            self.task = None;
        }
    }

    fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }
}

/// An at-least-once publication on its way to the broker. The worker reads
/// on meanwhile; what waits for the acknowledgement is only what must: the
/// offsets it covers, and its counts in the metrics.
struct InFlight {
    /// Kept to send again if a record fails.
    batch: OutBatch,
    /// Its rollups and dead letters, then, once those are acknowledged and
    /// it is the oldest in flight, its changelog records.
    sending: Sending,
    /// Whether `sending` is its changelog records.
    changelog_sent: bool,
    /// The next input offset to store once acknowledged, for a checkpoint.
    resume_at: Option<i64>,
    counts: BatchCounts,
    streams: usize,
    started: Instant,
}

/// Whether a worker goes on after a publication.
#[must_use]
enum Flow {
    Continue,
    /// The partition is lost (fenced) or could not drain: stop consuming it.
    Stop,
}

/// Whether something done every `interval` is due at this tick, `since` it
/// was last done: within half a tick of it counts, so that a tick that
/// fires a little early does not put it off a whole tick.
fn due(since: Instant, interval: Duration, tick: Duration) -> bool {
    since.elapsed() + tick / 2 >= interval
}

/// Exactly-once, every transaction checkpoints each stream it changed, which
/// in a catch-up is every stream: a partition that is behind (its queue has
/// not run dry since its last transaction) shows and commits at most every
/// checkpoint interval, not every publish interval.
fn behind_and_waiting(ran_dry: bool, last_publication: Instant, config: &EngineConfig) -> bool {
    !ran_dry
        && !due(
            last_publication,
            config.checkpoint_interval,
            config.live_interval,
        )
}

/// When a partition counts its last publication (or checkpoint) as done,
/// at start: spread over the interval by partition number (golden-ratio
/// steps), so that partitions do not all publish and checkpoint in the same
/// tick. Together, every changed stream of every partition would go to the
/// rollup topic and the changelog at once, and the live ticks queued behind
/// that burst: at 50,000 events/s most of the slowest rollups on `/v1/live`
/// came in the first 400 ms after the partitions' common publication.
fn phase(partition: i32, interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(interval.mul_f64(spread(partition)))
        .unwrap_or(now)
}

/// Where in an interval a partition's phase falls, in [0, 1).
fn spread(partition: i32) -> f64 {
    (f64::from(partition) * 0.618_033_988_75).fract()
}

/// When a partition counts its last publication and its last checkpoint
/// as done, at start: the publication at its [`phase`] of the publish
/// interval, the checkpoint a whole number of publish intervals before it,
/// spread over the checkpoint interval the same way, so that checkpoints
/// fall due with a publication and partitions do not all take theirs in
/// the same second.
fn starting_times(partition: i32, config: &EngineConfig) -> (Instant, Instant) {
    let publication = phase(partition, config.publish_interval);
    let steps = config.checkpoint_interval.as_secs_f64() / config.publish_interval.as_secs_f64();
    let back = (spread(partition) * steps).floor() as u32;
    let checkpoint = publication
        .checked_sub(config.publish_interval * back)
        .unwrap_or(publication);
    (publication, checkpoint)
}

/// A producer whose transactional id belongs to this input partition: its
/// `init_transactions` fences every earlier owner of the partition.
async fn transactional_publisher(
    context: &WorkerContext,
    partition: i32,
) -> anyhow::Result<Publisher> {
    let config = &context.config;
    let mut publisher = config.publisher.clone();
    publisher.transactional_id = Some(format!(
        "livetally-{}-{}-{partition}",
        config.consumer.group, config.consumer.topic
    ));
    Ok(tokio::task::spawn_blocking(move || Publisher::new(publisher)).await??)
}

/// Runs one partition until it is drained.
pub async fn run(
    context: Arc<WorkerContext>,
    partition: i32,
    queue: PartitionQueue,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let aggregator = PartitionAggregator::new(context.config.aggregator.clone());
    let (last_publication, last_checkpoint) = starting_times(partition, &context.config);
    let mut work = PartitionWork {
        context: context.clone(),
        partition,
        aggregator,
        dead_letters: Vec::new(),
        last_offset: None,
        counts: BatchCounts::default(),
        now_ms: wall_clock_ms(),
        last_record: Instant::now(),
        ran_dry: true,
        transactional: None,
        state_measured: None,
        last_checkpoint,
        in_flight: VecDeque::new(),
        unpublished: HashMap::new(),
        last_publication,
        committing: None,
    };
    if !work.restore(&mut control).await {
        return;
    }
    if context.config.exactly_once {
        match transactional_publisher(&context, partition).await {
            Ok(publisher) => work.transactional = Some(publisher),
            Err(error) => {
                tracing::error!(partition, %error, "cannot start the transactional producer; partition not consumed");
                return;
            }
        }
    }
    let mut messages = queue.stream();
    let mut ticker = Ticker::new(context.config.live_interval);
    let started = Instant::now();
    loop {
        tokio::select! {
            biased;
            command = control.recv() => {
                let Some(Control::Drain(ack)) = command else { return };
                let _ = work.flush(true).await;
                tracing::info!(partition, uptime_s = started.elapsed().as_secs(), "partition drained");
                let _ = ack.send(());
                return;
            }
            _ = work.broker_answered(), if work.awaits_broker() => {
                if let Flow::Stop = work.on_broker_answer().await {
                    return;
                }
            }
            _ = ticker.tick() => {
                if let Flow::Stop = work.on_tick().await {
                    return;
                }
            }
            message = messages.next() => {
                work.last_record = Instant::now();
                let now = work.last_record;
                let turn = take_turn(&mut messages, message, &mut ticker, now, |message| match message {
                    Ok(message) => work.apply(&message),
                    Err(error) => tracing::warn!(partition, %error, "consume error"),
                });
                let Some(turn) = turn else { return };
                work.ran_dry |= turn.ran_dry;
                if turn.tick_due {
                    if let Flow::Stop = work.on_tick().await {
                        return;
                    }
                }
                if !turn.ran_dry {
                    // The other partitions' workers share these threads.
                    TakeTurns::default().await;
                }
            }
        }
    }
}

/// A partition's tick (show, publish, checkpoint) every live interval.
///
/// Its tokio interval is not enough alone: tokio fires timers only when a
/// thread runs out of ready tasks, and in a catch-up the partition queues
/// never run dry, so the workers are never pending and their ticks would
/// wait for the whole backlog. [`take_turn`] therefore also asks
/// [`Ticker::overdue`] after every full turn.
struct Ticker {
    interval: tokio::time::Interval,
    period: Duration,
    last: Instant,
}

impl Ticker {
    fn new(period: Duration) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker {
            interval,
            period,
            last: Instant::now(),
        }
    }

    /// The next tick of the timer. Cancel-safe.
    async fn tick(&mut self) {
        self.interval.tick().await;
        self.last = Instant::now();
    }

    /// Whether a tick is due at `now` though the timer has not fired; if so,
    /// it is taken, and the timer starts its period again.
    fn overdue(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) < self.period {
            return false;
        }
        self.interval.reset();
        self.last = now;
        true
    }
}

/// The watermark of a partition whose newest event time is `newest` and
/// that has been quiet for `quiet`: its event time goes on at the wall
/// clock's pace from its newest event. For live traffic, whose event time
/// is the wall clock's, that is the wall clock; for a backlog or a backfill
/// behind it, the pause alone. (Following the wall clock itself, a pause of
/// seconds in events an hour old ended every stream at once, and the
/// duplicates of their events that came after it counted again.)
fn quiet_watermark(newest: i64, quiet: Duration, lateness: i64) -> i64 {
    let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
    newest.saturating_add(quiet_ms).saturating_sub(lateness)
}

/// Pending once and woken at once, so that a worker that always has records
/// lets the tasks queued behind it on its thread run. Unlike
/// `tokio::task::yield_now`, it does not wait for the runtime's next timer
/// and I/O poll (that cost exactly-once 30–100 ms of p99 latency at 50,000
/// events/s); [`Ticker::overdue`] stands in for the timer.
#[derive(Default)]
struct TakeTurns {
    yielded: bool,
}

impl std::future::Future for TakeTurns {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// How one turn of a worker's loop went.
struct Turn {
    /// It took fewer than [`RECORDS_PER_TURN`]: the queue ran dry.
    ran_dry: bool,
    /// A full turn found the tick overdue ([`Ticker`]).
    tick_due: bool,
}

/// One turn of a worker's loop: `first` and the records already queued after
/// it, up to [`RECORDS_PER_TURN`], each handed to `apply` without a round
/// through `select!` (ticks and drains wait at most one turn). `now` is when
/// the turn started (one clock read per turn). `None` once the stream has
/// ended.
fn take_turn<S: Stream + Unpin>(
    messages: &mut S,
    first: Option<S::Item>,
    ticker: &mut Ticker,
    now: Instant,
    mut apply: impl FnMut(S::Item),
) -> Option<Turn> {
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(message) = next {
        apply(message?);
        taken += 1;
        next = if taken < RECORDS_PER_TURN {
            messages.next().now_or_never()
        } else {
            None
        };
    }
    let ran_dry = taken < RECORDS_PER_TURN;
    Some(Turn {
        ran_dry,
        tick_due: !ran_dry && ticker.overdue(now),
    })
}

impl PartitionWork {
    /// Restores state from the changelog, retrying until it succeeds or the
    /// partition is revoked. Returns whether to go on consuming.
    async fn restore(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> bool {
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let config = self.context.config.clone();
            let partition = self.partition;
            let result = tokio::task::spawn_blocking(move || {
                super::restore::read_partition(
                    &config.consumer.brokers,
                    &config.publisher.changelog_topic,
                    partition,
                    &config.consumer.extra,
                )
            })
            .await;
            match result {
                Ok(Ok(checkpoints)) => {
                    let streams = checkpoints.len();
                    for (stream_id, checkpoint) in checkpoints {
                        self.aggregator.restore(&stream_id, checkpoint);
                    }
                    for stream_id in self.aggregator.stream_ids() {
                        if let Some((rollup, products)) =
                            self.aggregator.rollup_and_products(stream_id)
                        {
                            self.context.model.store_rollup(rollup, products);
                        }
                    }
                    // Rollups published after these checkpoints used revisions
                    // the replay would use again: go past them.
                    self.aggregator
                        .skip_revisions(self.context.config.revisions_between_checkpoints());
                    let seconds = started.elapsed().as_secs_f64();
                    metrics::histogram!(names::RESTORE_SECONDS).record(seconds);
                    tracing::info!(partition, streams, seconds, "partition state restored");
                    self.context.model.readiness().restored(self.partition);
                    return true;
                }
                Ok(Err(error)) => tracing::warn!(partition, %error, "restore failed; retrying"),
                Err(error) => tracing::warn!(partition, %error, "restore task failed; retrying"),
            }
            tokio::select! {
                command = control.recv() => {
                    if let Some(Control::Drain(ack)) = command { let _ = ack.send(()); }
                    return false;
                }
                _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// Every live interval: the wall clock, idle partitions' watermarks, and
    /// what is due to be shown and published.
    async fn on_tick(&mut self) -> Flow {
        self.now_ms = wall_clock_ms();
        self.idle_watermark();
        self.flush(false).await
    }

    /// A partition quiet for longer than `idle_partition` would hold its
    /// windows open and its streams alive forever: in live mode its event
    /// time goes on without it ([`quiet_watermark`]).
    fn idle_watermark(&mut self) {
        let config = &self.context.config;
        let quiet = self.last_record.elapsed();
        if !config.clock_guard || quiet < config.idle_partition {
            return;
        }
        if let Some(newest) = self.aggregator.newest_event_ts() {
            let lateness = self.aggregator.config().allowed_lateness_ms;
            self.aggregator
                .advance_watermark(quiet_watermark(newest, quiet, lateness));
        }
    }

    /// Decodes and applies one record; an invalid one becomes a dead letter.
    fn apply(&mut self, message: &BorrowedMessage<'_>) {
        let offset = message.offset();
        self.counts.consumed += 1;
        self.last_offset = Some(self.last_offset.map_or(offset, |o| o.max(offset)));
        let content_type = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                .and_then(|h| h.value)
        });
        let payload = message.payload().unwrap_or_default();
        let config = &self.context.config;
        let now = config.clock_guard.then_some(self.now_ms);
        let reason = match decode(payload, content_type, now, &config.decode) {
            Ok(event) => {
                // Offsets are never negative for consumed records.
                match self.aggregator.apply(&event, offset as u64) {
                    Outcome::Counted => {
                        self.counts.newest_ts =
                            Some(self.counts.newest_ts.map_or(event.ts, |t| t.max(event.ts)));
                        return;
                    }
                    Outcome::Duplicate => {
                        self.counts.duplicates += 1;
                        return;
                    }
                    Outcome::AlreadyApplied => return,
                    Outcome::Invalid(reason) => reason,
                }
            }
            Err(reason) => reason,
        };
        self.dead_letter(message, reason);
    }

    fn dead_letter(&mut self, message: &BorrowedMessage<'_>, reason: InvalidReason) {
        if let Some(slot) = InvalidReason::ALL.iter().position(|r| *r == reason) {
            self.counts.invalid[slot] += 1;
        }
        let mut headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        // A record re-keyed by the repartition step names where it came from.
        let origin = |name: &str| -> Option<String> {
            let value = headers.iter().find(|(k, _)| k == name)?.1.as_deref()?;
            Some(String::from_utf8_lossy(value).into_owned())
        };
        let (topic, partition, offset) = match (
            origin(repartition::origin::TOPIC),
            origin(repartition::origin::PARTITION).and_then(|p| p.parse().ok()),
            origin(repartition::origin::OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(topic), Some(partition), Some(offset)) => (topic, partition, offset),
            _ => (
                message.topic().to_string(),
                message.partition(),
                message.offset(),
            ),
        };
        headers.retain(|(k, _)| !k.starts_with("livetally-origin-"));
        self.dead_letters.push(DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            reason,
            topic,
            partition,
            offset,
        });
    }

    /// Publishes what changed and stores the offsets it covers once the
    /// broker acknowledged it. Retries until it succeeds (a draining
    /// partition gives up after a while: its records will be reprocessed).
    ///
    /// At-least-once, a publication goes out without waiting for the broker
    /// unless the partition drains, [`MAX_IN_FLIGHT`] are in flight, or an
    /// earlier one failed: then everything in flight is settled first, in
    /// order, and this one is sent and awaited.
    async fn flush(&mut self, draining: bool) -> Flow {
        let started = Instant::now();
        // Exactly-once, every revision readers see goes out in a transaction
        // with its checkpoint: while the last one still commits, nothing
        // new is shown; the next tick shows it all.
        if !draining
            && self
                .committing
                .as_ref()
                .is_some_and(|committing| !committing.is_finished())
        {
            return Flow::Continue;
        }
        if let Flow::Stop = self.finish_committing(draining, started).await {
            return Flow::Stop;
        }
        let failed = self.collect_acknowledgements();
        if draining || failed {
            if let Flow::Stop = self.settle_in_flight(draining, started).await {
                return Flow::Stop;
            }
        }
        if !draining
            && self.transactional.is_some()
            && behind_and_waiting(self.ran_dry, self.last_publication, &self.context.config)
        {
            return Flow::Continue;
        }
        // Also publishes streams that ended because the watermark moved.
        // Readers see the new figures at once (every live interval); the
        // rollup topic and durability follow every publish interval. A crash
        // in between recomputes the same figures from the same records.
        let config = &self.context.config;
        let publishing = draining
            || due(
                self.last_publication,
                config.publish_interval,
                config.live_interval,
            );
        let publications = self.aggregator.publish();
        for shown in self.context.model.show(publications, publishing) {
            let key = (shown.rollup.stream_id.clone(), shown.rollup.window_start);
            self.unpublished.insert(key, shown);
        }
        if !publishing {
            return Flow::Continue;
        }
        self.last_publication = Instant::now();
        self.ran_dry = false;
        // Checkpoints go out with every exactly-once transaction, and at
        // least every checkpoint interval at-least-once; offsets are stored
        // only with them, so a restart never resumes past a stream's checkpoint.
        let checkpoint = draining
            || self.transactional.is_some()
            || due(
                self.last_checkpoint,
                config.checkpoint_interval,
                config.live_interval,
            );
        let changelog = if draining {
            // The partition will not checkpoint again: nothing is put off.
            self.aggregator.final_checkpoints()
        } else if checkpoint {
            self.aggregator.checkpoints()
        } else {
            // New streams get theirs at once, so that every published stream
            // has a checkpoint for a restore to move its revisions past.
            self.aggregator.first_checkpoints()
        };
        let offsets_due = checkpoint && self.last_offset.is_some();
        if self.unpublished.is_empty()
            && changelog.is_empty()
            && !offsets_due
            && self.dead_letters.is_empty()
        {
            return Flow::Continue;
        }
        // The newest of each key since the last publication. Each stream's
        // windows come before its cumulative rollup: on a compacted topic the
        // newest record per key is then the cumulative state.
        let mut newest: Vec<_> = self.unpublished.drain().collect();
        newest.sort_unstable_by(|((a, a_start), _), ((b, b_start), _)| {
            (a, a_start.is_none(), a_start).cmp(&(b, b_start.is_none(), b_start))
        });
        // Readers keep what goes to the topic packed from now on.
        let format = self.context.publisher.config().format;
        let model = &self.context.model;
        let rollups: Vec<_> = newest
            .into_iter()
            .map(|(_, shown)| {
                model.settle(&shown);
                shown.encode(format)
            })
            .collect();
        let streams = rollups.len();
        let checkpoint_bytes: usize = changelog.iter().map(|r| r.key.len() + r.value.len()).sum();
        metrics::counter!(names::CHANGELOG_BYTES).increment(checkpoint_bytes as u64);
        let batch = OutBatch {
            rollups,
            changelog,
            dead_letters: std::mem::take(&mut self.dead_letters),
        };
        if checkpoint {
            self.last_checkpoint = Instant::now();
        }
        if let (Some(publisher), false) = (&self.transactional, draining) {
            let Some(group) = self.group_metadata() else {
                return Flow::Stop;
            };
            let offsets = self.next_offsets();
            self.last_offset = None;
            let batch = Arc::new(batch);
            let task = {
                let (publisher, batch, offsets) =
                    (publisher.clone(), batch.clone(), offsets.clone());
                let partition = self.partition;
                tokio::spawn(async move {
                    publisher
                        .send_transaction(&batch, partition, &offsets, &group)
                        .await
                })
            };
            self.committing = Some(Committing {
                batch,
                offsets,
                task: Some(task),
                result: None,
                counts: std::mem::take(&mut self.counts),
                streams,
                started,
            });
            return Flow::Continue;
        }
        let pipelined =
            self.transactional.is_none() && !draining && self.in_flight.len() < MAX_IN_FLIGHT;
        if pipelined {
            let sending = self.context.publisher.start(&batch, self.partition);
            let resume_at = self.resume_at(checkpoint);
            self.in_flight.push_back(InFlight {
                batch,
                sending,
                changelog_sent: false,
                resume_at,
                counts: std::mem::take(&mut self.counts),
                streams,
                started,
            });
            return Flow::Continue;
        }
        if let Flow::Stop = self.settle_in_flight(draining, started).await {
            return Flow::Stop;
        }
        let offsets = self.next_offsets();
        if let Flow::Stop = self
            .send_until_done(&batch, &offsets, draining, started)
            .await
        {
            return Flow::Stop;
        }
        if let Some(next) = self.resume_at(checkpoint) {
            if self.transactional.is_none() {
                self.store_offset(next);
            }
        }
        let counts = std::mem::take(&mut self.counts);
        self.report(counts, streams, started);
        Flow::Continue
    }

    /// For a checkpoint: the next input offset, which the checkpoint
    /// covers, taken so that the next one covers only what follows.
    fn resume_at(&mut self, checkpoint: bool) -> Option<i64> {
        if checkpoint {
            self.last_offset.take().map(|offset| offset + 1)
        } else {
            None
        }
    }

    /// Whether the partition waits for the broker's answer to a transaction
    /// or to its oldest publication in flight.
    fn awaits_broker(&self) -> bool {
        match (&self.committing, self.in_flight.front()) {
            (Some(committing), _) => committing.task.is_some(),
            (None, Some(front)) => !front.sending.is_settled(),
            (None, None) => false,
        }
    }

    /// Resolves when the broker has answered what [`Self::awaits_broker`]
    /// names. Cancel-safe: it only records answers.
    async fn broker_answered(&mut self) {
        if let Some(committing) = &mut self.committing {
            committing.wait().await;
        } else if let Some(front) = self.in_flight.front_mut() {
            front.sending.settled().await;
        }
    }

    /// Acts on an answer as soon as it is in, not at the next tick: offsets
    /// are stored (at-least-once) and counts reported at once; a failed
    /// publication or transaction is sent again.
    async fn on_broker_answer(&mut self) -> Flow {
        if self.committing.is_some() {
            return self.finish_committing(false, Instant::now()).await;
        }
        if self.collect_acknowledgements() {
            return self.settle_in_flight(false, Instant::now()).await;
        }
        Flow::Continue
    }

    /// Finishes the in-flight publications the broker has acknowledged,
    /// oldest first, without waiting; the oldest whose rollups are
    /// acknowledged sends its changelog records. Returns whether one failed
    /// (it stays in flight, to be sent again).
    fn collect_acknowledgements(&mut self) -> bool {
        while let Some(front) = self.in_flight.front_mut() {
            match front.sending.poll_settled() {
                None => return false,
                Some(Err(error)) => {
                    tracing::warn!(partition = self.partition, %error, "publication failed; sending again");
                    return true;
                }
                Some(Ok(())) if !front.changelog_sent => {
                    front.sending = self
                        .context
                        .publisher
                        .start_changelog(&front.batch, self.partition);
                    front.changelog_sent = true;
                }
                Some(Ok(())) => {
                    if let Some(done) = self.in_flight.pop_front() {
                        self.acknowledged(done);
                    }
                }
            }
        }
        false
    }

    fn acknowledged(&mut self, done: InFlight) {
        if let Some(next) = done.resume_at {
            self.store_offset(next);
        }
        self.report(done.counts, done.streams, done.started);
    }

    /// Waits for every in-flight publication, oldest first. From the first
    /// one that failed on, each is sent again and awaited, in order, so that
    /// the newest record per key stays the newest revision.
    async fn settle_in_flight(&mut self, draining: bool, started: Instant) -> Flow {
        let mut resend = false;
        while let Some(mut front) = self.in_flight.pop_front() {
            if !resend {
                let mut sent = front.sending.finish().await;
                if sent.is_ok() && !front.changelog_sent {
                    let publisher = &self.context.publisher;
                    sent = publisher
                        .start_changelog(&front.batch, self.partition)
                        .finish()
                        .await;
                }
                if let Err(error) = sent {
                    tracing::warn!(partition = self.partition, %error, "publication failed; sending again");
                    resend = true;
                }
            }
            if resend {
                let none = TopicPartitionList::new();
                if let Flow::Stop = self
                    .send_until_done(&front.batch, &none, draining, started)
                    .await
                {
                    return Flow::Stop;
                }
            }
            self.acknowledged(front);
        }
        Flow::Continue
    }

    /// Waits for the exactly-once transaction in flight, if any; a failed
    /// one is sent again in a new transaction, with the same offsets.
    async fn finish_committing(&mut self, draining: bool, started: Instant) -> Flow {
        let Some(mut committing) = self.committing.take() else {
            return Flow::Continue;
        };
        committing.wait().await;
        let failure = match committing.result.take() {
            Some(Ok(Ok(()))) => None,
            Some(Ok(Err(PublishError::Fenced(error)))) => {
                tracing::error!(partition = self.partition, %error, "fenced: giving the partition up");
                return Flow::Stop;
            }
            Some(Ok(Err(error))) => Some(error.to_string()),
            Some(Err(error)) => Some(error.to_string()),
            None => Some("the transaction's outcome is unknown".to_string()),
        };
        if let Some(error) = failure {
            tracing::warn!(partition = self.partition, %error, "transaction failed; sending again");
            if let Flow::Stop = self
                .send_until_done(&committing.batch, &committing.offsets, draining, started)
                .await
            {
                return Flow::Stop;
            }
        }
        self.report(committing.counts, committing.streams, committing.started);
        Flow::Continue
    }

    /// Sends one batch and waits for it (in a transaction with `offsets`,
    /// exactly-once), retrying until it succeeds.
    async fn send_until_done(
        &self,
        batch: &OutBatch,
        offsets: &TopicPartitionList,
        draining: bool,
        started: Instant,
    ) -> Flow {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match &self.transactional {
                Some(publisher) => match self.group_metadata() {
                    Some(group) => {
                        publisher
                            .send_transaction(batch, self.partition, offsets, &group)
                            .await
                    }
                    None => return Flow::Stop,
                },
                None => self.context.publisher.send(batch, self.partition).await,
            };
            match result {
                Ok(()) => return Flow::Continue,
                Err(PublishError::Fenced(error)) => {
                    // Another instance owns the partition now; its state wins.
                    tracing::error!(partition = self.partition, %error, "fenced: giving the partition up");
                    return Flow::Stop;
                }
                Err(error) if draining && started.elapsed() > DRAIN_RETRY_LIMIT => {
                    tracing::error!(partition = self.partition, %error, "publication failed while draining; offsets not committed");
                    return Flow::Stop;
                }
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "publication failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The input offset to resume from, for the transaction's offset commit.
    fn next_offsets(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        if let Some(offset) = self.last_offset {
            let topic = &self.context.config.consumer.topic;
            // Only fails for a partition number librdkafka cannot hold.
            let _ = tpl.add_partition_offset(topic, self.partition, Offset::Offset(offset + 1));
        }
        tpl
    }

    fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        let consumer = self
            .context
            .consumer
            .get()
            .and_then(std::sync::Weak::upgrade)?;
        consumer.group_metadata()
    }

    fn store_offset(&self, next: i64) {
        let Some(consumer) = self
            .context
            .consumer
            .get()
            .and_then(std::sync::Weak::upgrade)
        else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        let topic = &self.context.config.consumer.topic;
        if tpl
            .add_partition_offset(topic, self.partition, Offset::Offset(next))
            .is_ok()
        {
            if let Err(error) = consumer.store_offsets(&tpl) {
                // The partition was revoked under us; the new owner takes over.
                tracing::warn!(partition = self.partition, %error, "cannot store offset");
            }
        }
    }

    fn report(&mut self, counts: BatchCounts, rollups: usize, started: Instant) {
        metrics::counter!(names::EVENTS_CONSUMED).increment(counts.consumed);
        metrics::counter!(names::EVENTS_DUPLICATE).increment(counts.duplicates);
        metrics::counter!(names::EVENTS_LATE).increment(self.aggregator.take_late());
        for (reason, n) in InvalidReason::ALL.iter().zip(counts.invalid) {
            if n > 0 {
                metrics::counter!(names::EVENTS_INVALID, "reason" => reason.as_str()).increment(n);
            }
        }
        metrics::histogram!(names::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        if let (Some(ts), true) = (counts.newest_ts, rollups > 0) {
            let latency_ms = (wall_clock_ms() - ts).max(0);
            metrics::histogram!(names::END_TO_END_SECONDS).record(latency_ms as f64 / 1000.0);
        }
        if self
            .state_measured
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.state_measured = Some(Instant::now());
            let partition = self.partition.to_string();
            metrics::gauge!(names::STATE_BYTES, "partition" => partition.clone())
                .set(self.aggregator.state_bytes_estimate() as f64);
            metrics::gauge!(names::STREAMS_PACKED, "partition" => partition)
                .set(self.aggregator.packed_count() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Guarantee, Settings};

    /// Exactly-once with 100 ms transactions and a 1 s checkpoint interval:
    /// a partition that is behind waits for the checkpoint interval, one
    /// whose queue ran dry does not.
    #[test]
    fn a_partition_that_is_behind_commits_every_checkpoint_interval() {
        let settings = Settings {
            guarantee: Guarantee::ExactlyOnce,
            publish_interval_ms: 100,
            checkpoint_interval_ms: Some(1000),
            ..Settings::default()
        };
        let config = crate::service::engine_config(&settings).expect("valid settings");
        let ago = |ms| Instant::now() - Duration::from_millis(ms);
        assert!(behind_and_waiting(false, ago(100), &config));
        assert!(behind_and_waiting(false, ago(900), &config));
        assert!(!behind_and_waiting(false, ago(1000), &config));
        assert!(!behind_and_waiting(true, ago(100), &config));
    }

    /// A quiet partition's event time goes on from its own newest event, at
    /// the wall clock's pace: live traffic's watermark is the wall clock's
    /// less the lateness, and an hour-old backlog's moves on by the pause.
    #[test]
    fn a_quiet_partition_moves_on_from_its_newest_event() {
        let now = crate::wall_clock_ms();
        let live = quiet_watermark(now - 30_000, Duration::from_secs(30), 5_000);
        assert_eq!(live, now - 5_000);
        let hour_ago = now - 3_600_000;
        let backlog = quiet_watermark(hour_ago, Duration::from_secs(45), 5_000);
        assert_eq!(backlog, hour_ago + 40_000);
        assert_eq!(
            quiet_watermark(i64::MAX - 1, Duration::MAX, 0),
            i64::MAX,
            "saturates"
        );
    }

    /// Twelve partitions started together publish (and checkpoint) at
    /// phases spread over the interval, not all in one tick.
    #[test]
    fn partitions_started_together_publish_at_spread_phases() {
        let config = crate::service::engine_config(&Settings::default()).expect("valid settings");
        assert_eq!(config.publish_interval, Duration::from_secs(1));
        assert_eq!(config.checkpoint_interval, Duration::from_secs(5));
        let mut tenths = std::collections::BTreeSet::new();
        let mut seconds = std::collections::BTreeSet::new();
        for partition in 0..12 {
            let (publication, checkpoint) = starting_times(partition, &config);
            // When its first publication is due, in tenths of the interval.
            let done = publication.elapsed().as_millis().min(999);
            tenths.insert((1_000 - done) / 100);
            // Its checkpoints fall due with one of its publications: a
            // whole number of publish intervals apart.
            let apart = (publication - checkpoint).as_millis();
            let off = apart % 1_000;
            assert!(
                !(50..950).contains(&off),
                "partition {partition}: {apart} ms"
            );
            seconds.insert((apart + 500) / 1_000);
        }
        assert!(tenths.len() >= 8, "first publications in tenths {tenths:?}");
        // And in different seconds of the checkpoint interval.
        assert_eq!(seconds.len(), 5, "checkpoints behind by {seconds:?} s");
    }

    /// A partition that always has records queued still sees its ticks.
    /// One thread: with an idle thread to spare, that one would fire the
    /// timers; in a catch-up every thread is busy.
    #[tokio::test(flavor = "current_thread")]
    async fn a_worker_with_a_backlog_still_sees_its_ticks() {
        const BACKLOG: u64 = 50_000_000;
        let mut records = futures::stream::iter(0..BACKLOG);
        let mut ticker = Ticker::new(Duration::from_millis(1));
        let (mut ticks, mut applied) = (0, 0u64);
        while ticks < 3 {
            tokio::select! {
                biased;
                _ = ticker.tick() => ticks += 1,
                record = records.next() => {
                    let count = |r: u64| applied += std::hint::black_box(r) & 1;
                    match take_turn(&mut records, record, &mut ticker, Instant::now(), count) {
                        None => break,
                        Some(turn) => ticks += u32::from(turn.tick_due),
                    }
                }
            }
        }
        assert_eq!(
            ticks, 3,
            "all {BACKLOG} records ({applied} odd) were applied before the third tick"
        );
    }
}
