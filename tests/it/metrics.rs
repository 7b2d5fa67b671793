//! `GET /metrics` of a real server: the exposition parsed, its counters moving by what real
//! agents, an original-protocol client and the operator CLI did (tasks run, a bad signature, a
//! replay, 429s of a full server), its state gauges (agents online, parked polls), no label
//! naming an app id or a task id; and who may read it (the admin token by default,
//! `--metrics-public`, the plain listener of `--metrics-listen`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{
    Agent, AgentOpts, GoAgent, PING, RawResponse, Server, ServerOpts, go_report, http, raw_exchange, replay,
    wait_until,
};

/// One sample: metric name and labels (sorted by name).
type Series = (String, BTreeMap<String, String>);

/// A parsed exposition: every sample's value.
struct Exposition {
    samples: BTreeMap<Series, f64>,
}

impl Exposition {
    /// Parses the text format: `name{label="value",...} value` lines, `#` lines skipped.
    fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner =
                        rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    (name.to_owned(), parse_labels(inner, line))
                }
            };
            assert!(samples.insert((name, labels), value).is_none(), "a series twice: {line:?}");
        }
        assert!(!samples.is_empty(), "no sample in {text:?}");
        Exposition { samples }
    }

    /// The value of `name` with exactly `labels`; panics if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let series = (name.to_owned(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        *self.samples.get(&series).unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    /// Every label value of every sample.
    fn label_values(&self) -> impl Iterator<Item = &str> {
        self.samples.keys().flat_map(|(_, labels)| labels.values().map(String::as_str))
    }
}

/// `a="x",b="y"` into a map; values may hold escaped quotes and commas.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("unclosed label value in {line:?}"),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

/// `GET path` on `addr`, with the bearer `token` if given.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> RawResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    http(addr, "GET", path, &headers, b"")
}

/// The server's metrics, read with its admin token and parsed.
fn scrape(server: &Server) -> Exposition {
    let answer = get(server.addr, "/metrics", Some(&server.token));
    assert_eq!(answer.status, 200, "{}", answer.text());
    Exposition::parse(&answer.text())
}

/// How much `name` with `labels` grew from `before` to `after`.
fn grew(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[test]
fn counters_and_gauges_move_with_real_traffic_and_no_label_names_a_host_or_task() {
    let server = Server::start(ServerOpts::default());
    let agents = ["mhost-a17", "mhost-b29"].map(|id| Agent::start_online(&server, id, AgentOpts::shell()));
    let go = GoAgent::new(&server, "mhost-go3", "go-secret").registered();
    let before = scrape(&server);

    let mut task_ids = Vec::new();
    for agent in &agents {
        let run = server
            .operator(&["task", "run", "--appid", &agent.app_id, "--json", "--", "echo metrics-check"])
            .run();
        run.assert_success();
        task_ids.push(run.json()["task_id"].as_str().expect("a task id").to_owned());
    }
    let task = server.enqueue(&["mhost-go3"], "PING", "")[0].clone();
    let wire = go.take(&task.task_id);
    assert_eq!(go.report(&go_report(&wire, "success", "pong"))["code"], 0);
    task_ids.push(task.task_id);
    // A bad signature, and a signed request sent twice.
    let forged = go.send_signed(PING, "not-the-secret", b"ping").json();
    assert_ne!(forged["code"], 0, "{forged}");
    let request = go.v2_request(PING, "go-secret", b"ping");
    assert_eq!(replay(server.addr, &request).json()["code"], 0);
    assert_ne!(replay(server.addr, &request).json()["code"], 0, "the replay is refused");

    let after = scrape(&server);
    assert_eq!(grew(&before, &after, "orange_tasks_enqueued_total", &[]), 3.0);
    assert_eq!(grew(&before, &after, "orange_tasks_finished_total", &[("state", "succeeded")]), 3.0);
    assert_eq!(grew(&before, &after, "orange_tasks_finished_total", &[("state", "failed")]), 0.0);
    assert!(grew(&before, &after, "orange_tasks_delivered_total", &[]) >= 3.0);
    assert!(grew(&before, &after, "orange_task_delivery_seconds_count", &[]) >= 3.0);
    assert_eq!(grew(&before, &after, "orange_task_result_seconds_count", &[]), 3.0);
    assert_eq!(grew(&before, &after, "orange_agent_signature_failures_total", &[]), 1.0);
    assert_eq!(grew(&before, &after, "orange_agent_replays_refused_total", &[]), 1.0);
    assert!(grew(&before, &after, "orange_commit_batch_size_count", &[]) >= 1.0);
    assert!(grew(&before, &after, "orange_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(
        grew(&before, &after, "orange_output_stored_bytes_total", &[]) >= 2.0 * "metrics-check".len() as f64
    );
    let original_2xx = [("route", "agent_original"), ("status", "2xx")];
    assert!(grew(&before, &after, "orange_http_requests_total", &original_2xx) >= 5.0);
    assert!(
        grew(&before, &after, "orange_http_requests_total", &[("route", "admin"), ("status", "2xx")]) >= 3.0
    );
    assert_eq!(
        grew(&before, &after, "orange_http_requests_total", &[("route", "metrics"), ("status", "2xx")]),
        1.0,
        "the first scrape is counted once answered"
    );

    // State gauges are read at most every few seconds: wait for a fresh reading.
    wait_until(Duration::from_secs(30), "3 agents online and both orange agents' polls parked", || {
        let now = scrape(&server);
        now.get("orange_agents", &[("status", "online")]) == 3.0 && now.get("orange_parked_polls", &[]) >= 2.0
    });
    server.operator(&["job", "run", "--appid", "mhost-a17,mhost-b29", "--", "true"]).run().assert_success();
    wait_until(Duration::from_secs(30), "the job counted finished", || {
        scrape(&server).get("orange_jobs", &[("state", "finished")]) == 1.0
    });
    let now = scrape(&server);
    assert_eq!(now.get("orange_jobs", &[("state", "running")]), 0.0);
    assert_eq!(grew(&after, &now, "orange_tasks_enqueued_total", &[]), 2.0, "a job's tasks are counted");
    assert_eq!(now.get("orange_agents", &[("status", "pending")]), 0.0);
    assert_eq!(now.get("orange_tasks_open", &[("state", "queued")]), 0.0);
    assert_eq!(now.get("orange_queue_depth", &[]), 0.0);
    assert!(now.get("orange_data_dir_bytes", &[]) > 0.0);

    let mut names: Vec<String> = task_ids.clone();
    names.extend(["mhost-a17", "mhost-b29", "mhost-go3", "metrics-check"].map(String::from));
    let mut checked = 0;
    for value in now.label_values() {
        assert!(
            !names.iter().any(|name| value.contains(name.as_str())),
            "label value {value:?} names a host or task"
        );
        assert!(value.len() <= 16, "label value {value:?} is not a short word");
        checked += 1;
    }
    assert!(checked > 50, "only {checked} label values seen");
}

#[test]
fn metrics_want_the_admin_token_unless_made_public() {
    let server = Server::start(ServerOpts::default());
    assert_eq!(get(server.addr, "/metrics", None).status, 401);
    assert_eq!(get(server.addr, "/metrics", Some("a-guess")).status, 401);
    let answer = get(server.addr, "/metrics", Some(&server.token));
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(answer.text().contains("# HELP orange_tasks_finished_total "), "{}", answer.text());
    assert!(!answer.text().contains(&server.token), "the exposition shows the admin token");

    let public =
        Server::start(ServerOpts { extra_args: vec!["--metrics-public".into()], ..ServerOpts::default() });
    let answer = get(public.addr, "/metrics", None);
    assert_eq!(answer.status, 200, "{}", answer.text());
    Exposition::parse(&answer.text());
    assert_eq!(
        get(public.addr, "/api/v1/agents", None).status,
        401,
        "the operator API still wants the token"
    );
}

#[test]
fn a_metrics_listener_serves_metrics_and_probes_without_a_token() {
    let extra_args = ["--metrics-listen", "127.0.0.1:0"].map(String::from).to_vec();
    let server = Server::start(ServerOpts { extra_args, ..ServerOpts::default() });
    let address = metrics_address(&server);
    assert_ne!(address, server.addr);
    let answer = get(address, "/metrics", None);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let metrics = Exposition::parse(&answer.text());
    assert_eq!(metrics.get("orange_agents", &[("status", "online")]), 0.0);
    assert_eq!(get(address, "/readyz", None).status, 200);
    let again = Exposition::parse(&get(address, "/metrics", None).text());
    let probes_2xx = [("route", "probe"), ("status", "2xx")];
    assert_eq!(
        grew(&metrics, &again, "orange_http_requests_total", &probes_2xx),
        1.0,
        "its answers are counted"
    );
    assert_eq!(get(address, "/api/v1/agents", Some(&server.token)).status, 404, "no operator API there");
    assert_eq!(get(server.addr, "/metrics", None).status, 401, "the main listener still wants the token");
}

/// The address of a server's `--metrics-listen` listener, read from its stdout.
fn metrics_address(server: &Server) -> SocketAddr {
    let line = server.stdout_line(Duration::from_secs(15)).expect("a line naming the metrics address");
    let address = line.strip_prefix("orange server metrics on http://").unwrap_or_else(|| panic!("{line:?}"));
    address.trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Whether the server closed `stream` (EOF or reset) within `wait`, having sent nothing.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn the_metrics_listener_bounds_its_connections_and_closes_idle_ones() {
    use std::net::TcpStream;

    // The limit of the metrics listener (METRICS_MAX_CONNECTIONS in src/server/http/metrics.rs).
    const LIMIT: usize = 32;
    // Idle connections last 30 s: far longer than the steps that need them all open take (up
    // to 15 s on a busy machine), so no held connection frees a place meanwhile.
    let extra_args = ["--metrics-listen", "127.0.0.1:0", "--idle-timeout", "30"].map(String::from).to_vec();
    let server = Server::start(ServerOpts { extra_args, ..ServerOpts::default() });
    let address = metrics_address(&server);

    let mut held: Vec<TcpStream> =
        (0..LIMIT).map(|_| TcpStream::connect(address).expect("connect within the limit")).collect();
    // Each held connection is accepted: a scrape on the last one is answered.
    let last = held.last_mut().expect("LIMIT > 0");
    std::io::Write::write_all(last, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    assert!(!closed_within(last, Duration::from_secs(5)), "a connection within the limit is served");
    let mut over = TcpStream::connect(address).expect("the kernel accepts the connection");
    // Served, it would answer; refused, it is closed without a byte (a write may already fail).
    let _ = std::io::Write::write_all(&mut over, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut over, Duration::from_secs(10)), "the connection past the limit is refused");
    assert_eq!(get(server.addr, "/healthz", None).status, 200, "the main listener is not concerned");

    // Silent connections are closed after --idle-timeout, and then a scrape gets through.
    for stream in &mut held[..LIMIT - 1] {
        assert!(closed_within(stream, Duration::from_secs(60)), "an idle connection is closed");
    }
    drop(held);
    wait_until(Duration::from_secs(30), "a scrape once the idle connections are gone", || {
        std::panic::catch_unwind(|| get(address, "/metrics", None).status == 200).unwrap_or(false)
    });
}

#[test]
fn answers_429_of_a_full_server_are_counted() {
    let extra_args = ["--max-inflight", "1", "--retry-after", "1"].map(String::from).to_vec();
    let server = Server::start(ServerOpts { extra_args, ..ServerOpts::default() });
    let go = GoAgent::new(&server, "flood-1", "s1").registered();
    let before = scrape(&server);
    let (stop, busy) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (stop, busy, go) = (Arc::clone(&stop), Arc::clone(&busy), go.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let request = go.v2_request(PING, &go.secret, b"ping");
                    if raw_exchange(go.addr, request, Duration::from_secs(30)).is_ok_and(|r| r.status == 429)
                    {
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(60), "a 429 answered to the flood", || busy.load(Ordering::SeqCst) >= 3);
    stop.store(true, Ordering::SeqCst);
    for flooder in flooders {
        flooder.join().expect("a flooder thread");
    }
    let seen = busy.load(Ordering::SeqCst) as f64;
    let after = scrape(&server);
    let overload = [("route", "agent_original"), ("code", "429")];
    assert_eq!(grew(&before, &after, "orange_http_overload_responses_total", &overload), seen);
    let client_errors = [("route", "agent_original"), ("status", "4xx")];
    assert_eq!(grew(&before, &after, "orange_http_requests_total", &client_errors), seen);
}

/// The metric names of README's "Metrics" table (`| \`orange_...{labels}\` | type | ...`).
fn readme_metrics() -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `orange_"))
        .map(|rest| {
            let (name, after) = rest.split_once('`').expect("a closing backtick");
            let name = name.split_once('{').map_or(name, |(name, _)| name);
            let kind = after.trim_start_matches(" | ").split(' ').next().unwrap_or_default();
            (format!("orange_{name}"), kind.to_owned())
        })
        .collect()
}

#[test]
fn readme_lists_every_metric_with_its_type_and_nothing_else() {
    let server =
        Server::start(ServerOpts { extra_args: vec!["--metrics-public".into()], ..ServerOpts::default() });
    let text = get(server.addr, "/metrics", None).text();
    let exposed: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    assert!(exposed.len() >= 20, "only {} metrics exposed", exposed.len());
    assert_eq!(readme_metrics(), exposed, "README's Metrics table and the exposition differ");
}

#[test]
fn output_past_the_cap_and_a_compaction_are_counted() {
    let extra_args = vec!["--output-cap-mb".into(), "1".into()];
    let mut server = Server::start(ServerOpts { extra_args, ..ServerOpts::default() });
    let _agent = Agent::start_online(&server, "cap-1", AgentOpts::shell());
    let before = scrape(&server);
    let run = server.operator(&["task", "run", "--appid", "cap-1", "--", "head -c 3000000 /dev/zero"]).run();
    run.assert_success();
    server.sigusr1();
    wait_until(Duration::from_secs(60), "the compaction counted", || {
        scrape(&server).get("orange_compactions_total", &[]) == 1.0
    });
    let after = scrape(&server);
    assert_eq!(grew(&before, &after, "orange_output_stored_bytes_total", &[]), 3_000_000.0);
    let dropped = grew(&before, &after, "orange_output_dropped_bytes_total", &[]);
    assert!(
        (1_000_000.0..3_000_000.0).contains(&dropped),
        "{dropped} bytes dropped of 3 MB past a 1 MiB cap"
    );
    assert_eq!(after.get("orange_compaction_duration_seconds_count", &[]), 1.0);
}

/// `promtool check metrics` of `exposition`: its exit status and everything it said.
fn promtool_check(exposition: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut check = Command::new(crate::support::tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write the exposition");
    let output = check.wait_with_output().expect("promtool output");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

#[test]
fn promtool_finds_nothing_to_lint_in_the_exposition_under_traffic() {
    let server = Server::start(ServerOpts::default());
    let agent = Agent::start_online(&server, "lint-host", AgentOpts::shell());
    server.operator(&["task", "run", "--appid", &agent.app_id, "--", "echo lint"]).run().assert_success();
    let answer = get(server.addr, "/metrics", Some(&server.token));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let exposition = answer.text();
    assert!(exposition.contains("orange_task_result_seconds_bucket"), "{exposition}");
    let (passed, said) = promtool_check(&exposition);
    assert!(passed && said.is_empty(), "promtool check metrics found problems:\n{said}");

    // The check bites: a counter without its _total suffix is reported.
    let wrong = "# HELP orange_things Things.\n# TYPE orange_things counter\norange_things 1\n";
    let (passed, said) = promtool_check(wrong);
    assert!(!passed && said.contains("_total"), "promtool let a counter without _total pass: {said}");
}
