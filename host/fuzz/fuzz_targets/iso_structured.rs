//! Valid ISO 9660 images built around fuzzed content: volume ids, file names in nested
//! directories (primary tree, Rock Ridge names, Joliet tree), `vmguest-ic.toml` text
//! and installer bytes. Where `iso_reader` mutates raw bytes (and mostly breaks the
//! extents before the manifest parser is reached), every image here is well formed, so
//! the fuzzer explores what is inside. It asserts:
//! - the reader stays within its bytes-read budget for identification;
//! - a manifest inside an image is accepted exactly when the parser accepts its text;
//! - the family and version equal those of a reference scan of what was built;
//! - version comparison is a total order.
#![no_main]

use std::cmp::Ordering;
use std::io::Cursor;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmguest::iso::reader::{Image, IsoError, Limits};
use vmguest::iso::{fake_exe, identify, Version};
use vmguest::kinds::Family;
use vmguest::iso::manifest::Manifest;

const SECTOR: usize = 2048;
/// Identification reads the descriptors, a few directories, a manifest (64 KiB at
/// most) and an installer's tail (1 MiB at most): family.rs's limits.
const BUDGET: u64 = 32 * SECTOR as u64 + 16 * SECTOR as u64 + 64 * 1024 + 1024 * 1024;

#[derive(Arbitrary, Debug)]
enum Volume {
    Plain(String),
    VirtioWin(String),
    VBox(String),
}

#[derive(Arbitrary, Debug)]
enum ManifestText {
    /// Any text at all.
    Raw(String),
    /// A manifest with fuzzed fields and maybe a fuzzed extra line.
    Fields {
        name: String,
        version: String,
        command: Option<String>,
        verify: Option<String>,
        extra: Option<String>,
    },
}

#[derive(Arbitrary, Debug)]
struct FileSpec {
    name: String,
    /// 0: root; 1..3: that deep under `fa/fb/fc`.
    depth: u8,
    content: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Spec {
    volume: Volume,
    joliet: bool,
    rock_ridge: bool,
    manifest: Option<ManifestText>,
    hyperv: Option<(bool, [u16; 4])>,
    files: Vec<FileSpec>,
    versions: (String, String, String),
}

/// A file or directory in the tree being built.
enum Node {
    File(Vec<u8>),
    Dir(Vec<(String, Node)>),
}

/// Names of fuzzed files: from a safe alphabet with an `f` prefix, so they never collide
/// with a family's marker file (those start with v, V, s or S).
fn safe_name(raw: &str) -> String {
    let body: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("f{body}.dat")
}

fn volume_text(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(20)
        .collect()
}

fn manifest_text(m: &ManifestText) -> String {
    match m {
        ManifestText::Raw(t) => t.clone(),
        ManifestText::Fields {
            name,
            version,
            command,
            verify,
            extra,
        } => {
            let q = |s: &str| toml_quote(s);
            let mut t = format!(
                "[components]\nfamily = \"vmguest\"\nname = {}\nversion = {}\n",
                q(name),
                q(version)
            );
            if let Some(c) = command {
                t += &format!("\n[install.linux]\ncommand = {}\n", q(c));
            }
            if let Some(v) = verify {
                t += &format!("\n[verify.linux]\ncommand = {}\n", q(v));
            }
            if let Some(e) = extra {
                t += e;
            }
            t
        }
    }
}

fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 || c == '\u{7f}' => out += &format!("\\u{:04X}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn insert(tree: &mut Vec<(String, Node)>, path: &[&str], node: Node) {
    let (first, rest) = path.split_first().unwrap();
    if rest.is_empty() {
        if !tree.iter().any(|(n, _)| n.eq_ignore_ascii_case(first)) {
            tree.push((first.to_string(), node));
        }
        return;
    }
    let pos = match tree.iter().position(|(n, _)| n.eq_ignore_ascii_case(first)) {
        Some(p) => p,
        None => {
            tree.push((first.to_string(), Node::Dir(Vec::new())));
            tree.len() - 1
        }
    };
    if let Node::Dir(children) = &mut tree[pos].1 {
        insert(children, rest, node);
    }
}

/// Lay out an image: system area, PVD, Joliet SVD, terminator, directories, files.
struct Builder {
    sectors: Vec<[u8; SECTOR]>,
    rock_ridge: bool,
}

impl Builder {
    fn alloc(&mut self, n: usize) -> usize {
        let at = self.sectors.len();
        self.sectors.resize(at + n.max(1), [0u8; SECTOR]);
        at
    }

    fn write(&mut self, sector: usize, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(SECTOR).enumerate() {
            self.sectors[sector + i][..chunk.len()].copy_from_slice(chunk);
        }
    }

    /// File extents first (shared by both trees), then each tree's directories.
    fn files(&mut self, tree: &[(String, Node)], out: &mut Vec<usize>) {
        for (_, node) in tree {
            match node {
                Node::File(data) => {
                    let at = self.alloc(data.len().div_ceil(SECTOR));
                    self.write(at, data);
                    out.push(at);
                }
                Node::Dir(children) => self.files(children, out),
            }
        }
    }

    /// Write a directory and its subdirectories; returns (extent, size).
    fn dir(
        &mut self,
        tree: &[(String, Node)],
        files: &mut std::slice::Iter<'_, usize>,
        parent: Option<(usize, usize)>,
        joliet: bool,
        root: bool,
    ) -> (usize, usize) {
        let at = self.alloc(1);
        let mut entries = Vec::new();
        for (name, node) in tree {
            match node {
                Node::File(data) => {
                    let extent = *files.next().unwrap();
                    entries.push((name.clone(), extent, data.len(), false));
                }
                Node::Dir(children) => {
                    let (e, s) = self.dir(children, files, Some((at, SECTOR)), joliet, false);
                    entries.push((name.clone(), e, s, true));
                }
            }
        }
        let mut bytes = Vec::new();
        let su_dot = if self.rock_ridge && root && !joliet {
            vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
        } else {
            Vec::new()
        };
        bytes.extend(record(at, SECTOR, true, &[0], &su_dot));
        let (pe, ps) = parent.unwrap_or((at, SECTOR));
        bytes.extend(record(pe, ps, true, &[1], &[]));
        for (name, extent, size, is_dir) in entries {
            let (raw, su) = if joliet {
                let mut raw = Vec::new();
                let shown = if is_dir {
                    name.clone()
                } else {
                    format!("{name};1")
                };
                for u in shown.encode_utf16() {
                    raw.extend(u.to_be_bytes());
                }
                (raw, Vec::new())
            } else {
                let upper = name.to_ascii_uppercase();
                let shown = if is_dir { upper } else { format!("{upper};1") };
                let su = if self.rock_ridge {
                    let mut nm = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
                    nm.extend(name.as_bytes());
                    nm
                } else {
                    Vec::new()
                };
                (shown.into_bytes(), su)
            };
            bytes.extend(record(extent, size, is_dir, &raw, &su));
        }
        assert!(bytes.len() <= SECTOR, "a directory outgrew its sector");
        self.write(at, &bytes);
        (at, SECTOR)
    }
}

fn both32(v: usize) -> [u8; 8] {
    let v = v as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn record(extent: usize, size: usize, dir: bool, name: &[u8], su: &[u8]) -> Vec<u8> {
    let pad = (name.len() + 1) % 2;
    let len = 33 + name.len() + pad + su.len();
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&[1, 0, 0, 1]);
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    r[33 + name.len() + pad..].copy_from_slice(su);
    r
}

fn descriptor(kind: u8, volume_id: &str, root: (usize, usize), total: usize) -> [u8; SECTOR] {
    let mut d = [0u8; SECTOR];
    d[0] = kind;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    let mut vol = [b' '; 32];
    let id = volume_id.as_bytes();
    vol[..id.len().min(32)].copy_from_slice(&id[..id.len().min(32)]);
    d[40..72].copy_from_slice(&vol);
    d[80..88].copy_from_slice(&both32(total));
    d[120..128].copy_from_slice(&[1, 0, 0, 1, 1, 0, 0, 1]);
    d[128..132].copy_from_slice(&[0, 8, 8, 0]);
    d[156..190].copy_from_slice(&record(root.0, root.1, true, &[0], &[]));
    if kind == 2 {
        d[88..91].copy_from_slice(b"%/E");
    }
    d[881] = 1;
    d
}

fn build(spec: &Spec) -> (Vec<u8>, String, Vec<(String, Node)>) {
    let volume_id = match &spec.volume {
        Volume::Plain(v) => format!("FUZZ_{}", volume_text(v)),
        Volume::VirtioWin(v) => format!("virtio-win-{}", volume_text(v)),
        Volume::VBox(v) => format!("VBox_GAs_{}", volume_text(v)),
    };
    let mut tree = Vec::new();
    if let Some(m) = &spec.manifest {
        insert(
            &mut tree,
            &["vmguest-ic.toml"],
            Node::File(manifest_text(m).into_bytes()),
        );
    }
    if let Some((amd64, version)) = spec.hyperv {
        let arch = if amd64 { "amd64" } else { "x86" };
        insert(
            &mut tree,
            &["support", arch, "setup.exe"],
            Node::File(fake_exe(version)),
        );
    }
    for f in spec.files.iter().take(8) {
        let name = safe_name(&f.name);
        let dirs = ["fa", "fb", "fc"];
        let depth = (f.depth % 4) as usize;
        let mut path: Vec<&str> = dirs[..depth].to_vec();
        path.push(&name);
        let content = f.content.iter().copied().take(8192).collect();
        insert(&mut tree, &path, Node::File(content));
    }
    let mut b = Builder {
        sectors: vec![[0u8; SECTOR]; 16],
        rock_ridge: spec.rock_ridge,
    };
    let descriptors = b.alloc(if spec.joliet { 3 } else { 2 });
    let mut extents = Vec::new();
    b.files(&tree, &mut extents);
    let root = b.dir(&tree, &mut extents.iter(), None, false, true);
    let jroot = spec
        .joliet
        .then(|| b.dir(&tree, &mut extents.iter(), None, true, true));
    let total = b.sectors.len();
    b.sectors[descriptors] = descriptor(1, &volume_id, root, total);
    let mut next = descriptors + 1;
    if let Some(j) = jroot {
        b.sectors[next] = descriptor(2, &volume_id, j, total);
        next += 1;
    }
    b.sectors[next][0] = 255;
    b.sectors[next][1..6].copy_from_slice(b"CD001");
    b.sectors[next][6] = 1;
    (b.sectors.concat(), volume_id, tree)
}

/// Why the reference expects a refusal.
#[derive(Debug)]
enum Refusal {
    Manifest,
    /// Over family.rs's 64 KiB manifest limit.
    TooLarge,
}

/// The reference: what the built content says, by the documented rules.
fn reference(spec: &Spec, volume_id: &str) -> Result<Option<(Family, Option<Version>)>, Refusal> {
    if let Some(m) = &spec.manifest {
        let text = manifest_text(m);
        if text.len() > 64 * 1024 {
            return Err(Refusal::TooLarge);
        }
        return match Manifest::parse(&text) {
            Ok(m) => Ok(Some((
                Family::Vmguest,
                Version::parse(&m.components.version),
            ))),
            Err(_) => Err(Refusal::Manifest),
        };
    }
    // A family's volume id prefix names it only when something follows.
    let label = |prefix: &str| volume_id.strip_prefix(prefix).filter(|v| !v.is_empty());
    if let Some(v) = label("virtio-win-") {
        return Ok(Some((Family::VirtioWin, Version::parse(v))));
    }
    if let Some(v) = label("VBox_GAs_") {
        return Ok(Some((Family::Virtualbox, Version::parse(v))));
    }
    if let Some((_, v)) = spec.hyperv {
        // An all-zero VS_FIXEDFILEINFO means the file has no version.
        let text = format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3]);
        let version = (v != [0; 4]).then(|| Version::parse(&text)).flatten();
        return Ok(Some((Family::HyperV, version)));
    }
    Ok(None)
}

fn total_order(a: &Option<Version>, b: &Option<Version>, c: &Option<Version>) {
    assert_eq!(a.cmp(b), b.cmp(a).reverse(), "antisymmetry: {a:?} {b:?}");
    assert_eq!(a.cmp(a), Ordering::Equal);
    if a <= b && b <= c {
        assert!(a <= c, "transitivity: {a:?} {b:?} {c:?}");
    }
    if a.cmp(b) == Ordering::Equal {
        assert_eq!(
            a.cmp(c),
            b.cmp(c),
            "equal versions compare alike: {a:?} {b:?} {c:?}"
        );
    }
}

fuzz_target!(|spec: Spec| {
    let (bytes, volume_id, _tree) = build(&spec);
    let len = bytes.len() as u64;
    let mut image = Image::open(Cursor::new(&bytes[..]), len, Limits::default())
        .expect("a built image always opens");
    assert_eq!(image.has_joliet(), spec.joliet);
    let found = identify(&mut image);
    assert!(
        image.bytes_read <= BUDGET,
        "read {} bytes, budget {BUDGET}",
        image.bytes_read
    );
    let expected = reference(&spec, &volume_id);
    match (&found, &expected) {
        (Ok(Some(id)), Ok(Some((family, version)))) => {
            assert_eq!(id.family, *family, "{spec:?}");
            assert_eq!(&id.version, version, "{spec:?}");
        }
        (Ok(None), Ok(None)) => {}
        (Err(IsoError::Manifest(_)), Err(Refusal::Manifest)) => {}
        (Err(IsoError::TooLarge(_)), Err(Refusal::TooLarge)) => {}
        _ => panic!("reader {found:?} but reference {expected:?} for {spec:?}"),
    }
    let (a, b, c) = &spec.versions;
    total_order(&Version::parse(a), &Version::parse(b), &Version::parse(c));
});
