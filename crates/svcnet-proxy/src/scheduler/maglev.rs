//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each backend gets a permutation of the table slots from two fixed-key hashes of its name
//! (`offset`, `skip`); backends take turns claiming their next preferred free slot until the
//! table is full. Weights are proportional turns: per round a backend of weight w claims w slots.
//! The table size is a prime ≥ 100 × (sum of weights) from a fixed list, so every node with the
//! same backends builds the same table. Not here: connection tracking (the caller's job).

use super::hash::hash_bytes;

/// Primes to pick the table size from (the paper uses 65537 for production).
const TABLE_SIZES: &[usize] = &[251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537];
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"

/// The smallest table size that keeps balance within about 1% for this total weight.
pub fn table_size_for(total_weight: u64) -> usize {
    let wanted = total_weight.saturating_mul(100);
    TABLE_SIZES.iter().copied().find(|m| *m as u64 >= wanted).unwrap_or(65537)
}

/// A lookup table: slot → backend index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    table: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table for backends named `names` (stable identities such as `ip:port`) with
    /// `weights` (same length; zero weights get no slot). `size` must be prime.
    pub fn new(names: &[String], weights: &[u32], size: usize) -> Self {
        let n = names.len();
        if n == 0 || weights.iter().all(|w| *w == 0) || size == 0 {
            return MaglevTable { table: Vec::new() };
        }
        let m = size as u64;
        let offsets: Vec<u64> =
            names.iter().map(|name| hash_bytes(SEED_OFFSET, name.as_bytes()) % m).collect();
        let skips: Vec<u64> = names
            .iter()
            .map(|name| hash_bytes(SEED_SKIP, name.as_bytes()) % (m - 1).max(1) + 1)
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; size];
        let mut filled = 0usize;
        'rounds: loop {
            for i in 0..n {
                for _ in 0..weights[i] {
                    // Find backend i's next preferred slot that is still free.
                    let mut slot = ((offsets[i] + next[i] * skips[i]) % m) as usize;
                    while table[slot] != u32::MAX {
                        next[i] += 1;
                        slot = ((offsets[i] + next[i] * skips[i]) % m) as usize;
                    }
                    table[slot] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == size {
                        break 'rounds;
                    }
                }
            }
        }
        MaglevTable { table }
    }

    /// The backend index for a flow hash; `None` for an empty table.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize] as usize)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Slot → backend index, for data planes that program the table (nftables maps).
    pub fn slots(&self) -> &[u32] {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    fn counts(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for slot in table.slots() {
            counts[*slot as usize] += 1;
        }
        counts
    }

    #[test]
    fn table_sizes_are_prime() {
        for m in TABLE_SIZES {
            assert!((2..*m).take_while(|d| d * d <= *m).all(|d| m % d != 0), "{m} is not prime");
        }
    }

    #[test]
    fn weights_are_proportional() {
        let names = names(3);
        let table = MaglevTable::new(&names, &[1, 2, 3], 4093);
        let counts = counts(&table, 3);
        assert!((counts[1] as f64 / counts[0] as f64 - 2.0).abs() < 0.05, "{counts:?}");
        assert!((counts[2] as f64 / counts[0] as f64 - 3.0).abs() < 0.05, "{counts:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every backend owns M/N slots give or take one round.
        #[test]
        fn balanced(n in 1usize..40) {
            let names = names(n);
            let size = table_size_for(n as u64);
            let table = MaglevTable::new(&names, &vec![1; n], size);
            let counts = counts(&table, n);
            let ideal = size as f64 / n as f64;
            for c in counts {
                prop_assert!((c as f64 - ideal).abs() <= 1.0 + ideal * 0.01, "count {} ideal {}", c, ideal);
            }
        }

        /// Removing one of N backends moves its own 1/N of keys plus only a little more.
        #[test]
        fn minimal_disruption(n in 3usize..40, removed_seed in 0usize..1000) {
            let all = names(n);
            let removed = removed_seed % n;
            let mut rest = all.clone();
            rest.remove(removed);
            let size = table_size_for(n as u64);
            let before = MaglevTable::new(&all, &vec![1; n], size);
            let after = MaglevTable::new(&rest, &vec![1; n - 1], size);
            let mut moved = 0usize;
            for slot in 0..size {
                let old = &all[before.slots()[slot] as usize];
                let new = &rest[after.slots()[slot] as usize];
                if old != new {
                    moved += 1;
                }
            }
            let fraction = moved as f64 / size as f64;
            // The removed backend's share (1/N) must move; the paper reports a few percent more.
            prop_assert!(fraction >= 1.0 / n as f64 - 0.02);
            prop_assert!(fraction <= 1.0 / n as f64 * 1.6 + 0.03, "moved {} of {} with n={}", moved, size, n);
        }
    }
}
