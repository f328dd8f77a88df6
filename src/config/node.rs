//! `[node]`: this process among the nodes sharing one Redis.

use serde::Deserialize;

/// This process among the nodes sharing one Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique among the nodes; default `{hostname}:{admin port}`.
    pub id: Option<String>,
    /// A connect-mode port runs on the node holding its lease; a node that stops
    /// renewing it (dead, paused, cut off from Redis) loses the port after this long.
    pub port_lease_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            port_lease_ms: 5000,
        }
    }
}

impl NodeConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.port_lease_ms < 1000 {
            out.push("node.port_lease_ms must be 1000 or more".into());
        }
        if let Some(id) = &self.id
            && (id.is_empty() || id.len() > 64 || id.contains('/'))
        {
            out.push("node.id must be 1-64 characters without '/'".into());
        }
    }
}
