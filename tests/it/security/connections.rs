//! Connections are bounded: silent ones are closed after the idle timeout, a source past its
//! share is refused at once while others keep their room, and a trusted balancer's PROXY
//! protocol header names the client (required from it, refused from anyone else).

use std::net::IpAddr;

use super::*;
use crate::support::{Agent, AgentOpts};

/// Idle connections the first test holds open at once.
const IDLE_CONNECTIONS: usize = 5_000;

/// Raises this process's soft open-files limit to what `needed` connections take; fails with
/// the figures if the hard limit is too low.
fn allow_open_files(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: the pointer is to a live rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0, "getrlimit");
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit here is {} (raise it with ulimit -Hn)",
        limit.rlim_max
    );
    if limit.rlim_cur < needed {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: the pointer is to a live rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }, 0, "setrlimit");
    }
}

/// A connection to `server` from the loopback address `from` (127.0.0.x).
fn connect_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind the client side");
        socket.connect(server).await.expect("connect")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// True when the server closes `stream` (end of file or reset) within `within` without
/// answering anything.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
    }
}

/// Sends `prefix` then an operator request creating an enrollment token on `stream`; returns
/// the status line's code, or `None` if the server answered nothing.
fn create_token(server: &Server, mut stream: TcpStream, prefix: &[u8]) -> Option<u16> {
    let body = br#"{"ttl_secs":60,"uses":1}"#;
    let mut request = prefix.to_vec();
    request.extend(
        format!(
            "POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            server.addr,
            server.token,
            body.len()
        )
        .as_bytes(),
    );
    request.extend(body);
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    // The server may close first (a refused connection); what it answered is what counts.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn audit_actors(server: &Server) -> Vec<String> {
    server.audit().into_iter().map(|entry| entry.actor).collect()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn five_thousand_idle_connections_leave_the_agent_and_the_cli_working_and_are_closed() {
    allow_open_files(IDLE_CONNECTIONS as u64 + 256);
    let server = Server::start(ServerOpts { poll_window: Some(2), ..ServerOpts::default() });
    let _agent = Agent::start_online(&server, "c1", AgentOpts::shell());
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|i| TcpStream::connect(server.addr).unwrap_or_else(|e| panic!("idle connection {i}: {e}")))
        .collect();
    let started = Instant::now();
    let run = server.operator(&["task", "run", "--appid", "c1", "--", "echo held"]).run();
    assert_eq!((run.code(), run.stdout.as_str()), (Some(0), "held\n"), "{run}");
    let listed = server.operator(&["agents", "--json"]).run();
    listed.assert_success();
    assert!(listed.stdout.contains("\"c1\""), "{listed}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "task run and the agent list took {took:?} beside idle connections"
    );
    // The default idle timeout is 10 s: every silent connection is closed soon after it is
    // accepted (on a busy machine, accepting 5,000 takes a while).
    for (i, stream) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(60).saturating_sub(opened.elapsed()).max(Duration::from_millis(10));
        assert!(
            closed_by_server(stream, left),
            "idle connection {i} still open {:?} after it was opened",
            opened.elapsed()
        );
    }
}

#[test]
fn a_source_past_its_connection_limit_is_refused_while_another_keeps_working() {
    let server = Server::start(ServerOpts {
        extra_args: ["--max-connections-per-source", "50", "--idle-timeout", "60"].map(String::from).to_vec(),
        ..ServerOpts::default()
    });
    let held: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(server.addr).expect("connect")).collect();
    // The 50 are counted once the server has accepted them; until then a 51st may still fit.
    let mut refused = 0;
    for _ in 0..20 {
        let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts");
        if closed_by_server(&mut extra, Duration::from_secs(2)) {
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a connection past 50 from 127.0.0.1 was not closed\n{}", server.stderr());
    let other = connect_from(loopback(2), server.addr);
    assert_eq!(create_token(&server, other, b""), Some(201), "127.0.0.2 has its own share");
    wait_until(Duration::from_secs(15), "a summary of the refusals in the log", || {
        server.stderr().lines().any(|line| {
            line.contains("connection refused")
                && line.contains("127.0.0.1")
                && line.contains("source at its")
        })
    });
    drop(held);
    assert!(audit_actors(&server).contains(&"admin@127.0.0.2".to_owned()), "127.0.0.1 has room again");
}

/// A PROXY protocol v2 header for a TCP connection from `client` (IPv4) to 10.0.0.1:443.
fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x11, 0, 12]);
    header.extend(client);
    header.extend([10, 0, 0, 1]);
    header.extend(port.to_be_bytes());
    header.extend(443u16.to_be_bytes());
    header
}

#[test]
fn a_trusted_balancer_names_the_client_and_nobody_else_may() {
    let server = Server::start(ServerOpts {
        extra_args: ["--proxy-protocol-from", "127.0.0.2"].map(String::from).to_vec(),
        ..ServerOpts::default()
    });
    // The balancer is 127.0.0.2; the harness itself talks from 127.0.0.1, without headers.
    let v1 = b"PROXY TCP4 10.1.2.3 10.0.0.1 40000 443\r\n";
    assert_eq!(create_token(&server, connect_from(loopback(2), server.addr), v1), Some(201));
    let v2 = proxy_v2([10, 4, 5, 6], 40001);
    assert_eq!(create_token(&server, connect_from(loopback(2), server.addr), &v2), Some(201));
    // Without the header, the balancer's connection is refused before any HTTP.
    assert_eq!(create_token(&server, connect_from(loopback(2), server.addr), b""), None);
    // From an address not configured, a header is not accepted: the request fails.
    let status = create_token(&server, connect_from(loopback(3), server.addr), v1);
    assert!(status.is_none_or(|code| code >= 400), "a PROXY header from 127.0.0.3 was accepted: {status:?}");
    let actors = audit_actors(&server);
    let tokens: Vec<&String> = actors.iter().filter(|actor| actor.starts_with("admin@")).collect();
    assert!(actors.contains(&"admin@10.1.2.3".to_owned()), "the v1 header's client is the actor: {actors:?}");
    assert!(actors.contains(&"admin@10.4.5.6".to_owned()), "the v2 header's client is the actor: {actors:?}");
    assert_eq!(tokens.len(), 2, "only the two proxied requests acted: {actors:?}");
}
