//! The library part of the `strata` command: what parses bytes a user or a client sends,
//! used by the binary (`main.rs` and its modules) and by the fuzz targets (`fuzz/`), so
//! both run the same code.
//!
//! - `proto`: the control socket's wire types and the daemon's reading of a request line
//!   (the binary's `control::proto`).
//! - `schedule`: automatic snapshot schedules (`15m`, keep rules).
//! - `fuzzing`: fuzz entry points (docs/fuzzing.md); not an API.

#[path = "control/proto.rs"]
pub mod proto;
pub mod schedule;

#[doc(hidden)]
pub mod fuzzing;
