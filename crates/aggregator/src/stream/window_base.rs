//! Where a stream's retained windows stand in the changelog.
//!
//! A stream keeps up to an hour of windows, and nearly all of them are
//! closed: written in every head, they were most of what a checkpoint
//! wrote. Instead, once a stream holds more than [`INLINE_WINDOWS`]
//! windows, they are written whole as one piece (the *base*, one per
//! epoch), each window marked `stored`; a later head holds only the windows
//! changed since (a window that counts, settles presence or publishes is no
//! longer stored), and names the base's epoch and its oldest retained
//! window, so that a restore takes the base's windows from there on that
//! the head does not hold. Once the heads since the base would have written
//! more windows than the stream retains, the base is written again under
//! the next epoch (so the windows written per checkpoint are at most about
//! twice what the fewest could be), and the old one is tombstoned after the
//! head. Live, with a window a minute and a checkpoint every few seconds,
//! a base is written every minute or two; in a catch-up, where minutes of
//! event time pass between checkpoints, about every other checkpoint.

use std::collections::VecDeque;

use super::{layout, Forgotten, WindowState};
use crate::changelog::{piece_key, PieceKind, Record};
use crate::event::EventTime;

/// The most windows a stream keeps in its head without a base.
const INLINE_WINDOWS: usize = 3;

/// The base a stream's windows have in the changelog, if any.
#[derive(Clone, Debug)]
pub(super) struct WindowBase(Option<Box<Base>>);

#[derive(Clone, Debug)]
struct Base {
    /// The epoch its piece is written under.
    epoch: i64,
    /// Read from a head: the oldest window retained when it was written;
    /// the base's windows before it had expired.
    from: EventTime,
    /// Windows the heads since it was written have held.
    carried: usize,
}

impl WindowBase {
    /// No base: the head holds every window.
    pub(super) const NONE: WindowBase = WindowBase(None);

    /// Whether a head counts a windows piece, which a self-contained
    /// checkpoint cannot hold.
    pub(super) fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// The pieces epoch `epoch` has written, if it is the current one.
    pub(super) fn pieces_of(&self, epoch: i64) -> u32 {
        u32::from(self.0.as_deref().is_some_and(|base| base.epoch == epoch))
    }

    /// Hands the piece to `forgotten`, to be tombstoned: the windows are gone.
    pub(super) fn forget(&mut self, forgotten: &mut Forgotten) {
        if let Some(base) = self.0.take() {
            forgotten.push((PieceKind::Windows, base.epoch, 1));
        }
    }

    /// Appends to `records` the piece this checkpoint needs, if any: the
    /// whole of `windows`, once the heads since the last would have held
    /// more windows than there are; the piece it replaces goes to
    /// `retired`, to be tombstoned after the head. A stream with no more
    /// than [`INLINE_WINDOWS`] keeps them all in its head, and no base.
    pub(super) fn write(
        &mut self,
        windows: &mut VecDeque<(EventTime, WindowState)>,
        stream_id: &str,
        records: &mut Vec<Record>,
        retired: &mut Forgotten,
    ) {
        let fresh = windows.iter().filter(|(_, w)| !w.stored).count();
        if let Some(base) = self.0.as_deref_mut() {
            if windows.len() > INLINE_WINDOWS && base.carried + fresh <= windows.len() {
                base.carried += fresh;
                return;
            }
        }
        let epoch = self.0.take().map_or(0, |base| {
            retired.push((PieceKind::Windows, base.epoch, 1));
            base.epoch.wrapping_add(1)
        });
        let whole = windows.len() > INLINE_WINDOWS;
        for (_, window) in windows.iter_mut() {
            window.stored = whole;
        }
        if whole {
            records.push(Record {
                key: piece_key(stream_id, PieceKind::Windows, epoch, 0),
                value: layout::write_windows(windows),
            });
            self.0 = Some(Box::new(Base {
                epoch,
                from: EventTime::MIN,
                carried: 0,
            }));
        }
    }

    /// The head's account, if there is a base: its epoch and the oldest
    /// window retained.
    pub(super) fn position(
        &self,
        windows: &VecDeque<(EventTime, WindowState)>,
    ) -> Option<(i64, EventTime)> {
        let from = windows.front().map_or(EventTime::MIN, |w| w.0);
        self.0.as_deref().map(|base| (base.epoch, from))
    }

    /// The base a head describes, its windows to be joined by [`Self::join`].
    pub(super) fn from_position(position: Option<(i64, EventTime)>) -> WindowBase {
        WindowBase(position.map(|(epoch, from)| {
            Box::new(Base {
                epoch,
                from,
                carried: 0,
            })
        }))
    }

    /// Joins the base's windows to those the head held (`windows`, which
    /// win where both hold one): `piece(epoch)` gives the base's piece.
    pub(super) fn join<'p>(
        &mut self,
        windows: &mut VecDeque<(EventTime, WindowState)>,
        piece: impl FnOnce(i64) -> Option<&'p [u8]>,
    ) -> Result<(), WindowsError> {
        let Some(base) = self.0.as_deref() else {
            return Ok(());
        };
        let bytes = piece(base.epoch).ok_or(WindowsError::Missing(base.epoch))?;
        let stored = layout::read_windows(bytes).ok_or(WindowsError::Malformed(base.epoch))?;
        let fresh = std::mem::take(windows);
        let mut joined: Vec<_> = stored
            .into_iter()
            .filter(|(start, _)| {
                *start >= base.from && fresh.binary_search_by_key(start, |w| w.0).is_err()
            })
            .map(|(start, mut window)| {
                window.stored = true;
                (start, window)
            })
            .collect();
        joined.extend(fresh);
        joined.sort_by_key(|w| w.0);
        *windows = joined.into();
        Ok(())
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |_| std::mem::size_of::<Base>())
    }
}

/// Why a head's windows piece could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum WindowsError {
    /// The piece the head counts is not in the changelog.
    #[error("piece 0 of windows epoch {0} is missing")]
    Missing(i64),
    /// The piece does not decode as windows.
    #[error("piece 0 of windows epoch {0} is malformed")]
    Malformed(i64),
}
