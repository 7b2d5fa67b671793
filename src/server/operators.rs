//! Named operators: who is calling the operator API. `Operators` turns a bearer token into a
//! [`Caller`] (the server's admin token is the admin named `admin`; an operator token is looked
//! up by its SHA-256 in an index kept in memory, its record's digest compared in constant time,
//! and refused once revoked or expired), and adds, lists, revokes and rotates operators. A token
//! is shown once, when it is made; the store keeps only its hash. A [`Caller`] carries the role and
//! the host scope every service checks its targets against; a [`ScopedScan`] checks many items
//! against it, reading each agent's approved labels once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::audit::Audit;
use super::clock::{now_ms, rfc3339};
use super::error::ServiceError;
use super::guard::{SecretHash, secret_hash};
use super::store::{OperatorRecord, OperatorRole, Store, StoreError, secs_to_ms};
use crate::protocol::TaskId;
use crate::protocol::operators::{
    ADMIN_NAME, MAX_OPERATORS, OperatorRequest, OperatorView, Role, Scope, TOKEN_PREFIX, Whoami,
    check_operator_request, in_scope, scope_text,
};

/// Random bytes in an operator token (after its prefix, as hex).
const TOKEN_BYTES: usize = 32;

/// Who made an operator request: a name, a role, a host scope and the address it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The operator's name (`admin` for the server's admin token).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The hosts it may reach by their approved labels (empty: all).
    pub scope: Scope,
    /// The request's source address.
    pub addr: IpAddr,
    /// Most hosts one task send or job of it may reach, if limited.
    pub max_hosts: Option<u32>,
    /// The task types it may send; empty: every type.
    pub task_types: Vec<String>,
}

impl Caller {
    /// The admin of the server's admin token, calling from `addr`.
    pub fn admin(addr: IpAddr) -> Caller {
        Caller {
            name: ADMIN_NAME.to_owned(),
            role: Role::Admin,
            scope: Scope::new(),
            addr,
            max_hosts: None,
            task_types: Vec::new(),
        }
    }

    /// How the audit record names it: `NAME@ADDRESS`.
    pub fn actor(&self) -> String {
        format!("{}@{}", self.name, self.addr)
    }

    /// True when an agent with these approved labels is within its scope.
    pub fn reaches(&self, approved: &BTreeMap<String, String>) -> bool {
        in_scope(&self.scope, approved)
    }

    /// True when it reaches every host (no scope).
    pub fn unscoped(&self) -> bool {
        self.scope.is_empty()
    }

    /// True when agent `app_id` is within its scope by the labels an admin approved for it.
    pub fn may_reach(&self, store: &Store, app_id: &str) -> Result<bool, StoreError> {
        Ok(self.unscoped() || self.reaches(&store.approved_labels(app_id)?))
    }

    /// True when every target of job `id` is within its scope: a job that reaches a host outside
    /// it is not its to see.
    pub fn reaches_job(&self, store: &Store, id: TaskId) -> Result<bool, StoreError> {
        if self.unscoped() {
            return Ok(true);
        }
        let mut every = true;
        store.each_target(id, |target| {
            every = every && self.may_reach(store, &target.app_id)?;
            Ok(())
        })?;
        Ok(every)
    }

    /// Refuses (403, naming its scope) an agent `app_id` outside its scope.
    pub fn check_reach(&self, store: &Store, app_id: &str) -> Result<(), ServiceError> {
        if self.may_reach(store, app_id)? {
            return Ok(());
        }
        Err(self.out_of_scope(&format!("agent {:?}", crate::protocol::limits::shown(app_id))))
    }

    /// Refuses (403) a task type it may not send, or more hosts than it may reach at once.
    pub fn check_limits(&self, task_type: &str, hosts: usize) -> Result<(), ServiceError> {
        if !self.task_types.is_empty() && !self.task_types.iter().any(|t| t == task_type) {
            return Err(ServiceError::Forbidden(format!(
                "operator {} may send only task types {}, not {task_type:?}",
                self.name,
                self.task_types.join(", ")
            )));
        }
        match self.max_hosts {
            Some(most) if hosts > most as usize => Err(ServiceError::Forbidden(format!(
                "{hosts} hosts targeted; operator {} may reach at most {most} at once",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    /// The refusal of a target outside its scope.
    pub fn out_of_scope(&self, what: &str) -> ServiceError {
        ServiceError::Forbidden(format!(
            "{what} is outside the scope of operator {} ({})",
            self.name,
            scope_text(&self.scope)
        ))
    }

    /// What `GET /api/v1/whoami` answers.
    pub fn whoami(&self) -> Whoami {
        Whoami { name: self.name.clone(), role: self.role, scope: self.scope.clone() }
    }
}

/// A caller's scope over one scan of many items (tasks, agents): each agent's approved labels
/// are read once, however many items name it.
pub struct ScopedScan<'a> {
    caller: &'a Caller,
    store: &'a Store,
    approved: RefCell<HashMap<String, BTreeMap<String, String>>>,
}

impl<'a> ScopedScan<'a> {
    /// A scan by `caller` of items kept in `store`.
    pub fn new(caller: &'a Caller, store: &'a Store) -> Self {
        ScopedScan { caller, store, approved: RefCell::default() }
    }

    /// True when agent `app_id` is within the caller's scope ([`Caller::may_reach`]).
    pub fn reaches(&self, app_id: &str) -> Result<bool, StoreError> {
        Ok(self.caller.unscoped() || self.with_approved(app_id, |labels| self.caller.reaches(labels))?)
    }

    /// The labels an admin approved for agent `app_id`.
    pub fn approved(&self, app_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.with_approved(app_id, BTreeMap::clone)
    }

    fn with_approved<T>(
        &self,
        app_id: &str,
        f: impl FnOnce(&BTreeMap<String, String>) -> T,
    ) -> Result<T, StoreError> {
        let mut approved = self.approved.borrow_mut();
        if let Some(labels) = approved.get(app_id) {
            return Ok(f(labels));
        }
        let labels = self.store.approved_labels(app_id)?;
        let answer = f(&labels);
        approved.insert(app_id.to_owned(), labels);
        Ok(answer)
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Error)]
pub enum AuthError {
    /// No operator has this token (a guess: counted against the failure limits).
    #[error("wrong admin token")]
    Wrong,
    /// The operator's token was revoked.
    #[error("the token of operator {0} was revoked")]
    Revoked(String),
    /// The operator's token is past its expiry.
    #[error("the token of operator {0} expired at {1}")]
    Expired(String, String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every operator's token digest → its name: one lookup per request instead of a scan of the
/// operators. Read from the store at the first request, then kept in step by every add and
/// rotation (a revocation keeps the digest: the token is still known, and refused as revoked).
type TokenIndex = HashMap<SecretHash, String>;

/// The operators: authentication, and their management by an admin.
pub struct Operators {
    store: Arc<Store>,
    audit: Audit,
    admin_token_hash: SecretHash,
    /// `None` until the first request reads it.
    index: Mutex<Option<TokenIndex>>,
    /// When a token the index did not know last made it be read again.
    index_read_at: Mutex<Option<Instant>>,
}

/// How often, at most, a token the index does not know makes it be read again from the store.
const INDEX_REREAD: Duration = Duration::from_secs(1);

impl Operators {
    /// Operators kept in `store`; the server's admin token hashes to `admin_token_hash`.
    pub fn new(store: Arc<Store>, audit: Audit, admin_token_hash: SecretHash) -> Self {
        Operators { store, audit, admin_token_hash, index: Mutex::new(None), index_read_at: Mutex::new(None) }
    }

    /// The caller a bearer `token` from `addr` stands for. Digests are compared in constant
    /// time; an operator token is looked up by its digest (which tells nothing of the token)
    /// only when the token carries the prefix.
    pub fn authenticate(&self, token: &str, addr: IpAddr) -> Result<Caller, AuthError> {
        let given = secret_hash(token);
        if same_digest(&given, &self.admin_token_hash) {
            return Ok(Caller::admin(addr));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::Wrong);
        }
        let known = self.with_index(|index| Ok(index.get(&given).cloned()))?;
        let name = match known {
            Some(name) => name,
            None => self.reread_index(&given)?.ok_or(AuthError::Wrong)?,
        };
        // The record decides: a rotation racing this request may have replaced the digest.
        let operator = self
            .store
            .operator(&name)?
            .filter(|operator| same_digest(&given, &operator.token_hash))
            .ok_or(AuthError::Wrong)?;
        if operator.revoked_ms.is_some() {
            return Err(AuthError::Revoked(operator.name));
        }
        if let Some(expires) = operator.expires_ms.filter(|&at| at <= now_ms()) {
            return Err(AuthError::Expired(operator.name, rfc3339(expires)));
        }
        Ok(Caller {
            name: operator.name,
            role: role_of(operator.role),
            scope: operator.scope,
            addr,
            max_hosts: operator.max_hosts,
            task_types: operator.task_types,
        })
    }

    /// Adds an operator and answers it with its token (shown this once).
    pub async fn add(&self, by: &Caller, request: OperatorRequest) -> Result<OperatorView, ServiceError> {
        check_operator_request(&request).map_err(ServiceError::BadRequest)?;
        if self.store.operator(&request.name)?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "operator {} exists; rotate its token with `orange operator rotate {}`",
                request.name, request.name
            )));
        }
        if self.store.operators()?.len() >= MAX_OPERATORS {
            return Err(ServiceError::TooLarge(format!(
                "the server keeps at most {MAX_OPERATORS} operators"
            )));
        }
        let token = new_token()?;
        let now = now_ms();
        let record = OperatorRecord {
            name: request.name.clone(),
            role: stored_role(request.role),
            scope: request.scope.clone(),
            token_hash: secret_hash(&token),
            created_ms: now,
            expires_ms: request.ttl_secs.map(|ttl| now.saturating_add(secs_to_ms(ttl))),
            revoked_ms: None,
            ttl_secs: request.ttl_secs,
            max_hosts: request.max_hosts,
            task_types: request.task_types.clone(),
        };
        self.save_token(&record, None)?;
        let detail = format!("role {}, scope {}", request.role, scope_text(&request.scope));
        self.audit.record(&by.actor(), "operator.add", &record.name, &detail)?;
        self.store.durable().await?;
        Ok(OperatorView { token: Some(token), ..view(&record) })
    }

    /// Every operator, by name, without tokens.
    pub fn list(&self) -> Result<Vec<OperatorView>, ServiceError> {
        Ok(self.store.operators()?.iter().map(view).collect())
    }

    /// Revokes operator `name`'s token: its next request is refused.
    pub async fn revoke(&self, by: &Caller, name: &str) -> Result<OperatorView, ServiceError> {
        let mut record = self.known(name)?;
        record.revoked_ms.get_or_insert(now_ms());
        self.store.put_operator(&record)?;
        self.audit.record(&by.actor(), "operator.revoke", name, "")?;
        self.store.durable().await?;
        Ok(view(&record))
    }

    /// Gives operator `name` a new token (answered this once), with the lifetime it was given;
    /// the old token stops working. A revoked operator becomes active again.
    pub async fn rotate(&self, by: &Caller, name: &str) -> Result<OperatorView, ServiceError> {
        let mut record = self.known(name)?;
        let old_hash = record.token_hash;
        let token = new_token()?;
        let now = now_ms();
        record.token_hash = secret_hash(&token);
        record.created_ms = now;
        record.expires_ms = record.ttl_secs.map(|ttl| now.saturating_add(secs_to_ms(ttl)));
        record.revoked_ms = None;
        self.save_token(&record, Some(old_hash))?;
        self.audit.record(&by.actor(), "operator.rotate", name, "")?;
        self.store.durable().await?;
        Ok(OperatorView { token: Some(token), ..view(&record) })
    }

    /// Runs `f` on the token index under its lock, reading the index from the store the first
    /// time.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut TokenIndex) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match guard.take() {
            Some(index) => index,
            None => self.store.operators()?.into_iter().map(|o| (o.token_hash, o.name)).collect(),
        };
        f(guard.insert(index))
    }

    /// Reads the index again from the store, at most once per [`INDEX_REREAD`], and looks up
    /// `given` in it: another server on the same database may have added or rotated the
    /// operator. A guessed token makes no more reads than that.
    fn reread_index(&self, given: &SecretHash) -> Result<Option<String>, StoreError> {
        let mut guard = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let mut read_at = self.index_read_at.lock().unwrap_or_else(PoisonError::into_inner);
        if read_at.is_some_and(|at| at.elapsed() < INDEX_REREAD) {
            return Ok(guard.as_ref().and_then(|index| index.get(given).cloned()));
        }
        let index: TokenIndex = self.store.operators()?.into_iter().map(|o| (o.token_hash, o.name)).collect();
        *read_at = Some(Instant::now());
        Ok(guard.insert(index).get(given).cloned())
    }

    /// Stores `record` with a new token and puts its digest in the index in place of
    /// `old_hash`, under the index's lock, so that the index follows the store's order.
    fn save_token(&self, record: &OperatorRecord, old_hash: Option<SecretHash>) -> Result<(), StoreError> {
        self.with_index(|index| {
            self.store.put_operator(record)?;
            if let Some(old) = old_hash {
                index.remove(&old);
            }
            index.insert(record.token_hash, record.name.clone());
            Ok(())
        })
    }

    fn known(&self, name: &str) -> Result<OperatorRecord, ServiceError> {
        if name == ADMIN_NAME {
            return Err(ServiceError::BadRequest(format!(
                "{ADMIN_NAME} is the server's admin token (--admin-token-file); change that file to replace it"
            )));
        }
        self.store.operator(name)?.ok_or_else(|| {
            ServiceError::NotFound(format!("unknown operator {:?}", crate::protocol::limits::shown(name)))
        })
    }
}

/// Constant-time equality of two digests.
fn same_digest(a: &SecretHash, b: &SecretHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new operator token: the prefix and 32 random bytes in hex.
fn new_token() -> Result<String, ServiceError> {
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw).map_err(|e| ServiceError::BadRequest(format!("no randomness: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(raw)))
}

fn role_of(role: OperatorRole) -> Role {
    match role {
        OperatorRole::Viewer => Role::Viewer,
        OperatorRole::Operator => Role::Operator,
        OperatorRole::Admin => Role::Admin,
    }
}

fn stored_role(role: Role) -> OperatorRole {
    match role {
        Role::Viewer => OperatorRole::Viewer,
        Role::Operator => OperatorRole::Operator,
        Role::Admin => OperatorRole::Admin,
    }
}

/// An operator as the API shows it (without a token).
fn view(record: &OperatorRecord) -> OperatorView {
    let status = if record.revoked_ms.is_some() {
        "revoked"
    } else if record.expires_ms.is_some_and(|at| at <= now_ms()) {
        "expired"
    } else {
        "active"
    };
    OperatorView {
        name: record.name.clone(),
        role: role_of(record.role),
        scope: record.scope.clone(),
        created_at: rfc3339(record.created_ms),
        expires_at: record.expires_ms.map(rfc3339),
        status: status.to_owned(),
        max_hosts: record.max_hosts,
        task_types: record.task_types.clone(),
        token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Policy;

    fn operators() -> (tempfile::TempDir, Operators) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1024 * 1024, Policy::default()).unwrap());
        let audit = Audit::new(Arc::clone(&store));
        (dir, Operators::new(store, audit, secret_hash("the-admin-token")))
    }

    fn request(name: &str, role: Role) -> OperatorRequest {
        OperatorRequest {
            name: name.into(),
            role,
            scope: Scope::new(),
            ttl_secs: None,
            max_hosts: None,
            task_types: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_token_works_until_revoked_and_a_rotation_replaces_it() {
        let (_dir, ops) = operators();
        let addr = IpAddr::from([127, 0, 0, 1]);
        let admin = ops.authenticate("the-admin-token", addr).unwrap();
        assert_eq!(admin, Caller::admin(addr));
        let added = ops.add(&admin, request("alice", Role::Viewer)).await.unwrap();
        let token = added.token.unwrap();
        assert!(token.starts_with("orange_op_") && token.len() == 10 + 64, "{token}");
        assert_eq!(ops.authenticate(&token, addr).unwrap().role, Role::Viewer);
        assert!(matches!(ops.authenticate("orange_op_00", addr), Err(AuthError::Wrong)));
        let rotated = ops.rotate(&admin, "alice").await.unwrap().token.unwrap();
        assert!(matches!(ops.authenticate(&token, addr), Err(AuthError::Wrong)), "the old token");
        assert_eq!(ops.authenticate(&rotated, addr).unwrap().name, "alice");
        ops.revoke(&admin, "alice").await.unwrap();
        let refused = ops.authenticate(&rotated, addr).unwrap_err();
        assert_eq!(refused.to_string(), "the token of operator alice was revoked");
        assert!(ops.list().unwrap().iter().all(|v| v.token.is_none() && v.status == "revoked"));
        assert!(ops.add(&admin, request("alice", Role::Viewer)).await.is_err(), "no name twice");
        assert!(ops.revoke(&admin, "admin").await.is_err());
    }

    #[tokio::test]
    async fn the_token_index_is_read_from_the_store_at_the_first_request() {
        let (_dir, ops) = operators();
        let addr = IpAddr::from([127, 0, 0, 1]);
        let admin = Caller::admin(addr);
        let token = ops.add(&admin, request("carol", Role::Viewer)).await.unwrap().token.unwrap();
        let restarted = Operators::new(Arc::clone(&ops.store), ops.audit.clone(), secret_hash("x"));
        assert_eq!(restarted.authenticate(&token, addr).unwrap().name, "carol");
        let rotated = restarted.rotate(&admin, "carol").await.unwrap().token.unwrap();
        assert!(matches!(ops.authenticate(&token, addr), Err(AuthError::Wrong)), "the stored digest decides");
        assert_eq!(restarted.authenticate(&rotated, addr).unwrap().name, "carol");
    }

    #[tokio::test]
    async fn an_expired_token_says_so() {
        let (_dir, ops) = operators();
        let addr = IpAddr::from([127, 0, 0, 1]);
        let admin = Caller::admin(addr);
        let token = ops.add(&admin, request("bob", Role::Operator)).await.unwrap().token.unwrap();
        let mut record = ops.store.operator("bob").unwrap().unwrap();
        record.expires_ms = Some(now_ms() - 1);
        ops.store.put_operator(&record).unwrap();
        assert!(ops.authenticate(&token, addr).unwrap_err().to_string().contains("expired"));
    }
}
