//! The closed sets of label values pgrelay exports. Every label is an enum (or a
//! sanitised SQLSTATE class) so a client can never create new time series.

/// Declares a label enum with its exported spelling and the list of all values.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order (`value as usize` indexes it).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value as exported.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

label_enum! {
    /// Where a client session is in its life.
    ClientState {
        /// Connected, startup/TLS/authentication not finished yet.
        Login => "login",
        /// Logged in, no query in progress.
        Idle => "idle",
        /// Needs a server connection and is waiting for one.
        Waiting => "waiting",
        /// Holds a server connection.
        Active => "active",
    }
}

label_enum! {
    /// How a client login ended.
    LoginResult {
        Ok => "ok",
        /// Wrong password or unknown user.
        AuthFailed => "auth_failed",
        /// Turned away before authentication: too many clients, unknown database,
        /// TLS required, shutting down, protocol violation.
        Refused => "refused",
        /// `client_login_timeout` expired.
        Timeout => "timeout",
    }
}

label_enum! {
    /// Which kind of server a pool, query or routing decision is about.
    Role {
        Primary => "primary",
        Replica => "replica",
    }
}

label_enum! {
    /// State of a server connection inside a pool.
    ServerState {
        /// Checked out by a client.
        Active => "active",
        /// In the pool, ready for a client.
        Idle => "idle",
    }
}

label_enum! {
    /// How an attempt to open (and log in to) a server connection ended.
    ConnectResult {
        Ok => "ok",
        /// `server_connect_timeout` expired.
        Timeout => "timeout",
        /// The server rejected pgrelay's login (password, pg_hba, unsupported method).
        LoginFailed => "login_failed",
        /// Anything else: refused TCP connection, DNS, TLS, protocol errors.
        Error => "error",
    }
}

label_enum! {
    /// Who produced an error a client received.
    ErrorOrigin {
        /// pgrelay itself (pool timeout, auth failure, protocol violation...).
        Pooler => "pooler",
        /// PostgreSQL, relayed to the client.
        Server => "server",
    }
}

/// The SQLSTATE class (first two characters) as a label. Anything that is not a
/// well-formed five-character SQLSTATE becomes `"unknown"`, so a malformed error
/// from a server cannot create arbitrary series.
pub fn sqlstate_class(sqlstate: &str) -> &str {
    let well_formed = sqlstate.len() == 5
        && sqlstate
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if well_formed {
        &sqlstate[..2]
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_value_in_index_order() {
        for (i, s) in ClientState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, r) in ConnectResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(Role::ALL, &[Role::Primary, Role::Replica]);
        assert_eq!(LoginResult::AuthFailed.label(), "auth_failed");
    }

    #[test]
    fn sqlstate_class_is_bounded() {
        assert_eq!(sqlstate_class("28P01"), "28");
        assert_eq!(sqlstate_class("08006"), "08");
        assert_eq!(sqlstate_class("XX000"), "XX");
        assert_eq!(sqlstate_class("select * from t"), "unknown");
        assert_eq!(sqlstate_class("28p01"), "unknown");
        assert_eq!(sqlstate_class("2800"), "unknown");
        assert_eq!(sqlstate_class("é8000"), "unknown");
    }
}
