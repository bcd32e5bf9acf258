//! Who is admitted next when generations wait for room: tenants take turns, weighted by
//! their share (deficit round robin), and each tenant's own requests keep their order. One
//! tenant with two hundred waiting streams gets its share of the admissions, not two hundred
//! turns before another tenant's one.

use std::collections::{HashMap, VecDeque};

/// A tenant's weight when none is set: every tenant the same.
pub const DEFAULT_SHARE: u32 = 1;

/// Waiting items by tenant, admitted in weighted turns.
#[derive(Debug)]
pub struct FairQueue<T> {
    /// Tenants with something waiting, in turn order; the front one is served next.
    turns: VecDeque<String>,
    waiting: HashMap<String, Tenant<T>>,
    len: usize,
    capacity: usize,
}

#[derive(Debug)]
struct Tenant<T> {
    items: VecDeque<T>,
    share: u32,
    /// Admissions left in this tenant's current turn.
    credit: u32,
}

/// The queue holds `capacity` items already; nothing was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<T> FairQueue<T> {
    /// A queue of at most `capacity` waiting items over all tenants.
    pub fn new(capacity: usize) -> Self {
        Self { turns: VecDeque::new(), waiting: HashMap::new(), len: 0, capacity }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` behind the tenant's other waiting items. `share` (at least 1) is how many
    /// admissions the tenant gets per turn; the latest one given counts.
    pub fn push(&mut self, tenant: &str, share: u32, item: T) -> Result<(), Full> {
        if self.len >= self.capacity {
            return Err(Full);
        }
        let share = share.max(1);
        let waiting = self.waiting.entry(tenant.to_owned()).or_insert_with(|| Tenant {
            items: VecDeque::new(),
            share,
            credit: share,
        });
        if waiting.items.is_empty() {
            self.turns.push_back(tenant.to_owned());
            waiting.credit = share;
        }
        waiting.share = share;
        waiting.items.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The next item to admit, if any wait, and its tenant: the tenant whose turn it is gives
    /// its oldest item; after `share` admissions its turn passes to the next tenant.
    pub fn pop(&mut self) -> Option<(String, T)> {
        let tenant = self.turns.front()?.clone();
        let waiting = self.waiting.get_mut(&tenant)?;
        let item = waiting.items.pop_front()?;
        self.len -= 1;
        waiting.credit = waiting.credit.saturating_sub(1);
        if waiting.items.is_empty() {
            self.turns.pop_front();
            self.waiting.remove(&tenant);
        } else if waiting.credit == 0 {
            waiting.credit = waiting.share;
            self.turns.rotate_left(1);
        }
        Some((tenant, item))
    }

    /// Keeps only the items `keep` accepts (a cancelled request leaves the queue at once).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for waiting in self.waiting.values_mut() {
            waiting.items.retain(&mut keep);
        }
        self.waiting.retain(|_, waiting| !waiting.items.is_empty());
        let waiting = &self.waiting;
        self.turns.retain(|tenant| waiting.contains_key(tenant));
        self.len = self.waiting.values().map(|w| w.items.len()).sum();
    }

    /// Items waiting per tenant, for the runner's status.
    pub fn waiting_by_tenant(&self) -> impl Iterator<Item = (&str, usize)> {
        self.waiting.iter().map(|(tenant, waiting)| (tenant.as_str(), waiting.items.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut FairQueue<u32>) -> Vec<(String, u32)> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn kv_fair_a_tenant_with_many_waiting_does_not_keep_another_waiting() {
        let mut queue = FairQueue::new(1000);
        for i in 0..200 {
            queue.push("big", DEFAULT_SHARE, i).expect("room");
        }
        queue.push("small", DEFAULT_SHARE, 0).expect("room");
        let order = drain(&mut queue);
        let small = order.iter().position(|(t, _)| t == "small").expect("admitted");
        assert_eq!(small, 1, "the small tenant is admitted second, not 201st");
        let big: Vec<u32> = order.iter().filter(|(t, _)| t == "big").map(|(_, i)| *i).collect();
        assert_eq!(big, (0..200).collect::<Vec<_>>(), "a tenant's own requests keep their order");
    }

    #[test]
    fn kv_fair_shares_weight_the_turns() {
        let mut queue = FairQueue::new(100);
        for i in 0..6 {
            queue.push("gold", 2, i).expect("room");
            queue.push("basic", 1, i).expect("room");
        }
        let tenants: Vec<String> = drain(&mut queue).into_iter().map(|(t, _)| t).take(9).collect();
        assert_eq!(tenants, ["gold", "gold", "basic", "gold", "gold", "basic", "gold", "gold", "basic"]);
    }

    #[test]
    fn kv_fair_is_bounded_and_drops_cancelled_items_at_once() {
        let mut queue = FairQueue::new(3);
        queue.push("a", 1, 1).expect("room");
        queue.push("a", 1, 2).expect("room");
        queue.push("b", 1, 3).expect("room");
        assert_eq!(queue.push("c", 1, 4), Err(Full), "nothing past the capacity");
        queue.retain(|&i| i != 3);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.waiting_by_tenant().count(), 1, "a tenant with nothing left has no turn");
        assert_eq!(drain(&mut queue), [("a".to_owned(), 1), ("a".to_owned(), 2)]);
        assert!(queue.is_empty() && queue.pop().is_none());
        queue.push("c", 0, 5).expect("room again");
        assert_eq!(queue.pop(), Some(("c".to_owned(), 5)), "a share of 0 counts as 1");
    }

    #[test]
    fn kv_fair_a_tenant_that_returns_joins_the_back_of_the_turns() {
        let mut queue = FairQueue::new(10);
        queue.push("a", 1, 1).expect("room");
        queue.push("b", 1, 2).expect("room");
        assert_eq!(queue.pop(), Some(("a".to_owned(), 1)));
        queue.push("a", 1, 3).expect("room");
        assert_eq!(drain(&mut queue), [("b".to_owned(), 2), ("a".to_owned(), 3)]);
    }
}
