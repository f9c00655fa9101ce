//! `hoard migrate` against a real git-lfs repository (Debian's git-lfs):
//! 3 branches, 2 tags, 60 commits of changing binary files, some identical
//! across paths, some edited slightly. Import must give the same content at
//! every ref, a smaller store than `.git/lfs/objects`, and a clone that
//! checks out through hoard; export must give back the LFS pointers.

mod common;

use common::git::{read, write, User};
use std::collections::BTreeMap;
use std::path::Path;

/// Every file at `rev`: path → content, LFS and hoard pointers resolved to
/// what they point at (LFS from .git/lfs/objects, hoard through `hoard cat`).
fn contents(u: &User, repo: &Path, rev: &str) -> BTreeMap<String, Vec<u8>> {
    let list = u.git_ok(
        repo,
        &["ls-tree", "-r", "--format=%(objectname) %(path)", rev],
    );
    let common_dir = repo.join(".git");
    let mut out = BTreeMap::new();
    for l in list.lines() {
        let (blob, path) = l.split_once(' ').unwrap();
        let o = u.git(repo, &["cat-file", "blob", blob]);
        let bytes = o.stdout;
        let text = String::from_utf8_lossy(&bytes);
        let resolved = if let Some(rest) =
            text.strip_prefix("version https://git-lfs.github.com/spec/v1\noid sha256:")
        {
            let oid = &rest[..64];
            std::fs::read(
                common_dir
                    .join("lfs/objects")
                    .join(&oid[..2])
                    .join(&oid[2..4])
                    .join(oid),
            )
            .unwrap_or_else(|e| panic!("LFS object of {path} at {rev}: {e}"))
        } else if let Some(rest) = text.strip_prefix("version hoard/1\noid ") {
            let oid = rest.lines().next().unwrap();
            let o = u.env.run(&["cat", oid]);
            assert!(o.status.success(), "hoard cat {oid} ({path} at {rev})");
            o.stdout
        } else {
            bytes.clone()
        };
        // .gitattributes differs by design (filter=lfs → filter=hoard).
        let resolved = if path.ends_with(".gitattributes") {
            String::from_utf8_lossy(&resolved)
                .replace("=hoard", "=lfs")
                .into_bytes()
        } else {
            resolved
        };
        out.insert(path.to_string(), resolved);
    }
    out
}

fn blob(seed: u64, len: usize) -> Vec<u8> {
    common::data(len, seed, false)
}

/// The history: main, two branches off it, tags on main; binary files
/// changing every commit, one shared between two paths, one edited a
/// little each time.
fn lfs_repo(u: &User) -> std::path::PathBuf {
    let repo = u.path("lfs-repo");
    std::fs::create_dir_all(&repo).unwrap();
    u.git_ok(&repo, &["init", "-q"]);
    u.git_ok(&repo, &["lfs", "install", "--local"]);
    u.git_ok(&repo, &["lfs", "track", "*.bin", "data/**"]);
    write(&repo, "README.md", b"a dataset\n");
    u.git_ok(&repo, &["add", "-A"]);
    u.git_ok(&repo, &["commit", "-qm", "start"]);
    let mut edited = blob(1, 300_000);
    let mut n = 1;
    for (branch, commits) in [("main", 30), ("feature", 15), ("exp", 14)] {
        if branch != "main" {
            u.git_ok(&repo, &["checkout", "-q", "-b", branch, "main~5"]);
        }
        for i in 0..commits {
            n += 1;
            let seed = n as u64 * 10;
            write(
                &repo,
                &format!("models/m{}.bin", i % 4),
                &blob(seed, 50_000 + i * 100),
            );
            let shared = blob(seed + 1, 20_000);
            write(&repo, "data/a/shared.dat", &shared);
            write(&repo, "data/b/shared-copy.dat", &shared);
            // A slight edit of the same big file.
            let at = (i * 7919) % edited.len();
            edited[at] ^= 0xff;
            write(&repo, "data/big.bin", &edited);
            write(&repo, "notes.txt", format!("commit {n}\n").as_bytes());
            if i % 5 == 0 {
                // fast-export quotes this path (C-style, octal escapes).
                write(&repo, "data/été \"1\".bin", &blob(seed + 2, 10_000));
            }
            u.git_ok(&repo, &["add", "-A"]);
            u.git_ok(&repo, &["commit", "-qm", &format!("{branch} {i}")]);
            if branch == "main" && (i == 10 || i == 25) {
                u.git_ok(&repo, &["tag", &format!("v{i}")]);
            }
        }
    }
    u.git_ok(&repo, &["checkout", "-q", "main"]);
    let count = u.git_ok(&repo, &["rev-list", "--all", "--count"]);
    assert_eq!(count.trim(), "60");
    repo
}

fn refs(u: &User, repo: &Path) -> Vec<String> {
    u.git_ok(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads",
            "refs/tags",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn du(p: &Path) -> u64 {
    let mut t = 0;
    for e in walkdir(p) {
        t += std::fs::metadata(&e).map(|m| m.len()).unwrap_or(0);
    }
    t
}

fn walkdir(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walkdir(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_git_lfs_history_migrates_to_hoard_and_back_with_the_same_content_at_every_ref() {
    let u = User::new();
    let repo = lfs_repo(&u);
    let before: BTreeMap<String, BTreeMap<String, Vec<u8>>> = refs(&u, &repo)
        .into_iter()
        .map(|r| (r.clone(), contents(&u, &repo, &r)))
        .collect();
    assert_eq!(
        before.len(),
        5,
        "3 branches and 2 tags: {:?}",
        before.keys()
    );
    let lfs_bytes = du(&repo.join(".git/lfs/objects"));
    let pointers_before: BTreeMap<String, String> = refs(&u, &repo)
        .into_iter()
        .map(|r| (r.clone(), u.git_ok(&repo, &["ls-tree", "-r", &r])))
        .collect();
    let heads_before = u.git_ok(
        &repo,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );

    let map = u.path("map.csv");
    let out = u.hoard_in(
        &repo,
        &[
            "migrate",
            "import",
            "--everything",
            "--object-map",
            map.to_str().unwrap(),
        ],
    );
    println!("{out}");
    // Same content at every ref, now through hoard.
    for (r, want) in &before {
        let got = contents(&u, &repo, r);
        if got != *want {
            let gk: Vec<_> = got.keys().collect();
            let wk: Vec<_> = want.keys().collect();
            let differing: Vec<_> = want
                .keys()
                .filter(|k| got.get(*k) != want.get(*k))
                .collect();
            panic!(
                "content differs at {r}: keys now {gk:?}, before {wk:?}; differing {differing:?}"
            );
        }
        let tree = u.git_ok(&repo, &["ls-tree", "-r", r]);
        assert!(!tree.is_empty());
    }
    let attrs = u.git_ok(&repo, &["show", "main:.gitattributes"]);
    assert!(
        attrs.contains("filter=hoard") && !attrs.contains("filter=lfs"),
        "{attrs}"
    );
    let mapped = std::fs::read_to_string(&map).unwrap();
    assert_eq!(mapped.lines().count(), 60, "one line per commit:\n{mapped}");
    // The work tree is clean and holds the content.
    assert_eq!(
        u.git_ok(&repo, &["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
    assert_eq!(
        read(&repo, "data/a/shared.dat"),
        read(&repo, "data/b/shared-copy.dat")
    );
    // The store is smaller than git-lfs's copies.
    let stats: serde_json::Value = u.env.json(&["stats"]).pop().unwrap();
    let stored = stats["stored_bytes"]
        .as_u64()
        .or(stats["pack_bytes"].as_u64())
        .unwrap_or(0);
    println!(
        "store {stored} bytes vs .git/lfs/objects {lfs_bytes} bytes: {:.3}x",
        stored as f64 / lfs_bytes as f64
    );
    assert!(stored > 0 && stored < lfs_bytes, "{stats}");
    // A clone of the migrated repository checks out through hoard.
    let clone = u.path("clone");
    u.git_ok(
        &u.home,
        &[
            "clone",
            "-q",
            "--no-local",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(read(&clone, "data/big.bin"), read(&repo, "data/big.bin"));
    u.git_ok(&clone, &["checkout", "-q", "v10"]);
    assert_eq!(
        read(&clone, "models/m0.bin"),
        before["refs/tags/v10"]["models/m0.bin"]
    );

    // And back: the LFS pointers, and so the commits, are what they were.
    let out = u.hoard_in(&repo, &["migrate", "export", "--everything"]);
    println!("{out}");
    for (r, tree) in &pointers_before {
        assert_eq!(
            &u.git_ok(&repo, &["ls-tree", "-r", r]),
            tree,
            "pointers at {r}"
        );
    }
    assert_eq!(
        u.git_ok(
            &repo,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads",
                "refs/tags"
            ]
        ),
        heads_before
            .lines()
            .filter(|l| l.starts_with("refs/heads/") || l.starts_with("refs/tags/"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        "an import and an export give back the original commits"
    );
}

#[test]
fn a_missing_lfs_object_stops_the_migration_before_anything_is_rewritten() {
    let u = User::new();
    let repo = lfs_repo(&u);
    let head = u.git_ok(&repo, &["rev-parse", "HEAD"]);
    // Lose one object of history.
    let tree = u.git_ok(&repo, &["ls-tree", "HEAD~3", "models/m1.bin"]);
    let blob = tree.split_whitespace().nth(2).unwrap().to_string();
    let text = u.git_ok(&repo, &["cat-file", "blob", &blob]);
    let oid = text
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("oid sha256:")
        .unwrap()
        .to_string();
    let obj = repo
        .join(".git/lfs/objects")
        .join(&oid[..2])
        .join(&oid[2..4])
        .join(&oid);
    std::fs::remove_file(&obj).unwrap();
    let o = u.hoard(&repo, &["migrate", "import", "--everything"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("models/m1.bin")
            && err.contains(&oid)
            && err.contains("nothing was rewritten"),
        "{err}"
    );
    assert_eq!(
        u.git_ok(&repo, &["rev-parse", "HEAD"]),
        head,
        "no ref moved"
    );
    // A corrupt object is caught by its sha256 the same way.
    std::fs::write(&obj, b"not the content").unwrap();
    let o = u.hoard(&repo, &["migrate", "import", "--everything"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sha256"), "{err}");
    assert_eq!(
        u.git_ok(&repo, &["rev-parse", "HEAD"]),
        head,
        "no ref moved"
    );
}

#[test]
fn no_rewrite_adds_one_commit_converting_the_current_tree() {
    let u = User::new();
    let repo = lfs_repo(&u);
    let want = contents(&u, &repo, "HEAD");
    let head = u.git_ok(&repo, &["rev-parse", "HEAD"]);
    u.hoard_in(&repo, &["migrate", "import", "--no-rewrite"]);
    assert_eq!(
        u.git_ok(&repo, &["rev-parse", "HEAD~1"]),
        head,
        "history kept"
    );
    assert!(contents(&u, &repo, "HEAD") == want);
    let ptr = u.git_ok(&repo, &["show", "HEAD:data/big.bin"]);
    assert!(ptr.starts_with("version hoard/1\n"), "{ptr}");
    assert_eq!(
        u.git_ok(&repo, &["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
}
