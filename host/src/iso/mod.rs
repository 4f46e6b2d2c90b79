//! Locating the latest Integration Components ISO by what the ISOs contain.
//!
//! ```text
//! sources::gather  → every candidate file, in precedence order (sources.rs)
//! select::inspect  → open.rs opens it (trusted, regular), reader.rs reads the volume
//!                    descriptors, family.rs says what it is
//! select::choose   → the guest's families, then the newest version (version.rs)
//! locate           → the chosen one, with its SHA-256 for audit
//! ```
//!
//! Nothing is decided from file names or modification times.

pub mod digest;
mod family;
mod locator;
pub mod manifest;
pub(crate) mod open;
mod pe;
pub mod reader;
mod recipe;
mod select;
mod sources;
mod version;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use digest::sha256_file;
pub use family::{identify, Identity};
pub use locator::{Choice, Guest, Locator, Policy, Target};
pub use open::{open as open_iso, OpenError};
pub use pe::fake_exe;
pub use recipe::{Probe, Recipe};
pub use select::{choose, choose_by, inspect, Candidate, CandidateView, Selection, Unusable};
pub use sources::{gather, Gathered, Named, WELL_KNOWN};
pub use version::Version;

use anyhow::Context;

use crate::hresult::{Failure, HResult, OrHResult, Outcome};
use crate::kinds::{Family, GuestKind};
use crate::settings::Settings;

/// ISO 9660 volume descriptors start at sector 16 of 2048 bytes.
pub const PVD_OFFSET: u64 = reader::DESCRIPTORS_START;
pub const SECTOR: usize = reader::SECTOR as usize;

/// The chosen IC ISO.
#[derive(Clone, Debug, Serialize)]
pub struct IcIso {
    pub path: PathBuf,
    pub volume_id: String,
    pub source: String,
    pub family: Family,
    pub name: String,
    pub version: Option<String>,
    /// The file as opened and checked. It is what goes to the hypervisor
    /// (`VmControl::stage_iso`), so a later change to `path` cannot change what the
    /// guest gets.
    #[serde(skip)]
    pub file: Arc<File>,
    /// SHA-256 of the file as opened: from the digest cache, or being computed.
    #[serde(skip)]
    pub sha256: PendingDigest,
    /// Why this one: the record of the choice.
    pub reason: String,
    #[serde(skip)]
    pub recipe: Recipe,
    /// The primary volume descriptor, byte for byte: identifies the media inside the guest.
    #[serde(skip)]
    pub pvd: Vec<u8>,
}

/// Gather, inspect and choose, without hashing: what `Get-IntegrationComponentsIso` shows.
pub fn survey(settings: &Settings, explicit: Option<&Path>, guest: GuestKind) -> Selection {
    let (families, problems) = settings.config.families(guest);
    let mut gathered = gather(explicit, settings);
    gathered.searched.extend(problems);
    choose(gathered, guest, families)
}

/// The whole policy: the chosen ISO, or HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND) listing
/// every place searched and why each candidate was refused.
pub fn locate(settings: &Settings, explicit: Option<&Path>, guest: GuestKind) -> Outcome<IcIso> {
    finish(
        &survey(settings, explicit, guest),
        settings.digest_cache.as_deref(),
    )
}

/// The chosen candidate of a selection (perhaps changed by plugins), opened, with its
/// digest from `digest_cache` or being computed beside the caller's next steps.
pub fn finish(selection: &Selection, digest_cache: Option<&Path>) -> Outcome<IcIso> {
    let Some(c) = selection.chosen() else {
        return Err(not_found(selection));
    };
    // Only identified candidates are ever chosen (select.rs and plugin/policy.rs check).
    let Ok(id) = &c.identity else {
        return Err(not_found(selection));
    };
    let path = select::canonical(c);
    let opening = || format!("opening {}", path.display());
    let file = open_iso(&path).map_err(|e| {
        // Gone, or no longer trusted or regular since inspection: no usable ISO.
        let hresult = match &e {
            OpenError::Io(_) if !e.is_not_found() => HResult::DispException,
            _ => HResult::FileNotFound,
        };
        Failure::new(hresult, anyhow::Error::new(e).context(opening()))
    })?;
    check_opened(&file, c).map_err(|e| Failure::new(HResult::DispException, e))?;
    let hashed = file
        .try_clone()
        .with_context(opening)
        .or_hresult(HResult::DispException)?;
    Ok(IcIso {
        volume_id: c.volume_id.clone().unwrap_or_default(),
        source: c.named.source.clone(),
        family: id.family,
        name: id.name.clone(),
        version: id.version.as_ref().map(|v| v.to_string()),
        sha256: PendingDigest::start(hashed, digest_cache.map(Path::to_owned)),
        file: Arc::new(file),
        reason: c.reason.clone(),
        recipe: id.recipe.clone(),
        pvd: c.pvd.clone(),
        path,
    })
}

/// Why an opened ISO is not the one that was chosen.
#[derive(Debug, thiserror::Error)]
pub enum OpenedError {
    #[error("{} now leads to {}, outside {}", .path.display(), .real.display(), .within.display())]
    Outside {
        path: PathBuf,
        real: PathBuf,
        within: PathBuf,
    },
    #[error("{} changed after it was inspected (its volume descriptor differs)", .0.display())]
    Changed(PathBuf),
    #[error("reading {} as opened", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
}

/// Check the descriptor itself, not the path: where it really is (`/proc/self/fd`),
/// inside the directory it must stay in, and the same image that was inspected.
fn check_opened(file: &File, c: &Candidate) -> Result<(), OpenedError> {
    use std::os::fd::AsRawFd;
    let path = &c.named.path;
    let io = |e| OpenedError::Io(path.clone(), e);
    if let Some(within) = &c.named.within {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(io)?;
        if !real.starts_with(within) {
            return Err(OpenedError::Outside {
                path: path.clone(),
                real,
                within: within.clone(),
            });
        }
    }
    let len = file.metadata().map_err(io)?.len();
    // The digest reads positionally, so moving this descriptor's offset is harmless.
    let same = reader::Image::open(file, len, reader::Limits::default())
        .is_ok_and(|image| image.pvd == c.pvd);
    if !same {
        return Err(OpenedError::Changed(path.clone()));
    }
    Ok(())
}

/// A digest that is ready (cached) or being computed on its own thread.
#[derive(Clone, Debug)]
pub struct PendingDigest(Arc<Mutex<DigestState>>);

#[derive(Debug)]
enum DigestState {
    Ready(Result<String, Arc<std::io::Error>>),
    Running(std::thread::JoinHandle<std::io::Result<String>>),
    Taken,
}

impl PendingDigest {
    /// A warm cache answers at once; a cold hash starts on its own thread.
    fn start(file: File, cache: Option<PathBuf>) -> PendingDigest {
        // A hit costs one fstat and one small read; only a miss needs the thread.
        let state = match digest::sha256_cached(&file, cache.as_deref()) {
            Some(sha) => DigestState::Ready(Ok(sha)),
            None => {
                let spawned = std::thread::Builder::new()
                    .name("vmguest-iso-digest".into())
                    .spawn(move || digest::sha256(&file, cache.as_deref()).map(|(s, _)| s));
                match spawned {
                    Ok(handle) => DigestState::Running(handle),
                    Err(e) => DigestState::Ready(Err(Arc::new(e))),
                }
            }
        };
        PendingDigest(Arc::new(Mutex::new(state)))
    }

    /// The digest, waiting for the hash if it is still running. A read error is
    /// DISP_E_EXCEPTION: the file exists, it could not be read.
    pub fn wait(&self) -> Outcome<String> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let DigestState::Running(_) = &*state {
            if let DigestState::Running(handle) = std::mem::replace(&mut *state, DigestState::Taken)
            {
                let result = match handle.join() {
                    Ok(r) => r.map_err(Arc::new),
                    Err(_) => Err(Arc::new(std::io::Error::other(
                        "the digest thread panicked",
                    ))),
                };
                *state = DigestState::Ready(result);
            }
        }
        match &*state {
            DigestState::Ready(Ok(sha)) => Ok(sha.clone()),
            DigestState::Ready(Err(e)) => Err(Failure::new(
                HResult::DispException,
                anyhow::anyhow!("hashing the IC ISO: {}", crate::hresult::chain(e.as_ref())),
            )),
            _ => Err(Failure::msg(
                HResult::DispException,
                "the IC ISO's digest was lost",
            )),
        }
    }
}

pub fn not_found(sel: &Selection) -> Failure {
    let mut lines = vec![format!(
        "no usable Integration Components ISO for {} guest (families: {})",
        sel.guest.with_article(),
        sel.families
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    lines.push("searched:".into());
    lines.extend(sel.searched.iter().map(|s| format!("  {s}")));
    if !sel.candidates.is_empty() {
        lines.push("candidates:".into());
        lines.extend(
            sel.candidates
                .iter()
                .map(|c| format!("  {}: {}", c.named.path.display(), c.reason)),
        );
    }
    Failure::msg(HResult::FileNotFound, lines.join("\n"))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    digest::hex(&Sha256::digest(bytes))
}

/// Identify an in-memory image: the fuzz target's entry point.
pub fn inspect_bytes(bytes: &[u8]) -> Result<Option<Identity>, reader::IsoError> {
    let mut image = reader::Image::open(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        reader::Limits::default(),
    )?;
    identify(&mut image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz corpus seeds are real xorriso layouts of each family (host/fuzz).
    #[test]
    fn every_fuzz_seed_is_identified_as_its_family() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/iso_reader");
        let expect = [
            ("virtio-win", Family::VirtioWin, Some("0.1.266")),
            ("virtualbox", Family::Virtualbox, Some("7.0.12")),
            ("vbox-old", Family::Virtualbox, Some("6.1.50")),
            ("vmware-win", Family::VmwareTools, Some("12.3.9600.0")),
            ("vmware-linux", Family::VmwareTools, Some("10.3.26")),
            ("hyper-v", Family::HyperV, Some("12.3.9600.0")),
            ("vmguest", Family::Vmguest, Some("1.2.0-rc1")),
        ];
        for (seed, family, version) in expect {
            let mut image = vec![0u8; 16 * SECTOR];
            image.extend(std::fs::read(dir.join(seed)).unwrap());
            let id = inspect_bytes(&image)
                .unwrap_or_else(|e| panic!("{seed}: {e}"))
                .unwrap_or_else(|| panic!("{seed}: no family"));
            assert_eq!(id.family, family, "{seed}");
            assert_eq!(
                id.version.map(|v| v.to_string()).as_deref(),
                version,
                "{seed}"
            );
        }
    }
}
