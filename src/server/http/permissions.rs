//! Who may call which operator route: [`PERMISSIONS`], the one table of every route under the
//! operator token and the least role it needs, and [`AdminRoutes`], the builder every operator
//! route is added through, which keeps the list of what it added so that a test can check
//! each route against the table. A route missing from the table is refused to everyone (fail
//! closed).

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::AppState;
use crate::protocol::operators::Role;

/// One entry of the table: a method, a route as the router writes it (`{id}` for a path
/// parameter) and the least role that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The route.
    pub path: &'static str,
    /// The least role allowed.
    pub role: Role,
}

const fn allow(method: &'static str, path: &'static str, role: Role) -> Permission {
    Permission { method, path, role }
}

/// Every operator route and the least role it needs. Viewers read; operators also send, run,
/// cancel, pause, resume and retry tasks and jobs and copy files; admins do everything else.
pub const PERMISSIONS: &[Permission] = &[
    allow("GET", "/api/v1/whoami", Role::Viewer),
    allow("GET", "/api/v1/agents", Role::Viewer),
    allow("GET", "/api/v1/agents/{id}", Role::Viewer),
    allow("GET", "/api/v1/tasks", Role::Viewer),
    allow("GET", "/api/v1/tasks/{id}", Role::Viewer),
    allow("GET", "/api/v1/tasks/{id}/output", Role::Viewer),
    allow("GET", "/api/v1/tasks/{id}/file", Role::Viewer),
    allow("GET", "/api/v1/jobs", Role::Viewer),
    allow("GET", "/api/v1/jobs/{id}", Role::Viewer),
    allow("GET", "/api/v1/jobs/{id}/results", Role::Viewer),
    allow("GET", "/api/v1/jobs/{id}/groups", Role::Viewer),
    allow("POST", "/api/v1/jobs/dry-run", Role::Viewer),
    allow("GET", "/api/v1/audit", Role::Viewer),
    allow("POST", "/api/v1/tasks", Role::Operator),
    allow("POST", "/api/v1/tasks/{id}/cancel", Role::Operator),
    allow("POST", "/api/v1/jobs", Role::Operator),
    allow("POST", "/api/v1/jobs/{id}/pause", Role::Operator),
    allow("POST", "/api/v1/jobs/{id}/resume", Role::Operator),
    allow("POST", "/api/v1/jobs/{id}/cancel", Role::Operator),
    allow("POST", "/api/v1/jobs/{id}/retry", Role::Operator),
    allow("POST", "/api/v1/files", Role::Operator),
    allow("POST", "/api/v1/agents/{id}/accept", Role::Admin),
    allow("POST", "/api/v1/agents/{id}/forget", Role::Admin),
    allow("POST", "/api/v1/agents/{id}/labels", Role::Admin),
    allow("GET", "/api/v1/tokens", Role::Admin),
    allow("POST", "/api/v1/tokens", Role::Admin),
    allow("POST", "/api/v1/tokens/{id}/revoke", Role::Admin),
    allow("GET", "/api/v1/operators", Role::Admin),
    allow("POST", "/api/v1/operators", Role::Admin),
    allow("POST", "/api/v1/operators/{name}/revoke", Role::Admin),
    allow("POST", "/api/v1/operators/{name}/rotate", Role::Admin),
    allow("GET", "/api/v1/backup", Role::Admin),
    allow("GET", "/metrics", Role::Admin),
];

/// The least role `method` on `path` (a route as the router writes it) needs; `None` for a
/// route missing from the table.
pub fn least_role(method: &Method, path: &str) -> Option<Role> {
    PERMISSIONS.iter().find(|p| p.method == method.as_str() && p.path == path).map(|p| p.role)
}

/// A route an [`AdminRoutes`] added: its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The method.
    pub method: Method,
    /// The route, as the router writes it.
    pub path: String,
}

/// Operator routes as they are added, each remembered.
#[derive(Default)]
pub struct AdminRoutes {
    router: Router<AppState>,
    added: Vec<Added>,
}

impl AdminRoutes {
    /// No routes yet.
    pub fn new() -> Self {
        AdminRoutes::default()
    }

    /// Adds `GET path`.
    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::GET, path, on(MethodFilter::GET, handler))
    }

    /// Adds `POST path`.
    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::POST, path, on(MethodFilter::POST, handler))
    }

    fn add(mut self, method: Method, path: &str, route: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, route);
        self.added.push(Added { method, path: path.to_owned() });
        self
    }

    /// These routes and `other`'s.
    pub fn merge(mut self, other: AdminRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.added.extend(other.added);
        self
    }

    /// The router and the list of its routes.
    pub fn into_parts(self) -> (Router<AppState>, Vec<Added>) {
        (self.router, self.added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_added_has_an_entry_and_every_entry_a_route() {
        let added = super::super::admin_route_list(true);
        assert!(added.len() > 20, "only {} routes found", added.len());
        for route in &added {
            assert!(
                least_role(&route.method, &route.path).is_some(),
                "{} {} has no entry",
                route.method,
                route.path
            );
        }
        for entry in PERMISSIONS {
            assert!(
                added.iter().any(|r| r.method.as_str() == entry.method && r.path == entry.path),
                "{} {} is in the table but not a route",
                entry.method,
                entry.path
            );
        }
        assert_eq!(least_role(&Method::DELETE, "/api/v1/tasks"), None, "a route not in the table");
    }
}
