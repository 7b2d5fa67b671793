//! Enrollment: who may register an app id, and the operator's side of it. An agent enrolls with
//! the server's enrollment key, or with an enrollment token (limited uses, an expiry, revocable),
//! or with no credential, in which case it waits `pending` until an operator accepts it. An app
//! id that is enrolled cannot be taken over with another secret; an operator can forget it.
//! A registration that does not prove the right to its app id is refused with one message,
//! whatever was wrong, so that the answer tells a guesser nothing. Every enrollment and
//! operator action lands in the audit record.

use std::sync::Arc;

use thiserror::Error;

use super::audit::Audit;
use super::clock::now_ms;
use super::dispatch::Dispatch;
use super::error::ServiceError;
use super::guard::{SecretHash, secret_hash};
use super::store::{AgentRecord, AgentStatus, FactsRecord, Store, StoreError, TokenRecord, secs_to_ms};
use super::views::token_view;
use crate::protocol::admin::TokenView;
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

/// The one answer to a registration that does not prove the right to `app_id`: a bad signature,
/// another secret than the one the app id is enrolled with, or the admin token as the secret.
/// It is the same for each, so that a guess learns nothing but that it failed.
pub fn not_proven(app_id: &str) -> String {
    format!(
        "registration of app id {:?} refused: wrong signature or secret (if this host lost its secret, \
         an operator can reset the app id with `orange agents forget {}`)",
        wire::shown(app_id),
        wire::shown(app_id)
    )
}

/// Why a registration was refused.
#[derive(Debug, Error)]
pub enum RegisterError {
    /// The secret does not prove the right to the app id: a failed attempt, answered with
    /// [`not_proven`].
    #[error("{}", not_proven(.0))]
    NotProven(String),
    /// Any other refusal, with its own message.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> Self {
        RegisterError::Service(ServiceError::Store(e))
    }
}

fn random_hex(bytes: usize) -> Result<String, ServiceError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| ServiceError::BadRequest(format!("no randomness: {e}")))?;
    Ok(hex::encode(raw))
}

/// Registration, acceptance and enrollment tokens.
pub struct Enrollment {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    audit: Audit,
    admin_token_hash: SecretHash,
}

impl Enrollment {
    /// Enrollment over `store`; no agent may use the secret that hashes to `admin_token_hash`.
    pub fn new(
        store: Arc<Store>,
        dispatch: Arc<Dispatch>,
        audit: Audit,
        admin_token_hash: SecretHash,
    ) -> Self {
        Enrollment { store, dispatch, audit, admin_token_hash }
    }

    /// Registers an agent: enrolls a new app id (accepted, or pending without a credential),
    /// refreshes a known one registering with the same secret, refuses a different secret (and
    /// the admin token) as [`RegisterError::NotProven`].
    pub async fn register(
        &self,
        mut request: RegisterRequest,
        credential: Credential,
    ) -> Result<AgentRecord, RegisterError> {
        self.check_secret(&request)?;
        let facts = request.facts.take();
        let features = std::mem::take(&mut request.features);
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
            return Err(RegisterError::NotProven(request.app_id));
        }
        let status = self.status_after(old.as_ref().map(|a| a.status), &credential)?;
        let record = agent_record(request, old.as_ref(), status);
        self.store.put_agent(&record)?;
        // Enrolled with the key or a token: the labels it declares now are approved, once; later
        // changes to what it declares are not.
        if status == AgentStatus::Accepted && old.as_ref().is_none_or(|a| a.status != AgentStatus::Accepted) {
            self.store.approve_labels(&record.app_id, &record.labels, now_ms())?;
        }
        // A client that sends no facts (an original one) leaves none from an earlier agent shown.
        match facts {
            Some(facts) => self.store.put_facts(&record.app_id, &FactsRecord::new(facts, now_ms()))?,
            None => self.store.remove_facts(&record.app_id)?,
        }
        // Likewise features: an original client or an older orange agent announces none.
        self.store.note_features(&record.app_id, &sorted(features), now_ms())?;
        self.record_enrollment(&record, old.as_ref().map(|a| a.status), &credential)?;
        self.store.durable().await?;
        self.dispatch.presence().registered(&record.app_id, now_ms());
        Ok(record)
    }

    fn check_secret(&self, request: &RegisterRequest) -> Result<(), RegisterError> {
        wire::check_app_id(&request.app_id).map_err(ServiceError::BadRequest)?;
        wire::check_register_fields(request).map_err(ServiceError::BadRequest)?;
        if let Some(facts) = &request.facts {
            check_facts(facts, now_ms() / 1000).map_err(ServiceError::BadRequest)?;
        }
        if request.secret.is_empty() || request.secret.len() > wire::MAX_SECRET_LEN {
            return Err(ServiceError::BadRequest(format!(
                "secret must be 1 to {} bytes",
                wire::MAX_SECRET_LEN
            ))
            .into());
        }
        // The same answer as a wrong secret: whether a guess is the admin token is not told.
        if secret_hash(&request.secret) == self.admin_token_hash {
            return Err(RegisterError::NotProven(request.app_id.clone()));
        }
        Ok(())
    }

    /// The status an agent gets: a credential accepts it (using up one token use), none leaves
    /// a new agent pending (within the cap) and a known one where it was.
    fn status_after(
        &self,
        old: Option<AgentStatus>,
        credential: &Credential,
    ) -> Result<AgentStatus, ServiceError> {
        match (credential, old) {
            (_, Some(AgentStatus::Accepted)) => Ok(AgentStatus::Accepted),
            (Credential::EnrollKey, _) => Ok(AgentStatus::Accepted),
            (Credential::Token(id), _) => {
                if self.store.use_token(id.as_str())? {
                    Ok(AgentStatus::Accepted)
                } else {
                    Err(ServiceError::Conflict(format!("enrollment token {id:?} has no uses left")))
                }
            }
            (Credential::None, Some(status)) => Ok(status),
            (Credential::None, None) => {
                if self.store.pending_agents()? >= MAX_PENDING {
                    return Err(ServiceError::TooLarge(format!(
                        "{MAX_PENDING} agents already wait for acceptance; accept or forget some first"
                    )));
                }
                Ok(AgentStatus::Pending)
            }
        }
    }

    /// Counts an enrollment in the agent stream of the audit record: a new agent, a changed
    /// status, and every registration of an agent still pending, so that a host retrying (or a
    /// flood under one app id) shows as one entry with a count. An enrolled agent registering
    /// again (it restarted) is not an event.
    fn record_enrollment(
        &self,
        agent: &AgentRecord,
        old: Option<AgentStatus>,
        credential: &Credential,
    ) -> Result<(), ServiceError> {
        if old == Some(agent.status) && agent.status != AgentStatus::Pending {
            return Ok(());
        }
        let how = match credential {
            Credential::EnrollKey => "with the enrollment key".to_owned(),
            Credential::Token(id) => format!("with enrollment token {id}"),
            Credential::None => "without a credential".to_owned(),
        };
        let action = if agent.status == AgentStatus::Pending { "agent.pending" } else { "agent.enroll" };
        self.audit.record_agent(&agent.app_id, action, &how)
    }

    /// Sets an agent's status on an operator's word (`accept` or `forget`).
    pub async fn set_status(
        &self,
        actor: &str,
        app_id: &str,
        status: AgentStatus,
    ) -> Result<AgentRecord, ServiceError> {
        let (before, agent) = self.store.set_agent_status(app_id, status)?.ok_or_else(|| {
            ServiceError::NotFound(format!("unknown agent {app_id:?} (a forgotten agent must enroll again)"))
        })?;
        match status {
            // An admin accepting an agent approves the labels it declares.
            AgentStatus::Accepted if before != AgentStatus::Accepted => {
                self.store.approve_labels(app_id, &agent.labels, now_ms())?
            }
            AgentStatus::Forgotten => self.store.remove_approved_labels(app_id)?,
            _ => {}
        }
        let action = if status == AgentStatus::Forgotten { "agent.forget" } else { "agent.accept" };
        self.audit.record(actor, action, app_id, "")?;
        self.store.durable().await?;
        match status {
            AgentStatus::Accepted => self.dispatch.wake_agent(app_id),
            _ => self.dispatch.presence().forget(app_id),
        }
        Ok(agent)
    }

    /// Sets the approved labels of agent `app_id` (what scopes match it), replacing the old.
    pub async fn approve_labels(
        &self,
        actor: &str,
        app_id: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<AgentRecord, ServiceError> {
        crate::protocol::limits::check_labels(labels, crate::protocol::limits::MAX_LABELS)
            .map_err(ServiceError::BadRequest)?;
        let agent = self
            .store
            .agent(app_id)?
            .filter(|a| a.status != AgentStatus::Forgotten)
            .ok_or_else(|| ServiceError::NotFound(format!("unknown agent {:?}", wire::shown(app_id))))?;
        self.store.approve_labels(app_id, labels, now_ms())?;
        let detail: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.audit.record(actor, "agent.label", app_id, &detail.join(","))?;
        self.store.durable().await?;
        Ok(agent)
    }

    /// Creates an enrollment token; the answer is the only place its secret is shown.
    pub async fn create_token(
        &self,
        actor: &str,
        ttl_secs: u64,
        uses: u32,
    ) -> Result<TokenView, ServiceError> {
        if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS || uses == 0 {
            return Err(ServiceError::BadRequest(format!(
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
        self.audit.record(actor, "token.create", &token.id, &format!("{uses} uses, {ttl_secs} s"))?;
        self.store.durable().await?;
        let mut view = token_view(&token);
        view.token = Some(format!("{}.{}", token.id, token.secret));
        Ok(view)
    }

    /// Revokes an enrollment token.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> Result<TokenView, ServiceError> {
        let mut token = self
            .store
            .token(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("unknown enrollment token {id:?}")))?;
        token.revoked = true;
        self.store.put_token(&token)?;
        self.audit.record(actor, "token.revoke", id, "")?;
        self.store.durable().await?;
        Ok(token_view(&token))
    }

    /// Every enrollment token, without secrets.
    pub fn tokens(&self) -> Result<Vec<TokenView>, ServiceError> {
        Ok(self.store.tokens()?.iter().map(token_view).collect())
    }
}

/// `features` sorted and without repeats, as stored and compared.
fn sorted(mut features: Vec<String>) -> Vec<String> {
    features.sort();
    features.dedup();
    features
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
