//! The progress indicator: one spinner line per running VM on stderr, with its phase and
//! the installer wait. Hidden when stderr is not a terminal or with -Verbose (logs say
//! more).
//!
//! Everything else written to stderr while they spin (log lines, error records) goes
//! through [`above`], which clears the lines for the write, so it prints above them
//! instead of through them.
//!
//! Log fields and spinner messages may quote guests, ISOs and plugins; they reach the
//! terminal through [`crate::output::printable`], as everything else does.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use vmguest::Progress;

use crate::output::printable;

/// The lines on screen, if any.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Run `f` with the progress lines cleared, so that what `f` writes stays above them.
pub fn above<R>(f: impl FnOnce() -> R) -> R {
    let multi = ACTIVE.lock().ok().and_then(|m| m.clone());
    match multi {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// `tracing`'s writer: one event is collected, then written above the progress lines.
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

/// `tracing`'s field formatter: its default rendering, then [`printable`]. The default
/// escapes only some control characters, and only in the message; a `%value` field (an
/// error chain, a plugin's log line) would reach the terminal raw. Only the fields go
/// through it: the level's colours stay.
pub struct PrintableFields;

impl<'w> FormatFields<'w> for PrintableFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut plain), fields)?;
        std::fmt::Write::write_str(&mut writer, &printable(&plain))
    }
}

/// One line per VM whose install is running.
pub struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new(enabled: bool) -> Bars {
        let multi = (enabled && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        if let (Some(m), Ok(mut active)) = (&multi, ACTIVE.lock()) {
            *active = Some(m.clone());
        }
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// The VM's line, added when its install starts.
    fn bar(&self, vm: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        let bar = bars.entry(vm.to_owned()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Some(bar.clone())
    }
}

impl Progress for Bars {
    fn phase(&self, vm: &str, phase: &str) {
        if let Some(bar) = self.bar(vm) {
            bar.set_message(printable(&format!("{vm}: {phase}")).into_owned());
        }
    }

    fn waiting(&self, vm: &str, what: &str, elapsed: Duration, limit: Duration) {
        if let Some(bar) = self.bar(vm) {
            bar.set_message(format!(
                "{}: waiting for the {} ({}s of at most {}s)",
                printable(vm),
                printable(what),
                elapsed.as_secs(),
                limit.as_secs()
            ));
        }
    }

    fn finished(&self, vm: &str) {
        let bar = self.bars.lock().ok().and_then(|mut b| b.remove(vm));
        if let (Some(bar), Some(multi)) = (bar, &self.multi) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}
