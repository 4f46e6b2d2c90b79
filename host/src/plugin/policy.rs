//! Running `iso-policy`: plugins in order until one does not defer. Every answer is
//! checked: a chosen index must name a usable candidate, a provided path must lie inside
//! one of the plugin's grants (after resolving symlinks) and be an IC ISO, the choice
//! must have an install for the guest's OS unless the media is left for autorun, and
//! strings must be of sane length.

use std::path::{Component, Path, PathBuf};

use super::context;
use super::versions::types as wit;
use super::{check_len, BadAnswer, Choice, Plugin, PluginRecord, PluginSet};
use crate::hresult::Failure;
use crate::iso::{self, Named, Selection};
use crate::vm::GuestOsInfo;

impl PluginSet {
    #[doc(hidden)]
    /// Let the policy plugins confirm, change or refuse the built-in choice.
    ///
    /// `autorun`: the media is left for the guest's autorun, so a plugin may choose an
    /// ISO of any family; otherwise its choice must have an install for the guest's OS
    /// (`Selection::guest`), as vmguest will run it there.
    pub fn apply_policy(
        &self,
        vm: &str,
        guest: Option<&GuestOsInfo>,
        autorun: bool,
        sel: &mut Selection,
        records: &mut Vec<PluginRecord>,
    ) -> Result<(), Failure> {
        let vm_info = context::vm_info(vm);
        let guest_os = context::guest_os(guest);
        self.apply_policy_to(&vm_info, &guest_os, autorun, sel, records)
    }

    #[doc(hidden)]
    pub fn apply_policy_to(
        &self,
        vm: &wit::VmInfo,
        guest: &wit::GuestOs,
        autorun: bool,
        sel: &mut Selection,
        records: &mut Vec<PluginRecord>,
    ) -> Result<(), Failure> {
        for (plugin, export) in self.with(|p| p.policy.clone()) {
            let ctx = context::policy_context(vm, guest, sel);
            let (decision, ms) = plugin.run("iso-policy", records, move |store, instance| {
                Box::pin(async move { export.choose(store, &instance, &ctx).await })
            })?;
            let applied = apply(plugin, decision, autorun, sel);
            let (text, result, stop) = match applied {
                Ok(Some(text)) => (text, Ok(()), true),
                Ok(None) => ("defer".to_owned(), Ok(()), false),
                Err(Verdict::Refused(text, f)) => (text, Err(f), true),
                Err(Verdict::Bad(why)) => {
                    (format!("failed: {why}"), Err(plugin.failure(why)), true)
                }
            };
            tracing::info!(plugin = plugin.name(), "iso-policy: {text}");
            records.push(plugin.record("iso-policy", text, ms));
            result?;
            if stop {
                break;
            }
        }
        Ok(())
    }
}

enum Verdict {
    /// The plugin refused with a contract error.
    Refused(String, Failure),
    /// The answer broke the rules.
    Bad(BadAnswer),
}

impl From<BadAnswer> for Verdict {
    fn from(bad: BadAnswer) -> Self {
        Verdict::Bad(bad)
    }
}

/// Apply one decision. `Ok(None)`: deferred; `Ok(Some(text))`: decided.
fn apply(
    plugin: &Plugin,
    decision: wit::PolicyDecision,
    autorun: bool,
    sel: &mut Selection,
) -> Result<Option<String>, Verdict> {
    let installs = |c: &iso::Candidate, choice: Choice| {
        if autorun || c.installs_on(sel.guest) {
            return Ok(());
        }
        Err(BadAnswer::NoInstall {
            choice,
            family: c.family().map_or("unknown", |f| f.as_str()),
            guest: sel.guest.with_article(),
        })
    };
    match decision {
        wit::PolicyDecision::Defer => Ok(None),
        wit::PolicyDecision::Choose(i) => {
            let n = sel.candidates.len();
            let Some(c) = sel.candidates.get(i as usize) else {
                return Err(BadAnswer::NoSuchCandidate { index: i, count: n }.into());
            };
            if let Err(why) = &c.identity {
                return Err(BadAnswer::UnusableCandidate {
                    index: i,
                    path: c.named.path.clone(),
                    reason: why.reason(),
                }
                .into());
            }
            installs(
                c,
                Choice::Candidate {
                    index: i,
                    path: c.named.path.clone(),
                },
            )?;
            select(sel, i as usize, plugin);
            Ok(Some(format!(
                "choose {i}: {}",
                sel.candidates[i as usize].named.path.display()
            )))
        }
        wit::PolicyDecision::Provide(path) => {
            check_len("path", &path)?;
            let (host, grant) = resolve_in_grants(plugin, &path)?;
            let c = iso::inspect(Named {
                path: host.clone(),
                source: format!("plugin {} ({path})", plugin.name()),
                rank: 0,
                pinned: false,
                within: Some(grant),
            });
            if let Err(why) = &c.identity {
                return Err(BadAnswer::NotAnIso {
                    path,
                    reason: why.reason(),
                }
                .into());
            }
            installs(&c, Choice::Provided(path.clone()))?;
            sel.candidates.push(c);
            select(sel, sel.candidates.len() - 1, plugin);
            Ok(Some(format!("provide {path} ({})", host.display())))
        }
        wit::PolicyDecision::Refuse(r) => {
            check_len("message", &r.message)?;
            let hresult = context::hresult(r.error);
            let text = format!("refuse {}: {}", hresult.name(), r.message);
            Err(Verdict::Refused(
                text,
                Failure::msg(
                    hresult,
                    format!("plugin {:?} refused: {}", plugin.name(), r.message),
                ),
            ))
        }
    }
}

fn select(sel: &mut Selection, i: usize, plugin: &Plugin) {
    iso::choose_by(sel, i, plugin.name());
}

/// Map a path as the plugin sees it to the host, refusing anything outside its grants:
/// `..` components, paths under no grant, and symlinks that lead out. Returns the real
/// path and the real grant it lies in; `iso::finish` checks the opened file against the
/// grant again, since the path may change before then.
pub fn resolve_in_grants(plugin: &Plugin, path: &str) -> Result<(PathBuf, PathBuf), BadAnswer> {
    let outside = || BadAnswer::OutsideGrants(path.to_owned());
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    for g in plugin.sandbox.manifest.grants() {
        let Ok(rest) = p.strip_prefix(&g.guest) else {
            continue;
        };
        let host = g.host.join(rest);
        let (Ok(root), Ok(real)) = (g.host.canonicalize(), host.canonicalize()) else {
            return Err(BadAnswer::Missing(path.to_owned()));
        };
        if !real.starts_with(&root) {
            return Err(outside());
        }
        return Ok((real, root));
    }
    Err(outside())
}

/// The plugins' place in the location chain (`iso::Locator`): every plugin must have
/// been admitted, then the policy plugins decide.
impl iso::Policy for PluginSet {
    type Record = PluginRecord;

    fn decide(
        &self,
        target: &iso::Target<'_>,
        sel: &mut Selection,
        records: &mut Vec<PluginRecord>,
    ) -> Result<(), Failure> {
        self.check_admitted()?;
        let guest = match target.guest {
            iso::Guest::Reported(info) => context::guest_os(info),
            iso::Guest::Kind(kind) => context::guest_of_kind(kind),
        };
        self.apply_policy_to(
            &context::vm_info(target.vm),
            &guest,
            target.autorun,
            sel,
            records,
        )
    }
}
