//! The command line: every verb's arguments and flags (clap), in five
//! groups — store, git, datasets, sharing, daemon. Each group is one enum
//! flattened into [`Command`], so the verbs stay top-level (`hoard add`,
//! not `hoard store add`); the groups are what `hoard --help` lists under
//! its headings ([`crate::help`]) and what `main` dispatches on.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "hoard",
    version,
    about = "Content-addressed large-file store for datasets"
)]
pub struct Cli {
    /// Store directory (holds config, socket, lock, log); overrides HOARD_HOME.
    #[arg(long, global = true, env = "HOARD_HOME", hide_env_values = true)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Every verb, by group. The group enums carry `//` comments, not doc
// comments: clap would make those the about text of `hoard` itself.
#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Store(StoreVerb),
    #[command(flatten)]
    Git(GitVerb),
    #[command(flatten)]
    Datasets(DatasetVerb),
    #[command(flatten)]
    Sharing(SharingVerb),
    #[command(flatten)]
    Daemon(DaemonVerb),
}

// Content in the local store, by id; the store's health.
#[derive(Subcommand)]
pub enum StoreVerb {
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
    /// Delete what no root keeps (datasets' refs and tags, the snapshots
    /// the --keep rules keep, git repositories' live content, pins, the
    /// grace period) and shrink packs; --dry-run says what would go.
    Prune(PruneArgs),
    /// Keep a file (blake3:<id>) or snapshot (NAME@REV) through every prune;
    /// no argument lists the pins.
    Pin {
        target: Option<String>,
        /// Unpin it.
        #[arg(long, requires = "target")]
        remove: bool,
    },
    /// Fetch good copies of what `verify --read-data` finds damaged from
    /// REMOTE (default: the default remote) and rewrite the damaged packs.
    Repair {
        remote: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Where packs live: `hoard backend migrate --to s3` copies every pack
    /// into the bucket config.toml's s3_* keys name (verified, resumable),
    /// then switches config.toml to it; restart hoardd to serve from there.
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
}

#[derive(Subcommand)]
pub enum BackendAction {
    /// Copy the packs into another backend and switch to it.
    Migrate {
        /// The backend to move to ("s3").
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

// hoard inside git: setup, tracking, the work tree, the filter.
#[derive(Subcommand)]
pub enum GitVerb {
    /// Set up git to use hoard: filter config (global unless --local or
    /// --system) and, inside a repository, its hooks (existing hooks are
    /// chained, not replaced).
    /// Move a git-lfs repository to hoard (`import`: history rewritten so
    /// LFS pointers become hoard pointers, every object checked against its
    /// sha256 and stored first) or back (`export`).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
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

// Watched directories and their snapshots.
#[derive(Subcommand)]
pub enum DatasetVerb {
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
}

// Other daemons: remotes, tokens, and what travels between them.
#[derive(Subcommand)]
pub enum SharingVerb {
    /// The sync button. In a git work tree: stage everything, commit, fetch,
    /// merge, push the content and then the branch. With NAME: snapshot that
    /// dataset, fetch its remote's head, fast-forward or resolve, push. On a
    /// conflict, without --ours/--theirs, nothing changes and the conflicting
    /// paths are listed.
    Sync {
        /// A dataset to sync (default: the git repository here).
        name: Option<String>,
        /// The commit (or snapshot) message; default: one listing what changed.
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// On a conflict keep this side's version.
        #[arg(long, conflicts_with = "theirs")]
        ours: bool,
        /// On a conflict take the remote's version.
        #[arg(long)]
        theirs: bool,
        /// On a conflict change nothing and list it (the default).
        #[arg(long, conflicts_with_all = ["ours", "theirs"])]
        abort: bool,
        /// Rebase onto the remote branch instead of merging it.
        #[arg(long)]
        rebase: bool,
        /// The git remote (default: the branch's, else origin); for a
        /// dataset, the hoard remote (default: the dataset's, else origin).
        #[arg(long)]
        remote: Option<String>,
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
}

// The background daemon itself.
#[derive(Subcommand)]
pub enum DaemonVerb {
    /// Control the background daemon.
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
}

#[derive(Subcommand)]
pub enum DatasetAction {
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
    /// Forget a dataset (its snapshots stay); with --remote, delete it on
    /// that hub (refs, tags, then a prune of what only it held; admin token).
    Remove {
        name: String,
        #[arg(long)]
        remote: Option<String>,
        /// With --remote: the prune's grace period (default 24h).
        #[arg(long, requires = "remote")]
        grace: Option<String>,
    },
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
pub enum RemoteAction {
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
pub enum TokenAction {
    /// Make a token (printed once): --read to fetch, --write to push too,
    /// --admin to prune this hub and remove its datasets as well.
    Create {
        #[arg(long, conflicts_with_all = ["write", "admin"], required_unless_present_any = ["write", "admin"])]
        read: bool,
        #[arg(long, conflicts_with = "admin")]
        write: bool,
        #[arg(long)]
        admin: bool,
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
pub enum DaemonAction {
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

#[derive(Subcommand)]
pub enum MigrateAction {
    /// git-lfs → hoard: LFS objects into the store, history rewritten
    /// (current branch; --everything: all branches and tags).
    Import(MigrateArgs),
    /// hoard → git-lfs: content into .git/lfs/objects, pointers back.
    Export(MigrateArgs),
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Convert only paths matching these patterns (a pattern without `/`
    /// matches a file name anywhere).
    #[arg(long, short = 'I', value_delimiter = ',')]
    pub include: Vec<String>,
    #[arg(long, short = 'X', value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Every local branch and tag, not just the current branch.
    #[arg(long)]
    pub everything: bool,
    /// Leave history alone: one new commit converts the current tree.
    #[arg(long, conflicts_with = "everything")]
    pub no_rewrite: bool,
    /// Write old,new commit ids (CSV) here, like `git lfs migrate --object-map`.
    #[arg(long)]
    pub object_map: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `hoard prune`'s flags.
#[derive(clap::Args)]
pub struct PruneArgs {
    #[arg(long)]
    pub dry_run: bool,
    /// Keep each dataset's N newest snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep snapshots this close to each dataset's newest (30d, 12h, 1y6m).
    #[arg(long)]
    pub keep_within: Option<String>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Keep tagged snapshots (always on: remove a tag to let its snapshot go).
    #[arg(long)]
    pub keep_tagged: bool,
    /// Keep the content of git commits this recent (beside HEAD, the
    /// index, branches, tags, stashes, worktrees and unpushed commits).
    #[arg(long)]
    pub keep_git_within: Option<String>,
    /// Keep what was written or said present this recently (default 24h).
    #[arg(long)]
    pub grace: Option<String>,
    /// Unused bytes partly used packs may keep, in % of stored bytes (default 5).
    #[arg(long)]
    pub max_unused: Option<f64>,
    /// Rewrite at most this many bytes of packs.
    #[arg(long)]
    pub max_repack_size: Option<u64>,
    /// Prune this hub instead (needs an admin token: `hoard token create --admin` there).
    #[arg(long)]
    pub remote: Option<String>,
    #[arg(long)]
    pub json: bool,
}
