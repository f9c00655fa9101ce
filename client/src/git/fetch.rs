//! Making objects local. This is the one place the filter and `pull` ask
//! for content: the local store, then the default remote.

use super::pointer::Pointer;
use crate::connect::Client;
use crate::remote::Remotes;
use crate::ui;
use hoard_proto::paths::Paths;
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

/// Makes the content of `objects` local where it can be found: the local
/// store first, then the default remote (`origin`, or the only one).
pub async fn fetch(
    client: &mut Client,
    paths: &Paths,
    objects: &[Pointer],
) -> anyhow::Result<Fetched> {
    let mut f = local(client, objects).await?;
    if f.missing() == 0 {
        return Ok(f);
    }
    let Some((_, remote)) = Remotes::load(paths).map_err(anyhow::Error::msg)?.pick(None) else {
        return Ok(f);
    };
    let missing = objects
        .iter()
        .zip(&f.present)
        .filter(|(_, p)| !**p)
        .map(|(o, _)| (o.oid.to_vec(), Some(o.size)))
        .collect();
    crate::remote::sync(client, &remote, false, missing, true).await?;
    // Only those that were missing are asked about again.
    let idx: Vec<usize> = (0..objects.len()).filter(|&i| !f.present[i]).collect();
    let again: Vec<Pointer> = idx.iter().map(|&i| objects[i]).collect();
    for (i, here) in idx.into_iter().zip(local(client, &again).await?.present) {
        f.present[i] = here;
    }
    Ok(f)
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
        "its content is neither in this machine's store nor on a remote; `hoard pull --include '{path}'` writes it once it is available (`hoard remote add` names where to fetch from)"
    )
}
