//! maintenance-window: allow installs only inside a daily window (UTC), read from the
//! WASI wall clock.
//!
//! Setting `window = "HH:MM-HH:MM"` (UTC; may wrap past midnight, for example
//! `22:00-06:00`). Outside it, pre-install vetoes with DISP_E_EXCEPTION and says when the
//! window opens. Without the setting every install is vetoed: a window plugin that
//! nobody configured must not let installs through.

wit_bindgen::generate!({
    path: "../../wit/since_v0.2.0",
    world: "hooks",
});

use std::time::{SystemTime, UNIX_EPOCH};

use exports::vmguest::plugin::install_hooks::Guest;
use vmguest::plugin::host::{log, setting};
use vmguest::plugin::types::{ContractError, InstallContext, InstallOutcome, Level, Refusal};

struct MaintenanceWindow;

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn hhmm(min: u32) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

fn veto(message: String) -> Result<(), Refusal> {
    Err(Refusal {
        error: ContractError::Unexpected,
        message,
    })
}

impl Guest for MaintenanceWindow {
    fn pre_install(ctx: InstallContext) -> Result<(), Refusal> {
        let Some(window) = setting("window") else {
            return veto("no maintenance window configured (setting `window`)".into());
        };
        let Some((start, end)) = window
            .split_once('-')
            .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
        else {
            return veto(format!("window {window:?} is not HH:MM-HH:MM"));
        };
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = ((now_secs / 60) % (24 * 60)) as u32;
        let inside = if start <= end {
            start <= now && now < end
        } else {
            now >= start || now < end
        };
        if inside {
            log(
                Level::Info,
                &format!(
                    "{}: inside the window {window} UTC (now {})",
                    ctx.vm.name,
                    hhmm(now)
                ),
            );
            Ok(())
        } else {
            veto(format!(
                "outside the maintenance window {window} UTC (now {} UTC); it opens at {} UTC",
                hhmm(now),
                hhmm(start)
            ))
        }
    }

    fn post_install(_ctx: InstallContext, _outcome: InstallOutcome) -> Result<(), String> {
        Ok(())
    }
}

export!(MaintenanceWindow);
