//! A small least-recently-used cache with a fixed capacity.

use std::collections::HashMap;
use std::hash::Hash;

/// One slot of the cache's intrusive list.
struct Entry<K, V> {
    key: K,
    value: V,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A cache that evicts the entry used longest ago once it is full.
pub struct LruCache<K, V> {
    capacity: usize,
    slots: Vec<Entry<K, V>>,
    index: HashMap<K, usize>,
    head: Option<usize>,
    tail: Option<usize>,
}

impl<K: Hash + Eq + Clone, V> LruCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        LruCache {
            capacity: capacity.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            head: None,
            tail: None,
        }
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The value for `key`, marking it as the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let slot = *self.index.get(key)?;
        self.detach(slot);
        self.push_front(slot);
        Some(&self.slots[slot].value)
    }

    /// Store `value` under `key`, evicting the least recently used entry when full.
    pub fn put(&mut self, key: K, value: V) {
        if let Some(&slot) = self.index.get(&key) {
            self.slots[slot].value = value;
            self.detach(slot);
            self.push_front(slot);
            return;
        }
        let slot = if self.slots.len() < self.capacity {
            self.slots.push(Entry { key: key.clone(), value, prev: None, next: None });
            self.slots.len() - 1
        } else {
            let oldest = self.tail.expect("a full cache has a tail");
            self.detach(oldest);
            let old_key = std::mem::replace(&mut self.slots[oldest].key, key.clone());
            self.index.remove(&old_key);
            self.slots[oldest].value = value;
            oldest
        };
        self.index.insert(key, slot);
        self.push_front(slot);
    }

    fn detach(&mut self, slot: usize) {
        let (prev, next) = (self.slots[slot].prev, self.slots[slot].next);
        match prev {
            Some(p) => self.slots[p].next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.slots[n].prev = prev,
            None => self.tail = prev,
        }
        self.slots[slot].prev = None;
        self.slots[slot].next = None;
    }

    fn push_front(&mut self, slot: usize) {
        self.slots[slot].next = self.head;
        if let Some(h) = self.head {
            self.slots[h].prev = Some(slot);
        }
        self.head = Some(slot);
        if self.tail.is_none() {
            self.tail = Some(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LruCache;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = LruCache::new(2);
        cache.put("a", 1);
        cache.put("b", 2);
        assert_eq!(cache.get(&"a"), Some(&1));
        cache.put("c", 3);
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.len(), 2);
    }
}
