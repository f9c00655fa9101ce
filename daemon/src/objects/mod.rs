//! Trees, snapshots and refs: the objects that record versions of a
//! dataset. Each format lives in its own file; this module holds what they
//! share (the object kinds, name rules, and the check against an id that
//! every object read from disk or from a peer goes through).
//!
//! Floor 1 (formats): may import `id` only.

pub mod snapshot;
pub mod tree;

pub use snapshot::Snapshot;
pub use tree::{Entry, EntryKind, Tree};

use crate::id::Id;

/// Why an object, name or ref was refused. The message names the offending
/// part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ObjectError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Tree = 1,
    Snapshot = 2,
}

impl ObjectKind {
    pub fn from_u8(b: u8) -> Option<ObjectKind> {
        match b {
            1 => Some(ObjectKind::Tree),
            2 => Some(ObjectKind::Snapshot),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Tree => "tree",
            ObjectKind::Snapshot => "snapshot",
        }
    }
}

/// A decoded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Tree(Tree),
    Snapshot(Snapshot),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Tree(_) => ObjectKind::Tree,
            Object::Snapshot(_) => ObjectKind::Snapshot,
        }
    }
}

/// Decodes `bytes` as an object of `kind` that must have id `id`.
pub fn decode_checked(kind: ObjectKind, id: &Id, bytes: &[u8]) -> Result<Object, ObjectError> {
    let actual = Id::of(bytes);
    if actual != *id {
        return Err(ObjectError(format!(
            "{} {id} does not match its content (which hashes to {actual})",
            kind.as_str()
        )));
    }
    let o = match kind {
        ObjectKind::Tree => Object::Tree(Tree::decode(bytes)?),
        ObjectKind::Snapshot => Object::Snapshot(Snapshot::decode(bytes)?),
    };
    Ok(o)
}

/// The longest target a symbolic link may have (PATH_MAX less its NUL): a
/// link entry recording more is refused before its content is read.
pub const MAX_LINK_TARGET: u64 = 4095;

/// Dataset and tag names: 1..=64 of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit (so they are safe as path, ref and URL components).
pub fn check_dataset_name(name: &str) -> Result<(), ObjectError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ObjectError(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        )))
    }
}

/// The ref that holds a dataset's latest snapshot.
pub fn dataset_ref(dataset: &str) -> String {
    format!("datasets/{dataset}")
}

/// The ref of a tag.
pub fn tag_ref(dataset: &str, tag: &str) -> String {
    format!("tags/{dataset}/{tag}")
}

/// Refs are `datasets/NAME` or `tags/NAME/TAG`.
pub fn check_ref_name(r: &str) -> Result<(), ObjectError> {
    let parts: Vec<&str> = r.split('/').collect();
    let ok = match parts.as_slice() {
        ["datasets", d] => check_dataset_name(d).is_ok(),
        ["tags", d, t] => check_dataset_name(d).is_ok() && check_dataset_name(t).is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ObjectError(format!(
            "{r:?} is not a ref name: refs are `datasets/NAME` or `tags/NAME/TAG`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["survey", "a", "img-net_v2.1", "9"] {
            assert!(check_dataset_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(check_dataset_name(bad).is_err(), "{bad}");
        }
        assert!(check_ref_name("datasets/survey").is_ok());
        assert!(check_ref_name("tags/survey/v1").is_ok());
        for bad in [
            "datasets/../x",
            "survey",
            "tags/a",
            "tags/a/b/c",
            "datasets/",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn objects_are_checked_against_their_id() {
        let t = Tree::default();
        let enc = t.encode();
        assert!(decode_checked(ObjectKind::Tree, &Id::of(&enc), &enc).is_ok());
        assert!(decode_checked(ObjectKind::Tree, &Id([0; 32]), &enc).is_err());
        assert!(decode_checked(ObjectKind::Snapshot, &Id::of(&enc), &enc).is_err());
    }
}
