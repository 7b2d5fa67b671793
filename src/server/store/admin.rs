//! Operator-side records: agent status changes (accept, forget) and enrollment tokens.

use super::records::{AgentRecord, AgentStatus, TokenRecord};
use super::{Store, StoreError};
use crate::server::codec;

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token has this id.
    #[error("unknown enrollment token {0:?}")]
    Unknown(String),
    /// Revoked by an operator.
    #[error("enrollment token {0:?} was revoked")]
    Revoked(String),
    /// Past its expiry.
    #[error("enrollment token {0:?} has expired")]
    Expired(String),
    /// No uses left.
    #[error("enrollment token {0:?} has no uses left")]
    UsedUp(String),
}

impl Store {
    /// Sets the status of agent `app_id`; forgetting also drops its secret. Answers the status it
    /// had and the agent as changed; `None` when unknown, or when asked to accept a forgotten
    /// agent.
    pub fn set_agent_status(
        &self,
        app_id: &str,
        status: AgentStatus,
    ) -> Result<Option<(AgentStatus, AgentRecord)>, StoreError> {
        let Some(mut agent) = self.agent(app_id)? else { return Ok(None) };
        let before = agent.status;
        if status == AgentStatus::Accepted && agent.status == AgentStatus::Forgotten {
            // A forgotten agent has no secret left to accept: it must enroll again.
            return Ok(None);
        }
        agent.status = status;
        if status == AgentStatus::Forgotten {
            agent.secret.clear();
        }
        self.put_agent(&agent)?;
        Ok(Some((before, agent)))
    }

    /// Number of agents waiting for acceptance.
    pub fn pending_agents(&self) -> Result<usize, StoreError> {
        Ok(self.agents()?.iter().filter(|a| a.status == AgentStatus::Pending).count())
    }

    /// Stores a new or changed token.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.trees().tokens.insert(token.id.as_bytes(), codec::encode(token))?;
        Ok(())
    }

    /// The token `id`.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.trees().tokens.get(id)?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.trees().tokens.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Checks token `id` can enroll at `now_ms` and returns it (without using it up).
    pub fn usable_token(&self, id: &str, now_ms: i64) -> Result<Result<TokenRecord, TokenError>, StoreError> {
        let Some(token) = self.token(id)? else { return Ok(Err(TokenError::Unknown(id.to_owned()))) };
        Ok(if token.revoked {
            Err(TokenError::Revoked(token.id))
        } else if token.expires_ms <= now_ms {
            Err(TokenError::Expired(token.id))
        } else if token.uses_left == 0 {
            Err(TokenError::UsedUp(token.id))
        } else {
            Ok(token)
        })
    }

    /// Uses one enrollment of token `id`, atomically; false if none was left.
    pub fn use_token(&self, id: &str) -> Result<bool, StoreError> {
        loop {
            let Some(old) = self.trees().tokens.get(id)? else { return Ok(false) };
            let mut token: TokenRecord = codec::decode(&old)?;
            if token.uses_left == 0 || token.revoked {
                return Ok(false);
            }
            token.uses_left -= 1;
            if self.trees().tokens.compare_and_swap(id, Some(old), Some(codec::encode(&token)))?.is_ok() {
                return Ok(true);
            }
        }
    }
    /// The secret kept in the database under `name`; if there is none yet, the one `make`
    /// gives, kept: every server on the same database gets the same one, also when several
    /// start at once.
    pub fn shared_secret(
        &self,
        name: &str,
        make: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let key = format!("secret.{name}");
        let trees = self.trees();
        if let Some(value) = trees.meta.get(&key)? {
            return secret_text(&value, name);
        }
        let made = make()?;
        match trees.meta.compare_and_swap(&key, None::<&[u8]>, Some(made.as_bytes()))? {
            Ok(()) => Ok(made),
            // Another server put one first: that one it is.
            Err(raced) => secret_text(raced.current.as_deref().unwrap_or_default(), name),
        }
    }
}

fn secret_text(bytes: &[u8], name: &str) -> anyhow::Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| anyhow::anyhow!("the stored secret {name} is not text"))
}
