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

    /// Stores a partition's publications and announces them on the live feed:
    /// each stream's windows first, then its cumulative rollup.
    pub fn publish(&self, publications: &[Publication]) {
        let watching = self.live.receiver_count() > 0;
        for publication in publications {
            self.store(publication);
            if watching {
                for rollup in publication
                    .windows
                    .iter()
                    .chain(std::iter::once(&publication.rollup))
                {
                    let json = crate::encode::to_json(rollup);
                    // Rollup JSON is always UTF-8.
                    let text: Arc<str> = String::from_utf8(json).unwrap_or_default().into();
                    // No subscriber left is not an error: nobody is watching.
                    let _ = self.live.send(text);
                }
            }
        }
    }

    /// Stores a publication's snapshot without announcing it.
    pub fn store(&self, publication: &Publication) {
        self.store_rollup(publication.rollup.clone(), &publication.products);
        for window in &publication.windows {
            self.store_rollup(window.clone(), &[]);
        }
    }

    /// Stores one rollup (and, for a cumulative one, its products) without
    /// announcing it: used for restored state.
    pub fn store_rollup(&self, rollup: StreamRollup, products: &[ProductRollup]) {
        let rollup = Arc::new(rollup);
        match rollup.kind {
            RollupKind::Cumulative => {
                let products: Arc<[ProductRollup]> = products.into();
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
                if let (Some(start), Some(mut view)) =
                    (rollup.window_start, self.streams.get_mut(&rollup.stream_id))
                {
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
            let json = crate::encode::to_json(&rollup);
            let _ = self
                .live
                .send(String::from_utf8(json).unwrap_or_default().into());
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
