//! The pack reader (daemon/src/pack/format.rs): `Scanner` over a whole
//! pack, the record header and meta decoders, and `decompress`.
//!
//! The first byte picks a mode (low 2 bits):
//! - 0: the rest, as it is, is a pack file (bit 2: keep payloads);
//! - 1: the rest describes records, and the harness writes them as a pack
//!   with correct header checks, payload sums, trailer and pack id (bit 2:
//!   version 1, bit 3: keep payloads), so the scan gets past the BLAKE3
//!   checks a fuzzer cannot forge;
//! - 2: `decompress(codec, payload, raw_len, dict)` with raw_len at most
//!   1 MiB, and the compressors' round trips;
//! - 3: `decode_header`/`check_header` on one header and meta.
//!
//! Checks: no panic, no allocation beyond what the input (or a 1 MiB
//! raw_len) justifies (libFuzzer's -malloc_limit_mb/-rss_limit_mb catch
//! the rest); every meta that decodes re-encodes to itself; a decompressed
//! payload has exactly raw_len bytes; compress/decompress round-trip;
//! `finish` agrees with the records counted; a fixed-up pack with intact
//! payloads scans to its end and proves its pack id.
#![no_main]

use hoard_daemon::manifest::Manifest;
use hoard_daemon::objects::{decode_checked, ObjectKind};
use hoard_daemon::pack::format::{
    self, check_header, compress_if_smaller, compress_with_dict, decode_frame_meta,
    decode_header, decode_manifest_meta, decode_object_meta, decompress, encode_frame_meta,
    encode_header, encode_manifest_meta, encode_object_meta, encode_trailer_prefix, payload_sum,
    Codec, Header, Kind, Scanner, Version,
};
use hoard_daemon::Id;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

/// Largest raw_len handed to `decompress` (it allocates raw_len bytes).
const CAP: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode & 3 {
        0 => {
            scan(rest, mode & 4 != 0);
        }
        1 => {
            let v = if mode & 4 != 0 { Version::V1 } else { Version::V2 };
            let (pack, intact) = build_pack(rest, v);
            let end = scan(&pack, mode & 8 != 0);
            if intact {
                assert!(end.is_some(), "a well-formed pack did not scan to its end");
            }
        }
        2 => codecs(rest),
        _ => headers(rest),
    }
});

/// Scans `pack`; `Some(records)` when the scan and `finish` succeeded.
fn scan(pack: &[u8], keep: bool) -> Option<u32> {
    let mut s = Scanner::new(Cursor::new(pack), pack.len() as u64, keep).ok()?;
    let mut dict = Vec::new();
    let mut n = 0u32;
    loop {
        match s.next_record() {
            Ok(Some(rec)) => {
                n += 1;
                let h = rec.header;
                assert!(
                    rec.payload_offset() + h.stored_len as u64 <= pack.len() as u64,
                    "a record reaching past the pack"
                );
                check_meta(h.kind, h.codec, h.raw_len, &rec.meta, rec.offset);
                if let Some(p) = &rec.payload {
                    assert_eq!(p.len(), h.stored_len as usize);
                    assert_eq!(rec.payload_intact.is_some(), h.payload_sum.is_some());
                    if rec.payload_intact == Some(true) {
                        assert_eq!(Some(payload_sum(p)), h.payload_sum);
                    }
                    payload(&h, &rec.meta, p, rec.offset, &mut dict);
                } else {
                    assert!(!keep, "payload not kept");
                }
            }
            Ok(None) => break,
            Err(_) => return None,
        }
    }
    let end = s.finish().ok()?;
    assert_eq!(end.records, n);
    Some(n)
}

/// Decodes a record's meta; whatever decodes re-encodes to the same bytes.
fn check_meta(kind: Kind, codec: Codec, raw_len: u32, meta: &[u8], offset: u64) {
    match kind {
        Kind::Frame => {
            if let Ok(m) = decode_frame_meta(meta, raw_len, codec, offset) {
                assert_eq!(encode_frame_meta(&m.chunks, &m.bases), meta);
                assert!(m.bases.len() <= format::MAX_BASES);
                assert_eq!(codec == Codec::ZstdDict, !m.bases.is_empty());
                assert_eq!(m.chunks.iter().map(|c| c.1 as u64).sum::<u64>(), raw_len as u64);
            }
        }
        Kind::Manifest => {
            if let Ok((file, hash)) = decode_manifest_meta(meta, offset) {
                assert_eq!(encode_manifest_meta(&file, &hash), meta);
            }
        }
        Kind::Object => {
            if let Ok((k, id)) = decode_object_meta(meta, offset) {
                assert_eq!(encode_object_meta(k, &id), meta);
            }
        }
    }
}

/// What a reader does with a payload: decompress it (raw_len capped), then
/// check chunks, decode a manifest or an object. The last frame's raw
/// bytes serve as the dictionary of a codec 2 frame.
fn payload(h: &Header, meta: &[u8], p: &[u8], offset: u64, dict: &mut Vec<u8>) {
    if h.raw_len > CAP {
        return;
    }
    let Ok(raw) = decompress(h.codec, p, h.raw_len, dict, offset) else {
        return;
    };
    assert_eq!(raw.len(), h.raw_len as usize);
    match h.kind {
        Kind::Frame => {
            if let Ok(m) = decode_frame_meta(meta, h.raw_len, h.codec, offset) {
                let mut at = 0usize;
                for (id, len) in &m.chunks {
                    let c = &raw[at..at + *len as usize];
                    let _ = Id::of(c) == *id;
                    at += *len as usize;
                }
                assert_eq!(at, raw.len());
            }
            *dict = raw;
        }
        Kind::Manifest => {
            if let Ok(m) = Manifest::decode(&raw) {
                assert_eq!(m.encode(), raw);
            }
        }
        Kind::Object => {
            if let Ok((k, id)) = decode_object_meta(meta, offset) {
                if let Some(kind) = ObjectKind::from_u8(k) {
                    let _ = decode_checked(kind, &id, &raw);
                }
            }
        }
    }
}

/// A pack of the records `b` describes, each as
/// `kind u8 codec u8 meta_len u16 raw_len u32 stored_len u32` then its
/// meta and payload (lengths cut to what is left); bit 7 of `kind` breaks
/// that record's payload sum. Returns the pack and whether every payload
/// sum is right.
fn build_pack(mut b: &[u8], v: Version) -> (Vec<u8>, bool) {
    let mut pack = match v {
        Version::V1 => format::MAGIC_V1.to_vec(),
        Version::V2 => format::MAGIC.to_vec(),
    };
    // The pack id covers all but the payloads in version 2, all in version 1.
    let mut hashed = blake3::Hasher::new();
    hashed.update(&pack);
    let mut records = 0u32;
    let mut intact = true;
    while b.len() >= 12 && records < 64 {
        let (d, r) = b.split_at(12);
        b = r;
        let kind = match d[0] & 3 {
            0 => Kind::Frame,
            1 => Kind::Manifest,
            _ => Kind::Object,
        };
        let broken = d[0] & 0x80 != 0 && v == Version::V2;
        let codec = match d[1] % 3 {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            _ => Codec::ZstdDict,
        };
        let meta_len = (u16::from_le_bytes([d[2], d[3]]) as usize).min(b.len());
        let (meta, r) = b.split_at(meta_len);
        b = r;
        let stored_len =
            (u32::from_le_bytes([d[8], d[9], d[10], d[11]]) as usize).min(b.len());
        let (p, r) = b.split_at(stored_len);
        b = r;
        let raw_len = if codec == Codec::Raw {
            stored_len as u32
        } else {
            u32::from_le_bytes([d[4], d[5], d[6], d[7]]) % (CAP + 1)
        };
        let h = Header {
            kind,
            codec,
            meta_len: meta_len as u32,
            raw_len,
            stored_len: stored_len as u32,
            payload_sum: Some(payload_sum(p) ^ broken as u64),
        };
        intact &= !broken;
        let hb: Vec<u8> = match v {
            Version::V2 => encode_header(&h, meta).to_vec(),
            Version::V1 => {
                // encode_header writes version 2 only: the 24-byte layout
                // of the module documentation.
                let mut x = [0u8; 24];
                x[0..4].copy_from_slice(match kind {
                    Kind::Frame => b"FRM1",
                    Kind::Manifest => b"MAN1",
                    Kind::Object => b"OBJ1",
                });
                x[4] = codec as u8;
                x[8..12].copy_from_slice(&h.meta_len.to_le_bytes());
                x[12..16].copy_from_slice(&h.raw_len.to_le_bytes());
                x[16..20].copy_from_slice(&h.stored_len.to_le_bytes());
                let mut c = blake3::Hasher::new();
                c.update(&x[..20]);
                c.update(meta);
                x[20..24].copy_from_slice(&c.finalize().as_bytes()[..4]);
                x.to_vec()
            }
        };
        pack.extend_from_slice(&hb);
        pack.extend_from_slice(meta);
        pack.extend_from_slice(p);
        hashed.update(&hb);
        hashed.update(meta);
        if v == Version::V1 {
            hashed.update(p);
        }
        records += 1;
    }
    let t = encode_trailer_prefix(records);
    pack.extend_from_slice(&t);
    hashed.update(&t);
    pack.extend_from_slice(hashed.finalize().as_bytes());
    (pack, intact)
}

/// `codec u8 raw_len u32 dict_len u16 dict payload`.
fn codecs(b: &[u8]) {
    if b.len() < 7 {
        return;
    }
    let codec = Codec::from_u8(b[0] % 4);
    let raw_len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) % (CAP + 1);
    let dict_len = (u16::from_le_bytes([b[5], b[6]]) as usize).min(b.len() - 7);
    let (dict, p) = b[7..].split_at(dict_len);
    if let Some(codec) = codec {
        match decompress(codec, p, raw_len, dict, 0) {
            Ok(out) => {
                assert_eq!(out.len(), raw_len as usize);
                if codec == Codec::Raw {
                    assert_eq!(out, p);
                }
            }
            Err(_) => assert!(codec != Codec::Raw || p.len() != raw_len as usize),
        }
    }
    if let Some(z) = compress_if_smaller(p, 1) {
        assert!(z.len() < p.len());
        let back = decompress(Codec::Zstd, &z, p.len() as u32, &[], 0).expect("zstd round trip");
        assert_eq!(back, p);
    }
    if let Some(z) = compress_with_dict(p, 1, dict) {
        assert!(z.len() < p.len());
        let back =
            decompress(Codec::ZstdDict, &z, p.len() as u32, dict, 0).expect("delta round trip");
        assert_eq!(back, p);
    }
}

/// One header (version by the first byte) and the meta after it.
fn headers(b: &[u8]) {
    let Some((&sel, b)) = b.split_first() else {
        return;
    };
    let v = if sel & 1 == 0 { Version::V2 } else { Version::V1 };
    let hl = v.header_len();
    if b.len() < hl {
        return;
    }
    let (hb, meta) = b.split_at(hl);
    let Ok(h) = decode_header(hb, v, 7) else {
        return;
    };
    assert_eq!(h.payload_sum.is_some(), v == Version::V2);
    assert!(h.codec != Codec::Raw || h.raw_len == h.stored_len);
    assert!(h.meta_len <= format::MAX_META && h.raw_len <= format::MAX_RAW);
    let checked = check_header(hb, meta, 7).is_ok();
    if v == Version::V2 {
        let again = encode_header(&h, meta);
        assert_eq!(&again[..28], &hb[..28], "header does not re-encode");
        assert!(check_header(&again, meta, 7).is_ok());
        assert_eq!(checked, again[..] == hb[..]);
        assert_eq!(decode_header(&again, v, 7).unwrap(), h);
    }
    check_meta(h.kind, h.codec, h.raw_len, meta, 7);
}
