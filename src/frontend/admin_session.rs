//! A client of the admin console (database `pgbouncer`): simple queries
//! answered by the `admin` module from the live pools and configuration.

use super::cancel::Registration;
use super::client::ClientConn;
use super::{FrontendError, Shared};
use crate::admin::{self, AdminCommand, AdminOutcome, LiveView, Privilege};
use crate::protocol::backend::{self as be, Severity, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::{self as fe, tag};
use crate::protocol::ProtocolError;
use crate::shutdown::ShutdownSignal;
use tracing::info;

/// Largest console command accepted.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

pub(crate) async fn serve_admin(
    client: &mut ClientConn,
    privilege: Privilege,
    shared: &Shared,
    shutdown: &ShutdownSignal,
    registration: &Registration<'_>,
) -> Result<(), FrontendError> {
    for (name, value) in [
        (
            "server_version",
            concat!("15.0 (pgrelay ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        be::write_parameter_status(name, value, &mut client.wbuf);
    }
    // Real keys: a cancel (psql's Ctrl-C) ends a PAUSE or WAIT_CLOSE that waits.
    be::write_backend_key_data(
        registration.process_id,
        registration.secret,
        &mut client.wbuf,
    );
    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
    client.flush().await?;
    loop {
        let len = loop {
            if let Some(len) = framing::check(&client.rbuf, MAX_ADMIN_MESSAGE)? {
                break len;
            }
            // An idle console must not hold up a shutdown's drain.
            tokio::select! {
                biased;
                filled = client.fill() => { filled?; }
                _ = shutdown.triggered() => return Err(FrontendError::ShuttingDown),
            }
        };
        let msg = client.rbuf.split_to(len);
        let frame = Frame::new(&msg);
        match frame.tag {
            tag::TERMINATE => return Ok(()),
            tag::QUERY => {
                let sql = fe::query_utf8(frame.body)?;
                match run_command(sql, privilege, shared, &mut client.wbuf) {
                    Some(AdminOutcome::Pause(db)) => {
                        pause(db.as_deref(), shared, registration, &mut client.wbuf).await
                    }
                    Some(AdminOutcome::Resume(db)) => {
                        resume(db.as_deref(), shared, &mut client.wbuf)
                    }
                    Some(AdminOutcome::Shutdown) => {
                        be::write_command_complete("SHUTDOWN", &mut client.wbuf);
                        be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                        client.flush().await?;
                        // The process stops; this console session ends first
                        // rather than hold up the drain.
                        shared.stop_requested.notify_one();
                        return Ok(());
                    }
                    Some(AdminOutcome::WaitClose(db)) => {
                        wait_close(db.as_deref(), shared, registration, &mut client.wbuf).await
                    }
                    // Answered by run_command itself.
                    Some(
                        AdminOutcome::Shown
                        | AdminOutcome::Reload
                        | AdminOutcome::Reconnect(_)
                        | AdminOutcome::Disable(_)
                        | AdminOutcome::Enable(_)
                        | AdminOutcome::Kill(_)
                        | AdminOutcome::KillClient(_)
                        | AdminOutcome::Set { .. },
                    )
                    | None => {}
                }
                be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                client.flush().await?;
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    tag: other as char,
                    context: "on the admin console, which takes simple queries only",
                }
                .into())
            }
        }
    }
}

/// Runs `sql`; PAUSE, RESUME, WAIT_CLOSE and SHUTDOWN are handed back to
/// the session loop, which may wait for them or end the session.
fn run_command(
    sql: &str,
    privilege: Privilege,
    shared: &Shared,
    out: &mut bytes::BytesMut,
) -> Option<AdminOutcome> {
    let result = AdminCommand::parse(sql).and_then(|cmd| {
        admin::authorize(&cmd, privilege)?;
        let view = LiveView::new(
            shared.directory.config(),
            shared.directory.auth_users(),
            shared.pools.clone(),
            shared.traffic.clone(),
            &shared.cancels,
        );
        let outcome = admin::render(&cmd, &view, out)?;
        Ok((cmd, outcome))
    });
    match result {
        Ok((_, AdminOutcome::Shown)) => {}
        Ok((
            _,
            deferred @ (AdminOutcome::Pause(_)
            | AdminOutcome::Resume(_)
            | AdminOutcome::WaitClose(_)),
        )) => return Some(deferred),
        Ok((cmd, AdminOutcome::Reconnect(db))) => {
            if is_known(db.as_deref(), shared, out) {
                shared.pools.reconnect(db.as_deref());
                be::write_command_complete(cmd.command_tag(), out);
            }
        }
        Ok((cmd, AdminOutcome::Disable(db))) => {
            if is_known(Some(&db), shared, out) {
                shared.pools.disabled().disable(&db);
                be::write_command_complete(cmd.command_tag(), out);
            }
        }
        Ok((cmd, AdminOutcome::Kill(db))) => {
            if is_known(Some(&db), shared, out) {
                // New work waits for RESUME, as after PgBouncer's KILL; a
                // database already paused stays so.
                let _ = shared.pools.pause_gate().pause(Some(&db));
                let clients = shared.cancels.kill_database(&db);
                shared.pools.reconnect(Some(&db));
                info!(database = db, clients, "console KILL");
                be::write_command_complete(cmd.command_tag(), out);
            }
        }
        Ok((cmd, AdminOutcome::KillClient(id))) => {
            if shared.cancels.kill(id) {
                info!(client = id, "console KILL_CLIENT");
                be::write_command_complete(cmd.command_tag(), out);
            } else {
                be::write_error(
                    Severity::Error,
                    "42704",
                    &format!("no such client: 0x{id:x}"),
                    out,
                );
            }
        }
        Ok((cmd, AdminOutcome::Enable(db))) => {
            if is_known(Some(&db), shared, out) {
                shared.pools.disabled().enable(&db);
                be::write_command_complete(cmd.command_tag(), out);
            }
        }
        Ok((cmd, AdminOutcome::Set { name, value })) => {
            match shared.directory.set(&name, &value, &shared.pools) {
                Ok(()) => {
                    // The value is not logged: it may be a path or a secret.
                    info!(setting = name, "console SET");
                    be::write_command_complete(cmd.command_tag(), out);
                }
                Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
            }
        }
        Ok((_, AdminOutcome::Shutdown)) => return Some(AdminOutcome::Shutdown),
        Ok((cmd, AdminOutcome::Reload)) => match shared.directory.reload(&shared.pools) {
            Ok(()) => be::write_command_complete(cmd.command_tag(), out),
            Err(e) => be::write_error(Severity::Error, "F0000", &e, out),
        },
        Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
    }
    None
}

/// `PAUSE [db]`: no new checkouts of the database (every one without a name),
/// then waits until its servers are all back and closes them, as PgBouncer
/// does before a server restart.
/// A cancel ends the wait and takes the pause back, as PostgreSQL takes back
/// a cancelled statement.
async fn pause(
    database: Option<&str>,
    shared: &Shared,
    registration: &Registration<'_>,
    out: &mut bytes::BytesMut,
) {
    if !is_known(database, shared, out) {
        return;
    }
    let gate = shared.pools.pause_gate();
    match gate.pause(database) {
        Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
        Ok(change) => match until_cancelled(registration, shared.pools.drain(database)).await {
            Some(()) => be::write_command_complete("PAUSE", out),
            None => {
                gate.undo(change);
                write_cancelled(out);
            }
        },
    }
}

/// `fut`, or `None` if a cancel for this console client arrives first.
async fn until_cancelled<T>(
    registration: &Registration<'_>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let slot = &registration.slot;
    slot.waiting(std::time::Instant::now());
    let outcome = slot.unless_cancelled(std::pin::pin!(fut)).await;
    slot.detach();
    outcome
}

fn write_cancelled(out: &mut bytes::BytesMut) {
    let cancelled = FrontendError::WaitCancelled;
    be::write_error(
        Severity::Error,
        cancelled.sqlstate(),
        &cancelled.to_string(),
        out,
    );
}

/// `RESUME [db]`: checkouts go on.
fn resume(database: Option<&str>, shared: &Shared, out: &mut bytes::BytesMut) {
    if !is_known(database, shared, out) {
        return;
    }
    match shared.pools.pause_gate().resume(database) {
        Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
        Ok(()) => be::write_command_complete("RESUME", out),
    }
}

/// `WAIT_CLOSE [db]`: returns once every server `RECONNECT` marked is closed.
/// A cancel ends the wait (the servers stay marked).
async fn wait_close(
    database: Option<&str>,
    shared: &Shared,
    registration: &Registration<'_>,
    out: &mut bytes::BytesMut,
) {
    if is_known(database, shared, out) {
        match until_cancelled(registration, shared.pools.wait_close(database)).await {
            Some(()) => be::write_command_complete("WAIT_CLOSE", out),
            None => write_cancelled(out),
        }
    }
}

/// Whether `database` (none means all) is configured; if not, says so to the client.
fn is_known(database: Option<&str>, shared: &Shared, out: &mut bytes::BytesMut) -> bool {
    let Some(name) = database else {
        return true;
    };
    let config = shared.directory.config();
    let known = config.databases.contains_key(name) || config.databases.contains_key("*");
    if !known {
        be::write_error(
            Severity::Error,
            "3D000",
            &format!("no such database: {name}"),
            out,
        );
    }
    known
}
