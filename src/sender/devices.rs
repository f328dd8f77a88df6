//! Devices over their own quota (FCM: 240 messages a minute to one device): a 429 that
//! names the device holds back that device's pushes only, until its delay ends, while
//! the app keeps sending to everyone else. Each node remembers the devices it was told
//! about; the memory is bounded, and an entry ends with its delay.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most devices held back at once; past it the oldest holds are dropped first (a push to
/// a forgotten device is tried, and a new 429 holds it again).
const MAX_HELD: usize = 100_000;

#[derive(Default)]
pub struct DeviceHolds {
    /// Token → unix ms its hold ends.
    held: Mutex<HashMap<String, i64>>,
}

impl DeviceHolds {
    /// Hold `token` back until `until_ms`.
    pub fn hold(&self, token: &str, until_ms: i64, now_ms: i64) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.len() >= MAX_HELD && !held.contains_key(token) {
            held.retain(|_, until| *until > now_ms);
            if held.len() >= MAX_HELD {
                // Still full of live holds: forget the one ending soonest.
                if let Some(first) = held
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(t, _)| t.clone())
                {
                    held.remove(&first);
                }
            }
        }
        let entry = held.entry(token.to_owned()).or_insert(until_ms);
        *entry = (*entry).max(until_ms);
    }

    /// When `token`'s hold ends, if it is held at `now_ms`.
    pub fn held_until(&self, token: &str, now_ms: i64) -> Option<i64> {
        let mut held = self.held.lock().ok()?;
        match held.get(token) {
            Some(until) if *until > now_ms => Some(*until),
            Some(_) => {
                held.remove(token);
                None
            }
            None => None,
        }
    }

    /// Devices held (ended holds are counted until next looked at).
    pub fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_covers_only_its_device_and_ends() {
        let holds = DeviceHolds::default();
        holds.hold("a", 2_000, 1_000);
        assert_eq!(holds.held_until("a", 1_500), Some(2_000));
        assert_eq!(holds.held_until("b", 1_500), None);
        assert_eq!(holds.held_until("a", 2_000), None, "ended");
        assert_eq!(holds.held(), 0, "an ended hold is forgotten");
    }

    #[test]
    fn the_memory_is_bounded() {
        let holds = DeviceHolds::default();
        for i in 0..MAX_HELD + 10 {
            holds.hold(&format!("t{i}"), 10_000 + i as i64, 0);
        }
        assert_eq!(holds.held(), MAX_HELD);
        assert_eq!(
            holds.held_until("t0", 1),
            None,
            "the soonest-ending hold went first"
        );
        assert!(holds.held_until(&format!("t{}", MAX_HELD + 9), 1).is_some());
    }
}
