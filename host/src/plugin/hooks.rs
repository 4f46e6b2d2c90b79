//! Running `install-hooks`. `pre-install` runs after the ISO is chosen and before the VM
//! is touched; the first veto ends the operation with the plugin's documented outcome.
//! `post-install` runs for every hook plugin with the outcome; a failure there becomes
//! DISP_E_EXCEPTION naming the plugin, while the record of what was installed stays in
//! the result (and in the guest).

use std::sync::atomic::Ordering;

use super::context;
use super::versions::types as wit;
use super::{check_len, Fault, PluginRecord, PluginSet};
use crate::hresult::Failure;

impl PluginSet {
    #[doc(hidden)]
    pub fn pre_install(
        &self,
        ctx: &wit::InstallContext,
        records: &mut Vec<PluginRecord>,
    ) -> Result<(), Failure> {
        for (plugin, export) in self.with(|p| p.hooks.clone()) {
            let ctx = ctx.clone();
            let (result, ms) = plugin.run("pre-install", records, move |store, instance| {
                Box::pin(async move { export.pre_install(store, &instance, &ctx).await })
            })?;
            match result {
                Ok(()) => records.push(plugin.record("pre-install", "allow".into(), ms)),
                Err(r) => {
                    if let Err(why) = check_len("message", &r.message) {
                        records.push(plugin.record("pre-install", format!("failed: {why}"), ms));
                        return Err(plugin.failure(why));
                    }
                    let hresult = context::hresult(r.error);
                    records.push(plugin.record(
                        "pre-install",
                        format!("veto {}: {}", hresult.name(), r.message),
                        ms,
                    ));
                    return Err(Failure::msg(
                        hresult,
                        format!(
                            "plugin {:?} vetoed the install: {}",
                            plugin.name(),
                            r.message
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    #[doc(hidden)]
    /// Returns the first failure; every hook plugin runs regardless.
    pub fn post_install(
        &self,
        ctx: &wit::InstallContext,
        outcome: &wit::InstallOutcome,
        records: &mut Vec<PluginRecord>,
    ) -> Option<Failure> {
        let mut first = None;
        for (plugin, export) in self.with(|p| p.hooks.clone()) {
            if plugin.sandbox.poisoned.load(Ordering::SeqCst) {
                records.push(plugin.record(
                    "post-install",
                    "skipped: the plugin failed earlier".into(),
                    0.0,
                ));
                continue;
            }
            let (ctx, outcome) = (ctx.clone(), outcome.clone());
            let answer = plugin.run("post-install", records, move |store, instance| {
                Box::pin(async move { export.post_install(store, &instance, &ctx, &outcome).await })
            });
            let failure = match answer {
                Ok((Ok(()), ms)) => {
                    records.push(plugin.record("post-install", "ok".into(), ms));
                    None
                }
                Ok((Err(msg), ms)) => {
                    let why = match check_len("message", &msg) {
                        Err(bad) => Fault::Answer(bad),
                        Ok(()) => Fault::PostInstall(msg),
                    };
                    records.push(plugin.record("post-install", format!("failed: {why}"), ms));
                    Some(plugin.failure(why))
                }
                Err(f) => Some(f),
            };
            if first.is_none() {
                first = failure;
            }
        }
        first
    }
}
