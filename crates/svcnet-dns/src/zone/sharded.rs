//! A hash map split into a fixed number of shards, each behind an `Arc`, so that a copy of the
//! map (a new zone snapshot) shares every shard and a change copies only the shards it touches.
//!
//! This is the structural sharing that makes incremental zone updates cheap without a second
//! full copy of the zone: cloning the map clones the shard index (one `Arc` per shard), and
//! `Arc::make_mut` copies a shard on its first write while an older snapshot still holds it.
//! Left out: resizing the shard count (fixed at construction) and iteration order guarantees.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

/// A cheap, case-insensitive (for names) shard selector, independent of the maps' own hashers.
pub(crate) trait ShardKey {
    /// A deterministic hash of the key; equal keys (as `Eq` sees them) hash alike.
    fn shard_hash(&self) -> u64;
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(byte.to_ascii_lowercase());
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl ShardKey for Name {
    fn shard_hash(&self) -> u64 {
        // Every label: a prefix would put all `_http._tcp.…` names in one shard.
        let mut hash = FNV_OFFSET;
        for label in self.iter() {
            hash = fnv(hash, label);
            hash = fnv(hash, b".");
        }
        hash
    }
}

impl ShardKey for IpAddr {
    fn shard_hash(&self) -> u64 {
        match self {
            IpAddr::V4(v4) => fnv(FNV_OFFSET, &v4.octets()),
            IpAddr::V6(v6) => fnv(FNV_OFFSET, &v6.octets()),
        }
    }
}

/// A map of `K` to `V` in `Arc`-shared shards.
#[derive(Clone, Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
}

impl<K: ShardKey + Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    /// An empty map of `n_shards` shards (at least one), each sized for `capacity / n_shards`.
    pub(crate) fn with_capacity(n_shards: usize, capacity: usize) -> Self {
        let n_shards = n_shards.max(1);
        let per_shard =
            if capacity == 0 { 0 } else { capacity / n_shards + capacity / n_shards / 4 + 1 };
        Self {
            shards: (0..n_shards).map(|_| Arc::new(HashMap::with_capacity(per_shard))).collect(),
        }
    }

    fn index(&self, key: &K) -> usize {
        // The shard count fits in usize, so the remainder does too.
        (key.shard_hash() % self.shards.len() as u64) as usize
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.shards[self.index(key)].get(key)
    }

    /// The shard holding `key`, copied first if a snapshot shares it.
    fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, V> {
        let index = self.index(key);
        Arc::make_mut(&mut self.shards[index])
    }

    /// The value of `key`, inserted as `V::default()` if absent.
    pub(crate) fn get_or_default(&mut self, key: &K) -> &mut V
    where
        V: Default,
    {
        match self.shard_mut(key).entry(key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(V::default()),
        }
    }

    /// The value of `key` for changing it; copies the shard only if the key is there.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = self.index(key);
        if !self.shards[index].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[index]).get_mut(key)
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.index(key);
        if !self.shards[index].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[index]).remove(key)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Every entry, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Number of shards this map shares with `other` (the same `Arc`).
    #[cfg(test)]
    pub(crate) fn shared_with(&self, other: &Self) -> usize {
        self.shards.iter().zip(&other.shards).filter(|(a, b)| Arc::ptr_eq(a, b)).count()
    }
}
