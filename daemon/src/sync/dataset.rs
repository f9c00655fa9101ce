//! A dataset across daemons, this daemon's side: `clone` (one snapshot and
//! the files of the selected paths) and `push` (a dataset's new snapshots,
//! their trees and content, then its ref by compare-and-swap, then its
//! tags). What this daemon receives goes through the same checks as what a
//! peer pushes to it ([`crate::dataset::accept`]).

use super::client::{connect, from_peer, runtime, Client};
use super::push::push_over;
use super::wire::{kind_of, OBJECT_BATCH_BYTES};
use super::{counted, pull, PeerAddr, Progress, Summary, Want};
use crate::dataset::accept::accept_objects;
use crate::dataset::checkout::Selection;
use crate::dataset::state::Node;
use crate::dataset::{walk, Datasets};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{self, EntryKind, Object, ObjectKind, Snapshot, Tree};
use crate::store::Store;
use hoard_proto::v1 as pb;
use std::collections::{HashMap, HashSet, VecDeque};

/// Everything reachable from `roots` through trees, children before parents;
/// trees in `stop` (and below them) are left out.
fn trees_post_order(store: &Store, roots: &[Id], stop: &HashSet<Id>) -> Result<Vec<Id>> {
    let mut load = |id: &Id| match store.object(id)? {
        Some(Object::Tree(t)) => Ok(Some(t)),
        _ => Ok(None),
    };
    walk::post_order(roots, &|id| stop.contains(id), &mut load)
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
    peer: &mut Client,
    url: &str,
    name: &str,
) -> Result<Option<Id>> {
    let refs = rt
        .block_on(peer.list_refs(pb::ListRefsRequest {
            prefix: name.to_string(),
        }))
        .map_err(|e| from_peer(url, "listing refs", e))?
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
    peer: &mut Client,
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
            .map_err(|e| from_peer(url, "sending trees and snapshots", e))?
            .into_inner();
        while let Some(b) = rt
            .block_on(s.message())
            .map_err(|e| from_peer(url, "sending trees and snapshots", e))?
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
    peer: &mut Client,
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

/// Brings snapshot `rev` of `dataset` (resolved on the peer as `clone`
/// does) and all its trees into this store, but none of its files: what a
/// reader that fetches content on demand needs first. Moves no ref.
pub fn fetch_snapshot(ds: &Datasets, addr: &PeerAddr, dataset: &str, rev: &str) -> Result<Id> {
    objects::check_dataset_name(dataset).map_err(|e| Error::Invalid(e.0))?;
    let url = addr.url.as_str();
    let rt = runtime()?;
    let mut peer = rt.block_on(connect(addr, &ds.store))?;
    let snap_id = resolve_remote(&rt, &mut peer, url, dataset, rev)?;
    fetch_trees(ds, &rt, &mut peer, url, snap_id)?;
    Ok(snap_id)
}

/// The snapshot `snap_id` and its trees, level by level (only those not
/// here), checked as one set and stored.
fn fetch_trees(
    ds: &Datasets,
    rt: &tokio::runtime::Runtime,
    peer: &mut Client,
    url: &str,
    snap_id: Id,
) -> Result<Snapshot> {
    let store = &*ds.store;
    let mut received: Vec<(ObjectKind, Id, Vec<u8>)> = Vec::new();
    let snap = match ds.snapshot_object(&snap_id)? {
        Some(s) => s,
        None => {
            let got = get_objects(rt, peer, url, &[snap_id])?;
            let Some((ObjectKind::Snapshot, data)) = got.get(&snap_id).cloned() else {
                return Err(Error::NotFound(format!(
                    "{url} does not have snapshot {snap_id}"
                )));
            };
            let s = Snapshot::decode(&data)
                .map_err(|e| Error::Refused(format!("{url} sent a bad snapshot {snap_id}: {e}")))?;
            received.push((ObjectKind::Snapshot, snap_id, data));
            s
        }
    };
    let mut level: Vec<Id> = vec![snap.tree];
    let mut trees: Vec<(ObjectKind, Id, Vec<u8>)> = Vec::new();
    let mut seen = HashSet::new();
    let mut depth = 0;
    while !level.is_empty() {
        level.retain(|i| seen.insert(*i));
        if depth > walk::MAX_DEPTH && !level.is_empty() {
            return Err(Error::Refused(format!(
                "{url} sent snapshot {snap_id} whose trees lie more than {} directories deep; refused",
                walk::MAX_DEPTH
            )));
        }
        depth += 1;
        let present = store.objects_present(&level)?;
        let want: Vec<Id> = level
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(i, _)| *i)
            .collect();
        let got = get_objects(rt, peer, url, &want)?;
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
            trees.push((ObjectKind::Tree, *id, data.clone()));
        }
        level = next;
    }
    // Checked as one set: the snapshot's parents need not be here.
    trees.extend(received);
    if !trees.is_empty() {
        counted(store, accept_objects(store, trees, url))?;
    }
    Ok(snap)
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
    objects::check_dataset_name(dataset).map_err(|e| Error::Invalid(e.0))?;
    let url = addr.url.as_str();
    let store = &*ds.store;
    let rt = runtime()?;
    let mut peer = rt.block_on(connect(addr, store))?;
    let snap_id = resolve_remote(&rt, &mut peer, url, dataset, rev)?;
    let snap = fetch_trees(ds, &rt, &mut peer, url, snap_id)?;

    // The selected files' content.
    let files = selected_files(ds, &snap.tree, sel)?;
    drop(rt);
    let summary = pull(store, addr, &files, progress)?;
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

/// The distinct files (and link targets) under `tree` that `sel` selects,
/// each with the size its tree entry gives.
fn selected_files(ds: &Datasets, tree: &Id, sel: &Selection) -> Result<Vec<Want>> {
    let (root, _) = ds.load_dir(tree)?;
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for (p, n) in root.files() {
        if !sel.selects(&p) {
            continue;
        }
        if let Node::File { id, size, .. } | Node::Symlink { id, size } = n {
            if seen.insert(*id) {
                files.push(Want {
                    file: *id,
                    size: Some(*size),
                });
            }
        }
    }
    Ok(files)
}

/// A remote to push to: how to reach it, and its name in remotes.toml
/// (for messages that name the command to run).
#[derive(Debug, Clone)]
pub struct Remote {
    pub name: String,
    pub addr: PeerAddr,
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
    remote: &Remote,
    name: &str,
    force: bool,
    progress: Progress,
) -> Result<Pushed> {
    let addr = &remote.addr;
    let store = &*ds.store;
    let url = addr.url.as_str();
    let head = ds.head(name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "dataset {name} has no snapshot to push; `hoard snapshot {name}` first"
        ))
    })?;
    let rt = runtime()?;
    let mut peer = rt.block_on(connect(addr, store))?;
    let r = objects::dataset_ref(name);
    let theirs = remote_ref(&rt, &mut peer, url, &r)?;
    let mut out = Pushed {
        snapshot: Some(head),
        ..Pushed::default()
    };
    if theirs != Some(head) {
        // Snapshots the peer lacks: the history back to what it has.
        let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
        let mut queue = VecDeque::from([head]);
        let mut seen = HashSet::new();
        while let Some(id) = queue.pop_front() {
            if Some(id) == theirs || !seen.insert(id) {
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
        let stop = match theirs.and_then(|r| ds.snapshot_object(&r).ok().flatten()) {
            Some(rs) => all_trees(store, &rs.tree).unwrap_or_default(),
            None => HashSet::new(),
        };
        let roots: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
        let trees = trees_post_order(store, &roots, &stop)?;
        let mut files = Vec::new();
        files_of(store, &trees, &mut files)?;
        let mut fseen = HashSet::new();
        files.retain(|f| fseen.insert(*f));
        out.files = counted(
            store,
            push_over(store, &rt, &mut peer, url, &files, progress),
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
                .map_err(|e| from_peer(url, "receiving trees and snapshots", e))?;
        }
        let reply = rt
            .block_on(peer.update_ref(pb::UpdateRefRequest {
                name: r.clone(),
                old: theirs.map(|i| i.0.to_vec()).unwrap_or_default(),
                new: head.0.to_vec(),
                force,
            }))
            .map_err(|e| from_peer(url, "moving the dataset ref", e))?
            .into_inner();
        if !reply.ok {
            let why = &reply.reason;
            return Err(ref_refused(
                ds,
                &remote.name,
                name,
                theirs,
                head,
                force,
                why,
            ));
        }
        push_tags(&rt, &mut peer, ds, url, name, &mut out)?;
        return Ok(out);
    }
    push_tags(&rt, &mut peer, ds, url, name, &mut out)?;
    Ok(out)
}

/// Why a peer would not move a dataset's ref, as an error of the kind
/// that says what to do: a history that does not contain the peer's is a
/// conflict for the user to resolve (the message names both ways out);
/// anything else (the ref moved during the push) is worth a retry.
fn ref_refused(
    ds: &Datasets,
    remote_name: &str,
    name: &str,
    theirs: Option<Id>,
    head: Id,
    force: bool,
    reason: &str,
) -> Error {
    // A local error deciding it is not a reason to stop retrying.
    let diverged = match theirs {
        Some(r) if !force => matches!(ds.is_ancestor(&r, &head), Ok(false)),
        _ => false,
    };
    if diverged {
        Error::Conflict(format!(
            "{remote_name} refused to move datasets/{name}: {reason}. To keep this store's \
             history there, `hoard dataset push {name} {remote_name} --force` (replaces the \
             remote's); to look at the remote's, `hoard clone {remote_name}/{name} DIR`"
        ))
    } else {
        Error::Transient(format!(
            "{remote_name} refused to move datasets/{name}: {reason}"
        ))
    }
}

fn push_tags(
    rt: &tokio::runtime::Runtime,
    peer: &mut Client,
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
        .map_err(|e| from_peer(url, "listing tags", e))?
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
            .map_err(|e| from_peer(url, "creating a tag", e))?
            .into_inner();
        if reply.ok {
            out.tags += 1;
        } else {
            tracing::info!(%tag, reason = %reply.reason, "tag not pushed");
        }
    }
    Ok(())
}
