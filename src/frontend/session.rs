//! One client's session: login, then the query loop that attaches pooled
//! servers, relays both ways and releases servers when they are idle.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::admin_session::serve_admin;
use super::cancel::{ClientCard, Registration};
use super::client::ClientConn;
use super::handshake::{handshake, Handshake};
use super::login::authenticate;
use super::params::ClientParams;
use super::query::Session;
use super::routing::Destination;
use super::{FrontendError, FrontendSettings, Shared};
use crate::config::PoolMode;
use crate::metrics::{ClientState, ErrorOrigin, LoginResult, Metrics};
use crate::protocol::backend::{self as be, TxStatus};
use crate::shutdown::ShutdownSignal;

/// Runs one accepted connection to its end.
pub(crate) async fn run_connection(
    tcp: TcpStream,
    shared: Arc<Shared>,
    shutdown: ShutdownSignal,
    admit: impl FnOnce() -> Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let settings = shared.directory.settings();
    // `client_login_timeout` bounds the whole login, handshake and
    // authentication together, as in PgBouncer: one deadline for both.
    let login_deadline = settings
        .client_login_timeout
        .map(|d| tokio::time::Instant::now() + d);
    // The handshake, login and console futures are boxed: kept inline, their
    // (TLS, SCRAM) state would size every idle client's task.
    let first = within(
        login_deadline,
        Box::pin(handshake(
            tcp,
            settings.client_tls_mode,
            shared.tls_acceptor.as_ref(),
        )),
    )
    .await;
    let (mut client, minor, params) = match first {
        Ok(Handshake::Startup {
            client,
            minor,
            params,
        }) => (client, minor, params),
        Ok(Handshake::Cancel {
            process_id,
            secret_key,
            forwarded,
        }) => {
            // A cancel a peer passed on goes no further.
            let peers: &[String] = if forwarded {
                &[]
            } else {
                &settings.cancel_peers
            };
            forward_cancel(&shared, process_id, secret_key, peers).await;
            return;
        }
        Err(e) => {
            debug!(error = %e, "client handshake failed");
            return;
        }
    };
    let metrics = shared.metrics.clone();
    let mut tracker = metrics.client_connected();
    let Some(_admitted) = admit() else {
        metrics.login(LoginResult::Refused);
        report(&metrics, &FrontendError::TooManyClients);
        client.fatal(&FrontendError::TooManyClients).await;
        return;
    };
    if minor > 0 {
        // We speak 3.0: say so, listing any protocol options we did not take.
        let options: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.as_str())
            .collect();
        be::write_negotiate_protocol_version(0, &options, &mut client.wbuf);
    }
    let params: Vec<_> = params
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_pq_."))
        .collect();
    let registration = shared.cancels.register();
    let login = within(
        login_deadline,
        Box::pin(login(
            &mut client,
            &params,
            &shared,
            &settings,
            &registration,
        )),
    )
    .await;
    let mut session = match login {
        Ok(Login::Pooled(s)) => s,
        Ok(Login::Admin(privilege)) => {
            metrics.login(LoginResult::Ok);
            if settings.log_connections {
                log_login(&registration);
            }
            let console = serve_admin(&mut client, privilege, &shared, &shutdown, &registration);
            let result = Box::pin(console).await;
            if let Err(e) = &result {
                debug!(error = %e, "admin console session ended");
                client.fatal(e).await;
            }
            if settings.log_disconnections {
                log_logout(&registration, result.as_ref().err());
            }
            return;
        }
        Err(e) => {
            info!(error = %e, "client login failed");
            metrics.login(match e {
                FrontendError::AuthFailed(_) => LoginResult::AuthFailed,
                FrontendError::LoginTimeout => LoginResult::Timeout,
                _ => LoginResult::Refused,
            });
            report(&metrics, &e);
            client.fatal(&e).await;
            return;
        }
    };
    metrics.login(LoginResult::Ok);
    if settings.log_connections {
        log_login(&registration);
    }
    tracker.logged_in(session.pools.metrics.clone());
    tracker.set_state(ClientState::Idle);
    session.tracker = Some(tracker);
    let span = tracing::debug_span!("client", id = registration.process_id);
    // The console's KILL drops the session wherever it waits (a server, a
    // pool slot, a client that does not read); the server it holds is
    // closed, never pooled, whatever state the drop left it in.
    let served = {
        let served = tracing::Instrument::instrument(session.serve(&mut client, shutdown), span);
        // Pinned here and lent to the guard: a future passed by value into
        // an async fn is stored twice in its caller's state, and this one is
        // most of an idle client's memory.
        let served = std::pin::pin!(served);
        registration.slot.kill_switch().guard(served).await
    };
    let result = match served {
        Some(result) => result,
        None => {
            session.abandon_server();
            Err(FrontendError::Killed)
        }
    };
    if let Err(e) = &result {
        debug!(error = %e, "client session ended");
        report(&metrics, e);
        client.fatal(e).await;
    }
    session
        .pools
        .metrics
        .client_bytes(client.take_byte_counts());
    Box::pin(session.finish()).await;
    if settings.log_disconnections {
        log_logout(&registration, result.as_ref().err());
    }
}

/// `log_connections`: who logged in, from where, over what. Out of line:
/// the session's future stays as it was when the setting is off.
#[inline(never)]
fn log_login(registration: &Registration<'_>) {
    if let Some(card) = registration.slot.card() {
        let tls = if card.tls.is_empty() {
            "none"
        } else {
            card.tls.as_str()
        };
        info!(
            client = registration.process_id,
            user = card.user,
            database = card.database,
            peer = %card.peer,
            tls,
            "client logged in"
        );
    }
}

/// `log_disconnections`: who left, after how long, and why.
#[inline(never)]
fn log_logout(registration: &Registration<'_>, error: Option<&FrontendError>) {
    let Some(card) = registration.slot.card() else {
        return;
    };
    let age = registration.connect_time.elapsed().unwrap_or_default();
    let reason = error.map_or_else(|| "client close request".to_string(), |e| e.to_string());
    info!(
        client = registration.process_id,
        user = card.user,
        database = card.database,
        peer = %card.peer,
        age_s = age.as_secs_f64(),
        reason,
        "client disconnected"
    );
}

/// Counts an error pgrelay itself sends a client.
fn report(metrics: &Metrics, e: &FrontendError) {
    if e.is_reported() {
        metrics.error(ErrorOrigin::Pooler, e.sqlstate());
    }
}

/// `fut`, failed with `LoginTimeout` if `deadline` passes first. tokio's
/// timer enters the wheel only if `fut` has to wait.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    fut: impl std::future::Future<Output = Result<T, FrontendError>>,
) -> Result<T, FrontendError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut)
            .await
            .map_err(|_| FrontendError::LoginTimeout)?,
        None => fut.await,
    }
}

/// Sends a client's cancel to the server running its query; keys no local
/// client holds go on to `peers`.
async fn forward_cancel(shared: &Shared, process_id: i32, secret_key: i32, peers: &[String]) {
    match shared.cancels.lookup(process_id, secret_key) {
        Some(cancel) => {
            if let Err(e) = cancel.send(Duration::from_secs(5)).await {
                warn!(error = %e, "forwarding cancel request failed");
            }
        }
        None if !peers.is_empty() && !shared.cancels.holds(process_id, secret_key) => {
            super::cancel_peers::pass_on(peers, process_id, secret_key).await
        }
        None => debug!("cancel request matched no running query"),
    }
}

async fn login<'a>(
    client: &mut ClientConn,
    params: &[(String, String)],
    shared: &Shared,
    settings: &Arc<FrontendSettings>,
    registration: &'a Registration<'a>,
) -> Result<Login<'a>, FrontendError> {
    let (mut client_params, startup) = ClientParams::from_startup(params, settings)?;
    authenticate(
        client,
        &startup.user,
        settings.auth_type,
        shared.directory.as_ref(),
    )
    .await?;
    registration.slot.describe(ClientCard {
        user: startup.user.clone(),
        database: startup.database.clone(),
        peer: client.stream.tcp().peer_addr()?,
        local: client.stream.tcp().local_addr()?,
        connect_time: registration.connect_time,
        tls: client.stream.tls_description(),
        application_name: client_params
            .get("application_name")
            .unwrap_or_default()
            .to_string(),
    });
    if startup.database == crate::config::ADMIN_DATABASE {
        let privilege = shared
            .directory
            .admin_privilege(&startup.user)
            .ok_or_else(|| FrontendError::NotAdmin(startup.user.clone()))?;
        return Ok(Login::Admin(privilege));
    }
    // Only configured databases can be disabled: no pools are made for a
    // refused login.
    if shared.pools.disabled().is_disabled(&startup.database) {
        return Err(FrontendError::DatabaseDisabled(startup.database.clone()));
    }
    let pools = shared
        .directory
        .database_pools(&startup.database, &startup.user, &shared.pools)
        .ok_or_else(|| FrontendError::UnknownDatabase(startup.database.clone()))?;
    let mode = pools.spec.pool_mode;
    registration
        .slot
        .count_cancels_in(pools.cancels_forwarding.clone());
    let mut session = Session::new(
        shared.metrics.clone(),
        settings.clone(),
        pools,
        registration,
        shared.directory.classifier(),
        &startup.database,
        &startup.user,
    );
    let server_params = match (mode, session.pools.server_params()) {
        (PoolMode::Transaction | PoolMode::Statement, Some(p)) => p,
        _ => {
            session.attach(Destination::Primary).await?;
            // No request came with this checkout: the first query's time
            // starts when the client sends it, not at login.
            session.no_request_pending();
            session.pools.server_params().unwrap_or_default()
        }
    };
    client_params.announce(
        &server_params,
        &session.pools.param_snapshots,
        |name, value| be::write_parameter_status(name, value, &mut client.wbuf),
    );
    for (name, value) in &client_params.pgrelay {
        match name.as_str() {
            "pgrelay.route" => session.route_override = value.parse()?,
            _ => return Err(FrontendError::UnsupportedParameter(name.clone())),
        }
    }
    session.params = client_params;
    if let Some(sql) = session.sync_sql() {
        session.run_param_sync(&sql).await?;
    }
    be::write_backend_key_data(
        registration.process_id,
        registration.secret,
        &mut client.wbuf,
    );
    be::write_ready_for_query(TxStatus::Idle, &mut client.wbuf);
    client.flush().await?;
    session.release_if_idle().await;
    Ok(Login::Pooled(Box::new(session)))
}

/// A logged-in client: pooled, or on the admin console.
enum Login<'a> {
    Pooled(Box<Session<'a>>),
    Admin(crate::admin::Privilege),
}
