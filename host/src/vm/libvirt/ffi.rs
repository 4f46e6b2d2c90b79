//! The few libvirt C calls vmguest makes, loaded with `dlopen` on the first libvirt URI.
//!
//! Why not link libvirt: `libvirt.so.0` pulls in about 55 more shared libraries (GnuTLS,
//! libxml2, glib, …), and loading them took about 9 ms of every process start, also for
//! socket-directory installs that never talk to libvirt (docs/benchmarks.md, media
//! phase). Loading on demand keeps that cost where libvirt is used, and lets the binary
//! run on a host without `libvirt0` installed: a libvirt URI then fails with a clear
//! error instead of the loader refusing to start vmguest.
//!
//! `libloading` does the `dlopen`/`dlsym` with `dlerror` handled per call; the
//! signatures and constants below are libvirt's stable public ABI (`libvirt-domain.h`,
//! `libvirt-host.h`, `virterror.h`, `libvirt-qemu.h`), which libvirt never changes.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use libloading::Library;

pub use crate::vm::libvirt_error::{Code, Error};

/// `virDomainState`.
pub const DOMAIN_RUNNING: c_int = 1;
pub const DOMAIN_BLOCKED: c_int = 2;
pub const DOMAIN_PAUSED: c_int = 3;
pub const DOMAIN_SHUTDOWN: c_int = 4;
pub const DOMAIN_SHUTOFF: c_int = 5;
pub const DOMAIN_CRASHED: c_int = 6;
pub const DOMAIN_PMSUSPENDED: c_int = 7;

/// `virDomainModificationImpact`: change the running domain only.
pub const AFFECT_LIVE: c_uint = 1;

/// `VIR_UUID_STRING_BUFLEN`.
const UUID_STRING_BUFLEN: usize = 37;

impl Error {
    /// The calling thread's last libvirt error, read right after the call that failed.
    fn last(api: &Api) -> Error {
        // SAFETY: virGetLastError returns NULL or a pointer to this thread's error, valid
        // until the next libvirt call on this thread; it is copied before that.
        unsafe {
            let raw = (api.get_last_error)();
            if raw.is_null() {
                return Error::local(1, "an unknown libvirt error occurred".into());
            }
            let message = if (*raw).message.is_null() {
                String::new()
            } else {
                CStr::from_ptr((*raw).message)
                    .to_string_lossy()
                    .into_owned()
            };
            Error {
                code: (*raw).code,
                domain: (*raw).domain,
                level: (*raw).level,
                message,
            }
        }
    }
}

/// The head of `struct _virError`; vmguest reads only these fields and never owns one.
#[repr(C)]
struct RawError {
    code: c_int,
    domain: c_int,
    message: *const c_char,
    level: c_int,
}

type ConnPtr = *mut c_void;
type DomPtr = *mut c_void;
type ErrorFunc = unsafe extern "C" fn(*mut c_void, *const RawError);

/// The entry points, resolved once; the libraries stay loaded for the process's life.
struct Api {
    connect_open: unsafe extern "C" fn(*const c_char) -> ConnPtr,
    connect_close: unsafe extern "C" fn(ConnPtr) -> c_int,
    list_all_domains: unsafe extern "C" fn(ConnPtr, *mut *mut DomPtr, c_uint) -> c_int,
    lookup_by_name: unsafe extern "C" fn(ConnPtr, *const c_char) -> DomPtr,
    domain_free: unsafe extern "C" fn(DomPtr) -> c_int,
    get_name: unsafe extern "C" fn(DomPtr) -> *const c_char,
    get_uuid_string: unsafe extern "C" fn(DomPtr, *mut c_char) -> c_int,
    get_state: unsafe extern "C" fn(DomPtr, *mut c_int, *mut c_int, c_uint) -> c_int,
    get_xml_desc: unsafe extern "C" fn(DomPtr, c_uint) -> *mut c_char,
    update_device_flags: unsafe extern "C" fn(DomPtr, *const c_char, c_uint) -> c_int,
    agent_command: unsafe extern "C" fn(DomPtr, *const c_char, c_int, c_uint) -> *mut c_char,
    get_last_error: unsafe extern "C" fn() -> *const RawError,
    _libs: [Library; 2],
}

/// libvirt prints every error to stderr unless told otherwise; vmguest reports them.
unsafe extern "C" fn quiet(_data: *mut c_void, _error: *const RawError) {}

impl Api {
    fn load() -> Result<Api, String> {
        // SAFETY: loading runs the libraries' constructors, which only initialise
        // libvirt's own state; each symbol is given its C signature from libvirt's headers.
        unsafe {
            let open = |name: &str| {
                Library::new(name).map_err(|e| {
                    format!("cannot load {name} (is Debian's libvirt0 package installed?): {e}")
                })
            };
            let lib = open("libvirt.so.0")?;
            let qemu = open("libvirt-qemu.so.0")?;
            macro_rules! sym {
                ($lib:ident, $name:literal) => {
                    *$lib
                        .get(concat!($name, "\0").as_bytes())
                        .map_err(|e| format!("libvirt has no {}: {e}", $name))?
                };
            }
            let initialize: unsafe extern "C" fn() -> c_int = sym!(lib, "virInitialize");
            let set_error_func: unsafe extern "C" fn(*mut c_void, Option<ErrorFunc>) =
                sym!(lib, "virSetErrorFunc");
            if initialize() < 0 {
                return Err("virInitialize failed".into());
            }
            set_error_func(std::ptr::null_mut(), Some(quiet));
            Ok(Api {
                connect_open: sym!(lib, "virConnectOpen"),
                connect_close: sym!(lib, "virConnectClose"),
                list_all_domains: sym!(lib, "virConnectListAllDomains"),
                lookup_by_name: sym!(lib, "virDomainLookupByName"),
                domain_free: sym!(lib, "virDomainFree"),
                get_name: sym!(lib, "virDomainGetName"),
                get_uuid_string: sym!(lib, "virDomainGetUUIDString"),
                get_state: sym!(lib, "virDomainGetState"),
                get_xml_desc: sym!(lib, "virDomainGetXMLDesc"),
                update_device_flags: sym!(lib, "virDomainUpdateDeviceFlags"),
                agent_command: sym!(qemu, "virDomainQemuAgentCommand"),
                get_last_error: sym!(lib, "virGetLastError"),
                _libs: [lib, qemu],
            })
        }
    }
}

fn api() -> Result<&'static Api, Error> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load)
        .as_ref()
        .map_err(|e| Error::local(3, e.clone()))
}

fn c_string(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::local(1, format!("{s:?} contains a NUL byte")))
}

/// A string libvirt allocated and the caller must free.
///
/// SAFETY: `p` is NULL or a NUL-terminated string from libvirt's allocator (malloc).
unsafe fn owned_string(api: &Api, p: *mut c_char) -> Result<String, Error> {
    if p.is_null() {
        return Err(Error::last(api));
    }
    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
    libc::free(p.cast());
    Ok(s)
}

/// An open connection (`virConnectPtr`), closed on drop.
pub struct Connect {
    ptr: ConnPtr,
    api: &'static Api,
}

// SAFETY: libvirt connections and domain objects are thread-safe (libvirt's threading
// guide: "the connection object can be used concurrently from multiple threads").
unsafe impl Send for Connect {}
unsafe impl Sync for Connect {}
unsafe impl Send for Domain {}
unsafe impl Sync for Domain {}

impl Connect {
    /// `virConnectOpen`; `None` is libvirt's default URI.
    pub fn open(uri: Option<&str>) -> Result<Connect, Error> {
        let api = api()?;
        let uri = uri.map(c_string).transpose()?;
        // SAFETY: the URI is NULL or a valid C string for the call's duration.
        let ptr =
            unsafe { (api.connect_open)(uri.as_ref().map_or(std::ptr::null(), |u| u.as_ptr())) };
        if ptr.is_null() {
            return Err(Error::last(api));
        }
        Ok(Connect { ptr, api })
    }

    /// Every domain, running or not (`virConnectListAllDomains`, no filter).
    pub fn list_all_domains(&self) -> Result<Vec<Domain>, Error> {
        let mut list: *mut DomPtr = std::ptr::null_mut();
        // SAFETY: libvirt fills `list` with `n` owned domains in a malloc'd array.
        unsafe {
            let n = (self.api.list_all_domains)(self.ptr, &mut list, 0);
            if n < 0 {
                return Err(Error::last(self.api));
            }
            let domains = (0..n as usize)
                .map(|i| Domain {
                    ptr: *list.add(i),
                    api: self.api,
                })
                .collect();
            libc::free(list.cast());
            Ok(domains)
        }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        // SAFETY: the pointer came from virConnectOpen and is closed once.
        unsafe { (self.api.connect_close)(self.ptr) };
    }
}

/// A domain reference (`virDomainPtr`), freed on drop.
pub struct Domain {
    ptr: DomPtr,
    api: &'static Api,
}

/// Domain lookups this process made, for the debug log: each one is a round trip to the
/// daemon (over ssh, a network one).
static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// How many domains this process looked up so far.
pub fn lookups() -> usize {
    LOOKUPS.load(Ordering::Relaxed)
}

impl Domain {
    pub fn lookup_by_name(conn: &Connect, name: &str) -> Result<Domain, Error> {
        LOOKUPS.fetch_add(1, Ordering::Relaxed);
        let name = c_string(name)?;
        // SAFETY: a live connection and a valid C string.
        let ptr = unsafe { (conn.api.lookup_by_name)(conn.ptr, name.as_ptr()) };
        if ptr.is_null() {
            return Err(Error::last(conn.api));
        }
        Ok(Domain { ptr, api: conn.api })
    }

    pub fn name(&self) -> Result<String, Error> {
        // SAFETY: the returned name belongs to the domain object and is copied at once.
        unsafe {
            let p = (self.api.get_name)(self.ptr);
            if p.is_null() {
                return Err(Error::last(self.api));
            }
            Ok(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }

    pub fn uuid_string(&self) -> Result<String, Error> {
        let mut buf = [0 as c_char; UUID_STRING_BUFLEN];
        // SAFETY: the buffer has VIR_UUID_STRING_BUFLEN bytes, as the call requires.
        unsafe {
            if (self.api.get_uuid_string)(self.ptr, buf.as_mut_ptr()) < 0 {
                return Err(Error::last(self.api));
            }
            Ok(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
        }
    }

    /// `(virDomainState, reason)`.
    pub fn state(&self) -> Result<(c_int, c_int), Error> {
        let (mut state, mut reason) = (0, 0);
        // SAFETY: two out-parameters on the stack.
        if unsafe { (self.api.get_state)(self.ptr, &mut state, &mut reason, 0) } < 0 {
            return Err(Error::last(self.api));
        }
        Ok((state, reason))
    }

    pub fn xml_desc(&self, flags: c_uint) -> Result<String, Error> {
        // SAFETY: the result is a malloc'd string that owned_string frees.
        unsafe { owned_string(self.api, (self.api.get_xml_desc)(self.ptr, flags)) }
    }

    pub fn update_device_flags(&self, xml: &str, flags: c_uint) -> Result<(), Error> {
        let xml = c_string(xml)?;
        // SAFETY: a valid C string for the call's duration.
        if unsafe { (self.api.update_device_flags)(self.ptr, xml.as_ptr(), flags) } < 0 {
            return Err(Error::last(self.api));
        }
        Ok(())
    }

    /// `virDomainQemuAgentCommand`: `timeout` in seconds, 0 to send without waiting.
    pub fn qemu_agent_command(&self, cmd: &str, timeout: c_int) -> Result<String, Error> {
        let cmd = c_string(cmd)?;
        // SAFETY: a valid C string; the answer is a malloc'd string that owned_string frees.
        unsafe {
            owned_string(
                self.api,
                (self.api.agent_command)(self.ptr, cmd.as_ptr(), timeout, 0),
            )
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: each Domain owns one reference, released once.
        unsafe { (self.api.domain_free)(self.ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_in_a_name_is_an_error_not_a_panic() {
        assert!(c_string("a\0b").is_err());
    }
}
