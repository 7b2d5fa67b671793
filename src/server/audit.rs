//! The audit record: every operator action (sends, cancels, accepts, forgets, tokens, jobs), one
//! entry each, and what agents did (enrollments, pending registrations), one entry per app id,
//! action and hour with a count, in a stream of its own so that agent noise never pushes an
//! operator action out. Listed newest first, filtered and paged by a cursor.

use std::sync::Arc;

use super::clock::{now_ms, rfc3339};
use super::error::ServiceError;
use super::operators::Caller;
use super::store::{AuditItem, AuditKey, AuditRecord, AuditScan, Store, StoreError};
use crate::protocol::TaskId;
use crate::protocol::audit::{AuditCursor, AuditEntry, AuditKind, AuditList, AuditQuery};

/// Appends to and reads the audit record.
#[derive(Clone)]
pub struct Audit {
    store: Arc<Store>,
}

impl Audit {
    /// The audit record kept in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Audit { store }
    }

    /// Appends an operator's entry: `actor` did `action` to `target`.
    pub fn record(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), ServiceError> {
        Ok(self.store.audit(&record(actor, action, target, detail))?)
    }

    /// Counts an event of agent `app_id` in the agent stream: one entry per app id, action and
    /// detail within the hour.
    pub fn record_agent(&self, app_id: &str, action: &str, detail: &str) -> Result<(), ServiceError> {
        Ok(self.store.audit_agent(&record(&format!("agent:{app_id}"), action, app_id, detail))?)
    }

    /// The page of entries `query` asks for, newest first, with the cursor of the next one.
    pub fn list(&self, caller: &Caller, query: &AuditQuery) -> Result<AuditList, ServiceError> {
        let kind = query.kind();
        let keep = |item: &AuditItem| {
            query.matches(&item.record.actor, &item.record.action) && self.within_scope(caller, &item.record)
        };
        let scan = AuditScan {
            operators: kind != AuditKind::Agent,
            agents: kind != AuditKind::Operator,
            before: query.after.map(key_of),
            since_ms: query.since.map(|since| since.to_ms(now_ms())),
            limit: query.limit(),
            keep: &keep,
        };
        let (items, more) = self.store.audit_page(&scan)?;
        let next = if more { items.last().map(|item| cursor_of(item.key).to_string()) } else { None };
        Ok(AuditList { entries: items.into_iter().map(entry).collect(), next })
    }
}

impl Audit {
    /// True when a `caller` may read `record`: an unscoped one every entry; a scoped one its own
    /// entries and those about an agent, a task or a job within its scope.
    fn within_scope(&self, caller: &Caller, record: &AuditRecord) -> bool {
        if caller.unscoped() || record.actor.split_once('@').is_some_and(|(name, _)| name == caller.name) {
            return true;
        }
        self.target_within_scope(caller, &record.target).unwrap_or(false)
    }

    /// True when `target` (an app id, a task or job id, or `N tasks, first ID`) is an agent, a
    /// task or a job within `caller`'s scope.
    fn target_within_scope(&self, caller: &Caller, target: &str) -> Result<bool, StoreError> {
        let last_word = target.rsplit(' ').next().unwrap_or(target);
        if let Ok(id) = TaskId::parse_str(last_word) {
            if let Some(task) = self.store.task(id)? {
                return caller.may_reach(&self.store, &task.app_id);
            }
            return Ok(self.store.job(id)?.is_some() && caller.reaches_job(&self.store, id)?);
        }
        Ok(self.store.agent(target)?.is_some() && caller.may_reach(&self.store, target)?)
    }
}

fn record(actor: &str, action: &str, target: &str, detail: &str) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    }
}

fn key_of(cursor: AuditCursor) -> AuditKey {
    AuditKey { at_ms: i64::try_from(cursor.at_ms).unwrap_or(i64::MAX), seq: cursor.seq }
}

fn cursor_of(key: AuditKey) -> AuditCursor {
    AuditCursor { at_ms: u64::try_from(key.at_ms).unwrap_or(0), seq: key.seq }
}

/// An entry as the operator API shows it.
fn entry(item: AuditItem) -> AuditEntry {
    AuditEntry {
        at: rfc3339(item.record.at_ms),
        actor: item.record.actor,
        action: item.record.action,
        target: item.record.target,
        detail: item.record.detail,
        count: item.count,
        last: item.last_ms.map(rfc3339),
    }
}
