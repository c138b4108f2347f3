//! The library part of the `strata` command: what parses bytes a user or a client sends,
//! used by the binary (`main.rs` and its modules).
//!
//! - `proto`: the control socket's wire types and the daemon's reading of a request line
//!   (the binary's `control::proto`).
//! - `schedule`: automatic snapshot schedules (`15m`, keep rules).

#[path = "control/proto.rs"]
pub mod proto;
pub mod schedule;
