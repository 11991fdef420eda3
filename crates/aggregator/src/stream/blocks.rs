//! Blocks of a busy stream's presence history, each with what its instants
//! do to the count of viewers present, so that a late presence event plays
//! a window's instants again block by block rather than event by event.
//!
//! A presence event later than the lateness moves the counts of the
//! windows it falls in, and those are added up again from the history
//! ([`super::Live::late_in_history`]). Event by event, that is every
//! presence event of the window for each late one: quadratic in a busy
//! stream's presence events per window. With blocks of about [`BLOCK`]
//! events, it is the blocks of the window and the events of the one or two
//! blocks at its edges.
//!
//! A block covers every event from its `start` until the next block's
//! (blocks split only between instants, so an instant's events share a
//! block); the first starts at `EventTime::MIN`, so an event inserted
//! anywhere has a block. What a block's instants do is worked out again
//! when it is next read after an event in it was inserted or changed.

use std::collections::VecDeque;

use super::history::Settled;
use super::{PeakSpan, WindowPresence};
use crate::event::EventTime;

/// Events per block, about: a block ends at the first instant boundary
/// after this many.
pub(super) const BLOCK: usize = 64;

/// A history shorter than this has no blocks: its events are read one by
/// one.
pub(super) const INDEXED_FROM: usize = 4 * BLOCK;

/// What a run of instants does to the count of viewers present, relative to
/// the count just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Instants {
    /// Its first instant.
    pub(super) first: EventTime,
    /// The count after its last event.
    pub(super) net: i64,
    /// The lowest count after any of its events (at most 0): the count
    /// before it must be at least this far above zero for the run to add
    /// up as its events would one by one (counts do not go below zero).
    pub(super) low: i64,
    /// The highest count after an instant.
    pub(super) high: i64,
    /// The first instant at `high`.
    pub(super) high_from: EventTime,
    /// The first instant after the last one at `high` (`EventTime::MAX`
    /// when that is its last).
    pub(super) high_until: EventTime,
}

impl Instants {
    /// What `events` (at least one, in event-time order, whole instants)
    /// do. Their counts are played into a [`WindowPresence`] from a base
    /// far above zero, so that [`WindowPresence::reach`] alone says where
    /// the highest is, and counts below the one before them stay above 0.
    pub(super) fn of<'a>(events: impl IntoIterator<Item = &'a Settled>) -> Option<Instants> {
        const BASE: u64 = 1 << 62;
        let mut events = events.into_iter().peekable();
        let first = events.peek()?.ts();
        let mut presence = WindowPresence {
            concurrent: BASE,
            peak: 0,
            span: PeakSpan::UNKNOWN,
        };
        let (mut net, mut low) = (0i64, 0i64);
        while let Some(e) = events.next() {
            let at = e.ts();
            net += i64::from(e.change());
            low = low.min(net);
            if events.peek().is_some_and(|next| next.ts() == at) {
                continue;
            }
            presence.reach(BASE.saturating_add_signed(net), at);
        }
        Some(Instants {
            first,
            net,
            low,
            high: presence.peak as i64 - BASE as i64,
            high_from: presence.span.from,
            high_until: presence.span.until,
        })
    }
}

impl WindowPresence {
    /// Settled presence reached every instant of a run (`instants`), from
    /// `before` viewers just before it: as [`Self::reach`] at each of them
    /// would leave it. `before` must be at least `-instants.low`.
    pub(super) fn reach_all(&mut self, before: u64, instants: &Instants) {
        let high = (before as i64 + instants.high) as u64;
        if high > self.peak {
            self.peak = high;
            self.span.from = instants.high_from;
            self.span.until = instants.high_until;
        } else if high == self.peak {
            self.span.until = instants.high_until;
        } else if self.span.until == EventTime::MAX {
            self.span.until = instants.first;
        }
        self.concurrent = (before as i64 + instants.net) as u64;
    }
}

/// A history's blocks, in event-time order (see the module).
#[derive(Clone, Debug, Default)]
pub(super) struct Blocks {
    blocks: Vec<Block>,
    /// The first block whose `instants` is to be worked out again, if any.
    stale_from: Option<usize>,
}

#[derive(Clone, Debug)]
struct Block {
    /// Its events are those from this instant until the next block's start.
    start: EventTime,
    /// How many.
    len: u32,
    /// What they do; `None` once one is inserted or changed.
    instants: Option<Instants>,
}

impl Blocks {
    /// Blocks of `events` (in event-time order).
    pub(super) fn of(events: &VecDeque<Settled>) -> Blocks {
        Blocks {
            blocks: cut(events, 0, events.len(), EventTime::MIN),
            stale_from: None,
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Blocks>() + self.blocks.capacity() * std::mem::size_of::<Block>()
    }

    /// An event at `ts` was inserted.
    pub(super) fn inserted(&mut self, ts: EventTime) {
        let k = self.stale(ts);
        self.blocks[k].len += 1;
    }

    /// An event at `ts` changed what it does to the count.
    pub(super) fn changed(&mut self, ts: EventTime) {
        self.stale(ts);
    }

    /// Marks the block holding `ts` to be worked out again: its index.
    fn stale(&mut self, ts: EventTime) -> usize {
        // The first block starts at `EventTime::MIN`: some block holds it.
        let k = self
            .blocks
            .partition_point(|b| b.start <= ts)
            .saturating_sub(1);
        self.blocks[k].instants = None;
        self.stale_from = Some(self.stale_from.map_or(k, |s| s.min(k)));
        k
    }

    /// Works out again what the blocks changed since do, cutting one that
    /// has grown past twice [`BLOCK`] events. Walks from the last block
    /// back to the first changed one: late events are mostly recent.
    pub(super) fn refresh(&mut self, events: &VecDeque<Settled>) {
        let Some(stale_from) = self.stale_from.take() else {
            return;
        };
        let mut first = events.len();
        for k in (stale_from..self.blocks.len()).rev() {
            let Block {
                start,
                len,
                instants,
            } = self.blocks[k];
            let len = len as usize;
            first -= len;
            if instants.is_none() || len > 2 * BLOCK {
                // Blocks before `k` keep their indices.
                self.blocks
                    .splice(k..=k, cut(events, first, first + len, start));
            }
        }
    }

    /// Plays the instants of `events` from index `at` until just before
    /// `until` into the presence `start` makes from the count just before
    /// them ([`count_before`] `now` viewers after every event): whole
    /// blocks at once. The blocks must be fresh ([`Self::refresh`]).
    pub(super) fn play(
        &self,
        events: &VecDeque<Settled>,
        at: usize,
        until: EventTime,
        now: u64,
        start: impl FnOnce(u64) -> WindowPresence,
    ) -> WindowPresence {
        debug_assert!(
            self.stale_from.is_none(),
            "blocks read before their refresh"
        );
        // From the last block back to the one holding `at`, adding up the
        // changes from `at` on.
        let mut first = events.len();
        let mut since = 0;
        let mut k = self.blocks.len();
        while k > 0 && first > at {
            k -= 1;
            let len = self.blocks[k].len as usize;
            first -= len;
            since += match self.blocks[k].instants {
                Some(instants) if first >= at => instants.net,
                _ => events
                    .range(first.max(at)..first + len)
                    .map(|e| i64::from(e.change()))
                    .sum(),
            };
        }
        let mut count = count_before(now, since);
        let mut presence = start(count);
        for (k, block) in self.blocks.iter().enumerate().skip(k) {
            let len = block.len as usize;
            let end = first + len;
            let next_start = self.blocks.get(k + 1).map_or(EventTime::MAX, |b| b.start);
            let whole = first >= at
                && (next_start <= until || events.get(end - 1).is_some_and(|e| e.ts() < until));
            match block.instants {
                Some(instants) if whole && count as i64 + instants.low >= 0 && len > 0 => {
                    presence.reach_all(count, &instants);
                    count = presence.concurrent;
                }
                _ => {
                    let from = first.max(at);
                    let (ended, after) =
                        play_events(events.range(from..end), until, count, &mut presence);
                    count = after;
                    if ended {
                        break;
                    }
                }
            }
            first = end;
        }
        presence
    }
}

/// The count of viewers present before the events whose changes add up to
/// `since`, from `now` after every event: those changes taken back.
pub(super) fn count_before(now: u64, since: i64) -> u64 {
    (now as i64 - since).max(0) as u64
}

/// Plays `events` (whole instants, in event-time order) until just before
/// `until` into `presence`, from `count` viewers before them, one event at
/// a time: the count after them, and whether an event at or after `until`
/// ended it.
pub(super) fn play_events<'a>(
    events: impl IntoIterator<Item = &'a Settled>,
    until: EventTime,
    mut count: u64,
    presence: &mut WindowPresence,
) -> (bool, u64) {
    let mut open: Option<EventTime> = None;
    let mut ended = false;
    for e in events {
        let ts = e.ts();
        if ts >= until {
            ended = true;
            break;
        }
        if let Some(at) = open.filter(|&at| at != ts) {
            presence.reach(count, at);
        }
        open = Some(ts);
        count = count.saturating_add_signed(e.change().into());
    }
    if let Some(at) = open {
        presence.reach(count, at);
    }
    (ended, count)
}

/// Cuts `events[from..to]` (whole instants) into blocks of about [`BLOCK`]
/// events, the first starting at `start`.
fn cut(events: &VecDeque<Settled>, from: usize, to: usize, start: EventTime) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut block_start = start;
    let mut first = from;
    while first < to {
        let mut end = (first + BLOCK).min(to);
        // Whole instants: take the rest of the last one's events.
        while end < to && events[end].ts() == events[end - 1].ts() {
            end += 1;
        }
        blocks.push(Block {
            start: block_start,
            len: (end - first) as u32,
            instants: Instants::of(events.range(first..end)),
        });
        if end < to {
            block_start = events[end].ts();
        }
        first = end;
    }
    if blocks.is_empty() {
        blocks.push(Block {
            start,
            len: 0,
            instants: None,
        });
    }
    blocks
}
