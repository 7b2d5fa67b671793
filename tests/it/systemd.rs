//! The real server under a service manager, without systemd itself: readiness and stopping
//! notices read from a `NOTIFY_SOCKET` of the test's own, a listening socket held by the test
//! and handed to each start as socket activation does, across which an original-protocol
//! client polling in a loop never meets a refused or broken connection, and a stop on SIGTERM
//! that does not wait for parked agents.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{
    Agent, AgentOpts, GET_TASK, GoAgent, REPORT_TASK, Server, ServerOpts, go_report, go_request,
    go_signed_headers, go_time_now, http, next_legacy_second,
};

/// A datagram socket standing for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = TempDir::with_prefix("orange-notify-").expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        socket.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        NotifySocket { socket, path: path.to_str().expect("utf-8 path").to_owned(), _dir: dir }
    }

    /// The next notice, as its lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notice within 30 s");
        String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect()
    }
}

#[test]
fn readiness_and_stopping_are_told_on_the_notify_socket() {
    let notify = NotifySocket::bind();
    let mut server = Server::start(ServerOpts {
        env: vec![("NOTIFY_SOCKET".into(), notify.path.clone())],
        ..ServerOpts::default()
    });
    let ready = notify.next();
    assert!(ready.contains(&"READY=1".to_owned()), "{ready:?}");
    let status = format!("STATUS=serving on {}", server.url);
    assert!(ready.contains(&status), "{ready:?} lacks {status}");
    // Ready means serving: the probe answers at once.
    let readyz = http(server.addr, "GET", "/readyz", &[], b"");
    assert_eq!(readyz.status, 200, "{}", readyz.text());
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let stopping = notify.next();
    assert!(stopping.contains(&"STOPPING=1".to_owned()), "{stopping:?}");
}

#[test]
fn sigterm_with_agents_parked_exits_within_a_second() {
    let mut server = Server::start(ServerOpts::poll_window(30));
    let mut agents: Vec<Agent> =
        (0..5).map(|i| Agent::start_online(&server, &format!("parked-{i}"), AgentOpts::default())).collect();
    let original = GoAgent::new(&server, "parked-original", "parked-original-secret").registered();
    let poll = std::thread::spawn(move || original.get_task());
    // Long enough for every poll to park (a poll window is 30 s).
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    // Generous next to the ~20 ms it takes here; the point is that nothing waits for a poll
    // window, a drain timeout or a sweep.
    assert!(took < Duration::from_secs(1), "the server took {took:?} to stop\n{}", server.stderr());
    let answer = poll.join().expect("poll thread");
    assert_eq!(answer["code"], 2, "a parked original poll is answered \"no task\": {answer}");
    for agent in &mut agents {
        agent.assert_running();
    }
}

/// An original client on one kept-alive connection, as Go's transport keeps it: a connection
/// the server closed while idle is noticed before it is used again (Go's read loop sees the
/// end of file), a `Connection: close` answer is honoured. Any other failure (refused,
/// reset, closed with a request on it) is what ends a Go client's process.
struct KeptAliveClient {
    agent: GoAgent,
    conn: Option<BufReader<TcpStream>>,
}

impl KeptAliveClient {
    fn exchange(&mut self, path: &str, body: &[u8]) -> Result<serde_json::Value, String> {
        if self.conn.as_ref().is_some_and(|conn| closed_by_peer(conn.get_ref())) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.agent.addr).map_err(|e| format!("connect: {e}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("opened above");
        let headers = go_signed_headers(&self.agent.app_id, &self.agent.secret, body, &go_time_now());
        let request = go_request(self.agent.addr, path, &headers, body);
        conn.get_mut().write_all(&request).map_err(|e| format!("write {path}: {e}"))?;
        let (close, body) = read_answer(conn).map_err(|e| format!("read {path}: {e}"))?;
        if close {
            self.conn = None;
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path} answer is no JSON: {e}"))
    }
}

/// Whether the server closed `stream` (a read would see the end of file now).
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    stream.set_nonblocking(true).expect("non-blocking");
    let closed = match stream.peek(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// Reads one answer: whether the server closes the connection after it, and its body.
fn read_answer(conn: &mut BufReader<TcpStream>) -> std::io::Result<(bool, Vec<u8>)> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status line {line:?}")));
    }
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut header = String::new();
        if conn.read_line(&mut header)? == 0 {
            return Err(std::io::Error::other("closed inside the headers"));
        }
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((close, body))
}

/// What the polling client saw.
#[derive(Default)]
struct Seen {
    polls: usize,
    reported: Vec<String>,
    failures: Vec<String>,
}

/// Polls and reports in a loop until `stop`, one request per second as the Go client does.
fn poll_until(mut client: KeptAliveClient, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::SeqCst) {
        next_legacy_second();
        let answer = match client.exchange(GET_TASK, b"") {
            Ok(answer) => answer,
            Err(e) => {
                seen.lock().unwrap().failures.push(e);
                continue;
            }
        };
        seen.lock().unwrap().polls += 1;
        match answer["code"].as_i64() {
            Some(2) => {}
            Some(0) => {
                let report = go_report(&answer["data"], "success", "done");
                next_legacy_second();
                match client.exchange(REPORT_TASK, report.to_string().as_bytes()) {
                    Ok(reply) if reply["code"] == 0 => {
                        let id = answer["data"]["task_id"].as_str().unwrap_or_default().to_owned();
                        seen.lock().unwrap().reported.push(id);
                    }
                    Ok(reply) => seen.lock().unwrap().failures.push(format!("report refused: {reply}")),
                    Err(e) => seen.lock().unwrap().failures.push(e),
                }
            }
            _ => seen.lock().unwrap().failures.push(format!("getTask answered {answer}")),
        }
    }
}

#[test]
fn a_socket_activated_restart_refuses_no_original_client() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind the held socket");
    let address: SocketAddr = socket.local_addr().expect("address");
    let notify = NotifySocket::bind();
    let mut server = Server::start(ServerOpts {
        listen_socket: Some(Arc::new(socket)),
        poll_window: Some(2),
        env: vec![("NOTIFY_SOCKET".into(), notify.path.clone())],
        ..ServerOpts::default()
    });
    assert_eq!(server.addr, address, "the server serves the socket it was given");
    assert!(notify.next().contains(&"READY=1".to_owned()));
    let agent = GoAgent::new(&server, "activated-1", "activated-secret").registered();
    let client = KeptAliveClient { agent, conn: None };
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let poller = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || poll_until(client, &stop, &seen))
    };
    let mut sent = Vec::new();
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        let status = server.terminate(Duration::from_secs(30));
        assert!(status.success(), "round {round}: {status:?}\n{}", server.stderr());
        // A slow start (an upgrade, a long log to replay): the client's next poll comes in
        // meanwhile and waits in the socket's queue.
        std::thread::sleep(Duration::from_millis(1500));
        server.start_again();
        assert_eq!(server.addr, address, "round {round}");
        assert!(notify.next().contains(&"STOPPING=1".to_owned()), "round {round}");
        assert!(notify.next().contains(&"READY=1".to_owned()), "round {round}");
        let task = server.enqueue(&["activated-1"], "PING", &format!("after restart {round}"));
        sent.push(task[0].task_id.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().reported.len() < sent.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("poller");
    let seen = seen.lock().unwrap();
    assert!(seen.failures.is_empty(), "the client met failures: {:?}\n{}", seen.failures, server.stderr());
    assert_eq!(seen.reported, sent, "every task sent after a restart was taken and reported");
    assert!(seen.polls > 3, "the client kept polling through three restarts: {} polls", seen.polls);
    for id in &sent {
        assert_eq!(server.task(id).status.to_string(), "succeeded", "task {id}");
    }
}
