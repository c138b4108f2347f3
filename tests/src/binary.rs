//! Finding the `strata` binary and running it (or any command) with a time limit,
//! capturing its exit status and output.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Time limit for one `strata` command (a mount, an unmount with flush, a verify).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// The `strata` binary: `$STRATA_BIN`, else `strata` in the profile directory of the
/// target directory this test executable was built in (`target/release/deps/x` →
/// `target/release/strata`).
pub fn strata_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("STRATA_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "STRATA_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let exe = std::env::current_exe().expect("current_exe");
        let candidates: Vec<PathBuf> = exe
            .ancestors()
            .skip(1)
            .filter(|dir| dir.file_name() == Some(OsStr::new("deps")))
            .filter_map(|deps| deps.parent())
            .map(|profile| profile.join("strata"))
            .collect();
        candidates
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "the strata binary was not found (looked for {candidates:?}); build it with \
                 `cargo build [--release] -p strata-cli` in the same profile, or set STRATA_BIN"
                )
            })
    })
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr together, for searching.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with everything the command printed unless it exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success(),
            "`{}` failed ({}):\n{}{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Checks the shape of a command-line error: non-zero exit, exactly one line on
    /// stderr of the form `strata: error: ...`, containing every needle.
    #[track_caller]
    pub fn assert_error(&self, needles: &[&str]) -> &Self {
        assert!(
            !self.success(),
            "`{}` should have failed but exited 0:\n{}{}",
            self.what,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.trim_end().lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}`: expected one error line, got:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            lines[0].starts_with("strata: error: "),
            "`{}`: unexpected error format: {}",
            self.what,
            lines[0]
        );
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "`{}`: {needle:?} missing from: {}",
                self.what,
                lines[0]
            );
        }
        self
    }
}

/// Runs `strata ARGS` with `RUST_LOG` and `STRATA_DEFAULT_STORE` removed from its
/// environment (set them with `strata_env`).
pub fn strata<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    strata_env(args, &[])
}

/// Like `strata`, with extra environment variables.
pub fn strata_env<I, S>(args: I, env: &[(&str, &OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(strata_bin());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("STRATA_DEFAULT_STORE");
    for (name, value) in env {
        command.env(name, value);
    }
    run(command, COMMAND_TIMEOUT)
}

/// Runs `command` with stdin from /dev/null, collecting its output; kills it and panics
/// after `timeout`.
pub fn run(command: Command, timeout: Duration) -> Run {
    let what = describe(&command);
    try_run(command, timeout).unwrap_or_else(|err| panic!("`{what}`: {err}"))
}

/// Like `run`, but never panics: an error if it cannot start or times out (then killed).
pub fn try_run(mut command: Command, timeout: Duration) -> Result<Run, String> {
    let what = describe(&command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `{what}`: {err}"))?;
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{what}` did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Err(err) => return Err(format!("cannot wait for `{what}`: {err}")),
        }
    };
    let collect = |handle: Option<std::thread::JoinHandle<String>>| {
        handle.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Run {
        what,
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program());
    let name = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy();
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{name} {}", args.join(" "))
}
