//! The KV cache's blocks, as bookkeeping: a pool of fixed-size blocks (`block_size` tokens of
//! every layer's keys and values each), block tables per sequence, prefix reuse between
//! sequences, and the choice of whom to preempt when the pool is full. It holds no tensors:
//! the generation scheduler maps a [`BlockId`] to a slice of its per-layer K/V tensors.
//!
//! - [`BlockPool`] (`pool.rs`): allocate, grow and free sequences; a full block whose KV is
//!   written is keyed by its prefix and stays cached after its sequences end, until evicted
//!   least recently used.
//! - [`BlockKey`] (`prefix.rs`): the chained hash that keys a full block by every token up to
//!   and including it.
//! - [`preemption_victim`] (`preempt.rs`): the youngest sequence of the tenant holding the
//!   most blocks.
//! - [`fair::FairQueue`] (`fair.rs`): who is admitted next while requests wait for room: tenants
//!   take turns weighted by their share, each tenant's requests in order.
//!
//! Sizes come from a tenant's `config.json`: every product is checked, and nothing here
//! panics on what a caller passes.

pub mod fair;
mod pool;
mod preempt;
mod prefix;
#[cfg(test)]
mod tests;

pub use pool::{BlockPool, KvStats, PrefixMatch};
pub use preempt::{Holding, preemption_victim};
pub use prefix::BlockKey;

/// Blocks a pool has at most, whatever its budget: a model with a tiny KV (a tenant's
/// `config.json` decides) must not make a huge table of block records (about 12 MiB at this
/// bound, 4 Mi tokens at 16 a block).
pub const MAX_BLOCKS: usize = 1 << 18;

/// A block of the pool: an index into its K/V tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// A sequence (one stream of one request), named by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shape of a model's KV cache, which sizes one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Bytes of one element in the cache's dtype (4 for f32, 2 for f16/bf16).
    pub dtype_bytes: usize,
    /// Tokens in one block.
    pub block_size: usize,
}

impl KvLayout {
    /// Bytes one token's keys and values take over all layers; `None` when it overflows.
    pub fn token_bytes(&self) -> Option<u64> {
        [self.layers, self.kv_heads, self.head_dim, 2, self.dtype_bytes]
            .into_iter()
            .try_fold(1u64, |bytes, n| bytes.checked_mul(u64::try_from(n).ok()?))
    }

    /// Bytes one block takes; `None` when it overflows.
    pub fn block_bytes(&self) -> Option<u64> {
        self.token_bytes()?.checked_mul(u64::try_from(self.block_size).ok()?)
    }
}

/// What the pool refuses. These steer the scheduler (wait, preempt, refuse with 400); they do
/// not reach callers as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not enough free or evictable blocks now; nothing was allocated.
    #[error("the KV cache has {available} blocks to give; {needed} are needed")]
    NoRoom { needed: usize, available: usize },
    #[error("sequence {0} holds no KV blocks")]
    UnknownSequence(SeqId),
    #[error("sequence {0} already holds KV blocks")]
    SequenceExists(SeqId),
    /// More tokens than the sequence was given room for.
    #[error("sequence {seq} has room for {len} tokens, not {tokens}")]
    BeyondAllocation { seq: SeqId, len: usize, tokens: usize },
    /// A dimension is zero, or a block's size overflows.
    #[error("the model's KV layout {0:?} gives no usable block size")]
    Layout(KvLayout),
    #[error("a KV budget of {budget_bytes} bytes holds no block of {block_bytes} bytes")]
    BudgetTooSmall { budget_bytes: u64, block_bytes: u64 },
}
