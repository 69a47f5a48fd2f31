//! Protocol-level named prepared statements in transaction and statement
//! pooling, where a client's next Bind may land on another server.
//!
//! Each client keeps its statements by the names it chose; on servers they are
//! prepared under a name derived from the statement's text and parameter
//! types, so clients preparing the same statement share it on a server. A
//! Bind or Describe on a server that lacks the statement first prepares it
//! there; a Parse of a statement the server already has is answered by
//! pgrelay; a Close only forgets the client's name (the server keeps the
//! statement for others).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::routing::Destination;
use crate::protocol::frontend::{self as fe, Parse};

/// A statement as pgrelay prepares it on servers.
#[derive(Debug)]
pub(crate) struct Statement {
    pub server_name: Arc<str>,
    /// Where the statement's text was routed, for a Bind that starts a batch.
    pub destination: Destination,
    /// The Parse message under `server_name`, ready to send to any server.
    pub parse: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct ClientStatements {
    by_name: HashMap<String, Arc<Statement>>,
}

impl ClientStatements {
    /// Records the client's Parse under its own name (replacing an older one).
    pub fn define(&mut self, parse: &Parse<'_>, destination: Destination) -> Arc<Statement> {
        let server_name: Arc<str> = server_name(parse.query, parse.param_types).into();
        let mut msg = BytesMut::with_capacity(parse.query.len() + 64);
        fe::write_parse(&server_name, parse.query, parse.param_types, &mut msg);
        let statement = Arc::new(Statement {
            server_name,
            destination,
            parse: msg.freeze(),
        });
        self.by_name
            .insert(parse.statement.to_string(), statement.clone());
        statement
    }

    pub fn get(&self, client_name: &str) -> Option<&Arc<Statement>> {
        self.by_name.get(client_name)
    }

    pub fn remove(&mut self, client_name: &str) {
        self.by_name.remove(client_name);
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// `pgrelay_` + 128 bits of SHA-256 over the text and parameter types: unique
/// enough that two different statements never share a name, and short enough
/// for PostgreSQL's 63-byte identifiers.
fn server_name(query: &[u8], param_types: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update((query.len() as u64).to_be_bytes());
    hash.update(query);
    hash.update(param_types);
    let digest = hash.finalize();
    let mut name = String::with_capacity(8 + 32);
    name.push_str("pgrelay_");
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::Frame;

    fn parse<'a>(name: &'a str, query: &'a str, types: &'a [u8]) -> Parse<'a> {
        Parse {
            statement: name,
            query: query.as_bytes(),
            param_types: types,
        }
    }

    #[test]
    fn same_statement_shares_a_server_name_and_different_ones_do_not() {
        let mut a = ClientStatements::default();
        let mut b = ClientStatements::default();
        let d = Destination::READ;
        let s1 = a.define(&parse("s0", "select $1", &[0, 1, 0, 0, 0, 23]), d);
        let s2 = b.define(&parse("q", "select $1", &[0, 1, 0, 0, 0, 23]), d);
        let s3 = b.define(&parse("r", "select $1", &[0, 1, 0, 0, 0, 25]), d);
        assert_eq!(s1.server_name, s2.server_name);
        assert_ne!(s1.server_name, s3.server_name, "parameter types matter");
        assert!(s1.server_name.len() <= 63);
        let frame = Frame::new(&s1.parse);
        let p = crate::protocol::frontend::parse(frame.body).unwrap();
        assert_eq!(
            (p.statement, p.query),
            (&*s1.server_name, &b"select $1"[..])
        );
        assert!(a.get("s0").is_some());
        a.remove("s0");
        assert!(a.get("s0").is_none());
    }
}
