//! Datasets across daemons: the checks a receiver applies to trees and
//! snapshots from a peer, `clone` (one snapshot, the selected paths) and
//! `push` (a dataset's new snapshots, then its ref by compare-and-swap).
//! File content moves through [`crate::sync`].

use super::checkout::Selection;
use super::state::Node;
use super::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{self, EntryKind, Object, ObjectKind, Snapshot, Tree};
use crate::store::Store;
use crate::sync::{self, PeerAddr, Progress, Summary};
use hoard_proto::v1 as pb;
use std::collections::{HashMap, HashSet, VecDeque};

/// Objects per message stay under this many bytes (plus one object).
pub const OBJECT_BATCH_BYTES: usize = 1 << 20;

fn kind_of(k: u32) -> Option<ObjectKind> {
    u8::try_from(k).ok().and_then(ObjectKind::from_u8)
}

/// A stored tree or one from `overlay`.
fn tree_in(store: &Store, overlay: &HashMap<Id, Tree>, id: &Id) -> Result<Option<Tree>> {
    if let Some(t) = overlay.get(id) {
        return Ok(Some(t.clone()));
    }
    match store.object(id)? {
        Some(Object::Tree(t)) => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// Files and links below a tree, counted through `overlay` and the store.
fn count_files(store: &Store, overlay: &HashMap<Id, Tree>, id: &Id) -> Result<u64> {
    let t = tree_in(store, overlay, id)?
        .ok_or_else(|| Error::Refused(format!("tree {id} is missing")))?;
    let mut n = 0;
    for e in &t.entries {
        n += match e.kind {
            EntryKind::Dir => count_files(store, overlay, &e.id)?,
            _ => 1,
        };
    }
    Ok(n)
}

/// Checks objects received from `peer` and stores them. Each must match
/// its id and be well formed; a tree's subtrees must be stored or sent
/// alongside, with the sizes it records for them; its files' sizes must
/// match the manifests this store holds; a snapshot's tree and parents
/// must be there (unless `need_parents` is false: a clone fetches one
/// version, not its history) and its counts must match its tree. Nothing of
/// a batch is stored unless all of it passes. Returns (stored, already had).
pub fn accept_objects(
    store: &Store,
    objs: Vec<pb::Object>,
    peer: &str,
    need_parents: bool,
) -> Result<(u64, u64)> {
    let refuse = |what: String| Error::Refused(format!("{peer} sent {what}; refused"));
    let mut trees: HashMap<Id, Tree> = HashMap::new();
    let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
    let mut raw: Vec<(ObjectKind, Id, Vec<u8>)> = Vec::new();
    for o in objs {
        let id = Id::from_slice(&o.id)
            .ok_or_else(|| refuse("an object id that is not 32 bytes".into()))?;
        let kind = kind_of(o.kind)
            .ok_or_else(|| refuse(format!("object {id} of unknown kind {}", o.kind)))?;
        match objects::decode_checked(kind, &id, &o.data) {
            Ok(Object::Tree(t)) => {
                trees.insert(id, t);
            }
            Ok(Object::Snapshot(s)) => snaps.push((id, s)),
            Err(e) => return Err(refuse(format!("a bad {}: {e}", kind.as_str()))),
        }
        raw.push((kind, id, o.data));
    }
    for (id, t) in &trees {
        for e in &t.entries {
            match e.kind {
                EntryKind::Dir => {
                    let sub = tree_in(store, &trees, &e.id)?.ok_or_else(|| {
                        refuse(format!(
                            "tree {id} naming subtree {} ({:?}), which it did not send first",
                            e.id,
                            e.name_lossy()
                        ))
                    })?;
                    if sub.total_size() != e.size {
                        return Err(refuse(format!(
                            "tree {id} whose directory {:?} records {} bytes but holds {}",
                            e.name_lossy(),
                            e.size,
                            sub.total_size()
                        )));
                    }
                }
                EntryKind::File | EntryKind::Symlink => {
                    if let Some(size) = store.file_size(&e.id)? {
                        if size != e.size {
                            return Err(refuse(format!(
                                "tree {id} whose file {:?} records {} bytes, but file {} has {size}",
                                e.name_lossy(),
                                e.size,
                                e.id
                            )));
                        }
                    }
                }
            }
        }
    }
    let sent: HashSet<Id> = snaps.iter().map(|s| s.0).collect();
    for (id, s) in &snaps {
        let t = tree_in(store, &trees, &s.tree)?.ok_or_else(|| {
            refuse(format!(
                "snapshot {id} whose tree {} it did not send",
                s.tree
            ))
        })?;
        if t.total_size() != s.size || count_files(store, &trees, &s.tree)? != s.files {
            return Err(refuse(format!(
                "snapshot {id} whose size or file count disagrees with its tree"
            )));
        }
        let present = store.objects_present(&s.parents)?;
        for (p, here) in s.parents.iter().zip(present) {
            if need_parents && !here && !sent.contains(p) {
                return Err(refuse(format!(
                    "snapshot {id} whose parent {p} is in neither store"
                )));
            }
        }
    }
    let ids: Vec<Id> = raw.iter().map(|r| r.1).collect();
    let had = store.objects_present(&ids)?.iter().filter(|p| **p).count() as u64;
    store.put_objects(&raw)?;
    for (id, s) in &snaps {
        note_lineage(store, id, s)?;
    }
    Ok((raw.len() as u64 - had, had))
}

/// Records the reverse lineage links of a stored snapshot.
pub fn note_lineage(store: &Store, id: &Id, snap: &Snapshot) -> Result<()> {
    for d in &snap.derived {
        store.put_local(&format!("derived/{}/{}", d.hex(), id.hex()), Some(b""))?;
    }
    Ok(())
}

/// Serves stored objects in batches of about [`OBJECT_BATCH_BYTES`].
pub fn object_batches(
    store: &Store,
    ids: &[Id],
    send: &mut dyn FnMut(pb::ObjectBatch) -> bool,
) -> Result<()> {
    let mut batch = pb::ObjectBatch::default();
    let mut bytes = 0;
    for id in ids {
        if let Some((kind, data)) = store.object_bytes(id)? {
            bytes += data.len();
            batch.objects.push(pb::Object {
                id: id.0.to_vec(),
                kind: kind as u32,
                data,
            });
            if bytes >= OBJECT_BATCH_BYTES && !send(std::mem::take(&mut batch)) {
                return Ok(());
            }
            if bytes >= OBJECT_BATCH_BYTES {
                bytes = 0;
            }
        }
    }
    if !batch.objects.is_empty() {
        send(batch);
    }
    Ok(())
}

/// Moves a ref on this store for a peer: compare-and-swap, and a
/// fast-forward unless forced.
pub fn update_ref(ds: &Datasets, req: &pb::UpdateRefRequest) -> Result<pb::UpdateRefReply> {
    objects::check_ref_name(&req.name).map_err(|e| Error::Config(e.0))?;
    let opt = |b: &[u8]| -> Result<Option<Id>> {
        if b.is_empty() {
            Ok(None)
        } else {
            Id::from_slice(b)
                .map(Some)
                .ok_or_else(|| Error::Config("a ref id must be 32 bytes".into()))
        }
    };
    let (old, new) = (opt(&req.old)?, opt(&req.new)?);
    let current = ds.store.get_ref(&req.name)?;
    let reply = |ok: bool, current: Option<Id>, reason: String| pb::UpdateRefReply {
        ok,
        current: current.map(|c| c.0.to_vec()).unwrap_or_default(),
        reason,
    };
    if let Some(n) = new {
        if ds.snapshot_object(&n)?.is_none() {
            return Ok(reply(
                false,
                current,
                format!("snapshot {n} is not here; send it first"),
            ));
        }
    }
    if current != old {
        return Ok(reply(
            false,
            current,
            format!(
                "{} moved (it is at {}); fetch, then retry",
                req.name,
                current.map(|c| c.hex()).unwrap_or_else(|| "nothing".into())
            ),
        ));
    }
    if let (Some(o), Some(n), false) = (old, new, req.force) {
        if !ds.is_ancestor(&o, &n)? {
            return Ok(reply(
                false,
                current,
                format!(
                    "{} is at {o}, which is not in the history of {n}: not a fast-forward (use --force to replace it)",
                    req.name
                ),
            ));
        }
    }
    match ds.store.cas_ref(&req.name, old, new)? {
        Ok(()) => Ok(reply(true, new, String::new())),
        Err(now) => Ok(reply(
            false,
            now,
            format!("{} moved meanwhile; retry", req.name),
        )),
    }
}

// ---- this daemon's side --------------------------------------------------------

/// Everything reachable from `roots` through trees, children before parents;
/// trees in `stop` (and below them) are left out.
fn trees_post_order(store: &Store, roots: &[Id], stop: &HashSet<Id>) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    let mut seen: HashSet<Id> = stop.clone();
    fn visit(store: &Store, id: Id, seen: &mut HashSet<Id>, out: &mut Vec<Id>) -> Result<()> {
        if !seen.insert(id) {
            return Ok(());
        }
        let t = match store.object(&id)? {
            Some(Object::Tree(t)) => t,
            _ => return Err(Error::NotFound(format!("tree {id} is not in this store"))),
        };
        for e in &t.entries {
            if e.kind == EntryKind::Dir {
                visit(store, e.id, seen, out)?;
            }
        }
        out.push(id);
        Ok(())
    }
    for r in roots {
        visit(store, *r, &mut seen, &mut out)?;
    }
    Ok(out)
}

fn all_trees(store: &Store, root: &Id) -> Result<HashSet<Id>> {
    Ok(trees_post_order(store, &[*root], &HashSet::new())?
        .into_iter()
        .collect())
}

fn files_of(store: &Store, trees: &[Id], out: &mut Vec<Id>) -> Result<()> {
    for t in trees {
        if let Some(Object::Tree(t)) = store.object(t)? {
            out.extend(
                t.entries
                    .iter()
                    .filter(|e| e.kind != EntryKind::Dir)
                    .map(|e| e.id),
            );
        }
    }
    Ok(())
}

fn remote_ref(
    rt: &tokio::runtime::Runtime,
    peer: &mut sync::Client,
    url: &str,
    name: &str,
) -> Result<Option<Id>> {
    let refs = rt
        .block_on(peer.list_refs(pb::ListRefsRequest {
            prefix: name.to_string(),
        }))
        .map_err(|e| sync::net(url, "listing refs", e))?
        .into_inner()
        .refs;
    Ok(refs
        .into_iter()
        .find(|r| r.name == name)
        .and_then(|r| Id::from_slice(&r.id)))
}

/// Fetches objects by id, checking each is one that was asked for and
/// matches its id.
fn get_objects(
    rt: &tokio::runtime::Runtime,
    peer: &mut sync::Client,
    url: &str,
    ids: &[Id],
) -> Result<HashMap<Id, (ObjectKind, Vec<u8>)>> {
    let mut out = HashMap::new();
    for batch in ids.chunks(hoard_proto::PEER_BATCH) {
        let asked: HashSet<Id> = batch.iter().copied().collect();
        let mut s = rt
            .block_on(peer.get_objects(pb::IdList {
                ids: batch.iter().map(|i| i.0.to_vec()).collect(),
            }))
            .map_err(|e| sync::net(url, "sending trees and snapshots", e))?
            .into_inner();
        while let Some(b) = rt
            .block_on(s.message())
            .map_err(|e| sync::net(url, "sending trees and snapshots", e))?
        {
            for o in b.objects {
                let id = Id::from_slice(&o.id)
                    .filter(|i| asked.contains(i))
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "{url} sent an object that was not asked for; refused"
                        ))
                    })?;
                let kind = kind_of(o.kind).ok_or_else(|| {
                    Error::Refused(format!("{url} sent object {id} of unknown kind; refused"))
                })?;
                if Id::of(&o.data) != id {
                    return Err(Error::Refused(format!(
                        "{url} sent {} {id} whose content does not match its id; refused",
                        kind.as_str()
                    )));
                }
                out.insert(id, (kind, o.data));
            }
        }
    }
    Ok(out)
}

/// Resolves a remote dataset revision: empty (latest), a tag, a full id,
/// or an id prefix of at least 4 hex digits in the latest's history.
fn resolve_remote(
    rt: &tokio::runtime::Runtime,
    peer: &mut sync::Client,
    url: &str,
    dataset: &str,
    rev: &str,
) -> Result<Id> {
    let head = remote_ref(rt, peer, url, &objects::dataset_ref(dataset))?;
    if rev.is_empty() {
        return head.ok_or_else(|| {
            Error::NotFound(format!(
                "{url} has no dataset {dataset} (no ref datasets/{dataset})"
            ))
        });
    }
    if objects::check_dataset_name(rev).is_ok() {
        if let Some(id) = remote_ref(rt, peer, url, &objects::tag_ref(dataset, rev))? {
            return Ok(id);
        }
    }
    if rev.len() == 64 {
        if let Ok(id) = Id::parse(rev) {
            return Ok(id);
        }
    }
    let hex = rev.to_ascii_lowercase();
    if hex.len() >= 4 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        let mut next = head;
        let mut seen = HashSet::new();
        while let Some(id) = next {
            if id.hex().starts_with(&hex) {
                return Ok(id);
            }
            if !seen.insert(id) {
                break;
            }
            let got = get_objects(rt, peer, url, &[id])?;
            next = match got.get(&id) {
                Some((ObjectKind::Snapshot, data)) => Snapshot::decode(data)
                    .map_err(|e| Error::Refused(format!("{url} sent a bad snapshot {id}: {e}")))?
                    .parents
                    .first()
                    .copied(),
                _ => None,
            };
        }
    }
    Err(Error::NotFound(format!(
        "{url} has no snapshot {rev:?} of {dataset} (give a tag, or 4+ hex digits of an id in its history)"
    )))
}

/// Fetches snapshot `rev` of `dataset` from a peer: the snapshot, all its
/// trees, and the files `sel` selects. Moves the local `datasets/NAME` ref
/// when it fast-forwards (or is absent) and records a fetched tag.
/// Returns the snapshot id and what the file transfer did.
pub fn clone(
    ds: &Datasets,
    addr: &PeerAddr,
    dataset: &str,
    rev: &str,
    sel: &Selection,
    progress: Progress,
) -> Result<(Id, Summary)> {
    objects::check_dataset_name(dataset).map_err(|e| Error::Config(e.0))?;
    let url = addr.url.as_str();
    let store = &*ds.store;
    let rt = sync::runtime()?;
    let mut peer = rt.block_on(sync::connect(addr, store))?;
    let snap_id = resolve_remote(&rt, &mut peer, url, dataset, rev)?;

    // The snapshot and its trees, level by level (only those not here).
    let mut received: Vec<pb::Object> = Vec::new();
    let snap = match ds.snapshot_object(&snap_id)? {
        Some(s) => s,
        None => {
            let got = get_objects(&rt, &mut peer, url, &[snap_id])?;
            let Some((ObjectKind::Snapshot, data)) = got.get(&snap_id).cloned() else {
                return Err(Error::NotFound(format!(
                    "{url} does not have snapshot {snap_id}"
                )));
            };
            let s = Snapshot::decode(&data)
                .map_err(|e| Error::Refused(format!("{url} sent a bad snapshot {snap_id}: {e}")))?;
            received.push(pb::Object {
                id: snap_id.0.to_vec(),
                kind: ObjectKind::Snapshot as u32,
                data,
            });
            s
        }
    };
    let mut level: Vec<Id> = vec![snap.tree];
    let mut trees: Vec<pb::Object> = Vec::new();
    let mut seen = HashSet::new();
    while !level.is_empty() {
        level.retain(|i| seen.insert(*i));
        let present = store.objects_present(&level)?;
        let want: Vec<Id> = level
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(i, _)| *i)
            .collect();
        let got = get_objects(&rt, &mut peer, url, &want)?;
        let mut next = Vec::new();
        for id in &want {
            let Some((ObjectKind::Tree, data)) = got.get(id) else {
                return Err(Error::Refused(format!(
                    "{url} did not send tree {id} of snapshot {snap_id}"
                )));
            };
            let t = Tree::decode(data)
                .map_err(|e| Error::Refused(format!("{url} sent a bad tree {id}: {e}; refused")))?;
            next.extend(
                t.entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Dir)
                    .map(|e| e.id),
            );
            trees.push(pb::Object {
                id: id.0.to_vec(),
                kind: ObjectKind::Tree as u32,
                data: data.clone(),
            });
        }
        level = next;
    }
    // Checked as one set: the snapshot's parents need not be here.
    trees.extend(received);
    if !trees.is_empty() {
        sync::counted(store, accept_objects(store, trees, url, false))?;
    }

    // The selected files' content.
    let (root, _) = ds.load_dir(&snap.tree)?;
    let mut files: Vec<Id> = Vec::new();
    let mut fseen = HashSet::new();
    for (p, n) in root.files() {
        if !sel.selects(&p) {
            continue;
        }
        if let Node::File { id, .. } | Node::Symlink { id, .. } = n {
            if fseen.insert(*id) {
                files.push(*id);
            }
        }
    }
    drop(rt);
    let summary = sync::pull(store, addr, &files, progress)?;
    if !summary.missing.is_empty() {
        return Err(Error::NotFound(format!(
            "{url} lacks the content of {} file(s) of snapshot {snap_id}",
            summary.missing.len()
        )));
    }

    // Local refs: the dataset's, when it moves forward; the tag fetched.
    let r = objects::dataset_ref(dataset);
    let local = store.get_ref(&r)?;
    let forward = match local {
        None => true,
        Some(l) => ds.is_ancestor(&l, &snap_id)?,
    };
    if forward {
        let _ = store.cas_ref(&r, local, Some(snap_id))?;
    }
    if !rev.is_empty() && objects::check_dataset_name(rev).is_ok() {
        let t = objects::tag_ref(dataset, rev);
        if store.get_ref(&t)?.is_none() {
            let _ = store.cas_ref(&t, None, Some(snap_id))?;
        }
    }
    Ok((snap_id, summary))
}

/// What a dataset push did.
#[derive(Debug, Default, Clone)]
pub struct Pushed {
    pub snapshot: Option<Id>,
    pub snapshots_sent: u64,
    pub trees_sent: u64,
    pub files: Summary,
    pub tags: u64,
}

/// Pushes dataset `name`'s snapshots the peer lacks, their trees and
/// content, then moves the peer's `datasets/NAME` from what it was to this
/// store's head (compare-and-swap; refused by the peer when not a
/// fast-forward unless `force`), then its tags the peer lacks.
pub fn push(
    ds: &Datasets,
    addr: &PeerAddr,
    name: &str,
    force: bool,
    progress: Progress,
) -> Result<Pushed> {
    let store = &*ds.store;
    let url = addr.url.as_str();
    let head = ds.head(name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "dataset {name} has no snapshot to push; `hoard snapshot {name}` first"
        ))
    })?;
    let rt = sync::runtime()?;
    let mut peer = rt.block_on(sync::connect(addr, store))?;
    let r = objects::dataset_ref(name);
    let remote = remote_ref(&rt, &mut peer, url, &r)?;
    let mut out = Pushed {
        snapshot: Some(head),
        ..Pushed::default()
    };
    if remote != Some(head) {
        // Snapshots the peer lacks: the history back to what it has.
        let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
        let mut queue = VecDeque::from([head]);
        let mut seen = HashSet::new();
        while let Some(id) = queue.pop_front() {
            if Some(id) == remote || !seen.insert(id) {
                continue;
            }
            let Some(s) = ds.snapshot_object(&id)? else {
                // History this store never had (a clone): the peer must have it.
                continue;
            };
            queue.extend(s.parents.iter().copied());
            snaps.push((id, s));
        }
        // Ask which of them the peer has (it answers with those it holds).
        let ids: Vec<Id> = snaps.iter().map(|s| s.0).collect();
        let have: HashSet<Id> = get_objects(&rt, &mut peer, url, &ids)?
            .into_keys()
            .collect();
        snaps.retain(|(id, _)| !have.contains(id));
        snaps.reverse(); // oldest first
        let stop = match remote.and_then(|r| ds.snapshot_object(&r).ok().flatten()) {
            Some(rs) => all_trees(store, &rs.tree).unwrap_or_default(),
            None => HashSet::new(),
        };
        let roots: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
        let trees = trees_post_order(store, &roots, &stop)?;
        let mut files = Vec::new();
        files_of(store, &trees, &mut files)?;
        let mut fseen = HashSet::new();
        files.retain(|f| fseen.insert(*f));
        out.files = sync::counted(
            store,
            sync::push_over(store, &rt, &mut peer, url, &files, progress),
        )?;
        // Trees (children first), then snapshots (oldest first).
        let mut batches: Vec<pb::ObjectBatch> = Vec::new();
        let mut cur = pb::ObjectBatch::default();
        let mut bytes = 0;
        let all = trees
            .iter()
            .map(|t| (ObjectKind::Tree, *t))
            .chain(snaps.iter().map(|(id, _)| (ObjectKind::Snapshot, *id)));
        for (kind, id) in all {
            let (_, data) = store.object_bytes(&id)?.ok_or_else(|| {
                Error::NotFound(format!("{} {id} is not in this store", kind.as_str()))
            })?;
            bytes += data.len();
            cur.objects.push(pb::Object {
                id: id.0.to_vec(),
                kind: kind as u32,
                data,
            });
            if bytes >= OBJECT_BATCH_BYTES {
                batches.push(std::mem::take(&mut cur));
                bytes = 0;
            }
        }
        if !cur.objects.is_empty() {
            batches.push(cur);
        }
        out.trees_sent = trees.len() as u64;
        out.snapshots_sent = snaps.len() as u64;
        if !batches.is_empty() {
            rt.block_on(peer.put_objects(tokio_stream::iter(batches)))
                .map_err(|e| sync::net(url, "receiving trees and snapshots", e))?;
        }
        let reply = rt
            .block_on(peer.update_ref(pb::UpdateRefRequest {
                name: r.clone(),
                old: remote.map(|i| i.0.to_vec()).unwrap_or_default(),
                new: head.0.to_vec(),
                force,
            }))
            .map_err(|e| sync::net(url, "moving the dataset ref", e))?
            .into_inner();
        if !reply.ok {
            return Err(Error::Busy(format!(
                "{url} refused to move {r}: {}",
                reply.reason
            )));
        }
        push_tags(&rt, &mut peer, ds, url, name, &mut out)?;
        return Ok(out);
    }
    push_tags(&rt, &mut peer, ds, url, name, &mut out)?;
    Ok(out)
}

fn push_tags(
    rt: &tokio::runtime::Runtime,
    peer: &mut sync::Client,
    ds: &Datasets,
    url: &str,
    name: &str,
    out: &mut Pushed,
) -> Result<()> {
    let prefix = format!("tags/{name}/");
    let theirs: HashMap<String, Vec<u8>> = rt
        .block_on(peer.list_refs(pb::ListRefsRequest {
            prefix: prefix.clone(),
        }))
        .map_err(|e| sync::net(url, "listing tags", e))?
        .into_inner()
        .refs
        .into_iter()
        .map(|r| (r.name, r.id))
        .collect();
    for (tag, id) in ds.store.refs(&prefix)? {
        if theirs.contains_key(&tag) {
            continue;
        }
        let reply = rt
            .block_on(peer.update_ref(pb::UpdateRefRequest {
                name: tag.clone(),
                old: Vec::new(),
                new: id.0.to_vec(),
                force: false,
            }))
            .map_err(|e| sync::net(url, "creating a tag", e))?
            .into_inner();
        if reply.ok {
            out.tags += 1;
        } else {
            tracing::info!(%tag, reason = %reply.reason, "tag not pushed");
        }
    }
    Ok(())
}
