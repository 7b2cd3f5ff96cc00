//! Which stored items Clerk's sweep listed: what the deletion check needs, in 8 bytes per live
//! item stored when the run started (at most 16 while the set is being built), not the item's id.
//!
//! Each id is kept as a 64-bit fingerprint (a hash keyed afresh for every run) whose lowest bit
//! records whether Clerk listed it. Fingerprints are spread over 4,096 buckets by their top bits,
//! each bucket a sorted `Vec<u64>` searched by bisection: no hash table's empty slots, and a
//! bucket grows by doubling, so while the set is built it holds at most twice what it needs, and
//! each bucket is shrunk to fit once the store's scan is done.
//!
//! Two ids may share a fingerprint. Then Clerk listing one marks both, and the other, if Clerk
//! no longer has it, is not a deletion candidate this run: a collision can only keep an item one
//! run longer, since the next run draws other keys. It can never delete one: every candidate is
//! still confirmed gone by Clerk itself before it is tombstoned.

use std::hash::{BuildHasher, RandomState};

const BUCKET_BITS: u32 = 12;
const LISTED: u64 = 1;

pub(super) struct Listed {
    /// Keyed randomly for each run.
    keys: RandomState,
    buckets: Vec<Vec<u64>>,
}

impl Listed {
    pub(super) fn new() -> Self {
        Self {
            keys: RandomState::new(),
            buckets: (0..1 << BUCKET_BITS).map(|_| Vec::new()).collect(),
        }
    }

    fn fingerprint(&self, id: &str) -> u64 {
        self.keys.hash_one(id) & !LISTED
    }

    fn bucket(fingerprint: u64) -> usize {
        (fingerprint >> (u64::BITS - BUCKET_BITS)) as usize
    }

    /// Adds a stored item, not listed yet. Call `sealed` once every item is in.
    pub(super) fn insert(&mut self, id: &str) {
        let fingerprint = self.fingerprint(id);
        self.buckets[Self::bucket(fingerprint)].push(fingerprint);
    }

    /// Ready for `mark` and `get`: every bucket sorted and shrunk to fit.
    pub(super) fn sealed(mut self) -> Self {
        for bucket in &mut self.buckets {
            bucket.sort_unstable();
            bucket.shrink_to_fit();
        }
        self
    }

    /// The entries holding `id`'s fingerprint (usually one, none for an id not stored).
    fn entries(&mut self, id: &str) -> &mut [u64] {
        let fingerprint = self.fingerprint(id);
        let bucket = &mut self.buckets[Self::bucket(fingerprint)];
        let start = bucket.partition_point(|&entry| entry & !LISTED < fingerprint);
        let end = start + bucket[start..].partition_point(|&entry| entry & !LISTED == fingerprint);
        &mut bucket[start..end]
    }

    /// Clerk listed `id`. Nothing happens for an id that was not stored.
    pub(super) fn mark(&mut self, id: &str) {
        for entry in self.entries(id) {
            *entry |= LISTED;
        }
    }

    /// `Some(listed)` for an id stored when the run started, `None` for one stored since.
    pub(super) fn get(&mut self, id: &str) -> Option<bool> {
        let entries = self.entries(id);
        (!entries.is_empty()).then(|| entries.iter().any(|&entry| entry & LISTED != 0))
    }

    /// Bytes held, bucket headers included.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Vec<u64>>()
            + self
                .buckets
                .iter()
                .map(|bucket| bucket.capacity() * std::mem::size_of::<u64>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_was_stored_and_what_clerk_listed() {
        let mut listed = Listed::new();
        for n in 0..1_000 {
            listed.insert(&format!("user_{n}"));
        }
        let mut listed = listed.sealed();
        for n in (0..1_000).step_by(3) {
            listed.mark(&format!("user_{n}"));
        }
        listed.mark("user_never_stored");
        for n in 0..1_000 {
            assert_eq!(listed.get(&format!("user_{n}")), Some(n % 3 == 0), "{n}");
        }
        assert_eq!(listed.get("user_never_stored"), None);
    }

    #[test]
    fn a_shared_fingerprint_keeps_both_items() {
        let mut listed = Listed::new();
        // Two entries with one fingerprint, as two colliding ids would leave.
        let fingerprint = listed.fingerprint("user_a");
        listed.buckets[Listed::bucket(fingerprint)].extend([fingerprint, fingerprint]);
        let mut listed = listed.sealed();
        listed.mark("user_a");
        assert!(listed.entries("user_a").iter().all(|&e| e & LISTED != 0));
        assert_eq!(listed.get("user_a"), Some(true));
    }

    #[test]
    fn a_million_items_take_at_most_16_bytes_each_while_built_and_8_after() {
        let mut listed = Listed::new();
        let mut peak = 0;
        for n in 0..1_000_000 {
            listed.insert(&format!("user_2bench{n:07}"));
            if n % 50_000 == 0 {
                peak = peak.max(listed.bytes());
            }
        }
        peak = peak.max(listed.bytes());
        assert!(peak <= 16 * 1_000_000, "{peak} bytes while built");
        let listed = listed.sealed();
        let fixed = (1 << BUCKET_BITS) * std::mem::size_of::<Vec<u64>>();
        assert_eq!(listed.bytes(), fixed + 8 * 1_000_000);
    }
}
