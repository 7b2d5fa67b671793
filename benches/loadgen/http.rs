//! One keep-alive HTTP/1 connection to the server (hyper's low-level client, so each simulated
//! agent owns exactly one socket), and the operator API calls the scenarios make on it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use orange::protocol::admin::{EnqueueReply, EnqueueRequest, TASKS_PATH, TaskView};
use tokio::net::TcpStream;

/// Deadline of one exchange; longer than any server poll window, like the real clients'.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A status and a body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

/// One HTTP/1 connection, reused for every call (keep-alive).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (TCP_NODELAY, as the HTTP clients of the project set it).
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.context("HTTP/1 handshake failed")?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server closes it; either
            // way the next call on this Conn reports it.
            let _ = connection.await;
        });
        Ok(Conn { sender, host: addr.to_string() })
    }

    /// Sends one request and reads the whole answer, within [`CALL_TIMEOUT`].
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .map_err(|_| anyhow!("{path}: no answer within {CALL_TIMEOUT:?}"))?
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer> {
        self.sender.ready().await.with_context(|| format!("{path}: connection closed"))?;
        let mut request = Request::builder().method(method).uri(path).header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).with_context(|| format!("{path}: bad request"))?;
        let response = self.sender.send_request(request).await.with_context(|| format!("{path}: send"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.with_context(|| format!("{path}: body"))?;
        Ok(Answer { status, body: body.to_bytes() })
    }
}

/// The operator's side: bearer-token calls to `/api/v1` on one connection.
pub struct Admin {
    conn: Conn,
    bearer: String,
}

impl Admin {
    /// Connects as the operator holding `token`.
    pub async fn open(addr: SocketAddr, token: &str) -> Result<Admin> {
        Ok(Admin { conn: Conn::open(addr).await?, bearer: format!("Bearer {token}") })
    }

    /// `GET path`, expecting 2xx; the body.
    pub async fn get(&mut self, path: &str) -> Result<Bytes> {
        let headers = [("authorization", self.bearer.as_str())];
        let answer = self.conn.call(Method::GET, path, &headers, Bytes::new()).await?;
        expect_2xx(path, answer)
    }

    /// `POST path` with a JSON body, expecting 2xx; the body.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<Bytes> {
        let headers = [("authorization", self.bearer.as_str()), ("content-type", "application/json")];
        let answer = self.conn.call(Method::POST, path, &headers, Bytes::from(body)).await?;
        expect_2xx(path, answer)
    }

    /// Enqueues one task of `task_type` for each of `app_ids`; answers once it is durable.
    pub async fn enqueue(&mut self, app_ids: &[String], task_type: &str) -> Result<Vec<TaskView>> {
        let request = EnqueueRequest {
            app_ids: app_ids.to_vec(),
            all: false,
            task_type: task_type.to_owned(),
            payload: String::new(),
            timeout_secs: None,
            ttl_secs: None,
            require_online: false,
            ..EnqueueRequest::default()
        };
        let body = serde_json::to_vec(&request).context("cannot encode the enqueue")?;
        let reply: EnqueueReply = serde_json::from_slice(&self.post(TASKS_PATH, body).await?)
            .context("enqueue answer is not the expected JSON")?;
        Ok(reply.tasks)
    }

    /// One task's view.
    pub async fn task(&mut self, id: &str) -> Result<TaskView> {
        let body = self.get(&format!("{TASKS_PATH}/{id}")).await?;
        serde_json::from_slice(&body).context("task answer is not the expected JSON")
    }
}

fn expect_2xx(path: &str, answer: Answer) -> Result<Bytes> {
    if !(200..300).contains(&answer.status) {
        let text: String = String::from_utf8_lossy(&answer.body).chars().take(200).collect();
        bail!("{path}: HTTP {}: {text}", answer.status);
    }
    Ok(answer.body)
}
