//! The records of the state changelog topic, and the restore that reads
//! them back.
//!
//! A stream's state is written as its *head*, keyed by the `stream_id`: a
//! [`StreamCheckpoint`] without the parts that grow with traffic or time:
//! the ids of its duplicate filter, its viewers' presence, and its retained
//! windows as they were when last written whole (the head holds only the
//! windows changed since). Those are written as *pieces* keyed by the
//! stream id, a mark byte for the part ([`PieceKind`]: `0xFF`, `0xFE`,
//! `0xFD` for the presence events kept for late ones, `0xFC` for windows),
//! a number (`i64`, big-endian: the filter's generation, or the epoch of
//! the presence, history or windows log) and the piece's number (`u32`,
//! big-endian). A
//! stream id is UTF-8, which never holds a byte above `0xF4`, so the kinds
//! of key cannot be confused. Pieces are written before the head that counts
//! them and tombstoned after the head that drops them, in one partition by
//! one idempotent producer (or in one transaction), so the latest head
//! always finds its pieces. See `stream/seen.rs` and `stream/presence.rs`
//! for what a piece holds.

use std::collections::HashMap;

use crate::stream::{CheckpointError, StreamCheckpoint};

/// One changelog record. An empty value is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// A stream id (a head) or a piece key.
    pub key: Vec<u8>,
    /// Checkpoint or piece bytes; empty to delete the key.
    pub value: Vec<u8>,
}

/// Which part of a stream's state a piece holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PieceKind {
    /// Event ids of one duplicate-filter generation.
    Seen,
    /// Presence records of one epoch of the viewers' log.
    Presence,
    /// Settled presence events of one epoch of a stream's history.
    History,
    /// The retained windows, written whole: one piece per epoch.
    Windows,
}

impl PieceKind {
    /// Separates a piece key's stream id from its numbers: not valid UTF-8.
    fn mark(self) -> u8 {
        match self {
            PieceKind::Seen => 0xFF,
            PieceKind::Presence => 0xFE,
            PieceKind::History => 0xFD,
            PieceKind::Windows => 0xFC,
        }
    }

    fn from_mark(mark: u8) -> Option<PieceKind> {
        match mark {
            0xFF => Some(PieceKind::Seen),
            0xFE => Some(PieceKind::Presence),
            0xFD => Some(PieceKind::History),
            0xFC => Some(PieceKind::Windows),
            _ => None,
        }
    }
}

/// The mark, the number and the piece number.
const PIECE_SUFFIX: usize = 1 + 8 + 4;

/// The key of piece `piece` of `kind`'s `number` (generation or epoch).
pub(crate) fn piece_key(stream_id: &str, kind: PieceKind, number: i64, piece: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream_id.len() + PIECE_SUFFIX);
    key.extend_from_slice(stream_id.as_bytes());
    key.push(kind.mark());
    key.extend_from_slice(&number.to_be_bytes());
    key.extend_from_slice(&piece.to_be_bytes());
    key
}

/// What a changelog key names.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A stream's checkpoint.
    Head(&'a str),
    /// A piece of a stream's duplicate filter or presence.
    Piece {
        /// The stream.
        stream_id: &'a str,
        /// The part of its state.
        kind: PieceKind,
        /// The generation (duplicate filter) or epoch (presence, history,
        /// windows).
        number: i64,
        /// Its number within them.
        piece: u32,
    },
}

impl<'a> Key<'a> {
    /// Reads a key; `None` for one livetally never writes.
    pub fn parse(key: &'a [u8]) -> Option<Key<'a>> {
        if let Ok(stream_id) = std::str::from_utf8(key) {
            return Some(Key::Head(stream_id));
        }
        let split = key.len().checked_sub(PIECE_SUFFIX)?;
        let (stream_id, suffix) = key.split_at(split);
        let stream_id = std::str::from_utf8(stream_id).ok()?;
        let (&mark, numbers) = suffix.split_first()?;
        let kind = PieceKind::from_mark(mark)?;
        let (number, piece) = numbers.split_at(8);
        Some(Key::Piece {
            stream_id,
            kind,
            number: i64::from_be_bytes(number.try_into().ok()?),
            piece: u32::from_be_bytes(piece.try_into().ok()?),
        })
    }
}

/// What a changelog partition restores to.
#[derive(Debug, Default)]
pub struct Restored {
    /// Every stream's checkpoint, its pieces joined, sorted by stream id.
    pub checkpoints: Vec<(String, StreamCheckpoint)>,
    /// Pieces no head counts: left by a crash after a batch's pieces and
    /// before its head (at-least-once). Harmless; reported for operators.
    pub stray_pieces: usize,
}

/// Why a changelog partition could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A key livetally does not write.
    #[error("changelog key {0:?} is neither a stream id nor a piece key")]
    Key(String),
    /// A stream's checkpoint or its pieces do not decode.
    #[error("corrupt changelog record for stream {stream_id:?}: {source}")]
    Checkpoint {
        /// The stream.
        stream_id: String,
        /// What was wrong.
        #[source]
        source: CheckpointError,
    },
}

/// Reads one changelog record into `latest` as compaction keeps it: its
/// value replaces the key's, and an empty one (a tombstone) deletes it.
pub fn keep_latest(latest: &mut HashMap<Vec<u8>, Vec<u8>>, key: &[u8], value: &[u8]) {
    if value.is_empty() {
        latest.remove(key);
    } else {
        latest.insert(key.to_vec(), value.to_vec());
    }
}

/// Restores every stream from the latest value of each changelog key
/// (tombstoned keys left out).
pub fn restore(latest: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Restored, RestoreError> {
    let mut restored = Restored::default();
    let mut pieces = 0;
    let mut joined = 0;
    for (key, value) in latest {
        match Key::parse(key) {
            Some(Key::Head(stream_id)) => {
                let checkpoint = StreamCheckpoint::from_changelog(value, |kind, number, piece| {
                    joined += 1;
                    latest
                        .get(&piece_key(stream_id, kind, number, piece))
                        .map(Vec::as_slice)
                })
                .map_err(|source| RestoreError::Checkpoint {
                    stream_id: stream_id.to_owned(),
                    source,
                })?;
                restored
                    .checkpoints
                    .push((stream_id.to_owned(), checkpoint));
            }
            Some(Key::Piece { .. }) => pieces += 1,
            None => return Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
        }
    }
    restored.checkpoints.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    restored.stray_pieces = pieces - joined.min(pieces);
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_key_reads_back_whatever_the_stream_id() {
        for stream_id in ["live-1", "", "\u{0}", "ünï\u{1F6CD}", "a\u{FFFF}b"] {
            for (number, piece) in [(0, 0), (-3, 7), (i64::MAX, u32::MAX)] {
                for kind in [
                    PieceKind::Seen,
                    PieceKind::Presence,
                    PieceKind::History,
                    PieceKind::Windows,
                ] {
                    let key = piece_key(stream_id, kind, number, piece);
                    assert_eq!(
                        Key::parse(&key),
                        Some(Key::Piece {
                            stream_id,
                            kind,
                            number,
                            piece
                        })
                    );
                }
            }
            assert_eq!(Key::parse(stream_id.as_bytes()), Some(Key::Head(stream_id)));
        }
        assert_eq!(Key::parse(b"\xFFshort"), None);
        assert_eq!(Key::parse(b"live-1\xFB0123456789ab"), None);
    }

    #[test]
    fn a_head_whose_piece_is_gone_is_refused() {
        let mut agg = crate::testkit::applied(&[crate::testkit::event(
            "e1",
            "s1",
            "v1",
            1_000,
            crate::Action::Like,
        )]);
        let _ = agg.publish();
        let mut latest: HashMap<Vec<u8>, Vec<u8>> = agg
            .checkpoints()
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        assert_eq!(latest.len(), 2, "a piece and a head");
        assert_eq!(restore(&latest).unwrap().checkpoints.len(), 1);
        latest.retain(|key, _| matches!(Key::parse(key), Some(Key::Head(_))));
        let error = restore(&latest).unwrap_err().to_string();
        assert!(
            error.contains("piece 0") && error.contains("missing"),
            "{error}"
        );
        let stranger = HashMap::from([(b"s2\xFF".to_vec(), vec![1])]);
        assert!(matches!(restore(&stranger), Err(RestoreError::Key(_))));
    }
}
