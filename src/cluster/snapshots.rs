//! Shared copies of client parameter values, so that like clients hold the
//! same `Arc` and a server checked out by one of them after another knows it
//! matches by comparing pointers (see `ServerConn::params_synced_to`).

use std::sync::{Arc, Mutex, Weak};

/// Tracked parameter values (name, value), as a client set them.
pub type ParamValues = Arc<Values>;
type Values = Vec<(String, String)>;

/// Distinct value sets kept at most: clients with unique values (an
/// application_name per process, say) would otherwise grow the list.
const MAX_SNAPSHOTS: usize = 64;

#[derive(Default)]
pub struct ParamSnapshots {
    known: Mutex<Vec<Weak<Values>>>,
}

impl ParamSnapshots {
    /// An equal snapshot another client holds, else `values` (remembered
    /// for the clients after it while there is room).
    pub fn intern(&self, values: ParamValues) -> ParamValues {
        let mut known = self.known.lock().unwrap();
        if let Some(found) = known
            .iter()
            .filter_map(Weak::upgrade)
            .find(|k| *k == values)
        {
            return found;
        }
        if known.len() >= MAX_SNAPSHOTS {
            known.retain(|w| w.strong_count() > 0);
        }
        if known.len() < MAX_SNAPSHOTS {
            known.push(Arc::downgrade(&values));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(app: &str) -> ParamValues {
        Arc::new(vec![("application_name".into(), app.into())])
    }

    #[test]
    fn equal_values_share_one_snapshot() {
        let snapshots = ParamSnapshots::default();
        let first = snapshots.intern(values("a"));
        let second = snapshots.intern(values("a"));
        assert!(Arc::ptr_eq(&first, &second));
        let other = snapshots.intern(values("b"));
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn the_list_stays_bounded_and_forgets_dropped_snapshots() {
        let snapshots = ParamSnapshots::default();
        let held: Vec<ParamValues> = (0..MAX_SNAPSHOTS)
            .map(|i| snapshots.intern(values(&i.to_string())))
            .collect();
        let unique = snapshots.intern(values("one too many"));
        assert!(!Arc::ptr_eq(
            &unique,
            &snapshots.intern(values("one too many"))
        ));
        drop(held);
        let a = snapshots.intern(values("after"));
        assert!(Arc::ptr_eq(&a, &snapshots.intern(values("after"))));
        assert!(snapshots.known.lock().unwrap().len() <= MAX_SNAPSHOTS);
    }
}
