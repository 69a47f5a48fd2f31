//! pgrelay: a PostgreSQL connection pooler and read/write query router.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod cores;
pub mod demo;
pub mod frontend;
pub mod idle_poll;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod router;
pub mod shutdown;
pub mod stream;
pub mod timer;
pub mod tls;
