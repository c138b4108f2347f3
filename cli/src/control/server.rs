//! The daemon's side of the control socket.
//!
//! `Server::start` makes the store's socket in the runtime directory (`super::socket_path`:
//! the directory is created owner-only if missing, and refused if another user owns it or
//! others may write to it), mode 0600: bound under a temporary name, chmod'ed, then
//! renamed into place, so the socket is never reachable with wider permissions. A stale
//! socket of the same store (a socket file nobody answers on) is removed first, and so are
//! the dead sockets of other stores in that directory (left by daemons killed with
//! SIGKILL). It accepts connections on a thread of its own. Each connection gets a thread:
//! it reads one request line, checks that the peer runs as the daemon's user, carries the
//! request out and writes one reply line. `Server::remove` deletes the socket file if it
//! is still ours.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tracing::{debug, info, warn};

use super::client::with_short_path;
use super::proto::{read_request, Progress, ProgressLine, Request, Response};
use super::socket_path;
use crate::daemon::mounts::{Daemon, MountTarget};
use crate::ops;

/// The listening socket of a daemon.
pub struct Server {
    path: PathBuf,
    /// Inode of the socket file this daemon made (to remove only its own).
    ino: u64,
}

impl Server {
    /// Creates the control socket of the daemon's store and starts accepting requests
    /// for `daemon`.
    pub fn start(daemon: &Arc<Daemon>) -> Result<Server> {
        let store = daemon.store_path.clone();
        let path = socket_path(&store);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        ensure_runtime_dir(&dir)?;
        remove_stale(&store, &path)?;
        sweep_dead_sockets(&dir, &path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        let listener = with_short_path(&temp, |short| UnixListener::bind(short))
            .with_context(|| format!("cannot create the control socket {}", path.display()))?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(|err| {
                let _ = fs::remove_file(&temp);
                anyhow!(err).context(format!(
                    "cannot create the control socket {}",
                    path.display()
                ))
            })?;
        let ino = fs::metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .ino();
        // Weak: the daemon (and the store, with its lock) must go away when the daemon
        // ends, even though this thread stays blocked in accept until the process exits.
        let accepting = Arc::downgrade(daemon);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, accepting))
            .context("cannot start the control-socket thread")?;
        info!("listening on {}", path.display());
        Ok(Server { path, ino })
    }

    /// Removes the socket file, if it is still the one this daemon made.
    pub fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.ino() == self.ino => {
                if let Err(err) = fs::remove_file(&self.path) {
                    warn!("cannot remove {}: {err}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// Creates the runtime directory `dir` (mode 0700) if it is missing, and refuses one that
/// is not a directory of ours that only we may write to.
fn ensure_runtime_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) => {
            return Err(anyhow!(err).context(format!(
                "cannot create the runtime directory {} for the control socket",
                dir.display()
            )))
        }
    }
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("cannot stat the runtime directory {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        bail!(
            "the runtime directory {} for the control socket is not a directory",
            dir.display()
        );
    }
    if meta.uid() != uid || meta.mode() & 0o022 != 0 {
        bail!(
            "the runtime directory {} for the control socket is not private to uid {uid} \
             (owner uid {}, mode {:o}); remove it or set STRATA_RUNTIME_DIR",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Removes a control socket nobody answers on; refuses if a daemon answers on it.
fn remove_stale(store: &Path, path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match with_short_path(path, |short| UnixStream::connect(short)) {
        Ok(_) => bail!(
            "another strata daemon of {} answers on {}; is the store mounted already?",
            store.display(),
            path.display()
        ),
        Err(_) => {
            info!("removing the stale control socket {}", path.display());
            match fs::remove_file(path) {
                // Another daemon's sweep removed it first.
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other
                    .with_context(|| format!("cannot remove the stale socket {}", path.display())),
            }
        }
    }
}

/// Removes the sockets in `dir` that refuse connections (their daemon died), but `ours`.
/// A socket being set up is never refused: a daemon binds (and listens on) its temporary
/// name before it renames it into place, and temporary names start with a dot.
fn sweep_dead_sockets(dir: &Path, ours: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path == ours || name.starts_with('.') || !name.ends_with(".sock") {
            continue;
        }
        let refused = matches!(
            with_short_path(&path, |short| UnixStream::connect(short)),
            Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED)
        );
        if refused && fs::remove_file(&path).is_ok() {
            debug!("removed the dead control socket {}", path.display());
        }
    }
}

fn accept_loop(listener: UnixListener, daemon: Weak<Daemon>) {
    for stream in listener.incoming() {
        match stream {
            Ok(mut stream) => {
                let Some(daemon) = daemon.upgrade() else {
                    let mut line = serde_json::to_string(&Response::closing()).unwrap_or_default();
                    line.push('\n');
                    let _ = stream.write_all(line.as_bytes());
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .name("control-request".into())
                    .spawn(move || serve(stream, &daemon));
                if let Err(err) = spawned {
                    warn!("cannot start a thread for a control request: {err}");
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                warn!("control socket accept failed: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The uid of the process at the other end.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn serve(stream: UnixStream, daemon: &Arc<Daemon>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let response = match peer_uid(&stream) {
        Ok(uid) if uid == me || uid == 0 => match read_request(&stream) {
            Ok(request) => {
                let mut lines = ProgressLines::new(&stream, request.wants_progress());
                handle(daemon, &request, &mut |done, total| lines.send(done, total))
            }
            Err(message) => Response::failure(message),
        },
        Ok(uid) => Response::failure(format!(
            "permission denied: uid {uid} may not control this daemon"
        )),
        Err(err) => Response::failure(format!("cannot identify the client: {err}")),
    };
    let mut line = serde_json::to_string(&response).unwrap_or_else(|err| {
        format!(r#"{{"ok":false,"error":"cannot encode the reply: {err}"}}"#)
    });
    line.push('\n');
    let mut stream = stream;
    if let Err(err) = stream.write_all(line.as_bytes()) {
        debug!("cannot send a control reply: {err}");
    }
}

/// Progress lines sent before the reply, at most five a second (and the last one), to a
/// client that asked for them. A client that went away stops them; the request itself
/// runs to its end (a daemon's flatten or scrub is not tied to the command that asked).
struct ProgressLines<'a> {
    stream: Option<&'a UnixStream>,
    last: Option<Instant>,
}

impl<'a> ProgressLines<'a> {
    const EVERY: Duration = Duration::from_millis(200);

    fn new(stream: &'a UnixStream, wanted: bool) -> Self {
        ProgressLines {
            stream: wanted.then_some(stream),
            last: None,
        }
    }

    fn send(&mut self, done: u64, total: u64) {
        let Some(mut stream) = self.stream else {
            return;
        };
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < Self::EVERY) && done < total {
            return;
        }
        self.last = Some(now);
        let line = ProgressLine {
            progress: Progress { done, total },
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        if let Err(err) = stream.write_all(text.as_bytes()) {
            debug!("client stopped reading progress: {err}");
            self.stream = None;
        }
    }
}

/// Carries out one request; `progress` hears how far a long one has got.
fn handle(daemon: &Arc<Daemon>, request: &Request, progress: &mut dyn FnMut(u64, u64)) -> Response {
    let Some(_busy) = daemon.begin() else {
        return Response::closing();
    };
    let result = match request {
        Request::Ping => serde_json::to_value(daemon.status()).map_err(anyhow::Error::from),
        Request::Mount {
            mount_point,
            branch,
            snapshot,
            threads,
            snapshot_every,
            keep,
        } => crate::daemon::auto::AutoSnapshots::parse(snapshot_every.as_deref(), keep.as_deref())
            .and_then(|auto| {
                let target = MountTarget {
                    branch: branch.clone(),
                    snapshot: snapshot.clone(),
                    auto,
                };
                daemon.mount(Path::new(mount_point), &target, *threads)
            })
            .and_then(|info| Ok(serde_json::to_value(info)?)),
        other => ops::execute(&daemon.store, daemon.as_ref(), other, progress),
    };
    match result {
        Ok(value) => {
            if !matches!(request, Request::Ping) {
                info!("control: {} done", request.op());
            }
            Response::success(value)
        }
        Err(err) => {
            let message = crate::error::message(&err);
            info!("control: {} failed: {message}", request.op());
            Response::failure(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client;
    use crate::control::proto::{Snapshot, Status};
    use std::io::{BufRead, BufReader};

    /// A daemon with no mounts over a fresh store in a temp dir, and its socket.
    fn daemon(tag: &str) -> (PathBuf, Arc<Daemon>, Server) {
        let dir =
            std::env::temp_dir().join(format!("strata-cli-server-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        strata_snapshot::Store::init(&dir, &crate::store::default_init_options()).unwrap();
        let store = strata_snapshot::Store::open(&dir).unwrap();
        let daemon = Daemon::new(store, dir.canonicalize().unwrap(), 1);
        let server = Server::start(&daemon).unwrap();
        (dir, daemon, server)
    }

    fn call(dir: &Path, request: &Request) -> Response {
        client::send(dir, request, Duration::from_secs(30))
            .unwrap()
            .expect("the daemon answers")
    }

    /// Progress lines, then the reply, for a verify and a flatten that asked for them;
    /// none for one that did not.
    #[test]
    fn long_requests_send_progress_lines_when_asked() {
        use strata_snapshot::{Ctx, InodeNo, VolumeKind, MAIN_BRANCH};
        let (dir, daemon, server) = daemon("progress");
        let vol = daemon
            .store
            .volume(VolumeKind::Branch(MAIN_BRANCH.into()))
            .unwrap();
        let ctx = Ctx {
            uid: 0,
            gid: 0,
            umask: 0,
        };
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let f = vol
                .mknod(
                    InodeNo::ROOT,
                    name.as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                    ctx,
                )
                .unwrap();
            // Incompressible (an LCG's high bits), so the packs hold 3 MiB per file.
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
            let data: Vec<u8> = (0..3 << 20)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (x >> 56) as u8
                })
                .collect();
            vol.write(f.ino, 0, &data).unwrap();
            daemon
                .store
                .snapshot_create(MAIN_BRANCH, &format!("s{i}"))
                .unwrap();
        }
        let collect = |request: &Request| {
            let mut lines = Vec::new();
            let reply =
                client::send_with_progress(&dir, request, Duration::from_secs(60), &mut |p| {
                    lines.push(p)
                })
                .unwrap()
                .expect("the daemon answers");
            assert!(reply.ok, "{reply:?}");
            lines
        };
        // 9 MiB of packs at 8 MiB/s: a second or more, so several lines come.
        let lines = collect(&Request::Verify {
            rate_mib: Some(8),
            progress: true,
        });
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(
            lines.windows(2).all(|w| w[0].done <= w[1].done),
            "{lines:?}"
        );
        let last = lines.last().unwrap();
        assert!(
            last.total >= 9 << 20 && last.done == last.total,
            "{lines:?}"
        );
        assert!(collect(&Request::Verify {
            rate_mib: None,
            progress: false
        })
        .is_empty());
        for name in ["s0", "s1"] {
            daemon.store.snapshot_delete(name, false).unwrap();
        }
        let lines = collect(&Request::Flatten { progress: true });
        let last = lines.last().expect("a flatten reports its progress");
        assert!(last.total > 0 && last.done == last.total, "{lines:?}");
        server.remove();
        drop(server);
        drop(daemon);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_request_one_reply_over_the_socket() {
        let (dir, daemon, server) = daemon("rr");
        let mode = fs::metadata(socket_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is owner-only");

        let status: Status =
            serde_json::from_value(call(&dir, &Request::Ping).result.unwrap()).unwrap();
        assert_eq!(status.pid, std::process::id());
        assert!(status.mounts.is_empty());

        let created = call(
            &dir,
            &Request::SnapshotCreate {
                name: "x".into(),
                branch: Some("main".into()),
                via: None,
            },
        );
        assert!(created.ok, "{created:?}");
        let snapshot: Snapshot = serde_json::from_value(created.result.unwrap()).unwrap();
        assert_eq!(
            (snapshot.name.as_str(), snapshot.branch.as_str()),
            ("x", "main")
        );
        let again = call(
            &dir,
            &Request::SnapshotCreate {
                name: "x".into(),
                branch: None,
                via: None,
            },
        );
        assert!(!again.ok);
        assert!(again.error.unwrap().contains("exists already"));
        let missing = call(
            &dir,
            &Request::SnapshotDelete {
                name: "nope".into(),
                dry_run: false,
            },
        );
        assert_eq!(missing.error.as_deref(), Some("no snapshot named \"nope\""));

        // Garbage gets an error reply, not a hang or a crash.
        let mut stream = UnixStream::connect(socket_path(&dir)).unwrap();
        stream.write_all(b"{\"op\":\"format\"}\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        let reply: Response = serde_json::from_str(&reply).unwrap();
        assert!(!reply.ok && reply.error.unwrap().starts_with("bad request"));

        // Once closing, requests are answered `closing`.
        assert!(daemon.wait_idle().is_empty());
        assert!(call(&dir, &Request::SnapshotList).closing);
        server.remove();
        assert!(!socket_path(&dir).exists());
        daemon.store.close().unwrap();
        drop(daemon);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir =
            std::env::temp_dir().join(format!("strata-cli-server-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        ensure_runtime_dir(socket_path(&dir).parent().unwrap()).unwrap();
        drop(UnixListener::bind(socket_path(&dir)).unwrap()); // nobody listens any more
        remove_stale(&dir, &socket_path(&dir)).unwrap();
        assert!(!socket_path(&dir).exists());
        let live = UnixListener::bind(socket_path(&dir)).unwrap();
        let err = remove_stale(&dir, &socket_path(&dir)).unwrap_err();
        assert!(
            err.to_string().contains("another strata daemon of"),
            "{err}"
        );
        // A dead socket of another store is swept; a live one and our own are not.
        let other = socket_path(&dir.join("other"));
        drop(UnixListener::bind(&other).unwrap());
        sweep_dead_sockets(other.parent().unwrap(), &socket_path(&dir));
        assert!(!other.exists());
        assert!(socket_path(&dir).exists());
        drop(live);
        sweep_dead_sockets(other.parent().unwrap(), &socket_path(&dir));
        assert!(socket_path(&dir).exists(), "ours is left to remove_stale");
        fs::remove_file(socket_path(&dir)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_runtime_dir_others_may_write_to_is_refused() {
        let dir = std::env::temp_dir().join(format!("strata-cli-server-rt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let rt = dir.join("run/strata");
        ensure_runtime_dir(&rt).unwrap();
        let mode = fs::metadata(&rt).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "created owner-only");
        fs::set_permissions(&rt, fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", ensure_runtime_dir(&rt).unwrap_err());
        assert!(
            err.contains("is not private") && err.contains("mode 777"),
            "{err}"
        );
        fs::remove_dir_all(&rt).unwrap();
        fs::write(&rt, b"").unwrap();
        let err = format!("{:#}", ensure_runtime_dir(&rt).unwrap_err());
        assert!(err.contains(&rt.display().to_string()), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
