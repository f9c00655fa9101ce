//! `hoard filter-process`: git's long-running filter protocol, version 2
//! (gitattributes(5), "Long Running Filter Process"), with the `clean`,
//! `smudge` and `delay` capabilities; and the single-shot `hoard clean` /
//! `hoard smudge` fallbacks. Packet lines are framed by `gix-packetline`.
//!
//! stdout belongs to the protocol: everything else goes to stderr.
//!
//! - clean: content that already is a pointer, and empty content, pass
//!   through (git compares an empty work-tree file without filtering it, so
//!   it must stay empty in the repository too); otherwise it
//!   streams to the daemon (which answers from its stat cache when it
//!   already holds the work-tree file) and the pointer is returned.
//! - smudge: anything that is not a pointer passes through unchanged. With
//!   `can-delay`, pointers are answered `delayed` and fetched in parallel in
//!   the background; `list_available_blobs` hands them back as they arrive.
//!   Content that is not local stays a pointer, with a message saying how to
//!   fetch it. A failure on one file answers `status=error` for that file
//!   and the process goes on.

use super::fetch;
use super::pointer::{self, Pointer};
use crate::connect::{self, Client};
use anyhow::{bail, Context};
use gix_packetline::blocking_io::{encode, StreamingPeekableIter};
use gix_packetline::PacketLineRef;
use hoard_proto::paths::Paths;
use hoard_proto::v1::{
    clean_reply::Reply, clean_request::Msg, CleanBegin, CleanEnd, CleanFlush, CleanReply,
    CleanRequest, CleanWhole, ReadReply, ReadRequest,
};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Largest payload of one packet line.
const MAX_PACKET_DATA: usize = 65516;
/// Content streamed to the daemon per message.
const SEND_PIECE: usize = hoard_proto::MAX_DATA_MESSAGE;
/// Delayed files fetched at once.
const PREFETCH_PARALLEL: usize = 8;
/// Delayed files up to this size are fetched into memory ahead of git's
/// request; larger ones are streamed when git asks.
const PREFETCH_MAX_FILE: u64 = 32 << 20;
/// Memory all prefetched files may hold together.
const PREFETCH_BUDGET: usize = 256 << 20;
/// Non-pointer content spills to a temporary file beyond this.
const SPOOL_IN_MEMORY: usize = 64 << 20;
/// How long `list_available_blobs` waits for any delayed file.
const DELAYED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);
/// Missing files named one by one before only the count is given.
const MISSING_NAMED: usize = 10;

type Input = StreamingPeekableIter<io::StdinLock<'static>>;
type Output = BufWriter<io::StdoutLock<'static>>;

/// Talks to the daemon for the filter: a clean session and reads, with a
/// reconnect (and daemon restart) when the connection is lost.
pub struct Core {
    /// Drives this thread's calls (clean, reads) without thread hand-offs.
    rt: tokio::runtime::Runtime,
    /// Background fetches of delayed files: their own runtime and connection.
    bg: Option<(tokio::runtime::Runtime, Client)>,
    paths: Paths,
    client: Option<Client>,
    session: Option<CleanSession>,
    /// Files missing locally, left as pointers.
    missing: Vec<String>,
    /// Files the daemon could not make durable, reported at the end.
    lost: Vec<String>,
}

struct CleanSession {
    tx: mpsc::Sender<CleanRequest>,
    rx: Streaming<CleanReply>,
    /// Files stored since the last flush (not yet durable).
    staged: bool,
    /// Small files answered to git before the daemon confirmed them (their
    /// id is computed here), oldest first; the daemon's answers arrive in
    /// this order.
    expect: VecDeque<(String, Pointer)>,
}

/// Checks the daemon's answer about a file sent ahead of it.
fn confirm(
    expect: &mut VecDeque<(String, Pointer)>,
    lost: &mut Vec<String>,
    r: Result<Option<CleanReply>, tonic::Status>,
) -> anyhow::Result<()> {
    let reply = match r {
        Ok(Some(CleanReply { reply: Some(r) })) => r,
        Ok(_) => bail!("the daemon closed the clean stream"),
        Err(e) => return Err(crate::ui::status_error(e)),
    };
    let Some((display, p)) = expect.pop_front() else {
        bail!("unexpected answer from the daemon: {reply:?}");
    };
    let why = match reply {
        Reply::Stored(s) if s.oid[..] == p.oid[..] && s.size == p.size => return Ok(()),
        Reply::Stored(s) => format!(
            "the daemon stored it as {} ({} bytes), not as its pointer says",
            hex::encode(&s.oid),
            s.size
        ),
        Reply::Error(e) => e.message,
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    eprintln!("hoard: {display}: not stored: {why} — run `git add --renormalize -- <path>` once the daemon runs again");
    lost.push(display);
    Ok(())
}

/// Where a smudged file's content comes from.
enum Source {
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
    pub fn new(paths: &Paths) -> anyhow::Result<Core> {
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

    /// The runtime and connection that fetch delayed files in the background.
    fn background(&mut self) -> anyhow::Result<(&tokio::runtime::Runtime, Client)> {
        if self.bg.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let c = rt.block_on(connect::connect(&self.paths))?;
            self.bg = Some((rt, c));
        }
        let (rt, c) = self.bg.as_ref().expect("set above");
        Ok((rt, c.clone()))
    }

    fn session(&mut self) -> anyhow::Result<&mut CleanSession> {
        if self.session.is_none() {
            let mut client = self.client()?;
            let (tx, rx) = mpsc::channel(4);
            let replies = self
                .rt
                .block_on(client.clean(ReceiverStream::new(rx)))
                .map_err(crate::ui::status_error)?
                .into_inner();
            self.session = Some(CleanSession {
                tx,
                rx: replies,
                staged: false,
                expect: VecDeque::new(),
            });
        }
        Ok(self.session.as_mut().expect("opened above"))
    }

    /// Sends a message, taking in the daemon's answers about files sent
    /// ahead meanwhile (so neither side can wait on the other forever).
    fn send(&mut self, msg: Msg) -> anyhow::Result<()> {
        self.session()?;
        let Core {
            rt, session, lost, ..
        } = self;
        let s = session.as_mut().expect("opened above");
        let mut req = Some(CleanRequest { msg: Some(msg) });
        rt.block_on(async {
            loop {
                tokio::select! {
                    biased;
                    permit = s.tx.reserve() => {
                        let permit = permit.map_err(|_| anyhow::anyhow!("lost the connection to the daemon; run the command again (the daemon is started on demand), or see `hoard daemon status`"))?;
                        if let Some(r) = req.take() {
                            permit.send(r);
                        }
                        return Ok(());
                    }
                    r = s.rx.message(), if !s.expect.is_empty() => confirm(&mut s.expect, lost, r)?,
                }
            }
        })
    }

    /// Waits for the daemon's answers about every file sent ahead.
    fn settle(&mut self) -> anyhow::Result<()> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        while !s.expect.is_empty() {
            let r = self.rt.block_on(s.rx.message());
            confirm(&mut s.expect, &mut self.lost, r)?;
        }
        Ok(())
    }

    fn reply(&mut self) -> anyhow::Result<Reply> {
        self.session()?;
        self.settle()?;
        let Core { rt, session, .. } = self;
        let rx = &mut session.as_mut().expect("opened above").rx;
        match rt.block_on(rx.message()) {
            Ok(Some(CleanReply { reply: Some(r) })) => Ok(r),
            Ok(_) => bail!("the daemon closed the clean stream"),
            Err(e) => Err(crate::ui::status_error(e)),
        }
    }

    /// Cleans one file: returns what git should store (the pointer, or the
    /// content itself when it already is a pointer). Consumes `content` up
    /// to its end unless the daemon fails.
    pub fn clean(
        &mut self,
        display: &str,
        abs: Option<&Path>,
        content: &mut dyn Read,
    ) -> anyhow::Result<Vec<u8>> {
        // Up to one message's worth: most files fit and travel whole.
        let mut prefix = Vec::new();
        content
            .take(SEND_PIECE as u64 + 1)
            .read_to_end(&mut prefix)?;
        // An empty file stays empty: git never filters an empty work-tree
        // file when it compares, so a pointer for it would always show as
        // modified (git-lfs does the same).
        if prefix.is_empty()
            || (prefix.len() <= pointer::MAX_LEN && Pointer::parse(&prefix).is_some())
        {
            return Ok(prefix);
        }
        let r = self.clean_stream(display, abs, prefix, content);
        if r.is_err() {
            self.lost_connection();
        }
        r.map(|p| p.encode().into_bytes())
    }

    fn clean_stream(
        &mut self,
        display: &str,
        abs: Option<&Path>,
        prefix: Vec<u8>,
        content: &mut dyn Read,
    ) -> anyhow::Result<Pointer> {
        if prefix.len() <= SEND_PIECE {
            // Small: git gets the pointer at once (the id is computed here)
            // and the content goes to the daemon behind it; its answers are
            // checked as they come, and all of them before any flush.
            let p = Pointer {
                oid: *blake3::hash(&prefix).as_bytes(),
                size: prefix.len() as u64,
            };
            self.send(Msg::Whole(CleanWhole {
                display: display.to_string(),
                content: prefix.into(),
            }))?;
            if let Some(s) = self.session.as_mut() {
                s.expect.push_back((display.to_string(), p));
                s.staged = true;
            }
            return Ok(p);
        }
        self.send(Msg::Begin(CleanBegin {
            path: abs
                .and_then(|p| p.to_str())
                .map(str::to_string)
                .unwrap_or_default(),
            display: display.to_string(),
        }))?;
        match self.reply()? {
            Reply::Known(k) => {
                // The daemon vouches for the work-tree file: check the bytes
                // git handed us are that file, without storing them again.
                let mut h = blake3::Hasher::new();
                h.update(&prefix);
                let n = io::copy(content, &mut HashWriter(&mut h))? + prefix.len() as u64;
                if h.finalize().as_bytes()[..] != k.oid[..] || n != k.size {
                    bail!("the content git passed differs from the work-tree file hoard has cached; run `hoard add {display}` (or touch it) and retry");
                }
                pointer_of(&k.oid, k.size)
            }
            Reply::Proceed(_) => {
                if !prefix.is_empty() {
                    self.send(Msg::Data(prefix.into()))?;
                }
                loop {
                    let mut buf = Vec::with_capacity(SEND_PIECE);
                    content
                        .take(SEND_PIECE as u64)
                        .read_to_end(&mut buf)
                        .with_context(|| {
                            format!("cannot read the content of {display} from git")
                        })?;
                    if buf.is_empty() {
                        break;
                    }
                    self.send(Msg::Data(buf.into()))?;
                }
                self.send(Msg::End(CleanEnd {}))?;
                self.stored()
            }
            Reply::Error(e) => bail!("{}", e.message),
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }

    /// The daemon's answer to a file's content.
    fn stored(&mut self) -> anyhow::Result<Pointer> {
        match self.reply()? {
            Reply::Stored(s) => {
                if let Some(sess) = self.session.as_mut() {
                    sess.staged = true;
                }
                pointer_of(&s.oid, s.size)
            }
            Reply::Error(e) => bail!("{}", e.message),
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }

    /// Makes every file cleaned so far durable; names those that are not.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if !self.session.as_ref().is_some_and(|s| s.staged) {
            return Ok(());
        }
        self.send(Msg::Flush(CleanFlush {}))?;
        match self.reply()? {
            Reply::Flushed(f) => {
                if let Some(s) = self.session.as_mut() {
                    s.staged = false;
                }
                for e in f.errors {
                    eprintln!(
                        "hoard: {}: not stored: {} — run `git add --renormalize -- <path>` once the daemon runs again",
                        e.path, e.message
                    );
                    self.lost.push(e.path);
                }
                Ok(())
            }
            other => bail!("unexpected answer from the daemon: {other:?}"),
        }
    }

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

    /// Final flush and summary; an error if anything could not be stored.
    pub fn finish(mut self) -> anyhow::Result<()> {
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

fn pointer_of(oid: &[u8], size: u64) -> anyhow::Result<Pointer> {
    let oid: [u8; 32] = oid
        .try_into()
        .map_err(|_| anyhow::anyhow!("the daemon returned a malformed id"))?;
    Ok(Pointer { oid, size })
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

// ---- the protocol ----------------------------------------------------------

/// Runs the long-running filter until git closes its end.
pub fn filter_process(paths: &Paths) -> anyhow::Result<()> {
    let mut input: Input =
        StreamingPeekableIter::new(io::stdin().lock(), &[PacketLineRef::Flush], false);
    let mut out: Output = BufWriter::with_capacity(1 << 18, io::stdout().lock());
    let caps = handshake(&mut input, &mut out)?;
    let work_tree = std::env::current_dir().context("cannot read the current directory")?;
    let mut p = Process {
        core: Core::new(paths)?,
        work_tree,
        delay: caps.iter().any(|c| c == "delay"),
        delayed: Delayed::new(),
    };
    while let Some(h) = read_headers(&mut input)? {
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

/// `version=2` and the capabilities both sides have; returns ours.
fn handshake(input: &mut Input, out: &mut Output) -> anyhow::Result<Vec<String>> {
    let hello = read_text_lines(input)?.context("git closed the filter before the handshake")?;
    if hello.first().map(String::as_str) != Some("git-filter-client")
        || !hello.iter().any(|l| l == "version=2")
    {
        bail!("not git's filter protocol version 2 (got {hello:?}); `hoard filter-process` is started by git, see `hoard install`");
    }
    write_text(out, "git-filter-server")?;
    write_text(out, "version=2")?;
    encode::flush_to_write(&mut *out)?;
    out.flush()?;
    let offered = read_text_lines(input)?.context("git closed the filter during the handshake")?;
    let mut ours = Vec::new();
    for cap in ["clean", "smudge", "delay"] {
        if offered.iter().any(|l| l == &format!("capability={cap}")) {
            write_text(out, &format!("capability={cap}"))?;
            ours.push(cap.to_string());
        }
    }
    encode::flush_to_write(&mut *out)?;
    out.flush()?;
    Ok(ours)
}

/// Text packet lines up to a flush; `None` at the end of input.
fn read_text_lines(input: &mut Input) -> anyhow::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    while let Some(line) = input.read_line() {
        let line = match line {
            // git closed its end between requests: the normal way to stop.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && lines.is_empty() => {
                return Ok(None)
            }
            l => l?,
        };
        let line = line.map_err(|e| anyhow::anyhow!("malformed packet line from git: {e}"))?;
        if let Some(d) = line.as_slice() {
            let t = String::from_utf8_lossy(d);
            lines.push(t.strip_suffix('\n').unwrap_or(&t).to_string());
        }
    }
    let flushed = input.stopped_at() == Some(PacketLineRef::Flush);
    input.reset();
    if !flushed {
        if lines.is_empty() {
            return Ok(None);
        }
        bail!("git's input ended in the middle of a request");
    }
    Ok(Some(lines))
}

struct Headers(Vec<(String, String)>);

impl Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn read_headers(input: &mut Input) -> anyhow::Result<Option<Headers>> {
    Ok(read_text_lines(input)?.map(|lines| {
        Headers(
            lines
                .into_iter()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect(),
        )
    }))
}

fn write_text(out: &mut Output, text: &str) -> io::Result<()> {
    encode::text_to_write(text.as_bytes(), &mut *out).map(|_| ())
}

fn write_status(out: &mut Output, status: &str) -> io::Result<()> {
    write_text(out, &format!("status={status}"))?;
    encode::flush_to_write(&mut *out).map(|_| ())
}

fn write_data(out: &mut Output, data: &[u8]) -> io::Result<()> {
    for piece in data.chunks(MAX_PACKET_DATA) {
        encode::data_to_write(piece, &mut *out)?;
    }
    Ok(())
}

/// `status=success`, the content, and an empty trailing status list.
fn respond(out: &mut Output, content: &[u8]) -> io::Result<()> {
    write_status(out, "success")?;
    write_data(out, content)?;
    encode::flush_to_write(&mut *out)?;
    encode::flush_to_write(&mut *out).map(|_| ())
}

/// Reads one request's content to its flush, handing it to `f`, and
/// insists it ends properly whatever `f` did.
fn with_content<T>(input: &mut Input, f: impl FnOnce(&mut dyn Read) -> T) -> anyhow::Result<T> {
    let mut r = input.as_read();
    let t = f(&mut r);
    // Whatever f left unread (after an error) is skipped.
    io::copy(&mut r, &mut io::sink()).context("cannot read content from git")?;
    if r.stopped_at() != Some(PacketLineRef::Flush) {
        bail!("git's input ended in the middle of a file");
    }
    Ok(t)
}

struct Process {
    core: Core,
    work_tree: PathBuf,
    delay: bool,
    delayed: Delayed,
}

impl Process {
    fn clean(&mut self, h: &Headers, input: &mut Input, out: &mut Output) -> anyhow::Result<()> {
        let path = h.get("pathname").unwrap_or("").to_string();
        let abs = (!path.is_empty()).then(|| self.work_tree.join(&path));
        let core = &mut self.core;
        let r = with_content(input, |r| core.clean(&path, abs.as_deref(), r))?;
        match r {
            Ok(bytes) => respond(out, &bytes)?,
            Err(e) => {
                eprintln!("hoard: cannot clean {path}: {e:#}");
                write_status(out, "error")?;
            }
        }
        Ok(())
    }

    fn smudge(&mut self, h: &Headers, input: &mut Input, out: &mut Output) -> anyhow::Result<()> {
        let path = h.get("pathname").unwrap_or("").to_string();
        let can_delay = self.delay && h.get("can-delay") == Some("1");
        let spool = with_content(input, |r| -> io::Result<Spool> {
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
            return self.deliver(&path, src.0, src.1, out);
        }
        let Some(p) = pointer else {
            // Not a pointer: handed back exactly as it came.
            return match spool {
                Spool::Mem(b) => Ok(respond(out, &b)?),
                Spool::File(mut f) => {
                    write_status(out, "success")?;
                    let mut buf = vec![0u8; MAX_PACKET_DATA];
                    loop {
                        let n = f.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        encode::data_to_write(&buf[..n], &mut *out)?;
                    }
                    encode::flush_to_write(&mut *out)?;
                    encode::flush_to_write(&mut *out)?;
                    Ok(())
                }
            };
        };
        // With `delay`, git goes on with other files while the content is
        // fetched in the background, small files in batches.
        if can_delay {
            // Content cleaned earlier in this session must be durable (and
            // readable) before it is read back.
            if let Err(e) = self.core.flush() {
                eprintln!("hoard: {e:#}");
            }
            // A background connection that failed is replaced once nothing
            // is in flight on it.
            if self.delayed.outstanding == 0 && std::mem::take(&mut self.delayed.saw_failure) {
                self.core.bg = None;
            }
            let paths = self.core.paths.clone();
            match self.core.background() {
                Ok((rt, c)) => {
                    self.delayed.start(rt, c, &paths, path, p);
                    write_status(out, "delayed")?;
                }
                Err(e) => {
                    eprintln!("hoard: cannot smudge {path}: {e:#}");
                    write_status(out, "error")?;
                }
            }
            return Ok(());
        }
        self.deliver(&path, p, Source::Stream, out)
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
            Source::Buffer(b, _permit) => Ok(respond(out, &b)?),
            Source::Shared(b, _permit) => Ok(respond(out, &b)?),
            Source::Missing => {
                self.core.note_missing(path, &p);
                Ok(respond(out, p.encode().as_bytes())?)
            }
            Source::Failed(msg) => {
                eprintln!("hoard: cannot smudge {path}: {msg}");
                Ok(write_status(out, "error")?)
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
        write_status(out, "success")?;
        let r = self.stream_to_git(stream, p, out);
        encode::flush_to_write(&mut *out)?;
        match r {
            Ok(()) => encode::flush_to_write(&mut *out)?,
            Err(e) => {
                eprintln!("hoard: cannot smudge {path}: {e:#}");
                // Overrides the success announced before the content.
                write_status(out, "error")?;
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
            h.update(&m.data);
            n += m.data.len() as u64;
            write_data(out, &m.data)?;
        }
        if n != p.size || h.finalize().as_bytes() != &p.oid {
            bail!(
                "the content read for {} does not match its pointer; run `hoard verify --read-data`",
                p.oid_string()
            );
        }
        Ok(())
    }

    fn list_available(&mut self, out: &mut Output) -> anyhow::Result<()> {
        for path in self.delayed.wait_available() {
            write_text(out, &format!("pathname={path}"))?;
        }
        encode::flush_to_write(&mut *out)?;
        write_status(out, "success")?;
        Ok(())
    }
}

/// Files answered `delayed`, fetched in the background: small ones in
/// batches of [`hoard_proto::READ_BATCH_FILES`] per call, larger ones one by
/// one, [`PREFETCH_PARALLEL`] calls at a time, within [`PREFETCH_BUDGET`].
struct Delayed {
    /// Started and not yet finished.
    outstanding: usize,
    /// A fetch failed since the background connection was made.
    saw_failure: bool,
    /// Small files waiting to fill a batch.
    batch: Vec<(String, Pointer)>,
    fetcher: Option<(tokio::runtime::Handle, Client, Paths)>,
    done_tx: std_mpsc::Sender<(String, Pointer, Source)>,
    done_rx: std_mpsc::Receiver<(String, Pointer, Source)>,
    /// Finished and announced to git, waiting for it to ask.
    available: HashMap<String, (Pointer, Source)>,
    parallel: Arc<Semaphore>,
    memory: Arc<Semaphore>,
}

impl Delayed {
    fn new() -> Self {
        let (done_tx, done_rx) = std_mpsc::channel();
        Delayed {
            outstanding: 0,
            saw_failure: false,
            batch: Vec::new(),
            fetcher: None,
            done_tx,
            done_rx,
            available: HashMap::new(),
            parallel: Arc::new(Semaphore::new(PREFETCH_PARALLEL)),
            memory: Arc::new(Semaphore::new(PREFETCH_BUDGET >> 10)),
        }
    }

    fn start(
        &mut self,
        rt: &tokio::runtime::Runtime,
        client: Client,
        paths: &Paths,
        path: String,
        p: Pointer,
    ) {
        self.outstanding += 1;
        self.fetcher = Some((rt.handle().clone(), client.clone(), paths.clone()));
        if p.size <= hoard_proto::READ_BATCH_MAX_FILE {
            self.batch.push((path, p));
            if self.batch.len() >= hoard_proto::READ_BATCH_FILES {
                self.dispatch();
            }
            return;
        }
        let tx = self.done_tx.clone();
        let parallel = self.parallel.clone();
        let memory = self.memory.clone();
        let paths = paths.clone();
        rt.spawn(async move {
            let src = match parallel.acquire_owned().await {
                Ok(_permit) => prefetch(client, &paths, &p, memory).await,
                Err(_) => Source::Failed("shutting down".into()),
            };
            let _ = tx.send((path, p, src));
        });
    }

    /// Sends the waiting small files as one batch.
    fn dispatch(&mut self) {
        let Some((rt, client, paths)) = self.fetcher.clone() else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        let tx = self.done_tx.clone();
        let parallel = self.parallel.clone();
        let memory = self.memory.clone();
        rt.spawn(async move {
            let Ok(_permit) = parallel.acquire_owned().await else {
                return;
            };
            for (path, p, src) in prefetch_batch(client, &paths, batch, memory).await {
                let _ = tx.send((path, p, src));
            }
        });
    }

    /// Blocks until at least one delayed file is ready (none when nothing
    /// is outstanding) and returns the paths that are.
    fn wait_available(&mut self) -> Vec<String> {
        self.dispatch();
        let mut ready = Vec::new();
        if self.outstanding > 0 {
            // Bounded, so a lost fetch cannot hang git: the files still
            // delayed then fail, and a rerun fetches them.
            if let Ok(first) = self.done_rx.recv_timeout(DELAYED_PATIENCE) {
                ready.push(first);
            }
            while let Ok(more) = self.done_rx.try_recv() {
                ready.push(more);
            }
        }
        let mut paths = Vec::with_capacity(ready.len());
        let mut queue: VecDeque<_> = ready.into();
        while let Some((path, p, src)) = queue.pop_front() {
            self.outstanding -= 1;
            self.saw_failure |= matches!(src, Source::Failed(_));
            paths.push(path.clone());
            self.available.insert(path, (p, src));
        }
        paths
    }

    fn take_available(&mut self, path: &str) -> Option<(Pointer, Source)> {
        self.available.remove(path)
    }
}

/// Fetches a batch of small files in one call; those the store lacks go
/// through [`fetch::fetch`] and are read one by one if it finds them.
async fn prefetch_batch(
    mut client: Client,
    paths: &Paths,
    batch: Vec<(String, Pointer)>,
    memory: Arc<Semaphore>,
) -> Vec<(String, Pointer, Source)> {
    let bytes: u64 = batch.iter().map(|(_, p)| p.size).sum();
    let permit = match memory.acquire_many_owned((bytes >> 10) as u32 + 1).await {
        Ok(p) => p,
        Err(_) => {
            return batch
                .into_iter()
                .map(|(path, p)| (path, p, Source::Failed("shutting down".into())))
                .collect();
        }
    };
    let oids = batch.iter().map(|(_, p)| p.oid.to_vec()).collect();
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); batch.len()];
    let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; batch.len()];
    let read = async {
        let mut s = client
            .read_batch(hoard_proto::v1::ReadBatchRequest { oids })
            .await?
            .into_inner();
        while let Some(m) = s.message().await? {
            let i = m.index as usize;
            if i >= bufs.len() {
                continue;
            }
            if !m.error.is_empty() {
                outcome[i] = Some(Err((m.not_found, m.error)));
                continue;
            }
            bufs[i].extend_from_slice(&m.data);
            if m.last {
                outcome[i] = Some(Ok(()));
            }
        }
        Ok::<_, tonic::Status>(())
    };
    let failure = read
        .await
        .err()
        .map(|e| crate::ui::status_error(e).to_string());
    let mut out = Vec::with_capacity(batch.len());
    // The batch's memory is released once every file is handed over.
    // Those the store lacks go to the one place that can find them
    // elsewhere, all together; found ones are streamed when git asks.
    let absent: Vec<Pointer> = batch
        .iter()
        .zip(&outcome)
        .filter(|(_, o)| matches!(o, Some(Err((true, _)))))
        .map(|((_, p), _)| *p)
        .collect();
    let fetched = if absent.is_empty() {
        Ok(Vec::new())
    } else {
        fetch::fetch(&mut client, paths, &absent)
            .await
            .map(|f| f.present)
            .map_err(|e| format!("{e:#}"))
    };
    let mut fetched_iter = fetched.as_ref().ok().map(|v| v.iter());
    let permit = Arc::new(permit);
    for ((path, p), (buf, o)) in batch.into_iter().zip(bufs.into_iter().zip(outcome)) {
        let src = match (o, &failure) {
            (Some(Ok(())), _) => {
                if buf.len() as u64 == p.size && blake3::hash(&buf).as_bytes() == &p.oid {
                    Source::Shared(buf, permit.clone())
                } else {
                    Source::Failed(format!(
                        "the content read for {} does not match its pointer; run `hoard verify --read-data`",
                        p.oid_string()
                    ))
                }
            }
            (Some(Err((true, _))), _) => {
                match (&fetched, fetched_iter.as_mut().and_then(|i| i.next())) {
                    (_, Some(true)) => Source::Stream,
                    (Err(e), _) => Source::Failed(e.clone()),
                    _ => Source::Missing,
                }
            }
            (Some(Err((false, e))), _) => Source::Failed(e),
            (None, Some(e)) => Source::Failed(e.clone()),
            (None, None) => Source::Failed("the daemon did not send this file".into()),
        };
        out.push((path, p, src));
    }
    out
}

/// Fetches one delayed file: into memory when small, else only checks that
/// it is local (it is streamed when git asks).
async fn prefetch(
    mut client: Client,
    paths: &Paths,
    p: &Pointer,
    memory: Arc<Semaphore>,
) -> Source {
    match fetch::fetch(&mut client, paths, std::slice::from_ref(p)).await {
        Ok(f) if f.missing() > 0 => return Source::Missing,
        Ok(_) => {}
        Err(e) => return Source::Failed(format!("{e:#}")),
    }
    if p.size > PREFETCH_MAX_FILE {
        return Source::Stream;
    }
    let Ok(permit) = memory.acquire_many_owned((p.size >> 10) as u32 + 1).await else {
        return Source::Stream;
    };
    let read = async {
        let mut s = client
            .read(ReadRequest {
                oid: p.oid.to_vec(),
                offset: 0,
                length: None,
            })
            .await?
            .into_inner();
        let mut buf = Vec::with_capacity(p.size as usize);
        while let Some(m) = s.message().await? {
            buf.extend_from_slice(&m.data);
        }
        Ok::<_, tonic::Status>(buf)
    };
    match read.await {
        Ok(buf) if buf.len() as u64 == p.size && blake3::hash(&buf).as_bytes() == &p.oid => {
            Source::Buffer(buf, permit)
        }
        Ok(_) => Source::Failed(format!(
            "the content read for {} does not match its pointer; run `hoard verify --read-data`",
            p.oid_string()
        )),
        Err(e) if e.code() == tonic::Code::NotFound => Source::Missing,
        Err(e) => Source::Failed(crate::ui::status_error(e).to_string()),
    }
}

// ---- single-shot fallbacks -------------------------------------------------

/// `hoard clean [PATH]`: content on stdin, pointer on stdout.
pub fn clean_once(paths: &Paths, path: Option<&Path>) -> anyhow::Result<()> {
    let mut core = Core::new(paths)?;
    let display = path.map(|p| p.display().to_string()).unwrap_or_default();
    let abs = match path {
        Some(p) => Some(std::path::absolute(p)?),
        None => None,
    };
    let mut stdin = io::stdin().lock();
    let out = core.clean(&display, abs.as_deref(), &mut stdin)?;
    core.finish()?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
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
    while let Some(m) = core
        .rt
        .block_on(stream.message())
        .map_err(crate::ui::status_error)?
    {
        h.update(&m.data);
        stdout.write_all(&m.data)?;
    }
    if h.finalize().as_bytes() != &p.oid {
        bail!(
            "the content read for {} does not match its pointer; run `hoard verify --read-data`",
            p.oid_string()
        );
    }
    Ok(stdout.flush()?)
}
