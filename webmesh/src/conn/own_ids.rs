//! A hasher for maps keyed by ids this side made (counters, tokens): cheaper than the default
//! SipHash, which defends against keys a peer chooses. Keys a peer chooses still go in maps with
//! the default hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from ids this side issued. A peer's id only ever looks one up.
pub(crate) type OwnIdMap<V> = HashMap<u64, V, BuildHasherDefault<OwnIdHasher>>;

/// Fibonacci hashing of a `u64`: a multiplication by an odd constant. The low bits (the bucket)
/// of consecutive ids are all distinct, and the high bits (hashbrown's tag) mix every bit of the
/// id.
#[derive(Default)]
pub(crate) struct OwnIdHasher(u64);

impl Hasher for OwnIdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_land_in_distinct_buckets_and_keep_their_values() {
        let mut map = OwnIdMap::default();
        for id in 1..=4096u64 {
            map.insert(id, id * 2);
        }
        for id in 1..=4096u64 {
            assert_eq!(map.remove(&id), Some(id * 2));
        }
        assert!(map.is_empty());
        // The low 12 bits of 4,096 consecutive ids' hashes: all distinct.
        let buckets: std::collections::HashSet<u64> = (1..=4096u64)
            .map(|id| {
                let mut h = OwnIdHasher::default();
                h.write_u64(id);
                h.finish() & 4095
            })
            .collect();
        assert_eq!(buckets.len(), 4096);
    }
}
