//! The audit record, in two streams with their own caps, so that what agents do can never push
//! out what operators did:
//! - `audit`: time (i64 BE ms), sequence (u64 BE) → [`AuditRecord`]: one entry per operator
//!   action (and, from servers before 0.2, per enrollment);
//! - `agent_audit`: first time (i64 BE ms), sequence (u64 BE) → [`AgentAuditRecord`]: what
//!   agents did, one entry per actor, action and detail within a period, with a count.
//!
//! Sequence numbers come from one generator, so the keys of both streams never collide and
//! merge into one order, newest first, that a cursor can resume. Each stream keeps its newest
//! entries up to its cap; its length is counted once, on its first write after start, and then
//! kept in memory. On PostgreSQL, where other servers write to the streams too, it is counted
//! again every [`RECOUNT_EVERY`] writes of this server, so the streams stay within their caps
//! plus that many entries per server.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::records::AuditRecord;
use super::{Store, StoreError};
use crate::server::codec;

/// Most operator entries kept; the oldest go first.
pub const MAX_OPERATOR_AUDIT: u64 = 1_000_000;
/// Most agent-made entries kept; the oldest go first.
pub const MAX_AGENT_AUDIT: u64 = 100_000;
/// Agent-made events of one actor, action and detail within this period share one entry.
pub const AGENT_AUDIT_PERIOD_MS: i64 = 3_600_000;
/// On PostgreSQL, a stream's length is counted again after this many writes of this server.
pub const RECOUNT_EVERY: u64 = 256;

/// What agents did within one period, as one entry of the agent stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentAuditRecord {
    /// Unix milliseconds of the first event.
    pub first_ms: i64,
    /// Unix milliseconds of the latest event.
    pub last_ms: i64,
    /// Number of events.
    pub count: u64,
    /// `agent:<app id>`.
    pub actor: String,
    /// `agent.enroll` or `agent.pending`.
    pub action: String,
    /// The app id.
    pub target: String,
    /// How it enrolled.
    pub detail: String,
}

/// The position of an entry in the merged order of both streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditKey {
    /// Unix milliseconds (of the first event, for an agent-made entry).
    pub at_ms: i64,
    /// Sequence number, unique across both streams.
    pub seq: u64,
}

impl AuditKey {
    fn bytes(self) -> [u8; 16] {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&self.at_ms.max(0).to_be_bytes());
        key[8..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let key: [u8; 16] = bytes.try_into().map_err(|_| {
            StoreError::Codec(codec::CodecError::Corrupt(format!("audit key of {} bytes", bytes.len())))
        })?;
        let (at, seq) = key.split_at(8);
        let at_ms = i64::from_be_bytes(at.try_into().unwrap_or_default());
        Ok(AuditKey { at_ms, seq: u64::from_be_bytes(seq.try_into().unwrap_or_default()) })
    }
}

/// One entry read back from either stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditItem {
    /// Where it sits, for a cursor.
    pub key: AuditKey,
    /// What happened (`at_ms` is the first event's time).
    pub record: AuditRecord,
    /// Number of events it stands for.
    pub count: u64,
    /// Time of the latest event, for an agent-made entry.
    pub last_ms: Option<i64>,
}

impl AuditItem {
    /// The time of its latest event.
    fn latest_ms(&self) -> i64 {
        self.last_ms.unwrap_or(self.record.at_ms)
    }
}

/// What one listing reads.
pub struct AuditScan<'a> {
    /// Read the operator stream.
    pub operators: bool,
    /// Read the agent stream.
    pub agents: bool,
    /// Only entries before this key (the cursor of the previous page).
    pub before: Option<AuditKey>,
    /// Only entries whose latest event is at or after this time.
    pub since_ms: Option<i64>,
    /// Most entries returned.
    pub limit: usize,
    /// Keeps an entry (the action and actor filters).
    pub keep: &'a dyn Fn(&AuditItem) -> bool,
}

/// What the writers of both streams keep in memory.
pub(super) struct AuditStreams {
    /// The operator stream's length, once counted.
    operators: Mutex<Option<Counted>>,
    /// The agent stream's length and open entries.
    agents: Mutex<Option<AgentStream>>,
    /// On PostgreSQL, a stream is counted again after this many writes ([`RECOUNT_EVERY`]).
    pub(super) recount_every: u64,
}

impl Default for AuditStreams {
    fn default() -> Self {
        AuditStreams { operators: Mutex::default(), agents: Mutex::default(), recount_every: RECOUNT_EVERY }
    }
}

/// A stream's length as this server knows it: counted, plus its own writes since.
#[derive(Debug, Clone, Copy)]
struct Counted {
    entries: u64,
    /// Entries this server added since the count.
    since: u64,
}

impl Counted {
    fn new(entries: u64) -> Self {
        Counted { entries, since: 0 }
    }
}

/// The agent stream's length and the entries of the current period, by actor, action and
/// detail, so that a repeated event finds its entry without a scan.
struct AgentStream {
    length: Counted,
    period: i64,
    open: HashMap<String, AuditKey>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn group_of(actor: &str, action: &str, detail: &str) -> String {
    format!("{actor}\0{action}\0{detail}")
}

impl Store {
    /// Appends an operator's action to the audit record.
    pub fn audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.audit_capped(record, MAX_OPERATOR_AUDIT)
    }

    fn audit_capped(&self, record: &AuditRecord, cap: u64) -> Result<(), StoreError> {
        let mut slot = locked(&self.audit_streams.operators);
        let trees = self.trees();
        let recount = self.recount_due(slot.as_ref());
        let length = match &mut *slot {
            Some(length) if !recount => length,
            slot => slot.insert(Counted::new(trees.audit.len()? as u64)),
        };
        let key = AuditKey { at_ms: record.at_ms, seq: self.next_id()? };
        trees.audit.insert(key.bytes(), codec::encode(record))?;
        length.entries += 1;
        length.since += 1;
        while length.entries > cap && trees.audit.pop_min()?.is_some() {
            length.entries -= 1;
        }
        Ok(())
    }

    /// Whether a stream's length `counted` must be counted (again): never counted, or, on
    /// PostgreSQL, other servers may have written since.
    fn recount_due(&self, counted: Option<&Counted>) -> bool {
        counted.is_none_or(|c| self.embedded.is_none() && c.since >= self.audit_streams.recount_every)
    }

    /// Adds an agent's event (`record.at_ms` is its time) to the agent stream: to the entry of
    /// the same actor, action and detail in the same period, else to a new one.
    pub fn audit_agent(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.audit_agent_capped(record, AGENT_AUDIT_PERIOD_MS, MAX_AGENT_AUDIT)
    }

    fn audit_agent_capped(&self, record: &AuditRecord, period_ms: i64, cap: u64) -> Result<(), StoreError> {
        let mut slot = locked(&self.audit_streams.agents);
        let period = record.at_ms.div_euclid(period_ms);
        let stream = match &mut *slot {
            Some(stream) => stream,
            empty => empty.insert(self.load_agent_stream(period, period_ms)?),
        };
        if self.recount_due(Some(&stream.length)) {
            stream.length = Counted::new(self.trees().agent_audit.len()? as u64);
        }
        if stream.period != period {
            stream.open.clear();
            stream.period = period;
        }
        let group = group_of(&record.actor, &record.action, &record.detail);
        if let Some(&key) = stream.open.get(&group)
            && self.count_again(key, record.at_ms)?
        {
            return Ok(());
        }
        let key = AuditKey { at_ms: record.at_ms, seq: self.next_id()? };
        let entry = AgentAuditRecord {
            first_ms: record.at_ms,
            last_ms: record.at_ms,
            count: 1,
            actor: record.actor.clone(),
            action: record.action.clone(),
            target: record.target.clone(),
            detail: record.detail.clone(),
        };
        self.trees().agent_audit.insert(key.bytes(), codec::encode(&entry))?;
        stream.open.insert(group, key);
        stream.length.entries += 1;
        stream.length.since += 1;
        self.trim_agent_stream(stream, cap)
    }

    /// Adds an event at `at_ms` to the entry at `key`; false when the cap has dropped it.
    fn count_again(&self, key: AuditKey, at_ms: i64) -> Result<bool, StoreError> {
        let trees = self.trees();
        let Some(old) = trees.agent_audit.get(key.bytes())? else { return Ok(false) };
        let mut entry: AgentAuditRecord = codec::decode(&old)?;
        entry.count = entry.count.saturating_add(1);
        entry.last_ms = entry.last_ms.max(at_ms);
        trees.agent_audit.insert(key.bytes(), codec::encode(&entry))?;
        Ok(true)
    }

    /// Drops the oldest agent-made entries beyond `cap`.
    fn trim_agent_stream(&self, stream: &mut AgentStream, cap: u64) -> Result<(), StoreError> {
        let trees = self.trees();
        while stream.length.entries > cap {
            let Some((oldest, _)) = trees.agent_audit.pop_min()? else { break };
            let oldest = AuditKey::from_bytes(&oldest)?;
            stream.open.retain(|_, key| *key != oldest);
            stream.length.entries -= 1;
        }
        Ok(())
    }

    /// Counts the agent stream and finds the entries of `period`, on the first write after start.
    fn load_agent_stream(&self, period: i64, period_ms: i64) -> Result<AgentStream, StoreError> {
        let trees = self.trees();
        let start = AuditKey { at_ms: period.saturating_mul(period_ms), seq: 0 };
        let mut open = HashMap::new();
        for item in trees.agent_audit.range(start.bytes()..) {
            let (key, value) = item?;
            let entry: AgentAuditRecord = codec::decode(&value)?;
            open.insert(group_of(&entry.actor, &entry.action, &entry.detail), AuditKey::from_bytes(&key)?);
        }
        Ok(AgentStream { length: Counted::new(trees.agent_audit.len()? as u64), period, open })
    }

    /// Up to `scan.limit` entries of the streams asked for, newest first, that `scan.keep`
    /// keeps; and whether more would follow.
    pub fn audit_page(&self, scan: &AuditScan<'_>) -> Result<(Vec<AuditItem>, bool), StoreError> {
        let trees = self.trees();
        let before = scan.before.map_or([0xff; 16], AuditKey::bytes);
        // An agent-made entry spans at most one period, so one that began a period before
        // `since` may still hold later events; none older can.
        let floor = |span: i64| scan.since_ms.map(|since| since.saturating_sub(span));
        let mut operators = Newest::of(&trees.audit, scan.operators, &before, floor(0), operator_item);
        let mut agents =
            Newest::of(&trees.agent_audit, scan.agents, &before, floor(AGENT_AUDIT_PERIOD_MS), agent_item);
        let mut items = Vec::new();
        loop {
            let take_agent = match (operators.peek()?, agents.peek()?) {
                (None, None) => return Ok((items, false)),
                (Some(o), Some(a)) => a.key > o.key,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let next = if take_agent { agents.next() } else { operators.next() };
            let Some(item) = next else { continue };
            if scan.since_ms.is_some_and(|since| item.latest_ms() < since) || !(scan.keep)(&item) {
                continue;
            }
            if items.len() == scan.limit {
                return Ok((items, true));
            }
            items.push(item);
        }
    }
}

/// One stream read newest first, below a key and down to a time.
struct Newest {
    iter: Option<super::logged::Iter>,
    floor_ms: Option<i64>,
    decode: fn(AuditKey, &[u8]) -> Result<AuditItem, StoreError>,
    head: Option<AuditItem>,
}

impl Newest {
    fn of(
        tree: &super::logged::LoggedTree,
        read: bool,
        before: &[u8; 16],
        floor_ms: Option<i64>,
        decode: fn(AuditKey, &[u8]) -> Result<AuditItem, StoreError>,
    ) -> Self {
        let iter = read.then(|| tree.range(..before.to_vec()));
        Newest { iter, floor_ms, decode, head: None }
    }

    /// The next entry, read if needed; `None` once the stream is done or below the floor.
    fn peek(&mut self) -> Result<Option<&AuditItem>, StoreError> {
        if self.head.is_none()
            && let Some(iter) = self.iter.as_mut()
            && let Some(found) = iter.next_back()
        {
            let (key, value) = found?;
            let key = AuditKey::from_bytes(&key)?;
            if self.floor_ms.is_some_and(|floor| key.at_ms < floor) {
                self.iter = None;
            } else {
                self.head = Some((self.decode)(key, &value)?);
            }
        }
        Ok(self.head.as_ref())
    }

    fn next(&mut self) -> Option<AuditItem> {
        self.head.take()
    }
}

fn operator_item(key: AuditKey, value: &[u8]) -> Result<AuditItem, StoreError> {
    Ok(AuditItem { key, record: codec::decode(value)?, count: 1, last_ms: None })
}

fn agent_item(key: AuditKey, value: &[u8]) -> Result<AuditItem, StoreError> {
    let entry: AgentAuditRecord = codec::decode(value)?;
    let record = AuditRecord {
        at_ms: entry.first_ms,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        detail: entry.detail,
    };
    Ok(AuditItem { key, record, count: entry.count, last_ms: Some(entry.last_ms) })
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
