//! fsync helpers: the few places that make bytes durable.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(dir, e))?;
    f.sync_all().map_err(|e| Error::io(dir, e))
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du`); 0 if missing.
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Makes a directory tree (sled's `meta/`) durable after sled's `flush`, which only
/// uses sync_file_range and never fsyncs its blob files or directories.
///
/// sled rewrites only its log file `db` in place; blob and snapshot files are written
/// once under new names. So `db` is fsynced every time, any other file when it is new or
/// its size or mtime changed, and a directory when its set of names changed. Handles
/// stay open between calls.
#[derive(Default)]
pub struct TreeSyncer {
    files: HashMap<PathBuf, (File, u64, SystemTime)>,
    dirs: HashMap<PathBuf, Vec<std::ffi::OsString>>,
}

impl TreeSyncer {
    pub fn sync(&mut self, dir: &Path) -> Result<()> {
        let mut names = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let p = entry.path();
            names.push(entry.file_name());
            let ft = entry.file_type().map_err(|e| Error::io(&p, e))?;
            if ft.is_dir() {
                self.sync(&p)?;
            } else if ft.is_file() {
                let md = entry.metadata().map_err(|e| Error::io(&p, e))?;
                let mtime = md.modified().map_err(|e| Error::io(&p, e))?;
                let stale = entry.file_name() == "db"
                    || match self.files.get(&p) {
                        Some((_, len, t)) => *len != md.len() || *t != mtime,
                        None => true,
                    };
                if stale {
                    let f = match self.files.remove(&p) {
                        Some((f, _, _)) => f,
                        None => File::open(&p).map_err(|e| Error::io(&p, e))?,
                    };
                    f.sync_all().map_err(|e| Error::io(&p, e))?;
                    self.files.insert(p, (f, md.len(), mtime));
                }
            }
        }
        names.sort();
        if self.dirs.get(dir) != Some(&names) {
            fsync_dir(dir)?;
            self.files.retain(|p, _| !p.starts_with(dir) || p.exists());
            self.dirs.insert(dir.to_path_buf(), names);
        }
        Ok(())
    }
}
