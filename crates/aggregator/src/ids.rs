//! Stable 64-bit hashes of ids, and the compact sets of them the state keeps.
//!
//! Distinct counts and duplicate detection keep an id's xxh3-64 hash instead
//! of the id: 8 bytes whatever the id's length, and exact in practice (the odds
//! of any collision among a million ids are about 3 × 10⁻⁸). The hash is
//! persisted in checkpoints, so it must never change between processes or
//! versions: never std's `DefaultHasher`/`RandomState` here. In-memory tables
//! rehash these values with hashbrown's seeded default hasher, so crafted ids
//! cannot flood one bucket.

use std::borrow::Cow;
use std::fmt;

use hashbrown::HashSet;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The stable hash of an id. Pinned by a test: changing it breaks every
/// checkpoint written before.
pub(crate) fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// A set of id hashes; checkpointed as a flat byte string of little-endian
/// `u64`s (8 bytes each, where a varint would take 10 for a random hash).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdSet(HashSet<u64>);

impl IdSet {
    /// Adds a hash; `true` when it was not there yet.
    pub(crate) fn insert(&mut self, hash: u64) -> bool {
        self.0.insert(hash)
    }

    /// How many distinct hashes the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Approximate heap use, for the state-size metric.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<u64>() + 1)
    }
}

impl Serialize for IdSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 8);
        for hash in &self.0 {
            bytes.extend_from_slice(&hash.to_le_bytes());
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for IdSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserialize_blob(deserializer)?;
        let records = fixed_records::<8, D::Error>(&bytes)?;
        let mut set = HashSet::with_capacity(records.len());
        set.extend(records.map(u64::from_le_bytes));
        Ok(IdSet(set))
    }
}

/// Splits a blob into fixed-size records, refusing a ragged tail.
pub(crate) fn fixed_records<const N: usize, E: de::Error>(
    bytes: &[u8],
) -> Result<impl ExactSizeIterator<Item = [u8; N]> + '_, E> {
    let chunks = bytes.chunks_exact(N);
    if !chunks.remainder().is_empty() {
        return Err(E::custom(format_args!(
            "blob of {} bytes is not a multiple of {N}",
            bytes.len()
        )));
    }
    Ok(chunks.map(|chunk| {
        let mut record = [0; N];
        record.copy_from_slice(chunk);
        record
    }))
}

/// Reads a byte string, borrowing it when the format allows (postcard does),
/// and accepting a sequence of bytes from formats without a byte type (JSON).
pub(crate) fn deserialize_blob<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Cow<'de, [u8]>, D::Error> {
    struct BlobVisitor;

    impl<'de> Visitor<'de> for BlobVisitor {
        type Value = Cow<'de, [u8]>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_vec()))
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            Ok(Cow::Owned(bytes))
        }
    }

    deserializer.deserialize_bytes(BlobVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hash_is_pinned() {
        // Checkpoints hold these values: if this test fails, old checkpoints
        // no longer restore correctly.
        assert_eq!(id_hash(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(id_hash("u-7"), id_hash("u-7"));
        assert_ne!(id_hash("u-7"), id_hash("u-8"));
    }

    #[test]
    fn id_set_round_trips_through_postcard_and_json() {
        let mut set = IdSet::default();
        for id in ["a", "b", "c", ""] {
            assert!(set.insert(id_hash(id)));
        }
        assert!(!set.insert(id_hash("a")));
        let bytes = postcard::to_stdvec(&set).unwrap();
        assert_eq!(bytes.len(), 1 + 4 * 8);
        assert_eq!(postcard::from_bytes::<IdSet>(&bytes).unwrap(), set);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<IdSet>(&json).unwrap(), set);
    }

    #[test]
    fn id_set_refuses_a_ragged_blob() {
        let bytes = postcard::to_stdvec(&serde_bytes_of(&[1, 2, 3])).unwrap();
        assert!(postcard::from_bytes::<IdSet>(&bytes).is_err());
    }

    /// A byte string as serde's bytes type, for feeding raw blobs to decoders.
    fn serde_bytes_of(bytes: &[u8]) -> impl Serialize + '_ {
        struct Blob<'a>(&'a [u8]);
        impl Serialize for Blob<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Blob(bytes)
    }
}
