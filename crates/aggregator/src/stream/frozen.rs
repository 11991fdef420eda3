//! An ended stream packed into bytes: [`Frozen`].
//!
//! A finalised stream whose windows have expired keeps only its cumulative
//! figures, distinct sets and products, so that a later event reopens it
//! from them, never from zero. Streams end far more often than they
//! run, so over an instance's life most of the streams it holds are these.
//! As a [`StreamState`] such a stream takes about 900 bytes in the stream
//! table (the state's box, its figures, each product's id and figures); as
//! the self-contained checkpoint layout, about a third of that. The
//! partition keeps it packed until an event for it arrives, and the idle
//! scan, once a minute of event time, walks live streams only.

use super::layout;
use super::StreamState;

/// A [`StreamState`] packed by the self-contained checkpoint layout, with
/// the in-memory flags the layout leaves out, for [`Self::thaw`] to give
/// back the very state it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frozen(Box<[u8]>);

/// The flags byte that starts a [`Frozen`]: which in-memory fields are set.
const SAVED_ONCE: u8 = 1;
const WINDOWS_FOLLOW_REVISION: u8 = 1 << 1;
/// `restored_through` follows, as eight little-endian bytes.
const RESTORED: u8 = 1 << 2;

impl Frozen {
    /// Whether `state` has ended and holds nothing but what an ended stream
    /// keeps: no live parts (presence, windows) and an empty duplicate
    /// filter. A stream with changes not yet published or checkpointed does
    /// not fit: the partition's lists still name it.
    pub(crate) fn fits(state: &StreamState) -> bool {
        state.finalized
            && state.live.is_none()
            && state.seen.is_empty()
            && !state.dirty
            && !state.unsaved
    }

    /// `state` packed, when it [fits](Self::fits).
    pub(crate) fn of(state: &StreamState) -> Option<Frozen> {
        if !Frozen::fits(state) {
            return None;
        }
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(state.saved_once, SAVED_ONCE)
            | flag(state.windows_follow_revision, WINDOWS_FOLLOW_REVISION)
            | flag(state.restored_through.is_some(), RESTORED);
        let mut prefix = Vec::with_capacity(16);
        prefix.push(flags);
        if let Some(through) = state.restored_through {
            prefix.extend_from_slice(&through.to_le_bytes());
        }
        prefix.push(layout::FORMAT);
        Some(Frozen(layout::write(state, prefix).into_boxed_slice()))
    }

    /// The state [`Self::of`] packed, flags and all.
    pub(crate) fn thaw(&self) -> StreamState {
        let (&flags, rest) = self
            .0
            .split_first()
            .expect("a frozen stream has a flags byte");
        let (restored_through, rest) = if flags & RESTORED != 0 {
            let (through, rest) = rest.split_at(8);
            let through = u64::from_le_bytes(through.try_into().expect("eight bytes"));
            (Some(through), rest)
        } else {
            (None, rest)
        };
        let (&format, body) = rest
            .split_first()
            .expect("a frozen stream has a format byte");
        let (mut state, left) = layout::read(format, body)
            .expect("a frozen stream is in the current layout")
            .expect("a frozen stream decodes: this process wrote it");
        debug_assert!(left.is_empty(), "a frozen stream has no trailing bytes");
        state.saved_once = flags & SAVED_ONCE != 0;
        state.windows_follow_revision = flags & WINDOWS_FOLLOW_REVISION != 0;
        state.restored_through = restored_through;
        state
    }

    /// Bytes it asked of the allocator.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}
