//! What a gateway URL names (the grammar is in the module doc of
//! [`super`]), and finding it in a snapshot's trees.

use crate::dataset::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{self, Entry, EntryKind};

/// A request's path, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/files/blake3:<hex>`
    File(Id),
    /// `/v1/datasets`
    Datasets,
    /// `/v1/datasets/<name>[@<rev>][/<path>]`
    Dataset(DatasetPath),
    /// `/v1/stats`
    Stats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetPath {
    /// The dataset's name and the revision as given (empty: the latest).
    pub name: String,
    pub rev: String,
    /// Path components under the snapshot's root, decoded to bytes.
    pub path: Vec<Vec<u8>>,
}

impl DatasetPath {
    /// `NAME` or `NAME@REV`, as `Datasets::resolve` takes it.
    pub fn spec(&self) -> String {
        if self.rev.is_empty() {
            self.name.clone()
        } else {
            format!("{}@{}", self.name, self.rev)
        }
    }

    /// A revision that names one snapshot for ever (a full id).
    pub fn immutable(&self) -> bool {
        self.rev.len() == 64 && Id::parse(&self.rev).is_ok()
    }
}

const USAGE: &str =
    "this gateway serves /v1/files/blake3:<id>, /v1/datasets/<name>[@<rev>]/<path> and /v1/stats";

/// Parses a request path (without its query).
pub fn route(path: &str) -> Result<Route> {
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| Error::NotFound(format!("{path:?}: {USAGE}")))?;
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    match head {
        "files" => {
            let hex = tail.trim_end_matches('/');
            let hex = hex.strip_prefix("blake3:").unwrap_or(hex);
            Id::parse(hex).map(Route::File).map_err(|_| {
                Error::Invalid(format!(
                    "{path:?}: a file is named /v1/files/blake3:<64 hex digits> (`b3sum FILE` prints it)"
                ))
            })
        }
        "stats" if tail.is_empty() => Ok(Route::Stats),
        "datasets" if tail.trim_matches('/').is_empty() => Ok(Route::Datasets),
        "datasets" => {
            let mut parts = tail.split('/');
            let spec = decode(parts.next().unwrap_or_default())?;
            let spec = String::from_utf8(spec)
                .map_err(|_| Error::Invalid(format!("{path:?}: the dataset name is not UTF-8")))?;
            let (name, rev) = spec.split_once('@').unwrap_or((&spec, ""));
            objects::check_dataset_name(name)
                .map_err(|e| Error::Invalid(format!("{path:?}: {}", e.0)))?;
            let mut comps = Vec::new();
            for p in parts.filter(|p| !p.is_empty()) {
                let c = decode(p)?;
                if c == b"." || c == b".." || c.contains(&0) || c.contains(&b'/') {
                    return Err(Error::Invalid(format!(
                        "{path:?}: path component {:?} is not a name in a snapshot",
                        String::from_utf8_lossy(&c)
                    )));
                }
                comps.push(c);
            }
            Ok(Route::Dataset(DatasetPath {
                name: name.to_string(),
                rev: rev.to_string(),
                path: comps,
            }))
        }
        _ => Err(Error::NotFound(format!("{path:?}: {USAGE}"))),
    }
}

/// Percent-decoding of one path segment (`+` stays a plus).
pub fn decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let v = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Invalid(format!("{s:?} has a malformed %-escape")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encoding of a name for use as one path segment.
pub fn encode(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for &c in name {
        if c.is_ascii_alphanumeric() || b"-._~@".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

/// What a path in a snapshot is.
#[derive(Debug, Clone)]
pub enum Node {
    /// A file, or a symlink (whose content is its target).
    File { entry: Entry },
    /// A directory and its entries (the snapshot's root has no entry).
    Dir { entries: Vec<Entry> },
}

/// Finds `path` in the tree of snapshot `snapshot`.
pub fn lookup(ds: &Datasets, snapshot: &Id, path: &[Vec<u8>]) -> Result<Node> {
    let snap = ds
        .snapshot_object(snapshot)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {snapshot} is not in this store")))?;
    let mut tree = ds.tree(&snap.tree)?;
    for (i, name) in path.iter().enumerate() {
        let shown = || {
            path[..=i]
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        let entry = tree
            .entries
            .iter()
            .find(|e| &e.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} is not in snapshot {snapshot}; `hoard ls` / the parent directory's listing shows what is",
                    shown()
                ))
            })?;
        let last = i + 1 == path.len();
        match entry.kind {
            EntryKind::Dir => tree = ds.tree(&entry.id)?,
            _ if last => return Ok(Node::File { entry }),
            _ => {
                return Err(Error::NotFound(format!(
                    "{} is a file in snapshot {snapshot}, not a directory",
                    shown()
                )))
            }
        }
    }
    Ok(Node::Dir {
        entries: tree.entries,
    })
}

/// A directory's JSON listing: what fsspec's `ls`/`info`/`find` need.
pub fn listing(snapshot: &Id, path: &[Vec<u8>], entries: &[Entry]) -> serde_json::Value {
    let shown: Vec<String> = path
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": String::from_utf8_lossy(&e.name),
                "segment": encode(&e.name),
                "kind": kind_name(e.kind),
                "size": e.size,
                "id": format!("blake3:{}", e.id.hex()),
                "mode": format!("{:o}", e.mode),
            })
        })
        .collect();
    serde_json::json!({
        "kind": "dir",
        "snapshot": snapshot.hex(),
        "path": shown.join("/"),
        "entries": list,
    })
}

pub fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = Id::of(b"x");
        assert_eq!(
            route(&format!("/v1/files/blake3:{}", id.hex())).unwrap(),
            Route::File(id)
        );
        assert_eq!(route("/v1/stats").unwrap(), Route::Stats);
        assert_eq!(route("/v1/datasets/").unwrap(), Route::Datasets);
        let Route::Dataset(d) = route("/v1/datasets/survey@v3/train/part%200.parquet").unwrap()
        else {
            panic!()
        };
        assert_eq!((d.name.as_str(), d.rev.as_str()), ("survey", "v3"));
        assert_eq!(d.path, vec![b"train".to_vec(), b"part 0.parquet".to_vec()]);
        assert_eq!(d.spec(), "survey@v3");
        let Route::Dataset(d) = route("/v1/datasets/survey/").unwrap() else {
            panic!()
        };
        assert!(d.rev.is_empty() && d.path.is_empty());
        assert!(matches!(
            route("/v1/files/blake3:zz"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(route("/v2/x"), Err(Error::NotFound(_))));
        assert!(matches!(
            route("/v1/datasets/a/%2e%2e/b"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            route("/v1/datasets/a/b%2Fc"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            route("/v1/datasets/a/b%zz"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            route("/v1/datasets/bad%20name"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn names_round_trip_through_a_segment() {
        for name in [
            &b"plain.csv"[..],
            b"with space",
            b"100%",
            b"\xff\xfe",
            b"a+b?c#d",
        ] {
            assert_eq!(decode(&encode(name)).unwrap(), name);
        }
    }
}
