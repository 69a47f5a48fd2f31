//! Replica groups of one database: the default set (`replicas:`) and named
//! ones (`replica_groups:`), addressed on the hot path by a copyable
//! [`GroupId`] resolved from the rule's group name.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;
use tracing::debug;

use super::ReplicaSet;

/// One replica group of a database: index 0 is the default set, 1.. the
/// named groups in name order. Cheap to copy into every routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(u16);

impl GroupId {
    /// The database's `replicas:` set.
    pub const DEFAULT: GroupId = GroupId(0);

    pub fn named(index: usize) -> GroupId {
        GroupId(u16::try_from(index + 1).expect("fewer than 65535 replica groups"))
    }
}

/// A named group's replica set.
pub struct NamedGroup {
    pub name: Arc<str>,
    pub set: ReplicaSet,
}

/// The named replica groups of one (database, user) pair; the default set
/// stays `DatabasePools::replicas`.
pub struct ReplicaGroups {
    /// Sorted by name (they come from a `BTreeMap`), looked up by scan: a
    /// database has a handful of groups at most.
    named: Vec<NamedGroup>,
    /// Group names rules asked for that this database lacks, logged once each.
    unknown_seen: Mutex<HashSet<Arc<str>>>,
    unknown_counter: IntCounter,
}

impl ReplicaGroups {
    pub fn new(named: Vec<NamedGroup>, unknown_counter: IntCounter) -> Self {
        ReplicaGroups {
            named,
            unknown_seen: Mutex::default(),
            unknown_counter,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// The group a `group:<name>` rule target means here; a name this
    /// database does not define falls back to the default set.
    pub fn id_of(&self, name: &str, database: &str) -> GroupId {
        if let Some(i) = self.named.iter().position(|g| &*g.name == name) {
            return GroupId::named(i);
        }
        self.unknown_counter.inc();
        let mut seen = self.unknown_seen.lock().unwrap();
        if !seen.contains(name) {
            debug!(
                database,
                group = name,
                "rule targets a replica group this database does not define; using its default replicas"
            );
            seen.insert(Arc::from(name));
        }
        GroupId::DEFAULT
    }

    /// The named group `id`; `None` for the default id or an unknown one.
    pub fn get(&self, id: GroupId) -> Option<&ReplicaSet> {
        let index = usize::from(id.0).checked_sub(1)?;
        self.named.get(index).map(|g| &g.set)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NamedGroup> {
        self.named.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_group_means_the_default_set_and_is_counted() {
        let counter = IntCounter::new("unknown", "test").unwrap();
        let groups = ReplicaGroups::new(Vec::new(), counter.clone());
        assert_eq!(groups.id_of("reports", "app"), GroupId::DEFAULT);
        assert_eq!(groups.id_of("reports", "app"), GroupId::DEFAULT);
        assert_eq!(counter.get(), 2);
        assert!(groups.get(GroupId::named(0)).is_none());
        assert!(groups.get(GroupId::DEFAULT).is_none());
        assert_eq!(groups.unknown_seen.lock().unwrap().len(), 1, "logged once");
    }
}
