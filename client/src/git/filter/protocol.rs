//! git's long-running filter protocol, version 2, at the packet-line level
//! (framed by `gix-packetline`): the handshake and capabilities, reading a
//! request's headers and its content up to the flush, and writing statuses
//! and responses. Knows nothing of hoard.

use crate::git::path::GitPath;
use anyhow::{bail, Context};
use gix_packetline::blocking_io::{encode, StreamingPeekableIter};
use gix_packetline::PacketLineRef;
use std::io::{self, BufWriter, Read, Write};

/// Largest payload of one packet line.
pub(super) const MAX_PACKET_DATA: usize = 65516;

pub(super) type Input = StreamingPeekableIter<io::StdinLock<'static>>;
pub(super) type Output = BufWriter<io::StdoutLock<'static>>;

/// git's side of the conversation: packet lines, each section ending in a flush.
pub(super) fn input(stdin: io::StdinLock<'static>) -> Input {
    StreamingPeekableIter::new(stdin, &[PacketLineRef::Flush], false)
}

/// `version=2` and the capabilities both sides have; returns ours.
pub(super) fn handshake(input: &mut Input, out: &mut Output) -> anyhow::Result<Vec<String>> {
    let hello = read_text_lines(input)?.context("git closed the filter before the handshake")?;
    if hello.first().map(Vec::as_slice) != Some(b"git-filter-client".as_slice())
        || !hello.iter().any(|l| l == b"version=2")
    {
        let got: Vec<String> = hello
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        bail!("not git's filter protocol version 2 (got {got:?}); `hoard filter-process` is started by git, see `hoard install`");
    }
    write_text(out, "git-filter-server")?;
    write_text(out, "version=2")?;
    encode::flush_to_write(&mut *out)?;
    out.flush()?;
    let offered = read_text_lines(input)?.context("git closed the filter during the handshake")?;
    let mut ours = Vec::new();
    for cap in ["clean", "smudge", "delay"] {
        if offered
            .iter()
            .any(|l| l == format!("capability={cap}").as_bytes())
        {
            write_text(out, &format!("capability={cap}"))?;
            ours.push(cap.to_string());
        }
    }
    encode::flush_to_write(&mut *out)?;
    out.flush()?;
    Ok(ours)
}

/// Text packet lines (as bytes: a pathname need not be UTF-8) up to a
/// flush; `None` at the end of input.
fn read_text_lines(input: &mut Input) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
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
            lines.push(d.strip_suffix(b"\n").unwrap_or(d).to_vec());
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

pub(super) struct Headers(Vec<(Vec<u8>, Vec<u8>)>);

impl Headers {
    fn raw(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// A header's value, if it is text.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The `pathname` header, byte for byte (empty when absent).
    pub(super) fn path(&self) -> GitPath {
        GitPath::new(self.raw("pathname").unwrap_or_default())
    }
}

pub(super) fn read_headers(input: &mut Input) -> anyhow::Result<Option<Headers>> {
    Ok(read_text_lines(input)?.map(|lines| {
        Headers(
            lines
                .into_iter()
                .filter_map(|l| {
                    let eq = l.iter().position(|&b| b == b'=')?;
                    Some((l[..eq].to_vec(), l[eq + 1..].to_vec()))
                })
                .collect(),
        )
    }))
}

/// `pathname=<path>`, the path's bytes as git sent them.
pub(super) fn write_pathname(out: &mut Output, path: &GitPath) -> io::Result<()> {
    let line = [b"pathname=".as_slice(), path.as_bytes()].concat();
    encode::text_to_write(&line, &mut *out).map(|_| ())
}

pub(super) fn write_text(out: &mut Output, text: &str) -> io::Result<()> {
    encode::text_to_write(text.as_bytes(), &mut *out).map(|_| ())
}

pub(super) fn write_status(out: &mut Output, status: &str) -> io::Result<()> {
    write_text(out, &format!("status={status}"))?;
    encode::flush_to_write(&mut *out).map(|_| ())
}

pub(super) fn write_data(out: &mut Output, data: &[u8]) -> io::Result<()> {
    for piece in data.chunks(MAX_PACKET_DATA) {
        encode::data_to_write(piece, &mut *out)?;
    }
    Ok(())
}

/// `status=success`, the content, and an empty trailing status list.
pub(super) fn respond(out: &mut Output, content: &[u8]) -> io::Result<()> {
    write_status(out, "success")?;
    write_data(out, content)?;
    encode::flush_to_write(&mut *out)?;
    encode::flush_to_write(&mut *out).map(|_| ())
}

/// `status=success`, content read from `r` to its end, and an empty
/// trailing status list.
pub(super) fn respond_from(out: &mut Output, r: &mut dyn Read) -> io::Result<()> {
    write_status(out, "success")?;
    let mut buf = vec![0u8; MAX_PACKET_DATA];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        encode::data_to_write(&buf[..n], &mut *out)?;
    }
    encode::flush_to_write(&mut *out)?;
    encode::flush_to_write(&mut *out).map(|_| ())
}

/// Reads one request's content to its flush, handing it to `f`, and
/// insists it ends properly whatever `f` did.
pub(super) fn with_content<T>(
    input: &mut Input,
    f: impl FnOnce(&mut dyn Read) -> T,
) -> anyhow::Result<T> {
    let mut r = input.as_read();
    let t = f(&mut r);
    // Whatever f left unread (after an error) is skipped.
    io::copy(&mut r, &mut io::sink()).context("cannot read content from git")?;
    if r.stopped_at() != Some(PacketLineRef::Flush) {
        bail!("git's input ended in the middle of a file");
    }
    Ok(t)
}
