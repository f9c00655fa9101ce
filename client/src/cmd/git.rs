//! The git verbs' command-line edges: install, track, pull, hooks.

use crate::connect;
use crate::git::{self, setup, verbs, Repo};
use anyhow::bail;
use hoard_proto::paths::Paths;

pub fn install(scope: setup::Scope) -> anyhow::Result<()> {
    for line in setup::install(scope)? {
        println!("{line}");
    }
    println!("hoard is set up; `hoard track PATTERN` chooses the files it stores");
    Ok(())
}

pub fn uninstall(scope: setup::Scope) -> anyhow::Result<()> {
    for line in setup::uninstall(scope)? {
        println!("{line}");
    }
    Ok(())
}

pub fn track(patterns: Vec<String>) -> anyhow::Result<()> {
    let repo = Repo::discover()?;
    if patterns.is_empty() {
        let tracked = setup::tracked_patterns(&repo)?;
        if tracked.is_empty() {
            println!("nothing tracked yet; `hoard track 'data/**' '*.parquet'` for example");
        }
        for p in tracked {
            println!("{p}");
        }
        return Ok(());
    }
    for p in setup::track(&repo, &patterns)? {
        println!("tracking {p}");
    }
    if repo.config("filter.hoard.process").is_none() {
        eprintln!("hoard: note: git is not configured to use hoard yet; run `hoard install`");
    } else {
        setup::install_hooks(&repo)?;
    }
    Ok(())
}

pub fn untrack(patterns: Vec<String>) -> anyhow::Result<()> {
    let repo = Repo::discover()?;
    let removed = setup::untrack(&repo, &patterns)?;
    if removed.is_empty() {
        bail!("none of these patterns were tracked; `hoard track` lists those that are");
    }
    for p in removed {
        println!("untracked {p}");
    }
    Ok(())
}

pub async fn pull(
    paths: &Paths,
    include: &[String],
    exclude: &[String],
    rev: &str,
    fetch_first: bool,
    json: bool,
) -> anyhow::Result<()> {
    let repo = Repo::discover()?;
    let filter = verbs::PathFilter::new(&repo, include, exclude)?;
    let mut client = connect::connect(paths).await?;
    let report = verbs::pull(&mut client, paths, &repo, rev, &filter, fetch_first, None).await?;
    verbs::print_pull(&report, json, if fetch_first { "pull" } else { "checkout" })
}

pub async fn hook(paths: &Paths, name: &str, args: &[String]) -> anyhow::Result<()> {
    let repo = Repo::discover()?;
    let mut client = connect::connect(paths).await?;
    match name {
        "post-checkout" => {
            // PREV NEW FLAG; FLAG 0 is a file checkout: nothing moved.
            if args.get(2).map(String::as_str) == Some("0") {
                return Ok(());
            }
            git::verbs::hook_after_update(
                &mut client,
                paths,
                &repo,
                args.first().map(String::as_str),
            )
            .await
        }
        "post-merge" => {
            let prev = repo
                .git(["rev-parse", "-q", "--verify", "ORIG_HEAD"])
                .ok()
                .map(|o| String::from_utf8_lossy(&o).trim().to_string());
            git::verbs::hook_after_update(&mut client, paths, &repo, prev.as_deref()).await
        }
        "post-commit" => git::verbs::hook_post_commit(&mut client, &repo).await,
        "pre-push" => {
            let remote = args.first().map(String::as_str).unwrap_or("origin");
            git::verbs::hook_pre_push(&mut client, paths, &repo, remote).await
        }
        other => bail!("unknown hook {other:?}; run `hoard install` to refresh the hooks"),
    }
}
