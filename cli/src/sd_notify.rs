//! systemd's readiness protocol (sd_notify(3)), without libsystemd: when `NOTIFY_SOCKET`
//! names a datagram socket (a path, or `@name` for an abstract one), `strata mount
//! --foreground` sends `READY=1` once the mount is ready and `STOPPING=1` when it begins
//! to unmount, so that a unit with `Type=notify` starts dependent units only when the
//! mount serves. Without the variable nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

const SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to the service manager, if one asked for it. A failure
/// is logged: readiness is a courtesy, never a reason to fail the mount.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let socket = socket.to_string_lossy().into_owned();
    let sent = (|| -> std::io::Result<()> {
        let addr = match socket.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&socket)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot notify the service manager at {socket} ({state}): {e}");
    }
}
