//! Opening an IC ISO: every place that reads one opens it here.
//!
//! A candidate's content decides what runs as root in every guest, so it must pass the
//! ownership rule of `crate::trust`, and the file must be a regular file. The path is
//! opened with `O_NONBLOCK`, so a FIFO or a device named `x.iso` cannot block the
//! open, and the type is taken from the descriptor (`fstat`), not from the path, before
//! anything is read. The flag is then cleared: QEMU gets this descriptor.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::trust::{self, Untrusted};

/// Why an ISO was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not trusted")]
    Untrusted(#[source] Untrusted),
    #[error("not a regular file: {0}")]
    NotRegular(&'static str),
    #[error("cannot open")]
    Io(#[source] io::Error),
}

impl OpenError {
    /// The file is missing (as opposed to present and refused, or failing to open).
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpenError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Open `path` for reading if it is a trusted regular file.
pub fn open(path: &Path) -> Result<File, OpenError> {
    trust::check(path).map_err(|e| match e {
        // Missing is missing, not untrusted.
        Untrusted::Unreadable { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            OpenError::Io(source)
        }
        e => OpenError::Untrusted(e),
    })?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(OpenError::Io)?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(OpenError::NotRegular(if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "of another type"
        }));
    }
    // The path was checked; the descriptor is what will be read.
    trust::check_metadata(path, &meta, true).map_err(OpenError::Untrusted)?;
    clear_nonblock(&file).map_err(OpenError::Io)?;
    Ok(file)
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL take no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    fn mkfifo(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.iso");
        mkfifo(&fifo);
        let start = Instant::now();
        assert!(matches!(open(&fifo), Err(OpenError::NotRegular("a FIFO"))));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_trusted_file_opens_blocking_and_an_untrusted_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ic.iso");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let file = open(&f).unwrap();
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert!(matches!(
            open(&f),
            Err(OpenError::Untrusted(Untrusted::Writable { .. }))
        ));
        assert!(open(&dir.path().join("missing.iso"))
            .unwrap_err()
            .is_not_found());
    }
}
