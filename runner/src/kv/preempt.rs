//! Whom to preempt when running sequences cannot grow: the youngest sequence of the tenant
//! holding the most blocks. One tenant with 200 streams then gives blocks back before another
//! tenant's single stream loses any, and within a tenant the work most recently started (the
//! least to recompute) goes first.

use std::collections::HashMap;

use super::SeqId;

/// A running sequence as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding<'a> {
    pub seq: SeqId,
    pub tenant: &'a str,
    /// When it was admitted, in the scheduler's order: larger is younger.
    pub admitted: u64,
    /// Blocks in its table (a block shared by two sequences counts for each).
    pub blocks: usize,
}

/// The sequence to preempt, if any runs. Ties between tenants go to the one whose youngest
/// sequence is younger, so the choice does not depend on the order of `running`.
pub fn preemption_victim(running: &[Holding<'_>]) -> Option<SeqId> {
    // Per tenant: blocks held, and its youngest sequence as (admitted, seq).
    let mut tenants: HashMap<&str, (usize, (u64, SeqId))> = HashMap::new();
    for holding in running {
        let youngest = (holding.admitted, holding.seq);
        let entry = tenants.entry(holding.tenant).or_insert((0, youngest));
        entry.0 = entry.0.saturating_add(holding.blocks);
        entry.1 = entry.1.max(youngest);
    }
    tenants.into_values().max().map(|(_, (_, seq))| seq)
}
