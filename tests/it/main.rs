//! End-to-end tests of the tollgate binary's components over real sockets,
//! against the real services: SQLite + embedded usage store, and PostgreSQL +
//! ClickHouse. Each test runs on its own databases.

mod admin;
mod browser;
mod cli;
mod config_file;
mod gateway;
mod jwt;
mod metering_faults;
mod multiprocess;
mod policies;
mod portal;
mod portal_apps;
mod portal_catalog;
mod portal_sign_in;
mod portal_support;
mod quotas;
mod rate_limits;
mod support;
mod transform;
