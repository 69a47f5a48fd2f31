//! pgrelay: a PostgreSQL connection pooler and read/write query router.

pub mod config;
pub mod router;
