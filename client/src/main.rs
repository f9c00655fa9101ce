//! `hoard`: the command-line client. A thin layer over the daemon's local
//! API; the daemon is started on demand.

mod cmd;
mod connect;
mod git;
mod remote;
mod ui;

use clap::{Parser, Subcommand};
use hoard_proto::paths::Paths;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "hoard",
    version,
    about = "Content-addressed large-file store for datasets"
)]
struct Cli {
    /// Store directory (holds config, socket, lock, log); overrides HOARD_HOME.
    #[arg(long, global = true, env = "HOARD_HOME", hide_env_values = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store files and directories (recursively); prints `blake3:<id>  <path>` per file.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// JSON lines: one object per file, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Write a stored file's content to stdout (every chunk verified).
    Cat {
        oid: String,
        /// Start at this byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many bytes.
        #[arg(long)]
        length: Option<u64>,
    },
    /// Write a stored file to DEST atomically (temporary name, fsync, rename).
    Restore { oid: String, dest: PathBuf },
    /// Show store totals: logical, unique and stored bytes, chunks, files, packs.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Check that index and packs agree; --read-data re-hashes every chunk.
    Verify {
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index from the packs alone.
    Reindex {
        #[arg(long)]
        json: bool,
    },
    /// Control the background daemon.
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
    /// Set up git to use hoard: filter config (global unless --local or
    /// --system) and, inside a repository, its hooks (existing hooks are
    /// chained, not replaced).
    Install {
        #[arg(long, conflicts_with = "system")]
        local: bool,
        #[arg(long)]
        system: bool,
    },
    /// Undo `hoard install`: remove the filter config and hoard's hooks
    /// (restoring hooks it had chained).
    Uninstall {
        #[arg(long, conflicts_with = "system")]
        local: bool,
        #[arg(long)]
        system: bool,
    },
    /// Store files matching PATTERN (gitattributes syntax) in hoard: adds
    /// `PATTERN filter=hoard diff=hoard merge=hoard -text` to .gitattributes.
    /// Without patterns, lists what is tracked.
    Track { patterns: Vec<String> },
    /// Stop tracking PATTERN (files already committed stay pointers).
    Untrack {
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// List tracked files at REV (default HEAD): oid, `*` if the content is
    /// local or `-` if only the pointer is, size, path.
    LsFiles {
        rev: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// With DATASET: changes in its directory since its latest snapshot.
    /// Without: tracked files (git) to be committed, modified, missing from
    /// the store, or still pointers in the work tree.
    Status {
        dataset: Option<String>,
        /// Dataset: re-read the directory rather than trust the watcher.
        #[arg(long)]
        rescan: bool,
        #[arg(long)]
        json: bool,
    },
    /// Fetch the content of the selected files at REV (default HEAD) and
    /// write it into the work tree in place of their pointers. Never
    /// overwrites a modified file; respects sparse checkout.
    Pull {
        /// Only paths matching (repeatable, or comma-separated; default: config hoard.fetchinclude).
        #[arg(long, short = 'I', value_delimiter = ',')]
        include: Vec<String>,
        /// Not paths matching (default: config hoard.fetchexclude).
        #[arg(long, short = 'X', value_delimiter = ',')]
        exclude: Vec<String>,
        #[arg(default_value = "HEAD")]
        rev: String,
        #[arg(long)]
        json: bool,
    },
    /// `checkout SPEC --to DIR`: write a dataset snapshot into DIR (temporary
    /// names and renames; refuses to overwrite local changes unless --force;
    /// never writes through a symbolic link). Without --to, in a git work
    /// tree: write the content of pointers whose content is local now
    /// (fetches nothing).
    Checkout {
        /// NAME, NAME@TAG, NAME@ID-PREFIX, NAME@~N or a snapshot id.
        spec: Option<String>,
        #[arg(long)]
        to: Option<PathBuf>,
        #[arg(long, short = 'I', value_delimiter = ',')]
        include: Vec<String>,
        #[arg(long, short = 'X', value_delimiter = ',')]
        exclude: Vec<String>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Datasets: directories whose versions are kept as snapshots.
    Dataset {
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// Record a version of a dataset; prints its id.
    Snapshot {
        dataset: String,
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        /// A snapshot this one was derived from (repeatable): lineage.
        #[arg(long)]
        from: Vec<String>,
        /// Free metadata KEY=VALUE (repeatable), e.g. --meta cmd="python clean.py".
        #[arg(long)]
        meta: Vec<String>,
        /// Re-read the directory rather than trust the watcher's view.
        #[arg(long)]
        rescan: bool,
        /// Record a snapshot even if nothing changed.
        #[arg(long)]
        allow_empty: bool,
        #[arg(long)]
        json: bool,
    },
    /// A dataset's snapshots, newest first: SPEC is NAME or NAME@REV.
    Log {
        spec: String,
        #[arg(long, short = 'n', default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Files added, removed and modified from snapshot A to B, and the share
    /// of B's chunk bytes A already had.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Name a snapshot: `tag NAME TAG [REV]` (default: the latest).
    Tag {
        dataset: String,
        tag: String,
        target: Option<String>,
        /// Move an existing tag.
        #[arg(long)]
        force: bool,
        #[arg(long, conflicts_with = "target")]
        delete: bool,
    },
    /// What a snapshot was derived from (recursively), or with --down what
    /// was derived from it.
    Lineage {
        spec: String,
        #[arg(long)]
        down: bool,
        #[arg(long, default_value_t = 0)]
        depth: u32,
        #[arg(long)]
        json: bool,
    },
    /// Fetch one version of a dataset from a remote: REMOTE/NAME[@REV]
    /// [DIR] — only the selected paths' content travels.
    Clone {
        source: String,
        dir: Option<PathBuf>,
        #[arg(long, short = 'I', value_delimiter = ',')]
        include: Vec<String>,
        #[arg(long, short = 'X', value_delimiter = ',')]
        exclude: Vec<String>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Other daemons to sync with (their Peer API).
    Remote {
        #[command(subcommand)]
        action: RemoteAction,
    },
    /// Tokens other daemons present to this one's Peer API.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Send objects to a remote: [REMOTE] [OID|REV...] (default: the files
    /// tracked at HEAD). Only what the remote lacks travels.
    Push {
        args: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bring objects from a remote into the local store: [REMOTE] [OID|REV...].
    Fetch {
        args: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// git's long-running filter (started by git; see `hoard install`).
    FilterProcess,
    /// Single-shot clean filter: content on stdin, pointer on stdout.
    Clean { path: Option<PathBuf> },
    /// Single-shot smudge filter: pointer on stdin, content on stdout.
    Smudge { path: Option<PathBuf> },
    /// What hoard's git hooks run.
    #[command(hide = true)]
    Hook {
        name: String,
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DatasetAction {
    /// Register DIR as dataset NAME (--watch: ingest changes in the
    /// background; --remote: push new snapshots there automatically).
    Add {
        name: String,
        dir: PathBuf,
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        remote: Option<String>,
        /// Leave out paths matching (repeatable; `.git` always is).
        #[arg(long)]
        exclude: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Forget a dataset (its snapshots stay).
    Remove { name: String },
    /// Datasets: path, watched, latest snapshot, pending changes, sync state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send a dataset's snapshots and content to a remote and move its ref
    /// there (refused if not a fast-forward, unless --force).
    Push {
        name: String,
        remote: Option<String>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RemoteAction {
    /// Add (or update) a remote: NAME https://HOST:PORT --token TOKEN
    /// [--fingerprint blake3:… | --ca FILE]; http:// for a plaintext hub.
    Add {
        name: String,
        url: String,
        #[arg(long)]
        token: Option<String>,
        /// https: pin the hub's certificate (`hoard daemon status` there prints it).
        #[arg(long, conflicts_with = "ca")]
        fingerprint: Option<String>,
        /// https: a CA certificate (PEM) the hub's certificate chains to.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    Remove {
        name: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token (printed once): --read to fetch, --write to push too.
    Create {
        #[arg(long, conflicts_with = "write", required_unless_present = "write")]
        read: bool,
        #[arg(long)]
        write: bool,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum DaemonAction {
    /// Start it in the background (commands also do this on demand).
    Start,
    /// Ask it to finish in-flight work and stop.
    Stop,
    /// Is it running, and on which store? Exits 3 when not running.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run it in the foreground (for systemd; see contrib/hoardd.service).
    Run,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let paths = match Paths::resolve(cli.store.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hoard: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match &cli.command {
        Command::Daemon {
            action: DaemonAction::Run,
        } => return report(cmd::daemon::run(&paths)),
        Command::FilterProcess => return report(git::filter::filter_process(&paths)),
        Command::Clean { path } => return report(git::filter::clean_once(&paths, path.as_deref())),
        Command::Smudge { path } => {
            return report(git::filter::smudge_once(&paths, path.as_deref()))
        }
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoard: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    report(rt.block_on(dispatch(cli.command, &paths)))
}

async fn dispatch(command: Command, paths: &Paths) -> anyhow::Result<()> {
    match command {
        Command::Add { paths: p, json } => {
            cmd::add::run(connect::connect(paths).await?, p, json).await
        }
        Command::Cat {
            oid,
            offset,
            length,
        } => {
            cmd::parse_oid(&oid)?;
            cmd::read::cat(connect::connect(paths).await?, &oid, offset, length).await
        }
        Command::Restore { oid, dest } => {
            cmd::parse_oid(&oid)?;
            cmd::read::restore(connect::connect(paths).await?, &oid, &dest, false).await
        }
        Command::Stats { json } => cmd::store::stats(connect::connect(paths).await?, json).await,
        Command::Verify { read_data, json } => {
            cmd::store::verify(connect::connect(paths).await?, read_data, json).await
        }
        Command::Reindex { json } => {
            cmd::store::reindex(connect::connect(paths).await?, json).await
        }
        Command::Daemon { action } => match action {
            DaemonAction::Start => cmd::daemon::start(paths).await,
            DaemonAction::Stop => cmd::daemon::stop(paths).await,
            DaemonAction::Status { json } => cmd::daemon::status(paths, json).await,
            DaemonAction::Run => cmd::daemon::run(paths),
        },
        Command::Install { local, system } => cmd::git::install(scope(local, system)),
        Command::Uninstall { local, system } => cmd::git::uninstall(scope(local, system)),
        Command::Track { patterns } => cmd::git::track(patterns),
        Command::Untrack { patterns } => cmd::git::untrack(patterns),
        Command::LsFiles { rev, json } => {
            let repo = git::Repo::discover()?;
            let mut c = connect::connect(paths).await?;
            git::verbs::ls_files(&mut c, &repo, rev.as_deref(), json).await
        }
        Command::Status {
            dataset: Some(d),
            rescan,
            json,
        } => cmd::dataset::status(connect::connect(paths).await?, d, rescan, json).await,
        Command::Status { json, .. } => {
            let repo = git::Repo::discover()?;
            let mut c = connect::connect(paths).await?;
            git::verbs::status(&mut c, &repo, json).await
        }
        Command::Pull {
            include,
            exclude,
            rev,
            json,
        } => cmd::git::pull(paths, &include, &exclude, &rev, true, json).await,
        Command::Checkout {
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
        Command::Checkout {
            spec: Some(spec), ..
        } => anyhow::bail!(
            "`hoard checkout {spec}` needs --to DIR (a dataset checkout); in a git work tree, `hoard checkout` takes no argument"
        ),
        Command::Checkout {
            include,
            exclude,
            json,
            ..
        } => cmd::git::pull(paths, &include, &exclude, "HEAD", false, json).await,
        Command::Dataset { action } => {
            let c = connect::connect(paths).await?;
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
                DatasetAction::Remove { name } => cmd::dataset::remove(c, name).await,
                DatasetAction::List { json } => cmd::dataset::list(c, json).await,
                DatasetAction::Push {
                    name,
                    remote,
                    force,
                    json,
                } => cmd::dataset::push(c, paths, name, remote, force, json).await,
            }
        }
        Command::Snapshot {
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
            cmd::dataset::snapshot(connect::connect(paths).await?, a).await
        }
        Command::Log { spec, limit, json } => {
            cmd::dataset::log(connect::connect(paths).await?, spec, limit, json).await
        }
        Command::Diff { a, b, json } => {
            cmd::dataset::diff(connect::connect(paths).await?, a, b, json).await
        }
        Command::Tag {
            dataset,
            tag,
            target,
            force,
            delete,
        } => {
            let c = connect::connect(paths).await?;
            cmd::dataset::tag(c, dataset, tag, target, force, delete).await
        }
        Command::Lineage {
            spec,
            down,
            depth,
            json,
        } => cmd::dataset::lineage(connect::connect(paths).await?, spec, down, depth, json).await,
        Command::Clone {
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
        Command::Hook { name, args } => cmd::git::hook(paths, &name, &args).await,
        Command::Remote { action } => match action {
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
        Command::Token { action } => {
            let c = connect::connect(paths).await?;
            match action {
                TokenAction::Create {
                    write, note, json, ..
                } => cmd::peer::token_create(c, write, note, json).await,
                TokenAction::List { json } => cmd::peer::token_list(c, json).await,
                TokenAction::Revoke { id } => cmd::peer::token_revoke(c, &id).await,
            }
        }
        Command::Push { args, json } => {
            cmd::peer::transfer(connect::connect(paths).await?, paths, args, true, json).await
        }
        Command::Fetch { args, json } => {
            cmd::peer::transfer(connect::connect(paths).await?, paths, args, false, json).await
        }
        Command::FilterProcess | Command::Clean { .. } | Command::Smudge { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn scope(local: bool, system: bool) -> git::setup::Scope {
    match (local, system) {
        (true, _) => git::setup::Scope::Local,
        (_, true) => git::setup::Scope::System,
        _ => git::setup::Scope::Global,
    }
}

fn report(r: anyhow::Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`hoard ... | head`): not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
