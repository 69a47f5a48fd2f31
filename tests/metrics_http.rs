//! The metrics endpoint as a black box: bind 127.0.0.1:0, speak raw HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgrelay::metrics::{
    serve, LoginResult, Metrics, MetricsServer, MAX_REQUEST_HEAD, REQUEST_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

async fn start() -> (Arc<Metrics>, MetricsServer, oneshot::Sender<()>) {
    let metrics = Arc::new(Metrics::new().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    (metrics, server, stop)
}

/// Sends `request` raw and returns everything the server answers until it closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    })
    .await
    .expect("server answered and closed in time")
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n");
    exchange(addr, request.as_bytes()).await
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_are_served_and_follow_the_counters() {
    let (metrics, server, _stop) = start().await;
    let ok_logins = r#"pgrelay_client_logins_total{result="ok"}"#;

    let first = get(server.local_addr, "/metrics").await;
    assert_eq!(status(&first), "HTTP/1.1 200 OK");
    assert!(first.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"));
    assert!(first.contains("\r\nConnection: close\r\n"));
    let length: usize = first
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body(&first).len());
    assert!(body(&first).contains("# TYPE pgrelay_client_logins_total counter"));
    assert_eq!(sample(body(&first), ok_logins), Some(0.0));

    metrics.login(LoginResult::Ok);
    metrics.login(LoginResult::Ok);
    metrics.login(LoginResult::Ok);
    let second = get(server.local_addr, "/metrics?scrape=2").await;
    assert_eq!(sample(body(&second), ok_logins), Some(3.0));
}

#[tokio::test]
async fn healthz_is_ok_and_other_paths_are_404() {
    let (_metrics, server, _stop) = start().await;
    let health = get(server.local_addr, "/healthz").await;
    assert_eq!(status(&health), "HTTP/1.1 200 OK");
    assert_eq!(body(&health), "ok");

    for path in ["/", "/metrics/extra", "/favicon.ico"] {
        let response = get(server.local_addr, path).await;
        assert_eq!(status(&response), "HTTP/1.1 404 Not Found", "{path}");
        assert!(!response.contains("pgrelay_"), "{path}");
    }
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let (_metrics, server, _stop) = start().await;
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    request.resize(MAX_REQUEST_HEAD * 2, b'a');
    let response = exchange(server.local_addr, &request).await;
    assert_eq!(
        status(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert!(!response.contains("pgrelay_"));
}

#[tokio::test]
async fn a_head_just_under_the_cap_is_served() {
    let (_metrics, server, _stop) = start().await;
    let mut request = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
    request.resize(MAX_REQUEST_HEAD - 4, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let response = exchange(server.local_addr, &request).await;
    assert_eq!(status(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn garbage_is_a_bad_request() {
    let (_metrics, server, _stop) = start().await;
    let response = exchange(server.local_addr, b"HELLO\r\n\r\n").await;
    assert_eq!(status(&response), "HTTP/1.1 400 Bad Request");
}

#[tokio::test]
async fn a_silent_client_is_timed_out() {
    let (_metrics, server, _stop) = start().await;
    let mut stream = TcpStream::connect(server.local_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT * 2, stream.read_to_end(&mut response))
        .await
        .expect("server gave up on the client")
        .unwrap();
    assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100));
    let response = String::from_utf8(response).unwrap();
    assert_eq!(status(&response), "HTTP/1.1 408 Request Timeout");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (_metrics, server, stop) = start().await;
    assert_eq!(
        status(&get(server.local_addr, "/healthz").await),
        "HTTP/1.1 200 OK"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(IO_TIMEOUT, server.task)
        .await
        .expect("accept loop ended")
        .unwrap();
    assert!(TcpStream::connect(server.local_addr).await.is_err());
}
