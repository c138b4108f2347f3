//! Where a snapshot command runs, and how its STORE argument is read.
//!
//! STORE may be the store directory, a mount point of it, or any path inside a strata
//! mount (the mount's source in mountinfo is the store's path); `resolve_store` returns
//! the store directory and, when the user named a mount, its mount point (whose branch is
//! the command's default branch).
//!
//! `run` sends the request to the daemon if one answers on the store's control socket; else it
//! opens the store itself, runs the same `ops::execute`, and closes it. While the store's
//! lock is held by a daemon that does not answer yet (starting, or releasing the store
//! after its last mount ended) it waits for one or the other, up to `WAIT`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use strata_snapshot::{Error as StoreError, Store};

use crate::control::client::{self, REPLY_TIMEOUT};
use crate::control::proto::{Progress, Request, Response, Status};
use crate::control::{socket_candidates, socket_path};
use crate::mountinfo::{self, MountEntry};
use crate::ops::{self, NoMounts};
use crate::{lock, paths, store};

/// How long a command waits for a daemon that holds the store's lock to answer or to let
/// go of the store.
pub const WAIT: Duration = Duration::from_secs(30);

/// A store as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRef {
    /// Canonical store directory.
    pub store: PathBuf,
    /// The mount point, when the store was named by a mount (or a path inside one).
    pub via: Option<PathBuf>,
}

impl StoreRef {
    /// `via` as the string the protocol carries.
    pub fn via_string(&self) -> Option<String> {
        self.via.as_ref().map(|p| p.display().to_string())
    }
}

/// The innermost mount containing `path` (absolute).
fn containing_mount<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

/// Resolves STORE: a store directory, a strata mount point, or a path inside a mount.
pub fn resolve_store(arg: &Path) -> Result<StoreRef> {
    let shown = arg.display();
    let path = match paths::resolve(arg) {
        Ok(path) => path,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("store {shown} does not exist; create it with `strata init {shown}`")
        }
        Err(err) => return Err(anyhow!(err).context(format!("cannot access {shown}"))),
    };
    let mounts = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
    let exact = mountinfo::find_mount_point(&mounts, &path);
    if let Some(entry) = exact.filter(|m| m.is_strata()) {
        return Ok(StoreRef {
            store: PathBuf::from(&entry.source),
            via: Some(path),
        });
    }
    if store::is_store(&path) {
        return Ok(StoreRef {
            store: store::locate(&path)?,
            via: None,
        });
    }
    if let Some(entry) = containing_mount(&mounts, &path).filter(|m| m.is_strata()) {
        return Ok(StoreRef {
            store: PathBuf::from(&entry.source),
            via: Some(entry.mount_point.clone()),
        });
    }
    // Not a store and not in a strata mount: let `locate` say why.
    store::locate(arg)?;
    bail!("{shown} is not a strata store or a path inside a strata mount")
}

/// A path inside a strata mount, split into its mount point and the path from the
/// mount's root (`/dir/file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InMount {
    pub store: PathBuf,
    pub mount_point: PathBuf,
    pub relative: String,
}

/// Finds the strata mount that holds `arg` (the last component is not followed, so a
/// symlink's own history is asked for).
pub fn resolve_in_mount(arg: &Path) -> Result<InMount> {
    let shown = arg.display();
    let path = paths::absolute(arg).with_context(|| format!("cannot access {shown}"))?;
    let mounts = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
    let Some(entry) = containing_mount(&mounts, &path) else {
        bail!("{shown} is not inside a strata mount");
    };
    if !entry.is_strata() {
        bail!(
            "{shown} is not inside a strata mount (it is on a {} mount of {} at {})",
            entry.fs_type,
            entry.source,
            entry.mount_point.display()
        );
    }
    let rest = path
        .strip_prefix(&entry.mount_point)
        .expect("the mount contains the path");
    let relative = format!("/{}", rest.display());
    if rest
        .components()
        .next()
        .is_some_and(|c| c.as_os_str() == ".snapshots")
    {
        bail!(
            "{shown} is inside {}/.snapshots/, a read-only view of a snapshot; give the path \
             in the live tree (e.g. {}/{})",
            entry.mount_point.display(),
            entry.mount_point.display(),
            rest.components().skip(2).collect::<PathBuf>().display()
        );
    }
    Ok(InMount {
        store: PathBuf::from(&entry.source),
        mount_point: entry.mount_point.clone(),
        relative,
    })
}

/// True if `pid` is a strata daemon (`strata ... mount --foreground ...`).
fn is_daemon_process(pid: u32) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"--foreground") && args.iter().any(|a| *a == b"mount")
}

/// True if `pid` exists but is exiting (its command line is already gone, as for a
/// zombie): a lock it holds is about to be released. A pid that does not exist is not the
/// lock's holder (the lock file keeps the pid of its last holder).
fn is_exiting(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| raw.is_empty())
}

/// The error for a store whose lock is held but whose daemon does not answer.
/// A store another process holds: exit status 3 (`error::Busy`).
fn busy(message: String) -> anyhow::Error {
    anyhow::Error::new(crate::error::Busy(message))
}

fn not_answering(store: &Path, pid: Option<u32>) -> anyhow::Error {
    let holder = lock::holder(pid);
    let mounts = mountinfo::read().unwrap_or_default();
    let mounted: Vec<String> = mountinfo::strata_mounts_of(&mounts, store)
        .map(|m| m.mount_point.display().to_string())
        .collect();
    let daemon = pid.is_some_and(is_daemon_process);
    if daemon || !mounted.is_empty() {
        let at = if mounted.is_empty() {
            String::new()
        } else {
            format!(", mounted at {},", mounted.join(" and "))
        };
        return busy(format!(
            "{} holds {}{at} but does not answer on {} (see {}/daemon.log)",
            holder,
            store.display(),
            socket_path(store).display(),
            store.display()
        ));
    }
    match pid {
        Some(pid) => busy(format!(
            "{} is in use by another process (pid {pid})",
            store.display()
        )),
        None => busy(format!("{} is in use by another process", store.display())),
    }
}

/// Who carries out a request.
pub enum Route {
    /// The daemon answered.
    Daemon(Response),
    /// No daemon, and the store's lock is free.
    Free,
}

/// Sends `request` to the daemon of `store`, waiting (up to `WAIT`) while the store's
/// lock is held by a daemon that does not answer yet; `Route::Free` if there is none.
pub fn route(store: &Path, request: &Request) -> Result<Route> {
    route_with_progress(store, request, &mut |_| {})
}

/// `route`, handing the daemon's progress lines to `progress`.
fn route_with_progress(
    store: &Path,
    request: &Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Route> {
    let deadline = Instant::now() + WAIT;
    let mut noted = false;
    loop {
        if let Some(response) = client::send_with_progress(store, request, REPLY_TIMEOUT, progress)?
        {
            if !response.closing {
                return Ok(Route::Daemon(response));
            }
        }
        if !lock::is_held(store)
            .with_context(|| format!("cannot check the lock of {}", store.display()))?
        {
            return Ok(Route::Free);
        }
        let pid = lock::recorded_pid(store);
        let may_answer = socket_candidates(store).iter().any(|p| p.exists())
            || pid.is_some_and(|pid| is_daemon_process(pid) || is_exiting(pid));
        if !may_answer || Instant::now() >= deadline {
            return Err(not_answering(store, pid));
        }
        if !noted && deadline - Instant::now() < WAIT - Duration::from_secs(3) {
            eprintln!(
                "strata: waiting for {} to answer or release {} ...",
                lock::holder(pid),
                store.display()
            );
            noted = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The result of a reply, or its error.
pub fn into_result(response: Response) -> Result<serde_json::Value> {
    if response.ok {
        Ok(response.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(anyhow!(response.error.unwrap_or_else(|| {
            "the daemon reported an error without a message".into()
        })))
    }
}

/// Carries out `request` on `store`: through its daemon, or by opening it here.
pub fn run<T: DeserializeOwned>(store: &Path, request: &Request) -> Result<T> {
    run_with_progress(store, request, &mut |_, _| {})
}

/// `run`, telling `progress` (done, total) how far a long request has got: from the
/// daemon's progress lines (if the request asks for them), or from the operation itself
/// when the command carries it out. Long requests ask for the lines whether or not they
/// are drawn: each line restarts the reply timeout, so a scrub of hours through the
/// daemon is not taken for a daemon that stopped answering.
pub fn run_with_progress<T: DeserializeOwned>(
    store: &Path,
    request: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<T> {
    let value = loop {
        match route_with_progress(store, request, &mut |p| progress(p.done, p.total))? {
            Route::Daemon(response) => break into_result(response)?,
            Route::Free => match Store::open(store) {
                Ok(opened) => {
                    let result = ops::execute(&opened, &NoMounts, request, progress);
                    let closed = opened
                        .close()
                        .map_err(|err| anyhow!(err))
                        .with_context(|| format!("cannot close {}", store.display()));
                    let value = result?;
                    closed?;
                    break value;
                }
                // Someone took the store in between: ask again.
                Err(StoreError::Locked { .. }) => continue,
                Err(err) => return Err(store::describe_open_error(err, store)),
            },
        }
    };
    serde_json::from_value(value).context("unexpected result from the strata daemon")
}

/// The branch a command on `target` acts on by default: the one mounted where the store
/// was named by a mount point (asked of its daemon), else main.
pub fn branch_at(target: &StoreRef) -> Result<String> {
    let main = strata_snapshot::MAIN_BRANCH.to_string();
    let Some(via) = target.via_string() else {
        return Ok(main);
    };
    let Some(status) = daemon_status(&target.store)? else {
        return Ok(main);
    };
    Ok(status
        .mounts
        .into_iter()
        .find(|m| m.mount_point == via)
        .and_then(|m| m.branch)
        .unwrap_or(main))
}

/// The status of the daemon serving `store`, if one answers.
pub fn daemon_status(store: &Path) -> Result<Option<Status>> {
    match client::send(store, &Request::Ping, Duration::from_secs(30))? {
        Some(response) if !response.closing => {
            let value = into_result(response)?;
            Ok(Some(
                serde_json::from_value(value).context("unexpected status from the daemon")?,
            ))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mp: &str, fs_type: &str, source: &str) -> MountEntry {
        MountEntry {
            mount_point: PathBuf::from(mp),
            fs_type: fs_type.into(),
            source: source.into(),
        }
    }

    #[test]
    fn innermost_mount_wins() {
        let mounts = vec![
            entry("/", "ext4", "/dev/vda"),
            entry("/mnt/s", "fuse.strata", "/srv/s"),
            entry("/mnt/s/inner", "tmpfs", "none"),
        ];
        let m = containing_mount(&mounts, Path::new("/mnt/s/a/b")).unwrap();
        assert_eq!(m.source, "/srv/s");
        let m = containing_mount(&mounts, Path::new("/mnt/s")).unwrap();
        assert_eq!(m.source, "/srv/s");
        let m = containing_mount(&mounts, Path::new("/mnt/s/inner/x")).unwrap();
        assert_eq!(m.fs_type, "tmpfs");
        let m = containing_mount(&mounts, Path::new("/mnt/sx")).unwrap();
        assert_eq!(m.fs_type, "ext4");
    }

    #[test]
    fn a_store_dir_is_its_own_store() {
        let dir = std::env::temp_dir().join(format!("strata-cli-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = resolve_store(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("not a strata store"), "{err:#}");
        let err = resolve_store(&dir.join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        std::fs::write(dir.join("strata.toml"), b"").unwrap();
        let found = resolve_store(&dir).unwrap();
        assert_eq!(found.store, dir.canonicalize().unwrap());
        assert_eq!(found.via, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
