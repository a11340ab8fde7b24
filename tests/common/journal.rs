//! Reading what the binary recorded: the journal's lines, and the steps of `status --json`.

use std::fmt;
use std::ops::Deref;
use std::path::Path;

use serde_json::Value;

/// A journal as a file holds it. It derefs to its text (`journal.contains(…)`); its lines
/// parse as JSON values.
pub struct Journal {
    text: String,
}

impl Journal {
    /// The journal at `path`; empty when there is none yet.
    pub fn read(path: &Path) -> Journal {
        Journal {
            text: std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// Every line as a JSON value; a line that is not JSON fails the test, shown.
    #[track_caller]
    pub fn values(&self) -> Vec<Value> {
        self.text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The bodies of the events `name` (`started`, `rolled_back`, …) of `step`, in order.
    pub fn events(&self, step: &str, name: &str) -> Vec<Value> {
        self.values()
            .into_iter()
            .filter(|l| l["step"] == step)
            .filter_map(|l| l["event"].get(name).cloned())
            .collect()
    }

    /// The lines holding an event `name`, any step's.
    pub fn lines_of(&self, name: &str) -> Vec<Value> {
        self.values()
            .into_iter()
            .filter(|l| l["event"].get(name).is_some())
            .collect()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Deref for Journal {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every step of a `status --json`, phase after phase.
#[track_caller]
pub fn steps(status: &Value) -> Vec<&Value> {
    status["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases: {status}"))
        .iter()
        .flat_map(|p| {
            p["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("a phase without steps: {status}"))
        })
        .collect()
}

/// The step `id` of a `status --json`; a step it does not have fails the test.
#[track_caller]
pub fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    steps(status)
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {status}"))
}

/// The state of the step `id` of a `status --json`.
#[track_caller]
pub fn state_of(status: &Value, id: &str) -> String {
    step(status, id)["state"]
        .as_str()
        .unwrap_or_else(|| panic!("step {id} has no state: {status}"))
        .to_string()
}
