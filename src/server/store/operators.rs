//! Named operators and agents' approved labels, each in a tree of its own: `operators` (name →
//! [`OperatorRecord`]: role, scope, the SHA-256 of its token, lifetime, revocation) and
//! `approved_labels` (app id → [`ApprovedLabels`]: the labels an admin approved, which scopes
//! match; an agent's own `labels` are only what it declares).
//!
//! Upgrade: a data directory written before approved labels existed has none; at the first open
//! every accepted agent's declared labels are approved once, so a set-up that had one admin
//! keeps reaching the same hosts (a marker in `meta` says it was done).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::AgentStatus;
use super::{Store, StoreError};
use crate::server::codec;

/// Key, in the `meta` tree, set once the labels of agents accepted before approval existed
/// were approved.
const LABELS_MIGRATED_KEY: &[u8] = b"labels_approved_v1";

/// What a named operator may do, as stored (variants never reordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRole {
    /// Reads.
    Viewer,
    /// Reads, runs, cancels, copies files.
    Operator,
    /// Everything.
    Admin,
}

/// A named operator.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorRecord {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: OperatorRole,
    /// Labels an agent's approved labels must carry for it to reach the agent (empty: all).
    pub scope: BTreeMap<String, String>,
    /// SHA-256 of its token; the token itself is never stored.
    pub token_hash: [u8; 32],
    /// Unix milliseconds of its creation, or of its token's last rotation.
    pub created_ms: i64,
    /// Unix milliseconds after which its token no longer works, if ever.
    pub expires_ms: Option<i64>,
    /// Unix milliseconds of its revocation, if revoked.
    pub revoked_ms: Option<i64>,
    /// Its token's lifetime, for a rotation to give the new token the same.
    pub ttl_secs: Option<u64>,
    /// Most hosts one task send or job of it may reach, if limited.
    pub max_hosts: Option<u32>,
    /// The task types it may send; empty: every type.
    pub task_types: Vec<String>,
}

impl std::fmt::Debug for OperatorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_hash", &"***")
            .finish_non_exhaustive()
    }
}

/// The labels an admin approved for one agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovedLabels {
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// Unix milliseconds of the approval.
    pub approved_ms: i64,
}

impl Store {
    /// Stores a new or changed operator.
    pub fn put_operator(&self, operator: &OperatorRecord) -> Result<(), StoreError> {
        self.trees().operators.insert(operator.name.as_bytes(), codec::encode(operator))?;
        Ok(())
    }

    /// The operator `name`.
    pub fn operator(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError> {
        self.trees().operators.get(name)?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Every operator, by name.
    pub fn operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        self.trees().operators.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// The labels approved for agent `app_id` (none if never approved).
    pub fn approved_labels(&self, app_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let record: Option<ApprovedLabels> =
            self.trees().approved_labels.get(app_id)?.map(|v| codec::decode(&v)).transpose()?;
        Ok(record.map(|r| r.labels).unwrap_or_default())
    }

    /// Sets the approved labels of agent `app_id`, replacing earlier ones.
    pub fn approve_labels(
        &self,
        app_id: &str,
        labels: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let record = ApprovedLabels { labels: labels.clone(), approved_ms: now_ms };
        self.trees().approved_labels.insert(app_id.as_bytes(), codec::encode(&record))?;
        Ok(())
    }

    /// Drops the approved labels of agent `app_id` (when it is forgotten).
    pub fn remove_approved_labels(&self, app_id: &str) -> Result<(), StoreError> {
        self.trees().approved_labels.remove(app_id.as_bytes())?;
        Ok(())
    }

    /// Once per data directory: approves the declared labels of every agent accepted before
    /// approved labels existed. Returns how many agents it approved.
    pub(super) fn approve_labels_of_earlier_agents(&self, now_ms: i64) -> Result<usize, StoreError> {
        if self.trees().meta.get(LABELS_MIGRATED_KEY)?.is_some() {
            return Ok(0);
        }
        let mut approved = 0;
        for agent in self.agents()? {
            if agent.status == AgentStatus::Accepted
                && self.trees().approved_labels.get(&agent.app_id)?.is_none()
            {
                self.approve_labels(&agent.app_id, &agent.labels, now_ms)?;
                approved += 1;
            }
        }
        self.trees().meta.insert(LABELS_MIGRATED_KEY, &[1u8][..])?;
        Ok(approved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{AgentRecord, Policy};

    fn agent(app_id: &str, status: AgentStatus, labels: &[(&str, &str)]) -> AgentRecord {
        AgentRecord {
            app_id: app_id.into(),
            secret: "s".into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            version: None,
            hostname: None,
            registered_at_ms: 1,
            last_seen_ms: 1,
            processed_task_count: 0,
            status,
        }
    }

    #[test]
    fn agents_accepted_before_keep_their_labels_once_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1024 * 1024, Policy::default()).unwrap();
        assert_eq!(store.approve_labels_of_earlier_agents(4).unwrap(), 0, "a new directory is done at open");
        // As a data directory written before approved labels: no marker.
        store.trees().meta.remove(LABELS_MIGRATED_KEY).unwrap();
        store.put_agent(&agent("web-1", AgentStatus::Accepted, &[("role", "web")])).unwrap();
        store.put_agent(&agent("new-1", AgentStatus::Pending, &[("role", "web")])).unwrap();
        assert_eq!(store.approve_labels_of_earlier_agents(5).unwrap(), 1);
        assert_eq!(store.approved_labels("web-1").unwrap()["role"], "web");
        assert!(store.approved_labels("new-1").unwrap().is_empty(), "a pending agent is not approved");
        store.put_agent(&agent("later", AgentStatus::Accepted, &[("role", "db")])).unwrap();
        assert_eq!(store.approve_labels_of_earlier_agents(6).unwrap(), 0, "done once");
        assert!(store.approved_labels("later").unwrap().is_empty());
    }

    #[test]
    fn operators_are_stored_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1024 * 1024, Policy::default()).unwrap();
        let operator = OperatorRecord {
            name: "alice".into(),
            role: OperatorRole::Operator,
            scope: [("role".to_owned(), "web".to_owned())].into(),
            token_hash: [7; 32],
            created_ms: 1,
            expires_ms: None,
            revoked_ms: None,
            ttl_secs: None,
            max_hosts: None,
            task_types: Vec::new(),
        };
        store.put_operator(&operator).unwrap();
        assert_eq!(store.operator("alice").unwrap(), Some(operator.clone()));
        assert_eq!(store.operators().unwrap(), vec![operator]);
        assert!(!format!("{:?}", store.operators().unwrap()).contains("[7"), "no hash in Debug");
    }
}
