//! `hoardd`: the hoard daemon. Usually started by `hoard` on demand, or by
//! systemd (`hoardd run`, see contrib/hoardd.service).

use clap::{Parser, Subcommand};
use hoard_daemon::config::Config;
use hoard_daemon::daemon;
use hoard_proto::paths::Paths;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "hoardd",
    version,
    about = "hoard daemon: content-addressed large-file store"
)]
struct Cli {
    /// Store directory (also holds config, socket, lock and log); overrides HOARD_HOME.
    #[arg(long, global = true, env = "HOARD_HOME")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve in the foreground (the default).
    Run {
        /// Also serve the Peer API on this TCP address (overrides [peer] listen).
        #[arg(long)]
        listen: Option<String>,
        /// Serve the Peer API over TLS (self-signed unless [peer] tls_cert/tls_key).
        #[arg(long)]
        tls: bool,
        /// Also serve the read-only HTTP gateway on this TCP address (overrides [http] listen).
        #[arg(long)]
        http: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    // Started by a git hook, the daemon would otherwise keep the pipes git
    // leaked into it (its filter process's), and git would wait on them for
    // ever.
    daemon::close_inherited_fds();
    // Few malloc arenas: a long-running daemon otherwise keeps the memory
    // of every burst of parallel work (one arena per thread that ever
    // allocated) long after it is freed.
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<()> {
        let paths = Paths::resolve(cli.store.as_deref()).map_err(anyhow::Error::msg)?;
        let config = Config::load(&paths.config)?;
        daemon::init_logging(config.daemon.log.as_deref());
        match cli.command.unwrap_or(Command::Run {
            listen: None,
            tls: false,
            http: None,
        }) {
            Command::Run { listen, tls, http } => daemon::run(paths, listen, tls, http),
        }
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoardd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
