//! Snapshot and maintenance operations cut mid-flight by a power cut: snapshot create,
//! delete, rollback, clone, gc, flatten and defrag, each run with the power cut at a
//! random named point of the lossy disk under the store (counted from the command's
//! start; if the command ends first, the cut comes right after it returned). After the
//! reboot and a remount: the operation is done or not at all (never half), one that
//! returned is done, every tree reads back what it held, `strata verify` is clean, and
//! the store mounts without repair. The model of the disk: docs/power-cut-harness.md.
//!
//! `STRATA_POWER_CUTS` sets the number of cuts of each operation (default 3),
//! `STRATA_POWER_SEED` the seed (printed).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use strata_tests::cli::{env_u64, ok, s, snapshot_names};
use strata_tests::data::{random_bytes, write_synced, Rng};
use strata_tests::lossy::{Action, CutMode, Op, Point};
use strata_tests::power::{cut_and_reboot, logs_path, reboot};
use strata_tests::trees::tree_sums;
use strata_tests::{strata, TestStore};

type Sums = BTreeMap<String, String>;

struct Run {
    ts: TestStore,
    rng: std::cell::RefCell<Rng>,
    /// Operations of the disk the command took in its last run, per kind (to place the
    /// next cut inside it).
    seen: std::cell::RefCell<Vec<(Op, u64)>>,
    seed: u64,
    logs: std::path::PathBuf,
    cuts: u64,
}

impl Run {
    fn new(what: &str) -> Run {
        let seed = env_u64("STRATA_POWER_SEED").unwrap_or_else(Rng::seed_from_time);
        let cuts = env_u64("STRATA_POWER_CUTS").unwrap_or(3);
        eprintln!("{what} cut mid-flight: {cuts} cuts, STRATA_POWER_SEED={seed}");
        let ts = TestStore::on_lossy_disk();
        let logs = logs_path(&ts);
        Run {
            ts,
            rng: std::cell::RefCell::new(Rng::new(seed)),
            seen: Default::default(),
            seed,
            logs,
            cuts,
        }
    }

    fn store(&self) -> &str {
        s(&self.ts.store)
    }

    /// Arms a cut at a random point and runs `strata ARGS`; cuts right after it if the
    /// point was not reached. The point is the Nth operation of a kind the command made
    /// in its previous run, N at random up to how many it made (the first run is cut
    /// only after it returned). Returns whether the command succeeded, and what was cut.
    fn cut_during(&self, args: &[&str]) -> (bool, String) {
        let mut rng = self.rng.borrow_mut();
        let mode = if rng.range(0, 2) == 0 {
            CutMode::DropAll
        } else {
            CutMode::Random(rng.next_u64())
        };
        let seen = self.seen.borrow().clone();
        let point = if seen.is_empty() {
            // Not reached: this run learns what the command does; the cut follows it.
            Point::new(Op::Fsync, u64::MAX)
        } else {
            let (op, n) = seen[rng.range(0, seen.len() as u64) as usize];
            Point::new(op, rng.range(1, n + 1))
        };
        drop(rng);
        const KINDS: [Op; 6] = [
            Op::Write,
            Op::Fsync,
            Op::Rename,
            Op::Create,
            Op::Remove,
            Op::Truncate,
        ];
        let before: Vec<u64> = KINDS.iter().map(|op| self.ts.disk().count(*op)).collect();
        self.ts.disk().arm(point.clone(), Action::Cut(mode));
        let run = strata(args);
        let hit = self.ts.disk().cut_mode().is_some();
        // The one panic left: sled 0.34.7's closing flush (`Log::drop`) unwraps its
        // fsync; when the power goes while a command closes the store, it panics there,
        // after everything strata had to make durable was (docs/metadata.md).
        let sled_close = hit && run.stderr.contains("sled-0.34.7/src/pagecache/logger.rs");
        assert!(
            !run.stderr.contains("panicked") || sled_close,
            "`{}` panicked on the failing disk:\n{}",
            args.join(" "),
            run.stderr
        );
        if !hit {
            let made: Vec<(Op, u64)> = KINDS
                .iter()
                .zip(before)
                .map(|(op, b)| (*op, self.ts.disk().count(*op) - b))
                .filter(|(_, n)| *n > 0)
                .collect();
            let mut seen = self.seen.borrow_mut();
            for (op, n) in made {
                match seen.iter_mut().find(|(o, _)| *o == op) {
                    Some(entry) => entry.1 = entry.1.max(n),
                    None => seen.push((op, n)),
                }
            }
        }
        self.ts.disk().cut(mode);
        let what = format!(
            "{mode:?} {} {point:?}; `{}` {}",
            if hit { "at" } else { "after (not reached)" },
            args.join(" "),
            if run.success() {
                "returned".to_string()
            } else {
                format!("failed: {}", run.stderr.trim())
            }
        );
        (run.success(), what)
    }

    /// After a cut: verify clean, then a mount works.
    fn after_cut(&self, round: u64, what: &str) {
        eprintln!("round {round}: {what}");
        let verify = self.ts.verify();
        assert!(
            verify.success(),
            "round {round} (seed {}): {what}: strata verify after the cut:\n{}{}\nlogs: {}",
            self.seed,
            verify.stdout,
            verify.stderr,
            self.logs.display()
        );
    }
}

/// The checksums of the live tree (without `.snapshots`) and of snapshot `name`.
fn live_sums(mnt: &Path) -> Sums {
    let mut sums = tree_sums(mnt);
    sums.retain(|k, _| !k.starts_with(".snapshots"));
    sums
}

/// Writes a few files of the round (some rewritten in place) and fsyncs them.
fn churn(mnt: &Path, rng: &mut Rng, round: u64) {
    fs::create_dir_all(mnt.join("d")).unwrap();
    write_synced(
        &mnt.join(format!("d/new-{round}")),
        &random_bytes(rng.next_u64(), 70_000),
    )
    .unwrap();
    let big = mnt.join("big");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&big)
        .unwrap();
    for _ in 0..8 {
        let at = rng.range(0, 64) * 32768;
        f.write_all_at(&random_bytes(rng.next_u64(), 32768), at)
            .unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn snapshot_create_is_whole_or_absent() {
    let r = Run::new("snapshot create");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        churn(&m.path(""), &mut r.rng.borrow_mut(), round);
        // Not fsynced: the snapshot must still hold it (it flushes before it freezes).
        fs::write(m.path("unsynced"), format!("round {round}")).unwrap();
        let expected = live_sums(&m.path(""));
        let name = format!("s{round}");
        let (returned, what) = r.cut_during(&["snapshot", "create", r.store(), &name]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        let m = r.ts.mount();
        let exists = snapshot_names(r.store()).contains(&name);
        assert!(
            exists || !returned,
            "round {round}: {what}: the snapshot is missing"
        );
        if exists {
            let got = tree_sums(&m.path(format!(".snapshots/{name}")));
            assert_eq!(
                got, expected,
                "round {round}: {what}: snapshot {name} is not whole"
            );
        }
        m.unmount();
    }
}

#[test]
fn snapshot_delete_is_done_or_not() {
    let r = Run::new("snapshot delete");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        churn(&m.path(""), &mut r.rng.borrow_mut(), round);
        let name = format!("s{round}");
        ok(&["snapshot", "create", r.store(), &name]);
        let expected = tree_sums(&m.path(format!(".snapshots/{name}")));
        churn(&m.path(""), &mut r.rng.borrow_mut(), round + 100);
        let (returned, what) = r.cut_during(&["snapshot", "delete", r.store(), &name]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        let m = r.ts.mount();
        let exists = snapshot_names(r.store()).contains(&name);
        assert!(
            !exists || !returned,
            "round {round}: {what}: the snapshot is still there"
        );
        if exists {
            let got = tree_sums(&m.path(format!(".snapshots/{name}")));
            assert_eq!(
                got, expected,
                "round {round}: {what}: snapshot {name} changed"
            );
            ok(&["snapshot", "delete", r.store(), &name]);
        }
        m.unmount();
    }
}

#[test]
fn rollback_is_done_or_not() {
    let r = Run::new("rollback");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        churn(&m.path(""), &mut r.rng.borrow_mut(), round);
        let name = format!("r{round}");
        ok(&["snapshot", "create", r.store(), &name]);
        let before = live_sums(&m.path(""));
        churn(&m.path(""), &mut r.rng.borrow_mut(), round + 100);
        let after = live_sums(&m.path(""));
        let saved: Vec<String> = snapshot_names(r.store());
        let (returned, what) = r.cut_during(&["rollback", r.store(), &name]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        let m = r.ts.mount();
        let live = live_sums(&m.path(""));
        let done = live == before;
        assert!(
            done || live == after,
            "round {round}: {what}: the live tree is neither the snapshot nor the state before"
        );
        assert!(
            done || !returned,
            "round {round}: {what}: returned but not done"
        );
        let names = snapshot_names(r.store());
        if done {
            let pre: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with("pre-rollback-") && !saved.contains(n))
                .collect();
            assert_eq!(pre.len(), 1, "round {round}: {what}: {names:?}");
            let kept = tree_sums(&m.path(format!(".snapshots/{}", pre[0])));
            assert_eq!(
                kept, after,
                "round {round}: {what}: the state before is not kept"
            );
        }
        m.unmount();
    }
}

#[test]
fn clone_is_done_or_not() {
    let r = Run::new("clone");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        churn(&m.path(""), &mut r.rng.borrow_mut(), round);
        let name = format!("c{round}");
        ok(&["snapshot", "create", r.store(), &name]);
        let expected = tree_sums(&m.path(format!(".snapshots/{name}")));
        let branch = format!("b{round}");
        let (returned, what) = r.cut_during(&["clone", r.store(), &name, &branch]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        let list = ok(&["branch", "list", r.store()]);
        let exists = list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&branch));
        assert!(
            exists || !returned,
            "round {round}: {what}: branch missing:\n{list}"
        );
        if exists {
            let mnt = r.ts.root.join(&branch);
            fs::create_dir_all(&mnt).unwrap();
            let _guard = strata_tests::cli::UnmountOnDrop(mnt.clone());
            ok(&["mount", "--branch", &branch, r.store(), s(&mnt)]);
            let got = live_sums(&mnt);
            ok(&["umount", s(&mnt)]);
            assert_eq!(
                got, expected,
                "round {round}: {what}: branch {branch} differs"
            );
        }
    }
}

/// Every tree of the store (live and snapshots), read through a mount.
fn every_tree(ts: &TestStore) -> BTreeMap<String, Sums> {
    let m = ts.mount();
    let mut out = BTreeMap::new();
    out.insert("(live)".to_string(), live_sums(&m.path("")));
    for name in snapshot_names(s(&ts.store)) {
        out.insert(
            name.clone(),
            tree_sums(&m.path(format!(".snapshots/{name}"))),
        );
    }
    m.unmount();
    out
}

#[test]
fn gc_loses_nothing() {
    let r = Run::new("gc");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        churn(&m.path(""), &mut r.rng.borrow_mut(), round);
        let doomed = format!("doomed{round}");
        ok(&["snapshot", "create", r.store(), &doomed]);
        churn(&m.path(""), &mut r.rng.borrow_mut(), round + 100);
        ok(&["snapshot", "create", r.store(), &format!("kept{round}")]);
        churn(&m.path(""), &mut r.rng.borrow_mut(), round + 200);
        ok(&["snapshot", "delete", r.store(), &doomed]);
        ok(&["flatten", r.store()]);
        m.unmount();
        let expected = every_tree(&r.ts);
        let m = r.ts.mount();
        let (_, what) = r.cut_during(&["gc", r.store()]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        assert_eq!(every_tree(&r.ts), expected, "round {round}: {what}");
    }
}

#[test]
fn flatten_is_resumed_and_loses_nothing() {
    let r = Run::new("flatten");
    for round in 0..r.cuts {
        let m = r.ts.mount();
        let mut names = Vec::new();
        for i in 0..4 {
            churn(&m.path(""), &mut r.rng.borrow_mut(), round * 10 + i);
            let name = format!("f{round}-{i}");
            ok(&["snapshot", "create", r.store(), &name]);
            names.push(name);
        }
        m.unmount();
        // Unmounted, deleting only marks; the flatten below (the command, opening the
        // store itself) folds them away, and the cut hits it.
        for doomed in [&names[1], &names[2]] {
            ok(&["snapshot", "delete", r.store(), doomed]);
        }
        let expected = every_tree(&r.ts);
        let (_, what) = r.cut_during(&["flatten", r.store()]);
        reboot(&r.ts, &r.logs);
        r.after_cut(round, &what);
        // A mount finishes an interrupted flatten; the trees read back the same.
        assert_eq!(every_tree(&r.ts), expected, "round {round}: {what}");
        ok(&["flatten", r.store()]);
        assert_eq!(
            every_tree(&r.ts),
            expected,
            "round {round}: {what}: after flatten"
        );
        r.ts.assert_verify_clean();
    }
}

#[test]
fn defrag_loses_nothing() {
    let r = Run::new("defrag");
    r.ts.set_auto_defrag(false, false);
    for round in 0..r.cuts {
        let m = r.ts.mount();
        // A file scattered by rewrites over several snapshots.
        let f = m.path(format!("scattered-{round}"));
        write_synced(&f, &random_bytes(r.rng.borrow_mut().next_u64(), 64 * 32768)).unwrap();
        for i in 0..4 {
            let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
            for _ in 0..12 {
                let at = r.rng.borrow_mut().range(0, 64) * 32768;
                file.write_all_at(&random_bytes(r.rng.borrow_mut().next_u64(), 32768), at)
                    .unwrap();
            }
            file.sync_all().unwrap();
            ok(&["snapshot", "create", r.store(), &format!("d{round}-{i}")]);
        }
        m.unmount();
        let expected = every_tree(&r.ts);
        let m = r.ts.mount();
        let (_, what) = r.cut_during(&["defrag", r.store()]);
        cut_and_reboot(&r.ts, m, &r.logs);
        r.after_cut(round, &what);
        assert_eq!(every_tree(&r.ts), expected, "round {round}: {what}");
    }
}
