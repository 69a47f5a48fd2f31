//! Configuration: typed settings loaded from YAML and `PGBOUNCER_*` environment variables.

mod modes;

pub use modes::{AuthType, InvalidMode, PoolMode, SslMode};
