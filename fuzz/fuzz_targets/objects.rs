//! Tree and snapshot decoders (daemon/src/objects/), and the name checks
//! every object goes through.
//!
//! Checks: no panic; whatever decodes re-encodes to exactly the input
//! (only canonical encodings decode, so an id names one object), decodes
//! again to the same value, has the id of its bytes, and passes its own
//! checks (`Tree::new` rebuilds the same tree, `Snapshot::check` is Ok);
//! `decode_checked` agrees with the direct decoders under the right id and
//! refuses any other id.
#![no_main]

use hoard_daemon::objects::{
    check_dataset_name, check_ref_name, decode_checked, tree::check_name, Object, ObjectKind,
    Snapshot, Tree,
};
use hoard_daemon::Id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tree = Tree::decode(data);
    if let Ok(t) = &tree {
        let e = t.encode();
        assert_eq!(e, data, "a non-canonical tree decoded");
        assert_eq!(Tree::decode(&e).as_ref(), Ok(t), "tree does not round-trip");
        assert_eq!(t.id(), Id::of(data));
        assert_eq!(Tree::new(t.entries.clone()).as_ref(), Ok(t), "decoded tree fails Tree::new");
        for e in &t.entries {
            assert!(check_name(&e.name).is_ok());
        }
        let _ = t.total_size();
    }
    let snap = Snapshot::decode(data);
    if let Ok(s) = &snap {
        let e = s.encode();
        assert_eq!(e, data, "a non-canonical snapshot decoded");
        assert_eq!(Snapshot::decode(&e).as_ref(), Ok(s), "snapshot does not round-trip");
        assert_eq!(s.id(), Id::of(data));
        assert!(s.check().is_ok(), "decoded snapshot fails its check");
    }
    assert!(!(tree.is_ok() && snap.is_ok()), "bytes that are both a tree and a snapshot");

    let id = Id::of(data);
    let mut other = id;
    other.0[0] ^= 1;
    for kind in [ObjectKind::Tree, ObjectKind::Snapshot] {
        let got = decode_checked(kind, &id, data);
        match (&got, kind) {
            (Ok(Object::Tree(t)), ObjectKind::Tree) => assert_eq!(Ok(t), tree.as_ref()),
            (Ok(Object::Snapshot(s)), ObjectKind::Snapshot) => assert_eq!(Ok(s), snap.as_ref()),
            (Ok(o), k) => panic!("decode_checked({k:?}) gave a {:?}", o.kind()),
            (Err(_), ObjectKind::Tree) => assert!(tree.is_err()),
            (Err(_), ObjectKind::Snapshot) => assert!(snap.is_err()),
        }
        assert!(decode_checked(kind, &other, data).is_err(), "wrong id accepted");
    }

    // Names and refs, from the same bytes.
    let _ = check_name(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = check_dataset_name(s);
        let _ = check_ref_name(s);
    }
});
