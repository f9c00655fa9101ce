//! Shrinking and mending the store: prune (here or on a hub), pins, repair.

use super::datasets::peer_of;
use super::LocalApi;
use crate::error::Error;
use crate::id::Id;
use crate::prune::PIN_PREFIX;
use crate::status::status;
use hoard_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

fn ids(v: &[Vec<u8>]) -> Result<Vec<Id>, Status> {
    v.iter()
        .map(|b| Id::from_slice(b).ok_or_else(|| Status::invalid_argument("an id is not 32 bytes")))
        .collect()
}

pub(super) async fn prune(
    api: &LocalApi,
    req: Request<Streaming<pb::PruneInput>>,
) -> Result<Response<pb::PruneReply>, Status> {
    let mut input = req.into_inner();
    let mut request = None;
    let mut remote = None;
    let (mut live, mut known) = (Vec::new(), Vec::new());
    while let Some(m) = input.message().await? {
        if request.is_none() {
            request = m.request;
        }
        if m.remote.is_some() {
            remote = m.remote;
        }
        live.extend(ids(&m.git_live)?);
        known.extend(ids(&m.git_known)?);
    }
    let request = request.ok_or_else(|| Status::invalid_argument("no prune request was sent"))?;
    let ds = api.datasets.ds.clone();
    let report_json = tokio::task::spawn_blocking(move || -> crate::Result<String> {
        if remote.is_some() {
            let addr = peer_of(remote)?;
            return crate::sync::admin::prune_remote(&ds.store, &addr, request);
        }
        let mut opts = crate::sync::admin::prune_options(&request);
        opts.git_live = live;
        opts.git_known = known;
        let rep = crate::prune::prune(&ds, &opts)?;
        serde_json::to_string(&rep).map_err(|e| Error::Internal(e.to_string()))
    })
    .await
    .map_err(|e| Status::internal(format!("the prune failed: {e}")))?
    .map_err(status)?;
    Ok(Response::new(pb::PruneReply { report_json }))
}

pub(super) async fn pin(
    api: &LocalApi,
    req: Request<pb::PinRequest>,
) -> Result<Response<pb::PinReply>, Status> {
    let req = req.into_inner();
    let ds = api.datasets.ds.clone();
    tokio::task::block_in_place(|| -> crate::Result<pb::PinReply> {
        if !req.list {
            let (id, kind) = match req.target.strip_prefix("blake3:") {
                Some(hex) => {
                    let id = Id::parse(hex).map_err(|_| {
                        Error::Invalid(format!("{:?} is not a blake3:<64 hex> id", req.target))
                    })?;
                    let kind = if ds.store.object(&id)?.is_some() {
                        "snapshot"
                    } else {
                        "file"
                    };
                    (id, kind)
                }
                None => (ds.resolve(&req.target)?, "snapshot"),
            };
            let key = format!("{PIN_PREFIX}{}", id.hex());
            if req.remove {
                if ds.store.get_local(&key)?.is_none() {
                    return Err(Error::NotFound(format!(
                        "{} is not pinned; `hoard pin --list` shows the pins",
                        req.target
                    )));
                }
                ds.store.put_local(&key, None)?;
            } else {
                if kind == "file" && ds.store.file_size(&id)?.is_none() {
                    return Err(Error::NotFound(format!(
                        "{} is not in this store; only stored content can be pinned",
                        req.target
                    )));
                }
                ds.store.put_local(&key, Some(kind.as_bytes()))?;
            }
        }
        let pins = ds
            .store
            .local_entries(PIN_PREFIX)?
            .into_iter()
            .map(|(hex, kind)| format!("{} blake3:{hex}", String::from_utf8_lossy(&kind)))
            .collect();
        Ok(pb::PinReply { pins })
    })
    .map(Response::new)
    .map_err(status)
}

pub(super) async fn repair(
    api: &LocalApi,
    req: Request<pb::RepairRequest>,
) -> Result<Response<pb::RepairReply>, Status> {
    let req = req.into_inner();
    let store = api.store.clone();
    let report_json = tokio::task::spawn_blocking(move || -> crate::Result<String> {
        let remotes = match req.remote {
            Some(t) => vec![(t.url.clone(), peer_of(Some(t))?)],
            None => Vec::new(),
        };
        let rep = crate::repair::repair(&store, &remotes, req.dry_run)?;
        serde_json::to_string(&rep).map_err(|e| Error::Internal(e.to_string()))
    })
    .await
    .map_err(|e| Status::internal(format!("the repair failed: {e}")))?
    .map_err(status)?;
    Ok(Response::new(pb::RepairReply { report_json }))
}
