//! Creating a metric and registering it in one step.

use prometheus::core::Collector;
use prometheus::{Counter, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::MetricsError;

fn registered<C: Collector + Clone + 'static>(
    r: &Registry,
    made: prometheus::Result<C>,
) -> Result<C, MetricsError> {
    let c = made.map_err(MetricsError::Register)?;
    r.register(Box::new(c.clone()))
        .map_err(MetricsError::Register)?;
    Ok(c)
}

pub(super) fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    registered(r, IntGauge::with_opts(Opts::new(name, help)))
}

/// A gauge of fractional values (seconds).
pub(super) fn float_gauge(r: &Registry, name: &str, help: &str) -> Result<Gauge, MetricsError> {
    registered(r, Gauge::with_opts(Opts::new(name, help)))
}

/// A counter of fractional amounts (seconds).
pub(super) fn float_counter(r: &Registry, name: &str, help: &str) -> Result<Counter, MetricsError> {
    registered(r, Counter::with_opts(Opts::new(name, help)))
}

pub(super) fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

pub(super) fn float_gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, MetricsError> {
    registered(r, GaugeVec::new(Opts::new(name, help), labels))
}

pub(super) fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

pub(super) fn float_counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<CounterVec, MetricsError> {
    registered(r, CounterVec::new(Opts::new(name, help), labels))
}

pub(super) fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(r, HistogramVec::new(opts, labels))
}
