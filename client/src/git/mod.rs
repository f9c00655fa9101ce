//! Git integration: pointers in commits, content in the store.
//!
//! - [`pointer`]: the pointer format (one parser, one writer).
//! - [`filter`]: `hoard filter-process` (git's long-running filter protocol
//!   with `delay`) and the single-shot `hoard clean` / `hoard smudge`.
//! - [`setup`]: `install` / `uninstall` (git config, chained hooks),
//!   `track` / `untrack` (`.gitattributes`).
//! - [`tree`]: which pointers a revision, the index and the work tree hold.
//! - [`fetch`]: the one function that makes objects local (later: remotes).
//! - [`materialize`]: writing content into the work tree safely.
//! - [`lfs`]: git-lfs's pointer and attribute formats; [`rewrite`]: history
//!   rewriting through fast-export / fast-import (for `hoard migrate`).
//! - [`verbs`]: `pull`, `checkout`, `ls-files`, `status`, hook entry points.

pub mod fetch;
pub mod filter;
pub mod lfs;
pub mod materialize;
pub mod path;
pub mod pointer;
pub mod rewrite;
pub mod roots;
pub mod setup;
pub mod tree;
pub mod verbs;

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository the current directory belongs to.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Top of the work tree (absolute).
    pub work_tree: PathBuf,
}

impl Repo {
    /// Finds the repository containing the current directory.
    pub fn discover() -> anyhow::Result<Repo> {
        Self::discover_at(Path::new("."))
    }

    pub fn discover_at(dir: &Path) -> anyhow::Result<Repo> {
        let out = git_at(
            dir,
            ["rev-parse", "--path-format=absolute", "--show-toplevel"],
        )
        .context("not inside a git work tree (run this in a repository, or `git init` first)")?;
        let text = String::from_utf8(out).context("git printed a non-UTF-8 path")?;
        let Some(top) = text.lines().next().filter(|t| !t.is_empty()) else {
            bail!("not inside a git work tree (a bare repository has no files to materialize)");
        };
        Ok(Repo {
            work_tree: PathBuf::from(top),
        })
    }

    /// Runs git in the top of the work tree; stdout on success.
    pub fn git<I, S>(&self, args: I) -> anyhow::Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git_at(&self.work_tree, args)
    }

    /// A git config value (`git config --get`), if set.
    pub fn config(&self, key: &str) -> Option<String> {
        self.git(["config", "--get", key])
            .ok()
            .and_then(|o| String::from_utf8(o).ok())
            .map(|s| s.trim_end_matches('\n').to_string())
    }
}

/// Runs `git ARGS` in `dir`; stdout, or an error carrying git's stderr.
pub fn git_at<I, S>(dir: &Path, args: I) -> anyhow::Result<Vec<u8>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = Command::new("git")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run git: is it installed and on PATH?")?;
    if !out.status.success() {
        bail!(
            "`git {}` failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Splits NUL-terminated output into records.
pub fn nul_records(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|&c| c == 0).filter(|r| !r.is_empty())
}
