//! The git integration end to end: real git, real `hoard` and `hoardd`,
//! temporary repositories and stores.

mod common;

use common::data;
use common::git::{pointer_of, read, write, User};
use std::collections::BTreeMap;
use std::path::Path;

/// Files of a small dataset: path -> content.
fn dataset(seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("data/train/a.csv".into(), data(300_000, seed, true));
    m.insert("data/train/b.bin".into(), data(700_000, seed + 1, false));
    m.insert("data/test/c.csv".into(), data(50_000, seed + 2, true));
    m.insert("data/empty.dat".into(), Vec::new());
    m.insert("model.bin".into(), data(1_200_000, seed + 3, false));
    m
}

fn write_all(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (p, b) in files {
        write(dir, p, b);
    }
}

fn assert_content(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (p, b) in files {
        assert!(read(dir, p) == *b, "{p}: content differs");
    }
}

fn assert_clean(u: &User, dir: &Path) {
    let st = u.git_ok(dir, &["status", "--porcelain"]);
    assert!(st.is_empty(), "git status not clean:\n{st}");
}

fn commit_all(u: &User, dir: &Path, msg: &str) {
    u.git_ok(dir, &["add", "-A"]);
    u.git_ok(dir, &["commit", "-q", "-m", msg]);
}

#[test]
fn add_commit_checkout_branch_merge_stash_rebase_worktree() {
    let u = User::new();
    let repo = u.repo("r", &["data/**", "*.bin"]);
    let v1 = dataset(1);
    write_all(&repo, &v1);
    write(&repo, "README", b"plain text, not tracked\n");
    commit_all(&u, &repo, "v1");

    // Git holds pointers; the work tree holds content.
    for (p, b) in &v1 {
        let blob = u.git_ok(&repo, &["cat-file", "-p", &format!("HEAD:{p}")]);
        assert_eq!(blob, pointer_of(b), "{p}");
    }
    assert_eq!(
        u.git_ok(&repo, &["cat-file", "-p", "HEAD:README"]),
        "plain text, not tracked\n"
    );
    assert_clean(&u, &repo);
    let listed = u.hoard_json(&repo, &["ls-files"]);
    // Empty files stay empty in git: not pointers.
    assert_eq!(listed.len(), v1.len() - 1);
    assert!(listed.iter().all(|f| f["present"] == true));

    // A branch with a new version of some files.
    u.git_ok(&repo, &["checkout", "-q", "-b", "v2"]);
    let mut v2 = v1.clone();
    v2.insert("data/train/a.csv".into(), data(310_000, 11, true));
    v2.insert("data/new.bin".into(), data(90_000, 12, false));
    write_all(&repo, &v2);
    commit_all(&u, &repo, "v2");

    // Switching back and forth materializes the right content (smudge with delay).
    u.git_ok(&repo, &["checkout", "-q", "main"]);
    assert_content(&repo, &v1);
    assert!(!repo.join("data/new.bin").exists());
    assert_clean(&u, &repo);
    u.git_ok(&repo, &["checkout", "-q", "v2"]);
    assert_content(&repo, &v2);
    assert_clean(&u, &repo);

    // A change on main, merged with v2 (no conflict).
    u.git_ok(&repo, &["checkout", "-q", "main"]);
    let model2 = data(1_250_000, 13, false);
    write(&repo, "model.bin", &model2);
    commit_all(&u, &repo, "new model");
    u.git_ok(&repo, &["merge", "-q", "--no-edit", "v2"]);
    let mut merged = v2.clone();
    merged.insert("model.bin".into(), model2.clone());
    assert_content(&repo, &merged);
    assert_clean(&u, &repo);

    // stash and pop.
    let edit = data(20_000, 14, true);
    write(&repo, "data/test/c.csv", &edit);
    u.git_ok(&repo, &["stash", "-q"]);
    assert_eq!(read(&repo, "data/test/c.csv"), merged["data/test/c.csv"]);
    u.git_ok(&repo, &["stash", "pop", "-q"]);
    assert_eq!(read(&repo, "data/test/c.csv"), edit);
    u.git_ok(&repo, &["checkout", "-q", "--", "data/test/c.csv"]);
    assert_clean(&u, &repo);

    // rebase a branch onto main.
    u.git_ok(&repo, &["checkout", "-q", "-b", "topic", "HEAD~2"]);
    let topic = data(40_000, 15, true);
    write(&repo, "data/topic.csv", &topic);
    commit_all(&u, &repo, "topic");
    u.git_ok(&repo, &["rebase", "-q", "main"]);
    let mut rebased = merged.clone();
    rebased.insert("data/topic.csv".into(), topic.clone());
    assert_content(&repo, &rebased);
    assert_clean(&u, &repo);

    // A second work tree gets content too.
    let wt = u.path("wt");
    u.git_ok(
        &repo,
        &["worktree", "add", "-q", wt.to_str().unwrap(), "v2"],
    );
    assert_content(&wt, &v2);
    assert_clean(&u, &wt);

    // Nothing is missing; status says so.
    let st = u.hoard_json(&repo, &["status"]);
    assert_eq!(st[0]["missing"].as_array().unwrap().len(), 0);
    assert_eq!(st[0]["staged"].as_array().unwrap().len(), 0);
    // Staged changes show up.
    write(&repo, "data/more.bin", &data(1000, 16, false));
    u.git_ok(&repo, &["add", "data/more.bin"]);
    let st = u.hoard_json(&repo, &["status"]);
    assert_eq!(st[0]["staged"][0]["path"], "data/more.bin");
}

#[test]
fn checkout_uses_the_delay_capability() {
    let u = User::new();
    let repo = u.repo("r", &["*.dat"]);
    for i in 0..40 {
        write(
            &repo,
            &format!("f{i:02}.dat"),
            &data(5000 + i, i as u64, false),
        );
    }
    commit_all(&u, &repo, "one");
    u.git_ok(&repo, &["checkout", "-q", "-b", "two"]);
    for i in 0..40 {
        write(
            &repo,
            &format!("f{i:02}.dat"),
            &data(6000 + i, 100 + i as u64, false),
        );
    }
    commit_all(&u, &repo, "two");
    let o = u
        .git_cmd(&repo, &["checkout", "-q", "main"])
        .env("GIT_TRACE_PACKET", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = String::from_utf8_lossy(&o.stderr);
    assert!(trace.contains("capability=delay"), "delay not negotiated");
    assert!(trace.contains("status=delayed"), "nothing was delayed");
    assert!(trace.contains("command=list_available_blobs"));
    for i in 0..40 {
        assert_eq!(
            read(&repo, &format!("f{i:02}.dat")),
            data(5000 + i, i as u64, false)
        );
    }
    assert_clean(&u, &repo);
}

#[test]
fn post_checkout_writes_the_pointers_smudge_left_and_only_those() {
    let u = User::new();
    let repo = u.repo("r", &["data/**", "*.bin"]);
    let v1 = dataset(21);
    write_all(&repo, &v1);
    commit_all(&u, &repo, "v1");
    u.git_ok(&repo, &["checkout", "-q", "-b", "v2"]);
    let mut v2 = v1.clone();
    v2.insert("data/train/a.csv".into(), data(310_000, 22, true));
    v2.insert("model.bin".into(), data(1_100_000, 23, false));
    write_all(&repo, &v2);
    commit_all(&u, &repo, "v2");

    // A normal checkout: smudge wrote every file, the hook has nothing to do.
    let o = u.git(&repo, &["checkout", "-q", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("files whose content"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_content(&repo, &v1);

    // Smudge passes pointers through (as a filter that could not fetch
    // would leave them; clean is as installed): the post-checkout hook
    // writes their content.
    let installed = std::fs::read_to_string(u.home.join(".gitconfig")).expect("global config");
    let smudge_off: String = installed
        .lines()
        .filter(|l| !l.trim_start().starts_with("process") && !l.trim_start().starts_with("smudge"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "[filter \"hoard\"]\n",
            "[filter \"hoard\"]\n\tsmudge = cat\n",
        );
    assert!(smudge_off.contains("smudge = cat"), "{installed}");
    let alt = u.home.join("smudge-off.gitconfig");
    std::fs::write(&alt, smudge_off).expect("write config");
    let child = u
        .git_cmd(&repo, &["checkout", "-q", "v2"])
        .env("GIT_CONFIG_GLOBAL", &alt)
        .spawn()
        .expect("spawn git");
    let o = common::wait_output(child, std::time::Duration::from_secs(300), "git checkout");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("wrote 2 files whose content"), "{err}");
    assert_content(&repo, &v2);
    assert_clean(&u, &repo);
}

#[test]
fn clone_elsewhere_then_pull_include_exclude_sparse() {
    let alice = User::new();
    let repo = alice.repo("r", &["data/**", "*.bin"]);
    let files = dataset(2);
    write_all(&repo, &files);
    commit_all(&alice, &repo, "data");

    // Bob's store does not have the content: his clone holds pointers.
    let bob = User::new();
    let clone = bob.path("clone");
    let o = bob.git(
        &bob.home,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("left as a pointer"),
        "no message about missing content: {err}"
    );
    assert!(err.contains("hoard pull"), "no hint: {err}");
    for (p, b) in &files {
        assert_eq!(read(&clone, p), pointer_of(b).as_bytes(), "{p}");
    }
    assert_clean(&bob, &clone);
    let st = bob.hoard_json(&clone, &["status"]);
    assert_eq!(st[0]["missing"].as_array().unwrap().len(), files.len() - 1);
    let ls = bob.hoard_json(&clone, &["ls-files"]);
    assert!(ls.iter().all(|f| f["present"] == false));

    // Content arrives in Bob's store (peer sync will do this; here: add).
    bob.hoard_in(
        &bob.home,
        &[
            "add",
            repo.join("data").to_str().unwrap(),
            repo.join("model.bin").to_str().unwrap(),
        ],
    );

    // A locally modified pointer file is never overwritten.
    write(&clone, "data/test/c.csv", b"my own edit\n");

    let r = bob.hoard_json(&clone, &["pull", "--include", "data/train/**"]);
    assert_eq!(r[0]["materialized"], 2, "{r:?}");
    assert_eq!(read(&clone, "data/train/a.csv"), files["data/train/a.csv"]);
    assert_eq!(read(&clone, "data/train/b.bin"), files["data/train/b.bin"]);
    assert_eq!(
        read(&clone, "model.bin"),
        pointer_of(&files["model.bin"]).as_bytes()
    );

    let r = bob.hoard_json(&clone, &["pull", "--exclude", "data/test"]);
    assert_eq!(r[0]["materialized"], 1, "model.bin: {r:?}");
    assert_eq!(read(&clone, "model.bin"), files["model.bin"]);
    assert_eq!(read(&clone, "data/test/c.csv"), b"my own edit\n");
    let r = bob.hoard_json(&clone, &["pull"]);
    assert_eq!(
        r[0]["kept"], 4,
        "the edit and the already written files stay: {r:?}"
    );
    // Only the edit shows as modified: the written files match their pointers.
    let st = bob.git_ok(&clone, &["status", "--porcelain"]);
    assert_eq!(st.trim(), "M data/test/c.csv");

    // Config sets the default selection; sparse checkout is respected.
    let carol = User::new();
    let c2 = carol.path("c2");
    carol.git_ok(
        &carol.home,
        &[
            "clone",
            "-q",
            "--no-checkout",
            repo.to_str().unwrap(),
            c2.to_str().unwrap(),
        ],
    );
    carol.git_ok(&c2, &["sparse-checkout", "set", "--no-cone", "/data/"]);
    carol.git_ok(&c2, &["checkout", "-q", "main"]);
    assert!(
        !c2.join("model.bin").exists(),
        "outside the sparse checkout"
    );
    carol.hoard_in(&carol.home, &["add", repo.to_str().unwrap()]);
    carol.git_ok(&c2, &["config", "hoard.fetchexclude", "data/test/**"]);
    let r = carol.hoard_json(&c2, &["pull"]);
    assert_eq!(r[0]["materialized"], 2, "{r:?}");
    assert_eq!(read(&c2, "data/train/a.csv"), files["data/train/a.csv"]);
    assert_eq!(
        read(&c2, "data/test/c.csv"),
        pointer_of(&files["data/test/c.csv"]).as_bytes()
    );
    assert!(
        !c2.join("model.bin").exists(),
        "pull must not create files outside the sparse checkout"
    );
    assert_clean(&carol, &c2);

    // `hoard checkout` writes what is local, fetching nothing.
    carol.git_ok(&c2, &["config", "--unset", "hoard.fetchexclude"]);
    let r = carol.hoard_json(&c2, &["checkout"]);
    assert_eq!(r[0]["materialized"], 1, "{r:?}");
    assert_eq!(read(&c2, "data/test/c.csv"), files["data/test/c.csv"]);
    assert_clean(&carol, &c2);
}

#[test]
fn a_clone_without_hoard_keeps_pointers_and_nothing_breaks() {
    let alice = User::new();
    let repo = alice.repo("r", &["*.bin"]);
    let b = data(400_000, 3, false);
    write(&repo, "x.bin", &b);
    commit_all(&alice, &repo, "x");

    let dave = User::without_hoard();
    let clone = dave.path("clone");
    dave.git_ok(
        &dave.home,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(read(&clone, "x.bin"), pointer_of(&b).as_bytes());
    assert_clean(&dave, &clone);
    // Dave can work on other files and commit.
    write(&clone, "notes.txt", b"hello\n");
    commit_all(&dave, &clone, "notes");
    assert_eq!(
        dave.git_ok(&clone, &["cat-file", "-p", "HEAD:x.bin"]),
        pointer_of(&b)
    );
}

#[test]
fn autocrlf_leaves_binary_content_untouched() {
    let u = User::new();
    let repo = u.repo("r", &["*.dat"]);
    u.git_ok(&repo, &["config", "core.autocrlf", "true"]);
    let mut b = b"line one\r\nline two\nline three\r\n".repeat(5000);
    b.extend_from_slice(&data(10_000, 4, false));
    write(&repo, "mixed.dat", &b);
    commit_all(&u, &repo, "crlf");
    assert_eq!(
        u.git_ok(&repo, &["cat-file", "-p", "HEAD:mixed.dat"]),
        pointer_of(&b)
    );
    std::fs::remove_file(repo.join("mixed.dat")).unwrap();
    u.git_ok(&repo, &["checkout", "--", "mixed.dat"]);
    assert!(read(&repo, "mixed.dat") == b, "content changed by autocrlf");
    assert_clean(&u, &repo);
}

#[test]
fn hostile_and_lookalike_pointers_pass_through_unchanged() {
    let u = User::new();
    let repo = u.repo("r", &["*.p"]);
    let hex = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    let good = format!("version hoard/1\noid blake3:{hex}\nsize 5\n");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("crlf.p", good.replace('\n', "\r\n").into_bytes()),
        (
            "upper.p",
            good.replace(hex, &hex.to_uppercase()).into_bytes(),
        ),
        ("badhex.p", good.replace(&hex[..2], "zz").into_bytes()),
        ("extra.p", format!("{good}extra key\n").into_bytes()),
        ("repeated.p", format!("{good}size 5\n").into_bytes()),
        ("zero.p", good.replace("size 5", "size 05").into_bytes()),
        (
            "huge.p",
            good.replace("size 5", "size 99999999999999999999999")
                .into_bytes(),
        ),
    ];
    let mut big = good.clone().into_bytes();
    big.resize(10 << 20, b'x');
    cases.push(("big.p", big));
    // A valid pointer to content nobody has: stays a pointer.
    let unknown = good.replace("size 5", "size 18446744073709551615");
    cases.push(("unknown.p", unknown.clone().into_bytes()));

    // Commit the raw bytes, bypassing the filter, as a hostile repo would.
    for (name, bytes) in &cases {
        write(&repo, name, bytes);
        let blob = u.git_ok(&repo, &["hash-object", "-w", "--no-filters", name]);
        u.git_ok(
            &repo,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("100644,{},{name}", blob.trim()),
            ],
        );
    }
    u.git_ok(&repo, &["commit", "-q", "-m", "lookalikes"]);
    for (name, _) in &cases {
        std::fs::remove_file(repo.join(name)).unwrap();
    }
    let o = u.git(&repo, &["checkout", "--", "."]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, bytes) in &cases {
        assert!(read(&repo, name) == *bytes, "{name} was changed by smudge");
    }
    // Single-shot smudge agrees.
    for (name, bytes) in &cases {
        let mut c = u.hoard_cmd(&repo, &["smudge", name]);
        c.stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = bytes.clone();
        let w = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        let o = child.wait_with_output().unwrap();
        w.join().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.stdout == *bytes, "{name}: single-shot smudge changed it");
    }
    // Lookalikes in tracked paths would be stored by hoard on the next
    // `git add` (git sees them as modified); a real pointer cleans to itself.
    let st = u.git_ok(&repo, &["status", "--porcelain"]);
    assert!(st.contains(" M crlf.p"), "{st}");
    assert!(!st.contains("unknown.p"), "{st}");
    u.git_ok(&repo, &["add", "unknown.p"]);
    assert_eq!(u.git_ok(&repo, &["diff", "--cached", "--name-only"]), "");
}

#[test]
fn pull_never_writes_through_a_symlink() {
    let alice = User::new();
    let repo = alice.repo("r", &["data/**"]);
    let secret = data(5000, 5, false);
    write(&repo, "data/x.bin", &secret);
    commit_all(&alice, &repo, "x");

    let bob = User::new();
    let clone = bob.path("clone");
    bob.git_ok(
        &bob.home,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    bob.hoard_in(&bob.home, &["add", repo.join("data").to_str().unwrap()]);
    // `data` is replaced by a symlink to a directory outside the work tree
    // holding a file that looks exactly like the pointer.
    let outside = bob.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.bin"), pointer_of(&secret)).unwrap();
    std::fs::remove_dir_all(clone.join("data")).unwrap();
    std::os::unix::fs::symlink(&outside, clone.join("data")).unwrap();
    let o = bob.hoard(&clone, &["pull"]);
    assert!(!o.status.success(), "pull through a symlink must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read(outside.join("x.bin")).unwrap(),
        pointer_of(&secret).as_bytes(),
        "the file outside the work tree was written"
    );

    // A symlink as the file itself is not a pointer file: left alone.
    std::fs::remove_file(clone.join("data")).unwrap();
    std::fs::create_dir_all(clone.join("data")).unwrap();
    std::os::unix::fs::symlink(outside.join("x.bin"), clone.join("data/x.bin")).unwrap();
    let r = bob.hoard_json(&clone, &["pull"]);
    assert_eq!(r[0]["materialized"], 0, "{r:?}");
    assert_eq!(
        std::fs::read(outside.join("x.bin")).unwrap(),
        pointer_of(&secret).as_bytes()
    );
}

#[test]
fn hooks_are_chained_with_existing_ones_and_uninstall_restores_them() {
    let u = User::new();
    let repo = u.repo("r", &["*.bin"]);
    // An existing pre-push hook (as git-lfs would have) that records its input.
    let hooks = repo.join(".git/hooks");
    let log = u.path("prepush.log");
    let script = format!(
        "#!/bin/sh\necho \"args: $*\" >> {0}\ncat >> {0}\n",
        log.display()
    );
    std::fs::write(hooks.join("pre-push"), &script).unwrap();
    std::fs::set_permissions(
        hooks.join("pre-push"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    u.hoard_in(&repo, &["install", "--local"]);
    assert!(hooks.join("pre-push.pre-hoard").exists());

    let bare = u.path("remote.git");
    u.git_ok(&u.home, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    u.git_ok(&repo, &["remote", "add", "origin", bare.to_str().unwrap()]);
    write(&repo, "a.bin", &data(3000, 6, false));
    commit_all(&u, &repo, "a");
    u.git_ok(&repo, &["push", "-q", "origin", "main"]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("args: origin"), "{logged}");
    assert!(
        logged.contains("refs/heads/main"),
        "the chained hook got no stdin: {logged}"
    );

    // A commit whose content is not in the store is refused by pre-push.
    let ghost = "version hoard/1\noid blake3:1111111111111111111111111111111111111111111111111111111111111111\nsize 3\n";
    write(&repo, "ghost.bin", ghost.as_bytes());
    commit_all(&u, &repo, "ghost");
    let o = u.git(&repo, &["push", "-q", "origin", "main"]);
    assert!(
        !o.status.success(),
        "push of missing content must be refused"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ghost.bin"), "{err}");

    u.hoard_in(&repo, &["uninstall", "--local"]);
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
        script
    );
    assert!(!hooks.join("post-checkout").exists());
    assert!(!hooks.join("pre-push.pre-hoard").exists());
}

#[test]
fn a_daemon_killed_mid_checkout_gives_a_clear_error_and_a_rerun_completes() {
    let u = User::new();
    let repo = u.repo("r", &["*.dat"]);
    let n = 300;
    for i in 0..n {
        write(
            &repo,
            &format!("d/f{i:03}.dat"),
            &data(20_000, i as u64, false),
        );
    }
    commit_all(&u, &repo, "one");
    u.git_ok(&repo, &["checkout", "-q", "-b", "two"]);
    for i in 0..n {
        write(
            &repo,
            &format!("d/f{i:03}.dat"),
            &data(21_000, 1000 + i as u64, false),
        );
    }
    commit_all(&u, &repo, "two");

    // Kill the daemon while git checks out main.
    let child = u
        .git_cmd(&repo, &["checkout", "-q", "main"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    u.env.kill_daemon();
    let o = common::wait_output(child, std::time::Duration::from_secs(120), "git checkout");
    eprintln!(
        "checkout during the kill: {} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("hoard"), "unclear error: {err}");
    }
    // Rerun: the daemon is started again and everything is there.
    let o = u.git(&repo, &["checkout", "-q", "-f", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..n {
        assert_eq!(
            read(&repo, &format!("d/f{i:03}.dat")),
            data(20_000, i as u64, false),
            "f{i:03}"
        );
    }
    assert_clean(&u, &repo);
}

#[test]
fn a_daemon_killed_mid_add_is_reported_and_renormalize_restores_every_object() {
    let u = User::new();
    let repo = u.repo("r", &["*.dat"]);
    let n = 400;
    for i in 0..n {
        write(
            &repo,
            &format!("d/f{i:03}.dat"),
            &data(30_000, 5000 + i as u64, false),
        );
    }
    let child = u.git_cmd(&repo, &["add", "-A"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    u.env.kill_daemon();
    let o = common::wait_output(child, std::time::Duration::from_secs(120), "git add");
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("add during the kill: {} {err}", o.status);
    // Whatever the kill hit is named, with the way to store it again.
    if err.contains("not stored") {
        assert!(err.contains("--renormalize"), "{err}");
    }
    // The rerun stores everything git points to.
    u.git_ok(&repo, &["add", "--renormalize", "."]);
    u.git_ok(&repo, &["add", "-A"]);
    u.git_ok(&repo, &["commit", "-q", "-m", "all"]);
    let listed = u.hoard_json(&repo, &["ls-files"]);
    assert_eq!(listed.len(), n);
    let missing: Vec<_> = listed.iter().filter(|f| f["present"] != true).collect();
    assert!(
        missing.is_empty(),
        "objects missing after the rerun: {missing:?}"
    );
    // And they read back: a fresh checkout of everything.
    std::fs::remove_dir_all(repo.join("d")).unwrap();
    u.git_ok(&repo, &["checkout", "--", "."]);
    for i in 0..n {
        assert_eq!(
            read(&repo, &format!("d/f{i:03}.dat")),
            data(30_000, 5000 + i as u64, false)
        );
    }
}

#[test]
fn git_add_of_a_file_the_watcher_ingested_sends_nothing() {
    let u = User::new();
    let repo = u.repo("r", &["data/**"]);
    std::fs::create_dir_all(repo.join("data")).unwrap();
    let data_dir = repo.join("data");
    u.hoard_in(
        &repo,
        &[
            "dataset",
            "add",
            "repo-data",
            data_dir.to_str().unwrap(),
            "--watch",
        ],
    );
    // The watcher is up once it has scanned the directory; before that, a
    // `status` would read the new file itself, too recently written for the
    // stat cache to keep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while u.hoard_json(&repo, &["dataset", "list"]).pop().unwrap()[0]["scans"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never scanned"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let big = data(5_000_000, 77, false);
    write(&repo, "data/big.bin", &big);
    // Wait for the watcher to ingest it: the dataset's view holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let st = u.hoard_json(&repo, &["status", "repo-data"]).pop().unwrap();
        let seen = st["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "big.bin" && c["new"]["size"] == 5_000_000);
        if seen && st["pending"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never ingested big.bin: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let known = |u: &User| {
        let s: serde_json::Value =
            serde_json::from_str(&u.hoard_in(&u.home, &["daemon", "status", "--json"])).unwrap();
        s["clean_known"].as_u64().unwrap()
    };
    let before = known(&u);
    u.git_ok(&repo, &["add", "data/big.bin"]);
    assert_eq!(known(&u), before + 1, "the stat cache answered for big.bin");
    let staged = u.git_ok(&repo, &["show", ":data/big.bin"]);
    assert_eq!(staged, pointer_of(&big));
}

#[test]
fn a_path_that_is_not_utf8_is_tracked_pulled_and_shown_like_any_other() {
    use std::os::unix::ffi::OsStrExt;
    let alice = User::new();
    let repo = alice.repo("r", &["*.bin"]);
    // Written on a Latin-1 system: not UTF-8, legal for git.
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.bin");
    let latin1 = data(200_000, 7, false);
    std::fs::write(repo.join(name), &latin1).unwrap();
    let plain = data(100_000, 8, false);
    write(&repo, "plain.bin", &plain);
    // The hooks (post-commit) run over it.
    commit_all(&alice, &repo, "a Latin-1 name");
    let ls = alice.hoard_json(&repo, &["ls-files"]);
    assert_eq!(ls.len(), 2, "{ls:?}");
    assert!(
        ls.iter().any(|f| f["path"] == "caf\\xe9.bin"),
        "shown escaped: {ls:?}"
    );
    let st = alice.hoard_json(&repo, &["status"]);
    assert!(st[0]["missing"].as_array().unwrap().is_empty(), "{st:?}");
    assert_clean(&alice, &repo);

    // A clone elsewhere gets pointers, then the content by `hoard pull`.
    let bob = User::new();
    let clone = bob.path("clone");
    let o = bob.git(
        &bob.home,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(clone.join(name)).unwrap(),
        pointer_of(&latin1).as_bytes()
    );
    bob.hoard_in(&bob.home, &["add", repo.to_str().unwrap()]);
    let r = bob.hoard_json(&clone, &["pull"]);
    assert_eq!(r[0]["materialized"], 2, "{r:?}");
    assert_eq!(std::fs::read(clone.join(name)).unwrap(), latin1);
    assert_eq!(read(&clone, "plain.bin"), plain);
    assert_clean(&bob, &clone);
}
