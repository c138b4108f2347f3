//! The control socket: how `strata` commands reach the daemon that has a store mounted.
//!
//! The daemon (the `strata` binary itself, running `mount --foreground`) listens on a Unix
//! socket in a runtime directory (`runtime_dir`: `/run/strata` for root,
//! `$XDG_RUNTIME_DIR/strata` otherwise), named after the store (`socket_name`), mode 0600
//! (owner only), for as long as it holds the store. The socket is not in the store: the
//! store may sit on a filesystem that cannot hold a Unix socket (some FUSE filesystems,
//! NFS). Each connection carries exactly one exchange: one JSON request line from the
//! client, one JSON response line from the daemon, then both sides close. See
//! docs/control-socket.md.
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

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the directory of the control sockets, instead of the
/// default of `runtime_dir`.
pub const RUNTIME_DIR_ENV: &str = "STRATA_RUNTIME_DIR";
/// The runtime directory of root's daemons.
pub const ROOT_RUNTIME_DIR: &str = "/run/strata";
/// Longest part of the store directory's name kept in a socket name.
const MAX_NAME_PART: usize = 40;

/// The directory the control sockets of this user's daemons live in:
/// `$STRATA_RUNTIME_DIR` if set, else `/run/strata` for root, else
/// `$XDG_RUNTIME_DIR/strata`, else `/tmp/strata-UID`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from(ROOT_RUNTIME_DIR);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join("strata"),
        None => PathBuf::from(format!("/tmp/strata-{uid}")),
    }
}

/// File name of the control socket of the store at `store` (canonical): the store
/// directory's name (characters other than `[A-Za-z0-9._-]` as `_`, at most 40 bytes),
/// a dash, the first 16 hex digits of the blake3 hash of the whole canonical path, and
/// `.sock`. Two stores never share a name; a reader sees which store a socket serves.
pub fn socket_name(store: &Path) -> String {
    let base: String = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_PART)
        .collect();
    let base = if base.is_empty() || base.starts_with('.') {
        format!("store{base}")
    } else {
        base
    };
    let hash = blake3::hash(store.as_os_str().as_bytes());
    let hex: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{base}-{hex}.sock")
}

/// Path of the control socket this user's daemon of `store` listens on.
pub fn socket_path(store: &Path) -> PathBuf {
    runtime_dir().join(socket_name(store))
}

/// Every path a daemon of `store` may listen on, this user's first. Root also looks in
/// the runtime directories of other users (`/run/user/UID/strata`), so that root reaches
/// a daemon another user started (the daemon lets root in, as its own user).
pub fn socket_candidates(store: &Path) -> Vec<PathBuf> {
    let own = socket_path(store);
    let mut all = vec![own.clone()];
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && std::env::var_os(RUNTIME_DIR_ENV).is_none() {
        let name = socket_name(store);
        if let Ok(users) = std::fs::read_dir("/run/user") {
            for user in users.flatten() {
                let path = user.path().join("strata").join(&name);
                if path != own && std::fs::symlink_metadata(&path).is_ok() {
                    all.push(path);
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_name_the_store_and_differ_per_path() {
        let a = socket_name(Path::new("/srv/my store"));
        assert!(a.starts_with("my_store-") && a.ends_with(".sock"), "{a}");
        assert_eq!(a.len(), "my_store-".len() + 16 + ".sock".len());
        assert_ne!(a, socket_name(Path::new("/other/my store")));
        assert_eq!(a, socket_name(Path::new("/srv/my store")));
        let long = socket_name(Path::new(&format!("/x/{}", "é".repeat(100))));
        assert!(long.len() <= MAX_NAME_PART + 1 + 16 + 5, "{long}");
        assert!(socket_name(Path::new("/")).starts_with("store-"));
        assert!(socket_name(Path::new("/x/.hidden")).starts_with("store.hidden-"));
    }
}
