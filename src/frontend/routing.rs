//! How the query loop turns router decisions into a server: which pool a
//! statement needs, whether the attached server can take it, and the
//! `pgrelay.route` commands pgrelay answers itself.

use std::sync::Arc;

use bytes::BytesMut;

use crate::cluster::{DatabasePools, GroupId, ReplicaEndpoint};
use crate::protocol::backend::{self as be, Severity, TxStatus};
use crate::router::{Decision, Effect, PinReason, RouteCommand, RouteOverride, Target, TxState};

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
    /// To `dest`, with no pin and nothing for pgrelay to answer.
    pub fn to(dest: Destination) -> Self {
        Routed {
            dest,
            pin: None,
            intercept: None,
        }
    }

    pub fn primary() -> Self {
        Self::to(Destination::Primary)
    }

    pub fn from_decision(decision: Decision, pools: &DatabasePools) -> Self {
        let mut routed = Self::to(Destination::of(&decision.route.target, pools));
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

/// What a classification depends on besides the statement's text (the
/// database and user are fixed for a session; the application name is left
/// out, so sessions whose rules look at it do not use [`LastRoute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteContext {
    pub tx: TxState,
    pub pinned: bool,
    pub route_override: RouteOverride,
    pub routes_reads: bool,
}

/// The last Query or Parse a session classified and where it went, so that the
/// same statement sent again in the same context skips classification.
/// Drivers that re-send an unnamed statement's Parse on every execution
/// (pgbench `-M extended`, JDBC below its prepare threshold) send the same
/// bytes each time: a Parse is kept by its message. Simple-protocol clients
/// inline their parameters, so a Query is kept by the classifier's cache key,
/// its literal-free shape. Only plain destinations are kept: a statement that
/// pins the session or is answered by pgrelay is classified every time.
#[derive(Default)]
pub(crate) struct LastRoute {
    /// The kept message or shape.
    key: Vec<u8>,
    /// The shape of the Query being routed, written by the caller and kept
    /// by swapping buffers rather than copying.
    shape: Vec<u8>,
    kept: Option<Kept>,
}

#[derive(Clone, Copy)]
struct Kept {
    by: KeptBy,
    context: RouteContext,
    dest: Destination,
}

/// What [`LastRoute::key`] holds, so a Parse never matches a Query's shape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeptBy {
    Message,
    Shape,
}

impl LastRoute {
    /// Longer keys are not kept: comparing and copying them would cost more
    /// than a cache lookup, and long texts rarely repeat back to back.
    const MAX_KEY: usize = 512;

    /// Where `msg` went last time, if it is the kept message in the same context.
    pub fn recall(&self, msg: &[u8], context: RouteContext) -> Option<Destination> {
        self.recall_by(KeptBy::Message, msg, context)
    }

    /// The buffer for the routed Query's shape (see [`Classifier::cache_key`](crate::router::Classifier::cache_key)).
    pub fn shape_mut(&mut self) -> &mut Vec<u8> {
        &mut self.shape
    }

    pub fn shape(&self) -> &[u8] {
        &self.shape
    }

    /// Where a Query of the current [`LastRoute::shape`] went last time in
    /// the same context.
    pub fn recall_shape(&self, context: RouteContext) -> Option<Destination> {
        self.recall_by(KeptBy::Shape, &self.shape, context)
    }

    fn recall_by(&self, by: KeptBy, key: &[u8], context: RouteContext) -> Option<Destination> {
        let kept = self.kept?;
        (kept.by == by && kept.context == context && self.key == key).then_some(kept.dest)
    }

    /// Keeps `msg`'s outcome for the next [`LastRoute::recall`], or forgets the
    /// last one if this outcome may not be reused: it pins the session, is
    /// answered by pgrelay, or came from a rule naming a replica group (whose
    /// lookup counts a topology event per statement when the database lacks
    /// the group).
    pub fn remember(
        &mut self,
        msg: &[u8],
        context: RouteContext,
        routed: &Routed,
        names_group: bool,
    ) {
        if !Self::keepable(msg.len(), routed, names_group) {
            self.kept = None;
            return;
        }
        self.key.clear();
        self.key.extend_from_slice(msg);
        self.keep(KeptBy::Message, context, routed);
    }

    /// [`LastRoute::remember`] for the current shape, for
    /// [`LastRoute::recall_shape`].
    pub fn remember_shape(&mut self, context: RouteContext, routed: &Routed, names_group: bool) {
        if !Self::keepable(self.shape.len(), routed, names_group) {
            self.kept = None;
            return;
        }
        std::mem::swap(&mut self.key, &mut self.shape);
        self.keep(KeptBy::Shape, context, routed);
    }

    fn keepable(key_len: usize, routed: &Routed, names_group: bool) -> bool {
        !names_group
            && routed.pin.is_none()
            && routed.intercept.is_none()
            && key_len <= Self::MAX_KEY
    }

    fn keep(&mut self, by: KeptBy, context: RouteContext, routed: &Routed) {
        self.kept = Some(Kept {
            by,
            context,
            dest: routed.dest,
        });
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

    const IDLE: RouteContext = RouteContext {
        tx: TxState::Idle,
        pinned: false,
        route_override: RouteOverride::Auto,
        routes_reads: true,
    };

    #[test]
    fn a_route_is_recalled_only_for_the_same_message_in_the_same_context() {
        let mut last = LastRoute::default();
        let parse = b"P\0\0\0\x1f\0SELECT 1 FROM t WHERE id = $1\0\0\0";
        assert_eq!(last.recall(parse, IDLE), None, "nothing kept yet");
        last.remember(parse, IDLE, &Routed::to(Destination::READ), false);
        assert_eq!(last.recall(parse, IDLE), Some(Destination::READ));

        let other_text = b"P\0\0\0\x1f\0SELECT 2 FROM t WHERE id = $1\0\0\0";
        assert_eq!(last.recall(other_text, IDLE), None);
        assert_eq!(last.recall(&parse[..parse.len() - 1], IDLE), None);
        for context in [
            RouteContext {
                tx: TxState::InReadWriteTx,
                ..IDLE
            },
            RouteContext {
                pinned: true,
                ..IDLE
            },
            RouteContext {
                route_override: RouteOverride::Primary,
                ..IDLE
            },
            RouteContext {
                routes_reads: false,
                ..IDLE
            },
        ] {
            assert_eq!(last.recall(parse, context), None, "{context:?}");
        }

        // A newer message replaces the kept one.
        last.remember(other_text, IDLE, &Routed::to(Destination::Primary), false);
        assert_eq!(last.recall(other_text, IDLE), Some(Destination::Primary));
        assert_eq!(last.recall(parse, IDLE), None);
    }

    fn set_shape(last: &mut LastRoute, shape: &[u8]) {
        last.shape_mut().clear();
        last.shape_mut().extend_from_slice(shape);
    }

    #[test]
    fn a_query_is_recalled_by_shape_and_never_as_a_parse() {
        let mut last = LastRoute::default();
        let shape = b"SELECT v FROM t WHERE id = 0";
        set_shape(&mut last, shape);
        assert_eq!(last.recall_shape(IDLE), None, "nothing kept yet");
        last.remember_shape(IDLE, &Routed::to(Destination::READ), false);

        set_shape(&mut last, shape);
        assert_eq!(last.recall_shape(IDLE), Some(Destination::READ));
        let in_tx = RouteContext {
            tx: TxState::InReadWriteTx,
            ..IDLE
        };
        assert_eq!(last.recall_shape(in_tx), None, "another context");
        assert_eq!(last.recall(shape, IDLE), None, "a shape is no message");

        set_shape(&mut last, b"SELECT w FROM t WHERE id = 0");
        assert_eq!(last.recall_shape(IDLE), None, "another shape");

        // A kept Parse is not recalled for a Query whose shape has its bytes.
        let parse = b"P\0\0\0\x0b\0SELECT 1\0\0\0";
        last.remember(parse, IDLE, &Routed::to(Destination::READ), false);
        set_shape(&mut last, parse);
        assert_eq!(last.recall_shape(IDLE), None);
        assert_eq!(last.recall(parse, IDLE), Some(Destination::READ));

        let pinning = Routed {
            pin: Some(PinReason::Listen),
            ..Routed::to(Destination::Primary)
        };
        last.remember_shape(IDLE, &pinning, false);
        assert_eq!(
            last.recall(parse, IDLE),
            None,
            "a pin forgets the last route"
        );
    }

    #[test]
    fn pins_intercepts_group_rules_and_long_messages_are_not_kept() {
        let mut last = LastRoute::default();
        let query = b"Q\0\0\0\x0dSELECT 1\0";
        last.remember(query, IDLE, &Routed::to(Destination::READ), false);

        let pinning = Routed {
            pin: Some(PinReason::Listen),
            ..Routed::to(Destination::Primary)
        };
        last.remember(query, IDLE, &pinning, false);
        assert_eq!(
            last.recall(query, IDLE),
            None,
            "a pin forgets the last route"
        );

        last.remember(query, IDLE, &Routed::to(Destination::READ), false);
        let intercepted = Routed {
            intercept: Some(RouteCommand::Show),
            ..Routed::to(Destination::Primary)
        };
        last.remember(query, IDLE, &intercepted, false);
        assert_eq!(last.recall(query, IDLE), None, "an intercept forgets it");

        last.remember(query, IDLE, &Routed::to(Destination::READ), false);
        last.remember(query, IDLE, &Routed::to(Destination::READ), true);
        assert_eq!(
            last.recall(query, IDLE),
            None,
            "a group rule's outcome forgets it"
        );

        let long = vec![b'x'; LastRoute::MAX_KEY + 1];
        last.remember(&long, IDLE, &Routed::to(Destination::READ), false);
        assert_eq!(last.recall(&long, IDLE), None);
    }

    #[test]
    fn the_primary_serves_every_destination() {
        assert!(ServerRole::Primary.serves(Destination::READ));
        assert!(ServerRole::Primary.serves(Destination::Replica(GroupId::named(0))));
        assert!(ServerRole::Primary.serves(Destination::Primary));
        assert!(Destination::READ.is_read() && !Destination::Primary.is_read());
    }
}
