//! Progress bars on stderr, shown only when stderr is a terminal and not `--quiet`, so
//! scripts and logs never see control characters.

use std::io::IsTerminal;

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every visible bar of the process, drawn together: work that runs at once (the restore's
/// verify beside its preflight, `diff`'s two backups) gets a line each instead of two bars
/// fighting over one line. Created with the first visible bar.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Writes `text` to stderr with the bars (if any) cleared for the moment, so a message
/// never lands in the middle of a bar; what [`crate::say!`] uses.
pub fn say(text: std::fmt::Arguments<'_>, newline: bool) {
    let print = || {
        use std::io::Write as _;
        let mut e = std::io::stderr().lock();
        let _ = if newline {
            writeln!(e, "{text}")
        } else {
            write!(e, "{text}")
        };
    };
    match BARS.get() {
        Some(bars) => bars.suspend(print),
        None => print(),
    }
}

/// A byte-progress bar, hidden when not wanted.
pub fn bytes(quiet: bool, len: u64, message: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bars = BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let bar = bars.add(ProgressBar::new(len));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Human size.
pub fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Human age: `3d 4h`, `5h 12m`, `42s`.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{s}s")
    }
}
