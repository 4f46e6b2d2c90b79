//! Objects out: a table for people, JSON lines for pipes, and PowerShell-like error
//! records on stderr.
//!
//! Text from guests, ISOs, plugins and VM definitions reaches the terminal only through
//! [`printable`], so it cannot carry escape sequences (colours, cursor moves, OSC 52
//! clipboard writes, title changes). JSON stays exact: serde_json escapes control
//! characters itself.

use std::borrow::Cow;
use std::io::Write;

use serde::Serialize;
use vmguest::iso::CandidateView;
use vmguest::plugin::probe::ProbeReport;
use vmguest::plugin::PluginInfo;
use vmguest::{HResult, InstallReport, VmSummary};

use crate::args::OutputFormat;

/// Write one object as a JSON line.
pub fn json_line(value: &impl Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = writeln!(out);
}

/// `s` as it may reach a terminal: control characters (C0, DEL, C1) and the Unicode
/// bidirectional overrides and isolates are written as escapes (`\x1b`, `\n`,
/// `\u{202e}`), so the text shows what it holds and cannot drive the terminal or
/// reorder what is shown. A backslash is left as it is: Windows paths stay readable.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && unprintable(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal acts on instead of showing.
fn unprintable(c: char) -> bool {
    c.is_control() // C0, DEL and C1
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Left-aligned columns, PowerShell `Format-Table` style. Every cell goes through
/// [`printable`].
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" ").trim_end().to_owned()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "{}",
        line(
            headers
                .iter()
                .map(|h| "-".repeat(h.chars().count()))
                .collect()
        )
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row.clone()));
    }
}

/// Objects out: each as a JSON line, or all as one table with a row per object.
fn emit<T: Serialize>(
    format: OutputFormat,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) {
    match format {
        OutputFormat::Json => items.iter().for_each(json_line),
        OutputFormat::Table => table(headers, &items.iter().map(row).collect::<Vec<_>>()),
    }
}

pub fn install_reports(format: OutputFormat, reports: &[InstallReport]) {
    let headers = [
        "VMName",
        "Result",
        "HResult",
        "Drive",
        "Mode",
        "Components",
        "Seconds",
        "Message",
        "ComputerName",
    ];
    emit(format, reports, &headers, |r| {
        vec![
            r.vm.clone(),
            r.result.name().to_owned(),
            r.hresult.clone(),
            r.drive.clone().unwrap_or_default(),
            r.mode
                .map(|m| format!("{m:?}").to_lowercase())
                .unwrap_or_default(),
            r.components
                .as_ref()
                .map(|c| format!("{} {}", c.family, c.version))
                .unwrap_or_default(),
            format!("{:.1}", r.total_ms as f64 / 1000.0),
            r.message.clone(),
            r.host.clone().unwrap_or_default(),
        ]
    });
}

pub fn vm_summaries(format: OutputFormat, vms: &[VmSummary]) {
    // A Proxmox VE VM's node and VMID, in columns of their own when any VM has them.
    let placed = vms.iter().any(|v| v.placement.is_some());
    let mut headers = vec![
        "Name",
        "State",
        "DvdDrives",
        "GuestOS",
        "Components",
        "ToolsVersionStatus",
        "PendingRestore",
        "ComputerName",
    ];
    if placed {
        headers.splice(1..1, ["Node", "VMID"]);
    }
    emit(format, vms, &headers, |v| {
        let drives: Vec<String> = v
            .dvd_drives
            .iter()
            .map(|d| match &d.media {
                Some(m) => format!("{}={}", d.id, m.file),
                None => format!("{}=empty", d.id),
            })
            .collect();
        let mut row = vec![
            v.name.clone(),
            v.state.clone(),
            drives.join(","),
            v.guest_os
                .as_ref()
                .map(|o| o.display_name())
                .unwrap_or_default(),
            v.integration_components
                .as_ref()
                .map(|c| format!("{} {}", c.components.family, c.components.version))
                .unwrap_or_default(),
            match &v.latest_version {
                Some(latest) if v.version_status == vmguest::VersionStatus::UpgradeAvailable => {
                    format!("upgrade available ({latest})")
                }
                _ => v.version_status.as_str().to_owned(),
            },
            v.pending_restore
                .as_ref()
                .map(|e| {
                    let back = e.user_media.as_ref().map_or("empty", |m| m.file.as_str());
                    format!("{}={back} (Repair-VMMedia)", e.drive)
                })
                .unwrap_or_default(),
            v.host.clone(),
        ];
        if placed {
            let p = v.placement.as_ref();
            let node = p.map(|p| p.node.clone()).unwrap_or_default();
            let vmid = p.map(|p| p.vmid.to_string()).unwrap_or_default();
            row.splice(1..1, [node, vmid]);
        }
        row
    });
}

pub fn iso_candidates(format: OutputFormat, candidates: &[CandidateView]) {
    let headers = ["Selected", "Family", "Version", "Source", "Path", "Reason"];
    emit(format, candidates, &headers, |c| {
        vec![
            if c.selected { "*" } else { "" }.to_owned(),
            c.family.map(|f| f.to_string()).unwrap_or_default(),
            c.version.clone().unwrap_or_default(),
            c.source.clone(),
            c.path.clone(),
            c.reason.clone(),
        ]
    });
}

pub fn plugins(format: OutputFormat, plugins: &[PluginInfo]) {
    let headers = [
        "Name",
        "Version",
        "Wit",
        "Implements",
        "Grants",
        "Sha256",
        "Cache",
        "Status",
        "Directory",
    ];
    emit(format, plugins, &headers, |p| {
        let grants: Vec<String> = p
            .grants
            .iter()
            .map(|g| {
                let rw = if g.writable { " (rw)" } else { "" };
                format!("{}={}{rw}", g.guest, g.host.display())
            })
            .collect();
        vec![
            p.name.clone(),
            p.version.clone().unwrap_or_default(),
            p.wit.clone().unwrap_or_default(),
            p.implements.join(","),
            grants.join(","),
            p.sha256
                .as_deref()
                .map(|h| h[..12.min(h.len())].to_owned())
                .unwrap_or_default(),
            p.cache
                .map(|c| format!("{c:?}").to_lowercase())
                .unwrap_or_default(),
            p.status.to_string(),
            format!("{} ({})", p.directory.display(), p.directory_from),
        ]
    });
}

pub fn probe(format: OutputFormat, report: &ProbeReport) {
    match format {
        OutputFormat::Json => json_line(report),
        OutputFormat::Table => {
            println!(
                "{} (vmguest:plugin@{}) implements {}",
                printable(&report.plugin.name),
                printable(report.plugin.wit.as_deref().unwrap_or("?")),
                printable(&report.plugin.implements.join(", "))
            );
            let vm = match report.live {
                true => format!("VM {}", printable(&report.vm)),
                false => "a sample VM".into(),
            };
            println!(
                "{vm}, {} guest; candidates from {}:",
                report.guest.as_str(),
                printable(&report.store)
            );
            let rows: Vec<Vec<String>> = report
                .candidates
                .iter()
                .map(|c| {
                    let marks = [(c.builtin, "built-in"), (c.view.selected, "chosen")];
                    let choice: Vec<&str> = marks.iter().filter(|m| m.0).map(|m| m.1).collect();
                    vec![
                        c.index.to_string(),
                        c.view.family.map_or("-".into(), |f| f.as_str().to_owned()),
                        c.view.version.clone().unwrap_or_else(|| "-".into()),
                        match (c.usable, c.installs_on_guest) {
                            (true, true) => "yes".into(),
                            (true, false) => "no installer for the guest".into(),
                            (false, _) => format!("no: {}", c.view.reason),
                        },
                        choice.join(", "),
                        c.view.path.clone(),
                    ]
                })
                .collect();
            table(
                &["#", "Family", "Version", "Usable", "Choice", "Path"],
                &rows,
            );
            println!();
            let rows: Vec<Vec<String>> = report
                .decisions
                .iter()
                .map(|d| {
                    vec![
                        d.stage.to_owned(),
                        format!("{:.2}", d.ms),
                        d.decision.clone(),
                    ]
                })
                .collect();
            table(&["Stage", "Ms", "Decision"], &rows);
            for w in &report.warnings {
                eprintln!("WARNING: {}", printable(w));
            }
        }
    }
}

pub fn skeleton(format: OutputFormat, s: &vmguest::plugin::skeleton::Skeleton) {
    match format {
        OutputFormat::Json => json_line(s),
        OutputFormat::Table => {
            println!(
                "{} ({}, world {}) in {}:",
                printable(&s.name),
                s.language.as_str(),
                s.world.as_str(),
                printable(&s.path.display().to_string())
            );
            for f in &s.files {
                println!("  {}", printable(f));
            }
            println!(
                "\nBuild:   {}\nTest:    {}\nInstall: {}",
                printable(&s.build),
                printable(&s.test),
                printable(&s.install)
            );
        }
    }
}

/// A PowerShell-like error record on stderr, above the spinner. The target, message and
/// causes may quote the guest, the ISO or a plugin: they go through [`printable`].
pub fn error_record(
    cmdlet: &str,
    target: &str,
    hresult: HResult,
    message: &str,
    causes: &[String],
) {
    let (target, message) = (printable(target), printable(message));
    let mut text = format!("{cmdlet} : {message}\n");
    text += &format!(
        "    + CategoryInfo          : {}: ({target}:String) [{cmdlet}], {}\n",
        hresult.category(),
        hresult.name()
    );
    text += &format!(
        "    + FullyQualifiedErrorId : {},{cmdlet}\n",
        hresult.name()
    );
    text += &format!("    + HResult               : {}\n", hresult.hex());
    for (i, cause) in causes.iter().enumerate().skip(1) {
        text += &format!("    + Cause[{i}]              : {}\n", printable(cause));
    }
    crate::spinner::above(|| {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert!(matches!(printable("web1 C:\\ic"), Cow::Borrowed(_)));
        assert_eq!(
            printable("\x1b]52;c;aGk=\x07\x1b[31mred\r\nnext\tcol\x7f\u{9b}"),
            "\\x1b]52;c;aGk=\\x07\\x1b[31mred\\r\\nnext\\tcol\\x7f\\u{9b}"
        );
        assert_eq!(
            printable("a\u{202e}gpj.exe\u{2066}"),
            "a\\u{202e}gpj.exe\\u{2066}"
        );
        // Other non-ASCII text is text.
        assert_eq!(printable("Größe ✓ 日本"), "Größe ✓ 日本");
    }

    #[test]
    fn nothing_a_terminal_acts_on_survives() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let shown = printable(&c.to_string()).into_owned();
            assert!(!shown.chars().any(unprintable), "{c:?} -> {shown:?}");
        }
    }
}
