//! `TestStore`: a temp dir holding a store and a mount point (optionally on a small
//! tmpfs), and `Mount`: a mounted store whose Drop always unmounts — through
//! `strata umount`, then `fusermount3 -u`, then `umount -l`, killing a daemon that does not
//! let go — even when the test panicked, so no test leaves a mount (live or stale) behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::binary::{strata, strata_env, Run};
use crate::mounts::{self, Tmpfs};
use crate::sys;

/// A store and a mount point in a temp dir of their own.
pub struct TestStore {
    /// Canonical path of the temp dir.
    pub root: PathBuf,
    /// The store directory (`root/store`, or `root/tmpfs/store`).
    pub store: PathBuf,
    /// The mount point (`root/mnt`), created empty.
    pub mnt: PathBuf,
    // Drop order matters: the tmpfs and the lossy disk are unmounted before the temp dir
    // is removed.
    tmpfs: Option<Tmpfs>,
    lossy: Option<crate::lossy::LossyDisk>,
    dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// A fresh store made by `strata init` with default options.
    pub fn new() -> Self {
        Self::with_init_args(&[])
    }

    /// A fresh store made by `strata init STORE ARGS`.
    pub fn with_init_args(args: &[&str]) -> Self {
        let test_store = Self::uninitialized();
        test_store.init(args);
        test_store
    }

    /// The directories only: `store` does not exist yet.
    pub fn uninitialized() -> Self {
        require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).expect("create mount point");
        TestStore {
            store: root.join("store"),
            mnt,
            root,
            tmpfs: None,
            lossy: None,
            dir: Some(dir),
        }
    }

    /// A fresh store on a tmpfs of `size` (e.g. `64m`), for running out of space.
    pub fn on_tmpfs(size: &str) -> Self {
        let mut test_store = Self::uninitialized();
        let tmpfs_dir = test_store.root.join("tmpfs");
        std::fs::create_dir(&tmpfs_dir).expect("create tmpfs dir");
        let tmpfs = Tmpfs::mount(&tmpfs_dir, size);
        test_store.store = tmpfs.path().join("store");
        test_store.tmpfs = Some(tmpfs);
        test_store.init(&[]);
        test_store
    }

    /// A fresh store on a lossy disk (`root/disk` served at `root/lossy`, the store at
    /// `root/lossy/store`): a power cut (`disk().cut`, then `reboot_disk`) drops what was
    /// not fsynced.
    pub fn on_lossy_disk() -> Self {
        let mut test_store = Self::uninitialized();
        let backing = test_store.root.join("disk");
        let at = test_store.root.join("lossy");
        std::fs::create_dir(&backing).expect("create disk dir");
        std::fs::create_dir(&at).expect("create lossy mount point");
        let disk = crate::lossy::LossyDisk::mount(&backing, &at).expect("mount the lossy disk");
        test_store.store = at.join("store");
        test_store.lossy = Some(disk);
        test_store.init(&[]);
        // The store's creation is durable, as after `strata init` and a sync.
        test_store.disk().restart().expect("restart the lossy disk");
        test_store
    }

    /// The lossy disk under the store (`on_lossy_disk`).
    pub fn disk(&self) -> &crate::lossy::LossyDisk {
        self.lossy.as_ref().expect("a store on a lossy disk")
    }

    fn init(&self, args: &[&str]) {
        let mut all: Vec<&OsStr> = vec!["init".as_ref(), self.store.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        strata(all).assert_success();
    }

    /// `mnt/relative`.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(relative)
    }

    /// Mounts the store at `mnt` with `strata mount`; panics (with the daemon log) if that
    /// fails.
    pub fn mount(&self) -> Mount<'_> {
        self.mount_env(&[])
    }

    /// `mount`, with extra environment variables for the daemon (e.g. tuning knobs).
    pub fn mount_env(&self, extra: &[(&str, &OsStr)]) -> Mount<'_> {
        let run = self.try_mount_env(extra);
        if !run.success() {
            panic!(
                "`{}` failed ({}): {}{}\n--- daemon.log (tail) ---\n{}",
                run.what,
                run.status,
                run.stdout,
                run.stderr,
                self.daemon_log_tail(40)
            );
        }
        let entry = mounts::mount_at(&self.mnt).unwrap_or_else(|| {
            panic!(
                "`strata mount` exited 0 but {} is not a mount point",
                self.mnt.display()
            )
        });
        let mount = Mount {
            test_store: self,
            state: State::Mounted,
        };
        assert!(
            entry.is_strata_fuse(),
            "mount type of {}: {}",
            self.mnt.display(),
            entry.fs_type
        );
        assert_eq!(
            Path::new(&entry.source),
            self.store,
            "mount source of {}",
            self.mnt.display()
        );
        mount
    }

    /// Runs `strata mount STORE MNT` and returns what it did, mounted or not. A successful
    /// mount made this way must be unmounted by the caller (`TestStore`'s Drop does it too).
    pub fn try_mount(&self) -> Run {
        self.try_mount_env(&[])
    }

    fn try_mount_env(&self, extra: &[(&str, &OsStr)]) -> Run {
        let mut env: Vec<(&str, &OsStr)> = extra.to_vec();
        let log = std::env::var_os("STRATA_TEST_DAEMON_LOG");
        if let Some(level) = &log {
            env.push(("RUST_LOG", level.as_os_str()));
        }
        strata_env(
            [
                "mount".as_ref(),
                self.store.as_os_str(),
                self.mnt.as_os_str(),
            ],
            &env,
        )
    }

    /// `strata stats STORE --json`, parsed.
    pub fn stats_json(&self) -> serde_json::Value {
        let run = strata(["stats".as_ref(), self.store.as_os_str(), "--json".as_ref()]);
        run.assert_success();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("stats --json is not JSON ({err}):\n{}", run.stdout))
    }

    /// `strata verify STORE`.
    pub fn verify(&self) -> Run {
        strata(["verify".as_ref(), self.store.as_os_str()])
    }

    /// Panics unless `strata verify` exits 0.
    #[track_caller]
    pub fn assert_verify_clean(&self) {
        let run = self.verify();
        assert!(
            run.success(),
            "strata verify found problems ({}):\n{}{}",
            run.status,
            run.stdout,
            run.stderr
        );
    }

    /// Sets top-level `key = value` in STORE/strata.toml (read at the next mount).
    pub fn set_config(&self, key: &str, value: &str) {
        let path = self.store.join("strata.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.split('=').next().map(str::trim) != Some(key))
            .map(str::to_string)
            .collect();
        // Top-level keys go before any table.
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or(lines.len());
        lines.insert(at, format!("{key} = {value}"));
        // Durable, like an editor's save: a power cut of a lossy disk keeps it.
        crate::data::write_synced(&path, (lines.join("\n") + "\n").as_bytes()).unwrap();
    }

    /// Sets `defrag_on_read` and `defrag_rewritten` in STORE/strata.toml: tests that
    /// measure a scattered layout switch both off, so neither reading the files back nor
    /// the unmount after rewriting them lays them out.
    pub fn set_auto_defrag(&self, on_read: bool, rewritten: bool) {
        self.set_config("defrag_on_read", &on_read.to_string());
        self.set_config("defrag_rewritten", &rewritten.to_string());
    }

    /// The last `lines` lines of STORE/daemon.log.
    pub fn daemon_log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.store.join("daemon.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Pid of the daemon serving this store, if one is running: the pid in STORE/lock,
    /// else a process whose command line is `strata ... mount --foreground ... STORE ...`.
    pub fn daemon_pid(&self) -> Option<u32> {
        daemon_pid(&self.store)
    }

    /// Path of the control socket of this store's daemon (docs/control-socket.md).
    pub fn control_socket(&self) -> PathBuf {
        control_socket(&self.store)
    }

    /// True while some process holds the store's lock.
    pub fn lock_is_held(&self) -> bool {
        sys::flock_is_held(&self.store.join("lock"))
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {}/daemon.log (last 40 lines) ---\n{}\n---",
                self.store.display(),
                self.daemon_log_tail(40)
            );
            // The daemon logs a power-cut test kept across its reboots (power::logs_path).
            let cuts = self.root.join("cuts.log");
            if let Ok(text) = std::fs::read_to_string(&cuts) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(80);
                eprintln!(
                    "--- {} (last 80 lines) ---\n{}\n---",
                    cuts.display(),
                    lines[from..].join("\n")
                );
            }
        }
        // Never remove the temp dir through a mount: clear every mount below it first
        // (the tmpfs itself is the Tmpfs guard's job).
        let tmpfs_path = self
            .tmpfs
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .or_else(|| self.lossy.as_ref().map(|d| d.path().to_path_buf()));
        for mount_point in mounts::mounts_under(&self.root) {
            if Some(&mount_point) != tmpfs_path.as_ref() {
                cleanup_mount(&mount_point, &self.store);
            }
        }
        if let Some(pid) = daemon_pid(&self.store) {
            let _ = sys::kill(pid, libc::SIGKILL);
            wait_for_exit(pid, &self.store, Duration::from_secs(10));
        }
        // The lossy disk goes once nothing runs on it any more.
        self.lossy = None;
        let leftover: Vec<PathBuf> = mounts::mounts_under(&self.root)
            .into_iter()
            .filter(|m| Some(m) != tmpfs_path.as_ref())
            .collect();
        if std::env::var_os("STRATA_TEST_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("STRATA_TEST_KEEP: keeping {}", dir.keep().display());
            }
        }
        if !leftover.is_empty() {
            eprintln!(
                "warning: mounts remain under {}: {leftover:?}; keeping the dir",
                self.root.display()
            );
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

/// Whether a `Mount` still has something mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Mounted,
    /// The daemon was killed; a stale mount is left until `unmount` or Drop.
    Crashed,
    Unmounted,
}

/// A mounted `TestStore`. Drop unmounts whatever state the mount is in.
pub struct Mount<'a> {
    test_store: &'a TestStore,
    state: State,
}

impl Mount<'_> {
    /// `mnt/relative`.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.test_store.path(relative)
    }

    /// `strata umount MNT`, asserting that it succeeds, that the mount is gone, and that
    /// the daemon has released the store by the time it returns. Works on a crashed
    /// (stale) mount too.
    #[track_caller]
    pub fn unmount(mut self) {
        let test_store = self.test_store;
        let mut run = strata(["umount".as_ref(), test_store.mnt.as_os_str()]);
        // Another test's child process may hold a file of this mount for the moment
        // between its fork and its exec (descriptors are close-on-exec): retry briefly.
        for _ in 0..20 {
            if run.success() || !run.stderr.contains("is busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            run = strata(["umount".as_ref(), test_store.mnt.as_os_str()]);
        }
        self.state = State::Unmounted;
        if !run.success() {
            cleanup_mount(&test_store.mnt, &test_store.store);
            panic!(
                "`{}` failed ({}): {}{}\n--- daemon.log (tail) ---\n{}",
                run.what,
                run.status,
                run.stdout,
                run.stderr,
                test_store.daemon_log_tail(40)
            );
        }
        assert!(
            !mounts::is_mounted(&test_store.mnt),
            "{} still mounted after strata umount",
            test_store.mnt.display()
        );
        assert!(
            !test_store.lock_is_held(),
            "the store is still locked after strata umount returned"
        );
    }

    /// Kills the daemon with SIGKILL and waits until it is gone, leaving a stale mount
    /// (cleared by `unmount`, which then exercises `strata umount` on a stale mount, or by
    /// Drop). Returns the daemon's pid.
    #[track_caller]
    pub fn crash(&mut self) -> u32 {
        assert_eq!(
            self.state,
            State::Mounted,
            "crash of a mount that is not mounted"
        );
        let pid = self
            .test_store
            .daemon_pid()
            .expect("no daemon process found for the store");
        sys::kill(pid, libc::SIGKILL).expect("kill -9 the daemon");
        self.state = State::Crashed;
        assert!(
            wait_for_exit(pid, &self.test_store.store, Duration::from_secs(30)),
            "daemon {pid} still alive 30 s after SIGKILL"
        );
        pid
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if self.state != State::Unmounted {
            cleanup_mount(&self.test_store.mnt, &self.test_store.store);
            self.state = State::Unmounted;
        }
    }
}

/// Best effort, never panics: `strata umount`, then forced unmounts, then SIGKILL for a
/// daemon that still holds the store.
pub fn cleanup_mount(mount_point: &Path, store: &Path) {
    if mounts::is_mounted(mount_point) {
        let mut command = std::process::Command::new(crate::binary::strata_bin());
        command.args([
            "umount".as_ref(),
            mount_point.as_os_str(),
            "--timeout".as_ref(),
            "30".as_ref(),
        ]);
        let _ = crate::binary::try_run(command, Duration::from_secs(60));
    }
    if mounts::is_mounted(mount_point) && !mounts::force_unmount(mount_point) {
        eprintln!("warning: cannot unmount {}", mount_point.display());
    }
    if let Some(pid) = daemon_pid(store) {
        if !wait_for_exit(pid, store, Duration::from_secs(30)) {
            let _ = sys::kill(pid, libc::SIGKILL);
            wait_for_exit(pid, store, Duration::from_secs(10));
        }
    }
    // The daemon's death turns a remaining mount stale; clear that too.
    if mounts::is_mounted(mount_point) {
        mounts::force_unmount(mount_point);
    }
}

/// Path of the control socket a root daemon of `store` (canonical) listens on:
/// `/run/strata/NAME-HASH.sock` (or `$STRATA_RUNTIME_DIR/...`), the rule of
/// docs/control-socket.md, written out again here so that a change to it is seen.
pub fn control_socket(store: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::var_os("STRATA_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/run/strata"), PathBuf::from);
    let base: String = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(40)
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
    dir.join(format!("{base}-{hex}.sock"))
}

/// Pid of the daemon serving `store`, if one is alive.
pub fn daemon_pid(store: &Path) -> Option<u32> {
    let store_arg = store.to_string_lossy();
    let is_daemon = |pid: u32| {
        let args = sys::cmdline(pid);
        args.iter().any(|a| a == "--foreground") && args.iter().any(|a| *a == store_arg)
    };
    if let Some(pid) = lock_pid(store) {
        if sys::process_alive(pid) && is_daemon(pid) {
            return Some(pid);
        }
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| *pid != std::process::id() && sys::process_alive(*pid) && is_daemon(*pid))
}

/// The first number in STORE/lock.
fn lock_pid(store: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(store.join("lock")).ok()?;
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Waits until `pid` is gone (or a zombie) and the store's lock is free; false on timeout.
fn wait_for_exit(pid: u32, store: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !sys::process_alive(pid) && !sys::flock_is_held(&store.join("lock")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Panics with a clear message when FUSE cannot be used here.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these end-to-end tests need FUSE (and root)"
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these end-to-end tests run as root"
    );
}
