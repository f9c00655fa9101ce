//! The RocksDB index — every key and value encoding is defined here.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `chunks` | chunk id | [`ChunkLoc`] (61 bytes) |
//! | `features` | lane u8 ‖ feature u64 BE | chunk id of a self-contained chunk with that feature |
//! | `files` | file id | [`FileHead`]: size, chunk count, segment start offsets |
//! | `files` | file id ‖ segment u32 BE | up to [`SEGMENT`] manifest entries |
//! | `packs` | pack id | [`PackInfo`] |
//! | `statcache` | absolute path bytes | [`StatEntry`] |
//! | `meta` | `stats` | [`Stats`] |
//! | `objects` | tree or snapshot id | kind u8 ‖ its encoding (`crate::objects`) |
//! | `refs` | ref name (`datasets/NAME`, `tags/NAME/TAG`) | snapshot id |
//! | `local` | `dataset/NAME`, `checkout/DIR` | this machine's state (JSON) |
//! | `leases` | chunk, file or object id | unix milliseconds (u64 LE) it was last written or said present |
//! | `records` | pack id ‖ record offset u64 BE | [`RecordAt`]: a manifest or object record in that pack |
//!
//! Everything but the stat cache, stats, refs, local state and leases can
//! be rebuilt from the packs. A lease is what keeps data a writer was told
//! is stored from being pruned under it (see `crate::prune`).
//! Related updates go in one [`rocksdb::WriteBatch`], which is atomic across
//! column families.
//!
//! Floor 3: may import `pack`, `manifest`, `id`, `error`; never the store
//! above it.

use crate::error::Result;
use crate::id::Id;
use crate::manifest::{decode_entries, encode_entries, Manifest};
use crate::pack::format::Codec;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;

pub const CF_CHUNKS: &str = "chunks";
pub const CF_FILES: &str = "files";
pub const CF_PACKS: &str = "packs";
pub const CF_STATCACHE: &str = "statcache";
pub const CF_META: &str = "meta";
pub const CF_FEATURES: &str = "features";
pub const CF_OBJECTS: &str = "objects";
pub const CF_REFS: &str = "refs";
pub const CF_LOCAL: &str = "local";
pub const CF_LEASES: &str = "leases";
pub const CF_RECORDS: &str = "records";
const ALL_CFS: [&str; 11] = [
    CF_CHUNKS,
    CF_FILES,
    CF_PACKS,
    CF_STATCACHE,
    CF_META,
    CF_FEATURES,
    CF_OBJECTS,
    CF_REFS,
    CF_LOCAL,
    CF_LEASES,
    CF_RECORDS,
];

/// Manifest entries per index segment: a range read loads one small
/// segment, never a whole 20 GB file's chunk list.
pub const SEGMENT: usize = 4096;

/// Where a chunk's bytes are: inside the payload of a frame in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack: Id,
    pub payload_offset: u64,
    /// Length of the frame's meta, which precedes the payload (a delta
    /// frame's meta names its bases).
    pub meta_len: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
    pub offset_in_frame: u32,
    pub len: u32,
    /// The frame's delta depth (`pack::format`: 0 unless a delta).
    pub depth: u8,
}

impl ChunkLoc {
    /// Encoded length (entries written before depths were: 61 bytes).
    const LEN: usize = 62;
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..32].copy_from_slice(&self.pack.0);
        b[32..40].copy_from_slice(&self.payload_offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.stored_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
        b[48] = self.codec as u8;
        b[49..53].copy_from_slice(&self.offset_in_frame.to_le_bytes());
        b[53..57].copy_from_slice(&self.len.to_le_bytes());
        b[57..61].copy_from_slice(&self.meta_len.to_le_bytes());
        b[61] = self.depth;
        b
    }
    pub fn decode(b: &[u8]) -> Option<ChunkLoc> {
        if b.len() != Self::LEN && b.len() != Self::LEN - 1 {
            return None;
        }
        let codec = Codec::from_u8(b[48])?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(ChunkLoc {
            pack: Id::from_slice(&b[..32])?,
            payload_offset: u64::from_le_bytes(b[32..40].try_into().ok()?),
            stored_len: u32_at(40),
            raw_len: u32_at(44),
            codec,
            offset_in_frame: u32_at(49),
            len: u32_at(53),
            meta_len: u32_at(57),
            depth: b
                .get(61)
                .copied()
                .unwrap_or((codec == Codec::ZstdDict).into()),
        })
    }
}

/// A file's manifest head: size, number of chunks, and the byte offset at
/// which each segment starts (for range reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    pub size: u64,
    pub chunks: u64,
    pub segment_starts: Vec<u64>,
}

impl FileHead {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + 8 * self.segment_starts.len());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.chunks.to_le_bytes());
        for s in &self.segment_starts {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }
    fn decode(b: &[u8]) -> Option<FileHead> {
        if b.len() < 16 || !b.len().is_multiple_of(8) {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(FileHead {
            size: u(0),
            chunks: u(8),
            segment_starts: (16..b.len()).step_by(8).map(u).collect(),
        })
    }

    /// The segment holding byte `offset` (which must be < size).
    pub fn segment_for(&self, offset: u64) -> usize {
        self.segment_starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    pub len: u64,
    pub records: u32,
}

impl PackInfo {
    fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..].copy_from_slice(&self.records.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<PackInfo> {
        Some(PackInfo {
            len: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            records: u32::from_le_bytes(b.get(8..12)?.try_into().ok()?),
        })
    }
}

/// A manifest (`kind` 0) or tree/snapshot (`kind` 1, 2: the object kind)
/// record of a pack: where it starts and how long it is, header included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub offset: u64,
    pub kind: u8,
    pub id: Id,
    pub len: u32,
}

/// `RecordAt::kind` of a manifest record.
pub const RECORD_MANIFEST: u8 = 0;

/// What a path looked like when its content was stored as `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub file: Id,
}

impl StatEntry {
    const LEN: usize = 72;
    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b[16..24].copy_from_slice(&self.ctime_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.ino.to_le_bytes());
        b[32..40].copy_from_slice(&self.dev.to_le_bytes());
        b[40..72].copy_from_slice(&self.file.0);
        b
    }
    fn decode(b: &[u8]) -> Option<StatEntry> {
        if b.len() != Self::LEN {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(StatEntry {
            size: u(0),
            mtime_ns: u(8) as i64,
            ctime_ns: u(16) as i64,
            ino: u(24),
            dev: u(32),
            file: Id::from_slice(&b[40..72])?,
        })
    }
}

/// Store-wide counters, kept in `meta` and updated in the same batch as the
/// data they count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub files: u64,
    pub packs: u64,
}

impl Stats {
    fn encode(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        for (i, v) in [
            self.logical_bytes,
            self.unique_bytes,
            self.stored_bytes,
            self.chunks,
            self.files,
            self.packs,
        ]
        .iter()
        .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
    fn decode(b: &[u8]) -> Option<Stats> {
        if b.len() != 48 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Some(Stats {
            logical_bytes: u(0),
            unique_bytes: u(1),
            stored_bytes: u(2),
            chunks: u(3),
            files: u(4),
            packs: u(5),
        })
    }
}

pub struct Index {
    db: DB,
}

fn corrupt_value(cf: &str, key: &[u8]) -> crate::error::Error {
    crate::error::Error::Corrupt(format!(
        "index entry in {cf} for {} is malformed; run `hoard reindex` to rebuild the index from the packs",
        hex::encode(&key[..key.len().min(32)])
    ))
}

impl Index {
    pub fn open(path: &Path) -> Result<Index> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        // Memory is bounded whatever is ingested: all memtables together,
        // and one block cache shared by every column family.
        opts.set_db_write_buffer_size(32 << 20);
        let cache = rocksdb::Cache::new_lru_cache(32 << 20);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            let mut bb = BlockBasedOptions::default();
            // Point lookups of absent keys (new chunks) skip the disk.
            bb.set_bloom_filter(10.0, false);
            bb.set_cache_index_and_filter_blocks(true);
            bb.set_block_cache(&cache);
            o.set_block_based_table_factory(&bb);
            // ... and the memtable: without a filter, each miss walks the
            // skip list (a cache miss per level, on random keys).
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.02);
            o.set_write_buffer_size(if *name == CF_CHUNKS || *name == CF_FILES {
                16 << 20
            } else {
                4 << 20
            });
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Index { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every CF in ALL_CFS is created at open.
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Looks up many chunks in one call; `None` where absent.
    pub fn chunk_locs(&self, ids: &[Id]) -> Result<Vec<Option<ChunkLoc>>> {
        let cf = self.cf(CF_CHUNKS);
        let res = self
            .db
            .batched_multi_get_cf(cf, ids.iter().map(|i| &i.0[..]), false);
        res.into_iter()
            .zip(ids)
            .map(|(r, id)| match r? {
                None => Ok(None),
                Some(v) => ChunkLoc::decode(&v)
                    .map(Some)
                    .ok_or_else(|| corrupt_value(CF_CHUNKS, &id.0)),
            })
            .collect()
    }

    /// For each (lane, feature), the self-contained chunk last seen with it.
    pub fn feature_hits(&self, keys: &[[u8; 9]]) -> Result<Vec<Option<Id>>> {
        let cf = self.cf(CF_FEATURES);
        let res = self
            .db
            .batched_multi_get_cf(cf, keys.iter().map(|k| &k[..]), false);
        res.into_iter()
            .map(|r| Ok(r?.and_then(|v| Id::from_slice(&v))))
            .collect()
    }

    pub fn file_head(&self, file: &Id) -> Result<Option<FileHead>> {
        match self.db.get_pinned_cf(self.cf(CF_FILES), file.0)? {
            None => Ok(None),
            Some(v) => FileHead::decode(&v)
                .map(Some)
                .ok_or_else(|| corrupt_value(CF_FILES, &file.0)),
        }
    }

    /// Which of `files` have manifests.
    pub fn files_present(&self, files: &[Id]) -> Result<Vec<bool>> {
        let cf = self.cf(CF_FILES);
        let res = self
            .db
            .batched_multi_get_cf(cf, files.iter().map(|i| &i.0[..]), false);
        res.into_iter().map(|r| Ok(r?.is_some())).collect()
    }

    pub fn segment(&self, file: &Id, seg: usize) -> Result<Vec<(Id, u32)>> {
        let key = seg_key(file, seg);
        match self.db.get_pinned_cf(self.cf(CF_FILES), key)? {
            Some(v) if v.len() % crate::manifest::ENTRY_LEN == 0 => Ok(decode_entries(&v)),
            _ => Err(corrupt_value(CF_FILES, &key)),
        }
    }

    /// The full manifest (loads every segment).
    pub fn manifest(&self, file: &Id) -> Result<Option<Manifest>> {
        let Some(head) = self.file_head(file)? else {
            return Ok(None);
        };
        let mut chunks = Vec::with_capacity(head.chunks as usize);
        for s in 0..head.segment_starts.len() {
            chunks.extend(self.segment(file, s)?);
        }
        Ok(Some(Manifest {
            size: head.size,
            chunks,
        }))
    }

    pub fn stat_entries(&self, paths: &[&[u8]]) -> Result<Vec<Option<StatEntry>>> {
        let cf = self.cf(CF_STATCACHE);
        let res = self
            .db
            .batched_multi_get_cf(cf, paths.iter().copied(), false);
        // A malformed stat-cache entry is only a cache miss.
        res.into_iter()
            .map(|r| Ok(r?.and_then(|v| StatEntry::decode(&v))))
            .collect()
    }

    /// Writes every memtable out, so the memory they hold is given back
    /// (after a large ingest, before a long idle time).
    pub fn flush_memtables(&self) -> Result<()> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<Stats> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), b"stats")?
            .and_then(|v| Stats::decode(&v))
            .unwrap_or_default())
    }

    pub fn pack_info(&self, pack: &Id) -> Result<Option<PackInfo>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_PACKS), pack.0)?
            .and_then(|v| PackInfo::decode(&v)))
    }

    pub fn packs(&self) -> Result<Vec<(Id, PackInfo)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PACKS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = Id::from_slice(&k).ok_or_else(|| corrupt_value(CF_PACKS, &k))?;
            out.push((
                id,
                PackInfo::decode(&v).ok_or_else(|| corrupt_value(CF_PACKS, &k))?,
            ));
        }
        Ok(out)
    }

    /// Every chunk entry, in id order.
    pub fn for_each_chunk(&self, mut f: impl FnMut(Id, ChunkLoc) -> Result<()>) -> Result<()> {
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNKS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = Id::from_slice(&k).ok_or_else(|| corrupt_value(CF_CHUNKS, &k))?;
            f(
                id,
                ChunkLoc::decode(&v).ok_or_else(|| corrupt_value(CF_CHUNKS, &k))?,
            )?;
        }
        Ok(())
    }

    /// Every file id with a manifest.
    pub fn file_ids(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_FILES), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            if k.len() == 32 {
                out.extend(Id::from_slice(&k));
            }
        }
        Ok(out)
    }

    /// A tree or snapshot: its kind byte and encoding (not yet checked).
    pub fn object(&self, id: &Id) -> Result<Option<(u8, Vec<u8>)>> {
        match self.db.get_cf(self.cf(CF_OBJECTS), id.0)? {
            None => Ok(None),
            Some(mut v) if !v.is_empty() => {
                let kind = v.remove(0);
                Ok(Some((kind, v)))
            }
            Some(_) => Err(corrupt_value(CF_OBJECTS, &id.0)),
        }
    }

    pub fn objects_present(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let cf = self.cf(CF_OBJECTS);
        let res = self
            .db
            .batched_multi_get_cf(cf, ids.iter().map(|i| &i.0[..]), false);
        res.into_iter().map(|r| Ok(r?.is_some())).collect()
    }

    pub fn get_ref(&self, name: &str) -> Result<Option<Id>> {
        match self.db.get_pinned_cf(self.cf(CF_REFS), name.as_bytes())? {
            None => Ok(None),
            Some(v) => Id::from_slice(&v)
                .map(Some)
                .ok_or_else(|| corrupt_value(CF_REFS, name.as_bytes())),
        }
    }

    /// Refs whose names start with `prefix`, sorted by name.
    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, Id)>> {
        self.scan_prefix(CF_REFS, prefix.as_bytes(), |k, v| {
            Some((String::from_utf8(k.to_vec()).ok()?, Id::from_slice(v)?))
        })
    }

    pub fn get_local(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_LOCAL), key.as_bytes())?)
    }

    /// Local state entries under `prefix` (the prefix is stripped).
    pub fn local_entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.scan_prefix(CF_LOCAL, prefix.as_bytes(), |k, v| {
            let k = std::str::from_utf8(k).ok()?;
            Some((k[prefix.len()..].to_string(), v.to_vec()))
        })
    }

    fn scan_prefix<T>(
        &self,
        cf: &str,
        prefix: &[u8],
        f: impl Fn(&[u8], &[u8]) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(cf),
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(f(&k, &v).ok_or_else(|| corrupt_value(cf, &k))?);
        }
        Ok(out)
    }

    /// When each of `ids` was last leased (unix milliseconds), if ever.
    pub fn leases(&self, ids: &[Id]) -> Result<Vec<Option<u64>>> {
        let cf = self.cf(CF_LEASES);
        let res = self
            .db
            .batched_multi_get_cf(cf, ids.iter().map(|i| &i.0[..]), false);
        res.into_iter()
            .map(|r| Ok(r?.and_then(|v| Some(u64::from_le_bytes(v[..].try_into().ok()?)))))
            .collect()
    }

    /// Every lease of at least `since` (unix milliseconds).
    pub fn leased_since(&self, since: u64) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_LEASES), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let t = v[..].try_into().map(u64::from_le_bytes).unwrap_or(0);
            if t >= since {
                out.extend(Id::from_slice(&k));
            }
        }
        Ok(out)
    }

    /// The manifest and object records of `pack`, in pack order.
    pub fn records(&self, pack: &Id) -> Result<Vec<RecordAt>> {
        self.scan_prefix(CF_RECORDS, &pack.0, |k, v| {
            if k.len() != 40 || v.len() != 37 {
                return None;
            }
            Some(RecordAt {
                offset: u64::from_be_bytes(k[32..40].try_into().ok()?),
                kind: v[0],
                id: Id::from_slice(&v[1..33])?,
                len: u32::from_le_bytes(v[33..37].try_into().ok()?),
            })
        })
    }

    /// Every tree and snapshot id with its kind.
    pub fn object_ids(&self) -> Result<Vec<(Id, u8)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECTS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = Id::from_slice(&k).ok_or_else(|| corrupt_value(CF_OBJECTS, &k))?;
            out.push((id, v.first().copied().unwrap_or(0)));
        }
        Ok(out)
    }

    /// Every stat-cache entry.
    pub fn stat_all(&self) -> Result<Vec<(Vec<u8>, StatEntry)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_STATCACHE), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Some(e) = StatEntry::decode(&v) {
                out.push((k.to_vec(), e));
            }
        }
        Ok(out)
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            index: self,
            wb: WriteBatch::default(),
        }
    }

    /// Removes everything that [`crate::store::Store::reindex`] rebuilds.
    pub fn clear_rebuildable(&self) -> Result<()> {
        for name in [
            CF_CHUNKS,
            CF_FILES,
            CF_PACKS,
            CF_STATCACHE,
            CF_FEATURES,
            CF_OBJECTS,
            CF_RECORDS,
        ] {
            let cf = self.cf(name);
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(cf, &[][..], &[0xffu8; 80][..]);
            self.db.write(wb)?;
        }
        Ok(())
    }
}

pub use crate::sketch::feature_key;

fn seg_key(file: &Id, seg: usize) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&file.0);
    k[32..].copy_from_slice(&(seg as u32).to_be_bytes());
    k
}

/// Related index updates, written atomically.
pub struct Batch<'a> {
    index: &'a Index,
    wb: WriteBatch,
}

impl Batch<'_> {
    pub fn put_chunk(&mut self, id: &Id, loc: &ChunkLoc) {
        self.wb.put_cf(self.index.cf(CF_CHUNKS), id.0, loc.encode());
    }

    pub fn put_feature(&mut self, key: &[u8; 9], chunk: &Id) {
        self.wb.put_cf(self.index.cf(CF_FEATURES), key, chunk.0);
    }

    pub fn put_pack(&mut self, id: &Id, info: &PackInfo) {
        self.wb.put_cf(self.index.cf(CF_PACKS), id.0, info.encode());
    }

    /// A file's manifest: segments, then the head that makes it visible.
    pub fn put_manifest(&mut self, file: &Id, m: &Manifest) {
        self.put_manifest_segments(file, m);
        self.put_file_head(file, m);
    }

    /// The manifest's segments alone (invisible until the head is written).
    pub fn put_manifest_segments(&mut self, file: &Id, m: &Manifest) {
        let cf = self.index.cf(CF_FILES);
        for (s, seg) in m.chunks.chunks(SEGMENT).enumerate() {
            self.wb.put_cf(cf, seg_key(file, s), encode_entries(seg));
        }
    }

    pub fn put_file_head(&mut self, file: &Id, m: &Manifest) {
        let starts = m
            .chunks
            .chunks(SEGMENT)
            .scan(0u64, |off, seg| {
                let start = *off;
                *off += seg.iter().map(|c| c.1 as u64).sum::<u64>();
                Some(start)
            })
            .collect();
        let head = FileHead {
            size: m.size,
            chunks: m.chunks.len() as u64,
            segment_starts: starts,
        };
        self.wb
            .put_cf(self.index.cf(CF_FILES), file.0, head.encode());
    }

    pub fn put_stat(&mut self, path: &[u8], e: &StatEntry) {
        self.wb
            .put_cf(self.index.cf(CF_STATCACHE), path, e.encode());
    }

    pub fn put_object(&mut self, id: &Id, kind: u8, raw: &[u8]) {
        let mut v = Vec::with_capacity(1 + raw.len());
        v.push(kind);
        v.extend_from_slice(raw);
        self.wb.put_cf(self.index.cf(CF_OBJECTS), id.0, v);
    }

    pub fn put_ref(&mut self, name: &str, id: Option<&Id>) {
        let cf = self.index.cf(CF_REFS);
        match id {
            Some(id) => self.wb.put_cf(cf, name.as_bytes(), id.0),
            None => self.wb.delete_cf(cf, name.as_bytes()),
        }
    }

    pub fn put_local(&mut self, key: &str, value: Option<&[u8]>) {
        let cf = self.index.cf(CF_LOCAL);
        match value {
            Some(v) => self.wb.put_cf(cf, key.as_bytes(), v),
            None => self.wb.delete_cf(cf, key.as_bytes()),
        }
    }

    pub fn put_lease(&mut self, id: &Id, unix: u64) {
        self.wb
            .put_cf(self.index.cf(CF_LEASES), id.0, unix.to_le_bytes());
    }

    pub fn put_record(&mut self, pack: &Id, r: &RecordAt) {
        let mut k = [0u8; 40];
        k[..32].copy_from_slice(&pack.0);
        k[32..].copy_from_slice(&r.offset.to_be_bytes());
        let mut v = [0u8; 37];
        v[0] = r.kind;
        v[1..33].copy_from_slice(&r.id.0);
        v[33..].copy_from_slice(&r.len.to_le_bytes());
        self.wb.put_cf(self.index.cf(CF_RECORDS), k, v);
    }

    /// Forgets a pack: its entry and its records (not its chunks).
    pub fn delete_pack(&mut self, pack: &Id) {
        self.wb.delete_cf(self.index.cf(CF_PACKS), pack.0);
        let mut end = [0xffu8; 41];
        end[..32].copy_from_slice(&pack.0);
        self.wb
            .delete_range_cf(self.index.cf(CF_RECORDS), &pack.0[..], &end[..]);
    }

    pub fn delete_chunk(&mut self, id: &Id) {
        self.wb.delete_cf(self.index.cf(CF_CHUNKS), id.0);
    }

    /// Forgets a file's manifest: its head and every segment.
    pub fn delete_file(&mut self, file: &Id) {
        let cf = self.index.cf(CF_FILES);
        self.wb.delete_cf(cf, file.0);
        let mut end = [0xffu8; 37];
        end[..32].copy_from_slice(&file.0);
        self.wb.delete_range_cf(cf, &seg_key(file, 0)[..], &end[..]);
    }

    pub fn delete_object(&mut self, id: &Id) {
        self.wb.delete_cf(self.index.cf(CF_OBJECTS), id.0);
    }

    pub fn delete_lease(&mut self, id: &Id) {
        self.wb.delete_cf(self.index.cf(CF_LEASES), id.0);
    }

    pub fn delete_stat(&mut self, path: &[u8]) {
        self.wb.delete_cf(self.index.cf(CF_STATCACHE), path);
    }

    pub fn put_stats(&mut self, s: &Stats) {
        self.wb.put_cf(self.index.cf(CF_META), b"stats", s.encode());
    }

    /// Writes the batch; with `durable`, the WAL is fsynced first — use it
    /// where the write is acknowledged to a client.
    pub fn write(self, durable: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(durable);
        self.index.db.write_opt(self.wb, &wo)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_loc_round_trips(p in any::<[u8; 32]>(), off in any::<u64>(), s in any::<u32>(), r in any::<u32>(), z in any::<bool>(), o in any::<u32>(), l in any::<u32>()) {
            let loc = ChunkLoc { pack: Id(p), payload_offset: off, stored_len: s, raw_len: r,
                codec: if z { Codec::ZstdDict } else { Codec::Raw }, offset_in_frame: o, len: l, meta_len: o ^ l,
                depth: if z { (o % 16) as u8 + 1 } else { 0 } };
            prop_assert_eq!(ChunkLoc::decode(&loc.encode()), Some(loc));
            // An entry written before depths were recorded.
            let old = ChunkLoc::decode(&loc.encode()[..61]).map(|l| l.depth);
            prop_assert_eq!(old, Some(u8::from(z)));
        }
    }

    #[test]
    fn manifests_are_segmented_and_found_by_offset() {
        let d = tempfile::tempdir().unwrap();
        let ix = Index::open(d.path()).unwrap();
        let chunks: Vec<(Id, u32)> = (0..(SEGMENT * 2 + 10) as u32)
            .map(|i| (Id::of(&i.to_le_bytes()), 100))
            .collect();
        let m = Manifest {
            size: 100 * chunks.len() as u64,
            chunks,
        };
        let f = Id::of(b"file");
        let mut b = ix.batch();
        b.put_manifest(&f, &m);
        b.write(true).unwrap();
        let head = ix.file_head(&f).unwrap().unwrap();
        assert_eq!(
            head.segment_starts,
            vec![0, 100 * SEGMENT as u64, 200 * SEGMENT as u64]
        );
        assert_eq!(head.segment_for(0), 0);
        assert_eq!(head.segment_for(100 * SEGMENT as u64 - 1), 0);
        assert_eq!(head.segment_for(100 * SEGMENT as u64), 1);
        assert_eq!(head.segment_for(m.size - 1), 2);
        assert_eq!(ix.manifest(&f).unwrap().unwrap(), m);
        assert_eq!(ix.file_ids().unwrap(), vec![f]);
    }
}
