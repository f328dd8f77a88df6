//! The wall clock, read in one place: every timestamp pushgate writes (received, due,
//! sent, sessions, leases, audit) is unix milliseconds from [`now_ms`].
//!
//! [`Clock`] is the same clock as a value, for the parts whose behaviour depends on the
//! time of day (the ad gate's night window, and the sender that sends what it held):
//! production runs [`Clock::system`]; a test starts pushgate with [`Clock::shifted`] and
//! moves it with [`Clock::set_shift`], so "22:00" and "08:00 the next morning" happen
//! without waiting. There is no global to set: the shift lives in the value the test holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wall clock, possibly shifted by a test. Clones share one shift.
#[derive(Clone, Default)]
pub struct Clock {
    /// None = the system clock as it is (production).
    shift_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock moved by `shift_ms` (a test hook: see the module docs).
    pub fn shifted(shift_ms: i64) -> Clock {
        Clock {
            shift_ms: Some(Arc::new(AtomicI64::new(shift_ms))),
        }
    }

    /// Move a shifted clock to `shift_ms` from the system clock; no effect on the system clock.
    pub fn set_shift(&self, shift_ms: i64) {
        if let Some(shift) = &self.shift_ms {
            shift.store(shift_ms, Ordering::Relaxed);
        }
    }

    /// Unix ms by this clock.
    pub fn now_ms(&self) -> i64 {
        now_ms()
            + self
                .shift_ms
                .as_ref()
                .map_or(0, |s| s.load(Ordering::Relaxed))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shift_ms {
            None => f.write_str("Clock::system"),
            Some(s) => write!(f, "Clock::shifted({})", s.load(Ordering::Relaxed)),
        }
    }
}

/// Clocks are not configuration: two configs differing only in their clock are equal.
impl PartialEq for Clock {
    fn eq(&self, _: &Clock) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_moves_with_its_clones_and_the_system_clock_does_not() {
        let clock = Clock::shifted(3_600_000);
        let clone = clock.clone();
        assert!(clone.now_ms() - now_ms() >= 3_599_000);
        clock.set_shift(-3_600_000);
        assert!(now_ms() - clone.now_ms() >= 3_599_000);
        let system = Clock::system();
        system.set_shift(10_000_000);
        assert!((system.now_ms() - now_ms()).abs() < 5_000);
    }
}
