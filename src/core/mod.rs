//! The pure core: what to upload, how, and what state follows. No I/O lives here.

pub mod checksum;
pub mod concurrency;
pub mod diff;
pub mod fair;
pub mod lifecycle;
pub mod md5;
pub mod model;
pub mod object;
pub mod pace;
pub mod plan;
pub mod spec;
pub mod time;
pub mod url;
pub mod verify;
