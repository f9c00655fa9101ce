//! The Local API's dataset calls: request in, engine call, reply out.
//! Each runs on a blocking thread (see `blocking` in the parent).

use super::summary;
use crate::autosync::AutoSync;
use crate::dataset::checkout::{self, Selection};
use crate::dataset::diff::{self, Trees};
use crate::dataset::{Config, Datasets, Live, SnapshotRequest};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::Snapshot;
use crate::watch::Watchers;
use hoard_proto::paths::Paths;
use hoard_proto::v1 as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the dataset calls need from the daemon.
pub struct Ctx {
    pub ds: Arc<Datasets>,
    pub watchers: Arc<Watchers>,
    pub autosync: Arc<AutoSync>,
    pub paths: Paths,
}

fn tags_of(ds: &Datasets, dataset: &str) -> Result<HashMap<Id, Vec<String>>> {
    let prefix = format!("tags/{dataset}/");
    let mut out: HashMap<Id, Vec<String>> = HashMap::new();
    for (name, id) in ds.store.refs(&prefix)? {
        out.entry(id)
            .or_default()
            .push(name[prefix.len()..].to_string());
    }
    Ok(out)
}

pub(super) fn snapshot_info(
    id: &Id,
    s: &Snapshot,
    tags: &HashMap<Id, Vec<String>>,
) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        id: id.0.to_vec(),
        tree: s.tree.0.to_vec(),
        size: s.size,
        files: s.files,
        time_ns: s.time_ns,
        dataset: s.dataset.clone(),
        parents: s.parents.iter().map(|p| p.0.to_vec()).collect(),
        derived: s.derived.iter().map(|p| p.0.to_vec()).collect(),
        message: s.message.clone(),
        meta: s.meta.clone().into_iter().collect(),
        tags: tags.get(id).cloned().unwrap_or_default(),
    }
}

fn info_of(ctx: &Ctx, live: &Live) -> Result<pb::DatasetInfo> {
    let ds = &ctx.ds;
    let head = ds.head(&live.name)?;
    let head_snap = match head {
        Some(h) => ds.snapshot_object(&h)?.map(|s| (h, s)),
        None => None,
    };
    let tags = tags_of(ds, &live.name)?;
    let mut st = live.lock();
    let watching = st.watching == Some(Ok(()));
    let changed = match (watching, st.root.as_mut()) {
        (true, Some(root)) => {
            let b = root
                .build(&mut Vec::new())
                .map_err(|e| Error::Invalid(e.0))?;
            Some(head_snap.as_ref().map(|(_, s)| s.tree) != Some(b.id))
        }
        _ => None,
    };
    let sync_state = match (&live.config.remote, head) {
        (None, _) => "",
        (Some(_), _) if st.sync.last_error.is_some() => "failing",
        (Some(_), Some(h)) if st.sync.pushed == Some(h) => "synced",
        (Some(_), None) => "synced",
        (Some(_), _) => "pending",
    };
    Ok(pb::DatasetInfo {
        name: live.name.clone(),
        path: live.config.path.display().to_string(),
        watch: live.config.watch,
        watch_error: match &st.watching {
            Some(Err(e)) => e.clone(),
            _ => String::new(),
        },
        remote: live.config.remote.clone().unwrap_or_default(),
        exclude: live.config.exclude.clone(),
        head: head_snap.map(|(id, s)| snapshot_info(&id, &s, &tags)),
        pending: st.pending,
        changed,
        unreadable: st.errors.len() as u64,
        sync_state: sync_state.into(),
        pushed: st.sync.pushed.map(|p| p.0.to_vec()).unwrap_or_default(),
        sync_error: st.sync.last_error.clone().unwrap_or_default(),
        retry_in_secs: st.sync.retry_in.unwrap_or(0),
        sync_kind: st
            .sync
            .kind
            .filter(|_| st.sync.last_error.is_some())
            .map(|k| k.as_str().to_string())
            .unwrap_or_default(),
        sync_attempts: st.sync.attempts,
        scans: st.scans,
    })
}

pub(super) fn add(ctx: &Ctx, req: pb::DatasetAddRequest) -> Result<pb::DatasetInfo> {
    if let Some(r) = Some(&req.remote).filter(|r| !r.is_empty()) {
        crate::autosync::peer_addr(&ctx.paths, r).map_err(Error::Invalid)?;
    }
    let live = ctx.ds.add(
        &req.name,
        Config {
            path: PathBuf::from(&req.path),
            watch: req.watch,
            remote: Some(req.remote).filter(|r| !r.is_empty()),
            exclude: req.exclude,
        },
    )?;
    ctx.watchers.apply(&ctx.ds, &live);
    ctx.autosync.poke();
    info_of(ctx, &live)
}

pub(super) fn remove(ctx: &Ctx, req: pb::DatasetRemoveRequest) -> Result<pb::DatasetInfo> {
    let live = ctx.ds.remove(&req.name)?;
    ctx.watchers.stop(&req.name);
    info_of(ctx, &live)
}

pub(super) fn list(ctx: &Ctx) -> Result<pb::DatasetListReply> {
    let mut out = Vec::new();
    for live in ctx.ds.all() {
        out.push(info_of(ctx, &live)?);
    }
    Ok(pb::DatasetListReply { datasets: out })
}

fn change(c: diff::Change) -> pb::Change {
    pb::Change {
        path: c.path,
        kind: c.kind.as_str().into(),
        old_id: c.old.map(|o| o.0 .0.to_vec()).unwrap_or_default(),
        old_size: c.old.map(|o| o.1).unwrap_or(0),
        new_id: c.new.map(|o| o.0 .0.to_vec()).unwrap_or_default(),
        new_size: c.new.map(|o| o.1).unwrap_or(0),
    }
}

pub(super) fn status(ctx: &Ctx, req: pb::DatasetStatusRequest) -> Result<pb::DiffReply> {
    let ds = &ctx.ds;
    let live = ds.get(&req.dataset)?;
    let (root, new, errors) = ds.current(&live, req.rescan)?;
    let head = ds.head(&live.name)?;
    let head_tree = match head {
        Some(h) => ds.snapshot_object(&h)?.map(|s| s.tree),
        None => None,
    };
    let trees = Trees {
        datasets: ds,
        overlay: new.into_iter().collect(),
    };
    let changes = diff::diff(&trees, head_tree.as_ref(), Some(&root.id))?;
    let pending = live.lock().pending;
    Ok(pb::DiffReply {
        a: head.map(|h| h.0.to_vec()).unwrap_or_default(),
        b: Vec::new(),
        changes: changes.into_iter().map(change).collect(),
        pending,
        unreadable: errors
            .into_iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect(),
        ..Default::default()
    })
}

pub(super) fn snapshot(ctx: &Ctx, req: pb::SnapshotRequest) -> Result<pb::SnapshotReply> {
    let ds = &ctx.ds;
    let derived = req
        .from
        .iter()
        .map(|f| ds.resolve(f))
        .collect::<Result<Vec<Id>>>()?;
    let made = ds.snapshot(
        &req.dataset,
        SnapshotRequest {
            message: req.message,
            derived,
            meta: req.meta.into_iter().collect(),
            rescan: req.rescan,
            allow_empty: req.allow_empty,
            merge: req
                .merge
                .iter()
                .map(|m| ds.resolve(m))
                .collect::<Result<Vec<Id>>>()?,
        },
    )?;
    if !made.unchanged {
        ctx.autosync.poke();
    }
    let tags = tags_of(ds, &req.dataset)?;
    Ok(pb::SnapshotReply {
        snapshot: Some(snapshot_info(&made.id, &made.snapshot, &tags)),
        unchanged: made.unchanged,
    })
}

pub(super) fn log(ctx: &Ctx, req: pb::LogRequest) -> Result<pb::LogReply> {
    let ds = &ctx.ds;
    let start = ds.resolve(&req.spec)?;
    let name = req.spec.split('@').next().unwrap_or("").to_string();
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    let log = ds.log(&name, Some(start), limit)?;
    let tags = log
        .first()
        .map(|(_, s)| tags_of(ds, &s.dataset))
        .transpose()?
        .unwrap_or_default();
    Ok(pb::LogReply {
        snapshots: log
            .iter()
            .map(|(id, s)| snapshot_info(id, s, &tags))
            .collect(),
    })
}

pub(super) fn diff(ctx: &Ctx, req: pb::DiffRequest) -> Result<pb::DiffReply> {
    let ds = &ctx.ds;
    let a = ds.resolve(&req.a)?;
    let b = ds.resolve(&req.b)?;
    let sa = ds
        .snapshot_object(&a)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {a} is not in this store")))?;
    let sb = ds
        .snapshot_object(&b)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {b} is not in this store")))?;
    let trees = Trees {
        datasets: ds,
        overlay: HashMap::new(),
    };
    let changes = diff::diff(&trees, Some(&sa.tree), Some(&sb.tree))?;
    let share = diff::shared_chunk_bytes(&trees, &sa.tree, &sb.tree)?;
    Ok(pb::DiffReply {
        a: a.0.to_vec(),
        b: b.0.to_vec(),
        changes: changes.into_iter().map(change).collect(),
        share_known: share.is_some(),
        shared_bytes: share.map(|s| s.0).unwrap_or(0),
        total_bytes: share.map(|s| s.1).unwrap_or(0),
        ..Default::default()
    })
}

pub(super) fn tag(ctx: &Ctx, req: pb::TagRequest) -> Result<pb::TagReply> {
    let ds = &ctx.ds;
    crate::objects::check_dataset_name(&req.dataset).map_err(|e| Error::Invalid(e.0))?;
    if req.delete {
        let r = crate::objects::tag_ref(&req.dataset, &req.tag);
        let old = ds
            .store
            .get_ref(&r)?
            .ok_or_else(|| Error::NotFound(format!("{} has no tag {}", req.dataset, req.tag)))?;
        ds.store
            .cas_ref(&r, Some(old), None)?
            .map_err(|_| Error::Transient("the tag moved meanwhile; retry".into()))?;
        return Ok(pb::TagReply { id: old.0.to_vec() });
    }
    let spec = if req.target.is_empty() {
        req.dataset.clone()
    } else if req.target.contains('@') || req.target.len() == 64 {
        req.target.clone()
    } else {
        format!("{}@{}", req.dataset, req.target)
    };
    let id = ds.resolve(&spec)?;
    ds.tag(&req.dataset, &req.tag, id, req.force)?;
    Ok(pb::TagReply { id: id.0.to_vec() })
}

pub(super) fn lineage(ctx: &Ctx, req: pb::LineageRequest) -> Result<pb::LineageReply> {
    let ds = &ctx.ds;
    let id = ds.resolve(&req.spec)?;
    let root = ds
        .snapshot_object(&id)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {id} is not in this store")))?;
    let depth = if req.depth == 0 {
        usize::MAX
    } else {
        req.depth as usize
    };
    let links = ds.lineage(&id, req.downstream, depth)?;
    let none = HashMap::new();
    Ok(pb::LineageReply {
        root: Some(snapshot_info(&id, &root, &tags_of(ds, &root.dataset)?)),
        links: links
            .into_iter()
            .map(|l| pb::LineageLink {
                from: l.from.0.to_vec(),
                to: l.to.0.to_vec(),
                depth: l.depth as u32,
                snapshot: l.snapshot.as_ref().map(|s| snapshot_info(&l.to, s, &none)),
            })
            .collect(),
    })
}

pub(super) fn checkout(ctx: &Ctx, req: pb::CheckoutRequest) -> Result<pb::CheckoutReply> {
    let ds = &ctx.ds;
    let id = ds.resolve(&req.spec)?;
    let r = checkout::checkout(
        ds,
        &checkout::Request {
            snapshot: id,
            dir: PathBuf::from(&req.dir),
            include: req.include,
            exclude: req.exclude,
            force: req.force,
        },
    )?;
    Ok(pb::CheckoutReply {
        snapshot: id.0.to_vec(),
        written: r.written,
        unchanged: r.unchanged,
        removed: r.removed,
        bytes: r.bytes,
        kept: r.kept,
    })
}

pub(super) fn peer_of(t: Option<pb::PeerTarget>) -> Result<crate::sync::PeerAddr> {
    let t = t.ok_or_else(|| Error::Invalid("no peer given".into()))?;
    Ok(crate::sync::PeerAddr::new(
        t.url,
        t.token,
        t.fingerprint,
        t.ca_pem,
    ))
}

/// Clone: fetch, then (with a directory) check out and register the
/// dataset there when this store has none of that name.
pub(super) fn clone(
    ctx: &Ctx,
    req: pb::CloneRequest,
    progress: crate::sync::Progress,
) -> Result<pb::SyncSummary> {
    let ds = &ctx.ds;
    let addr = peer_of(req.peer)?;
    let sel = Selection::new(&req.include, &req.exclude)?;
    let (id, s) = crate::sync::dataset::clone(ds, &addr, &req.dataset, &req.rev, &sel, progress)?;
    if !req.dir.is_empty() {
        let dir = PathBuf::from(&req.dir);
        checkout::checkout(
            ds,
            &checkout::Request {
                snapshot: id,
                dir: dir.clone(),
                include: req.include,
                exclude: req.exclude,
                force: req.force,
            },
        )?;
        if ds.get(&req.dataset).is_err() {
            ds.add(
                &req.dataset,
                Config {
                    path: dir,
                    watch: false,
                    remote: None,
                    exclude: Vec::new(),
                },
            )?;
        }
    }
    Ok(summary(&s, Some(id)))
}

pub(super) fn push_dataset(
    ctx: &Ctx,
    req: pb::PushDatasetRequest,
    progress: crate::sync::Progress,
) -> Result<pb::SyncSummary> {
    let remote = crate::sync::dataset::Remote {
        addr: peer_of(req.peer)?,
        name: if req.remote.is_empty() {
            "REMOTE".into()
        } else {
            req.remote.clone()
        },
    };
    let p = crate::sync::dataset::push(&ctx.ds, &remote, &req.dataset, req.force, progress)?;
    if let Ok(live) = ctx.ds.get(&req.dataset) {
        // The dataset's sync state follows a push to its own remote only.
        if live.config.remote.as_deref() == Some(req.remote.as_str()) {
            let mut st = live.lock();
            st.sync.pushed = p.snapshot;
            st.sync.last_error = None;
            st.sync.kind = None;
            st.sync.conflict_at = None;
        }
    }
    Ok(summary(&p.files, p.snapshot))
}
