//! The audit record: who enrolled which agent, and every operator action (sends, cancels,
//! accepts, forgets, tokens), newest read first.

use std::sync::Arc;

use super::clock::now_ms;
use super::error::ServiceError;
use super::store::{AuditRecord, Store};
use super::views::audit_entry;
use crate::protocol::admin::AuditEntry;

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

    /// Appends an entry: `actor` did `action` to `target`.
    pub fn record(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), ServiceError> {
        let record = AuditRecord {
            at_ms: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        Ok(self.store.audit(&record)?)
    }

    /// The newest `limit` entries.
    pub fn entries(&self, limit: usize) -> Result<Vec<AuditEntry>, ServiceError> {
        Ok(self.store.audit_entries(limit)?.into_iter().map(audit_entry).collect())
    }
}
