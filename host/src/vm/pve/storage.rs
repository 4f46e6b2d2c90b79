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
//! The digest is the one the operation verified for the opened file (the digest cache
//! is keyed by that file's identity), so the node's checksum means "what vmguest
//! checked"; the upload streams that file with positioned reads, leaving its offset.
//!
//! Once per run, shared by the worker threads (`cache.rs`): the node's storage, its ISO
//! list, and the volume for each (node, storage, digest). The first worker to need an
//! upload makes it; the others wait for it and use its volid, or its failure.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::cache::{reuse, Kept};
use super::client::{seg, ApiError};
use super::{api, call_error, Target};
use crate::vm::{same_file, CallError, Media};

/// How long the node may take to check and store an upload.
const UPLOAD_TASK: Duration = Duration::from_secs(30 * 60);

/// The media for the IC ISO `file` (opened from `path`, its SHA-256 `digest`) on the
/// VM's node.
pub(super) fn stage(
    t: &Target,
    file: &File,
    path: &Path,
    digest: &str,
) -> Result<Media, CallError> {
    // It names the volume and the upload's boundary: 64 lower-case hex digits only.
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(CallError::Decode(format!(
            "not a SHA-256 in lower-case hex: {:?}",
            super::client::one_line(digest, 80)
        )));
    }
    let storage = storage_of(t)?;
    if let Some(volid) = local_volume(t, &storage, file, path) {
        tracing::debug!(%volid, "the IC ISO is on the node's storage already");
        return Ok(Media::iso(volid));
    }
    let key = (t.node.clone(), storage.clone(), digest.to_owned());
    let volid = t.run.staged.get_or_make(key, || {
        put_on_storage(t, &storage, digest, file).map_err(Arc::new)
    });
    reuse(volid).map(Media::iso)
}

/// The volid of the IC ISO of `digest` on `storage`: an earlier upload of that digest
/// (the name carries it), else uploaded now.
fn put_on_storage(
    t: &Target,
    storage: &str,
    digest: &str,
    file: &File,
) -> Result<String, CallError> {
    let name = format!("vmguest-ic-{digest}.iso");
    let volid = format!("{storage}:iso/{name}");
    if isos_on(t, storage)?.contains(&volid) {
        tracing::debug!(%volid, "reusing an earlier upload of the same digest");
        return Ok(volid);
    }
    upload(t, storage, &name, digest, file).map_err(call_error)?;
    Ok(volid)
}

/// The configured storage, else the node's first enabled ISO storage, asked once per
/// node and run.
fn storage_of(t: &Target) -> Result<String, CallError> {
    if let Some(s) = &t.options.storage {
        return Ok(s.clone());
    }
    let chosen = t
        .run
        .storage
        .get_or_make(t.node.clone(), || choose_storage(t).map_err(Arc::new));
    reuse(chosen)
}

fn choose_storage(t: &Target) -> Result<String, CallError> {
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

/// The volids of the ISOs on `storage` of the VM's node, listed once per run.
fn isos_on(t: &Target, storage: &str) -> Result<Arc<HashSet<String>>, CallError> {
    let listed: Kept<_> = t
        .run
        .isos
        .get_or_make((t.node.clone(), storage.to_owned()), || {
            let path = format!("/nodes/{}/storage/{}/content", seg(&t.node), seg(storage));
            let data = t
                .client
                .get(&path, &[("content", "iso")])
                .map_err(|e| Arc::new(call_error(e)))?;
            Ok(Arc::new(volids(&data)))
        });
    reuse(listed)
}

fn volids(data: &Value) -> HashSet<String> {
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["volid"].as_str().map(str::to_owned))
        .collect()
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
    fn the_upload_body_streams_the_file_from_its_start_and_leaves_its_offset() {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abc").unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        let mut read = Vec::new();
        At {
            file: &f,
            offset: 0,
        }
        .read_to_end(&mut read)
        .unwrap();
        assert_eq!(read, b"abc");
        assert_eq!(f.stream_position().unwrap(), 1);
    }

    #[test]
    fn the_iso_list_is_read_as_volids() {
        let data = json!([
            {"volid": "local:iso/a.iso", "format": "iso"},
            {"volid": "local:iso/vmguest-ic-ab.iso"},
            {"size": 1}
        ]);
        let v = volids(&data);
        assert!(
            v.contains("local:iso/vmguest-ic-ab.iso") && v.len() == 2,
            "{v:?}"
        );
        assert!(volids(&json!(null)).is_empty());
    }
}
