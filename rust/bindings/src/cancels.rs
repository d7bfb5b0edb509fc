//! Cancellation requests of the instances this process drives, shared by the engine, the driver
//! and every `Context` of the instance (`ctx.cancelled`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A cancellation request.
#[derive(Default)]
pub struct CancelState {
    requested: AtomicBool,
    reason: Mutex<String>,
}

impl CancelState {
    /// Asks for cancellation with `reason`.
    pub fn request(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The reason given.
    pub fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The cancellation states of the instances driven in this process, by id.
#[derive(Default)]
pub struct Active {
    states: Mutex<HashMap<String, Arc<CancelState>>>,
}

impl Active {
    /// The state shared by everything driving `id` in this process.
    pub fn state(&self, id: &str) -> Arc<CancelState> {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(m.entry(id.to_string()).or_default())
    }

    /// The state of `id` if something in this process drives it.
    pub fn driven(&self, id: &str) -> Option<Arc<CancelState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(Arc::clone)
    }

    /// Forgets the state of `id` once nothing drives it any more.
    pub fn release(&self, id: &str) {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(id).is_some_and(|c| Arc::strong_count(c) == 1) {
            m.remove(id);
        }
    }
}
