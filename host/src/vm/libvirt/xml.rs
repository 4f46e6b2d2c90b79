//! The live domain XML: the parts vmguest reads (drives, the agent channel) and the
//! `<disk>` element it writes to change media, with media that a path alone does not
//! describe kept exactly.

use serde::{Deserialize, Serialize};

use super::ffi::Domain;
use super::AGENT_CHANNEL;
use crate::vm::{CallError, DvdDrive, Media};

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

/// What a disk's media is, beyond what serde reads: its `<source>` and the disk-level
/// `<auth>` and `<encryption>` elements, canonical, and the source's attributes.
#[derive(Clone, Debug, Default)]
struct RawSource {
    /// `<source>`'s attributes but `index`, unescaped, in document order.
    attrs: Vec<(String, String)>,
    /// Whether `<source>` has children.
    children: bool,
    /// The canonical `<source>`, then `<auth>` and `<encryption>` where present.
    elements: Vec<String>,
    /// Whether a `<source>` element is present.
    present: bool,
}

/// Each `<domain><devices><disk>`'s media elements, in document order.
fn raw_disks(text: &str) -> Result<Vec<RawSource>, String> {
    use quick_xml::events::Event;
    const DISK: [&str; 3] = ["domain", "devices", "disk"];
    let in_devices = |path: &[String]| path.len() == 2 && path.iter().eq(DISK[..2].iter());
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut disks = Vec::new();
    let mut current = RawSource::default();
    let mut start = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| e.to_string())?;
        let after = reader.buffer_position() as usize;
        let in_disk = path.len() == 3 && path.iter().eq(DISK.iter());
        match event {
            Event::Start(e) => {
                let name = e.name().as_ref().to_owned();
                if in_disk && is_media_element(&name) {
                    start = before;
                }
                path.push(name);
                if path.len() == 3 && path.iter().eq(DISK.iter()) {
                    current = RawSource::default();
                }
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_owned();
                if in_disk && is_media_element(&name) {
                    current.add(&name, &text[before..after])?;
                } else if in_devices(&path) && name == "disk" {
                    disks.push(RawSource::default());
                }
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                if path.len() == 3 && path.iter().eq(DISK.iter()) && is_media_element(&name) {
                    current.add(&name, &text[start..after])?;
                } else if in_devices(&path) && name == "disk" {
                    disks.push(std::mem::take(&mut current));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(disks)
}

fn is_media_element(name: &str) -> bool {
    matches!(name, "source" | "auth" | "encryption")
}

impl RawSource {
    fn add(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let (text, attrs, children) = canonical(raw, name == "source")?;
        if name == "source" {
            self.present = true;
            self.attrs = attrs;
            self.children = children;
            self.elements.insert(0, text);
        } else {
            self.elements.push(text);
        }
        Ok(())
    }

    /// No media: no `<source>`, or one with nothing in it but libvirt's `index`.
    fn is_empty(&self) -> bool {
        !self.present || (self.attrs.is_empty() && !self.children)
    }

    /// The one attribute, where `<source>` has that alone and nothing else is kept.
    fn only(&self, attr: &str) -> Option<&str> {
        match (self.attrs.as_slice(), self.children, self.elements.len()) {
            ([(name, value)], false, 1) if name == attr => Some(value),
            _ => None,
        }
    }

    fn attr(&self, attr: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == attr)
            .map(|(_, v)| v.as_str())
    }
}

/// An element's canonical text, its attributes (unescaped) and whether it has children.
type Canonical = (String, Vec<(String, String)>, bool);

/// One element in canonical form: attributes sorted and escaped one way, whitespace
/// between elements and comments dropped; with `drop_index`, the top element's `index`
/// (libvirt numbers every new source) is left out. Also the top element's attributes
/// (unescaped) and whether it has children.
fn canonical(raw: &str, drop_index: bool) -> Result<Canonical, String> {
    use quick_xml::events::{BytesStart, Event};
    let mut reader = quick_xml::Reader::from_str(raw);
    reader.config_mut().trim_text(true);
    let mut out = String::new();
    let mut top = Vec::new();
    let mut depth = 0usize;
    let mut children = false;
    let mut open = |e: &BytesStart, depth: usize, out: &mut String| -> Result<(), String> {
        let name = e.name().as_ref().to_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let key = a.key.as_ref().to_owned();
            let value = quick_xml::escape::unescape(&a.value)
                .map_err(|e| e.to_string())?
                .into_owned();
            if depth == 0 && drop_index && key == "index" {
                continue;
            }
            attrs.push((key, value));
        }
        if depth == 0 {
            top = attrs.clone();
        }
        attrs.sort();
        out.push('<');
        out.push_str(&name);
        for (k, v) in &attrs {
            out.push_str(&format!(
                " {k}=\"{}\"",
                quick_xml::escape::escape(v.as_str())
            ));
        }
        Ok(())
    };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                children |= depth > 0;
                open(&e, depth, &mut out)?;
                out.push('>');
                depth += 1;
            }
            Event::Empty(e) => {
                children |= depth > 0;
                open(&e, depth, &mut out)?;
                out.push_str("/>");
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                out.push_str(&format!("</{}>", e.name().as_ref()));
            }
            Event::Text(t) => {
                children = true;
                out.push_str(&t);
            }
            Event::GeneralRef(r) => {
                children = true;
                out.push_str(&format!("&{};", &*r));
            }
            Event::CData(c) => {
                children = true;
                out.push_str(&quick_xml::escape::escape(&*c));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((out, top, children))
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

#[derive(Clone, Debug, Deserialize)]
pub(super) struct Disk {
    #[serde(rename = "@type")]
    kind: Option<String>,
    #[serde(rename = "@device")]
    device: Option<String>,
    driver: Option<DriverXml>,
    pub(super) target: Option<TargetXml>,
    readonly: Option<serde::de::IgnoredAny>,
    /// Filled in by [`parse_domain`].
    #[serde(skip)]
    raw: RawSource,
}

#[derive(Clone, Debug, Deserialize)]
struct DriverXml {
    #[serde(rename = "@type")]
    format: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(super) struct TargetXml {
    #[serde(rename = "@dev")]
    pub(super) dev: String,
    #[serde(rename = "@bus")]
    bus: Option<String>,
    #[serde(rename = "@tray")]
    tray: Option<String>,
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

impl Disk {
    pub(super) fn is_cdrom(&self) -> bool {
        self.device.as_deref() == Some("cdrom")
    }

    pub(super) fn as_drive(&self) -> Option<DvdDrive> {
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
    pub(super) fn exact(&self) -> Option<String> {
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
    pub(super) fn restorable(&self) -> bool {
        self.raw.is_empty()
            || matches!(
                self.kind.as_deref().unwrap_or("file"),
                "file" | "block" | "volume" | "network"
            )
    }

    /// This drive's `<disk>` element holding `media`, or empty.
    pub(super) fn with_media(&self, media: Option<&Media>) -> Result<String, CallError> {
        let target = self
            .target
            .as_ref()
            .ok_or_else(|| CallError::Decode("cdrom without a target".into()))?;
        if let Some(exact) = media.and_then(|m| m.exact.as_deref()) {
            return self.with_exact(media, exact, target);
        }
        // A block device goes back as one (a host's /dev/sr0 passed through).
        let block = media.is_some_and(|m| m.file.starts_with("/dev/"));
        let out = DiskOut {
            kind: if block { "block" } else { "file" },
            device: "cdrom",
            driver: DriverOut {
                name: "qemu",
                format: media.map_or("raw", |m| m.format.as_str()).to_owned(),
            },
            source: media.map(|m| SourceOut {
                file: (!block).then(|| m.file.clone()),
                dev: block.then(|| m.file.clone()),
            }),
            target: TargetOut {
                dev: target.dev.clone(),
                bus: target.bus.clone(),
            },
            readonly: media.is_none_or(|m| m.read_only).then_some(()),
        };
        quick_xml::se::to_string_with_root("disk", &out)
            .map_err(|e| CallError::Decode(format!("writing disk XML: {e}")))
    }
}

impl Disk {
    /// The `<disk>` element for media described exactly: its `type` and elements as
    /// they were, with this drive's target.
    fn with_exact(
        &self,
        media: Option<&Media>,
        exact: &str,
        target: &TargetXml,
    ) -> Result<String, CallError> {
        let bad = || CallError::Decode(format!("not a disk description vmguest wrote: {exact}"));
        let inner = exact
            .strip_prefix("<disk type=\"")
            .and_then(|s| s.strip_suffix("</disk>"))
            .ok_or_else(bad)?;
        let (kind, elements) = inner.split_once("\">").ok_or_else(bad)?;
        let empty = DiskOut {
            kind: "file",
            device: "cdrom",
            driver: DriverOut {
                name: "qemu",
                format: media.map_or("raw", |m| m.format.as_str()).to_owned(),
            },
            source: None,
            target: TargetOut {
                dev: target.dev.clone(),
                bus: target.bus.clone(),
            },
            readonly: media.is_none_or(|m| m.read_only).then_some(()),
        };
        let xml = quick_xml::se::to_string_with_root("disk", &empty)
            .map_err(|e| CallError::Decode(format!("writing disk XML: {e}")))?;
        // The type (escaped when it was written into `exact`), then the elements after
        // the driver, where a source goes.
        let xml = xml.replacen("<disk type=\"file\"", &format!("<disk type=\"{kind}\""), 1);
        let at = xml.find("<target ").ok_or_else(bad)?;
        Ok(format!("{}{elements}{}", &xml[..at], &xml[at..]))
    }
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
    use super::*;

    const LIVE: &str = r#"<domain type='qemu' id='1'>
  <name>lv1</name>
  <uuid>0d3c5d5e-7a48-4c3e-9f6b-3f6d3c1e2a10</uuid>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/user &amp; co.iso' index='1'/>
      <target dev='hdc' bus='ide' tray='closed'/>
      <readonly/>
      <alias name='ide0-1-0'/>
    </disk>
    <controller type='ide' index='0'/>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu'/>
      <target dev='sda' bus='sata' tray='open'/>
      <readonly/>
    </disk>
    <serial type='file'><source path='/tmp/c'/></serial>
    <channel type='unix'>
      <source mode='bind' path='/run/libvirt/qemu/channel/1-lv1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
  </devices>
</domain>"#;

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

    const VOLUME: &str = r#"<domain type='qemu' id='2'>
  <name>lv2</name>
  <devices>
    <disk type='volume' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source pool='isos' volume='user "disc".iso' startupPolicy='optional' index='3'>
        <seclabel model='dac' relabel='no'/>
      </source>
      <target dev='hdc' bus='ide' tray='closed'/>
      <readonly/>
    </disk>
    <disk type='network' device='cdrom'>
      <source protocol='http' name='/pub/x.iso' index='4'>
        <host name='mirror.example' port='80'/>
      </source>
      <target dev='hdd' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <source index='5'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='dir' device='cdrom'>
      <source dir='/srv/tree'/>
      <target dev='sdb' bus='sata'/>
    </disk>
  </devices>
</domain>"#;

    /// A source without `file` or `dev` is media all the same, described exactly; a
    /// source with nothing but libvirt's `index` is an empty drive.
    #[test]
    fn a_pool_volume_or_network_source_is_media_kept_exactly() {
        let xml = parse_domain(VOLUME).unwrap();
        let drives: Vec<DvdDrive> = xml.devices.disk.iter().filter_map(Disk::as_drive).collect();
        let volume = drives[0].media.as_ref().expect("a volume is media");
        assert_eq!(volume.file, "isos/user \"disc\".iso");
        assert_eq!(
            volume.exact.as_deref(),
            Some(
                "<disk type=\"volume\"><source pool=\"isos\" startupPolicy=\"optional\" \
                 volume=\"user &quot;disc&quot;.iso\"><seclabel model=\"dac\" relabel=\"no\"/>\
                 </source></disk>"
            )
        );
        let network = drives[1].media.as_ref().expect("a network source is media");
        assert_eq!(network.file, "http:/pub/x.iso");
        assert!(network
            .exact
            .as_deref()
            .unwrap()
            .contains("<host name=\"mirror.example\" port=\"80\"/>"));
        assert!(drives[2].is_empty(), "{:?}", drives[2]);
        assert!(drives[3].media.is_some());
        assert!(xml.devices.disk[0].restorable() && xml.devices.disk[1].restorable());
        assert!(
            !xml.devices.disk[3].restorable(),
            "a dir source is never borrowed"
        );

        // Written back: the type and the whole source, with this drive's target.
        let back = xml.devices.disk[0].with_media(Some(volume)).unwrap();
        assert_eq!(
            back,
            "<disk type=\"volume\" device=\"cdrom\"><driver name=\"qemu\" type=\"raw\"/>\
             <source pool=\"isos\" startupPolicy=\"optional\" volume=\"user &quot;disc&quot;.iso\">\
             <seclabel model=\"dac\" relabel=\"no\"/></source><target dev=\"hdc\" bus=\"ide\"/>\
             <readonly/></disk>"
        );
        // What libvirt shows after it took that back reads as the same media.
        let shown = VOLUME.replace(" index='3'", " index='9'");
        let again = parse_domain(&shown).unwrap().devices.disk[0].exact();
        assert_eq!(again, volume.exact);
    }

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
