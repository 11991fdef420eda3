//! The state of one stream: the running inputs of every figure, the
//! arithmetic that turns them into a [`StreamRollup`], and its
//! [`StreamCheckpoint`].
//!
//! Every piece of state here is order-insensitive (counts, sums, min/max,
//! distinct counts, a per-viewer "latest presence" register), so the same
//! events in any order give the same figures; `peak_concurrent_viewers` is a
//! maximum over event time (presence events wait, in event-time order, until
//! the watermark passes them), so it too is independent of arrival order for
//! events within the allowed lateness. `seller_id` and `currency` are the
//! first seen, by contract.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::changelog::{piece_key, PieceKind, Record};
use crate::commission::CommissionRate;
use crate::distinct::DistinctCount;
use crate::event::{Action, Currency, Event, EventTime, EventType, OrderLine};
use crate::ids::{deserialize_blob, fixed_records, id_hash, CompactMap, IdSet};
use crate::partition::Outcome;
use crate::reason::InvalidReason;
use crate::rollup::{Derived, ProductRollup, RollupKind, StreamRollup, TOP_PRODUCTS};

mod blocks;
mod frozen;
mod history;
mod layout;
mod piece_log;
#[cfg(test)]
pub(crate) use layout::in_older_format;
mod presence;
#[cfg(test)]
mod projection_tests;
#[cfg(test)]
mod sealed_tests;
mod seen;
mod window_base;

pub(crate) use frozen::Frozen;
use history::History;
pub use history::HistoryError;
use piece_log::PieceLog;
use presence::read_record;
pub use presence::PresenceError;
pub(crate) use seen::Forgotten;
pub use seen::PieceError;
use seen::SeenEvents;
use window_base::WindowBase;
pub use window_base::WindowsError;

/// The event-time settings a stream needs to place an event, from
/// [`crate::AggregatorConfig`], with the partition's watermark at the time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// Tumbling window length, ms.
    pub(crate) window_ms: i64,
    /// How long a window is kept for corrections after the watermark passed its end, ms.
    pub(crate) retention_ms: i64,
    /// How long, in event time, an event id is remembered for duplicates, ms.
    pub(crate) dedup_horizon_ms: i64,
    /// The partition's watermark: no event older than this is expected any more.
    pub(crate) watermark: Option<EventTime>,
}

impl Clock {
    /// Start of the window holding `ts`.
    pub(crate) fn window_start(&self, ts: EventTime) -> EventTime {
        ts - ts.rem_euclid(self.window_ms)
    }

    /// Length of a generation of the duplicate filter: the horizon, and at
    /// least a minute so that a short horizon does not make many tiny ones.
    pub(crate) fn dedup_span(&self) -> i64 {
        self.dedup_horizon_ms.max(60_000)
    }

    /// Whether the window starting at `start` is past retention: its events
    /// are too late for any window.
    pub(crate) fn expired(&self, start: EventTime) -> bool {
        self.watermark.is_some_and(|wm| {
            start
                .saturating_add(self.window_ms)
                .saturating_add(self.retention_ms)
                <= wm
        })
    }
}

/// The running inputs of every figure over a span of events: the whole
/// stream (cumulative) or one window. Only counts, sums, min/max and sets:
/// the same events in any order give the same values. A window's presence
/// figures are left in it by settled presence ([`Live::reach`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Figures {
    /// Count per event type, indexed by `EventType as usize`.
    counts: [u64; EventType::ALL.len()],
    /// Sum of `quantity` over purchases.
    items_sold: u64,
    /// Sum of purchase amounts, minor units.
    gmv: i64,
    /// Sum of refund amounts, minor units.
    refunds: i64,
    /// Smallest counted `ts`; `EventTime::MAX` until the first event.
    first_event_ts: EventTime,
    /// Largest counted `ts`; `EventTime::MIN` until the first event.
    last_event_ts: EventTime,
    /// Hashes of distinct `order_id`s over purchases.
    orders: DistinctCount,
    /// Hashes of distinct viewers over `view` events.
    viewers: DistinctCount,
    /// Hashes of distinct viewers over `purchase` events.
    buyers: DistinctCount,
    /// A window's concurrent viewers at the latest instant of it that
    /// settled presence has reached ([`Live::reached`]): at its end once
    /// that is past. (The cumulative figures take theirs from presence.)
    concurrent: u64,
    /// The highest `concurrent` over the instants of the window reached so far.
    peak: u64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            counts: [0; EventType::ALL.len()],
            items_sold: 0,
            gmv: 0,
            refunds: 0,
            first_event_ts: EventTime::MAX,
            last_event_ts: EventTime::MIN,
            orders: DistinctCount::default(),
            viewers: DistinctCount::default(),
            buyers: DistinctCount::default(),
            concurrent: 0,
            peak: 0,
        }
    }
}

impl Figures {
    /// Adds one new, valid event; `viewer` is its viewer's hash (set for
    /// views, leaves and purchases), `order` its order's (purchases).
    fn count(&mut self, event: &Event<'_>, viewer: u64, order: u64) {
        self.counts[event.action.event_type() as usize] += 1;
        self.first_event_ts = self.first_event_ts.min(event.ts);
        self.last_event_ts = self.last_event_ts.max(event.ts);
        match &event.action {
            Action::View => {
                self.viewers.insert(viewer);
            }
            Action::Purchase(line) => {
                // Sums of non-negative terms saturate the same whatever the order.
                self.items_sold = self.items_sold.saturating_add(u64::from(line.quantity));
                self.gmv = self.gmv.saturating_add(line.amount());
                self.orders.insert(order);
                self.buyers.insert(viewer);
            }
            Action::Refund(line) => self.refunds = self.refunds.saturating_add(line.amount()),
            _ => {}
        }
    }

    fn count_of(&self, event_type: EventType) -> u64 {
        self.counts[event_type as usize]
    }

    /// The figures as a rollup; the caller sets kind, window and identity.
    fn rollup(
        &self,
        stream: &StreamState,
        stream_id: String,
        rate: CommissionRate,
        revision: u64,
    ) -> StreamRollup {
        let mut rollup = StreamRollup {
            kind: RollupKind::Cumulative,
            window_start: None,
            window_end: None,
            stream_id,
            seller_id: stream.seller_id.as_deref().map(str::to_owned),
            currency: stream.currency.map(|c| c.as_str().to_owned()),
            first_event_ts: self.first_event_ts,
            last_event_ts: self.last_event_ts,
            views: self.count_of(EventType::View),
            unique_viewers: self.viewers.count(),
            concurrent_viewers: self.concurrent,
            peak_concurrent_viewers: self.peak,
            impressions: self.count_of(EventType::Impression),
            clicks: self.count_of(EventType::Click),
            add_to_carts: self.count_of(EventType::AddToCart),
            likes: self.count_of(EventType::Like),
            comments: self.count_of(EventType::Comment),
            shares: self.count_of(EventType::Share),
            follows: self.count_of(EventType::Follow),
            orders: self.orders.count(),
            items_sold: self.items_sold,
            gmv: self.gmv,
            refunds: self.refunds,
            unique_buyers: self.buyers.count(),
            revision,
            is_final: stream.finalized,
            top_products: Vec::new(),
            // Set below from the figures above.
            net_gmv: 0,
            commission: 0,
            ctr: None,
            click_to_order_rate: None,
            conversion_rate: None,
            gpm: None,
            aov: None,
        };
        Derived::of(&rollup).set(&mut rollup);
        rollup.commission = rate.apply(rollup.net_gmv);
        rollup
    }

    fn heap_bytes(&self) -> usize {
        self.orders.heap_bytes() + self.viewers.heap_bytes() + self.buyers.heap_bytes()
    }

    /// Whether every distinct count is still exact (no sketch).
    fn is_exact(&self) -> bool {
        self.orders.is_exact() && self.viewers.is_exact() && self.buyers.is_exact()
    }

    /// Gives back the distinct counts' spare room.
    fn shrink_to_fit(&mut self) {
        self.orders.shrink_to_fit();
        self.viewers.shrink_to_fit();
        self.buyers.shrink_to_fit();
    }
}

/// One tumbling window of a stream.
#[derive(Clone, Debug)]
pub(crate) struct WindowState {
    figures: WindowFigures,
    /// When settled presence had the window at its peak.
    peak_span: PeakSpan,
    /// Publications of this window so far.
    revision: u64,
    /// Changed since its last publication.
    dirty: bool,
    /// As the stream's windows piece holds it ([`Live::base`]): the
    /// changelog head need not hold it.
    stored: bool,
}

/// When a window's count of viewers was at its peak, over the instants
/// settled presence has reached: from the first instant it was (the one
/// just before the window's start, for the count it started from) to the
/// end of the last span it was, `EventTime::MAX` while it still is. A
/// presence event later than the lateness moves every count from its `ts`
/// on: this says whether that moves the peak ([`WindowState::late_presence`]).
/// Windows restored from checkpoints older than format 9 do not know it
/// ([`PeakSpan::UNKNOWN`]): there a late event moves the peak only when the
/// count at the window's end passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeakSpan {
    from: EventTime,
    until: EventTime,
}

impl PeakSpan {
    /// Not known, or no instant reached yet.
    pub(crate) const UNKNOWN: PeakSpan = PeakSpan {
        from: EventTime::MIN,
        until: EventTime::MIN,
    };

    /// `from` of a window at its peak at the instant settled presence
    /// reached, and perhaps at earlier ones: where it first was is not
    /// known ([`WindowState::at_reached`]).
    const FIRST_UNKNOWN: EventTime = EventTime::MAX;
}

/// A window's presence figures while settled presence is played into it:
/// the count at the latest instant reached, the highest count and when it
/// was at it ([`PeakSpan`]).
#[derive(Clone, Copy, Debug)]
struct WindowPresence {
    concurrent: u64,
    peak: u64,
    span: PeakSpan,
}

impl WindowPresence {
    /// `concurrent` viewers present, the highest count so far, when it was
    /// is not known.
    fn at(concurrent: u64) -> WindowPresence {
        WindowPresence {
            concurrent,
            peak: concurrent,
            span: PeakSpan::UNKNOWN,
        }
    }

    /// Played again from the window's start, where `concurrent` viewers
    /// were present (at the instant just before it): the peak starts over.
    fn starting(concurrent: u64, start: EventTime) -> WindowPresence {
        let mut presence = WindowPresence {
            concurrent: 0,
            peak: 0,
            span: PeakSpan::UNKNOWN,
        };
        presence.reach(concurrent, start.saturating_sub(1));
        presence
    }

    /// Settled presence reached instant `at` with `concurrent` viewers.
    #[inline]
    fn reach(&mut self, concurrent: u64, at: EventTime) {
        if concurrent > self.peak {
            self.peak = concurrent;
            self.span = PeakSpan {
                from: at,
                until: EventTime::MAX,
            };
        } else if concurrent == self.peak {
            self.span.until = EventTime::MAX;
        } else if self.span.until == EventTime::MAX {
            self.span.until = at;
        }
        self.concurrent = concurrent;
    }
}

/// A window's figures: boxed while the window is open, encoded once the
/// watermark has passed its end. A stream keeps up to an hour of windows,
/// nearly all of them closed, and a closed window of a small stream encodes
/// in a few dozen bytes where its figures take over 200.
#[derive(Clone, Debug)]
enum WindowFigures {
    /// Open: counted into as events arrive.
    Open(Box<Figures>),
    /// Closed: the figures' postcard encoding, decoded again for a late
    /// event (which reopens the window) or a rollup.
    Sealed(Box<[u8]>),
}

impl WindowState {
    fn new(revision: u64) -> WindowState {
        WindowState {
            figures: WindowFigures::Open(Box::default()),
            peak_span: PeakSpan::UNKNOWN,
            revision,
            dirty: false,
            stored: false,
        }
    }

    /// Settled presence reached instant `at` of the window with
    /// `concurrent` viewers.
    fn presence(&mut self, concurrent: u64, at: EventTime) {
        let span = self.peak_span;
        let figures = self.figures_mut();
        let mut presence = WindowPresence {
            concurrent: figures.concurrent,
            peak: figures.peak,
            span,
        };
        presence.reach(concurrent, at);
        self.set_presence(presence);
    }

    /// The window starting at `start` starts from `concurrent` viewers: the
    /// count at the instant just before its start.
    fn starts_from(&mut self, concurrent: u64, start: EventTime) {
        self.presence(concurrent, start.saturating_sub(1));
    }

    /// Its presence figures played again ([`Live::late_in_history`]).
    fn set_presence(&mut self, presence: WindowPresence) {
        let figures = self.figures_mut();
        figures.concurrent = presence.concurrent;
        figures.peak = presence.peak;
        self.peak_span = presence.span;
    }

    /// A presence event behind settled presence, at `ts` in this window,
    /// made its viewer present (`arrived`) or absent from then on: every
    /// count from `ts` on moves by one. The peak rises if the window was at
    /// it at an instant from `ts` on, and falls if it was only at such
    /// instants. The count at the end moves if settled presence has passed
    /// it (`passed`); else [`Live::presence_settled`] sets the count.
    ///
    /// After the first such event the span is a bound, not exact: a rise
    /// keeps its end and starts it no earlier than `ts`; a fall keeps both.
    fn late_presence(&mut self, ts: EventTime, arrived: bool, passed: bool) {
        let mut span = self.peak_span;
        let figures = self.figures_mut();
        if arrived {
            if span.until > ts {
                figures.peak = figures.peak.saturating_add(1);
                span.from = span.from.max(ts);
            }
            if passed {
                figures.concurrent = figures.concurrent.saturating_add(1);
                if figures.concurrent >= figures.peak {
                    figures.peak = figures.concurrent;
                    span.until = EventTime::MAX;
                }
            }
        } else {
            if span.from >= ts {
                figures.peak = figures.peak.saturating_sub(1);
            } else {
                span.until = span.until.min(ts);
            }
            if passed {
                figures.concurrent = figures.concurrent.saturating_sub(1);
            }
        }
        self.peak_span = span;
    }

    /// A presence event at the very instant settled presence reached
    /// (`ts`), after the events settled there, made its viewer present
    /// (`arrived`) or absent: the count there alone moves by one. A view
    /// raises the peak when the window was at it there, and then it is
    /// there alone. A leave lowers it when the window was at it there
    /// alone: by one, but the lower count may have been reached before,
    /// which the span does not say (`from` becomes unknown); the next such
    /// leave then has the window's presence played again (`replay`, from the
    /// history). [`Live::presence_settled`] sets the count.
    fn at_reached(
        &mut self,
        ts: EventTime,
        arrived: bool,
        replay: impl FnOnce() -> WindowPresence,
    ) {
        let mut span = self.peak_span;
        if arrived {
            if span.until > ts {
                let figures = self.figures_mut();
                figures.peak = figures.peak.saturating_add(1);
                span = PeakSpan {
                    from: ts,
                    until: EventTime::MAX,
                };
            }
        } else if span.from == ts {
            let figures = self.figures_mut();
            figures.peak = figures.peak.saturating_sub(1);
            span.from = PeakSpan::FIRST_UNKNOWN;
        } else if span.from == PeakSpan::FIRST_UNKNOWN {
            self.set_presence(replay());
            return;
        } else {
            span.until = span.until.min(ts);
        }
        self.peak_span = span;
    }

    /// Its peak, read without decoding a sealed window's other figures.
    fn peak(&self) -> u64 {
        match &self.figures {
            WindowFigures::Open(figures) => figures.peak,
            WindowFigures::Sealed(bytes) => sealed_peak(bytes),
        }
    }

    /// The figures, decoded if the window is sealed.
    fn figures(&self) -> Cow<'_, Figures> {
        match &self.figures {
            WindowFigures::Open(figures) => Cow::Borrowed(&**figures),
            WindowFigures::Sealed(bytes) => Cow::Owned(unseal(bytes)),
        }
    }

    /// The figures to count into; a sealed window is reopened. The window
    /// is no longer as the changelog's windows piece holds it.
    fn figures_mut(&mut self) -> &mut Figures {
        self.stored = false;
        if let WindowFigures::Sealed(bytes) = &self.figures {
            self.figures = WindowFigures::Open(Box::new(unseal(bytes)));
        }
        match &mut self.figures {
            WindowFigures::Open(figures) => figures,
            WindowFigures::Sealed(_) => unreachable!("reopened above"),
        }
    }

    /// Encodes an open window's figures, releasing the box; not when a
    /// distinct count has become a sketch, whose encoding saves little and
    /// would be decoded and encoded again for every late event.
    fn seal(&mut self) {
        if let WindowFigures::Open(figures) = &self.figures {
            if figures.is_exact() {
                self.figures = WindowFigures::Sealed(seal(figures).into_boxed_slice());
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match &self.figures {
            WindowFigures::Open(figures) => std::mem::size_of::<Figures>() + figures.heap_bytes(),
            WindowFigures::Sealed(bytes) => bytes.len(),
        }
    }
}

/// A window's figures as [`WindowFigures::Sealed`] holds them.
fn seal(figures: &Figures) -> Vec<u8> {
    postcard::to_stdvec(figures).expect("window figures always serialize")
}

/// The figures of a sealed window: bytes [`seal`] wrote, or that a
/// checkpoint's decoding checked.
fn unseal(bytes: &[u8]) -> Figures {
    postcard::from_bytes(bytes).expect("a sealed window holds figures")
}

/// A sealed window's `peak`, without decoding the rest: it is the last
/// field of [`Figures`], so the last varint of its postcard encoding. That
/// varint ends at the last byte; the bytes before it in the same varint are
/// 0x80 or above, and the one before those ends `concurrent`'s varint, so is
/// below. (Not so for `concurrent`: the bytes before it end a distinct
/// count's raw hashes.) A late presence event takes the peak of every
/// retained window again, most of them sealed, and a busy stream's sealed
/// window holds thousands of distinct ids.
fn sealed_peak(bytes: &[u8]) -> u64 {
    let end = bytes.len().saturating_sub(1);
    let start = bytes[..end]
        .iter()
        .rposition(|b| b & 0x80 == 0)
        .map_or(0, |last_of_before| last_of_before + 1);
    bytes[start..]
        .iter()
        .rev()
        .fold(0u64, |value, b| (value << 7) | u64::from(b & 0x7f))
}

/// What only a stream with viewers or retained windows needs: released as a
/// whole once all of it is empty (an ended stream whose windows expired), so
/// an ended stream keeps its figures and little else.
#[derive(Clone, Debug)]
struct Live {
    /// Latest presence per viewer over the settled presence events: those at
    /// or before the watermark, applied in event-time order (and late ones).
    viewers: Viewers,
    /// Presence events after the watermark, in event-time order, not yet settled.
    pending: PendingPresence,
    /// Retained windows, by start. Windows are mostly opened in time order,
    /// so a new one is pushed at the back and expired ones leave the front.
    windows: VecDeque<(EventTime, WindowState)>,
    /// How far settled presence has reached the windows, in event time:
    /// the windows' `concurrent` and `peak` hold the settled presence up to
    /// here (see [`Live::reach`]); pending events are all after it.
    /// `EventTime::MIN` until a presence event settles.
    reached: EventTime,
    /// The settled presence events a late one may move counts among.
    history: History,
    /// The changelog piece holding the retained windows as they were when
    /// it was written, those marked `stored` still so; `None` while the
    /// head holds every window.
    base: WindowBase,
    /// The latest instant of a presence event counted too late for any
    /// window, if the history holds it (at or after [`History::from`]; else
    /// `EventTime::MIN`): while it does, the history holds instants no
    /// window does, and a late event that lowers the count takes the
    /// stream's peak again from the whole history. Not checkpointed: a
    /// restore works it out again ([`StreamState::note_uncovered`]).
    uncovered: EventTime,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            viewers: Viewers::default(),
            pending: PendingPresence::default(),
            windows: VecDeque::new(),
            reached: EventTime::MIN,
            history: History::after(EventTime::MIN),
            base: WindowBase::NONE,
            uncovered: EventTime::MIN,
        }
    }
}

/// The live parts of a stream that has none.
static NO_LIVE: Live = Live {
    viewers: Viewers {
        by_hash: CompactMap::Sorted(Vec::new()),
        concurrent: 0,
        log: PieceLog::new(),
    },
    pending: PendingPresence {
        events: VecDeque::new(),
        arrivals: 0,
        projection: None,
    },
    windows: VecDeque::new(),
    reached: EventTime::MIN,
    history: History::after(EventTime::MIN),
    base: WindowBase::NONE,
    uncovered: EventTime::MIN,
};

impl Live {
    /// Whether the history holds instants no retained window does
    /// ([`Self::uncovered`]).
    fn holds_uncovered(&self) -> bool {
        self.uncovered > EventTime::MIN && self.uncovered >= self.history.from
    }

    fn is_empty(&self) -> bool {
        self.viewers.by_hash.is_empty()
            && self.pending.is_empty()
            && self.windows.is_empty()
            && self.history.is_empty()
    }

    /// Moves [`Self::reached`] to `through` (never back): each window it
    /// enters starts from the concurrent viewers now, which stand until the
    /// next settled presence event.
    fn reach(&mut self, through: EventTime) {
        if through <= self.reached {
            return;
        }
        let concurrent = self.viewers.concurrent;
        for (start, window) in self.windows.iter_mut().rev() {
            if *start <= self.reached {
                break;
            }
            if *start <= through {
                window.starts_from(concurrent, *start);
            }
        }
        self.reached = through;
    }

    /// A presence event behind [`Self::reached`] at `ts` that made its viewer
    /// present (`arrived`) or absent, which they stay from `ts` on (it
    /// superseded their latest): every count from `ts` on moves by one. The
    /// windows settled presence has passed from `ts` on move with it, their
    /// peak too; the event's own window as [`WindowState::late_presence`]
    /// says. They are published again. The highest peak among them.
    ///
    /// Only for the windows the history does not cover (restored from a
    /// checkpoint older than format 11; [`Self::late_in_history`] moves the
    /// others), unless `covered` (an event at the very instant settled
    /// presence reached: it moves the window holding it alone).
    fn late_presence(
        &mut self,
        ts: EventTime,
        arrived: bool,
        window_ms: i64,
        covered: bool,
    ) -> u64 {
        let shift = |count: &mut u64| {
            *count = if arrived {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        };
        let Live {
            viewers,
            windows,
            reached,
            history,
            ..
        } = self;
        let reached = *reached;
        let mut highest = 0;
        for (start, window) in windows.iter_mut().rev() {
            let end = start.saturating_add(window_ms);
            if end <= ts {
                break;
            }
            // Played at publication from the presence as it is now.
            if *start > reached || (!covered && *start >= history.from) {
                continue;
            }
            if *start > ts {
                let figures = window.figures_mut();
                shift(&mut figures.concurrent);
                shift(&mut figures.peak);
            } else if covered && *start >= history.from {
                // The history holds the event already.
                let until = reached.saturating_add(1);
                window.at_reached(ts, arrived, || {
                    history.play(*start, until, viewers.concurrent, |before| {
                        WindowPresence::starting(before, *start)
                    })
                });
            } else {
                // (The window holding `reached` takes the count now below.)
                window.late_presence(ts, arrived, end.saturating_sub(1) <= reached);
            }
            highest = highest.max(window.peak());
            window.dirty = true;
        }
        highest
    }

    /// A presence event later than the lateness changed the count of
    /// viewers present by `change` from `ts` until `until` (exclusive): each
    /// window the history covers over those instants moves with it, shifted
    /// when all its instants settled so far are among them, else added up
    /// again from its events' changes (its count at its end, its peak and
    /// when it was at it). They are published again.
    fn late_in_history(
        &mut self,
        ts: EventTime,
        until: EventTime,
        change: i8,
        window_ms: i64,
    ) -> Moved {
        let Live {
            viewers,
            windows,
            reached,
            history,
            ..
        } = self;
        let (mut highest, mut fell) = (0, false);
        for (start, window) in windows.iter_mut() {
            // Its instants settled so far: from the one before its start.
            let first = start.saturating_sub(1);
            let end = start
                .saturating_add(window_ms)
                .min(reached.saturating_add(1));
            if *start < history.from || *start > *reached || end <= ts {
                continue;
            }
            if first >= until {
                break;
            }
            let old = window.peak();
            if first >= ts && end <= until {
                let figures = window.figures_mut();
                let shift = |count: u64| count.saturating_add_signed(change.into());
                figures.concurrent = shift(figures.concurrent);
                figures.peak = shift(figures.peak);
            } else {
                let presence = history.play(*start, end, viewers.concurrent, |before| {
                    WindowPresence::starting(before, *start)
                });
                window.set_presence(presence);
            }
            let peak = window.peak();
            highest = highest.max(peak);
            fell |= peak < old;
            window.dirty = true;
        }
        if fell {
            Moved::Down
        } else {
            Moved::Up(highest)
        }
    }

    /// The stream's peak worked out again after a count fell: the highest
    /// of the peak before the history (`peak_before`), the retained
    /// windows' peaks and, while the history holds instants no window does,
    /// the history's counts (`now` viewers present at the end).
    fn peak_again(&mut self, peak_before: u64, now: u64) -> u64 {
        let mut peak = peak_before.max(self.highest_peak());
        if self.holds_uncovered() {
            let all = self
                .history
                .peak_between(EventTime::MIN, EventTime::MAX, now);
            peak = peak.max(all);
        }
        peak
    }

    /// The highest peak among the retained windows.
    fn highest_peak(&self) -> u64 {
        self.windows
            .iter()
            .map(|(_, w)| w.peak())
            .max()
            .unwrap_or(0)
    }

    /// The window holding [`Self::reached`] takes the concurrent viewers now,
    /// after a presence event settled.
    fn presence_settled(&mut self, window_ms: i64) {
        let reached = self.reached;
        let concurrent = self.viewers.concurrent;
        if let Some((start, window)) = self.windows.iter_mut().rev().find(|w| w.0 <= reached) {
            if reached < start.saturating_add(window_ms) {
                window.presence(concurrent, reached);
            }
        }
    }
}

/// Everything kept for one stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamState {
    /// Since the stream's first event.
    totals: Figures,
    /// Set by the first purchase or refund counted.
    currency: Option<Currency>,
    /// The first non-empty `seller_id` counted.
    seller_id: Option<Box<str>>,
    /// Publications so far; persisted so it keeps increasing across restarts.
    pub(crate) revision: u64,
    /// Highest input position whose effect is in this state.
    pub(crate) applied_through: Option<u64>,
    /// Highest concurrent viewers over the settled events, in event-time order.
    settled_peak: u64,
    /// Highest concurrent viewers at an instant before the history kept
    /// ([`History::from`]): the part of `settled_peak` no late event moves.
    peak_before: u64,
    /// Event ids counted recently (event time), for duplicates: looked up by
    /// every event, so kept here rather than behind the live box.
    seen: SeenEvents,
    /// Presence and windows; `None` when all are empty.
    live: Option<Box<Live>>,
    /// Per-product figures, keyed by `product_id`.
    products: Products,
    /// Ended: idle past the timeout, per-viewer and per-event state released.
    pub(crate) finalized: bool,
    /// Changed since the last publication. Not persisted: a restored stream
    /// has nothing new to publish.
    pub(crate) dirty: bool,
    /// Published since its last checkpoint was taken. Not persisted.
    pub(crate) unsaved: bool,
    /// A checkpoint of it was taken (or it was restored from one). Not persisted.
    pub(crate) saved_once: bool,
    /// Set by [`Self::skip_revisions`]: a window opened from now on starts
    /// from the stream's revision, past any revision a window opened after
    /// the restored checkpoint may have been published with. Not persisted.
    windows_follow_revision: bool,
    /// `applied_through` as restored: events at or below it are already in
    /// this state. Kept apart from `applied_through` so that, without a
    /// restore, positions need not increase.
    pub(crate) restored_through: Option<u64>,
    /// The seed its ids are hashed with ([`id_hash`]), persisted: drawn at
    /// random for a new stream; 0 (unseeded) for one restored from a
    /// checkpoint written before seeds.
    pub(crate) id_seed: u64,
}

/// What applying one event did, with whether it was too late for a window.
pub(crate) struct Applied {
    pub(crate) outcome: Outcome,
    /// Counted in the cumulative figures but too late for any retained window.
    pub(crate) late: bool,
}

impl StreamState {
    /// A new stream whose ids hash with `id_seed`.
    pub(crate) fn seeded(id_seed: u64) -> StreamState {
        StreamState {
            id_seed,
            ..StreamState::default()
        }
    }

    /// Applies one event of this stream found at input `position`.
    ///
    /// Order of checks: already applied before a restore, duplicate, currency
    /// mismatch, then count. Only `Counted` changes a figure; `Duplicate` also
    /// advances `applied_through` (so a replay after restore reports it as
    /// already applied, not as a second duplicate); `Invalid` changes nothing.
    pub(crate) fn apply(&mut self, event: &Event<'_>, position: u64, clock: &Clock) -> Applied {
        let done = |outcome| Applied {
            outcome,
            late: false,
        };
        let event_hash = id_hash(self.id_seed, &event.event_id);
        let mismatch = match &event.action {
            Action::Purchase(line) | Action::Refund(line) => {
                self.currency.is_some_and(|c| c != line.currency)
            }
            _ => false,
        };
        // An invalid event is judged before the restore check: the currency
        // was fixed before it, so it is invalid again when read again, and
        // its dead letter does not depend on the checkpoint having been
        // written after it.
        if !mismatch
            && self
                .restored_through
                .is_some_and(|through| position <= through)
        {
            return done(Outcome::AlreadyApplied);
        }
        if mismatch {
            // Rare path: look without inserting, since an invalid event must
            // not enter the duplicate set.
            return if self.seen.contains(event_hash) {
                self.advance(position);
                done(Outcome::Duplicate)
            } else {
                done(Outcome::Invalid(InvalidReason::CurrencyMismatch))
            };
        }
        if !self.seen.insert(event_hash, event.ts, clock.dedup_span()) {
            self.advance(position);
            return done(Outcome::Duplicate);
        }
        let late = self.count(event, clock);
        self.advance(position);
        Applied {
            outcome: Outcome::Counted,
            late,
        }
    }

    /// The live parts, made on first need.
    fn live_mut(&mut self) -> &mut Live {
        self.live.get_or_insert_default()
    }

    /// The live parts, empty ones if there are none.
    fn live(&self) -> &Live {
        self.live.as_deref().unwrap_or(&NO_LIVE)
    }

    /// Releases the live parts once all of them are empty; presence
    /// pieces in the changelog go to `forgotten`.
    fn release_live_if_empty(&mut self, forgotten: &mut Forgotten) {
        if let Some(live) = self.live.as_deref_mut().filter(|live| live.is_empty()) {
            live.viewers.log.forget(forgotten);
            live.history.log.forget(forgotten);
            live.base.forget(forgotten);
            self.live = None;
        }
    }

    fn advance(&mut self, position: u64) {
        self.applied_through = Some(self.applied_through.map_or(position, |p| p.max(position)));
    }

    /// Adds a new, valid event to every figure it touches; `true` when it was
    /// too late for any retained window.
    fn count(&mut self, event: &Event<'_>, clock: &Clock) -> bool {
        // A counted event reopens an ended stream, from its figures.
        self.finalized = false;
        if self.seller_id.is_none() {
            if let Some(seller) = event.seller_id.as_deref().filter(|s| !s.is_empty()) {
                self.seller_id = Some(seller.into());
            }
        }
        // Only presence and purchases need the viewer: hash it for those alone.
        let viewer = match event.action {
            Action::View | Action::Leave | Action::Purchase(_) => {
                id_hash(self.id_seed, &event.viewer_id)
            }
            _ => 0,
        };
        let order = match &event.action {
            Action::Purchase(line) => id_hash(self.id_seed, &line.order_id),
            _ => 0,
        };
        match &event.action {
            Action::View => self.presence(viewer, event.ts, true, clock),
            Action::Leave => self.presence(viewer, event.ts, false, clock),
            Action::Impression { product_id } => self.product(product_id).impressions += 1,
            Action::Click { product_id } => self.product(product_id).clicks += 1,
            Action::AddToCart { product_id } => self.product(product_id).add_to_carts += 1,
            Action::Purchase(line) => self.purchase(line, order),
            // Refunds are not attributed to products: the contract's product
            // figures are all about selling.
            Action::Refund(line) => {
                self.currency.get_or_insert(line.currency);
            }
            Action::Like | Action::Comment | Action::Share | Action::Follow => {}
        }
        self.totals.count(event, viewer, order);
        let start = clock.window_start(event.ts);
        if clock.expired(start) {
            if matches!(event.action, Action::View | Action::Leave) {
                let live = self.live_mut();
                if event.ts >= live.history.from {
                    live.uncovered = live.uncovered.max(event.ts);
                }
            }
            return true;
        }
        let window = self.window_mut(start);
        window.figures_mut().count(event, viewer, order);
        window.dirty = true;
        false
    }

    /// The window starting at `start`, opened if needed.
    fn window_mut(&mut self, start: EventTime) -> &mut WindowState {
        // A window opened from now on starts from the stream's revision
        // after a restore: a window is published at most once per
        // publication of its stream, so that puts it past any earlier life
        // it had before the restore.
        let revision = if self.windows_follow_revision {
            self.revision
        } else {
            0
        };
        let first_event_ts = self.totals.first_event_ts;
        let live = self.live_mut();
        let windows = &mut live.windows;
        // Events mostly land in the newest window: try it before a search.
        let at = match windows.back() {
            Some((last, _)) if *last == start => return &mut windows.back_mut().expect("seen").1,
            Some((last, _)) if *last < start => windows.len(),
            _ => match windows.binary_search_by_key(&start, |w| w.0) {
                Ok(at) => return &mut windows[at].1,
                Err(at) => at,
            },
        };
        // Settled presence has passed its start, so no settled presence event
        // is in it (one would have opened it; only an event later than the
        // allowed lateness opens a window there): the viewers present at
        // its start stand until settled presence left it. Those are the
        // viewers at the end of the window before it, as no event came in
        // between; none before the stream's first event; else (no window
        // before it is retained) those present just before its start, by
        // the history, or when the history does not reach back that far
        // (a state restored from an older format), those present now.
        let carried = (start <= live.reached).then(|| match at.checked_sub(1) {
            Some(before) => windows[before].1.figures().concurrent,
            None if first_event_ts >= start => 0,
            None if start >= live.history.from => {
                live.history.present_before(start, live.viewers.concurrent)
            }
            None => live.viewers.concurrent,
        });
        let window = open_window(windows, at, start, revision);
        if let Some(carried) = carried {
            window.starts_from(carried, start);
        }
        window
    }

    /// A presence event waits, in event-time order, until the watermark
    /// passes it. One already behind the watermark is settled at once, in
    /// its place among the waiting ones the watermark has passed: those may
    /// still wait, when the watermark moved with an event of another stream
    /// or one that is not presence.
    ///
    /// Its window is opened first, so that settling reaches it. The later
    /// windows whose presence is still played from the waiting events
    /// change with it: they are published again.
    fn presence(&mut self, viewer: u64, ts: EventTime, is_view: bool, clock: &Clock) {
        let start = clock.window_start(ts);
        if !clock.expired(start) {
            self.window_mut(start);
        }
        let live = self.live_mut();
        live.pending.push(ts, viewer, is_view);
        let reached = live.reached;
        for (start, window) in live.windows.iter_mut().rev() {
            if *start <= ts {
                break;
            }
            if start.saturating_add(clock.window_ms) > reached {
                window.dirty = true;
            }
        }
        self.settle(clock.watermark, clock.window_ms);
    }

    /// Applies the pending presence events at or before `watermark`, oldest
    /// first, so that the peak is a maximum over event time; the windows
    /// they reach take the concurrent viewers at each.
    pub(crate) fn settle(&mut self, watermark: Option<EventTime>, window_ms: i64) {
        let Some(watermark) = watermark else { return };
        let Some(live) = self.live.as_deref_mut() else {
            return;
        };
        while let Some((ts, viewer, is_view)) = live.pending.pop_through(watermark) {
            // Behind the settled presence: later than the allowed lateness.
            // (One at the very instant settled presence reached comes after
            // the events settled there: it moves the count from that
            // instant on, in the window holding it alone.)
            let late = ts < live.reached;
            let at_reached = ts == live.reached;
            // The windows it passes start from the viewers before it.
            live.reach(ts);
            let before = live.viewers.concurrent;
            let previous = live.viewers.presence(viewer, ts, is_view);
            let after = live.viewers.concurrent;
            let event = Viewer::new(ts, is_view);
            let change = after as i64 - before as i64;
            let arrived = after > before;
            if late {
                if change != 0 {
                    // The windows the history does not cover.
                    let highest = live.late_presence(ts, arrived, window_ms, false);
                    if arrived {
                        self.peak_before = self.peak_before.max(highest);
                    }
                }
                let won = previous.is_none_or(|p| event > p).then_some(change as i8);
                if let Some((change, until)) = live.history.place_late(viewer, event, previous, won)
                {
                    let moved = live.late_in_history(ts, until, change, window_ms);
                    // Instants the history holds and no retained window does
                    // (events later than window retention open none) move
                    // too: their counts are the history's.
                    let uncovered = live.holds_uncovered();
                    match moved {
                        Moved::Up(highest) if !(uncovered && change < 0) => {
                            let between = if uncovered {
                                live.history.peak_between(ts, until, after)
                            } else {
                                0
                            };
                            self.settled_peak = self.settled_peak.max(highest).max(between);
                        }
                        _ => self.settled_peak = live.peak_again(self.peak_before, after),
                    }
                }
            } else {
                live.history.record(viewer, event, previous, change as i8);
                if at_reached && change != 0 {
                    let highest = live.late_presence(ts, arrived, window_ms, true);
                    if arrived {
                        self.settled_peak = self.settled_peak.max(highest);
                    } else if before == self.settled_peak {
                        // A leave at the instant reached, after a view
                        // there: the count at that instant was never the
                        // one before it, and the peak may have been there
                        // alone.
                        self.settled_peak = live.peak_again(self.peak_before, after);
                    }
                }
                self.settled_peak = self.settled_peak.max(after);
            }
            live.presence_settled(window_ms);
        }
    }

    /// Concurrent viewers after every presence event, and the highest count
    /// at any event time: the settled state played forward through the
    /// pending events in event-time order (without changing it).
    #[cfg(test)]
    fn presence_now(&self) -> (u64, u64) {
        self.played().cumulative(self.settled_peak)
    }

    /// The settled state played forward through every pending event, once
    /// for the cumulative figures and the window that holds them all.
    pub(crate) fn played(&self) -> Played {
        let (concurrent, peak) = self.play_pending(EventTime::MIN, EventTime::MAX, None);
        Played { concurrent, peak }
    }

    /// A window's concurrent viewers at its end and highest count over its
    /// instants: what settled presence left in `figures` once it has passed
    /// the window's end, else that played forward through the pending
    /// events (`played`, when the window holds every one of them).
    fn window_presence(
        &self,
        start: EventTime,
        end: EventTime,
        figures: &Figures,
        played: Played,
    ) -> (u64, u64) {
        let Live {
            pending, reached, ..
        } = self.live();
        if end.saturating_sub(1) <= *reached {
            return (figures.concurrent, figures.peak);
        }
        let settled = (start <= *reached).then_some(figures.peak);
        // `played.peak` covers what the projection played, if any, settled
        // events included: those must be in the window too.
        let holds_all = match (pending.events.front(), pending.events.back()) {
            (Some(first), Some(last)) => start <= first.ts && last.ts < end,
            _ => true,
        } && pending.projection.as_ref().is_none_or(|p| start <= p.since);
        if holds_all {
            // The count it starts from is in `played.peak`: the settled
            // count, or the count at `start` when nothing before it waits.
            return played.cumulative(settled.unwrap_or(0));
        }
        self.play_pending(start, end, settled)
    }

    /// The settled state played forward, in event-time order and without
    /// changing it, through the pending events before `end`: the concurrent
    /// viewers then, and the highest count at an instant from `start` on.
    /// `settled` is that highest count over the instants from `start` that
    /// have settled, if any have; else the count at `start` is the first.
    /// A busy stream starts from its [`Projection`] when what it played is
    /// on one side of `start` and before `end`, or crossed into the window
    /// at `start` or out of the window ending at `end`.
    fn play_pending(&self, start: EventTime, end: EventTime, settled: Option<u64>) -> (u64, u64) {
        let Live {
            viewers, pending, ..
        } = self.live();
        let events = &pending.events;
        let upto = events.partition_point(|e| e.ts < end);
        // The first event at or after `start`: the count before it is the
        // count at `start`.
        let first = events.partition_point(|e| e.ts < start);
        let lift = |peak: &mut Option<u64>, count: u64| {
            *peak = Some(peak.map_or(count, |p| p.max(count)));
        };
        let mut peak = settled;
        let mut concurrent = viewers.concurrent;
        let mut from = 0;
        let mut projection = None;
        if let Some(p) = pending.projection.as_deref() {
            let played = pending.after(p.through);
            // Every event it played, settled or not, is from `start` on.
            let within = start <= p.since;
            match p.crossed {
                _ if played <= upto
                    && ((first == 0 && within) || (first > 0 && played <= first)) =>
                {
                    // Every event it played is on one side of `start`.
                    if first == 0 {
                        lift(&mut peak, concurrent);
                        if let Some(played) = p.peak {
                            lift(&mut peak, played);
                        }
                    }
                    (concurrent, from, projection) = (p.concurrent, played, Some(p));
                }
                Crossed::One {
                    start: crossed,
                    concurrent: at_start,
                    peak_from,
                    ..
                } if crossed == start && played <= upto => {
                    // It crossed into this window: the count at its start
                    // and after, then the events after the projection.
                    lift(&mut peak, at_start);
                    if let Some(played) = peak_from {
                        lift(&mut peak, played);
                    }
                    (concurrent, from, projection) = (p.concurrent, played, Some(p));
                }
                Crossed::One {
                    start: crossed,
                    concurrent: at_end,
                    peak_before,
                    ..
                } if crossed == end && first == 0 && within => {
                    // It crossed out of this window, every pending event of
                    // which it played.
                    lift(&mut peak, concurrent);
                    if let Some(played) = peak_before {
                        lift(&mut peak, played);
                    }
                    return (at_end, peak.unwrap_or(at_end));
                }
                _ => {}
            }
        }
        // Each viewer's state as played so far, in a map sized once for
        // every event left to play.
        let mut overlay: CompactMap<Viewer> = CompactMap::with_capacity(upto - from.min(upto));
        let below = |viewer| {
            projection
                .and_then(|p: &Projection| p.overlay.get(viewer))
                .or_else(|| viewers.by_hash.get(viewer))
                .copied()
        };
        for (at, event) in events.range(from.min(upto)..upto).enumerate() {
            let at = at + from;
            if at == first {
                lift(&mut peak, concurrent);
            }
            if play(event, &mut overlay, below, &mut concurrent) && at >= first {
                lift(&mut peak, concurrent);
            }
        }
        if first >= upto.max(from) {
            // No event played from `start` on: the count at `start` stands.
            lift(&mut peak, concurrent);
        }
        (concurrent, peak.unwrap_or(concurrent))
    }

    /// Brings a busy stream's [`Projection`] up to its pending events more
    /// than [`PROJECTION_LAG_MS`] older than its newest, so that
    /// [`Self::play_pending`] plays only the newest at each publication; a
    /// stream with few pending events has none. `clock` gives the windows
    /// whose start it records crossing.
    pub(crate) fn project_presence(&mut self, clock: &Clock) {
        let Some(live) = self.live.as_deref_mut() else {
            return;
        };
        let Live {
            viewers,
            pending,
            reached,
            ..
        } = live;
        if pending.len() < PROJECT_FROM {
            pending.projection = None;
            return;
        }
        let newest = pending.events.back().map_or(EventTime::MIN, |e| e.ts);
        let horizon = newest.saturating_sub(PROJECTION_LAG_MS);
        let upto = pending.events.partition_point(|e| e.ts <= horizon);
        let Some(&through) = upto
            .checked_sub(1)
            .and_then(|last| pending.events.get(last))
        else {
            return;
        };
        // Viewers it played that have settled since stay in its map: start
        // afresh once the map outgrows what is pending.
        let oldest = pending.events.front().map_or(EventTime::MAX, |e| e.ts);
        let kept = pending
            .projection
            .take()
            .filter(|p| p.overlay.len() <= 2 * pending.len() + PROJECT_FROM)
            .map(|mut p| {
                p.settle_crossing(oldest);
                p
            });
        let from = kept.as_ref().map_or(0, |p| pending.after(p.through));
        // Where the settled presence stands, for the window starts crossed.
        let mut last = kept.as_ref().map_or(*reached, |p| p.through.ts);
        let mut projection = kept.unwrap_or_else(|| {
            Box::new(Projection {
                overlay: CompactMap::with_capacity(upto),
                since: oldest,
                through,
                concurrent: viewers.concurrent,
                peak: None,
                crossed: Crossed::None,
            })
        });
        let Projection {
            overlay,
            concurrent,
            peak,
            crossed,
            ..
        } = &mut *projection;
        let below = |viewer| viewers.by_hash.get(viewer).copied();
        // Nothing to play if it is already past the horizon (its newest
        // events settled and newer ones came in since).
        for event in pending.events.range(from.min(upto)..upto) {
            let window = clock.window_start(event.ts);
            if last > EventTime::MIN && window > clock.window_start(last) {
                *crossed = match crossed {
                    Crossed::None if window - clock.window_start(last) == clock.window_ms => {
                        Crossed::One {
                            start: window,
                            concurrent: *concurrent,
                            peak_before: *peak,
                            peak_from: None,
                        }
                    }
                    _ => Crossed::Many,
                };
            }
            last = event.ts;
            if play(event, overlay, below, concurrent) {
                *peak = Some(peak.map_or(*concurrent, |p| p.max(*concurrent)));
                if let Crossed::One { peak_from, .. } = crossed {
                    *peak_from = Some(peak_from.map_or(*concurrent, |p| p.max(*concurrent)));
                }
            }
        }
        projection.through = projection.through.max(through);
        pending.projection = Some(projection);
    }

    fn purchase(&mut self, line: &OrderLine<'_>, order: u64) {
        self.currency.get_or_insert(line.currency);
        let quantity = u64::from(line.quantity);
        let product = self.product(&line.product_id);
        product.items_sold = product.items_sold.saturating_add(quantity);
        product.gmv = product.gmv.saturating_add(line.amount());
        product.orders.get_or_insert_default().insert(order);
    }

    /// The product's figures, created on first sight; no allocation when it exists.
    fn product(&mut self, product_id: &str) -> &mut ProductState {
        self.products.get_or_insert(product_id)
    }

    /// The cumulative figures now, at the current revision.
    pub(crate) fn rollup(&self, stream_id: String, rate: CommissionRate) -> StreamRollup {
        self.rollup_with(stream_id, rate, &self.products(), self.played())
    }

    /// [`Self::rollup`], its top products taken from `products` (this
    /// stream's, as [`Self::products`] orders them) and its presence from
    /// `played` (as [`Self::played`] gives it).
    pub(crate) fn rollup_with(
        &self,
        stream_id: String,
        rate: CommissionRate,
        products: &[ProductRollup],
        played: Played,
    ) -> StreamRollup {
        let mut rollup = self.totals.rollup(self, stream_id, rate, self.revision);
        let (concurrent, peak) = played.cumulative(self.settled_peak);
        rollup.concurrent_viewers = concurrent;
        rollup.peak_concurrent_viewers = peak;
        rollup.top_products = products[..products.len().min(TOP_PRODUCTS)].to_vec();
        rollup
    }

    /// Rollups of the windows changed since the last call, each at a new
    /// revision, oldest first; `played` as [`Self::played`] gives it.
    pub(crate) fn publish_windows(
        &mut self,
        stream_id: &str,
        rate: CommissionRate,
        window_ms: i64,
        played: Played,
    ) -> Vec<StreamRollup> {
        let Some(live) = self.live.as_deref_mut() else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (at, (_, window)) in live.windows.iter_mut().enumerate() {
            if window.dirty {
                window.dirty = false;
                window.revision += 1;
                window.stored = false;
                changed.push(at);
            }
        }
        changed
            .into_iter()
            .map(|at| self.window_rollup(at, stream_id, rate, window_ms, played))
            .collect()
    }

    /// Every retained window's figures now, oldest first (no new revision).
    pub(crate) fn window_rollups(
        &self,
        stream_id: &str,
        rate: CommissionRate,
        window_ms: i64,
    ) -> Vec<StreamRollup> {
        let played = self.played();
        (0..self.live().windows.len())
            .map(|at| self.window_rollup(at, stream_id, rate, window_ms, played))
            .collect()
    }

    /// The figures of the window at index `at`, at its current revision.
    fn window_rollup(
        &self,
        at: usize,
        stream_id: &str,
        rate: CommissionRate,
        window_ms: i64,
        played: Played,
    ) -> StreamRollup {
        let (start, window) = &self.live().windows[at];
        let end = start.saturating_add(window_ms);
        let figures = window.figures();
        let mut rollup = figures.rollup(self, stream_id.to_owned(), rate, window.revision);
        (rollup.concurrent_viewers, rollup.peak_concurrent_viewers) =
            self.window_presence(*start, end, &figures, played);
        rollup.kind = RollupKind::Window;
        rollup.window_start = Some(*start);
        rollup.window_end = Some(end);
        rollup.is_final = false;
        rollup
    }

    /// Works out [`Live::uncovered`] again after a restore: the latest
    /// settled presence event in the history whose window is not retained.
    /// (A changelog head is written after a publication moved the history's
    /// start past such events; a checkpoint taken at any other time may
    /// hold some.)
    pub(crate) fn note_uncovered(&mut self, clock: &Clock) {
        let Some(live) = self.live.as_deref_mut() else {
            return;
        };
        let held = |ts: EventTime| {
            let start = clock.window_start(ts);
            live.windows.binary_search_by_key(&start, |w| w.0).is_ok()
        };
        let uncovered = live
            .history
            .events_from(live.history.from)
            .map(|e| e.ts())
            .filter(|&ts| !held(ts))
            .max();
        live.uncovered = uncovered.unwrap_or(EventTime::MIN);
    }

    /// Drops what the watermark made useless: windows past retention, event
    /// ids past the duplicate horizon (of the stream's own event time, its
    /// latest counted `ts`, when that is behind), absent viewers past retention; seals
    /// the windows it closed; releases the live parts once all are empty.
    /// The duplicate-filter generations it forgets that have pieces in the
    /// changelog go to `forgotten`: the stream's next checkpoint drops them.
    pub(crate) fn expire(&mut self, clock: &Clock, forgotten: &mut Forgotten) {
        let Some(watermark) = clock.watermark else {
            return;
        };
        // The duplicate horizon is the stream's own event time: its
        // partition's watermark may be minutes ahead of it (another stream's
        // clock, or the wall clock pushed in while the input was quiet).
        let own = watermark.min(self.totals.last_event_ts);
        self.seen.expire(
            own.saturating_sub(clock.dedup_horizon_ms),
            clock.dedup_span(),
            forgotten,
        );
        let Some(live) = self.live.as_deref_mut() else {
            return;
        };
        while live.windows.front().is_some_and(|w| clock.expired(w.0)) {
            if let Some((_, window)) = live.windows.pop_front() {
                // Its instants are past every late event now.
                self.peak_before = self.peak_before.max(window.peak());
            }
        }
        if live.windows.is_empty() {
            live.windows = VecDeque::new();
            self.peak_before = self.settled_peak;
        }
        // The earliest window an event can still open.
        let expired_before = watermark
            .saturating_sub(clock.retention_ms)
            .saturating_sub(clock.window_ms);
        let from = clock
            .window_start(expired_before)
            .saturating_add(clock.window_ms);
        if live.holds_uncovered() && from > live.history.from {
            // Instants no window holds leave the history: their peak stays.
            let left = live
                .history
                .peak_between(EventTime::MIN, from, live.viewers.concurrent);
            self.peak_before = self.peak_before.max(left);
        }
        live.history.keep_from(from);
        for (start, window) in &mut live.windows {
            if start.saturating_add(clock.window_ms) <= watermark {
                window.seal();
            }
        }
        // A viewer's leave is kept while an event before it can still land
        // in a window: forgotten, a late view before it would count them
        // as present from then on.
        live.viewers.expire_absent(from);
        if live.pending.is_empty() {
            // Nothing waits for the watermark: give the buffer back.
            live.pending = PendingPresence {
                events: VecDeque::new(),
                arrivals: live.pending.arrivals,
                projection: None,
            };
        }
        self.release_live_if_empty(forgotten);
    }

    /// Moves the stream's and its windows' revisions `n` on, past any that
    /// may have been published after its checkpoint was taken, windows
    /// opened since included.
    pub(crate) fn skip_revisions(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.revision = self.revision.saturating_add(n);
        if let Some(live) = self.live.as_deref_mut() {
            for (_, window) in &mut live.windows {
                window.revision = window.revision.saturating_add(n);
                window.stored = false;
            }
        }
        self.windows_follow_revision = true;
        // The moved revisions must reach the changelog with the stream's next
        // publication: a crash before its next full checkpoint would
        // otherwise restore the old ones and reuse the revisions this
        // instance published.
        self.saved_once = false;
    }

    /// Whether the stream has been idle (in event time) for `idle_ms` at `watermark`.
    pub(crate) fn idle(&self, watermark: EventTime, idle_ms: i64) -> bool {
        !self.finalized && self.totals.last_event_ts.saturating_add(idle_ms) <= watermark
    }

    /// Ends the stream: releases per-viewer and per-event state, keeps the
    /// cumulative figures (a later event reopens it from them), and marks it
    /// for a last publication with `final: true` and no viewer present.
    /// The duplicate filter's pieces go to `forgotten`, as in [`Self::expire`].
    pub(crate) fn finalize(&mut self, window_ms: i64, forgotten: &mut Forgotten) {
        self.finalized = true;
        // The stream is over: its presence events still waiting for the
        // watermark happened, and the peak must count them before they go.
        self.settle(Some(EventTime::MAX), window_ms);
        // Its windows keep the viewers present at their end: the register
        // goes below.
        if let Some(live) = self.live.as_deref_mut() {
            if let Some(&(start, _)) = live.windows.back() {
                live.reach(start.saturating_add(window_ms).saturating_sub(1));
            }
        }
        // Dirty, so published and then checkpointed: the checkpoint
        // tombstones the filter's pieces.
        self.seen.clear(forgotten);
        if let Some(live) = self.live.as_deref_mut() {
            live.viewers.log.forget(forgotten);
            live.viewers = Viewers::default();
            live.pending = PendingPresence::default();
            live.history
                .clear(live.reached.saturating_add(1), forgotten);
        }
        self.peak_before = self.settled_peak;
        self.release_live_if_empty(forgotten);
        // What is kept from now on is kept without room to grow.
        self.totals.shrink_to_fit();
        self.products.0.shrink_to_fit();
        self.dirty = true;
    }

    /// Every product's figures, by `gmv` descending then `product_id`.
    pub(crate) fn products(&self) -> Vec<ProductRollup> {
        let mut products: Vec<ProductRollup> = self
            .products
            .iter()
            .map(|(product_id, p)| ProductRollup {
                product_id: product_id.to_owned(),
                impressions: p.impressions,
                clicks: p.clicks,
                add_to_carts: p.add_to_carts,
                orders: p.orders(),
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

    /// Largest event time counted (`EventTime::MIN` before any).
    pub(crate) fn last_event_ts(&self) -> EventTime {
        self.totals.last_event_ts
    }

    /// Adds this stream's bytes to `bytes`, by structure: what its parts
    /// asked of the allocator (the allocator's own overhead left out), plus
    /// the state itself (boxed in the stream table).
    pub(crate) fn count_bytes(&self, bytes: &mut StateBytes) {
        bytes.streams +=
            std::mem::size_of::<Self>() + self.seller_id.as_ref().map_or(0, |s| s.len());
        bytes.distinct_counts += self.totals.heap_bytes();
        bytes.products += self.products.heap_bytes();
        bytes.duplicate_filter += self.seen.heap_bytes();
        let Some(live) = self.live.as_deref() else {
            return;
        };
        // The box itself, counted with the windows it mostly holds.
        bytes.windows += std::mem::size_of::<Live>()
            + live.base.heap_bytes()
            + live.windows.capacity() * std::mem::size_of::<(EventTime, WindowState)>()
            + live
                .windows
                .iter()
                .map(|(_, w)| w.heap_bytes())
                .sum::<usize>();
        bytes.presence +=
            live.viewers.heap_bytes() + live.pending.heap_bytes() + live.history.heap_bytes();
    }
}

/// Inserts an empty window at index `at`; grows the storage a few windows
/// at a time rather than doubling it.
fn open_window(
    windows: &mut VecDeque<(EventTime, WindowState)>,
    at: usize,
    start: EventTime,
    revision: u64,
) -> &mut WindowState {
    if windows.len() == windows.capacity() {
        windows.reserve_exact((windows.len() / 4).max(2));
    }
    windows.insert(at, (start, WindowState::new(revision)));
    &mut windows[at].1
}

/// Bytes of aggregation state by structure, as the parts asked of the
/// allocator (its per-block overhead, 8–16 bytes a block with glibc, left
/// out): for the state-size gauge and the memory benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateBytes {
    /// The stream table (buckets and `stream_id` keys) and each stream's
    /// boxed state, cumulative figures and seller id included.
    pub streams: usize,
    /// Heap of the cumulative distinct counts (viewers, buyers, orders).
    pub distinct_counts: usize,
    /// Retained windows, their distinct counts included.
    pub windows: usize,
    /// Latest presence per viewer, and presence events waiting for the watermark.
    pub presence: usize,
    /// Event ids remembered for duplicates.
    pub duplicate_filter: usize,
    /// Per-product figures, ids and order sets.
    pub products: usize,
    /// Ended streams kept packed ([`Frozen`]): their table, ids and bytes.
    pub ended_packed: usize,
}

impl StateBytes {
    /// Every structure together.
    pub fn total(&self) -> usize {
        self.streams
            + self.distinct_counts
            + self.windows
            + self.presence
            + self.duplicate_filter
            + self.products
            + self.ended_packed
    }

    /// Adds another partition's bytes, structure by structure.
    pub fn add(&mut self, other: &StateBytes) {
        self.streams += other.streams;
        self.distinct_counts += other.distinct_counts;
        self.windows += other.windows;
        self.presence += other.presence;
        self.duplicate_filter += other.duplicate_filter;
        self.products += other.products;
        self.ended_packed += other.ended_packed;
    }

    /// Each structure with its name, for reports.
    pub fn parts(&self) -> [(&'static str, usize); 7] {
        [
            ("stream table and states", self.streams),
            ("cumulative distinct counts", self.distinct_counts),
            ("windows", self.windows),
            ("presence", self.presence),
            ("duplicate filter", self.duplicate_filter),
            ("products", self.products),
            ("ended streams, packed", self.ended_packed),
        ]
    }
}

/// Per-product figures of a stream, sorted by `product_id`: a stream shows
/// a few to a few hundred products, so a binary search over one compact
/// vector beats a hash table's empty buckets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Products(Vec<(Box<str>, ProductState)>);

impl Products {
    /// The product's figures, created on first sight; no allocation when it exists.
    fn get_or_insert(&mut self, product_id: &str) -> &mut ProductState {
        let at = match self.0.binary_search_by(|p| (*p.0).cmp(product_id)) {
            Ok(at) => at,
            Err(at) => {
                if self.0.len() == self.0.capacity() && self.0.len() < 32 {
                    // Few products: grow one at a time, not doubling (a
                    // product is new once per stream, so the copies are few).
                    self.0.reserve_exact(1);
                }
                self.0
                    .insert(at, (product_id.into(), ProductState::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &ProductState)> + '_ {
        self.0.iter().map(|(id, p)| (&**id, p))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<(Box<str>, ProductState)>()
            + self
                .0
                .iter()
                .map(|(id, p)| id.len() + p.heap_bytes())
                .sum::<usize>()
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
    /// Hashes of distinct `order_id`s over this product's purchases; most
    /// products sell nothing, so the set is boxed and made by the first order.
    /// Checkpointed as a plain (possibly empty) set.
    #[serde(with = "boxed_ids")]
    orders: Option<Box<IdSet>>,
}

impl ProductState {
    fn orders(&self) -> u64 {
        self.orders.as_ref().map_or(0, |ids| ids.len())
    }

    fn heap_bytes(&self) -> usize {
        self.orders
            .as_ref()
            .map_or(0, |ids| std::mem::size_of::<IdSet>() + ids.heap_bytes())
    }
}

/// (De)serializes an optional boxed [`IdSet`] as a plain set: `None` is
/// the empty set, so the checkpoint layout does not depend on the boxing.
mod boxed_ids {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ids::IdSet;

    pub(super) fn serialize<S: Serializer>(
        ids: &Option<Box<IdSet>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match ids {
            Some(ids) => ids.serialize(serializer),
            None => IdSet::default().serialize(serializer),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Box<IdSet>>, D::Error> {
        let ids = IdSet::deserialize(deserializer)?;
        Ok((ids.len() > 0).then(|| Box::new(ids)))
    }
}

/// One viewer's latest presence event (`view` or `leave`), packed in one
/// word: `ts` shifted left, and the low bit set for a `leave`. So a later
/// event is a larger value, and at equal `ts` a `leave` is larger than a
/// `view`: the event that wins is the larger one. (`ts` is clamped to 62
/// bits, ±73 million years around the epoch; ingest accepts 0 to year 9999.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Viewer(i64);

impl Viewer {
    fn new(ts: EventTime, present: bool) -> Viewer {
        let ts = ts.clamp(EventTime::MIN >> 1, EventTime::MAX >> 1);
        Viewer((ts << 1) | i64::from(!present))
    }

    /// `ts` of the latest presence event.
    fn ts(self) -> EventTime {
        self.0 >> 1
    }

    /// The latest presence event is a `view`: the viewer is in the room.
    fn present(self) -> bool {
        self.0 & 1 == 0
    }

    /// Whether `self`, a viewer's presence event, wins over `before`, their
    /// latest so far (`None` for a new viewer): the later `ts` wins, and at
    /// equal `ts` a `leave`. If it does, `present` (the count of viewers
    /// present) moves to match.
    fn supersedes(self, before: Option<Viewer>, present: &mut u64) -> bool {
        if before.is_some_and(|v| self <= v) {
            return false;
        }
        match (before.is_some_and(Viewer::present), self.present()) {
            (false, true) => *present += 1,
            (true, false) => *present -= 1,
            _ => {}
        }
        true
    }
}

/// Plays one pending presence event forward onto `overlay` (each viewer's
/// presence as played so far; `below` gives it for a viewer not in it yet),
/// moving `concurrent` as [`Viewers::presence`] and [`StreamState::settle`]
/// would. Whether it changed the viewer's presence (the peak is then taken).
fn play(
    event: &PendingEvent,
    overlay: &mut CompactMap<Viewer>,
    below: impl Fn(u64) -> Option<Viewer>,
    concurrent: &mut u64,
) -> bool {
    let before = overlay
        .get(event.viewer)
        .copied()
        .or_else(|| below(event.viewer));
    let now = Viewer::new(event.ts, event.view());
    if !now.supersedes(before, concurrent) {
        return false;
    }
    *overlay.get_or_insert_with(event.viewer, || now).0 = now;
    true
}

/// How a late presence event moved the windows' peaks: up (to at most the
/// highest among them), or down in at least one.
enum Moved {
    Up(u64),
    Down,
}

/// Pending presence events before a busy stream keeps a [`Projection`].
const PROJECT_FROM: usize = 64;

/// How far behind a stream's newest pending presence event its
/// [`Projection`] stays, ms: events arriving out of order by less than this
/// leave it as it is; one older than the events it played starts it again.
const PROJECTION_LAG_MS: i64 = 500;

/// The settled presence played forward through a busy stream's oldest
/// pending events, up to and including `through`: what
/// [`StreamState::play_pending`] would compute for them, kept so that each
/// publication plays only the newer events instead of seconds of them.
///
/// Its count and overlay stay true as events settle (they are played in the
/// same order from the same state); `peak` and `crossed` keep what the
/// events it played from `since` on reached, those settled since included,
/// so a window lifts them only if it starts at or before `since`. It is
/// dropped when an event is inserted before `through` and when one after
/// `through` settles, so a late event, settled at once, always drops it.
/// Not in checkpoints: a restored stream builds it again.
#[derive(Clone, Debug)]
struct Projection {
    /// Presence of each viewer the played events touched.
    overlay: CompactMap<Viewer>,
    /// When the first event it played happened: its peaks cover the
    /// instants from then on, those of events settled since included.
    since: EventTime,
    /// The last event played.
    through: PendingEvent,
    /// Concurrent viewers after it.
    concurrent: u64,
    /// Highest count after any event it played that changed a presence
    /// (the settled peak aside); `None` if none did.
    peak: Option<u64>,
    /// The window start its events crossed, for the windows on either side.
    crossed: Crossed,
}

impl Projection {
    /// Once every event before the window start it crossed has settled,
    /// it covers that window only: it can cross the next one.
    fn settle_crossing(&mut self, oldest_pending: EventTime) {
        if let Crossed::One {
            start, peak_from, ..
        } = self.crossed
        {
            if start <= oldest_pending {
                self.since = start;
                self.peak = peak_from;
                self.crossed = Crossed::None;
            }
        }
    }
}

/// The window start a [`Projection`]'s events crossed, if one: where the
/// window before it ends and the one after it starts.
#[derive(Clone, Copy, Debug)]
enum Crossed {
    /// All its events are in one window, that of the settled presence.
    None,
    /// They crossed into the window starting at `start`.
    One {
        start: EventTime,
        /// Concurrent viewers just before `start`.
        concurrent: u64,
        /// Highest count after an event it played before `start`.
        peak_before: Option<u64>,
        /// Highest count after an event it played from `start` on.
        peak_from: Option<u64>,
    },
    /// More than one: windows across them play the events themselves.
    Many,
}

/// The settled presence played through every pending event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Played {
    /// Concurrent viewers after them all.
    concurrent: u64,
    /// Highest count from the settled one on, after each of them.
    peak: u64,
}

impl Played {
    /// Concurrent viewers now and the highest count ever, given the highest
    /// before the pending events (`settled`).
    fn cumulative(self, settled: u64) -> (u64, u64) {
        (self.concurrent, self.peak.max(settled))
    }
}

/// Presence events waiting for the watermark, in event-time order; at equal
/// times every `leave` comes before every `view`. Events at one instant
/// happen together, so the count after all of them is the one that was ever
/// seen: a viewer leaving as another arrives is a handover, not a moment
/// with both in the room. (For one viewer, a `leave` beats a `view` at the
/// same time whatever the order: see [`Viewers::presence`].)
#[derive(Clone, Debug, Default)]
struct PendingPresence {
    /// Sorted by (ts, view?, arrival number), a total order. Events mostly
    /// arrive in time order, so most are pushed at the back and all leave
    /// from the front.
    events: VecDeque<PendingEvent>,
    arrivals: u64,
    /// A busy stream's oldest events played forward.
    projection: Option<Box<Projection>>,
}

/// One presence event waiting for the watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PendingEvent {
    ts: EventTime,
    /// The arrival number, with the top bit set for a `view`: leaves sort
    /// first at equal `ts`, then arrival order.
    order: u64,
    viewer: u64,
}

/// The top bit of [`PendingEvent::order`]: a `view`.
const VIEW_BIT: u64 = 1 << 63;

impl PendingEvent {
    fn new(ts: EventTime, view: bool, arrival: u64, viewer: u64) -> PendingEvent {
        PendingEvent {
            ts,
            order: (u64::from(view) << 63) | (arrival & !VIEW_BIT),
            viewer,
        }
    }

    fn view(&self) -> bool {
        self.order & VIEW_BIT != 0
    }

    fn arrival(&self) -> u64 {
        self.order & !VIEW_BIT
    }
}

/// Serialized size of a pending presence event: ts, leave flag, arrival, viewer.
const PENDING_RECORD: usize = 8 + 1 + 8 + 8;

impl PendingPresence {
    fn push(&mut self, ts: EventTime, viewer: u64, is_view: bool) {
        self.arrivals += 1;
        self.insert(PendingEvent::new(ts, is_view, self.arrivals, viewer));
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn insert(&mut self, event: PendingEvent) {
        if self.projection.as_ref().is_some_and(|p| event < p.through) {
            self.projection = None;
        }
        let at = match self.events.back() {
            Some(last) if *last > event => self.events.partition_point(|e| *e < event),
            _ => self.events.len(),
        };
        self.events.insert(at, event);
    }

    /// The oldest event, if it is at or before `watermark`.
    fn pop_through(&mut self, watermark: EventTime) -> Option<(EventTime, u64, bool)> {
        let first = self.events.front()?;
        if first.ts > watermark {
            return None;
        }
        let first = self.events.pop_front()?;
        if self.projection.as_ref().is_some_and(|p| first > p.through) {
            self.projection = None;
        }
        Some((first.ts, first.viewer, first.view()))
    }

    /// Where the events after `event` start.
    fn after(&self, event: PendingEvent) -> usize {
        self.events.partition_point(|e| *e <= event)
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<PendingEvent>()
            + self.projection.as_deref().map_or(0, |p| {
                std::mem::size_of::<Projection>() + p.overlay.heap_bytes()
            })
    }
}

impl Serialize for PendingPresence {
    /// A flat blob of fixed records.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.events.len() * PENDING_RECORD);
        for e in &self.events {
            bytes.extend_from_slice(&e.ts.to_le_bytes());
            bytes.push(u8::from(!e.view()));
            bytes.extend_from_slice(&e.arrival().to_le_bytes());
            bytes.extend_from_slice(&e.viewer.to_le_bytes());
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for PendingPresence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bytes = deserialize_blob(deserializer)?;
        let records = fixed_records::<PENDING_RECORD, D::Error>(&bytes)?;
        let mut pending = PendingPresence::default();
        for record in records {
            let word = |at: usize| -> Result<[u8; 8], D::Error> {
                record[at..at + 8].try_into().map_err(D::Error::custom)
            };
            let ts = EventTime::from_le_bytes(word(0)?);
            let leave = match record[8] {
                0 => false,
                1 => true,
                other => {
                    return Err(D::Error::custom(format_args!(
                        "bad presence flag {other:#04x}"
                    )))
                }
            };
            let arrival = u64::from_le_bytes(word(9)?);
            let viewer = u64::from_le_bytes(word(17)?);
            pending.arrivals = pending.arrivals.max(arrival);
            pending.insert(PendingEvent::new(ts, !leave, arrival, viewer));
        }
        Ok(pending)
    }
}

/// Serialized size of a viewer: hash, ts, present.
const VIEWER_RECORD: usize = 8 + 8 + 1;

/// Latest presence per viewer (by hash), for concurrent viewers.
#[derive(Clone, Debug)]
struct Viewers {
    by_hash: CompactMap<Viewer>,
    /// Viewers present.
    concurrent: u64,
    /// Where it stands in the changelog, once written (`presence.rs`).
    log: PieceLog<u64>,
}

impl Default for Viewers {
    fn default() -> Self {
        Viewers {
            by_hash: CompactMap::default(),
            concurrent: 0,
            log: PieceLog::new(),
        }
    }
}

impl Viewers {
    /// Records a `view` or `leave` at `ts`. The later `ts` wins; at equal `ts`
    /// a `leave` beats a `view`, so the result does not depend on arrival order.
    /// The viewer's latest presence before it, if kept.
    fn presence(&mut self, viewer: u64, ts: EventTime, is_view: bool) -> Option<Viewer> {
        let latest = Viewer::new(ts, is_view);
        let (v, inserted) = self.by_hash.get_or_insert_with(viewer, || latest);
        let previous = (!inserted).then_some(*v);
        if latest.supersedes(previous, &mut self.concurrent) {
            *v = latest;
            self.log.note(viewer);
        }
        previous
    }

    /// Forgets viewers who left before `cutoff`, the earliest instant an
    /// event can still land in a window: an event before that is past
    /// window retention.
    fn expire_absent(&mut self, cutoff: EventTime) {
        if self.by_hash.len() > self.concurrent as usize {
            let log = &mut self.log;
            self.by_hash.retain(|hash, v| {
                let keep = v.present() || v.ts() >= cutoff;
                if !keep {
                    log.note(hash);
                }
                keep
            });
        }
    }

    fn heap_bytes(&self) -> usize {
        self.by_hash.heap_bytes() + self.log.heap_bytes()
    }
}

impl Serialize for Viewers {
    /// A flat blob of fixed records; the concurrent count is derived on restore.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.records())
    }
}

impl<'de> Deserialize<'de> for Viewers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bytes = deserialize_blob(deserializer)?;
        let records = fixed_records::<VIEWER_RECORD, D::Error>(&bytes)?;
        let mut viewers = Viewers::default();
        for record in records {
            let (hash, ts, flag) = read_record(&record);
            let present = match flag {
                0 => false,
                1 => true,
                other => {
                    return Err(D::Error::custom(format_args!(
                        "bad presence flag {other:#04x}"
                    )))
                }
            };
            if viewers.by_hash.insert_new(hash, Viewer::new(ts, present)) {
                viewers.concurrent += u64::from(present);
            }
        }
        Ok(viewers)
    }
}

/// Everything needed to rebuild one stream's state exactly, after a restart
/// or a rebalance: written to the changelog topic at each publication.
///
/// Opaque on purpose: its layout may change (with the format byte of
/// [`StreamCheckpoint::to_bytes`]), its meaning may not.
#[derive(Clone)]
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
    /// A changelog head whose duplicate filter or presence is in pieces,
    /// read without them ([`StreamCheckpoint::from_changelog`] joins them).
    #[error("checkpoint needs its changelog pieces")]
    NeedsPieces,
    /// Its duplicate-filter pieces do not join.
    #[error("corrupt checkpoint: {0}")]
    Pieces(#[from] PieceError),
    /// Its presence pieces do not join.
    #[error("corrupt checkpoint: {0}")]
    Presence(#[from] PresenceError),
    /// Its history pieces do not join.
    #[error("corrupt checkpoint: {0}")]
    History(#[from] HistoryError),
    /// Its windows piece does not join.
    #[error("corrupt checkpoint: {0}")]
    Windows(#[from] WindowsError),
}

impl StreamCheckpoint {
    /// Appends the changelog records of `state`, written straight from the
    /// live state without copying it: the new pieces of its duplicate
    /// filter, presence, history and windows, its head, then tombstones for
    /// the pieces it forgot (`retired`, which writing pieces may add to), as
    /// [`Self::write_tombstones`] does: it returns those the `budget` left
    /// for a later checkpoint.
    pub(crate) fn write_changelog(
        stream_id: &str,
        state: &mut StreamState,
        mut retired: Forgotten,
        budget: &mut usize,
        records: &mut Vec<Record>,
    ) -> Forgotten {
        state.seen.write_pieces(stream_id, records);
        if let Some(live) = state.live.as_deref_mut() {
            live.viewers.write_pieces(stream_id, records, &mut retired);
            live.history.write_pieces(stream_id, records, &mut retired);
            live.base
                .write(&mut live.windows, stream_id, records, &mut retired);
        }
        records.push(Record {
            key: stream_id.as_bytes().to_vec(),
            value: layout::write_head(state, vec![layout::FORMAT_HEAD]),
        });
        Self::write_tombstones(stream_id, state, retired, budget, records)
    }

    /// Appends tombstones for the pieces of `retired` that `state` no longer
    /// counts, after a head that no longer does. A generation or epoch that
    /// is live again (a late event in a forgotten generation, viewers after
    /// a release) keeps the pieces it wrote since. Each entry takes its
    /// tombstones from `budget` while any is left (so a batch holds at most
    /// one entry more); the entries left over are returned, for a later
    /// checkpoint: until then they are stray pieces no head counts, which a
    /// restore leaves aside.
    pub(crate) fn write_tombstones(
        stream_id: &str,
        state: &StreamState,
        retired: Forgotten,
        budget: &mut usize,
        records: &mut Vec<Record>,
    ) -> Forgotten {
        let mut later = Forgotten::new();
        for (kind, number, pieces) in retired {
            if *budget == 0 {
                later.push((kind, number, pieces));
                continue;
            }
            let kept = match kind {
                PieceKind::Seen => state.seen.pieces_of(number),
                PieceKind::Presence => state.live().viewers.log.pieces_of(number),
                PieceKind::History => state.live().history.log.pieces_of(number),
                PieceKind::Windows => state.live().base.pieces_of(number),
            };
            for piece in kept..pieces {
                records.push(Record {
                    key: piece_key(stream_id, kind, number, piece),
                    value: Vec::new(),
                });
            }
            *budget = budget.saturating_sub(pieces.saturating_sub(kept) as usize);
        }
        later
    }

    /// Freezes a stream's state, dropping what only matters in memory.
    pub(crate) fn from_state(mut state: StreamState) -> StreamCheckpoint {
        state.dirty = false;
        state.unsaved = false;
        state.restored_through = None;
        StreamCheckpoint { state }
    }

    /// The state to resume from; events at or below its `applied_through`
    /// will be skipped as already applied.
    pub(crate) fn into_state(self) -> StreamState {
        let mut state = self.state;
        state.dirty = false;
        state.unsaved = false;
        state.saved_once = true;
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

    /// A self-contained encoding, duplicate filter included: a format byte,
    /// then postcard. (The changelog writes heads and pieces instead; see
    /// [`crate::changelog`].)
    pub fn to_bytes(&self) -> Vec<u8> {
        // The in-memory-only fields (`dirty`, `unsaved`, `restored_through`)
        // are not serialized.
        layout::write(&self.state, vec![layout::FORMAT])
    }

    /// Decodes [`StreamCheckpoint::to_bytes`], or a changelog head that
    /// counts no pieces; refuses other formats, bad bytes and trailing bytes
    /// rather than restore a wrong state.
    pub fn from_bytes(bytes: &[u8]) -> Result<StreamCheckpoint, CheckpointError> {
        let state = StreamCheckpoint::decode(bytes)?;
        let live = state.live();
        if state.seen.has_pieces()
            || live.viewers.log.has_pieces()
            || live.history.log.has_pieces()
            || live.base.is_held()
        {
            return Err(CheckpointError::NeedsPieces);
        }
        Ok(StreamCheckpoint::from_state(state))
    }

    /// Decodes a changelog head, joining the pieces of its duplicate filter
    /// and presence: `piece(kind, number, n)` gives piece `n` of that
    /// generation or epoch. Also reads what [`StreamCheckpoint::to_bytes`]
    /// writes.
    pub fn from_changelog<'p>(
        head: &[u8],
        mut piece: impl FnMut(PieceKind, i64, u32) -> Option<&'p [u8]>,
    ) -> Result<StreamCheckpoint, CheckpointError> {
        let mut state = StreamCheckpoint::decode(head)?;
        state
            .seen
            .join(|number, n| piece(PieceKind::Seen, number, n))?;
        if let Some(live) = state.live.as_deref_mut() {
            live.viewers
                .join(|epoch, n| piece(PieceKind::Presence, epoch, n))?;
            live.history
                .join(|epoch, n| piece(PieceKind::History, epoch, n))?;
            live.base.join(&mut live.windows, |epoch| {
                piece(PieceKind::Windows, epoch, 0)
            })?;
        }
        Ok(StreamCheckpoint::from_state(state))
    }

    fn decode(bytes: &[u8]) -> Result<StreamState, CheckpointError> {
        let (&format, body) = bytes.split_first().ok_or(CheckpointError::Empty)?;
        let (state, rest) =
            layout::read(format, body).ok_or(CheckpointError::UnsupportedFormat(format))??;
        if !rest.is_empty() {
            return Err(CheckpointError::TrailingBytes(rest.len()));
        }
        Ok(state)
    }
}

impl fmt::Debug for StreamCheckpoint {
    /// A summary: the sets can hold millions of hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCheckpoint")
            .field("revision", &self.state.revision)
            .field("applied_through", &self.state.applied_through)
            .field("events", &self.state.seen.len())
            .field("windows", &self.state.live().windows.len())
            .field("viewers", &self.state.live().viewers.by_hash.len())
            .field("products", &self.state.products.len())
            .finish_non_exhaustive()
    }
}
