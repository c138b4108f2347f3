//! POSIX ACLs on strata against ext4 side by side: the same setfacl script on a strata
//! mount and on a loop-mounted ext4 image gives the same `getfacl` output, the same
//! permission bits and the same access decisions for other users (the kernel enforces
//! them: FUSE_POSIX_ACL). Default ACLs inherit, chmod keeps the mask coherent, a minimal
//! ACL goes back into the bits, setgid is cleared as on ext4. ACLs survive a remount,
//! are in snapshots (read-only there) and clones, and a rollback brings back the old
//! ACLs and the old decisions (the kernel's cached ACLs are dropped).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use strata_tests::cli::{ok, s, UnmountOnDrop};
use strata_tests::fixture::TestStore;
use strata_tests::mounts::Ext4;
use strata_tests::sys::errno;

/// Run as root in the directory under test. Users: 1000 (named in ACLs), 1001 (in group
/// 100, named in ACLs), 65534 (nobody: others).
const SCENARIO: &str = r#"
set -eu
umask 022
mkdir shared
echo data > shared/report
chmod 640 shared/report
setfacl -m u:1000:rw,g:100:r shared/report
setfacl -m u:1000:rwx,d:u:1000:rwx,d:g::r-x,d:g:100:rx,d:o::--- shared
touch shared/new-file
mkdir shared/new-dir
mkdir -m 0700 shared/narrow-dir
mkfifo shared/fifo
echo deeper > shared/new-dir/deeper
umask 077
touch shared/umask-ignored
touch umask-applied
umask 022
cp shared/report chmodded
setfacl -m u:65534:rwx chmodded
chmod 604 chmodded
chmod 770 shared/new-file
touch minimal
setfacl -m u::rwx,g::r,o::- minimal
cp -a shared/report stripped
setfacl -b stripped
setfacl -k shared/new-dir
mkdir sgid
chown 1000:100 sgid
chmod 2770 sgid
touch sgid/file
chown 1000:100 sgid/file
chmod 2770 sgid/file
setpriv --reuid=1000 --regid=1000 --clear-groups setfacl -m u:65534:r sgid/file
cp -a shared copied
ln -s shared/report link
"#;

/// Every path under `dir`, sorted: its mode and owner, its ACLs (`getfacl -n`), and for
/// each test user whether it may read, write and search/execute it, and read it for real.
fn observe(dir: &Path) -> String {
    let script = r#"
set -eu
find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    stat -c '%n %A %u:%g' "$f"
    [ -L "$f" ] || getfacl -n -p --omit-header "$f" 2>&1 | grep -v '^$' || true
    for who in 1000 "1001 --groups=100" 65534; do
        set -- $who
        d=$(setpriv --reuid="$1" --regid="$1" ${2:---clear-groups} sh -c '
            f=$1; r=-; w=-; x=-; c=-
            test -r "$f" && r=r; test -w "$f" && w=w; test -x "$f" && x=x
            if [ -f "$f" ]; then cat "$f" >/dev/null 2>&1 && c=read; fi
            if [ -d "$f" ]; then ls "$f" >/dev/null 2>&1 && c=listed; fi
            echo "$r$w$x $c"' sh "$f")
        echo "  as $1: $d"
    done
done
"#;
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "observing {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_scenario(dir: &Path) {
    let out = Command::new("bash")
        .args(["-c", SCENARIO])
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the ACL scenario failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lines in which two observations differ, for the failure message.
fn differences(strata: &str, ext4: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (strata.lines().collect(), ext4.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).unwrap_or(&""), b.get(i).unwrap_or(&""));
        if x != y {
            out.push_str(&format!("line {}: strata `{x}` | ext4 `{y}`\n", i + 1));
        }
    }
    out
}

fn open_to_all(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

fn setfacl(args: &[&str], path: &Path) -> std::process::Output {
    Command::new("setfacl")
        .args(args)
        .arg(path)
        .output()
        .expect("run setfacl")
}

#[test]
fn acls_behave_as_on_ext4_and_live_in_snapshots_clones_and_rollbacks() {
    let ext4 = Ext4::mount("64M");
    run_scenario(ext4.path());
    let expected = observe(ext4.path());
    // The scenario is only a test if ACLs did something on ext4.
    for needle in [
        "user:1000:rwx\t#effective:rw-",
        "default:group:100:r-x",
        "./sgid/file -rwxrwx--- 1000:100",
        "./minimal -rwxr----- ",
    ] {
        assert!(
            expected.contains(needle),
            "ext4 lacks {needle:?}:\n{expected}"
        );
    }

    let ts = TestStore::new();
    open_to_all(&ts.root);
    let mount = ts.mount();
    run_scenario(&ts.mnt);
    let got = observe(&ts.mnt);
    assert!(
        got == expected,
        "strata and ext4 differ:\n{}",
        differences(&got, &expected)
    );

    // Kept across a remount (and through a commit of the daemon).
    mount.unmount();
    let mount = ts.mount();
    let got = observe(&ts.mnt);
    assert!(
        got == expected,
        "after a remount:\n{}",
        differences(&got, &expected)
    );

    // In a snapshot, the same, and read-only.
    let store = s(&ts.store);
    ok(&["snapshot", "create", store, "acls"]);
    let snap = ts.mnt.join(".snapshots/acls");
    let in_snapshot = observe(&snap);
    assert!(
        in_snapshot == expected,
        "in the snapshot:\n{}",
        differences(&in_snapshot, &expected)
    );
    let refused = setfacl(&["-m", "u:65534:rwx"], &snap.join("shared/report"));
    assert!(!refused.status.success(), "setfacl in a snapshot succeeded");
    let refused = sys_set_acl(&snap.join("minimal"));
    assert_eq!(refused, libc::EROFS, "setting an ACL in a snapshot");

    // A change after the snapshot, then a rollback: the old ACL and the old decisions.
    let report = ts.mnt.join("shared/report");
    let out = setfacl(&["-m", "u:65534:rw"], &report);
    assert!(out.status.success(), "{out:?}");
    let changed = observe(&ts.mnt);
    assert!(changed.contains("user:65534:rw-"), "{changed}");
    assert_ne!(changed, expected);
    ok(&["rollback", store, "acls"]);
    let back = observe(&ts.mnt);
    // The rollback kept the state before as a snapshot, which shows in .snapshots only.
    assert!(
        back == expected,
        "after the rollback:\n{}",
        differences(&back, &expected)
    );

    // In a clone, mounted as a branch.
    ok(&["clone", store, "acls", "branch-acls"]);
    let branch_mnt = ts.root.join("branch");
    fs::create_dir(&branch_mnt).unwrap();
    let guard = UnmountOnDrop(branch_mnt.clone());
    ok(&["mount", "--branch", "branch-acls", store, s(&branch_mnt)]);
    let in_clone = observe(&branch_mnt);
    assert!(
        in_clone == expected,
        "in the clone:\n{}",
        differences(&in_clone, &expected)
    );
    ok(&["umount", s(&branch_mnt)]);
    drop(guard);
    mount.unmount();
    ts.assert_verify_clean();
}

/// setxattr of a minimal access ACL straight through the system call; the errno.
fn sys_set_acl(path: &Path) -> i32 {
    // version 2; user::rwx, group::r--, other::---
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 7u16), (4, 4), (0x20, 0)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    match strata_tests::sys::set_xattr(path, "system.posix_acl_access", &v) {
        Ok(()) => 0,
        Err(e) => errno(&e),
    }
}
