//! A deliberately tiny HTTP/1.1 responder for Prometheus scrapes and health
//! probes: `GET /metrics`, `GET /healthz`, 404 for anything else. One request
//! per connection (`Connection: close`); the request head is capped and read
//! under a timeout, and concurrent connections are capped, so a slow or hostile
//! client cannot hold resources. Hand-written to keep hyper out of the binary.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Metrics;

/// Largest request head (request line + headers) accepted; larger gets 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head; slower gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers and probes are few; anything beyond this waits in the backlog.
const MAX_CONNECTIONS: usize = 16;
/// After an early response (431/408/400), how long and how much unread input we
/// swallow before closing, so the kernel does not answer it with a reset that
/// destroys the response before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A running metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    pub local_addr: SocketAddr,
    /// Ends when `shutdown` resolves (connections in flight finish on their own).
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves `metrics` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, metrics, shutdown));
    Ok(MetricsServer { local_addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Runs until shutdown; each turn is bounded by a connection or a backoff.
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return, // never closed; nothing left to serve
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            handle(stream, &metrics).await;
            drop(permit);
        });
    }
}

/// What the request head turned out to be.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed (or errored) before finishing its head.
    Gone,
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request head not received in time\n"),
        Ok(Head::TooLarge) => Response::text(431, "request head too large\n"),
        Ok(Head::Gone) => return,
        Ok(Head::Complete(head)) => respond(&head, metrics),
    };
    let early = response.status != 200 && response.status != 404 && response.status != 405;
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response.to_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        debug!("metrics endpoint: client did not take the response");
        return;
    }
    if early {
        linger(&mut stream).await;
    }
}

/// Reads until the blank line ending the head. Bounded: every read adds at
/// least one byte and the buffer never exceeds `MAX_REQUEST_HEAD`.
async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_REQUEST_HEAD - buf.len();
        if room == 0 {
            return Head::TooLarge;
        }
        let n = match stream.read(&mut chunk[..room.min(1024)]).await {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => n,
        };
        // Only the new bytes (and three before them) can complete the terminator.
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[scan_from..]) {
            buf.truncate(scan_from + end);
            return Head::Complete(buf);
        }
    }
}

/// Offset just past `\r\n\r\n` (or a bare `\n\n`, which RFC 9112 tolerates).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Swallows what the client still sends, bounded in time and bytes.
async fn linger(stream: &mut TcpStream) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

fn respond(head: &[u8], metrics: &Metrics) -> Response {
    let Some((method, path)) = request_line(head) else {
        return Response::text(400, "bad request\n");
    };
    let head_only = method == "HEAD";
    let response = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match metrics.encode() {
            Ok(body) => Response {
                status: 200,
                content_type: prometheus::TEXT_FORMAT,
                body: body.into_bytes(),
                head_only: false,
            },
            Err(e) => {
                warn!("metrics endpoint: {e}");
                Response::text(500, "cannot encode metrics\n")
            }
        },
        ("GET" | "HEAD", "/healthz") => Response::text(200, "ok"),
        (_, "/metrics" | "/healthz") => Response::text(405, "method not allowed\n"),
        _ => Response::text(404, "not found\n"),
    };
    Response {
        head_only,
        ..response
    }
}

/// Method and path (query string dropped) of a well-formed HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// A HEAD request: headers as for GET, no body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT_PLAIN,
            body: body.as_bytes().to_vec(),
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_parsing() {
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /healthz HTTP/1.0\n\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET /metrics SPDY/3\r\n\r\n"), None);
        assert_eq!(request_line(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff /metrics HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn head_end_finds_either_terminator() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn head_requests_get_headers_only() {
        let m = Metrics::new().unwrap();
        let r = respond(b"HEAD /healthz HTTP/1.1\r\n\r\n", &m);
        let bytes = String::from_utf8(r.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(bytes.contains("Content-Length: 2\r\n"));
        assert!(bytes.ends_with("\r\n\r\n"));
    }

    #[test]
    fn wrong_method_on_a_known_path_is_405() {
        let m = Metrics::new().unwrap();
        let r = respond(b"POST /metrics HTTP/1.1\r\n\r\n", &m);
        assert_eq!(r.status, 405);
        assert!(String::from_utf8(r.to_bytes())
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
        assert_eq!(respond(b"GET /nope HTTP/1.1\r\n\r\n", &m).status, 404);
        assert_eq!(respond(b"garbage\r\n\r\n", &m).status, 400);
    }
}
