//! Transfers of files to and from a peer (`Sync`, the CLI's `hoard push`
//! and `hoard fetch`), and the tokens other daemons present to this one.

use super::{parse_oid, progress_to, summary, Events, LocalApi};
use crate::id::Id;
use crate::status::status;
use hoard_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

fn token_info(e: &crate::tokens::Entry) -> pb::TokenInfo {
    pb::TokenInfo {
        id: e.id.clone(),
        scope: e.scope.to_string(),
        created_unix: e.created_unix,
        note: e.note.clone(),
    }
}

pub(super) async fn sync(
    api: &LocalApi,
    req: Request<pb::SyncRequest>,
) -> Result<Response<Events<pb::SyncEvent>>, Status> {
    let req = req.into_inner();
    let mut wants = req
        .oids
        .iter()
        .map(|b| {
            Ok(crate::sync::Want {
                file: parse_oid(b)?,
                size: None,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    for s in &req.sized {
        wants.push(crate::sync::Want {
            file: parse_oid(&s.oid)?,
            size: Some(s.size),
        });
    }
    let (tx, rx) = mpsc::channel(16);
    let store = api.store.clone();
    tokio::task::spawn_blocking(move || {
        use pb::sync_event::Event as E;
        let mut progress = progress_to(tx.clone());
        let addr = crate::sync::PeerAddr::new(
            req.url.clone(),
            req.token.clone(),
            req.fingerprint.clone(),
            req.ca_pem.clone(),
        );
        let r = if req.push {
            let oids: Vec<Id> = wants.iter().map(|w| w.file).collect();
            crate::sync::push(&store, &addr, &oids, &mut progress)
        } else {
            crate::sync::pull(&store, &addr, &wants, &mut progress)
        };
        let msg = r.map_err(status).map(|s| pb::SyncEvent {
            event: Some(E::Summary(summary(&s, None))),
        });
        let _ = tx.blocking_send(msg);
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn token_create(
    api: &LocalApi,
    req: Request<pb::TokenCreateRequest>,
) -> Result<Response<pb::TokenCreateReply>, Status> {
    let req = req.into_inner();
    let scope = if req.admin {
        crate::tokens::Scope::Admin
    } else if req.write {
        crate::tokens::Scope::Write
    } else {
        crate::tokens::Scope::Read
    };
    let (token, e) = api.tokens.create(scope, &req.note).map_err(status)?;
    Ok(Response::new(pb::TokenCreateReply {
        token,
        info: Some(token_info(&e)),
    }))
}

pub(super) async fn token_list(
    api: &LocalApi,
    _req: Request<pb::TokenListRequest>,
) -> Result<Response<pb::TokenListReply>, Status> {
    Ok(Response::new(pb::TokenListReply {
        tokens: api.tokens.list().iter().map(token_info).collect(),
    }))
}

pub(super) async fn token_revoke(
    api: &LocalApi,
    req: Request<pb::TokenRevokeRequest>,
) -> Result<Response<pb::TokenRevokeReply>, Status> {
    let revoked = api.tokens.revoke(&req.into_inner().id).map_err(status)?;
    Ok(Response::new(pb::TokenRevokeReply { revoked }))
}
