//! `strata man [--dir DIR]` and `strata completions SHELL`: manual pages and shell
//! completions generated from the command definitions (clap_mangen, clap_complete), so
//! they never drift from what the command accepts. scripts/install installs both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Command;

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write strata.8 and one page per command (strata-mount.8, strata-snapshot-create.8,
    /// ...) into DIR instead of printing strata(8).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh or fish (also elvish, powershell).
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// The EXIT STATUS section of every page.
const EXIT_STATUS: &str = "0  success.\n\
1  an error (printed as one line, `strata: error: ...`), or `verify`/`status` found problems.\n\
2  a usage error: an invalid option or value.\n\
3  the store is busy: another process holds it (an unmount in progress, a command with the store open).";

pub fn man(cmd: Command, args: &ManArgs) -> Result<ExitCode> {
    match &args.dir {
        None => {
            let mut out = Vec::new();
            page(&cmd, &mut out)?;
            return write_stdout(&out);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut cmd = cmd;
            cmd.build();
            write_pages(&cmd, "strata", dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One page for `cmd` (named `name`), then one per subcommand, recursively.
fn write_pages(cmd: &Command, name: &str, dir: &Path) -> Result<()> {
    let path = dir.join(format!("{name}.8"));
    let mut out = Vec::new();
    page(&cmd.clone().name(name.to_string()), &mut out)?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

fn page(cmd: &Command, out: &mut Vec<u8>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for line in EXIT_STATUS.lines() {
        writeln!(out, ".TP\n{}", line.replacen("  ", "\n", 1))?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

pub fn completions(mut cmd: Command, args: &CompletionsArgs) -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "strata", &mut out);
    write_stdout(&out)
}

/// Writes `out` to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(out: &[u8]) -> Result<ExitCode> {
    match std::io::stdout().write_all(out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
