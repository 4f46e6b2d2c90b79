//! `Test-Plugin`: load a component, or an author's manifest, in the sandbox, check its
//! world and WIT version, and show what it decides: on a sample store, on the ISOs of a
//! directory, or for a live VM (which it never changes). Nothing outside the sandbox is
//! touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{self, Found, Manifest, Refused};
use super::types as wit;
use super::{context, load_one, Misbehaved, PluginInfo, PluginRecord, PluginSet};
use crate::hresult::{Failure, HResult};
use crate::iso::{Candidate, CandidateView, Identity, Named, Recipe, Selection, Version};
use crate::kinds::{Family, GuestKind};

/// What a plugin is tested as: a bare component, or an author's manifest with its
/// settings, grants and limits.
#[derive(Clone, Debug)]
pub enum Subject {
    Component(PathBuf),
    Manifest(PathBuf),
}

/// What the plugin is run against.
#[derive(Debug)]
pub struct Target {
    /// The VM's name as the plugin sees it.
    pub vm: String,
    pub guest: wit::GuestOs,
    /// The candidates and the built-in choice among them.
    pub selection: Selection,
    /// Where the candidates came from: "sample", "-IsoPath DIR", or what an install on
    /// the live VM finds.
    pub store: String,
    /// A live VM: `pre-install` runs with `what-if = true` and `post-install` does not
    /// run, as for `Install-IntegrationComponents -WhatIf`.
    pub live: bool,
}

impl Target {
    /// The sample store and a sample VM of this kind.
    pub fn sample(guest: GuestKind) -> Target {
        Target {
            vm: "sample-vm".into(),
            guest: context::guest_of_kind(guest),
            selection: sample_selection(guest),
            store: "sample".into(),
            live: false,
        }
    }
}

/// A candidate as Test-Plugin shows it.
#[derive(Debug, Serialize)]
pub struct ProbeCandidate {
    pub index: usize,
    #[serde(flatten)]
    pub view: CandidateView,
    /// Identified as an IC ISO of a known family.
    pub usable: bool,
    /// Usable, and its family has an install for the guest's OS.
    pub installs_on_guest: bool,
    /// The built-in policy's choice.
    pub builtin: bool,
}

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub plugin: PluginInfo,
    pub vm: String,
    pub guest: GuestKind,
    pub store: String,
    pub live: bool,
    pub candidates: Vec<ProbeCandidate>,
    pub builtin_choice: Option<usize>,
    /// The choice after the plugin's `choose`; none when it refused or failed.
    pub choice: Option<usize>,
    pub decisions: Vec<PluginRecord>,
    /// What an install would do differently, such as a pin that does not match.
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

fn failure(why: impl std::fmt::Display) -> Failure {
    Failure::msg(HResult::DispException, why.to_string())
}

/// The manifest the plugin is loaded with, and whether it is checked like an install's.
/// A manifest's pin that does not match is a warning, not a refusal: an author tests
/// what they just built, and `Install-Plugin` writes the pin.
fn manifest_for(
    subject: &Subject,
    settings: BTreeMap<String, String>,
    grants: BTreeMap<String, PathBuf>,
    cache: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<(Found, bool), Failure> {
    let path = match subject {
        Subject::Component(component) => {
            let name = component
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let manifest = Manifest::for_component(
                name,
                "(test)".into(),
                component.to_owned(),
                settings,
                grants,
            );
            let found = Found {
                manifest_path: component.to_owned(),
                manifest: Ok(manifest),
            };
            return Ok((found, false));
        }
        Subject::Manifest(path) => path,
    };
    let mut found = manifest::read(path.clone());
    let m = found.manifest.as_mut().map_err(|r| failure(&*r))?;
    m.settings.extend(settings);
    m.grants.extend(grants);
    match manifest::admit(&found, super::engine::usable_cache(cache)) {
        Ok(_) => {}
        Err(Refused::PinMismatch { actual, pinned, .. }) => {
            warnings.push(if pinned.is_empty() {
                format!("the manifest pins no SHA-256, so an install would refuse it; the component's is {actual} (Install-Plugin writes the pin)")
            } else {
                format!("the manifest pins SHA-256 {pinned}, but the component's is {actual}: an install would refuse it (Install-Plugin writes the pin)")
            });
            if let Ok(m) = found.manifest.as_mut() {
                m.sha256 = actual;
            }
        }
        Err(why) => {
            return Err(failure(format!(
                "an install would refuse this plugin: {why}"
            )))
        }
    }
    Ok((found, true))
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

/// Load the plugin in the sandbox and run it against `target`: its choice, then its
/// hooks. A veto or refusal is a decision to show; only a misbehaving plugin is an error.
pub fn probe(
    subject: &Subject,
    settings: BTreeMap<String, String>,
    grants: BTreeMap<String, PathBuf>,
    target: Target,
    cache: Option<&Path>,
) -> Result<ProbeReport, Failure> {
    let mut warnings = Vec::new();
    let (found, strict) = manifest_for(subject, settings, grants, cache, &mut warnings)?;
    let plugin = load_one(&found, strict, cache).map_err(|info| {
        let why = info.refusal().map(ToString::to_string).unwrap_or_default();
        failure(format!("plugin {:?} cannot be loaded: {why}", info.name))
    })?;
    let info = plugin.info.clone();
    let set = PluginSet {
        plugins: vec![plugin],
        refused: Vec::new(),
    };
    let Target {
        vm,
        guest,
        mut selection,
        store,
        live,
    } = target;
    let kind = selection.guest;
    let builtin_choice = selection.chosen;
    let mut decisions = Vec::new();
    let vm_info = context::vm_info(&vm);
    // Whether the plugin misbehaved in any call (a veto or refusal is a decision).
    let mut failed = false;
    let mut misbehaved = |f: &Failure| failed |= f.error.is::<Misbehaved>();
    let mut error = set
        .apply_policy_to(&vm_info, &guest, false, &mut selection, &mut decisions)
        .err();
    error.iter().for_each(&mut misbehaved);
    let choice = error.is_none().then_some(selection.chosen).flatten();
    let mut ctx = context::install_context(&vm, None, None, live);
    ctx.guest = guest;
    if error.is_none() {
        error = set.pre_install(&ctx, &mut decisions).err();
        error.iter().for_each(&mut misbehaved);
    }
    if !live {
        let outcome = super::types::InstallOutcome {
            hresult: 0,
            name: "S_OK".into(),
            message: "sample install".into(),
            components: Some("sample 1.0".into()),
            total_ms: 1,
            phases: Vec::new(),
        };
        if let Some(f) = set.post_install(&ctx, &outcome, &mut decisions) {
            misbehaved(&f);
            error.get_or_insert(f);
        }
    }
    let candidates = selection
        .candidates
        .iter()
        .enumerate()
        .map(|(index, c)| ProbeCandidate {
            index,
            view: CandidateView {
                selected: Some(index) == choice,
                ..c.view()
            },
            usable: c.identity.is_ok(),
            installs_on_guest: c.installs_on(kind),
            builtin: Some(index) == builtin_choice,
        })
        .collect();
    let report = ProbeReport {
        plugin: info,
        vm,
        guest: kind,
        store,
        live,
        candidates,
        builtin_choice,
        choice,
        decisions,
        warnings,
        error: error.as_ref().map(|f| format!("{:#}", f.error)),
    };
    match error {
        Some(f) if failed => Err(f),
        _ => Ok(report),
    }
}
