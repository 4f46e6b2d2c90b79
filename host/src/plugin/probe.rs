//! `Test-Plugin`: load any component in the sandbox, check its world and WIT version,
//! and show what it decides on a sample context. Nothing outside the sandbox is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{Found, Manifest};
use super::{context, load_one, PluginInfo, PluginRecord, PluginSet};
use crate::hresult::{Failure, HResult};
use crate::iso::{Candidate, Identity, Named, Recipe, Selection, Version};
use crate::kinds::{Family, GuestKind};

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub plugin: PluginInfo,
    pub guest: GuestKind,
    pub candidates: Vec<String>,
    pub decisions: Vec<PluginRecord>,
    pub error: Option<String>,
}

fn sample(path: &str, family: Family, version: &str) -> Candidate {
    Candidate {
        named: Named {
            path: PathBuf::from(path),
            source: "sample".into(),
            rank: 0,
            pinned: false,
            within: None,
        },
        volume_id: None,
        pvd: Vec::new(),
        identity: Ok(Identity {
            family,
            name: family.product().into(),
            version: Version::parse(version),
            evidence: "sample".into(),
            recipe: match family {
                // The own format brings its commands in its manifest; the samples' do
                // as a real one would.
                Family::Vmguest => Recipe {
                    linux: Some("sh ./install.sh".into()),
                    ..Recipe::for_family(family)
                },
                _ => Recipe::for_family(family),
            },
        }),
        bytes_read: 0,
        selected: false,
        lost_to_choice: false,
        reason: "sample candidate".into(),
    }
}

/// The sample store: two virtio-win releases (one of them the infamous 0.1.217) and two
/// of this project's own.
pub fn sample_selection(guest: GuestKind) -> Selection {
    let candidates = vec![
        sample(
            "/sample/virtio-win-0.1.266.iso",
            Family::VirtioWin,
            "0.1.266",
        ),
        sample(
            "/sample/virtio-win-0.1.217.iso",
            Family::VirtioWin,
            "0.1.217",
        ),
        sample("/sample/vmguest-ic-1.9.0.iso", Family::Vmguest, "1.9.0"),
        sample("/sample/vmguest-ic-1.10.0.iso", Family::Vmguest, "1.10.0"),
    ];
    let chosen = Some(if guest == GuestKind::Windows { 0 } else { 3 });
    let mut sel = Selection {
        guest,
        families: guest.default_families().to_vec(),
        candidates,
        chosen,
        searched: Vec::new(),
    };
    if let Some(i) = chosen {
        sel.candidates[i].selected = true;
    }
    sel
}

pub fn probe(
    component: &Path,
    settings: BTreeMap<String, String>,
    grants: BTreeMap<String, PathBuf>,
    guest: GuestKind,
    cache: Option<&Path>,
) -> Result<ProbeReport, Failure> {
    let manifest = Manifest {
        name: component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: "(test)".into(),
        wit: String::new(),
        component: component.to_owned(),
        sha256: String::new(),
        order: 0,
        grants,
        grants_rw: BTreeMap::new(),
        settings,
        limits: Default::default(),
    };
    let found = Found {
        manifest_path: component.to_owned(),
        manifest: Ok(manifest),
    };
    let plugin = load_one(&found, false, cache).map_err(|info| {
        let why = info.refusal().map(ToString::to_string).unwrap_or_default();
        Failure::msg(
            HResult::DispException,
            format!("plugin {:?} cannot be loaded: {why}", info.name),
        )
    })?;
    let info = plugin.info.clone();
    let set = PluginSet {
        plugins: vec![plugin],
        refused: Vec::new(),
    };
    let mut sel = sample_selection(guest);
    let candidates = sel
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i}: {}", c.named.path.display()))
        .collect();
    let mut decisions = Vec::new();
    let vm = context::vm_info("sample-vm");
    let guest_os = context::guest_of_kind(guest);
    let mut error = set
        .apply_policy_to(&vm, &guest_os, false, &mut sel, &mut decisions)
        .err();
    let mut ctx = context::install_context("sample-vm", None, None, false);
    ctx.guest = guest_os;
    if error.is_none() {
        error = set.pre_install(&ctx, &mut decisions).err();
    }
    let outcome = super::types::InstallOutcome {
        hresult: 0,
        name: "S_OK".into(),
        message: "sample install".into(),
        components: Some("sample 1.0".into()),
        total_ms: 1,
        phases: Vec::new(),
    };
    if let Some(f) = set.post_install(&ctx, &outcome, &mut decisions) {
        error.get_or_insert(f);
    }
    let report = ProbeReport {
        plugin: info,
        guest,
        candidates,
        decisions,
        error: error.as_ref().map(|f| format!("{:#}", f.error)),
    };
    // A veto or refusal is a decision to show; only a misbehaving plugin is an error.
    let failed = report
        .decisions
        .iter()
        .any(|d| d.decision.starts_with("failed:"));
    match error {
        Some(f) if failed => Err(f),
        _ => Ok(report),
    }
}
