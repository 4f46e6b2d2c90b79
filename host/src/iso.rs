//! Locating the Integration Components ISO.
//!
//! This is the minimal policy: an explicit `-Path`, else the `default_iso` of the config
//! file. Each candidate must be a readable ISO 9660 image; otherwise the outcome is
//! HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND) listing every place searched and why it was
//! refused.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hresult::{Failure, HResult, Outcome};

/// ISO 9660 volume descriptors start at sector 16 of 2048 bytes.
pub const PVD_OFFSET: u64 = 16 * 2048;
pub const SECTOR: usize = 2048;

/// A usable IC ISO.
#[derive(Clone, Debug, Serialize)]
pub struct IcIso {
    pub path: PathBuf,
    pub volume_id: String,
    /// Where it came from: "-Path" or the config file.
    pub source: String,
    /// The primary volume descriptor, byte for byte: identifies the media inside the guest.
    #[serde(skip)]
    pub pvd: Vec<u8>,
}

/// Read and check the primary volume descriptor.
pub fn read_pvd(path: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    anyhow::ensure!(meta.is_file(), "not a regular file");
    anyhow::ensure!(
        meta.len() >= PVD_OFFSET + SECTOR as u64,
        "too small for ISO 9660 ({} bytes)",
        meta.len()
    );
    f.seek(SeekFrom::Start(PVD_OFFSET))?;
    let mut pvd = vec![0u8; SECTOR];
    f.read_exact(&mut pvd)?;
    anyhow::ensure!(
        pvd[0] == 1 && &pvd[1..6] == b"CD001",
        "not an ISO 9660 image (no primary volume descriptor at sector 16)"
    );
    let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned();
    Ok((pvd, volume_id))
}

/// `$XDG_CONFIG_HOME/vmguest/config.toml` (or `~/.config/...`).
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    pub default_iso: Option<PathBuf>,
}

pub fn config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("vmguest").join("config.toml"))
}

/// Find the IC ISO: `explicit` first, then the configured default.
pub fn locate(explicit: Option<&Path>) -> Outcome<IcIso> {
    let mut searched: Vec<String> = Vec::new();
    let mut candidates: Vec<(PathBuf, String)> = Vec::new();
    if let Some(p) = explicit {
        candidates.push((p.to_owned(), "-Path".into()));
    } else if let Some(cfg) = config_path() {
        match std::fs::read_to_string(&cfg) {
            Ok(text) => match toml::from_str::<Config>(&text) {
                Ok(Config {
                    default_iso: Some(p),
                }) => candidates.push((p, format!("default_iso in {}", cfg.display()))),
                Ok(_) => searched.push(format!("{}: no default_iso set", cfg.display())),
                Err(e) => searched.push(format!("{}: invalid config: {e}", cfg.display())),
            },
            Err(e) => searched.push(format!("{}: {e}", cfg.display())),
        }
    }
    for (path, source) in candidates {
        match read_pvd(&path) {
            Ok((pvd, volume_id)) => {
                return Ok(IcIso {
                    path: std::fs::canonicalize(&path).unwrap_or(path),
                    volume_id,
                    source,
                    pvd,
                })
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "skipping IC candidate: {e:#}");
                searched.push(format!("{} ({source}): {e:#}", path.display()));
            }
        }
    }
    Err(Failure::msg(
        HResult::FileNotFound,
        format!(
            "no usable Integration Components ISO; searched: {}",
            if searched.is_empty() {
                "nothing (no -Path and no config file)".to_owned()
            } else {
                searched.join("; ")
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_iso_is_refused_with_its_reason() {
        let dir = std::env::temp_dir().join(format!("vmguest-iso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bogus = dir.join("bogus.iso");
        std::fs::write(&bogus, vec![0u8; 40_000]).unwrap();
        let err = locate(Some(&bogus)).unwrap_err();
        assert_eq!(err.hresult, HResult::FileNotFound);
        assert!(format!("{:#}", err.error).contains("not an ISO 9660 image"));
        let missing = dir.join("missing.iso");
        let err = locate(Some(&missing)).unwrap_err();
        assert!(format!("{:#}", err.error).contains("missing.iso"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
