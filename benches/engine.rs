//! Micro-benches of the primitives on this machine (criterion).
//!
//! `pipeline_single_core/*` is the reference the end-to-end ingest target is
//! stated against: FastCDC + BLAKE3 per chunk + zstd level 1 over 1 MiB
//! frames, on one core. `benches/e2e.py` reads its estimate.
//!
//! Data: `HOARD_BENCH_TEXT` (a file; its first 64 MiB) or generated CSV-like text.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastcdc::v2020::FastCDC;
use std::hint::black_box;

const LEN: usize = 64 << 20;

fn text() -> Vec<u8> {
    if let Some(p) = std::env::var_os("HOARD_BENCH_TEXT") {
        if let Ok(mut d) = std::fs::read(p) {
            d.truncate(LEN);
            if d.len() == LEN {
                return d;
            }
        }
    }
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut out = Vec::with_capacity(LEN + 64);
    let words = ["cat", "dog", "owl", "fox", "yak", "emu"];
    let mut row = 0u64;
    while out.len() < LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        row += 1;
        out.extend_from_slice(
            format!(
                "{row},{},{:.6},{}\n",
                words[(x % 6) as usize],
                (x >> 11) as f64 / (1u64 << 53) as f64,
                x % 1_000_000
            )
            .as_bytes(),
        );
    }
    out.truncate(LEN);
    out
}

fn random() -> Vec<u8> {
    let mut x = 0x9E3779B97F4A7C15u64;
    (0..LEN / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Cut, hash each chunk, compress new chunks in 1 MiB frames: single-threaded.
fn pipeline(data: &[u8], avg: u32) -> usize {
    let mut stored = 0;
    let mut frame = Vec::with_capacity(1 << 21);
    for c in FastCDC::new(data, avg / 4, avg, avg * 4) {
        let bytes = &data[c.offset..c.offset + c.length];
        black_box(blake3::hash(bytes));
        frame.extend_from_slice(bytes);
        if frame.len() >= 1 << 20 {
            stored += zstd::bulk::compress(&frame, 1)
                .map(|z| z.len())
                .unwrap_or(frame.len());
            frame.clear();
        }
    }
    if !frame.is_empty() {
        stored += zstd::bulk::compress(&frame, 1)
            .map(|z| z.len())
            .unwrap_or(frame.len());
    }
    stored
}

fn primitives(c: &mut Criterion) {
    let t = text();
    let r = random();
    let mut g = c.benchmark_group("primitives");
    g.sample_size(10).throughput(Throughput::Bytes(LEN as u64));
    for avg in [16u32 << 10, 32 << 10, 64 << 10] {
        g.bench_function(format!("fastcdc_avg{}k", avg >> 10), |b| {
            b.iter(|| FastCDC::new(&t, avg / 4, avg, avg * 4).count())
        });
    }
    g.bench_function("blake3_32k_chunks", |b| {
        b.iter(|| {
            t.chunks(32 << 10)
                .map(|c| blake3::hash(c).as_bytes()[0] as usize)
                .sum::<usize>()
        })
    });
    g.bench_function("zstd1_1mib_frames_text", |b| {
        b.iter(|| {
            t.chunks(1 << 20)
                .map(|c| zstd::bulk::compress(c, 1).map(|z| z.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.bench_function("zstd1_32k_chunks_text", |b| {
        b.iter(|| {
            t.chunks(32 << 10)
                .map(|c| zstd::bulk::compress(c, 1).map(|z| z.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.bench_function("zstd1_1mib_frames_random", |b| {
        b.iter(|| {
            r.chunks(1 << 20)
                .map(|c| zstd::bulk::compress(c, 1).map(|z| z.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline_single_core");
    g.sample_size(10).throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("text", |b| b.iter(|| pipeline(&t, 32 << 10)));
    g.bench_function("random", |b| b.iter(|| pipeline(&r, 32 << 10)));
    g.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
