//! Bounded cache of per-text analyses, sharded so sessions on different cores
//! rarely contend. Locks are held only for the map operation; parsing happens
//! outside them.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use super::text::TextAnalysis;

const SHARDS: usize = 16;

/// Texts longer than this are analysed but not cached, so the cache's memory
/// stays bounded by `capacity × MAX_CACHED_TEXT` even with huge generated queries.
pub const MAX_CACHED_TEXT: usize = 64 * 1024;

/// One shard: texts or literal-free shapes (UTF-8 bytes) to their analyses.
type Shard = LruCache<Box<[u8]>, Arc<TextAnalysis>>;

pub struct AnalysisCache {
    shards: Vec<Mutex<Shard>>,
    /// Picks the shard. Seeded per process like std's SipHash, but several
    /// times cheaper on a statement's length; the shards' own maps already
    /// hash with foldhash (hashbrown's default).
    hasher: foldhash::fast::RandomState,
}

impl AnalysisCache {
    /// `capacity` is the total number of texts kept (at least one per shard, or
    /// nothing at all when zero: caching disabled).
    pub fn new(capacity: usize) -> Self {
        let shard_count = if capacity == 0 {
            0
        } else {
            SHARDS.min(capacity)
        };
        let per_shard = capacity.div_ceil(shard_count.max(1));
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(LruCache::new(
                    NonZeroUsize::new(per_shard).unwrap_or(NonZeroUsize::MIN),
                ))
            })
            .collect();
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &[u8]) -> Option<MutexGuard<'_, Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave the LRU inconsistent for our use.
        Some(
            self.shards[index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The analysis cached under `key` (a text or its literal-free shape,
    /// UTF-8 either way; bytes spare the caller a re-validation).
    pub fn get(&self, key: &[u8]) -> Option<Arc<TextAnalysis>> {
        self.shard(key)?.get(key).cloned()
    }

    pub fn insert(&self, key: &[u8], analysis: Arc<TextAnalysis>) {
        if key.len() > MAX_CACHED_TEXT {
            return;
        }
        if let Some(mut shard) = self.shard(key) {
            shard.put(Box::from(key), analysis);
        }
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Total capacity.
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).cap().get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis() -> Arc<TextAnalysis> {
        Arc::new(TextAnalysis {
            hint: None,
            statements: Vec::new(),
        })
    }

    #[test]
    fn stays_bounded() {
        let cache = AnalysisCache::new(32);
        for i in 0..1000 {
            cache.insert(format!("SELECT {i}").as_bytes(), analysis());
        }
        assert!(cache.len() <= cache.capacity());
        assert!(
            cache.capacity() >= 32 && cache.capacity() < 48,
            "{}",
            cache.capacity()
        );
        assert!(
            cache.get(b"SELECT 999").is_some(),
            "most recent entry is kept"
        );
        assert!(cache.get(b"SELECT 0").is_none(), "oldest entry was evicted");
    }

    #[test]
    fn huge_texts_are_not_cached() {
        let cache = AnalysisCache::new(8);
        let huge = format!("SELECT {}", "1".repeat(MAX_CACHED_TEXT));
        cache.insert(huge.as_bytes(), analysis());
        assert!(cache.get(huge.as_bytes()).is_none());
        cache.insert(b"SELECT 1", analysis());
        assert!(cache.get(b"SELECT 1").is_some());
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = AnalysisCache::new(0);
        cache.insert(b"SELECT 1", analysis());
        assert!(cache.get(b"SELECT 1").is_none());
        assert_eq!(cache.len(), 0);
    }
}
