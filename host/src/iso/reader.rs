//! A small, bounded ISO 9660 reader: volume descriptors, directories and small files.
//!
//! Why not a crate: we evaluated `hadris-iso` 2.5, `cdfs` 0.2.3 and `iso9660` 0.1.1.
//! `iso9660` is the unmaintained predecessor of `cdfs`; `cdfs` reads through shared
//! `RefCell` file handles and its default features pull in clap for a FUSE tool;
//! `hadris-iso` is a full read/write/El Torito library whose reader is generated for
//! async and sync use. None of them lets us cap every allocation by policy or count the
//! bytes read, and locating an IC ISO needs only a handful of sectors: the descriptors,
//! one or two directories and a manifest. The reader below does exactly that, and every
//! length it takes from the image is checked against the image size and a hard limit
//! first, because a user's ISO store can hold anything (it is fuzzed in `host/fuzz`).
//!
//! Names are read from Joliet when the image has it (UCS-2), else from Rock Ridge `NM`
//! entries, else the plain ISO 9660 name with its `;1` version and trailing dot removed.
//! Lookups are case-insensitive, as the guests that read these images are.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

pub const SECTOR: u64 = 2048;
/// Volume descriptors start at sector 16.
pub const DESCRIPTORS_START: u64 = 16 * SECTOR;

/// Hard limits on what one image may make us read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Volume descriptors scanned before giving up on a terminator.
    pub max_descriptors: u64,
    /// Largest directory extent read.
    pub max_dir_bytes: u32,
    /// Largest file read (manifests, version files, the end of an installer).
    pub max_file_bytes: u32,
    /// Records accepted in one directory.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_descriptors: 32,
            max_dir_bytes: 256 * 1024,
            max_file_bytes: 4 * 1024 * 1024,
            max_entries: 4096,
        }
    }
}

/// Why an image was refused. Messages are user-facing: they end up in error records.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot read")]
    Io(#[from] std::io::Error),
    #[error("not an ISO 9660 image: {0}")]
    NotIso9660(String),
    #[error("corrupt ISO 9660 image: {0}")]
    Corrupt(String),
    #[error("refused: {0}")]
    TooLarge(String),
    /// A valid image whose `vmguest-ic.toml` breaks the manifest's schema.
    #[error(transparent)]
    Manifest(#[from] crate::iso::manifest::ManifestError),
}

pub type Result<T> = std::result::Result<T, IsoError>;

fn corrupt(why: impl Into<String>) -> IsoError {
    IsoError::Corrupt(why.into())
}

/// A directory record, reduced to what lookups need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub extent: u32,
    pub size: u32,
    pub is_dir: bool,
}

/// An open image. `bytes_read` counts every byte taken from the source.
pub struct Image<R> {
    src: R,
    len: u64,
    limits: Limits,
    pub bytes_read: u64,
    /// The primary volume descriptor, byte for byte (identifies the media in the guest).
    pub pvd: Vec<u8>,
    pub volume_id: String,
    root: Entry,
    joliet: bool,
    /// Bytes to skip in each record's system use area (SUSP `SP`), if Rock Ridge is used.
    rock_ridge_skip: Option<usize>,
}

impl<R: Read + Seek> Image<R> {
    /// Read and check the volume descriptors. `len` is the size of the source.
    pub fn open(src: R, len: u64, limits: Limits) -> Result<Self> {
        let mut image = Image {
            src,
            len,
            limits,
            bytes_read: 0,
            pvd: Vec::new(),
            volume_id: String::new(),
            root: Entry {
                name: String::new(),
                extent: 0,
                size: 0,
                is_dir: true,
            },
            joliet: false,
            rock_ridge_skip: None,
        };
        if len < DESCRIPTORS_START + SECTOR {
            return Err(IsoError::NotIso9660(format!(
                "{len} bytes is too small to hold volume descriptors"
            )));
        }
        let mut joliet_root = None;
        let mut terminated = false;
        for i in 0..limits.max_descriptors {
            let offset = DESCRIPTORS_START + i * SECTOR;
            if offset + SECTOR > len {
                break;
            }
            let d = image.read_at(offset, SECTOR as usize)?;
            if &d[1..6] != b"CD001" {
                if i == 0 {
                    return Err(IsoError::NotIso9660(
                        "no CD001 volume descriptor at sector 16".into(),
                    ));
                }
                return Err(corrupt(format!("volume descriptor {} lacks CD001", 16 + i)));
            }
            match d[0] {
                1 if image.pvd.is_empty() => {
                    if u16::from_le_bytes([d[128], d[129]]) != SECTOR as u16 {
                        return Err(corrupt("logical block size is not 2048"));
                    }
                    image.volume_id = trim_a_chars(&d[40..72]);
                    image.root = parse_record(&d[156..190], None, false)
                        .ok_or_else(|| corrupt("bad root directory record"))?
                        .0;
                    image.pvd = d;
                }
                // A supplementary descriptor whose escape sequence names UCS-2 is Joliet.
                2 if is_joliet_escape(&d[88..120]) => {
                    joliet_root = parse_record(&d[156..190], None, false).map(|r| r.0);
                }
                255 => {
                    terminated = true;
                    break;
                }
                _ => {}
            }
        }
        if image.pvd.is_empty() {
            return Err(IsoError::NotIso9660("no primary volume descriptor".into()));
        }
        if !terminated {
            return Err(corrupt("volume descriptor set has no terminator"));
        }
        image.check_dir(&image.root.clone())?;
        image.detect_rock_ridge();
        if let Some(root) = joliet_root {
            if image.check_dir(&root).is_ok() {
                image.root = root;
                image.joliet = true;
            }
        }
        Ok(image)
    }

    pub fn has_joliet(&self) -> bool {
        self.joliet
    }

    pub fn has_rock_ridge(&self) -> bool {
        self.rock_ridge_skip.is_some()
    }

    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| corrupt("offset overflow"))?;
        if end > self.len {
            return Err(corrupt(format!(
                "extent at byte {offset} (+{len}) runs past the end of the {}-byte image",
                self.len
            )));
        }
        self.src.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len];
        self.src.read_exact(&mut buf)?;
        self.bytes_read += len as u64;
        Ok(buf)
    }

    fn check_dir(&self, dir: &Entry) -> Result<()> {
        if !dir.is_dir {
            return Err(corrupt(format!("{:?} is not a directory", dir.name)));
        }
        if dir.size > self.limits.max_dir_bytes {
            return Err(IsoError::TooLarge(format!(
                "directory {:?} claims {} bytes (limit {})",
                dir.name, dir.size, self.limits.max_dir_bytes
            )));
        }
        Ok(())
    }

    /// Rock Ridge announces itself with a SUSP `SP` entry in the root's "." record.
    fn detect_rock_ridge(&mut self) {
        let root = self.root.clone();
        let Ok(bytes) = self.read_at(root.extent as u64 * SECTOR, root.size.min(2048) as usize)
        else {
            return;
        };
        let len = bytes.first().copied().unwrap_or(0) as usize;
        if len < 34 || len > bytes.len() {
            return;
        }
        let su = &bytes[34..len];
        if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
            self.rock_ridge_skip = Some(su[6] as usize);
        }
    }

    /// The records of a directory, without "." and "..".
    pub fn list(&mut self, dir: &Entry) -> Result<Vec<Entry>> {
        self.check_dir(dir)?;
        let bytes = self.read_at(dir.extent as u64 * SECTOR, dir.size as usize)?;
        let mut entries = Vec::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let len = bytes[pos] as usize;
            if len == 0 {
                // Records never span sectors; zero padding runs to the next one.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if len < 34 || pos + len > bytes.len() {
                return Err(corrupt(format!(
                    "directory {:?}: record at {pos} has bad length {len}",
                    dir.name
                )));
            }
            let Some((entry, special)) =
                parse_record(&bytes[pos..pos + len], self.rock_ridge_skip, self.joliet)
            else {
                return Err(corrupt(format!(
                    "directory {:?}: bad record at {pos}",
                    dir.name
                )));
            };
            if !special {
                if entries.len() >= self.limits.max_entries {
                    return Err(IsoError::TooLarge(format!(
                        "directory {:?} has more than {} entries",
                        dir.name, self.limits.max_entries
                    )));
                }
                entries.push(entry);
            }
            pos += len;
        }
        Ok(entries)
    }

    /// Find `path` ("a/b/c", case-insensitive). A directory met twice is a loop.
    pub fn lookup(&mut self, path: &str) -> Result<Option<Entry>> {
        let mut current = self.root.clone();
        let mut seen = HashSet::from([current.extent]);
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let entries = self.list(&current)?;
            let Some(next) = entries
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(part))
            else {
                return Ok(None);
            };
            if next.is_dir && !seen.insert(next.extent) {
                return Err(corrupt(format!("directory loop at {part:?}")));
            }
            current = next;
        }
        Ok(Some(current))
    }

    /// The names in the root directory.
    pub fn root_names(&mut self) -> Result<Vec<String>> {
        let root = self.root.clone();
        Ok(self.list(&root)?.into_iter().map(|e| e.name).collect())
    }

    /// Read a whole file of at most `max` bytes (and the reader's own limit).
    pub fn read_file(&mut self, entry: &Entry, max: u32) -> Result<Vec<u8>> {
        if entry.is_dir {
            return Err(corrupt(format!("{:?} is a directory", entry.name)));
        }
        let max = max.min(self.limits.max_file_bytes);
        if entry.size > max {
            return Err(IsoError::TooLarge(format!(
                "{:?} is {} bytes (limit {max})",
                entry.name, entry.size
            )));
        }
        self.read_at(entry.extent as u64 * SECTOR, entry.size as usize)
    }

    /// The last `max` bytes of a file (where executables keep their resources).
    pub fn read_tail(&mut self, entry: &Entry, max: u32) -> Result<Vec<u8>> {
        if entry.is_dir {
            return Err(corrupt(format!("{:?} is a directory", entry.name)));
        }
        let take = entry.size.min(max).min(self.limits.max_file_bytes);
        let start = entry.extent as u64 * SECTOR + u64::from(entry.size - take);
        self.read_at(start, take as usize)
    }

    /// Read `path` if it exists.
    pub fn read_path(&mut self, path: &str, max: u32) -> Result<Option<Vec<u8>>> {
        match self.lookup(path)? {
            Some(e) if !e.is_dir => self.read_file(&e, max).map(Some),
            _ => Ok(None),
        }
    }
}

/// Parse one directory record. Returns the entry and whether it is "." or "..".
fn parse_record(r: &[u8], rr_skip: Option<usize>, joliet: bool) -> Option<(Entry, bool)> {
    let len = *r.first()? as usize;
    if len < 34 || len > r.len() {
        return None;
    }
    let extent = u32::from_le_bytes(r[2..6].try_into().ok()?);
    let size = u32::from_le_bytes(r[10..14].try_into().ok()?);
    let is_dir = r[25] & 0x02 != 0;
    let name_len = r[32] as usize;
    if 33 + name_len > len {
        return None;
    }
    let raw = &r[33..33 + name_len];
    let special = name_len == 1 && (raw[0] == 0 || raw[0] == 1);
    let mut name = if special {
        String::from(if raw[0] == 0 { "." } else { ".." })
    } else if joliet {
        ucs2_name(raw)
    } else {
        iso_name(raw)
    };
    if let (Some(skip), false, false) = (rr_skip, joliet, special) {
        let su_start = 33 + name_len + (name_len + 1) % 2;
        if let Some(su) = r.get(su_start + skip..len) {
            if let Some(nm) = rock_ridge_name(su) {
                name = nm;
            }
        }
    }
    Some((
        Entry {
            name,
            extent,
            size,
            is_dir,
        },
        special,
    ))
}

/// The `NM` entries of a SUSP area, concatenated (a name may be split across entries).
fn rock_ridge_name(mut su: &[u8]) -> Option<String> {
    let mut name: Vec<u8> = Vec::new();
    let mut found = false;
    while su.len() >= 4 {
        let len = su[2] as usize;
        if len < 4 || len > su.len() {
            break;
        }
        if &su[0..2] == b"NM" && len >= 5 {
            let flags = su[4];
            // CURRENT/PARENT flags mean "." and ".."; keep the ISO name then.
            if flags & 0x06 == 0 {
                name.extend_from_slice(&su[5..len]);
                found = true;
            }
        }
        if &su[0..2] == b"ST" {
            break;
        }
        su = &su[len..];
    }
    found.then(|| String::from_utf8_lossy(&name).into_owned())
}

fn iso_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = s.split(';').next().unwrap_or_default();
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

fn ucs2_name(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let s = String::from_utf16_lossy(&units);
    let s = s.split(';').next().unwrap_or_default();
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

fn trim_a_chars(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// Joliet's escape sequences: `%/@`, `%/C`, `%/E` (UCS-2 levels 1 to 3).
fn is_joliet_escape(esc: &[u8]) -> bool {
    esc.windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'/' && matches!(w[2], b'@' | b'C' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A hand-built image: PVD, terminator, a root with one file and a loop directory.
    pub(crate) fn tiny_image() -> Vec<u8> {
        let mut img = vec![0u8; 24 * 2048];
        let pvd = 16 * 2048;
        img[pvd] = 1;
        img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        img[pvd + 40..pvd + 72].copy_from_slice(&[b' '; 32]);
        img[pvd + 40..pvd + 44].copy_from_slice(b"TINY");
        img[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
        write_record(&mut img[pvd + 156..], 20, 2048, true, &[0]);
        let term = 17 * 2048;
        img[term] = 255;
        img[term + 1..term + 6].copy_from_slice(b"CD001");
        let root = 20 * 2048;
        let mut pos = root;
        pos += write_record(&mut img[pos..], 20, 2048, true, &[0]);
        pos += write_record(&mut img[pos..], 20, 2048, true, &[1]);
        pos += write_record(&mut img[pos..], 21, 5, false, b"HELLO.TXT;1");
        write_record(&mut img[pos..], 20, 2048, true, b"LOOP");
        img[21 * 2048..21 * 2048 + 5].copy_from_slice(b"hello");
        img
    }

    fn write_record(out: &mut [u8], extent: u32, size: u32, dir: bool, name: &[u8]) -> usize {
        let len = 33 + name.len() + (name.len() + 1) % 2;
        out[0] = len as u8;
        out[2..6].copy_from_slice(&extent.to_le_bytes());
        out[6..10].copy_from_slice(&extent.to_be_bytes());
        out[10..14].copy_from_slice(&size.to_le_bytes());
        out[14..18].copy_from_slice(&size.to_be_bytes());
        out[25] = if dir { 2 } else { 0 };
        out[32] = name.len() as u8;
        out[33..33 + name.len()].copy_from_slice(name);
        len
    }

    fn open(img: &[u8]) -> Result<Image<Cursor<&[u8]>>> {
        Image::open(Cursor::new(img), img.len() as u64, Limits::default())
    }

    #[test]
    fn reads_names_and_files_case_insensitively() {
        let img = tiny_image();
        let mut image = open(&img).unwrap();
        assert_eq!(image.volume_id, "TINY");
        assert_eq!(image.root_names().unwrap(), ["HELLO.TXT", "LOOP"]);
        assert_eq!(
            image.read_path("hello.txt", 100).unwrap().unwrap(),
            b"hello"
        );
        assert!(image.read_path("absent", 100).unwrap().is_none());
    }

    #[test]
    fn a_directory_loop_is_an_error_not_a_hang() {
        let img = tiny_image();
        let mut image = open(&img).unwrap();
        let err = image.lookup("LOOP/LOOP/HELLO.TXT").unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
    }

    #[test]
    fn truncation_and_absurd_sizes_are_refused() {
        let img = tiny_image();
        for cut in [0, 100, 16 * 2048 + 10, 18 * 2048, 20 * 2048 + 40] {
            let r = open(&img[..cut]).and_then(|mut i| i.read_path("HELLO.TXT", 100));
            assert!(r.is_err(), "cut at {cut} was accepted");
        }
        let mut huge = tiny_image();
        let rec = 20 * 2048 + 34 * 2;
        huge[rec + 10..rec + 14].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = open(&huge)
            .unwrap()
            .read_path("HELLO.TXT", 100)
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    proptest::proptest! {
        /// Any corruption of a valid image gives an answer or an error, never a panic,
        /// and never more reading than the limits allow.
        #[test]
        fn corrupted_images_never_panic(
            flips in proptest::collection::vec((0usize..24 * 2048, proptest::num::u8::ANY), 0..64),
            cut in 0usize..24 * 2048 + 1,
        ) {
            let mut img = tiny_image();
            for (at, byte) in flips {
                img[at] = byte;
            }
            img.truncate(cut);
            if let Ok(mut image) = open(&img) {
                let _ = image.root_names();
                let _ = image.read_path("HELLO.TXT", 1 << 20);
                let _ = image.lookup("LOOP/LOOP/LOOP/x");
                let limits = Limits::default();
                proptest::prop_assert!(
                    image.bytes_read <= (limits.max_descriptors + 4) * SECTOR
                        + 8 * u64::from(limits.max_dir_bytes)
                );
            }
        }
    }

    #[test]
    fn non_utf8_names_do_not_break_lookups() {
        let mut img = tiny_image();
        let rec = 20 * 2048 + 34 * 2;
        img[rec + 33] = 0xFF;
        let mut image = open(&img).unwrap();
        assert!(image.root_names().unwrap()[0].contains('\u{FFFD}'));
    }
}
