//! Clean: content → pointer. One Clean session with the daemon per filter
//! process: small files travel whole and git gets their pointer at once
//! (the daemon's confirmations are checked as they arrive, and all of them
//! before any flush); larger ones are announced first so the daemon can
//! vouch for an unchanged work-tree file from its stat cache, and are
//! streamed otherwise. A flush makes everything cleaned so far durable.
//! Also the single-shot `hoard clean`.

use super::protocol::{self, Headers, Input, Output};
use super::{Core, Process};
use crate::git::pointer::{self, Pointer};
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{
    clean_reply::Reply, clean_request::Msg, CleanBegin, CleanEnd, CleanFlush, CleanReply,
    CleanRequest, CleanWhole,
};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Content streamed to the daemon per message.
const SEND_PIECE: usize = hoard_proto::MAX_DATA_MESSAGE;

/// The open Clean stream to the daemon.
pub(super) struct CleanSession {
    pub(super) tx: mpsc::Sender<CleanRequest>,
    pub(super) rx: Streaming<CleanReply>,
    /// Files stored since the last flush (not yet durable).
    staged: bool,
    /// Small files answered to git before the daemon confirmed them (their
    /// id is computed here), oldest first; the daemon's answers arrive in
    /// this order.
    pub(super) expect: VecDeque<(String, Pointer)>,
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

impl Core {
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
                        let permit = permit.map_err(|_| stream_closed())?;
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
    pub(super) fn clean(
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
    pub(super) fn flush(&mut self) -> anyhow::Result<()> {
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
}

/// The Clean stream closed under us: transient, like any lost connection.
fn stream_closed() -> anyhow::Error {
    anyhow::Error::new(crate::ui::DaemonError::lost_connection(
        "lost the connection to the daemon; run the command again (the daemon is started on demand), or see `hoard daemon status`".into(),
    ))
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

impl Process {
    /// Answers one `command=clean` request.
    pub(super) fn clean(
        &mut self,
        h: &Headers,
        input: &mut Input,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        let raw = h.path();
        let abs = (!raw.as_bytes().is_empty()).then(|| self.work_tree.join(raw.as_path()));
        let path = raw.to_string();
        let core = &mut self.core;
        let r = protocol::with_content(input, |r| core.clean(&path, abs.as_deref(), r))?;
        match r {
            Ok(bytes) => protocol::respond(out, &bytes)?,
            Err(e) => {
                eprintln!("hoard: cannot clean {path}: {e:#}");
                protocol::write_status(out, "error")?;
            }
        }
        Ok(())
    }
}

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
