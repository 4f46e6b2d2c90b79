//! The progress indicator: a spinner on stderr while phases run and the installer is
//! waited for. Hidden when stderr is not a terminal or with -Verbose (logs say more).
//!
//! Everything else written to stderr while it spins (log lines, error records) goes
//! through [`above`], which hides the spinner for the write, so lines print above it
//! instead of through it.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;
use vmguest::Progress;

/// The spinner on screen, if any.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Run `f` with the spinner cleared, so that what `f` writes stays above it.
pub fn above<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// `tracing`'s writer: one event is collected, then written above the spinner.
pub struct Stderr;

pub struct EventWriter(Vec<u8>);

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter(Vec::new())
    }
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        above(|| {
            let _ = std::io::stderr().lock().write_all(&self.0);
        });
    }
}

pub struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    pub fn new(enabled: bool) -> Spinner {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            if let Ok(mut active) = ACTIVE.lock() {
                *active = Some(bar.clone());
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Spinner { bar }
    }
}

impl Progress for Spinner {
    fn phase(&self, vm: &str, phase: &str) {
        self.bar.set_message(format!("{vm}: {phase}"));
    }

    fn waiting(&self, vm: &str, what: &str, elapsed: Duration, limit: Duration) {
        self.bar.set_message(format!(
            "{vm}: waiting for the {what} ({}s of at most {}s)",
            elapsed.as_secs(),
            limit.as_secs()
        ));
    }

    fn finished(&self, _vm: &str) {
        self.bar.set_message("");
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
        self.bar.finish_and_clear();
    }
}
