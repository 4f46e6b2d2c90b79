//! Where IC ISOs are looked for, in order of precedence.
//!
//! 1. `-Path FILE`: a pin; nothing else is considered.
//! 2. `default_iso` in the user's, else the system's config file: also a pin.
//! 3. `ic_path` in the config file: files, and directories searched for `*.iso`.
//! 4. `$VMGUEST_IC_PATH`: colon-separated files and directories, like `$PATH`.
//! 5. The real families' well-known install locations (unless `search_well_known =
//!    false`), listed in [`WELL_KNOWN`] with where each comes from.
//!
//! Sources 3 to 5 are pooled and the newest fitting version wins (`select.rs`); the order
//! breaks ties, and the first source to name a file keeps it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::settings::{Settings, IC_PATH_ENV};

/// Well-known locations: (directory, what puts ISOs there).
pub const WELL_KNOWN: &[(&str, &str)] = &[
    // Our own packages and the user's store.
    (
        "/usr/local/share/vmguest/ic",
        "vmguest: locally installed IC ISOs",
    ),
    ("/usr/share/vmguest/ic", "vmguest: packaged IC ISOs"),
    // virtio-win RPM (Fedora/RHEL, fedorapeople.org virtio-win repo): virtio-win.iso is
    // a symlink to virtio-win-X.iso in /usr/share/virtio-win/.
    ("/usr/share/virtio-win", "virtio-win package"),
    // Debian/Ubuntu `virtualbox-guest-additions-iso` installs
    // /usr/share/virtualbox/VBoxGuestAdditions.iso.
    (
        "/usr/share/virtualbox",
        "Debian/Ubuntu virtualbox-guest-additions-iso",
    ),
    // Oracle's VirtualBox .deb/.rpm packages ship the ISO in their additions directory.
    (
        "/usr/lib/virtualbox/additions",
        "Oracle VirtualBox packages",
    ),
    (
        "/opt/VirtualBox/additions",
        "Oracle VirtualBox .run installer",
    ),
    // VMware Workstation/Player on Linux keep linux.iso, windows.iso in isoimages.
    ("/usr/lib/vmware/isoimages", "VMware Workstation/Player"),
    // Proxmox VE's default `local` storage keeps ISOs under template/iso.
    ("/var/lib/vz/template/iso", "Proxmox VE local ISO store"),
    // libvirt's default storage pool.
    ("/var/lib/libvirt/images", "libvirt default pool"),
];

/// A file to inspect, with the source that named it.
#[derive(Clone, Debug)]
pub struct Named {
    pub path: PathBuf,
    pub source: String,
    /// Position of the source in the precedence order: lower wins ties.
    pub rank: usize,
    pub pinned: bool,
    /// A directory the file must stay inside, however its path is later resolved: the
    /// grant of the plugin that provided it.
    pub within: Option<PathBuf>,
}

/// Everything gathered: files to inspect, and every place searched with what it gave.
#[derive(Clone, Debug, Default)]
pub struct Gathered {
    pub files: Vec<Named>,
    pub searched: Vec<String>,
}

impl Gathered {
    fn add_file(&mut self, path: PathBuf, source: &str, rank: usize, pinned: bool) {
        self.files.push(Named {
            path,
            source: source.to_owned(),
            rank,
            pinned,
            within: None,
        });
    }

    /// A path that is a file is a candidate; a directory is searched for `*.iso`. A
    /// directory that fails the ownership rule still lists its files, so that each is
    /// shown refused with the reason (`select::inspect` applies the rule to every file).
    fn add_path(&mut self, path: &Path, source: &str, rank: usize) {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => match iso_files_in(path) {
                Ok(found) => {
                    let trust = match crate::trust::check(path) {
                        Ok(()) => String::new(),
                        Err(e) => {
                            let why = crate::hresult::chain(&e);
                            tracing::warn!(
                                "IC directory {} ({source}) is not trusted, its ISOs are \
                                 refused: {why}",
                                path.display()
                            );
                            format!("; not trusted, every file refused: {why}")
                        }
                    };
                    self.searched.push(format!(
                        "{} ({source}): {} *.iso file(s){trust}",
                        path.display(),
                        found.len()
                    ));
                    for f in found {
                        self.add_file(f, source, rank, false);
                    }
                }
                Err(e) => self
                    .searched
                    .push(format!("{} ({source}): cannot list: {e}", path.display())),
            },
            Ok(_) => {
                self.searched
                    .push(format!("{} ({source}): file", path.display()));
                self.add_file(path.to_owned(), source, rank, false);
            }
            Err(e) => self
                .searched
                .push(format!("{} ({source}): {e}", path.display())),
        }
    }
}

fn iso_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("iso")))
        .collect();
    found.sort();
    Ok(found)
}

/// Gather the candidate files from every source, in precedence order.
pub fn gather(explicit: Option<&Path>, settings: &Settings) -> Gathered {
    let config = &settings.config;
    let mut g = Gathered::default();
    g.searched.extend(config.problems.iter().cloned());
    if let Some(p) = explicit {
        g.searched.push(format!("{} (-Path)", p.display()));
        g.add_file(p.to_owned(), "-Path", 0, true);
        return g;
    }
    if let Some((p, cfg)) = config.first(|c| c.default_iso.clone()) {
        let source = format!("default_iso in {}", cfg.display());
        g.searched.push(format!("{} ({source})", p.display()));
        g.add_file(p, &source, 1, true);
        return g;
    }
    if config.files.is_empty() {
        g.searched
            .push("no config file (user or /etc/vmguest/config.toml)".into());
    }
    if let Some((paths, cfg)) = config.first(|c| c.ic_path.clone()) {
        let source = format!("ic_path in {}", cfg.display());
        for p in paths {
            g.add_path(&p, &source, 2);
        }
    }
    match &settings.ic_path {
        Some(paths) => {
            for p in paths {
                g.add_path(p, IC_PATH_ENV, 3);
            }
        }
        None => g.searched.push(format!("{IC_PATH_ENV}: not set")),
    }
    if config.search_well_known() {
        let user_store = settings.user_store.as_deref();
        for (dir, what) in user_store
            .map(|d| (d, "the user's IC store"))
            .into_iter()
            .chain(WELL_KNOWN.iter().map(|(d, w)| (Path::new(*d), *w)))
        {
            g.add_path(dir, &format!("well-known: {what}"), 4);
        }
    } else {
        g.searched
            .push("well-known locations: search_well_known = false".into());
    }
    dedupe(&mut g);
    g
}

/// The same file reached twice (a symlink, or two sources) is kept once, where first met.
fn dedupe(g: &mut Gathered) {
    let mut seen = HashSet::new();
    g.files.retain(|n| {
        let key = std::fs::canonicalize(&n.path).unwrap_or_else(|_| n.path.clone());
        seen.insert(key)
    });
}
