//! `hoard filter-process`: git's long-running filter protocol, version 2
//! (gitattributes(5), "Long Running Filter Process"), with the `clean`,
//! `smudge` and `delay` capabilities; and the single-shot `hoard clean` /
//! `hoard smudge` fallbacks.
//!
//! stdout belongs to the protocol: everything else goes to stderr.
//!
//! This file owns the process: its request loop ([`filter_process`]) and
//! the state every request shares ([`Core`]: the connection to the daemon,
//! its reconnect, and the end-of-run summary). By concern:
//!
//! - [`protocol`]: pkt-line framing (`gix-packetline`), the handshake and
//!   capabilities, reading a request's headers and content, writing
//!   statuses and responses.
//! - [`clean`]: content → pointer. Content that already is a pointer, and
//!   empty content, pass through (git compares an empty work-tree file
//!   without filtering it, so it must stay empty in the repository too);
//!   otherwise it streams to the daemon's Clean session (which answers from
//!   its stat cache when it already holds the work-tree file) and the
//!   pointer is returned. Also `hoard clean`.
//! - [`smudge`]: pointer → content. Anything that is not a pointer passes
//!   through unchanged. Content that is not local stays a pointer, with a
//!   message saying how to fetch it. A failure on one file answers
//!   `status=error` for that file and the process goes on. Also `hoard
//!   smudge`.
//! - [`delayed`]: the `delay` capability: with `can-delay`, pointers are
//!   answered `delayed` and fetched in parallel in the background;
//!   `list_available_blobs` hands them back as they arrive.

mod clean;
mod delayed;
mod protocol;
mod smudge;

pub use clean::clean_once;
pub use smudge::smudge_once;

use crate::connect::{self, Client};
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

/// Missing files named one by one before only the count is given.
const MISSING_NAMED: usize = 10;

/// Talks to the daemon for the filter: a clean session and reads, with a
/// reconnect (and daemon restart) when the connection is lost.
struct Core {
    /// Drives this thread's calls (clean, reads) without thread hand-offs.
    rt: tokio::runtime::Runtime,
    /// Background fetches of delayed files: their own runtime and connection.
    bg: Option<(tokio::runtime::Runtime, Client)>,
    paths: Paths,
    client: Option<Client>,
    session: Option<clean::CleanSession>,
    /// Files missing locally, left as pointers.
    missing: Vec<String>,
    /// Files the daemon could not make durable, reported at the end.
    lost: Vec<String>,
}

impl Core {
    fn new(paths: &Paths) -> anyhow::Result<Core> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Core {
            rt,
            bg: None,
            paths: paths.clone(),
            client: None,
            session: None,
            missing: Vec::new(),
            lost: Vec::new(),
        })
    }

    fn client(&mut self) -> anyhow::Result<Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = self.rt.block_on(connect::connect(&self.paths))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a failure, so the next file reconnects.
    /// Files sent ahead and not yet confirmed count as not stored.
    fn lost_connection(&mut self) {
        if let Some(s) = self.session.take() {
            for (display, _) in s.expect {
                eprintln!("hoard: {display}: not stored: the connection to the daemon was lost — run `git add --renormalize -- <path>` once the daemon runs again");
                self.lost.push(display);
            }
        }
        // The background runtime stays: dropping it would cancel delayed
        // fetches git is still waiting for.
        self.client = None;
    }

    /// Final flush and summary; an error if anything could not be stored.
    fn finish(mut self) -> anyhow::Result<()> {
        let flushed = self.flush();
        if let Some(s) = self.session.take() {
            drop(s.tx);
            let mut rx = s.rx;
            // The daemon's last word on this session.
            while let Ok(Some(_)) = self.rt.block_on(rx.message()) {}
        }
        if self.missing.len() > MISSING_NAMED {
            eprintln!(
                "hoard: {} files in all were left as pointers because their content is not here; `hoard ls-files` lists them",
                self.missing.len()
            );
        }
        flushed?;
        if !self.lost.is_empty() {
            bail!(
                "{} cleaned files could not be made durable (named above): git already holds their pointers, so run `git add --renormalize -- <paths>` to store them again",
                self.lost.len()
            );
        }
        Ok(())
    }
}

/// The long-running filter's state across requests.
struct Process {
    core: Core,
    work_tree: PathBuf,
    /// git and hoard both have the `delay` capability.
    delay: bool,
    delayed: delayed::Delayed,
}

/// Runs the long-running filter until git closes its end.
pub fn filter_process(paths: &Paths) -> anyhow::Result<()> {
    let mut input: protocol::Input = protocol::input(io::stdin().lock());
    let mut out: protocol::Output = BufWriter::with_capacity(1 << 18, io::stdout().lock());
    let caps = protocol::handshake(&mut input, &mut out)?;
    let work_tree = std::env::current_dir().context("cannot read the current directory")?;
    // A prune must know this repository uses the store (its git roots).
    if let Ok(repo) = super::Repo::discover_at(&work_tree) {
        let _ = super::roots::record(&paths.store, &repo);
    }
    let mut p = Process {
        core: Core::new(paths)?,
        work_tree,
        delay: caps.iter().any(|c| c == "delay"),
        delayed: delayed::Delayed::new(),
    };
    while let Some(h) = protocol::read_headers(&mut input)? {
        match h.get("command") {
            Some("clean") => p.clean(&h, &mut input, &mut out)?,
            Some("smudge") => p.smudge(&h, &mut input, &mut out)?,
            Some("list_available_blobs") => p.list_available(&mut out)?,
            other => {
                // Unknown commands carry no content we know how to skip.
                bail!("git sent an unknown filter command {other:?}; is this git newer than hoard supports?")
            }
        }
        out.flush()?;
    }
    p.core.finish()
}
