//! Generation records and the in-memory table of them: the tree of generations (live,
//! frozen or deleted; parent; creation time; snapshot or branch name).
//!
//! A *live* generation is the writable head of a branch (`main` is the first branch); a
//! *frozen* one is a snapshot (read-only, named); a *deleted* one is a snapshot whose
//! name was removed but whose records its descendants may still see (flattening folds
//! them away later). Generation ids grow monotonically and are never reused, so every
//! ancestor of G has an id below G.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::types::{GenerationId, Timestamp};

pub const STATE_LIVE: u8 = 1;
pub const STATE_FROZEN: u8 = 2;
pub const STATE_DELETED: u8 = 3;

/// The branch every store starts with.
pub const MAIN_BRANCH: &str = "main";

/// Layout: state u8, parent u64 LE (0 = none), created secs i64 LE + nsecs u32 LE, then
/// (since snapshots) name length u16 LE, name, branch. A 21-byte record (written before
/// snapshots existed) is the live head of `main`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationRecord {
    pub state: u8,
    pub parent: Option<GenerationId>,
    pub created: Timestamp,
    /// Snapshot name (frozen) or empty.
    pub name: String,
    /// The branch: for a live generation the branch it heads, for a frozen one the
    /// branch it was taken on.
    pub branch: String,
}

impl GenerationRecord {
    pub fn new_live(parent: Option<GenerationId>, created: Timestamp, branch: &str) -> Self {
        GenerationRecord {
            state: STATE_LIVE,
            parent,
            created,
            name: String::new(),
            branch: branch.to_string(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(23 + self.name.len() + self.branch.len());
        b.push(self.state);
        b.extend_from_slice(&self.parent.map(|g| g.0).unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&self.created.secs.to_le_bytes());
        b.extend_from_slice(&self.created.nsecs.to_le_bytes());
        b.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(self.branch.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = |detail: String| Error::BadRecord {
            key: "generation".into(),
            detail,
        };
        if b.len() < 21 {
            return Err(bad(format!("{} bytes, need 21", b.len())));
        }
        let parent = u64::from_le_bytes(b[1..9].try_into().unwrap());
        let (name, branch) = if b.len() == 21 {
            (String::new(), MAIN_BRANCH.to_string())
        } else {
            if b.len() < 23 {
                return Err(bad("truncated name length".into()));
            }
            let n = u16::from_le_bytes(b[21..23].try_into().unwrap()) as usize;
            if b.len() < 23 + n {
                return Err(bad("truncated name".into()));
            }
            let s = |v: &[u8]| {
                String::from_utf8(v.to_vec()).map_err(|_| bad("name is not UTF-8".into()))
            };
            (s(&b[23..23 + n])?, s(&b[23 + n..])?)
        };
        let state = b[0];
        if !(STATE_LIVE..=STATE_DELETED).contains(&state) {
            return Err(bad(format!("unknown state {state}")));
        }
        Ok(GenerationRecord {
            state,
            parent: (parent != 0).then_some(GenerationId(parent)),
            created: Timestamp {
                secs: i64::from_le_bytes(b[9..17].try_into().unwrap()),
                nsecs: u32::from_le_bytes(b[17..21].try_into().unwrap()),
            },
            name,
            branch,
        })
    }
}

/// What reads are made as of: a generation and the set of its ancestors. Cheap to
/// clone (the set is shared).
#[derive(Clone, Debug)]
pub struct View {
    pub gen: GenerationId,
    pub ancestors: Arc<BTreeSet<u64>>,
}

impl View {
    pub fn sees(&self, g: GenerationId) -> bool {
        g == self.gen || self.ancestors.contains(&g.0)
    }

    /// The newest generation this view sees that is older than `g`.
    pub fn nearest_below(&self, g: GenerationId) -> Option<GenerationId> {
        if self.gen < g {
            return Some(self.gen);
        }
        self.ancestors
            .range(..g.0)
            .next_back()
            .map(|a| GenerationId(*a))
    }
}

/// Whether generation `g` (record `r`) still holds a tree someone reads: every one that
/// is not deleted, and a deleted snapshot while files of it are open (`open`: open files
/// per snapshot generation, `State::frozen_open`) — they read on until closed. Flattening
/// removes only the others, and gc's mark and space accounting count exactly these.
pub(crate) fn is_kept(
    g: GenerationId,
    r: &GenerationRecord,
    open: &std::collections::HashMap<GenerationId, u64>,
) -> bool {
    r.state != STATE_DELETED || open.contains_key(&g)
}

/// Every generation of the store, loaded at open and kept in step with each commit.
#[derive(Default)]
pub struct Generations {
    pub all: BTreeMap<GenerationId, GenerationRecord>,
}

impl Generations {
    pub fn get(&self, g: GenerationId) -> Result<&GenerationRecord> {
        self.all.get(&g).ok_or_else(|| Error::BadRecord {
            key: format!("generation {}", g.0),
            detail: "missing".into(),
        })
    }

    /// The ancestors of `gen`, nearest first.
    pub fn ancestors(&self, gen: GenerationId) -> Result<Vec<GenerationId>> {
        let mut out = Vec::new();
        let mut cur = self.get(gen)?.parent;
        while let Some(g) = cur {
            if g >= gen || out.last().is_some_and(|l| g >= *l) {
                return Err(Error::BadRecord {
                    key: format!("generation {}", g.0),
                    detail: "parent chain does not descend".into(),
                });
            }
            out.push(g);
            cur = self.get(g)?.parent;
        }
        Ok(out)
    }

    pub fn view(&self, gen: GenerationId) -> Result<View> {
        Ok(View {
            gen,
            ancestors: Arc::new(self.ancestors(gen)?.into_iter().map(|g| g.0).collect()),
        })
    }

    /// The live generation heading `branch`.
    pub fn head(&self, branch: &str) -> Option<GenerationId> {
        self.all
            .iter()
            .find(|(_, r)| r.state == STATE_LIVE && r.branch == branch)
            .map(|(g, _)| *g)
    }

    /// The frozen generation named `name`.
    pub fn snapshot(&self, name: &str) -> Option<GenerationId> {
        self.all
            .iter()
            .find(|(_, r)| r.state == STATE_FROZEN && r.name == name)
            .map(|(g, _)| *g)
    }

    pub fn heads(&self) -> impl Iterator<Item = (GenerationId, &GenerationRecord)> {
        self.all
            .iter()
            .filter(|(_, r)| r.state == STATE_LIVE)
            .map(|(g, r)| (*g, r))
    }

    pub fn snapshots(&self) -> impl Iterator<Item = (GenerationId, &GenerationRecord)> {
        self.all
            .iter()
            .filter(|(_, r)| r.state == STATE_FROZEN)
            .map(|(g, r)| (*g, r))
    }
}

/// Loads every generation record.
pub fn load_all(meta: &crate::meta::Meta) -> Result<Generations> {
    let mut g = Generations::default();
    for (k, v) in meta.scan_raw(&[crate::keys::GENERATION])? {
        if k.len() != 9 {
            return Err(Error::BadRecord {
                key: format!("{k:?}"),
                detail: "generation key is not 9 bytes".into(),
            });
        }
        let id = GenerationId(u64::from_be_bytes(k[1..9].try_into().unwrap()));
        g.all.insert(id, GenerationRecord::decode(&v)?);
    }
    for id in g.all.keys() {
        g.ancestors(*id)?;
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_legacy_layout() {
        let r = GenerationRecord {
            state: STATE_FROZEN,
            parent: Some(GenerationId(7)),
            created: Timestamp { secs: 5, nsecs: 9 },
            name: "before-upgrade".into(),
            branch: "main".into(),
        };
        assert_eq!(GenerationRecord::decode(&r.encode()).unwrap(), r);
        assert!(GenerationRecord::decode(&[1, 2]).is_err());
        let legacy = &r.encode()[..21];
        let mut l = GenerationRecord::decode(legacy).unwrap();
        assert_eq!((l.name.as_str(), l.branch.as_str()), ("", MAIN_BRANCH));
        l.state = 9;
        let mut e = l.encode();
        e[0] = 9;
        assert!(GenerationRecord::decode(&e).is_err());
    }

    #[test]
    fn ancestors_heads_and_snapshots() {
        let mut g = Generations::default();
        let t = Timestamp::default();
        let rec = |state, parent: Option<u64>, name: &str, branch: &str| GenerationRecord {
            state,
            parent: parent.map(GenerationId),
            created: t,
            name: name.into(),
            branch: branch.into(),
        };
        g.all
            .insert(GenerationId(1), rec(STATE_FROZEN, None, "a", "main"));
        g.all
            .insert(GenerationId(2), rec(STATE_DELETED, Some(1), "", "main"));
        g.all
            .insert(GenerationId(3), rec(STATE_LIVE, Some(2), "", "main"));
        g.all
            .insert(GenerationId(4), rec(STATE_LIVE, Some(1), "", "b"));
        assert_eq!(
            g.ancestors(GenerationId(3)).unwrap(),
            vec![GenerationId(2), GenerationId(1)]
        );
        assert_eq!(g.head("b"), Some(GenerationId(4)));
        assert_eq!(g.snapshot("a"), Some(GenerationId(1)));
        assert_eq!(g.snapshot("missing"), None);
        let v = g.view(GenerationId(4)).unwrap();
        assert!(v.sees(GenerationId(1)) && !v.sees(GenerationId(2)));
    }
}
