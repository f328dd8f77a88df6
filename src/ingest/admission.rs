//! Who gets a listen port's connection slots, decided at accept before a byte is read:
//! the peer must be in the port's `allow` list, under `max_connections_per_addr`, and
//! the port under `max_connections`. Pure (no sockets), so it is tested without them.

pub use crate::wire::{AllowEntryError, AllowList, parse_allow_entry};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was turned away. The names are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The peer address is outside the port's `allow` list.
    NotAllowed,
    /// The peer address already holds `max_connections_per_addr` connections.
    PerAddr,
    /// The port already holds `max_connections` connections.
    Full,
    /// The connection sent no complete frame within `first_frame_timeout_ms`.
    FirstFrameTimeout,
}

impl PeerRefusal {
    const ALL: [PeerRefusal; 4] = [
        PeerRefusal::NotAllowed,
        PeerRefusal::PerAddr,
        PeerRefusal::Full,
        PeerRefusal::FirstFrameTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerRefusal::NotAllowed => "not_allowed",
            PeerRefusal::PerAddr => "per_addr",
            PeerRefusal::Full => "full",
            PeerRefusal::FirstFrameTimeout => "first_frame_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A listen port's connection slots: at most `max` in all and `per_addr` for any one
/// peer address, so one host (or a flood from it) cannot take every slot.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_addr: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Only addresses holding a connection: the map never outgrows `max`.
    by_addr: HashMap<IpAddr, usize>,
}

impl Slots {
    pub fn new(max: usize, per_addr: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_addr,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a connection from `peer`, or why there is none. A peer at its own
    /// cap is told so before being told the port is full: it is the one to fix.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, PeerRefusal> {
        let peer = peer.to_canonical();
        let mut held = self.lock();
        let mine = held.by_addr.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_addr {
            return Err(PeerRefusal::PerAddr);
        }
        if held.total >= self.max {
            return Err(PeerRefusal::Full);
        }
        held.total += 1;
        held.by_addr.insert(peer, mine + 1);
        Ok(Slot {
            slots: self.clone(),
            peer,
        })
    }

    /// Connections held now: in all, and by `peer`.
    pub fn held(&self, peer: IpAddr) -> (usize, usize) {
        let held = self.lock();
        let mine = held.by_addr.get(&peer.to_canonical()).copied();
        (held.total, mine.unwrap_or(0))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn per_addr(&self) -> usize {
        self.per_addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counts stay consistent under a panic elsewhere: each change is one step.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's place in [`Slots`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_addr.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.by_addr.remove(&self.peer);
            }
        }
    }
}

/// Refusals are logged at most once per this, per reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Decides which refusals get a warning line: the first of each reason, then at most
/// one per [`LOG_EVERY`] carrying how many went unlogged meanwhile. A flood of
/// strangers costs a counter increment each, not a log line each (the metric and the
/// port's `refused` count every one).
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per reason: when it was last logged, and refusals since then not logged.
    last: Mutex<[(Option<Instant>, u64); PeerRefusal::ALL.len()]>,
}

impl RefusalLog {
    /// `Some(unlogged since the last line)` when this refusal is to be logged.
    pub fn should_log(&self, why: PeerRefusal, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (at, quiet) = &mut last[why.index()];
        match at {
            Some(t) if now.saturating_duration_since(*t) < LOG_EVERY => {
                *quiet += 1;
                None
            }
            _ => {
                *at = Some(now);
                Some(std::mem::take(quiet))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let owned: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        AllowList::parse(&owned).expect("valid allow list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn an_empty_allow_list_lets_any_peer_in() {
        let any = list(&[]);
        assert!(any.permits(ip("203.0.113.9")));
        assert!(any.permits(ip("::1")));
    }

    #[test]
    fn allow_matches_cidr_blocks_and_single_addresses_of_both_families() {
        let allow = list(&["10.1.2.0/24", "127.0.0.1", "::1", "fd00:1::/32"]);
        let cases = [
            ("10.1.2.0", true),
            ("10.1.2.255", true),
            ("10.1.3.1", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", true),
            ("::2", false),
            ("fd00:1:ffff::7", true),
            ("fd00:2::7", false),
            // An IPv4 peer on a dual-stack listener.
            ("::ffff:10.1.2.9", true),
            ("::ffff:10.9.2.9", false),
        ];
        for (peer, expected) in cases {
            assert_eq!(allow.permits(ip(peer)), expected, "{peer}");
        }
    }

    #[test]
    fn a_block_written_with_host_bits_still_means_the_whole_block() {
        let allow = list(&["10.1.2.3/24"]);
        assert!(allow.permits(ip("10.1.2.200")));
        assert!(!allow.permits(ip("10.1.3.3")));
    }

    #[test]
    fn allow_entries_that_are_not_addresses_or_blocks_are_refused_by_name() {
        for bad in [
            "10.1.2.0/33",
            "10.1.2/24",
            "fep-a",
            "",
            "10.1.2.0/",
            "::1/129",
            "127.0.0.1:80",
        ] {
            let err = parse_allow_entry(bad).expect_err(bad);
            assert_eq!(err.entry, bad);
            assert!(err.to_string().contains("not an IP address"), "{err}");
        }
        let entries = vec!["127.0.0.1".to_owned(), "nowhere".to_owned()];
        assert_eq!(
            AllowList::parse(&entries).unwrap_err().entry,
            "nowhere".to_owned()
        );
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share_of_slots() {
        let slots = Slots::new(4, 2);
        let a = ip("127.0.0.1");
        let held: Vec<Slot> = (0..2).map(|_| slots.admit(a).expect("slot")).collect();
        assert_eq!(slots.admit(a).unwrap_err(), PeerRefusal::PerAddr);
        // The same host seen through a dual-stack listener is the same address.
        assert_eq!(
            slots.admit(ip("::ffff:127.0.0.1")).unwrap_err(),
            PeerRefusal::PerAddr
        );
        let b = slots
            .admit(ip("127.0.0.3"))
            .expect("another host gets a slot");
        assert_eq!(slots.held(a), (3, 2));
        drop(held);
        assert_eq!(slots.held(a), (1, 0));
        drop(b);
        assert_eq!(slots.held(a), (0, 0));
    }

    #[test]
    fn a_full_port_refuses_every_address_until_a_slot_is_given_back() {
        let slots = Slots::new(2, 2);
        let first = slots.admit(ip("10.0.0.1")).expect("slot");
        let _second = slots.admit(ip("10.0.0.2")).expect("slot");
        assert_eq!(slots.admit(ip("10.0.0.3")).unwrap_err(), PeerRefusal::Full);
        drop(first);
        assert!(slots.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn refusals_are_logged_once_per_interval_per_reason_with_the_unlogged_count() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.should_log(PeerRefusal::NotAllowed, t0), Some(0));
        for i in 1..=5 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(log.should_log(PeerRefusal::NotAllowed, at), None);
        }
        // Another reason has its own interval.
        assert_eq!(log.should_log(PeerRefusal::Full, t0), Some(0));
        assert_eq!(
            log.should_log(PeerRefusal::NotAllowed, t0 + LOG_EVERY),
            Some(5)
        );
        assert_eq!(
            log.should_log(PeerRefusal::NotAllowed, t0 + LOG_EVERY),
            None
        );
    }
}
