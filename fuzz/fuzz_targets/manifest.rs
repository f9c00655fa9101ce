//! The manifest decoder (daemon/src/manifest.rs).
//!
//! Checks: no panic; a decoded manifest re-encodes to exactly the input
//! (`encode`, `for_each_piece` and `encoded_len` agree), decodes again to
//! itself, and its chunk lengths add up to its size; `decode_entries` and
//! `encode_entries` are inverse on whole entries.
#![no_main]

use hoard_daemon::manifest::{decode_entries, encode_entries, Manifest, ENTRY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let e = m.encode();
        assert_eq!(e, data, "manifest does not re-encode to its input");
        assert_eq!(m.encoded_len(), data.len() as u64);
        let mut pieces = Vec::new();
        m.for_each_piece(|p| {
            assert!(p.len() <= 64 << 10, "a piece over 64 KiB");
            pieces.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(pieces, e, "for_each_piece differs from encode");
        assert_eq!(Manifest::decode(&e), Ok(m.clone()), "manifest does not round-trip");
        assert_eq!(m.chunks.iter().map(|c| c.1 as u64).sum::<u64>(), m.size);
    }
    let whole = data.len() / ENTRY_LEN * ENTRY_LEN;
    let entries = decode_entries(&data[..whole]);
    assert_eq!(entries.len(), whole / ENTRY_LEN);
    assert_eq!(encode_entries(&entries), &data[..whole]);
});
