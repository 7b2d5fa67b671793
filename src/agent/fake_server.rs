//! Test-only stand-in for `orange server`'s agent endpoints: a blocking HTTP/1.1 server on a
//! loopback port that checks signatures, hands out queued tasks through a short long poll and
//! records registrations and reports, so the agent's loops can be tested against real sockets.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::wire::{self, CODE_ERROR, CODE_NO_TASK, CODE_OK};
use crate::protocol::{RegisterRequest, ReportRequest, Signer, WireTask};

/// How long a getTask parks when no task is queued.
const POLL_WINDOW: Duration = Duration::from_millis(300);

/// What the fake server saw and what it will do next.
#[derive(Default)]
pub struct Inner {
    /// Tasks waiting for the agent.
    pub tasks: VecDeque<WireTask>,
    /// Accepted reports, with the time they arrived.
    pub reports: Vec<(Instant, ReportRequest)>,
    /// Accepted registrations.
    pub registrations: Vec<RegisterRequest>,
    /// When each task was handed out.
    pub delivered: Vec<(Instant, String)>,
    /// Every register call, accepted or not.
    pub register_calls: usize,
    /// Answer code 1 to every register.
    pub refuse_register: bool,
    /// Every reportTask call, accepted or not.
    pub report_calls: usize,
    /// Accepted pings.
    pub pings: usize,
    /// Requests whose signature did not verify.
    pub bad_signatures: usize,
    /// Answer "unknown app id" to getTask and ping until the agent registers again.
    pub forget_agent: bool,
    /// Answer code 1 to every report.
    pub refuse_reports: bool,
}

/// Shared state of the fake server.
pub struct State {
    inner: Mutex<Inner>,
    changed: Condvar,
    secret: String,
}

impl State {
    /// Locks the recorded state.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake server state lock")
    }

    /// Changes the state and wakes a parked getTask.
    pub fn update(&self, change: impl FnOnce(&mut Inner)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Queues a task and wakes a parked getTask.
    pub fn push_task(&self, task: WireTask) {
        self.update(|inner| inner.tasks.push_back(task));
    }

    /// Waits until `condition` holds on the state, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, condition: impl Fn(&Inner) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while !condition(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            inner = self.changed.wait_timeout(inner, left.min(Duration::from_millis(20))).expect("lock").0;
        }
    }
}

/// A running fake server.
pub struct FakeServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub state: Arc<State>,
}

impl FakeServer {
    /// Starts on a free loopback port, expecting agents to sign with `secret`.
    pub fn start(secret: &str) -> FakeServer {
        FakeServer::start_on("127.0.0.1:0".parse().expect("valid address"), secret)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, secret: &str) -> FakeServer {
        let listener = TcpListener::bind(addr).expect("bind fake server");
        let addr = listener.local_addr().expect("bound address");
        let state =
            Arc::new(State { inner: Mutex::default(), changed: Condvar::new(), secret: secret.to_owned() });
        let accept_state = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&accept_state);
                thread::spawn(move || serve_connection(stream, &state));
            }
        });
        FakeServer { addr, state }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One parsed request.
struct Request {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn serve_connection(stream: TcpStream, state: &State) {
    // One write per response and no Nagle delay, like a real server.
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let body = answer(state, &request).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request { path, headers, body })
}

fn envelope(code: i32, message: &str, data: Value) -> Value {
    json!({"code": code, "message": message, "data": data})
}

fn verified(state: &State, request: &Request, key: &str) -> bool {
    let header = |name: &str| request.headers.get(&name.to_ascii_lowercase()).cloned().unwrap_or_default();
    let (app, time, sign) =
        (header(wire::HEADER_APPID), header(wire::HEADER_TIME), header(wire::HEADER_SIGN));
    let nonce = header(wire::HEADER_NONCE);
    let canonical = crate::protocol::sign::Canonical {
        method: "POST",
        path: &request.path,
        app_id: &app,
        time: &time,
        nonce: &nonce,
        body: &request.body,
    };
    let ok = Signer::new(key).verify_v2(&canonical, &sign).is_ok();
    if !ok {
        state.lock().bad_signatures += 1;
    }
    ok
}

fn answer(state: &State, request: &Request) -> Value {
    let key = if request.path == wire::REGISTER_PATH { wire::LEGACY_BASE_SECRET } else { &state.secret };
    if !verified(state, request, key) {
        return envelope(CODE_ERROR, "signature does not match", Value::Null);
    }
    match request.path.as_str() {
        wire::REGISTER_PATH => register(state, &request.body),
        wire::PING_PATH => ping(state),
        wire::GET_TASK_PATH => get_task(state),
        wire::REPORT_TASK_PATH => report(state, &request.body),
        _ => envelope(CODE_ERROR, "no such path", Value::Null),
    }
}

fn register(state: &State, body: &[u8]) -> Value {
    let Ok(request) = serde_json::from_slice::<RegisterRequest>(body) else {
        return envelope(CODE_ERROR, "bad register body", Value::Null);
    };
    let app_id = request.app_id.clone();
    let mut inner = state.lock();
    inner.register_calls += 1;
    state.changed.notify_all();
    if inner.refuse_register {
        return envelope(CODE_ERROR, "enrollment refused", Value::Null);
    }
    inner.registrations.push(request);
    inner.forget_agent = false;
    state.changed.notify_all();
    let reply = json!({"app_id": app_id, "secret": "***", "register_time": 1, "last_ping_time": 1,
        "do_status": "registered", "processed_task_count": 0});
    envelope(CODE_OK, "registration successful", reply)
}

fn ping(state: &State) -> Value {
    let mut inner = state.lock();
    if inner.forget_agent {
        return envelope(CODE_ERROR, "unknown app id", Value::Null);
    }
    inner.pings += 1;
    state.changed.notify_all();
    envelope(CODE_OK, "pong", json!("pong"))
}

fn get_task(state: &State) -> Value {
    let deadline = Instant::now() + POLL_WINDOW;
    let mut inner = state.lock();
    loop {
        if inner.forget_agent {
            return envelope(CODE_ERROR, "unknown app id", Value::Null);
        }
        if let Some(task) = inner.tasks.pop_front() {
            inner.delivered.push((Instant::now(), task.task_id.clone()));
            state.changed.notify_all();
            return envelope(CODE_OK, "task fetched", json!(task));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return envelope(CODE_NO_TASK, "no task", Value::Null);
        }
        inner = state.changed.wait_timeout(inner, left).expect("lock").0;
    }
}

fn report(state: &State, body: &[u8]) -> Value {
    let mut inner = state.lock();
    inner.report_calls += 1;
    state.changed.notify_all();
    if inner.refuse_reports {
        return envelope(CODE_ERROR, "unknown task", Value::Null);
    }
    let Ok(report) = serde_json::from_slice::<ReportRequest>(body) else {
        return envelope(CODE_ERROR, "bad report body", Value::Null);
    };
    inner.reports.push((Instant::now(), report));
    envelope(CODE_OK, "task status updated successfully", Value::Null)
}
