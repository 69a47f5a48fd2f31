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

pub struct AnalysisCache {
    shards: Vec<Mutex<LruCache<Box<str>, Arc<TextAnalysis>>>>,
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

    fn shard(&self, sql: &str) -> Option<MutexGuard<'_, LruCache<Box<str>, Arc<TextAnalysis>>>> {
        if self.shards.is_empty() {
            return None;
        }
        let index = (self.hasher.hash_one(sql) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave the LRU inconsistent for our use.
        Some(
            self.shards[index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    pub fn get(&self, sql: &str) -> Option<Arc<TextAnalysis>> {
        self.shard(sql)?.get(sql).cloned()
    }

    pub fn insert(&self, sql: &str, analysis: Arc<TextAnalysis>) {
        if sql.len() > MAX_CACHED_TEXT {
            return;
        }
        if let Some(mut shard) = self.shard(sql) {
            shard.put(Box::from(sql), analysis);
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
            cache.insert(&format!("SELECT {i}"), analysis());
        }
        assert!(cache.len() <= cache.capacity());
        assert!(
            cache.capacity() >= 32 && cache.capacity() < 48,
            "{}",
            cache.capacity()
        );
        assert!(
            cache.get("SELECT 999").is_some(),
            "most recent entry is kept"
        );
        assert!(cache.get("SELECT 0").is_none(), "oldest entry was evicted");
    }

    #[test]
    fn huge_texts_are_not_cached() {
        let cache = AnalysisCache::new(8);
        let huge = format!("SELECT {}", "1".repeat(MAX_CACHED_TEXT));
        cache.insert(&huge, analysis());
        assert!(cache.get(&huge).is_none());
        cache.insert("SELECT 1", analysis());
        assert!(cache.get("SELECT 1").is_some());
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = AnalysisCache::new(0);
        cache.insert("SELECT 1", analysis());
        assert!(cache.get("SELECT 1").is_none());
        assert_eq!(cache.len(), 0);
    }
}
