//! Peer sync end to end: several daemons on loopback, each with its own
//! store and port.

mod common;

use common::git::{read, write, User};
use common::{data, Env};

fn oid_of(env: &Env, path: &std::path::Path) -> String {
    let v = env.json(&["add", path.to_str().unwrap()]);
    v[0]["oid"].as_str().unwrap().to_string()
}

/// Waits until `env`'s store holds a sealed pack (something arrived durably).
fn wait_for_a_pack(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !env.home.join("packs").exists() || env.packs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing arrived at {}",
            env.home.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn summary(env: &Env, args: &[&str]) -> serde_json::Value {
    let v = env.json(args);
    v.last().cloned().expect("a summary")
}

#[test]
fn push_and_fetch_move_only_missing_chunks_and_check_tokens() {
    let hub = Env::new();
    let url = hub.start_hub();
    let (rw, ro) = (hub.token(true), hub.token(false));

    let a = Env::new();
    std::fs::create_dir_all(a.path("d")).unwrap();
    let big = data(6_000_000, 1, true);
    std::fs::write(a.path("d/big.csv"), &big).unwrap();
    std::fs::write(a.path("d/small.bin"), data(50_000, 2, false)).unwrap();
    let o_big = oid_of(&a, &a.path("d/big.csv"));
    let o_small = oid_of(&a, &a.path("d/small.bin"));
    a.ok(&["remote", "add", "origin", &url, "--token", &rw]);

    let s = summary(&a, &["push", &o_big, &o_small]);
    assert_eq!(s["files"], 2, "{s}");
    assert!(s["chunks_sent"].as_u64().unwrap() > 10, "{s}");
    // Again: nothing travels.
    let s = summary(&a, &["push", &o_big, &o_small]);
    assert_eq!(
        (s["files"].as_u64(), s["chunks_sent"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(hub.ok(&["cat", &o_big]).as_bytes(), &big[..]);

    // A 1 % edit: about the changed chunks travel.
    let mut edited = big.clone();
    for b in &mut edited[3_000_000..3_060_000] {
        *b = b'x';
    }
    std::fs::write(a.path("d/big2.csv"), &edited).unwrap();
    let o_big2 = oid_of(&a, &a.path("d/big2.csv"));
    let s = summary(&a, &["push", &o_big2]);
    let (sent, skipped) = (
        s["chunks_sent"].as_u64().unwrap(),
        s["chunks_skipped"].as_u64().unwrap(),
    );
    assert!(sent <= 6 && skipped > 20 * sent, "{s}");

    // Another daemon fetches with a read token: byte-exact, then 0 chunks.
    let c = Env::new();
    c.ok(&["remote", "add", "origin", &url, "--token", &ro]);
    let s = summary(&c, &["fetch", &o_big, &o_big2, &o_small]);
    assert_eq!(s["files"], 3, "{s}");
    assert_eq!(c.ok(&["cat", &o_big2]).as_bytes(), &edited[..]);
    let s = summary(&c, &["fetch", &o_big, &o_big2, &o_small]);
    assert_eq!(s["chunks_sent"], 0, "{s}");
    c.ok(&["verify", "--read-data"]);

    // Auth: a read token cannot push; no token, a wrong or a revoked one is refused.
    std::fs::write(c.path("mine.bin"), data(10_000, 9, false)).unwrap();
    let mine = oid_of(&c, &c.path("mine.bin"));
    let o = c.run(&["push", &mine]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("write access is needed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for token in [None, Some("hoard_00000000_00"), Some(ro.as_str())] {
        let d = Env::new();
        let mut args = vec!["remote", "add", "origin", &url];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        if token == Some(ro.as_str()) {
            let id = hub
                .json(&["token", "list"])
                .iter()
                .find(|t| t["scope"] == "read")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            hub.ok(&["token", "revoke", &id]);
        }
        d.ok(&args);
        let o = d.run(&["fetch", &o_small]);
        assert!(!o.status.success(), "{token:?} was let in");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("token"), "{token:?}: {err}");
    }
    // Nothing bad was stored anywhere.
    hub.ok(&["verify", "--read-data"]);
}

#[test]
fn git_push_sends_content_and_a_clone_elsewhere_gets_it_on_checkout() {
    let hub = Env::new();
    let url = hub.start_hub();
    let (rw, ro) = (hub.token(true), hub.token(false));

    let alice = User::new();
    alice.hoard_in(
        &alice.home,
        &["remote", "add", "origin", &url, "--token", &rw],
    );
    let repo = alice.repo("r", &["data/**"]);
    let a = data(900_000, 3, false);
    let b = data(2_500_000, 4, true);
    write(&repo, "data/a.bin", &a);
    write(&repo, "data/b.csv", &b);
    alice.git_ok(&repo, &["add", "-A"]);
    alice.git_ok(&repo, &["commit", "-q", "-m", "data"]);
    let bare = alice.path("remote.git");
    alice.git_ok(
        &alice.home,
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    alice.git_ok(&repo, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let o = alice.git(&repo, &["push", "-q", "origin", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pushed 2 files"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Bob's store is empty; his checkout fetches from the hub.
    let bob = User::new();
    bob.hoard_in(
        &bob.home,
        &["remote", "add", "origin", &url, "--token", &ro],
    );
    let clone = bob.path("clone");
    bob.git_ok(
        &bob.home,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(read(&clone, "data/a.bin"), a);
    assert_eq!(read(&clone, "data/b.csv"), b);
    let st = bob.git_ok(&clone, &["status", "--porcelain"]);
    assert!(st.is_empty(), "{st}");

    // Carol clones without fetching, then pulls only some paths.
    let carol = User::new();
    carol.hoard_in(
        &carol.home,
        &["remote", "add", "origin", &url, "--token", &ro],
    );
    let c2 = carol.path("c2");
    let o = carol
        .git_cmd(
            &carol.home,
            &["clone", "-q", bare.to_str().unwrap(), c2.to_str().unwrap()],
        )
        .env("HOARD_HOME", carol.path("no-remote-store"))
        .output()
        .unwrap();
    // The clone started a daemon on that other store: stop it.
    let _ = carol
        .hoard_cmd(&carol.home, &["daemon", "stop"])
        .env("HOARD_HOME", carol.path("no-remote-store"))
        .output();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = carol.hoard_json(&c2, &["pull", "--include", "data/a.bin"]);
    assert_eq!(r[0]["materialized"], 1, "{r:?}");
    assert_eq!(read(&c2, "data/a.bin"), a);
    assert_ne!(read(&c2, "data/b.csv"), b);
}

#[test]
fn a_push_killed_mid_transfer_resumes_without_resending_what_arrived() {
    let hub = Env::new();
    let url = hub.start_hub();
    let rw = hub.token(true);
    let a = Env::new();
    let content = data(200 << 20, 7, false);
    std::fs::write(a.path("big.bin"), &content).unwrap();
    let oid = oid_of(&a, &a.path("big.bin"));
    a.ok(&["remote", "add", "origin", &url, "--token", &rw]);

    let child = a
        .hoard()
        .args(["push", &oid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the hub once some chunks are durable there.
    wait_for_a_pack(&hub);
    hub.kill_daemon();
    let o = common::wait_output(child, std::time::Duration::from_secs(120), "push");
    assert!(
        !o.status.success(),
        "the push should have failed when the hub died"
    );

    // Same store, same address: the hub comes back and the push resumes.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    hub.start_hub_at(port);
    let s = summary(&a, &["push", &oid]);
    assert_eq!(s["files"], 1, "{s}");
    assert!(
        s["chunks_skipped"].as_u64().unwrap() > 0,
        "nothing was kept from the first attempt: {s}"
    );
    assert!(s["bytes"].as_u64().unwrap() < content.len() as u64, "{s}");
    hub.ok(&["verify", "--read-data"]);
    let got = hub.run(&["cat", &oid]);
    assert!(got.stdout == content, "content differs after resuming");
}

#[test]
fn tls_hubs_are_trusted_by_pinned_fingerprint_or_ca_and_plaintext_stays_on_loopback() {
    let hub = Env::new();
    let port = common::free_port();
    std::fs::create_dir_all(&hub.home).unwrap();
    let mut child = hub
        .hoardd()
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--tls"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::spawn(move || child.wait());
    while hub.daemon_pid().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st: serde_json::Value =
        serde_json::from_str(&hub.ok(&["daemon", "status", "--json"])).unwrap();
    let fp = st["peer_fingerprint"].as_str().unwrap().to_string();
    assert!(fp.starts_with("blake3:"), "{st}");
    let rw = hub.token(true);

    let a = Env::new();
    std::fs::write(a.path("f.bin"), data(300_000, 11, false)).unwrap();
    let oid = oid_of(&a, &a.path("f.bin"));
    let https = format!("https://127.0.0.1:{port}");
    a.ok(&[
        "remote",
        "add",
        "pinned",
        &https,
        "--token",
        &rw,
        "--fingerprint",
        &fp,
    ]);
    let s = summary(&a, &["push", "pinned", &oid]);
    assert_eq!(s["files"], 1, "{s}");

    // The self-signed certificate is its own CA; its name is localhost.
    let ca = hub.home.join("peer-tls/cert.pem");
    a.ok(&[
        "remote",
        "add",
        "ca",
        &format!("https://localhost:{port}"),
        "--token",
        &rw,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let s = summary(&a, &["fetch", "ca", &oid]);
    assert_eq!(s["files_already_there"], 1, "{s}");

    let wrong = format!("blake3:{}", "1".repeat(64));
    for (name, extra) in [
        ("wrongpin", vec!["--fingerprint", wrong.as_str()]),
        ("noroots", vec![]),
    ] {
        let mut args = vec!["remote", "add", name, &https, "--token", &rw];
        args.extend(extra);
        a.ok(&args);
        let o = a.run(&["push", name, &oid]);
        assert!(!o.status.success(), "{name} was trusted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("certificate"), "{name}: {err}");
    }
    a.ok(&[
        "remote",
        "add",
        "plain",
        &format!("http://127.0.0.1:{port}"),
        "--token",
        &rw,
    ]);
    let o = a.run(&["push", "plain", &oid]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("https://"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Plaintext beyond loopback is refused at start.
    let other = Env::new();
    std::fs::create_dir_all(&other.home).unwrap();
    let o = other
        .hoardd()
        .args([
            "run",
            "--listen",
            &format!("0.0.0.0:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("without TLS"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn thirty_two_concurrent_pulls_from_one_hub_all_succeed() {
    let hub = Env::new();
    let url = hub.start_hub();
    let ro = hub.token(false);
    std::fs::create_dir_all(hub.path("d")).unwrap();
    let mut oids = Vec::new();
    for i in 0..8 {
        let p = hub.path(&format!("d/f{i}"));
        std::fs::write(&p, data(400_000 + i * 1000, 100 + i as u64, i % 2 == 0)).unwrap();
        oids.push(oid_of(&hub, &p));
    }
    let clients: Vec<Env> = (0..32).map(|_| Env::new()).collect();
    for c in &clients {
        c.ok(&["remote", "add", "origin", &url, "--token", &ro]);
        c.ok(&["daemon", "start"]);
    }
    let children: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut args = vec!["fetch".to_string(), "--json".to_string()];
            args.extend(oids.iter().cloned());
            c.hoard()
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let o = common::wait_output(child, std::time::Duration::from_secs(300), "fetch");
        assert!(
            o.status.success(),
            "client {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["files"], 8, "client {i}: {s}");
    }
    for (c, i) in clients.iter().zip(0..) {
        if i % 8 == 0 {
            c.ok(&["verify", "--read-data"]);
        }
    }
}

/// A peer that speaks the real protocol and lies.
mod hostile {
    use hoard_proto::v1::{self as pb, peer_server::Peer};
    use std::pin::Pin;
    use tonic::{Request, Response, Status, Streaming};

    #[derive(Clone, Copy, Debug)]
    pub enum Lie {
        /// Chunk bytes that do not hash to the chunk's id.
        WrongChunk,
        /// A chunk larger than any chunk can be.
        Oversized,
        /// Right chunks, but a manifest whose content is not the file asked for.
        WrongManifest,
        /// Chunks nobody asked for, without end.
        Endless,
    }

    pub struct Liar {
        pub lie: Lie,
        pub chunk: Vec<u8>,
    }

    type S<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

    fn id(b: &[u8]) -> Vec<u8> {
        blake3::hash(b).as_bytes().to_vec()
    }

    #[tonic::async_trait]
    impl Peer for Liar {
        async fn hello(
            &self,
            _: Request<pb::HelloRequest>,
        ) -> Result<Response<pb::HelloReply>, Status> {
            Ok(Response::new(pb::HelloReply {
                protocol: hoard_proto::PEER_PROTOCOL,
                chunk_min: 8192,
                chunk_avg: 32768,
                chunk_max: 131072,
            }))
        }
        async fn have_files(
            &self,
            r: Request<pb::IdList>,
        ) -> Result<Response<pb::Presence>, Status> {
            let n = r.into_inner().ids.len();
            Ok(Response::new(pb::Presence {
                present: vec![true; n],
            }))
        }
        async fn have_chunks(
            &self,
            r: Request<pb::IdList>,
        ) -> Result<Response<pb::Presence>, Status> {
            let n = r.into_inner().ids.len();
            Ok(Response::new(pb::Presence {
                present: vec![true; n],
            }))
        }
        type GetManifestsStream = S<pb::ManifestPiece>;
        async fn get_manifests(
            &self,
            r: Request<pb::IdList>,
        ) -> Result<Response<Self::GetManifestsStream>, Status> {
            // Whatever was asked for, one chunk: ours.
            let file = r.into_inner().ids[0].clone();
            let piece = pb::ManifestPiece {
                file,
                size: self.chunk.len() as u64,
                chunk_ids: vec![id(&self.chunk)],
                chunk_lens: vec![self.chunk.len() as u32],
                last: true,
            };
            Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(piece)]))))
        }
        type GetChunksStream = S<pb::ChunkBatch>;
        async fn get_chunks(
            &self,
            _: Request<pb::IdList>,
        ) -> Result<Response<Self::GetChunksStream>, Status> {
            let right = id(&self.chunk);
            fn one(cid: Vec<u8>, data: Vec<u8>) -> pb::ChunkBatch {
                pb::ChunkBatch {
                    chunks: vec![pb::ChunkData {
                        id: cid,
                        data: data.into(),
                    }],
                }
            }
            Ok(Response::new(match self.lie {
                Lie::WrongChunk => {
                    let mut bad = self.chunk.clone();
                    bad[0] ^= 1;
                    Box::pin(tokio_stream::iter(vec![Ok(one(right, bad))]))
                }
                Lie::Oversized => {
                    let big = vec![7u8; 200_000];
                    Box::pin(tokio_stream::iter(vec![Ok(one(id(&big), big))]))
                }
                Lie::WrongManifest => {
                    Box::pin(tokio_stream::iter(vec![Ok(one(right, self.chunk.clone()))]))
                }
                Lie::Endless => {
                    let s = tokio_stream::iter(0u64..).map(|i| {
                        let d = i.to_le_bytes().repeat(2000);
                        Ok(one(id(&d), d))
                    });
                    Box::pin(s)
                }
            }))
        }
        async fn plan_frames(
            &self,
            _: Request<pb::IdList>,
        ) -> Result<Response<pb::FramePlan>, Status> {
            Ok(Response::new(pb::FramePlan::default()))
        }
        type GetFramesStream = S<pb::FrameData>;
        async fn get_frames(
            &self,
            _: Request<pb::IdList>,
        ) -> Result<Response<Self::GetFramesStream>, Status> {
            Ok(Response::new(Box::pin(tokio_stream::iter(Vec::new()))))
        }
        async fn put_chunks(
            &self,
            _: Request<Streaming<pb::ChunkBatch>>,
        ) -> Result<Response<pb::PutReply>, Status> {
            Err(Status::unimplemented("liar"))
        }
        async fn put_frames(
            &self,
            _: Request<Streaming<pb::FramePut>>,
        ) -> Result<Response<pb::PutReply>, Status> {
            Err(Status::unimplemented("liar"))
        }
        async fn put_manifests(
            &self,
            _: Request<Streaming<pb::ManifestPiece>>,
        ) -> Result<Response<pb::PutReply>, Status> {
            Err(Status::unimplemented("liar"))
        }

        type GetObjectsStream = S<pb::ObjectBatch>;

        async fn get_objects(
            &self,
            _: Request<pb::IdList>,
        ) -> Result<Response<Self::GetObjectsStream>, Status> {
            Err(Status::unimplemented("liar"))
        }

        async fn put_objects(
            &self,
            _: Request<Streaming<pb::ObjectBatch>>,
        ) -> Result<Response<pb::PutReply>, Status> {
            Err(Status::unimplemented("liar"))
        }

        async fn list_refs(
            &self,
            _: Request<pb::ListRefsRequest>,
        ) -> Result<Response<pb::RefList>, Status> {
            Err(Status::unimplemented("liar"))
        }

        async fn update_ref(
            &self,
            _: Request<pb::UpdateRefRequest>,
        ) -> Result<Response<pb::UpdateRefReply>, Status> {
            Err(Status::unimplemented("liar"))
        }
        async fn prune(
            &self,
            _: Request<pb::PruneRequest>,
        ) -> Result<Response<pb::PruneReply>, Status> {
            Err(Status::unimplemented("liar"))
        }
    }

    use tokio_stream::StreamExt;

    /// Serves a liar on a loopback port until the process ends.
    pub fn serve(lie: Lie, chunk: Vec<u8>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                tonic::transport::Server::builder()
                    .add_service(
                        pb::peer_server::PeerServer::new(Liar { lie, chunk })
                            .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
                    )
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                    .await
                    .unwrap();
            });
        });
        port
    }
}

#[test]
fn a_hostile_peer_is_refused_and_nothing_it_sent_is_stored() {
    let chunk = data(20_000, 42, false);
    for lie in [
        hostile::Lie::WrongChunk,
        hostile::Lie::Oversized,
        hostile::Lie::WrongManifest,
        hostile::Lie::Endless,
    ] {
        let port = hostile::serve(lie, chunk.clone());
        let me = Env::new();
        me.ok(&[
            "remote",
            "add",
            "liar",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "x",
        ]);
        // Ask for a file whose id is not the chunk's content (WrongManifest),
        // or for the chunk's own file (the others).
        let asked = match lie {
            hostile::Lie::WrongManifest => format!("blake3:{}", "ab".repeat(32)),
            _ => common::b3(&chunk),
        };
        let o = me.run(&["fetch", "liar", &asked]);
        assert!(!o.status.success(), "{lie:?} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("{lie:?}: {err}");
        assert!(err.contains("refused"), "{lie:?}: {err}");
        let st: serde_json::Value = serde_json::from_str(&me.ok(&["stats", "--json"])).unwrap();
        assert_eq!(st["files"], 0, "{lie:?}: {st}");
        if !matches!(lie, hostile::Lie::WrongManifest) {
            assert_eq!(st["chunks"], 0, "{lie:?}: {st}");
        }
        me.ok(&["verify", "--read-data"]);
        let st: serde_json::Value =
            serde_json::from_str(&me.ok(&["daemon", "status", "--json"])).unwrap();
        assert_eq!(
            st["peer_refused"], 1,
            "{lie:?}: the refusal is counted: {st}"
        );
        // The count is kept in the store: a restarted daemon still shows it.
        me.kill_daemon();
        me.ok(&["daemon", "start"]);
        let st: serde_json::Value =
            serde_json::from_str(&me.ok(&["daemon", "status", "--json"])).unwrap();
        assert_eq!(st["peer_refused"], 1, "{lie:?}: after a restart: {st}");
    }
}

#[test]
fn a_new_version_travels_as_a_delta_against_the_one_the_receiver_has() {
    let hub = Env::new();
    let url = hub.start_hub();
    let ro = hub.token(false);
    let v1 = data(4_000_000, 21, true);
    // Edited everywhere: no chunk survives, but it is very like v1.
    let mut v2 = v1.clone();
    for i in (500..v2.len()).step_by(3000) {
        v2[i] = b'#';
    }
    std::fs::write(hub.path("v1.csv"), &v1).unwrap();
    std::fs::write(hub.path("v2.csv"), &v2).unwrap();
    let o1 = oid_of(&hub, &hub.path("v1.csv"));
    let o2 = oid_of(&hub, &hub.path("v2.csv"));

    let c = Env::new();
    c.ok(&["remote", "add", "origin", &url, "--token", &ro]);
    let s1 = summary(&c, &["fetch", &o1]);
    let s2 = summary(&c, &["fetch", &o2]);
    let (b1, b2) = (s1["bytes"].as_u64().unwrap(), s2["bytes"].as_u64().unwrap());
    assert!(
        b2 * 4 < b1,
        "v2 should travel as a small delta: v1 {b1} bytes, v2 {b2} bytes"
    );
    assert_eq!(c.run(&["cat", &o2]).stdout, v2);
    c.ok(&["verify", "--read-data"]);

    // The same the other way: pushing v2 to a hub that has v1 sends the
    // delta the pusher stores, checked and stored as it came.
    let hub2 = Env::new();
    let url2 = hub2.start_hub();
    let rw = hub2.token(true);
    let p = Env::new();
    std::fs::write(p.path("v1.csv"), &v1).unwrap();
    std::fs::write(p.path("v2.csv"), &v2).unwrap();
    assert_eq!(oid_of(&p, &p.path("v1.csv")), o1);
    assert_eq!(oid_of(&p, &p.path("v2.csv")), o2);
    p.ok(&["remote", "add", "origin", &url2, "--token", &rw]);
    let s1 = summary(&p, &["push", &o1]);
    let s2 = summary(&p, &["push", &o2]);
    let (b1, b2) = (s1["bytes"].as_u64().unwrap(), s2["bytes"].as_u64().unwrap());
    eprintln!("pushed v1 {b1} bytes, v2 {b2} bytes");
    assert!(
        b2 * 4 < b1,
        "v2 should be pushed as a small delta: v1 {b1} bytes, v2 {b2} bytes"
    );
    assert_eq!(s2["files"], 1, "{s2}");
    assert_eq!(hub2.run(&["cat", &o2]).stdout, v2);
    hub2.ok(&["verify", "--read-data"]);
}

#[test]
fn a_fetch_whose_daemon_is_killed_resumes_without_fetching_again_what_arrived() {
    let hub = Env::new();
    let url = hub.start_hub();
    let ro = hub.token(false);
    let content = data(200 << 20, 8, false);
    std::fs::write(hub.path("big.bin"), &content).unwrap();
    let oid = oid_of(&hub, &hub.path("big.bin"));

    let c = Env::new();
    c.ok(&["remote", "add", "origin", &url, "--token", &ro]);
    c.ok(&["daemon", "start"]);
    let child = c
        .hoard()
        .args(["fetch", &oid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_pack(&c);
    c.kill_daemon();
    let o = common::wait_output(child, std::time::Duration::from_secs(120), "fetch");
    assert!(
        !o.status.success(),
        "the fetch should have failed with its daemon"
    );

    // The next command starts the daemon again; the fetch resumes.
    let s = summary(&c, &["fetch", &oid]);
    assert_eq!(s["files"], 1, "{s}");
    assert!(
        s["bytes"].as_u64().unwrap() < content.len() as u64,
        "everything was fetched again: {s}"
    );
    c.ok(&["verify", "--read-data"]);
    assert!(
        c.run(&["cat", &oid]).stdout == content,
        "content differs after resuming"
    );
}

#[test]
fn a_one_percent_edit_of_a_1_gb_file_moves_about_the_changed_chunks() {
    const SIZE: usize = 1_000_000_000;
    const EDITS: usize = 100;
    const EDIT: usize = 100_000; // 100 × 100 kB = 1 %
    let hub = Env::new();
    let url = hub.start_hub();
    let (rw, ro) = (hub.token(true), hub.token(false));
    let a = Env::new();
    a.ok(&["remote", "add", "origin", &url, "--token", &rw]);
    let c = Env::new();
    c.ok(&["remote", "add", "origin", &url, "--token", &ro]);

    // Incompressible, so bytes on the wire are the changed content itself.
    let v1 = data(SIZE, 41, false);
    std::fs::write(a.path("v1.bin"), &v1).unwrap();
    let o1 = oid_of(&a, &a.path("v1.bin"));
    let mut v2 = v1;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..EDITS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % (SIZE - EDIT) as u64) as usize;
        for b in &mut v2[at..at + EDIT] {
            *b = b.wrapping_add(1);
        }
    }
    std::fs::write(a.path("v2.bin"), &v2).unwrap();
    let o2 = oid_of(&a, &a.path("v2.bin"));

    let s1 = summary(&a, &["push", &o1]);
    assert!(s1["bytes"].as_u64().unwrap() >= SIZE as u64, "{s1}");
    let changed = (EDITS * EDIT) as u64;
    // Each edit also rewrites the chunks it starts and ends in (64 KiB on
    // average), so the new chunks hold a little more than the edit.
    let bound = changed + (EDITS as u64) * 4 * (64 << 10);
    let s2 = summary(&a, &["push", &o2]);
    let pushed = s2["bytes"].as_u64().unwrap();
    assert!(
        pushed >= changed && pushed <= bound,
        "pushed {pushed} bytes for {changed} changed: {s2}"
    );
    assert!(
        s2["chunks_skipped"].as_u64().unwrap() > 10 * s2["chunks_sent"].as_u64().unwrap(),
        "{s2}"
    );

    // A second daemon with v1 fetches v2: again about the changed chunks.
    summary(&c, &["fetch", &o1]);
    let f2 = summary(&c, &["fetch", &o2]);
    let fetched = f2["bytes"].as_u64().unwrap();
    assert!(
        fetched >= changed && fetched <= bound,
        "fetched {fetched} bytes for {changed} changed: {f2}"
    );
    eprintln!("1 % of 1 GB edited ({changed} bytes): pushed {pushed}, fetched {fetched}");
    assert_eq!(c.run(&["cat", &o2]).stdout, v2);
    // And a rerun moves nothing.
    let again = summary(&c, &["fetch", &o2]);
    assert_eq!(again["chunks_sent"], 0, "{again}");
}

#[test]
fn a_hostile_pusher_is_refused_and_nothing_it_sent_is_stored() {
    use hoard_proto::v1::{self as pb, peer_client::PeerClient};
    let hub = Env::new();
    let url = hub.start_hub();
    let rw = hub.token(true);
    let chunk = data(20_000, 77, false);
    let id = blake3::hash(&chunk).as_bytes().to_vec();
    let raw = |ids: Vec<Vec<u8>>, lens: Vec<u32>| pb::FramePlanEntry {
        frame: Vec::new(),
        codec: 0, // raw
        raw_len: lens.iter().sum(),
        stored_len: lens.iter().sum(),
        bases: Vec::new(),
        chunk_offsets: lens
            .iter()
            .scan(0, |at, l| {
                let o = *at;
                *at += l;
                Some(o)
            })
            .collect(),
        chunk_ids: ids,
        chunk_lens: lens,
    };
    let mut wrong = chunk.clone();
    wrong[0] ^= 1;
    let cases: Vec<(&str, pb::FramePut)> = vec![
        (
            "bytes that do not hash to the chunk id",
            pb::FramePut {
                plan: Some(raw(vec![id.clone()], vec![chunk.len() as u32])),
                payload: wrong.into(),
            },
        ),
        (
            "a payload shorter than planned",
            pb::FramePut {
                plan: Some(raw(vec![id.clone()], vec![chunk.len() as u32])),
                payload: chunk[..100].to_vec().into(),
            },
        ),
        (
            "a delta against a base the hub lacks",
            pb::FramePut {
                plan: Some(pb::FramePlanEntry {
                    codec: 2,
                    bases: vec![vec![7; 32]],
                    ..raw(vec![id.clone()], vec![chunk.len() as u32])
                }),
                payload: chunk.clone().into(),
            },
        ),
        (
            "a chunk outside its frame",
            pb::FramePut {
                plan: Some(pb::FramePlanEntry {
                    chunk_offsets: vec![1],
                    ..raw(vec![id.clone()], vec![chunk.len() as u32])
                }),
                payload: chunk.clone().into(),
            },
        ),
        (
            "no plan",
            pb::FramePut {
                plan: None,
                payload: chunk.clone().into(),
            },
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (what, msg) in cases {
        let err = rt.block_on(async {
            let mut c = PeerClient::connect(url.clone()).await.unwrap();
            let mut req = tonic::Request::new(tokio_stream::iter(vec![msg]));
            req.metadata_mut()
                .insert("authorization", format!("Bearer {rw}").parse().unwrap());
            c.put_frames(req).await.expect_err(what)
        });
        assert!(err.message().contains("refused"), "{what}: {err:?}");
        let st: serde_json::Value = serde_json::from_str(&hub.ok(&["stats", "--json"])).unwrap();
        assert_eq!(st["chunks"], 0, "{what}: {st}");
    }
    hub.ok(&["verify", "--read-data"]);
    let st: serde_json::Value =
        serde_json::from_str(&hub.ok(&["daemon", "status", "--json"])).unwrap();
    assert_eq!(st["peer_refused"], 5, "{st}");

    // An honest frame sent twice is stored once; the second reply says the
    // hub had it.
    for (stored, had) in [(1, 0), (0, 1)] {
        let reply = rt.block_on(async {
            let mut c = PeerClient::connect(url.clone()).await.unwrap();
            let msg = pb::FramePut {
                plan: Some(raw(vec![id.clone()], vec![chunk.len() as u32])),
                payload: chunk.clone().into(),
            };
            let mut req = tonic::Request::new(tokio_stream::iter(vec![msg]));
            req.metadata_mut()
                .insert("authorization", format!("Bearer {rw}").parse().unwrap());
            c.put_frames(req).await.unwrap().into_inner()
        });
        assert_eq!((reply.stored, reply.already_had), (stored, had));
    }
    let st: serde_json::Value = serde_json::from_str(&hub.ok(&["stats", "--json"])).unwrap();
    assert_eq!(st["chunks"], 1, "{st}");
    hub.ok(&["verify", "--read-data"]);
}
