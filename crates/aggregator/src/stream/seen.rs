//! The duplicate filter: the `event_id` hashes a stream counted recently,
//! and how they reach the changelog in pieces.
//!
//! The filter is most of a busy stream's state (an id per event for 10 to
//! 20 minutes of event time), and it only grows until a whole generation is
//! forgotten. So the changelog does not rewrite it with every checkpoint:
//! each generation is written as numbered *pieces*, records of their own
//! beside the stream's checkpoint (its *head*), and a checkpoint writes only
//! the ids added since the last one. The head lists each generation with
//! its number of pieces; a restore joins the pieces again. A forgotten
//! generation's pieces are tombstoned after the head that no longer lists
//! them. A piece is never rewritten once written: a head restored after a
//! crash in the middle of a batch must find the pieces it counts unchanged.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::changelog::{piece_key, PieceKind, Record};
use crate::event::EventTime;
use crate::ids::IdSet;

/// A busy generation's list of fresh ids gives back room above this many.
const FRESH_ROOM: usize = 512;

/// The `event_id` hashes counted for a stream, in generations of event time
/// one duplicate horizon long, so that whole generations are forgotten once
/// the watermark is a horizon past their end (spec: duplicates are caught at
/// least within 10 minutes of the original's event time). An id is kept
/// between one and two horizons; no per-id time is stored.
#[derive(Clone, Debug, Default)]
pub(super) struct SeenEvents {
    /// By generation number; one to three are live.
    generations: Vec<Generation>,
}

/// Parts of a stream's state dropped while they had pieces in the
/// changelog, as (kind, generation or epoch, pieces): tombstoned after the
/// stream's next head. Kept by the partition, not the stream, since most
/// streams have none.
pub(crate) type Forgotten = Vec<(PieceKind, i64, u32)>;

/// One duplicate horizon of event time.
#[derive(Clone, Debug, Default)]
struct Generation {
    /// Event time divided by the horizon.
    number: i64,
    ids: IdSet,
    /// Pieces written to the changelog so far.
    pieces: u32,
    /// Ids added since its last piece; kept once it has one.
    fresh: Vec<u64>,
}

impl SeenEvents {
    pub(super) fn contains(&self, event_hash: u64) -> bool {
        self.generations.iter().any(|g| g.ids.contains(event_hash))
    }

    /// `false` when the event was already seen. `span` is the generation
    /// length, ms.
    pub(super) fn insert(&mut self, event_hash: u64, ts: EventTime, span: i64) -> bool {
        let number = ts.div_euclid(span);
        // One lookup in the event's own generation (the insert below), one
        // in each other live generation.
        if self
            .generations
            .iter()
            .any(|g| g.number != number && g.ids.contains(event_hash))
        {
            return false;
        }
        let at = match self.generations.binary_search_by_key(&number, |g| g.number) {
            Ok(at) => at,
            Err(at) => {
                // One to three generations: no room to spare.
                self.generations.reserve_exact(1);
                let generation = Generation {
                    number,
                    ..Generation::default()
                };
                self.generations.insert(at, generation);
                at
            }
        };
        let generation = &mut self.generations[at];
        if !generation.ids.insert(event_hash) {
            return false;
        }
        if generation.pieces > 0 {
            generation.fresh.push(event_hash);
        }
        true
    }

    /// Forgets the generations that end at or before `cutoff`: every id in
    /// them is older than the horizon. Adds those with pieces in the
    /// changelog to `forgotten`, for the stream's next checkpoint to tombstone.
    pub(super) fn expire(&mut self, cutoff: EventTime, span: i64, forgotten: &mut Forgotten) {
        self.generations.retain(|g| {
            let keep = g.number.saturating_add(1).saturating_mul(span) > cutoff;
            if !keep && g.pieces > 0 {
                forgotten.push((PieceKind::Seen, g.number, g.pieces));
            }
            keep
        });
        if self.generations.is_empty() {
            self.generations = Vec::new();
        }
    }

    /// Forgets every generation (the stream ended), as [`Self::expire`].
    pub(super) fn clear(&mut self, forgotten: &mut Forgotten) {
        self.expire(EventTime::MAX, 1, forgotten);
    }

    /// No generation held (a new or ended stream).
    pub(super) fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }

    pub(super) fn len(&self) -> u64 {
        self.generations.iter().map(|g| g.ids.len()).sum()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.generations.capacity() * std::mem::size_of::<Generation>()
            + self
                .generations
                .iter()
                .map(|g| g.ids.heap_bytes() + g.fresh.capacity() * 8)
                .sum::<usize>()
    }

    /// Appends to `records` what the changelog lacks of the filter, one
    /// piece per generation that changed since its last piece: the whole
    /// generation when new, else the ids added since. Written before the
    /// head ([`Self::pieces`]) that counts them.
    ///
    /// A piece a head counts is never rewritten: at-least-once, a crash can
    /// land a batch's pieces without its head, and the head restored must
    /// still find the pieces it counted as they were.
    pub(super) fn write_pieces(&mut self, stream_id: &str, records: &mut Vec<Record>) {
        for g in &mut self.generations {
            let value = if g.pieces == 0 {
                id_bytes(g.ids.iter())
            } else if g.fresh.is_empty() {
                continue;
            } else {
                id_bytes(g.fresh.iter().copied())
            };
            records.push(Record {
                key: piece_key(stream_id, PieceKind::Seen, g.number, g.pieces),
                value,
            });
            g.pieces += 1;
            // A busy generation's list stays allocated for the next batch.
            g.fresh.clear();
            if g.fresh.capacity() > FRESH_ROOM {
                g.fresh.shrink_to(g.fresh.capacity() / 2);
            }
        }
    }

    /// The pieces generation `number` has written, if it is live: a
    /// generation that came back (a late event in it) keeps those.
    pub(super) fn pieces_of(&self, number: i64) -> u32 {
        self.generations
            .iter()
            .find(|g| g.number == number)
            .map_or(0, |g| g.pieces)
    }

    /// The head's account of the filter: each generation with its pieces.
    pub(super) fn pieces(&self) -> PieceCounts<'_> {
        PieceCounts(&self.generations)
    }

    /// The filter a head describes, its ids still to be joined from the
    /// pieces by [`Self::join`].
    pub(super) fn from_counts(counts: Vec<(i64, u32)>) -> SeenEvents {
        SeenEvents {
            generations: counts
                .into_iter()
                .map(|(number, pieces)| Generation {
                    number,
                    pieces,
                    ..Generation::default()
                })
                .collect(),
        }
    }

    /// Joins the pieces a head counts into the filter: `piece(number, n)`
    /// gives piece `n` of generation `number`. Refuses a missing, ragged or
    /// unordered set of pieces rather than restore a filter that would count
    /// duplicates again.
    pub(super) fn join<'p>(
        &mut self,
        mut piece: impl FnMut(i64, u32) -> Option<&'p [u8]>,
    ) -> Result<(), PieceError> {
        let mut last = None;
        for g in &mut self.generations {
            if last.is_some_and(|n| n >= g.number) {
                return Err(PieceError::Unordered(g.number));
            }
            last = Some(g.number);
            for n in 0..g.pieces {
                let bytes = piece(g.number, n).ok_or(PieceError::Missing(g.number, n))?;
                let ids = bytes.chunks_exact(8);
                if !ids.remainder().is_empty() {
                    return Err(PieceError::Ragged(g.number, n, bytes.len()));
                }
                for id in ids {
                    g.ids
                        .insert(u64::from_le_bytes(id.try_into().expect("8-byte chunk")));
                }
            }
        }
        Ok(())
    }

    /// Whether any generation counts pieces, which a self-contained
    /// checkpoint cannot hold.
    pub(super) fn has_pieces(&self) -> bool {
        self.generations.iter().any(|g| g.pieces > 0)
    }
}

/// Why the pieces of a head's duplicate filter could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    /// A piece the head counts is not in the changelog.
    #[error("piece {1} of duplicate-filter generation {0} is missing")]
    Missing(i64, u32),
    /// A piece is not a whole number of 8-byte ids.
    #[error("piece {1} of duplicate-filter generation {0} has {2} bytes, not a multiple of 8")]
    Ragged(i64, u32, usize),
    /// The head lists generations out of order.
    #[error("duplicate-filter generation {0} listed out of order")]
    Unordered(i64),
}

fn id_bytes(ids: impl Iterator<Item = u64>) -> Vec<u8> {
    ids.flat_map(u64::to_le_bytes).collect()
}

/// The head's list of generations: (number, pieces) each.
pub(super) struct PieceCounts<'a>(&'a [Generation]);

impl Serialize for PieceCounts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for g in self.0 {
            seq.serialize_element(&(g.number, g.pieces))?;
        }
        seq.end()
    }
}

/// A self-contained checkpoint (format 4, 7 or 9) holds the filter inline: a
/// sequence of (generation number, ids).
impl Serialize for SeenEvents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.generations.len()))?;
        for g in &self.generations {
            seq.serialize_element(&(g.number, &g.ids))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for SeenEvents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Generations;

        impl<'de> Visitor<'de> for Generations {
            type Value = SeenEvents;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of (generation, ids)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeenEvents, A::Error> {
                let mut generations = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4));
                while let Some((number, ids)) = seq.next_element::<(i64, IdSet)>()? {
                    generations.push(Generation {
                        number,
                        ids,
                        ..Generation::default()
                    });
                }
                Ok(SeenEvents { generations })
            }
        }

        deserializer.deserialize_seq(Generations)
    }
}
