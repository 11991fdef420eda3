//! The settled presence events a late one may still move counts among, and
//! how they reach the changelog in pieces.
//!
//! A presence event later than the allowed lateness changes who was in the
//! room from its `ts` until its viewer's next presence event, and so the
//! counts, and peaks, of every window over that time. Working that out
//! needs the events that settled since. So a stream keeps every settled
//! presence event from [`History::from`] on, the start of the earliest
//! window an event can still open, and, for each viewer with such an event,
//! their latest one before it (the state they were in then). Older viewers
//! stand in the presence register as they are.
//!
//! Each event keeps what it did to the count of viewers present (+1, 0 or
//! -1, in event-time order), so that a window's counts are its events'
//! changes added up, and a late event changes its own and its viewer's next
//! event's alone ([`History::place_late`]).
//!
//! Its pieces are a log of the events added since the previous piece, in
//! no order; joining them sorts them and drops the events before `from`
//! again. Once the log holds more than twice the events kept (plus 128), it
//! is rewritten whole as piece 0 of the next epoch, and the old epoch's
//! pieces are tombstoned after the head, as for presence (`presence.rs`).

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use super::blocks::{count_before, play_events, Blocks, INDEXED_FROM};
use super::piece_log::PieceLog;
use super::{Forgotten, Viewer, WindowPresence};
use crate::changelog::{PieceKind, Record};
use crate::event::EventTime;

/// Bytes of an event's record: the viewer's hash, then the event as
/// [`Viewer`] packs it.
pub(super) const SETTLED_RECORD: usize = 8 + 8;

/// One settled presence event, in two words: its viewer's hash, and the
/// event as [`Viewer`] packs it shifted left by two, with what it did to the
/// count of viewers present after the events before it (+1, 0 or -1) plus
/// one in the low two bits. (Settled events have ingest's `ts`, 0 to year
/// 9999: 48 bits, so the shift loses nothing.) The change is not written to
/// the changelog: a restore works it out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Settled {
    pub(super) viewer: u64,
    word: i64,
}

impl Settled {
    fn new(viewer: u64, event: Viewer, change: i8) -> Settled {
        let mut settled = Settled {
            viewer,
            word: event.0 << 2,
        };
        settled.set_change(change);
        settled
    }

    pub(super) fn ts(&self) -> EventTime {
        self.event().ts()
    }

    pub(super) fn event(&self) -> Viewer {
        Viewer(self.word >> 2)
    }

    /// What it did to the count of viewers present: +1, 0 or -1.
    pub(super) fn change(&self) -> i8 {
        (self.word & 3) as i8 - 1
    }

    fn set_change(&mut self, change: i8) {
        debug_assert!((-1..=1).contains(&change), "change {change}");
        self.word = (self.word & !3) | i64::from(change + 1);
    }
}

/// The settled presence events kept for late ones (see the module).
#[derive(Clone, Debug)]
pub(super) struct History {
    /// Every settled presence event at or after this is kept: the count at
    /// every instant from the one before it on can be played again.
    /// `EventTime::MIN` for a stream that kept them all.
    pub(super) from: EventTime,
    /// Those events in event-time order, after the latest event before
    /// `from` of each viewer who has one after it.
    events: VecDeque<Settled>,
    /// Where it stands in the changelog: the events added since its last
    /// piece.
    pub(super) log: PieceLog<Settled>,
    /// A busy stream's events in blocks, for late presence events
    /// (`blocks.rs`): made when first needed, dropped when the events are
    /// replaced or pruned.
    blocks: Option<Box<Blocks>>,
}

impl History {
    /// No events, kept from `from` on.
    pub(super) const fn after(from: EventTime) -> History {
        History {
            from,
            events: VecDeque::new(),
            log: PieceLog::new(),
            blocks: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps a presence event that settled in event-time order, which
    /// changed the count by `change`; `previous` is its viewer's latest
    /// before it (see [`Self::keep_previous`]).
    pub(super) fn record(
        &mut self,
        viewer: u64,
        event: Viewer,
        previous: Option<Viewer>,
        change: i8,
    ) {
        self.keep_previous(viewer, previous);
        self.insert(Settled::new(viewer, event, change));
    }

    /// A viewer's latest event before `from` is kept once they have an
    /// event from `from` on, or a late one: it is their state until then.
    fn keep_previous(&mut self, viewer: u64, previous: Option<Viewer>) {
        if let Some(previous) = previous.filter(|p| p.ts() < self.from) {
            self.insert(Settled::new(viewer, previous, i8::from(previous.present())));
        }
    }

    /// Puts `settled` after every event up to its `ts`: its index.
    fn insert(&mut self, settled: Settled) -> usize {
        let ts = settled.ts();
        let at = if self.events.back().is_none_or(|last| last.ts() <= ts) {
            self.events.push_back(settled);
            self.events.len() - 1
        } else {
            let at = self.events.partition_point(|e| e.ts() <= ts);
            self.events.insert(at, settled);
            at
        };
        if let Some(blocks) = &mut self.blocks {
            blocks.inserted(ts);
        }
        self.log.note(settled);
        at
    }

    /// Keeps a presence event that settled later than the lateness, behind
    /// events settled after it; `previous` is its viewer's latest before it
    /// and `won` what it changed the count by if it superseded that (the
    /// register's account). It changes who is present from its `ts` until
    /// its viewer's next event: returns by how much (+1 or -1) and until
    /// when (`EventTime::MAX`: from then on), or `None` if by nothing. Only
    /// its own change and that of its viewer's next event change.
    pub(super) fn place_late(
        &mut self,
        viewer: u64,
        event: Viewer,
        previous: Option<Viewer>,
        won: Option<i8>,
    ) -> Option<(i8, EventTime)> {
        self.keep_previous(viewer, previous);
        let at = self.insert(Settled::new(viewer, event, 0));
        let (change, until) = if let Some(change) = won {
            // The viewer's latest: nothing of theirs comes after it.
            (change, EventTime::MAX)
        } else {
            // Their next event says what they were before it.
            let next = (at + 1..self.events.len()).find(|&i| self.events[i].viewer == viewer)?;
            let after = self.events[next];
            let was = i8::from(after.event().present()) - after.change();
            // A leave of theirs at the same instant wins over this event.
            let beaten = self
                .events
                .range(..at)
                .rev()
                .take_while(|e| e.ts() == event.ts())
                .any(|e| e.viewer == viewer && e.event() > event);
            if beaten {
                return None;
            }
            let now = i8::from(event.present());
            self.events[next].set_change(i8::from(after.event().present()) - now);
            if let Some(blocks) = &mut self.blocks {
                blocks.changed(after.ts());
            }
            (now - was, after.ts())
        };
        self.events[at].set_change(change);
        (change != 0).then_some((change, until))
    }

    /// The highest count of viewers present at an instant from `instant`
    /// (or [`Self::from`], if later) until just before `until`, from the
    /// count now (after every settled event). 0 for an empty span.
    pub(super) fn peak_between(&mut self, instant: EventTime, until: EventTime, now: u64) -> u64 {
        let instant = instant.max(self.from);
        if instant >= until {
            return 0;
        }
        self.play(instant, until, now, WindowPresence::at).peak
    }

    /// The count of viewers present just before `instant` (from
    /// [`Self::from`] on), from the count `now` after every settled event.
    pub(super) fn present_before(&mut self, instant: EventTime, now: u64) -> u64 {
        self.play(instant, instant, now, WindowPresence::at)
            .concurrent
    }

    /// Plays each instant with events from `instant` until just before
    /// `until` into a presence ([`WindowPresence::reach`]), in event-time
    /// order: the one `start` makes from the count just before `instant`
    /// ([`count_before`], from `now` after every settled event). For an
    /// instant from `from` on. A busy stream's history plays whole blocks
    /// at once (`blocks.rs`).
    pub(super) fn play(
        &mut self,
        instant: EventTime,
        until: EventTime,
        now: u64,
        start: impl FnOnce(u64) -> WindowPresence,
    ) -> WindowPresence {
        let at = self.events.partition_point(|e| e.ts() < instant);
        if self.blocks.is_none() && self.events.len() >= INDEXED_FROM {
            self.blocks = Some(Box::new(Blocks::of(&self.events)));
        }
        match &mut self.blocks {
            Some(blocks) => {
                blocks.refresh(&self.events);
                blocks.play(&self.events, at, until, now, start)
            }
            None => {
                let since = self.events.range(at..).map(|e| i64::from(e.change())).sum();
                let before = count_before(now, since);
                let mut presence = start(before);
                play_events(self.events.range(at..), until, before, &mut presence);
                presence
            }
        }
    }

    /// The events from `instant` on, in event-time order.
    pub(super) fn events_from(
        &self,
        instant: EventTime,
    ) -> std::collections::vec_deque::Iter<'_, Settled> {
        let at = self.events.partition_point(|e| e.ts() < instant);
        self.events.range(at..)
    }

    /// Works out each event's change of the count again, in event-time
    /// order (after a restore: the changelog does not hold them).
    fn count_changes(&mut self) {
        self.blocks = None;
        let mut played: HashMap<u64, Viewer> = HashMap::new();
        for e in &mut self.events {
            let before = played.get(&e.viewer).copied();
            let mut present = u64::from(before.is_some_and(Viewer::present));
            let was = present;
            if e.event().supersedes(before, &mut present) {
                played.insert(e.viewer, e.event());
            }
            e.set_change(present as i8 - was as i8);
        }
    }

    /// Keeps the events from `from` on (never moving back), and the latest
    /// before it of each viewer with one of those.
    pub(super) fn keep_from(&mut self, from: EventTime) {
        if from <= self.from {
            return;
        }
        self.from = from;
        self.blocks = None;
        prune(&mut self.events, from);
        if self.events.capacity() > 2 * self.events.len() + 64 {
            self.events.shrink_to_fit();
        }
    }

    /// Drops every event: nothing before `from` is kept from now on.
    pub(super) fn clear(&mut self, from: EventTime, forgotten: &mut Forgotten) {
        self.log.forget(forgotten);
        *self = History::after(self.from.max(from));
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<Settled>()
            + self.log.heap_bytes()
            + self.blocks.as_ref().map_or(0, |b| b.heap_bytes())
    }

    /// Every event as a record: a self-contained checkpoint's history.
    pub(super) fn records(&self) -> Vec<u8> {
        records_of(self.events.iter())
    }

    /// Appends to `records` the piece this checkpoint needs, if any: every
    /// event when the log is new or has outgrown them (the retired epoch
    /// then goes to `retired`), else those added since.
    pub(super) fn write_pieces(
        &mut self,
        stream_id: &str,
        records: &mut Vec<Record>,
        retired: &mut Forgotten,
    ) {
        let events = &self.events;
        self.log.write(
            PieceKind::History,
            stream_id,
            events.len() as u64,
            records,
            retired,
            || records_of(events.iter()),
            |fresh| (records_of(fresh.iter()), fresh.len() as u64),
        );
    }

    /// The history a head describes: kept from `from` on, its events still
    /// to be joined from `pieces` pieces of epoch `epoch` by [`Self::join`].
    pub(super) fn from_log_position(from: EventTime, position: (i64, u32)) -> History {
        History {
            log: PieceLog::at(PieceKind::History, position),
            ..History::after(from)
        }
    }

    /// The history a self-contained checkpoint holds: kept from `from` on,
    /// its events as [`Self::records`] wrote them. `None` for bytes that
    /// are not whole records.
    pub(super) fn from_records(from: EventTime, bytes: &[u8]) -> Option<History> {
        let mut history = History::after(from);
        history.events = read_records(bytes)?.into();
        prune(&mut history.events, from);
        history.count_changes();
        Some(history)
    }

    /// Joins the log's pieces: `piece(epoch, n)` gives piece `n`. Refuses a
    /// missing or malformed piece.
    pub(super) fn join<'p>(
        &mut self,
        mut piece: impl FnMut(i64, u32) -> Option<&'p [u8]>,
    ) -> Result<(), HistoryError> {
        let Some((epoch, pieces)) = self.log.counted() else {
            return Ok(());
        };
        let mut events = Vec::new();
        for n in 0..pieces {
            let bytes = piece(epoch, n).ok_or(HistoryError::Missing(epoch, n))?;
            events.extend(read_records(bytes).ok_or(HistoryError::Malformed(epoch, n))?);
        }
        self.log.joined(events.len() as u64);
        self.events = events.into();
        prune(&mut self.events, self.from);
        self.count_changes();
        Ok(())
    }
}

/// Sorts `events` by event time and keeps those from `from` on, after the
/// latest before it of each viewer with one of those.
fn prune(events: &mut VecDeque<Settled>, from: EventTime) {
    events.make_contiguous().sort_by_key(Settled::ts);
    let split = events.partition_point(|e| e.ts() < from);
    if split == 0 {
        return;
    }
    let later: HashSet<u64> = events.range(split..).map(|e| e.viewer).collect();
    let mut before: HashMap<u64, Viewer> = HashMap::new();
    for e in events.range(..split).filter(|e| later.contains(&e.viewer)) {
        let latest = before.entry(e.viewer).or_insert(e.event());
        *latest = (*latest).max(e.event());
    }
    let mut kept: Vec<Settled> = before
        .into_iter()
        .map(|(viewer, event)| Settled::new(viewer, event, i8::from(event.present())))
        .collect();
    kept.sort_unstable_by_key(|e| (e.ts(), e.viewer));
    events.drain(..split);
    for settled in kept.into_iter().rev() {
        events.push_front(settled);
    }
}

fn records_of<'a>(events: impl Iterator<Item = &'a Settled>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in events {
        bytes.extend_from_slice(&e.viewer.to_le_bytes());
        bytes.extend_from_slice(&e.event().0.to_le_bytes());
    }
    bytes
}

fn read_records(bytes: &[u8]) -> Option<Vec<Settled>> {
    let records = bytes.chunks_exact(SETTLED_RECORD);
    if !records.remainder().is_empty() {
        return None;
    }
    Some(
        records
            .map(|record| {
                let (viewer, event) = record.split_at(8);
                Settled::new(
                    u64::from_le_bytes(viewer.try_into().expect("8 bytes")),
                    Viewer(i64::from_le_bytes(event.try_into().expect("8 bytes"))),
                    0,
                )
            })
            .collect(),
    )
}

/// Why the history pieces a head counts could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A piece the head counts is not in the changelog.
    #[error("piece {1} of presence history epoch {0} is missing")]
    Missing(i64, u32),
    /// A piece is not a whole number of records.
    #[error("piece {1} of presence history epoch {0} is malformed")]
    Malformed(i64, u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A settled event is two words: a busy stream keeps one per presence
    /// event for window retention.
    const _: () = assert!(std::mem::size_of::<Settled>() == 16);

    #[test]
    fn a_settled_event_keeps_its_event_and_change_in_one_word() {
        // The last instant ingest accepts (9999-12-31T23:59:59.999Z).
        let latest: EventTime = 253_402_300_799_999;
        for ts in [0, 1, 1_764_120_000_123, latest] {
            for present in [true, false] {
                for change in [-1, 0, 1] {
                    let event = Viewer::new(ts, present);
                    let mut settled = Settled::new(7, event, change);
                    assert_eq!(
                        (settled.event(), settled.ts(), settled.change()),
                        (event, ts, change)
                    );
                    settled.set_change(-change);
                    assert_eq!((settled.event(), settled.change()), (event, -change));
                }
            }
        }
    }
}
