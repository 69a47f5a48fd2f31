//! pgrelay's own cancel keys: each client gets a (process id, secret) pair that
//! maps to whichever server runs its query right now, and to nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::backend::CancelKey;

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, Entry>>,
}

struct Entry {
    secret: i32,
    slot: Arc<CancelSlot>,
}

/// The server a client is attached to, if any.
#[derive(Default)]
pub struct CancelSlot {
    target: Mutex<Option<CancelKey>>,
}

impl CancelSlot {
    pub fn attach(&self, key: CancelKey) {
        *self.target.lock().unwrap() = Some(key);
    }

    pub fn detach(&self) {
        *self.target.lock().unwrap() = None;
    }

    fn current(&self) -> Option<CancelKey> {
        *self.target.lock().unwrap()
    }
}

/// Removes the client's keys when its session ends.
pub struct Registration<'a> {
    registry: &'a CancelRegistry,
    pub process_id: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.map.lock().unwrap().remove(&self.process_id);
    }
}

impl CancelRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self) -> Registration<'_> {
        let mut rng = rand::rng();
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock().unwrap();
        let process_id = loop {
            let candidate = rng.random_range(1..i32::MAX);
            if !map.contains_key(&candidate) {
                break candidate;
            }
        };
        let secret = rng.random::<i32>();
        map.insert(
            process_id,
            Entry {
                secret,
                slot: slot.clone(),
            },
        );
        Registration {
            registry: self,
            process_id,
            secret,
            slot,
        }
    }

    /// The server to cancel for a client's keys; `None` for wrong keys or an
    /// idle client. The secret is compared in constant time.
    pub fn lookup(&self, process_id: i32, secret: i32) -> Option<CancelKey> {
        use subtle::ConstantTimeEq;
        let map = self.map.lock().unwrap();
        let entry = map.get(&process_id)?;
        if bool::from(entry.secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) {
            entry.slot.current()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reaches_only_the_matching_attached_server() {
        let registry = CancelRegistry::new();
        let a = registry.register();
        let b = registry.register();
        assert_ne!(a.process_id, b.process_id);
        let key = CancelKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 42,
            secret_key: 7,
        };
        assert_eq!(registry.lookup(a.process_id, a.secret), None, "idle client");
        a.slot.attach(key);
        assert_eq!(registry.lookup(a.process_id, a.secret), Some(key));
        assert_eq!(
            registry.lookup(a.process_id, a.secret.wrapping_add(1)),
            None
        );
        assert_eq!(registry.lookup(b.process_id, b.secret), None);
        a.slot.detach();
        assert_eq!(registry.lookup(a.process_id, a.secret), None);
        let pid = a.process_id;
        drop(a);
        assert!(registry.map.lock().unwrap().get(&pid).is_none());
    }
}
