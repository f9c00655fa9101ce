//! The git pointer-file parser (client/src/git/pointer.rs, included as is:
//! the client crate has no library target).
//!
//! Checks: `parse`/`check` never panic and agree; anything over `MAX_LEN`
//! is `TooLong`; a parsed pointer re-encodes (`encode` and `Display`) to
//! exactly the input (the format is canonical) and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../client/src/git/pointer.rs"]
mod pointer;

use pointer::{NotPointer, Pointer, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let checked = Pointer::check(data);
    let parsed = Pointer::parse(data);
    assert_eq!(parsed, checked.clone().ok(), "parse and check disagree");
    if data.len() > MAX_LEN {
        assert_eq!(checked, Err(NotPointer::TooLong(data.len())));
    }
    if let Err(e) = &checked {
        let _ = e.to_string();
    }
    if let Some(p) = parsed {
        let e = p.encode();
        assert!(e.len() <= MAX_LEN, "an encoding longer than MAX_LEN");
        assert_eq!(e.as_bytes(), data, "a non-canonical text parsed");
        assert_eq!(p.to_string(), e, "Display differs from encode");
        assert_eq!(Pointer::parse(e.as_bytes()), Some(p), "re-encoding does not parse back");
        assert_eq!(p.oid_string(), format!("blake3:{}", hex::encode(p.oid)));
    }
});
