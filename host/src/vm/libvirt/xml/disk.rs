//! A `<disk>` of the live domain XML: the drive vmguest sees in it, and its media.

use serde::Deserialize;

use super::source::RawSource;
use crate::vm::{DvdDrive, Media};

#[derive(Clone, Debug, Deserialize)]
pub(in crate::vm::libvirt) struct Disk {
    #[serde(rename = "@type")]
    pub(super) kind: Option<String>,
    #[serde(rename = "@device")]
    device: Option<String>,
    pub(super) driver: Option<DriverXml>,
    pub(in crate::vm::libvirt) target: Option<TargetXml>,
    pub(super) readonly: Option<serde::de::IgnoredAny>,
    /// Filled in by [`super::parse_domain`].
    #[serde(skip)]
    pub(super) raw: RawSource,
}

#[derive(Clone, Debug, Deserialize)]
pub(super) struct DriverXml {
    #[serde(rename = "@type")]
    pub(super) format: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(in crate::vm::libvirt) struct TargetXml {
    #[serde(rename = "@dev")]
    pub(in crate::vm::libvirt) dev: String,
    #[serde(rename = "@bus")]
    pub(super) bus: Option<String>,
    #[serde(rename = "@tray")]
    tray: Option<String>,
}

impl Disk {
    pub(in crate::vm::libvirt) fn is_cdrom(&self) -> bool {
        self.device.as_deref() == Some("cdrom")
    }

    pub(in crate::vm::libvirt) fn as_drive(&self) -> Option<DvdDrive> {
        if !self.is_cdrom() {
            return None;
        }
        let target = self.target.as_ref()?;
        Some(DvdDrive {
            id: target.dev.clone(),
            tray_open: target.tray.as_deref() == Some("open"),
            // libvirt does not show the guest's tray lock; a refused eject does.
            locked: false,
            media: self.media(),
        })
    }

    /// The media in this drive: a plain file or block device by its path, anything else
    /// also by its exact description.
    fn media(&self) -> Option<Media> {
        let raw = &self.raw;
        if raw.is_empty() {
            return None;
        }
        let kind = self.kind.as_deref().unwrap_or("file");
        let plain = match kind {
            "file" => raw.only("file").filter(|f| !f.starts_with("/dev/")),
            "block" => raw.only("dev").filter(|d| d.starts_with("/dev/")),
            _ => None,
        };
        let file = match plain {
            Some(path) => path.to_owned(),
            None => match (
                raw.attr("file").or(raw.attr("dev")),
                raw.attr("pool"),
                raw.attr("volume"),
            ) {
                (Some(path), _, _) => path.to_owned(),
                (None, Some(pool), Some(volume)) => format!("{pool}/{volume}"),
                _ => match (raw.attr("protocol"), raw.attr("name")) {
                    (Some(protocol), Some(name)) => format!("{protocol}:{name}"),
                    _ => format!("a {kind} source"),
                },
            },
        };
        Some(Media {
            file,
            format: self
                .driver
                .as_ref()
                .and_then(|d| d.format.clone())
                .unwrap_or_else(|| "raw".into()),
            read_only: self.readonly.is_some(),
            exact: plain.is_none().then(|| self.exact()).flatten(),
        })
    }

    /// The disk's `type` and media elements, canonical; `None` without media.
    pub(in crate::vm::libvirt) fn exact(&self) -> Option<String> {
        if self.raw.is_empty() {
            return None;
        }
        let kind = quick_xml::escape::escape(self.kind.as_deref().unwrap_or("file")).into_owned();
        Some(format!(
            "<disk type=\"{kind}\">{}</disk>",
            self.raw.elements.concat()
        ))
    }

    /// Whether the media in this drive can be written back as it is: a disk `type` that
    /// holds removable media and that a live media change takes.
    pub(in crate::vm::libvirt) fn restorable(&self) -> bool {
        self.raw.is_empty()
            || matches!(
                self.kind.as_deref().unwrap_or("file"),
                "file" | "block" | "volume" | "network"
            )
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::LIVE;
    use super::super::{parse_domain, ChannelXml};
    use super::*;

    #[test]
    fn drives_from_live_xml() {
        let xml = parse_domain(LIVE).unwrap();
        let drives: Vec<DvdDrive> = xml.devices.disk.iter().filter_map(Disk::as_drive).collect();
        assert_eq!(drives.len(), 2, "{drives:?}");
        assert_eq!(drives[0].id, "hdc");
        let media = drives[0].media.as_ref().unwrap();
        assert_eq!(media.file, "/srv/user & co.iso");
        assert!(media.read_only);
        assert_eq!(drives[1].id, "sda");
        assert!(drives[1].tray_open && drives[1].is_empty());
        assert!(xml.devices.channel.iter().any(ChannelXml::is_agent));
    }
}
