//! The `tollgate` binary's wiring: which components run in this process, their
//! listeners, start-up order and graceful shutdown; and the demo seed.

pub mod app;
pub mod demo;
