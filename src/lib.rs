//! pgrelay: a PostgreSQL connection pooler and read/write query router.

pub mod auth;
pub mod config;
pub mod tls;
