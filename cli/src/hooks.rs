//! Snapshot hooks, as snapper's pre/post and sanoid's scripts: a shell command before a
//! snapshot (a failure means the snapshot is not taken) and one after it (always run,
//! whatever happened before, so that what the pre command locked is unlocked).
//!
//! From `strata snapshot create --pre/--post`, `strata snapshot wrap`, or the store's
//! `pre_snapshot`/`post_snapshot` (strata.toml; also for automatic snapshots). The
//! command runs under `sh -c` with STRATA_STORE, STRATA_SNAPSHOT, STRATA_BRANCH and
//! STRATA_HOOK (`pre` or `post`) in its environment; its output goes to the terminal,
//! or for automatic snapshots to the daemon's log.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Pre,
    Post,
}

impl When {
    fn name(self) -> &'static str {
        match self {
            When::Pre => "pre",
            When::Post => "post",
        }
    }
}

/// The pre and post commands of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pre: Option<String>,
    pub post: Option<String>,
}

impl Hooks {
    /// The given commands, else the store's (strata.toml).
    pub fn chosen(pre: Option<&str>, post: Option<&str>, store: &Path) -> Hooks {
        let config = strata_snapshot::StoreConfig::load(store).ok();
        let from_config = |f: fn(&strata_snapshot::StoreConfig) -> &Option<String>| {
            config.as_ref().and_then(|c| f(c).clone())
        };
        Hooks {
            pre: pre
                .map(str::to_string)
                .or_else(|| from_config(|c| &c.pre_snapshot)),
            post: post
                .map(str::to_string)
                .or_else(|| from_config(|c| &c.post_snapshot)),
        }
    }

    /// Runs the pre command, then `take` if it succeeded, then the post command in any
    /// case. The error names which step failed (the pre command's failure means nothing
    /// was taken); a post failure after a snapshot was taken says so.
    pub fn around<T>(
        &self,
        env: &HookEnv<'_>,
        log: Output,
        take: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let pre = match &self.pre {
            Some(cmd) => run(cmd, When::Pre, env, log),
            None => Ok(()),
        };
        let taken = match pre {
            Ok(()) => take(),
            Err(e) => Err(e.context(format!("snapshot {} not taken", env.snapshot))),
        };
        let post = match &self.post {
            Some(cmd) => run(cmd, When::Post, env, log),
            None => Ok(()),
        };
        match (taken, post) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e.context(format!("snapshot {} was taken", env.snapshot))),
            (Err(e), _) => Err(e),
        }
    }
}

/// What a hook is told about the snapshot.
pub struct HookEnv<'a> {
    pub store: &'a Path,
    pub snapshot: &'a str,
    pub branch: &'a str,
}

/// Where a hook's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The terminal of the command.
    Inherit,
    /// The daemon log (one line each).
    Log,
}

fn run(cmd: &str, when: When, env: &HookEnv<'_>, output: Output) -> Result<()> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("STRATA_STORE", env.store)
        .env("STRATA_SNAPSHOT", env.snapshot)
        .env("STRATA_BRANCH", env.branch)
        .env("STRATA_HOOK", when.name())
        .stdin(Stdio::null());
    let what = || format!("{}-snapshot hook `{cmd}`", when.name());
    let status = match output {
        Output::Inherit => c.status().with_context(what)?,
        Output::Log => {
            let out = c.output().with_context(what)?;
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                tracing::info!("{}: {line}", what());
            }
            out.status
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(anyhow!("{} failed ({status})", what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> HookEnv<'_> {
        HookEnv {
            store: dir,
            snapshot: "s1",
            branch: "main",
        }
    }

    #[test]
    fn a_failed_pre_hook_stops_the_snapshot_and_the_post_hook_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("post-ran");
        let hooks = Hooks {
            pre: Some("exit 3".into()),
            post: Some(format!(
                "echo \"$STRATA_HOOK $STRATA_SNAPSHOT\" > {}",
                marker.display()
            )),
        };
        let mut taken = false;
        let err = hooks
            .around(&env(dir.path()), Output::Log, || {
                taken = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!taken);
        let msg = crate::error::message(&err);
        assert!(msg.contains("snapshot s1 not taken"), "{msg}");
        assert!(msg.contains("pre-snapshot hook `exit 3` failed"), "{msg}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "post s1\n");
    }

    #[test]
    fn hooks_see_the_store_and_a_failed_post_hook_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let hooks = Hooks {
            pre: Some(format!(
                "echo \"$STRATA_STORE $STRATA_BRANCH\" > {}",
                seen.display()
            )),
            post: Some("false".into()),
        };
        let err = hooks
            .around(&env(dir.path()), Output::Log, || Ok(7))
            .unwrap_err();
        let msg = crate::error::message(&err);
        assert!(msg.contains("snapshot s1 was taken"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            format!("{} main\n", dir.path().display())
        );
        assert_eq!(
            Hooks::default()
                .around(&env(dir.path()), Output::Log, || Ok(7))
                .unwrap(),
            7
        );
    }
}
