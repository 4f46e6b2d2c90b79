//! The manifest of this project's own IC format: `vmguest-ic.toml` at the ISO's root.
//!
//! ```toml
//! [components]
//! family = "vmguest"
//! name = "Example tools"
//! version = "1.2.0"
//!
//! [install.linux]
//! # Run by /bin/sh with the media's mount point as working directory and in
//! # $VMGUEST_IC_MEDIA. Exit 0 means installed.
//! command = "sh ./install.sh"
//!
//! [verify.linux]
//! # Optional. Run by /bin/sh in the guest before and after the install; prints the
//! # installed version on its first line, or fails when nothing is installed.
//! command = "cat /opt/example/VERSION"
//! ```

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "vmguest-ic.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub components: Components,
    #[serde(default)]
    pub install: Install,
    #[serde(default)]
    pub verify: Verify,
}

/// Commands that print the installed version, per guest OS.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub linux: Option<Installer>,
    pub windows: Option<Installer>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
/// Which components an IC medium holds.
pub struct Components {
    /// The IC family (`virtio-win`, `vmware-tools`, ...).
    pub family: String,
    /// Their name, as people know them.
    pub name: String,
    /// Their version.
    pub version: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub linux: Option<Installer>,
    pub windows: Option<Installer>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installer {
    pub command: String,
}

/// Why a manifest was refused, with where, so its author can fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// TOML syntax, or a field that is missing, unknown or of the wrong type.
    #[error("{FILE_NAME}, line {line}{}: {message}", table.as_deref().map(|t| format!(", in [{t}]")).unwrap_or_default())]
    Schema {
        line: usize,
        table: Option<String>,
        message: String,
    },
    #[error("{FILE_NAME}: [components] version is empty")]
    EmptyVersion,
}

impl ManifestError {
    fn schema(text: &str, e: &toml::de::Error) -> ManifestError {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        // The nearest table header above the error names the section.
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('[') && l.ends_with(']'))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
        ManifestError::Schema {
            line: before.matches('\n').count() + 1,
            table,
            message: e.message().trim().to_owned(),
        }
    }
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::schema(text, &e))?;
        if m.components.version.trim().is_empty() {
            return Err(ManifestError::EmptyVersion);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let m = Manifest::parse(
            "[components]\nfamily = \"vmguest\"\nname = \"x\"\nversion = \"1.2.0\"\n\
             [install.linux]\ncommand = \"sh ./install.sh\"\n",
        )
        .unwrap();
        assert_eq!(m.components.version, "1.2.0");
        assert_eq!(m.install.linux.unwrap().command, "sh ./install.sh");
        assert!(m.install.windows.is_none());
    }

    #[test]
    fn schema_errors_name_the_line_table_and_field() {
        let e = Manifest::parse("[components]\nfamily=\"a\"\nname=\"b\"\nversion=\"1\"\nbogus=1\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("vmguest-ic.toml, line 5, in [components]: unknown field `bogus`"),
            "{text}"
        );
        let e =
            Manifest::parse("[components]\nfamily=\"a\"\nname=\"b\"\nversion=\" \"\n").unwrap_err();
        assert_eq!(e, ManifestError::EmptyVersion);
        let e = Manifest::parse("[components]\nfamily=\"a\"\nname=1\nversion=\"1\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("line 3, in [components]: invalid type: integer"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_keys_and_missing_versions() {
        assert!(Manifest::parse("[components]\nfamily=\"a\"\nname=\"b\"\n").is_err());
        assert!(Manifest::parse(
            "[components]\nfamily=\"a\"\nname=\"b\"\nversion=\"1\"\nbogus=1\n"
        )
        .is_err());
    }
}
