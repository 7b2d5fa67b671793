//! The fleet's inventory: storing the host facts agents send, and the agent list operators read,
//! with each agent's facts and uptime, filtered by labels and by being online.

use std::sync::Arc;

use super::clock::{now_ms, rfc3339};
use super::error::ServiceError;
use super::operators::{Caller, ScopedScan};
use super::presence::Presence;
use super::store::{AgentRecord, AgentStatus, FactsRecord, Store, StoreError};
use super::views::agent_view;
use crate::protocol::admin::{AgentFilter, AgentView};
use crate::protocol::facts::{FactsView, HostFacts, check_facts};
use crate::protocol::wire::shown;

/// The agents and their host facts.
pub struct Inventory {
    store: Arc<Store>,
    presence: Arc<Presence>,
}

impl Inventory {
    /// The inventory kept in `store`; who is online is read from `presence`.
    pub fn new(store: Arc<Store>, presence: Arc<Presence>) -> Self {
        Inventory { store, presence }
    }

    /// Replaces the facts of agent `app_id` (already authenticated) once they pass their limits;
    /// returns once they are on stable storage. Refused facts store nothing.
    pub async fn update_facts(&self, app_id: &str, facts: HostFacts) -> Result<(), ServiceError> {
        let now = now_ms();
        check_facts(&facts, now / 1000).map_err(ServiceError::BadRequest)?;
        self.store.put_facts(app_id, &FactsRecord::new(facts, now))?;
        self.store.durable().await?;
        Ok(())
    }

    /// Keeps the task features agent `app_id` announced on a poll, when they changed. Not
    /// waited on to be durable: the poll's own features decide what it is handed, and the next
    /// poll writes them again if a crash lost them.
    pub fn note_features(&self, app_id: &str, features: &[String]) -> Result<(), StoreError> {
        if self.store.note_features(app_id, features, now_ms())? {
            tracing::info!(agent = %app_id, features = ?features, "agent features changed");
        }
        Ok(())
    }

    /// The agents that pass `filter`, sorted by app id, with their facts: those after
    /// `filter.after`, at most `filter.limit`; and the `after` of the next page when the limit
    /// cut the list short. Facts are read only for the agents listed.
    pub fn agents(
        &self,
        caller: &Caller,
        filter: &AgentFilter,
    ) -> Result<(Vec<AgentView>, Option<String>), StoreError> {
        let now = now_ms();
        let scan = ScopedScan::new(caller, &self.store);
        let agents = self.store.agents()?;
        let mut matching = agents
            .iter()
            .filter(|agent| filter.after.as_ref().is_none_or(|after| agent.app_id > *after))
            .filter(|agent| scan.reaches(&agent.app_id).unwrap_or(false))
            .map(|agent| agent_view(agent, self.presence.liveness(agent, now)))
            .filter(|view| filter.matches(view));
        let limit = filter.limit.unwrap_or(usize::MAX);
        let page: Vec<AgentView> = matching.by_ref().take(limit).collect();
        let next = match matching.next() {
            Some(_) => page.last().map(|view| view.app_id.clone()),
            None => None,
        };
        let page = page
            .into_iter()
            .map(|mut view| {
                view.features = self.store.features(&view.app_id)?;
                view.approved_labels = scan.approved(&view.app_id)?;
                let record = self.store.facts(&view.app_id)?;
                Ok(with_facts(view, record, now))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((page, next))
    }

    /// Agent `app_id` as the operator sees it, with its facts.
    pub fn agent(&self, caller: &Caller, app_id: &str) -> Result<AgentView, ServiceError> {
        let unknown = || ServiceError::NotFound(format!("unknown agent {:?}", shown(app_id)));
        let agent = self.store.agent(app_id)?.ok_or_else(unknown)?;
        // An agent outside the caller's scope is answered as unknown.
        if !caller.may_reach(&self.store, app_id)? {
            return Err(unknown());
        }
        Ok(self.view(&agent)?)
    }

    /// Whether `app_id` is an enrolled agent an operator has not forgotten: what its calls need
    /// to be served before those of strangers and pending agents.
    pub fn is_accepted(&self, app_id: &str) -> Result<bool, StoreError> {
        Ok(self.store.agent(app_id)?.is_some_and(|agent| agent.status == AgentStatus::Accepted))
    }

    /// `agent` as the operator sees it, with its facts.
    pub fn view(&self, agent: &AgentRecord) -> Result<AgentView, StoreError> {
        let now = now_ms();
        let mut view = agent_view(agent, self.presence.liveness(agent, now));
        view.features = self.store.features(&agent.app_id)?;
        view.approved_labels = self.store.approved_labels(&agent.app_id)?;
        Ok(with_facts(view, self.store.facts(&agent.app_id)?, now))
    }
}

/// `view` with `facts` shown; the host name the facts carry is newer than the registration's.
fn with_facts(mut view: AgentView, facts: Option<FactsRecord>, now_ms: i64) -> AgentView {
    let Some(record) = facts else { return view };
    if record.hostname.is_some() {
        view.hostname.clone_from(&record.hostname);
    }
    view.facts = Some(facts_view(&record, now_ms));
    view
}

/// The stored facts with the uptime reckoned at `now_ms`.
pub fn facts_view(record: &FactsRecord, now_ms: i64) -> FactsView {
    let uptime_secs = record.boot_time.map(|boot| u64::try_from(now_ms / 1000 - boot).unwrap_or(0));
    FactsView {
        facts: record.facts(),
        boot_time_at: record.boot_time.map(|boot| rfc3339(boot.saturating_mul(1000))),
        uptime_secs,
        updated_at: rfc3339(record.updated_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_reckoned_from_the_boot_time() {
        let facts = HostFacts { boot_time: Some(1000), kernel: Some("6.1".into()), ..HostFacts::default() };
        let view = facts_view(&FactsRecord::new(facts.clone(), 5_000), 1_061_500);
        assert_eq!(view.uptime_secs, Some(61));
        assert_eq!(view.boot_time_at.as_deref(), Some("1970-01-01T00:16:40.000Z"));
        assert_eq!(view.facts, facts);
        let skewed = facts_view(&FactsRecord::new(facts, 5_000), 500_000);
        assert_eq!(skewed.uptime_secs, Some(0));
    }
}
