//! `[script]`: the sandbox limits every route script runs under.

use serde::Deserialize;

/// Sandbox limits for every route script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptConfig {
    pub max_operations: u64,
    pub deadline_ms: u64,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        Self {
            max_operations: 100_000,
            deadline_ms: 50,
        }
    }
}

impl ScriptConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.deadline_ms == 0 || self.max_operations == 0 {
            out.push("script.deadline_ms and script.max_operations must be above 0".into());
        }
    }
}
