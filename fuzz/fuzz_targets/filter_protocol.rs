//! git's long-running filter protocol, git's side fuzzed: the handshake,
//! request headers and content framing of client/src/git/filter/protocol.rs
//! (included as is, with pointer.rs and path.rs, by #[path]: the client
//! crate has no library target), reading through gix-packetline.
//!
//! protocol.rs is typed to the process's stdin and stdout (`Input` is a
//! `StreamingPeekableIter<StdinLock>`, `Output` a `BufWriter<StdoutLock>`),
//! so the harness points fd 0 at a memfd holding the input and fd 1 at
//! another memfd, and empties std's stdin buffer after every input.
//!
//! The request loop is `filter_process`'s (client/src/git/filter/mod.rs),
//! with the daemon's part left out: clean answers empty content and
//! pointers as they are and `status=error` for anything else, smudge hands
//! back what is not a pointer and a pointer's own text for a pointer
//! (what it does for content that is not here).
//!
//! Checks: no panic, no hang (-timeout), the conversation ends (Ok or Err)
//! at the end of the input, and everything written back to git is
//! well-formed packet lines.
#![no_main]

use anyhow::bail;
use gix_packetline::blocking_io::encode;
use libfuzzer_sys::fuzz_target;
use std::io::{self, BufWriter, Read, Write};
use std::sync::OnceLock;

#[allow(dead_code)]
#[path = "../../client/src/git/pointer.rs"]
mod pointer;

#[allow(dead_code)]
#[path = "../../client/src/git/path.rs"]
mod git_path;

/// protocol.rs names `crate::git::path::GitPath`: the real path.rs, at the
/// path it expects.
mod git {
    pub(crate) use super::git_path as path;
}

#[allow(dead_code)]
#[path = "../../client/src/git/filter/protocol.rs"]
mod protocol;

use pointer::Pointer;

/// Most content bytes read of one request (what the real clean keeps in
/// memory before it streams: the rest is skipped by `with_content`).
const CONTENT: u64 = 1 << 20;

/// (stdin memfd, stdout memfd), both also dup2'ed onto fd 0 and fd 1.
static FDS: OnceLock<(i32, i32)> = OnceLock::new();

fn memfd(name: &std::ffi::CStr, onto: i32) -> i32 {
    // SAFETY: plain syscalls on fds this process owns.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), 0);
        assert!(fd >= 0, "memfd_create failed");
        assert_eq!(libc::dup2(fd, onto), onto, "dup2 failed");
        fd
    }
}

fn fds() -> (i32, i32) {
    *FDS.get_or_init(|| (memfd(c"git-to-filter", 0), memfd(c"filter-to-git", 1)))
}

/// Makes `data` the whole of stdin and empties stdout (the fds share their
/// offsets with the memfds).
fn reset(data: &[u8]) {
    let (i, o) = fds();
    // SAFETY: as above; `data` outlives the call.
    unsafe {
        assert_eq!(libc::ftruncate(i, 0), 0);
        let mut at = 0;
        while at < data.len() {
            let n = libc::pwrite(
                i,
                data[at..].as_ptr().cast(),
                data.len() - at,
                at as libc::off_t,
            );
            assert!(n > 0, "pwrite failed");
            at += n as usize;
        }
        assert_eq!(libc::lseek(i, 0, libc::SEEK_SET), 0);
        assert_eq!(libc::ftruncate(o, 0), 0);
        assert_eq!(libc::lseek(o, 0, libc::SEEK_SET), 0);
    }
}

/// What was written to stdout since `reset`.
fn written() -> Vec<u8> {
    let (_, o) = fds();
    // SAFETY: as above.
    unsafe {
        let len = libc::lseek(o, 0, libc::SEEK_END);
        assert!(len >= 0);
        let mut b = vec![0u8; len as usize];
        let n = libc::pread(o, b.as_mut_ptr().cast(), b.len(), 0);
        assert_eq!(n, len as isize);
        b
    }
}

fn read_content(input: &mut protocol::Input) -> anyhow::Result<io::Result<Vec<u8>>> {
    protocol::with_content(input, |r| {
        let mut b = Vec::new();
        r.take(CONTENT).read_to_end(&mut b).map(|_| b)
    })
}

/// `filter_process`'s conversation, without the daemon.
fn conversation(input: &mut protocol::Input, out: &mut protocol::Output) -> anyhow::Result<()> {
    let caps = protocol::handshake(input, out)?;
    let delay = caps.iter().any(|c| c == "delay");
    while let Some(h) = protocol::read_headers(input)? {
        let path = h.path();
        let _ = (path.to_string(), path.as_path());
        match h.get("command") {
            Some("clean") => match read_content(input)? {
                Ok(b) if b.is_empty() || Pointer::parse(&b).is_some() => {
                    protocol::respond(out, &b)?
                }
                _ => protocol::write_status(out, "error")?,
            },
            Some("smudge") => {
                let _can_delay = delay && h.get("can-delay") == Some("1");
                let b = read_content(input)??;
                match Pointer::parse(&b) {
                    Some(p) => protocol::respond(out, p.encode().as_bytes())?,
                    None => protocol::respond(out, &b)?,
                }
            }
            Some("list_available_blobs") => {
                protocol::write_pathname(out, &path)?;
                encode::flush_to_write(&mut *out)?;
                protocol::write_status(out, "success")?;
            }
            other => bail!("unknown filter command {other:?}"),
        }
        out.flush()?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    reset(data);
    {
        let mut input = protocol::input(io::stdin().lock());
        let mut out: protocol::Output = BufWriter::with_capacity(1 << 18, io::stdout().lock());
        let _ = conversation(&mut input, &mut out);
        let _ = out.flush();
    }
    // Whatever std buffered of this input must not reach the next one.
    let _ = io::stdin().lock().read_to_end(&mut Vec::new());

    // Our side of the conversation is well-formed packet lines.
    let w = written();
    let mut at = 0;
    while at < w.len() {
        match gix_packetline::decode::streaming(&w[at..]) {
            Ok(gix_packetline::decode::Stream::Complete { bytes_consumed, .. }) => {
                at += bytes_consumed
            }
            other => panic!("the filter wrote a malformed packet line at {at}: {other:?}"),
        }
    }
});
