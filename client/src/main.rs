//! `hoard`: the command-line client. A thin layer over the daemon's local
//! API; the daemon is started on demand.

mod cmd;
mod connect;
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
    if let Command::Daemon {
        action: DaemonAction::Run,
    } = cli.command
    {
        return report(cmd::daemon::run(&paths));
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
    }
}

fn report(r: anyhow::Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
