//! What the core keeps per user (the part of the username after the expiry): how many
//! allocations they hold, for `turn.user_quota`, and the bandwidth bucket their allocations
//! share ([`bandwidth`](super::bandwidth)). A user's entry lives while they hold an
//! allocation; each allocation keeps its user's slot, so the data path finds the bucket
//! without hashing the name.

use std::collections::HashMap;

use super::bandwidth::Bucket;

#[derive(Debug, Default)]
pub(crate) struct Users {
    by_name: HashMap<Box<str>, u32>,
    slots: Vec<User>,
    free: Vec<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct User {
    /// Allocations held (an entry with none is free).
    pub(crate) allocations: u32,
    pub(crate) bucket: Bucket,
}

impl Users {
    /// Allocations `name` holds.
    pub(crate) fn held(&self, name: &str) -> u32 {
        self.by_name
            .get(name)
            .map_or(0, |&i| self.slots[i as usize].allocations)
    }

    /// Counts one more allocation for `name`; returns its slot.
    pub(crate) fn add(&mut self, name: &str) -> u32 {
        let slot = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(User::default());
                        (self.slots.len() - 1) as u32
                    }
                };
                self.slots[i as usize] = User::default();
                self.by_name.insert(name.into(), i);
                i
            }
        };
        self.slots[slot as usize].allocations += 1;
        slot
    }

    /// Counts one allocation less for `name` (in `slot`); the entry goes with the last.
    pub(crate) fn remove(&mut self, name: &str, slot: u32) {
        let Some(user) = self.slots.get_mut(slot as usize) else {
            return;
        };
        user.allocations = user.allocations.saturating_sub(1);
        if user.allocations == 0 {
            self.by_name.remove(name);
            self.free.push(slot);
        }
    }

    /// The user in `slot`.
    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut User> {
        self.slots.get_mut(slot as usize)
    }

    /// Whether no user holds an allocation.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
