//! Memory benchmark (not a test): resident memory and state bytes per stream,
//! for live streams and for ended (finalised) ones.
//!
//! ```text
//! cargo run --release -p livetally-benches --example memory -- \
//!     --streams 1000000 --viewers-per-stream 10 --scenario both
//! ```
//!
//! Options (all optional):
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--streams N` | 1,000,000 | live streams to create |
//! | `--viewers-per-stream V` | 10 | viewers per stream |
//! | `--scenario live\|ended\|both` | both | `live` stops after the live phase; `ended` and `both` then end every stream |
//! | `--partitions P` | 1 | `PartitionAggregator`s the streams are spread over (a real instance owns one per assigned Kafka partition) |
//! | `--stream-minutes M` | 3 | event-time span of one stream's events |
//! | `--publish-every E` | 50,000 | events between two `publish()` calls of every partition |
//! | `--checkpoint-every C` | 5 | publications between two full `checkpoints()`, with `first_checkpoints()` at the others, as the engine's 5 s checkpoints and 1 s publications; `0`: none (the benchmark before 29 November) |
//! | `--seed S` | 1 | seed of the deterministic event generator |
//! | `--malloc-trim` | off | after the ended phase, also call glibc's `malloc_trim(0)` and measure again |
//! | `--no-read-model` | off | measure the aggregators' state alone, without the read model |
//!
//! The allocator is glibc's malloc, or mimalloc (which the `livetally`
//! binary uses) with `MEMORY_ALLOCATOR=mimalloc` in the environment: it is
//! chosen at the first allocation, so it cannot be a flag. The "malloc
//! chunks" column models glibc's chunks either way.
//!
//! What it does: every stream's events are generated deterministically (an
//! inline splitmix64, no extra crates) and fed in arrival order, all streams
//! interleaved as they would be live, one slice of arrival time at a time
//! (each slice re-plans the streams it overlaps and keeps their events in the
//! slice, as compact 40-byte records, about 400,000 per slice), so the input
//! never dominates the measurement. Each record becomes a borrowed [`Event`]
//! (as the engine hands the aggregator events borrowed from Kafka records)
//! and is applied, and every partition publishes every `--publish-every`
//! events, as the engine's publish tick would: the dirty lists and the
//! publications are as large as live traffic makes them. Checkpoints are
//! taken as the engine takes them (their records dropped): a stream's
//! duplicate filter keeps the ids added since its last piece, and an ended
//! stream is packed only once its final rollup is checkpointed. The publications go
//! to a [`ReadModel`], as the engine's do (for the HTTP API), unless
//! `--no-read-model`: an instance holds both. Then, for `ended`, the watermark is
//! pushed past the idle timeout minute by minute so every stream ends, and
//! further past window retention so their windows expire.
//!
//! Measured at each phase: `VmRSS`/`VmHWM` from `/proc/self/status`; the
//! live heap bytes requested from the allocator (a counting wrapper around
//! the system allocator, which also keeps a histogram of live allocations by
//! size, so each piece of state can be told apart by its allocation size);
//! those bytes as glibc malloc chunks (8-byte header, 16-byte granularity,
//! 32-byte minimum); `state_bytes()`, in total and by structure; and the checkpoint size
//! (`checkpoint(id).to_bytes().len()`) over an evenly spaced sample of
//! streams.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::mem::size_of;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Instant;

use livetally_aggregator::distinct::DistinctCount;
use livetally_aggregator::{
    Action, AggregatorConfig, Currency, Event, EventTime, EventType as Kind, OrderLine, Outcome,
    PartitionAggregator, StateBytes, StreamCheckpoint,
};
use livetally_sink::ReadModel;

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

/// Allocation sizes counted one by one up to this; larger ones by power of two.
const EXACT_SIZES: usize = 16384;
/// Histogram slots: every exact size, then one per power of two.
const SLOTS: usize = EXACT_SIZES + 1 + 64;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_CHUNK_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);
static SLOT_COUNT: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static SLOT_BYTES: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];

fn slot(size: usize) -> usize {
    if size <= EXACT_SIZES {
        size
    } else {
        EXACT_SIZES + 1 + (usize::BITS - 1 - size.leading_zeros()) as usize
    }
}

/// What glibc malloc takes for a request of `size` bytes: an 8-byte header,
/// rounded up to 16 bytes, at least 32 (large requests are mmapped whole
/// pages, a difference that does not matter per stream).
fn chunk_bytes(size: usize) -> i64 {
    ((size + 8 + 15) & !15).max(32) as i64
}

fn track(size: usize, sign: i64) {
    LIVE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    LIVE_CHUNK_BYTES.fetch_add(sign * chunk_bytes(size), Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(sign, Ordering::Relaxed);
    let slot = slot(size);
    SLOT_COUNT[slot].fetch_add(sign, Ordering::Relaxed);
    SLOT_BYTES[slot].fetch_add(sign * size as i64, Ordering::Relaxed);
}

struct Counting;

/// The allocator behind [`Counting`]: 0 until the first allocation decides,
/// then [`SYSTEM`] or [`MIMALLOC`], never changed again (a block must be
/// freed by the allocator that made it).
static BACKEND: AtomicU8 = AtomicU8::new(0);
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

/// The allocator behind every call, chosen from `MEMORY_ALLOCATOR` at the
/// first allocation (before `main`, before anything could be allocated).
fn backend() -> &'static dyn GlobalAlloc {
    let mut chosen = BACKEND.load(Ordering::Relaxed);
    if chosen == 0 {
        extern "C" {
            fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
        }
        // SAFETY: a NUL-terminated name; getenv allocates nothing, and the
        // program has one thread when it first allocates.
        let value = unsafe { getenv(c"MEMORY_ALLOCATOR".as_ptr()) };
        // SAFETY: getenv returns null or a NUL-terminated string.
        let mimalloc = !value.is_null()
            && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"mimalloc";
        chosen = if mimalloc { MIMALLOC } else { SYSTEM };
        BACKEND.store(chosen, Ordering::Relaxed);
    }
    if chosen == MIMALLOC {
        &mimalloc::MiMalloc
    } else {
        &System
    }
}

/// The allocator's name, for the report.
fn backend_name() -> &'static str {
    if BACKEND.load(Ordering::Relaxed) == MIMALLOC {
        "mimalloc"
    } else {
        "glibc malloc"
    }
}

// SAFETY: every call is forwarded unchanged to one allocator, the same for
// the whole run; the bookkeeping is lock-free atomics in statics and never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { backend().alloc(layout) };
        if !ptr.is_null() {
            track(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { backend().alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. the backend, with `layout`.
        unsafe { backend().dealloc(ptr, layout) };
        track(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from the backend with `layout`.
        let new = unsafe { backend().realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(layout.size(), -1);
            track(new_size, 1);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocator's totals at one moment.
#[derive(Clone, Copy, Default)]
struct Heap {
    bytes: i64,
    chunks: i64,
    allocs: i64,
}

impl Heap {
    fn now() -> Heap {
        Heap {
            bytes: LIVE_BYTES.load(Ordering::Relaxed),
            chunks: LIVE_CHUNK_BYTES.load(Ordering::Relaxed),
            allocs: LIVE_ALLOCS.load(Ordering::Relaxed),
        }
    }
}

/// The histogram of live allocations (count and bytes per slot), copied into
/// buffers allocated once up front so that taking it allocates nothing.
struct Histogram {
    count: Box<[i64]>,
    bytes: Box<[i64]>,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            count: vec![0; SLOTS].into_boxed_slice(),
            bytes: vec![0; SLOTS].into_boxed_slice(),
        }
    }

    fn fill(&mut self) {
        for i in 0..SLOTS {
            self.count[i] = SLOT_COUNT[i].load(Ordering::Relaxed);
            self.bytes[i] = SLOT_BYTES[i].load(Ordering::Relaxed);
        }
    }

    /// `(slot, count, bytes)` of `self − base`, largest bytes first.
    fn diff(&self, base: &Histogram) -> Vec<(usize, i64, i64)> {
        let mut rows: Vec<(usize, i64, i64)> = (0..SLOTS)
            .map(|i| {
                (
                    i,
                    self.count[i] - base.count[i],
                    self.bytes[i] - base.bytes[i],
                )
            })
            .filter(|&(_, count, bytes)| count != 0 || bytes != 0)
            .collect();
        rows.sort_by_key(|&(slot, _, bytes)| (std::cmp::Reverse(bytes.abs()), slot));
        rows
    }
}

fn slot_label(slot: usize) -> String {
    if slot <= EXACT_SIZES {
        format!("{slot} B")
    } else {
        let low = 1_u64 << (slot - EXACT_SIZES - 1);
        format!("{low}..{} B", low * 2 - 1)
    }
}

// ---------------------------------------------------------------------------
// /proc/self/status
// ---------------------------------------------------------------------------

/// `(VmRSS, VmHWM)` in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() -> bool {
    extern "C" {
        /// glibc: returns free memory at the top of the heap and, since
        /// 2.8, whole free pages inside it, to the kernel.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim takes a size and touches only allocator
    // bookkeeping; it is safe to call at any time from any thread.
    unsafe { malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() -> bool {
    false
}

// ---------------------------------------------------------------------------
// Deterministic event generation
// ---------------------------------------------------------------------------

/// splitmix64: tiny, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event time of the run's first event (the contract's example timestamp).
const T0: EventTime = 1_764_120_000_000;
/// Stream starts are spread over this much event time, plus up to
/// [`START_JITTER_MS`].
const START_SPREAD_MS: i64 = 120_000;
const START_JITTER_MS: i64 = 30_000;
/// Latest arrival after event time: up to 2 s of jitter, plus up to 5 s more
/// for a redelivered duplicate.
const MAX_ARRIVAL_DELAY_MS: i64 = 7_000;
/// Input records generated per slice of arrival time (about 16 MB).
const SLICE_EVENTS: f64 = 400_000.0;

/// One planned event, 40 bytes: ids are formatted only when it is applied.
#[derive(Clone, Copy)]
struct Planned {
    /// When it reaches the aggregator (event time plus a jitter).
    arrival: i64,
    ts: EventTime,
    stream: u32,
    /// Index of the event within its stream: its `event_id`.
    seq: u32,
    viewer: u32,
    price: u32,
    kind: Kind,
    product: u8,
    quantity: u8,
}

struct Settings {
    streams: u32,
    viewers: u32,
    scenario: Scenario,
    partitions: usize,
    stream_ms: i64,
    publish_every: u64,
    checkpoint_every: u64,
    seed: u64,
    malloc_trim: bool,
    read_model: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Live,
    Ended,
    Both,
}

/// Appends one stream's events: every viewer views, sees a few product cards,
/// maybe clicks, adds to cart, likes, comments, shares, follows, leaves; one
/// stream in ten sells (one order of one or two lines). 1 % of the records
/// are delivered twice, as an at-least-once producer does.
fn plan_stream(n: u32, s: &Settings, out: &mut Vec<Planned>) {
    let mut rng = stream_rng(n, s);
    let start = stream_start(n, s, &mut rng);
    let end = start + s.stream_ms;
    let products = 3 + rng.below(6); // 3..=8 products pinned in the room
    let mut seq = 0_u32;
    let mut push = |rng: &mut Rng, ts: EventTime, viewer: u32, kind: Kind, product: u64| {
        let (quantity, price) = match kind {
            Kind::Purchase => (1 + rng.below(3) as u8, 500 + rng.below(19_500) as u32),
            _ => (0, 0),
        };
        let event = Planned {
            arrival: ts + rng.below(2_000) as i64,
            ts,
            stream: n,
            seq,
            viewer,
            price,
            kind,
            product: product as u8,
            quantity,
        };
        seq += 1;
        out.push(event);
        if rng.chance(1) {
            out.push(Planned {
                arrival: event.arrival + rng.below(5_000) as i64,
                ..event
            });
        }
    };
    let later =
        |rng: &mut Rng, from: EventTime| from + rng.below((end - from).max(1) as u64) as i64;
    for viewer in 0..s.viewers {
        let joined = start + rng.below((s.stream_ms * 2 / 3).max(1) as u64) as i64;
        push(&mut rng, joined, viewer, Kind::View, 0);
        for _ in 0..1 + rng.below(3) {
            let (ts, product) = (later(&mut rng, joined), rng.below(products));
            push(&mut rng, ts, viewer, Kind::Impression, product);
        }
        let mut optional = |rng: &mut Rng, percent: u64, kind: Kind| {
            if rng.chance(percent) {
                let (ts, product) = (later(rng, joined), rng.below(products));
                push(rng, ts, viewer, kind, product);
            }
        };
        optional(&mut rng, 30, Kind::Click);
        optional(&mut rng, 10, Kind::AddToCart);
        optional(&mut rng, 50, Kind::Like);
        optional(&mut rng, 20, Kind::Comment);
        optional(&mut rng, 5, Kind::Share);
        optional(&mut rng, 5, Kind::Follow);
        optional(&mut rng, 50, Kind::Leave);
    }
    if s.viewers > 0 && rng.chance(10) {
        let buyer = rng.below(u64::from(s.viewers)) as u32;
        let ts = later(&mut rng, start + s.stream_ms / 2);
        for _ in 0..1 + rng.below(2) {
            let product = rng.below(products);
            push(&mut rng, ts, buyer, Kind::Purchase, product);
        }
    }
}

fn stream_rng(n: u32, s: &Settings) -> Rng {
    Rng::new(s.seed ^ mix(u64::from(n) + 1))
}

/// First event time of stream `n`: the first draw of its generator.
fn stream_start(n: u32, s: &Settings, rng: &mut Rng) -> EventTime {
    T0 + stream_base(n, s) + rng.below(START_JITTER_MS as u64) as i64
}

/// Stream `n`'s start before jitter, ms after [`T0`]: increasing with `n`.
fn stream_base(n: u32, s: &Settings) -> i64 {
    i64::from(n) * START_SPREAD_MS / i64::from(s.streams.max(1))
}

/// Appends the events of stream `n` arriving in `[from, to)`.
fn plan_slice(n: u32, s: &Settings, from: i64, to: i64, out: &mut Vec<Planned>) {
    let before = out.len();
    plan_stream(n, s, out);
    let mut keep = before;
    for i in before..out.len() {
        let planned = out[i];
        if planned.arrival >= from && planned.arrival < to {
            out[keep] = planned;
            keep += 1;
        }
    }
    out.truncate(keep);
}

/// The Kafka partition of a stream (the engine keys records by `stream_id`).
fn partition_of(n: u32, partitions: usize) -> usize {
    (mix(u64::from(n) ^ 0x5bd1_e995) % partitions as u64) as usize
}

fn stream_id(n: u32) -> String {
    format!("live-{n}")
}

/// Reused buffers the borrowed events point into.
#[derive(Default)]
struct Ids {
    event_id: String,
    stream_id: String,
    viewer_id: String,
    seller_id: String,
    product_id: String,
    order_id: String,
}

impl Ids {
    fn event<'a>(&'a mut self, p: &Planned) -> Event<'a> {
        for buffer in [
            &mut self.event_id,
            &mut self.stream_id,
            &mut self.viewer_id,
            &mut self.seller_id,
            &mut self.product_id,
            &mut self.order_id,
        ] {
            buffer.clear();
        }
        let seller = p.stream / 4; // a shop runs several streams
                                   // Writing into a String cannot fail.
        let _ = write!(self.event_id, "e-{}-{}", p.stream, p.seq);
        let _ = write!(self.stream_id, "live-{}", p.stream);
        let _ = write!(self.viewer_id, "u-{}-{}", p.stream, p.viewer);
        let _ = write!(self.seller_id, "shop-{seller}");
        let _ = write!(self.product_id, "sku-{seller}-{}", p.product);
        let _ = write!(self.order_id, "o-{}-1", p.stream);
        let product_id = Cow::Borrowed(self.product_id.as_str());
        let action = match p.kind {
            Kind::View => Action::View,
            Kind::Leave => Action::Leave,
            Kind::Impression => Action::Impression { product_id },
            Kind::Click => Action::Click { product_id },
            Kind::AddToCart => Action::AddToCart { product_id },
            Kind::Purchase | Kind::Refund => {
                let line = OrderLine {
                    product_id,
                    order_id: Cow::Borrowed(&self.order_id),
                    quantity: u32::from(p.quantity),
                    unit_price: i64::from(p.price),
                    currency: Currency(*b"USD"),
                };
                if p.kind == Kind::Purchase {
                    Action::Purchase(line)
                } else {
                    Action::Refund(line)
                }
            }
            Kind::Like => Action::Like,
            Kind::Comment => Action::Comment,
            Kind::Share => Action::Share,
            Kind::Follow => Action::Follow,
        };
        Event {
            event_id: Cow::Borrowed(&self.event_id),
            stream_id: Cow::Borrowed(&self.stream_id),
            viewer_id: Cow::Borrowed(&self.viewer_id),
            ts: p.ts,
            seller_id: Some(Cow::Borrowed(&self.seller_id)),
            action,
        }
    }
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

/// Prints the inline sizes of the types the state is made of.
fn print_layout() {
    println!("## Sizes (std::mem::size_of, bytes)");
    println!(
        "PartitionAggregator                 {}",
        size_of::<PartitionAggregator>()
    );
    println!(
        "StreamState (= StreamCheckpoint), boxed in the stream table: {}",
        size_of::<StreamCheckpoint>()
    );
    println!(
        "DistinctCount                       {}",
        size_of::<DistinctCount>()
    );
    println!(
        "Event<'_>                           {}",
        size_of::<Event<'static>>()
    );
    println!(
        "Planned (input record)              {}",
        size_of::<Planned>()
    );
    println!();
}

struct Sample {
    phase: &'static str,
    rss_kib: u64,
    hwm_kib: u64,
    heap: Heap,
    /// `state_bytes()` of every partition, summed.
    bytes: StateBytes,
    checkpoint_avg: f64,
    streams: usize,
}

struct Bench {
    settings: Settings,
    aggregators: Vec<PartitionAggregator>,
    /// Where the publications go, as in the engine; `None` with `--no-read-model`.
    model: Option<ReadModel>,
    /// Per partition: the next input position (the Kafka offset).
    positions: Vec<u64>,
    since_publish: u64,
    /// Publications of every partition so far, for the checkpoint turn.
    publish_rounds: u64,
    publications: u64,
    finals: u64,
    /// Time spent in `publish()`, seconds.
    publish_secs: f64,
    outcomes: [u64; 4],
}

impl Bench {
    fn publish_all(&mut self) {
        let started = Instant::now();
        self.publish_rounds += 1;
        let every = self.settings.checkpoint_every;
        for aggregator in &mut self.aggregators {
            let publications = aggregator.publish();
            self.publications += publications.len() as u64;
            self.finals += publications.iter().filter(|p| p.rollup.is_final).count() as u64;
            if let Some(model) = &self.model {
                // Nobody watches the live feed: nothing is encoded for it.
                // Every publication goes to the rollup topic.
                drop(model.show(publications, true));
            }
            if every > 0 {
                if self.publish_rounds.is_multiple_of(every) {
                    drop(aggregator.checkpoints());
                } else {
                    drop(aggregator.first_checkpoints());
                }
            }
        }
        self.since_publish = 0;
        self.publish_secs += started.elapsed().as_secs_f64();
    }

    fn apply(&mut self, ids: &mut Ids, planned: &Planned) {
        let partition = partition_of(planned.stream, self.settings.partitions);
        let position = self.positions[partition];
        self.positions[partition] += 1;
        let event = ids.event(planned);
        let outcome = self.aggregators[partition].apply(&event, position);
        let index = match outcome {
            Outcome::Counted => 0,
            Outcome::Duplicate => 1,
            Outcome::Invalid(_) => 2,
            Outcome::AlreadyApplied => 3,
        };
        self.outcomes[index] += 1;
        self.since_publish += 1;
        if self.since_publish >= self.settings.publish_every {
            self.publish_all();
        }
    }

    fn advance_watermark(&mut self, watermark: EventTime) {
        for aggregator in &mut self.aggregators {
            aggregator.advance_watermark(watermark);
        }
        self.publish_all();
    }

    /// Streams whose checkpoints put tombstones off, in all partitions.
    fn tombstones_due(&self) -> usize {
        self.aggregators
            .iter()
            .map(PartitionAggregator::tombstones_due)
            .sum()
    }

    fn stream_count(&self) -> usize {
        self.aggregators
            .iter()
            .map(PartitionAggregator::stream_count)
            .sum()
    }

    fn sample(&self, phase: &'static str) -> Sample {
        // Read the process first: the sampling below allocates.
        let (rss_kib, hwm_kib) = rss_kib();
        let heap = Heap::now();
        let mut bytes = StateBytes::default();
        for aggregator in &self.aggregators {
            bytes.add(&aggregator.state_bytes());
        }
        let n = self.settings.streams;
        let picks = n.min(10_000);
        let mut total = 0_usize;
        let mut found = 0_usize;
        for i in 0..picks {
            let stream = (u64::from(i) * u64::from(n) / u64::from(picks)) as u32;
            let partition = partition_of(stream, self.settings.partitions);
            if let Some(checkpoint) = self.aggregators[partition].checkpoint(&stream_id(stream)) {
                total += checkpoint.to_bytes().len();
                found += 1;
            }
        }
        Sample {
            phase,
            rss_kib,
            hwm_kib,
            heap,
            bytes,
            checkpoint_avg: total as f64 / found.max(1) as f64,
            streams: self.stream_count(),
        }
    }
}

/// How long a stream's records keep arriving after its start.
fn bench_span_ms(s: &Settings) -> i64 {
    s.stream_ms + MAX_ARRIVAL_DELAY_MS
}

fn parse_args() -> Result<Settings, String> {
    let mut settings = Settings {
        streams: 1_000_000,
        viewers: 10,
        scenario: Scenario::Both,
        partitions: 1,
        stream_ms: 3 * 60_000,
        publish_every: 50_000,
        checkpoint_every: 5,
        seed: 1,
        malloc_trim: false,
        read_model: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--malloc-trim" {
            settings.malloc_trim = true;
            continue;
        }
        if flag == "--no-read-model" {
            settings.read_model = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--streams" => {
                settings.streams =
                    u32::try_from(number()?).map_err(|_| "--streams: too many".to_owned())?
            }
            "--viewers-per-stream" => {
                settings.viewers = u32::try_from(number()?)
                    .map_err(|_| "--viewers-per-stream: too many".to_owned())?
            }
            "--scenario" => {
                settings.scenario = match value.as_str() {
                    "live" => Scenario::Live,
                    "ended" => Scenario::Ended,
                    "both" => Scenario::Both,
                    other => return Err(format!("--scenario {other}: live, ended or both")),
                }
            }
            "--partitions" => settings.partitions = (number()? as usize).max(1),
            "--stream-minutes" => settings.stream_ms = (number()? as i64).max(1) * 60_000,
            "--publish-every" => settings.publish_every = number()?.max(1),
            "--checkpoint-every" => settings.checkpoint_every = number()?,
            "--seed" => settings.seed = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if settings.streams == 0 {
        return Err("--streams must be at least 1".to_owned());
    }
    Ok(settings)
}

fn main() {
    let settings = match parse_args() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("memory: {message}");
            std::process::exit(2);
        }
    };
    let n = settings.streams;
    let viewers = settings.viewers;
    let config = AggregatorConfig::default();

    // Touch the histograms so their pages are resident before the baseline,
    // and allocate every buffer the measurements need up front.
    track(0, 0);
    for i in 0..SLOTS {
        SLOT_COUNT[i].fetch_add(0, Ordering::Relaxed);
        SLOT_BYTES[i].fetch_add(0, Ordering::Relaxed);
    }
    let (mut base_histogram, mut histogram) = (Histogram::new(), Histogram::new());

    print_layout();

    let started = rss_kib();
    let mut samples = Vec::with_capacity(8);
    samples.push(Sample {
        phase: "start",
        rss_kib: started.0,
        hwm_kib: started.1,
        heap: Heap::now(),
        bytes: StateBytes::default(),
        checkpoint_avg: 0.0,
        streams: 0,
    });

    // Arrival time is cut into slices holding about SLICE_EVENTS records.
    let span_ms = bench_span_ms(&settings);
    let run_end = T0 + START_SPREAD_MS + START_JITTER_MS + span_ms;
    let expected_events = f64::from(n) * (4.8 * f64::from(viewers) + 0.3);
    let per_ms = expected_events / (run_end - T0) as f64;
    let slice_ms = ((SLICE_EVENTS / per_ms) as i64).clamp(1_000, 60_000);
    // Room for 2.5 times an average slice (streams overlap most in the
    // middle of the run), touched now so that its pages are in the baseline.
    let reserve = ((2.5 * per_ms * slice_ms as f64) as usize).max(1_024);
    let mut input: Vec<Planned> = Vec::with_capacity(reserve);
    input.resize(
        reserve,
        Planned {
            arrival: 0,
            ts: 0,
            stream: 0,
            seq: 0,
            viewer: 0,
            price: 0,
            kind: Kind::View,
            product: 0,
            quantity: 0,
        },
    );
    input.clear();
    let mut bench = Bench {
        aggregators: (0..settings.partitions)
            .map(|_| PartitionAggregator::new(config.clone()))
            .collect(),
        positions: vec![0; settings.partitions],
        model: settings.read_model.then(ReadModel::new),
        since_publish: 0,
        publish_rounds: 0,
        publications: 0,
        finals: 0,
        publish_secs: 0.0,
        outcomes: [0; 4],
        settings,
    };
    let mut ids = Ids::default();
    let mut max_ts = EventTime::MIN;
    let mut events = 0_u64;
    let mut slices = 0_u64;
    let mut input_peak_bytes = 0_usize;
    let clock = Instant::now();
    let spread = |ms: i64| ms * i64::from(n) / START_SPREAD_MS;
    let mut from = T0;
    while from < run_end {
        let to = from + slice_ms;
        input.clear();
        // Streams whose arrivals may overlap [from, to): base in
        // (from − T0 − jitter − span, to − T0).
        let lowest = spread(from - T0 - START_JITTER_MS - span_ms).max(1) - 1;
        let highest = (spread(to - T0 + 1) + 1).min(i64::from(n));
        for stream in lowest as u32..highest.max(lowest) as u32 {
            let start = stream_start(
                stream,
                &bench.settings,
                &mut stream_rng(stream, &bench.settings),
            );
            if start < to && start + span_ms > from {
                plan_slice(stream, &bench.settings, from, to, &mut input);
            }
        }
        input.sort_unstable_by_key(|p| (p.arrival, p.stream, p.seq));
        input_peak_bytes = input_peak_bytes.max(input.capacity() * size_of::<Planned>());
        if slices == 0 {
            // The input buffer stays allocated (and reused) from here to the
            // end, so every later delta excludes it.
            let (rss, hwm) = rss_kib();
            samples.push(Sample {
                phase: "input built (first slice)",
                rss_kib: rss,
                hwm_kib: hwm,
                heap: Heap::now(),
                bytes: StateBytes::default(),
                checkpoint_avg: 0.0,
                streams: 0,
            });
            base_histogram.fill();
        }
        for planned in &input {
            max_ts = max_ts.max(planned.ts);
            bench.apply(&mut ids, planned);
        }
        events += input.len() as u64;
        slices += 1;
        from = to;
    }
    bench.publish_all();
    let live_secs = clock.elapsed().as_secs_f64();
    let live_publish_secs = bench.publish_secs;
    samples.push(bench.sample("live (after last publish)"));
    histogram.fill();
    let live_allocations = histogram.diff(&base_histogram);

    let mut ended_allocations = None;
    let (mut owed, mut drain_rounds) = (0, 0);
    if bench.settings.scenario != Scenario::Live {
        // Every stream's last event is at or before max_ts: step the
        // watermark a minute at a time past the idle timeout, as time would
        // pass, so streams end in a few batches and not in one.
        let mut watermark = T0 + config.idle_timeout_ms;
        let done = max_ts + config.idle_timeout_ms + 60_000;
        while watermark <= done {
            bench.advance_watermark(watermark);
            watermark += 60_000;
        }
        samples.push(bench.sample("ended (finalised, windows still retained)"));
        // Past window retention, a minute at a time again (checkpoints
        // taken in between, as an hour of the engine's would): the windows
        // expire too. A stream whose windows had a piece in the changelog
        // is packed once a checkpoint has tombstoned it: a few minutes on.
        let past = max_ts + config.window_ms + config.window_retention_ms + 8 * 60_000;
        while watermark < past {
            watermark = (watermark + 60_000).min(past);
            bench.advance_watermark(watermark);
        }
        // A checkpoint writes about TOMBSTONES_PER_CHECKPOINT tombstones and
        // leaves the rest to the next ones, which the engine takes every few
        // seconds whatever the event time: publish until none is owed, then
        // step a minute on, for the scan to pack the streams that owed them.
        owed = bench.tombstones_due();
        while bench.tombstones_due() > 0 {
            bench.publish_all();
            drain_rounds += 1;
        }
        if drain_rounds > 0 {
            watermark += 60_000;
            bench.advance_watermark(watermark);
        }
        samples.push(bench.sample("ended + window retention passed"));
        histogram.fill();
        ended_allocations = Some(histogram.diff(&base_histogram));
        if bench.settings.malloc_trim {
            let trimmed = malloc_trim();
            let phase = if trimmed {
                "ended + retention, after malloc_trim(0)"
            } else {
                "ended + retention, malloc_trim(0) released nothing"
            };
            samples.push(bench.sample(phase));
        }
    }

    // -----------------------------------------------------------------------
    // Report
    // -----------------------------------------------------------------------
    let s = &bench.settings;
    println!("## Run");
    println!("allocator: {}", backend_name());
    println!(
        "streams {n}, viewers/stream {viewers}, partitions {}, stream span {} min, publish every {} events, checkpoint every {} publications, seed {}, {}",
        s.partitions,
        s.stream_ms / 60_000,
        s.publish_every,
        s.checkpoint_every,
        s.seed,
        if s.read_model {
            "publications kept in a read model (heap and RSS include it; state_bytes does not)"
        } else {
            "no read model (--no-read-model): the aggregators' state alone"
        }
    );
    println!(
        "events {events} ({:.1}/stream): counted {}, duplicate {}, invalid {}, already applied {}; \
         live phase {live_secs:.1} s ({:.0} events/s incl. generation, of which publish(), checkpoints and the read model {live_publish_secs:.1} s); \
         publications {}, final {}",
        events as f64 / f64::from(n),
        bench.outcomes[0],
        bench.outcomes[1],
        bench.outcomes[2],
        bench.outcomes[3],
        events as f64 / live_secs,
        bench.publications,
        bench.finals
    );
    if owed > 0 {
        println!(
            "tombstones put off past window retention: {owed} streams owed some, written in {drain_rounds} more publications (every {} a full checkpoint of at most about {} tombstones per partition)",
            s.checkpoint_every,
            livetally_aggregator::partition::TOMBSTONES_PER_CHECKPOINT
        );
    }
    println!(
        "input: {slices} slices of {slice_ms} ms of arrival time, input buffer {:.1} MiB (allocated and touched before the baseline)",
        input_peak_bytes as f64 / 1_048_576.0
    );
    println!();
    println!("## Memory per stream (deltas from \"input built\"; B = bytes)");
    println!(
        "| phase | streams held | VmRSS MiB | RSS Δ B/stream | heap requested B/stream | malloc chunks B/stream | allocations/stream | state_bytes B/stream | checkpoint B/stream | VmHWM MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = samples
        .iter()
        .find(|x| x.phase.starts_with("input built"))
        .map(|x| (x.rss_kib, x.heap))
        .unwrap_or_default();
    let per = |value: f64| value / f64::from(n);
    for x in &samples {
        let measured = x.streams > 0 || x.phase.starts_with("live") || x.phase.starts_with("ended");
        let dash = || "–".to_owned();
        let f0 = |v: f64| format!("{v:.0}");
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} |",
            x.phase,
            x.streams,
            x.rss_kib as f64 / 1024.0,
            if measured {
                f0(per((x.rss_kib as f64 - base.0 as f64) * 1024.0))
            } else {
                dash()
            },
            if measured {
                f0(per((x.heap.bytes - base.1.bytes) as f64))
            } else {
                dash()
            },
            if measured {
                f0(per((x.heap.chunks - base.1.chunks) as f64))
            } else {
                dash()
            },
            if measured {
                format!("{:.1}", per((x.heap.allocs - base.1.allocs) as f64))
            } else {
                dash()
            },
            if measured {
                f0(per(x.bytes.total() as f64))
            } else {
                dash()
            },
            if measured {
                f0(x.checkpoint_avg)
            } else {
                dash()
            },
            x.hwm_kib as f64 / 1024.0,
        );
    }
    println!();
    let print_allocations = |title: &str, rows: &[(usize, i64, i64)]| {
        println!("## Live allocations by size, {title} (per stream, largest first)");
        println!("| allocation size | count/stream | bytes/stream | share |");
        println!("|---|---:|---:|---:|");
        let total: i64 = rows.iter().map(|r| r.2).sum();
        for &(slot, count, bytes) in rows.iter().take(14) {
            println!(
                "| {} | {:.3} | {:.1} | {:.1} % |",
                slot_label(slot),
                per(count as f64),
                per(bytes as f64),
                100.0 * bytes as f64 / total.max(1) as f64
            );
        }
        println!();
    };
    let print_structures = |title: &str, bytes: &StateBytes| {
        let total = bytes.total();
        println!("## State by structure, {title} (`state_bytes()`, requested bytes per stream)");
        println!("| structure | bytes/stream | share |");
        println!("|---|---:|---:|");
        for (name, part) in bytes.parts() {
            println!(
                "| {name} | {:.0} | {:.1} % |",
                per(part as f64),
                100.0 * part as f64 / total.max(1) as f64
            );
        }
        println!("| total | {:.0} | |", per(total as f64));
        println!();
    };
    for x in &samples {
        if x.phase.starts_with("live") || x.phase.starts_with("ended + window") {
            print_structures(x.phase, &x.bytes);
        }
    }
    print_allocations("live", &live_allocations);
    if let Some(rows) = &ended_allocations {
        print_allocations("ended + retention passed", rows);
    }
    drop(input);
}
