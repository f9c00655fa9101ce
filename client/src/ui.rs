//! Terminal output: progress bars on a TTY (silent otherwise), sizes, and
//! gRPC errors turned into one clear line that keeps its code
//! ([`DaemonError`]), so the CLI exits with one code per kind of failure
//! ([`exit_code`]).

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress display on stderr when it is a terminal, hidden otherwise.
fn bar(len: Option<u64>, style: ProgressStyle, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    pb.set_style(style);
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A byte bar with rate and ETA, once the total is known.
const BYTES: &str =
    "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {pos_files}";
/// Until the total is known.
const PLANNING: &str = "{msg:>9} {spinner} planning…";
/// When no total will be known.
const COUNTING: &str = "{msg:>9} {spinner} {bytes} {binary_bytes_per_sec}";

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(BYTES)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "pos_files",
            |_: &indicatif::ProgressState, _: &mut dyn std::fmt::Write| {},
        )
        .progress_chars("=> ")
}

fn spinner_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// A spinner reading `planning…` until the total is known; [`set_total`]
/// then turns it into a byte bar with rate and ETA.
pub fn pending_bar(msg: &'static str, quiet: bool) -> ProgressBar {
    bar(None, spinner_style(PLANNING), msg, quiet)
}

/// Turns a bar from [`pending_bar`] into a byte bar of `total` bytes.
pub fn set_total(pb: &ProgressBar, total: u64) {
    pb.set_length(total);
    pb.set_style(bytes_style());
    // Rate and ETA count from now, not from when planning began.
    pb.reset_eta();
}

/// For work whose size is not known ahead: a spinner, the bytes done so
/// far and the rate.
pub fn bytes_spinner(msg: &'static str, quiet: bool) -> ProgressBar {
    bar(None, spinner_style(COUNTING), msg, quiet)
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A failure the daemon reported, or the loss of the connection to it,
/// with its gRPC code kept. Displays as the message alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    pub code: tonic::Code,
    message: String,
}

impl DaemonError {
    /// The daemon reported a full disk: exit code 9, like its error kind.
    pub fn disk_full(message: String) -> Self {
        DaemonError {
            code: tonic::Code::ResourceExhausted,
            message,
        }
    }

    /// The connection to the daemon failed: transient, run it again.
    pub fn lost_connection(message: String) -> Self {
        DaemonError {
            code: tonic::Code::Unavailable,
            message,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DaemonError {}

/// The daemon's message, without gRPC's framing (its code is kept: see
/// [`DaemonError`]).
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let m = s.message();
    // Failures of this client's own connection carry their cause; a status
    // the daemon sent does not (whatever words its message holds).
    let connection = m.is_empty() || std::error::Error::source(&s).is_some();
    let e = match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal if connection => {
            DaemonError::lost_connection(format!("lost the connection to the daemon ({m}); run the command again (the daemon is started on demand), or see `hoard daemon status`"))
        }
        code => DaemonError {
            code,
            message: m.to_string(),
        },
    };
    anyhow::Error::new(e)
}

/// The exit code of the CLI for a failure of this kind (README, "Exit
/// codes"). 3 is `hoard daemon status` finding no daemon; clap's usage
/// errors exit 2 like `Invalid`.
pub fn exit_code(code: tonic::Code) -> u8 {
    use tonic::Code;
    match code {
        // Invalid: bad input; fix the command.
        Code::InvalidArgument => 2,
        Code::NotFound => 4,
        // Conflict: non-fast-forward, local changes in the way; resolve it.
        Code::FailedPrecondition => 5,
        // Transient: daemon or peer unreachable, network; retry.
        Code::Unavailable => 6,
        // Refused: a peer sent bad data; nothing of it was stored.
        Code::Aborted => 7,
        // Corrupt: local damage; `hoard verify --read-data`.
        Code::DataLoss => 8,
        // DiskFull.
        Code::ResourceExhausted => 9,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn bar_templates_parse() {
        for t in [BYTES, PLANNING, COUNTING] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn one_exit_code_per_kind() {
        let kinds = [
            (Code::InvalidArgument, 2),
            (Code::NotFound, 4),
            (Code::FailedPrecondition, 5),
            (Code::Unavailable, 6),
            (Code::Aborted, 7),
            (Code::DataLoss, 8),
            (Code::ResourceExhausted, 9),
        ];
        for (code, exit) in kinds {
            assert_eq!(exit_code(code), exit, "{code:?}");
        }
        for other in [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert_eq!(exit_code(other), 1, "{other:?}");
        }
    }

    #[test]
    fn status_keeps_code_and_message() {
        let e = status_error(tonic::Status::not_found("no such object blake3:00"));
        assert_eq!(e.to_string(), "no such object blake3:00");
        let d = e.downcast_ref::<DaemonError>().expect("a DaemonError");
        assert_eq!(d.code, Code::NotFound);
        // What the daemon sent, however it reads, is not a lost connection.
        let e = status_error(tonic::Status::internal("the index is locked"));
        assert_eq!(e.to_string(), "the index is locked");
        assert_eq!(
            e.downcast_ref::<DaemonError>().map(|d| d.code),
            Some(Code::Internal)
        );
    }

    #[test]
    fn lost_connection_is_transient() {
        // A status without a message is this client's own transport failing.
        let e = status_error(tonic::Status::unknown(""));
        assert!(e
            .to_string()
            .starts_with("lost the connection to the daemon ("));
        assert_eq!(
            e.downcast_ref::<DaemonError>().map(|d| d.code),
            Some(Code::Unavailable)
        );
    }
}
