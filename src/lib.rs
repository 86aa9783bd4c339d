//! The `tollgate` binary's wiring: which components run in this process, their
//! listeners, start-up order and graceful shutdown; the DB-less gateway's
//! configuration file; and the demo seed.

pub mod app;
pub mod config_file;
pub mod demo;
