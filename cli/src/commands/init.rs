//! `strata init STORE [--block-size SIZE] [--compression LEVEL]`: create a store in a new
//! or empty directory, never over anything that is already there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use strata_snapshot::{InitOptions, Store};

use crate::error::UsageError;
use crate::size::{self, DEFAULT_BLOCK_SIZE};
use crate::store::{self, DEFAULT_COMPRESSION_LEVEL};

/// Highest zstd level a store may use.
pub const MAX_COMPRESSION_LEVEL: i32 = 19;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the new store (created if missing; must be empty if it exists).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Block size: a power of two from 4K to 1M (e.g. 16K, 64K, 65536) [default: 32K; chosen by measurement, see BENCHMARKS.md].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<String>,

    /// zstd compression level from 0 (off) to 19 [default: 1].
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    pub compression: Option<String>,
}

/// Parses a compression level; the error names the value and the allowed range.
pub fn parse_compression_level(text: &str) -> Result<i32, String> {
    match text.trim().parse::<i32>() {
        Ok(level) if (0..=MAX_COMPRESSION_LEVEL).contains(&level) => Ok(level),
        _ => Err(format!(
            "invalid compression level '{text}': must be an integer from 0 (off) to \
             {MAX_COMPRESSION_LEVEL}"
        )),
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let block_size = match &args.block_size {
        Some(text) => size::parse_block_size(text).map_err(UsageError)?,
        None => DEFAULT_BLOCK_SIZE,
    };
    let compression_level = match &args.compression {
        Some(text) => parse_compression_level(text).map_err(UsageError)?,
        None => DEFAULT_COMPRESSION_LEVEL,
    };
    let options = InitOptions {
        block_size,
        compression_level,
    };
    create(&args.store, &options)?;
    println!(
        "created strata store {} (block size {}, compression {})",
        args.store.display(),
        size::format_short(u64::from(block_size)),
        if compression_level == 0 {
            "off".to_string()
        } else {
            format!("zstd {compression_level}")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates a store at `path` after checking that nothing would be overwritten.
pub fn create(path: &Path, options: &InitOptions) -> Result<()> {
    let shown = path.display();
    if store::is_store(path) {
        bail!("{shown} is already a strata store");
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(meta) if meta.file_type().is_symlink() && path.is_dir() => {}
        Ok(_) => bail!("{shown} exists and is not a directory"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(anyhow!(err).context(format!("cannot access {shown}"))),
    }
    if !store::is_missing_or_empty(path)? {
        bail!(
            "{shown} is not empty and is not a strata store; refusing to touch it \
             (choose a new or empty directory)"
        );
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {shown}"))?;
    Store::init(path, options).map_err(|err| anyhow!(err))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_levels() {
        assert_eq!(parse_compression_level("0"), Ok(0));
        assert_eq!(parse_compression_level("3"), Ok(3));
        assert_eq!(parse_compression_level("19"), Ok(19));
        for bad in ["20", "-1", "x", "", "3.5"] {
            let err = parse_compression_level(bad).unwrap_err();
            assert!(
                err.contains(&format!("'{bad}'")) && err.contains("19"),
                "{err}"
            );
        }
    }

    #[test]
    fn refuses_non_empty_directories_and_files() {
        let dir = std::env::temp_dir().join(format!("strata-cli-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("precious"), b"keep me").unwrap();
        let options = store::default_init_options();
        let err = create(&dir, &options).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
        let err = create(&dir.join("precious"), &options).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        std::fs::write(dir.join("strata.toml"), b"").unwrap();
        let err = create(&dir, &options).unwrap_err();
        assert!(err.to_string().contains("already a strata store"), "{err}");
        assert_eq!(std::fs::read(dir.join("precious")).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
