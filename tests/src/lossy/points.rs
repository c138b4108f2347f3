//! Named points of the lossy disk: "the Nth write of a file whose path contains
//! `packs/`", and what happens there — a power cut, or an I/O error.

/// Operations the disk counts (and can fail or cut at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write or fallocate of file data.
    Write,
    /// A truncation (setattr of the size, open with O_TRUNC).
    Truncate,
    /// fsync or fdatasync of a file, fsync of a directory.
    Fsync,
    /// A rename.
    Rename,
    /// create, mknod, mkdir, symlink, link.
    Create,
    /// unlink, rmdir.
    Remove,
    /// A read of file data.
    Read,
}

pub const OPS: [Op; 7] = [
    Op::Write,
    Op::Truncate,
    Op::Fsync,
    Op::Rename,
    Op::Create,
    Op::Remove,
    Op::Read,
];

/// How a cut treats what was not durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Everything not fsynced is lost.
    DropAll,
    /// A random part of it reached the disk (seeded): each unsynced page of file data
    /// and each file size independently; per directory, a prefix of its unsynced
    /// operations (a disk writes a directory's operations in order).
    Random(u64),
}

/// What happens at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The power fails before the operation: it is not applied, it and every later
    /// request fail with EIO, and a `reboot` drops what was not durable.
    Cut(CutMode),
    /// The operation fails with `errno` (and is not applied; a failed fsync loses the
    /// pages it should have written), `times` times in a row (None: every matching
    /// operation from then on, until disarmed).
    Fail { errno: i32, times: Option<u64> },
}

/// Where an action fires: the `nth` (1-based) operation `op` counted from the moment the
/// point was armed, on a path (relative to the disk's root) containing `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub op: Op,
    pub path: Option<String>,
    pub nth: u64,
}

impl Point {
    pub fn new(op: Op, nth: u64) -> Point {
        Point {
            op,
            path: None,
            nth,
        }
    }

    /// Only operations on paths containing `fragment` count.
    pub fn on(mut self, fragment: &str) -> Point {
        self.path = Some(fragment.to_string());
        self
    }

    fn matches(&self, op: Op, path: &str) -> bool {
        self.op == op && self.path.as_deref().is_none_or(|p| path.contains(p))
    }
}

struct Armed {
    point: Point,
    action: Action,
    seen: u64,
    fired: u64,
}

/// What the disk does with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// The power is (now) off: EIO, nothing applied.
    Dead,
    /// An injected error.
    Fail(i32),
}

#[derive(Default)]
pub struct Points {
    armed: Vec<Armed>,
    /// Operations seen since the disk was mounted, per kind.
    pub counts: std::collections::HashMap<Op, u64>,
    /// The cut that took the power, once one did.
    pub cut: Option<CutMode>,
    /// Injected errors so far: (op, path, errno).
    pub injected: Vec<(Op, String, i32)>,
}

impl Points {
    pub fn arm(&mut self, point: Point, action: Action) {
        self.armed.push(Armed {
            point,
            action,
            seen: 0,
            fired: 0,
        });
    }

    pub fn disarm_all(&mut self) {
        self.armed.clear();
    }

    /// Counts `op` on `path` and says what to do with it.
    pub fn check(&mut self, op: Op, path: &str) -> Verdict {
        if self.cut.is_some() {
            return Verdict::Dead;
        }
        *self.counts.entry(op).or_default() += 1;
        let mut verdict = Verdict::Go;
        for a in &mut self.armed {
            if !a.point.matches(op, path) {
                continue;
            }
            a.seen += 1;
            if a.seen < a.point.nth || verdict != Verdict::Go {
                continue;
            }
            match a.action {
                Action::Cut(mode) if a.fired == 0 => {
                    a.fired = 1;
                    self.cut = Some(mode);
                    verdict = Verdict::Dead;
                }
                Action::Fail { errno, times } if times.is_none_or(|t| a.fired < t) => {
                    a.fired += 1;
                    verdict = Verdict::Fail(errno);
                }
                _ => {}
            }
        }
        if let Verdict::Fail(errno) = verdict {
            self.injected.push((op, path.to_string(), errno));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_fire_at_the_nth_matching_operation() {
        let mut p = Points::default();
        p.arm(
            Point::new(Op::Fsync, 2).on("packs/"),
            Action::Fail {
                errno: libc::EIO,
                times: Some(1),
            },
        );
        p.arm(Point::new(Op::Write, 3), Action::Cut(CutMode::DropAll));
        assert_eq!(p.check(Op::Fsync, "store/packs/0.pack"), Verdict::Go);
        assert_eq!(p.check(Op::Fsync, "store/meta/db"), Verdict::Go);
        assert_eq!(
            p.check(Op::Fsync, "store/packs/0.pack"),
            Verdict::Fail(libc::EIO)
        );
        assert_eq!(p.check(Op::Fsync, "store/packs/0.pack"), Verdict::Go);
        assert_eq!(p.check(Op::Write, "a"), Verdict::Go);
        assert_eq!(p.check(Op::Write, "a"), Verdict::Go);
        assert_eq!(p.check(Op::Write, "a"), Verdict::Dead);
        assert_eq!(p.cut, Some(CutMode::DropAll));
        assert_eq!(p.check(Op::Read, "a"), Verdict::Dead);
        assert_eq!(p.counts[&Op::Write], 3);
        assert_eq!(p.injected.len(), 1);
    }

    #[test]
    fn a_sticky_failure_fails_every_later_match() {
        let mut p = Points::default();
        p.arm(
            Point::new(Op::Write, 1),
            Action::Fail {
                errno: libc::ENOSPC,
                times: None,
            },
        );
        for _ in 0..5 {
            assert_eq!(p.check(Op::Write, "x"), Verdict::Fail(libc::ENOSPC));
        }
        p.disarm_all();
        assert_eq!(p.check(Op::Write, "x"), Verdict::Go);
    }
}
