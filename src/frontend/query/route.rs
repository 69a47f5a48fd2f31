//! Where a Query, Parse or batch-opening Bind must run: classifying its text,
//! or reusing the session's last decision for a repeated statement.

use super::*;

impl Session<'_> {
    /// Reads go to replicas only in transaction and statement pooling, and only
    /// for databases that have replicas; a session-pooled client keeps its primary.
    fn routes_reads(&self) -> bool {
        releases_at_idle(self.mode) && self.pools.has_replicas()
    }

    fn tx_state(&self) -> TxState {
        match &self.server {
            Some(a) if a.relay.tx != TxStatus::Idle => match a.role {
                ServerRole::Replica(_) => TxState::InReadOnlyTx,
                ServerRole::Primary => TxState::InReadWriteTx,
            },
            _ => TxState::Idle,
        }
    }

    /// Classifies the SQL of a Query (by its cache `key`, already computed)
    /// or a Parse in `context` (without replicas, only texts that mention
    /// pgrelay get here: see `route_message`). Also tells whether a rule
    /// named a replica group.
    fn route_sql(&self, sql: &str, key: Option<&[u8]>, context: RouteContext) -> (Routed, bool) {
        let ctx = SessionContext {
            database: &self.database,
            user: &self.user,
            application_name: self.params.get("application_name"),
            route_override: context.route_override,
            tx: context.tx,
            session_pinned: context.pinned,
        };
        let decision = match key {
            Some(key) => self.classifier.classify_by_key(sql, key, &ctx),
            None => self.classifier.classify(sql, &ctx),
        };
        let names_group = matches!(decision.route.target, RouteTarget::Group(_));
        let mut routed = Routed::from_decision(decision, &self.pools);
        if !context.routes_reads {
            routed.dest = Destination::Primary;
        }
        (routed, names_group)
    }

    /// Routes a Query or Parse, reusing the last decision when the client sent
    /// the same Parse, or a Query of the same shape, in the same context.
    // Kept out of line: inlined into the query loop it changed the loop's
    // code enough to cost every transaction without routing about 460
    // instructions at one client (callgrind), for a call of a few.
    #[inline(never)]
    fn route_text(&mut self, msg: &[u8], frame: Frame<'_>) -> Result<Routed, FrontendError> {
        let memo = !self.classifier.depends_on_application_name();
        let context = RouteContext {
            tx: self.tx_state(),
            pinned: self.pinned.is_some(),
            route_override: self.route_override,
            routes_reads: self.routes_reads(),
        };
        let by_shape = frame.tag == tag::QUERY;
        if memo && !by_shape {
            if let Some(dest) = self.last_route.recall(msg, context) {
                return Ok(self.repeated(dest));
            }
        }
        let sql = match frame.tag {
            tag::QUERY => fe::query(frame.body)?,
            _ => fe::parse(frame.body)?.query,
        };
        if by_shape {
            // Keys are compared before the text is known to be UTF-8: a key
            // kept from a UTF-8 text matches only texts that differ from it
            // inside string literals (see `Classifier::cache_key`).
            self.classifier.cache_key(sql, self.last_route.shape_mut());
            if memo {
                if let Some(dest) = self.last_route.recall_shape(context) {
                    return Ok(self.repeated(dest));
                }
            }
        }
        // Text in another client encoding is not parsed: like SQL the
        // classifier cannot parse, it runs on the primary.
        let Ok(sql) = std::str::from_utf8(sql) else {
            return Ok(Routed::primary());
        };
        let key = by_shape.then(|| self.last_route.shape());
        let (routed, names_group) = self.route_sql(sql, key, context);
        if memo {
            if by_shape {
                self.last_route
                    .remember_shape(context, &routed, names_group);
            } else {
                self.last_route.remember(msg, context, &routed, names_group);
            }
        }
        Ok(routed)
    }

    fn repeated(&self, dest: Destination) -> Routed {
        self.classifier.count_repeat();
        Routed::to(dest)
    }

    /// Where the message at the head of the client buffer must run, if it is a
    /// routing point (a Query, a Parse, or a Bind that starts a batch).
    pub(super) fn route_message(&mut self, msg: &[u8]) -> Result<Option<Routed>, FrontendError> {
        let frame = Frame::new(msg);
        Ok(match frame.tag {
            // Without replicas only `pgrelay.*` commands need the classifier: a
            // byte search spares decoding the message (a false hit only costs that).
            tag::QUERY | tag::PARSE if !self.routes_reads() && !mentions_pgrelay(frame.body) => {
                Some(Routed::primary())
            }
            tag::QUERY | tag::PARSE => Some(self.route_text(msg, frame)?),
            tag::BIND if self.server.is_none() => {
                let bind = fe::bind(frame.body)?;
                let dest = self
                    .statements
                    .get(bind.statement)
                    .map_or(Destination::Primary, |s| s.destination);
                Some(Routed::to(dest))
            }
            _ => None,
        })
    }
}
