//! The pool of KV blocks and the block tables of the sequences that hold them.
//!
//! A block is in one of three states:
//! - **used**: in at least one sequence's table (`refs > 0`);
//! - **cached**: in no table, but keyed: its KV is a known prefix, kept for a later sequence
//!   until its room is needed, then evicted least recently released first;
//! - **free**: in no table and unkeyed.
//!
//! Only full blocks are keyed and shared, and a full block is never written again (a sequence
//! only appends, into its last, partly filled block, which is its own). Shared blocks are
//! therefore immutable and need no copy-on-write.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use super::{BlockId, BlockKey, Holding, KvError, KvLayout, MAX_BLOCKS, SeqId, preemption_victim};

/// The pool's counts, for the runner's Status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvStats {
    pub blocks_total: usize,
    /// In some sequence's table.
    pub blocks_used: usize,
    /// Unkeyed and unreferenced.
    pub blocks_free: usize,
    /// Unreferenced but keyed, reusable by a matching prompt until evicted.
    pub blocks_cached: usize,
    pub sequences: usize,
    /// Prompt tokens whose KV came from cached blocks.
    pub prefix_hit_tokens: u64,
    /// Prompt tokens that had to be computed.
    pub prefix_miss_tokens: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
}

/// The cached blocks a prompt starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMatch {
    /// The blocks, in order; their KV covers the first `tokens` tokens of the prompt.
    pub blocks: Vec<BlockId>,
    pub tokens: usize,
    /// The last block's key (the tenant's root when none matched).
    last: BlockKey,
}

#[derive(Debug, Default)]
struct Block {
    /// Sequences whose tables hold it.
    refs: usize,
    key: Option<BlockKey>,
    /// When it was last released, while cached: its place in `cached`.
    released: u64,
}

#[derive(Debug)]
struct Seq {
    tenant: String,
    admitted: u64,
    blocks: Vec<BlockId>,
    /// Tokens it has room for.
    len: usize,
    /// Its leading blocks that are keyed (reused, or cached since), and the last one's key.
    keyed: usize,
    chain: BlockKey,
}

#[derive(Debug)]
pub struct BlockPool {
    block_size: usize,
    block_bytes: u64,
    blocks: Vec<Block>,
    free: Vec<BlockId>,
    /// Cached blocks by release time: the first is evicted first.
    cached: BTreeMap<u64, BlockId>,
    /// Keyed blocks (cached or used) by key; at most one entry per block.
    prefix: HashMap<BlockKey, BlockId>,
    seqs: HashMap<SeqId, Seq>,
    /// Ticks for release times and admission order.
    clock: u64,
    stats: KvStats,
}

impl BlockPool {
    /// As many blocks of `layout` as fit in `budget_bytes` (at most [`MAX_BLOCKS`]).
    pub fn new(layout: &KvLayout, budget_bytes: u64) -> Result<Self, KvError> {
        let block_bytes = layout.block_bytes().filter(|b| *b > 0).ok_or(KvError::Layout(*layout))?;
        let fit = usize::try_from(budget_bytes / block_bytes).unwrap_or(usize::MAX).min(MAX_BLOCKS);
        if fit == 0 {
            return Err(KvError::BudgetTooSmall { budget_bytes, block_bytes });
        }
        let n = u32::try_from(fit).map_err(|_| KvError::Layout(*layout))?;
        Ok(Self {
            block_size: layout.block_size,
            block_bytes,
            blocks: (0..n).map(|_| Block::default()).collect(),
            // Reversed, so blocks are handed out from id 0 up.
            free: (0..n).rev().map(BlockId).collect(),
            cached: BTreeMap::new(),
            prefix: HashMap::new(),
            seqs: HashMap::new(),
            clock: 0,
            stats: KvStats { blocks_total: fit, blocks_free: fit, ..KvStats::default() },
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes the pool's tensors take: what the runner's memory budget counts for it.
    pub fn bytes(&self) -> u64 {
        // At most the budget it was made from, so no overflow.
        self.block_bytes.saturating_mul(self.blocks.len() as u64)
    }

    /// Blocks that hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Whether a sequence of `total_tokens` (prompt and completion) could not fit even in an
    /// empty pool: a request to refuse before it is queued.
    pub fn never_fits(&self, total_tokens: usize) -> bool {
        self.blocks_for(total_tokens) > self.blocks.len()
    }

    /// Whether `total_tokens` fit now in free and evictable blocks, without counting on any
    /// prefix reuse (which only lowers the need).
    pub fn can_admit(&self, total_tokens: usize) -> bool {
        self.blocks_for(total_tokens) <= self.available()
    }

    /// Blocks that an allocation can take now: free ones, then cached ones evicted.
    fn available(&self) -> usize {
        self.free.len() + self.cached.len()
    }

    /// The cached blocks `tokens` (a prompt of `tenant`) starts with. The match always leaves
    /// at least the prompt's last token to compute, since its logits start the generation.
    pub fn lookup_prefix(&self, tenant: &str, tokens: &[u32]) -> PrefixMatch {
        let mut found = PrefixMatch { blocks: Vec::new(), tokens: 0, last: BlockKey::root(tenant) };
        let reusable = tokens.len().saturating_sub(1) / self.block_size;
        for block in tokens.chunks_exact(self.block_size).take(reusable) {
            let key = found.last.child(block);
            let Some(&id) = self.prefix.get(&key) else { break };
            found.blocks.push(id);
            found.tokens += self.block_size;
            found.last = key;
        }
        found
    }

    /// Gives `seq` room for its `prompt`, reusing the cached blocks the prompt starts with.
    /// Answers the match: the scheduler computes the prompt's KV from `tokens` on. On
    /// [`KvError::NoRoom`] nothing changed.
    pub fn allocate(&mut self, seq: SeqId, tenant: &str, prompt: &[u32]) -> Result<PrefixMatch, KvError> {
        if self.seqs.contains_key(&seq) {
            return Err(KvError::SequenceExists(seq));
        }
        let found = self.lookup_prefix(tenant, prompt);
        let fresh = self.blocks_for(prompt.len()) - found.blocks.len();
        // Matched blocks that are cached now stop being evictable once this sequence holds them.
        let matched_cached = found.blocks.iter().filter(|b| self.block(**b).refs == 0).count();
        let available = self.available() - matched_cached;
        if fresh > available {
            return Err(KvError::NoRoom { needed: fresh, available });
        }
        for &id in &found.blocks {
            self.hold(id);
        }
        let mut blocks = found.blocks.clone();
        blocks.extend((0..fresh).map(|_| self.take()));
        self.clock += 1;
        let entry = Seq {
            tenant: tenant.to_owned(),
            admitted: self.clock,
            blocks,
            len: prompt.len(),
            keyed: found.blocks.len(),
            chain: found.last,
        };
        self.seqs.insert(seq, entry);
        self.stats.prefix_hit_tokens = self.stats.prefix_hit_tokens.saturating_add(found.tokens as u64);
        let missed = (prompt.len() - found.tokens) as u64;
        self.stats.prefix_miss_tokens = self.stats.prefix_miss_tokens.saturating_add(missed);
        Ok(found)
    }

    /// Gives `seq` room for `new_len` tokens in all (a smaller length changes nothing). On
    /// [`KvError::NoRoom`] nothing changed.
    pub fn grow(&mut self, seq: SeqId, new_len: usize) -> Result<(), KvError> {
        let held = self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))?.blocks.len();
        let more = self.blocks_for(new_len).saturating_sub(held);
        if more > self.available() {
            return Err(KvError::NoRoom { needed: more, available: self.available() });
        }
        let taken: Vec<BlockId> = (0..more).map(|_| self.take()).collect();
        let entry = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSequence(seq))?;
        entry.blocks.extend(taken);
        entry.len = entry.len.max(new_len);
        Ok(())
    }

    /// Keys the full blocks among `tokens`, the tokens of `seq` whose KV is now written (its
    /// prompt and completion so far), so later prompts that start the same way reuse them.
    /// Answers how many blocks became reusable. A block whose key another block already has
    /// stays the sequence's own.
    pub fn cache_full_blocks(&mut self, seq: SeqId, tokens: &[u32]) -> Result<usize, KvError> {
        let entry = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSequence(seq))?;
        if tokens.len() > entry.len {
            return Err(KvError::BeyondAllocation { seq, len: entry.len, tokens: tokens.len() });
        }
        let mut added = 0;
        for (i, block) in tokens.chunks_exact(self.block_size).enumerate().skip(entry.keyed) {
            let key = entry.chain.child(block);
            let id = entry.blocks[i];
            if let Entry::Vacant(slot) = self.prefix.entry(key) {
                slot.insert(id);
                self.blocks[id.0 as usize].key = Some(key);
                added += 1;
            }
            entry.chain = key;
            entry.keyed = i + 1;
        }
        Ok(added)
    }

    /// Starts `child` as a copy of `parent` so far (OpenAI's `n` > 1: completions of one
    /// prompt): it shares the parent's full blocks, which are never written again, and gets a
    /// block of its own for a partly filled last one. Answers that copy, `(from, to)`, whose
    /// slots the scheduler copies before either sequence writes on. On [`KvError::NoRoom`]
    /// nothing changed.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<Option<(BlockId, BlockId)>, KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::SequenceExists(child));
        }
        let from = self.seqs.get(&parent).ok_or(KvError::UnknownSequence(parent))?;
        let partial = from.len % self.block_size != 0;
        if partial && self.available() == 0 {
            return Err(KvError::NoRoom { needed: 1, available: 0 });
        }
        let mut entry = Seq {
            tenant: from.tenant.clone(),
            admitted: 0,
            blocks: from.blocks.clone(),
            len: from.len,
            keyed: from.keyed,
            chain: from.chain,
        };
        let last = if partial { entry.blocks.pop() } else { None };
        for &id in &entry.blocks {
            self.hold(id);
        }
        let copy = last.map(|from| {
            let to = self.take();
            entry.blocks.push(to);
            (from, to)
        });
        self.clock += 1;
        entry.admitted = self.clock;
        self.seqs.insert(child, entry);
        Ok(copy)
    }

    /// Releases every block of `seq`; keyed ones stay cached. Its last blocks are released
    /// first, so they are evicted before its first ones, which more prompts share.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let entry = self.seqs.remove(&seq).ok_or(KvError::UnknownSequence(seq))?;
        for &id in entry.blocks.iter().rev() {
            self.release(id);
        }
        Ok(())
    }

    /// The blocks of `seq`, in token order.
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.blocks.as_slice())
    }

    /// Tokens `seq` has room for.
    pub fn len_of(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.len)
    }

    /// Blocks in the tables of `tenant`'s sequences (a shared block counts for each).
    pub fn blocks_held_by(&self, tenant: &str) -> usize {
        self.seqs.values().filter(|s| s.tenant == tenant).map(|s| s.blocks.len()).sum()
    }

    /// The running sequences, with admission order as this pool saw their allocations.
    pub fn holdings(&self) -> Vec<Holding<'_>> {
        let mut all: Vec<Holding<'_>> = self
            .seqs
            .iter()
            .map(|(&seq, s)| Holding { seq, tenant: &s.tenant, admitted: s.admitted, blocks: s.blocks.len() })
            .collect();
        all.sort_by_key(|h| h.admitted);
        all
    }

    /// The sequence to preempt: see [`preemption_victim`].
    pub fn preemption_victim(&self) -> Option<SeqId> {
        preemption_victim(&self.holdings())
    }

    pub fn stats(&self) -> KvStats {
        KvStats {
            blocks_free: self.free.len(),
            blocks_cached: self.cached.len(),
            blocks_used: self.blocks.len() - self.free.len() - self.cached.len(),
            sequences: self.seqs.len(),
            ..self.stats
        }
    }

    fn block(&self, id: BlockId) -> &Block {
        &self.blocks[id.0 as usize]
    }

    /// One more sequence holds `id`; a cached block stops being evictable.
    fn hold(&mut self, id: BlockId) {
        let block = &mut self.blocks[id.0 as usize];
        if block.refs == 0 {
            self.cached.remove(&block.released);
        }
        block.refs += 1;
    }

    /// One sequence fewer holds `id`; unheld, it is cached if keyed, else free.
    fn release(&mut self, id: BlockId) {
        let block = &mut self.blocks[id.0 as usize];
        block.refs = block.refs.saturating_sub(1);
        if block.refs > 0 {
            return;
        }
        if block.key.is_some() {
            self.clock += 1;
            block.released = self.clock;
            self.cached.insert(self.clock, id);
        } else {
            self.free.push(id);
        }
    }

    /// An unkeyed block held once: a free one, else the least recently released cached one,
    /// its key forgotten. Callers check [`Self::available`] first.
    fn take(&mut self) -> BlockId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let (_, id) = self.cached.pop_first().expect("room was checked before taking blocks; this is a bug");
                if let Some(key) = self.blocks[id.0 as usize].key.take() {
                    self.prefix.remove(&key);
                }
                self.stats.evictions += 1;
                id
            }
        };
        self.blocks[id.0 as usize].refs = 1;
        id
    }
}

#[cfg(test)]
impl BlockPool {
    /// Checks that the pool's records agree with each other; panics (in tests) where not.
    pub(super) fn assert_consistent(&self) {
        let mut refs = vec![0usize; self.blocks.len()];
        for seq in self.seqs.values() {
            assert!(seq.len <= seq.blocks.len() * self.block_size, "room for its tokens");
            assert_eq!(seq.blocks.len(), self.blocks_for(seq.len), "no spare blocks");
            for id in &seq.blocks {
                refs[id.0 as usize] += 1;
            }
        }
        for (i, block) in self.blocks.iter().enumerate() {
            assert_eq!(block.refs, refs[i], "block {i}'s count matches the tables");
            if let Some(key) = block.key {
                assert_eq!(self.prefix.get(&key), Some(&BlockId(i as u32)), "keyed block {i} is in the map");
            }
        }
        assert_eq!(self.prefix.len(), self.blocks.iter().filter(|b| b.key.is_some()).count());
        for id in &self.free {
            let block = self.block(*id);
            assert!(block.refs == 0 && block.key.is_none(), "free block {id:?} is unheld and unkeyed");
        }
        for (released, id) in &self.cached {
            let block = self.block(*id);
            assert!(block.refs == 0 && block.key.is_some() && block.released == *released, "cached {id:?}");
        }
        let stats = self.stats();
        assert_eq!(stats.blocks_used, refs.iter().filter(|r| **r > 0).count());
        assert_eq!(stats.blocks_used + stats.blocks_free + stats.blocks_cached, stats.blocks_total);
    }
}
