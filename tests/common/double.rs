//! A peer that speaks the real protocol and sends what a hostile one would.
use hoard_daemon::objects::{Entry, EntryKind, Snapshot, Tree};
use hoard_daemon::Id;
use hoard_proto::v1::{self as pb, peer_client::PeerClient};

pub fn tree(entries: Vec<Entry>) -> (Vec<u8>, Vec<u8>) {
    let enc = Tree { entries }.encode();
    (blake3::hash(&enc).as_bytes().to_vec(), enc)
}

pub fn entry(name: &[u8], kind: EntryKind, id: Id, size: u64) -> Entry {
    let mode = match kind {
        EntryKind::File => 0o644,
        EntryKind::Dir => 0o755,
        EntryKind::Symlink => 0o777,
    };
    Entry {
        name: name.to_vec(),
        kind,
        mode,
        id,
        size,
    }
}

pub fn snapshot(tree: Id, size: u64, files: u64) -> (Vec<u8>, Vec<u8>) {
    let s = Snapshot {
        tree,
        size,
        files,
        time_ns: 1,
        dataset: "survey".into(),
        parents: vec![],
        derived: vec![],
        message: String::new(),
        meta: Default::default(),
    };
    let enc = s.encode();
    (blake3::hash(&enc).as_bytes().to_vec(), enc)
}

pub struct Double {
    rt: tokio::runtime::Runtime,
    c: PeerClient<tonic::transport::Channel>,
    token: String,
}

impl Double {
    pub fn connect(url: &str, token: &str) -> Double {
        // Tasks it spawns (streams held open) run without a block_on.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let c = rt
            .block_on(PeerClient::connect(url.to_string()))
            .expect("connect to the hub");
        Double {
            rt,
            c,
            token: token.into(),
        }
    }

    pub fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }

    /// Sends objects (kind 1 tree, 2 snapshot); the error message if refused.
    pub fn put(&mut self, objs: Vec<(u32, Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let batch = pb::ObjectBatch {
            objects: objs
                .into_iter()
                .map(|(kind, id, data)| pb::Object { id, kind, data })
                .collect(),
        };
        let r = self.req(tokio_stream::iter(vec![batch]));
        self.rt
            .block_on(self.c.put_objects(r))
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }

    pub fn update_ref(
        &mut self,
        name: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<pb::UpdateRefReply, String> {
        let r = self.req(pb::UpdateRefRequest {
            name: name.into(),
            old,
            new,
            force: false,
        });
        self.rt
            .block_on(self.c.update_ref(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// The chunk ids of a file's manifest.
    pub fn chunks_of(&mut self, file: Vec<u8>) -> Vec<Vec<u8>> {
        let r = self.req(pb::IdList { ids: vec![file] });
        let mut s = self
            .rt
            .block_on(self.c.get_manifests(r))
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(p) = self.rt.block_on(s.message()).unwrap() {
            out.extend(p.chunk_ids);
        }
        out
    }

    /// Messages a `GetFrames` (or `GetChunks`) for `ids` streams back.
    pub fn frames_and_chunks(&mut self, ids: Vec<Vec<u8>>) -> (usize, usize) {
        let r = self.req(pb::IdList { ids: ids.clone() });
        let mut s = self.rt.block_on(self.c.get_frames(r)).unwrap().into_inner();
        let mut frames = 0;
        while self.rt.block_on(s.message()).unwrap().is_some() {
            frames += 1;
        }
        let r = self.req(pb::IdList { ids });
        let mut s = self.rt.block_on(self.c.get_chunks(r)).unwrap().into_inner();
        let mut chunks = 0;
        while let Some(b) = self.rt.block_on(s.message()).unwrap() {
            chunks += b.chunks.len();
        }
        (frames, chunks)
    }

    pub fn has(&mut self, ids: Vec<Vec<u8>>) -> usize {
        let r = self.req(pb::IdList { ids });
        let mut s = self
            .rt
            .block_on(self.c.get_objects(r))
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(b) = self.rt.block_on(s.message()).unwrap() {
            n += b.objects.len();
        }
        n
    }

    /// A `PutChunks` of `batches`: the reply, or the refusal's message.
    pub fn put_chunks(&mut self, batches: Vec<pb::ChunkBatch>) -> Result<pb::PutReply, String> {
        let r = self.req(tokio_stream::iter(batches));
        self.rt
            .block_on(self.c.put_chunks(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// A `PutFrames` of `frames`.
    pub fn put_frames(&mut self, frames: Vec<pb::FramePut>) -> Result<pb::PutReply, String> {
        let r = self.req(tokio_stream::iter(frames));
        self.rt
            .block_on(self.c.put_frames(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// A `PutManifests` of `pieces`.
    pub fn put_manifests(
        &mut self,
        pieces: Vec<pb::ManifestPiece>,
    ) -> Result<pb::PutReply, String> {
        let r = self.req(tokio_stream::iter(pieces));
        self.rt
            .block_on(self.c.put_manifests(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// A `PutObjects` of raw `Object` messages (any kind number).
    pub fn put_raw_objects(&mut self, objects: Vec<pb::Object>) -> Result<pb::PutReply, String> {
        let r = self.req(tokio_stream::iter(vec![pb::ObjectBatch { objects }]));
        self.rt
            .block_on(self.c.put_objects(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// Every message of a `GetManifests`, `GetChunks`, `GetFrames` or
    /// `GetObjects` for `ids` (by `which`), or the refusal's message.
    pub fn get_all(&mut self, which: &str, ids: Vec<Vec<u8>>) -> Result<usize, String> {
        let r = self.req(pb::IdList { ids });
        let m = |s: tonic::Status| s.message().to_string();
        let rt = &self.rt;
        let c = &mut self.c;
        rt.block_on(async {
            let mut n = 0;
            match which {
                "manifests" => {
                    let mut s = c.get_manifests(r).await.map_err(m)?.into_inner();
                    while s.message().await.map_err(m)?.is_some() {
                        n += 1;
                    }
                }
                "chunks" => {
                    let mut s = c.get_chunks(r).await.map_err(m)?.into_inner();
                    while s.message().await.map_err(m)?.is_some() {
                        n += 1;
                    }
                }
                "frames" => {
                    let mut s = c.get_frames(r).await.map_err(m)?.into_inner();
                    while s.message().await.map_err(m)?.is_some() {
                        n += 1;
                    }
                }
                _ => {
                    let mut s = c.get_objects(r).await.map_err(m)?.into_inner();
                    while s.message().await.map_err(m)?.is_some() {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    /// `PlanFrames` for `ids`.
    pub fn plan(&mut self, ids: Vec<Vec<u8>>) -> Result<pb::FramePlan, String> {
        let r = self.req(pb::IdList { ids });
        self.rt
            .block_on(self.c.plan_frames(r))
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// `HaveFiles` for `ids`.
    pub fn have_files(&mut self, ids: Vec<Vec<u8>>) -> Result<Vec<bool>, String> {
        let r = self.req(pb::IdList { ids });
        self.rt
            .block_on(self.c.have_files(r))
            .map(|r| r.into_inner().present)
            .map_err(|s| s.message().to_string())
    }

    /// Opens a `PutChunks` that sends one batch and then nothing, never
    /// ending; it stays open while the returned sender lives.
    pub fn stalled_upload(
        &mut self,
        first: pb::ChunkBatch,
    ) -> tokio::sync::mpsc::Sender<pb::ChunkBatch> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let r = self.req(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut c = self.c.clone();
        self.rt.spawn(async move {
            let _ = c.put_chunks(r).await;
        });
        let sent = tx.clone();
        self.rt
            .block_on(async move { sent.send(first).await.unwrap() });
        tx
    }

    /// Opens `n` `GetChunks` streams for `ids` at once and reads none of
    /// them; they stay open until the returned handles are aborted.
    pub fn unread_chunk_streams(
        &mut self,
        ids: Vec<Vec<u8>>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let r = self.req(pb::IdList { ids: ids.clone() });
                let mut c = self.c.clone();
                self.rt.spawn(async move {
                    let s = c.get_chunks(r).await;
                    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                    drop(s);
                })
            })
            .collect()
    }
}
