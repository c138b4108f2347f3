//! Generation records: the tree of generations (live or frozen, parent, creation time,
//! optional name). Issue-2 stores have one live generation; snapshots add frozen ones.

use crate::error::{Error, Result};
use crate::keys;
use crate::meta::Meta;
use crate::types::{GenerationId, Timestamp};

pub const STATE_LIVE: u8 = 1;

/// Layout: state u8, parent u64 LE (0 = none), created secs i64 + nsecs u32, name bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationRecord {
    pub state: u8,
    pub parent: Option<GenerationId>,
    pub created: Timestamp,
    pub name: Vec<u8>,
}

impl GenerationRecord {
    pub fn new_live(parent: Option<GenerationId>, created: Timestamp) -> Self {
        GenerationRecord {
            state: STATE_LIVE,
            parent,
            created,
            name: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(21 + self.name.len());
        b.push(self.state);
        b.extend_from_slice(&self.parent.map(|g| g.0).unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&self.created.secs.to_le_bytes());
        b.extend_from_slice(&self.created.nsecs.to_le_bytes());
        b.extend_from_slice(&self.name);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < 21 {
            return Err(Error::BadRecord {
                key: "generation".into(),
                detail: format!("{} bytes, need 21", b.len()),
            });
        }
        let parent = u64::from_le_bytes(b[1..9].try_into().unwrap());
        Ok(GenerationRecord {
            state: b[0],
            parent: (parent != 0).then_some(GenerationId(parent)),
            created: Timestamp {
                secs: i64::from_le_bytes(b[9..17].try_into().unwrap()),
                nsecs: u32::from_le_bytes(b[17..21].try_into().unwrap()),
            },
            name: b[21..].to_vec(),
        })
    }
}

pub fn load(meta: &Meta, gen: GenerationId) -> Result<GenerationRecord> {
    let v = meta
        .get_raw(&keys::generation(gen))?
        .ok_or_else(|| Error::BadRecord {
            key: format!("generation {}", gen.0),
            detail: "missing".into(),
        })?;
    GenerationRecord::decode(&v)
}

/// The ancestors of `gen`, nearest first.
pub fn ancestors(meta: &Meta, gen: GenerationId) -> Result<Vec<GenerationId>> {
    let mut out = Vec::new();
    let mut cur = load(meta, gen)?.parent;
    while let Some(g) = cur {
        if out.contains(&g) || g >= gen {
            return Err(Error::BadRecord {
                key: format!("generation {}", g.0),
                detail: "parent chain loops".into(),
            });
        }
        out.push(g);
        cur = load(meta, g)?.parent;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = GenerationRecord {
            state: STATE_LIVE,
            parent: Some(GenerationId(7)),
            created: Timestamp { secs: 5, nsecs: 9 },
            name: b"before-upgrade".to_vec(),
        };
        assert_eq!(GenerationRecord::decode(&r.encode()).unwrap(), r);
        assert!(GenerationRecord::decode(&[1, 2]).is_err());
    }
}
