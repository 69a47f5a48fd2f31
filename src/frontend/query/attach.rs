//! Getting a server for a statement: making way on the attached one,
//! checking out by destination, and retrying a read a replica dropped.

use super::*;

impl Session<'_> {
    /// Whether a statement for `dest` can go out now: the attached server
    /// serves it, or is released to make room. False means wait for the
    /// attached server's replies first.
    pub(super) async fn make_way_for(&mut self, dest: Destination) -> bool {
        let Some(attached) = &self.server else {
            return true;
        };
        let idle = attached.relay.is_idle(attached.conn.rbuf.len()) && self.to_server.is_empty();
        let serves = attached.role.serves(dest);
        // An idle primary holding a read gives way so the read can be balanced.
        let rebalance = dest.is_read() && !attached.role.is_replica();
        if idle && self.pinned.is_none() && (!serves || rebalance) {
            self.detach(false).await;
            return true;
        }
        // Inside a transaction or an unsynced batch the statement stays with its
        // server (a write reaching a read-only transaction fails there, as it should).
        serves || attached.relay.tx != TxStatus::Idle || !attached.relay.is_synced()
    }

    /// Checks out a server for `dest` and brings its tracked parameters in
    /// line with the client's. A replica that cannot be reached is reported
    /// and another is tried once; then the read falls back to the primary
    /// (or fails, if the database says so).
    pub async fn attach(&mut self, dest: Destination) -> Result<(), FrontendError> {
        let registration = self.cancel;
        let attached = {
            let check_out = std::pin::pin!(self.check_out(dest));
            registration.slot.unless_cancelled(check_out).await
        }
        .unwrap_or(Err(FrontendError::WaitCancelled));
        if attached.is_err() && self.server.is_none() {
            // The session may go on (e.g. after a wait timeout): it no longer waits.
            self.cancel.slot.detach();
            self.set_client_state(ClientState::Idle);
        }
        attached
    }

    /// Waits out a console `PAUSE` of this database, within the pool's wait
    /// limit (`query_wait_timeout`), which runs on into the checkout after it.
    async fn wait_while_paused(&self, requested: Instant) -> Result<(), FrontendError> {
        let resumed = self.pools.pause.until_resumed(&self.pools.spec.name);
        match self.pools.primary.settings().wait_timeout {
            Some(limit) => tokio::time::timeout_at((requested + limit).into(), resumed)
                .await
                .map_err(|_| FrontendError::Pool(PoolError::WaitTimeout)),
            None => {
                resumed.await;
                Ok(())
            }
        }
    }

    async fn check_out(&mut self, dest: Destination) -> Result<(), FrontendError> {
        self.set_client_state(ClientState::Waiting);
        // One clock read: the console's request time, and the pool wait's start.
        let requested = Instant::now();
        self.cancel.slot.waiting(requested);
        if self.pools.pause.is_paused(&self.pools.spec.name) {
            Box::pin(self.wait_while_paused(requested)).await?;
        }
        let fresh = self.freshness();
        let dest = match fresh {
            freshness::Freshness::PrimaryOnly => Destination::Primary,
            _ => dest,
        };
        let group = match dest {
            Destination::Replica(group) if self.pinned.is_none() => self.pools.replica_set(group),
            _ => None,
        };
        let (conn, role) = match group {
            Some(replicas) => {
                let mut tried = None;
                let mut found = None;
                let mut behind_own_write = false;
                for _ in 0..2 {
                    let Some(endpoint) = replicas.pick(tried, requested) else {
                        break;
                    };
                    match endpoint
                        .pool
                        .get_timed(requested, &mut self.wait_timer)
                        .await
                    {
                        Ok(mut conn) => {
                            endpoint.report_success();
                            if let freshness::Freshness::AtLeast(lsn) = fresh {
                                if !Box::pin(freshness::replica_has_replayed(
                                    &endpoint, &mut conn, lsn,
                                ))
                                .await
                                {
                                    // Behind the client's own write: read from the primary.
                                    conn.release();
                                    behind_own_write = true;
                                    break;
                                }
                            }
                            found = Some((conn, ServerRole::Replica(endpoint)));
                            break;
                        }
                        Err(e @ (PoolError::Connect(_) | PoolError::RecentFailure(_))) => {
                            debug!(addr = %endpoint.addr, error = %e, "replica unavailable; trying another");
                            endpoint.report_failure();
                            tried = Some(endpoint.addr);
                        }
                        // Picked just as discovery removed it: its pool is draining.
                        Err(PoolError::Closed) => tried = Some(endpoint.addr),
                        Err(e) => return Err(e.into()),
                    }
                }
                match (found, replicas.fallback) {
                    (Some(found), _) => found,
                    (None, _) if behind_own_write => (
                        self.pools
                            .primary
                            .get_timed(requested, &mut self.wait_timer)
                            .await?,
                        ServerRole::Primary,
                    ),
                    (None, ReadFallback::Primary) => (
                        self.pools
                            .primary
                            .get_timed(requested, &mut self.wait_timer)
                            .await?,
                        ServerRole::Primary,
                    ),
                    (None, ReadFallback::Error) => return Err(FrontendError::NoReplica),
                }
            }
            None => (
                self.pools
                    .primary
                    .get_timed(requested, &mut self.wait_timer)
                    .await?,
                ServerRole::Primary,
            ),
        };
        let label = metric_role(&role);
        // The last checkout's wait: a replica that failed to connect counts
        // under the fallback's metrics only through its own failure counters.
        self.pools.metrics.checkout_waited(label, conn.waited());
        self.metrics.route(
            label,
            match (dest, &role) {
                (Destination::Primary, _) => "primary",
                (Destination::Replica(_), ServerRole::Replica(_)) => "read",
                (Destination::Replica(_), ServerRole::Primary) => "read_fallback",
            },
        );
        self.set_client_state(ClientState::Active);
        self.pools.remember_server_params(conn.params());
        self.cancel.slot.attach(conn.cancel_target());
        let in_flight = match &role {
            ServerRole::Replica(endpoint) => Some(endpoint.enter()),
            ServerRole::Primary => None,
        };
        self.replay = role
            .is_replica()
            .then(|| std::mem::take(&mut self.spare_replay));
        let since = conn.checked_out();
        self.server = Some(Attached {
            conn,
            relay: std::mem::replace(&mut self.spare_relay, RelayState::empty()),
            role,
            since,
            // The checkout was for the request that follows at once.
            query_started: Some(since),
            xact_started: Some(since),
            _in_flight: in_flight,
            wrote: false,
        });
        if let Some(sql) = self.sync_sql() {
            self.run_param_sync(&sql).await?;
        }
        Ok(())
    }

    /// The attached server was checked out without a client request (at
    /// login): statistics time the next query from when it is sent.
    pub fn no_request_pending(&mut self) {
        if let Some(attached) = &mut self.server {
            attached.query_started = None;
            attached.xact_started = None;
        }
    }

    /// The attached server failed. A read on a replica that has not answered
    /// yet is sent again (once) to another replica, or the primary; anything
    /// else ends the session with the error.
    pub(super) async fn retry_read(
        &mut self,
        error: crate::backend::BackendError,
    ) -> Result<(), FrontendError> {
        let replay = self.replay.take();
        let Some(attached) = self.server.take() else {
            return Err(error.into());
        };
        self.cancel.slot.detach();
        let (Some(replay), ServerRole::Replica(endpoint)) = (replay, &attached.role) else {
            return Err(error.into());
        };
        if !error.is_connection_failure() || replay.is_empty() {
            return Err(error.into());
        }
        warn!(addr = %endpoint.addr, %error, "replica failed before answering; retrying the read");
        endpoint.report_failure();
        let read = Destination::Replica(endpoint.group);
        drop(attached);
        // The client's messages are already consumed: a cancel during this
        // wait ends the session with the replica's failure, as no retry would.
        match self.attach(read).await {
            Err(FrontendError::WaitCancelled) => return Err(error.into()),
            attached => attached?,
        }
        self.replay = None; // one retry per read
        let mut rest = replay.freeze();
        while !rest.is_empty() {
            let len = framing::check(&rest, usize::MAX)?.expect("replayed messages are whole");
            let msg = rest.split_to(len);
            self.forward_client_message(&msg, Some(read))?;
        }
        if let Some(attached) = self.server.as_mut() {
            attached.conn.write_all(&self.to_server).await?;
        }
        self.to_server.clear();
        Ok(())
    }
}
