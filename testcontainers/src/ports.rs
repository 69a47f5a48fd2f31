//! Picking one TCP port that is free on every node address.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

use crate::error::{Error, Result};

/// Below Linux's default ephemeral range (32768+), so outgoing connections
/// of other tests do not grab "our" port between the check and the bind.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
const MAX_ATTEMPTS: u32 = 200;

/// A random number without pulling in a RNG crate; std seeds RandomState
/// randomly per instance, which is plenty for spreading ports.
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// Returns a port that can currently be bound on all of `addrs`.
/// The check is racy by nature; callers retry when the server loses the race.
pub fn free_port_on_all(addrs: &[Ipv4Addr]) -> Result<u16> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..MAX_ATTEMPTS {
        let port = PORT_RANGE.start + (random_u64() % span) as u16;
        if addrs.iter().all(|addr| is_free(*addr, port)) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort {
        addrs: format!("{addrs:?}"),
        attempts: MAX_ATTEMPTS,
    })
}

fn is_free(addr: Ipv4Addr, port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(addr, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_port_is_bindable_on_every_address() {
        let addrs = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        let port = free_port_on_all(&addrs).unwrap();
        assert!(PORT_RANGE.contains(&port));
        for addr in addrs {
            TcpListener::bind(SocketAddrV4::new(addr, port)).unwrap();
        }
    }

    #[test]
    fn occupied_port_is_not_free() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(Ipv4Addr::LOCALHOST, port));
    }
}
