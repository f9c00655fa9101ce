//! `hoard backend migrate --to s3`: every pack copied into the bucket the
//! config names (each read back and verified; a progress file makes a rerun
//! resume), the refs mirrored there, then config.toml switched. The running
//! daemon keeps serving from its local packs; at its next start it uploads
//! whatever was written in between before serving, then drops the local
//! copies (`crate::daemon`).

use super::{Events, LocalApi};
use crate::backend::s3::S3Packs;
use crate::config::Config;
use crate::error::Error;
use crate::status::status;
use hoard_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Progress events buffered towards the client.
const PROGRESS_QUEUE: usize = 64;

/// The progress file of a migration to S3, in the store directory.
pub const S3_PROGRESS: &str = "migrate-s3.done";

pub(super) async fn migrate(
    api: &LocalApi,
    req: Request<pb::MigrateBackendRequest>,
) -> Result<Response<Events<pb::MigrateBackendEvent>>, Status> {
    let to = req.into_inner().to;
    if to != "s3" {
        return Err(status(Error::Invalid(format!(
            "cannot migrate packs to {to:?}: the backends are \"local\" and \"s3\" (use --to s3)"
        ))));
    }
    if api.store.backend().is_remote() {
        return Err(status(Error::Invalid(
            "this daemon's packs are in S3 already".into(),
        )));
    }
    let config = api.config.clone();
    let cfg = Config::load(&config)
        .and_then(|c| c.s3_settings(api.store.dir()))
        .map_err(status)?;
    let store = api.store.clone();
    let (tx, rx) = mpsc::channel(PROGRESS_QUEUE);
    tokio::task::spawn_blocking(move || {
        let location = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
        let event = |c: &crate::pack::copy::Copied| pb::MigrateBackendEvent {
            packs: c.packs,
            copied: c.copied,
            already: c.already,
            bytes: c.bytes,
            location: location.clone(),
            config: config.display().to_string(),
            ..Default::default()
        };
        let r = (|| {
            let dst = S3Packs::open(cfg)?;
            let progress = store.dir().join(S3_PROGRESS);
            let c = crate::pack::copy::copy_all(store.backend(), &dst, &progress, |c| {
                let _ = tx.blocking_send(Ok(event(c)));
            })?;
            let refs = store.mirror_refs_to(&dst)?;
            crate::config::set_store_backend(&config, "s3")?;
            Ok::<_, Error>((c, refs))
        })();
        let _ = tx.blocking_send(match r {
            Ok((c, refs)) => Ok(pb::MigrateBackendEvent {
                done: true,
                refs,
                ..event(&c)
            }),
            Err(e) => Err(status(e)),
        });
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}
