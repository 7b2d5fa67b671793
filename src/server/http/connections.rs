//! The count of open connections, in total and per client address, against their limits: a
//! connection holds a [`Slot`] from the moment it is accepted until it closes, and a new one
//! past a limit gets none.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Full {
    /// The server holds its most connections.
    #[error("the server holds its most connections ({0})")]
    Total(usize),
    /// The client's address holds its most connections.
    #[error("the client's address holds its most connections ({0})")]
    Source(usize),
}

impl Full {
    /// A short label for the refusal log.
    pub fn reason(self) -> &'static str {
        match self {
            Full::Total(_) => "server at its connection limit",
            Full::Source(_) => "source at its connection limit",
        }
    }
}

/// Open connections and their limits.
pub struct Connections {
    max_total: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Connections {
    /// No connection open yet; at most `max_total` at once, `max_per_source` from one address.
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Connections { max_total, max_per_source, counts: Mutex::default() })
    }

    /// A slot for a connection just accepted, counted in the total; its source is counted
    /// once known, by [`Slot::assign`].
    pub fn open(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        counts.total += 1;
        Ok(Slot { connections: Arc::clone(self), source: None })
    }

    /// Connections open: in total, and from `source`.
    #[cfg(test)]
    fn open_now(&self, source: IpAddr) -> (usize, usize) {
        let counts = self.lock();
        (counts.total, counts.per_source.get(&source).copied().unwrap_or(0))
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are plain numbers, consistent after any panic between two statements.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open connection's place in the counts, given back when dropped.
pub struct Slot {
    connections: Arc<Connections>,
    source: Option<IpAddr>,
}

impl Slot {
    /// Counts the connection for `source` (the client's address), unless that address holds
    /// its most connections already.
    pub fn assign(&mut self, source: IpAddr) -> Result<(), Full> {
        let connections = Arc::clone(&self.connections);
        let mut counts = connections.lock();
        if let Some(previous) = self.source.take() {
            release_source(&mut counts, previous);
        }
        if counts.per_source.get(&source).copied().unwrap_or(0) >= connections.max_per_source {
            return Err(Full::Source(connections.max_per_source));
        }
        *counts.per_source.entry(source).or_insert(0) += 1;
        self.source = Some(source);
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.connections.lock();
        counts.total -= 1;
        if let Some(source) = self.source {
            release_source(&mut counts, source);
        }
    }
}

/// One connection fewer from `source`; an address with none left is forgotten, so the map
/// holds only addresses with open connections.
fn release_source(counts: &mut Counts, source: IpAddr) {
    if let Some(open) = counts.per_source.get_mut(&source) {
        *open -= 1;
        if *open == 0 {
            counts.per_source.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_total_limit_refuses_the_connection_past_it_until_one_closes() {
        let connections = Connections::new(2, 10);
        let first = connections.open().expect("first");
        let _second = connections.open().expect("second");
        assert_eq!(connections.open().err(), Some(Full::Total(2)));
        drop(first);
        assert!(connections.open().is_ok(), "a closed connection gives its slot back");
    }

    #[test]
    fn the_per_source_limit_counts_each_address_apart() {
        let connections = Connections::new(100, 2);
        let mut slots: Vec<Slot> = (0..2).map(|_| connections.open().expect("slot")).collect();
        for slot in &mut slots {
            slot.assign(ip(1)).expect("under the limit");
        }
        let mut third = connections.open().expect("room in total");
        assert_eq!(third.assign(ip(1)), Err(Full::Source(2)));
        third.assign(ip(2)).expect("another address has room");
        assert_eq!(connections.open_now(ip(1)), (3, 2));
        drop(slots.pop());
        assert_eq!(connections.open_now(ip(1)), (2, 1));
        drop(slots);
        drop(third);
        assert_eq!(connections.open_now(ip(2)), (0, 0));
        assert!(connections.lock().per_source.is_empty(), "addresses without connections are forgotten");
    }

    #[test]
    fn a_refused_slot_counts_for_no_address() {
        let connections = Connections::new(10, 1);
        let mut held = connections.open().expect("slot");
        held.assign(ip(1)).expect("first");
        let mut refused = connections.open().expect("slot");
        assert!(refused.assign(ip(1)).is_err());
        drop(refused);
        assert_eq!(connections.open_now(ip(1)), (1, 1));
    }
}
