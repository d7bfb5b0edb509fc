//! Where an engine keeps its instances: a native store (memory, SQLite) or one written in Python.
//! Every store call of the engine goes through [`Backend::call`], so the rule for the GIL and for
//! locks is in one place: a native store is locked (and, on disk, called with the GIL released);
//! a Python store is called with the GIL held and no lock at all, so two threads driving one
//! Python store can never deadlock on a lock held across a call into Python.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use tideflow_core::store::Store;
use tideflow_core::CoreError;

use crate::pystore::PyStore;

/// A native store shared by the engines (and `NativeStore` objects) that run on it.
pub type Shared = Arc<Mutex<Box<dyn Store>>>;

/// The store an engine runs on.
pub enum Backend {
    /// Memory or SQLite; `on_disk` says whether calls do I/O (the GIL is released around them).
    Native { store: Shared, on_disk: bool },
    /// A store written in Python (`tideflow.stores.base.Store` or `AsyncStore`).
    Python(PyStore),
}

impl Backend {
    /// Runs `f` on the store (see the module docs for the locking rule).
    pub fn call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, CoreError> + Send,
    ) -> Result<T, CoreError> {
        match self {
            Backend::Native { store, on_disk: true } => py.detach(|| {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                f(s.as_mut())
            }),
            Backend::Native { store, on_disk: false } => {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                f(s.as_mut())
            }
            Backend::Python(p) => {
                let mut handle = p.clone_ref(py);
                f(&mut handle)
            }
        }
    }

    /// Whether the store is an `AsyncStore`: the asyncio driver then awaits its calls itself.
    pub fn is_async(&self) -> bool {
        matches!(self, Backend::Python(p) if p.is_async())
    }

    /// The store's name, for messages.
    pub fn describe(&self) -> String {
        match self {
            Backend::Native { store, .. } => store.lock().unwrap_or_else(|e| e.into_inner()).describe(),
            Backend::Python(p) => p.describe(),
        }
    }

    /// Whether other processes may share the store (everything but memory).
    pub fn shared_with_others(&self) -> bool {
        !matches!(self, Backend::Native { on_disk: false, .. })
    }
}
