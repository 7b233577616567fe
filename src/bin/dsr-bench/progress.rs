//! Progress bars on stderr, so stdout carries only the report. indicatif
//! draws nothing when stderr is not a terminal (CI, the smoke test, a
//! pipe), so the bars cost nothing there; phase lines are printed either
//! way.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar counting to `len`, labelled `label`.
pub fn bar(label: &str, len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    // indicatif's own `per_sec` prints four decimals.
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        },
    );
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A bar over a fixed time, counting milliseconds, with a message.
pub fn timed(label: &str, duration: Duration) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {wide_bar} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(
        Some(duration.as_millis() as u64),
        ProgressDrawTarget::stderr(),
    )
    .with_style(style)
    .with_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A line about the run's progress, on stderr.
pub fn note(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        // Not `println`, which a hidden bar swallows.
        Some(bar) => bar.suspend(|| eprintln!("dsr-bench: {line}")),
        None => eprintln!("dsr-bench: {line}"),
    }
}
