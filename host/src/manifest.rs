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
//! ```

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "vmguest-ic.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub components: Components,
    #[serde(default)]
    pub install: Install,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Components {
    pub family: String,
    pub name: String,
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

impl Manifest {
    pub fn parse(text: &str) -> anyhow::Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        anyhow::ensure!(!m.components.version.trim().is_empty(), "empty version");
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
    fn rejects_unknown_keys_and_missing_versions() {
        assert!(Manifest::parse("[components]\nfamily=\"a\"\nname=\"b\"\n").is_err());
        assert!(Manifest::parse(
            "[components]\nfamily=\"a\"\nname=\"b\"\nversion=\"1\"\nbogus=1\n"
        )
        .is_err());
    }
}
