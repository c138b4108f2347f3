//! The client side of the control socket: one request, one reply, per connection.
//!
//! `send` tells three outcomes apart: a reply (the daemon answered, possibly with an
//! error), no daemon (no socket file, or nobody listening on it: the caller may open the
//! store itself), and a broken daemon (it accepted but did not answer in time, or hung up
//! without a reply), which is an error naming the socket.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::proto::{Progress, ProgressLine, Request, Response};
use super::socket_candidates;

/// How long a command waits for the daemon's reply (a `snapshot list` walks every record
/// of the store, so this is generous); `STRATA_CONTROL_TIMEOUT` (seconds) overrides it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// Environment variable overriding `REPLY_TIMEOUT`, in seconds.
pub const TIMEOUT_ENV: &str = "STRATA_CONTROL_TIMEOUT";

/// The reply timeout: `STRATA_CONTROL_TIMEOUT` seconds if set, else `default`.
pub fn reply_timeout(default: Duration) -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map_or(default, Duration::from_secs)
}

/// Longest socket path used as is; longer ones are reached through /proc/self/fd (a
/// `sockaddr_un` holds at most 107 bytes).
const MAX_DIRECT_PATH: usize = 100;

/// Runs `f` with a path to the socket `path` short enough for `sockaddr_un`: `path`
/// itself, or `/proc/self/fd/N/NAME` through an open descriptor of its directory.
pub fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= MAX_DIRECT_PATH {
        return f(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = File::open(parent)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let result = f(&short);
    drop(dir);
    result
}

/// True for a connect error that means "no daemon listens here".
pub fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTSOCK)
    )
}

/// Connects to the daemon of `store` on one of its socket paths (`socket_candidates`):
/// the stream and the path it answered on, or `Ok(None)` if none listens.
pub fn connect(store: &Path) -> Result<Option<(UnixStream, PathBuf)>> {
    let mut failed = None;
    for path in socket_candidates(store) {
        match with_short_path(&path, |short| UnixStream::connect(short)) {
            Ok(stream) => return Ok(Some((stream, path))),
            Err(err) if is_absent(&err) => {}
            Err(err) => failed = failed.or(Some((path, err))),
        }
    }
    match failed {
        None => Ok(None),
        Some((path, err)) => Err(anyhow!(
            "cannot connect to the strata daemon on {}: {err}",
            path.display()
        )),
    }
}

/// Sends `request` to the daemon of `store` and returns its reply; `Ok(None)` if no
/// daemon listens there.
pub fn send(store: &Path, request: &Request, timeout: Duration) -> Result<Option<Response>> {
    send_with_progress(store, request, timeout, &mut |_| {})
}

/// `send`, handing every progress line the daemon sends before its reply to `progress`
/// (the request asks for them with its `progress` field). `timeout` bounds the wait for
/// each line.
pub fn send_with_progress(
    store: &Path,
    request: &Request,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Response>> {
    let Some((stream, socket)) = connect(store)? else {
        return Ok(None);
    };
    let broken = |what: String| {
        anyhow!(
            "the strata daemon of {} is not answering on {}: {what}",
            store.display(),
            socket.display()
        )
    };
    exchange(stream, request, reply_timeout(timeout), progress)
        .map(Some)
        .map_err(|err| broken(err.to_string()))
}

/// One exchange on a connected stream.
fn exchange(
    mut stream: UnixStream,
    request: &Request,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> io::Result<Response> {
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(request).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "it closed the connection without a reply",
                ))
            }
            Ok(_) => {
                let line = line.trim_end();
                if let Ok(ProgressLine { progress: p }) = serde_json::from_str(line) {
                    progress(p);
                    continue;
                }
                return serde_json::from_str(line).map_err(|err| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {err}"))
                });
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {} s", timeout.as_secs()),
                ))
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{runtime_dir, socket_path};

    #[test]
    fn no_socket_means_no_daemon() {
        let dir = std::env::temp_dir().join(format!("strata-cli-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(send(&dir, &Request::Ping, Duration::from_secs(1))
            .unwrap()
            .is_none());
        // A socket file nobody listens on (a daemon that died) is no daemon either.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir())
            .unwrap();
        let listener = std::os::unix::net::UnixListener::bind(socket_path(&dir)).unwrap();
        drop(listener);
        assert!(send(&dir, &Request::Ping, Duration::from_secs(1))
            .unwrap()
            .is_none());
        std::fs::remove_file(socket_path(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_socket_paths_are_reached_through_proc() {
        let base = std::env::temp_dir().join(format!("strata-cli-long-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener =
            with_short_path(&path, |short| std::os::unix::net::UnixListener::bind(short)).unwrap();
        assert!(path.exists());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let request: Request = serde_json::from_str(line.trim()).unwrap();
            assert_eq!(request, Request::Ping);
            let mut stream = stream;
            writeln!(stream, r#"{{"ok":true,"result":1}}"#).unwrap();
        });
        let stream = with_short_path(&path, |short| UnixStream::connect(short)).unwrap();
        let reply = exchange(stream, &Request::Ping, Duration::from_secs(5), &mut |_| {}).unwrap();
        assert!(reply.ok);
        server.join().unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
