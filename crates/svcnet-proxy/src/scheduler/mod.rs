//! Schedulers: how a new connection picks one of a Service port's backends.
//!
//! The vocabulary is IPVS's (rr, lc, sh, mh) plus kube-proxy's default random; every one
//! honours `Backend::weight`. A `Picker` is built once per plan change from the backends and
//! is shared by all connections (`&self`, atomics only). Connection tracking and session
//! affinity are the data plane's job; `pick` only decides for a connection that has no
//! backend yet. Documented for users in docs/scheduling.md.

pub mod hash;
pub mod maglev;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::types::{Backend, Scheduler};
use maglev::MaglevTable;

/// Longest round-robin cycle precomputed; larger total weights are scaled down.
const MAX_CYCLE: u64 = 65_536;
const SEED_SOURCE_HASH: u64 = 0x7376_636e_6574_7368; // "svcnetsh"
const SEED_FLOW: u64 = 0x7376_636e_6574_666c; // "svcnetfl"

/// What a scheduler may look at for one new connection.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The client's address and port.
    pub client: SocketAddr,
    /// Active connections per backend (same order as the backends), for least-connections.
    pub active: &'a [u64],
    /// Backends not to choose (already tried for this connection); same order as the backends.
    pub excluded: &'a [bool],
}

/// A scheduler ready to pick among a fixed list of backends.
#[derive(Debug)]
pub struct Picker {
    scheduler: Scheduler,
    weights: Vec<u32>,
    /// Cumulative weights, for weighted random.
    cumulative: Vec<u64>,
    /// One round-robin cycle (smooth weighted round robin order), for rr and sh.
    cycle: Vec<u32>,
    maglev: MaglevTable,
    counter: AtomicU64,
}

impl Picker {
    pub fn new(scheduler: Scheduler, backends: &[Backend]) -> Self {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += u64::from(*w);
                total
            })
            .collect();
        let cycle = match scheduler {
            Scheduler::RoundRobin | Scheduler::SourceHash => smooth_cycle(&weights),
            _ => Vec::new(),
        };
        let maglev = if scheduler == Scheduler::Maglev {
            let names: Vec<String> =
                backends.iter().map(|b| SocketAddr::new(b.ip, b.port).to_string()).collect();
            MaglevTable::new(&names, &weights, maglev::table_size_for(total))
        } else {
            MaglevTable::new(&[], &[], 0)
        };
        Picker { scheduler, weights, cumulative, cycle, maglev, counter: AtomicU64::new(0) }
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks a backend index, or `None` when every backend is excluded (or there is none).
    /// An excluded first choice falls back to the next one in backend order (retry semantics).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.weights.len();
        let usable =
            |i: usize| self.weights[i] > 0 && !ctx.excluded.get(i).copied().unwrap_or(false);
        if !(0..n).any(usable) {
            return None;
        }
        let first = match self.scheduler {
            Scheduler::Random => self.weighted_index(rand::random::<u64>()),
            Scheduler::RoundRobin => {
                // A retry (some backend excluded) does not take a new turn: it moves on from
                // the turn that failed, so one dead backend does not absorb every other turn.
                let retrying = ctx.excluded.iter().any(|excluded| *excluded);
                let turn = if retrying {
                    self.counter.load(Ordering::Relaxed).wrapping_sub(1)
                } else {
                    self.counter.fetch_add(1, Ordering::Relaxed)
                };
                self.cycle
                    .get((turn % self.cycle.len().max(1) as u64) as usize)
                    .map(|i| *i as usize)
            }
            Scheduler::LeastConnections => return self.least_connections(ctx, usable),
            Scheduler::SourceHash => {
                let h = hash::hash_ip(SEED_SOURCE_HASH, ctx.client.ip());
                self.cycle.get((h % self.cycle.len().max(1) as u64) as usize).map(|i| *i as usize)
            }
            Scheduler::Maglev => self.maglev.lookup(flow_hash(ctx.client)),
        }?;
        (0..n).map(|k| (first + k) % n).find(|&i| usable(i))
    }

    /// Weighted random: an index with probability weight/total for `r` uniform.
    fn weighted_index(&self, r: u64) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let target = r % total;
        Some(self.cumulative.partition_point(|c| *c <= target))
    }

    /// Fewest active connections relative to weight (IPVS `wlc`: active/weight minimal);
    /// ties are broken by rotating the starting point, so idle backends share new connections.
    fn least_connections(
        &self,
        ctx: &PickContext<'_>,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.weights.len();
        let start = (self.counter.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !usable(i) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let active_i = u128::from(ctx.active.get(i).copied().unwrap_or(0));
                    let active_b = u128::from(ctx.active.get(b).copied().unwrap_or(0));
                    active_i * u128::from(self.weights[b]) < active_b * u128::from(self.weights[i])
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }
}

/// The hash Maglev looks up for a flow (client address and port).
pub fn flow_hash(client: SocketAddr) -> u64 {
    hash::hash_flow(SEED_FLOW, client.ip(), client.port())
}

/// The hash source-hash uses for a client address.
pub fn source_hash(client: IpAddr) -> u64 {
    hash::hash_ip(SEED_SOURCE_HASH, client)
}

/// One cycle of smooth weighted round robin (nginx): each backend appears exactly `weight`
/// times per cycle, interleaved. Total weights above `MAX_CYCLE` are scaled down first.
pub fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let weights: Vec<i64> = if total > MAX_CYCLE {
        weights
            .iter()
            .map(|w| if *w == 0 { 0 } else { ((u64::from(*w) * MAX_CYCLE / total).max(1)) as i64 })
            .collect()
    } else {
        weights.iter().map(|w| i64::from(*w)).collect()
    };
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total.max(0) as usize);
    for _ in 0..total {
        let mut best = 0usize;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Backend {
                ip: IpAddr::from([10, 0, 0, i as u8 + 1]),
                port: 80,
                weight: *w,
                node_name: None,
                zone: None,
                is_local: false,
                ready: true,
                target: None,
            })
            .collect()
    }

    fn ctx<'a>(port: u16, active: &'a [u64], excluded: &'a [bool]) -> PickContext<'a> {
        PickContext { client: SocketAddr::from(([192, 168, 0, 1], port)), active, excluded }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Round robin gives each backend exactly `weight` picks per cycle of `sum(weights)`.
        #[test]
        fn round_robin_is_exact(weights in prop::collection::vec(1u32..6, 1..8), cycles in 1usize..4) {
            let picker = Picker::new(Scheduler::RoundRobin, &backends(&weights));
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..(total as usize * cycles) {
                counts[picker.pick(&ctx(1, &[], &[])).unwrap()] += 1;
            }
            for (count, weight) in counts.iter().zip(&weights) {
                prop_assert_eq!(*count, weight * cycles as u32);
            }
        }

        /// Least connections picks a backend whose active/weight is minimal.
        #[test]
        fn least_connections_picks_a_minimum(
            active in prop::collection::vec(0u64..20, 1..10),
            weight_seed in prop::collection::vec(1u32..4, 10),
        ) {
            let weights = &weight_seed[..active.len()];
            let picker = Picker::new(Scheduler::LeastConnections, &backends(weights));
            let excluded = vec![false; active.len()];
            for _ in 0..active.len() {
                let i = picker.pick(&ctx(1, &active, &excluded)).unwrap();
                for j in 0..active.len() {
                    prop_assert!(
                        u128::from(active[i]) * u128::from(weights[j]) <= u128::from(active[j]) * u128::from(weights[i]),
                        "picked {} with {:?} / {:?}", i, active, weights
                    );
                }
            }
        }

        /// Source hash is stable for a client address whatever the port.
        #[test]
        fn source_hash_is_stable(port_a in 1u16.., port_b in 1u16.., n in 1usize..6) {
            let picker = Picker::new(Scheduler::SourceHash, &backends(&vec![1; n]));
            prop_assert_eq!(picker.pick(&ctx(port_a, &[], &[])), picker.pick(&ctx(port_b, &[], &[])));
        }
    }

    #[test]
    fn weighted_random_spreads_by_weight() {
        let picker = Picker::new(Scheduler::Random, &backends(&[1, 3]));
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[picker.pick(&ctx(1, &[], &[])).unwrap()] += 1;
        }
        // Expected 1000 / 3000; the bound is many standard deviations wide.
        assert!((700..1300).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn excluded_backends_are_skipped_and_exhaustion_is_none() {
        for scheduler in [
            Scheduler::Random,
            Scheduler::RoundRobin,
            Scheduler::LeastConnections,
            Scheduler::SourceHash,
            Scheduler::Maglev,
        ] {
            let picker = Picker::new(scheduler, &backends(&[1, 1, 1]));
            let excluded = [true, false, true];
            assert_eq!(picker.pick(&ctx(7, &[0, 0, 0], &excluded)), Some(1), "{scheduler:?}");
            assert_eq!(picker.pick(&ctx(7, &[0, 0, 0], &[true; 3])), None, "{scheduler:?}");
        }
        let empty = Picker::new(Scheduler::Random, &[]);
        assert_eq!(empty.pick(&ctx(1, &[], &[])), None);
    }

    #[test]
    fn smooth_cycle_interleaves() {
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }
}
