//! Replica health gauges, labelled by (database, endpoint). Endpoints come from
//! configuration and discovery, never from clients; remove an endpoint's series
//! with [`super::Metrics::remove_replica`] when discovery drops it.

use std::time::Duration;

use prometheus::{Gauge, GaugeVec, IntGauge, IntGaugeVec, Registry};

use super::register::{float_gauge_vec, gauge_vec};
use super::MetricsError;

const LABELS: &[&str] = &["database", "endpoint"];

pub(super) struct ReplicaFamilies {
    healthy: IntGaugeVec,
    lag_seconds: GaugeVec,
    lag_bytes: IntGaugeVec,
    weight: IntGaugeVec,
}

impl ReplicaFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ReplicaFamilies {
            healthy: gauge_vec(
                r,
                "pgrelay_replica_healthy",
                "1 if the replica currently receives reads, else 0.",
                LABELS,
            )?,
            lag_seconds: float_gauge_vec(
                r,
                "pgrelay_replica_lag_seconds",
                "Replication lag of a replica in seconds, as last measured.",
                LABELS,
            )?,
            lag_bytes: gauge_vec(
                r,
                "pgrelay_replica_lag_bytes",
                "Replication lag of a replica in bytes of WAL behind the primary.",
                LABELS,
            )?,
            weight: gauge_vec(
                r,
                "pgrelay_replica_weight",
                "Load-balancing weight of a replica.",
                LABELS,
            )?,
        })
    }

    pub(super) fn handles(&self, database: &str, endpoint: &str) -> ReplicaMetrics {
        let labels = [database, endpoint];
        ReplicaMetrics {
            healthy: self.healthy.with_label_values(&labels),
            lag_seconds: self.lag_seconds.with_label_values(&labels),
            lag_bytes: self.lag_bytes.with_label_values(&labels),
            weight: self.weight.with_label_values(&labels),
        }
    }

    /// Drops the endpoint's series; `false` if it had none.
    pub(super) fn remove(&self, database: &str, endpoint: &str) -> bool {
        let labels = [database, endpoint];
        // All four are created together by `handles`, so one result speaks for all.
        let existed = self.healthy.remove_label_values(&labels).is_ok();
        let _ = self.lag_seconds.remove_label_values(&labels);
        let _ = self.lag_bytes.remove_label_values(&labels);
        let _ = self.weight.remove_label_values(&labels);
        existed
    }
}

/// Handles for one replica endpoint, for the health checker and the balancer.
#[derive(Clone, Debug)]
pub struct ReplicaMetrics {
    healthy: IntGauge,
    lag_seconds: Gauge,
    lag_bytes: IntGauge,
    weight: IntGauge,
}

impl ReplicaMetrics {
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    pub fn set_lag(&self, lag: Duration, wal_bytes_behind: u64) {
        self.lag_seconds.set(lag.as_secs_f64());
        self.lag_bytes
            .set(i64::try_from(wal_bytes_behind).unwrap_or(i64::MAX));
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.set(i64::from(weight));
    }
}
