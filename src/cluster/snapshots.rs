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
    /// The snapshot equal to `base` followed by `adopted`: one another client
    /// holds, else a new one (remembered for the clients after it while
    /// there is room). Compared in place, so a login like an earlier one
    /// allocates nothing here.
    pub fn intern_extended(&self, base: &ParamValues, adopted: &[(&str, &str)]) -> ParamValues {
        let wanted = || {
            base.iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .chain(adopted.iter().copied())
        };
        let equal = |known: &Values| {
            known.len() == base.len() + adopted.len()
                && known
                    .iter()
                    .zip(wanted())
                    .all(|((kn, kv), (n, v))| kn == n && kv == v)
        };
        let mut known = self.known.lock().unwrap();
        if let Some(found) = known.iter().filter_map(Weak::upgrade).find(|k| equal(k)) {
            return found;
        }
        let values: ParamValues = if adopted.is_empty() {
            base.clone()
        } else {
            Arc::new(
                wanted()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            )
        };
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

    impl ParamSnapshots {
        fn intern(&self, values: ParamValues) -> ParamValues {
            self.intern_extended(&values, &[])
        }
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
    fn adopted_values_extend_the_base_and_match_in_place() {
        let snapshots = ParamSnapshots::default();
        let base = values("a");
        let first = snapshots.intern_extended(&base, &[("TimeZone", "UTC")]);
        assert_eq!(
            *first,
            vec![
                ("application_name".to_string(), "a".to_string()),
                ("TimeZone".to_string(), "UTC".to_string()),
            ]
        );
        let again = snapshots.intern_extended(&values("a"), &[("TimeZone", "UTC")]);
        assert!(Arc::ptr_eq(&first, &again));
        let already_whole = snapshots.intern(first.as_ref().clone().into());
        assert!(Arc::ptr_eq(&first, &already_whole));
        for different in [
            snapshots.intern_extended(&values("a"), &[("TimeZone", "GMT")]),
            snapshots.intern_extended(&values("a"), &[]),
            snapshots.intern_extended(&values("b"), &[("TimeZone", "UTC")]),
        ] {
            assert!(!Arc::ptr_eq(&first, &different));
        }
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
