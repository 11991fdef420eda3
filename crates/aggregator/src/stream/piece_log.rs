//! What the two logs of pieces, presence (`presence.rs`) and its history
//! (`history.rs`), keep of where they stand in the changelog: one epoch's
//! pieces written so far, what changed since the last, and when to write
//! the whole part again as the next epoch.

use super::Forgotten;
use crate::changelog::{piece_key, PieceKind, Record};

/// Records a log may hold beyond twice the part before it is rewritten: a
/// small part's log is not rewritten (and its old epoch tombstoned) often.
const SLACK_RECORDS: u64 = 128;

/// A part's log of pieces; none until its first piece.
#[derive(Clone, Debug)]
pub(super) struct PieceLog<T> {
    log: Option<Box<Epoch<T>>>,
}

#[derive(Clone, Debug)]
struct Epoch<T> {
    /// The kind of its pieces.
    kind: PieceKind,
    /// The epoch its pieces are written under.
    number: i64,
    /// Pieces of the epoch written so far.
    pieces: u32,
    /// Records in those pieces.
    written: u64,
    /// What changed since the last piece, repeats allowed.
    fresh: Vec<T>,
}

impl<T> PieceLog<T> {
    /// No pieces yet.
    pub(super) const fn new() -> PieceLog<T> {
        PieceLog { log: None }
    }

    /// The log a head counts: `pieces` pieces of epoch `number`.
    pub(super) fn at(kind: PieceKind, (number, pieces): (i64, u32)) -> PieceLog<T> {
        let log = (pieces > 0).then(|| {
            Box::new(Epoch {
                kind,
                number,
                pieces,
                written: 0,
                fresh: Vec::new(),
            })
        });
        PieceLog { log }
    }

    /// Notes a change for the next piece, once there is a log to follow.
    pub(super) fn note(&mut self, change: T) {
        if let Some(log) = self.log.as_deref_mut() {
            log.fresh.push(change);
        }
    }

    /// Hands the pieces to `forgotten`, to be tombstoned: the part is gone.
    pub(super) fn forget(&mut self, forgotten: &mut Forgotten) {
        if let Some(log) = self.log.take() {
            if log.pieces > 0 {
                forgotten.push((log.kind, log.number, log.pieces));
            }
        }
    }

    /// The pieces epoch `number` has written, if it is the current one.
    pub(super) fn pieces_of(&self, number: i64) -> u32 {
        self.log
            .as_deref()
            .filter(|log| log.number == number)
            .map_or(0, |log| log.pieces)
    }

    /// Whether a head counts pieces, which a self-contained checkpoint
    /// cannot hold.
    pub(super) fn has_pieces(&self) -> bool {
        self.log.as_deref().is_some_and(|log| log.pieces > 0)
    }

    /// The head's account: (epoch, pieces); no pieces when nothing was
    /// written.
    pub(super) fn position(&self) -> (i64, u32) {
        self.log
            .as_deref()
            .map_or((0, 0), |log| (log.number, log.pieces))
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.log.as_deref().map_or(0, |log| {
            std::mem::size_of::<Epoch<T>>() + log.fresh.capacity() * std::mem::size_of::<T>()
        })
    }

    /// Appends to `records` the piece of kind `kind` this checkpoint needs,
    /// if any, for a part of `len` records: `whole()` when the log is new or has outgrown
    /// the part (the retired epoch then goes to `retired`, to be tombstoned
    /// after the head), else `changes(fresh)`, which says how many records
    /// it wrote. None for an empty part: a piece cannot be empty (an empty
    /// value is a tombstone), and the head counts none.
    // The piece's kind and stream, the part's size, where records and
    // retired pieces go, and how to write the part whole or its changes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &mut self,
        kind: PieceKind,
        stream_id: &str,
        len: u64,
        records: &mut Vec<Record>,
        retired: &mut Forgotten,
        whole: impl FnOnce() -> Vec<u8>,
        changes: impl FnOnce(&mut Vec<T>) -> (Vec<u8>, u64),
    ) {
        if len == 0 {
            self.forget(retired);
            return;
        }
        let log = self.log.get_or_insert_with(|| {
            Box::new(Epoch {
                kind,
                number: 0,
                pieces: 0,
                written: 0,
                fresh: Vec::new(),
            })
        });
        if log.pieces > 0 && log.fresh.is_empty() {
            return;
        }
        let fresh = log.fresh.len() as u64;
        if log.pieces > 0 && log.written + fresh > 2 * len + SLACK_RECORDS {
            retired.push((log.kind, log.number, log.pieces));
            log.number += 1;
            log.pieces = 0;
        }
        let value = if log.pieces == 0 {
            log.written = len;
            whole()
        } else {
            let (value, written) = changes(&mut log.fresh);
            log.written += written;
            value
        };
        let key = piece_key(stream_id, kind, log.number, log.pieces);
        records.push(Record { key, value });
        log.pieces += 1;
        log.fresh.clear();
        if log.fresh.capacity() > 4 * SLACK_RECORDS as usize {
            log.fresh.shrink_to(log.fresh.capacity() / 2);
        }
    }

    /// The pieces a head counts, to be joined: (epoch, pieces); `None`
    /// without a log.
    pub(super) fn counted(&self) -> Option<(i64, u32)> {
        self.log.as_deref().map(|log| (log.number, log.pieces))
    }

    /// The pieces joined held `written` records.
    pub(super) fn joined(&mut self, written: u64) {
        if let Some(log) = self.log.as_deref_mut() {
            log.written = written;
        }
    }
}
