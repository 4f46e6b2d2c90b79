//! [`GuestAgent`] over the QEMU guest agent, on any transport: its own socket or
//! libvirt's agent channel.

use std::path::Path;
use std::time::Duration;

use super::qga::{AgentTransport, Qga};
use super::{CallError, ExecStatus, FsInfo, GuestAgent, GuestOsInfo};

/// The QEMU guest agent's commands over any transport: its own socket ([`Qga`]) or
/// libvirt's agent channel.
pub struct QemuAgent<T: AgentTransport = Qga> {
    qga: T,
}

impl<T: AgentTransport> QemuAgent<T> {
    pub fn over(transport: T) -> Self {
        QemuAgent { qga: transport }
    }
}

impl QemuAgent {
    pub fn connect(
        socket: &Path,
        timeout: Duration,
        ready_within: Duration,
    ) -> Result<QemuAgent, CallError> {
        Ok(QemuAgent {
            qga: Qga::connect(socket, timeout, ready_within)?,
        })
    }
}

/// Guest file handles are closed on every path, or the agent leaks them.
struct GuestFile<'a, T: AgentTransport> {
    qga: &'a mut T,
    handle: i64,
}

impl<'a, T: AgentTransport> GuestFile<'a, T> {
    fn open(qga: &'a mut T, path: &str, mode: &str) -> Result<Self, CallError> {
        let handle = qga.execute(qapi_qga::guest_file_open {
            path: path.to_owned(),
            mode: Some(mode.to_owned()),
        })?;
        Ok(GuestFile { qga, handle })
    }
}

impl<T: AgentTransport> Drop for GuestFile<'_, T> {
    fn drop(&mut self) {
        let _ = self.qga.execute(qapi_qga::guest_file_close {
            handle: self.handle,
        });
    }
}

/// Bytes kept of each output stream of a guest process. The output ends up in reports,
/// error messages and the terminal; 64 KiB is as much as the plugin host keeps of a
/// plugin's (`plugin::limits::OUTPUT_CAP`), and far more than any installer's last lines.
pub const EXEC_OUTPUT_KEEP: usize = 64 * 1024;

/// What is kept of one output stream: up to [`EXEC_OUTPUT_KEEP`] bytes, its start and its
/// end (where an installer says why it failed), with the count of the bytes dropped
/// between them. Cut as bytes, then read as UTF-8; a character cut in two shows as
/// U+FFFD. (The plugin host's `CappedOutput` is a wasmtime stream that keeps the start;
/// this output arrives whole, so only its counting is the same.)
pub(crate) fn kept_output(pid: i64, stream: &str, data: Vec<u8>) -> String {
    if data.len() <= EXEC_OUTPUT_KEEP {
        return String::from_utf8_lossy(&data).into_owned();
    }
    let half = EXEC_OUTPUT_KEEP / 2;
    let dropped = data.len() - 2 * half;
    tracing::debug!(pid, stream, dropped, "guest process output cut");
    format!(
        "{}\n[... {dropped} bytes of {stream} dropped ...]\n{}",
        String::from_utf8_lossy(&data[..half]),
        String::from_utf8_lossy(&data[data.len() - half..])
    )
}

/// qemu-ga answers `guest-exec-status` for a pid it did not start (it was restarted
/// since) with a GenericError whose text is the only sign ("Invalid parameter 'pid'",
/// `QERR_INVALID_PARAMETER` in `qga/commands.c`; libvirt passes it on inside its own
/// message); this is the one place that reads it.
fn unknown_pid(e: CallError, pid: i64) -> CallError {
    match e {
        CallError::Qapi { desc, .. } if desc.contains("Invalid parameter 'pid'") => {
            CallError::UnknownProcess(pid)
        }
        other => other,
    }
}

/// Largest chunk asked of the agent at once (its replies are base64 in one JSON line).
const READ_CHUNK: usize = 48 * 1024;

impl<T: AgentTransport> GuestAgent for QemuAgent<T> {
    fn os_info(&mut self) -> Result<GuestOsInfo, CallError> {
        let i = self.qga.execute(qapi_qga::guest_get_osinfo {})?;
        Ok(GuestOsInfo {
            id: i.id,
            name: i.name,
            pretty_name: i.pretty_name,
            version_id: i.version_id,
            kernel_release: i.kernel_release,
            machine: i.machine,
        })
    }

    fn exec(&mut self, path: &str, args: &[String], env: &[String]) -> Result<i64, CallError> {
        let r = self.qga.execute(qapi_qga::guest_exec {
            path: path.to_owned(),
            arg: Some(args.to_vec()),
            env: (!env.is_empty()).then(|| env.to_vec()),
            input_data: None,
            capture_output: Some(qapi_qga::GuestExecCaptureOutput::flag(true)),
        })?;
        Ok(r.pid)
    }

    fn exec_status(&mut self, pid: i64) -> Result<ExecStatus, CallError> {
        let s = self
            .qga
            .execute(qapi_qga::guest_exec_status { pid })
            .map_err(|e| unknown_pid(e, pid))?;
        Ok(ExecStatus {
            exited: s.exited,
            exit_code: s.exitcode,
            signal: s.signal,
            stdout: kept_output(pid, "stdout", s.out_data.unwrap_or_default()),
            stderr: kept_output(pid, "stderr", s.err_data.unwrap_or_default()),
        })
    }

    fn read_file(&mut self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, CallError> {
        let file = GuestFile::open(&mut self.qga, path, "r")?;
        if offset > 0 {
            file.qga.execute(qapi_qga::guest_file_seek {
                handle: file.handle,
                offset: offset as i64,
                whence: qapi_qga::GuestFileWhence::name(qapi_qga::QGASeek::set),
            })?;
        }
        let mut out = Vec::new();
        while out.len() < max {
            let want = (max - out.len()).min(READ_CHUNK);
            let r = file.qga.execute(qapi_qga::guest_file_read {
                handle: file.handle,
                count: Some(want as i64),
            })?;
            out.extend_from_slice(&r.buf_b64);
            if r.eof || r.buf_b64.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    fn fs_info(&mut self) -> Result<Vec<FsInfo>, CallError> {
        let list = self.qga.execute(qapi_qga::guest_get_fsinfo {})?;
        Ok(list
            .into_iter()
            .map(|f| FsInfo {
                mountpoint: f.mountpoint,
                fs_type: f.type_,
            })
            .collect())
    }

    fn disabled_commands(&mut self) -> Result<Option<Vec<String>>, CallError> {
        let info = self.qga.execute(qapi_qga::guest_info {})?;
        Ok(Some(
            info.supported_commands
                .into_iter()
                .filter(|c| !c.enabled)
                .map(|c| c.name)
                .collect(),
        ))
    }

    fn resync(&mut self, within: Duration) -> Result<(), CallError> {
        self.qga.resync(within)
    }

    fn reboot(&mut self) -> Result<(), CallError> {
        self.qga.send_only(qapi_qga::guest_shutdown {
            mode: Some(qapi_qga::GuestShutdownMode::Reboot),
        })
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), CallError> {
        let file = GuestFile::open(&mut self.qga, path, "w")?;
        for chunk in data.chunks(READ_CHUNK) {
            file.qga.execute(qapi_qga::guest_file_write {
                handle: file.handle,
                buf_b64: chunk.to_vec(),
                count: None,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_its_start_and_end_and_counts_the_rest() {
        let short = b"installed\n".to_vec();
        assert_eq!(kept_output(1, "stdout", short), "installed\n");
        let mut long = vec![b'a'; EXEC_OUTPUT_KEEP];
        long.extend(vec![b'b'; 1000]);
        long.extend(b"error: why it failed\n");
        let kept = kept_output(1, "stderr", long.clone());
        assert!(kept.len() < EXEC_OUTPUT_KEEP + 100, "{}", kept.len());
        assert!(kept.starts_with("aaaa"));
        assert!(kept.ends_with("error: why it failed\n"));
        let dropped = long.len() - EXEC_OUTPUT_KEEP;
        assert!(kept.contains(&format!("[... {dropped} bytes of stderr dropped ...]")));
    }
}
