//! Runtime state kept by name across table swaps: a server's health, its idle connections, a
//! route's or a pool's counters. Each table gets, index for index, the values of the names it
//! holds: the same value for a name an earlier table held, a new one for a name it adds. A value
//! is forgotten once no snapshot holds it. Runs on the change path only; the hot path reaches
//! values through the snapshot's vectors, never through this map.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Name -> value, for every value some snapshot still holds.
#[derive(Debug)]
pub struct Kept<K, V> {
    known: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V> Kept<K, V> {
    /// Starts handing out values for one new table; values no snapshot holds any more are
    /// dropped first.
    pub fn begin(&self) -> Reconcile<'_, K, V> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, value| value.strong_count() > 0);
        Reconcile { known }
    }
}

/// One table's reconciliation, holding the map's lock until dropped.
pub struct Reconcile<'a, K, V> {
    known: MutexGuard<'a, HashMap<K, Weak<V>>>,
}

impl<K: Hash + Eq, V> Reconcile<'_, K, V> {
    /// The live value for `key`, or a new one from `make`.
    pub fn get(&mut self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(value) = self.known.get(&key).and_then(Weak::upgrade) {
            return value;
        }
        let value = Arc::new(make());
        self.known.insert(key, Arc::downgrade(&value));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_value_while_held_and_is_forgotten_after() {
        let kept: Kept<&str, u32> = Kept::default();
        let first = kept.begin().get("a", || 1);
        let again = kept.begin().get("a", || 2);
        assert!(Arc::ptr_eq(&first, &again));
        drop((first, again));
        let fresh = kept.begin().get("a", || 3);
        assert_eq!(*fresh, 3);
    }
}
