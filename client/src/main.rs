//! `hoard`: the command-line client. A thin layer over the daemon's local
//! API; the daemon is started on demand.
//!
//! This file parses the command line ([`cli`], its help by group from
//! [`help`]), runs each group of verbs (one function per group, calling
//! into [`cmd`] and [`git`]), and turns the outcome into the exit code:
//! one per kind of failure ([`ui::exit_code`]).

mod cli;
mod cmd;
mod connect;
mod git;
mod help;
mod remote;
mod ui;

use clap::FromArgMatches;
use cli::{
    Cli, Command, DaemonAction, DaemonVerb, DatasetAction, DatasetVerb, GitVerb, RemoteAction,
    SharingVerb, StoreVerb, TokenAction,
};
use hoard_proto::paths::Paths;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&help::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut help::command()).exit(),
    };
    let paths = match Paths::resolve(cli.store.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hoard: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(r) = without_runtime(&cli.command, &paths) {
        return report(r);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoard: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    report(rt.block_on(dispatch(cli.command, &paths)))
}

/// The verbs that run without this process's async runtime: the daemon in
/// the foreground (it replaces this process) and git's filters (they drive
/// runtimes of their own).
fn without_runtime(command: &Command, paths: &Paths) -> Option<anyhow::Result<()>> {
    Some(match command {
        Command::Daemon(DaemonVerb::Daemon {
            action: DaemonAction::Run,
        }) => cmd::daemon::run(paths),
        Command::Git(GitVerb::FilterProcess) => git::filter::filter_process(paths),
        Command::Git(GitVerb::Clean { path }) => git::filter::clean_once(paths, path.as_deref()),
        Command::Git(GitVerb::Smudge { path }) => git::filter::smudge_once(paths, path.as_deref()),
        _ => return None,
    })
}

async fn dispatch(command: Command, paths: &Paths) -> anyhow::Result<()> {
    match command {
        Command::Store(v) => store(v, paths).await,
        Command::Git(v) => git(v, paths).await,
        Command::Datasets(v) => datasets(v, paths).await,
        Command::Sharing(v) => sharing(v, paths).await,
        Command::Daemon(DaemonVerb::Daemon { action }) => daemon(action, paths).await,
    }
}

async fn store(verb: StoreVerb, paths: &Paths) -> anyhow::Result<()> {
    // A malformed id is refused before a daemon is started for it.
    if let StoreVerb::Cat { oid, .. } | StoreVerb::Restore { oid, .. } = &verb {
        cmd::parse_oid(oid)?;
    }
    let c = connect::connect(paths).await?;
    match verb {
        StoreVerb::Add { paths: p, json } => cmd::add::run(c, p, json).await,
        StoreVerb::Cat {
            oid,
            offset,
            length,
        } => cmd::read::cat(c, &oid, offset, length).await,
        StoreVerb::Restore { oid, dest } => cmd::read::restore(c, &oid, &dest, false).await,
        StoreVerb::Stats { json } => cmd::store::stats(c, json).await,
        StoreVerb::Verify { read_data, json } => cmd::store::verify(c, read_data, json).await,
        StoreVerb::Reindex { json } => cmd::store::reindex(c, json).await,
        StoreVerb::Prune(args) => cmd::prune::prune(c, paths, args).await,
        StoreVerb::Pin { target, remove } => cmd::prune::pin(c, target, remove).await,
        StoreVerb::Repair {
            remote,
            dry_run,
            json,
        } => cmd::prune::repair(c, paths, remote, dry_run, json).await,
        StoreVerb::Backend {
            action: cli::BackendAction::Migrate { to, json },
        } => cmd::store::migrate_backend(c, &to, json).await,
    }
}

async fn git(verb: GitVerb, paths: &Paths) -> anyhow::Result<()> {
    match verb {
        GitVerb::Install { local, system } => {
            cmd::git::install(scope(local, system))?;
            // A prune must know this repository uses the store.
            if let Ok(repo) = git::Repo::discover() {
                let _ = git::roots::record(&paths.store, &repo);
            }
            Ok(())
        }
        GitVerb::Migrate { action } => {
            let c = connect::connect(paths).await?;
            let args = |m: cli::MigrateArgs| cmd::migrate::Args {
                include: m.include,
                exclude: m.exclude,
                everything: m.everything,
                no_rewrite: m.no_rewrite,
                object_map: m.object_map,
                json: m.json,
            };
            match action {
                cli::MigrateAction::Import(m) => cmd::migrate::import(c, args(m)).await,
                cli::MigrateAction::Export(m) => cmd::migrate::export(c, paths, args(m)).await,
            }
        }
        GitVerb::Uninstall { local, system } => cmd::git::uninstall(scope(local, system)),
        GitVerb::Track { patterns } => cmd::git::track(patterns),
        GitVerb::Untrack { patterns } => cmd::git::untrack(patterns),
        GitVerb::LsFiles { rev, json } => {
            let repo = git::Repo::discover()?;
            let mut c = connect::connect(paths).await?;
            git::verbs::ls_files(&mut c, &repo, rev.as_deref(), json).await
        }
        GitVerb::Status {
            dataset: Some(d),
            rescan,
            json,
        } => cmd::dataset::status(connect::connect(paths).await?, d, rescan, json).await,
        GitVerb::Status { json, .. } => {
            let repo = git::Repo::discover()?;
            let mut c = connect::connect(paths).await?;
            git::verbs::status(&mut c, &repo, json).await
        }
        GitVerb::Pull {
            include,
            exclude,
            rev,
            json,
        } => cmd::git::pull(paths, &include, &exclude, &rev, true, json).await,
        GitVerb::Checkout {
            spec: Some(spec),
            to: Some(to),
            include,
            exclude,
            force,
            json,
        } => {
            let a = cmd::dataset::CheckoutArgs {
                spec,
                to,
                include,
                exclude,
                force,
                json,
            };
            cmd::dataset::checkout(connect::connect(paths).await?, a).await
        }
        GitVerb::Checkout {
            spec: Some(spec), ..
        } => anyhow::bail!(
            "`hoard checkout {spec}` needs --to DIR (a dataset checkout); in a git work tree, `hoard checkout` takes no argument"
        ),
        GitVerb::Checkout {
            include,
            exclude,
            json,
            ..
        } => cmd::git::pull(paths, &include, &exclude, "HEAD", false, json).await,
        GitVerb::Hook { name, args } => cmd::git::hook(paths, &name, &args).await,
        GitVerb::FilterProcess | GitVerb::Clean { .. } | GitVerb::Smudge { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn datasets(verb: DatasetVerb, paths: &Paths) -> anyhow::Result<()> {
    let c = connect::connect(paths).await?;
    match verb {
        DatasetVerb::Dataset { action } => dataset(c, action, paths).await,
        DatasetVerb::Snapshot {
            dataset,
            message,
            from,
            meta,
            rescan,
            allow_empty,
            json,
        } => {
            let a = cmd::dataset::SnapshotArgs {
                dataset,
                message,
                from,
                meta,
                rescan,
                allow_empty,
                json,
            };
            cmd::dataset::snapshot(c, a).await
        }
        DatasetVerb::Log { spec, limit, json } => cmd::dataset::log(c, spec, limit, json).await,
        DatasetVerb::Diff { a, b, json } => cmd::dataset::diff(c, a, b, json).await,
        DatasetVerb::Tag {
            dataset,
            tag,
            target,
            force,
            delete,
        } => cmd::dataset::tag(c, dataset, tag, target, force, delete).await,
        DatasetVerb::Lineage {
            spec,
            down,
            depth,
            json,
        } => cmd::dataset::lineage(c, spec, down, depth, json).await,
    }
}

/// `hoard dataset add|remove|list|push`.
async fn dataset(c: connect::Client, action: DatasetAction, paths: &Paths) -> anyhow::Result<()> {
    match action {
        DatasetAction::Add {
            name,
            dir,
            watch,
            remote,
            exclude,
            json,
        } => {
            let a = cmd::dataset::AddArgs {
                name,
                dir,
                watch,
                remote,
                exclude,
                json,
            };
            cmd::dataset::add(c, a).await
        }
        DatasetAction::Remove {
            name,
            remote: Some(remote),
            grace,
        } => cmd::prune::remove_dataset(c, paths, name, remote, grace).await,
        DatasetAction::Remove { name, .. } => cmd::dataset::remove(c, name).await,
        DatasetAction::List { json } => cmd::dataset::list(c, json).await,
        DatasetAction::Push {
            name,
            remote,
            force,
            json,
        } => cmd::dataset::push(c, paths, name, remote, force, json).await,
    }
}

async fn sharing(verb: SharingVerb, paths: &Paths) -> anyhow::Result<()> {
    match verb {
        SharingVerb::Sync {
            name,
            message,
            ours,
            theirs,
            abort: _,
            rebase,
            remote,
            json,
        } => {
            let a = cmd::sync::Args {
                message,
                ours,
                theirs,
                rebase,
                remote,
                json,
            };
            let c = connect::connect(paths).await?;
            match name {
                Some(n) => cmd::sync::dataset_sync(c, paths, &n, a).await,
                None => cmd::sync::git_sync(c, paths, a).await,
            }
        }
        SharingVerb::Clone {
            source,
            dir,
            include,
            exclude,
            force,
            json,
        } => {
            let a = cmd::dataset::CloneArgs {
                source,
                dir,
                include,
                exclude,
                force,
                json,
            };
            cmd::dataset::clone(connect::connect(paths).await?, paths, a).await
        }
        SharingVerb::Remote { action } => match action {
            RemoteAction::Add {
                name,
                url,
                token,
                fingerprint,
                ca,
            } => cmd::peer::remote_add(paths, &name, &url, token, fingerprint, ca),
            RemoteAction::Remove { name } => cmd::peer::remote_remove(paths, &name),
            RemoteAction::List { json } => cmd::peer::remote_list(paths, json),
        },
        SharingVerb::Token { action } => {
            let c = connect::connect(paths).await?;
            match action {
                TokenAction::Create {
                    write,
                    admin,
                    note,
                    json,
                    ..
                } => cmd::peer::token_create(c, write, admin, note, json).await,
                TokenAction::List { json } => cmd::peer::token_list(c, json).await,
                TokenAction::Revoke { id } => cmd::peer::token_revoke(c, &id).await,
            }
        }
        SharingVerb::Push { args, json } => {
            cmd::peer::transfer(connect::connect(paths).await?, paths, args, true, json).await
        }
        SharingVerb::Fetch { args, json } => {
            cmd::peer::transfer(connect::connect(paths).await?, paths, args, false, json).await
        }
    }
}

async fn daemon(action: DaemonAction, paths: &Paths) -> anyhow::Result<()> {
    match action {
        DaemonAction::Start => cmd::daemon::start(paths).await,
        DaemonAction::Stop => cmd::daemon::stop(paths).await,
        DaemonAction::Status { json } => cmd::daemon::status(paths, json).await,
        DaemonAction::Run => cmd::daemon::run(paths),
    }
}

fn scope(local: bool, system: bool) -> git::setup::Scope {
    match (local, system) {
        (true, _) => git::setup::Scope::Local,
        (_, true) => git::setup::Scope::System,
        _ => git::setup::Scope::Global,
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`hoard ... | head`): not an error.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for a failure: by the kind of the daemon's (or the
/// connection's) error anywhere in its chain, else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<ui::DaemonError>()
                .map(|d| d.code)
                .or_else(|| c.downcast_ref::<tonic::Status>().map(tonic::Status::code))
        })
        .map_or(1, ui::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_follows_the_error_kind_through_context() {
        let e = ui::status_error(tonic::Status::failed_precondition("not a fast-forward"))
            .context("cannot push dataset d");
        assert_eq!(exit_code(&e), 5);
        // Printed as before: the context, then the daemon's message alone.
        assert_eq!(
            format!("{e:#}"),
            "cannot push dataset d: not a fast-forward"
        );
        let e = ui::status_error(tonic::Status::data_loss("chunk 12 is damaged"));
        assert_eq!(exit_code(&e), 8);
        let e = ui::status_error(tonic::Status::unavailable(""));
        assert_eq!(exit_code(&e), 6);
        assert_eq!(exit_code(&anyhow::anyhow!("not inside a git work tree")), 1);
    }

    #[test]
    fn broken_pipe_is_success() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("cannot write to stdout");
        assert!(broken_pipe(&e));
        assert!(!broken_pipe(&anyhow::anyhow!("disk on fire")));
    }
}
