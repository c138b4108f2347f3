//! strata as a Linux filesystem tool, after `scripts/install`: `mount -t strata` with
//! options, an fstab line (`mount -T FILE`), `umount` committing through the helper, the
//! man pages and completions, the systemd unit (`systemd-analyze verify`), readiness
//! notification of `strata mount --foreground` (sd_notify), and `--version`.
//!
//! scripts/install puts the mount helpers in /sbin (mount(8) looks nowhere else); the
//! guard uninstalls them even when an assertion fails.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::binary::strata_bin;
use strata_tests::cli::{ok, s};
use strata_tests::{mounts, strata, sys, TestStore};

/// `scripts/install --prefix PREFIX` for the test's lifetime.
struct Installed {
    prefix: PathBuf,
    _dir: tempfile::TempDir,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn install_script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/install"))
        .args(args)
        .env("STRATA_BIN", strata_bin())
        .output()
        .expect("run scripts/install")
}

impl Installed {
    fn new() -> Installed {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        let out = install_script(&["--prefix", s(&prefix)]);
        assert!(out.status.success(), "scripts/install: {out:?}");
        Installed { prefix, _dir: dir }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = install_script(&["--uninstall", "--prefix", s(&self.prefix)]);
        if !out.status.success() {
            eprintln!("scripts/install --uninstall failed: {out:?}");
        }
    }
}

/// Runs a command, returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn installed_strata_mounts_through_mount_fstab_and_umount() {
    let installed = Installed::new();
    let p = &installed.prefix;
    // A second install changes nothing.
    let again = install_script(&["--prefix", s(p)]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing changed"),
        "{again:?}"
    );
    assert!(fs::read_link("/sbin/mount.strata").is_ok());
    for page in [
        "strata.8",
        "strata-mount.8",
        "strata-snapshot-create.8",
        "strata-status.8",
    ] {
        let text = fs::read_to_string(p.join("share/man/man8").join(page)).unwrap();
        assert!(
            text.contains(".TH") && text.contains("EXIT STATUS"),
            "{page}"
        );
    }
    let (ok_bash, out) = run(Command::new("bash")
        .arg("-n")
        .arg(p.join("share/bash-completion/completions/strata")));
    assert!(ok_bash, "bash completion: {out}");
    assert!(
        fs::read_to_string(p.join("share/zsh/site-functions/_strata"))
            .unwrap()
            .starts_with("#compdef strata")
    );
    assert!(
        fs::read_to_string(p.join("share/fish/vendor_completions.d/strata.fish"))
            .unwrap()
            .contains("complete -c strata")
    );
    let unit = p.join("lib/systemd/system/strata-mount@.service");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("ExecStart={}/bin/strata mount --foreground", s(p))));
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let (verified, out) = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit));
        assert!(verified, "systemd-analyze verify: {out}");
    } else {
        eprintln!("systemd-analyze not installed: the unit file is not verified");
    }

    let ts = TestStore::new();
    let (store, mnt) = (s(&ts.store), s(&ts.mnt));
    // mount -t strata with options mount(8) and systemd pass, then umount: committed,
    // and the daemon gone (the store's lock released).
    let (mounted, out) = run(Command::new("mount").args([
        "-t",
        "strata",
        store,
        mnt,
        "-o",
        "defaults,nofail,x-systemd.requires=local-fs.target,threads=2",
    ]));
    assert!(mounted, "mount -t strata: {out}");
    assert!(mounts::mount_at(&ts.mnt).is_some_and(|m| m.is_strata_fuse()));
    fs::write(ts.mnt.join("through-mount"), b"mounted by mount(8)\n").unwrap();
    let (unmounted, out) = run(Command::new("umount").arg(mnt));
    assert!(unmounted, "umount: {out}");
    assert!(!mounts::is_mounted(&ts.mnt));
    assert!(
        !ts.lock_is_held(),
        "the daemon still holds the store after umount"
    );
    ok(&["snapshot", "create", store, "s1"]);

    // An fstab line: a snapshot, read-only.
    let fstab = ts.root.join("fstab");
    fs::write(
        &fstab,
        format!("{store} {mnt} strata snapshot=s1,ro,nofail 0 0\n"),
    )
    .unwrap();
    let (mounted, out) = run(Command::new("mount").arg("-T").arg(&fstab).arg(mnt));
    assert!(mounted, "mount -T fstab: {out}");
    assert_eq!(
        fs::read_to_string(ts.mnt.join("through-mount")).unwrap(),
        "mounted by mount(8)\n"
    );
    let err = fs::write(ts.mnt.join("new"), b"x").unwrap_err();
    assert_eq!(sys::errno(&err), libc::EROFS);
    let (unmounted, out) = run(Command::new("umount").arg(mnt));
    assert!(unmounted, "umount: {out}");

    // Bad options are refused, naming them, and nothing is mounted.
    for (opts, needle) in [
        ("compress=zstd", "unknown mount option 'compress=zstd'"),
        ("ro", "snapshot=NAME"),
        ("threads=zero", "threads=zero"),
    ] {
        let (mounted, out) =
            run(Command::new("mount").args(["-t", "strata", store, mnt, "-o", opts]));
        assert!(!mounted && out.contains(needle), "-o {opts}: {out}");
        assert!(!mounts::is_mounted(&ts.mnt));
    }
    ts.assert_verify_clean();
}

#[test]
fn foreground_mount_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let ts = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(strata_bin())
        .args(["mount", "--foreground", s(&ts.store), s(&ts.mnt)])
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", child.id())), "{msg}");
    assert!(
        mounts::is_mounted(&ts.mnt),
        "READY=1 came before the mount was there"
    );
    sys::kill(child.id(), libc::SIGTERM).unwrap();
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
    assert!(!mounts::is_mounted(&ts.mnt));
}

#[test]
fn version_names_the_store_format() {
    let out = strata(["--version"]);
    out.assert_success();
    assert!(
        out.stdout.starts_with("strata ") && out.stdout.contains("(store format 1)"),
        "{}",
        out.stdout
    );
    let help = strata(["verify", "--help"]);
    assert!(help.stdout.contains("mounted"), "{}", help.stdout);
}

#[test]
fn every_command_that_takes_a_store_takes_its_mount_point() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let mnt = s(&ts.mnt);
    fs::write(ts.mnt.join("f"), b"one").unwrap();
    let commands: [&[&str]; 17] = [
        &["stats", mnt],
        &["status", mnt],
        &["verify", mnt],
        &["gc", mnt],
        &["flatten", mnt],
        &["defrag", mnt],
        &["snapshot", "create", mnt, "a"],
        &["snapshot", "list", mnt],
        &["snapshot", "hold", mnt, "a"],
        &["snapshot", "release", mnt, "a"],
        &["snapshot", "rename", mnt, "a", "b"],
        &["diff", mnt, "b"],
        &["clone", mnt, "b", "side"],
        &["branch", "list", mnt],
        &["branch", "delete", mnt, "side"],
        &["snapshot", "prune", mnt, "--keep", "last=5", "--dry-run"],
        &["rollback", mnt, "b"],
    ];
    for args in commands {
        let run = strata(args);
        assert!(run.success(), "strata {}: {}", args.join(" "), run.output());
    }
    let history = strata(["history", s(&ts.mnt.join("f"))]);
    assert!(history.success(), "{}", history.output());
    mount.unmount();
}
