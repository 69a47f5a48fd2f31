//! Traffic totals per database and their averages over the last stats
//! period, as the console's `SHOW STATS` reports them. The totals are read
//! from the same counters Prometheus exports; the averages need two readings
//! a period apart, so an upkeep task calls [`TrafficWindow::tick`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A database's traffic since start. Times are microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Server connections handed to clients (pool checkouts).
    pub assignments: u64,
    pub transactions: u64,
    pub queries: u64,
    /// Bytes from clients, and to them.
    pub received: u64,
    pub sent: u64,
    pub transaction_us: u64,
    pub query_us: u64,
    /// Time clients waited for a server connection.
    pub wait_us: u64,
    /// Parse messages from clients, Parse messages sent to servers, Binds.
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

impl Traffic {
    pub fn add(&mut self, other: &Traffic) {
        self.assignments += other.assignments;
        self.transactions += other.transactions;
        self.queries += other.queries;
        self.received += other.received;
        self.sent += other.sent;
        self.transaction_us += other.transaction_us;
        self.query_us += other.query_us;
        self.wait_us += other.wait_us;
        self.client_parses += other.client_parses;
        self.server_parses += other.server_parses;
        self.binds += other.binds;
    }

    /// What happened between `earlier` and `self` (counters only grow; a
    /// reading that went backwards, after a pool was dropped, counts as none).
    fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            assignments: self.assignments.saturating_sub(earlier.assignments),
            transactions: self.transactions.saturating_sub(earlier.transactions),
            queries: self.queries.saturating_sub(earlier.queries),
            received: self.received.saturating_sub(earlier.received),
            sent: self.sent.saturating_sub(earlier.sent),
            transaction_us: self.transaction_us.saturating_sub(earlier.transaction_us),
            query_us: self.query_us.saturating_sub(earlier.query_us),
            wait_us: self.wait_us.saturating_sub(earlier.wait_us),
            client_parses: self.client_parses.saturating_sub(earlier.client_parses),
            server_parses: self.server_parses.saturating_sub(earlier.server_parses),
            binds: self.binds.saturating_sub(earlier.binds),
        }
    }
}

/// Averages over one stats period: counts and bytes per second, times per
/// item (a transaction's, a query's, an assignment's wait) in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficAverages {
    pub assignments_per_second: u64,
    pub transactions_per_second: u64,
    pub queries_per_second: u64,
    pub received_per_second: u64,
    pub sent_per_second: u64,
    pub transaction_us: u64,
    pub query_us: u64,
    pub wait_us: u64,
    pub client_parses_per_second: u64,
    pub server_parses_per_second: u64,
    pub binds_per_second: u64,
}

impl TrafficAverages {
    fn over(delta: &Traffic, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        let per_second = |n: u64| (n as f64 / seconds).round() as u64;
        let per_item = |us: u64, items: u64| us.checked_div(items).unwrap_or(0);
        TrafficAverages {
            assignments_per_second: per_second(delta.assignments),
            transactions_per_second: per_second(delta.transactions),
            queries_per_second: per_second(delta.queries),
            received_per_second: per_second(delta.received),
            sent_per_second: per_second(delta.sent),
            transaction_us: per_item(delta.transaction_us, delta.transactions),
            query_us: per_item(delta.query_us, delta.queries),
            wait_us: per_item(delta.wait_us, delta.assignments),
            client_parses_per_second: per_second(delta.client_parses),
            server_parses_per_second: per_second(delta.server_parses),
            binds_per_second: per_second(delta.binds),
        }
    }
}

/// The averages of the last complete stats period, per database.
#[derive(Debug)]
pub struct TrafficWindow {
    period: Duration,
    state: Mutex<WindowState>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// The reading that opened the current period.
    opened: Option<(Instant, HashMap<String, Traffic>)>,
    last_period: HashMap<String, TrafficAverages>,
}

impl TrafficWindow {
    pub fn new(period: Duration) -> Self {
        TrafficWindow {
            period: period.max(Duration::from_secs(1)),
            state: Mutex::new(WindowState::default()),
        }
    }

    /// Takes a reading of every database's totals. Once a period has passed
    /// since the period's opening reading, its averages replace the last
    /// period's and this reading opens the next.
    pub fn tick(&self, now: Instant, totals: HashMap<String, Traffic>) {
        let mut state = self.state.lock().unwrap();
        let Some((opened_at, opening)) = &state.opened else {
            state.opened = Some((now, totals));
            return;
        };
        let elapsed = now.saturating_duration_since(*opened_at);
        if elapsed < self.period {
            return;
        }
        let zero = Traffic::default();
        let averages = totals
            .iter()
            .map(|(db, now_total)| {
                let before = opening.get(db).unwrap_or(&zero);
                let delta = now_total.since(before);
                (db.clone(), TrafficAverages::over(&delta, elapsed))
            })
            .collect();
        state.last_period = averages;
        state.opened = Some((now, totals));
    }

    /// The last complete period's averages for `database` (zeros before the
    /// first period ends).
    pub fn averages(&self, database: &str) -> TrafficAverages {
        let state = self.state.lock().unwrap();
        state.last_period.get(database).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(transactions: u64, transaction_us: u64, received: u64) -> Traffic {
        Traffic {
            assignments: transactions,
            transactions,
            queries: 2 * transactions,
            received,
            sent: 3 * received,
            transaction_us,
            query_us: transaction_us / 2,
            wait_us: 10 * transactions,
            client_parses: transactions,
            server_parses: transactions / 2,
            binds: 3 * transactions,
        }
    }

    #[test]
    fn averages_cover_the_last_complete_period() {
        let window = TrafficWindow::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let totals = |t: Traffic| HashMap::from([("app".to_string(), t)]);
        window.tick(t0, totals(traffic(100, 50_000, 1_000)));
        assert_eq!(window.averages("app"), TrafficAverages::default());
        // Within the period: nothing changes yet.
        window.tick(
            t0 + Duration::from_secs(5),
            totals(traffic(150, 60_000, 2_000)),
        );
        assert_eq!(window.averages("app"), TrafficAverages::default());
        // 200 transactions of 1,000 us each and 20,000 bytes in 10 s.
        window.tick(
            t0 + Duration::from_secs(10),
            totals(traffic(300, 250_000, 21_000)),
        );
        let avg = window.averages("app");
        assert_eq!(avg.transactions_per_second, 20);
        assert_eq!(avg.queries_per_second, 40);
        assert_eq!(avg.assignments_per_second, 20);
        assert_eq!(avg.received_per_second, 2_000);
        assert_eq!(avg.sent_per_second, 6_000);
        assert_eq!(avg.transaction_us, 1_000);
        assert_eq!(avg.query_us, 250);
        assert_eq!(avg.wait_us, 10);
        assert_eq!(
            (
                avg.client_parses_per_second,
                avg.server_parses_per_second,
                avg.binds_per_second
            ),
            (20, 10, 60)
        );
        assert_eq!(window.averages("other"), TrafficAverages::default());
        // A quiet period averages to zero, not to the period before it.
        window.tick(
            t0 + Duration::from_secs(20),
            totals(traffic(300, 250_000, 21_000)),
        );
        assert_eq!(window.averages("app"), TrafficAverages::default());
    }

    #[test]
    fn a_database_first_seen_mid_period_counts_from_zero() {
        let window = TrafficWindow::new(Duration::from_secs(1));
        let t0 = Instant::now();
        window.tick(t0, HashMap::new());
        window.tick(
            t0 + Duration::from_secs(2),
            HashMap::from([("new".to_string(), traffic(4, 400, 0))]),
        );
        let avg = window.averages("new");
        assert_eq!(avg.transactions_per_second, 2);
        assert_eq!(avg.transaction_us, 100);
    }
}
