//! Folding a flood of identical refusals into one line and a count: per (peer
//! IP, reason), the first refusal in a window is logged, the rest are counted,
//! and the count is reported when the window ends, when the table is full and
//! the entry is the oldest, or at shutdown. Memory is bounded by the table cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long identical refusals from one peer are folded together.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most (peer, reason) pairs remembered at once.
pub const CAP: usize = 4096;

/// Refusals that were counted instead of logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub peer: IpAddr,
    pub reason: String,
    /// Refusals after the first one, which was logged.
    pub more: u64,
    /// From the first refusal to the end of the window (or to now).
    pub over: Duration,
}

#[derive(Debug)]
struct Entry {
    since: Instant,
    more: u64,
}

/// The table of recent refusals; time is passed in, so tests need no clock.
#[derive(Debug)]
pub struct Summariser {
    window: Duration,
    cap: usize,
    entries: HashMap<(IpAddr, String), Entry>,
}

impl Summariser {
    pub fn new(window: Duration, cap: usize) -> Summariser {
        Summariser {
            window,
            cap: cap.max(1),
            entries: HashMap::new(),
        }
    }

    /// Notes one refusal. Returns whether to log it (the first of its window),
    /// and the summaries of entries it closed (its own expired window, or the
    /// oldest entry when the table was full).
    pub fn note(&mut self, peer: IpAddr, reason: &str, now: Instant) -> (bool, Vec<Summary>) {
        let key = (peer, reason.to_string());
        let mut closed = Vec::new();
        if let Some(entry) = self.entries.get_mut(&key) {
            if now.saturating_duration_since(entry.since) < self.window {
                entry.more += 1;
                return (false, closed);
            }
            let entry = self.entries.remove(&key).expect("just found");
            closed.extend(self.summary(key.clone(), entry, now));
        } else if self.entries.len() >= self.cap {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.since)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                let entry = self.entries.remove(&oldest).expect("just found");
                closed.extend(self.summary(oldest, entry, now));
            }
        }
        self.entries.insert(
            key,
            Entry {
                since: now,
                more: 0,
            },
        );
        (true, closed)
    }

    /// Closes the windows that have ended by `now`; summaries of those that
    /// counted anything.
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.window;
        let ended: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.since) >= window)
            .map(|(key, _)| key.clone())
            .collect();
        self.close(ended, now)
    }

    /// Closes every window (at shutdown).
    pub fn drain(&mut self, now: Instant) -> Vec<Summary> {
        let all: Vec<_> = self.entries.keys().cloned().collect();
        self.close(all, now)
    }

    fn close(&mut self, keys: Vec<(IpAddr, String)>, now: Instant) -> Vec<Summary> {
        let mut closed: Vec<Summary> = keys
            .into_iter()
            .filter_map(|key| {
                let entry = self.entries.remove(&key)?;
                self.summary(key, entry, now)
            })
            .collect();
        closed.sort_by(|a, b| (a.peer, &a.reason).cmp(&(b.peer, &b.reason)));
        closed
    }

    fn summary(
        &self,
        (peer, reason): (IpAddr, String),
        entry: Entry,
        now: Instant,
    ) -> Option<Summary> {
        (entry.more > 0).then(|| Summary {
            peer,
            reason,
            more: entry.more,
            over: now.saturating_duration_since(entry.since).min(self.window),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 1, 2, last])
    }

    #[test]
    fn first_refusal_is_logged_and_the_rest_are_counted_until_the_window_ends() {
        let start = Instant::now();
        let mut table = Summariser::new(WINDOW, CAP);
        assert_eq!(table.note(ip(3), "tls: x", start), (true, vec![]));
        for i in 1..=4211 {
            let at = start + Duration::from_millis(i);
            assert_eq!(table.note(ip(3), "tls: x", at), (false, vec![]));
        }
        // Another reason, or another peer, is a line of its own.
        assert!(table.note(ip(3), "tls: y", start).0);
        assert!(table.note(ip(4), "tls: x", start).0);
        assert_eq!(table.due(start + Duration::from_secs(59)), vec![]);
        let due = table.due(start + Duration::from_secs(61));
        assert_eq!(
            due,
            vec![Summary {
                peer: ip(3),
                reason: "tls: x".into(),
                more: 4211,
                over: WINDOW,
            }]
        );
        // The window is over: the next one is logged again.
        assert!(
            table
                .note(ip(3), "tls: x", start + Duration::from_secs(62))
                .0
        );
    }

    #[test]
    fn a_full_table_summarises_its_oldest_entry() {
        let start = Instant::now();
        let mut table = Summariser::new(WINDOW, 2);
        table.note(ip(1), "r", start);
        table.note(ip(1), "r", start);
        table.note(ip(2), "r", start + Duration::from_secs(1));
        let (logged, closed) = table.note(ip(3), "r", start + Duration::from_secs(2));
        assert!(logged);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].peer, closed[0].more), (ip(1), 1));
        assert_eq!(table.entries.len(), 2);
    }

    #[test]
    fn drain_reports_only_entries_that_counted_something() {
        let start = Instant::now();
        let mut table = Summariser::new(WINDOW, CAP);
        table.note(ip(1), "r", start);
        table.note(ip(2), "r", start);
        table.note(ip(2), "r", start);
        let drained = table.drain(start + Duration::from_secs(3));
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].over, Duration::from_secs(3));
        assert!(table.entries.is_empty());
    }
}
