//! What an ISO is, read from its content: the IC family, its version and the evidence.
//!
//! | family | recognised by | version from |
//! |---|---|---|
//! | `vmguest` | `vmguest-ic.toml` at the root | the manifest's `components.version` |
//! | `virtio-win` | volume id `virtio-win-X`, or `virtio-win-guest-tools.exe` | volume id, else the installer's file version |
//! | `virtualbox` | volume id `VBox_GAs_X` / `VBOXADDITIONS_X_REV`, or `VBoxLinuxAdditions.run` | volume id, else `VBoxWindowsAdditions.exe`'s file version |
//! | `vmware-tools` | `VMwareTools-X-BUILD.tar.gz` (linux.iso) or `setup64.exe` with a `VMware` volume id | the tarball's name, else `setup64.exe`'s file version |
//! | `hyper-v` | `support/<arch>/setup.exe` (vmguest.iso) | `setup.exe`'s file version |
//!
//! The file name of the ISO plays no part: where it and the content disagree, the
//! content wins.

use std::io::{Read, Seek};

use super::pe;
use super::reader::{Image, IsoError};
use super::recipe::Recipe;
use super::version::Version;
use crate::iso::manifest::{self, Manifest};
use crate::kinds::Family;

/// An identified IC ISO.
#[derive(Clone, Debug)]
pub struct Identity {
    pub family: Family,
    pub name: String,
    /// `None` when the family's version could not be read; such a candidate is usable
    /// but loses to any versioned one.
    pub version: Option<Version>,
    /// Where the version came from, for the record of the choice.
    pub evidence: String,
    pub recipe: Recipe,
}

/// Manifests and version files are small; installers are read only at their tail.
const MANIFEST_MAX: u32 = 64 * 1024;
const EXE_TAIL: u32 = 1024 * 1024;

/// Identify the family of an open image. `Ok(None)`: ISO 9660, but no IC family.
pub fn identify<R: Read + Seek>(image: &mut Image<R>) -> Result<Option<Identity>, IsoError> {
    let names = image.root_names()?;
    let has = |n: &str| names.iter().any(|x| x.eq_ignore_ascii_case(n));
    let vol = image.volume_id.clone();

    if has(manifest::FILE_NAME) {
        let bytes = image
            .read_path(manifest::FILE_NAME, MANIFEST_MAX)?
            .unwrap_or_default();
        let text = String::from_utf8(bytes)
            .map_err(|_| IsoError::Corrupt(format!("{} is not UTF-8", manifest::FILE_NAME)))?;
        let m = Manifest::parse(&text)?;
        return Ok(Some(Identity {
            family: Family::Vmguest,
            version: Version::parse(&m.components.version),
            evidence: format!("{} version {}", manifest::FILE_NAME, m.components.version),
            name: m.components.name.clone(),
            recipe: Recipe::from_manifest(&m),
        }));
    }
    if let Some(v) = strip_prefix_ci(&vol, "virtio-win-") {
        return Ok(Some(versioned(
            Family::VirtioWin,
            Version::parse(v),
            &vol,
            "volume id",
        )));
    }
    if let Some(v) = strip_prefix_ci(&vol, "VBox_GAs_").or_else(|| {
        strip_prefix_ci(&vol, "VBOXADDITIONS_").map(|r| r.split('_').next().unwrap_or(r))
    }) {
        return Ok(Some(versioned(
            Family::Virtualbox,
            Version::parse(v),
            &vol,
            "volume id",
        )));
    }
    // Volume ids first: they are the families' own labels; marker files second.
    if has("virtio-win-guest-tools.exe") {
        let v = exe_version(image, "virtio-win-guest-tools.exe")?;
        return Ok(Some(versioned(
            Family::VirtioWin,
            v,
            "virtio-win-guest-tools.exe",
            "file version of",
        )));
    }
    if has("VBoxLinuxAdditions.run") || has("VBoxWindowsAdditions.exe") {
        let v = exe_version(image, "VBoxWindowsAdditions.exe")?;
        return Ok(Some(versioned(
            Family::Virtualbox,
            v,
            "VBoxWindowsAdditions.exe",
            "file version of",
        )));
    }
    if let Some(tarball) = names.iter().find_map(|n| vmware_tarball_version(n)) {
        return Ok(Some(versioned(
            Family::VmwareTools,
            Version::parse(&tarball),
            &format!("VMwareTools-{tarball}.tar.gz"),
            "name of",
        )));
    }
    if has("setup64.exe") && vol.to_ascii_lowercase().contains("vmware") {
        let v = exe_version(image, "setup64.exe")?;
        return Ok(Some(versioned(
            Family::VmwareTools,
            v,
            "setup64.exe",
            "file version of",
        )));
    }
    for arch in ["amd64", "x86"] {
        let setup = format!("support/{arch}/setup.exe");
        if image.lookup(&setup)?.is_some_and(|e| !e.is_dir) {
            let v = exe_version(image, &setup)?;
            return Ok(Some(versioned(
                Family::HyperV,
                v,
                &setup,
                "file version of",
            )));
        }
    }
    Ok(None)
}

fn versioned(family: Family, version: Option<Version>, what: &str, how: &str) -> Identity {
    let evidence = match &version {
        Some(_) if how == "volume id" => format!("volume id {what:?}"),
        Some(v) => format!("{how} {what} ({v})"),
        None => format!("{how} {what}: no version found"),
    };
    Identity {
        family,
        name: family.product().to_owned(),
        version,
        evidence,
        recipe: Recipe::for_family(family),
    }
}

fn exe_version<R: Read + Seek>(
    image: &mut Image<R>,
    path: &str,
) -> Result<Option<Version>, IsoError> {
    let Some(entry) = image.lookup(path)? else {
        return Ok(None);
    };
    let tail = image.read_tail(&entry, EXE_TAIL)?;
    Ok(pe::file_version(&tail).and_then(|v| Version::parse(&v)))
}

/// `VMwareTools-10.3.26-22085142.tar.gz` → `10.3.26`.
fn vmware_tarball_version(name: &str) -> Option<String> {
    let rest = strip_prefix_ci(name, "VMwareTools-")?;
    let rest = rest.strip_suffix(".tar.gz").or(rest.strip_suffix(".tgz"))?;
    let version = rest.rsplit_once('-').map_or(rest, |(v, _build)| v);
    Version::parse(version).map(|_| version.to_owned())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_round_trip() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
        assert_eq!(Family::parse("VirtualBox"), Some(Family::Virtualbox));
        assert_eq!(Family::parse("xen"), None);
    }

    #[test]
    fn vmware_tarball_names() {
        assert_eq!(
            vmware_tarball_version("VMwareTools-10.3.26-22085142.tar.gz").as_deref(),
            Some("10.3.26")
        );
        assert_eq!(vmware_tarball_version("VMwareTools-.tar.gz"), None);
        assert_eq!(vmware_tarball_version("open-vm-tools.tar.gz"), None);
    }

    #[test]
    fn prefixes_are_case_insensitive_and_never_panic_on_multibyte() {
        assert_eq!(
            strip_prefix_ci("VIRTIO-WIN-0.1.266", "virtio-win-"),
            Some("0.1.266")
        );
        assert_eq!(strip_prefix_ci("virtio-win-", "virtio-win-"), None);
        assert_eq!(strip_prefix_ci("véééééééééé", "virtio-win-"), None);
    }
}
