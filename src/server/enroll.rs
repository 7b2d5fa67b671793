//! Enrollment: who may register an app id, and the operator's side of it. An agent enrolls with
//! the server's enrollment key, or with an enrollment token (limited uses, an expiry, revocable),
//! or with no credential, in which case it waits `pending` until an operator accepts it. An app
//! id that is enrolled cannot be taken over with another secret; an operator can forget it.
//! Every enrollment and operator action lands in the audit record.

use sha2::{Digest, Sha256};

use super::fleet::{Fleet, FleetError, now_ms, rfc3339};
use super::store::{AgentRecord, AgentStatus, AuditRecord, FactsRecord, TokenRecord, secs_to_ms};
use crate::protocol::admin::{AuditEntry, TokenView};
use crate::protocol::facts::check_facts;
use crate::protocol::limits::{MAX_PENDING, MAX_TOKEN_TTL_SECS};
use crate::protocol::wire::{self, RegisterRequest};

/// How a registering agent proved it may enroll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Signed with the server's enrollment key.
    EnrollKey,
    /// Signed with the secret of this enrollment token (already checked usable).
    Token(String),
    /// No credential: signed with its own secret; it waits for an operator.
    None,
}

fn random_hex(bytes: usize) -> Result<String, FleetError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| FleetError::BadRequest(format!("no randomness: {e}")))?;
    Ok(hex::encode(raw))
}

impl Fleet {
    /// Registers an agent: enrolls a new app id (accepted, or pending without a credential),
    /// refreshes a known one registering with the same secret, refuses a different secret.
    pub async fn register(
        &self,
        mut request: RegisterRequest,
        credential: Credential,
    ) -> Result<AgentRecord, FleetError> {
        self.check_secret(&request)?;
        let facts = request.facts.take();
        // A pending record proves nothing about who made it: a credential replaces it, so a
        // stranger cannot squat an app id before its real host enrolls.
        let replaceable = |a: &AgentRecord| {
            a.status == AgentStatus::Forgotten
                || (a.status == AgentStatus::Pending && credential != Credential::None)
        };
        let old =
            self.store.agent(&request.app_id)?.filter(|a| !replaceable(a) || a.secret == request.secret);
        if let Some(old) = &old
            && old.secret != request.secret
        {
            return Err(FleetError::Conflict(format!(
                "app id {:?} is already enrolled with a different secret; an operator can reset it with \
                 `orange agents forget {}`",
                request.app_id, request.app_id
            )));
        }
        let is_new = old.is_none();
        let status = self.status_after(old.as_ref().map(|a| a.status), &credential)?;
        let record = agent_record(request, old.as_ref(), status);
        self.store.put_agent(&record)?;
        // A client that sends no facts (an original one) leaves none from an earlier agent shown.
        match facts {
            Some(facts) => self.store.put_facts(&record.app_id, &FactsRecord::new(facts, now_ms()))?,
            None => self.store.remove_facts(&record.app_id)?,
        }
        if is_new || old.as_ref().map(|a| a.status) != Some(status) {
            self.record_enrollment(&record, &credential)?;
        }
        self.store.durable().await?;
        Ok(record)
    }

    fn check_secret(&self, request: &RegisterRequest) -> Result<(), FleetError> {
        wire::check_app_id(&request.app_id).map_err(FleetError::BadRequest)?;
        wire::check_register_fields(request).map_err(FleetError::BadRequest)?;
        if let Some(facts) = &request.facts {
            check_facts(facts, now_ms() / 1000).map_err(FleetError::BadRequest)?;
        }
        if request.secret.is_empty() || request.secret.len() > wire::MAX_SECRET_LEN {
            return Err(FleetError::BadRequest(format!(
                "secret must be 1 to {} bytes",
                wire::MAX_SECRET_LEN
            )));
        }
        let hash: [u8; 32] = Sha256::digest(request.secret.as_bytes()).into();
        if hash == self.admin_token_hash {
            return Err(FleetError::BadRequest("an agent secret must not be the admin token".into()));
        }
        Ok(())
    }

    /// The status an agent gets: a credential accepts it (using up one token use), none leaves
    /// a new agent pending (within the cap) and a known one where it was.
    fn status_after(
        &self,
        old: Option<AgentStatus>,
        credential: &Credential,
    ) -> Result<AgentStatus, FleetError> {
        match (credential, old) {
            (_, Some(AgentStatus::Accepted)) => Ok(AgentStatus::Accepted),
            (Credential::EnrollKey, _) => Ok(AgentStatus::Accepted),
            (Credential::Token(id), _) => {
                if self.store.use_token(id.as_str())? {
                    Ok(AgentStatus::Accepted)
                } else {
                    Err(FleetError::Conflict(format!("enrollment token {id:?} has no uses left")))
                }
            }
            (Credential::None, Some(status)) => Ok(status),
            (Credential::None, None) => {
                if self.store.pending_agents()? >= MAX_PENDING {
                    return Err(FleetError::TooLarge(format!(
                        "{MAX_PENDING} agents already wait for acceptance; accept or forget some first"
                    )));
                }
                Ok(AgentStatus::Pending)
            }
        }
    }

    fn record_enrollment(&self, agent: &AgentRecord, credential: &Credential) -> Result<(), FleetError> {
        let how = match credential {
            Credential::EnrollKey => "with the enrollment key".to_owned(),
            Credential::Token(id) => format!("with enrollment token {id}"),
            Credential::None => "without a credential".to_owned(),
        };
        let action = if agent.status == AgentStatus::Pending { "agent.pending" } else { "agent.enroll" };
        self.audit(&format!("agent:{}", agent.app_id), action, &agent.app_id, &how)
    }

    /// Appends an entry to the audit record.
    pub fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), FleetError> {
        let record = AuditRecord {
            at_ms: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        Ok(self.store.audit(&record)?)
    }

    /// Sets an agent's status on an operator's word (`accept` or `forget`).
    pub async fn set_status(
        &self,
        actor: &str,
        app_id: &str,
        status: AgentStatus,
    ) -> Result<AgentRecord, FleetError> {
        let agent = self.store.set_agent_status(app_id, status)?.ok_or_else(|| {
            FleetError::NotFound(format!("unknown agent {app_id:?} (a forgotten agent must enroll again)"))
        })?;
        let action = if status == AgentStatus::Forgotten { "agent.forget" } else { "agent.accept" };
        self.audit(actor, action, app_id, "")?;
        self.store.durable().await?;
        if status == AgentStatus::Accepted {
            self.dispatch.wake_agent(app_id);
        }
        Ok(agent)
    }

    /// Parks a poll of a pending agent until an operator accepts it or the poll window ends.
    pub async fn wait_for_acceptance(&self, app_id: &str) {
        let poll = self.dispatch.park(app_id);
        let deadline = tokio::time::Instant::now() + self.config.poll_window;
        loop {
            let woken = poll.slot.signal.notified();
            let accepted =
                matches!(self.store.agent(app_id), Ok(Some(a)) if a.status == AgentStatus::Accepted);
            if accepted || poll.superseded() {
                return;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.dispatch.stopped() => return,
            }
        }
    }

    /// Creates an enrollment token; the answer is the only place its secret is shown.
    pub async fn create_token(&self, actor: &str, ttl_secs: u64, uses: u32) -> Result<TokenView, FleetError> {
        if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS || uses == 0 {
            return Err(FleetError::BadRequest(format!(
                "ttl_secs must be 1 to {MAX_TOKEN_TTL_SECS} and uses at least 1"
            )));
        }
        let now = now_ms();
        let token = TokenRecord {
            id: random_hex(8)?,
            secret: random_hex(16)?,
            created_ms: now,
            expires_ms: now.saturating_add(secs_to_ms(ttl_secs)),
            uses_left: uses,
            revoked: false,
        };
        self.store.put_token(&token)?;
        self.audit(actor, "token.create", &token.id, &format!("{uses} uses, {ttl_secs} s"))?;
        self.store.durable().await?;
        let mut view = token_view(&token);
        view.token = Some(format!("{}.{}", token.id, token.secret));
        Ok(view)
    }

    /// Revokes an enrollment token.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> Result<TokenView, FleetError> {
        let mut token = self
            .store
            .token(id)?
            .ok_or_else(|| FleetError::NotFound(format!("unknown enrollment token {id:?}")))?;
        token.revoked = true;
        self.store.put_token(&token)?;
        self.audit(actor, "token.revoke", id, "")?;
        self.store.durable().await?;
        Ok(token_view(&token))
    }

    /// Every enrollment token, without secrets.
    pub fn token_views(&self) -> Result<Vec<TokenView>, FleetError> {
        Ok(self.store.tokens()?.iter().map(token_view).collect())
    }

    /// The newest `limit` audit entries.
    pub fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, FleetError> {
        let entries = self.store.audit_entries(limit)?;
        Ok(entries
            .into_iter()
            .map(|e| AuditEntry {
                at: rfc3339(e.at_ms),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect())
    }
}

fn agent_record(request: RegisterRequest, old: Option<&AgentRecord>, status: AgentStatus) -> AgentRecord {
    let now = now_ms();
    AgentRecord {
        registered_at_ms: old.map_or(now, |a| a.registered_at_ms),
        processed_task_count: old.map_or(0, |a| a.processed_task_count),
        app_id: request.app_id,
        secret: request.secret,
        labels: request.labels,
        version: request.version,
        hostname: request.hostname,
        last_seen_ms: now,
        status,
    }
}

fn token_view(token: &TokenRecord) -> TokenView {
    TokenView {
        token_id: token.id.clone(),
        token: None,
        created_at: rfc3339(token.created_ms),
        expires_at: rfc3339(token.expires_ms),
        uses_left: token.uses_left,
        revoked: token.revoked,
    }
}
