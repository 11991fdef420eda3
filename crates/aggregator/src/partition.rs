//! [`PartitionAggregator`]: the aggregation state of one input partition.
//!
//! Invariant: one owner applies the partition's events in input order and
//! calls [`PartitionAggregator::publish`] between batches; nothing else
//! touches the state. A stream's [`StreamCheckpoint`] records the highest
//! input position applied to it, so after a restore the consumer may replay
//! from any earlier committed offset: events already in the state come back
//! as [`Outcome::AlreadyApplied`] and change nothing.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::changelog::{PieceKind, Record};
use crate::commission::CommissionRate;
use crate::event::{Event, EventTime};
use crate::ids::table_bytes;
use crate::reason::InvalidReason;
use crate::rollup::{ProductRollup, StreamRollup};
use crate::stream::{Clock, Forgotten, Frozen, StateBytes, StreamCheckpoint, StreamState};

/// How figures are computed; the same for every partition of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatorConfig {
    /// The commission on net GMV (default 10 %).
    pub commission: CommissionRate,
    /// Tumbling window length, ms (default 1 minute).
    pub window_ms: i64,
    /// Watermark lag behind the newest event time, ms (default 5 s): a window
    /// takes events this late before its first final revision.
    pub allowed_lateness_ms: i64,
    /// How long a window is kept after the watermark passed its end, for
    /// corrected revisions, ms (default 1 hour).
    pub window_retention_ms: i64,
    /// How long, in event time, event ids are remembered for duplicates, ms
    /// (default 10 minutes, the contract's horizon).
    pub dedup_horizon_ms: i64,
    /// A stream with no event for this long in event time has ended, ms
    /// (default 30 minutes).
    pub idle_timeout_ms: i64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            commission: CommissionRate::default(),
            window_ms: 60_000,
            allowed_lateness_ms: 5_000,
            window_retention_ms: 3_600_000,
            dedup_horizon_ms: 600_000,
            idle_timeout_ms: 1_800_000,
        }
    }
}

/// Most tombstones one call of [`PartitionAggregator::checkpoints`] writes
/// (give or take one stream's part: a generation or epoch goes whole). When
/// streams end or expire together, their forgotten pieces can number
/// dozens a stream; the rest wait for the next checkpoints, so that no
/// batch holds millions of records at once.
pub const TOMBSTONES_PER_CHECKPOINT: usize = 16_384;

/// What [`PartitionAggregator::apply`] did with an event, for the caller's
/// metrics and dead-letter routing.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// New and valid: it changed the stream's figures.
    Counted,
    /// Its (`stream_id`, `event_id`) was already counted; nothing changed.
    Duplicate,
    /// Invalid against the stream's state (only `CurrencyMismatch` comes from
    /// here); nothing changed, the record belongs in the dead-letter topic.
    Invalid(InvalidReason),
    /// Its position is at or below the stream's restored checkpoint: its
    /// effect is already in the state. Neither counted nor a duplicate.
    AlreadyApplied,
}

/// What one stream publishes after a batch: its figures. The checkpoint that
/// restores the state behind them comes from [`PartitionAggregator::checkpoints`].
#[derive(Clone, Debug)]
pub struct Publication {
    /// The cumulative figures, at the new revision.
    pub rollup: StreamRollup,
    /// The windows that changed, each at its new revision, oldest first.
    pub windows: Vec<StreamRollup>,
    /// Every product of the stream, by `gmv` descending then `product_id`.
    pub products: Vec<ProductRollup>,
}

/// The state of every stream of one input partition, with a single owner.
pub struct PartitionAggregator {
    config: AggregatorConfig,
    /// Keyed by `stream_id`; looked up by `&str` so existing streams cost no
    /// allocation. States are boxed: a table slot is 24 bytes, not the whole
    /// state, so the table's empty buckets and its growth cost little.
    streams: HashMap<Box<str>, Box<StreamState>>,
    /// Ended streams holding nothing but what they keep for a later event
    /// (no windows, presence or event ids), packed ([`Frozen`]) by the idle
    /// scan; an event for one moves it back to `streams`. Never in both.
    ended: HashMap<Box<str>, Frozen>,
    /// Streams changed since the last publication, each pushed once when it
    /// turns dirty so that publishing does not scan every stream.
    dirty: Vec<Box<str>>,
    /// Streams published since their last checkpoint, each pushed once.
    unsaved: Vec<Box<str>>,
    /// Those of them never checkpointed (new, or restored and moved on), so
    /// that [`Self::first_checkpoints`] looks at them alone.
    never_saved: Vec<Box<str>>,
    /// Changelog pieces (duplicate filter, presence) that streams forgot,
    /// for their next checkpoints to tombstone (each of them is in `unsaved`
    /// or in `tombstones_due`). A stream with any is not packed.
    forgotten: HashMap<Box<str>, Forgotten>,
    /// Streams whose head is saved but whose tombstones a full checkpoint
    /// put off ([`TOMBSTONES_PER_CHECKPOINT`]), oldest first. An id whose
    /// stream owes nothing by its turn (a head wrote them) is passed over.
    tombstones_due: VecDeque<Box<str>>,
    /// Tombstones a full checkpoint writes, about.
    tombstone_budget: usize,
    /// Newest event time counted in this partition.
    max_ts: Option<EventTime>,
    /// A watermark pushed from outside (an idle partition in live mode).
    pushed_watermark: Option<EventTime>,
    /// Watermark at the last idle-stream scan.
    scanned_at: Option<EventTime>,
    /// Counted events too late for any retained window, since the last take.
    late: u64,
    /// Where a new stream's id seed comes from.
    id_seeds: IdSeeds,
    /// Where a stream new since a restore starts its revisions
    /// ([`Self::skip_revisions`]).
    revision_floor: u64,
    /// Off for tests that hold the packing to an aggregator without it.
    #[cfg(test)]
    packs_ended: bool,
}

/// Where a new stream's id seed comes from (see `ids.rs`): the seed its
/// event, viewer and order ids are hashed with for as long as it lives.
#[derive(Clone, Debug)]
pub enum IdSeeds {
    /// At random (`run`): no one outside can work out a stream's seed, so no
    /// one can write an id that hashes as another does.
    Random(std::hash::RandomState),
    /// From the stream id and this key (`replay`: the same file gives the
    /// same figures, distinct counts beyond exact ones included).
    Keyed(u64),
    /// None: ids hashed unseeded, as before seeds (tests of older formats).
    Unseeded,
}

impl IdSeeds {
    /// At random.
    pub fn random() -> IdSeeds {
        IdSeeds::Random(std::hash::RandomState::new())
    }

    /// The seed of a new stream `stream_id`; never 0 but unseeded.
    fn seed(&self, stream_id: &str) -> u64 {
        use std::hash::BuildHasher;
        match self {
            IdSeeds::Random(random) => random.hash_one(stream_id).max(1),
            IdSeeds::Keyed(key) => crate::ids::id_hash(*key, stream_id).max(1),
            IdSeeds::Unseeded => 0,
        }
    }
}

impl PartitionAggregator {
    /// An empty aggregator; restore checkpoints before applying events.
    pub fn new(config: AggregatorConfig) -> PartitionAggregator {
        PartitionAggregator {
            config,
            streams: HashMap::new(),
            ended: HashMap::new(),
            dirty: Vec::new(),
            unsaved: Vec::new(),
            never_saved: Vec::new(),
            forgotten: HashMap::new(),
            tombstones_due: VecDeque::new(),
            tombstone_budget: TOMBSTONES_PER_CHECKPOINT,
            max_ts: None,
            pushed_watermark: None,
            scanned_at: None,
            late: 0,
            id_seeds: IdSeeds::random(),
            revision_floor: 0,
            #[cfg(test)]
            packs_ended: true,
        }
    }

    /// Seeds new streams' ids from `seeds` instead of at random.
    pub fn with_id_seeds(mut self, seeds: IdSeeds) -> PartitionAggregator {
        self.id_seeds = seeds;
        self
    }

    /// The configuration figures are computed with.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// Applies one valid event found at input `position` (the Kafka offset;
    /// in replay, the line number). A stream is created by its first counted
    /// event only.
    pub fn apply(&mut self, event: &Event<'_>, position: u64) -> Outcome {
        let clock = self.clock();
        // A stream not yet here has no duplicates, currency or checkpoint, so
        // its first event is always counted: creating it up front is exact.
        let stream_id: &str = &event.stream_id;
        let (seeds, floor) = (&self.id_seeds, self.revision_floor);
        let new_stream = || {
            let mut state = StreamState::seeded(seeds.seed(stream_id));
            state.skip_revisions(floor);
            state
        };
        let state = match self.streams.entry_ref(stream_id) {
            EntryRef::Occupied(entry) => entry.into_mut(),
            // An ended stream reopens from its figures.
            EntryRef::Vacant(entry) => entry.insert(Box::new(
                self.ended
                    .remove(stream_id)
                    .map_or_else(new_stream, |frozen| frozen.thaw()),
            )),
        };
        let applied = state.apply(event, position, &clock);
        if applied.outcome == Outcome::Counted {
            self.max_ts = Some(self.max_ts.map_or(event.ts, |t| t.max(event.ts)));
            self.late += u64::from(applied.late);
            if !state.dirty {
                state.dirty = true;
                self.dirty.push(stream_id.into());
            }
        }
        applied.outcome
    }

    /// The partition's watermark: the newest event time counted minus the
    /// allowed lateness, or a later one pushed by [`Self::advance_watermark`].
    pub fn watermark(&self) -> Option<EventTime> {
        let own = self
            .max_ts
            .map(|t| t.saturating_sub(self.config.allowed_lateness_ms));
        own.max(self.pushed_watermark)
    }

    /// The newest event time counted (or restored), if any.
    pub fn newest_event_ts(&self) -> Option<EventTime> {
        self.max_ts
    }

    /// Moves the watermark to at least `watermark`: for a partition that has
    /// gone quiet, so its windows close and its idle streams end even though
    /// no newer event arrives. Never moves it back.
    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.pushed_watermark = Some(
            self.pushed_watermark
                .map_or(watermark, |w| w.max(watermark)),
        );
    }

    /// Counted events that were too late for any retained window since the
    /// last call (they are in the cumulative figures).
    pub fn take_late(&mut self) -> u64 {
        std::mem::take(&mut self.late)
    }

    /// The late count without taking it (tests).
    #[cfg(test)]
    pub(crate) fn take_late_peek(&self) -> u64 {
        self.late
    }

    fn clock(&self) -> Clock {
        Clock {
            window_ms: self.config.window_ms.max(1),
            retention_ms: self.config.window_retention_ms.max(0),
            dedup_horizon_ms: self.config.dedup_horizon_ms.max(0),
            watermark: self.watermark(),
        }
    }

    /// Ends the streams idle for the idle timeout at the current watermark
    /// (at most one scan per minute of event time), marking them dirty so
    /// their final rollup is published, and packs the ended streams that
    /// have nothing left to publish, checkpoint or expire. [`Self::publish`]
    /// does it first; a caller that applies events for longer between
    /// publications than `run` does (`replay`, which publishes once at the
    /// end) calls it as it goes, so that streams end where `run` ends them,
    /// and [`Self::end_idle_streams_now`] before its last publication.
    pub fn end_idle_streams(&mut self) {
        let Some(watermark) = self.watermark() else {
            return;
        };
        if self
            .scanned_at
            .is_some_and(|at| watermark < at.saturating_add(60_000))
        {
            return;
        }
        self.scanned_at = Some(watermark);
        let clock = self.clock();
        let idle_ms = self.config.idle_timeout_ms;
        let mut forgot = Forgotten::new();
        let packs = self.packs_ended();
        let packed = self.streams.extract_if(|stream_id, state| {
            if state.idle(watermark, idle_ms) {
                state.finalize(clock.window_ms, &mut forgot);
                self.dirty.push(stream_id.clone());
            }
            // A stream with changes not yet published expires in `publish`,
            // once its windows are published: a window past retention by
            // now still owes readers its last changes.
            if !state.dirty {
                state.expire(&clock, &mut forgot);
            }
            // Its next checkpoint tombstones the forgotten pieces.
            if file_forgotten(&mut self.forgotten, stream_id, &mut forgot) && !state.unsaved {
                state.unsaved = true;
                self.unsaved.push(stream_id.clone());
            }
            // One that fits is named by nothing: not dirty, not unsaved, and
            // owing no tombstones (not in `forgotten` or `tombstones_due`).
            packs && Frozen::fits(state) && !self.forgotten.contains_key(stream_id)
        });
        for (stream_id, state) in packed {
            let frozen = Frozen::of(&state).expect("the scan packs streams that fit");
            self.ended.insert(stream_id, frozen);
        }
        // Streams end in waves (an evening's shows): give the table's room
        // back once most of it is empty, keeping some for the next ones.
        if self.streams.len() < self.streams.capacity() / 4 {
            self.streams.shrink_to(self.streams.len() * 2);
        }
    }

    /// [`Self::end_idle_streams`] at the watermark now, however little event
    /// time has passed since the last scan: for the end of a replay.
    pub fn end_idle_streams_now(&mut self) {
        self.scanned_at = None;
        self.end_idle_streams();
    }

    /// Whether ended streams are packed: always, but in tests that hold the
    /// packing to an aggregator without it.
    fn packs_ended(&self) -> bool {
        #[cfg(test)]
        return self.packs_ended;
        #[cfg(not(test))]
        true
    }

    /// The figures of every stream changed since the last call, each at a new
    /// revision, sorted by `stream_id`.
    pub fn publish(&mut self) -> Vec<Publication> {
        self.end_idle_streams();
        let mut stream_ids = std::mem::take(&mut self.dirty);
        // A restore in between can leave a stream listed twice or no longer dirty.
        stream_ids.sort_unstable();
        stream_ids.dedup();
        let rate = self.config.commission;
        let clock = self.clock();
        let mut publications = Vec::with_capacity(stream_ids.len());
        for stream_id in stream_ids {
            let Some(state) = self.streams.get_mut(&stream_id) else {
                continue;
            };
            if !state.dirty {
                continue;
            }
            state.dirty = false;
            state.revision += 1;
            // Brought up first, so that the plays below start from it.
            state.project_presence(&clock);
            let played = state.played();
            let windows = state.publish_windows(&stream_id, rate, clock.window_ms, played);
            let mut forgot = Forgotten::new();
            state.expire(&clock, &mut forgot);
            // Published, so checkpointed next (marked below).
            file_forgotten(&mut self.forgotten, &stream_id, &mut forgot);
            let products = state.products();
            if !state.unsaved {
                state.unsaved = true;
                if !state.saved_once {
                    self.never_saved.push(stream_id.clone());
                }
                self.unsaved.push(stream_id.clone());
            }
            publications.push(Publication {
                rollup: state.rollup_with(stream_id.into(), rate, &products, played),
                products,
                windows,
            });
        }
        publications
    }

    /// The changelog records of every stream published since its last
    /// checkpoint, by `stream_id`: the state behind the publications so
    /// far. Each stream's are what [`crate::changelog`] describes: the new
    /// pieces of its duplicate filter, its head, then tombstones. Serialized
    /// straight from the state, without a copy.
    ///
    /// Tombstones are the one part that may wait: past about
    /// [`TOMBSTONES_PER_CHECKPOINT`] they are left to the next calls, oldest
    /// first. The heads are all written, so the state behind every
    /// publication is saved either way; the pieces still to tombstone are
    /// strays no head counts.
    pub fn checkpoints(&mut self) -> Vec<Record> {
        self.take_checkpoints(true, self.tombstone_budget)
    }

    /// [`Self::checkpoints`] with every tombstone due, none left for later:
    /// for a partition about to be handed over or shut down, which will
    /// not checkpoint again.
    pub fn final_checkpoints(&mut self) -> Vec<Record> {
        self.take_checkpoints(true, usize::MAX)
    }

    /// [`Self::checkpoints`] of the streams never checkpointed yet only (new
    /// streams, small): so that every published stream has a checkpoint,
    /// whose revision [`Self::skip_revisions`] can move past after a restore.
    pub fn first_checkpoints(&mut self) -> Vec<Record> {
        self.take_checkpoints(false, self.tombstone_budget)
    }

    /// Sets how many tombstones a checkpoint writes, about, for tests that
    /// make it small.
    #[cfg(test)]
    pub(crate) fn set_tombstone_budget(&mut self, budget: usize) {
        self.tombstone_budget = budget;
    }

    /// How many streams have tombstones still to write: put off by an
    /// earlier checkpoint, or due with their next head.
    pub fn tombstones_due(&self) -> usize {
        self.forgotten.len()
    }

    fn take_checkpoints(&mut self, all: bool, mut budget: usize) -> Vec<Record> {
        let mut checkpoints = Vec::new();
        // Those put off first, oldest first, while the budget lasts (the
        // rest stay queued untouched), unless a head of theirs is due anyway
        // (it writes them below).
        while all && budget > 0 {
            let Some(stream_id) = self.tombstones_due.pop_front() else {
                break;
            };
            let Some(state) = self.streams.get(&stream_id) else {
                continue;
            };
            if state.unsaved {
                continue;
            }
            let Some(forgot) = self.forgotten.remove(&stream_id) else {
                continue;
            };
            let later = StreamCheckpoint::write_tombstones(
                &stream_id,
                state,
                forgot,
                &mut budget,
                &mut checkpoints,
            );
            if !later.is_empty() {
                // The budget ran out in its part: it goes on next time.
                self.forgotten.insert(stream_id.clone(), later);
                self.tombstones_due.push_front(stream_id);
            }
        }
        let mut stream_ids = if all {
            self.never_saved.clear();
            std::mem::take(&mut self.unsaved)
        } else {
            std::mem::take(&mut self.never_saved)
        };
        stream_ids.sort_unstable();
        stream_ids.dedup();
        checkpoints.reserve(stream_ids.len());
        for stream_id in stream_ids {
            let Some(state) = self.streams.get_mut(&stream_id) else {
                continue;
            };
            // Its id may still be in `unsaved`: a full checkpoint skips it
            // unless it was published again since.
            if state.unsaved && (all || !state.saved_once) {
                state.unsaved = false;
                state.saved_once = true;
                let forgot = self.forgotten.remove(&stream_id).unwrap_or_default();
                let later = StreamCheckpoint::write_changelog(
                    &stream_id,
                    state,
                    forgot,
                    &mut budget,
                    &mut checkpoints,
                );
                put_off(
                    &mut self.forgotten,
                    &mut self.tombstones_due,
                    stream_id,
                    later,
                );
            }
        }
        // Streams end in waves: give the room of the last one back.
        if self.tombstones_due.len() < self.tombstones_due.capacity() / 4 {
            self.tombstones_due.shrink_to(self.tombstones_due.len() * 2);
        }
        if self.forgotten.len() < self.forgotten.capacity() / 4 {
            self.forgotten.shrink_to(self.forgotten.len() * 2);
        }
        checkpoints
    }

    /// Moves every stream's revisions (cumulative and windows) `n` on: after
    /// a restore, when up to `n` publications may have followed the
    /// checkpoints restored, so that revisions keep increasing per key.
    /// Streams new from now on start `n` on too: at-least-once, a stream's
    /// first rollups can land without its first checkpoint (which waits for
    /// them), and the stream, made again from the events read again, must
    /// not publish revisions those rollups already had.
    pub fn skip_revisions(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.revision_floor = self.revision_floor.saturating_add(n);
        for state in self.streams.values_mut() {
            state.skip_revisions(n);
        }
        for frozen in self.ended.values_mut() {
            let mut state = frozen.thaw();
            state.skip_revisions(n);
            *frozen = Frozen::of(&state).expect("moving revisions leaves an ended stream packable");
        }
    }

    /// The stream's state, unpacked for the call when it has ended and is
    /// packed.
    fn state(&self, stream_id: &str) -> Option<Cow<'_, StreamState>> {
        match self.streams.get(stream_id) {
            Some(state) => Some(Cow::Borrowed(&**state)),
            None => Some(Cow::Owned(self.ended.get(stream_id)?.thaw())),
        }
    }

    /// The stream's retained windows now, oldest first (no new revision).
    pub fn windows(&self, stream_id: &str) -> Option<Vec<StreamRollup>> {
        let state = self.state(stream_id)?;
        Some(state.window_rollups(
            stream_id,
            self.config.commission,
            self.config.window_ms.max(1),
        ))
    }

    /// The stream's figures now, at its current revision (no new revision).
    pub fn rollup(&self, stream_id: &str) -> Option<StreamRollup> {
        let state = self.state(stream_id)?;
        Some(state.rollup(stream_id.to_owned(), self.config.commission))
    }

    /// Every stream's figures now, sorted by `stream_id` (the replay output).
    pub fn rollups(&self) -> Vec<StreamRollup> {
        self.stream_ids()
            .into_iter()
            .filter_map(|id| self.rollup(id))
            .collect()
    }

    /// The stream's products now, by `gmv` descending then `product_id`.
    pub fn products(&self, stream_id: &str) -> Option<Vec<ProductRollup>> {
        Some(self.state(stream_id)?.products())
    }

    /// [`Self::rollup`] and [`Self::products`] together, a packed stream
    /// unpacked once for both (a restore shows every stream it restored).
    pub fn rollup_and_products(
        &self,
        stream_id: &str,
    ) -> Option<(StreamRollup, Vec<ProductRollup>)> {
        let state = self.state(stream_id)?;
        let rollup = state.rollup(stream_id.to_owned(), self.config.commission);
        Some((rollup, state.products()))
    }

    /// How many streams this partition holds, ended ones too, for the
    /// active-streams gauge.
    pub fn stream_count(&self) -> usize {
        self.streams.len() + self.ended.len()
    }

    /// How many of them are ended streams held packed.
    pub fn packed_count(&self) -> usize {
        self.ended.len()
    }

    /// Every stream held, sorted.
    pub fn stream_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .streams
            .keys()
            .chain(self.ended.keys())
            .map(|id| &**id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The stream's state now, as a checkpoint (at its current revision).
    pub fn checkpoint(&self, stream_id: &str) -> Option<StreamCheckpoint> {
        let state = self.state(stream_id)?;
        Some(StreamCheckpoint::from_state(state.into_owned()))
    }

    /// Replaces the stream's state with a checkpoint, as after a restart or
    /// rebalance. Not dirty: nothing new to publish until an event counts.
    /// An ended stream that holds nothing live is packed at once.
    pub fn restore(&mut self, stream_id: &str, checkpoint: StreamCheckpoint) {
        let mut state = checkpoint.into_state();
        state.note_uncovered(&self.clock());
        // The checkpoint lists the pieces the changelog holds for it.
        self.forgotten.remove(stream_id);
        self.ended.remove(stream_id);
        if state.last_event_ts() != EventTime::MIN {
            let ts = state.last_event_ts();
            self.max_ts = Some(self.max_ts.map_or(ts, |t| t.max(ts)));
        }
        if let Some(frozen) = Frozen::of(&state).filter(|_| self.packs_ended()) {
            self.streams.remove(stream_id);
            self.ended.insert(stream_id.into(), frozen);
            return;
        }
        match self.streams.get_mut(stream_id) {
            Some(existing) => **existing = state,
            None => {
                self.streams.insert(stream_id.into(), Box::new(state));
            }
        }
    }

    /// Bytes held, by structure, for the state-size gauge and the memory
    /// benchmark. Walks every stream, so call it per batch at most.
    pub fn state_bytes(&self) -> StateBytes {
        let mut bytes = StateBytes {
            streams: std::mem::size_of::<Self>()
                + table_bytes(&self.streams)
                + (self.dirty.capacity()
                    + self.unsaved.capacity()
                    + self.never_saved.capacity()
                    + self.tombstones_due.capacity())
                    * std::mem::size_of::<Box<str>>()
                + self
                    .forgotten
                    .iter()
                    .map(|(id, forgot)| {
                        id.len() + forgot.capacity() * std::mem::size_of::<(PieceKind, i64, u32)>()
                    })
                    .sum::<usize>(),
            ..StateBytes::default()
        };
        for (id, state) in &self.streams {
            bytes.streams += id.len();
            state.count_bytes(&mut bytes);
        }
        bytes.ended_packed = table_bytes(&self.ended)
            + self
                .ended
                .iter()
                .map(|(id, frozen)| id.len() + frozen.heap_bytes())
                .sum::<usize>();
        bytes
    }

    /// [`Self::state_bytes`] in total.
    pub fn state_bytes_estimate(&self) -> usize {
        self.state_bytes().total()
    }
}

/// Files the tombstones a checkpoint left (`later`) for the next ones, at
/// the back of the queue.
fn put_off(
    forgotten: &mut HashMap<Box<str>, Forgotten>,
    due: &mut VecDeque<Box<str>>,
    stream_id: Box<str>,
    later: Forgotten,
) {
    if !later.is_empty() {
        forgotten.insert(stream_id.clone(), later);
        due.push_back(stream_id);
    }
}

/// Files the pieces a stream just `forgot` for its next checkpoint to
/// tombstone; `true` when there were any.
fn file_forgotten(
    forgotten: &mut HashMap<Box<str>, Forgotten>,
    stream_id: &str,
    forgot: &mut Forgotten,
) -> bool {
    if forgot.is_empty() {
        return false;
    }
    forgotten.entry_ref(stream_id).or_default().append(forgot);
    true
}

impl fmt::Debug for PartitionAggregator {
    /// A summary: the state can hold millions of entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionAggregator")
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .field("ended", &self.ended.len())
            .field("dirty", &self.dirty.len())
            .field("unsaved", &self.unsaved.len())
            .field("never_saved", &self.never_saved.len())
            .field("tombstones_due", &self.tombstones_due())
            .finish()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod windows;

#[cfg(test)]
mod packing;

#[cfg(test)]
mod tombstones;
