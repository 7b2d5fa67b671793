//! A turned-away agent does not hammer its server: a real `orange agent` pointed at a stub that
//! accepts its registration and then refuses every getTask at once (HTTP 429 without
//! `Retry-After`, code 1, code 2 with no wait, a reset connection) polls a few times a second at
//! most, and keeps running; and so does a real agent whose address the real server locked out
//! after others' bad signatures in its name.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::Mutex;

use super::*;
use crate::support::{BIN, KillOnDrop, process_alive};

/// How long the agent's polls are counted.
const WATCH: Duration = Duration::from_secs(10);
/// Most getTask calls a second, on average, after the first second.
const MOST_PER_SECOND: usize = 3;

/// How the stub answers getTask.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Busy,
    Code1,
    Code2,
    Reset,
}

/// A stub server on 127.0.0.1 noting when each getTask came.
struct Stub {
    url: String,
    polls: Arc<Mutex<Vec<Instant>>>,
}

impl Stub {
    fn start(refusal: Refusal) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("stub address"));
        let polls = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&polls);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let noted = Arc::clone(&noted);
                std::thread::spawn(move || serve(stream, refusal, &noted));
            }
        });
        Stub { url, polls }
    }

    fn polls(&self) -> Vec<Instant> {
        self.polls.lock().expect("polls lock").clone()
    }
}

/// Answers the requests of one connection until it closes.
fn serve(mut stream: TcpStream, refusal: Refusal, polls: &Mutex<Vec<Instant>>) {
    while let Some(path) = read_request(&mut stream) {
        if path.ends_with("/register") {
            let reply = json!({"code": 0, "message": "registration successful", "data": {
                "app_id": "b1", "secret": "***", "register_time": 0, "last_ping_time": 0,
                "do_status": "registered", "processed_task_count": 0}});
            respond(&mut stream, "200 OK", &reply.to_string());
            continue;
        }
        if path.ends_with("/getTask") {
            polls.lock().expect("polls lock").push(Instant::now());
        }
        match refusal {
            Refusal::Busy => respond(&mut stream, "429 Too Many Requests", ""),
            Refusal::Code1 => respond(&mut stream, "200 OK", r#"{"code":1,"message":"refused"}"#),
            Refusal::Code2 => respond(&mut stream, "200 OK", r#"{"code":2,"message":"locked out"}"#),
            Refusal::Reset => return reset(stream),
        }
    }
}

/// Reads one request and returns its path; `None` once the connection ends.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    head.split_whitespace().nth(1).map(str::to_owned)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}

/// Closes `stream` with a TCP reset instead of a FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this function owns, with a linger struct of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Starts an agent against a stub refusing getTask as `refusal` and checks how often it polls.
fn agent_backs_off(refusal: Refusal) {
    let stub = Stub::start(refusal);
    let dir = TempDir::new().expect("temp dir");
    let log = dir.path().join("agent.log");
    let out = std::fs::File::create(&log).expect("agent log");
    let mut child = Command::new(BIN)
        .args(["agent", "--server", &stub.url, "--appid", "b1", "--state"])
        .arg(dir.path().join("state"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone log"))
        .stderr(out)
        .spawn()
        .expect("spawn orange agent");
    let _guard = KillOnDrop(child.id());
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(20), "the agent's first getTask", || !stub.polls().is_empty());
    let first = stub.polls()[0];
    std::thread::sleep(WATCH.saturating_sub(first.elapsed()));
    let polls = stub.polls();
    let after_first_second =
        polls.iter().filter(|t| t.duration_since(first) >= Duration::from_secs(1)).count();
    let most = MOST_PER_SECOND * (WATCH.as_secs() as usize - 1);
    assert!(
        after_first_second <= most,
        "{refusal:?}: {after_first_second} getTask calls in {} s after the first second (at most {most})\n{}",
        WATCH.as_secs() - 1,
        show_log()
    );
    assert!(polls.len() >= 2, "{refusal:?}: the agent did not poll again\n{}", show_log());
    assert!(matches!(child.try_wait(), Ok(None)), "{refusal:?}: the agent exited\n{}", show_log());
    assert!(process_alive(child.id()));
}

#[test]
fn an_agent_refused_with_http_429_without_retry_after_backs_off() {
    agent_backs_off(Refusal::Busy);
}

#[test]
fn an_agent_refused_with_code_1_backs_off() {
    agent_backs_off(Refusal::Code1);
}

#[test]
fn an_agent_answered_no_task_at_once_backs_off() {
    agent_backs_off(Refusal::Code2);
}

#[test]
fn an_agent_whose_connections_are_reset_backs_off() {
    agent_backs_off(Refusal::Reset);
}

#[test]
fn a_real_agent_whose_source_is_locked_out_polls_a_few_times_a_second_at_most() {
    let server = Server::start(ServerOpts::poll_window(2));
    let proxy = crate::support::Proxy::start(server.addr);
    let opts = crate::support::AgentOpts { server_url: Some(proxy.url.clone()), ..Default::default() };
    let mut agent = crate::support::Agent::start_online(&server, "b1", opts);
    // Bad signatures in the agent's name, from its address, past the failure limit.
    let forger = GoAgent::new(&server, "b1", "not-the-secret");
    for _ in 0..=MAX_FAILURES_PER_MINUTE {
        forger.ping();
    }
    let started = Instant::now();
    std::thread::sleep(WATCH);
    let polls: Vec<Instant> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path == GET_TASK && r.at >= started + Duration::from_secs(1))
        .map(|r| r.at)
        .collect();
    let most = MOST_PER_SECOND * (WATCH.as_secs() as usize - 1);
    assert!(
        polls.len() <= most,
        "{} getTask calls in {} s (at most {most})\n{}",
        polls.len(),
        WATCH.as_secs() - 1,
        agent.output()
    );
    agent.assert_running();
}
