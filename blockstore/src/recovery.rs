//! Bringing the packs directory to a clean state at open: every pack sealed, the torn
//! tail of a pack that was being written when the process died cut off.
//!
//! Invariants after `recover` returns:
//! - every pack ends with a valid footer, except one whose damage lies below data the
//!   index points at: that pack is left byte-for-byte as it was (logged as an error;
//!   `verify` reports it), since cutting it would lose synced blocks;
//! - no pack is ever cut below the end of a record the index points at;
//! - the returned next pack id is above every existing pack, so the store never
//!   appends to a pack that existed before `open`.
//! - a pack of an unknown format version stops the open (`Error::Corrupt`) untouched.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::index::{self, Entry};
use crate::layout::{encode_pack_header, Footer, PackHeaderError, FOOTER_LEN, PACK_HEADER_LEN};
use crate::scan::{self, PackHeader, Scanned};
use crate::{Error, PackId, Result};

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every `{:08x}.pack` file in `dir`, by id. Other names are ignored.
pub(crate) fn list_packs(dir: &Path) -> Result<Vec<(PackId, PathBuf)>> {
    let mut packs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(PackId::from_file_name) {
            packs.push((id, entry.path()));
        }
    }
    packs.sort();
    Ok(packs)
}

pub(crate) struct Unsealed {
    pub id: PackId,
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
    pub header: PackHeader,
}

/// Seals every unsealed pack in `dir`; returns the first unused pack id.
pub(crate) fn recover(dir: &Path, index: &sled::Tree) -> Result<u32> {
    let packs = list_packs(dir)?;
    let next_id = match packs.last() {
        None => 0,
        Some((id, path)) => id.0.checked_add(1).ok_or_else(|| Error::Io {
            path: path.clone(),
            source: io::Error::other("pack numbers exhausted"),
        })?,
    };
    let mut unsealed = Vec::new();
    for (id, path) in packs {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        let header = scan::pack_header(&file, len).map_err(io_error(&path))?;
        match header {
            PackHeader::Bad(e @ PackHeaderError::UnsupportedVersion(_)) => {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    detail: e.to_string(),
                })
            }
            PackHeader::Good if scan::footer(&file, len).map_err(io_error(&path))?.is_some() => {}
            header => unsealed.push(Unsealed {
                id,
                path,
                file,
                len,
                header,
            }),
        }
    }
    if unsealed.is_empty() {
        return Ok(next_id);
    }
    let needed = indexed_ends(index, &unsealed)?;
    for pack in unsealed {
        let needed = needed.get(&pack.id).copied();
        repair(&pack, needed)?;
    }
    Ok(next_id)
}

/// For each unsealed pack, the end of the last record the index points at in it.
fn indexed_ends(index: &sled::Tree, unsealed: &[Unsealed]) -> Result<HashMap<PackId, u64>> {
    let mut ends: HashMap<PackId, u64> = unsealed.iter().map(|p| (p.id, 0)).collect();
    for entry in index::entries(index) {
        if let Entry::Good(_, loc) = entry? {
            if let Some(end) = ends.get_mut(&loc.pack) {
                *end = (*end).max(loc.record_end());
            }
        }
    }
    ends.retain(|_, end| *end > 0);
    Ok(ends)
}

pub(crate) fn repair(pack: &Unsealed, needed: Option<u64>) -> Result<()> {
    let (path, file) = (&pack.path, &pack.file);
    let (cut, records) = match &pack.header {
        PackHeader::Good => valid_prefix(file, pack.len).map_err(io_error(path))?,
        bad => {
            let what = match bad {
                PackHeader::Bad(e) => e.to_string(),
                _ => format!("{} bytes, shorter than a pack header", pack.len),
            };
            if needed.is_some() {
                tracing::error!(path = %path.display(), "damaged pack header ({what}) in a pack \
                    the index points into; leaving the pack as it is for verify to report");
                return Ok(());
            }
            tracing::warn!(path = %path.display(), "unsealed pack with no usable header ({what}) \
                and nothing indexed in it; rewriting it as an empty sealed pack");
            file.set_len(0).map_err(io_error(path))?;
            file.write_all_at(&encode_pack_header(), 0)
                .map_err(io_error(path))?;
            (PACK_HEADER_LEN as u64, 0)
        }
    };
    if let Some(needed) = needed.filter(|&n| n > cut) {
        tracing::error!(path = %path.display(), offset = cut, indexed_up_to = needed,
            "damaged record below indexed data in an unsealed pack; leaving the pack as it is \
             for verify to report");
        return Ok(());
    }
    if cut < pack.len {
        tracing::warn!(path = %path.display(), offset = cut, bytes = pack.len - cut,
            "cutting the torn tail of an unsealed pack");
    }
    file.set_len(cut).map_err(io_error(path))?;
    let footer = Footer {
        record_count: records,
        pack_len: cut + FOOTER_LEN as u64,
    };
    file.write_all_at(&footer.encode(), cut)
        .map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    tracing::info!(path = %path.display(), records, "sealed pack left unsealed by the last run");
    Ok(())
}

/// End of the last valid record before the first invalid one, and the records before it.
pub(crate) fn valid_prefix(file: &File, len: u64) -> io::Result<(u64, u64)> {
    let (mut pos, mut records) = (PACK_HEADER_LEN as u64, 0);
    while pos < len {
        match scan::record_at(file, pos, len)? {
            Scanned::Valid(h) => {
                pos += h.record_len();
                records += 1;
            }
            Scanned::BadPayload { .. } | Scanned::BadHeader(_) => break,
        }
    }
    Ok((pos, records))
}
