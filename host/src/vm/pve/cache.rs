//! What one run learns of the cluster, shared by the worker threads of one [`PveHost`]
//! (`-ThrottleLimit` VMs at once): the VM inventory, the cluster's name, per node the
//! ISO storage and its ISOs, and the IC ISO's upload. Each is asked once per run; a
//! worker that comes while another asks waits for that answer (or its error) instead
//! of asking again. A run is one process, so nothing here outlives what it describes
//! for longer than the run.
//!
//! [`PveHost`]: super::PveHost

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::api::Resource;
use crate::vm::CallError;

/// A lock whose holder panicked still guards consistent data here (every value is
/// replaced whole), so it is used as it is.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One value per key, made by the first caller; callers that come while it is being
/// made wait for it. The map's lock is held only to find the key's cell, so making one
/// key's value never holds up another key.
pub(super) struct OncePerKey<K, V> {
    cells: Mutex<HashMap<K, Arc<OnceLock<V>>>>,
}

impl<K, V> Default for OncePerKey<K, V> {
    fn default() -> Self {
        OncePerKey {
            cells: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> OncePerKey<K, V> {
    pub(super) fn get_or_make(&self, key: K, make: impl FnOnce() -> V) -> V {
        let cell = lock(&self.cells).entry(key).or_default().clone();
        cell.get_or_init(make).clone()
    }
}

/// A failure kept for the run and handed to every caller that asks for the same thing.
pub(super) type Kept<T> = Result<T, Arc<CallError>>;

/// The kept failure as the caller's own [`CallError`]: the API's refusals and shape
/// errors as they were, anything else by its whole text.
pub(super) fn again(e: &CallError) -> CallError {
    match e {
        CallError::Qapi { class, desc } => CallError::Qapi {
            class: class.clone(),
            desc: desc.clone(),
        },
        CallError::Decode(d) => CallError::Decode(d.clone()),
        other => CallError::Qapi {
            class: "Proxmox VE API".into(),
            desc: crate::hresult::chain(other),
        },
    }
}

pub(super) fn reuse<T: Clone>(kept: Kept<T>) -> Result<T, CallError> {
    kept.map_err(|e| again(&e))
}

/// The per-run caches of one host.
#[derive(Default)]
pub(super) struct RunCache {
    /// The cluster's QEMU VMs as last listed; `None` before the first listing.
    pub(super) inventory: Mutex<Option<Arc<Vec<Resource>>>>,
    /// The cluster's name, once read.
    pub(super) cluster: Mutex<Option<String>>,
    /// Per node: the ISO storage chosen.
    pub(super) storage: OncePerKey<String, Kept<String>>,
    /// Per (node, storage): the volids of its ISOs.
    pub(super) isos: OncePerKey<(String, String), Kept<Arc<HashSet<String>>>>,
    /// Per (node, storage, SHA-256): the IC ISO's volid there, found or uploaded.
    pub(super) staged: OncePerKey<(String, String, String), Kept<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_key_is_made_once_and_waiters_get_its_value() {
        let once: OncePerKey<&str, Kept<usize>> = OncePerKey::default();
        let made = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        once.get_or_make("a", || {
                            made.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(7)
                        })
                    })
                })
                .collect();
            for w in workers {
                assert_eq!(w.join().unwrap().unwrap(), 7);
            }
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // Another key is made on its own; an error is kept like a value.
        let failed = once.get_or_make("b", || {
            Err(Arc::new(CallError::Decode("no storage".into())))
        });
        let e = reuse(failed).unwrap_err();
        assert!(
            matches!(e, CallError::Decode(ref d) if d == "no storage"),
            "{e}"
        );
        assert!(once.get_or_make("b", || Ok(1)).is_err());
    }
}
