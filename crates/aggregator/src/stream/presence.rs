//! How the viewers' presence reaches the changelog in pieces.
//!
//! After the duplicate filter, presence is the largest part of a busy
//! stream's state: a record per viewer present, or gone within window
//! retention. Unlike event ids it changes in place (a viewer views, leaves,
//! views again) and shrinks (absent viewers expire), so its pieces form a
//! log: each holds the records of the viewers changed since the previous
//! piece, a forgotten viewer as a record flagged [`REMOVED`], and joining
//! the pieces in order gives the map. A log is numbered by its *epoch*.
//! Once the log holds more than twice the map (plus 128 records), it is
//! rewritten whole as piece 0 of the next epoch, and the old epoch's pieces
//! are tombstoned after the head. A piece is never rewritten in place: a
//! head restored after a crash in the middle of a batch must find the
//! pieces it counts unchanged.

use hashbrown::HashMap;

use super::{Forgotten, Viewer, Viewers, VIEWER_RECORD};
use crate::changelog::{piece_key, PieceKind, Record};
use crate::event::EventTime;
use crate::ids::CompactMap;

/// Records a log may hold beyond twice the map before it is rewritten: a
/// small map's log is not rewritten (and its old epoch tombstoned) often.
const SLACK_RECORDS: u64 = 128;

/// The flag of a record for a viewer no longer kept (0: absent, 1: present).
const REMOVED: u8 = 2;

/// Where a stream's presence stands in the changelog. Made by its first
/// piece; until then there is nothing to track.
#[derive(Clone, Debug, Default)]
pub(super) struct PresenceLog {
    /// The epoch its pieces are written under.
    epoch: i64,
    /// Pieces of the epoch written so far.
    pieces: u32,
    /// Records in those pieces.
    written: u64,
    /// Viewers changed since the last piece, repeats allowed.
    changed: Vec<u64>,
}

impl PresenceLog {
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.changed.capacity() * 8
    }
}

impl Viewers {
    /// Notes that `viewer`'s record changed or went, once the log exists.
    pub(super) fn changed(log: &mut Option<Box<PresenceLog>>, viewer: u64) {
        if let Some(log) = log.as_deref_mut() {
            log.changed.push(viewer);
        }
    }

    /// Hands the log's pieces to `forgotten` when the viewers are dropped
    /// (the stream ended, or its live parts were released).
    pub(super) fn forget(&mut self, forgotten: &mut Forgotten) {
        if let Some(log) = self.log.take() {
            if log.pieces > 0 {
                forgotten.push((PieceKind::Presence, log.epoch, log.pieces));
            }
        }
    }

    /// The pieces epoch `epoch` has written, if it is the current one.
    pub(super) fn pieces_of(&self, epoch: i64) -> u32 {
        self.log
            .as_deref()
            .filter(|log| log.epoch == epoch)
            .map_or(0, |log| log.pieces)
    }

    /// Whether the head counts presence pieces, which a self-contained
    /// checkpoint cannot hold.
    pub(super) fn has_pieces(&self) -> bool {
        self.log.as_deref().is_some_and(|log| log.pieces > 0)
    }

    /// Every viewer as a record, in no particular order: a self-contained
    /// checkpoint's presence, and a log's first piece.
    pub(super) fn records(&self) -> Vec<u8> {
        all_records(&self.by_hash)
    }

    /// The head's account of presence: (epoch, pieces); no pieces when
    /// nothing was written.
    pub(super) fn log_position(&self) -> (i64, u32) {
        self.log
            .as_deref()
            .map_or((0, 0), |log| (log.epoch, log.pieces))
    }

    /// Appends to `records` the presence piece this checkpoint needs, if
    /// any: the whole map when the log is new or has outgrown it (then the
    /// retired epoch goes to `retired`, to be tombstoned after the head);
    /// else the records changed since.
    pub(super) fn write_pieces(
        &mut self,
        stream_id: &str,
        records: &mut Vec<Record>,
        retired: &mut Forgotten,
    ) {
        let len = self.by_hash.len() as u64;
        if len == 0 {
            // Nothing to write: a piece cannot be empty (an empty value
            // is a tombstone). The head will count no pieces.
            self.forget(retired);
            return;
        }
        let log = self.log.get_or_insert_with(Box::default);
        if log.pieces > 0 && log.changed.is_empty() {
            return;
        }
        let changed = log.changed.len() as u64;
        if log.pieces > 0 && log.written + changed > 2 * len + SLACK_RECORDS {
            retired.push((PieceKind::Presence, log.epoch, log.pieces));
            log.epoch += 1;
            log.pieces = 0;
        }
        let mut value;
        let piece = log.pieces;
        if piece == 0 {
            value = all_records(&self.by_hash);
            log.pieces = 1;
            log.written = len;
        } else {
            log.changed.sort_unstable();
            log.changed.dedup();
            value = Vec::with_capacity(log.changed.len() * VIEWER_RECORD);
            for &hash in &log.changed {
                match self.by_hash.get(hash) {
                    Some(v) => push_record(&mut value, hash, v.ts(), u8::from(v.present())),
                    None => push_record(&mut value, hash, 0, REMOVED),
                }
            }
            log.pieces += 1;
            log.written += log.changed.len() as u64;
        }
        let key = piece_key(stream_id, PieceKind::Presence, log.epoch, piece);
        records.push(Record { key, value });
        log.changed.clear();
        if log.changed.capacity() > 4 * SLACK_RECORDS as usize {
            log.changed.shrink_to(log.changed.capacity() / 2);
        }
    }

    /// Viewers as a head describes them: their records still to be joined
    /// from the pieces by [`Self::join`].
    pub(super) fn from_log_position((epoch, pieces): (i64, u32)) -> Viewers {
        Viewers {
            log: (pieces > 0).then(|| {
                Box::new(PresenceLog {
                    epoch,
                    pieces,
                    ..PresenceLog::default()
                })
            }),
            ..Viewers::default()
        }
    }

    /// Joins the pieces of the log in order: `piece(epoch, n)` gives piece
    /// `n`. Refuses a missing or malformed piece.
    pub(super) fn join<'p>(
        &mut self,
        mut piece: impl FnMut(i64, u32) -> Option<&'p [u8]>,
    ) -> Result<(), PresenceError> {
        let Some(log) = self.log.as_deref_mut() else {
            return Ok(());
        };
        let mut map: HashMap<u64, Viewer> = HashMap::new();
        let mut written = 0;
        for n in 0..log.pieces {
            let bytes = piece(log.epoch, n).ok_or(PresenceError::Missing(log.epoch, n))?;
            let records = bytes.chunks_exact(VIEWER_RECORD);
            if !records.remainder().is_empty() {
                return Err(PresenceError::Malformed(log.epoch, n));
            }
            for record in records {
                written += 1;
                let (hash, ts, flag) = read_record(record.try_into().expect("a whole record"));
                match flag {
                    REMOVED => {
                        map.remove(&hash);
                    }
                    flag @ (0 | 1) => {
                        map.insert(hash, Viewer::new(ts, flag == 1));
                    }
                    _ => return Err(PresenceError::Malformed(log.epoch, n)),
                }
            }
        }
        log.written = written;
        self.concurrent = map.values().filter(|v| v.present()).count() as u64;
        self.by_hash = map.into_iter().collect::<CompactMap<Viewer>>();
        Ok(())
    }
}

/// Every viewer of `by_hash` as a record (see [`Viewers::records`]).
fn all_records(by_hash: &CompactMap<Viewer>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(by_hash.len() * VIEWER_RECORD);
    for (hash, v) in by_hash.iter() {
        push_record(&mut bytes, hash, v.ts(), u8::from(v.present()));
    }
    bytes
}

/// Appends a viewer's record: hash, `ts`, flag (0 absent, 1 present,
/// [`REMOVED`]), [`VIEWER_RECORD`] bytes.
fn push_record(bytes: &mut Vec<u8>, hash: u64, ts: EventTime, flag: u8) {
    bytes.extend_from_slice(&hash.to_le_bytes());
    bytes.extend_from_slice(&ts.to_le_bytes());
    bytes.push(flag);
}

/// Reads a record [`push_record`] wrote, as (hash, `ts`, flag).
pub(super) fn read_record(record: &[u8; VIEWER_RECORD]) -> (u64, EventTime, u8) {
    let word = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&record[at..at + 8]);
        bytes
    };
    (
        u64::from_le_bytes(word(0)),
        EventTime::from_le_bytes(word(8)),
        record[16],
    )
}

/// Why the presence pieces a head counts could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// A piece the head counts is not in the changelog.
    #[error("piece {1} of presence epoch {0} is missing")]
    Missing(i64, u32),
    /// A piece is not a whole number of well-formed records.
    #[error("piece {1} of presence epoch {0} is malformed")]
    Malformed(i64, u32),
}
