//! Stable 64-bit hashes of ids, and the compact sets of them the state keeps.
//!
//! Distinct counts and duplicate detection keep an id's xxh3-64 hash instead
//! of the id: 8 bytes whatever the id's length, and exact in practice (the odds
//! of any collision among a million ids are about 3 × 10⁻⁸). Each stream
//! hashes with a seed of its own, drawn at random when the stream is made and
//! kept in its checkpoints: unseeded, xxh3 lets anyone who knows one id of
//! 17–128 bytes write another with the same hash (swap the halves of its first
//! 16 bytes, xor-ed with the secret's), which would make a real event a
//! duplicate, or two viewers one. Seed 0 is unseeded xxh3, what streams
//! checkpointed before seeds keep. The hash is persisted in checkpoints, so
//! it must never change between processes or versions: never std's
//! `DefaultHasher`/`RandomState` here. In-memory tables rehash these values
//! with hashbrown's seeded default hasher, so crafted ids cannot flood one
//! bucket.

use std::borrow::Cow;
use std::fmt;

use hashbrown::HashMap;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The stable hash of an id under a stream's `seed`. Pinned by a test:
/// changing it breaks every checkpoint written before.
pub(crate) fn id_hash(seed: u64, id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), seed)
}

/// Entries a [`CompactMap`] keeps in a sorted vector before it switches to a
/// hash table: a binary search and a short `memmove` beat hashing at this
/// size, and a vector has no empty buckets or control bytes.
const SORTED_LIMIT: usize = 128;

/// A map keyed by id hash, compact while small: a sorted vector grown a
/// quarter at a time up to [`SORTED_LIMIT`] entries, a hash table beyond.
/// Most streams have a few dozen viewers, event ids or orders, and pay a few
/// bytes over the entries themselves; the few large ones pay a hash table's
/// overhead and get its constant-time lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CompactMap<V> {
    /// Strictly increasing by key.
    Sorted(Vec<(u64, V)>),
    /// Boxed, so that a small map stays the size of a vector.
    Hashed(Box<HashMap<u64, V>>),
}

impl<V> Default for CompactMap<V> {
    fn default() -> Self {
        CompactMap::Sorted(Vec::new())
    }
}

impl<V> CompactMap<V> {
    /// An empty map with room for `entries` without growing: a vector up
    /// to [`SORTED_LIMIT`], a hash table beyond. For a short-lived map whose
    /// size is known, where growing a quarter at a time would only cost.
    pub(crate) fn with_capacity(entries: usize) -> CompactMap<V> {
        if entries <= SORTED_LIMIT {
            CompactMap::Sorted(Vec::with_capacity(entries))
        } else {
            CompactMap::Hashed(Box::new(HashMap::with_capacity(entries)))
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        match self {
            CompactMap::Sorted(entries) => entries
                .binary_search_by_key(&key, |e| e.0)
                .ok()
                .map(|at| &entries[at].1),
            CompactMap::Hashed(map) => map.get(&key),
        }
    }

    /// Adds `key` with `value` unless it is there; `true` when it was added.
    pub(crate) fn insert_new(&mut self, key: u64, value: V) -> bool {
        self.get_or_insert_with(key, move || value).1
    }

    /// The value of `key`, inserted from `make` if it is not there, and
    /// whether it was inserted: one lookup either way.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        let mut found = Ok(0);
        if let CompactMap::Sorted(entries) = self {
            found = entries.binary_search_by_key(&key, |e| e.0);
            if found.is_err() && entries.len() >= SORTED_LIMIT {
                let mut map = HashMap::with_capacity(2 * SORTED_LIMIT);
                map.extend(std::mem::take(entries));
                *self = CompactMap::Hashed(Box::new(map));
            }
        }
        match self {
            CompactMap::Sorted(entries) => match found {
                Ok(at) => (&mut entries[at].1, false),
                Err(at) => {
                    if entries.len() == entries.capacity() {
                        // A quarter at a time: capacity stays within 25 % of
                        // the length, where doubling would leave up to 100 %.
                        entries.reserve_exact((entries.len() / 4).max(4));
                    }
                    entries.insert(at, (key, make()));
                    (&mut entries[at].1, true)
                }
            },
            CompactMap::Hashed(map) => match map.entry(key) {
                hashbrown::hash_map::Entry::Occupied(slot) => (slot.into_mut(), false),
                hashbrown::hash_map::Entry::Vacant(slot) => (slot.insert(make()), true),
            },
        }
    }

    /// Keeps the entries `keep` says yes to; frees the storage when none is left.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        match self {
            CompactMap::Sorted(entries) => entries.retain_mut(|(k, v)| keep(*k, v)),
            CompactMap::Hashed(map) => map.retain(|k, v| keep(*k, v)),
        }
        if self.is_empty() {
            *self = CompactMap::default();
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            CompactMap::Sorted(entries) => entries.len(),
            CompactMap::Hashed(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = (u64, &V)> + '_> {
        match self {
            CompactMap::Sorted(entries) => Box::new(entries.iter().map(|(k, v)| (*k, v))),
            CompactMap::Hashed(map) => Box::new(map.iter().map(|(k, v)| (*k, v))),
        }
    }

    /// Heap bytes held, for the state-size metric: entries by capacity, and
    /// for a table its control bytes and the box.
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, V)>();
        match self {
            CompactMap::Sorted(entries) => entries.capacity() * entry,
            CompactMap::Hashed(map) => {
                std::mem::size_of::<HashMap<u64, V>>() + table_bytes(map) + 16
            }
        }
    }
}

impl<V> FromIterator<(u64, V)> for CompactMap<V> {
    fn from_iter<I: IntoIterator<Item = (u64, V)>>(iter: I) -> Self {
        let mut map = CompactMap::default();
        for (key, value) in iter {
            map.insert_new(key, value);
        }
        map
    }
}

/// A set of id hashes, compact while small; checkpointed as a flat byte
/// string of little-endian `u64`s (8 bytes each, where a varint would take
/// 10 for a random hash).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdSet(CompactMap<()>);

impl IdSet {
    /// Adds a hash; `true` when it was not there yet.
    pub(crate) fn insert(&mut self, hash: u64) -> bool {
        self.0.insert_new(hash, ())
    }

    /// Whether the set holds `hash`.
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.0.get(hash).is_some()
    }

    /// How many distinct hashes the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Every hash, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|(hash, ())| hash)
    }

    /// Approximate heap use, for the state-size metric.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

impl Serialize for IdSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 8);
        for hash in self.iter() {
            bytes.extend_from_slice(&hash.to_le_bytes());
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for IdSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserialize_blob(deserializer)?;
        let records = fixed_records::<8, D::Error>(&bytes)?;
        Ok(IdSet(
            records.map(|r| (u64::from_le_bytes(r), ())).collect(),
        ))
    }
}

/// Bytes of a hash table's buckets, for the state-size metric: its entries
/// and one control byte each, at the bucket count its capacity implies
/// (7/8 load, a power of two; none before the first insert).
pub(crate) fn table_bytes<K, V>(map: &HashMap<K, V>) -> usize {
    let buckets = match map.capacity() {
        0 => 0,
        capacity => (capacity * 8 / 7).next_power_of_two(),
    };
    buckets * (std::mem::size_of::<(K, V)>() + 1)
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
        assert_eq!(id_hash(0, ""), 0x2d06_8005_38d3_94c2);
        assert_eq!(id_hash(0, "u-7"), xxhash_rust::xxh3::xxh3_64(b"u-7"));
        assert_eq!(id_hash(7, "u-7"), 0xe25a_9313_9f90_97b8);
        assert_ne!(id_hash(0, "u-7"), id_hash(0, "u-8"));
    }

    /// Two 32-byte ids that unseeded xxh3 gives the same hash (a helper
    /// built them by swapping the halves of the first 16 bytes, xor-ed with
    /// the default secret's): under a seed they differ.
    #[test]
    fn crafted_ids_collide_unseeded_only() {
        let (a, b) = (
            "_\u{229}$\u{fc4e}\u{2e156}F\u{5c38}a-000000000000000",
            "jz{S15^\u{db}7D1;4hR-000000000000000",
        );
        assert_eq!((a.len(), b.len()), (32, 32));
        assert_eq!(id_hash(0, a), id_hash(0, b));
        for seed in [1, 7, 0x9e37_79b9_7f4a_7c15] {
            assert_ne!(id_hash(seed, a), id_hash(seed, b), "seed {seed}");
        }
    }

    #[test]
    fn a_compact_map_switches_to_a_table_past_the_limit_and_keeps_every_entry() {
        let mut map = CompactMap::default();
        for key in (0..SORTED_LIMIT as u64).rev() {
            assert!(map.insert_new(key * 7, key));
        }
        assert!(matches!(&map, CompactMap::Sorted(entries)
            if entries.windows(2).all(|w| w[0].0 < w[1].0)));
        assert!(!map.insert_new(7, 99), "an existing key is not replaced");
        assert_eq!(map.get(7), Some(&1));
        assert!(map.insert_new(1, 1000));
        assert!(matches!(map, CompactMap::Hashed(_)));
        assert_eq!(map.len(), SORTED_LIMIT + 1);
        assert!((0..SORTED_LIMIT as u64).all(|key| map.get(key * 7) == Some(&key)));
        let (value, inserted) = map.get_or_insert_with(7, || 0);
        assert!(!inserted);
        *value = 5;
        assert_eq!(map.get(7), Some(&5));
        assert_eq!(map.get_or_insert_with(3, || 33), (&mut 33, true));
        map.retain(|key, _| key % 2 == 0);
        assert_eq!(map.len(), SORTED_LIMIT / 2);
        map.retain(|_, _| false);
        assert_eq!(
            map,
            CompactMap::default(),
            "an emptied map holds no storage"
        );
        assert_eq!(map.heap_bytes(), 0);
    }

    #[test]
    fn a_small_compact_map_grows_by_a_quarter() {
        let mut map = CompactMap::default();
        for key in 0..100 {
            map.insert_new(key, ());
        }
        let CompactMap::Sorted(entries) = &map else {
            panic!("100 entries stay sorted");
        };
        assert!(entries.capacity() <= 125, "capacity {}", entries.capacity());
    }

    #[test]
    fn a_compact_map_sized_up_front_does_not_grow() {
        let mut small = CompactMap::with_capacity(100);
        for key in (0..100).rev() {
            small.insert_new(key, ());
        }
        let CompactMap::Sorted(entries) = &small else {
            panic!("100 entries stay sorted");
        };
        assert_eq!(entries.capacity(), 100);
        let large: CompactMap<()> = CompactMap::with_capacity(SORTED_LIMIT + 1);
        assert!(matches!(large, CompactMap::Hashed(_)));
    }

    #[test]
    fn id_set_round_trips_through_postcard_and_json() {
        let mut set = IdSet::default();
        for id in ["a", "b", "c", ""] {
            assert!(set.insert(id_hash(0, id)));
        }
        assert!(!set.insert(id_hash(0, "a")));
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
