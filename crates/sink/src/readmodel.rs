//! The read model: the latest published snapshot of every stream, for HTTP.
//!
//! Writers are the partition workers, once per publication (never per event);
//! readers are HTTP handlers. The map is a `DashMap` (sharded locks, held only
//! for an insert or a clone of an `Arc`), so a reader never waits on the hot
//! path and the hot path never waits on a reader for longer than one insert.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use livetally_aggregator::{ProductRollup, Publication, RollupKind, StreamRollup};
use tokio::sync::broadcast;

use crate::encode::RollupFormat;
use crate::kafka::OutRollup;

/// How many rollups the live feed buffers for a slow SSE client before it
/// skips ahead.
const LIVE_FEED_CAPACITY: usize = 4096;
/// Windows kept per stream for `/windows`: an hour of minutes, and some.
const MAX_WINDOWS_PER_STREAM: usize = 90;

/// What a reader sees of one stream.
#[derive(Clone, Debug)]
pub struct StreamView {
    /// The latest cumulative rollup.
    pub rollup: Arc<StreamRollup>,
    /// Its products, by GMV.
    pub products: Arc<[ProductRollup]>,
    /// Retained windows by `window_start`, newest revision of each.
    pub windows: BTreeMap<i64, Arc<StreamRollup>>,
}

/// The latest snapshot of every stream this instance knows, and the live feed.
pub struct ReadModel {
    streams: DashMap<String, StreamView>,
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
    /// them in that order, for the rollup topic now or later. Readers'
    /// snapshots share the rollups, and a rollup's JSON, when the live feed
    /// needed it, is kept for the topic: each is encoded once.
    pub fn show(&self, publications: Vec<Publication>) -> Vec<Shown> {
        let watching = self.live.receiver_count() > 0;
        let mut shown = Vec::with_capacity(publications.len() * 2);
        for publication in publications {
            let rollup = Arc::new(publication.rollup);
            // The cumulative rollup first: a window is kept only for a known stream.
            self.store_shared(rollup.clone(), Some(publication.products.into()));
            for window in publication.windows {
                let window = Arc::new(window);
                self.store_shared(window.clone(), None);
                shown.push(self.announce(window, watching));
            }
            shown.push(self.announce(rollup, watching));
        }
        shown
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

    /// Stores one rollup (and, for a cumulative one, its products) without
    /// announcing it: used for restored state.
    pub fn store_rollup(&self, rollup: StreamRollup, products: &[ProductRollup]) {
        self.store_shared(Arc::new(rollup), Some(products.into()));
    }

    /// Stores a cumulative rollup with its products, or a window.
    fn store_shared(&self, rollup: Arc<StreamRollup>, products: Option<Arc<[ProductRollup]>>) {
        match rollup.kind {
            RollupKind::Cumulative => {
                let products = products.unwrap_or_else(|| Arc::new([]));
                // Looked up by `&str` first: a known stream costs no key allocation.
                if let Some(mut view) = self.streams.get_mut(rollup.stream_id.as_str()) {
                    view.rollup = rollup;
                    view.products = products;
                    return;
                }
                self.streams
                    .entry(rollup.stream_id.clone())
                    .and_modify(|view| {
                        view.rollup = rollup.clone();
                        view.products = products.clone();
                    })
                    .or_insert_with(|| StreamView {
                        rollup,
                        products,
                        windows: BTreeMap::new(),
                    });
            }
            RollupKind::Window => {
                if let (Some(start), Some(mut view)) = (
                    rollup.window_start,
                    self.streams.get_mut(rollup.stream_id.as_str()),
                ) {
                    view.windows.insert(start, rollup);
                    // Retention is the engine's; this only bounds what readers keep.
                    while view.windows.len() > MAX_WINDOWS_PER_STREAM {
                        view.windows.pop_first();
                    }
                }
            }
        }
    }

    /// Stores a rollup read back from the rollup topic (another instance's,
    /// or an older one of ours) when it is newer than what is held, and
    /// announces it on the live feed. Returns whether it was stored; a window
    /// of a stream not known yet is not (the caller keeps it for later).
    pub fn merge(&self, rollup: StreamRollup) -> bool {
        let newer = match self.streams.get(&rollup.stream_id) {
            None => rollup.kind == RollupKind::Cumulative,
            Some(view) => match rollup.kind {
                RollupKind::Cumulative => rollup.revision > view.rollup.revision,
                RollupKind::Window => rollup.window_start.is_some_and(|start| {
                    view.windows
                        .get(&start)
                        .is_none_or(|w| rollup.revision > w.revision)
                }),
            },
        };
        if !newer {
            return false;
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(json_text(&rollup));
        }
        let products = rollup.top_products.clone();
        self.store_rollup(rollup, &products);
        true
    }

    /// Drops windows that start before `horizon` (retention), for every stream.
    pub fn expire_windows(&self, horizon: i64) {
        for mut view in self.streams.iter_mut() {
            view.windows = view.windows.split_off(&horizon);
        }
    }

    /// The snapshot of one stream.
    pub fn stream(&self, stream_id: &str) -> Option<StreamView> {
        self.streams.get(stream_id).map(|v| v.clone())
    }

    /// Every stream's cumulative rollup.
    pub fn rollups(&self) -> Vec<Arc<StreamRollup>> {
        self.streams.iter().map(|v| v.rollup.clone()).collect()
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
}

/// A rollup readers have seen, not yet encoded for the rollup topic.
#[derive(Clone, Debug)]
pub struct Shown {
    /// The rollup, as readers' snapshots hold it.
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
    // Rollup JSON is always UTF-8.
    String::from_utf8(crate::encode::to_json(rollup))
        .unwrap_or_default()
        .into()
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
