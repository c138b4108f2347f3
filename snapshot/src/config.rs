//! `STORE/strata.toml`: the superblock. Records every parameter that shapes the bytes on
//! disk (format version, block size, compression level) and the store's uuid. Written
//! once by `init`; a store whose version this build does not know is refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "strata.toml";
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
pub const MAX_COMPRESSION_LEVEL: i32 = 19;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    pub format_version: u32,
    pub uuid: String,
    pub block_size: u32,
    /// zstd level; 0 stores blocks uncompressed.
    pub compression_level: i32,
    /// Seconds between background commits of buffered writes.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_secs: u64,
    /// Automatic snapshots of every mounted branch, e.g. "15m" (mount's
    /// `--snapshot-every` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_snapshot_every: Option<String>,
    /// Keep rules for the automatic snapshots, e.g. "hourly=24,daily=7,weekly=4".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_snapshot_keep: Option<String>,
    /// Long reads of a live file that find its blocks scattered have the daemon lay them
    /// out again (docs/packs.md, "Defragmentation on read").
    #[serde(default = "default_true")]
    pub defrag_on_read: bool,
    /// Ranges of live files that commits rewrote have the daemon lay them out again once
    /// the file cooled, when copy-on-write scattered them (docs/packs.md,
    /// "Defragmentation of rewritten files").
    #[serde(default = "default_true")]
    pub defrag_rewritten: bool,
    /// Largest size of the intent log in MiB (docs/intent-log.md): past half of it the
    /// background commit empties it, and an fsync that finds it full commits instead.
    #[serde(default = "default_intent_log_mib")]
    pub intent_log_mib: u64,
    /// MiB of decompressed blocks the daemon keeps in memory for reads (0: none): small
    /// reads that come back to a block (random reads within one block, the read-modify-
    /// write of a partial overwrite) and blocks shared between files, snapshots and
    /// clones skip the read and decompression (docs/packs.md, "Block cache").
    #[serde(default = "default_block_cache_mib")]
    pub block_cache_mib: u64,
    /// FUSE worker threads of a mount when `strata mount --threads` is not given
    /// [default: the number of CPUs, at most 8].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Let the kernel cache writes of mounted branches (FUSE_WRITEBACK_CACHE): write()
    /// returns from the page cache; a snapshot writes it back first and stays exact
    /// (docs/generations.md, "Consistent point").
    #[serde(default = "default_true")]
    pub writeback_cache: bool,
    /// A shell command run before every snapshot (`strata snapshot create` without
    /// `--pre`, automatic ones): the snapshot is not taken if it fails. STRATA_STORE,
    /// STRATA_SNAPSHOT and STRATA_BRANCH are in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_snapshot: Option<String>,
    /// A shell command run after every such snapshot, whether the pre command, or the
    /// snapshot, failed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_snapshot: Option<String>,
}

fn default_intent_log_mib() -> u64 {
    64
}

fn default_block_cache_mib() -> u64 {
    32
}

fn default_true() -> bool {
    true
}

fn default_commit_interval() -> u64 {
    5
}

impl StoreConfig {
    pub fn new(block_size: u32, compression_level: i32) -> Result<StoreConfig> {
        validate_block_size(block_size)?;
        validate_compression_level(compression_level)?;
        Ok(StoreConfig {
            format_version: FORMAT_VERSION,
            uuid: new_uuid(),
            block_size,
            compression_level,
            commit_interval_secs: default_commit_interval(),
            auto_snapshot_every: None,
            auto_snapshot_keep: None,
            defrag_on_read: true,
            defrag_rewritten: true,
            intent_log_mib: default_intent_log_mib(),
            block_cache_mib: default_block_cache_mib(),
            threads: None,
            writeback_cache: true,
            pre_snapshot: None,
            post_snapshot: None,
        })
    }

    pub fn load(store: &Path) -> Result<StoreConfig> {
        let path = store.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: store.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        StoreConfig::parse(&text, store)
    }

    /// The superblock of the store at `store` from the text of its strata.toml.
    pub fn parse(text: &str, store: &Path) -> Result<StoreConfig> {
        let path = store.join(CONFIG_FILE);
        // Read the version alone first, so a newer format with other fields is refused
        // by its version rather than by a parse error.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let v: VersionOnly = toml::from_str(text).map_err(|e| {
            Error::Invalid(format!("{}: not a valid strata.toml: {e}", path.display()))
        })?;
        if v.format_version != FORMAT_VERSION {
            return Err(Error::UnknownVersion {
                path: path.clone(),
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let cfg: StoreConfig = toml::from_str(text).map_err(|e| {
            Error::Invalid(format!("{}: not a valid strata.toml: {e}", path.display()))
        })?;
        validate_block_size(cfg.block_size)?;
        validate_compression_level(cfg.compression_level)?;
        if cfg.threads == Some(0) {
            return Err(Error::Invalid(format!(
                "{}: threads = 0: a mount needs at least 1 thread",
                path.display()
            )));
        }
        Ok(cfg)
    }

    pub fn write_new(&self, store: &Path) -> Result<()> {
        let path = store.join(CONFIG_FILE);
        let text = toml::to_string(self).expect("config serializes");
        let tmp = store.join(".strata.toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        crate::durable::fsync_dir(store)
    }
}

pub fn validate_block_size(bs: u32) -> Result<()> {
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Err(Error::Invalid(format!(
            "block size {bs} is invalid: it must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"
        )));
    }
    Ok(())
}

pub fn validate_compression_level(level: i32) -> Result<()> {
    if !(0..=MAX_COMPRESSION_LEVEL).contains(&level) {
        return Err(Error::Invalid(format!(
            "compression level {level} is invalid: it must be from 0 (off) to {MAX_COMPRESSION_LEVEL}"
        )));
    }
    Ok(())
}

fn new_uuid() -> String {
    let mut seed = [0u8; 32];
    // getrandom through libc; fall back to time + pid if it is unavailable.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        let t = crate::types::Timestamp::now();
        seed[..8].copy_from_slice(&t.secs.to_le_bytes());
        seed[8..12].copy_from_slice(&t.nsecs.to_le_bytes());
        seed[12..16].copy_from_slice(&std::process::id().to_le_bytes());
    }
    let h = blake3::hash(&seed);
    let b = h.as_bytes();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes(b[0..4].try_into().unwrap()),
        u16::from_be_bytes(b[4..6].try_into().unwrap()),
        (u16::from_be_bytes(b[6..8].try_into().unwrap()) & 0x0fff) | 0x4000,
        (u16::from_be_bytes(b[8..10].try_into().unwrap()) & 0x3fff) | 0x8000,
        u64::from_be_bytes(b[8..16].try_into().unwrap()) & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            StoreConfig::load(dir.path()),
            Err(Error::NotAStore { .. })
        ));
        let cfg = StoreConfig::new(65536, 3).unwrap();
        cfg.write_new(dir.path()).unwrap();
        assert_eq!(StoreConfig::load(dir.path()).unwrap(), cfg);
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "format_version = 99\nwhatever = 1\n",
        )
        .unwrap();
        assert!(matches!(
            StoreConfig::load(dir.path()),
            Err(Error::UnknownVersion { found: 99, .. })
        ));
    }

    #[test]
    fn validation() {
        assert!(StoreConfig::new(3000, 3).is_err());
        assert!(StoreConfig::new(2048, 3).is_err());
        assert!(StoreConfig::new(65536, 20).is_err());
        assert!(StoreConfig::new(65536, -1).is_err());
        assert!(StoreConfig::new(16384, 0).is_ok());
    }
}
