//! Parsing `/proc/self/mountinfo`: which paths are mount points, of what type and source.
//!
//! Line format (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE
//! SOURCE SUPER_OPTIONS`, with space, tab, newline and backslash in paths escaped as
//! `\040`, `\011`, `\012`, `\134`. A strata mount has type `fuse.strata` and its store's
//! absolute path as source (the daemon passes it to the kernel as `fsname`).

use std::io;
use std::path::{Path, PathBuf};

/// File-system type of a strata mount as the kernel reports it.
pub const STRATA_FS_TYPE: &str = "fuse.strata";

/// One mount, as listed in mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// True for a strata mount: type `fuse.strata`, or a plain FUSE mount whose source is
    /// a strata store (a kernel or fusermount that dropped the subtype).
    pub fn is_strata(&self) -> bool {
        self.fs_type == STRATA_FS_TYPE
            || (self.fs_type.starts_with("fuse")
                && self.source.starts_with('/')
                && Path::new(&self.source).join("strata.toml").is_file())
    }
}

/// Reads the mounts visible to this process.
pub fn read() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse(&text))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Fixed fields before the optional ones: id, parent, maj:min, root, mount point, options.
    if fields.len() < 10 {
        return None;
    }
    let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fs_type = fields.get(separator + 1)?;
    let source = fields.get(separator + 2)?;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(fields[4])),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes (`\040` → space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = &bytes[i + 1..i + 4];
            if octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = octal
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount whose mount point is `path` (the topmost one if several are stacked).
pub fn find_mount_point<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// The strata mounts of the store at `store` (its absolute, canonical path).
pub fn strata_mounts_of<'a>(
    mounts: &'a [MountEntry],
    store: &Path,
) -> impl Iterator<Item = &'a MountEntry> + 'a {
    let store = store.to_path_buf();
    mounts
        .iter()
        .filter(move |m| m.is_strata() && Path::new(&m.source) == store)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 22 0:32 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
41 22 0:36 / /tmp rw,nosuid,nodev shared:20 master:3 - tmpfs tmpfs rw,size=1024k
97 41 0:51 / /tmp/my\\040mount rw,nosuid,nodev,relatime shared:50 - fuse.strata /srv/my\\040store rw,user_id=0,group_id=0
98 22 0:52 / /mnt/other rw,relatime - fuse.sshfs me@host:/ rw,user_id=0
99 22 0:53 / /mnt/x rw - tmpfs none rw
100 99 0:54 / /mnt/x rw - fuse.strata /srv/s rw
garbage line
";

    #[test]
    fn parses_fields_and_optional_tags() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 7);
        assert_eq!(mounts[0].mount_point, Path::new("/"));
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[0].source, "/dev/vda");
        assert_eq!(mounts[2].fs_type, "tmpfs");
        assert_eq!(mounts[2].mount_point, Path::new("/tmp"));
    }

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\011b\\012c\\134d"), "/a\tb\nc\\d");
        assert_eq!(unescape("/trailing\\"), "/trailing\\");
        assert_eq!(unescape("/short\\04"), "/short\\04");
        assert_eq!(unescape("/not\\999octal"), "/not\\999octal");
        let mounts = parse(SAMPLE);
        assert_eq!(mounts[3].mount_point, Path::new("/tmp/my mount"));
        assert_eq!(mounts[3].source, "/srv/my store");
    }

    #[test]
    fn finds_strata_mounts() {
        let mounts = parse(SAMPLE);
        let m = find_mount_point(&mounts, Path::new("/tmp/my mount")).unwrap();
        assert!(m.is_strata());
        let other = find_mount_point(&mounts, Path::new("/mnt/other")).unwrap();
        assert!(!other.is_strata());
        assert!(find_mount_point(&mounts, Path::new("/mnt")).is_none());
        let found: Vec<_> = strata_mounts_of(&mounts, Path::new("/srv/my store")).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mount_point, Path::new("/tmp/my mount"));
    }

    #[test]
    fn stacked_mounts_report_the_topmost() {
        let mounts = parse(SAMPLE);
        let top = find_mount_point(&mounts, Path::new("/mnt/x")).unwrap();
        assert_eq!(top.fs_type, "fuse.strata");
    }

    #[test]
    fn reads_this_process_mounts() {
        let mounts = read().unwrap();
        assert!(find_mount_point(&mounts, Path::new("/")).is_some());
    }
}
