//! Test-only stand-in for `orange server`'s agent endpoints: a blocking HTTP/1.1 server on a
//! loopback port that checks signatures and follows the server's contract with orange agents:
//! a short long poll that honours `X-ORANGE-CAPACITY` and answers cancel lists first, only the
//! newest poll staying parked; `doing` acks; final reports refused once a task is final; an
//! output endpoint that stores each chunk number once and refuses one that skips ahead. Switches
//! make it misbehave (refuse, fail with HTTP 503, drop an answer) so the agent's loops can be
//! tested against real sockets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::sign::Canonical;
use crate::protocol::wire::{self, CODE_ERROR, CODE_NO_TASK, CODE_OK, DO_STATUS_DOING, OutputChunk};
use crate::protocol::{RegisterRequest, ReportRequest, Signer, WireTask};

/// How long a getTask parks when it has nothing to answer.
const POLL_WINDOW: Duration = Duration::from_millis(300);

/// What the fake server saw and what it will do next.
#[derive(Default)]
pub struct Inner {
    /// Tasks waiting for the agent.
    pub tasks: VecDeque<WireTask>,
    /// Accepted final reports, with the time they arrived.
    pub reports: Vec<(Instant, ReportRequest)>,
    /// Accepted `doing` acks: when, and for which task.
    pub doings: Vec<(Instant, String)>,
    /// The delivery named by every report (`doing` or final) and chunk, as (task, `doing`,
    /// `final` or `chunk`, attempt), in order of arrival.
    pub named_deliveries: Vec<(String, &'static str, Option<u32>)>,
    /// Accepted registrations.
    pub registrations: Vec<RegisterRequest>,
    /// When each task was handed out.
    pub delivered: Vec<(Instant, String)>,
    /// Every getTask: when, and its capacity header (`None` when absent).
    pub polls: Vec<(Instant, Option<usize>)>,
    /// The features header of every getTask (`None` when absent).
    pub poll_features: Vec<Option<String>>,
    /// Every register call, accepted or not.
    pub register_calls: usize,
    /// Answer code 1 to every register.
    pub refuse_register: bool,
    /// Every final reportTask call, accepted or not.
    pub report_calls: usize,
    /// Final report calls per task.
    pub report_calls_by_task: BTreeMap<String, usize>,
    /// Accepted pings.
    pub pings: usize,
    /// When each goodbye arrived.
    pub goodbyes: Vec<Instant>,
    /// Requests whose signature did not verify.
    pub bad_signatures: usize,
    /// Answer "unknown app id" to getTask and ping until the agent registers again.
    pub forget_agent: bool,
    /// Answer code 1 to every final report.
    pub refuse_reports: bool,
    /// Answer HTTP 503 to every final report (a transient failure).
    pub fail_reports: bool,
    /// Answer code 1 with this message to every `doing`.
    pub refuse_doing: Option<String>,
    /// Final status of each finished task; later reports, acks and chunks are refused.
    pub finals: BTreeMap<String, String>,
    /// Cancels not yet handed to a poll.
    pub pending_cancels: Vec<String>,
    /// Tasks an operator cancelled (their chunk acks say `cancel: true`).
    pub cancelled: BTreeSet<String>,
    /// Stored chunks per task, in order (unless `discard_output`).
    pub chunks: BTreeMap<String, Vec<OutputChunk>>,
    /// Next expected chunk number per task.
    pub next_seq: BTreeMap<String, u32>,
    /// Bytes of chunk data stored.
    pub chunk_bytes: u64,
    /// Chunks received again after they were stored.
    pub duplicate_chunks: usize,
    /// Chunks refused for skipping ahead.
    pub skipped_chunks: usize,
    /// Store only the count and size of chunks, not their data.
    pub discard_output: bool,
    /// Number of upcoming chunk answers to drop (the chunk is stored, the answer lost).
    pub drop_chunk_answers: usize,
    /// How long each chunk waits before it is handled (a slow server).
    pub output_delay: Duration,
    /// Generation of the newest getTask; older ones stop parking.
    pub poll_generation: u64,
    /// Host facts posted on the facts route, in order.
    pub facts: Vec<crate::protocol::facts::HostFacts>,
}

impl Inner {
    /// The stored output of `task`, all chunks concatenated, as (lossy) text.
    pub fn output(&self, task: &str) -> String {
        String::from_utf8_lossy(&self.output_bytes(task)).into_owned()
    }

    /// The stored output of `task`, all chunks' bytes concatenated.
    pub fn output_bytes(&self, task: &str) -> Vec<u8> {
        let chunks = self.chunks.get(task).into_iter().flatten();
        chunks.flat_map(|c| c.bytes().expect("chunks the fake server stored decode")).collect()
    }

    /// The stored output of one stream of `task`, as (lossy) text.
    pub fn stream_output(&self, task: &str, stream: &str) -> String {
        let chunks = self.chunks.get(task).into_iter().flatten().filter(|c| c.stream == stream);
        let bytes: Vec<u8> = chunks.flat_map(|c| c.bytes().expect("stored chunks decode")).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The accepted final report of `task`.
    pub fn report(&self, task: &str) -> Option<&ReportRequest> {
        self.reports.iter().map(|(_, r)| r).find(|r| r.task_id == task)
    }
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
        // A test that failed while holding the lock must not make every later request panic too.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Cancels `task` as an operator would: the next poll carries it, chunk acks say so.
    pub fn cancel(&self, task: &str) {
        self.update(|inner| {
            inner.pending_cancels.push(task.to_owned());
            inner.cancelled.insert(task.to_owned());
        });
    }

    /// Waits until `condition` holds on the state, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, condition: impl Fn(&Inner) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while !condition(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            let wait = left.min(Duration::from_millis(20));
            inner = self.changed.wait_timeout(inner, wait).unwrap_or_else(PoisonError::into_inner).0;
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

/// How to answer a request.
enum Reply {
    /// HTTP 200 with this envelope.
    Json(Value),
    /// This HTTP status with no body.
    Status(u16),
    /// Close the connection without answering.
    Drop,
}

fn serve_connection(stream: TcpStream, state: &State) {
    // One write per response and no Nagle delay, like a real server.
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let response = match answer(state, &request) {
            Reply::Json(body) => {
                let body = body.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            Reply::Status(code) => format!("HTTP/1.1 {code} Oops\r\ncontent-length: 0\r\n\r\n"),
            Reply::Drop => return,
        };
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

fn envelope(code: i32, message: &str, data: Value) -> Reply {
    Reply::Json(json!({"code": code, "message": message, "data": data}))
}

fn refused(message: &str) -> Reply {
    envelope(CODE_ERROR, message, Value::Null)
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
}

fn verified(state: &State, request: &Request, key: &str) -> bool {
    let get = |name: &str| header(request, name).unwrap_or_default();
    let (app, time, sign) = (get(wire::HEADER_APPID), get(wire::HEADER_TIME), get(wire::HEADER_SIGN));
    let canonical = Canonical {
        method: "POST",
        path: &request.path,
        app_id: app,
        time,
        nonce: get(wire::HEADER_NONCE),
        body: &request.body,
    };
    let ok = Signer::new(key).verify_v2(&canonical, sign).is_ok();
    if !ok {
        state.lock().bad_signatures += 1;
    }
    ok
}

fn answer(state: &State, request: &Request) -> Reply {
    let key = if request.path == wire::REGISTER_PATH { wire::LEGACY_BASE_SECRET } else { &state.secret };
    if !verified(state, request, key) {
        return refused("signature does not match");
    }
    match request.path.as_str() {
        wire::REGISTER_PATH => register(state, &request.body),
        wire::PING_PATH => ping(state),
        wire::GOODBYE_PATH => {
            state.update(|inner| inner.goodbyes.push(Instant::now()));
            envelope(CODE_OK, "goodbye", Value::Null)
        }
        wire::GET_TASK_PATH => {
            let capacity = header(request, wire::HEADER_CAPACITY).and_then(|v| v.parse().ok());
            let features = header(request, crate::protocol::features::HEADER_FEATURES).map(str::to_owned);
            state.lock().poll_features.push(features);
            get_task(state, capacity)
        }
        wire::REPORT_TASK_PATH => report(state, &request.body),
        wire::OUTPUT_PATH => output(state, &request.body),
        crate::protocol::facts::FACTS_PATH => match serde_json::from_slice(&request.body) {
            Ok(facts) => {
                state.update(|inner| inner.facts.push(facts));
                envelope(CODE_OK, "facts stored", Value::Null)
            }
            Err(_) => refused("bad facts body"),
        },
        _ => refused("no such path"),
    }
}

fn register(state: &State, body: &[u8]) -> Reply {
    let Ok(request) = serde_json::from_slice::<RegisterRequest>(body) else {
        return refused("bad register body");
    };
    let app_id = request.app_id.clone();
    let mut inner = state.lock();
    inner.register_calls += 1;
    state.changed.notify_all();
    if inner.refuse_register {
        return refused("enrollment refused");
    }
    inner.registrations.push(request);
    inner.forget_agent = false;
    state.changed.notify_all();
    let reply = json!({"app_id": app_id, "secret": "***", "register_time": 1, "last_ping_time": 1,
        "do_status": "registered", "processed_task_count": 0});
    envelope(CODE_OK, "registration successful", reply)
}

fn ping(state: &State) -> Reply {
    let mut inner = state.lock();
    if inner.forget_agent {
        return refused("unknown app id");
    }
    inner.pings += 1;
    state.changed.notify_all();
    envelope(CODE_OK, "pong", json!("pong"))
}

/// The long poll: cancels first, then a task if the capacity allows, until a newer poll of the
/// agent supersedes this one or the window ends.
fn get_task(state: &State, capacity: Option<usize>) -> Reply {
    let deadline = Instant::now() + POLL_WINDOW;
    let mut inner = state.lock();
    inner.poll_generation += 1;
    let generation = inner.poll_generation;
    inner.polls.push((Instant::now(), capacity));
    state.changed.notify_all();
    loop {
        if inner.forget_agent {
            return refused("unknown app id");
        }
        if !inner.pending_cancels.is_empty() {
            let cancel = std::mem::take(&mut inner.pending_cancels);
            return envelope(CODE_NO_TASK, "tasks cancelled", json!({ "cancel": cancel }));
        }
        if inner.poll_generation != generation {
            return envelope(CODE_NO_TASK, "superseded", Value::Null);
        }
        if capacity.unwrap_or(1) > 0
            && let Some(task) = inner.tasks.pop_front()
        {
            inner.delivered.push((Instant::now(), task.task_id.clone()));
            state.changed.notify_all();
            return envelope(CODE_OK, "task fetched", json!(task));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return envelope(CODE_NO_TASK, "no task", Value::Null);
        }
        inner = state.changed.wait_timeout(inner, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

fn report(state: &State, body: &[u8]) -> Reply {
    let Ok(report) = serde_json::from_slice::<ReportRequest>(body) else {
        return refused("bad report body");
    };
    let mut inner = state.lock();
    state.changed.notify_all();
    let kind = if report.do_status == DO_STATUS_DOING { "doing" } else { "final" };
    inner.named_deliveries.push((report.task_id.clone(), kind, report.attempt));
    if let Some(status) = inner.finals.get(&report.task_id).cloned() {
        if report.do_status != DO_STATUS_DOING {
            inner.report_calls += 1;
            *inner.report_calls_by_task.entry(report.task_id.clone()).or_default() += 1;
        }
        return refused(&format!("task {} already finished as {status}", report.task_id));
    }
    if report.do_status == DO_STATUS_DOING {
        if let Some(message) = inner.refuse_doing.clone() {
            return refused(&message);
        }
        inner.doings.push((Instant::now(), report.task_id));
        return envelope(CODE_OK, "task status updated successfully", Value::Null);
    }
    inner.report_calls += 1;
    *inner.report_calls_by_task.entry(report.task_id.clone()).or_default() += 1;
    if inner.fail_reports {
        return Reply::Status(503);
    }
    if inner.refuse_reports {
        return refused("unknown task");
    }
    inner.finals.insert(report.task_id.clone(), report.do_status.clone());
    inner.reports.push((Instant::now(), report));
    envelope(CODE_OK, "task status updated successfully", Value::Null)
}

/// A streamed chunk: stored once per number, acknowledged again when repeated, refused when it
/// skips ahead or its task is final.
fn output(state: &State, body: &[u8]) -> Reply {
    let Ok(chunk) = serde_json::from_slice::<OutputChunk>(body) else {
        return refused("bad output body");
    };
    let delay = state.lock().output_delay;
    thread::sleep(delay);
    let mut inner = state.lock();
    state.changed.notify_all();
    inner.named_deliveries.push((chunk.task_id.clone(), "chunk", chunk.attempt));
    if let Some(status) = inner.finals.get(&chunk.task_id) {
        return refused(&format!("task {} already finished as {status}", chunk.task_id));
    }
    let next = inner.next_seq.get(&chunk.task_id).copied().unwrap_or(0);
    if chunk.seq > next {
        inner.skipped_chunks += 1;
        return refused(&format!("chunk {} skips ahead of {next}", chunk.seq));
    }
    if chunk.seq < next {
        inner.duplicate_chunks += 1;
    } else {
        inner.next_seq.insert(chunk.task_id.clone(), next + 1);
        let Ok(bytes) = chunk.bytes() else {
            return refused("chunk data marked base64 does not decode");
        };
        inner.chunk_bytes += bytes.len() as u64;
        if !inner.discard_output {
            inner.chunks.entry(chunk.task_id.clone()).or_default().push(chunk.clone());
        }
    }
    if inner.drop_chunk_answers > 0 {
        inner.drop_chunk_answers -= 1;
        return Reply::Drop;
    }
    let cancel = inner.cancelled.contains(&chunk.task_id);
    envelope(CODE_OK, "chunk stored", json!({ "cancel": cancel }))
}
