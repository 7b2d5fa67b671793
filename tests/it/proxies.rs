//! The agent and the CLI reach the server through an HTTP proxy: a CONNECT proxy written here
//! on 127.0.0.1 tunnels their traffic and counts it. Chosen by `HTTP_PROXY` for an http server,
//! `HTTPS_PROXY` for an https one, `--proxy` or `ORANGE_PROXY` over both; `NO_PROXY` covering
//! the server, or `none`, keeps it out. ureq tunnels plain http with CONNECT too: the proxy
//! also answers absolute-URI requests, and the tests check none came.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::{Agent, AgentOpts, Server, ServerOpts, tool, wait_until};

/// Longest request head the proxy reads.
const MAX_HEAD: u64 = 16 * 1024;

/// One request the proxy received.
#[derive(Debug, Clone)]
struct Seen {
    /// `CONNECT`, or the method of an absolute-URI request.
    method: String,
    /// `host:port` of a CONNECT, or the absolute URI.
    target: String,
    /// Its `Proxy-Authorization` header, if any.
    authorization: Option<String>,
}

/// What the proxy's threads share.
#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Bytes carried from clients to servers, through tunnels and forwarded requests.
    upstream_bytes: AtomicU64,
    /// Everything carried from clients, kept to show what was (not) readable on the way.
    upstream_copy: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

/// A CONNECT proxy on 127.0.0.1: each connection's head is read and noted, a `CONNECT
/// host:port` is answered 200 and spliced both ways, an absolute-URI request is forwarded.
struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve(client, &shared));
            }
        });
        ConnectProxy { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen").clone()
    }

    fn upstream_bytes(&self) -> u64 {
        self.shared.upstream_bytes.load(Ordering::SeqCst)
    }

    fn upstream_text(&self) -> String {
        String::from_utf8_lossy(&self.shared.upstream_copy.lock().expect("copy")).into_owned()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one client connection: one CONNECT tunnel, or forwarded absolute-URI requests.
fn serve(client: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(client.try_clone().expect("clone the client socket"));
    let Some(head) = read_head(&mut reader) else { return };
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let authorization = head
        .lines()
        .find_map(|line| {
            line.strip_prefix("Proxy-Authorization: ").or(line.strip_prefix("proxy-authorization: "))
        })
        .map(str::to_owned);
    shared.seen.lock().expect("seen").push(Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        authorization,
    });
    let mut client = client;
    if method == "CONNECT" {
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_ok() {
            splice(reader, client, server, shared);
        }
    } else if let Some((host, origin_form)) = absolute_target(target) {
        let Ok(mut server) = TcpStream::connect(host) else { return };
        let rewritten = head.replacen(target, origin_form, 1);
        if server.write_all(rewritten.as_bytes()).is_ok() {
            count(shared, rewritten.as_bytes());
            splice(reader, client, server, shared);
        }
    }
}

/// `http://host:port/path` as (`host:port`, `/path`).
fn absolute_target(target: &str) -> Option<(&str, &str)> {
    let rest = target.strip_prefix("http://")?;
    let slash = rest.find('/').unwrap_or(rest.len());
    Some((&rest[..slash], if slash < rest.len() { &rest[slash..] } else { "/" }))
}

/// Reads a request head through its blank line (at most [`MAX_HEAD`] bytes).
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    let mut limited = reader.take(MAX_HEAD);
    loop {
        let mut line = String::new();
        if limited.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

/// Copies client to server (counting) and server to client until either side ends.
fn splice(mut from_client: BufReader<TcpStream>, client: TcpStream, server: TcpStream, shared: &Shared) {
    let mut from_server = server.try_clone().expect("clone the server socket");
    let mut to_client = client.try_clone().expect("clone the client socket");
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let mut to_server = server;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from_client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count(shared, &buffer[..n]);
        if to_server.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to_server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    let _ = back.join();
}

/// Notes `bytes` carried towards a server.
fn count(shared: &Shared, bytes: &[u8]) {
    shared.upstream_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    let mut copy = shared.upstream_copy.lock().expect("copy");
    if copy.len() < 4 * 1024 * 1024 {
        copy.extend_from_slice(bytes);
    }
}

/// Options of an agent that runs shell tasks, with `env` and `args` added.
fn opts(env: &[(&str, String)], args: &[String]) -> AgentOpts {
    AgentOpts {
        allow_shell: true,
        env: env.iter().map(|(name, value)| (name.to_string(), value.clone())).collect(),
        extra_args: args.to_vec(),
        ..AgentOpts::default()
    }
}

/// [`opts`]'s agent, started and listed online.
fn agent(server: &Server, app_id: &str, env: &[(&str, String)], args: &[String]) -> Agent {
    Agent::start_online(server, app_id, opts(env, args))
}

/// Runs `echo WORD` on `app_id` with `task run` (directly, not through any proxy) and asserts
/// the host printed it.
fn assert_runs_a_task(server: &Server, app_id: &str, word: &str) {
    let run = server.operator(&["task", "run", "--appid", app_id, "--", &format!("echo {word}")]).run();
    run.assert_success();
    assert_eq!(run.stdout.trim(), word, "{run}");
}

/// `host:port` of a server URL.
fn authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/')
}

#[test]
fn an_agent_given_http_proxy_tunnels_all_its_traffic_with_connect() {
    let server = Server::start(ServerOpts::default());
    let proxy = ConnectProxy::start();
    // HTTPS_PROXY leads nowhere: an http server must take HTTP_PROXY.
    let env = [("HTTP_PROXY", proxy.url()), ("HTTPS_PROXY", "http://127.0.0.1:9".to_owned())];
    let _agent = agent(&server, "via-proxy", &env, &[]);
    assert_runs_a_task(&server, "via-proxy", "tunnelled");
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "the proxy saw nothing");
    for request in &seen {
        assert_eq!(request.method, "CONNECT", "ureq tunnels plain http with CONNECT: {seen:?}");
        assert_eq!(request.target, authority(&server.url), "{seen:?}");
        assert_eq!(request.authorization, None);
    }
    // Plain http inside the tunnel: the agent's calls and the task's report went this way.
    let carried = proxy.upstream_text();
    assert!(carried.contains("POST /orange-forge/api/getTask") && carried.contains("tunnelled"), "{carried}");
}

#[test]
fn an_agent_given_https_proxy_reaches_an_https_server_and_the_proxy_sees_only_ciphertext() {
    let pki = TempDir::with_prefix("orange-proxy-pki-").expect("temp dir");
    self_signed(pki.path());
    let server = Server::start(ServerOpts {
        tls: Some((pki.path().join("cert.pem"), pki.path().join("key.pem"))),
        ..ServerOpts::default()
    });
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let proxy = ConnectProxy::start();
    let env = [("https_proxy", proxy.url()), ("HTTP_PROXY", "http://127.0.0.1:9".to_owned())];
    let ca = pki.path().join("cert.pem").display().to_string();
    // The harness's own client knows no private CA: the CLI, given it, watches for the agent.
    let _agent = Agent::start(&server, "tls-via-proxy", opts(&env, &["--ca-file".into(), ca.clone()]));
    wait_until(Duration::from_secs(30), "the agent to register through the proxy", || {
        server
            .operator(&["agents", "--json"])
            .env("ORANGE_CA_FILE", &ca)
            .run()
            .stdout
            .contains("tls-via-proxy")
    });
    let run = server
        .operator(&["task", "run", "--queue", "--appid", "tls-via-proxy", "--", "echo secret-word"])
        .env("ORANGE_CA_FILE", &ca)
        .run();
    run.assert_success();
    assert_eq!(run.stdout.trim(), "secret-word", "{run}");
    assert!(proxy.seen().iter().all(|seen| seen.method == "CONNECT"), "{:?}", proxy.seen());
    assert!(proxy.upstream_bytes() > 1000, "the agent's calls did not go through the proxy");
    let carried = proxy.upstream_text();
    assert!(
        !carried.contains("/orange-forge/") && !carried.contains("secret-word"),
        "plaintext in the tunnel"
    );
}

#[test]
fn orange_proxy_sends_credentials_that_never_reach_the_log() {
    let server = Server::start(ServerOpts::default());
    let proxy = ConnectProxy::start();
    // ORANGE_PROXY wins over HTTP_PROXY, which leads nowhere.
    let env = [
        ("ORANGE_PROXY", format!("http://ops:hunter2@{}", proxy.addr)),
        ("HTTP_PROXY", "http://127.0.0.1:9".to_owned()),
    ];
    let agent = agent(&server, "with-credentials", &env, &[]);
    assert_runs_a_task(&server, "with-credentials", "authorized");
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "the proxy saw nothing");
    // base64("ops:hunter2")
    assert!(seen.iter().all(|s| s.authorization.as_deref() == Some("Basic b3BzOmh1bnRlcjI=")), "{seen:?}");
    let log = agent.output();
    assert!(log.contains("ops:***@"), "the proxy is not named in the log:\n{log}");
    assert!(!log.contains("hunter2"), "the password reached the log:\n{log}");
}

#[test]
fn the_proxy_flag_wins_over_the_environment_but_refuses_a_password() {
    let server = Server::start(ServerOpts::default());
    let proxy = ConnectProxy::start();
    let env =
        [("ORANGE_PROXY", "http://127.0.0.1:9".to_owned()), ("HTTP_PROXY", "http://127.0.0.1:9".to_owned())];
    let _agent = agent(&server, "flagged", &env, &["--proxy".into(), proxy.url()]);
    assert_runs_a_task(&server, "flagged", "flagged");
    assert!(proxy.seen().iter().any(|seen| seen.method == "CONNECT"), "{:?}", proxy.seen());
    let refused =
        crate::support::cli(&["agent", "--server", &server.url, "--proxy", "http://ops:hunter2@proxy:3128"]);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("ORANGE_PROXY") && refused.stderr.contains("ops:***@"), "{refused}");
    assert!(!refused.stderr.contains("hunter2"), "{refused}");
}

#[test]
fn no_proxy_covering_the_server_keeps_the_agent_and_the_cli_away_from_the_proxy() {
    let server = Server::start(ServerOpts::default());
    let proxy = ConnectProxy::start();
    let env = [("HTTP_PROXY", proxy.url()), ("NO_PROXY", "localhost, 127.0.0.1".to_owned())];
    let _agent = agent(&server, "direct", &env, &[]);
    assert_runs_a_task(&server, "direct", "direct");
    let port_entry = authority(&server.url).to_owned();
    let run = server.operator(&["agents"]).env("http_proxy", &proxy.url()).env("no_proxy", &port_entry).run();
    run.assert_success();
    let none = server.operator(&["agents"]).env("HTTP_PROXY", &proxy.url()).env("ORANGE_PROXY", "none").run();
    none.assert_success();
    assert!(proxy.seen().is_empty(), "the proxy was used: {:?}", proxy.seen());
    // The same NO_PROXY on another port does not cover the server: the check can fail.
    let other_port =
        server.operator(&["agents"]).env("HTTP_PROXY", &proxy.url()).env("NO_PROXY", "127.0.0.1:1").run();
    other_port.assert_success();
    assert_eq!(proxy.seen().len(), 1, "{:?}", proxy.seen());
}

#[test]
fn the_cli_reaches_the_server_through_the_proxy() {
    let server = Server::start(ServerOpts::default());
    let proxy = ConnectProxy::start();
    let run = server.operator(&["agents", "--json"]).env("HTTP_PROXY", &proxy.url()).run();
    run.assert_success();
    assert!(run.json()["agents"].is_array(), "{run}");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("CONNECT", authority(&server.url)));
    assert!(proxy.upstream_text().contains("GET /api/v1/agents"), "{}", proxy.upstream_text());
}

#[test]
fn a_proxy_that_is_not_an_http_proxy_url_is_refused_by_name() {
    let server = Server::start(ServerOpts::default());
    let run = server.operator(&["agents"]).env("HTTP_PROXY", "socks5://u:hunter2@127.0.0.1:1080").run();
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("HTTP_PROXY") && run.stderr.contains("socks5"), "{run}");
    assert!(!run.stderr.contains("hunter2"), "{run}");
    let agent = crate::support::cli(&["agent", "--server", &server.url, "--proxy", "ftp://proxy:21"]);
    assert_ne!(agent.code(), Some(0), "{agent}");
    assert!(agent.stderr.contains("--proxy") && agent.stderr.contains("ftp"), "{agent}");
    let bad_list = crate::support::cli_with(
        &["agent", "--server", &server.url],
        &[("HTTP_PROXY", "http://127.0.0.1:9"), ("NO_PROXY", "10.0.0.0/99")],
        Duration::from_secs(30),
    );
    assert!(bad_list.stderr.contains("NO_PROXY") && bad_list.stderr.contains("10.0.0.0/99"), "{bad_list}");
}

/// A self-signed certificate for 127.0.0.1 in `dir`: `cert.pem`, `key.pem`.
fn self_signed(dir: &Path) {
    let out = Command::new(tool("openssl", "openssl"))
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=127.0.0.1", "-days", "2", "-keyout", "key.pem", "-out", "cert.pem"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
}
