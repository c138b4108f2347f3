//! Unit tests of the whole store (one file per theme) and their shared fixture: a temp
//! directory with `packs/` and a sled database `meta/`, which can be restarted (flush,
//! close, reopen) to test what survives on disk.

mod cache;
mod corruption;
mod crash;
mod gc;
mod nospace;
mod relocate;
mod roundtrip;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::layout::{Footer, FOOTER_LEN};
use crate::{BlockId, BlockStore, Config, Error, PackId};

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    db: Option<sled::Db>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        Fixture { dir, db: Some(db) }
    }

    pub fn packs(&self) -> PathBuf {
        self.dir.path().join("packs")
    }

    pub fn tree(&self) -> sled::Tree {
        self.db.as_ref().unwrap().open_tree("blocks").unwrap()
    }

    /// A store without a block cache: these tests damage packs under an open store
    /// and check what a read of the disk finds (`cached` has the cache).
    pub fn open(&self) -> BlockStore {
        self.open_with(Config {
            cache_bytes: 0,
            ..Config::default()
        })
    }

    /// A store with the default block cache.
    pub fn cached(&self) -> BlockStore {
        self.open_with(Config::default())
    }

    pub fn open_with(&self, cfg: Config) -> BlockStore {
        BlockStore::open(&self.packs(), self.tree(), cfg).unwrap()
    }

    /// Flushes sled and opens it again from disk (drop every store first).
    pub fn restart_index(&mut self) {
        let db = self.db.take().unwrap();
        db.flush().unwrap();
        drop(db);
        self.db = Some(open_db(self.dir.path()));
    }

    /// Pack files on disk, by id.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.packs())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        v.sort();
        v
    }

    pub fn pack(&self, id: u32) -> PathBuf {
        self.packs().join(PackId(id).file_name())
    }
}

/// Opens sled, waiting briefly for a previous handle's lock: sled's own threads may
/// still be dropping the last reference to it.
fn open_db(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir.join("meta")).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// Deterministic incompressible bytes (xorshift64*).
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Deterministic compressible bytes: words from a small vocabulary.
pub(crate) fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "block ", "pack ", "strata ", "zstd ", "seal ", "id ", "fs ", "gen ",
    ];
    let picks = noise(seed, len);
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[(picks[i % len.max(1)] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// XORs one byte of a file with 0x40.
pub(crate) fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

/// The footer of a pack if it has a valid one.
pub(crate) fn footer_of(path: &Path) -> Option<Footer> {
    let f = File::open(path).unwrap();
    crate::scan::footer(&f, f.metadata().unwrap().len()).unwrap()
}

/// Asserts `r` is `Corrupt` at `path`/`offset`, and returns its detail.
pub(crate) fn assert_corrupt(r: crate::Result<Vec<u8>>, path: &Path, offset: u64) -> String {
    match r {
        Err(Error::Corrupt {
            path: p,
            offset: o,
            detail,
        }) => {
            assert_eq!((p.as_path(), o), (path, offset), "{detail}");
            detail
        }
        other => panic!(
            "expected Corrupt at {} offset {offset}, got {other:?}",
            path.display()
        ),
    }
}

/// Location of an id, from the pending map or the index.
pub(crate) fn location(store: &BlockStore, id: &BlockId) -> crate::layout::Location {
    if let Some(l) = crate::sync::read(&store.pending).get(id) {
        return *l;
    }
    crate::index::lookup(&store.index, &store.dir, id)
        .unwrap()
        .unwrap()
}

/// A fully sealed pack: valid footer whose length matches the file.
pub(crate) fn assert_sealed(path: &Path) -> Footer {
    let f = footer_of(path).unwrap_or_else(|| panic!("{} is not sealed", path.display()));
    assert_eq!(f.pack_len, file_len(path));
    assert!(f.pack_len >= FOOTER_LEN as u64);
    f
}

pub(crate) fn verify_clean(store: &BlockStore) -> crate::VerifyReport {
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.bad_blocks.is_empty());
    report
}
