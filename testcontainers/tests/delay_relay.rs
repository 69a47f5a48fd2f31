//! The delaying relay: bytes pass intact, server replies arrive late,
//! non-loopback addresses are refused and dropping it ends its connections.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgrelay_testcontainers::{DelayRelay, DelayRelayError};

const DELAY: Duration = Duration::from_millis(80);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A server answering each chunk it reads with the same bytes uppercased,
/// for `connections` connections, then exiting.
fn upper_server(connections: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut buf = [0u8; 256];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                    break;
                }
            }
        }
    });
    (addr, thread)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// Sends `msg` and returns the reply and how long it took.
fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    conn.write_all(msg).unwrap();
    let mut reply = vec![0u8; msg.len()];
    conn.read_exact(&mut reply).unwrap();
    (reply, started.elapsed())
}

#[test]
fn replies_pass_intact_but_late() {
    let (server, thread) = upper_server(2);
    let relay = DelayRelay::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), server, DELAY).unwrap();
    assert_eq!(relay.addr().ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
    assert_ne!(relay.addr().port(), server.port());

    let mut direct = connect(server);
    let (reply, direct_time) = round_trip(&mut direct, b"select 1");
    assert_eq!(reply, b"SELECT 1");
    drop(direct);

    let mut relayed = connect(relay.addr());
    for _ in 0..3 {
        let (reply, relayed_time) = round_trip(&mut relayed, b"hello relay");
        assert_eq!(reply, b"HELLO RELAY");
        assert!(
            relayed_time >= DELAY,
            "relayed reply took {relayed_time:?}, delay is {DELAY:?}"
        );
        assert!(
            relayed_time > direct_time,
            "{relayed_time:?} vs direct {direct_time:?}"
        );
    }
    drop(relayed);
    drop(relay);
    thread.join().unwrap();
}

#[test]
fn dropping_the_relay_closes_its_connections_and_listener() {
    let (server, _thread) = upper_server(1);
    let relay = DelayRelay::start(IpAddr::V4(Ipv4Addr::LOCALHOST), server, DELAY).unwrap();
    let addr = relay.addr();
    let mut conn = connect(addr);
    assert_eq!(round_trip(&mut conn, b"x").0, b"X");
    drop(relay);
    let mut buf = [0u8; 8];
    // A read timeout (WouldBlock / TimedOut) would mean the relay kept it open.
    let read = conn.read(&mut buf);
    let closed = match &read {
        Ok(n) => *n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "connection still open after drop: {read:?}");
    assert!(TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err());
}

#[test]
fn non_loopback_addresses_are_refused() {
    let outside = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let loopback_target: SocketAddr = (Ipv4Addr::LOCALHOST, 5432).into();
    let err = DelayRelay::start(outside, loopback_target, DELAY).err();
    assert!(
        matches!(err, Some(DelayRelayError::NotLoopback(ip)) if ip == outside),
        "{err:?}"
    );
    let err = DelayRelay::start(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::new(outside, 5432),
        DELAY,
    )
    .err();
    assert!(
        matches!(err, Some(DelayRelayError::NotLoopback(ip)) if ip == outside),
        "{err:?}"
    );
}
