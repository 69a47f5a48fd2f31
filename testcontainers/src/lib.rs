//! Real PostgreSQL clusters and a DNS server for pgrelay's tests and demo.
