//! Authentication of agent calls: the signing headers, the body (read by the overload guard), the time
//! window, the signature (legacy or version 2) checked before anything is parsed, replay
//! protection, and the failure limits: a request over one is refused before its signature is
//! checked, unless it comes from its app id's last good source, whose failures are only slowed.
//! A registration that does not prove the right to its app id gets one answer, whatever failed.

use std::net::IpAddr;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use chrono::Utc;
use tracing::warn;

use super::AppState;
use super::refusal_log::Reason;
use crate::protocol::Signer;
use crate::protocol::sign::{Canonical, SIGN_VERSION_2, SignError, check_nonce, check_time, parse_time};
use crate::protocol::wire::{
    self, ENROLL_PENDING, HEADER_APPID, HEADER_ENROLL, HEADER_ENROLL_TOKEN, HEADER_NONCE, HEADER_SIGN,
    HEADER_SIGN_VERSION, HEADER_TIME, RegisterRequest,
};
use crate::server::enroll::{Credential, not_proven};
use crate::server::error::ServiceError;
use crate::server::failures::Standing;
use crate::server::guard::ReplayError;
use crate::server::store::AgentRecord;

/// Why an agent call was refused.
#[derive(Debug)]
pub struct Refusal {
    /// The specific message for the envelope.
    pub message: String,
    /// How the refusal is answered.
    pub kind: RefusalKind,
    /// Why, as the refusal log groups refusals.
    pub reason: Reason,
    /// Answered only after [`TARPIT`](crate::server::failures::TARPIT): a failure over a limit
    /// from its app id's last good source.
    pub tarpit: bool,
    /// Seconds after which a refusal for a passing reason may be retried, if known.
    pub retry_after: Option<u64>,
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// For good: code 1.
    Final,
    /// A replay: code 1, but getTask answers "no task" (code 2) so that an original client,
    /// which exits on code 1, goes on.
    Replay,
    /// The server's fault or a passing limit: retry later (HTTP 503, so clients retry; getTask
    /// answers "no task").
    Transient,
}

impl Refusal {
    /// A refusal for good, for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            kind: RefusalKind::Final,
            reason,
            tarpit: false,
            retry_after: None,
        }
    }

    /// A refusal to retry later.
    pub fn transient(message: impl Into<String>) -> Self {
        Refusal { kind: RefusalKind::Transient, ..Refusal::new("deferred", message) }
    }
}

impl<T: Into<String>> From<T> for Refusal {
    fn from(message: T) -> Self {
        Refusal::new("bad request", message)
    }
}

/// The signing headers of a request.
pub struct Signed {
    /// `X-FORGE-APPID`.
    pub app_id: String,
    time: String,
    sign: String,
    /// The nonce of a version-2 signature; `None` for the legacy scheme.
    nonce: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn signed_headers(headers: &HeaderMap) -> Result<Signed, Refusal> {
    let (Some(app_id), Some(time), Some(sign)) =
        (header(headers, HEADER_APPID), header(headers, HEADER_TIME), header(headers, HEADER_SIGN))
    else {
        return Err("appid, sign, and time are required".into());
    };
    let nonce = match header(headers, HEADER_SIGN_VERSION).as_deref() {
        None => None,
        Some(SIGN_VERSION_2) => {
            let nonce =
                header(headers, HEADER_NONCE).ok_or(format!("{HEADER_NONCE} is required with version 2"))?;
            check_nonce(&nonce).map_err(|e| e.to_string())?;
            Some(nonce)
        }
        Some(other) => {
            return Err(format!("signature version {:?} is not supported; use 2", wire::shown(other)).into());
        }
    };
    Ok(Signed { app_id, time, sign, nonce })
}

/// The body, already read in full by the overload guard (under its size limit and its deadline,
/// before the request took a place); the limit is checked again so that this never reads more.
async fn read_body(body: Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, wire::MAX_AGENT_BODY).await.map_err(|_| {
        format!("request body is larger than {} bytes or was cut off", wire::MAX_AGENT_BODY).into()
    })
}

/// Reads the body and checks the time, the signature against `key`, and that the request is
/// not a replay. The record of this use is written but not yet synced: the service that answers
/// makes it durable (e.g. [`Polling::next_task`](crate::server::polling::Polling::next_task))
/// before an answer that a replay could profit from, or a crash right after the answer would
/// let the same request in again.
pub async fn verified(
    app: &AppState,
    source: IpAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
    key: &Signer,
) -> Result<(Signed, Bytes), Refusal> {
    let signed = signed_headers(headers)?;
    let standing = standing(app, source, &signed.app_id)?;
    let body = read_body(body).await?;
    let check = Check { app, source, standing };
    check
        .signed(path, &signed, &body, key, |e| format!("{e} for app id {:?}", wire::shown(&signed.app_id)))?;
    app.guard().record_success(source, &signed.app_id, Utc::now().timestamp());
    Ok((signed, body))
}

/// How a request for `app_id` from `source` is handled; a refusal, before anything is read or
/// verified, if it is over a failure limit and not from the app id's last good source.
fn standing(app: &AppState, source: IpAddr, app_id: &str) -> Result<Standing, Refusal> {
    app.guard().standing(source, app_id, Utc::now().timestamp()).map_err(|e| Refusal {
        retry_after: u64::try_from(e.retry_in).ok(),
        ..Refusal { reason: "too many failures", ..Refusal::transient(e.to_string()) }
    })
}

/// A failed attempt (a bad signature, a wrong secret) from `source` for `app_id`: counted, and
/// answered `message`, after the tarpit delay if `standing` says so.
pub fn failed_attempt(
    app: &AppState,
    source: IpAddr,
    app_id: &str,
    standing: Standing,
    message: String,
) -> Refusal {
    app.guard().record_failure(source, app_id, Utc::now().timestamp());
    app.metrics().signature_failed();
    Refusal { tarpit: standing == Standing::Tarpit, ..Refusal::new("failed attempt", message) }
}

/// What checking a signature needs to know besides the request: where it came from and how it
/// stands against the failure limits.
struct Check<'a> {
    app: &'a AppState,
    source: IpAddr,
    standing: Standing,
}

impl Check<'_> {
    /// Checks the time, the signature of `body` against `key` (a mismatch, counted as a failed
    /// attempt, is answered as `mismatch` says), and that it is not a replay.
    fn signed(
        &self,
        path: &str,
        signed: &Signed,
        body: &[u8],
        key: &Signer,
        mismatch: impl FnOnce(&SignError) -> String,
    ) -> Result<(), Refusal> {
        check_time(&signed.time, Utc::now()).map_err(|e| e.to_string())?;
        let checked = match &signed.nonce {
            None => key.verify(&signed.app_id, body, &signed.time, &signed.sign),
            Some(nonce) => {
                let canonical = Canonical {
                    method: "POST",
                    path,
                    app_id: &signed.app_id,
                    time: &signed.time,
                    nonce,
                    body,
                };
                key.verify_v2(&canonical, &signed.sign)
            }
        };
        if let Err(e) = checked {
            return Err(failed_attempt(self.app, self.source, &signed.app_id, self.standing, mismatch(&e)));
        }
        admit_signed_once(self.app, signed)
    }
}

/// A registration that proved itself: the request, how, and how its source stood against the
/// failure limits (for the answer to a secret the enrollment then refuses).
pub struct Registration {
    /// The request, parsed once its signature checked out.
    pub request: RegisterRequest,
    /// How it proved it may enroll.
    pub credential: Credential,
    /// How its source stood against the failure limits.
    pub standing: Standing,
}

/// Authenticates a registration: by the enrollment key, an enrollment token, or (asking to
/// wait for acceptance) the agent's own secret from the body. A bad signature is answered
/// [`not_proven`], as the enrollment answers a wrong secret.
pub async fn registration(
    app: &AppState,
    source: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Registration, Refusal> {
    let signed = signed_headers(headers)?;
    let standing = standing(app, source, &signed.app_id)?;
    let body = read_body(body).await?;
    let parse = || -> Result<RegisterRequest, Refusal> {
        serde_json::from_slice(&body).map_err(|e| format!("malformed JSON: {e}").into())
    };
    let credential = credential(headers);
    let key = match &credential {
        Credential::EnrollKey => app.guard().enroll_key().clone(),
        Credential::Token(id) => token_key(app, id)?,
        // Signed with the secret it asks to enroll: the body is parsed (under its size limit)
        // only to find the key; nothing is stored before the signature checks out.
        Credential::None => Signer::new(&parse()?.secret),
    };
    let check = Check { app, source, standing };
    check.signed(wire::REGISTER_PATH, &signed, &body, &key, |_| not_proven(&signed.app_id))?;
    let request = parse()?;
    if request.app_id != signed.app_id {
        return Err(format!("app_id {:?} differs from {HEADER_APPID}", wire::shown(&request.app_id)).into());
    }
    Ok(Registration { request, credential, standing })
}

fn credential(headers: &HeaderMap) -> Credential {
    if let Some(id) = header(headers, HEADER_ENROLL_TOKEN) {
        Credential::Token(id)
    } else if header(headers, HEADER_ENROLL).as_deref() == Some(ENROLL_PENDING) {
        Credential::None
    } else {
        Credential::EnrollKey
    }
}

/// The key of a usable enrollment token.
fn token_key(app: &AppState, id: &str) -> Result<Signer, Refusal> {
    match app.guard().token_key(id) {
        Ok(Ok(key)) => Ok(key),
        Ok(Err(e)) => Err(e.to_string().into()),
        Err(e) => Err(Refusal::transient(format!("server error, retry later: {e}"))),
    }
}

fn admit_signed_once(app: &AppState, signed: &Signed) -> Result<(), Refusal> {
    // parse_time succeeded inside check_time, so this is the same value.
    let sent = parse_time(&signed.time).unwrap_or(0);
    // Hex reads in either case, so the legacy identity is the signature in one case: a replay
    // with the letters' case changed is the same request.
    let legacy_sign = signed.sign.to_ascii_lowercase();
    let identity: [&[u8]; 2] = match &signed.nonce {
        Some(nonce) => [signed.app_id.as_bytes(), nonce.as_bytes()],
        None => [signed.app_id.as_bytes(), legacy_sign.as_bytes()],
    };
    app.guard().admit_once(&identity, sent).map_err(|e| match e {
        ReplayError::Seen => {
            app.metrics().replay_refused();
            Refusal { kind: RefusalKind::Replay, ..Refusal::new("replay", e.to_string()) }
        }
        ReplayError::Store(_) => Refusal::transient(format!("server error, retry later: {e}")),
    })
}

/// Authenticates a call signed with an agent's own secret and notes the agent is alive.
pub async fn agent_call(
    app: &AppState,
    source: IpAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(AgentRecord, Bytes), Refusal> {
    let app_id = header(headers, HEADER_APPID).ok_or("appid, sign, and time are required")?;
    wire::check_app_id(&app_id)?;
    let agent = app.guard().known_agent(&app_id).map_err(|e| match e {
        ServiceError::Store(e) => Refusal::transient(format!("server error, retry later: {e}")),
        other => Refusal::new("unknown app id", other.to_string()),
    })?;
    let (_, body) = verified(app, source, path, headers, body, &Signer::new(&agent.secret)).await?;
    if let Err(e) = app.guard().touch(&agent) {
        warn!(agent = %agent.app_id, error = %e, "cannot record last seen");
    }
    Ok((agent, body))
}
