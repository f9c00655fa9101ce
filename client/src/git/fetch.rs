//! Making objects local. This is the one place the filter, `pull` and
//! `checkout` ask for content; today its only source is the local store,
//! and peer sync adds remotes here without changing any caller.

use super::pointer::Pointer;
use crate::connect::Client;
use crate::ui;
use hoard_proto::v1::HasRequest;

/// Ids asked about per request.
const HAS_BATCH: usize = 4096;

/// What a fetch left local and what it could not find.
#[derive(Debug, Default)]
pub struct Fetched {
    /// One per object asked for, in order: is its content local now?
    pub present: Vec<bool>,
}

impl Fetched {
    pub fn missing(&self) -> usize {
        self.present.iter().filter(|p| !**p).count()
    }
}

/// Makes the content of `objects` local where it can be found.
pub async fn fetch(client: &mut Client, objects: &[Pointer]) -> anyhow::Result<Fetched> {
    // The local store is the only source until peer sync adds remotes:
    // then the missing ones are asked of them here.
    local(client, objects).await
}

/// Which of `objects` the local store holds, without fetching anything.
pub async fn local(client: &mut Client, objects: &[Pointer]) -> anyhow::Result<Fetched> {
    let mut present = Vec::with_capacity(objects.len());
    for batch in objects.chunks(HAS_BATCH) {
        let reply = client
            .has(HasRequest {
                oids: batch.iter().map(|p| p.oid.to_vec()).collect(),
            })
            .await
            .map_err(ui::status_error)?
            .into_inner();
        if reply.present.len() != batch.len() {
            anyhow::bail!(
                "the daemon answered about {} objects, asked about {}",
                reply.present.len(),
                batch.len()
            );
        }
        present.extend(reply.present);
    }
    Ok(Fetched { present })
}

/// What to tell a user whose content is not here.
pub fn missing_hint(path: &str) -> String {
    format!(
        "its content is not in this machine's store; `hoard pull --include '{path}'` writes it once the store has it"
    )
}
