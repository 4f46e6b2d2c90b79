//! Inspect every gathered file and choose one, recording why for each.
//!
//! A pin (`-Path`, `default_iso`) is used if it is a readable IC ISO of any family.
//! Otherwise the guest's families are tried in preference order; within the first family
//! that has a usable candidate the highest version wins. Ties go to the higher-precedence
//! source, then to the lexically smaller path, so the choice is deterministic. A bad
//! file is refused with its reason and never stops the search. Every file, pins
//! included, is opened through `open.rs`: one that fails the ownership rule
//! (`trust.rs`) or is not a regular file is refused unread.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::family::{identify, Identity};
use super::open::{open, OpenError};
use super::reader::{Image, IsoError, Limits};
use super::sources::{Gathered, Named};
use crate::hresult::chain;
use crate::kinds::{Family, GuestKind};

/// Why a candidate cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unusable {
    /// A readable image, but of no family vmguest knows.
    #[error("ISO 9660 (volume id {volume_id:?}) but no known IC family")]
    NoFamily { volume_id: String },
    /// Never read: not trusted, not a regular file, or not openable.
    #[error(transparent)]
    Open(Arc<OpenError>),
    /// Not readable as an image; the cause chain says why.
    #[error(transparent)]
    Image(Arc<IsoError>),
    /// Inspection was skipped.
    #[error("not inspected")]
    NotInspected,
}

impl Unusable {
    /// The reason with every cause, for records and messages.
    pub fn reason(&self) -> String {
        chain(self)
    }
}

/// One inspected file.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub named: Named,
    pub volume_id: Option<String>,
    pub pvd: Vec<u8>,
    pub identity: Result<Identity, Unusable>,
    pub bytes_read: u64,
    pub selected: bool,
    pub reason: String,
    /// Usable and fit for the guest, but another candidate was chosen over it: its reason
    /// names the winner, so a new winner (a plugin's) must rewrite it.
    pub lost_to_choice: bool,
}

impl Candidate {
    /// Usable, and its family has an install for this kind of guest.
    pub fn installs_on(&self, guest: GuestKind) -> bool {
        self.identity.as_ref().is_ok_and(|id| fits(id, guest))
    }

    pub fn family(&self) -> Option<Family> {
        self.identity.as_ref().ok().map(|i| i.family)
    }

    pub fn version(&self) -> Option<String> {
        self.identity
            .as_ref()
            .ok()
            .and_then(|i| i.version.as_ref().map(|v| v.to_string()))
    }
}

/// A candidate as `Get-IntegrationComponentsIso` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateView {
    pub path: String,
    pub family: Option<Family>,
    pub version: Option<String>,
    pub volume_id: Option<String>,
    pub source: String,
    pub selected: bool,
    pub reason: String,
    pub bytes_read: u64,
    /// SHA-256 of the selected candidate, where the caller asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Candidate {
    pub fn view(&self) -> CandidateView {
        CandidateView {
            path: self.named.path.display().to_string(),
            family: self.family(),
            version: self.version(),
            volume_id: self.volume_id.clone(),
            source: self.named.source.clone(),
            selected: self.selected,
            reason: self.reason.clone(),
            bytes_read: self.bytes_read,
            sha256: None,
        }
    }
}

/// Read one file as far as identification needs.
pub fn inspect(named: Named) -> Candidate {
    let mut c = Candidate {
        named,
        volume_id: None,
        pvd: Vec::new(),
        identity: Err(Unusable::NotInspected),
        bytes_read: 0,
        selected: false,
        reason: String::new(),
        lost_to_choice: false,
    };
    let file = match open(&c.named.path) {
        Ok(f) => f,
        Err(e) => {
            c.identity = Err(Unusable::Open(Arc::new(e)));
            return refused(c);
        }
    };
    let result = (|| -> Result<Option<Identity>, IsoError> {
        let len = file.metadata()?.len();
        let mut image = Image::open(file, len, Limits::default());
        let outcome = match &mut image {
            Ok(img) => {
                c.volume_id = Some(img.volume_id.clone());
                c.pvd = img.pvd.clone();
                identify(img)
            }
            Err(_) => Ok(None),
        };
        if let Ok(img) = &image {
            c.bytes_read = img.bytes_read;
        }
        image?;
        outcome
    })();
    c.identity = match result {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(Unusable::NoFamily {
            volume_id: c.volume_id.clone().unwrap_or_default(),
        }),
        Err(e) => Err(Unusable::Image(Arc::new(e))),
    };
    refused(c)
}

/// Record and log why an uninspectable candidate is refused.
fn refused(mut c: Candidate) -> Candidate {
    if let Err(why) = &c.identity {
        let why = why.reason();
        tracing::warn!(path = %c.named.path.display(), "skipping IC candidate: {why}");
        c.reason = format!("refused: {why}");
    }
    c
}

/// The inspected candidates and the choice, if any.
#[derive(Clone, Debug)]
pub struct Selection {
    pub guest: GuestKind,
    pub families: Vec<Family>,
    pub candidates: Vec<Candidate>,
    pub chosen: Option<usize>,
    pub searched: Vec<String>,
}

impl Selection {
    pub fn chosen(&self) -> Option<&Candidate> {
        self.chosen.map(|i| &self.candidates[i])
    }
}

/// Does a candidate's installer fit the guest? Unknown guests take any family on the list.
fn fits(id: &Identity, guest: GuestKind) -> bool {
    match guest {
        GuestKind::Linux => id.recipe.supports(false),
        GuestKind::Windows => id.recipe.supports(true),
        GuestKind::Unknown => true,
    }
}

pub fn choose(gathered: Gathered, guest: GuestKind, families: Vec<Family>) -> Selection {
    let candidates: Vec<Candidate> = gathered.files.into_iter().map(inspect).collect();
    let mut sel = Selection {
        guest,
        families,
        candidates,
        chosen: None,
        searched: gathered.searched,
    };
    let pinned = sel.candidates.iter().position(|c| c.named.pinned);
    if let Some(i) = pinned {
        let c = &mut sel.candidates[i];
        // The user chose this file: a readable image of no known family still goes in,
        // as the original API mounts whatever it is given, for the guest's autorun.
        if let Err(Unusable::NoFamily { volume_id }) = &c.identity {
            c.identity = Ok(Identity {
                family: Family::Other,
                name: if volume_id.is_empty() {
                    "unnamed volume".into()
                } else {
                    volume_id.clone()
                },
                version: None,
                evidence: format!("volume id {volume_id:?}, no known IC family"),
                recipe: super::Recipe::default(),
            });
        }
        if c.identity.is_ok() {
            c.reason = match c.family() {
                Some(Family::Other) => format!(
                    "pinned by {}: ISO 9660 of no known IC family, inserted as it is",
                    c.named.source
                ),
                _ => format!("pinned by {}", c.named.source),
            };
            sel.chosen = Some(i);
        }
        mark(&mut sel);
        return sel;
    }
    for family in sel.families.clone() {
        let best = sel
            .candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.identity.as_ref().ok().map(|id| (i, c, id)))
            .filter(|(_, _, id)| id.family == family && fits(id, guest))
            .max_by(|(_, a, ia), (_, b, ib)| {
                let key = |id: &Identity| id.version.clone();
                key(ia)
                    .cmp(&key(ib))
                    .then(b.named.rank.cmp(&a.named.rank))
                    .then(b.named.path.cmp(&a.named.path))
            })
            .map(|(i, _, _)| i);
        if let Some(i) = best {
            let rivals = sel
                .candidates
                .iter()
                .filter(|c| c.family() == Some(family))
                .count();
            let c = &mut sel.candidates[i];
            c.reason = format!(
                "newest {family} ({}) of {rivals} {family} candidate(s); {family} is {} \
                 for {} guests; {}",
                c.version().unwrap_or_else(|| "version unknown".into()),
                if sel.families.first() == Some(&family) {
                    "the first choice".to_owned()
                } else {
                    format!(
                        "the first family with a candidate ({:?})",
                        names(&sel.families)
                    )
                },
                guest.as_str(),
                c.identity
                    .as_ref()
                    .map(|i| i.evidence.as_str())
                    .unwrap_or("")
            );
            sel.chosen = Some(i);
            break;
        }
    }
    mark(&mut sel);
    sel
}

fn names(families: &[Family]) -> Vec<&'static str> {
    families.iter().map(|f| f.as_str()).collect()
}

/// Give every candidate that was not chosen its reason.
fn mark(sel: &mut Selection) {
    let chosen = sel.chosen;
    let winner = chosen.map(|i| {
        let c = &sel.candidates[i];
        (c.family(), c.version(), c.named.path.clone())
    });
    let families = sel.families.clone();
    let guest = sel.guest;
    for (i, c) in sel.candidates.iter_mut().enumerate() {
        c.selected = Some(i) == chosen;
        let Ok(id) = &c.identity else {
            continue;
        };
        if c.selected {
            continue;
        }
        c.lost_to_choice = families.contains(&id.family) && fits(id, guest) && winner.is_some();
        c.reason = match &winner {
            _ if !families.contains(&id.family) => format!(
                "family {} is not used for {} guests (families: {:?})",
                id.family,
                guest.as_str(),
                names(&families)
            ),
            _ if !fits(id, guest) => {
                format!("has no unattended installer for {} guests", guest.as_str())
            }
            Some((Some(f), v, path)) if *f == id.family => format!(
                "not the newest: {} is chosen ({})",
                v.as_deref().unwrap_or("version unknown"),
                path.display()
            ),
            Some((Some(f), _, _)) => format!("{f} is preferred over {}", id.family),
            _ => "not chosen".into(),
        };
    }
}

/// A plugin chose candidate `i` over the built-in choice: it alone is selected, the
/// built-in winner says it was overridden, and every candidate that had lost to the
/// built-in winner now names the plugin's choice instead.
pub fn choose_by(sel: &mut Selection, i: usize, plugin: &str) {
    let previous = sel.chosen.filter(|&p| p != i);
    sel.chosen = Some(i);
    let winner = &sel.candidates[i];
    let won = format!(
        "not chosen: plugin {plugin} chose {} ({})",
        winner.version().unwrap_or_else(|| "version unknown".into()),
        winner.named.path.display()
    );
    for (j, c) in sel.candidates.iter_mut().enumerate() {
        c.selected = j == i;
        if j == i {
            c.reason = format!("chosen by plugin {plugin}");
            c.lost_to_choice = false;
        } else if Some(j) == previous {
            c.reason = format!("{} (overridden by plugin {plugin})", c.reason);
            c.lost_to_choice = true;
        } else if c.lost_to_choice {
            c.reason = won.clone();
        }
    }
}

/// The path the guest will see, canonical so that QEMU and the report agree.
pub fn canonical(c: &Candidate) -> PathBuf {
    std::fs::canonicalize(&c.named.path).unwrap_or_else(|_| c.named.path.clone())
}
