//! Whole trees: checksums of every file under a directory, and copies of a store
//! directory (to run the same crash experiment on several copies).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::data::checksum;
use crate::TestStore;

/// Relative path -> checksum of every regular file under `dir`.
pub fn tree_sums(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_file() {
                let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, checksum(&data));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Copies a directory tree (a store that is not open).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Checksums of the live tree and of every kept snapshot, read through a mount.
pub fn all_sums(ts: &TestStore, kept: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let m = ts.mount();
    let mut out = BTreeMap::new();
    let mut live = tree_sums(&m.path(""));
    live.retain(|k, _| !k.starts_with(".snapshots"));
    out.insert("(live)".to_string(), live);
    for name in kept {
        out.insert(
            name.clone(),
            tree_sums(&m.path(format!(".snapshots/{name}"))),
        );
    }
    m.unmount();
    out
}
