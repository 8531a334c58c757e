//! ferry: keeps local folders converged into S3.
//!
//! See ARCHITECTURE.md for the map. In short: [`core`] decides (no I/O), [`store`] remembers
//! (SQLite), [`s3`] talks to S3, [`scan`] reads the disk, [`engine`] runs the loops, [`api`]
//! serves HTTP, and [`serve`] wires them together.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod engine;
pub mod manifest;
pub mod metrics;
pub mod s3;
pub mod scan;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod watch;
