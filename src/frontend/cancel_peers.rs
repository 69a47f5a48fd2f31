//! Passing a cancel request on to the other pgrelay processes behind one
//! address (`cancel_peers`). A client cancels over a new connection, which a
//! load balancer (a Kubernetes Service, `so_reuseport`) may hand to a process
//! other than the one holding its session; PgBouncer drops such a cancel
//! unless peering is set up by id. Each peer gets the request under
//! pgrelay's forwarded-cancel code, acts on it if the keys are its own and
//! never passes it on again, so peers listing each other (or themselves)
//! cannot loop.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::debug;

use crate::protocol::startup::forwarded_cancel;

/// Bounds each peer's lookup, connect and answer: a cancel is worth little
/// once it is this late, and the client's cancel connection waits on it.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the keys to every address each peer entry resolves to and waits
/// until each has closed the connection (it has then forwarded the cancel to
/// its server, if the keys were its own) or timed out.
pub async fn pass_on(peers: &[String], process_id: i32, secret_key: i32) {
    let packet = forwarded_cancel(process_id, secret_key);
    let mut sends = JoinSet::new();
    for peer in peers {
        let addrs = match tokio::time::timeout(PEER_TIMEOUT, tokio::net::lookup_host(peer)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => {
                debug!(peer = %peer, error = %e, "cancel peer did not resolve");
                continue;
            }
            Err(_) => {
                debug!(peer = %peer, "cancel peer lookup timed out");
                continue;
            }
        };
        for addr in addrs {
            sends.spawn(async move {
                let sent = tokio::time::timeout(PEER_TIMEOUT, async {
                    let mut tcp = TcpStream::connect(addr).await?;
                    tcp.write_all(&packet).await?;
                    // The peer answers nothing; its close says it is done.
                    let mut rest = [0u8; 1];
                    while tcp.read(&mut rest).await? != 0 {}
                    Ok::<_, std::io::Error>(())
                })
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%addr, error = %e, "passing a cancel on failed"),
                    Err(_) => debug!(%addr, "passing a cancel on timed out"),
                }
            });
        }
    }
    while sends.join_next().await.is_some() {}
}
