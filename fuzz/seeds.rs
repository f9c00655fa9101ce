//! Seed inputs for every target, written by the peer_uploads harness when
//! HOARD_FUZZ_WRITE_SEEDS=<dir> is set (so they are made by the code they
//! feed, with real BLAKE3 ids), and the content the peer_uploads store is
//! given before fuzzing starts, so that valid seeds get past every check.

use hoard_daemon::manifest::Manifest;
use hoard_daemon::objects::{Entry, Snapshot, Tree};
use hoard_daemon::pack::format::{compress_if_smaller, compress_with_dict, encode_header};
use hoard_daemon::sync::uploads;
use hoard_daemon::{Id, Store};
use hoard_proto::v1 as pb;
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

pub const PEER: &str = "fuzz-peer";

/// Half compressible text-like bytes, half noise (as testutil's `noise`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 1000) % 2 == 0 {
                b"abcdefgh"[(x % 8) as usize]
            } else {
                x as u8
            }
        })
        .collect()
}

/// Chunks the store holds before fuzzing: A and B (also the two halves
/// of file AB, whose manifest is not recorded: a seed sends it), and LINK,
/// a symbolic link's target. A and LINK are also whole files.
fn chunk_a() -> Vec<u8> {
    noise(3000, 1)
}
fn chunk_b() -> Vec<u8> {
    noise(2000, 2)
}
const LINK: &[u8] = b"../some/target";

fn chunk(data: &[u8]) -> pb::ChunkData {
    pb::ChunkData {
        id: Id::of(data).0.to_vec(),
        data: data.to_vec().into(),
    }
}

fn piece(file: &[u8], chunks: &[&[u8]], last: bool, size: u64) -> pb::ManifestPiece {
    pb::ManifestPiece {
        file: Id::of(file).0.to_vec(),
        size,
        chunk_ids: chunks.iter().map(|c| Id::of(c).0.to_vec()).collect(),
        chunk_lens: chunks.iter().map(|c| c.len() as u32).collect(),
        last,
    }
}

fn feed<T>(v: Vec<T>) -> impl FnMut() -> hoard_daemon::Result<Option<T>> {
    let mut it = v.into_iter();
    move || Ok(it.next())
}

/// Gives `store` the content the seeds refer to.
pub fn populate(store: &Store) {
    let (a, b) = (chunk_a(), chunk_b());
    let batch = pb::ChunkBatch {
        chunks: vec![chunk(&a), chunk(&b), chunk(LINK)],
    };
    uploads::chunks(store, PEER, &mut feed(vec![batch])).expect("seed chunks");
    let files = vec![
        piece(&a, &[&a], true, a.len() as u64),
        piece(LINK, &[LINK], true, LINK.len() as u64),
    ];
    uploads::manifests(store, PEER, &mut feed(files)).expect("seed manifests");
}

fn stream<T: Message>(sel: u8, msgs: &[T]) -> Vec<u8> {
    let mut b = vec![sel];
    for m in msgs {
        b.extend_from_slice(&m.encode_length_delimited_to_vec());
    }
    b
}

fn raw_frame(chunks: &[&[u8]]) -> pb::FramePut {
    let raw: Vec<u8> = chunks.concat();
    let mut offsets = Vec::new();
    let mut at = 0u32;
    for c in chunks {
        offsets.push(at);
        at += c.len() as u32;
    }
    pb::FramePut {
        plan: Some(pb::FramePlanEntry {
            frame: Vec::new(),
            codec: 0,
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
            bases: Vec::new(),
            chunk_ids: chunks.iter().map(|c| Id::of(c).0.to_vec()).collect(),
            chunk_offsets: offsets,
            chunk_lens: chunks.iter().map(|c| c.len() as u32).collect(),
        }),
        payload: raw.into(),
    }
}

fn objects() -> (Tree, Tree, Snapshot, Snapshot) {
    let a = chunk_a();
    let sub = Tree::new(vec![Entry::file(b"x".to_vec(), Id::of(&a), a.len() as u64, true)])
        .expect("subtree");
    let root = Tree::new(vec![
        Entry::file(b"a.bin".to_vec(), Id::of(&a), a.len() as u64, false),
        Entry::symlink(b"link".to_vec(), Id::of(LINK), LINK.len() as u64),
        Entry::dir(b"sub".to_vec(), sub.id(), sub.total_size()),
    ])
    .expect("root tree");
    let s1 = Snapshot {
        tree: root.id(),
        size: root.total_size(),
        files: 3,
        time_ns: 1_700_000_000_000_000_000,
        dataset: "fuzz".into(),
        parents: Vec::new(),
        derived: Vec::new(),
        message: "first".into(),
        meta: BTreeMap::from([("k".to_string(), "v".to_string())]),
    };
    let mut s2 = s1.clone();
    s2.parents = vec![s1.id()];
    s2.derived = vec![s1.id()];
    s2.message = "second".into();
    s2.meta.clear();
    (sub, root, s1, s2)
}

fn object(kind: u32, data: Vec<u8>) -> pb::Object {
    pb::Object {
        id: Id::of(&data).0.to_vec(),
        kind,
        data,
    }
}

/// Pointer text (client/src/git/pointer.rs's format).
fn pointer_text(content: &[u8]) -> String {
    format!(
        "version hoard/1\noid blake3:{}\nsize {}\n",
        Id::of(content).hex(),
        content.len()
    )
}

fn pkt(text: &[u8]) -> Vec<u8> {
    let mut b = format!("{:04x}", text.len() + 4).into_bytes();
    b.extend_from_slice(text);
    b
}

fn pkts(lines: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    for l in lines {
        if l.is_empty() {
            b.extend_from_slice(b"0000");
        } else {
            b.extend_from_slice(&pkt(l));
        }
    }
    b
}

/// Writes every target's seeds under `out/<target>/seed-<name>`; `store_dir`
/// is the populated store's directory (its packs seed `pack_scan`).
pub fn write_all(out: &Path, _store: &Store, store_dir: &Path) {
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let (a, b) = (chunk_a(), chunk_b());
    let ab = [a.as_slice(), b.as_slice()].concat();

    // pointer
    let ptr = pointer_text(&ab);
    seeds.push(("pointer", "canonical", ptr.clone().into_bytes()));
    seeds.push(("pointer", "empty-file", pointer_text(b"").into_bytes()));
    seeds.push((
        "pointer",
        "git-lfs",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n".to_vec(),
    ));

    // objects
    let (sub, root, s1, s2) = objects();
    seeds.push(("objects", "tree", root.encode()));
    seeds.push(("objects", "subtree", sub.encode()));
    seeds.push(("objects", "empty-tree", Tree::default().encode()));
    seeds.push(("objects", "snapshot", s1.encode()));
    seeds.push(("objects", "snapshot-parents", s2.encode()));

    // manifest
    let m = Manifest {
        size: ab.len() as u64,
        chunks: vec![(Id::of(&a), a.len() as u32), (Id::of(&b), b.len() as u32)],
    };
    seeds.push(("manifest", "two-chunks", m.encode()));
    seeds.push(("manifest", "empty", Manifest::default().encode()));

    // pack_scan, mode 0: the store's own packs as they are.
    let mut packs = Vec::new();
    for e in walk(&store_dir.join("packs")) {
        if let Ok(p) = std::fs::read(&e) {
            if p.starts_with(b"HOARDPK") && p.len() < 32 << 10 {
                packs.push(p);
            }
        }
    }
    packs.sort();
    for (i, p) in packs.iter().enumerate().take(2) {
        let mut keep = vec![4u8];
        keep.extend_from_slice(p);
        seeds.push(("pack_scan", if i == 0 { "pack-0" } else { "pack-1" }, keep));
        // The first record header and its meta, for mode 3.
        if i == 0 && p.len() > 40 {
            let meta_len = u32::from_le_bytes(p[16..20].try_into().unwrap()) as usize;
            let end = (40 + meta_len).min(p.len());
            let mut h = vec![3u8, 0u8];
            h.extend_from_slice(&p[8..end]);
            seeds.push(("pack_scan", "header", h));
        }
    }
    // pack_scan, mode 1: records the harness writes as a pack.
    let desc = |kind: u8, codec: u8, meta: &[u8], raw_len: u32, payload: &[u8]| {
        let mut d = vec![kind, codec];
        d.extend_from_slice(&(meta.len() as u16).to_le_bytes());
        d.extend_from_slice(&raw_len.to_le_bytes());
        d.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        d.extend_from_slice(meta);
        d.extend_from_slice(payload);
        d
    };
    let frame_meta = |chunks: &[&[u8]]| {
        let mut m = Vec::new();
        for c in chunks {
            m.extend_from_slice(&Id::of(c).0);
            m.extend_from_slice(&(c.len() as u32).to_le_bytes());
        }
        m
    };
    let small_a = &a[..300];
    let small_b = &b[..200];
    let menc = Manifest {
        size: (small_a.len() + small_b.len()) as u64,
        chunks: vec![
            (Id::of(small_a), small_a.len() as u32),
            (Id::of(small_b), small_b.len() as u32),
        ],
    }
    .encode();
    let file = [small_a, small_b].concat();
    let mut mmeta = Id::of(&file).0.to_vec();
    mmeta.extend_from_slice(&Id::of(&menc).0);
    let tenc = sub.encode();
    let mut ometa = vec![1u8];
    ometa.extend_from_slice(&Id::of(&tenc).0);
    let text: Vec<u8> = noise(900, 7);
    let z = compress_if_smaller(&text, 1).expect("compressible");
    let mut built = vec![1u8];
    built.extend(desc(0, 0, &frame_meta(&[small_a, small_b]), 0, &file));
    built.extend(desc(0, 1, &frame_meta(&[&text]), text.len() as u32, &z));
    built.extend(desc(1, 0, &mmeta, 0, &menc));
    built.extend(desc(2, 0, &ometa, 0, &tenc));
    seeds.push(("pack_scan", "records-v2", built.clone()));
    built[0] = 1 | 4 | 8;
    seeds.push(("pack_scan", "records-v1", built));
    // pack_scan, mode 2: codec, raw_len, dict, payload.
    let codec_seed = |codec: u8, raw_len: usize, dict: &[u8], payload: &[u8]| {
        let mut s = vec![2u8, codec];
        s.extend_from_slice(&(raw_len as u32).to_le_bytes());
        s.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        s.extend_from_slice(dict);
        s.extend_from_slice(payload);
        s
    };
    seeds.push(("pack_scan", "zstd", codec_seed(1, text.len(), &[], &z)));
    let mut changed = text.clone();
    changed[100] ^= 0x55;
    changed.extend_from_slice(b"more");
    if let Some(d) = compress_with_dict(&changed, 1, &text) {
        seeds.push(("pack_scan", "delta", codec_seed(2, changed.len(), &text, &d)));
    }
    seeds.push(("pack_scan", "raw", codec_seed(0, 5, &[], b"hello")));
    let _ = encode_header; // the header seed above comes from a real pack

    // filter_protocol
    let hello: Vec<&[u8]> = vec![
        b"git-filter-client\n",
        b"version=2\n",
        b"",
        b"capability=clean\n",
        b"capability=smudge\n",
        b"capability=delay\n",
        b"",
    ];
    let mut conv = pkts(&hello);
    conv.extend(pkts(&[b"command=smudge\n", b"pathname=a.bin\n", b"can-delay=1\n", b""]));
    conv.extend(pkts(&[ptr.as_bytes(), b""]));
    conv.extend(pkts(&[b"command=clean\n", b"pathname=b.txt\n", b""]));
    conv.extend(pkts(&[ptr.as_bytes(), b""]));
    conv.extend(pkts(&[b"command=smudge\n", b"pathname=c.txt\n", b""]));
    conv.extend(pkts(&[b"not a pointer\n", b"more content", b""]));
    conv.extend(pkts(&[b"command=clean\n", b"pathname=empty\n", b"", b""]));
    conv.extend(pkts(&[b"command=list_available_blobs\n", b""]));
    seeds.push(("filter_protocol", "conversation", conv));
    seeds.push(("filter_protocol", "handshake", pkts(&hello)));

    // peer_uploads
    let c = noise(1500, 3);
    seeds.push((
        "peer_uploads",
        "chunks-new",
        stream(0, &[pb::ChunkBatch { chunks: vec![chunk(&c)] }]),
    ));
    let mut wrong = chunk(&noise(800, 8));
    wrong.id = Id::of(b"something else").0.to_vec();
    seeds.push((
        "peer_uploads",
        "chunks-had-then-bad",
        stream(
            0,
            &[
                pb::ChunkBatch { chunks: vec![chunk(&a)] },
                pb::ChunkBatch { chunks: vec![wrong.clone()] },
            ],
        ),
    ));
    seeds.push((
        "peer_uploads",
        "chunks-fixed",
        stream(4, &[pb::ChunkBatch { chunks: vec![wrong] }]),
    ));
    let (d, e) = (noise(1000, 4), noise(700, 5));
    seeds.push(("peer_uploads", "frames-raw", stream(1, &[raw_frame(&[&d, &e])])));
    let mut bad = raw_frame(&[&noise(600, 10)]);
    if let Some(p) = bad.plan.as_mut() {
        p.chunk_ids[0] = vec![0; 32];
    }
    seeds.push(("peer_uploads", "frames-fixed", stream(5, &[bad])));
    let f = noise(4000, 6);
    let fz = compress_if_smaller(&f, 1).expect("compressible");
    let mut zf = raw_frame(&[&f[..2500], &f[2500..]]);
    if let Some(p) = zf.plan.as_mut() {
        p.codec = 1;
        p.stored_len = fz.len() as u32;
    }
    zf.payload = fz.into();
    seeds.push(("peer_uploads", "frames-zstd", stream(1, &[zf])));
    let mut new = a.clone();
    new[10..20].copy_from_slice(b"0123456789");
    if let Some(dz) = compress_with_dict(&new, 1, &a) {
        let mut df = raw_frame(&[&new]);
        if let Some(p) = df.plan.as_mut() {
            p.codec = 2;
            p.stored_len = dz.len() as u32;
            p.bases = vec![Id::of(&a).0.to_vec()];
        }
        df.payload = dz.into();
        seeds.push(("peer_uploads", "frames-delta", stream(1, &[df])));
    }
    seeds.push((
        "peer_uploads",
        "manifests-two-pieces",
        stream(
            2,
            &[
                piece(&ab, &[&a], false, ab.len() as u64),
                piece(&ab, &[&b], true, ab.len() as u64),
            ],
        ),
    ));
    let batch1 = pb::ObjectBatch {
        objects: vec![
            object(1, sub.encode()),
            object(1, root.encode()),
            object(2, s1.encode()),
        ],
    };
    let batch2 = pb::ObjectBatch {
        objects: vec![object(2, s2.encode())],
    };
    seeds.push((
        "peer_uploads",
        "objects",
        stream(3, &[batch1.clone(), batch2]),
    ));
    let mut zeroed = batch1;
    for o in &mut zeroed.objects {
        o.id = vec![0; 32];
    }
    seeds.push(("peer_uploads", "objects-fixed", stream(7, &[zeroed])));

    for (target, name, bytes) in seeds {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("seed directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
    }
    eprintln!("seeds written under {}", out.display());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
