//! What is measured: the targets (rows side by side) and the pgbench
//! scenarios. Adding a target or a scenario is one entry here.

use crate::pgbench::{Load, QueryMode, Workload};
use crate::pooler::ClientAuth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// pgbench straight to the primary: the limit.
    Direct,
    Pgrelay,
    PgBouncer,
    /// pgrelay on one thread (`worker_threads: 1`), as PgBouncer runs: beside
    /// the default row, what the thread count is worth.
    PgrelayOneThread,
    /// pgrelay with `scheduler: work_stealing` (tokio's multi-thread
    /// runtime, the default before aa5492e): what the per-core default is worth.
    PgrelayWorkStealing,
    /// pgrelay with `idle_poll_time: 0`: its threads sleep as soon as they
    /// run out of work, as PgBouncer's does, so beside the default row it
    /// shows what polling before sleeping is worth.
    PgrelayNoIdlePoll,
    /// pgrelay with read/write routing over a primary and two replicas.
    PgrelayRouting,
    /// pgrelay routing every read to one replica.
    PgrelayRoutingOneReplica,
    /// pgrelay without routing, its database on that same replica: with the
    /// row above, the same server does the reads, so the difference is
    /// routing's own cost (a standby serves reads more slowly than a primary).
    PgrelayOnReplica,
}

impl TargetKind {
    /// Replicas the cluster needs for this target.
    pub fn replicas_needed(self) -> usize {
        match self {
            TargetKind::PgrelayRouting => 2,
            TargetKind::PgrelayRoutingOneReplica | TargetKind::PgrelayOnReplica => 1,
            _ => 0,
        }
    }

    /// A pooler whose idle-client memory is measured.
    pub fn is_pooler(self) -> bool {
        !matches!(self, TargetKind::Direct)
    }
}

#[derive(Debug)]
pub struct TargetSpec {
    pub kind: TargetKind,
    pub label: &'static str,
    /// Why this target is not measured yet (shown in the report), if it is not.
    pub left_out: Option<&'static str>,
}

pub const TARGETS: &[TargetSpec] = &[
    TargetSpec {
        kind: TargetKind::Direct,
        label: "direct",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::Pgrelay,
        label: "pgrelay",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgBouncer,
        label: "PgBouncer",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayOneThread,
        label: "pgrelay on one thread",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayWorkStealing,
        label: "pgrelay, work stealing",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayNoIdlePoll,
        label: "pgrelay without idle polling",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayRouting,
        label: "pgrelay routing (primary + 2 replicas)",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayRoutingOneReplica,
        label: "pgrelay routing (reads to 1 replica)",
        left_out: None,
    },
    TargetSpec {
        kind: TargetKind::PgrelayOnReplica,
        label: "pgrelay without routing, on that replica",
        left_out: None,
    },
];

/// Server connections per pool, the same for every pooler.
pub const POOL_SIZE: u32 = 50;
/// pgbench scale factor: 10 branches, so TPC-B at 50 clients is not one
/// row lock queue.
pub const SCALE: u32 = 10;
/// Clients PostgreSQL can take directly: the harness sets max_connections
/// = 500; leave room for the pools of every pooler target on the primary
/// (the routing ones fill theirs there until their replicas pass health
/// checks) and reserved slots.
pub const DIRECT_CLIENT_LIMIT: u32 = 190;

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub load: Load,
    /// How pgbench logs in to the poolers (PostgreSQL itself always asks for SCRAM).
    pub auth: ClientAuth,
}

impl Scenario {
    pub fn name(&self) -> String {
        let l = &self.load;
        let workload = match l.workload {
            Workload::SelectOnly => "-S",
            Workload::TpcB => "TPC-B",
        };
        // Logins only matter when every transaction logs in.
        let reconnect = if l.reconnect {
            format!(" -C ({})", self.auth.setting())
        } else {
            String::new()
        };
        format!("{workload}{reconnect} c={} -M {}", l.clients, l.mode.flag())
    }

    /// Whether the scenario writes, so the cluster needs settling after it.
    pub fn writes(&self) -> bool {
        self.load.workload == Workload::TpcB
    }

    /// Why `target` cannot run this scenario, if it cannot.
    pub fn not_runnable_on(&self, target: TargetKind) -> Option<&'static str> {
        match target {
            TargetKind::Direct if self.load.clients > DIRECT_CLIENT_LIMIT => {
                Some("over max_connections")
            }
            TargetKind::PgrelayOnReplica if self.load.workload == Workload::TpcB => {
                Some("writes; a standby is read-only")
            }
            _ => None,
        }
    }
}

pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut add = |workload, clients, mode, reconnect, auth| {
        out.push(Scenario {
            load: Load {
                workload,
                mode,
                clients,
                reconnect,
            },
            auth,
        })
    };
    // md5 logins to the poolers: cheap, so 500 clients measure relaying
    // rather than PBKDF2 (PgBouncer does SCRAM on its one thread).
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        for clients in [1, 50, 500] {
            add(Workload::SelectOnly, clients, mode, false, ClientAuth::Md5);
        }
    }
    // Connection set-up cost: one new connection per transaction.
    for auth in [ClientAuth::Md5, ClientAuth::ScramSha256] {
        add(Workload::SelectOnly, 50, QueryMode::Simple, true, auth);
    }
    // Writes last: their dead rows, WAL and checkpoints would otherwise land
    // in the read-only runs that follow (the bench also settles the cluster
    // after each of them).
    for mode in [QueryMode::Simple, QueryMode::Extended] {
        add(Workload::TpcB, 50, mode, false, ClientAuth::Md5);
    }
    out
}
