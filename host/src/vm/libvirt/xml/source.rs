//! A disk's media elements as the domain holds them, in canonical form: what lets media
//! that a path alone does not describe (a pool volume, a network source, a `<seclabel>`)
//! be recognised and written back exactly.

/// What a disk's media is, beyond what serde reads: its `<source>` and the disk-level
/// `<auth>` and `<encryption>` elements, canonical, and the source's attributes.
#[derive(Clone, Debug, Default)]
pub(super) struct RawSource {
    /// `<source>`'s attributes but `index`, unescaped, in document order.
    pub(super) attrs: Vec<(String, String)>,
    /// Whether `<source>` has children.
    pub(super) children: bool,
    /// The canonical `<source>`, then `<auth>` and `<encryption>` where present.
    pub(super) elements: Vec<String>,
    /// Whether a `<source>` element is present.
    pub(super) present: bool,
}

/// Each `<domain><devices><disk>`'s media elements, in document order.
pub(super) fn raw_disks(text: &str) -> Result<Vec<RawSource>, String> {
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
    pub(super) fn is_empty(&self) -> bool {
        !self.present || (self.attrs.is_empty() && !self.children)
    }

    /// The one attribute, where `<source>` has that alone and nothing else is kept.
    pub(super) fn only(&self, attr: &str) -> Option<&str> {
        match (self.attrs.as_slice(), self.children, self.elements.len()) {
            ([(name, value)], false, 1) if name == attr => Some(value),
            _ => None,
        }
    }

    pub(super) fn attr(&self, attr: &str) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::super::samples::VOLUME;
    use super::super::{parse_domain, Disk};
    use crate::vm::DvdDrive;

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
}
