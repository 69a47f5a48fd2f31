//! The console's `DISABLE` and `ENABLE`: databases that take no new client
//! logins. Asked once per login, so a plain lock is enough.

use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct DisabledDatabases {
    names: Mutex<BTreeSet<String>>,
}

impl DisabledDatabases {
    pub fn is_disabled(&self, database: &str) -> bool {
        self.lock().contains(database)
    }

    /// Refuses new logins to `database`; clients already in stay. Disabling
    /// it again changes nothing, as in PgBouncer.
    pub fn disable(&self, database: &str) {
        self.lock().insert(database.to_string());
    }

    /// Takes logins to `database` again; a no-op when it was not disabled.
    pub fn enable(&self, database: &str) {
        self.lock().remove(database);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_and_enable_one_database_at_a_time() {
        let gate = DisabledDatabases::default();
        assert!(!gate.is_disabled("a"));
        gate.disable("a");
        gate.disable("a");
        assert!(gate.is_disabled("a") && !gate.is_disabled("b"));
        gate.enable("b");
        assert!(gate.is_disabled("a"));
        gate.enable("a");
        assert!(!gate.is_disabled("a"));
    }
}
