//! The guest agent through the API (qemu-server's `PVE::API2::Qemu::Agent`): Proxmox
//! talks to qemu-ga, vmguest talks to Proxmox. Differences from the socket:
//! - `exec` takes `command` as an array and has no environment: a Linux command with
//!   variables runs under `/usr/bin/env`;
//! - `exec-status` answers with stdout and stderr already decoded from base64;
//! - `file-read` takes `offset`, `count` and `decode=0` (base64 back) on current
//!   releases; older ones read the whole file and decode it, and are read that way;
//! - `file-write` takes at most 60 KiB of content per call, sent as base64 (`encode=0`).
//!
//! The agent is there when the configuration enables it and it answers `ping`; a VM
//! whose agent is off, or does not start within `agent_ready`, has none, and the
//! install falls back to autorun as elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::client::ApiError;
use super::{call_error, drives, Target};
use crate::vm::{CallError, ExecStatus, FsInfo, GuestAgent, GuestOsInfo};

/// `file-read`'s largest `count` (`$MAX_READ_SIZE`, 16 MiB).
const READ_MAX: usize = 16 << 20;

/// `file-write`'s `content` limit (`maxLength => 60 * 1024`), in base64 characters.
const WRITE_MAX_B64: usize = 60 * 1024;

/// The agent of `t`, once it answers; `None` when it is off or never starts.
pub(super) fn connect(t: Arc<Target>) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
    let config = t.config()?;
    if !drives::agent_enabled(&config) {
        return Ok(None);
    }
    let give_up = Instant::now() + t.timeouts.agent_ready;
    loop {
        match t.client.post(&t.path("/agent/ping"), &json!({})) {
            Ok(_) => return Ok(Some(Box::new(PveAgent { t }))),
            Err(e) if agent_absent(&e) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) if agent_absent(&e) => {
                tracing::debug!("guest agent: {}", crate::hresult::chain(&e));
                return Ok(None);
            }
            Err(e) => return Err(call_error(e)),
        }
    }
}

/// qemu-server's `agent_available` and `assert_agent_available` refuse with 500 and a
/// fixed text ("No QEMU guest agent configured", "QEMU guest agent is not running");
/// Proxmox gives no other sign, so this is the one place that reads it.
fn agent_absent(e: &ApiError) -> bool {
    e.status() == Some(500)
        && e.message().is_some_and(|m| {
            m.contains("guest agent is not running") || m.contains("No QEMU guest agent configured")
        })
}

/// An agent that went away mid-call is a disconnect, as on the socket.
fn agent_error(e: ApiError) -> CallError {
    if agent_absent(&e) {
        return CallError::Closed;
    }
    call_error(e)
}

struct PveAgent {
    t: Arc<Target>,
}

impl PveAgent {
    fn get(&self, tail: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        self.t
            .client
            .get(&self.t.path(tail), query)
            .map_err(agent_error)
    }

    fn post(&self, tail: &str, body: &Value) -> Result<Value, CallError> {
        self.t
            .client
            .post(&self.t.path(tail), body)
            .map_err(agent_error)
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `sh -c` script: export each `K=V` argument up to `--`, then run the rest. A `K=V`
/// always holds `=`, so it is never the `--`.
const EXPORT_THEN_EXEC: &str =
    "while [ \"$1\" != -- ]; do export \"$1\"; shift; done; shift; exec \"$@\"";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl GuestAgent for PveAgent {
    fn os_info(&mut self) -> Result<GuestOsInfo, CallError> {
        let data = self.get("/agent/get-osinfo", &[])?;
        let r = &data["result"];
        Ok(GuestOsInfo {
            id: text(r, "id"),
            name: text(r, "name"),
            pretty_name: text(r, "pretty-name"),
            version_id: text(r, "version-id"),
            kernel_release: text(r, "kernel-release"),
            machine: text(r, "machine"),
        })
    }

    fn exec(&mut self, path: &str, args: &[String], env: &[String]) -> Result<i64, CallError> {
        let mut command: Vec<String> = Vec::new();
        if !env.is_empty() {
            // The API's exec has no environment (qemu-server `Agent.pm` passes only
            // `path` and `arg`): a POSIX shell exports it first. Only Linux installers
            // get one, and `/bin/sh` is the one program every such guest has (busybox
            // guests have no `/usr/bin/env`). The values stay arguments, never script.
            command.extend([
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                EXPORT_THEN_EXEC.to_owned(),
                "sh".to_owned(),
            ]);
            command.extend(env.iter().cloned());
            command.push("--".to_owned());
        }
        command.push(path.to_owned());
        command.extend(args.iter().cloned());
        let data = self.post("/agent/exec", &json!({ "command": command }))?;
        data["pid"]
            .as_i64()
            .ok_or_else(|| CallError::Decode(format!("agent/exec answered without a pid: {data}")))
    }

    fn exec_status(&mut self, pid: i64) -> Result<ExecStatus, CallError> {
        let data = self.get("/agent/exec-status", &[("pid", &pid.to_string())])?;
        let keep = |key: &str, stream: &str| {
            let s = text(&data, key).unwrap_or_default();
            crate::vm::agent::kept_output(pid, stream, s.into_bytes())
        };
        let exited = match &data["exited"] {
            Value::Bool(b) => *b,
            v => v.as_i64().unwrap_or(0) != 0,
        };
        Ok(ExecStatus {
            exited,
            exit_code: data["exitcode"].as_i64(),
            signal: data["signal"].as_i64(),
            stdout: keep("out-data", "stdout"),
            stderr: keep("err-data", "stderr"),
        })
    }

    fn read_file(&mut self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, CallError> {
        let count = max.clamp(1, READ_MAX);
        let (off, count) = (offset.to_string(), count.to_string());
        let query = [
            ("file", path),
            ("offset", &off),
            ("count", &count),
            ("decode", "0"),
        ];
        match self.t.client.get(&self.t.path("/agent/file-read"), &query) {
            Ok(data) => {
                let content = text(&data, "content").unwrap_or_default();
                let mut bytes = b64()
                    .decode(content.trim())
                    .map_err(|e| CallError::Decode(format!("agent/file-read content: {e}")))?;
                bytes.truncate(max);
                Ok(bytes)
            }
            // A release without offset, count and decode refuses them as parameters.
            Err(e) if e.status() == Some(400) => {
                let data = self.get("/agent/file-read", &[("file", path)])?;
                let whole = decoded_bytes(&text(&data, "content").unwrap_or_default());
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(whole.len());
                let end = start.saturating_add(max).min(whole.len());
                Ok(whole[start..end].to_vec())
            }
            Err(e) => Err(agent_error(e)),
        }
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), CallError> {
        let content = b64().encode(data);
        if content.len() > WRITE_MAX_B64 {
            return Err(CallError::Decode(format!(
                "{} bytes for {path}: more than the {} bytes Proxmox's agent/file-write takes",
                data.len(),
                WRITE_MAX_B64 / 4 * 3
            )));
        }
        self.post(
            "/agent/file-write",
            &json!({ "file": path, "content": content, "encode": 0 }),
        )?;
        Ok(())
    }

    fn fs_info(&mut self) -> Result<Vec<FsInfo>, CallError> {
        let data = self.get("/agent/get-fsinfo", &[])?;
        let mounts = data["result"].as_array().cloned().unwrap_or_default();
        Ok(mounts
            .iter()
            .map(|m| FsInfo {
                mountpoint: text(m, "mountpoint").unwrap_or_default(),
                fs_type: text(m, "type").unwrap_or_default(),
            })
            .collect())
    }

    /// `status/reboot`: Proxmox shuts the guest down (through the agent where it is
    /// enabled) and starts it again; the task is not waited for, the agent comes back
    /// with the guest.
    fn reboot(&mut self) -> Result<(), CallError> {
        self.t
            .client
            .post(&self.t.path("/status/reboot"), &json!({}))
            .map_err(call_error)?;
        Ok(())
    }
}

/// An older `file-read`'s `content`: the file's bytes, decoded by Proxmox and sent as a
/// JSON string of one character per byte.
fn decoded_bytes(content: &str) -> Vec<u8> {
    content
        .chars()
        .flat_map(|c| match u8::try_from(u32::from(c)) {
            Ok(b) => vec![b],
            Err(_) => c.to_string().into_bytes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_file_read_content_is_one_character_per_byte() {
        assert_eq!(
            decoded_bytes("ab\u{00ff}\u{0000}"),
            vec![b'a', b'b', 0xff, 0]
        );
    }
}
