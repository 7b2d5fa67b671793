//! A scripted stand-in for the admin API in unit tests: it answers connections one at a time with
//! the replies it was given, in order, and records every request it read.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::operator::{AdminToken, Api, OperatorConfig};

/// One scripted answer: an HTTP status line (`200 OK`) and a JSON body.
pub(crate) struct Reply {
    status: &'static str,
    body: String,
}

/// A request as the fake read it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The body, as text.
    pub body: String,
}

/// The fake server: its URL and what it has seen.
pub(crate) struct FakeApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    /// Serves `replies` in order, one connection each, on a free port; then stops listening.
    pub fn serve(replies: Vec<Reply>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else { return };
                answer(stream, &reply, &record);
            }
        });
        FakeApi { url, seen }
    }

    /// A `200 OK` carrying `value` as JSON.
    pub fn ok<T: Serialize>(value: &T) -> Reply {
        Reply { status: "200 OK", body: serde_json::to_string(value).expect("test value serializes") }
    }

    /// An error status with the admin API's `{"error": message}` body.
    pub fn error(status: &'static str, message: &str) -> Reply {
        Reply { status, body: serde_json::json!({ "error": message }).to_string() }
    }

    /// An admin client for this server.
    pub fn client(&self) -> Api {
        let token: AdminToken = "t".parse().expect("token");
        OperatorConfig { server: self.url.clone(), token, route: Ok(Default::default()), json: false }
            .api(Duration::from_secs(5))
    }

    /// The requests read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Waits up to 5 s until `count` requests were read, and returns them.
    pub fn wait_for(&self, count: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.seen().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.seen()
    }
}

/// Reads one request, records it, writes `reply` and closes the connection.
fn answer(stream: TcpStream, reply: &Reply, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else { return };
    seen.lock().expect("seen lock").push(request);
    let response = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let _ = reader.get_mut().write_all(response.as_bytes());
}

/// Parses the request line, the headers (for the body's length) and the body.
fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen { method, target, body: String::from_utf8_lossy(&body).into_owned() })
}
