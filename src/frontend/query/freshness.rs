//! Read-your-writes: after a client's write, its reads go where the write is
//! visible — the primary for a while (`window`), or replicas that have
//! replayed past the write's WAL position (`lsn`).

use super::*;
use crate::cluster::health::{first_row, Lsn};
use crate::cluster::{ReadYourWrites, ReplicaEndpoint};

/// The latest write a client made.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriteMark {
    at: Instant,
    /// The primary's WAL position after the write committed, in `lsn` mode.
    lsn: Option<Lsn>,
}

/// What a read must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    Any,
    PrimaryOnly,
    AtLeast(Lsn),
}

/// Without a known LSN (the position query failed), `lsn` mode keeps reads
/// on the primary this long after a write.
const LSN_UNKNOWN_WINDOW: Duration = Duration::from_secs(1);

impl Session<'_> {
    fn read_your_writes(&self) -> ReadYourWrites {
        self.pools
            .replicas
            .as_ref()
            .map_or(ReadYourWrites::Off, |r| r.read_your_writes)
    }

    pub(super) fn freshness(&self) -> Freshness {
        let Some(mark) = self.write_mark else {
            return Freshness::Any;
        };
        let recent = |window: Duration| mark.at.elapsed() < window;
        match (self.read_your_writes(), mark.lsn) {
            (ReadYourWrites::Off, _) => Freshness::Any,
            (ReadYourWrites::Window(w), _) if recent(w) => Freshness::PrimaryOnly,
            (ReadYourWrites::Window(_), _) => Freshness::Any,
            (ReadYourWrites::Lsn, Some(lsn)) => Freshness::AtLeast(lsn),
            (ReadYourWrites::Lsn, None) if recent(LSN_UNKNOWN_WINDOW) => Freshness::PrimaryOnly,
            (ReadYourWrites::Lsn, None) => Freshness::Any,
        }
    }

    /// Called with the primary server of a finished write transaction, before
    /// it goes back to the pool.
    pub(super) async fn mark_write(&mut self, conn: &mut crate::backend::ServerConn) {
        let lsn = match self.read_your_writes() {
            ReadYourWrites::Off => return,
            ReadYourWrites::Window(_) => None,
            ReadYourWrites::Lsn => {
                let row = tokio::time::timeout(
                    Duration::from_secs(5),
                    first_row(conn, "SELECT pg_current_wal_lsn()"),
                )
                .await;
                match row {
                    Ok(Ok(row)) => row.first().cloned().flatten().and_then(|t| t.parse().ok()),
                    _ => None,
                }
            }
        };
        self.write_mark = Some(WriteMark {
            at: Instant::now(),
            lsn,
        });
    }
}

/// Whether `endpoint` has replayed past `lsn`, asking the checked-out `conn`
/// when the last probe does not already say so.
pub(super) async fn replica_has_replayed(
    endpoint: &ReplicaEndpoint,
    conn: &mut crate::backend::ServerConn,
    lsn: Lsn,
) -> bool {
    if endpoint.replayed() >= lsn {
        return true;
    }
    let row = tokio::time::timeout(
        Duration::from_secs(5),
        first_row(conn, "SELECT pg_last_wal_replay_lsn()"),
    )
    .await;
    let Ok(Ok(row)) = row else {
        return false;
    };
    match row
        .first()
        .cloned()
        .flatten()
        .and_then(|t| t.parse::<Lsn>().ok())
    {
        Some(replayed) => {
            endpoint.note_replayed(replayed);
            replayed >= lsn
        }
        None => false,
    }
}
