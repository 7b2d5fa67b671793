//! Raw HTTP/1.1 over a socket, a request written byte for byte and the response read back, a
//! keep-alive [`Connection`] from a chosen source address, and a TCP [`Proxy`] that notes every
//! request it forwards.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): status {} body {:?}", self.status, self.text())
        })
    }
}

/// Writes `request` verbatim to `addr` and reads one response, with `timeout` for each read.
/// The request is written from another thread, so a server that answers before reading a
/// large body completely is still heard.
pub fn raw_exchange(addr: SocketAddr, request: Vec<u8>, timeout: Duration) -> std::io::Result<RawResponse> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        // The server may close the connection after answering an oversized body; that is fine.
        let _ = writer.write_all(&request);
        let _ = writer.flush();
    });
    let response = read_response(&mut BufReader::new(stream));
    let _ = sender.join();
    response
}

fn bad_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn read_response(reader: &mut impl BufRead) -> std::io::Result<RawResponse> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad_data("connection closed inside the headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad_data(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = RawResponse { status, headers, body: Vec::new() };
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad_data(format!("bad content-length {len:?}")))?;
        response.body.resize(len, 0);
        reader.read_exact(&mut response.body)?;
    } else if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        response.body = read_chunked(reader)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad_data(format!("bad chunk size {size_line:?}")))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A plain HTTP/1.1 request (`Connection: close`) with the given extra headers.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    raw_exchange(addr, bytes, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} failed: {e}"))
}

/// A keep-alive HTTP/1.1 connection from a chosen IPv4 source address (any address of
/// 127.0.0.0/8 is local on Linux), so that many requests from "another host" go out quickly.
/// When the server closes it, the next exchange opens a new one.
pub struct Connection {
    source: Ipv4Addr,
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Connection {
    /// A connection to `addr` from `source` (opened at the first exchange).
    pub fn new(source: Ipv4Addr, addr: SocketAddr) -> Self {
        Connection { source, addr, reader: None }
    }

    /// Writes `request` (which must not ask to close the connection) and reads its response;
    /// sends it again once on a new connection if the kept one was closed.
    pub fn exchange(&mut self, request: &[u8]) -> std::io::Result<RawResponse> {
        match self.try_exchange(request) {
            Ok(response) => Ok(response),
            Err(_) => {
                self.reader = None;
                self.try_exchange(request)
            }
        }
    }

    fn try_exchange(&mut self, request: &[u8]) -> std::io::Result<RawResponse> {
        if self.reader.is_none() {
            let stream = connect_from(self.source, self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.reader = Some(BufReader::new(stream));
        }
        let reader = self.reader.as_mut().ok_or_else(|| bad_data("no connection".into()))?;
        reader.get_mut().write_all(request)?;
        let response = read_response(reader)?;
        if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.reader = None;
        }
        Ok(response)
    }
}

/// A TCP connection to `addr` whose local end is bound to `source`.
pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = addr else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an IPv4 server address"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket is owned by the TcpStream at once; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

// A TCP proxy that notes every HTTP request it forwards

/// One request the [`Proxy`] forwarded.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// When its head had been read.
    pub at: Instant,
    /// Its `X-FORGE-APPID` header, if any.
    pub app_id: Option<String>,
    /// The request path.
    pub path: String,
}

/// A plain TCP proxy on 127.0.0.1 in front of a server: each client connection gets its own
/// upstream connection (none if the server is down: the client connection is closed at once, as
/// a refused connection would be), and the head of every request forwarded is noted. When the
/// upstream connection ends, the client connection is closed too.
pub struct Proxy {
    /// Its address.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// What a proxy connection thread shares with its [`Proxy`].
#[derive(Clone)]
struct ProxyShared {
    log: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = ProxyShared {
            log: std::sync::Arc::default(),
            stop: std::sync::Arc::default(),
            held: std::sync::Arc::default(),
        };
        let accept = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || proxy_connection(client, upstream, &shared));
            }
        });
        let ProxyShared { log, stop, held } = shared;
        Proxy { addr, url: format!("http://{addr}"), log, stop, held }
    }

    /// From now on, requests to `path` are read and noted but never forwarded nor answered:
    /// the client waits until its own timeout (or until it is killed).
    pub fn hold(&self, path: &str) {
        self.held.lock().expect("held paths").push(path.to_owned());
    }

    /// Forwards requests to every path again (requests already held stay held).
    pub fn release_all(&self) {
        self.held.lock().expect("held paths").clear();
    }

    /// Every request forwarded so far, in order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.log.lock().expect("proxy log").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn proxy_connection(client: TcpStream, upstream: SocketAddr, shared: &ProxyShared) {
    let Ok(mut up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    };
    let (Ok(mut up_reader), Ok(mut client_writer)) = (up.try_clone(), client.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_reader, &mut client_writer);
        let _ = client_writer.shutdown(std::net::Shutdown::Both);
    });
    let mut reader = BufReader::new(client);
    while let Some((head, request)) = read_request_head(&mut reader) {
        let length = request_content_length(&head);
        let held = shared.held.lock().expect("held paths").contains(&request.path);
        shared.log.lock().expect("proxy log").push(request);
        if held {
            // Keep both connections open, answering nothing, until the proxy is dropped.
            while !shared.stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        if up.write_all(head.as_bytes()).is_err() {
            break;
        }
        let copied = std::io::copy(&mut (&mut reader).take(length), &mut up);
        if copied.ok() != Some(length) {
            break;
        }
    }
    let _ = up.shutdown(std::net::Shutdown::Both);
}

/// Reads one request head (through the blank line); `None` at the end of the connection.
fn read_request_head(reader: &mut impl BufRead) -> Option<(String, ProxiedRequest)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let app_id = header_value(&head, "x-forge-appid");
    Some((head, ProxiedRequest { at: Instant::now(), app_id, path }))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn request_content_length(head: &str) -> u64 {
    header_value(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
}
