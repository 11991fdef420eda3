//! The checkpoint layout of a [`StreamState`]: what [`super::StreamCheckpoint`]
//! writes after its format byte, and the layouts it still reads.
//!
//! The fields are those of the state that outlive a restart, in a fixed
//! order (postcard has no field names). Format 4 writes each window's
//! figures as the byte string a sealed window holds, so a sealed window is
//! written as it is and restored without decoding it into figures (its
//! bytes are checked). Format 3, written before windows were sealed, held
//! the figures themselves; it is still read, so that an upgrade restores
//! the state an older version wrote. Format 6, the changelog's head, is
//! format 4 with the duplicate filter's ids and the viewers' presence left
//! to pieces (`seen.rs`, `presence.rs`); format 5 left only the ids.
//! Formats 7 and 8 are formats 4 and 6 followed by how far settled presence
//! has reached the windows ([`Live::reached`]). A state read from an older
//! format takes its newest window's start as reached: the windows before it
//! keep the presence figures an older version computed, as it published them.
//! Formats 9 and 10 are formats 7 and 8 followed by when each window was at
//! its peak ([`PeakSpan`]); windows read from older formats do not know it.
//! Formats 11 and 12 are formats 9 and 10 followed by the presence history
//! (`history.rs`): from when it is kept, the highest count before that, and
//! its events (inline in 11, as (epoch, pieces) in 12). A state read from an
//! older format keeps its history from just after where presence reached:
//! its windows until then move with a late presence event as
//! [`super::Live::late_presence`] says. Format 13, the changelog's head
//! now, is format 12 holding only the windows not in the stream's windows
//! piece (`window_base.rs`), followed, if it has one, by that piece's
//! epoch and the oldest window retained; the piece holds the windows as
//! format 11 does, then when each was at its peak. Formats 14 and 15, written
//! now, are formats 11 and 13 followed by the seed the stream hashes its ids
//! with (`ids.rs`); a state read from an older format hashes unseeded (seed
//! 0), as the version that wrote it did.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    seal, Figures, History, Live, PeakSpan, PendingPresence, Products, SeenEvents, StreamState,
    Viewers, WindowBase, WindowFigures, WindowState,
};
use crate::event::{Currency, EventTime};
use crate::ids::deserialize_blob;

/// The self-contained layout: format 11, then the ids' seed.
pub(super) const FORMAT: u8 = 14;
/// The changelog's head: format 13, then the ids' seed.
pub(super) const FORMAT_HEAD: u8 = 15;
/// The duplicate filter's ids inline, then where presence reached the
/// windows, then when each was at its peak, then the presence history, its
/// events inline; ids unseeded: read, never written.
pub(super) const FORMAT_UNSEEDED: u8 = 11;
/// Format 11 with the duplicate filter as a list of (generation, pieces),
/// presence as (epoch, pieces) and the history's events as (epoch, pieces),
/// their records in pieces of their own; only the windows its windows piece
/// does not hold, then, if it has one, that piece's epoch and the oldest
/// window retained; ids unseeded: read, never written.
pub(super) const FORMAT_HEAD_UNSEEDED: u8 = 13;
/// Format 13 with every window in the head: read, never written.
pub(super) const FORMAT_HEAD_WINDOWED: u8 = 12;
/// Format 11 without the presence history: read, never written.
pub(super) const FORMAT_HISTORYLESS: u8 = 9;
/// Format 12 without the presence history: read, never written.
pub(super) const FORMAT_HEAD_HISTORYLESS: u8 = 10;
/// Format 9 without when windows were at their peak: read, never written.
pub(super) const FORMAT_SPANLESS: u8 = 7;
/// Format 10 without when windows were at their peak: read, never written.
pub(super) const FORMAT_HEAD_SPANLESS: u8 = 8;
/// Format 7 without where presence reached the windows: read, never written.
pub(super) const FORMAT_UNREACHED: u8 = 4;
/// Format 8 without where presence reached the windows: read, never written.
pub(super) const FORMAT_HEAD_UNREACHED: u8 = 6;
/// Format 6 with presence inline: read, never written.
pub(super) const FORMAT_SEEN_PIECES: u8 = 5;
/// The layout before windows were sealed: read, never written.
pub(super) const FORMAT_UNSEALED: u8 = 3;

/// The state as written: borrowed, in the order of the fields of [`Stored`];
/// the duplicate filter as `S`, presence as `V`.
#[derive(Serialize)]
struct StoredRef<'a, S, V> {
    totals: &'a Figures,
    currency: Option<Currency>,
    seller_id: Option<&'a str>,
    revision: u64,
    applied_through: Option<u64>,
    viewers: V,
    pending: &'a PendingPresence,
    settled_peak: u64,
    seen: S,
    products: &'a Products,
    windows: WindowsRef<'a>,
    finalized: bool,
}

/// The retained windows as written: start, revision, figures as bytes;
/// those the windows piece does not hold, or all of them.
#[derive(Clone, Copy)]
struct WindowsRef<'a> {
    windows: &'a VecDeque<(EventTime, WindowState)>,
    unstored_only: bool,
}

impl<'a> WindowsRef<'a> {
    fn all(windows: &'a VecDeque<(EventTime, WindowState)>) -> WindowsRef<'a> {
        WindowsRef {
            windows,
            unstored_only: false,
        }
    }

    /// The head's: those the windows piece does not hold.
    fn unstored(windows: &'a VecDeque<(EventTime, WindowState)>) -> WindowsRef<'a> {
        WindowsRef {
            windows,
            unstored_only: true,
        }
    }

    fn iter(self) -> impl Iterator<Item = &'a (EventTime, WindowState)> + 'a {
        let unstored_only = self.unstored_only;
        self.windows
            .iter()
            .filter(move |(_, w)| !(unstored_only && w.stored))
    }

    fn len(self) -> usize {
        if self.unstored_only {
            self.iter().count()
        } else {
            self.windows.len()
        }
    }
}

impl Serialize for WindowsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for (start, window) in self.iter() {
            let open;
            let figures: &[u8] = match &window.figures {
                WindowFigures::Sealed(bytes) => bytes,
                WindowFigures::Open(figures) => {
                    open = seal(figures);
                    &open
                }
            };
            seq.serialize_element(&(*start, window.revision, Blob(figures)))?;
        }
        seq.end()
    }
}

/// A byte string, as serde's bytes type.
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Writes `state` in the self-contained layout after `prefix`.
pub(super) fn write(state: &StreamState, prefix: Vec<u8>) -> Vec<u8> {
    let live = state.live();
    let history = live.history.records();
    let parts = (&state.seen, &live.viewers, Blob(&history));
    let windows = WindowsRef::all(&live.windows);
    write_with(state, parts, windows, state.id_seed, prefix)
}

/// Writes `state` as a changelog head after `prefix`.
pub(super) fn write_head(state: &StreamState, prefix: Vec<u8>) -> Vec<u8> {
    let live = state.live();
    let viewers = live.viewers.log.position();
    let history = live.history.log.position();
    let windows = WindowsRef::unstored(&live.windows);
    let base = live.base.position(&live.windows);
    let parts = (state.seen.pieces(), viewers, history);
    write_with(state, parts, windows, (base, state.id_seed), prefix)
}

/// Writes the state with its duplicate filter, presence and history's
/// events as `parts` give them, the windows `windows` picks, and `tail`.
fn write_with<S: Serialize, V: Serialize, H: Serialize, T: Serialize>(
    state: &StreamState,
    (seen, viewers, history): (S, V, H),
    windows: WindowsRef<'_>,
    tail: T,
    prefix: Vec<u8>,
) -> Vec<u8> {
    let live = state.live();
    let stored = StoredRef {
        totals: &state.totals,
        currency: state.currency,
        seller_id: state.seller_id.as_deref(),
        revision: state.revision,
        applied_through: state.applied_through,
        viewers,
        pending: &live.pending,
        settled_peak: state.settled_peak,
        seen,
        products: &state.products,
        windows,
        finalized: state.finalized,
    };
    // Serializing into a Vec fails only for sequences of unknown length,
    // which no field of the state produces. A tuple is its fields in turn.
    let history = (live.history.from, state.peak_before, history);
    postcard::to_extend(
        &(stored, reached(live), SpansRef(windows), history, tail),
        prefix,
    )
    .expect("checkpoint state always serializes")
}

/// A stream's windows piece: every retained window as the self-contained
/// layout writes them, then when each was at its peak.
pub(super) fn write_windows(windows: &VecDeque<(EventTime, WindowState)>) -> Vec<u8> {
    let windows = WindowsRef::all(windows);
    postcard::to_stdvec(&(windows, SpansRef(windows))).expect("windows always serialize")
}

/// Reads a windows piece; `None` unless it is exactly windows by start,
/// each with when it was at its peak.
pub(super) fn read_windows(bytes: &[u8]) -> Option<VecDeque<(EventTime, WindowState)>> {
    type Piece = (Vec<SealedWindow>, Vec<(i64, i64)>);
    let ((windows, spans), rest) = postcard::take_from_bytes::<Piece>(bytes).ok()?;
    if !rest.is_empty() || windows.len() != spans.len() {
        return None;
    }
    let mut windows: VecDeque<_> = windows.into_iter().map(IntoWindow::into_window).collect();
    if !windows
        .iter()
        .zip(windows.iter().skip(1))
        .all(|(a, b)| a.0 < b.0)
    {
        return None;
    }
    set_spans(&mut windows, spans);
    Some(windows)
}

/// Sets each window's [`PeakSpan`] from `spans`, as [`SpansRef`] wrote them.
fn set_spans(windows: &mut VecDeque<(EventTime, WindowState)>, spans: Vec<(i64, i64)>) {
    for ((start, window), (from, until)) in windows.iter_mut().zip(spans) {
        window.peak_span = PeakSpan {
            from: span_instant(*start, from),
            until: span_instant(*start, until),
        };
    }
}

/// When each window written was at its peak, in the windows' order: two
/// offsets from the window's start each (see [`span_offset`]).
#[derive(Clone, Copy)]
struct SpansRef<'a>(WindowsRef<'a>);

impl Serialize for SpansRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (start, window) in self.0.iter() {
            let PeakSpan { from, until } = window.peak_span;
            seq.serialize_element(&(span_offset(*start, from), span_offset(*start, until)))?;
        }
        seq.end()
    }
}

/// An instant of a window's peak span as written: its offset from the
/// window's start, a few bytes, with `EventTime::MIN` and `MAX` as -2 and -3.
/// (No instant of a window is more than one before its start.)
fn span_offset(start: EventTime, at: EventTime) -> i64 {
    match at {
        EventTime::MIN => -2,
        EventTime::MAX => -3,
        at => at.saturating_sub(start).max(-1),
    }
}

/// The instant [`span_offset`] wrote.
fn span_instant(start: EventTime, offset: i64) -> EventTime {
    match offset {
        -2 => EventTime::MIN,
        -3 => EventTime::MAX,
        offset => start.saturating_add(offset),
    }
}

/// Reads a state written in layout `format` from the front of `bytes`;
/// returns it with the bytes left over. `None` for a layout it does not know.
pub(super) fn read(
    format: u8,
    bytes: &[u8],
) -> Option<Result<(StreamState, &[u8]), postcard::Error>> {
    type Head = Stored<SealedWindow, Vec<(i64, u32)>, (i64, u32)>;
    type Whole = Stored<SealedWindow, SeenEvents, Viewers>;
    Some(match format {
        FORMAT_HEAD => with_window_base(bytes).and_then(with_seed),
        FORMAT => with_history::<Whole, HistoryBlob>(bytes)
            .map(released)
            .and_then(with_seed),
        FORMAT_HEAD_UNSEEDED => with_window_base(bytes),
        FORMAT_HEAD_WINDOWED => with_history::<Head, (i64, u32)>(bytes).map(released),
        FORMAT_UNSEEDED => with_history::<Whole, HistoryBlob>(bytes).map(released),
        FORMAT_HEAD_HISTORYLESS => with_spans::<Head>(bytes),
        FORMAT_HISTORYLESS => with_spans::<Whole>(bytes),
        FORMAT_HEAD_SPANLESS => with_reached::<Head>(bytes),
        FORMAT_SPANLESS => with_reached::<Whole>(bytes),
        FORMAT_HEAD_UNREACHED => unreached::<Head>(bytes),
        FORMAT_SEEN_PIECES => unreached::<Stored<SealedWindow, Vec<(i64, u32)>, Viewers>>(bytes),
        FORMAT_UNREACHED => unreached::<Whole>(bytes),
        FORMAT_UNSEALED => unreached::<Stored<UnsealedWindow, SeenEvents, Viewers>>(bytes),
        _ => return None,
    })
}

/// A state followed by the seed its ids hash with.
fn with_seed(
    (mut state, rest): (StreamState, &[u8]),
) -> Result<(StreamState, &[u8]), postcard::Error> {
    let (seed, rest) = postcard::take_from_bytes::<u64>(rest)?;
    state.id_seed = seed;
    Ok((state, rest))
}

/// Where presence reached the windows, as written: `None` before it reached
/// any (one byte, where `EventTime::MIN` would take ten).
fn reached(live: &Live) -> Option<EventTime> {
    (live.reached > EventTime::MIN).then_some(live.reached)
}

/// A state followed by where presence reached its windows, when each was
/// at its peak, and its presence history (events as `H`).
fn with_history<
    'a,
    T: for<'de> Deserialize<'de> + IntoState,
    H: for<'de> Deserialize<'de> + IntoHistory,
>(
    bytes: &'a [u8],
) -> Result<(StreamState, &'a [u8]), postcard::Error> {
    let (mut state, rest) = with_spans::<T>(bytes)?;
    let ((from, peak_before, events), rest) =
        postcard::take_from_bytes::<(EventTime, u64, H)>(rest)?;
    let history = events
        .into_history(from)
        .ok_or(postcard::Error::DeserializeBadEncoding)?;
    state.peak_before = peak_before;
    state.live.get_or_insert_default().history = history;
    Ok((state, rest))
}

/// A head in format 13: format 12's, then its windows piece's epoch and
/// the oldest window retained, if it has one.
fn with_window_base(bytes: &[u8]) -> Result<(StreamState, &[u8]), postcard::Error> {
    type Head = Stored<SealedWindow, Vec<(i64, u32)>, (i64, u32)>;
    let (mut state, rest) = with_history::<Head, (i64, u32)>(bytes)?;
    let (position, rest) = postcard::take_from_bytes::<Option<(i64, EventTime)>>(rest)?;
    state.live.get_or_insert_default().base = WindowBase::from_position(position);
    Ok(released((state, rest)))
}

/// The state without live parts if they are empty and count no pieces.
fn released((mut state, rest): (StreamState, &[u8])) -> (StreamState, &[u8]) {
    if let Some(live) = state.live.as_deref() {
        if live.is_empty() && !live.history.log.has_pieces() && !live.base.is_held() {
            state.live = None;
        }
    }
    (state, rest)
}

/// A history's events as a checkpoint holds them.
trait IntoHistory {
    /// The history kept from `from` on; `None` for malformed events.
    fn into_history(self, from: EventTime) -> Option<History>;
}

/// A self-contained checkpoint's events, inline.
struct HistoryBlob(Vec<u8>);

impl<'de> Deserialize<'de> for HistoryBlob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_blob(deserializer).map(|bytes| HistoryBlob(bytes.into_owned()))
    }
}

impl IntoHistory for HistoryBlob {
    fn into_history(self, from: EventTime) -> Option<History> {
        History::from_records(from, &self.0)
    }
}

/// A head's (epoch, pieces): the events are joined later.
impl IntoHistory for (i64, u32) {
    fn into_history(self, from: EventTime) -> Option<History> {
        Some(History::from_log_position(from, self))
    }
}

/// A state followed by where presence reached its windows and when each
/// was at its peak.
fn with_spans<'a, T: for<'de> Deserialize<'de> + IntoState>(
    bytes: &'a [u8],
) -> Result<(StreamState, &'a [u8]), postcard::Error> {
    type Spans = Vec<(i64, i64)>;
    let ((stored, reached, spans), rest) =
        postcard::take_from_bytes::<(T, Option<EventTime>, Spans)>(bytes)?;
    let mut state = stored.into_state(Some(reached.unwrap_or(EventTime::MIN)));
    let windows = state.live.as_deref_mut().map(|live| &mut live.windows);
    if spans.len() != windows.as_ref().map_or(0, |w| w.len()) {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    if let Some(windows) = windows {
        set_spans(windows, spans);
    }
    Ok((state, rest))
}

/// A state followed by where presence reached its windows.
fn with_reached<'a, T: for<'de> Deserialize<'de> + IntoState>(
    bytes: &'a [u8],
) -> Result<(StreamState, &'a [u8]), postcard::Error> {
    postcard::take_from_bytes::<(T, Option<EventTime>)>(bytes).map(|((stored, reached), rest)| {
        let reached = reached.unwrap_or(EventTime::MIN);
        (stored.into_state(Some(reached)), rest)
    })
}

/// A state written before presence reached windows.
fn unreached<'a, T: for<'de> Deserialize<'de> + IntoState>(
    bytes: &'a [u8],
) -> Result<(StreamState, &'a [u8]), postcard::Error> {
    postcard::take_from_bytes::<T>(bytes).map(|(stored, rest)| (stored.into_state(None), rest))
}

/// A state as read, made into the state kept.
trait IntoState {
    /// `reached`: where presence reached the windows, if written.
    fn into_state(self, reached: Option<EventTime>) -> StreamState;
}

/// The state as read, its windows in layout `W`, its duplicate filter as
/// `S`, presence as `V`.
#[derive(Deserialize)]
struct Stored<W, S, V> {
    totals: Figures,
    currency: Option<Currency>,
    seller_id: Option<Box<str>>,
    revision: u64,
    applied_through: Option<u64>,
    viewers: V,
    pending: PendingPresence,
    settled_peak: u64,
    seen: S,
    products: Products,
    windows: VecDeque<W>,
    finalized: bool,
}

/// A window in format 4: start, revision, the sealed figures.
#[derive(Deserialize)]
struct SealedWindow(
    EventTime,
    u64,
    #[serde(deserialize_with = "sealed")] Box<[u8]>,
);

/// A window in format 3: start, then the figures and the revision.
#[derive(Deserialize)]
struct UnsealedWindow(EventTime, UnsealedWindowState);

#[derive(Deserialize)]
struct UnsealedWindowState {
    figures: Figures,
    revision: u64,
}

/// A window as the state keeps it.
trait IntoWindow {
    fn into_window(self) -> (EventTime, WindowState);
}

impl IntoWindow for SealedWindow {
    fn into_window(self) -> (EventTime, WindowState) {
        let SealedWindow(start, revision, bytes) = self;
        let window = WindowState {
            figures: WindowFigures::Sealed(bytes),
            peak_span: PeakSpan::UNKNOWN,
            revision,
            dirty: false,
            stored: false,
        };
        (start, window)
    }
}

impl IntoWindow for UnsealedWindow {
    fn into_window(self) -> (EventTime, WindowState) {
        let UnsealedWindow(start, UnsealedWindowState { figures, revision }) = self;
        let window = WindowState {
            figures: WindowFigures::Open(Box::new(figures)),
            peak_span: PeakSpan::UNKNOWN,
            revision,
            dirty: false,
            stored: false,
        };
        (start, window)
    }
}

/// A duplicate filter as the state keeps it.
trait IntoSeen {
    fn into_seen(self) -> SeenEvents;
}

impl IntoSeen for SeenEvents {
    fn into_seen(self) -> SeenEvents {
        self
    }
}

/// A head's (generation, pieces) list: the ids are joined later.
impl IntoSeen for Vec<(i64, u32)> {
    fn into_seen(self) -> SeenEvents {
        SeenEvents::from_counts(self)
    }
}

/// Presence as the state keeps it.
trait IntoViewers {
    fn into_viewers(self) -> Viewers;
}

impl IntoViewers for Viewers {
    fn into_viewers(self) -> Viewers {
        self
    }
}

/// A head's (epoch, pieces): the records are joined later.
impl IntoViewers for (i64, u32) {
    fn into_viewers(self) -> Viewers {
        Viewers::from_log_position(self)
    }
}

impl<W: IntoWindow, S: IntoSeen, V: IntoViewers> IntoState for Stored<W, S, V> {
    fn into_state(self, reached: Option<EventTime>) -> StreamState {
        let windows: VecDeque<_> = self.windows.into_iter().map(W::into_window).collect();
        // Before formats 7 and 8: the windows before the newest keep their
        // figures, and the newest is played forward from its own.
        let newest = windows.back().map(|(start, _)| *start);
        let reached = reached.or(newest).unwrap_or(EventTime::MIN);
        // Before formats 11 and 12: no settled presence event is known, so
        // the history starts after them (formats 11 and 12 replace it).
        let kept_from = if reached == EventTime::MIN {
            EventTime::MIN
        } else {
            reached.saturating_add(1)
        };
        let live = Live {
            viewers: self.viewers.into_viewers(),
            pending: self.pending,
            windows,
            reached,
            history: History::after(kept_from),
            base: WindowBase::NONE,
            uncovered: EventTime::MIN,
        };
        StreamState {
            totals: self.totals,
            currency: self.currency,
            seller_id: self.seller_id,
            revision: self.revision,
            applied_through: self.applied_through,
            settled_peak: self.settled_peak,
            peak_before: self.settled_peak,
            seen: self.seen.into_seen(),
            // Presence still to be joined keeps the live parts too.
            live: (!live.is_empty() || live.viewers.log.has_pieces()).then(|| Box::new(live)),
            products: self.products,
            finalized: self.finalized,
            ..StreamState::default()
        }
    }
}

/// Reads a sealed window's bytes, refusing any that are not exactly the
/// encoding of figures: a sealed window is trusted when it is decoded later.
fn sealed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<[u8]>, D::Error> {
    use serde::de::Error;
    let bytes = deserialize_blob(deserializer)?;
    match postcard::take_from_bytes::<Figures>(&bytes) {
        Ok((_, [])) => Ok(bytes.into_owned().into_boxed_slice()),
        Ok((_, rest)) => Err(D::Error::custom(format_args!(
            "window figures followed by {} stray bytes",
            rest.len()
        ))),
        Err(e) => Err(D::Error::custom(format_args!("window figures: {e}"))),
    }
}

/// `bytes` rewritten as the format before theirs (14 or 15 as 11 or 13, 13
/// as 12, 11 or 12 as 9 or 10, those as 7 or 8, those as 4 or 6): what an
/// older version wrote for the same state. (A head's pieces are left as they
/// are; a head in format 13 must hold every window; a state in 14 or 15 must
/// hash its ids unseeded, as older versions did.)
#[cfg(test)]
pub(crate) fn in_older_format(bytes: &[u8]) -> Vec<u8> {
    let (&format, body) = bytes.split_first().expect("a format byte");
    let (state, rest) = read(format, body).expect("known").expect("decodes");
    assert!(rest.is_empty());
    let live = state.live();
    let (older, tail) = match format {
        FORMAT | FORMAT_HEAD => {
            assert_eq!(state.id_seed, 0, "older formats hash ids unseeded");
            let older = if format == FORMAT {
                FORMAT_UNSEEDED
            } else {
                FORMAT_HEAD_UNSEEDED
            };
            (older, postcard::to_stdvec(&state.id_seed))
        }
        FORMAT_UNSEEDED => (
            FORMAT_HISTORYLESS,
            postcard::to_stdvec(&(
                live.history.from,
                state.peak_before,
                Blob(&live.history.records()),
            )),
        ),
        FORMAT_HEAD_UNSEEDED => {
            assert!(!live.base.is_held(), "format 12 holds every window");
            (
                FORMAT_HEAD_WINDOWED,
                postcard::to_stdvec(&live.base.position(&live.windows)),
            )
        }
        FORMAT_HEAD_WINDOWED => (
            FORMAT_HEAD_HISTORYLESS,
            postcard::to_stdvec(&(
                live.history.from,
                state.peak_before,
                live.history.log.position(),
            )),
        ),
        FORMAT_HISTORYLESS => (
            FORMAT_SPANLESS,
            postcard::to_stdvec(&SpansRef(WindowsRef::all(&live.windows))),
        ),
        FORMAT_HEAD_HISTORYLESS => (
            FORMAT_HEAD_SPANLESS,
            postcard::to_stdvec(&SpansRef(WindowsRef::all(&live.windows))),
        ),
        FORMAT_SPANLESS => (
            FORMAT_UNREACHED,
            postcard::to_stdvec(&reached(state.live())),
        ),
        FORMAT_HEAD_SPANLESS => (
            FORMAT_HEAD_UNREACHED,
            postcard::to_stdvec(&reached(state.live())),
        ),
        other => panic!("format {other} has no older layout"),
    };
    let tail = tail.expect("serializes");
    let mut old = vec![older];
    old.extend_from_slice(&body[..body.len() - tail.len()]);
    old
}
