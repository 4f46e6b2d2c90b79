//! The API endpoints the backend uses, typed: the cluster's VMs, a VM's status and
//! configuration, writing its configuration, the monitor's read-only `info` commands,
//! and tasks. Shapes follow qemu-server (`PVE::API2::Qemu`) and pve-manager
//! (`PVE::API2::Cluster::resources`, `PVE::API2::Tasks`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{seg, ApiError, Client};

/// One VM of `GET /cluster/resources?type=vm`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Resource {
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    #[serde(default)]
    pub status: Option<String>,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: String,
}

fn decode<T: serde::de::DeserializeOwned>(request: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Decode {
        request: request.to_owned(),
        detail: e.to_string(),
    })
}

/// `/nodes/{node}/qemu/{vmid}`.
pub fn vm_path(node: &str, vmid: u32) -> String {
    format!("/nodes/{}/qemu/{vmid}", seg(node))
}

/// Every QEMU VM of the cluster (containers are left out).
pub fn qemu_vms(c: &Client) -> Result<Vec<Resource>, ApiError> {
    let data = c.get("/cluster/resources", &[("type", "vm")])?;
    let all: Vec<Resource> = decode("GET /cluster/resources", data)?;
    Ok(all.into_iter().filter(|r| r.kind == "qemu").collect())
}

/// What names the cluster: its name (`/cluster/status`, the entry of `type` `cluster`),
/// or on a node without a cluster the node's name.
pub fn cluster_name(c: &Client) -> Result<String, ApiError> {
    let data = c.get("/cluster/status", &[])?;
    let entries = data.as_array().cloned().unwrap_or_default();
    let of_type = |t: &str| {
        entries
            .iter()
            .filter(|e| e["type"] == t)
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    if let Some(name) = of_type("cluster").into_iter().next() {
        return Ok(name);
    }
    let local = entries
        .iter()
        .find(|e| e["type"] == "node" && e["local"].as_i64() == Some(1))
        .and_then(|e| e["name"].as_str().map(str::to_owned));
    local
        .or_else(|| of_type("node").into_iter().next())
        .ok_or_else(|| ApiError::Decode {
            request: "GET /cluster/status".into(),
            detail: "neither a cluster nor a node entry".into(),
        })
}

/// `status/current`: `status` (running, stopped) and QEMU's own `qmpstatus`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RunStatus {
    pub status: String,
    #[serde(default)]
    pub qmpstatus: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
}

impl RunStatus {
    /// QEMU's run state name, as the operation expects it: `qmpstatus` where the VM
    /// runs (a paused VM is `paused`, not running), else Proxmox's status.
    pub fn run_state(&self) -> String {
        match (self.status.as_str(), &self.qmpstatus) {
            ("running", Some(q)) => q.clone(),
            ("running", None) => "running".into(),
            ("stopped", _) => "shutdown".into(),
            (other, _) => other.to_owned(),
        }
    }
}

pub fn run_status(c: &Client, node: &str, vmid: u32) -> Result<RunStatus, ApiError> {
    let path = format!("{}/status/current", vm_path(node, vmid));
    let data = c.get(&path, &[])?;
    decode(&format!("GET {path}"), data)
}

/// The configuration as it applies now (`current=1`: pending changes left out), with
/// its `digest`.
pub fn vm_config(c: &Client, node: &str, vmid: u32) -> Result<Map<String, Value>, ApiError> {
    let path = format!("{}/config", vm_path(node, vmid));
    match c.get(&path, &[("current", "1")])? {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::Decode {
            request: format!("GET {path}"),
            detail: format!(
                "not an object: {}",
                super::client::one_line(&other.to_string(), 200)
            ),
        }),
    }
}

/// `PUT .../config` with `key=value` and the digest of the read it follows; the change
/// is refused when the configuration changed since. A task answer is waited for.
pub fn set_config(
    c: &Client,
    node: &str,
    vmid: u32,
    key: &str,
    value: &str,
    digest: Option<&str>,
    timeout: Duration,
) -> Result<(), ApiError> {
    let path = format!("{}/config", vm_path(node, vmid));
    let mut body = json!({ key: value });
    if let Some(d) = digest {
        body["digest"] = json!(d);
    }
    let answer = c.put(&path, &body)?;
    match answer.as_str() {
        Some(upid) if upid.starts_with("UPID:") => wait_task(c, node, upid, timeout),
        _ => Ok(()),
    }
}

/// The human monitor's answer to a read-only command (`info block`).
pub fn monitor(c: &Client, node: &str, vmid: u32, command: &str) -> Result<String, ApiError> {
    let path = format!("{}/monitor", vm_path(node, vmid));
    let data = c.post(&path, &json!({ "command": command }))?;
    Ok(data.as_str().unwrap_or_default().to_owned())
}

/// Wait until the task `upid` of `node` stops; its `exitstatus` must be `OK`.
pub fn wait_task(c: &Client, node: &str, upid: &str, timeout: Duration) -> Result<(), ApiError> {
    let path = format!("/nodes/{}/tasks/{}/status", seg(node), seg(upid));
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let data = c.get(&path, &[])?;
        if data["status"] == "stopped" {
            let exit = data["exitstatus"].as_str().unwrap_or("unknown");
            if exit == "OK" {
                return Ok(());
            }
            return Err(ApiError::Task {
                upid: upid.to_owned(),
                exitstatus: super::client::one_line(exit, 300),
            });
        }
        if started.elapsed() >= timeout {
            return Err(ApiError::TaskTimeout {
                upid: upid.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_follow_qmpstatus() {
        let s = |status: &str, q: Option<&str>| RunStatus {
            status: status.into(),
            qmpstatus: q.map(str::to_owned),
            lock: None,
        };
        assert_eq!(s("running", Some("running")).run_state(), "running");
        assert_eq!(s("running", Some("paused")).run_state(), "paused");
        assert_eq!(s("running", Some("prelaunch")).run_state(), "prelaunch");
        assert_eq!(s("running", None).run_state(), "running");
        assert_eq!(s("stopped", Some("stopped")).run_state(), "shutdown");
    }

    #[test]
    fn resources_keep_qemu_vms_only() {
        let v = serde_json::json!([
            {"vmid": 100, "name": "web", "node": "pve1", "status": "running", "type": "qemu", "id": "qemu/100"},
            {"vmid": 200, "name": "ct", "node": "pve1", "status": "running", "type": "lxc"},
            {"vmid": 101, "node": "pve2", "type": "qemu"}
        ]);
        let all: Vec<Resource> = decode("t", v).unwrap();
        let qemu: Vec<_> = all.into_iter().filter(|r| r.kind == "qemu").collect();
        assert_eq!(qemu.len(), 2);
        assert_eq!(qemu[1].name, None);
    }
}
