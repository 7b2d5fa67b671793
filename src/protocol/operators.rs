//! Named operators on the wire: their roles (viewer, operator, admin), their host scopes (a label
//! selector matched against an agent's approved labels), the `/api/v1/operators` and
//! `/api/v1/whoami` bodies and paths, and the rules for names, scopes and token lifetimes, checked
//! the same way by the server and the CLI.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::{self, shown};

/// Operators: list (GET), add (POST).
pub const OPERATORS_PATH: &str = "/api/v1/operators";
/// Who the caller is (GET): name, role, scope.
pub const WHOAMI_PATH: &str = "/api/v1/whoami";
/// Labels approved by an admin for one agent (POST, `{id}` in place): `/api/v1/agents/{id}/labels`.
pub const LABELS_SUFFIX: &str = "labels";
/// The prefix of every operator token, so that secret scanners can recognise one.
pub const TOKEN_PREFIX: &str = "orange_op_";
/// The name the server's admin token acts under; no operator may take it.
pub const ADMIN_NAME: &str = "admin";
/// Most operators a server keeps (revoked ones included).
pub const MAX_OPERATORS: usize = 1000;
/// Longest operator name.
pub const MAX_OPERATOR_NAME_LEN: usize = 64;
/// Longest lifetime of an operator token: ten years.
pub const MAX_OPERATOR_TTL_SECS: u64 = 3650 * 86_400;
/// Most task types an operator may be limited to.
pub const MAX_OPERATOR_TASK_TYPES: usize = 64;
/// Most labels in a scope.
pub const MAX_SCOPE_LABELS: usize = limits::MAX_TARGET_LABELS;

/// What an operator may do; each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads agents, tasks, jobs, output and the audit record.
    Viewer,
    /// A viewer that also sends, runs and cancels tasks and jobs, and copies files.
    Operator,
    /// Everything: operators, enrollment tokens, accepting and forgetting agents, approving
    /// labels, backups.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Reads `viewer`, `operator` or `admin`.
    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text.trim())
            .ok_or_else(|| format!("role {:?} must be admin, operator or viewer", shown(text)))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host scope: labels an agent's approved labels must all carry. Empty: every host.
pub type Scope = BTreeMap<String, String>;

/// True when `labels` (an agent's approved labels) carry every label of `scope`.
pub fn in_scope(scope: &Scope, labels: &BTreeMap<String, String>) -> bool {
    scope.iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// A scope as people write it: `role=web,env=prod`, or `all hosts` when empty.
pub fn scope_text(scope: &Scope) -> String {
    if scope.is_empty() {
        return "all hosts".to_owned();
    }
    scope.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Reads a scope written `k=v,k=v` (the `--scope` of `orange operator add`).
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    let parts: Vec<String> = text.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err("the scope is empty; give labels like role=web,env=prod".to_owned());
    }
    limits::parse_labels(&parts, MAX_SCOPE_LABELS)
}

/// Checks an operator name: 1 to [`MAX_OPERATOR_NAME_LEN`] characters of `a-z 0-9 . _ -`,
/// starting with a letter.
pub fn check_operator_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if name.len() > MAX_OPERATOR_NAME_LEN || !starts_with_letter || !name.chars().all(allowed) {
        return Err(format!(
            "operator name {:?} must be 1 to {MAX_OPERATOR_NAME_LEN} characters of a-z, 0-9, '.', '_' \
             and '-', starting with a letter",
            shown(name)
        ));
    }
    Ok(())
}

/// Checks an operator request: its name (not [`ADMIN_NAME`]), its scope (none for an admin, who
/// acts on every host) and its lifetime.
pub fn check_operator_request(request: &OperatorRequest) -> Result<(), String> {
    check_operator_name(&request.name)?;
    if request.name == ADMIN_NAME {
        return Err(format!("the name {ADMIN_NAME:?} is the server's admin token's; choose another"));
    }
    limits::check_labels(&request.scope, MAX_SCOPE_LABELS)?;
    if request.role == Role::Admin && !request.scope.is_empty() {
        return Err("an admin acts on every host: give a scope only to an operator or a viewer".to_owned());
    }
    if let Some(ttl) = request.ttl_secs {
        limits::check_secs("ttl_secs", ttl, MAX_OPERATOR_TTL_SECS)?;
    }
    if request.max_hosts == Some(0) {
        return Err("max_hosts must be at least 1".to_owned());
    }
    if request.task_types.len() > MAX_OPERATOR_TASK_TYPES {
        return Err(format!(
            "{} task types given; the limit is {MAX_OPERATOR_TASK_TYPES}",
            request.task_types.len()
        ));
    }
    request.task_types.iter().try_for_each(|t| limits::check_task_type(t))?;
    if request.role != Role::Operator && (request.max_hosts.is_some() || !request.task_types.is_empty()) {
        return Err(
            "max_hosts and task_types limit what an operator sends: give them to an operator only".to_owned()
        );
    }
    Ok(())
}

/// Body of `POST /api/v1/operators`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    /// Its name, as the audit record shows it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The hosts it may reach (empty: all).
    #[serde(default)]
    pub scope: Scope,
    /// How long its token works; `None`: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Most hosts one task send or job of it may reach; `None`: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hosts: Option<u32>,
    /// The task types it may send (`shell`, a handler name); empty: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_types: Vec<String>,
}

/// An operator as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorView {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its scope (empty: all hosts).
    pub scope: Scope,
    /// RFC 3339 time of creation (or of the last rotation).
    pub created_at: String,
    /// RFC 3339 time its token stops working, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// Most hosts one task send or job of it may reach, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hosts: Option<u32>,
    /// The task types it may send; empty: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_types: Vec<String>,
    /// The token: only in the answer of an add or a rotate, never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Answer of `GET /api/v1/operators`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorList {
    /// The operators, by name.
    pub operators: Vec<OperatorView>,
}

/// Answer of `GET /api/v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Whoami {
    /// The caller's name (`admin` for the server's admin token).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its scope (empty: all hosts).
    pub scope: Scope,
}

/// Body of `POST /api/v1/agents/{id}/labels`: the agent's approved labels, replacing the old.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    /// The labels scopes match this agent by.
    pub labels: BTreeMap<String, String>,
}

/// `/api/v1/operators/{name}`: remove is not offered; revoke keeps the name in the record.
pub fn operator_path(name: &str) -> String {
    format!("{OPERATORS_PATH}/{name}")
}

/// `/api/v1/operators/{name}/revoke` (POST).
pub fn operator_revoke_path(name: &str) -> String {
    format!("{OPERATORS_PATH}/{name}/revoke")
}

/// `/api/v1/operators/{name}/rotate` (POST).
pub fn operator_rotate_path(name: &str) -> String {
    format!("{OPERATORS_PATH}/{name}/rotate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn roles_are_ordered_and_read_by_name() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::parse("operator"), Ok(Role::Operator));
        assert_eq!(Role::parse("root"), Err("role \"root\" must be admin, operator or viewer".into()));
        assert_eq!(serde_json::to_string(&Role::Viewer).unwrap(), "\"viewer\"");
    }

    #[test]
    fn a_scope_needs_every_label_and_empty_means_every_host() {
        let scope = parse_scope("role=web, env=prod").unwrap();
        assert!(in_scope(&scope, &labels(&[("role", "web"), ("env", "prod"), ("dc", "x")])));
        assert!(!in_scope(&scope, &labels(&[("role", "web")])));
        assert!(!in_scope(&scope, &labels(&[("role", "web"), ("env", "dev")])));
        assert!(in_scope(&Scope::new(), &labels(&[])));
        assert_eq!(scope_text(&scope), "env=prod,role=web");
        assert!(parse_scope(" , ").unwrap_err().contains("the scope is empty"));
        assert!(parse_scope("role").is_err());
    }

    #[test]
    fn names_and_requests_are_checked() {
        assert!(check_operator_name("alice.ops-1").is_ok());
        for bad in ["", "Alice", "1abc", "a b", &"a".repeat(65)] {
            assert!(check_operator_name(bad).is_err(), "{bad:?}");
        }
        let request = |name: &str, role, scope: &[(&str, &str)]| OperatorRequest {
            name: name.into(),
            role,
            scope: labels(scope),
            ttl_secs: None,
            max_hosts: None,
            task_types: Vec::new(),
        };
        assert!(check_operator_request(&request("admin", Role::Viewer, &[])).unwrap_err().contains("admin"));
        assert!(
            check_operator_request(&request("root", Role::Admin, &[("role", "web")]))
                .unwrap_err()
                .contains("every host")
        );
        assert!(check_operator_request(&request("web", Role::Operator, &[("role", "web")])).is_ok());
        let mut long = request("web", Role::Viewer, &[]);
        long.ttl_secs = Some(MAX_OPERATOR_TTL_SECS + 1);
        assert!(check_operator_request(&long).is_err());
        let mut limited = request("runner", Role::Operator, &[]);
        limited.max_hosts = Some(5);
        limited.task_types = vec!["deploy".into()];
        assert!(check_operator_request(&limited).is_ok());
        limited.role = Role::Viewer;
        assert!(check_operator_request(&limited).unwrap_err().contains("operator only"));
        limited.role = Role::Operator;
        limited.task_types = vec!["../x".into()];
        assert!(check_operator_request(&limited).is_err());
    }
}
