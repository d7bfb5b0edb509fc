//! Clocks: the system clock, a virtual clock for tests, or any object with `now()` and `sleep()`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

use crate::errors::error;

/// A clock whose time only moves when told to (or when the engine waits on it): tests never sleep.
#[pyclass(module = "tideflow._core", name = "VirtualClock", frozen)]
pub struct VirtualClock {
    now: Mutex<f64>,
}

impl VirtualClock {
    fn get(&self) -> f64 {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn add(&self, seconds: f64) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) += seconds;
    }
}

/// Where a `VirtualClock()` starts: 2024-01-01T00:00Z.
const DEFAULT_START: f64 = 1_704_067_200.0;

/// Seconds from a duration argument: an int or float (not a bool) or a `datetime.timedelta`,
/// finite and >= 0; anything else is a `tideflow.InvalidArgument`.
fn duration_seconds(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = value.py();
    let seconds = if value.is_instance_of::<PyFloat>()
        || (value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>())
    {
        value.extract::<f64>().ok() // an int too large for a float is not finite either
    } else if is_timedelta(value)? {
        Some(value.call_method0("total_seconds")?.extract::<f64>()?)
    } else {
        let tn = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(error(
            py,
            "InvalidArgument",
            format!("a duration must be seconds (int or float) or a timedelta, got {tn}"),
        ));
    };
    match seconds {
        Some(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => {
            let mut shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
            if shown.chars().count() > 80 {
                // a 400-digit int is shown by its length, not in full
                shown = format!("{}... ({} characters)", shown.chars().take(20).collect::<String>(), shown.len());
            }
            Err(error(
                py,
                "InvalidArgument",
                format!("a duration must be a finite number of seconds >= 0, got {shown}"),
            ))
        }
    }
}

/// Whether `value` is a `datetime.timedelta` (without importing `datetime`: if it is not loaded,
/// no timedelta exists).
fn is_timedelta(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    let modules = value.py().import("sys")?.getattr("modules")?;
    match modules.get_item("datetime") {
        Ok(dt) => value.is_instance(&dt.getattr("timedelta")?),
        Err(_) => Ok(false),
    }
}

#[pymethods]
impl VirtualClock {
    /// A virtual clock starting at `start` seconds since the epoch (default: 2024-01-01T00:00Z):
    /// a finite int or float, else `tideflow.InvalidArgument`.
    #[new]
    #[pyo3(signature = (start = None), text_signature = "(start=1704067200.0)")]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = match start {
            None => DEFAULT_START,
            Some(v) => {
                let number =
                    v.is_instance_of::<PyFloat>() || (v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>());
                match number.then(|| v.extract::<f64>().ok()).flatten() {
                    Some(s) if s.is_finite() => s,
                    _ => {
                        let tn = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                        return Err(error(
                            v.py(),
                            "InvalidArgument",
                            format!("VirtualClock(start=) must be a finite int or float (seconds since the epoch), got {tn}"),
                        ));
                    }
                }
            }
        };
        Ok(VirtualClock { now: Mutex::new(start) })
    }

    /// The current virtual time, seconds since the epoch.
    fn now(&self) -> f64 {
        self.get()
    }

    /// Advances time by `seconds` (int, float or timedelta) at once (what the engine calls
    /// instead of really sleeping).
    fn sleep(&self, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.add(duration_seconds(seconds)?);
        Ok(())
    }

    /// Moves time forward by `seconds` (int, float or timedelta).
    fn advance(&self, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sleep(seconds)
    }

    fn __repr__(&self) -> String {
        format!("VirtualClock(now={})", self.get())
    }
}

/// The clock the engine uses, resolved once so the system clock costs no Python call.
pub enum Clock {
    System,
    Virtual(Py<VirtualClock>),
    Custom(Py<PyAny>),
}

impl Clock {
    /// Resolves a user-supplied clock object (None: the system clock).
    pub fn from_object(obj: Option<Bound<'_, PyAny>>) -> PyResult<Clock> {
        match obj {
            None => Ok(Clock::System),
            Some(o) if o.is_none() => Ok(Clock::System),
            Some(o) => match o.cast::<VirtualClock>() {
                Ok(v) => Ok(Clock::Virtual(v.clone().unbind())),
                Err(_) => {
                    if o.hasattr("now")? && o.hasattr("sleep")? {
                        Ok(Clock::Custom(o.unbind()))
                    } else {
                        let tn = o.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                        Err(error(
                            o.py(),
                            "InvalidArgument",
                            format!("a clock needs now() -> float and sleep(seconds) methods, got {tn}"),
                        ))
                    }
                }
            },
        }
    }

    /// Seconds since the epoch.
    #[inline]
    pub fn now(&self, py: Python<'_>) -> PyResult<f64> {
        match self {
            Clock::System => Ok(system_now()),
            Clock::Virtual(v) => Ok(v.get().get()),
            Clock::Custom(o) => o.bind(py).call_method0("now")?.extract(),
        }
    }

    /// Waits `seconds` (the system clock releases the GIL; the virtual one just advances).
    pub fn sleep(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let seconds = seconds.max(0.0);
        match self {
            Clock::System => {
                py.detach(|| std::thread::sleep(Duration::from_secs_f64(seconds)));
                py.check_signals()
            }
            Clock::Virtual(v) => {
                v.get().add(seconds);
                Ok(())
            }
            Clock::Custom(o) => o.bind(py).call_method1("sleep", (seconds,)).map(|_| ()),
        }
    }

    /// Whether waiting costs no real time (the async driver then advances instead of sleeping).
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }
}

fn system_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
