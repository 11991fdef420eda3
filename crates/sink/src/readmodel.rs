//! The read model: the latest published snapshot of every stream, for HTTP.
//!
//! Writers are the partition workers, once per publication (never per event);
//! readers are HTTP handlers. The map is a `DashMap` (sharded locks, held only
//! for an insert or for reading one stream), so a reader never waits on the hot
//! path and the hot path never waits on a reader for longer than one insert.
//!
//! Every stream an instance has seen stays here, with up to
//! [`MAX_WINDOWS_PER_STREAM`] windows, so rollups are kept packed: their
//! protobuf encoding without the stream id, decoded again for a reader. A
//! small stream's rollup packs into about a fifth of its decoded size.
//! A rollup just shown is held as it is, shared with the worker that will
//! publish it to the rollup topic, and packed when it is
//! ([`ReadModel::settle`]): at a 20 ms live interval a busy stream is shown
//! fifty times a second and published once, so most rollups shown are
//! replaced before they would be worth packing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use livetally_aggregator::{Derived, ProductRollup, Publication, RollupKind, StreamRollup};
use livetally_proto::v1::Rollup;
use prost::Message;
use tokio::sync::broadcast;

use crate::encode::{from_protobuf, into_protobuf, RollupFormat};
use crate::kafka::OutRollup;

/// How many rollups the live feed buffers for a slow SSE client before it
/// skips ahead.
const LIVE_FEED_CAPACITY: usize = 4096;
/// Windows kept per stream for `/windows`: an hour of minutes, and some.
pub const MAX_WINDOWS_PER_STREAM: usize = 90;

/// What `/v1/streams` orders streams by, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// `gmv`.
    Gmv,
    /// `views`.
    Views,
    /// `orders`.
    Orders,
}

/// One stream as the read model keeps it.
#[derive(Debug, Default)]
struct Entry {
    /// The latest cumulative rollup, with its top products.
    rollup: Held,
    /// Its revision, to keep the newest of two.
    revision: u64,
    /// The figures `/v1/streams` sorts by.
    gmv: i64,
    views: u64,
    orders: u64,
    /// Every product by GMV; `None` when they are the rollup's top products,
    /// as they are for a stream with up to ten.
    products: Option<Box<[ProductRollup]>>,
    /// Retained windows, by start, newest revision of each.
    windows: Vec<Window>,
}

/// One window of a stream.
#[derive(Debug)]
struct Window {
    start: i64,
    revision: u64,
    rollup: Held,
}

/// A rollup as the read model holds it.
#[derive(Debug)]
enum Held {
    /// As shown to readers, shared with the worker, which has not yet
    /// published it to the rollup topic.
    Shown(Arc<StreamRollup>),
    Packed(Packed),
}

impl Default for Held {
    fn default() -> Held {
        Held::Packed(Packed::default())
    }
}

impl Held {
    /// `rollup` as the read model keeps it, and as it is shown: packed at
    /// once when it goes to the rollup topic in this turn (`publishing`),
    /// else shared as it is until [`ReadModel::settle`].
    fn new(rollup: StreamRollup, publishing: bool) -> (Held, Arc<StreamRollup>) {
        if publishing {
            let (packed, rollup) = Packed::new(rollup);
            (Held::Packed(packed), Arc::new(rollup))
        } else {
            let rollup = Arc::new(rollup);
            (Held::Shown(rollup.clone()), rollup)
        }
    }

    fn rollup(&self, stream_id: &str, kind: RollupKind) -> StreamRollup {
        match self {
            Held::Shown(rollup) => StreamRollup::clone(rollup),
            Held::Packed(packed) => packed.unpack(stream_id, kind),
        }
    }

    /// Packs the rollup held if it is `published`, not a newer one.
    fn settle(&mut self, published: &Arc<StreamRollup>) {
        if let Held::Shown(held) = self {
            if Arc::ptr_eq(held, published) {
                *self = Held::Packed(Packed::of(held));
            }
        }
    }
}

/// A rollup without its stream id (the map's key) and kind (where it is
/// kept), as its protobuf encoding after one byte: [`Packed::DERIVED`] when
/// `net_gmv` and the ratios are left out, to be worked out again from the
/// counts ([`Derived`]: a third of a small window's bytes), 0 when they are
/// kept because they are not what the counts give.
#[derive(Debug, Default)]
struct Packed(Box<[u8]>);

impl Packed {
    const DERIVED: u8 = 1;

    /// Packs `rollup` and gives it back: its strings move into the message
    /// and back out, so that packing copies none of them.
    fn new(rollup: StreamRollup) -> (Packed, StreamRollup) {
        let kind = rollup.kind;
        let derived = Derived::of(&rollup);
        let leave_out = derived.are_in(&rollup);
        let mut message = into_protobuf(rollup);
        let stream_id = std::mem::take(&mut message.stream_id);
        let packed = Packed::encode(&mut message, leave_out);
        message.stream_id = stream_id;
        let mut rollup = StreamRollup {
            kind,
            ..from_protobuf(message)
        };
        if leave_out {
            derived.set(&mut rollup);
        }
        (packed, rollup)
    }

    /// Packs a copy of `rollup`.
    fn of(rollup: &StreamRollup) -> Packed {
        let leave_out = Derived::of(rollup).are_in(rollup);
        let mut message = into_protobuf(StreamRollup {
            stream_id: String::new(),
            ..rollup.clone()
        });
        Packed::encode(&mut message, leave_out)
    }

    /// Encodes `message` without its kind, and without its derived figures
    /// when `leave_out` (they are taken out of it).
    fn encode(message: &mut Rollup, leave_out: bool) -> Packed {
        message.kind.clear();
        if leave_out {
            message.net_gmv = 0;
            (
                message.ctr,
                message.click_to_order_rate,
                message.conversion_rate,
            ) = (None, None, None);
            (message.gpm, message.aov) = (None, None);
        }
        let mut bytes = Vec::with_capacity(1 + message.encoded_len());
        bytes.push(if leave_out { Self::DERIVED } else { 0 });
        message
            .encode(&mut bytes)
            .expect("a Vec grows to take any message");
        Packed(bytes.into_boxed_slice())
    }

    fn unpack(&self, stream_id: &str, kind: RollupKind) -> StreamRollup {
        let (&flags, bytes) = self
            .0
            .split_first()
            .expect("Packed::new wrote a flags byte");
        let message = Rollup::decode(bytes).expect("bytes Packed::new encoded");
        let mut rollup = StreamRollup {
            kind,
            stream_id: stream_id.to_owned(),
            ..from_protobuf(message)
        };
        if flags == Self::DERIVED {
            Derived::of(&rollup).set(&mut rollup);
        }
        rollup
    }
}

impl Entry {
    /// Keeps `rollup` (cumulative, `held` as it is or packed) and `products`
    /// as the stream's latest.
    fn set(&mut self, rollup: &StreamRollup, held: Held, products: Vec<ProductRollup>) {
        self.revision = rollup.revision;
        (self.gmv, self.views, self.orders) = (rollup.gmv, rollup.views, rollup.orders);
        self.products = (products != rollup.top_products).then(|| products.into_boxed_slice());
        self.rollup = held;
    }

    /// Keeps a window, replacing the one with the same start.
    fn set_window(&mut self, start: i64, revision: u64, held: Held) {
        let stored = Window {
            start,
            revision,
            rollup: held,
        };
        match self.windows.binary_search_by_key(&start, |w| w.start) {
            Ok(at) => self.windows[at] = stored,
            Err(at) => {
                self.windows.insert(at, stored);
                // Retention is the engine's; this only bounds what readers keep.
                if self.windows.len() > MAX_WINDOWS_PER_STREAM {
                    self.windows.remove(0);
                }
            }
        }
    }

    fn window_mut(&mut self, start: i64) -> Option<&mut Window> {
        let at = self
            .windows
            .binary_search_by_key(&start, |w| w.start)
            .ok()?;
        Some(&mut self.windows[at])
    }

    fn sort_key(&self, key: SortKey) -> i128 {
        match key {
            SortKey::Gmv => i128::from(self.gmv),
            SortKey::Views => i128::from(self.views),
            SortKey::Orders => i128::from(self.orders),
        }
    }

    fn window_revision(&self, start: i64) -> Option<u64> {
        self.windows
            .binary_search_by_key(&start, |w| w.start)
            .ok()
            .map(|at| self.windows[at].revision)
    }
}

/// The latest snapshot of every stream this instance knows, and the live feed.
pub struct ReadModel {
    streams: DashMap<Box<str>, Entry>,
    live: broadcast::Sender<Arc<str>>,
    readiness: Readiness,
}

impl Default for ReadModel {
    fn default() -> Self {
        ReadModel::new()
    }
}

impl ReadModel {
    /// An empty read model, not ready.
    pub fn new() -> ReadModel {
        let (live, _) = broadcast::channel(LIVE_FEED_CAPACITY);
        ReadModel {
            streams: DashMap::new(),
            live,
            readiness: Readiness::default(),
        }
    }

    /// Stores a partition's publications and announces them on the live
    /// feed, each stream's windows first, then its cumulative rollup; returns
    /// them in that order, for the rollup topic now or later. A rollup's
    /// JSON, when the live feed needed it, is kept for the topic: each is
    /// encoded once.
    ///
    /// They are packed at once when they go to the rollup topic in the same
    /// turn (`publishing`), else held as they are until
    /// [`ReadModel::settle`] packs them.
    pub fn show(&self, publications: Vec<Publication>, publishing: bool) -> Vec<Shown> {
        let watching = self.live.receiver_count() > 0;
        let mut shown = Vec::with_capacity(publications.len() * 2);
        for publication in publications {
            // The cumulative rollup first: a window is kept only for a known stream.
            let (held, rollup) = Held::new(publication.rollup, publishing);
            self.with_entry(&rollup.stream_id, |entry| {
                entry.set(&rollup, held, publication.products);
            });
            for window in publication.windows {
                let (held, window) = Held::new(window, publishing);
                self.hold_window(&window, held);
                shown.push(self.announce(window, watching));
            }
            shown.push(self.announce(rollup, watching));
        }
        shown
    }

    /// [`ReadModel::settle`] for each of `shown`: what a partition that stops
    /// had shown and not published.
    pub fn settle_all<'a>(&self, shown: impl IntoIterator<Item = &'a Shown>) {
        shown.into_iter().for_each(|shown| self.settle(shown));
    }

    /// Packs a rollup shown by [`ReadModel::show`] once it is published to
    /// the rollup topic, unless a newer one has replaced it.
    pub fn settle(&self, published: &Shown) {
        let rollup = &published.rollup;
        let Some(mut entry) = self.streams.get_mut(rollup.stream_id.as_str()) else {
            return;
        };
        match rollup.window_start {
            None => entry.rollup.settle(rollup),
            Some(start) => {
                if let Some(window) = entry.window_mut(start) {
                    window.rollup.settle(rollup);
                }
            }
        }
    }

    /// Announces one rollup on the live feed when someone watches.
    fn announce(&self, rollup: Arc<StreamRollup>, watching: bool) -> Shown {
        let json = watching.then(|| json_text(&rollup));
        if let Some(json) = &json {
            // No subscriber left is not an error: nobody is watching.
            let _ = self.live.send(json.clone());
        }
        Shown { rollup, json }
    }

    /// Stores a cumulative rollup and the stream's products (by GMV) without
    /// announcing it (also used for restored state), and gives the rollup back.
    pub fn store_rollup(&self, rollup: StreamRollup, products: Vec<ProductRollup>) -> StreamRollup {
        let (packed, rollup) = Packed::new(rollup);
        self.with_entry(&rollup.stream_id, |entry| {
            entry.set(&rollup, Held::Packed(packed), products);
        });
        rollup
    }

    /// Calls `f` with the stream's entry, made if it is new.
    fn with_entry(&self, stream_id: &str, f: impl FnOnce(&mut Entry)) {
        // Looked up by `&str` first: a known stream costs no key allocation.
        if let Some(mut entry) = self.streams.get_mut(stream_id) {
            return f(&mut entry);
        }
        f(self
            .streams
            .entry(stream_id.into())
            .or_default()
            .value_mut());
    }

    /// Stores a window of a known stream, packed.
    fn store_window(&self, window: StreamRollup) {
        self.hold_window(&window, Held::Packed(Packed::of(&window)));
    }

    /// Keeps `window` (`held` as it is or packed) for a known stream.
    fn hold_window(&self, window: &StreamRollup, held: Held) {
        if let (Some(start), Some(mut entry)) = (
            window.window_start,
            self.streams.get_mut(window.stream_id.as_str()),
        ) {
            entry.set_window(start, window.revision, held);
        }
    }

    /// Stores a rollup read back from the rollup topic (another instance's,
    /// or an older one of ours) when it is newer than what is held, and
    /// announces it on the live feed. Returns whether it was stored; a window
    /// of a stream not known yet is not (the caller keeps it for later).
    pub fn merge(&self, rollup: StreamRollup) -> bool {
        let newer = match self.streams.get(rollup.stream_id.as_str()) {
            None => rollup.kind == RollupKind::Cumulative,
            Some(entry) => match rollup.kind {
                RollupKind::Cumulative => rollup.revision > entry.revision,
                RollupKind::Window => rollup.window_start.is_some_and(|start| {
                    entry
                        .window_revision(start)
                        .is_none_or(|held| rollup.revision > held)
                }),
            },
        };
        if !newer {
            return false;
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(json_text(&rollup));
        }
        match rollup.kind {
            RollupKind::Cumulative => {
                let products = rollup.top_products.clone();
                self.store_rollup(rollup, products);
            }
            RollupKind::Window => {
                self.store_window(rollup);
            }
        }
        true
    }

    /// Whether the stream is known.
    pub fn contains(&self, stream_id: &str) -> bool {
        self.streams.contains_key(stream_id)
    }

    /// The stream's latest cumulative rollup.
    pub fn rollup(&self, stream_id: &str) -> Option<StreamRollup> {
        self.streams
            .get(stream_id)
            .map(|entry| entry.rollup.rollup(stream_id, RollupKind::Cumulative))
    }

    /// The stream's first `limit` products by GMV.
    pub fn products(&self, stream_id: &str, limit: usize) -> Option<Vec<ProductRollup>> {
        let entry = self.streams.get(stream_id)?;
        Some(match &entry.products {
            Some(products) => products[..products.len().min(limit)].to_vec(),
            None => {
                let mut top = entry
                    .rollup
                    .rollup(stream_id, RollupKind::Cumulative)
                    .top_products;
                top.truncate(limit);
                top
            }
        })
    }

    /// The stream's retained windows that overlap `[from, to)`, oldest first.
    pub fn windows(&self, stream_id: &str, from: i64, to: i64) -> Option<Vec<StreamRollup>> {
        let entry = self.streams.get(stream_id)?;
        Some(
            entry
                .windows
                .iter()
                .take_while(|w| w.start < to)
                .map(|w| w.rollup.rollup(stream_id, RollupKind::Window))
                .filter(|w| w.window_end.unwrap_or(i64::MAX) > from)
                .collect(),
        )
    }

    /// The cumulative rollups of the first `limit` streams by `key`, highest
    /// first, ties by `stream_id`.
    pub fn top(&self, key: SortKey, limit: usize) -> Vec<StreamRollup> {
        // Better ranks are greater; the heap's top is the worst one kept.
        type Ranked = Reverse<(i128, Reverse<String>)>;
        // The order of `Ranked`, without making a `String` to compare.
        let better = |(key, id): (i128, &str),
                      (held, Reverse(held_id)): &(i128, Reverse<String>)| {
            (key, Reverse(id)) > (*held, Reverse(held_id.as_str()))
        };
        let mut kept: BinaryHeap<Ranked> = BinaryHeap::with_capacity(limit + 1);
        for entry in self.streams.iter() {
            let rank = (entry.sort_key(key), &**entry.key());
            if kept.len() < limit || kept.peek().is_some_and(|worst| better(rank, &worst.0)) {
                kept.push(Reverse((rank.0, Reverse(rank.1.to_owned()))));
                if kept.len() > limit {
                    kept.pop();
                }
            }
        }
        // Ascending `Reverse`s: best first.
        kept.into_sorted_vec()
            .into_iter()
            .filter_map(|Reverse((_, Reverse(stream_id)))| self.rollup(&stream_id))
            .collect()
    }

    /// Number of streams known.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is known yet.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// A receiver of every rollup published from now on, as JSON.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }

    /// The readiness the engine reports and `/readyz` serves.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Whether the stream's cumulative rollup (or its window starting at
    /// `window_start`) is held packed.
    #[cfg(test)]
    fn packed(&self, stream_id: &str, window_start: Option<i64>) -> Option<bool> {
        let mut entry = self.streams.get_mut(stream_id)?;
        let held = match window_start {
            None => &entry.rollup,
            Some(start) => &entry.window_mut(start)?.rollup,
        };
        Some(matches!(held, Held::Packed(_)))
    }
}

/// A rollup readers have seen, not yet encoded for the rollup topic.
#[derive(Clone, Debug)]
pub struct Shown {
    /// The rollup.
    pub rollup: Arc<StreamRollup>,
    /// Its JSON, when the live feed needed it.
    pub json: Option<Arc<str>>,
}

impl Shown {
    /// The record value for the rollup topic, reusing the live feed's JSON
    /// when the topic's format is JSON.
    pub fn encode(self, format: RollupFormat) -> OutRollup {
        let value: Arc<[u8]> = match (format, self.json) {
            (RollupFormat::Json, Some(json)) => json.into(),
            _ => format.encode(&self.rollup).into(),
        };
        OutRollup {
            rollup: self.rollup,
            value,
        }
    }
}

/// A rollup's JSON object as shared text.
fn json_text(rollup: &StreamRollup) -> Arc<str> {
    crate::encode::to_json_text(rollup).into()
}

/// Ready means: the consumer joined its group and every partition assigned to
/// this instance has its state restored.
#[derive(Default, Debug)]
pub struct Readiness {
    joined: AtomicBool,
    /// Assigned partitions and whether each is restored. A mutex because it
    /// changes only on rebalances and restores, never per event.
    partitions: Mutex<HashMap<i32, bool>>,
}

impl Readiness {
    /// Marks the group joined with this assignment, none restored yet.
    pub fn assigned(&self, partitions: &[i32]) {
        let mut map = self.lock();
        for p in partitions {
            map.entry(*p).or_insert(false);
        }
        self.joined.store(true, Ordering::Release);
    }

    /// Forgets revoked partitions.
    pub fn revoked(&self, partitions: &[i32]) {
        let mut map = self.lock();
        for p in partitions {
            map.remove(p);
        }
    }

    /// Marks one partition's state restored.
    pub fn restored(&self, partition: i32) {
        self.lock().insert(partition, true);
    }

    /// Marks readiness without a consumer group (replay-like embedded uses).
    pub fn force_ready(&self) {
        self.joined.store(true, Ordering::Release);
    }

    /// Whether `/readyz` says ready, and the partitions still restoring.
    pub fn status(&self) -> (bool, Vec<i32>) {
        let map = self.lock();
        let mut pending: Vec<i32> = map
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(p, _)| *p)
            .collect();
        pending.sort_unstable();
        (
            self.joined.load(Ordering::Acquire) && pending.is_empty(),
            pending,
        )
    }

    /// Partitions assigned now, sorted.
    pub fn partitions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, bool>> {
        // A poisoned lock only means a panic elsewhere; the map is still valid.
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use livetally_aggregator::{
        Action, AggregatorConfig, Currency, Event, OrderLine, PartitionAggregator, TOP_PRODUCTS,
    };

    use super::*;

    /// A purchase of `product` for `price`, at `ts`, on stream `s`.
    fn purchase(id: u64, product: &str, price: i64, ts: i64) -> Event<'static> {
        Event {
            event_id: id.to_string().into(),
            stream_id: "s".into(),
            viewer_id: format!("v{}", id % 7).into(),
            ts,
            seller_id: Some("shop".into()),
            action: Action::Purchase(OrderLine {
                product_id: product.to_string().into(),
                order_id: format!("o{}", id / 2).into(),
                quantity: 1 + (id % 3) as u32,
                unit_price: price,
                currency: Currency(*b"EUR"),
            }),
        }
    }

    /// Stream `s` with `products` products sold over `minutes` windows, as
    /// the aggregator publishes it.
    fn published(products: usize, minutes: i64) -> Vec<Publication> {
        let mut agg = PartitionAggregator::new(AggregatorConfig::default());
        let mut id = 0;
        for minute in 0..minutes {
            for p in 0..products {
                let product = format!("p{p}");
                let ts = minute * 60_000 + 7;
                let mut event = purchase(id, &product, 100 + p as i64, ts);
                let _ = agg.apply(&event, id);
                for action in [
                    Action::View,
                    Action::Impression {
                        product_id: product.clone().into(),
                    },
                    Action::Click {
                        product_id: product.clone().into(),
                    },
                ] {
                    id += 1;
                    event.event_id = id.to_string().into();
                    event.action = action;
                    let _ = agg.apply(&event, id);
                }
                id += 1;
            }
        }
        agg.publish()
    }

    proptest::proptest! {
        /// Any rollup comes back as it went in, with its derived figures
        /// left out and worked out again when the counts give them, kept
        /// when they do not.
        #[test]
        fn a_packed_rollup_unpacks_to_itself(
            rollup in crate::encode::tests::rollup(),
            derive in proptest::prelude::any::<bool>(),
        ) {
            let mut rollup = rollup;
            if derive {
                Derived::of(&rollup).set(&mut rollup);
            }
            let (packed, back) = Packed::new(rollup.clone());
            // Debug, not ==: NaN ratios are not equal to themselves.
            let same = |other: &StreamRollup| format!("{other:?}") == format!("{rollup:?}");
            proptest::prop_assert!(same(&back), "given back: {back:?}");
            let unpacked = packed.unpack(&rollup.stream_id, rollup.kind);
            proptest::prop_assert!(same(&unpacked), "unpacked: {unpacked:?}");
            proptest::prop_assert_eq!(&Packed::of(&rollup).0, &packed.0, "packed from a copy");
            let left_out = Derived::of(&rollup).are_in(&rollup);
            proptest::prop_assert_eq!(packed.0[0] == Packed::DERIVED, left_out);
            proptest::prop_assert!(left_out || !derive);
        }
    }

    #[test]
    fn readers_get_every_field_of_the_rollups_back() {
        for products in [3, TOP_PRODUCTS, TOP_PRODUCTS + 5] {
            let model = ReadModel::new();
            let publication = published(products, 3).remove(0);
            let (rollup, windows, all) = (
                publication.rollup.clone(),
                publication.windows.clone(),
                publication.products.clone(),
            );
            assert!(rollup.conversion_rate.is_some() && rollup.gpm.is_some());
            assert!(rollup.seller_id.is_some() && rollup.currency.is_some());
            let shown = model.show(vec![publication], false);
            // As shown, then packed once published.
            for settled in [false, true] {
                if settled {
                    shown.iter().for_each(|shown| model.settle(shown));
                }
                assert_eq!(model.rollup("s"), Some(rollup.clone()));
                assert_eq!(
                    model.windows("s", i64::MIN, i64::MAX),
                    Some(windows.clone())
                );
                assert_eq!(model.products("s", 100), Some(all.clone()), "{products}");
                assert_eq!(model.products("s", 2).unwrap(), all[..2]);
            }
            assert_eq!(model.packed("s", None), Some(true));
            assert_eq!(model.packed("s", Some(0)), Some(true));
        }
    }

    #[test]
    fn a_shown_rollup_is_packed_when_published_and_not_after_a_newer_one() {
        let model = ReadModel::new();
        let older = model.show(published(2, 1), false);
        assert_eq!(model.packed("s", None), Some(false), "held as shown");
        assert_eq!(model.packed("s", Some(0)), Some(false));
        let mut newer = published(2, 1);
        newer[0].rollup.revision += 1;
        newer[0].rollup.views += 5;
        newer[0].windows[0].revision += 1;
        let newer = model.show(newer, false);
        // The older rollups were replaced before their publication.
        model.settle_all(&older);
        assert_eq!(model.packed("s", None), Some(false));
        assert_eq!(model.packed("s", Some(0)), Some(false));
        model.settle_all(&newer);
        assert_eq!(model.packed("s", None), Some(true));
        assert_eq!(model.packed("s", Some(0)), Some(true));
        let cumulative = newer
            .iter()
            .find(|shown| shown.rollup.window_start.is_none());
        assert_eq!(model.rollup("s").as_ref(), cumulative.map(|s| &*s.rollup));
        assert_eq!(model.packed("other", None), None);

        // Shown and published in the same turn: packed at once.
        drop(model.show(published(2, 1), true));
        assert_eq!(model.packed("s", None), Some(true));
        assert_eq!(model.packed("s", Some(0)), Some(true));
        assert_eq!(
            model.rollup("s").unwrap().views,
            published(2, 1)[0].rollup.views
        );
    }

    #[test]
    fn products_given_apart_from_the_rollup_are_kept() {
        // A restored stream's rollup may carry no top products.
        let model = ReadModel::new();
        let mut publication = published(4, 1).remove(0);
        publication.rollup.top_products.clear();
        let _ = model.store_rollup(publication.rollup.clone(), publication.products.clone());
        assert_eq!(model.products("s", 100).unwrap(), publication.products);
        assert!(model.rollup("s").unwrap().top_products.is_empty());
    }

    #[test]
    fn windows_overlapping_the_range_newest_revision_at_most_ninety() {
        let model = ReadModel::new();
        drop(model.show(published(1, 3), true));
        let starts = |from, to| -> Vec<i64> {
            let windows = model.windows("s", from, to).unwrap();
            windows.iter().map(|w| w.window_start.unwrap()).collect()
        };
        assert_eq!(starts(i64::MIN, i64::MAX), [0, 60_000, 120_000]);
        assert_eq!(starts(60_000, 120_000), [60_000], "[from, to) overlaps");
        assert_eq!(starts(59_999, 120_001), [0, 60_000, 120_000]);
        assert_eq!(starts(180_000, i64::MAX), Vec::<i64>::new());
        assert_eq!(model.windows("other", 0, 1), None);

        let mut window = model.windows("s", 60_000, 60_001).unwrap().remove(0);
        window.revision += 1;
        window.views = 99;
        assert!(model.merge(window.clone()));
        assert!(!model.merge(window.clone()), "same revision");
        assert_eq!(
            model.windows("s", 60_000, 60_001).unwrap(),
            [window.clone()]
        );

        for minute in 3..100 {
            window.window_start = Some(minute * 60_000);
            window.window_end = Some((minute + 1) * 60_000);
            assert!(model.merge(window.clone()));
        }
        let kept = starts(i64::MIN, i64::MAX);
        assert_eq!(kept.len(), MAX_WINDOWS_PER_STREAM);
        assert_eq!(kept[0], 10 * 60_000, "the oldest go first");
    }

    #[test]
    fn top_streams_match_a_full_sort() {
        let model = ReadModel::new();
        let template = published(1, 1).remove(0).rollup;
        // Few distinct values, so that ties by stream id matter.
        let mut all = Vec::new();
        for n in 0..300_u64 {
            let mut rollup = template.clone();
            rollup.stream_id = format!("live-{}", n * 7919 % 300);
            rollup.gmv = (n * 31 % 11) as i64;
            rollup.views = n * 17 % 5;
            rollup.orders = n % 3;
            let _ = model.store_rollup(rollup.clone(), Vec::new());
            all.push(rollup);
        }
        for (key, figure) in [
            (
                SortKey::Gmv,
                (|r: &StreamRollup| r.gmv as i128) as fn(&StreamRollup) -> i128,
            ),
            (SortKey::Views, |r| r.views as i128),
            (SortKey::Orders, |r| r.orders as i128),
        ] {
            all.sort_by(|a, b| {
                figure(b)
                    .cmp(&figure(a))
                    .then(a.stream_id.cmp(&b.stream_id))
            });
            for limit in [1, 7, 299, 300, 1000] {
                let ids: Vec<String> = model
                    .top(key, limit)
                    .into_iter()
                    .map(|r| r.stream_id)
                    .collect();
                let expected: Vec<String> = all
                    .iter()
                    .take(limit)
                    .map(|r| r.stream_id.clone())
                    .collect();
                assert_eq!(ids, expected, "{key:?} {limit}");
            }
        }
    }
}
