//! `hoard install` / `uninstall` (git config and hooks) and `hoard track` /
//! `untrack` (`.gitattributes`).
//!
//! Hooks are chained, never overwritten: a hook that was there before
//! (git-lfs's, or the user's) is kept as `<name>.pre-hoard` and run first
//! with the same arguments and input; `uninstall` puts it back.

use super::{git_at, Repo};
use anyhow::{bail, Context};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The hooks hoard installs.
pub const HOOKS: [&str; 4] = ["pre-push", "post-checkout", "post-merge", "post-commit"];

/// Marks a hook file as hoard's.
const MARKER: &str = "# hoard-managed hook";
const CHAINED_SUFFIX: &str = ".pre-hoard";

/// Where `install` writes git config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Local,
    System,
}

impl Scope {
    fn flag(self) -> &'static str {
        match self {
            Scope::Global => "--global",
            Scope::Local => "--local",
            Scope::System => "--system",
        }
    }
}

const FILTER_CONFIG: [(&str, &str); 4] = [
    ("filter.hoard.process", "hoard filter-process"),
    ("filter.hoard.required", "true"),
    ("filter.hoard.clean", "hoard clean -- %f"),
    ("filter.hoard.smudge", "hoard smudge -- %f"),
];

/// What `install` did, for the user.
pub fn install(scope: Scope) -> anyhow::Result<Vec<String>> {
    let repo = Repo::discover().ok();
    if scope == Scope::Local && repo.is_none() {
        bail!("`hoard install --local` must run inside a git repository");
    }
    let dir = repo
        .as_ref()
        .map(|r| r.work_tree.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut done = Vec::new();
    for (k, v) in FILTER_CONFIG {
        git_at(&dir, ["config", scope.flag(), "--replace-all", k, v])
            .with_context(|| format!("cannot set {k} ({} config)", &scope.flag()[2..]))?;
    }
    done.push(format!(
        "git config ({}): filter.hoard.*",
        &scope.flag()[2..]
    ));
    if let Some(repo) = &repo {
        for h in install_hooks(repo)? {
            done.push(h);
        }
    }
    Ok(done)
}

pub fn uninstall(scope: Scope) -> anyhow::Result<Vec<String>> {
    let repo = Repo::discover().ok();
    let dir = repo
        .as_ref()
        .map(|r| r.work_tree.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut done = Vec::new();
    // Absent already is fine: exit status 5 means "no such section".
    let _ = git_at(
        &dir,
        ["config", scope.flag(), "--remove-section", "filter.hoard"],
    );
    done.push(format!(
        "git config ({}): filter.hoard.* removed",
        &scope.flag()[2..]
    ));
    if let Some(repo) = &repo {
        let hooks = hooks_dir(repo)?;
        for name in HOOKS {
            let path = hooks.join(name);
            if is_ours(&path) {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                let chained = chained_path(&path);
                if chained.exists() {
                    fs::rename(&chained, &path)
                        .with_context(|| format!("cannot restore {}", path.display()))?;
                    done.push(format!("hook {name}: restored the previous hook"));
                } else {
                    done.push(format!("hook {name}: removed"));
                }
            }
        }
    }
    Ok(done)
}

fn hooks_dir(repo: &Repo) -> anyhow::Result<PathBuf> {
    let out = repo.git(["rev-parse", "--path-format=absolute", "--git-path", "hooks"])?;
    let p = PathBuf::from(String::from_utf8(out)?.trim_end());
    fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    Ok(p)
}

fn chained_path(hook: &Path) -> PathBuf {
    let mut s = hook.as_os_str().to_os_string();
    s.push(CHAINED_SUFFIX);
    PathBuf::from(s)
}

fn is_ours(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains(MARKER))
}

/// Installs (or refreshes) hoard's hooks, keeping foreign ones chained.
pub fn install_hooks(repo: &Repo) -> anyhow::Result<Vec<String>> {
    let dir = hooks_dir(repo)?;
    let mut done = Vec::new();
    for name in HOOKS {
        let path = dir.join(name);
        let chained = chained_path(&path);
        let meta = fs::symlink_metadata(&path).ok();
        if meta.is_some() && !is_ours(&path) {
            if chained.exists() {
                bail!(
                    "{} exists and so does {}: move one of them away, then run `hoard install` again",
                    path.display(),
                    chained.display()
                );
            }
            fs::rename(&path, &chained)
                .with_context(|| format!("cannot move {} aside", path.display()))?;
            done.push(format!(
                "hook {name}: installed; the existing hook runs first (kept as {name}{CHAINED_SUFFIX})"
            ));
        } else if meta.is_none() {
            done.push(format!("hook {name}: installed"));
        }
        let tmp = dir.join(format!(".{name}.hoard-tmp"));
        fs::write(&tmp, hook_script(name))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot install {}", path.display()))?;
    }
    Ok(done)
}

fn hook_script(name: &str) -> String {
    // pre-push is the only one of these hooks that reads stdin: both the
    // chained hook and hoard get a copy.
    let (save, chained_in, ours_in, cleanup) = if name == "pre-push" {
        (
            "input=$(mktemp \"${TMPDIR:-/tmp}/hoard-pre-push.XXXXXX\") || exit 1\ntrap 'rm -f \"$input\"' EXIT\ncat > \"$input\"\n",
            " < \"$input\"",
            " < \"$input\"",
            "",
        )
    } else {
        ("", "", "", "")
    };
    let missing_exit = if name == "pre-push" { 2 } else { 0 };
    format!(
        "#!/bin/sh\n{MARKER}: `hoard uninstall` removes it.\n\
         {save}\
         chained=\"$(dirname \"$0\")/{name}{CHAINED_SUFFIX}\"\n\
         if [ -x \"$chained\" ]; then\n  \"$chained\" \"$@\"{chained_in} || exit $?\nfi\n\
         if ! command -v hoard >/dev/null 2>&1; then\n  echo >&2 \"hoard: not found on PATH, so this {name} hook did nothing; install hoard or run 'hoard uninstall' (hook: $0)\"\n  exit {missing_exit}\nfi\n\
         hoard hook {name} \"$@\"{ours_in}\n{cleanup}"
    )
}

// ---- .gitattributes --------------------------------------------------------

const ATTRS: &str = "filter=hoard diff=hoard merge=hoard -text";

/// Adds `PATTERN filter=hoard diff=hoard merge=hoard -text` lines to the
/// top-level `.gitattributes`. Returns the patterns newly tracked.
pub fn track(repo: &Repo, patterns: &[String]) -> anyhow::Result<Vec<String>> {
    let path = repo.work_tree.join(".gitattributes");
    let text = read_attributes(&path)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut added = Vec::new();
    for p in patterns {
        let pat = attr_pattern(p)?;
        let already = lines.iter().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(pat.as_str()) && f.any(|a| a == "filter=hoard")
        });
        if !already {
            lines.push(format!("{pat} {ATTRS}"));
            added.push(pat);
        }
    }
    if !added.is_empty() {
        write_attributes(&path, &lines)?;
    }
    Ok(added)
}

/// Removes hoard's lines for `patterns`; other attributes stay.
pub fn untrack(repo: &Repo, patterns: &[String]) -> anyhow::Result<Vec<String>> {
    let path = repo.work_tree.join(".gitattributes");
    let text = read_attributes(&path)?;
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let pat = f.next().unwrap_or("");
        let ours = l.split_whitespace().any(|a| a == "filter=hoard");
        if ours
            && patterns
                .iter()
                .any(|p| attr_pattern(p).ok().as_deref() == Some(pat))
        {
            removed.push(pat.to_string());
        } else {
            kept.push(l.to_string());
        }
    }
    if !removed.is_empty() {
        write_attributes(&path, &kept)?;
    }
    Ok(removed)
}

/// Patterns hoard tracks in the top-level `.gitattributes`.
pub fn tracked_patterns(repo: &Repo) -> anyhow::Result<Vec<String>> {
    let text = read_attributes(&repo.work_tree.join(".gitattributes"))?;
    Ok(text
        .lines()
        .filter(|l| l.split_whitespace().any(|a| a == "filter=hoard"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

fn read_attributes(path: &Path) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_attributes(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    let tmp = path.with_extension("hoard-tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot update {}", path.display()))?;
    Ok(())
}

/// A pattern as a `.gitattributes` line can hold it: spaces are escaped
/// (gitattributes has no quoting for them), line breaks refused.
fn attr_pattern(p: &str) -> anyhow::Result<String> {
    if p.is_empty() || p.contains(['\n', '\r', '\0']) {
        bail!("{p:?} cannot be a tracking pattern: it is empty or holds a line break");
    }
    if p.starts_with('#') || p.starts_with('!') {
        bail!("{p:?} cannot start a .gitattributes line (`#` is a comment, `!` is not allowed); write `\\{p}` to match it literally");
    }
    Ok(p.replace(' ', "[[:space:]]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_patterns_are_escaped_or_refused() {
        assert_eq!(attr_pattern("data/**").unwrap(), "data/**");
        assert_eq!(
            attr_pattern("my file.bin").unwrap(),
            "my[[:space:]]file.bin"
        );
        for bad in ["", "a\nb", "#x", "!x"] {
            assert!(attr_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hook_scripts_chain_and_pass_stdin_only_to_pre_push() {
        let pre_push = hook_script("pre-push");
        assert!(pre_push.contains(MARKER));
        assert!(pre_push.contains("pre-push.pre-hoard"));
        assert!(pre_push.contains("< \"$input\""));
        assert!(pre_push.contains("exit 2"));
        let pc = hook_script("post-checkout");
        assert!(!pc.contains("$input"));
        assert!(pc.contains("hoard hook post-checkout \"$@\""));
    }
}
