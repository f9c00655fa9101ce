//! Smudge: pointer → content. Anything that is not exactly a pointer is
//! handed back unchanged (held in memory, or in a temporary file when
//! large, since git writes all of a file before it reads the answer). A
//! pointer's content is read from the daemon — fetched first if it is not
//! local — and checked against its id as it streams to git; content that
//! cannot be found leaves the pointer in place, with a hint. Also the
//! single-shot `hoard smudge`.

use super::protocol::{self, Headers, Input, Output};
use super::{Core, Process, MISSING_NAMED};
use crate::git::fetch;
use crate::git::pointer::{self, Pointer};
use anyhow::{bail, Context};
use gix_packetline::blocking_io::encode;
use hoard_proto::paths::Paths;
use hoard_proto::v1::{ReadReply, ReadRequest};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Streaming;

/// Non-pointer content spills to a temporary file beyond this.
const SPOOL_IN_MEMORY: usize = 64 << 20;

/// Where a smudged file's content comes from.
pub(super) enum Source {
    /// Fetched ahead and verified; the permit holds its memory budget.
    Buffer(Vec<u8>, OwnedSemaphorePermit),
    /// The same, fetched in a batch that shares one permit.
    Shared(Vec<u8>, Arc<OwnedSemaphorePermit>),
    /// Present locally; streamed from the daemon on request.
    Stream,
    /// Not local: the pointer stays.
    Missing,
    Failed(String),
}

impl Core {
    /// Opens a read of `p` from the local store; `None` when it lacks it.
    fn open_local(&mut self, p: &Pointer) -> anyhow::Result<Option<Streaming<ReadReply>>> {
        self.flush()?;
        let mut client = self.client()?;
        let r = self.rt.block_on(async {
            let s = client
                .read(ReadRequest {
                    oid: p.oid.to_vec(),
                    offset: 0,
                    length: None,
                })
                .await;
            match s {
                Ok(s) => Ok(Some(s.into_inner())),
                Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
                Err(e) => Err(crate::ui::status_error(e)),
            }
        });
        if r.is_err() {
            self.lost_connection();
        }
        r
    }

    /// Opens a read of `p`, fetching it first if it is not local; `None`
    /// when it cannot be found.
    fn open_read(&mut self, p: &Pointer) -> anyhow::Result<Option<Streaming<ReadReply>>> {
        if let Some(s) = self.open_local(p)? {
            return Ok(Some(s));
        }
        let mut client = self.client()?;
        let found = self.rt.block_on(fetch::fetch(
            &mut client,
            &self.paths,
            std::slice::from_ref(p),
        ))?;
        if found.missing() > 0 {
            return Ok(None);
        }
        self.open_local(p)
    }

    fn note_missing(&mut self, path: &str, p: &Pointer) {
        if self.missing.len() < MISSING_NAMED {
            eprintln!(
                "hoard: {path}: left as a pointer to {}: {}",
                p.oid_string(),
                fetch::missing_hint(path)
            );
        }
        self.missing.push(path.to_string());
    }
}

/// Content held until it can be answered (git writes all of a file before it
/// reads the answer): memory first, then an anonymous temporary file.
enum Spool {
    Mem(Vec<u8>),
    File(std::fs::File),
}

impl Spool {
    fn fill(prefix: Vec<u8>, rest: &mut dyn Read) -> io::Result<Spool> {
        let mut mem = prefix;
        let room = SPOOL_IN_MEMORY.saturating_sub(mem.len()) as u64;
        rest.take(room + 1).read_to_end(&mut mem)?;
        if mem.len() <= SPOOL_IN_MEMORY {
            return Ok(Spool::Mem(mem));
        }
        let mut f = tempfile::tempfile()?;
        f.write_all(&mem)?;
        io::copy(rest, &mut f)?;
        f.rewind()?;
        Ok(Spool::File(f))
    }
}

impl Process {
    /// Answers one `command=smudge` request.
    pub(super) fn smudge(
        &mut self,
        h: &Headers,
        input: &mut Input,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        let path = h.path();
        let can_delay = self.delay && h.get("can-delay") == Some("1");
        let spool = protocol::with_content(input, |r| -> io::Result<Spool> {
            let mut prefix = Vec::with_capacity(pointer::MAX_LEN + 1);
            r.take(pointer::MAX_LEN as u64 + 1)
                .read_to_end(&mut prefix)?;
            Spool::fill(prefix, r)
        })?
        .with_context(|| format!("cannot read the content of {path} from git"))?;
        let pointer = match &spool {
            Spool::Mem(b) => Pointer::parse(b),
            Spool::File(_) => None,
        };
        // A delayed file asked for again (git sends no content then).
        if let Some(src) = self.delayed.take_available(&path) {
            return self.deliver(&path.to_string(), src.0, src.1, out);
        }
        let Some(p) = pointer else {
            // Not a pointer: handed back exactly as it came.
            return match spool {
                Spool::Mem(b) => Ok(protocol::respond(out, &b)?),
                Spool::File(mut f) => Ok(protocol::respond_from(out, &mut f)?),
            };
        };
        if can_delay {
            return self.smudge_delayed(path, p, out);
        }
        self.deliver(&path.to_string(), p, Source::Stream, out)
    }

    /// Answers git with a file's content from `src`.
    fn deliver(
        &mut self,
        path: &str,
        p: Pointer,
        src: Source,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        match src {
            Source::Buffer(b, _permit) => Ok(protocol::respond(out, &b)?),
            Source::Shared(b, _permit) => Ok(protocol::respond(out, &b)?),
            Source::Missing => {
                self.core.note_missing(path, &p);
                Ok(protocol::respond(out, p.encode().as_bytes())?)
            }
            Source::Failed(msg) => {
                eprintln!("hoard: cannot smudge {path}: {msg}");
                Ok(protocol::write_status(out, "error")?)
            }
            Source::Stream => {
                let stream = match self.core.open_read(&p) {
                    Ok(Some(s)) => s,
                    Ok(None) => return self.deliver(path, p, Source::Missing, out),
                    Err(e) => return self.deliver(path, p, Source::Failed(format!("{e:#}")), out),
                };
                self.deliver_stream(path, &p, stream, out)
            }
        }
    }

    /// Answers git with content streamed from the daemon.
    fn deliver_stream(
        &mut self,
        path: &str,
        p: &Pointer,
        stream: Streaming<ReadReply>,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        protocol::write_status(out, "success")?;
        let r = self.stream_to_git(stream, p, out);
        encode::flush_to_write(&mut *out)?;
        match r {
            Ok(()) => encode::flush_to_write(&mut *out)?,
            Err(e) => {
                eprintln!("hoard: cannot smudge {path}: {e:#}");
                // Overrides the success announced before the content.
                protocol::write_status(out, "error")?;
                0
            }
        };
        Ok(())
    }

    /// Streams content from the daemon to git, checking it hashes to the oid.
    fn stream_to_git(
        &mut self,
        mut stream: Streaming<ReadReply>,
        p: &Pointer,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        loop {
            let m = match self.core.rt.block_on(stream.message()) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.core.lost_connection();
                    return Err(crate::ui::status_error(e));
                }
            };
            sized_as_pointer(&m, p)?;
            h.update(&m.data);
            n += m.data.len() as u64;
            protocol::write_data(out, &m.data)?;
        }
        if n != p.size || h.finalize().as_bytes() != &p.oid {
            bail!(
                "the content read for {} does not match its pointer; run `hoard verify --read-data`",
                p.oid_string()
            );
        }
        Ok(())
    }
}

/// `hoard smudge [PATH]`: pointer on stdin, content on stdout; anything
/// that is not a pointer is copied through.
pub fn smudge_once(paths: &Paths, path: Option<&Path>) -> anyhow::Result<()> {
    let display = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<stdin>".into());
    let mut stdin = io::stdin().lock();
    let mut prefix = Vec::with_capacity(pointer::MAX_LEN + 1);
    (&mut stdin)
        .take(pointer::MAX_LEN as u64 + 1)
        .read_to_end(&mut prefix)?;
    let mut stdout = io::stdout().lock();
    let p = if prefix.len() <= pointer::MAX_LEN {
        Pointer::parse(&prefix)
    } else {
        None
    };
    let Some(p) = p else {
        stdout.write_all(&prefix)?;
        io::copy(&mut stdin, &mut stdout)?;
        return Ok(stdout.flush()?);
    };
    let mut core = Core::new(paths)?;
    let Some(mut stream) = core.open_read(&p)? else {
        core.note_missing(&display, &p);
        stdout.write_all(&prefix)?;
        return Ok(stdout.flush()?);
    };
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    while let Some(m) = core
        .rt
        .block_on(stream.message())
        .map_err(crate::ui::status_error)?
    {
        sized_as_pointer(&m, &p)?;
        h.update(&m.data);
        n += m.data.len() as u64;
        stdout.write_all(&m.data)?;
    }
    if n != p.size || h.finalize().as_bytes() != &p.oid {
        bail!(
            "the content read for {} does not match its pointer; run `hoard verify --read-data`",
            p.oid_string()
        );
    }
    Ok(stdout.flush()?)
}

/// Refuses content whose size (in the first message of a read) is not the
/// pointer's, before any of it is written out.
fn sized_as_pointer(m: &ReadReply, p: &Pointer) -> anyhow::Result<()> {
    match m.file_size {
        Some(size) if size != p.size => bail!(
            "the pointer to {} says {} bytes, but that content is {size} bytes: the pointer was edited by hand? Re-add the file (`git add`) to write a correct one",
            p.oid_string(),
            p.size
        ),
        _ => Ok(()),
    }
}
