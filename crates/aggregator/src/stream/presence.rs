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

use super::piece_log::PieceLog;
use super::{Forgotten, Viewer, Viewers, VIEWER_RECORD};
use crate::changelog::{PieceKind, Record};
use crate::event::EventTime;
use crate::ids::CompactMap;

/// The flag of a record for a viewer no longer kept (0: absent, 1: present).
const REMOVED: u8 = 2;

impl Viewers {
    /// Every viewer as a record, in no particular order: a self-contained
    /// checkpoint's presence, and a log's first piece.
    pub(super) fn records(&self) -> Vec<u8> {
        all_records(&self.by_hash)
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
        let by_hash = &self.by_hash;
        self.log.write(
            PieceKind::Presence,
            stream_id,
            by_hash.len() as u64,
            records,
            retired,
            || all_records(by_hash),
            |changed| {
                changed.sort_unstable();
                changed.dedup();
                let mut value = Vec::with_capacity(changed.len() * VIEWER_RECORD);
                for &hash in changed.iter() {
                    match by_hash.get(hash) {
                        Some(v) => push_record(&mut value, hash, v.ts(), u8::from(v.present())),
                        None => push_record(&mut value, hash, 0, REMOVED),
                    }
                }
                (value, changed.len() as u64)
            },
        );
    }

    /// Viewers as a head describes them: their records still to be joined
    /// from the pieces by [`Self::join`].
    pub(super) fn from_log_position(position: (i64, u32)) -> Viewers {
        Viewers {
            log: PieceLog::at(PieceKind::Presence, position),
            ..Viewers::default()
        }
    }

    /// Joins the pieces of the log in order: `piece(epoch, n)` gives piece
    /// `n`. Refuses a missing or malformed piece.
    pub(super) fn join<'p>(
        &mut self,
        mut piece: impl FnMut(i64, u32) -> Option<&'p [u8]>,
    ) -> Result<(), PresenceError> {
        let Some((epoch, pieces)) = self.log.counted() else {
            return Ok(());
        };
        let mut map: HashMap<u64, Viewer> = HashMap::new();
        let mut written = 0;
        for n in 0..pieces {
            let bytes = piece(epoch, n).ok_or(PresenceError::Missing(epoch, n))?;
            let records = bytes.chunks_exact(VIEWER_RECORD);
            if !records.remainder().is_empty() {
                return Err(PresenceError::Malformed(epoch, n));
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
                    _ => return Err(PresenceError::Malformed(epoch, n)),
                }
            }
        }
        self.log.joined(written);
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
