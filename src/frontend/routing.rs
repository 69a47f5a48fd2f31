//! How the query loop turns router decisions into a server: which pool a
//! statement needs, whether the attached server can take it, and the
//! `pgrelay.route` commands pgrelay answers itself.

use std::sync::Arc;

use bytes::BytesMut;

use crate::cluster::{DatabasePools, GroupId, ReplicaEndpoint};
use crate::protocol::backend::{self as be, Severity, TxStatus};
use crate::router::{Decision, Effect, PinReason, RouteCommand, RouteOverride, Target};

/// Which kind of server a statement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    Primary,
    /// A replica of this group of the client's database.
    Replica(GroupId),
}

impl Destination {
    /// A read of the default replica group.
    pub const READ: Destination = Destination::Replica(GroupId::DEFAULT);

    /// Where `target` points in the database `pools` serve; a group the
    /// database lacks means its default replicas.
    pub fn of(target: &Target, pools: &DatabasePools) -> Self {
        match target {
            Target::Primary => Destination::Primary,
            Target::Replicas => Destination::READ,
            Target::Group(name) => Destination::Replica(pools.group_id(name)),
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Destination::Replica(_))
    }
}

/// The role of the server a client is attached to.
#[derive(Clone)]
pub(crate) enum ServerRole {
    Primary,
    Replica(Arc<ReplicaEndpoint>),
}

impl ServerRole {
    /// The primary serves everything; a replica serves reads of its own group only.
    pub fn serves(&self, dest: Destination) -> bool {
        match (self, dest) {
            (ServerRole::Primary, _) => true,
            (ServerRole::Replica(endpoint), Destination::Replica(group)) => endpoint.group == group,
            (ServerRole::Replica(_), Destination::Primary) => false,
        }
    }

    pub fn is_replica(&self) -> bool {
        matches!(self, ServerRole::Replica(_))
    }
}

/// What the query loop needs from one classified Query or Parse.
pub(crate) struct Routed {
    pub dest: Destination,
    pub pin: Option<PinReason>,
    pub intercept: Option<RouteCommand>,
}

impl Routed {
    pub fn primary() -> Self {
        Routed {
            dest: Destination::Primary,
            pin: None,
            intercept: None,
        }
    }

    pub fn from_decision(decision: Decision, pools: &DatabasePools) -> Self {
        let mut routed = Routed {
            dest: Destination::of(&decision.route.target, pools),
            pin: None,
            intercept: None,
        };
        for effect in decision.effects {
            match effect {
                Effect::PinSession(reason) => routed.pin = Some(reason),
                Effect::Intercept(cmd) => routed.intercept = Some(cmd),
                _ => {}
            }
        }
        routed
    }
}

/// Answers a `SET/RESET/SHOW pgrelay.route` command as a server would.
pub(crate) fn answer_route_command(
    cmd: &RouteCommand,
    current: &mut RouteOverride,
    tx: TxStatus,
    out: &mut BytesMut,
) {
    match cmd {
        RouteCommand::Set(value) => {
            *current = *value;
            be::write_command_complete("SET", out);
        }
        RouteCommand::Reset => {
            *current = RouteOverride::Auto;
            be::write_command_complete("RESET", out);
        }
        RouteCommand::Show => {
            be::write_text_row_description(&["pgrelay.route"], out);
            be::write_data_row(&[Some(current.as_str())], out);
            be::write_command_complete("SHOW", out);
        }
        RouteCommand::Invalid { .. } => {
            let err = cmd.error().expect("invalid command has an error");
            be::write_error(Severity::Error, err.sqlstate(), &err.to_string(), out);
        }
    }
    be::write_ready_for_query(tx, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::{check, Frame};

    fn tags(mut buf: &[u8]) -> Vec<char> {
        let mut out = Vec::new();
        while let Some(n) = check(buf, 1 << 20).unwrap() {
            out.push(Frame::new(&buf[..n]).tag as char);
            buf = &buf[n..];
        }
        out
    }

    #[test]
    fn route_commands_are_answered_like_a_server() {
        let mut current = RouteOverride::Auto;
        let mut out = BytesMut::new();
        answer_route_command(
            &RouteCommand::Set(RouteOverride::Primary),
            &mut current,
            TxStatus::Idle,
            &mut out,
        );
        assert_eq!(current, RouteOverride::Primary);
        assert_eq!(tags(&out), vec!['C', 'Z']);

        let mut out = BytesMut::new();
        answer_route_command(&RouteCommand::Show, &mut current, TxStatus::Idle, &mut out);
        assert_eq!(tags(&out), vec!['T', 'D', 'C', 'Z']);
        assert!(out.windows(7).any(|w| w == b"primary"));

        let mut out = BytesMut::new();
        let invalid = RouteCommand::Invalid {
            value: "sideways".into(),
        };
        answer_route_command(&invalid, &mut current, TxStatus::InTransaction, &mut out);
        assert_eq!(tags(&out), vec!['E', 'Z']);
        assert_eq!(
            current,
            RouteOverride::Primary,
            "unchanged by an invalid value"
        );
        assert_eq!(out[out.len() - 1], b'T');

        let mut out = BytesMut::new();
        answer_route_command(&RouteCommand::Reset, &mut current, TxStatus::Idle, &mut out);
        assert_eq!(current, RouteOverride::Auto);
    }

    #[test]
    fn the_primary_serves_every_destination() {
        assert!(ServerRole::Primary.serves(Destination::READ));
        assert!(ServerRole::Primary.serves(Destination::Replica(GroupId::named(0))));
        assert!(ServerRole::Primary.serves(Destination::Primary));
        assert!(Destination::READ.is_read() && !Destination::Primary.is_read());
    }
}
