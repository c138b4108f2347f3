//! `strata umount MOUNTPOINT [--lazy] [--timeout SECS]`: unmount a strata mount (live or
//! stale), then wait until it is committed: if it was its daemon's last mount, until the
//! daemon has flushed and released the store, so that the store can be opened again as
//! soon as this returns; else until the daemon reports the mount gone (its `wait` has
//! returned, after committing).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::control::proto::Status;
use crate::{lock, mountinfo, paths, session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mount point of a strata mount.
    #[arg(value_name = "MOUNTPOINT")]
    pub mount_point: PathBuf,

    /// Detach now even if files are open; the daemon exits once they are closed.
    #[arg(long)]
    pub lazy: bool,

    /// Seconds to wait for the daemon to flush and release the store.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let shown = args.mount_point.display();
    let mount_point =
        paths::resolve(&args.mount_point).with_context(|| format!("cannot access {shown}"))?;
    let mounts = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
    let Some(entry) = mountinfo::find_mount_point(&mounts, &mount_point) else {
        bail!("{shown} is not a mount point");
    };
    if !entry.is_strata() {
        bail!(
            "{shown} is not a strata mount (it is a {} mount of {})",
            entry.fs_type,
            entry.source
        );
    }
    let store = PathBuf::from(&entry.source);
    let pid = lock::recorded_pid(&store);
    // Does the daemon serve other mounts too? Then it stays, holding the store.
    let shown_mp = mount_point.display().to_string();
    let status = session::daemon_status(&store).ok().flatten();
    let others = status
        .as_ref()
        .is_some_and(|status| has_other_mounts(status, &shown_mp));
    let refusing = status.and_then(|status| status.refusing_writes);
    detach(&mount_point, args.lazy)
        .map_err(|err| describe_failure(err, &args.mount_point, args.lazy))?;
    let timeout = Duration::from_secs(args.timeout);
    let done = if others {
        wait_mount_gone(&store, &shown_mp, pid, timeout, args.lazy)?
    } else if args.lazy && lock::is_held(&store).unwrap_or(false) {
        eprintln!(
            "strata: {shown} detached; {} releases {} once its open files are closed",
            lock::holder(pid),
            store.display()
        );
        ExitCode::SUCCESS
    } else {
        lock::wait_released(&store, pid, timeout)?;
        ExitCode::SUCCESS
    };
    // The unmount happened, but what was written since the store stopped taking writes
    // and not fsynced is not on disk: never report that as a clean unmount.
    if let Some(why) = refusing {
        bail!(
            "{shown} is unmounted, but its store had stopped taking writes ({why}): changes \
             made since then that were not fsynced are lost; mount it again to go on"
        );
    }
    Ok(done)
}

fn has_other_mounts(status: &Status, mount_point: &str) -> bool {
    status.mounts.iter().any(|m| m.mount_point != mount_point)
}

/// After unmounting one of several mounts of a daemon: waits until the daemon no longer
/// lists it (it has committed); if it was the last after all (the others ended
/// meanwhile), until the store is released.
fn wait_mount_gone(
    store: &Path,
    mount_point: &str,
    pid: Option<u32>,
    timeout: Duration,
    lazy: bool,
) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    loop {
        match session::daemon_status(store).ok().flatten() {
            Some(status) if status.mounts.iter().any(|m| m.mount_point == mount_point) => {
                if lazy {
                    eprintln!(
                        "strata: {mount_point} detached; {} finishes it once its open files \
                         are closed",
                        lock::holder(pid)
                    );
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(status) if !status.mounts.is_empty() => return Ok(ExitCode::SUCCESS),
            _ => {
                let left = deadline.saturating_duration_since(Instant::now());
                lock::wait_released(store, pid, left.max(Duration::from_secs(1)))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{} still serves {mount_point} after {} s; it may still be flushing (see {}/daemon.log)",
                lock::holder(pid),
                timeout.as_secs(),
                store.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Why an unmount failed, for `describe_failure`.
#[derive(Debug)]
pub struct DetachError {
    errno: Option<i32>,
    detail: String,
}

impl std::fmt::Display for DetachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Unmounts `mount_point` (absolute): `fusermount3 -u` first, `umount2(2)` if that is
/// missing or fails. Succeeds if the mount is gone afterwards, whoever removed it.
pub fn detach(mount_point: &Path, lazy: bool) -> Result<(), DetachError> {
    let mut fusermount_detail = None;
    let mut command = Command::new("fusermount3");
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    match command.arg(mount_point).stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            fusermount_detail = stderr.lines().next().map(|line| line.trim().to_string());
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => fusermount_detail = Some(format!("fusermount3: {err}")),
    }
    if !is_mounted(mount_point) {
        return Ok(());
    }
    let path = CString::new(mount_point.as_os_str().as_bytes()).map_err(|_| DetachError {
        errno: None,
        detail: "path contains a NUL byte".into(),
    })?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let rc = unsafe { libc::umount2(path.as_ptr(), flags) };
    if rc == 0 || !is_mounted(mount_point) {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    Err(DetachError {
        errno: err.raw_os_error(),
        detail: fusermount_detail.unwrap_or_else(|| err.to_string()),
    })
}

fn is_mounted(mount_point: &Path) -> bool {
    mountinfo::read()
        .map(|mounts| mountinfo::find_mount_point(&mounts, mount_point).is_some())
        .unwrap_or(true)
}

fn describe_failure(err: DetachError, shown: &Path, lazy: bool) -> anyhow::Error {
    let shown = shown.display();
    if err.errno == Some(libc::EBUSY) && !lazy {
        return anyhow!(
            "{shown} is busy: a process has a file open or its working directory there; \
             close them and retry, or use `strata umount --lazy {shown}`"
        );
    }
    anyhow!("cannot unmount {shown}: {}", err.detail)
}
