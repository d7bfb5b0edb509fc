//! What the state machine needs from its surroundings, and how failures are described.

/// An error raised by user code or by the host, as the core keeps it (text only).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The exception's type name.
    pub error_type: String,
    /// The exception's message.
    pub message: String,
    /// Traceback text, possibly empty.
    pub traceback: String,
}

impl Failure {
    /// A failure with no traceback.
    pub fn new(error_type: &str, message: impl Into<String>) -> Self {
        Failure { error_type: error_type.into(), message: message.into(), traceback: String::new() }
    }

    /// The failure as JSON: `{"type", "message", "traceback"}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": self.error_type, "message": self.message, "traceback": self.traceback,
        }))
        .expect("json")
    }
}

/// Why an instance failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    /// `step`, `condition`, `router`, `definition`, `loop`, `map` (its input is not a list), `codec` or `timeout`.
    pub kind: &'static str,
    /// The step involved, if any.
    pub step: Option<String>,
    /// The position key involved, if any.
    pub key: Option<String>,
    /// Attempts made of that step.
    pub attempts: u32,
    /// The original error.
    pub failure: Failure,
}

impl ErrorInfo {
    /// The JSON stored in the instance header.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "kind": self.kind, "step": self.step, "key": self.key, "attempts": self.attempts,
            "type": self.failure.error_type, "message": self.failure.message,
            "traceback": self.failure.traceback,
        }))
        .expect("json")
    }
}

/// What the state machine asks of the world: evaluating pure functions of checkpointed values and
/// building values. Implemented by the Python bindings, and by plain Rust in tests.
pub trait Host<V> {
    /// Evaluates condition `f` (a branch or loop check) on `v`.
    fn condition(&mut self, f: u32, v: &V) -> Result<bool, Failure>;
    /// Evaluates router `f` on `v`; returns a state name.
    fn route(&mut self, f: u32, v: &V) -> Result<String, Failure>;
    /// The label of `v` for a transition table.
    fn label(&mut self, v: &V) -> Result<String, Failure>;
    /// The fan-in value of a parallel block.
    fn tuple(&mut self, items: Vec<V>) -> V;
    /// The fan-in value of a map.
    fn list(&mut self, items: Vec<V>) -> V;
    /// The items a map fans out over.
    fn items(&mut self, v: &V) -> Result<Vec<V>, Failure>;
    /// Decodes a stored output of step `step` (on resume).
    fn decode(&mut self, step: u32, payload: &[u8]) -> Result<V, Failure>;
    /// Encodes the workflow's final output.
    fn encode_output(&mut self, v: &V) -> Result<Vec<u8>, Failure>;
    /// The payload of inbox signal `seq`, decoded for wait `wait` (its declared type).
    fn signal(&mut self, wait: u32, seq: u64) -> Result<V, Failure>;
    /// A text value (the reason handed to a compensation step).
    fn text(&mut self, s: &str) -> V;
}
