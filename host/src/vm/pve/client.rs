//! HTTPS to one Proxmox VE API endpoint (`https://HOST:PORT/api2/json`), with the API
//! token, and its answers and refusals as typed errors.
//!
//! `ureq` 2 is the client: synchronous like the rest of vmguest, small (no async runtime,
//! no hyper), rustls-only, and it takes a whole `rustls::ClientConfig`
//! (`AgentBuilder::tls_config`), which the pin needs (`tls.rs`). It reads no proxy from
//! the environment and follows no redirect here, so the token goes to the endpoint the
//! admin named and nowhere else. rustls runs on `ring`, which needs neither cmake nor nasm.
//!
//! Request bodies are JSON (`application/json`), which pve-http-server accepts beside
//! form encoding and which carries arrays (`agent/exec`'s `command`) as they are.
//! Answers are `{"data": ...}`; a refusal also carries `message` (pve-http-server's
//! `Formatter::Standard::prepare_response_data`), which is the status line's reason too.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::tls::{Fingerprint, Mismatch};
use super::token::ApiToken;

/// The largest answer read: file-read's 16 MiB in base64, and some.
const MAX_ANSWER: u64 = 32 << 20;

/// A privilege the token lacks, as Proxmox names it: `(/vms/100, VM.Monitor)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privilege {
    pub path: String,
    pub name: String,
}

/// How an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the token was refused.
    #[error("{request}: authentication failure for API token {token_id} at {endpoint}: {reason}")]
    Unauthorized {
        request: String,
        endpoint: String,
        token_id: String,
        reason: String,
    },
    /// 403: the token lacks a privilege; Proxmox's message names the path and privilege.
    #[error("{request}: permission denied to API token {token_id}: {message}")]
    Forbidden {
        request: String,
        token_id: String,
        message: String,
        privilege: Option<Privilege>,
    },
    /// The certificate did not match the pinned fingerprint; nothing was sent.
    #[error(
        "{endpoint}: the server's certificate has SHA-256 fingerprint {seen}, not the pinned \
         {expected}; nothing was sent"
    )]
    Pin {
        endpoint: String,
        expected: Fingerprint,
        seen: Fingerprint,
    },
    /// Any other refusal: its status, Proxmox's message and per-parameter errors.
    #[error("{request}: HTTP {status}: {message}")]
    Status {
        request: String,
        status: u16,
        message: String,
    },
    /// No answer: connection, TLS (an unverifiable certificate), timeout.
    #[error("{request}: cannot reach {endpoint}")]
    Transport {
        request: String,
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A task (`UPID:...`) ended with an exit status other than `OK`.
    #[error("task {upid} failed: {exitstatus}")]
    Task { upid: String, exitstatus: String },
    /// A task was still running when vmguest stopped waiting.
    #[error("task {upid} still running after {:.0}s", .waited.as_secs_f64())]
    TaskTimeout { upid: String, waited: Duration },
    /// An answer of an unexpected shape.
    #[error("{request}: unexpected answer: {detail}")]
    Decode { request: String, detail: String },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Forbidden { .. } => Some(403),
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Proxmox's own message of a refusal.
    pub fn message(&self) -> Option<&str> {
        match self {
            ApiError::Forbidden { message, .. } | ApiError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// One endpoint and the token used on it.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    endpoint: String,
    token: ApiToken,
    pin: Option<Fingerprint>,
    mismatch: Arc<Mismatch>,
}

impl Client {
    /// `host` as in a URL (`[::1]` bracketed).
    pub fn new(
        host: &str,
        port: u16,
        token: ApiToken,
        tls: Arc<rustls::ClientConfig>,
        pin: Option<Fingerprint>,
        mismatch: Arc<Mismatch>,
        timeout: Duration,
    ) -> Client {
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(timeout)
            .timeout_read(timeout.max(Duration::from_secs(30)))
            .timeout_write(timeout.max(Duration::from_secs(60)))
            .redirects(0)
            .user_agent(concat!("vmguest/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            base: format!("https://{host}:{port}/api2/json"),
            endpoint: format!("{host}:{port}"),
            token,
            pin,
            mismatch,
        }
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        self.call("GET", path, query, |r| r.call().map_err(Box::new))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.call("POST", path, &[], |r| {
            r.set("Content-Type", "application/json")
                .send_bytes(&bytes)
                .map_err(Box::new)
        })
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.call("PUT", path, &[], |r| {
            r.set("Content-Type", "application/json")
                .send_bytes(&bytes)
                .map_err(Box::new)
        })
    }

    /// POST a streamed body of `content_type` and `length` bytes.
    pub fn post_stream(
        &self,
        path: &str,
        content_type: &str,
        length: u64,
        body: impl Read,
    ) -> Result<Value, ApiError> {
        self.call("POST", path, &[], |r| {
            r.set("Content-Type", content_type)
                .set("Content-Length", &length.to_string())
                .send(body)
                .map_err(Box::new)
        })
    }

    /// Send, and take the answer's `data`.
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        send: impl FnOnce(ureq::Request) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<Value, ApiError> {
        let request = format!("{method} {path}");
        // `seg` keeps dots; a segment of dots alone would climb the URL's path.
        if path
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s.bytes().all(|b| b == b'.'))
        {
            return Err(ApiError::Decode {
                request,
                detail: "a name from the server made an empty, . or .. path segment".into(),
            });
        }
        let mut req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Accept", "application/json")
            .set("Authorization", &self.token.header());
        for (k, v) in query {
            req = req.query(k, v);
        }
        let started = std::time::Instant::now();
        let result = send(req);
        tracing::debug!(%request, ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "Proxmox VE API");
        let failed = match result {
            Ok(resp) => {
                let body = read_body(resp).map_err(|detail| ApiError::Decode {
                    request: request.clone(),
                    detail,
                })?;
                return Ok(body.get("data").cloned().unwrap_or(Value::Null));
            }
            Err(e) => e,
        };
        match *failed {
            ureq::Error::Status(status, resp) => Err(self.refusal(request, status, resp)),
            ureq::Error::Transport(t) => {
                if let (Some(expected), Some(seen)) = (self.pin, self.mismatch.take()) {
                    return Err(ApiError::Pin {
                        endpoint: self.endpoint.clone(),
                        expected,
                        seen,
                    });
                }
                Err(ApiError::Transport {
                    request,
                    endpoint: self.endpoint.clone(),
                    source: Box::new(t),
                })
            }
        }
    }

    fn refusal(&self, request: String, status: u16, resp: ureq::Response) -> ApiError {
        let reason = resp.status_text().to_owned();
        let body = read_body(resp).unwrap_or(Value::Null);
        let message = refusal_message(&reason, &body, status);
        match status {
            401 => ApiError::Unauthorized {
                request,
                endpoint: self.endpoint.clone(),
                token_id: self.token.id().to_owned(),
                reason: message,
            },
            403 => ApiError::Forbidden {
                request,
                token_id: self.token.id().to_owned(),
                privilege: missing_privilege(&message),
                message,
            },
            _ => ApiError::Status {
                request,
                status,
                message,
            },
        }
    }
}

fn read_body(resp: ureq::Response) -> Result<Value, String> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 >= MAX_ANSWER {
        return Err(format!("an answer of more than {MAX_ANSWER} bytes"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// Proxmox's message (the body's `message`, else the reason phrase) with the
/// per-parameter `errors`, on one line, cut to a sane length.
fn refusal_message(reason: &str, body: &Value, status: u16) -> String {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(reason);
    let mut text = message.trim().to_owned();
    if text.is_empty() {
        text = format!("status {status}");
    }
    if let Some(errors) = body.get("errors").and_then(Value::as_object) {
        let parts: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or(&v.to_string()).trim()))
            .collect();
        if !parts.is_empty() {
            text = format!("{text} ({})", parts.join("; "));
        }
    }
    one_line(&text, 500)
}

/// Server text for a message: control characters become spaces, at most `max` bytes.
pub fn one_line(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::vm::channel::truncate(clean.trim(), max)
}

/// `Permission check failed (/vms/100, VM.Monitor)`: the path and the privilege, as
/// pve-access-control's `RPCEnvironment::check` words it.
pub fn missing_privilege(message: &str) -> Option<Privilege> {
    let start = message.find("Permission check failed (")? + "Permission check failed (".len();
    let inner = &message[start..];
    let inner = &inner[..inner.find(')')?];
    let (path, name) = inner.split_once(',')?;
    let (path, name) = (path.trim(), name.trim());
    if path.is_empty() || name.is_empty() {
        return None;
    }
    Some(Privilege {
        path: path.to_owned(),
        name: name.to_owned(),
    })
}

/// One path segment, percent-encoded: a node, storage or volume name from the server
/// never adds a segment or a query to a URL (and `call` refuses `.` and `..`).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_privilege_is_read_from_proxmox_message() {
        assert_eq!(
            missing_privilege("Permission check failed (/vms/100, VM.Monitor)"),
            Some(Privilege {
                path: "/vms/100".into(),
                name: "VM.Monitor".into()
            })
        );
        assert_eq!(
            missing_privilege("Permission check failed (/, Sys.Modify)\n"),
            Some(Privilege {
                path: "/".into(),
                name: "Sys.Modify".into()
            })
        );
        assert_eq!(missing_privilege("Permission check failed"), None);
        assert_eq!(missing_privilege("no such VM"), None);
    }

    #[test]
    fn a_refusal_keeps_proxmox_message_and_parameter_errors() {
        let body = json!({"data": null, "message": "Permission check failed (/vms/100, VM.Config.CDROM)\n"});
        assert_eq!(
            refusal_message("whatever", &body, 403),
            "Permission check failed (/vms/100, VM.Config.CDROM)"
        );
        let body =
            json!({"data": null, "errors": {"digest": "value does not match the regex pattern"}});
        assert_eq!(
            refusal_message("Parameter verification failed.", &body, 400),
            "Parameter verification failed. (digest: value does not match the regex pattern)"
        );
        assert_eq!(refusal_message("", &Value::Null, 500), "status 500");
        assert_eq!(one_line("a\x1b[2Jb\nc", 100), "a [2Jb c");
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(seg("pve-1"), "pve-1");
        assert_eq!(seg("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(
            seg("UPID:pve1:0000:1:2:upload::root@pam!t:"),
            "UPID%3Apve1%3A0000%3A1%3A2%3Aupload%3A%3Aroot%40pam%21t%3A"
        );
    }
}
