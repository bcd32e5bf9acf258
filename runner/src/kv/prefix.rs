//! Keys of full blocks. A block's key is the hash of its parent's key and its own tokens, so
//! it stands for every token from the start of the sequence up to the end of the block: two
//! prompts share a block only if they agree on everything before it too.
//!
//! The hash is SHA-256, not a fast 64-bit hash: a collision would hand one prompt the keys and
//! values of another, so keys must not be forgeable by a tenant choosing its tokens. Hashing
//! 16 tokens costs well under a microsecond, next to milliseconds of attention per block.
//!
//! Chains start from the tenant: a prefix is reused only within the tenant that wrote it. A
//! cache shared across tenants would tell one tenant, by the time to its first token, whether
//! another tenant sent a given prompt.

use sha2::{Digest as _, Sha256};

/// The identity of a full block's contents: its tokens and all before them, within a tenant.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey([u8; 32]);

impl std::fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockKey({})", hex::encode(&self.0[..8]))
    }
}

impl BlockKey {
    /// The start of `tenant`'s chains: the parent of every first block.
    pub fn root(tenant: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"modelgate kv prefix v1\0");
        hash.update((tenant.len() as u64).to_le_bytes());
        hash.update(tenant.as_bytes());
        Self(hash.finalize().into())
    }

    /// The key of the block after this one that holds `tokens` (a full block: every block of a
    /// pool has the same size, so the lengths need not be hashed).
    pub fn child(&self, tokens: &[u32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(self.0);
        for token in tokens {
            hash.update(token.to_le_bytes());
        }
        Self(hash.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_key_depends_on_every_earlier_token_and_the_tenant() {
        let root = BlockKey::root("t1");
        let a = root.child(&[1, 2]).child(&[3, 4]);
        assert_eq!(a, BlockKey::root("t1").child(&[1, 2]).child(&[3, 4]));
        assert_ne!(a, root.child(&[9, 2]).child(&[3, 4]), "an earlier block differs");
        assert_ne!(a, BlockKey::root("t2").child(&[1, 2]).child(&[3, 4]), "another tenant");
        assert_ne!(BlockKey::root("t").child(&[1]), BlockKey::root("t").child(&[256]));
    }
}
