//! One install per VM at a time, across processes. QEMU serves one QMP client at a time,
//! so a second vmguest on the same VM would otherwise wait on a busy socket and then
//! report it as not running; with the lock it waits for the first to finish, and says so.
//!
//! The lock is an advisory `flock` on `STATE/locks/HASH.lock`, one file per VM identity.
//! The kernel releases it when its holder exits, however it exits.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Held while an install runs; dropping it releases the VM.
#[derive(Debug)]
pub struct VmLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another vmguest install on VM {vm:?} still runs after {}s", .waited.as_secs())]
    Busy { vm: String, waited: Duration },
    #[error("lock file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Take the VM's lock, waiting up to `wait`; `on_wait` runs once if it has to wait.
pub fn acquire(
    state_dir: &Path,
    vm: &str,
    identity: &str,
    wait: Duration,
    on_wait: impl FnOnce(),
) -> Result<VmLock, LockError> {
    let dir = state_dir.join("locks");
    let sha = crate::iso::sha256_bytes(identity.as_bytes());
    let path = dir.join(format!("{}.lock", &sha[..24]));
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let started = Instant::now();
    let mut on_wait = Some(on_wait);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(VmLock { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        if started.elapsed() >= wait {
            return Err(LockError::Busy {
                vm: vm.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_gives_up_after_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "vm1", "id1", Duration::ZERO, || {}).unwrap();
        let mut waited = false;
        let second = acquire(dir.path(), "vm1", "id1", Duration::from_millis(250), || {
            waited = true
        });
        assert!(waited);
        assert!(matches!(second, Err(LockError::Busy { .. })), "{second:?}");
        // Another VM is not blocked, and the lock is free once dropped.
        acquire(dir.path(), "vm2", "id2", Duration::ZERO, || {}).unwrap();
        drop(first);
        acquire(dir.path(), "vm1", "id1", Duration::ZERO, || {
            panic!("no wait")
        })
        .unwrap();
    }
}
