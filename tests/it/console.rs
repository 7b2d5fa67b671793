//! The web console in a real headless Chromium, against the real server and real agents: signing
//! in (a wrong token refused with the server's words), the fleet and its filters, accepting a
//! pending agent, a job run from the page on three agents with its output groups, a running
//! task's output arriving line by line and its cancel stopping the real process, the audit
//! record; what a viewer and an operator are shown; hostile values from agents and operators shown as text and run nothing; the content
//! security policy enforced by the browser. Each view's screenshot goes to `target/screenshots/`.

use std::time::Duration;

use orange::client::{AgentClient, Enrollment};
use orange::protocol::facts::HostFacts;
use orange::protocol::wire::RegisterRequest;

use crate::support::{Agent, AgentOpts, Browser, Server, ServerOpts, process_alive, wait_until};

/// A value that runs script if a page ever treats it as HTML.
const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1;alert(1)\">";

/// The browser on the console of `server`, signed in with its admin token, on the fleet view.
fn signed_in(server: &Server, width: u32, height: u32) -> Browser {
    let browser = Browser::start(width, height);
    browser.open(&server.url);
    browser.wait_for("the sign-in form", "document.querySelector('#signin')");
    browser.type_into("#token", &server.token);
    browser.click("#signin button[type=submit]");
    browser.wait_for("the fleet table", "document.querySelector('#fleet')");
    browser
}

/// Agents started with `labels`, one per (app id, labels) pair, all online.
fn agents(server: &Server, specs: &[(&str, &[&str])]) -> Vec<Agent> {
    specs
        .iter()
        .map(|(id, labels)| {
            let opts =
                AgentOpts { labels: labels.iter().map(|l| (*l).to_owned()).collect(), ..AgentOpts::shell() };
            Agent::start_online(server, id, opts)
        })
        .collect()
}

fn rows(browser: &Browser) -> Vec<String> {
    let ids =
        browser.eval("return [...document.querySelectorAll('#fleet-rows tr')].map(r => r.dataset.appId);");
    ids.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[test]
fn sign_in_refuses_a_wrong_token_then_the_fleet_lists_filters_and_accepts_agents() {
    let server = Server::start(ServerOpts::default());
    let _agents =
        agents(&server, &[("web-1", &["role=web"]), ("web-2", &["role=web"]), ("db-1", &["role=db"])]);
    let pending = AgentClient::new(&server.url, "new-host", "new-host-secret");
    let request =
        RegisterRequest { app_id: "new-host".into(), secret: "new-host-secret".into(), ..Default::default() };
    pending.register(&request, &Enrollment::Pending).expect("a pending registration");

    let browser = Browser::start(1280, 900);
    browser.open(&server.url);
    browser.wait_for("the sign-in form", "document.querySelector('#signin')");
    browser.screenshot("console-sign-in");
    browser.type_into("#token", "not-the-admin-token");
    browser.click("#signin button[type=submit]");
    browser.wait_for("the refusal", "document.querySelector('#signin-error .error')");
    let refusal = browser.text("#signin-error");
    assert!(refusal.contains("admin token"), "the server's words are shown: {refusal:?}");
    assert!(browser.eval("return sessionStorage.length").as_u64() == Some(0), "a wrong token is not kept");
    assert_eq!(browser.count("#fleet"), 0, "nothing of the fleet is shown");

    browser.type_into("#token", &server.token);
    browser.click("#signin button[type=submit]");
    browser.wait_for("four agents listed", "document.querySelectorAll('#fleet-rows tr').length === 4");
    assert_eq!(rows(&browser), ["db-1", "new-host", "web-1", "web-2"]);
    let web1 = browser.text("tr[data-app-id=web-1]");
    assert!(web1.contains("online") && web1.contains("role=web"), "{web1:?}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    assert!(web1.contains(kernel.trim()), "the host facts are shown: {web1:?}");
    assert!(browser.text("tr[data-app-id=new-host]").contains("pending"));
    assert!(
        !browser.eval("return location.href").as_str().unwrap_or_default().contains(&server.token),
        "the token is never in the URL"
    );
    browser.screenshot("console-fleet");

    browser.type_into("#fleet-labels", "role=web");
    browser.click("#fleet-filter button[type=submit]");
    browser.wait_for("the role=web agents only", "document.querySelectorAll('#fleet-rows tr').length === 2");
    assert_eq!(rows(&browser), ["web-1", "web-2"]);

    browser.type_into("#fleet-labels", "");
    browser.select("#fleet-status", "pending");
    browser.click("#fleet-filter button[type=submit]");
    browser.wait_for("the pending agent only", "document.querySelectorAll('#fleet-rows tr').length === 1");
    assert_eq!(rows(&browser), ["new-host"]);
    browser.click("tr[data-app-id=new-host] button");
    browser.wait_for("no agent pending any more", "document.querySelectorAll('#fleet-rows tr').length === 0");
    assert_eq!(server.agent("new-host").expect("still known").status, "accepted");

    // Signing out forgets the token.
    browser.click("#sign-out");
    browser.wait_for("the sign-in form again", "document.querySelector('#signin')");
    assert_eq!(browser.eval("return sessionStorage.length").as_u64(), Some(0));
}

#[test]
fn a_job_run_from_the_page_on_three_agents_shows_its_groups_and_the_audit_names_it() {
    let server = Server::start(ServerOpts::default());
    let _agents =
        agents(&server, &[("app-1", &["tier=app"]), ("app-2", &["tier=app"]), ("app-3", &["tier=app"])]);
    let _other = agents(&server, &[("cache-1", &["tier=cache"])]);
    let browser = signed_in(&server, 1280, 900);

    browser.click("a[data-view=run]");
    browser.type_into("#run-targets", "tier=app");
    browser.wait_for(
        "the live count of matching hosts",
        "document.querySelector('#run-count').dataset.count === '3'",
    );
    assert_eq!(browser.text("#run-count"), "3 hosts match");
    browser.type_into("#run-command", "echo same-everywhere; test \"$ORANGE_TASK_ID\" != never");
    browser.type_into("#run-concurrency", "2");
    browser.screenshot("console-run");
    browser.click("#run-submit");
    browser.wait_for("the confirmation", "document.querySelector('#confirm-yes')");
    assert_eq!(browser.text("#confirm-yes"), "Run on 3 hosts", "the confirmation names the number of hosts");
    assert_eq!(
        browser.eval("return [document.activeElement.id, document.querySelector('main').inert]"),
        serde_json::json!(["confirm-yes", true]),
        "the keyboard is on the question, and the page behind is out of reach"
    );
    browser.click("#confirm-yes");

    browser.wait_for("the job done", "document.querySelector('#job [data-state=finished]')");
    browser
        .wait_for("one group of three hosts", "document.querySelectorAll('#job-groups .group').length === 1");
    let group = browser.text("#job-groups .group");
    assert!(group.contains("3 hosts") && group.contains("same-everywhere"), "{group:?}");
    for host in ["app-1", "app-2", "app-3"] {
        assert!(group.contains(host), "{host} is named in the group: {group:?}");
    }
    assert!(!group.contains("cache-1"), "{group:?}");
    assert_eq!(browser.count("#job-results tbody tr"), 3);
    browser.screenshot("console-job");

    let job_id = browser.eval("return location.hash.split('/')[2]").as_str().unwrap_or_default().to_owned();
    let job = server.admin().get::<serde_json::Value>(&format!("/api/v1/jobs/{job_id}")).expect("the job");
    assert_eq!(job["counts"]["succeeded"], 3, "{job}");
    assert_eq!(job["max_concurrency"], "2", "{job}");

    browser.click("a[data-view=audit]");
    browser.wait_for("the audit entries", "document.querySelectorAll('#audit-rows tr').length > 0");
    let newest = browser.text("#audit-rows tr");
    assert!(newest.contains("job.send") && newest.contains(&job_id), "newest first: {newest:?}");
    browser.screenshot("console-audit");
}

#[test]
fn a_running_tasks_output_appears_line_by_line_and_cancel_from_the_page_stops_it() {
    let server = Server::start(ServerOpts::default());
    let _agents = agents(&server, &[("runner", &[])]);
    let dir = tempfile::TempDir::with_prefix("orange-console-").expect("temp dir");
    let pid_file = dir.path().join("pid");
    let gate = dir.path().join("gate");
    // One line, then a second only once the test has seen the first on the page; then it waits.
    let command = format!(
        "echo $$ > {pid}; echo first-line; while [ ! -e {gate} ]; do sleep 0.1; done; echo second-line; sleep 300",
        pid = pid_file.display(),
        gate = gate.display()
    );
    let task = server.enqueue(&["runner"], "shell", &command).remove(0);
    let browser = signed_in(&server, 1280, 900);
    browser.open(&format!("{}/#/task/{}", server.url, task.task_id));

    browser.wait_for_text("#task-output", "first-line");
    assert!(!browser.text("#task-output").contains("second-line"));
    assert!(browser.text("#task-details").contains("running"), "{}", browser.text("#task-details"));
    std::fs::write(&gate, b"").expect("open the gate");
    browser.wait_for_text("#task-output", "second-line");
    assert!(browser.text("#task-details").contains("running"), "the output came before the end");
    browser.screenshot("console-task");

    let pid: u32 = std::fs::read_to_string(&pid_file).expect("pid file").trim().parse().expect("a pid");
    assert!(process_alive(pid));
    browser.click("#task-cancel");
    browser.wait_for("the task cancelled", "document.querySelector('#task-details [data-state=cancelled]')");
    wait_until(Duration::from_secs(30), "the task's shell to end", || !process_alive(pid));
    let history = browser.text("#task-history");
    assert!(history.contains("running") && history.contains("cancelled"), "{history:?}");
}

#[test]
fn a_large_binary_output_shows_its_head_and_tail_a_note_and_downloads_whole() {
    let server = Server::start(ServerOpts::default());
    let _agents = agents(&server, &[("printer", &[])]);
    // 1.5 MB of text, then bytes that are not UTF-8, then a last line.
    let command = "head -c 1500000 /dev/zero | tr '\\0' a; printf '\\377\\376 raw\\n'; echo tail-marker";
    let task = server.enqueue(&["printer"], "shell", command).remove(0);
    wait_until(Duration::from_secs(30), "the task to finish", || {
        server.task(&task.task_id).status.is_final()
    });
    let total = 1_500_000 + 7 + "tail-marker\n".len();

    let browser = signed_in(&server, 1280, 900);
    browser.open(&format!("{}/#/task/{}", server.url, task.task_id));
    browser.wait_for_text("#task-output", "tail-marker");
    browser.wait_for_text("#task-downloads", "Download stdout");
    let shown = browser
        .eval("return document.querySelector('#task-output').textContent.length")
        .as_u64()
        .unwrap_or(0);
    assert!(shown < 600_000, "the page keeps only the head and the tail: {shown} characters");
    let output = browser.text("#task-output");
    assert!(output.starts_with("aaaa"), "the head is shown");
    assert!(output.contains("bytes of stdout not shown here"), "the gap is said");
    assert!(
        output.contains("\u{FFFD}\u{FFFD} raw"),
        "bytes that are not UTF-8 show as replacement characters"
    );
    assert!(browser.text("#task-notes").contains("not valid UTF-8"), "{}", browser.text("#task-notes"));
    let link = browser.text("a[download]");
    assert_eq!(link, format!("Download stdout ({total} bytes)"), "the download holds every byte");
    browser.click("a[download]");
    let saved = browser.downloads_dir().join(format!("{}.stdout", task.task_id));
    wait_until(Duration::from_secs(30), "the download to be saved", || {
        std::fs::metadata(&saved).is_ok_and(|m| m.len() == total as u64)
    });
    let bytes = std::fs::read(&saved).expect("the downloaded file");
    assert!(bytes.ends_with(b"\xff\xfe raw\ntail-marker\n"), "the raw bytes, not replacement characters");
}

#[test]
fn hostile_values_from_agents_and_operators_are_shown_as_text_and_run_nothing() {
    let server = Server::start(ServerOpts::default());
    let _labelled = agents(&server, &[("labelled", &[&format!("note={HOSTILE}")])]);
    // An agent whose host facts carry markup, as a compromised host could send them.
    let client = AgentClient::new(&server.url, "facts-host", "facts-host-secret");
    let facts = HostFacts {
        hostname: Some(HOSTILE.into()),
        os_name: Some(HOSTILE.into()),
        kernel: Some("<script>window.__pwned=1</script>".into()),
        ..HostFacts::default()
    };
    let request = RegisterRequest {
        app_id: "facts-host".into(),
        secret: "facts-host-secret".into(),
        facts: Some(facts),
        ..Default::default()
    };
    client.register(&request, &Enrollment::Key(crate::support::BASE_SECRET.into())).expect("register");
    // A command and its output that carry markup.
    let command = format!("printf '%s\\n' '{HOSTILE}'");
    let task = server.enqueue(&["labelled"], "shell", &command).remove(0);
    wait_until(Duration::from_secs(30), "the hostile task to finish", || {
        server.task(&task.task_id).status.is_final()
    });

    let browser = signed_in(&server, 1280, 900);
    browser.wait_for("both agents", "document.querySelectorAll('#fleet-rows tr').length === 2");
    let labelled = browser.text("tr[data-app-id=labelled]");
    assert!(labelled.contains(HOSTILE), "the label is shown as text: {labelled:?}");
    let facts_row = browser.text("tr[data-app-id=facts-host]");
    assert!(
        facts_row.contains(HOSTILE) && facts_row.contains("<script>"),
        "facts shown as text: {facts_row:?}"
    );

    browser.open(&format!("{}/#/task/{}", server.url, task.task_id));
    browser.wait_for_text("#task-output", HOSTILE);
    assert!(browser.text("#task-command").contains(HOSTILE));
    browser.click("a[data-view=jobs]");
    browser.open(&format!("{}/#/fleet", server.url));
    browser.wait_for("the fleet again", "document.querySelectorAll('#fleet-rows tr').length === 2");

    assert_eq!(browser.count("img"), 0, "no element was made from a value");
    assert_eq!(browser.count("main script"), 0);
    assert_eq!(browser.eval("return window.__pwned === undefined"), serde_json::Value::Bool(true));
    assert!(!browser.alert_open(), "no script ran");
}

#[test]
fn the_content_security_policy_is_sent_and_the_browser_enforces_it() {
    let server = Server::start(ServerOpts::default());
    let page = crate::support::http(server.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a content security policy");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    for asset in ["/console/app.js", "/console/style.css"] {
        let answer = crate::support::http(server.addr, "GET", asset, &[], b"");
        assert_eq!(answer.status, 200, "{asset}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{asset}");
    }

    let browser = signed_in(&server, 1280, 900);
    // An inline script is refused by the browser, as the policy says, and reported as such.
    // (Scripts the driver runs itself are exempt, so this one is put in the page as an element.)
    browser.eval(
        "window.__violations = []; \
         document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.effectiveDirective)); \
         const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; \
         document.body.append(s); return null;",
    );
    browser.wait_for("the violation report", "window.__violations.length > 0");
    let outcome = browser.eval("return [window.__inline === undefined, window.__violations[0]];");
    assert_eq!(outcome, serde_json::json!([true, "script-src-elem"]), "an inline script ran");

    // Narrow screens: the same page at a phone's width, the fleet still readable.
    let phone = signed_in(&server, 390, 844);
    phone.screenshot("console-fleet-phone");
    let overflow = phone.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1");
    assert_eq!(overflow, serde_json::Value::Bool(true), "the page fits a phone's width");
}

#[test]
fn a_viewer_sees_no_run_link_nor_action_buttons_while_an_operator_does() {
    let server = Server::start(ServerOpts::default());
    let _agents = agents(&server, &[("busy-1", &[])]);
    let pending = AgentClient::new(&server.url, "waiting", "waiting-secret");
    let request =
        RegisterRequest { app_id: "waiting".into(), secret: "waiting-secret".into(), ..Default::default() };
    pending.register(&request, &Enrollment::Pending).expect("a pending registration");
    let job =
        serde_json::json!({"targets": {"app_ids": ["busy-1"]}, "task_type": "shell", "payload": "sleep 300"});
    let job: serde_json::Value = server.admin().post("/api/v1/jobs", &job).expect("a job");
    let job_id = job["job_id"].as_str().expect("a job id").to_owned();
    let token_of = |name: &str, role: &str| {
        let body = serde_json::json!({"name": name, "role": role});
        let added: serde_json::Value = server.admin().post("/api/v1/operators", &body).expect("an operator");
        added["token"].as_str().expect("a token").to_owned()
    };
    let (viewer, operator) = (token_of("vera", "viewer"), token_of("otto", "operator"));
    let browser = Browser::start(1280, 900);
    let sign_in = |token: &str| {
        browser.open(&format!("{}/#/fleet", server.url));
        browser.wait_for("the sign-in form", "document.querySelector('#signin')");
        browser.type_into("#token", token);
        browser.click("#signin button[type=submit]");
        browser.wait_for("the fleet", "document.querySelectorAll('#fleet-rows tr').length === 2");
    };
    let run_link_shown = || browser.eval("return !document.querySelector('a[data-view=run]').hidden");

    sign_in(&viewer);
    assert_eq!(browser.text("#whoami"), "vera (viewer)");
    assert_eq!(run_link_shown(), serde_json::Value::Bool(false), "a viewer sees no Run link");
    assert_eq!(browser.count("tr[data-app-id=waiting] button"), 0, "no Accept nor Forget");
    browser.open(&format!("{}/#/job/{job_id}", server.url));
    browser.wait_for("the job", "document.querySelector('#job [data-state=running]')");
    assert_eq!(browser.count("#job button"), 0, "no Pause nor Cancel");
    browser.screenshot("console-job-viewer");
    browser.open(&format!("{}/#/run", server.url));
    browser.wait_for("the fleet instead of Run", "document.querySelector('#fleet')");
    assert_eq!(browser.count("#run-submit"), 0);

    browser.click("#sign-out");
    sign_in(&operator);
    assert_eq!(browser.text("#whoami"), "otto (operator)");
    assert_eq!(run_link_shown(), serde_json::Value::Bool(true), "an operator sees Run");
    assert_eq!(browser.count("tr[data-app-id=waiting] button"), 0, "accepting is an admin's");
    browser.open(&format!("{}/#/job/{job_id}", server.url));
    browser.wait_for("the job's Cancel", "document.querySelector('#job-cancel')");
    assert_eq!(browser.count("#job-pause"), 1);
}

/// Not a test but a measurement (BENCHMARKS.md): the fleet view of a console whose server knows
/// 10,000 agents, each with host facts. Prints the time from navigation to the first page of
/// agents on screen, the first contentful paint and the agents API call.
/// `cargo test --release --test it -- --ignored console_fleet_paint --nocapture`
#[test]
#[ignore = "a measurement, run by hand"]
fn console_fleet_paint_with_ten_thousand_agents() {
    const AGENTS: usize = 10_000;
    let server = Server::start(ServerOpts::default());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let server = &server;
            scope.spawn(move || {
                for i in (worker..AGENTS).step_by(8) {
                    let app_id = format!("host-{i:05}");
                    let client = AgentClient::new(&server.url, &app_id, "fleet-secret");
                    let facts = HostFacts {
                        hostname: Some(format!("{app_id}.example.net")),
                        os_name: Some("Debian GNU/Linux".into()),
                        os_version: Some("12".into()),
                        kernel: Some("6.1.0-28-amd64".into()),
                        arch: Some("x86_64".into()),
                        ips: vec![format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
                        ..HostFacts::default()
                    };
                    let request = RegisterRequest {
                        app_id: app_id.clone(),
                        secret: "fleet-secret".into(),
                        facts: Some(facts),
                        ..Default::default()
                    };
                    client
                        .register(&request, &Enrollment::Key(crate::support::BASE_SECRET.into()))
                        .expect("register");
                }
            });
        }
    });
    println!("registered {AGENTS} agents in {:?}", started.elapsed());
    let browser = signed_in(&server, 1280, 900);
    for round in 0..3 {
        browser.eval("location.reload(); return null;");
        browser.wait_for("the fleet shown", "performance.getEntriesByName('orange:fleet-shown').length > 0");
        let timing = browser.eval(
            "const paint = performance.getEntriesByName('first-contentful-paint')[0]; \
             const api = performance.getEntriesByType('resource').find(r => r.name.includes('/api/v1/agents')); \
             return { shown: performance.getEntriesByName('orange:fleet-shown')[0].startTime, \
                      paint: paint ? paint.startTime : null, api: api ? api.duration : null, \
                      bytes: api ? api.transferSize : null, rows: document.querySelectorAll('#fleet-rows tr').length };",
        );
        println!("round {round}: {timing}");
    }
}
