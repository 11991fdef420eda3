//! The state of one stream: the running inputs of every figure, the
//! arithmetic that turns them into a [`StreamRollup`], and its
//! [`StreamCheckpoint`].
//!
//! Every piece of state here is order-insensitive (counts, sums, min/max, sets,
//! a per-viewer "latest presence" register), so the same events in any order
//! give the same figures — except `peak_concurrent_viewers`, which is a maximum
//! over arrival order by definition, and `seller_id`/`currency`, which are the
//! first seen.

use std::fmt;

use hashbrown::HashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::commission::{div_round, CommissionRate};
use crate::event::{Action, Currency, Event, EventTime, EventType, OrderLine};
use crate::ids::{deserialize_blob, fixed_records, id_hash, IdSet};
use crate::partition::Outcome;
use crate::reason::InvalidReason;
use crate::rollup::{ProductRollup, RollupKind, StreamRollup};

/// Checkpoint byte format; the first byte of [`StreamCheckpoint::to_bytes`].
/// Bump it on any change to the serialized layout.
const CHECKPOINT_FORMAT: u8 = 1;

/// Everything kept for one stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StreamState {
    /// Count per event type, indexed by `EventType as usize`.
    counts: [u64; EventType::ALL.len()],
    /// Sum of `quantity` over purchases.
    items_sold: u64,
    /// Sum of purchase amounts, minor units.
    gmv: i64,
    /// Sum of refund amounts, minor units.
    refunds: i64,
    /// Set by the first purchase or refund counted.
    currency: Option<Currency>,
    /// The first non-empty `seller_id` counted.
    seller_id: Option<String>,
    /// Smallest counted `ts`; `EventTime::MAX` until the first event.
    first_event_ts: EventTime,
    /// Largest counted `ts`; `EventTime::MIN` until the first event.
    last_event_ts: EventTime,
    /// Highest concurrent viewer count after any counted event.
    peak_concurrent_viewers: u64,
    /// Publications so far; persisted so it keeps increasing across restarts.
    pub(crate) revision: u64,
    /// Highest input position whose effect is in this state.
    pub(crate) applied_through: Option<u64>,
    /// Hashes of distinct `order_id`s over purchases.
    orders: IdSet,
    /// Presence, viewing and buying per viewer.
    viewers: Viewers,
    /// Hashes of the `event_id`s already counted.
    seen: SeenEvents,
    /// Per-product figures, keyed by `product_id`.
    products: HashMap<String, ProductState>,
    /// Changed since the last publication. Not persisted: a restored stream
    /// has nothing new to publish.
    #[serde(skip)]
    pub(crate) dirty: bool,
    /// `applied_through` as restored: events at or below it are already in
    /// this state. Kept apart from `applied_through` so that, without a
    /// restore, positions need not increase.
    #[serde(skip)]
    pub(crate) restored_through: Option<u64>,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            counts: [0; EventType::ALL.len()],
            items_sold: 0,
            gmv: 0,
            refunds: 0,
            currency: None,
            seller_id: None,
            first_event_ts: EventTime::MAX,
            last_event_ts: EventTime::MIN,
            peak_concurrent_viewers: 0,
            revision: 0,
            applied_through: None,
            orders: IdSet::default(),
            viewers: Viewers::default(),
            seen: SeenEvents::default(),
            products: HashMap::new(),
            dirty: false,
            restored_through: None,
        }
    }
}

impl StreamState {
    /// Applies one event of this stream found at input `position`.
    ///
    /// Order of checks: already applied before a restore, duplicate, currency
    /// mismatch, then count. Only `Counted` changes a figure; `Duplicate` also
    /// advances `applied_through` (so a replay after restore reports it as
    /// already applied, not as a second duplicate); `Invalid` changes nothing.
    pub(crate) fn apply(&mut self, event: &Event<'_>, position: u64) -> Outcome {
        if self
            .restored_through
            .is_some_and(|through| position <= through)
        {
            return Outcome::AlreadyApplied;
        }
        let event_hash = id_hash(&event.event_id);
        let mismatch = match &event.action {
            Action::Purchase(line) | Action::Refund(line) => {
                self.currency.is_some_and(|c| c != line.currency)
            }
            _ => false,
        };
        if mismatch {
            // Rare path: look without inserting, since an invalid event must
            // not enter the duplicate set.
            return if self.seen.contains(event_hash) {
                self.advance(position);
                Outcome::Duplicate
            } else {
                Outcome::Invalid(InvalidReason::CurrencyMismatch)
            };
        }
        if !self.seen.insert(event_hash) {
            self.advance(position);
            return Outcome::Duplicate;
        }
        self.count(event);
        self.advance(position);
        Outcome::Counted
    }

    fn advance(&mut self, position: u64) {
        self.applied_through = Some(self.applied_through.map_or(position, |p| p.max(position)));
    }

    /// Adds a new, valid event to every figure it touches.
    fn count(&mut self, event: &Event<'_>) {
        self.counts[event.action.event_type() as usize] += 1;
        self.first_event_ts = self.first_event_ts.min(event.ts);
        self.last_event_ts = self.last_event_ts.max(event.ts);
        if self.seller_id.is_none() {
            if let Some(seller) = event.seller_id.as_deref().filter(|s| !s.is_empty()) {
                self.seller_id = Some(seller.to_owned());
            }
        }
        match &event.action {
            Action::View => self.presence(&event.viewer_id, event.ts, true),
            Action::Leave => self.presence(&event.viewer_id, event.ts, false),
            Action::Impression { product_id } => self.product(product_id).impressions += 1,
            Action::Click { product_id } => self.product(product_id).clicks += 1,
            Action::AddToCart { product_id } => self.product(product_id).add_to_carts += 1,
            Action::Purchase(line) => self.purchase(&event.viewer_id, line),
            Action::Refund(line) => {
                self.currency.get_or_insert(line.currency);
                // Refunds are not attributed to products: the contract's
                // product figures are all about selling.
                self.refunds = self.refunds.saturating_add(line.amount());
            }
            Action::Like | Action::Comment | Action::Share | Action::Follow => {}
        }
    }

    fn presence(&mut self, viewer_id: &str, ts: EventTime, is_view: bool) {
        self.viewers.presence(id_hash(viewer_id), ts, is_view);
        self.peak_concurrent_viewers = self.peak_concurrent_viewers.max(self.viewers.concurrent);
    }

    fn purchase(&mut self, viewer_id: &str, line: &OrderLine<'_>) {
        self.currency.get_or_insert(line.currency);
        let amount = line.amount();
        let quantity = u64::from(line.quantity);
        let order = id_hash(&line.order_id);
        // Sums of non-negative terms saturate the same whatever the order.
        self.items_sold = self.items_sold.saturating_add(quantity);
        self.gmv = self.gmv.saturating_add(amount);
        self.orders.insert(order);
        self.viewers.bought(id_hash(viewer_id));
        let product = self.product(&line.product_id);
        product.items_sold = product.items_sold.saturating_add(quantity);
        product.gmv = product.gmv.saturating_add(amount);
        product.orders.insert(order);
    }

    /// The product's figures, created on first sight; no allocation when it exists.
    fn product(&mut self, product_id: &str) -> &mut ProductState {
        self.products.entry_ref(product_id).or_default()
    }

    fn count_of(&self, event_type: EventType) -> u64 {
        self.counts[event_type as usize]
    }

    /// The cumulative figures now, at the current revision.
    pub(crate) fn rollup(&self, stream_id: String, rate: CommissionRate) -> StreamRollup {
        let views = self.count_of(EventType::View);
        let impressions = self.count_of(EventType::Impression);
        let clicks = self.count_of(EventType::Click);
        let orders = self.orders.len();
        let unique_viewers = self.viewers.unique_viewers;
        let unique_buyers = self.viewers.unique_buyers;
        let net_gmv = self.gmv.saturating_sub(self.refunds);
        StreamRollup {
            kind: RollupKind::Cumulative,
            window_start: None,
            window_end: None,
            stream_id,
            seller_id: self.seller_id.clone(),
            currency: self.currency.map(|c| c.as_str().to_owned()),
            first_event_ts: self.first_event_ts,
            last_event_ts: self.last_event_ts,
            views,
            unique_viewers,
            concurrent_viewers: self.viewers.concurrent,
            peak_concurrent_viewers: self.peak_concurrent_viewers,
            impressions,
            clicks,
            add_to_carts: self.count_of(EventType::AddToCart),
            likes: self.count_of(EventType::Like),
            comments: self.count_of(EventType::Comment),
            shares: self.count_of(EventType::Share),
            follows: self.count_of(EventType::Follow),
            orders,
            items_sold: self.items_sold,
            gmv: self.gmv,
            refunds: self.refunds,
            net_gmv,
            commission: rate.apply(net_gmv),
            unique_buyers,
            ctr: ratio(clicks, impressions),
            click_to_order_rate: ratio(orders, clicks),
            conversion_rate: ratio(unique_buyers, unique_viewers),
            gpm: money_ratio(i128::from(self.gmv) * 1000, views),
            aov: money_ratio(i128::from(self.gmv), orders),
            revision: self.revision,
            is_final: false,
        }
    }

    /// Every product's figures, by `gmv` descending then `product_id`.
    pub(crate) fn products(&self) -> Vec<ProductRollup> {
        let mut products: Vec<ProductRollup> = self
            .products
            .iter()
            .map(|(product_id, p)| ProductRollup {
                product_id: product_id.clone(),
                impressions: p.impressions,
                clicks: p.clicks,
                add_to_carts: p.add_to_carts,
                orders: p.orders.len(),
                items_sold: p.items_sold,
                gmv: p.gmv,
            })
            .collect();
        products.sort_unstable_by(|a, b| {
            b.gmv
                .cmp(&a.gmv)
                .then_with(|| a.product_id.cmp(&b.product_id))
        });
        products
    }

    /// Approximate heap and inline bytes, for the state-size metric.
    pub(crate) fn bytes_estimate(&self) -> usize {
        let products: usize = self
            .products
            .iter()
            .map(|(id, p)| id.capacity() + p.orders.heap_bytes())
            .sum::<usize>()
            + self.products.capacity() * (std::mem::size_of::<(String, ProductState)>() + 1);
        std::mem::size_of::<Self>()
            + self.seller_id.as_ref().map_or(0, String::capacity)
            + self.orders.heap_bytes()
            + self.viewers.heap_bytes()
            + self.seen.0.heap_bytes()
            + products
    }
}

/// `numerator / denominator` as an f64; `None` (JSON `null`) for a zero denominator.
fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator != 0).then(|| numerator as f64 / denominator as f64)
}

/// A money ratio in minor units, rounded half away from zero, saturating at
/// the bounds of `i64`; `None` for a zero denominator.
fn money_ratio(numerator: i128, denominator: u64) -> Option<i64> {
    let rounded = div_round(numerator, i128::from(denominator))?;
    Some(i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX }))
}

/// The `event_id` hashes already counted for a stream. Unbounded for now; its
/// own type so that a time-bounded version can replace it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct SeenEvents(IdSet);

impl SeenEvents {
    fn contains(&self, event_hash: u64) -> bool {
        self.0.contains(event_hash)
    }

    /// `false` when the event was already seen.
    fn insert(&mut self, event_hash: u64) -> bool {
        self.0.insert(event_hash)
    }
}

/// The figures of one product within a stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProductState {
    impressions: u64,
    clicks: u64,
    add_to_carts: u64,
    items_sold: u64,
    gmv: i64,
    /// Hashes of distinct `order_id`s over this product's purchases.
    orders: IdSet,
}

/// One viewer's register. `ts` is meaningful only with `HAS_PRESENCE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Viewer {
    /// `ts` of the latest presence event (`view` or `leave`).
    ts: EventTime,
    flags: u8,
}

/// The viewer has had a presence event; `ts` is set.
const HAS_PRESENCE: u8 = 1;
/// The latest presence event is a `view`: the viewer is in the room.
const PRESENT: u8 = 1 << 1;
/// The viewer has at least one counted `view`.
const VIEWED: u8 = 1 << 2;
/// The viewer has at least one counted `purchase`.
const BOUGHT: u8 = 1 << 3;
const ALL_FLAGS: u8 = HAS_PRESENCE | PRESENT | VIEWED | BOUGHT;
/// Serialized size of a viewer: hash, ts, flags.
const VIEWER_RECORD: usize = 8 + 8 + 1;

/// Per viewer (by hash): latest presence, whether they viewed, whether they
/// bought — one table for three figures, so each event costs one probe.
#[derive(Clone, Debug, Default)]
struct Viewers {
    by_hash: HashMap<u64, Viewer>,
    /// Viewers with `PRESENT`.
    concurrent: u64,
    /// Viewers with `VIEWED`.
    unique_viewers: u64,
    /// Viewers with `BOUGHT`.
    unique_buyers: u64,
}

impl Viewers {
    /// Records a `view` or `leave` at `ts`. The later `ts` wins; at equal `ts`
    /// a `leave` beats a `view`, so the result does not depend on arrival order.
    fn presence(&mut self, viewer: u64, ts: EventTime, is_view: bool) {
        let v = self.by_hash.entry(viewer).or_default();
        if is_view && v.flags & VIEWED == 0 {
            v.flags |= VIEWED;
            self.unique_viewers += 1;
        }
        let newer = v.flags & HAS_PRESENCE == 0 || ts > v.ts || (ts == v.ts && !is_view);
        if !newer {
            return;
        }
        let was_present = v.flags & PRESENT != 0;
        v.ts = ts;
        v.flags |= HAS_PRESENCE;
        if is_view {
            v.flags |= PRESENT;
        } else {
            v.flags &= !PRESENT;
        }
        match (was_present, is_view) {
            (false, true) => self.concurrent += 1,
            (true, false) => self.concurrent -= 1,
            _ => {}
        }
    }

    fn bought(&mut self, viewer: u64) {
        let v = self.by_hash.entry(viewer).or_default();
        if v.flags & BOUGHT == 0 {
            v.flags |= BOUGHT;
            self.unique_buyers += 1;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.by_hash.capacity() * (std::mem::size_of::<(u64, Viewer)>() + 1)
    }
}

impl Serialize for Viewers {
    /// A flat blob of fixed records; the three counters are derived on restore.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.by_hash.len() * VIEWER_RECORD);
        for (hash, v) in &self.by_hash {
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&v.ts.to_le_bytes());
            bytes.push(v.flags);
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Viewers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bytes = deserialize_blob(deserializer)?;
        let records = fixed_records::<VIEWER_RECORD, D::Error>(&bytes)?;
        let mut viewers = Viewers {
            by_hash: HashMap::with_capacity(records.len()),
            ..Viewers::default()
        };
        for record in records {
            let (hash, rest) = record.split_at(8);
            let (ts, flags) = rest.split_at(8);
            let flags = flags[0];
            if flags & !ALL_FLAGS != 0 || (flags & PRESENT != 0 && flags & HAS_PRESENCE == 0) {
                return Err(D::Error::custom(format_args!(
                    "bad viewer flags {flags:#04x}"
                )));
            }
            let hash = u64::from_le_bytes(hash.try_into().map_err(D::Error::custom)?);
            let ts = EventTime::from_le_bytes(ts.try_into().map_err(D::Error::custom)?);
            viewers.concurrent += u64::from(flags & PRESENT != 0);
            viewers.unique_viewers += u64::from(flags & VIEWED != 0);
            viewers.unique_buyers += u64::from(flags & BOUGHT != 0);
            viewers.by_hash.insert(hash, Viewer { ts, flags });
        }
        Ok(viewers)
    }
}

/// Everything needed to rebuild one stream's state exactly, after a restart
/// or a rebalance: written to the changelog topic at each publication.
///
/// Opaque on purpose: its layout may change (with the format byte of
/// [`StreamCheckpoint::to_bytes`]), its meaning may not.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamCheckpoint {
    state: StreamState,
}

/// Why checkpoint bytes could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// No bytes at all (a changelog tombstone is not a checkpoint).
    #[error("empty checkpoint")]
    Empty,
    /// Written by a version of livetally with another layout.
    #[error("unsupported checkpoint format {0}")]
    UnsupportedFormat(u8),
    /// The bytes do not decode.
    #[error("corrupt checkpoint: {0}")]
    Corrupt(#[from] postcard::Error),
    /// The bytes decode but leave some over: truncated or concatenated records.
    #[error("corrupt checkpoint: {0} trailing bytes")]
    TrailingBytes(usize),
}

impl StreamCheckpoint {
    /// Freezes a stream's state, dropping what only matters in memory.
    pub(crate) fn from_state(mut state: StreamState) -> StreamCheckpoint {
        state.dirty = false;
        state.restored_through = None;
        StreamCheckpoint { state }
    }

    /// The state to resume from; events at or below its `applied_through`
    /// will be skipped as already applied.
    pub(crate) fn into_state(self) -> StreamState {
        let mut state = self.state;
        state.dirty = false;
        state.restored_through = state.applied_through;
        state
    }

    /// The publication count it was taken at.
    pub fn revision(&self) -> u64 {
        self.state.revision
    }

    /// The highest input position whose effect it holds, so the consumer
    /// knows where replay may start.
    pub fn applied_through(&self) -> Option<u64> {
        self.state.applied_through
    }

    /// The compact changelog encoding: a format byte, then postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing into a Vec fails only for sequences of unknown length,
        // which no field of the state produces.
        postcard::to_extend(&self.state, vec![CHECKPOINT_FORMAT])
            .expect("checkpoint state always serializes")
    }

    /// Decodes [`StreamCheckpoint::to_bytes`]; refuses other formats, bad
    /// bytes and trailing bytes rather than restore a wrong state.
    pub fn from_bytes(bytes: &[u8]) -> Result<StreamCheckpoint, CheckpointError> {
        let (&format, body) = bytes.split_first().ok_or(CheckpointError::Empty)?;
        if format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::UnsupportedFormat(format));
        }
        let (state, rest) = postcard::take_from_bytes::<StreamState>(body)?;
        if !rest.is_empty() {
            return Err(CheckpointError::TrailingBytes(rest.len()));
        }
        Ok(StreamCheckpoint::from_state(state))
    }
}

impl fmt::Debug for StreamCheckpoint {
    /// A summary: the sets can hold millions of hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCheckpoint")
            .field("revision", &self.state.revision)
            .field("applied_through", &self.state.applied_through)
            .field("events", &self.state.seen.0.len())
            .field("viewers", &self.state.viewers.by_hash.len())
            .field("products", &self.state.products.len())
            .finish_non_exhaustive()
    }
}
