//! Terminal output: progress bars on a TTY (silent otherwise), sizes,
//! gRPC errors turned into one clear line.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A byte progress bar with rate and ETA on stderr when it is a terminal.
pub fn bytes_bar(total: u64, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {pos_files}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("pos_files", |_: &indicatif::ProgressState, _: &mut dyn std::fmt::Write| {})
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
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

/// The daemon's message, without gRPC's framing.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let m = s.message();
    // Failures of this client's own connection carry their cause; a status
    // the daemon sent does not (whatever words its message holds).
    let connection = m.is_empty() || std::error::Error::source(&s).is_some();
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal if connection => {
            anyhow::anyhow!("lost the connection to the daemon ({m}); run the command again (the daemon is started on demand), or see `hoard daemon status`")
        }
        _ => anyhow::anyhow!("{}", s.message()),
    }
}
