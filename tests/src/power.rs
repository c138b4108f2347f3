//! Power cuts of a running strata: the cycle of the power-cut tests (kill the daemon
//! with the cut, reboot the lossy disk, clear the dead mount), the writer child process
//! whose acknowledgements are kept outside the disk, and the checks after a reboot.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use crate::lossy::RebootReport;
use crate::records::slot_version;
use crate::{sys, Mount, TestStore};

/// The power-cut writer (`src/bin/power_writer.rs`) running on a file of the mount, and
/// the acknowledgements it printed.
pub struct Writer {
    child: Child,
    reader: JoinHandle<Vec<(u64, u64)>>,
    errors: JoinHandle<String>,
}

impl Writer {
    /// Starts `bin` (the test's `CARGO_BIN_EXE_power_writer`) on `file`.
    pub fn start(bin: &Path, file: &Path, seed: u64, base: u64) -> Writer {
        let mut child = Command::new(bin)
            .arg(file)
            .arg(seed.to_string())
            .arg(base.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start power_writer");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                if words.next() != Some("ack") {
                    continue;
                }
                let (Some(Ok(slot)), Some(Ok(version))) = (
                    words.next().map(str::parse::<u64>),
                    words.next().map(str::parse::<u64>),
                ) else {
                    continue;
                };
                acks.push((slot, version));
            }
            acks
        });
        Writer {
            child,
            reader,
            errors,
        }
    }

    /// Kills the writer and returns its acknowledgements.
    pub fn stop(self) -> Vec<(u64, u64)> {
        self.stop_with_error().0
    }

    /// Kills the writer and returns its acknowledgements and what it printed on stderr
    /// (the error that stopped it, if one did).
    pub fn stop_with_error(mut self) -> (Vec<(u64, u64)>, String) {
        let _ = sys::kill(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
        let acks = self.reader.join().expect("writer's reader thread");
        let errors = self.errors.join().expect("writer's stderr thread");
        (acks, errors)
    }

    /// Waits (at most `timeout`) for the writer to stop by itself (at its first error).
    pub fn wait_for_exit(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }
}

/// Acknowledged records of a slot file: slot → newest acknowledged version.
#[derive(Default, Debug)]
pub struct Acked {
    pub slots: BTreeMap<u64, u64>,
    /// Acknowledgements seen in all.
    pub count: u64,
}

impl Acked {
    pub fn add(&mut self, acks: &[(u64, u64)]) {
        for &(slot, version) in acks {
            let v = self.slots.entry(slot).or_default();
            *v = (*v).max(version);
        }
        self.count += acks.len() as u64;
    }

    /// Checks that every acknowledged slot of `file` holds an intact record at least as
    /// new as the acknowledged one; the error names the first that does not.
    pub fn check(&self, file: &[u8]) -> Result<(), String> {
        for (&slot, &acked) in &self.slots {
            let version = slot_version(file, slot)?;
            if version < acked {
                return Err(format!(
                    "slot {slot}: version {version} found, but {acked} was acknowledged"
                ));
            }
        }
        Ok(())
    }
}

/// Takes the power of the store of `ts` (on a lossy disk) and brings it back: cuts the
/// disk's power if no point did yet, kills the daemon with SIGKILL, appends the daemon's
/// log as it was to `logs`, reboots the disk, and clears the dead mount.
pub fn cut_and_reboot(ts: &TestStore, mut mount: Mount<'_>, logs: &Path) -> RebootReport {
    ts.disk().cut(crate::lossy::CutMode::DropAll);
    mount.crash();
    let report = reboot(ts, logs);
    mount.unmount();
    report
}

/// Takes the power of the store of `ts` while nothing has it mounted (a command that
/// opened the store itself has ended) and brings it back.
pub fn reboot(ts: &TestStore, logs: &Path) -> RebootReport {
    ts.disk().cut(crate::lossy::CutMode::DropAll);
    let live_log = ts.disk().backing().join("store/daemon.log");
    if let Ok(text) = std::fs::read(&live_log) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs)
            .expect("open the kept daemon log");
        let _ = writeln!(f, "==== cut (boot {}) ====", ts.disk().boots());
        let _ = f.write_all(&text);
    }
    let report = ts.disk().reboot().expect("reboot the lossy disk");
    let errors = ts.disk().harness_errors();
    assert!(
        errors.is_empty(),
        "the lossy disk's model is wrong: {errors:?}"
    );
    report
}

/// Where a test keeps the daemon logs of its cuts (outside the disk): `root/cuts.log`.
pub fn logs_path(ts: &TestStore) -> PathBuf {
    ts.root.join("cuts.log")
}
