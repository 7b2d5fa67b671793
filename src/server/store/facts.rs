//! What agents say about themselves, each in its own tree so that agent records keep their
//! layout: host facts (`facts`: app id → [`FactsRecord`]; original clients have none, and an
//! agent's facts change without its registration being written again) and the task features it
//! announced (`features`: app id → [`FeaturesRecord`]; none for original clients and older
//! orange agents), which a transaction starting a job's task reads.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::protocol::facts::HostFacts;
use crate::server::codec;

/// The facts an agent sent last, as stored (a plain struct, as bincode needs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FactsRecord {
    /// Host name.
    pub hostname: Option<String>,
    /// OS name.
    pub os_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Architecture.
    pub arch: Option<String>,
    /// Non-loopback IP addresses.
    pub ips: Vec<String>,
    /// Unix seconds of the host's boot.
    pub boot_time: Option<i64>,
    /// Unix milliseconds the server received them.
    pub updated_ms: i64,
}

impl FactsRecord {
    /// The record of `facts` received at `now_ms`.
    pub fn new(facts: HostFacts, now_ms: i64) -> Self {
        FactsRecord {
            hostname: facts.hostname,
            os_name: facts.os_name,
            os_version: facts.os_version,
            kernel: facts.kernel,
            arch: facts.arch,
            ips: facts.ips,
            boot_time: facts.boot_time,
            updated_ms: now_ms,
        }
    }

    /// The facts as the wire carries them.
    pub fn facts(&self) -> HostFacts {
        HostFacts {
            hostname: self.hostname.clone(),
            os_name: self.os_name.clone(),
            os_version: self.os_version.clone(),
            kernel: self.kernel.clone(),
            arch: self.arch.clone(),
            ips: self.ips.clone(),
            boot_time: self.boot_time,
        }
    }
}

/// The task features an agent announced last, sorted (a plain struct, as bincode needs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeaturesRecord {
    /// Feature names.
    pub features: Vec<String>,
    /// Unix milliseconds the server received them.
    pub updated_ms: i64,
}

impl Store {
    /// The features agent `app_id` announced last (none if it never announced any).
    pub fn features(&self, app_id: &str) -> Result<Vec<String>, StoreError> {
        let record: Option<FeaturesRecord> =
            self.trees().features.get(app_id)?.map(|v| codec::decode(&v)).transpose()?;
        Ok(record.map(|r| r.features).unwrap_or_default())
    }

    /// Stores the features agent `app_id` announces, when they differ from those stored (none
    /// removes the entry); true when something was written.
    pub fn note_features(&self, app_id: &str, features: &[String], now_ms: i64) -> Result<bool, StoreError> {
        if self.features(app_id)? == features {
            return Ok(false);
        }
        if features.is_empty() {
            self.trees().features.remove(app_id.as_bytes())?;
        } else {
            let record = FeaturesRecord { features: features.to_vec(), updated_ms: now_ms };
            self.trees().features.insert(app_id.as_bytes(), codec::encode(&record))?;
        }
        Ok(true)
    }

    /// Stores the facts of agent `app_id`, replacing earlier ones.
    pub fn put_facts(&self, app_id: &str, record: &FactsRecord) -> Result<(), StoreError> {
        self.trees().facts.insert(app_id.as_bytes(), codec::encode(record))?;
        Ok(())
    }

    /// The facts of agent `app_id`, if it sent any.
    pub fn facts(&self, app_id: &str) -> Result<Option<FactsRecord>, StoreError> {
        self.trees().facts.get(app_id)?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// The facts of every agent that sent some, by app id.
    pub fn all_facts(&self) -> Result<HashMap<String, FactsRecord>, StoreError> {
        self.trees()
            .facts
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((String::from_utf8_lossy(&key).into_owned(), codec::decode(&value)?))
            })
            .collect()
    }

    /// Drops the facts and features of agent `app_id`.
    pub fn remove_facts(&self, app_id: &str) -> Result<(), StoreError> {
        self.trees().facts.remove(app_id.as_bytes())?;
        self.trees().features.remove(app_id.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::server::store::Policy;

    fn facts(kernel: &str) -> FactsRecord {
        let facts = HostFacts {
            kernel: Some(kernel.into()),
            ips: vec!["10.0.0.5".into(), "fe80::1".into()],
            boot_time: Some(1_700_000_000),
            ..HostFacts::default()
        };
        FactsRecord::new(facts, 5)
    }

    #[test]
    fn features_are_written_only_when_they_change_and_none_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 * 1024 * 1024, Policy::default()).unwrap();
        let both = vec!["cwd".to_owned(), "env".to_owned()];
        assert!(store.features("a").unwrap().is_empty());
        assert!(!store.note_features("a", &[], 1).unwrap());
        assert!(store.note_features("a", &both, 1).unwrap());
        assert!(!store.note_features("a", &both, 2).unwrap());
        assert_eq!(store.features("a").unwrap(), both);
        assert!(store.note_features("a", &[], 3).unwrap());
        assert!(store.features("a").unwrap().is_empty());
    }

    #[test]
    fn facts_are_kept_per_agent_and_go_with_a_silent_agent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 * 1024 * 1024, Policy::default()).unwrap();
        assert_eq!(store.facts("a").unwrap(), None);
        store.put_facts("a", &facts("6.1")).unwrap();
        store.put_facts("b", &facts("5.10")).unwrap();
        store.put_facts("a", &facts("6.2")).unwrap();
        assert_eq!(store.facts("a").unwrap(), Some(facts("6.2")));
        assert_eq!(store.facts("a").unwrap().map(|f| f.facts().kernel), Some(Some("6.2".to_owned())));
        let all = store.all_facts().unwrap();
        assert_eq!((all.len(), all.get("b")), (2, Some(&facts("5.10"))));

        let agent = crate::server::store::tests::agent("a");
        store.put_agent(&agent).unwrap();
        assert_eq!(store.forget_silent_agents(100).unwrap(), ["a"]);
        assert_eq!(store.facts("a").unwrap(), None);
        assert!(store.facts("b").unwrap().is_some());
    }
}
