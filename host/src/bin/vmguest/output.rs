//! Objects out: a table for people, JSON lines for pipes, and PowerShell-like error
//! records on stderr.

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

/// Left-aligned columns, PowerShell `Format-Table` style.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
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

pub fn install_reports(format: OutputFormat, reports: &[InstallReport]) {
    match format {
        OutputFormat::Json => reports.iter().for_each(json_line),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = reports
                .iter()
                .map(|r| {
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
                    ]
                })
                .collect();
            table(
                &[
                    "VMName",
                    "Result",
                    "HResult",
                    "Drive",
                    "Mode",
                    "Components",
                    "Seconds",
                    "Message",
                ],
                &rows,
            );
        }
    }
}

pub fn vm_summaries(format: OutputFormat, vms: &[VmSummary]) {
    match format {
        OutputFormat::Json => vms.iter().for_each(json_line),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = vms
                .iter()
                .map(|v| {
                    let drives: Vec<String> = v
                        .dvd_drives
                        .iter()
                        .map(|d| match &d.media {
                            Some(m) => format!("{}={}", d.id, m.file),
                            None => format!("{}=empty", d.id),
                        })
                        .collect();
                    vec![
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
                    ]
                })
                .collect();
            table(
                &["Name", "State", "DvdDrives", "GuestOS", "Components"],
                &rows,
            );
        }
    }
}

pub fn iso_candidates(format: OutputFormat, candidates: &[CandidateView]) {
    match format {
        OutputFormat::Json => candidates.iter().for_each(json_line),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = candidates
                .iter()
                .map(|c| {
                    vec![
                        if c.selected { "*" } else { "" }.to_owned(),
                        c.family.map(|f| f.to_string()).unwrap_or_default(),
                        c.version.clone().unwrap_or_default(),
                        c.source.clone(),
                        c.path.clone(),
                        c.reason.clone(),
                    ]
                })
                .collect();
            table(
                &["Selected", "Family", "Version", "Source", "Path", "Reason"],
                &rows,
            );
        }
    }
}

pub fn plugins(format: OutputFormat, plugins: &[PluginInfo]) {
    match format {
        OutputFormat::Json => plugins.iter().for_each(json_line),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = plugins
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.version.clone().unwrap_or_default(),
                        p.wit.clone().unwrap_or_default(),
                        p.implements.join(","),
                        p.grants
                            .iter()
                            .map(|g| {
                                format!(
                                    "{}={}{}",
                                    g.guest,
                                    g.host.display(),
                                    if g.writable { " (rw)" } else { "" }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        p.sha256
                            .as_deref()
                            .map(|h| h[..12.min(h.len())].to_owned())
                            .unwrap_or_default(),
                        p.cache
                            .map(|c| format!("{c:?}").to_lowercase())
                            .unwrap_or_default(),
                        p.status.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "Name",
                    "Version",
                    "Wit",
                    "Implements",
                    "Grants",
                    "Sha256",
                    "Cache",
                    "Status",
                ],
                &rows,
            );
        }
    }
}

pub fn probe(format: OutputFormat, report: &ProbeReport) {
    match format {
        OutputFormat::Json => json_line(report),
        OutputFormat::Table => {
            println!(
                "{} (vmguest:plugin@{}) implements {}",
                report.plugin.name,
                report.plugin.wit.as_deref().unwrap_or("?"),
                report.plugin.implements.join(", ")
            );
            println!("sample {} guest; candidates:", report.guest.as_str());
            for c in &report.candidates {
                println!("  {c}");
            }
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
        }
    }
}

/// A PowerShell-like error record on stderr, above the spinner.
pub fn error_record(
    cmdlet: &str,
    target: &str,
    hresult: HResult,
    message: &str,
    causes: &[String],
) {
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
        text += &format!("    + Cause[{i}]              : {cause}\n");
    }
    crate::spinner::above(|| {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    });
}
