//! Throttling of password guessing.
//!
//! Per peer address: at most [`PEER_FAILURES`] failed logins per window,
//! whatever user names they try. An attempt counts as a failure from the
//! moment it starts until its password check succeeds, so a burst of
//! simultaneous guesses cannot slip past the limit before the first results
//! are in. Per user: the user is locked only once failures came from
//! [`USER_ADDRESSES`] distinct addresses in the window, so one address cannot
//! lock a user out of logins from everywhere else. A success clears its
//! user's record only: logging in to one's own account does not reset the
//! address's count of guesses at other accounts.
//!
//! Memory is bounded in entries and in bytes (user names longer than
//! [`super::users::MAX_USER_BYTES`] never get here), and entries go when their
//! window ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Failed logins allowed per peer address in one window.
pub const PEER_FAILURES: u32 = 5;
/// Distinct failing addresses that lock a user for the rest of the window.
pub const USER_ADDRESSES: usize = 8;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Bound on each table; at most this many addresses and users are tracked.
pub const MAX_ENTRIES: usize = 16_384;

#[derive(Debug)]
struct PeerWindow {
    start: Instant,
    /// Failures so far, including attempts still being checked.
    failures: u32,
}

#[derive(Debug)]
struct UserWindow {
    start: Instant,
    addresses: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct Throttle {
    peers: HashMap<IpAddr, PeerWindow>,
    users: HashMap<String, UserWindow>,
    swept: Instant,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            peers: HashMap::new(),
            users: HashMap::new(),
            swept: Instant::now(),
        }
    }
}

/// The address a peer is counted under: IPv6 hosts usually own a whole /64,
/// so that is what one IPv6 peer is.
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(
            v6.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        v4 => v4,
    }
}

fn left(start: Instant, now: Instant) -> Option<u64> {
    let elapsed = now.saturating_duration_since(start);
    (elapsed < WINDOW).then(|| (WINDOW - elapsed).as_secs().max(1))
}

impl Throttle {
    /// Starts a login attempt: `Err(seconds)` if the peer or the user is
    /// locked, else the attempt is counted as a failure until [`end`](Self::end).
    pub fn begin(&mut self, user: &str, peer: IpAddr, now: Instant) -> Result<(), u64> {
        self.sweep(now);
        let peer = peer_key(peer);
        if let Some(w) = self.peers.get(&peer) {
            if w.failures >= PEER_FAILURES {
                if let Some(wait) = left(w.start, now) {
                    return Err(wait);
                }
            }
        }
        if let Some(w) = self.users.get(user) {
            if w.addresses.len() >= USER_ADDRESSES {
                if let Some(wait) = left(w.start, now) {
                    return Err(wait);
                }
            }
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_ENTRIES {
            evict_oldest(&mut self.peers, |w| w.start);
        }
        let window = self.peers.entry(peer).or_insert(PeerWindow {
            start: now,
            failures: 0,
        });
        if left(window.start, now).is_none() {
            *window = PeerWindow {
                start: now,
                failures: 0,
            };
        }
        window.failures += 1;
        Ok(())
    }

    /// Ends an attempt started with [`begin`](Self::begin).
    pub fn end(&mut self, user: &str, peer: IpAddr, ok: bool, now: Instant) {
        let peer = peer_key(peer);
        if ok {
            if let Some(w) = self.peers.get_mut(&peer) {
                w.failures = w.failures.saturating_sub(1);
            }
            self.users.remove(user);
            return;
        }
        if !self.users.contains_key(user) && self.users.len() >= MAX_ENTRIES {
            evict_oldest(&mut self.users, |w| w.start);
        }
        let window = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| UserWindow {
                start: now,
                addresses: Vec::new(),
            });
        if left(window.start, now).is_none() {
            *window = UserWindow {
                start: now,
                addresses: Vec::new(),
            };
        }
        if window.addresses.len() < USER_ADDRESSES && !window.addresses.contains(&peer) {
            window.addresses.push(peer);
        }
    }

    /// Drops the records whose window ended, at most once a second.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        self.peers.retain(|_, w| left(w.start, now).is_some());
        self.users.retain(|_, w| left(w.start, now).is_some());
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.peers.len(), self.users.len())
    }
}

fn evict_oldest<K: Clone + std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    start: impl Fn(&V) -> Instant,
) {
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, v)| start(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn simultaneous_guesses_count_before_their_results() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let started = (0..40)
            .filter(|_| t.begin("alice", ip(1), now).is_ok())
            .count();
        assert_eq!(started, PEER_FAILURES as usize);
    }

    #[test]
    fn own_logins_do_not_reset_guesses_at_others() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let mut evaluated = 0;
        for i in 0..20 {
            if i % 5 == 4 {
                if t.begin("mallory", ip(1), now).is_ok() {
                    t.end("mallory", ip(1), true, now);
                }
            } else if t.begin("alice", ip(1), now).is_ok() {
                evaluated += 1;
                t.end("alice", ip(1), false, now);
            }
        }
        assert_eq!(evaluated, PEER_FAILURES as usize);
    }

    #[test]
    fn one_address_cannot_lock_a_user_out_elsewhere() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..PEER_FAILURES {
            t.begin("alice", ip(1), now).unwrap();
            t.end("alice", ip(1), false, now);
        }
        assert!(t.begin("alice", ip(1), now).is_err());
        assert!(t.begin("alice", ip(2), now).is_ok());
        t.end("alice", ip(2), true, now);
        // Many addresses together do lock the user, for the window only.
        for n in 10..(10 + USER_ADDRESSES as u8) {
            t.begin("bob", ip(n), now).unwrap();
            t.end("bob", ip(n), false, now);
        }
        assert!(t.begin("bob", ip(99), now).is_err());
        assert!(t.begin("bob", ip(99), now + WINDOW).is_ok());
    }

    #[test]
    fn memory_is_bounded_and_expired_entries_go() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 100) {
            let peer = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let user = format!("user{i}");
            if t.begin(&user, peer, now).is_ok() {
                t.end(&user, peer, false, now);
            }
        }
        let (peers, users) = t.len();
        assert!(peers <= MAX_ENTRIES && users <= MAX_ENTRIES);
        let later = now + WINDOW + Duration::from_secs(2);
        t.begin("x", ip(1), later).unwrap();
        assert_eq!(t.len(), (1, 0));
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(peer_key(mapped), ip(2));
    }
}
