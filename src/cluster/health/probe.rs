//! Probing one server: reachability, recovery state, WAL positions, lag.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::query::first_row;
use super::HealthError;
use crate::backend::{ConnectOptions, LiveOptions, ServerConn};

/// One query that works on primaries and replicas alike.
/// `pg_current_wal_lsn()` fails during recovery, hence the CASE.
pub const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END, \
     pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
     EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())";

/// A WAL position (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = HealthError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || HealthError::BadReply(format!("not an LSN: {text:?}"));
        let (high, low) = text.split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a reachable server told us.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFacts {
    pub in_recovery: bool,
    /// The primary's write position (primaries only).
    pub current_lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Primary's LSN minus replay LSN; None when either is unknown.
    pub lag_bytes: Option<u64>,
    /// Replay delay; zero when everything received has been replayed.
    pub lag: Option<Duration>,
    /// Round trip of the probe query (connection setup excluded).
    pub latency: Duration,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResult {
    Reachable(ServerFacts),
    Unreachable { error: String },
}

impl ProbeResult {
    pub fn facts(&self) -> Option<&ServerFacts> {
        match self {
            ProbeResult::Reachable(facts) => Some(facts),
            ProbeResult::Unreachable { .. } => None,
        }
    }
}

/// Builds the facts from the probe row's text columns.
pub fn facts_from_row(
    row: &[Option<String>],
    primary_lsn: Option<Lsn>,
    latency: Duration,
) -> Result<ServerFacts, HealthError> {
    if row.len() != 5 {
        return Err(HealthError::BadReply(format!(
            "expected 5 columns, got {}",
            row.len()
        )));
    }
    let lsn = |i: usize| row[i].as_deref().map(str::parse::<Lsn>).transpose();
    let in_recovery = match row[0].as_deref() {
        Some("t") => true,
        Some("f") => false,
        other => {
            return Err(HealthError::BadReply(format!(
                "pg_is_in_recovery: {other:?}"
            )))
        }
    };
    let current_lsn = lsn(1)?;
    let receive_lsn = lsn(2)?;
    let replay_lsn = lsn(3)?;
    let replay_delay = row[4]
        .as_deref()
        .map(|s| s.parse::<f64>())
        .transpose()
        .map_err(|_| HealthError::BadReply(format!("replay delay: {:?}", row[4])))?;
    let lag_bytes = match (primary_lsn, replay_lsn) {
        (Some(primary), Some(replayed)) => Some(primary.0.saturating_sub(replayed.0)),
        _ => None,
    };
    let lag = if !in_recovery {
        None
    } else if receive_lsn.is_some() && receive_lsn == replay_lsn {
        // Nothing received is waiting: an idle primary, not a slow replica.
        Some(Duration::ZERO)
    } else {
        replay_delay.map(|secs| Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
    };
    Ok(ServerFacts {
        in_recovery,
        current_lsn,
        receive_lsn,
        replay_lsn,
        lag_bytes,
        lag,
        latency,
    })
}

/// Connects with `opts`, runs the probe query and logs out. `primary_lsn`
/// (the primary's current position, for replicas) gives `lag_bytes`.
pub async fn probe(opts: &ConnectOptions, primary_lsn: Option<Lsn>) -> ProbeResult {
    let mut prober = PgProber::new(opts.clone());
    let result = prober.probe(primary_lsn).await;
    prober.close().await;
    result
}

/// Probes one server over a connection kept between probes.
#[derive(Debug)]
pub struct PgProber {
    /// Read at each new connection, so a reload's credentials reach probes.
    opts: LiveOptions,
    conn: Option<ServerConn>,
}

impl PgProber {
    pub fn new(opts: impl Into<LiveOptions>) -> Self {
        PgProber {
            opts: opts.into(),
            conn: None,
        }
    }

    /// One probe; a kept connection that has gone stale is replaced once
    /// before the server is declared unreachable.
    pub async fn probe(&mut self, primary_lsn: Option<Lsn>) -> ProbeResult {
        let had_conn = self.conn.is_some();
        match self.try_probe(primary_lsn).await {
            Ok(facts) => ProbeResult::Reachable(facts),
            Err(_) if had_conn => match self.try_probe(primary_lsn).await {
                Ok(facts) => ProbeResult::Reachable(facts),
                Err(error) => unreachable(error),
            },
            Err(error) => unreachable(error),
        }
    }

    async fn try_probe(&mut self, primary_lsn: Option<Lsn>) -> Result<ServerFacts, HealthError> {
        let opts = self.opts.get();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => ServerConn::connect(&opts).await?,
        };
        let started = Instant::now();
        let row = tokio::time::timeout(opts.connect_timeout, first_row(&mut conn, PROBE_SQL))
            .await
            .map_err(|_| HealthError::Timeout(opts.connect_timeout))??;
        let latency = started.elapsed();
        // Only a connection that answered cleanly is kept for the next probe.
        self.conn = Some(conn);
        facts_from_row(&row, primary_lsn, latency)
    }

    /// Logs out of the kept connection, if any.
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.terminate().await;
        }
    }
}

fn unreachable(error: HealthError) -> ProbeResult {
    ProbeResult::Unreachable {
        error: error.to_string(),
    }
}
