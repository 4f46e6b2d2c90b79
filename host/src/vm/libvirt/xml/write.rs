//! The `<disk>` element vmguest writes to change a drive's media: a path as a file or
//! block source, or media described exactly written back verbatim.

use serde::Serialize;

use super::disk::{Disk, TargetXml};
use crate::vm::{CallError, Media};

impl Disk {
    /// This drive's `<disk>` element holding `media`, or empty.
    pub(in crate::vm::libvirt) fn with_media(
        &self,
        media: Option<&Media>,
    ) -> Result<String, CallError> {
        let target = self
            .target
            .as_ref()
            .ok_or_else(|| CallError::Decode("cdrom without a target".into()))?;
        if let Some(exact) = media.and_then(|m| m.exact.as_deref()) {
            return with_exact(target, media, exact);
        }
        // A block device goes back as one (a host's /dev/sr0 passed through).
        let block = media.is_some_and(|m| m.file.starts_with("/dev/"));
        let source = media.map(|m| SourceOut {
            file: (!block).then(|| m.file.clone()),
            dev: block.then(|| m.file.clone()),
        });
        let kind = if block { "block" } else { "file" };
        DiskOut::cdrom(kind, target, media, source).to_xml()
    }
}

/// The `<disk>` element for media described exactly: its `type` and elements as they
/// were, with this drive's target.
fn with_exact(target: &TargetXml, media: Option<&Media>, exact: &str) -> Result<String, CallError> {
    let bad = || CallError::Decode(format!("not a disk description vmguest wrote: {exact}"));
    let inner = exact
        .strip_prefix("<disk type=\"")
        .and_then(|s| s.strip_suffix("</disk>"))
        .ok_or_else(bad)?;
    let (kind, elements) = inner.split_once("\">").ok_or_else(bad)?;
    let xml = DiskOut::cdrom("file", target, media, None).to_xml()?;
    // The type (escaped when it was written into `exact`), then the elements after the
    // driver, where a source goes.
    let xml = xml.replacen("<disk type=\"file\"", &format!("<disk type=\"{kind}\""), 1);
    let at = xml.find("<target ").ok_or_else(bad)?;
    Ok(format!("{}{elements}{}", &xml[..at], &xml[at..]))
}

#[derive(Serialize)]
struct DiskOut {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@device")]
    device: &'static str,
    driver: DriverOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceOut>,
    target: TargetOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    readonly: Option<()>,
}

impl DiskOut {
    /// A cdrom `<disk>` of type `kind` on `target`, with `media`'s format and `source`;
    /// read-only unless the media says otherwise.
    fn cdrom(
        kind: &'static str,
        target: &TargetXml,
        media: Option<&Media>,
        source: Option<SourceOut>,
    ) -> DiskOut {
        DiskOut {
            kind,
            device: "cdrom",
            driver: DriverOut {
                name: "qemu",
                format: media.map_or("raw", |m| m.format.as_str()).to_owned(),
            },
            source,
            target: TargetOut {
                dev: target.dev.clone(),
                bus: target.bus.clone(),
            },
            readonly: media.is_none_or(|m| m.read_only).then_some(()),
        }
    }

    fn to_xml(&self) -> Result<String, CallError> {
        quick_xml::se::to_string_with_root("disk", self)
            .map_err(|e| CallError::Decode(format!("writing disk XML: {e}")))
    }
}

#[derive(Serialize)]
struct DriverOut {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@type")]
    format: String,
}

#[derive(Serialize)]
struct SourceOut {
    #[serde(rename = "@file", skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(rename = "@dev", skip_serializing_if = "Option::is_none")]
    dev: Option<String>,
}

#[derive(Serialize)]
struct TargetOut {
    #[serde(rename = "@dev")]
    dev: String,
    #[serde(rename = "@bus", skip_serializing_if = "Option::is_none")]
    bus: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::super::parse_domain;
    use super::super::samples::LIVE;
    use super::*;

    #[test]
    fn disk_element_for_change_media() {
        let xml = parse_domain(LIVE).unwrap();
        let disk = &xml.devices.disk[0];
        let media = Media::iso("/srv/ic <1>.iso");
        let insert = disk.with_media(Some(&media)).unwrap();
        assert_eq!(
            insert,
            "<disk type=\"file\" device=\"cdrom\"><driver name=\"qemu\" type=\"raw\"/>\
             <source file=\"/srv/ic &lt;1&gt;.iso\"/><target dev=\"hdc\" bus=\"ide\"/><readonly/></disk>"
        );
        let eject = disk.with_media(None).unwrap();
        assert!(!eject.contains("<source"), "{eject}");
        let block = Media {
            file: "/dev/sr0".into(),
            ..media
        };
        assert!(disk
            .with_media(Some(&block))
            .unwrap()
            .contains("<source dev=\"/dev/sr0\"/>"));
    }
}
