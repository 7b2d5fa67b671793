//! Named operators against the real server: every operator route × every role from the one
//! permission table, tokens revoked, rotated and expired, and operators scoped by approved
//! labels who cannot reach a host outside their scope by any route (task send, job `--all`,
//! partly overlapping label selectors, output, task and job views, cancel, file copy), with
//! every refusal in the audit record under the operator's name.

use std::time::Duration;

use orange::protocol::operators::Role;
use orange::server::http::admin_route_list;
use orange::server::http::permissions::least_role;
use serde_json::{Value, json};

use crate::support::{Agent, AgentOpts, RawResponse, Server, ServerOpts, wait_until};

/// A UUID no task, job or token has.
const NO_SUCH_ID: &str = "0190b2d0-0000-7000-8000-000000000000";

/// Adds operator `name` through the API as the admin; returns its token.
fn add_operator(server: &Server, name: &str, role: &str, scope: Value) -> String {
    let body = json!({"name": name, "role": role, "scope": scope}).to_string();
    let answer = server.admin_raw("POST", "/api/v1/operators", Some(&server.token), body.as_bytes());
    assert_eq!(answer.status, 201, "add {name}: {}", answer.text());
    let token = answer.json()["token"].as_str().expect("a token in the answer").to_owned();
    assert!(token.starts_with("orange_op_"), "{token}");
    token
}

/// `method path` with `token` and a JSON `body`.
fn call(server: &Server, token: &str, method: &str, path: &str, body: &Value) -> RawResponse {
    server.admin_raw(method, path, Some(token), body.to_string().as_bytes())
}

#[test]
fn every_route_refuses_the_roles_below_its_own_naming_the_role_needed_and_admits_the_rest() {
    let server = Server::start(ServerOpts::default());
    let tokens = [
        (Role::Viewer, add_operator(&server, "vera", "viewer", json!({}))),
        (Role::Operator, add_operator(&server, "otto", "operator", json!({}))),
        (Role::Admin, add_operator(&server, "ada", "admin", json!({}))),
    ];
    let routes = admin_route_list(true);
    assert!(routes.len() >= 30, "only {} routes listed", routes.len());
    let (mut refused, mut admitted) = (0, 0);
    for route in &routes {
        let needed = least_role(&route.method, &route.path).unwrap_or_else(|| {
            panic!("{} {} has no entry in the permission table", route.method, route.path)
        });
        let path = route.path.replace("{id}", NO_SUCH_ID).replace("{name}", "nobody");
        for (role, token) in &tokens {
            let answer = call(&server, token, route.method.as_str(), &path, &json!({}));
            let what = format!("{role} on {} {path}: {} {}", route.method, answer.status, answer.text());
            if *role < needed {
                assert_eq!(answer.status, 403, "{what}");
                assert!(answer.text().contains(&format!("needs the role {needed}")), "{what}");
                refused += 1;
            } else {
                assert!(![401, 403].contains(&answer.status), "{what}");
                admitted += 1;
            }
        }
    }
    assert!(refused >= 30 && admitted >= 60, "refused {refused}, admitted {admitted}");
    let audit = server.audit();
    let denied: Vec<_> = audit.iter().filter(|e| e.action == "access.denied").collect();
    assert_eq!(denied.len(), refused, "every refusal recorded");
    assert!(denied.iter().all(|e| e.actor == "vera@127.0.0.1" || e.actor == "otto@127.0.0.1"));
    assert!(
        denied
            .iter()
            .any(|e| e.target == "POST /api/v1/tasks" && e.detail.contains("vera has the role viewer"))
    );
}

#[test]
fn a_revoked_or_rotated_token_is_refused_on_the_next_request_and_the_admin_token_goes_on() {
    let server = Server::start(ServerOpts::default());
    let add = server.operator(&["operator", "add", "alice", "--role", "viewer"]).run();
    add.assert_success();
    let token = add.stdout.trim().to_owned();
    assert!(token.starts_with("orange_op_") && add.stderr.contains("shown only once"), "{add}");
    let as_alice = |token: &str| server.operator(&["operator", "whoami"]).env("ORANGE_TOKEN", token).run();
    let me = as_alice(&token);
    me.assert_success();
    assert_eq!(me.stdout, "alice viewer all hosts\n");
    let list = server.operator(&["operator", "list"]).run();
    list.assert_success();
    assert!(list.stdout.contains("alice  viewer") && !list.stdout.contains(&token), "{list}");

    let rotate = server.operator(&["operator", "rotate", "alice"]).run();
    rotate.assert_success();
    let new_token = rotate.stdout.trim().to_owned();
    assert_ne!(new_token, token);
    let old = server.admin_raw("GET", "/api/v1/whoami", Some(&token), b"");
    assert_eq!((old.status, old.text().contains("wrong admin token")), (401, true), "{}", old.text());
    as_alice(&new_token).assert_success();

    server.operator(&["operator", "revoke", "alice"]).run().assert_success();
    let after = server.admin_raw("GET", "/api/v1/agents", Some(&new_token), b"");
    assert_eq!(after.status, 401);
    assert!(after.text().contains("revoked"), "{}", after.text());
    let refused = as_alice(&new_token);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("revoked"), "{refused}");
    // Only admins manage operators; the admin token keeps working as the admin named `admin`.
    let viewer = add_operator(&server, "vic", "viewer", json!({}));
    let by_viewer =
        server.operator(&["operator", "add", "eve", "--role", "admin"]).env("ORANGE_TOKEN", &viewer).run();
    assert!(by_viewer.stderr.contains("needs the role admin"), "{by_viewer}");
    let me = server.admin_raw("GET", "/api/v1/whoami", Some(&server.token), b"");
    assert_eq!(me.json(), json!({"name": "admin", "role": "admin", "scope": {}}));
}

#[test]
fn an_expired_token_says_expired() {
    let server = Server::start(ServerOpts::default());
    let body = json!({"name": "temp", "role": "viewer", "ttl_secs": 1}).to_string();
    let answer = server.admin_raw("POST", "/api/v1/operators", Some(&server.token), body.as_bytes());
    assert_eq!(answer.status, 201, "{}", answer.text());
    let token = answer.json()["token"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(10), "the token to expire", || {
        let answer = server.admin_raw("GET", "/api/v1/whoami", Some(&token), b"");
        answer.status == 401 && answer.text().contains("expired")
    });
}

/// A server with three agents, all declaring `env=prod`: `web-1` (role=web), `db-1` (role=db)
/// and `sneaky`, which declares role=web but whose approved labels an admin set to role=db.
fn fleet() -> (Server, Vec<Agent>) {
    let server = Server::start(ServerOpts::default());
    let start = |id: &str, role: &str| {
        let labels = vec![format!("role={role}"), "env=prod".to_owned()];
        Agent::start_online(&server, id, AgentOpts { labels, ..AgentOpts::shell() })
    };
    let agents = vec![start("web-1", "web"), start("db-1", "db"), start("sneaky", "web")];
    // Enrolled with the key, each agent's labels were approved as it declared them; an admin
    // then approves role=db for `sneaky`, which goes on declaring role=web.
    let label = server.operator(&["agents", "label", "sneaky", "role=db", "env=prod"]).run();
    label.assert_success();
    assert_eq!(label.stdout, "agent sneaky: approved labels env=prod,role=db\n");
    (server, agents)
}

#[test]
fn a_scoped_operator_reaches_no_host_outside_its_scope_by_any_route() {
    let (server, _agents) = fleet();
    // `sneaky` declares role=web, which no admin approved.
    let sneaky = server.agent("sneaky").expect("sneaky known");
    assert_eq!(sneaky.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(sneaky.approved_labels.get("role").map(String::as_str), Some("db"));
    let alice = add_operator(&server, "alice", "operator", json!({"role": "web"}));
    let as_alice = |args: &[&str]| server.operator(args).env("ORANGE_TOKEN", &alice).run();

    // Task send: in scope works, outside is refused naming the scope.
    let ok = as_alice(&["task", "run", "--appid", "web-1", "--", "echo", "hi"]);
    assert_eq!((ok.code(), ok.stdout.as_str()), (Some(0), "hi\n"), "{ok}");
    for outside in ["db-1", "sneaky"] {
        let refused = as_alice(&["task", "send", "--appid", outside, "--type", "shell", "--payload", "true"]);
        assert_ne!(refused.code(), Some(0), "{refused}");
        assert!(refused.stderr.contains("outside the scope of operator alice (role=web)"), "{refused}");
    }
    let send_all = call(
        &server,
        &alice,
        "POST",
        "/api/v1/tasks",
        &json!({"all": true, "task_type": "shell", "payload": "true"}),
    );
    assert_eq!(send_all.status, 201, "{}", send_all.text());
    let sent = send_all.json();
    let sent: Vec<&str> =
        sent["tasks"].as_array().unwrap().iter().map(|t| t["app_id"].as_str().unwrap()).collect();
    assert_eq!(sent, ["web-1"], "all means all agents in scope");

    // Jobs: --all and a selector that partly overlaps the scope both end at the scope.
    for targets in [json!({"all": true}), json!({"labels": {"env": "prod"}})] {
        let job = json!({"targets": targets, "task_type": "shell", "payload": "true"});
        let answer = call(&server, &alice, "POST", "/api/v1/jobs", &job);
        assert_eq!(answer.status, 201, "{}", answer.text());
        assert_eq!(answer.json()["targets"], 1, "{targets}: {}", answer.text());
    }
    let outside = json!({"targets": {"labels": {"role": "db"}}, "task_type": "shell", "payload": "true"});
    let answer = call(&server, &alice, "POST", "/api/v1/jobs", &outside);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("within the scope of operator alice"), "{}", answer.text());
    let named = json!({"targets": {"app_ids": ["web-1", "db-1"]}, "task_type": "shell", "payload": "true"});
    assert_eq!(call(&server, &alice, "POST", "/api/v1/jobs", &named).status, 403);
    let job_run = as_alice(&["job", "run", "--all", "--", "true"]);
    assert_eq!(job_run.code(), Some(0), "{job_run}");

    // The admin's task and job on db-1: not readable, not cancellable by alice.
    let task = server.enqueue(&["db-1"], "shell", "sleep 30")[0].task_id.clone();
    let admin_job = json!({"targets": {"app_ids": ["db-1"]}, "task_type": "shell", "payload": "sleep 30"});
    let job = call(&server, &server.token, "POST", "/api/v1/jobs", &admin_job).json()["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [
        format!("/api/v1/tasks/{task}"),
        format!("/api/v1/tasks/{task}/output"),
        format!("/api/v1/tasks/{task}/file"),
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/results"),
        format!("/api/v1/jobs/{job}/groups"),
        "/api/v1/agents/db-1".to_owned(),
    ] {
        let answer = call(&server, &alice, "GET", &path, &json!({}));
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.text());
    }
    for path in [
        format!("/api/v1/tasks/{task}/cancel"),
        format!("/api/v1/jobs/{job}/cancel"),
        format!("/api/v1/jobs/{job}/pause"),
    ] {
        let answer = call(&server, &alice, "POST", &path, &json!({"force": true}));
        assert_eq!(answer.status, 404, "POST {path}: {}", answer.text());
    }
    let logs = as_alice(&["task", "logs", &task]);
    assert_ne!(logs.code(), Some(0), "{logs}");
    assert_ne!(server.task(&task).status, orange::protocol::TaskStatus::Cancelled);

    // Lists show only what is in scope.
    let agents = call(&server, &alice, "GET", "/api/v1/agents", &json!({})).json();
    let ids: Vec<&str> =
        agents["agents"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["web-1"]);
    let tasks = call(&server, &alice, "GET", "/api/v1/tasks", &json!({})).json();
    assert!(tasks["tasks"].as_array().unwrap().iter().all(|t| t["app_id"] == "web-1"), "{tasks}");
    assert!(!tasks["tasks"].as_array().unwrap().is_empty());
    let jobs = call(&server, &alice, "GET", "/api/v1/jobs", &json!({})).json();
    assert!(jobs["jobs"].as_array().unwrap().iter().all(|j| j["job_id"] != job.as_str()), "{jobs}");

    // File copy to a host outside the scope is refused.
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"payload").unwrap();
    let cp = as_alice(&["cp", local.path().to_str().unwrap(), "--appid", "db-1", ":/tmp/orange-scope-test"]);
    assert_ne!(cp.code(), Some(0), "{cp}");
    assert!(cp.stderr.contains("outside the scope"), "{cp}");

    // The audit names alice for what she did and for what she was refused; she sees her own.
    let audit = server.operator(&["audit", "--actor", "alice", "--since", "1d", "--json"]).run();
    audit.assert_success();
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert!(entries.iter().all(|e| e["actor"] == "alice@127.0.0.1"), "{entries:?}");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "task.send" && e["detail"].as_str().unwrap().starts_with("refused:"))
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "task.send" && e["detail"].as_str().unwrap().starts_with("type shell"))
    );
    let her_view = call(&server, &alice, "GET", "/api/v1/audit?limit=1000", &json!({})).json();
    let seen = her_view["entries"].as_array().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e["target"] != task.as_str()), "the admin's task on db-1 is not shown");
}

#[test]
fn a_scoped_viewer_sees_only_its_hosts_and_runs_nothing() {
    let (server, _agents) = fleet();
    let viewer = add_operator(&server, "dora", "viewer", json!({"role": "db"}));
    let agents = call(&server, &viewer, "GET", "/api/v1/agents", &json!({})).json();
    let mut ids: Vec<&str> =
        agents["agents"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["db-1", "sneaky"], "approved role=db, whatever sneaky declares");
    let run =
        server.operator(&["task", "run", "--appid", "db-1", "--", "true"]).env("ORANGE_TOKEN", &viewer).run();
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("needs the role operator"), "{run}");
}

#[test]
fn an_agent_runs_only_the_handlers_it_allows_whatever_the_server_sends() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(ServerOpts::default());
    let handlers = tempfile::tempdir().unwrap();
    for (name, word) in [("deploy", "deployed"), ("wipe", "wiped")] {
        let path = handlers.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho {word}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let opts = AgentOpts {
        handlers: Some(handlers.path().to_owned()),
        extra_args: vec!["--allow-handler".into(), "deploy".into()],
        ..AgentOpts::default()
    };
    let _agent = Agent::start_online(&server, "h-1", opts);
    let deploy = server.enqueue(&["h-1"], "deploy", "")[0].task_id.clone();
    let wipe = server.enqueue(&["h-1"], "wipe", "")[0].task_id.clone();
    let deployed = server.wait_task(&deploy, 30);
    assert_eq!(deployed.status, orange::protocol::TaskStatus::Succeeded, "{deployed:?}");
    let refused = server.wait_task(&wipe, 30);
    assert_eq!(refused.status, orange::protocol::TaskStatus::Failed, "{refused:?}");
    let error = refused.error.unwrap_or_default();
    assert!(error.contains("handler \"wipe\" is not allowed on this agent"), "{error}");
    assert!(!server.output(&wipe, 0, 0).chunks.iter().any(|c| c.data.contains("wiped")));
}

#[test]
fn after_an_upgrade_the_admin_token_works_and_earlier_agents_keep_their_labels_for_scopes() {
    let data = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-0.1.0.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(data.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "cannot unpack {}", fixture.display());
    let admin_token = "the-token-of-before-0123456789abcdef".to_owned();
    let opts = ServerOpts {
        data_dir: Some(data.path().to_owned()),
        admin_token: Some(admin_token.clone()),
        ..ServerOpts::default()
    };
    let server = Server::start(opts);
    let me = server.admin_raw("GET", "/api/v1/whoami", Some(&admin_token), b"");
    assert_eq!(me.json(), json!({"name": "admin", "role": "admin", "scope": {}}), "{}", me.text());
    let web_1 = server.agent("web-1").expect("web-1 kept");
    assert_eq!(web_1.approved_labels, web_1.labels, "declared before the upgrade: approved");
    let pending = server.agent("pending-1").expect("pending-1 kept");
    assert!(pending.approved_labels.is_empty(), "a pending agent has nothing approved");
    let web_ops = add_operator(&server, "webops", "operator", json!({"role": "web"}));
    let agents = call(&server, &web_ops, "GET", "/api/v1/agents", &json!({})).json();
    let ids: Vec<&str> =
        agents["agents"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["web-1"], "{agents}");
}

#[test]
fn an_operator_limited_to_some_task_types_and_hosts_is_refused_the_rest() {
    let (server, _agents) = fleet();
    let body =
        json!({"name": "runner", "role": "operator", "max_hosts": 1, "task_types": ["ping"]}).to_string();
    let added = server.admin_raw("POST", "/api/v1/operators", Some(&server.token), body.as_bytes());
    assert_eq!(added.status, 201, "{}", added.text());
    let token = added.json()["token"].as_str().unwrap().to_owned();
    let send = |body: Value| call(&server, &token, "POST", "/api/v1/tasks", &body);
    let shell = send(json!({"app_ids": ["web-1"], "task_type": "shell", "payload": "true"}));
    assert_eq!(shell.status, 403, "{}", shell.text());
    assert!(shell.text().contains("may send only task types ping, not \\\"shell\\\""), "{}", shell.text());
    let many = send(json!({"all": true, "task_type": "ping", "payload": ""}));
    assert_eq!(many.status, 403, "{}", many.text());
    assert!(many.text().contains("3 hosts targeted; operator runner may reach at most 1"), "{}", many.text());
    let job = json!({"targets": {"labels": {"env": "prod"}}, "task_type": "ping", "payload": ""});
    assert_eq!(call(&server, &token, "POST", "/api/v1/jobs", &job).status, 403);
    let one = send(json!({"app_ids": ["web-1"], "task_type": "ping", "payload": ""}));
    assert_eq!(one.status, 201, "{}", one.text());
    let list = server.operator(&["operator", "list"]).run();
    assert!(list.stdout.contains("at most 1 hosts; types ping"), "{list}");
}
