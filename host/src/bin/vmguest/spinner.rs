//! The progress indicator: a spinner on stderr while phases run and the installer is
//! waited for. Hidden when stderr is not a terminal or with -Verbose (logs say more).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmguest::Progress;

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
        self.bar.finish_and_clear();
    }
}
