//! pgrelay: a PostgreSQL connection pooler and read/write query router.

pub mod auth;
pub mod backend;
pub mod config;
pub mod pool;
pub mod protocol;
pub mod stream;
