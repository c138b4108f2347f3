//! Mounts seen from the tests: /proc/self/mountinfo, unmounting by force when a test
//! failed, tmpfs and ext4 guards, and synthetic stale FUSE mounts.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// The mounts this process sees.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: unescape(fields.get(separator + 1)?),
                source: unescape(fields.get(separator + 2)?),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl MountEntry {
    /// True for a FUSE mount of strata: type `fuse.strata`, or plain `fuse` (what fuser's
    /// direct mount(2) as root reports, without the subtype).
    pub fn is_strata_fuse(&self) -> bool {
        self.fs_type == "fuse.strata" || self.fs_type == "fuse"
    }
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mount_point == path)
}

pub fn is_mounted(path: &Path) -> bool {
    mount_at(path).is_some()
}

/// Mount points strictly below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Runs a cleanup command quietly; true if it exited 0.
pub fn quiet(program: &str, args: &[&std::ffi::OsStr]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Removes whatever is mounted at `path` without going through strata: `fusermount3 -u`,
/// then `umount`, then a lazy `umount -l`. True if nothing is mounted there afterwards.
pub fn force_unmount(path: &Path) -> bool {
    let p = path.as_os_str();
    for attempt in 0..3 {
        if !is_mounted(path) {
            return true;
        }
        match attempt {
            0 => {
                quiet("fusermount3", &["-u".as_ref(), p]);
            }
            1 => {
                quiet("umount", &[p]);
            }
            _ => {
                quiet("umount", &["-l".as_ref(), p]);
            }
        }
    }
    // A lazy unmount can take a moment to show.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_mounted(path)
}

/// A tmpfs mounted for the lifetime of the guard (`mount -t tmpfs -o size=SIZE`).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`) on the existing directory `path`.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "strata-test-tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {} failed: {status}",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for inner in mounts_under(&self.path) {
            force_unmount(&inner);
        }
        if !force_unmount(&self.path) {
            eprintln!(
                "warning: could not unmount the tmpfs at {}",
                self.path.display()
            );
        }
    }
}

/// An ext4 file system in an image file, loop-mounted (with POSIX ACLs, ext4's default)
/// on `DIR/mnt` for the lifetime of the guard: the native file system strata's semantics
/// are compared with.
pub struct Ext4 {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ext4 {
    pub fn mount(size: &str) -> Ext4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("ext4.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("truncate").args(["-s", size]).arg(&image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop,acl"])
            .arg(&image)
            .arg(&mnt));
        // lost+found is not part of what a test compares.
        let _ = std::fs::remove_dir(mnt.join("lost+found"));
        Ext4 { mnt, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if !force_unmount(&self.mnt) {
            eprintln!(
                "warning: could not unmount the ext4 image at {}",
                self.mnt.display()
            );
        }
    }
}

/// Makes `mount_point` a stale FUSE mount of type `fuse.strata` with `source` as its
/// source, exactly what a strata daemon killed with SIGKILL leaves behind: the FUSE
/// connection is opened, mounted and closed again without a daemon ever answering.
pub fn make_stale_fuse_mount(mount_point: &Path, source: &Path) -> io::Result<()> {
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let options = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        device.as_raw_fd()
    );
    let source = CString::new(source.as_os_str().as_bytes()).expect("no NUL in path");
    let target = CString::new(mount_point.as_os_str().as_bytes()).expect("no NUL in path");
    let fs_type = CString::new("fuse.strata").expect("static");
    let data = CString::new(options).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(device); // closing the connection aborts it: the mount is now stale
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }

    #[test]
    fn sees_the_root_mount() {
        assert!(is_mounted(Path::new("/")));
        assert!(!is_mounted(Path::new("/definitely/not/a/mount/point")));
    }
}
