//! The `strata` binary as mount(8)'s and umount(8)'s helpers, chosen by the name it is
//! run as (scripts/install links them to it):
//!
//! - `/sbin/mount.strata STORE MOUNTPOINT [-sfnv] [-o OPTIONS]`: what `mount -t strata`
//!   and an /etc/fstab line `STORE MOUNTPOINT strata OPTIONS 0 0` run; mounts as `strata
//!   mount` does and returns once the mount is ready (so systemd's mount units work).
//! - `/sbin/umount.fuse.strata MOUNTPOINT [-flnrv]`: what `umount MOUNTPOINT` runs for a
//!   strata mount (type `fuse.strata`); unmounts as `strata umount` does, committing first.
//!
//! Options: `branch=B`, `snapshot=NAME` (read-only), `threads=N`, `snapshot_every=15m`,
//! `keep=RULES` (rules separated by `:` or continuing the option list:
//! `keep=hourly=24,daily=7`), `ro` (only with `snapshot=`), `allow_other` (strata mounts
//! always allow other users; permissions are the kernel's), and the options mount(8) and
//! systemd pass that need nothing done here (`defaults`, `rw`, `auto`, `nofail`,
//! `_netdev`, `x-systemd.*`, ...). Anything else is refused, naming it.
//!
//! Exit codes follow mount(8): 0 mounted, 1 bad invocation or options, 32 mount failed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};

use crate::commands;

/// mount(8)'s exit code for a usage error.
const EX_USAGE: u8 = 1;
/// mount(8)'s exit code for a failed mount.
const EX_FAIL: u8 = 32;

/// Keep rule names: a bare `daily=7` after `keep=` continues the keep rules.
const KEEP_RULES: [&str; 6] = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];

/// Options mount(8) or systemd pass that strata has nothing to do for.
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "allow_other",
    "default_permissions",
];

/// What the options ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub branch: Option<String>,
    pub snapshot: Option<String>,
    pub threads: Option<usize>,
    pub snapshot_every: Option<String>,
    pub keep: Option<String>,
    pub read_only: bool,
}

/// Parses a mount option string (`-o`), refusing what it does not know.
pub fn parse_options(opts: &str) -> Result<Options> {
    let mut o = Options::default();
    let mut in_keep = false;
    for opt in opts.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if in_keep && KEEP_RULES.contains(&key) && value.is_some() {
            let keep = o.keep.get_or_insert_with(String::new);
            keep.push(',');
            keep.push_str(opt);
            continue;
        }
        in_keep = false;
        let need = |v: Option<&str>| {
            v.filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("option {key} needs a value ({key}=...)"))
        };
        match key {
            "branch" => o.branch = Some(need(value)?),
            "snapshot" => o.snapshot = Some(need(value)?),
            "snapshot_every" => o.snapshot_every = Some(need(value)?),
            "keep" => {
                o.keep = Some(need(value)?.replace(':', ","));
                in_keep = true;
            }
            "threads" => {
                let v = need(value)?;
                o.threads = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| anyhow!("option threads={v}: not a positive number"))?,
                );
            }
            "ro" => o.read_only = true,
            k if value.is_none() && IGNORED.contains(&k) => {}
            k if k.starts_with("x-") || k == "comment" => {}
            _ => bail!(
                "unknown mount option '{opt}' (strata knows branch=, snapshot=, threads=, \
                 snapshot_every=, keep=, ro, allow_other and mount's generic options)"
            ),
        }
    }
    if o.read_only && o.snapshot.is_none() {
        bail!(
            "option ro: a branch is mounted read-write; mount a snapshot read-only with \
             snapshot=NAME"
        );
    }
    if o.branch.is_some() && o.snapshot.is_some() {
        bail!("options branch= and snapshot= exclude each other");
    }
    Ok(o)
}

/// If the binary runs as a helper, does its work and returns the exit code.
pub fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next()?);
    let name = argv0.file_name()?.to_str()?.to_string();
    let rest: Vec<OsString> = args.collect();
    match name.as_str() {
        "mount.strata" | "mount.fuse.strata" => Some(report(mount(&rest), &name)),
        "umount.strata" | "umount.fuse.strata" => Some(report(umount(&rest), &name)),
        _ => None,
    }
}

/// A helper's failure: one line naming the helper, and mount(8)'s exit code.
struct Failed(u8, anyhow::Error);

fn report(result: std::result::Result<ExitCode, Failed>, name: &str) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(Failed(code, e)) => {
            eprintln!("{name}: {}", crate::error::message(&e));
            ExitCode::from(code)
        }
    }
}

fn usage(e: anyhow::Error) -> Failed {
    Failed(EX_USAGE, e)
}

fn mount(args: &[OsString]) -> std::result::Result<ExitCode, Failed> {
    let mut positional = Vec::new();
    let (mut opts, mut fake, mut verbose) = (String::new(), false, 0u8);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let v = it
                    .next()
                    .ok_or_else(|| usage(anyhow!("-o needs options")))?;
                if !opts.is_empty() {
                    opts.push(',');
                }
                opts.push_str(&v.to_string_lossy());
            }
            Some("-t") => {
                it.next();
            }
            Some("-N") => return Err(usage(anyhow!("-N (mount namespaces) is not supported"))),
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        'f' => fake = true,
                        'v' => verbose = 1,
                        's' | 'n' => {}
                        _ => return Err(usage(anyhow!("unknown flag -{f}"))),
                    }
                }
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [store, mount_point] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| usage(anyhow!("usage: mount.strata STORE MOUNTPOINT [-o OPTIONS]")))?;
    let o = parse_options(&opts).map_err(usage)?;
    if fake {
        return Ok(ExitCode::SUCCESS);
    }
    let args = commands::mount::Args {
        paths: vec![store, mount_point],
        foreground: false,
        threads: o.threads,
        branch: o.branch,
        snapshot: o.snapshot,
        snapshot_every: o.snapshot_every,
        keep: o.keep,
    };
    crate::logging::init(verbose, crate::logging::Role::Command);
    commands::mount::run(&args, verbose).map_err(|e| Failed(EX_FAIL, e))
}

fn umount(args: &[OsString]) -> std::result::Result<ExitCode, Failed> {
    let mut positional = Vec::new();
    let mut lazy = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-t") | Some("-N") => {
                it.next();
            }
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                lazy |= flags.contains('l');
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [mount_point] = <[PathBuf; 1]>::try_from(positional)
        .map_err(|_| usage(anyhow!("usage: umount.fuse.strata MOUNTPOINT")))?;
    crate::logging::init(0, crate::logging::Role::Command);
    let args = commands::umount::Args {
        mount_point,
        lazy,
        timeout: 60,
    };
    commands::umount::run(&args).map_err(|e| Failed(EX_FAIL, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_parse_and_unknown_ones_are_named() {
        let o = parse_options("defaults,branch=dev,threads=4,nofail,x-systemd.requires=a.mount")
            .unwrap();
        assert_eq!(o.branch.as_deref(), Some("dev"));
        assert_eq!(o.threads, Some(4));
        let o = parse_options("rw,snapshot_every=15m,keep=hourly=24,daily=7,noatime").unwrap();
        assert_eq!(o.keep.as_deref(), Some("hourly=24,daily=7"));
        assert_eq!(o.snapshot_every.as_deref(), Some("15m"));
        let o = parse_options("keep=hourly=24:daily=7").unwrap();
        assert_eq!(o.keep.as_deref(), Some("hourly=24,daily=7"));
        let o = parse_options("ro,snapshot=nightly").unwrap();
        assert!(o.read_only);
        let e = parse_options("defaults,compress=zstd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'compress=zstd'"), "{e}");
        assert!(parse_options("ro")
            .unwrap_err()
            .to_string()
            .contains("snapshot=NAME"));
        assert!(parse_options("threads=0").is_err());
        assert!(parse_options("branch=").is_err());
    }
}
