//! `hoard sync`, the one button, with real git, a real bare repository and
//! a real hub: two clones editing the same tracked file, a push that fails
//! between the content and the ref, and datasets changed on both sides.

mod common;

use common::git::{read, write, User};
use common::Env;
use std::path::{Path, PathBuf};

/// A hub (hoardd serving the Peer API) and a bare git repository.
struct Lab {
    hub: Env,
    url: String,
    token: String,
    bare: PathBuf,
}

fn lab(first: &User) -> Lab {
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    let bare = first.path("hub.git");
    first.git_ok(
        &first.home,
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    Lab {
        hub,
        url,
        token,
        bare,
    }
}

fn join(u: &User, lab: &Lab) {
    u.hoard_in(
        &u.home,
        &["remote", "add", "origin", &lab.url, "--token", &lab.token],
    );
}

/// HEAD, the index and every work-tree file's hash: what an aborted sync
/// must leave exactly as it was.
fn state(u: &User, repo: &Path) -> (String, String, String) {
    let head = u.git_ok(repo, &["rev-parse", "HEAD"]);
    let index = u.git_ok(repo, &["ls-files", "-s"]);
    let mut files = String::new();
    for f in u.git_ok(repo, &["ls-files"]).lines() {
        files.push_str(&format!("{} {f}\n", blake3::hash(&read(repo, f)).to_hex()));
    }
    (head, index, files)
}

#[test]
fn two_clones_editing_one_file_conflict_then_resolve_with_theirs_and_ours() {
    let a = User::new();
    let b = User::new();
    let lab = lab(&a);
    join(&a, &lab);
    join(&b, &lab);
    let ra = a.repo("a", &["*.bin"]);
    a.git_ok(
        &ra,
        &["remote", "add", "origin", lab.bare.to_str().unwrap()],
    );
    write(&ra, "data.bin", &common::data(200_000, 1, false));
    write(&ra, "notes.txt", b"start\n");
    a.hoard_in(&ra, &["sync", "-m", "first"]);
    a.git_ok(&ra, &["branch", "--set-upstream-to=origin/main"]);
    let rb = b.path("b");
    b.git_ok(
        &b.home,
        &[
            "clone",
            "-q",
            lab.bare.to_str().unwrap(),
            rb.to_str().unwrap(),
        ],
    );
    assert_eq!(
        read(&rb, "data.bin"),
        read(&ra, "data.bin"),
        "the clone checked the content out"
    );

    // Both edit data.bin; A syncs first.
    let va = common::data(210_000, 2, false);
    let vb = common::data(190_000, 3, false);
    write(&ra, "data.bin", &va);
    a.hoard_in(&ra, &["sync"]);
    write(&rb, "data.bin", &vb);
    write(&rb, "new.txt", b"a new file\n");
    let before = state(&b, &rb);
    let o = b.hoard(&rb, &["sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "a conflict exits 5: {err}");
    assert!(
        err.contains("data.bin")
            && err.contains("hoard sync --ours")
            && err.contains("hoard sync --theirs"),
        "{err}"
    );
    // Both sides' ids and sizes, never a text conflict in the pointer.
    assert!(
        err.contains(&blake3::hash(&va).to_hex().to_string())
            && err.contains(&blake3::hash(&vb).to_hex().to_string()),
        "{err}"
    );
    assert_eq!(
        state(&b, &rb),
        before,
        "HEAD, index and work tree exactly as before"
    );
    assert!(!String::from_utf8_lossy(&read(&rb, "data.bin")).contains("<<<<<<<"));

    // Take theirs.
    let out = b.hoard_in(&rb, &["sync", "--theirs"]);
    println!("{out}");
    assert_eq!(read(&rb, "data.bin"), va, "theirs");
    assert_eq!(read(&rb, "new.txt"), b"a new file\n");
    assert_eq!(b.git_ok(&rb, &["status", "--porcelain"]), "");

    // Again, keeping ours this time; A then gets B's version.
    let va3 = common::data(220_000, 4, false);
    let vb3 = common::data(230_000, 5, false);
    write(&ra, "data.bin", &va3);
    a.hoard_in(&ra, &["sync"]);
    write(&rb, "data.bin", &vb3);
    let v = b.hoard_json(&rb, &["sync", "--ours"]);
    assert_eq!(v[0]["resolved"], "ours", "{v:?}");
    assert_eq!(read(&rb, "data.bin"), vb3, "ours");
    a.hoard_in(&ra, &["sync"]);
    assert_eq!(read(&ra, "data.bin"), vb3, "A pulled B's resolution");
    assert_eq!(read(&ra, "new.txt"), b"a new file\n");
}

#[test]
fn a_push_failing_after_the_content_leaves_no_ref_to_missing_content_and_a_rerun_finishes() {
    let a = User::new();
    let lab = lab(&a);
    join(&a, &lab);
    let ra = a.repo("a", &["*.bin"]);
    a.git_ok(
        &ra,
        &["remote", "add", "origin", lab.bare.to_str().unwrap()],
    );
    write(&ra, "data.bin", &common::data(100_000, 7, false));
    // The git remote refuses every push (as a network failure would).
    let hook = lab.bare.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho refused by the test >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = a.hoard(&ra, &["sync", "-m", "first"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("git push") && err.contains("hoard sync"),
        "{err}"
    );
    let refs = a.git_ok(&lab.bare, &["for-each-ref"]);
    assert_eq!(refs, "", "no ref on the git remote");
    // The content is on the hub already.
    let id = format!("blake3:{}", blake3::hash(&read(&ra, "data.bin")).to_hex());
    let hub_has = lab.hub.run(&["cat", &id]);
    assert!(
        hub_has.status.success(),
        "the hub holds the content before any ref names it"
    );
    // The rerun finishes.
    std::fs::remove_file(&hook).unwrap();
    a.hoard_in(&ra, &["sync"]);
    let refs = a.git_ok(&lab.bare, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs.trim(), "refs/heads/main");
}

#[test]
fn datasets_changed_on_both_sides_stop_then_resolve() {
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    let a = Env::new();
    let b = Env::new();
    for e in [&a, &b] {
        e.ok(&["remote", "add", "origin", &url, "--token", &token]);
    }
    let da = a.path("survey");
    std::fs::create_dir_all(&da).unwrap();
    std::fs::write(da.join("x.csv"), b"1,2\n").unwrap();
    std::fs::write(da.join("old.csv"), b"to be deleted\n").unwrap();
    a.ok(&["dataset", "add", "survey", da.to_str().unwrap()]);
    a.ok(&["sync", "survey"]);
    let db = b.path("survey");
    b.ok(&["clone", "origin/survey", db.to_str().unwrap()]);
    assert_eq!(std::fs::read(db.join("x.csv")).unwrap(), b"1,2\n");
    // A fast-forward: only A moved.
    std::fs::write(da.join("x.csv"), b"1,2\n3,4\n").unwrap();
    std::fs::remove_file(da.join("old.csv")).unwrap();
    a.ok(&["sync", "survey"]);
    let out = b.ok(&["sync", "survey"]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_eq!(std::fs::read(db.join("x.csv")).unwrap(), b"1,2\n3,4\n");
    assert!(
        !db.join("old.csv").exists(),
        "a file the other side deleted is deleted here too"
    );
    // Both moved: stop, nothing changed.
    std::fs::write(da.join("x.csv"), b"from a\n").unwrap();
    a.ok(&["sync", "survey"]);
    std::fs::write(db.join("x.csv"), b"from b\n").unwrap();
    std::fs::write(db.join("b-only.csv"), b"only here\n").unwrap();
    let o = b.run(&["sync", "survey"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("--ours") && err.contains("--theirs"), "{err}");
    assert_eq!(std::fs::read(db.join("x.csv")).unwrap(), b"from b\n");
    // Theirs: the directory takes A's content, the merge is pushed.
    b.ok(&["sync", "survey", "--theirs"]);
    assert_eq!(std::fs::read(db.join("x.csv")).unwrap(), b"from a\n");
    assert!(
        !db.join("b-only.csv").exists(),
        "--theirs gives exactly their tree"
    );
    let log = b.json(&["log", "survey"]);
    assert_eq!(
        log[0][0]["parents"].as_array().map(|p| p.len()),
        Some(2),
        "a merge snapshot: {log:?}"
    );
    // A is behind now, and fast-forwards.
    let out = a.ok(&["sync", "survey"]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_eq!(std::fs::read(da.join("x.csv")).unwrap(), b"from a\n");
}
