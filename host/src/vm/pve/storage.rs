//! The IC ISO on an ISO storage of the VM's node: the volume it already is, or an upload
//! that the node checks against vmguest's digest.
//!
//! - The storage is the host's `storage` setting, else the first enabled storage of the
//!   node with `iso` content (`GET /nodes/{node}/storage?content=iso&enabled=1`).
//! - When vmguest runs on that node (this machine's host name is the node's name) and
//!   the ISO lies in the storage's ISO directory (`{path}/template/iso/`, pve-storage's
//!   layout for directory storages), its volid is used as it is, after checking that
//!   the path still names the file vmguest opened and checked.
//! - Otherwise the opened file itself is streamed (`POST .../upload`, multipart in the
//!   field order pve-http-server's `file_upload_multipart` reads: `content`,
//!   `checksum-algorithm`, `checksum`, then the file), named `vmguest-ic-<sha256>.iso`,
//!   with `checksum-algorithm=sha256` and the digest of those very bytes, so the node
//!   refuses anything else. An ISO of that name already on the storage is reused: the
//!   name carries the digest. The upload's task must end `OK`.
//!
//! The digest is computed here from the opened file (positioned reads, so the file's
//! offset is not moved): the trait hands over the file, not the operation's digest, and
//! hashing what is uploaded is what makes the checksum mean "what vmguest checked".

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::{seg, ApiError};
use super::{api, call_error, Target};
use crate::vm::{same_file, CallError, Media};

/// How long the node may take to check and store an upload.
const UPLOAD_TASK: Duration = Duration::from_secs(30 * 60);

/// The media for the IC ISO `file` (opened from `path`) on the VM's node.
pub(super) fn stage(t: &Target, file: &File, path: &Path) -> Result<Media, CallError> {
    let storage = choose_storage(t)?;
    if let Some(volid) = local_volume(t, &storage, file, path) {
        tracing::debug!(%volid, "the IC ISO is on the node's storage already");
        return Ok(Media::iso(volid));
    }
    let digest = sha256_of(file).map_err(CallError::Io)?;
    let name = format!("vmguest-ic-{digest}.iso");
    let volid = format!("{storage}:iso/{name}");
    if on_storage(t, &storage, &volid)? {
        tracing::debug!(%volid, "reusing an earlier upload of the same digest");
        return Ok(Media::iso(volid));
    }
    upload(t, &storage, &name, &digest, file).map_err(call_error)?;
    Ok(Media::iso(volid))
}

/// The configured storage, else the node's first enabled ISO storage.
fn choose_storage(t: &Target) -> Result<String, CallError> {
    if let Some(s) = &t.options.storage {
        return Ok(s.clone());
    }
    let path = format!("/nodes/{}/storage", seg(&t.node));
    let data = t
        .client
        .get(&path, &[("content", "iso"), ("enabled", "1")])
        .map_err(call_error)?;
    first_iso_storage(&data).ok_or_else(|| {
        CallError::Decode(format!(
            "node {} has no enabled storage for ISO images (content iso); name one with \
             storage in the host's [pve.\"...\"] table",
            t.node
        ))
    })
}

fn first_iso_storage(data: &Value) -> Option<String> {
    data.as_array()?
        .iter()
        .filter(|s| s["enabled"].as_i64() != Some(0) && s["active"].as_i64() != Some(0))
        .filter(|s| {
            s["content"]
                .as_str()
                .is_some_and(|c| c.split(',').any(|c| c.trim() == "iso"))
        })
        .find_map(|s| s["storage"].as_str().map(str::to_owned))
}

/// The volid of `path` when vmguest runs on the VM's node and the file is in the
/// storage's ISO directory; `None` otherwise (then it is uploaded).
fn local_volume(t: &Target, storage: &str, file: &File, path: &Path) -> Option<String> {
    if !this_host_is(&t.node) {
        return None;
    }
    let config = t
        .client
        .get(&format!("/storage/{}", seg(storage)), &[])
        .ok()?;
    let root = config["path"].as_str()?;
    let iso_dir = std::fs::canonicalize(Path::new(root).join("template/iso")).ok()?;
    let real = std::fs::canonicalize(path).ok()?;
    if real.parent()? != iso_dir {
        return None;
    }
    let name = real.file_name()?.to_str()?;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain || !name.to_ascii_lowercase().ends_with(".iso") {
        return None;
    }
    same_file(file, &real).ok()?;
    Some(format!("{storage}:iso/{name}"))
}

/// Whether this machine's host name (up to its first dot) is `node`.
fn this_host_is(node: &str) -> bool {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return false;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]);
    let short = name.split('.').next().unwrap_or("");
    !short.is_empty() && short.eq_ignore_ascii_case(node)
}

fn on_storage(t: &Target, storage: &str, volid: &str) -> Result<bool, CallError> {
    let path = format!("/nodes/{}/storage/{}/content", seg(&t.node), seg(storage));
    let data = t
        .client
        .get(&path, &[("content", "iso")])
        .map_err(call_error)?;
    Ok(data
        .as_array()
        .is_some_and(|all| all.iter().any(|v| v["volid"] == volid)))
}

/// The file's SHA-256 in lower-case hex, read with positioned reads.
fn sha256_of(file: &File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut reader = At { file, offset: 0 };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `file` from `offset` on, without moving the file's own offset.
struct At<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// The multipart body around the file's bytes.
fn multipart(boundary: &str, name: &str, digest: &str) -> (String, String) {
    let field = |k: &str, v: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
    };
    let head = format!(
        "{}{}{}--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; \
         filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        field("content", "iso"),
        field("checksum-algorithm", "sha256"),
        field("checksum", digest),
    );
    (head, format!("\r\n--{boundary}--\r\n"))
}

fn upload(
    t: &Target,
    storage: &str,
    name: &str,
    digest: &str,
    file: &File,
) -> Result<(), ApiError> {
    let path = format!("/nodes/{}/storage/{}/upload", seg(&t.node), seg(storage));
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let boundary = format!("vmguest-{}", &digest[..32]);
    let (head, tail) = multipart(&boundary, name, digest);
    let total = head.len() as u64 + length + tail.len() as u64;
    let body = io::Cursor::new(head.into_bytes())
        .chain(At { file, offset: 0 }.take(length))
        .chain(io::Cursor::new(tail.into_bytes()));
    tracing::info!(%storage, node = %t.node, bytes = length, "uploading the IC ISO");
    let answer = t.client.post_stream(
        &path,
        &format!("multipart/form-data; boundary={boundary}"),
        total,
        body,
    )?;
    match answer.as_str() {
        Some(upid) if upid.starts_with("UPID:") => {
            api::wait_task(&t.client, &t.node, upid, UPLOAD_TASK)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_enabled_iso_storage_is_chosen() {
        let data = json!([
            {"storage": "local-lvm", "content": "images,rootdir", "enabled": 1, "active": 1},
            {"storage": "off", "content": "iso", "enabled": 0, "active": 0},
            {"storage": "local", "content": "vztmpl,iso,backup", "enabled": 1, "active": 1},
            {"storage": "nfs", "content": "iso", "enabled": 1, "active": 1}
        ]);
        assert_eq!(first_iso_storage(&data).as_deref(), Some("local"));
        assert_eq!(first_iso_storage(&json!([])), None);
    }

    #[test]
    fn the_upload_body_is_in_pve_http_server_order() {
        let (head, tail) = multipart("B", "vmguest-ic-ab.iso", "ab");
        let c = head.find("name=\"content\"").unwrap();
        let a = head.find("name=\"checksum-algorithm\"").unwrap();
        let s = head.find("name=\"checksum\"\r\n").unwrap();
        let f = head
            .find("name=\"filename\"; filename=\"vmguest-ic-ab.iso\"")
            .unwrap();
        assert!(c < a && a < s && s < f, "{head}");
        assert!(head.ends_with("\r\n\r\n") && head.starts_with("--B\r\n"));
        assert_eq!(tail, "\r\n--B--\r\n");
    }

    #[test]
    fn the_digest_is_of_the_opened_file_and_leaves_its_offset() {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abc").unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        assert_eq!(
            sha256_of(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(f.stream_position().unwrap(), 1);
    }
}
