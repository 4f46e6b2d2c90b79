//! The live domain XML: the parts vmguest reads (`disk.rs`: the drives and their media;
//! the agent channel, here) and the `<disk>` element it writes to change media
//! (`write.rs`), with media that a path alone does not describe kept exactly, as the
//! domain held it (`source.rs`).

mod disk;
#[cfg(test)]
mod samples;
mod source;
mod write;

pub(super) use disk::Disk;

use serde::Deserialize;

use super::ffi::Domain;
use super::AGENT_CHANNEL;
use crate::vm::CallError;
use source::raw_disks;

pub(super) fn live_xml(domain: &Domain) -> Result<DomainXml, CallError> {
    parse_domain(&domain.xml_desc(0)?)
}

/// The domain XML, with each disk's `<source>` (and disk-level `<auth>`, `<encryption>`)
/// kept in canonical form.
fn parse_domain(text: &str) -> Result<DomainXml, CallError> {
    let decode = |e: String| CallError::Decode(format!("domain XML: {e}"));
    let mut xml: DomainXml = quick_xml::de::from_str(text).map_err(|e| decode(e.to_string()))?;
    let raw = raw_disks(text).map_err(decode)?;
    if raw.len() != xml.devices.disk.len() {
        return Err(decode(format!(
            "{} disks read, {} disk sources",
            xml.devices.disk.len(),
            raw.len()
        )));
    }
    for (disk, raw) in xml.devices.disk.iter_mut().zip(raw) {
        disk.raw = raw;
    }
    Ok(xml)
}

/// The parts of the live domain XML that vmguest reads
/// (<https://libvirt.org/formatdomain.html#hard-drives-floppy-disks-cdroms>).
#[derive(Deserialize)]
pub(super) struct DomainXml {
    #[serde(default)]
    pub(super) devices: Devices,
}

#[derive(Default, Deserialize)]
pub(super) struct Devices {
    #[serde(default)]
    pub(super) disk: Vec<Disk>,
    #[serde(default)]
    pub(super) channel: Vec<ChannelXml>,
}

#[derive(Deserialize)]
pub(super) struct ChannelXml {
    target: Option<ChannelTarget>,
}

#[derive(Deserialize)]
struct ChannelTarget {
    #[serde(rename = "@name")]
    name: Option<String>,
}

impl ChannelXml {
    pub(super) fn is_agent(&self) -> bool {
        self.target
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .is_some_and(|n| n == AGENT_CHANNEL)
    }
}
