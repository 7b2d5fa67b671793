//! The blocking HTTP client shared by the agent (signed calls on the original protocol) and the
//! operator CLI (bearer-token calls on the admin API). Every call has a deadline.

pub mod proxy;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::protocol::admin::ApiError;
use crate::protocol::busy::{HEADER_RETRY_AFTER, parse_retry_after};
use crate::protocol::facts::{FACTS_PATH, HostFacts};
use crate::protocol::features::{HEADER_FEATURES, header_value};
use crate::protocol::files::{ChunkReply, ChunkRequest, FILE_CHUNK_PATH, FILE_UPLOAD_PATH, UploadChunk};
use crate::protocol::sign::{Canonical, SIGN_VERSION_2, new_nonce, time_header};
use crate::protocol::wire::{
    self, CODE_NO_TASK, CODE_OK, OutputAck, OutputChunk, PollControl, RegisterReply, ReportBatch,
    ReportResult, ReportResults,
};
use crate::protocol::{Envelope, RegisterRequest, ReportRequest, Signer, WireTask};
use proxy::ProxyUrl;

/// How an agent proves it may enroll.
#[derive(Clone)]
pub enum Enrollment {
    /// The server's enrollment key.
    Key(String),
    /// An enrollment token an operator made.
    Token(EnrollToken),
    /// Nothing: the agent waits `pending` until an operator accepts it.
    Pending,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Enrollment::Key(_) => f.write_str("Enrollment::Key(***)"),
            Enrollment::Token(token) => write!(f, "Enrollment::Token({}.***)", token.id),
            Enrollment::Pending => f.write_str("Enrollment::Pending"),
        }
    }
}

/// An enrollment token, `<id>.<secret>` as `orange token create` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// Public id, sent in a header.
    pub id: String,
    /// Secret the register call is signed with.
    pub secret: String,
}

impl std::str::FromStr for EnrollToken {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let plain =
            |part: &str| !part.is_empty() && part.len() <= 64 && part.bytes().all(|b| b.is_ascii_hexdigit());
        match text.trim().split_once('.') {
            Some((id, secret)) if plain(id) && plain(secret) => {
                Ok(EnrollToken { id: id.to_owned(), secret: secret.to_owned() })
            }
            _ => Err(
                "an enrollment token looks like <hex id>.<hex secret>, as `orange token create` prints it"
                    .into(),
            ),
        }
    }
}

/// What one long poll brought.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one answer at a time, moved straight to its use
pub enum PollAnswer {
    /// A task to run.
    Task(WireTask),
    /// No task; possibly control messages (cancels) for running tasks.
    Idle(PollControl),
}

/// Largest response body either client reads.
const MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;
/// Deadline of operator API calls that do not park on the server.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed, split the way callers branch on it.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// The URL called.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The answer was not what the protocol promises (wrong status, not JSON, ...).
    #[error("bad answer from {url}: {reason}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An agent endpoint answered code 1.
    #[error("server refused: {0}")]
    Refused(String),
    /// The server is overloaded (HTTP 429) and said when to come back, if it did.
    #[error("server busy at {url} (HTTP {status}){}", .retry_after.map(|d| format!("; retry after {} s", d.as_secs())).unwrap_or_default())]
    Busy {
        /// The URL called.
        url: String,
        /// HTTP status (429, or a 503 that carried Retry-After).
        status: u16,
        /// Its `Retry-After`, capped at [`crate::protocol::busy::MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// The admin API answered an error status.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's error text.
        message: String,
    },
}

impl ClientError {
    /// True when retrying later may help (server down, garbage on the wire, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::BadAnswer { .. } | ClientError::Busy { .. } => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            ClientError::Refused(_) => false,
        }
    }

    /// How long the server asked to wait before the next call, when it was busy.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How HTTPS servers are verified: the system's roots by default, or a private CA's
/// certificates, or (explicitly, with a warning) not at all.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    ca_certs: Option<Vec<ureq::tls::Certificate<'static>>>,
    insecure: bool,
}

impl TlsSettings {
    /// Settings trusting the PEM certificates in `ca_file` (else the system roots), or nothing
    /// at all when `insecure`.
    pub fn new(ca_file: Option<&std::path::Path>, insecure: bool) -> Result<Self, String> {
        let ca_certs = match ca_file {
            None => None,
            Some(path) => Some(read_ca_file(path)?),
        };
        if insecure {
            tracing::warn!(
                "TLS verification is off (--insecure): anyone on the path can read and change this traffic"
            );
        }
        Ok(TlsSettings { ca_certs, insecure })
    }

    fn config(&self) -> ureq::tls::TlsConfig {
        let roots = match &self.ca_certs {
            Some(certs) => ureq::tls::RootCerts::new_with_certs(certs),
            None => ureq::tls::RootCerts::PlatformVerifier,
        };
        ureq::tls::TlsConfig::builder().root_certs(roots).disable_verification(self.insecure).build()
    }
}

fn read_ca_file(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("CA file {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A ureq agent with `timeout` per call, verifying HTTPS as `tls` says, connecting through
/// `proxy` (CONNECT, for http and https servers alike) or directly: never through a proxy of
/// ureq's own choosing, since [`crate::client::proxy`] decides.
fn http_agent(timeout: Duration, tls: &TlsSettings, proxy: Option<&ProxyUrl>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(proxy.map(ProxyUrl::to_ureq))
        .timeout_global(Some(timeout))
        .timeout_connect(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .tls_config(tls.config())
        .build()
        .into()
}

/// Sends one request and returns the status and body, with transport errors mapped; an answer
/// saying the server is busy (429 or 5xx with a `Retry-After`) is [`ClientError::Busy`]; a 429
/// without one (too many wrong admin tokens) keeps its message as an API error.
fn exchange(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let transport =
        |e: ureq::Error| ClientError::Transport { url: url.to_owned(), reason: transport_reason(&e) };
    let mut response = result.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(HEADER_RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    if retry_after.is_some() && (status == 429 || status >= 500) {
        return Err(ClientError::Busy { url: url.to_owned(), status, retry_after });
    }
    let body = response.body_mut().with_config().limit(MAX_RESPONSE_BODY).read_to_vec().map_err(transport)?;
    Ok((status, body))
}

/// What a transport error says, with a server certificate that does not verify named as such.
fn transport_reason(e: &ureq::Error) -> String {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        format!(
            "certificate not trusted: {text} (give the CA that signed the server's certificate with \
             --ca-file or ORANGE_CA_FILE)"
        )
    } else {
        text
    }
}

/// At most [`SNIPPET_CHARS`] characters of an error answer's body, as text, for a message.
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Characters of an error answer's body quoted in a message.
const SNIPPET_CHARS: usize = 200;

/// An agent's signed connection to the server's agent endpoints.
pub struct AgentClient {
    http: ureq::Agent,
    base: String,
    app_id: String,
    signer: Signer,
}

impl AgentClient {
    /// A client for `base` (e.g. `http://host:8890`) signing as `app_id` with `secret`.
    pub fn new(base: &str, app_id: &str, secret: &str) -> Self {
        AgentClient::with_tls(base, app_id, secret, &TlsSettings::default())
    }

    /// [`Self::new`] verifying HTTPS servers as `tls` says.
    pub fn with_tls(base: &str, app_id: &str, secret: &str, tls: &TlsSettings) -> Self {
        AgentClient::through(base, app_id, secret, tls, None)
    }

    /// [`Self::with_tls`] reaching the server through `proxy` (`None`: directly).
    pub fn through(
        base: &str,
        app_id: &str,
        secret: &str,
        tls: &TlsSettings,
        proxy: Option<&ProxyUrl>,
    ) -> Self {
        AgentClient {
            http: http_agent(Duration::from_secs(wire::CLIENT_TIMEOUT_SECS), tls, proxy),
            base: base.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
            signer: Signer::new(secret),
        }
    }

    /// Signs and posts `body` to `path`, returning the decoded envelope.
    fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
        signer: &Signer,
    ) -> Result<Envelope<T>, ClientError> {
        self.call_with(path, body, signer, &[])
    }

    /// [`Self::call`] with extra headers (capacity of getTask, enrollment of register).
    fn call_with<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
        signer: &Signer,
        extra: &[(&str, String)],
    ) -> Result<Envelope<T>, ClientError> {
        self.call_within(path, body, signer, extra, None)
    }

    /// [`Self::call_with`], within `timeout` instead of the client's own when one is given.
    fn call_within<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
        signer: &Signer,
        extra: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<Envelope<T>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let time = time_header(chrono::Utc::now());
        let nonce = new_nonce();
        let canonical =
            Canonical { method: "POST", path, app_id: &self.app_id, time: &time, nonce: &nonce, body };
        let mut request = self.http.post(&url);
        if let Some(timeout) = timeout {
            request = request.config().timeout_global(Some(timeout)).build();
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let request = request
            .header(wire::HEADER_APPID, &self.app_id)
            .header(wire::HEADER_TIME, &time)
            .header(wire::HEADER_SIGN_VERSION, SIGN_VERSION_2)
            .header(wire::HEADER_NONCE, &nonce)
            .header(wire::HEADER_SIGN, signer.sign_v2(&canonical))
            .content_type("application/json")
            .send(body);
        let (status, bytes) = exchange(&url, request)?;
        let bad = |reason: String| ClientError::BadAnswer { url: url.clone(), reason };
        if status != 200 {
            return Err(match body_snippet(&bytes) {
                body if body.is_empty() => bad(format!("HTTP {status}")),
                body => bad(format!("HTTP {status}: {body}")),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an envelope: {e}")))
    }

    /// Registers this agent with its enrollment credential: the server's key, a token, or none
    /// (signed with its own secret; it then waits for an operator to accept it).
    pub fn register(
        &self,
        request: &RegisterRequest,
        enrollment: &Enrollment,
    ) -> Result<RegisterReply, ClientError> {
        // Serializing a struct of strings and maps cannot fail.
        let body = serde_json::to_vec(request).expect("register body serializes");
        let (key, extra) = match enrollment {
            Enrollment::Key(key) => (Signer::new(key), vec![]),
            Enrollment::Token(token) => {
                (Signer::new(&token.secret), vec![(wire::HEADER_ENROLL_TOKEN, token.id.clone())])
            }
            Enrollment::Pending => {
                (Signer::new(&request.secret), vec![(wire::HEADER_ENROLL, wire::ENROLL_PENDING.to_owned())])
            }
        };
        let envelope = self.call_with::<RegisterReply>(wire::REGISTER_PATH, &body, &key, &extra)?;
        match (envelope.code, envelope.data) {
            (CODE_OK, Some(reply)) => Ok(reply),
            _ => Err(ClientError::Refused(envelope.message)),
        }
    }

    /// Sends a heartbeat.
    pub fn ping(&self) -> Result<(), ClientError> {
        let envelope = self.call::<serde_json::Value>(wire::PING_PATH, wire::PING_BODY, &self.signer)?;
        ok_or_refused(envelope).map(|_| ())
    }

    /// Says goodbye: the agent is stopping cleanly, so the server shows it offline at once. One
    /// try within `timeout`, so that a stopping agent never waits long on an unreachable server.
    pub fn goodbye(&self, timeout: Duration) -> Result<(), ClientError> {
        let envelope =
            self.call_within::<serde_json::Value>(wire::GOODBYE_PATH, b"", &self.signer, &[], Some(timeout))?;
        ok_or_refused(envelope).map(|_| ())
    }

    /// Long-polls for the next task; `None` when the server's window ended empty.
    pub fn get_task(&self) -> Result<Option<WireTask>, ClientError> {
        let envelope = self.call::<WireTask>(wire::GET_TASK_PATH, b"", &self.signer)?;
        match envelope.code {
            CODE_NO_TASK => Ok(None),
            CODE_OK => envelope.data.map(Some).ok_or_else(|| ClientError::BadAnswer {
                url: format!("{}{}", self.base, wire::GET_TASK_PATH),
                reason: "task fetched without a task".into(),
            }),
            _ => Err(ClientError::Refused(envelope.message)),
        }
    }

    /// Long-polls as an orange agent that can start `capacity` tasks now (0: only control
    /// messages) and announces no task feature (as orange agents before features did). Answers
    /// a task, or the control messages of an empty window.
    pub fn poll(&self, capacity: usize) -> Result<PollAnswer, ClientError> {
        self.poll_announcing(capacity, &[])
    }

    /// [`Self::poll`] announcing the task `features` the agent understands.
    pub fn poll_announcing(&self, capacity: usize, features: &[String]) -> Result<PollAnswer, ClientError> {
        let mut headers = vec![(wire::HEADER_CAPACITY, capacity.to_string())];
        if !features.is_empty() {
            headers.push((HEADER_FEATURES, header_value(features)));
        }
        let envelope =
            self.call_with::<serde_json::Value>(wire::GET_TASK_PATH, b"", &self.signer, &headers)?;
        let bad = |reason: String| ClientError::BadAnswer {
            url: format!("{}{}", self.base, wire::GET_TASK_PATH),
            reason,
        };
        match (envelope.code, envelope.data) {
            (CODE_OK, Some(data)) => {
                serde_json::from_value(data).map(PollAnswer::Task).map_err(|e| bad(e.to_string()))
            }
            (CODE_OK, None) => Err(bad("task fetched without a task".into())),
            (CODE_NO_TASK, None) => Ok(PollAnswer::Idle(PollControl::default())),
            (CODE_NO_TASK, Some(data)) => {
                Ok(PollAnswer::Idle(serde_json::from_value(data).unwrap_or_default()))
            }
            _ => Err(ClientError::Refused(envelope.message)),
        }
    }

    /// Streams one output chunk of a running task.
    pub fn post_output(&self, chunk: &OutputChunk) -> Result<OutputAck, ClientError> {
        // Serializing a struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(chunk).expect("output chunk serializes");
        let envelope = self.call::<OutputAck>(wire::OUTPUT_PATH, &body, &self.signer)?;
        ok_or_refused(envelope).map(Option::unwrap_or_default)
    }

    /// Fetches the bytes from `offset` of the file a `file.put` task writes.
    pub fn file_chunk(&self, request: &ChunkRequest) -> Result<ChunkReply, ClientError> {
        // Serializing a struct of a string and a number cannot fail.
        let body = serde_json::to_vec(request).expect("chunk request serializes");
        let envelope = self.call::<ChunkReply>(FILE_CHUNK_PATH, &body, &self.signer)?;
        ok_or_refused(envelope)?
            .ok_or_else(|| ClientError::Refused("file chunk answer carries no data".into()))
    }

    /// Sends bytes a `file.get` task read; answers whether the task was cancelled.
    pub fn file_upload(&self, chunk: &UploadChunk) -> Result<OutputAck, ClientError> {
        // Serializing a struct of strings and a number cannot fail.
        let body = serde_json::to_vec(chunk).expect("upload chunk serializes");
        let envelope = self.call::<OutputAck>(FILE_UPLOAD_PATH, &body, &self.signer)?;
        ok_or_refused(envelope).map(Option::unwrap_or_default)
    }

    /// Sends the host's facts again (they changed since `register`).
    pub fn send_facts(&self, facts: &HostFacts) -> Result<(), ClientError> {
        // Serializing a struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(facts).expect("facts serialize");
        let envelope = self.call::<serde_json::Value>(FACTS_PATH, &body, &self.signer)?;
        ok_or_refused(envelope).map(|_| ())
    }

    /// Reports a task's state or result.
    pub fn report(&self, report: &ReportRequest) -> Result<(), ClientError> {
        // Serializing a struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(report).expect("report body serializes");
        let envelope = self.call::<serde_json::Value>(wire::REPORT_TASK_PATH, &body, &self.signer)?;
        ok_or_refused(envelope).map(|_| ())
    }

    /// Reports several tasks in one call (a server that took the batch feature from this agent);
    /// each report's result, in order.
    pub fn report_many(&self, reports: &[ReportRequest]) -> Result<Vec<ReportResult>, ClientError> {
        let batch = ReportBatch { reports: reports.to_vec() };
        // Serializing a struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(&batch).expect("report batch serializes");
        let envelope = self.call::<ReportResults>(wire::REPORT_TASKS_PATH, &body, &self.signer)?;
        let results = ok_or_refused(envelope)?.unwrap_or_default().results;
        if results.len() != reports.len() {
            return Err(ClientError::BadAnswer {
                url: format!("{}{}", self.base, wire::REPORT_TASKS_PATH),
                reason: format!("{} results for {} reports", results.len(), reports.len()),
            });
        }
        Ok(results)
    }
}

fn ok_or_refused<T>(envelope: Envelope<T>) -> Result<Option<T>, ClientError> {
    if envelope.code == CODE_OK { Ok(envelope.data) } else { Err(ClientError::Refused(envelope.message)) }
}

/// An operator's connection to the admin API.
pub struct AdminClient {
    http: Result<ureq::Agent, String>,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client for `base` using the bearer `token`; calls time out after `timeout`. HTTPS
    /// servers are verified against the system's roots.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Self {
        Self::with_tls(base, token, timeout, TlsSettings::new(None, false))
    }

    /// A client as [`AdminClient::new`] whose HTTPS servers are verified as `tls` says; TLS
    /// settings that could not be made (a CA file that cannot be read) fail every call with
    /// their reason.
    pub fn with_tls(base: &str, token: &str, timeout: Duration, tls: Result<TlsSettings, String>) -> Self {
        AdminClient::through(base, token, timeout, tls.map(|tls| (tls, None)))
    }

    /// [`Self::with_tls`] reaching the server through the proxy given with the TLS settings
    /// (`None`: directly); settings that could not be made fail every call with their reason.
    pub fn through(
        base: &str,
        token: &str,
        timeout: Duration,
        route: Result<(TlsSettings, Option<ProxyUrl>), String>,
    ) -> Self {
        AdminClient {
            http: route.map(|(tls, proxy)| http_agent(timeout, &tls, proxy.as_ref())),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// The HTTP agent, or the TLS set-up error for `url`.
    fn http(&self, url: &str) -> Result<&ureq::Agent, ClientError> {
        self.http
            .as_ref()
            .map_err(|reason| ClientError::Transport { url: url.to_owned(), reason: reason.clone() })
    }

    /// `GET path` (with its query) decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        decode_api(&url, exchange(&url, self.send_get(&url)?)?)
    }

    /// `POST path` with a JSON body, decoded as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        // Serializing plain request structs cannot fail.
        let bytes = serde_json::to_vec(body).expect("request body serializes");
        let request = self
            .http(&url)?
            .post(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .content_type("application/json")
            .send(&bytes[..]);
        decode_api(&url, exchange(&url, request)?)
    }

    /// `POST path` streaming `file` as the raw body, answer decoded as `T`.
    pub fn post_file<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &mut std::fs::File,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let request = self
            .http(&url)?
            .post(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .content_type("application/octet-stream")
            .send(ureq::SendBody::from_reader(file));
        decode_api(&url, exchange(&url, request)?)
    }

    /// `GET path` (with its query): the raw bytes of a successful answer.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let (status, bytes) = exchange(&url, self.send_get(&url)?)?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        decode_api::<serde_json::Value>(&url, (status, bytes)).map(|_| Vec::new())
    }

    /// `GET path`: the body of a successful answer copied into `out` as it arrives, however
    /// large (the caller bounds where it goes); returns its size. An error answer is read under
    /// the usual limit and returned as such.
    pub fn get_into(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64, ClientError> {
        let url = format!("{}{}", self.base, path);
        let failed = |reason: String| ClientError::Transport { url: url.clone(), reason };
        let mut response = self.send_get(&url)?.map_err(|e| failed(transport_reason(&e)))?;
        if !response.status().is_success() {
            let answer = exchange(&url, Ok(response))?;
            return decode_api::<serde_json::Value>(&url, answer).map(|_| 0);
        }
        let mut body = response.body_mut().with_config().reader();
        let mut sink = Sink { out, written: 0, failed: false };
        std::io::copy(&mut body, &mut sink).map_err(|e| match sink.failed {
            true => failed(format!("cannot write what arrived: {e}")),
            false => failed(format!("the answer broke off after {} bytes: {e}", sink.written)),
        })
    }

    /// Sends `GET url` with the bearer token.
    fn send_get(
        &self,
        url: &str,
    ) -> Result<Result<ureq::http::Response<ureq::Body>, ureq::Error>, ClientError> {
        Ok(self.http(url)?.get(url).header("Authorization", format!("Bearer {}", self.token)).call())
    }
}

/// The writer [`AdminClient::get_into`] copies an answer into: it counts what it took and
/// remembers a failure, so that an answer that broke off and a write that failed are told apart.
struct Sink<'a> {
    out: &'a mut dyn std::io::Write,
    written: u64,
    failed: bool,
}

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.out.write_all(buf).inspect_err(|_| self.failed = true)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().inspect_err(|_| self.failed = true)
    }
}

fn decode_api<T: DeserializeOwned>(url: &str, (status, bytes): (u16, Vec<u8>)) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url: url.to_owned(),
            reason: format!("not the expected JSON: {e}"),
        });
    }
    let message = serde_json::from_slice::<ApiError>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
    Err(ClientError::Api { status, message })
}
