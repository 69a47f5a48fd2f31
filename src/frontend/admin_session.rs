//! A client of the admin console (database `pgbouncer`): simple queries
//! answered by the `admin` module from the live pools and configuration.

use super::client::ClientConn;
use super::{FrontendError, Shared};
use crate::admin::{self, AdminCommand, AdminOutcome, LiveView, Privilege};
use crate::protocol::backend::{self as be, Severity, TxStatus};
use crate::protocol::framing::{self, Frame};
use crate::protocol::frontend::{self as fe, tag};
use crate::protocol::ProtocolError;

/// Largest console command accepted.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

pub(crate) async fn serve_admin(
    client: &mut ClientConn,
    privilege: Privilege,
    shared: &Shared,
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
    be::write_backend_key_data(0, 0, &mut client.wbuf);
    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
    client.flush().await?;
    loop {
        let len = loop {
            if let Some(len) = framing::check(&client.rbuf, MAX_ADMIN_MESSAGE)? {
                break len;
            }
            client.fill().await?;
        };
        let msg = client.rbuf.split_to(len);
        let frame = Frame::new(&msg);
        match frame.tag {
            tag::TERMINATE => return Ok(()),
            tag::QUERY => {
                let sql = fe::query(frame.body)?;
                match run_command(sql, privilege, shared, &mut client.wbuf) {
                    Some(Waiting::Pause(pause)) => {
                        pause_or_resume(pause, shared, &mut client.wbuf).await
                    }
                    Some(Waiting::Shutdown) => {
                        be::write_command_complete("SHUTDOWN", &mut client.wbuf);
                        be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
                        client.flush().await?;
                        // The process stops; this console session ends first
                        // rather than hold up the drain.
                        shared.stop_requested.notify_one();
                        return Ok(());
                    }
                    None => {}
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

/// A console command that waits: `PAUSE` returns once the servers are idle.
enum PauseCommand {
    Pause(Option<String>),
    Resume(Option<String>),
}

/// A console command the session loop finishes itself.
enum Waiting {
    Pause(PauseCommand),
    Shutdown,
}

/// Runs `sql`; PAUSE, RESUME and SHUTDOWN are handed back to the session loop.
fn run_command(
    sql: &str,
    privilege: Privilege,
    shared: &Shared,
    out: &mut bytes::BytesMut,
) -> Option<Waiting> {
    let result = AdminCommand::parse(sql).and_then(|cmd| {
        admin::authorize(&cmd, privilege)?;
        let view = LiveView::new(
            shared.directory.config(),
            shared.pools.clone(),
            shared.traffic.clone(),
            &shared.cancels,
        );
        let outcome = admin::render(&cmd, &view, out)?;
        Ok((cmd, outcome))
    });
    match result {
        Ok((_, AdminOutcome::Shown)) => {}
        Ok((_, AdminOutcome::Pause(db))) => return Some(Waiting::Pause(PauseCommand::Pause(db))),
        Ok((_, AdminOutcome::Resume(db))) => return Some(Waiting::Pause(PauseCommand::Resume(db))),
        Ok((_, AdminOutcome::Shutdown)) => return Some(Waiting::Shutdown),
        Ok((cmd, AdminOutcome::Reload)) => match shared.directory.reload() {
            Ok(()) => be::write_command_complete(cmd.command_tag(), out),
            Err(e) => be::write_error(Severity::Error, "F0000", &e, out),
        },
        Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
    }
    None
}

/// `PAUSE [db]`: no new checkouts of the database (every one without a name),
/// then waits until its servers are all back and closes them, as PgBouncer
/// does before a server restart. `RESUME [db]` lets checkouts go on.
async fn pause_or_resume(command: PauseCommand, shared: &Shared, out: &mut bytes::BytesMut) {
    let name = match &command {
        PauseCommand::Pause(db) | PauseCommand::Resume(db) => db.as_deref(),
    };
    if let Some(name) = name {
        let config = shared.directory.config();
        if !config.databases.contains_key(name) && !config.databases.contains_key("*") {
            let message = format!("no such database: {name}");
            be::write_error(Severity::Error, "3D000", &message, out);
            return;
        }
    }
    let gate = shared.pools.pause_gate();
    let (result, tag) = match &command {
        PauseCommand::Pause(db) => (gate.pause(db.as_deref()), "PAUSE"),
        PauseCommand::Resume(db) => (gate.resume(db.as_deref()), "RESUME"),
    };
    match result {
        Err(e) => be::write_error(Severity::Error, e.sqlstate(), &e.to_string(), out),
        Ok(()) => {
            if let PauseCommand::Pause(db) = &command {
                shared.pools.drain(db.as_deref()).await;
            }
            be::write_command_complete(tag, out);
        }
    }
}
