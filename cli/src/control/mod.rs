//! The control socket: how `strata` commands reach the daemon that has a store mounted.
//!
//! The daemon (the `strata` binary itself, running `mount --foreground`) listens on
//! `STORE/control.sock` (mode 0600, owner only) for as long as it holds the store. Each
//! connection carries exactly one exchange: one JSON request line from the client, one
//! JSON response line from the daemon, then both sides close. See docs/control-socket.md.
//!
//! - `proto`: the request and reply types (the wire format is their serde form).
//! - `client`: sending one request; telling "no daemon here" apart from "daemon broken".
//! - `server`: the daemon's accept loop; each request runs on a thread of its own and is
//!   carried out by `ops::execute`, the same code a command runs when no daemon is there.
//!
//! The server lives in `cli`, not `fs`, because the daemon is the `strata` binary: it owns
//! the store, the table of its mounts and the process lifecycle; `fs` only serves one
//! mount's kernel requests.

pub mod client;
pub use strata_cli::proto;
pub mod server;

use std::path::{Path, PathBuf};

/// File name of the control socket inside the store directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Path of the control socket of the store at `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET_NAME)
}
