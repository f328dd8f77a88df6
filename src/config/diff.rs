//! The reload diff: what a new config changes, port by port, as a typed change set.
//! Each kind of change says what the supervisor does with it; only a port's script
//! can change under a running port, anything else about it restarts the port.
//! (Other sections' changes wait for the next restart; the app warns about them.)

use super::{Config, PortConfig};

/// What a reload changes, port by port.
#[derive(Debug, Default, PartialEq)]
pub struct PortChanges {
    /// In the new config only: start (if autostart).
    pub added: Vec<PortConfig>,
    /// In the old config only: drain and stop.
    pub removed: Vec<String>,
    /// Wiring differs: restart with the new config.
    pub changed: Vec<PortConfig>,
    /// Same wiring: keep running; only its script may be swapped in place.
    pub unchanged: Vec<PortConfig>,
}

impl PortChanges {
    /// Sort every port of `old` and `new` into exactly one kind of change.
    pub fn between(old: &Config, new: &Config) -> PortChanges {
        let mut changes = PortChanges::default();
        for port in &new.ports {
            match old.port(&port.name) {
                None => changes.added.push(port.clone()),
                Some(before) if before.same_wiring(port) => changes.unchanged.push(port.clone()),
                Some(_) => changes.changed.push(port.clone()),
            }
        }
        for port in &old.ports {
            if new.port(&port.name).is_none() {
                changes.removed.push(port.name.clone());
            }
        }
        changes
    }
}

impl PortConfig {
    /// Everything about the port except its script's contents: a difference here restarts it.
    fn same_wiring(&self, other: &PortConfig) -> bool {
        self == other
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};
    use super::*;

    #[test]
    fn reload_diff_sorts_ports_into_added_removed_changed_unchanged() {
        let old = parse(&format!(
            "{PORT}{}{}",
            PORT.replace("fep-transfer", "keep").replace("9001", "9002"),
            PORT.replace("fep-transfer", "gone").replace("9001", "9003"),
        ))
        .expect("old");
        let new = parse(&format!(
            "{}{}{}",
            PORT.replace("9001", "9011"),
            PORT.replace("fep-transfer", "keep").replace("9001", "9002"),
            PORT.replace("fep-transfer", "new").replace("9001", "9004"),
        ))
        .expect("new");
        let changes = PortChanges::between(&old, &new);
        let names = |ports: &[PortConfig]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&changes.added), ["new"]);
        assert_eq!(changes.removed, ["gone"]);
        assert_eq!(names(&changes.changed), ["fep-transfer"]);
        assert_eq!(names(&changes.unchanged), ["keep"]);
    }

    #[test]
    fn reload_restarts_a_port_whose_peer_limits_or_upstreams_changed() {
        let old = parse(PORT).expect("old");
        for setting in [
            "allow = [\"127.0.0.1\"]",
            "max_connections_per_addr = 3",
            "first_frame_timeout_ms = 500",
        ] {
            let new = parse(&format!("{PORT}{setting}\n")).expect("new");
            let changes = PortChanges::between(&old, &new);
            assert_eq!(changes.changed.len(), 1, "{setting}");
            assert!(changes.unchanged.is_empty(), "{setting}");
        }
        let connect = |addrs: &str| {
            parse(&format!(
                "[[port]]\nname = \"fep\"\nmode = \"connect\"\nscript = \"s.rhai\"\naddrs = {addrs}\n"
            ))
            .expect("valid")
        };
        let before = connect("[\"fep-a:7001\", \"fep-b:7001\"]");
        let reordered = connect("[\"fep-b:7001\", \"fep-a:7001\"]");
        assert_eq!(PortChanges::between(&before, &reordered).changed.len(), 1);
        assert_eq!(PortChanges::between(&before, &before).unchanged.len(), 1);
    }
}
