//! Scores and the choice of a node: among the nodes that pass the filters (a sample of
//! them in large clusters, as kube-scheduler's `percentageOfNodesToScore`), the one
//! with the most free resources after placing the pod and the fewest pods of the same
//! controller, ties broken at random. Pure functions over the cache.

use std::collections::BTreeMap;

use rand::Rng;

use super::cache::{NodeInfo, PodInfo};
use super::filter::{self, Reason};

/// The best score of one scorer (kube's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;
/// Weight of the least-allocated score.
pub const LEAST_ALLOCATED_WEIGHT: i64 = 1;
/// Weight of the spread score (kube weighs `PodTopologySpread`, which spreads a
/// controller's pods by default, at 2).
pub const SPREAD_WEIGHT: i64 = 2;
/// Below this many nodes every node is considered (kube's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest share of nodes considered, in percent
/// (kube's `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// What kube says when there is no node at all.
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// How many feasible nodes to find before scoring, as kube-scheduler's adaptive
/// `numFeasibleNodesToFind`: every node below 100, else `50 - nodes/125` percent of
/// them (at least 5 %, at least 100 nodes).
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let percentage = 50usize
        .saturating_sub(nodes / 125)
        .max(MIN_FEASIBLE_NODES_PERCENTAGE);
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Kube's `LeastAllocated`: the mean over CPU and memory of the share left free once
/// the pod is placed, 0–100 (requests counted with their scoring defaults).
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(facts) = &node.facts else {
        return 0;
    };
    let free_share = |requested: i64, capacity: i64| {
        if capacity <= 0 || requested > capacity {
            return 0;
        }
        let free = capacity - requested;
        match free.checked_mul(MAX_NODE_SCORE) {
            Some(scaled) => scaled / capacity,
            // Beyond 92 PB: exact in 128 bits.
            None => {
                i64::try_from(i128::from(free) * i128::from(MAX_NODE_SCORE) / i128::from(capacity))
                    .unwrap_or(0)
            }
        }
    };
    let cpu = free_share(
        node.non_zero_requested.milli_cpu + pod.non_zero_requests.milli_cpu,
        facts.allocatable.milli_cpu,
    );
    let memory = free_share(
        node.non_zero_requested.memory + pod.non_zero_requests.memory,
        facts.allocatable.memory,
    );
    (cpu + memory) / 2
}

/// The spread score of a node holding `count` pods of the pod's controller, when the
/// most any candidate holds is `max`: 100 for the emptiest, 0 for the fullest (kube's
/// `SelectorSpread` normalisation).
pub fn spread(count: u32, max: u32) -> i64 {
    if max == 0 {
        return MAX_NODE_SCORE;
    }
    MAX_NODE_SCORE * i64::from(max - count.min(max)) / i64::from(max)
}

/// Where a pod goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The index of the chosen node in the cache's node list.
    pub node: usize,
    /// How many nodes were looked at (the next search starts after them).
    pub processed: usize,
}

/// Picks a node for `pod` among `nodes` (`known` of them have a Node object),
/// looking from `start` on, or says why none fits in kube-scheduler's words.
pub fn schedule(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    known: usize,
    start: usize,
    rng: &mut impl Rng,
) -> Result<Choice, String> {
    if known == 0 || nodes.is_empty() {
        return Err(NO_NODES_MESSAGE.to_owned());
    }
    let wanted = feasible_nodes_to_find(known);
    let mut feasible: Vec<usize> = Vec::with_capacity(wanted.min(nodes.len()));
    let mut why: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut processed = 0;
    for offset in 0..nodes.len() {
        let idx = (start + offset) % nodes.len();
        let node = &nodes[idx];
        if node.facts.is_none() {
            continue;
        }
        processed += 1;
        reasons.clear();
        if filter::fits(pod, node, &mut reasons) {
            feasible.push(idx);
            if feasible.len() >= wanted {
                break;
            }
        } else if feasible.is_empty() {
            // Reasons matter only if nothing fits.
            for reason in reasons.drain(..) {
                *why.entry(reason).or_insert(0) += 1;
            }
        }
    }
    if feasible.is_empty() {
        return Err(filter::fit_error_message(known, &why));
    }
    // The controller's pods on each candidate (none without a controller).
    let owned: Vec<u32> = match &pod.owner {
        Some(owner) => feasible
            .iter()
            .map(|&idx| nodes[idx].owned_by(Some(owner)))
            .collect(),
        None => vec![0; feasible.len()],
    };
    let max_owned = owned.iter().copied().max().unwrap_or(0);
    let mut best = feasible[0];
    let mut best_score = i64::MIN;
    let mut ties = 0u32;
    for (&idx, &count) in feasible.iter().zip(&owned) {
        let node = &nodes[idx];
        let score = LEAST_ALLOCATED_WEIGHT * least_allocated(pod, node)
            + SPREAD_WEIGHT * spread(count, max_owned);
        if score > best_score {
            best = idx;
            best_score = score;
            ties = 1;
        } else if score == best_score {
            // Reservoir sampling: each of the tied nodes is kept with equal chance.
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = idx;
            }
        }
    }
    Ok(Choice {
        node: best,
        processed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::scheduler::cache::{NodeFacts, Resources};

    fn node(name: &str, milli_cpu: i64, memory: i64) -> NodeInfo {
        NodeInfo::new(
            name,
            Some(NodeFacts {
                ready: true,
                allocatable: Resources { milli_cpu, memory },
                allowed_pods: 110,
                ..NodeFacts::default()
            }),
        )
    }

    fn pod(milli_cpu: i64, memory: i64, owner: Option<&str>) -> PodInfo {
        let requests = Resources { milli_cpu, memory };
        PodInfo {
            requests,
            non_zero_requests: requests,
            owner: owner.map(Arc::from),
            ..PodInfo::default()
        }
    }

    #[test]
    fn the_share_of_nodes_to_find_follows_kube() {
        let check =
            |nodes, expected| assert_eq!(feasible_nodes_to_find(nodes), expected, "{nodes}");
        check(0, 0);
        check(99, 99);
        check(100, 100);
        check(250, 120);
        check(1000, 420);
        check(5000, 500);
        check(6000, 300);
    }

    #[test]
    fn least_allocated_prefers_free_nodes() {
        let mut busy = node("busy", 4000, 4000);
        busy.add_pod(&pod(2000, 1000, None));
        let idle = node("idle", 4000, 4000);
        let p = pod(1000, 1000, None);
        // Busy: cpu (4000-3000)/4000 = 25, memory (4000-2000)/4000 = 50 → 37.
        assert_eq!(least_allocated(&p, &busy), 37);
        assert_eq!(least_allocated(&p, &idle), 75);
        // Asking more than there is scores 0 for that resource.
        assert_eq!(least_allocated(&pod(8000, 0, None), &idle), 50);
    }

    #[test]
    fn spread_prefers_nodes_with_fewer_siblings() {
        assert_eq!(spread(0, 0), 100);
        assert_eq!(spread(0, 4), 100);
        assert_eq!(spread(1, 4), 75);
        assert_eq!(spread(4, 4), 0);
    }

    #[test]
    fn schedule_picks_the_best_node_and_spreads_siblings() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut nodes = vec![node("a", 4000, 1 << 30), node("b", 4000, 1 << 30)];
        nodes[0].add_pod(&pod(1000, 0, None));
        let p = pod(100, 0, Some("rs"));
        let choice = schedule(&p, &nodes, 2, 0, &mut rng).unwrap();
        assert_eq!(nodes[choice.node].name, "b");
        assert_eq!(choice.processed, 2);
        // Same load, but "b" already runs a sibling: "a" wins on spread.
        let mut nodes = vec![node("a", 4000, 1 << 30), node("b", 4000, 1 << 30)];
        nodes[1].add_pod(&pod(100, 0, Some("rs")));
        nodes[0].add_pod(&pod(100, 0, Some("other")));
        let choice = schedule(&p, &nodes, 2, 1, &mut rng).unwrap();
        assert_eq!(nodes[choice.node].name, "a");
    }

    #[test]
    fn ties_break_at_random() {
        let mut rng = StdRng::seed_from_u64(1);
        let nodes: Vec<NodeInfo> = (0..4).map(|i| node(&format!("n{i}"), 1000, 1000)).collect();
        let chosen: HashSet<usize> = (0..100)
            .map(|_| {
                schedule(&pod(1, 1, None), &nodes, 4, 0, &mut rng)
                    .unwrap()
                    .node
            })
            .collect();
        assert_eq!(chosen.len(), 4);
    }

    #[test]
    fn no_fit_explains_every_node() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut nodes = vec![
            node("a", 1000, 1000),
            node("b", 1000, 1000),
            node("c", 8000, 1000),
        ];
        nodes[2].facts.as_mut().unwrap().labels = [("disk".into(), "ssd".into())].into();
        let mut p = pod(2000, 0, None);
        p.node_selector = [("disk".into(), "ssd".into())].into();
        // "a" and "b" fail the selector; "c" fits.
        assert_eq!(
            nodes[schedule(&p, &nodes, 3, 0, &mut rng).unwrap().node].name,
            "c"
        );
        p.requests.milli_cpu = 9000;
        assert_eq!(
            schedule(&p, &nodes, 3, 0, &mut rng).unwrap_err(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(
            schedule(&p, &[], 0, 0, &mut rng).unwrap_err(),
            NO_NODES_MESSAGE
        );
    }

    #[test]
    fn large_clusters_are_sampled_round_robin() {
        let mut rng = StdRng::seed_from_u64(1);
        let nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| node(&format!("n{i}"), 1000, 1000))
            .collect();
        let first = schedule(&pod(1, 1, None), &nodes, 1000, 0, &mut rng).unwrap();
        assert_eq!(first.processed, 420);
        assert!(first.node < 420);
        let second = schedule(&pod(1, 1, None), &nodes, 1000, 420, &mut rng).unwrap();
        assert!((420..840).contains(&second.node));
    }

    #[test]
    fn ten_thousand_pods_spread_evenly_over_a_thousand_nodes() {
        use crate::scheduler::cache::Cache;
        let mut rng = StdRng::seed_from_u64(3);
        let mut cache = Cache::default();
        for idx in 0..1000 {
            let facts = NodeFacts {
                ready: true,
                allocatable: Resources {
                    milli_cpu: 32_000,
                    memory: 128 << 30,
                },
                allowed_pods: 110,
                ..NodeFacts::default()
            };
            cache.set_node(&format!("n{idx}"), facts);
        }
        let started = std::time::Instant::now();
        let mut start = 0;
        for idx in 0..10_000 {
            let pod = pod(
                10,
                16 << 20,
                Some(if idx % 2 == 0 { "rs-a" } else { "rs-b" }),
            );
            let choice =
                schedule(&pod, cache.nodes(), cache.node_count(), start, &mut rng).unwrap();
            start = (start + choice.processed) % cache.nodes().len();
            let node = cache.nodes()[choice.node].name.clone();
            cache.add_pod(&format!("ns/p{idx}"), &format!("u{idx}"), &node, pod, true);
        }
        let elapsed = started.elapsed();
        println!(
            "10000 decisions over 1000 nodes in {elapsed:?} ({:.0}/s)",
            10_000.0 / elapsed.as_secs_f64()
        );
        let counts: Vec<i64> = cache.nodes().iter().map(|n| n.pods).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 2, "pods per node range from {min} to {max}");
    }
}
