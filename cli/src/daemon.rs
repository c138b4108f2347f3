//! The mount daemon: how `strata mount` starts it, how it says the mount is ready, and how
//! it ends. One daemon owns a store and serves all its mounts (`mounts`); commands reach
//! it through the control socket (`crate::control`).
//!
//! Protocol between `strata mount` (the parent) and the daemon it starts:
//! 1. The parent checks the store and the mount point itself, so that those errors print
//!    directly. If a daemon already answers on the store's control socket, the parent asks it to
//!    add the mount (op `mount`) and is done. Otherwise it creates a pipe and re-executes
//!    its own binary as `strata [-v...] mount --foreground --threads N [--branch B |
//!    --snapshot S] STORE MOUNTPOINT` in a new session (`setsid`), with cwd `/`, stdin
//!    `/dev/null` and stdout/stderr appended to `STORE/daemon.log`. The pipe's write end
//!    is inherited under the number given in the environment variable `STRATA_READY_FD`.
//! 2. The daemon takes that descriptor (and marks it close-on-exec), opens the store,
//!    creates the control socket and mounts. When the mount is ready it writes `ok\n`; on
//!    failure it writes the one-line error message and exits non-zero. Either way it
//!    closes the pipe.
//! 3. The parent reads one line: `ok` → exit 0; a message → print it as the error and exit
//!    1; end of file with nothing → the daemon died (its exit status is reported) and the
//!    user is pointed at `STORE/daemon.log`.
//!
//! In the daemon, SIGINT, SIGTERM and SIGHUP are blocked in every thread (the mask is set
//! before any thread starts) and taken by one thread with `sigwait`: the first one
//! unmounts every mount, a second one detaches them lazily if some were busy. Each mount's
//! `Mounted::wait` returns when that mount is gone, whoever removed it (`strata umount`,
//! `umount`, a signal), after the filesystem has committed. Once the last mount is gone
//! and no control request is running, the daemon removes the control socket, closes the
//! store (releasing `STORE/lock` as it exits) and exits 0.

pub mod auto;
pub mod maintenance;
pub mod mounts;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tracing::{error, info, warn};

use crate::commands::mount;
use crate::control::server::Server;
use crate::store;
use mounts::{Daemon, MountTarget};

/// Environment variable that carries the readiness pipe's descriptor number.
pub const READY_FD_ENV: &str = "STRATA_READY_FD";
/// The daemon's log, inside the store directory.
pub const LOG_FILE: &str = "daemon.log";
/// What the daemon writes when the mount is ready.
const READY: &str = "ok";

/// Starts the daemon for `store` at `mount_point` (both canonical, already checked),
/// mounting `target`, and returns once the mount is ready, or with the daemon's error.
pub fn spawn(
    store: &Path,
    mount_point: &Path,
    verbose: u8,
    threads: usize,
    target: &MountTarget,
) -> Result<()> {
    let log_path = store.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&log_path)
        .with_context(|| format!("cannot open the daemon log {}", log_path.display()))?;
    let (read_end, write_end) = pipe().context("cannot create the readiness pipe")?;
    let write_fd = write_end.as_raw_fd();
    let exe = std::env::current_exe().context("cannot find the strata executable")?;

    let mut command = Command::new(&exe);
    for _ in 0..verbose {
        command.arg("-v");
    }
    command.args(["mount", "--foreground", "--threads", &threads.to_string()]);
    if let Some(branch) = &target.branch {
        command.arg(format!("--branch={branch}"));
    }
    if let Some(snapshot) = &target.snapshot {
        command.arg(format!("--snapshot={snapshot}"));
    }
    if let Some(auto) = &target.auto {
        command.arg(format!("--snapshot-every={}s", auto.every.as_secs()));
        if let Some(keep) = &auto.keep {
            command.arg(format!("--keep={keep}"));
        }
    }
    command
        .arg("--")
        .arg(store)
        .arg(mount_point)
        .env(READY_FD_ENV, write_fd.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .context("cannot duplicate the daemon log descriptor")?,
        )
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and fcntl.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            // Let the write end survive exec in the child only.
            if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the strata daemon {}", exe.display()))?;
    drop(write_end);

    match read_readiness(read_end, &log_path)? {
        Some(line) if line == READY => Ok(()),
        Some(message) => Err(anyhow!(message)),
        None => Err(anyhow!(
            "the strata daemon exited before the mount was ready{}; see {}",
            exit_description(&mut child),
            log_path.display()
        )),
    }
}

/// A pipe with both ends close-on-exec; the write end is numbered 3 or above so that the
/// child's stdio setup cannot overwrite it.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, mut write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if write_end.as_raw_fd() <= 2 {
        // SAFETY: duplicating a descriptor we own; the result is checked.
        let duplicate = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if duplicate == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `duplicate` is a fresh descriptor owned by nobody else.
        write_end = unsafe { OwnedFd::from_raw_fd(duplicate) };
    }
    Ok((read_end, write_end))
}

/// Reads the daemon's one line: `Some(line)` if it wrote something, `None` at end of file
/// with nothing written. Prints one note if the mount takes long.
fn read_readiness(read_end: OwnedFd, log_path: &Path) -> Result<Option<String>> {
    let start = Instant::now();
    let mut noted = false;
    let mut file = File::from(read_end);
    let mut received = Vec::new();
    loop {
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut poll, 1, 1000) };
        if rc == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(anyhow!(err).context("cannot wait for the strata daemon"));
        }
        if rc == 0 {
            if !noted && start.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "strata: still waiting for the mount to become ready (see {})",
                    log_path.display()
                );
                noted = true;
            }
            continue;
        }
        let mut buffer = [0u8; 4096];
        let n = match file.read(&mut buffer) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(anyhow!(err).context("cannot read from the strata daemon")),
        };
        received.extend_from_slice(&buffer[..n]);
        if n == 0 || received.contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    let line = text.lines().next().unwrap_or("").trim();
    Ok(if line.is_empty() {
        None
    } else {
        Some(line.to_string())
    })
}

/// ` (exit status 1)` / ` (killed by signal 9)` once the child has exited, else empty.
fn exit_description(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match (status.code(), status.signal()) {
                    (Some(code), _) => format!(" (exit status {code})"),
                    (None, Some(signal)) => format!(" (killed by signal {signal})"),
                    _ => String::new(),
                }
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return String::new(),
        }
    }
}

/// The daemon's end of the readiness pipe; absent when `--foreground` was run by hand.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Takes the descriptor named by `STRATA_READY_FD`, if any, and removes the variable
    /// so that nothing this process starts sees it. Call before any thread starts.
    pub fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|value| value.trim().parse::<RawFd>().ok());
        std::env::remove_var(READY_FD_ENV);
        let pipe = fd.filter(|fd| *fd > 2).and_then(|fd| {
            // SAFETY: F_GETFD/F_SETFD only inspect and flag the descriptor.
            let valid = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
            if !valid {
                return None;
            }
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: the parent handed this descriptor to us alone.
            Some(unsafe { File::from_raw_fd(fd) })
        });
        Self { pipe }
    }

    /// Tells the parent that the mount is ready.
    pub fn ready(&mut self) {
        self.send(READY);
    }

    /// Tells the parent why the mount failed.
    pub fn fail(&mut self, err: &anyhow::Error) {
        self.send(&crate::error::message(err));
    }

    fn send(&mut self, line: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            if let Err(err) = pipe.write_all(format!("{line}\n").as_bytes()) {
                warn!("cannot tell `strata mount` the outcome ({line}): {err}");
            }
        }
    }
}

/// Runs the daemon in this process (`--foreground`, and the detached daemon): opens the
/// store, starts the control socket, mounts `target` at the mount point, and serves until
/// the last mount of the store has ended; then removes the socket, commits and closes
/// the store.
pub fn run_foreground(
    store_arg: Option<&Path>,
    mount_point_arg: &Path,
    threads: usize,
    target: &MountTarget,
) -> Result<ExitCode> {
    let mut readiness = Readiness::from_env();
    let started = block_termination_signals()
        .context("cannot block termination signals")
        .and_then(|signals| Ok((signals, start(store_arg, mount_point_arg, threads, target)?)));
    let (signals, (daemon, server, mount_point)) = match started {
        Ok(started) => started,
        Err(err) => {
            // `main` prints the error on stderr, which is the daemon log when detached.
            readiness.fail(&err);
            return Err(err);
        }
    };
    info!(
        "serving {} ({}) at {} (pid {})",
        daemon.store_path.display(),
        target.describe(),
        mount_point.display(),
        std::process::id()
    );
    spawn_signal_thread(signals, Arc::clone(&daemon));
    readiness.ready();
    crate::sd_notify::notify(&format!("READY=1\nMAINPID={}", std::process::id()));

    // Every mount's `wait` has returned (so each has committed) and nothing is running.
    let errors = daemon.wait_idle();
    crate::sd_notify::notify("STOPPING=1");
    server.remove();
    let store_path = daemon.store_path.clone();
    let closed = daemon.store.close();
    drop(daemon); // the store's lock goes with the process
    closed
        .map_err(|err| anyhow!(err))
        .with_context(|| format!("cannot close the store {}", store_path.display()))?;
    if let Some(first) = errors.first() {
        bail!("{first}");
    }
    info!(
        "last mount ended; store {} committed and released",
        store_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// How long a starting daemon waits for the warm-up of the block index and the metadata
/// before it mounts (`Store::wait_for_warm_up`): the first reads then find them in
/// sled's cache.
const WARM_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks, opens the store, starts the control socket and mounts the first target.
fn start(
    store_arg: Option<&Path>,
    mount_point_arg: &Path,
    threads: usize,
    target: &MountTarget,
) -> Result<(Arc<Daemon>, Server, PathBuf)> {
    let (store_path, mount_point) = mount::prepare(store_arg, mount_point_arg)?;
    info!(
        "starting: store {}, mount point {}, {threads} threads, pid {}",
        store_path.display(),
        mount_point.display(),
        std::process::id()
    );
    let (_, store) = store::open(&store_path)?;
    store.wait_for_warm_up(WARM_UP_WAIT);
    store.set_defrag_hot_secs(crate::ops::defrag_hot_secs());
    let daemon = Daemon::new(store, store_path, threads);
    let server = Server::start(&daemon)?;
    if let Err(err) = daemon.mount(&mount_point, target, None) {
        server.remove();
        let _ = daemon.store.close();
        return Err(err);
    }
    if let Err(err) = maintenance::start(Arc::clone(&daemon)) {
        error!("cannot start the maintenance thread ({err}); deleted snapshots are flattened by `strata flatten` only");
    }
    Ok((daemon, server, mount_point))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread, and so in every thread it starts.
fn block_termination_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; the sig* calls initialise and fill it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// Waits for the blocked signals in a thread of its own: the first one unmounts every
/// mount of the daemon, a second one detaches them lazily.
fn spawn_signal_thread(signals: libc::sigset_t, daemon: Arc<Daemon>) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut unmount_requested = false;
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `signals` is an initialised set; `signal` receives the number.
                let rc = unsafe { libc::sigwait(&signals, &mut signal) };
                if rc != 0 {
                    error!("sigwait failed: {}", io::Error::from_raw_os_error(rc));
                    return;
                }
                let name = signal_name(signal);
                if !unmount_requested {
                    unmount_requested = true;
                    info!("received {name}: unmounting every mount");
                    crate::sd_notify::notify("STOPPING=1");
                    daemon.unmount_all(false);
                } else {
                    warn!("received {name} again: detaching every mount lazily");
                    daemon.unmount_all(true);
                }
            }
        });
    if let Err(err) = spawned {
        error!("cannot start the signal thread ({err}); stop the daemon with `strata umount`");
    }
}
