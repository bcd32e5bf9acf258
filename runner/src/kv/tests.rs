//! The pool's behaviour, with 4-token blocks so that boundaries are easy to see.

use std::collections::HashMap;

use super::*;
use crate::test_rng::Rng;

const BS: usize = 4;

/// A pool of `blocks` 4-token blocks of 8 bytes each.
fn pool(blocks: u64) -> BlockPool {
    let layout = KvLayout { layers: 1, kv_heads: 1, head_dim: 1, dtype_bytes: 1, block_size: BS };
    BlockPool::new(&layout, 8 * blocks).expect("a valid pool")
}

fn tokens(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

/// Allocates `seq` for `prompt` and writes its KV: its full blocks become reusable.
fn written(pool: &mut BlockPool, seq: SeqId, tenant: &str, prompt: &[u32]) {
    pool.allocate(seq, tenant, prompt).expect("room");
    pool.cache_full_blocks(seq, prompt).expect("held");
}

/// The same, then the sequence ends: its full blocks stay cached.
fn cached(pool: &mut BlockPool, seq: SeqId, tenant: &str, prompt: &[u32]) {
    written(pool, seq, tenant, prompt);
    pool.free(seq).expect("held");
}

const A: SeqId = SeqId(1);
const B: SeqId = SeqId(2);
const C: SeqId = SeqId(3);

#[test]
fn kv_pool_size_follows_the_budget_and_the_models_layout() {
    let layout = KvLayout { layers: 8, kv_heads: 4, head_dim: 64, dtype_bytes: 4, block_size: 16 };
    assert_eq!(layout.token_bytes(), Some(8 * 4 * 64 * 2 * 4));
    assert_eq!(layout.block_bytes(), Some(262_144));
    let pool = BlockPool::new(&layout, 1024 * 1024 + 5).expect("four blocks fit");
    assert_eq!((pool.stats().blocks_total, pool.bytes(), pool.block_size()), (4, 1024 * 1024, 16));

    let huge = KvLayout { layers: usize::MAX, ..layout };
    assert_eq!(BlockPool::new(&huge, u64::MAX).err(), Some(KvError::Layout(huge)), "overflow is refused");
    let empty = KvLayout { kv_heads: 0, ..layout };
    assert_eq!(BlockPool::new(&empty, u64::MAX).err(), Some(KvError::Layout(empty)));
    let no_tokens = KvLayout { block_size: 0, ..layout };
    assert!(BlockPool::new(&no_tokens, u64::MAX).is_err(), "a block must hold a token");
    assert_eq!(
        BlockPool::new(&layout, 1000).err(),
        Some(KvError::BudgetTooSmall { budget_bytes: 1000, block_bytes: 262_144 })
    );
    let tiny = KvLayout { layers: 1, kv_heads: 1, head_dim: 1, dtype_bytes: 1, block_size: 1 };
    let capped = BlockPool::new(&tiny, u64::MAX).expect("capped");
    assert_eq!(capped.stats().blocks_total, MAX_BLOCKS, "a tiny KV does not make a huge table");
    assert_eq!(capped.bytes(), 2 * MAX_BLOCKS as u64);
}

#[test]
fn kv_allocation_and_free_keep_the_counts() {
    let mut pool = pool(8);
    let found = pool.allocate(A, "t", &tokens(0..10)).expect("room");
    assert_eq!((found.blocks.len(), found.tokens), (0, 0));
    assert_eq!(pool.block_table(A).map(<[BlockId]>::len), Some(3));
    assert_eq!(pool.len_of(A), Some(10));
    let expected = KvStats {
        blocks_total: 8,
        blocks_used: 3,
        blocks_free: 5,
        blocks_cached: 0,
        sequences: 1,
        prefix_hit_tokens: 0,
        prefix_miss_tokens: 10,
        evictions: 0,
    };
    assert_eq!(pool.stats(), expected);
    pool.free(A).expect("held");
    let stats = pool.stats();
    assert_eq!((stats.blocks_used, stats.blocks_free, stats.sequences), (0, 8, 0));
    assert_eq!(pool.block_table(A), None);
    pool.assert_consistent();
}

#[test]
fn kv_growth_takes_a_block_only_across_a_boundary() {
    let mut pool = pool(8);
    pool.allocate(A, "t", &tokens(0..3)).expect("room");
    pool.grow(A, 4).expect("room");
    assert_eq!(pool.block_table(A).map(<[BlockId]>::len), Some(1), "4 tokens fill one block");
    pool.grow(A, 5).expect("room");
    assert_eq!(pool.block_table(A).map(<[BlockId]>::len), Some(2), "the 5th starts a second");
    pool.grow(A, 2).expect("shrinking is not asked of growth");
    assert_eq!((pool.len_of(A), pool.stats().blocks_used), (Some(5), 2));
    pool.grow(A, 13).expect("room");
    assert_eq!(pool.block_table(A).map(<[BlockId]>::len), Some(4));
    pool.assert_consistent();
}

#[test]
fn kv_no_room_allocates_nothing() {
    let mut pool = pool(3);
    pool.allocate(A, "t", &tokens(0..8)).expect("two blocks");
    let before = pool.stats();
    assert_eq!(pool.allocate(B, "t", &tokens(0..9)), Err(KvError::NoRoom { needed: 3, available: 1 }));
    assert_eq!(pool.block_table(B), None);
    assert_eq!(pool.grow(A, 13), Err(KvError::NoRoom { needed: 2, available: 1 }));
    assert_eq!((pool.block_table(A).map(<[BlockId]>::len), pool.len_of(A)), (Some(2), Some(8)));
    assert_eq!(pool.stats(), before, "not even the prefix counts moved");
    pool.assert_consistent();
}

#[test]
fn kv_prefix_hit_reuses_exactly_the_full_blocks_and_reports_covered_tokens() {
    let mut pool = pool(8);
    let first = tokens(0..10);
    pool.allocate(A, "t", &first).expect("room");
    assert_eq!(pool.cache_full_blocks(A, &first), Ok(2), "two full blocks; the partial third is not keyed");
    let a = pool.block_table(A).expect("held").to_vec();

    let mut second = tokens(0..8);
    second.extend([100, 101, 102, 103, 104]);
    let looked: PrefixMatch = pool.lookup_prefix("t", &second);
    assert_eq!((looked.blocks.as_slice(), looked.tokens), (&a[..2], 8));
    let found = pool.allocate(B, "t", &second).expect("room");
    assert_eq!(found, looked);
    let b = pool.block_table(B).expect("held").to_vec();
    assert_eq!(b.len(), 4);
    assert_eq!(&b[..2], &a[..2], "the shared blocks");
    assert!(!a.contains(&b[2]) && !a.contains(&b[3]), "the rest is its own");
    let stats = pool.stats();
    assert_eq!((stats.blocks_used, stats.prefix_hit_tokens, stats.prefix_miss_tokens), (5, 8, 10 + 5));

    let mut diverging = tokens(0..4);
    diverging.extend([9, 9, 9, 9, 9]);
    assert_eq!(pool.lookup_prefix("t", &diverging).tokens, 4, "only the block before they differ");
    assert_eq!(pool.lookup_prefix("t", &[7, 1, 2, 3, 4, 5]).tokens, 0, "a different first token");
    pool.assert_consistent();
}

#[test]
fn kv_prefix_match_leaves_the_last_prompt_token_to_compute() {
    let mut pool = pool(8);
    written(&mut pool, A, "t", &tokens(0..8));
    let found = pool.allocate(B, "t", &tokens(0..8)).expect("room");
    assert_eq!(found.tokens, 4, "the second block is computed again for the last token's logits");
    assert_eq!(pool.lookup_prefix("t", &tokens(0..9)).tokens, 8);
    assert_eq!(pool.lookup_prefix("t", &[]).tokens, 0);
}

#[test]
fn kv_partial_block_is_never_shared() {
    let mut pool = pool(8);
    pool.allocate(A, "t", &tokens(0..6)).expect("room");
    assert_eq!(pool.cache_full_blocks(A, &tokens(0..6)), Ok(1));
    assert_eq!(pool.lookup_prefix("t", &tokens(0..20)).tokens, 4, "the half-filled block is A's alone");
    pool.grow(A, 8).expect("room");
    assert_eq!(pool.cache_full_blocks(A, &tokens(0..8)), Ok(1), "once full, it is keyed");
    assert_eq!(pool.lookup_prefix("t", &tokens(0..20)).tokens, 8);
    assert_eq!(pool.cache_full_blocks(A, &tokens(0..9)), Err(KvError::BeyondAllocation { seq: A, len: 8, tokens: 9 }));
}

#[test]
fn kv_prefix_is_reused_within_its_tenant_only() {
    let mut pool = pool(8);
    written(&mut pool, A, "t1", &tokens(0..9));
    assert_eq!(pool.lookup_prefix("t1", &tokens(0..9)).tokens, 8);
    assert_eq!(pool.lookup_prefix("t2", &tokens(0..9)).tokens, 0);
}

#[test]
fn kv_sequences_sharing_a_prefix_keep_its_blocks_until_both_are_freed() {
    let mut pool = pool(8);
    written(&mut pool, A, "t", &tokens(0..9));
    let shared = pool.block_table(A).expect("held")[..2].to_vec();
    pool.allocate(B, "t", &tokens(0..10)).expect("room");
    assert_eq!(pool.stats().blocks_used, 4, "two shared, one last block each");

    pool.free(A).expect("held");
    assert_eq!(pool.block_table(B).map(|t| t[..2].to_vec()), Some(shared.clone()));
    let stats = pool.stats();
    assert_eq!((stats.blocks_used, stats.blocks_cached, stats.blocks_free), (3, 0, 5), "B still holds them");
    pool.assert_consistent();

    pool.free(B).expect("held");
    let stats = pool.stats();
    assert_eq!((stats.blocks_used, stats.blocks_cached, stats.blocks_free), (0, 2, 6), "kept for later prompts");
    assert_eq!(pool.lookup_prefix("t", &tokens(0..9)).blocks, shared);
    pool.assert_consistent();
}

#[test]
fn kv_cached_blocks_are_evicted_least_recently_released_first() {
    let mut pool = pool(4);
    let (first, second) = (tokens(0..5), tokens(50..55));
    cached(&mut pool, A, "t", &first);
    cached(&mut pool, B, "t", &second);
    assert_eq!((pool.stats().blocks_cached, pool.stats().blocks_free), (2, 2));
    assert!(pool.can_admit(16), "cached blocks count as room");

    pool.allocate(C, "t", &tokens(100..111)).expect("two free blocks and one evicted");
    assert_eq!(pool.lookup_prefix("t", &first).tokens, 0, "the older release went");
    assert_eq!(pool.lookup_prefix("t", &second).tokens, 4, "the newer one stays");
    assert_eq!(pool.stats().evictions, 1);
    pool.assert_consistent();
}

#[test]
fn kv_a_sequences_last_blocks_are_evicted_before_its_first() {
    let mut pool = pool(5);
    let prompt = tokens(0..13);
    cached(&mut pool, A, "t", &prompt);
    assert_eq!(pool.stats().blocks_cached, 3);
    pool.allocate(B, "t", &tokens(100..109)).expect("two free, one evicted");
    assert_eq!(pool.lookup_prefix("t", &prompt).tokens, 8, "the third block went, the first two stay");
}

#[test]
fn kv_prefix_misses_once_its_blocks_are_evicted() {
    let mut pool = pool(3);
    let prompt = tokens(0..9);
    cached(&mut pool, A, "t", &prompt);
    pool.allocate(B, "other", &tokens(0..12)).expect("evicts both cached blocks");
    pool.free(B).expect("held");
    let found = pool.allocate(C, "t", &prompt).expect("room");
    assert_eq!(found.tokens, 0);
    let stats = pool.stats();
    assert_eq!((stats.prefix_hit_tokens, stats.prefix_miss_tokens, stats.evictions), (0, 9 + 12 + 9, 2));
    pool.assert_consistent();
}

#[test]
fn kv_never_fits_refuses_what_an_empty_pool_cannot_hold() {
    let mut pool = pool(4);
    assert!(!pool.never_fits(16));
    assert!(pool.never_fits(17));
    assert!(pool.never_fits(usize::MAX), "no overflow");
    assert!(!pool.never_fits(0));
    pool.allocate(A, "t", &tokens(0..9)).expect("room");
    assert!(pool.can_admit(4) && !pool.can_admit(5), "one block left");
    assert!(!pool.never_fits(16), "what waits for room is not refused");
}

#[test]
fn kv_unknown_and_repeated_sequences_are_errors_not_panics() {
    let mut pool = pool(4);
    assert_eq!(pool.free(A), Err(KvError::UnknownSequence(A)));
    assert_eq!(pool.grow(A, 1), Err(KvError::UnknownSequence(A)));
    assert_eq!(pool.cache_full_blocks(A, &[1]), Err(KvError::UnknownSequence(A)));
    pool.allocate(A, "t", &[1, 2]).expect("room");
    assert_eq!(pool.allocate(A, "t", &[1, 2]), Err(KvError::SequenceExists(A)));
    assert_eq!(pool.grow(A, usize::MAX), Err(KvError::NoRoom { needed: usize::MAX / BS, available: 3 }));
    pool.assert_consistent();
}

#[test]
fn kv_preemption_takes_the_youngest_sequence_of_the_tenant_holding_most_blocks() {
    let holding = |seq, tenant, admitted, blocks| Holding { seq: SeqId(seq), tenant, admitted, blocks };
    let running =
        [holding(1, "alone", 1, 5), holding(2, "many", 2, 2), holding(4, "many", 4, 2), holding(3, "many", 3, 2)];
    assert_eq!(preemption_victim(&running), Some(SeqId(4)), "6 blocks over 5; its youngest");
    let mut reversed = running;
    reversed.reverse();
    assert_eq!(preemption_victim(&reversed), Some(SeqId(4)), "order does not matter");
    let tie = [holding(1, "a", 1, 3), holding(2, "b", 5, 3), holding(3, "a", 3, 1), holding(4, "b", 2, 1)];
    assert_eq!(preemption_victim(&tie), Some(SeqId(2)), "a tie goes to the younger work");
    assert_eq!(preemption_victim(&[]), None);

    let mut pool = pool(16);
    pool.allocate(A, "alone", &tokens(0..20)).expect("room");
    pool.allocate(B, "many", &tokens(0..12)).expect("room");
    pool.allocate(C, "many", &tokens(0..12)).expect("room");
    assert_eq!((pool.blocks_held_by("alone"), pool.blocks_held_by("many"), pool.blocks_held_by("none")), (5, 6, 0));
    assert_eq!(pool.holdings().iter().map(|h| h.seq).collect::<Vec<_>>(), [A, B, C], "in admission order");
    assert_eq!(pool.preemption_victim(), Some(C));
}

/// Random allocations, growth, caching, frees and lookups over a small vocabulary (so that
/// prompts share prefixes often) keep the pool's records consistent, and every reused block
/// holds exactly the tokens, and the tenant, of the prompt that reuses it.
#[test]
fn kv_random_operations_keep_the_pool_consistent() {
    for seed in 0..20 {
        let mut rng = Rng(seed);
        let mut pool = pool(12);
        // Per running sequence: its tenant and tokens; per block keyed by a test sequence: the
        // tenant and every token up to the block's end.
        let mut running: HashMap<SeqId, (&str, Vec<u32>)> = HashMap::new();
        let mut written: HashMap<BlockId, (&str, Vec<u32>)> = HashMap::new();
        let mut next_seq = 0;
        for step in 0..1500 {
            let context = format!("seed {seed}, step {step}");
            let seqs: Vec<SeqId> = running.keys().copied().collect();
            let pick = (!seqs.is_empty()).then(|| seqs[rng.below(seqs.len())]);
            match (rng.below(5), pick) {
                (0 | 1, _) | (_, None) => {
                    let tenant = ["t1", "t2"][rng.below(2)];
                    let prompt: Vec<u32> = (0..rng.below(20)).map(|_| rng.below(2) as u32).collect();
                    next_seq += 1;
                    let seq = SeqId(next_seq);
                    let looked = pool.lookup_prefix(tenant, &prompt);
                    match pool.allocate(seq, tenant, &prompt) {
                        Ok(found) => {
                            assert_eq!(found, looked, "{context}");
                            assert!(found.tokens < prompt.len().max(1), "{context}");
                            for (i, block) in found.blocks.iter().enumerate() {
                                let expected = (tenant, prompt[..(i + 1) * BS].to_vec());
                                assert_eq!(written.get(block), Some(&expected), "{context}: block {i}");
                            }
                            let table = pool.block_table(seq).expect("just allocated");
                            for fresh in &table[found.blocks.len()..] {
                                written.remove(fresh);
                            }
                            running.insert(seq, (tenant, prompt));
                        }
                        Err(KvError::NoRoom { .. }) => {
                            assert!(!pool.can_admit(prompt.len()), "{context}");
                            if let Some(victim) = pool.preemption_victim() {
                                pool.free(victim).expect("running");
                                running.remove(&victim);
                            }
                        }
                        Err(e) => panic!("{context}: {e}"),
                    }
                }
                (2, Some(seq)) => {
                    let held = pool.block_table(seq).expect("running").len();
                    let (_, tokens) = running.get_mut(&seq).expect("running");
                    let new_len = tokens.len() + rng.below(6);
                    match pool.grow(seq, new_len) {
                        Ok(()) => {
                            tokens.resize_with(new_len, || rng.below(2) as u32);
                            let table = pool.block_table(seq).expect("running");
                            for fresh in &table[held..] {
                                written.remove(fresh);
                            }
                        }
                        Err(KvError::NoRoom { .. }) => assert_eq!(pool.block_table(seq).map(<[_]>::len), Some(held)),
                        Err(e) => panic!("{context}: {e}"),
                    }
                }
                (3, Some(seq)) => {
                    let (tenant, tokens) = &running[&seq];
                    let upto = rng.below(tokens.len() + 1);
                    pool.cache_full_blocks(seq, &tokens[..upto]).expect("within its room");
                    let table = pool.block_table(seq).expect("running");
                    for (i, block) in table.iter().enumerate().take(upto / BS) {
                        written.entry(*block).or_insert_with(|| (*tenant, tokens[..(i + 1) * BS].to_vec()));
                    }
                }
                (_, Some(seq)) => {
                    pool.free(seq).expect("running");
                    running.remove(&seq);
                }
            }
            pool.assert_consistent();
            assert_eq!(pool.stats().sequences, running.len(), "{context}");
        }
        let stats = pool.stats();
        assert!(stats.prefix_hit_tokens > 0 && stats.evictions > 0, "seed {seed} exercised reuse: {stats:?}");
    }
}

#[test]
fn kv_a_fork_shares_the_full_blocks_and_copies_a_partly_filled_one() {
    let mut pool = pool(8);
    pool.allocate(A, "t", &tokens(0..10)).expect("room");
    let copy = pool.fork(A, B).expect("room").expect("the third block is partly filled");
    let (parent, child) = (pool.block_table(A).expect("held").to_vec(), pool.block_table(B).expect("held").to_vec());
    assert_eq!(parent[..2], child[..2], "the full blocks are shared");
    assert_eq!(copy, (parent[2], child[2]), "the partly filled one is copied to a block of its own");
    assert_ne!(parent[2], child[2]);
    assert_eq!((pool.len_of(B), pool.stats().blocks_used), (Some(10), 4));
    pool.grow(B, 13).expect("room");
    pool.grow(A, 11).expect("room");
    assert_eq!(pool.block_table(A).map(<[BlockId]>::len), Some(3), "each grows on its own");
    pool.free(A).expect("held");
    assert_eq!(pool.block_table(B).map(<[BlockId]>::len), Some(4), "the child keeps the shared blocks");
    pool.assert_consistent();
    pool.free(B).expect("held");
    assert_eq!(pool.stats().blocks_used, 0);
    pool.assert_consistent();
}

#[test]
fn kv_a_fork_of_whole_blocks_copies_nothing_and_a_full_pool_refuses_a_copy() {
    let mut pool = pool(3);
    pool.allocate(A, "t", &tokens(0..8)).expect("room");
    assert_eq!(pool.fork(A, B), Ok(None), "two full blocks: all shared");
    pool.allocate(C, "t", &tokens(0..3)).expect("the last block");
    assert_eq!(pool.fork(C, SeqId(4)), Err(KvError::NoRoom { needed: 1, available: 0 }));
    assert_eq!(pool.fork(SeqId(9), SeqId(5)), Err(KvError::UnknownSequence(SeqId(9))));
    assert_eq!(pool.fork(A, B), Err(KvError::SequenceExists(B)));
    assert_eq!(pool.stats().sequences, 3, "a refused fork adds nothing");
    pool.assert_consistent();
}
