//! Passing a cancel request on to the other pgrelay processes behind one
//! address (`cancel_peers`). A client cancels over a new connection, which a
//! load balancer (a Kubernetes Service, say) may hand to a process
//! other than the one holding its session; PgBouncer drops such a cancel
//! unless peering is set up by id. Each peer gets the request under
//! pgrelay's forwarded-cancel code, acts on it if the keys are its own and
//! never passes it on again, so peers listing each other (or themselves)
//! cannot loop.

use std::time::Duration;

use tokio::task::JoinSet;
use tracing::debug;

use crate::backend::deliver;
use crate::protocol::startup::forwarded_cancel;

/// Bounds the whole pass-on: a cancel is worth little once it is this late,
/// and the client's cancel connection waits on it.
const PASS_ON_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the keys to every address the peer entries resolve to, all at once,
/// and waits until each has closed the connection (it has then forwarded the
/// cancel to its server, if the keys were its own), [`PASS_ON_TIMEOUT`] at most.
pub async fn pass_on(peers: &[String], process_id: i32, secret_key: i32) {
    let packet = forwarded_cancel(process_id, secret_key);
    let mut sends = JoinSet::new();
    for peer in peers {
        let peer = peer.clone();
        sends.spawn(async move {
            let addrs = match tokio::net::lookup_host(&peer).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    debug!(peer = %peer, error = %e, "cancel peer did not resolve");
                    return;
                }
            };
            let mut each = JoinSet::new();
            for addr in addrs {
                each.spawn(async move {
                    if let Err(e) = deliver(addr, &packet, &mut false).await {
                        debug!(%addr, error = %e, "passing a cancel on failed");
                    }
                });
            }
            while each.join_next().await.is_some() {}
        });
    }
    let all = async { while sends.join_next().await.is_some() {} };
    if tokio::time::timeout(PASS_ON_TIMEOUT, all).await.is_err() {
        // Dropping the set aborts the sends still waiting.
        debug!("passing a cancel on timed out");
    }
}
