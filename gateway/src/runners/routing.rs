//! Where a request for a version goes, from what the gateway last learned of each runner.
//! Pure: the pool feeds it a snapshot and gets back the order to try runners in.

use sha2::{Digest as _, Sha256};

/// One runner as routing sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub address: &'a str,
    /// Taking requests: its last status poll answered and its circuit is closed.
    pub usable: bool,
    /// Requests queued or running for the version there (last poll plus this gateway's calls
    /// since); None when the version is not loaded there.
    pub queued: Option<u64>,
    /// Memory its budget has left.
    pub room: u64,
}

/// The order to try runners in for `version_id`, whose model takes about `cost` bytes:
/// 1. runners that have it loaded, least queued first;
/// 2. otherwise the runners with room for it, in rendezvous order (the same version lands on
///    the same runner, and its gateway peers agree without talking);
/// 3. then the rest in rendezvous order (their caches evict idle models to make room).
///
/// When every copy's queue has reached `hot_queue`, a runner with room comes first: it loads a
/// second copy. Unusable runners come last, in rendezvous order, so that a retry still has
/// somewhere to go while every runner looks down.
pub fn order(version_id: &str, cost: u64, hot_queue: u64, candidates: &[Candidate<'_>]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..candidates.len()).collect();
    ranked.sort_by_key(|&i| std::cmp::Reverse(rendezvous(version_id, candidates[i].address)));
    let (usable, down): (Vec<usize>, Vec<usize>) = ranked.into_iter().partition(|&i| candidates[i].usable);
    let (mut loaded, cold): (Vec<usize>, Vec<usize>) =
        usable.into_iter().partition(|&i| candidates[i].queued.is_some());
    // A stable sort keeps rendezvous order among equally queued copies.
    loaded.sort_by_key(|&i| candidates[i].queued);
    let (roomy, full): (Vec<usize>, Vec<usize>) = cold.into_iter().partition(|&i| candidates[i].room >= cost);
    let saturated = loaded.first().is_some_and(|&i| candidates[i].queued >= Some(hot_queue));
    let mut out = Vec::with_capacity(candidates.len());
    if saturated && let Some((&spare, rest)) = roomy.split_first() {
        out.push(spare);
        out.extend(loaded);
        out.extend(rest);
    } else {
        out.extend(loaded);
        out.extend(roomy);
    }
    out.extend(full);
    out.extend(down);
    out
}

/// Highest random weight of `address` for `version_id`.
pub fn rendezvous(version_id: &str, address: &str) -> u64 {
    let h = Sha256::new().chain_update(version_id).chain_update(b"/").chain_update(address).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESSES: [&str; 3] = ["http://a:1", "http://b:1", "http://c:1"];

    fn cold() -> Vec<Candidate<'static>> {
        ADDRESSES.iter().map(|&address| Candidate { address, usable: true, queued: None, room: 1000 }).collect()
    }

    fn rendezvous_order(version: &str) -> Vec<usize> {
        let mut ranked = vec![0, 1, 2];
        ranked.sort_by_key(|&i| std::cmp::Reverse(rendezvous(version, ADDRESSES[i])));
        ranked
    }

    #[test]
    fn a_cold_version_follows_rendezvous_order_and_versions_spread() {
        let firsts: std::collections::HashSet<usize> =
            (0..30).map(|v| order(&format!("v{v}"), 10, 8, &cold())[0]).collect();
        assert_eq!(firsts.len(), 3, "thirty versions land on all three runners");
        assert_eq!(order("v1", 10, 8, &cold()), rendezvous_order("v1"));
    }

    #[test]
    fn a_loaded_copy_wins_and_the_least_queued_copy_first() {
        let mut c = cold();
        let last = rendezvous_order("v1")[2];
        c[last].queued = Some(3);
        assert_eq!(order("v1", 10, 8, &c)[0], last, "the runner that has it, though it ranks last");
        let other = rendezvous_order("v1")[0];
        c[other].queued = Some(1);
        assert_eq!(order("v1", 10, 8, &c)[..2], [other, last]);
    }

    #[test]
    fn a_cold_version_skips_runners_without_room() {
        let mut c = cold();
        let ranked = rendezvous_order("v1");
        c[ranked[0]].room = 5;
        assert_eq!(order("v1", 10, 8, &c), vec![ranked[1], ranked[2], ranked[0]]);
    }

    #[test]
    fn a_saturated_version_gets_a_second_copy_where_there_is_room() {
        let mut c = cold();
        let ranked = rendezvous_order("v1");
        c[ranked[1]].queued = Some(8);
        c[ranked[0]].room = 5;
        assert_eq!(order("v1", 10, 8, &c)[..2], [ranked[2], ranked[1]], "the roomy runner loads a copy");
        c[ranked[1]].queued = Some(7);
        assert_eq!(order("v1", 10, 8, &c)[0], ranked[1], "below the mark, the one copy serves");
    }

    #[test]
    fn unusable_runners_come_last() {
        let mut c = cold();
        let ranked = rendezvous_order("v1");
        c[ranked[0]].usable = false;
        c[ranked[0]].queued = Some(0);
        assert_eq!(order("v1", 10, 8, &c), vec![ranked[1], ranked[2], ranked[0]]);
    }
}
