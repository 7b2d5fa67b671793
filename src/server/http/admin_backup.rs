//! `GET /api/v1/backup`: a backup of the running server (format in
//! `server/store/backup_format.rs`), streamed as it is written, while agents and operators go
//! on. The backup is written on a thread of its own into a small channel, so a slow reader holds
//! back the copy, not the server; a reader that goes away ends it. A backup that fails half way
//! breaks the response off, so the client never takes a partial body for a whole one (the
//! backup's trailer is missing too).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::AppState;
use super::admin_common::{ApiFailure, ApiResult};
use super::permissions::AdminRoutes;
use crate::protocol::admin::BACKUP_PATH;
use crate::server::backups::Running;
use crate::server::operators::Caller;

/// Bytes sent to the client at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks written ahead of the client.
const CHUNKS_AHEAD: usize = 4;

/// The backup route.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new().get(BACKUP_PATH, backup)
}

/// Starts a backup and answers its bytes as they come.
async fn backup(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let running = app.backups().start().ok_or_else(|| {
        ApiFailure(
            StatusCode::CONFLICT,
            "a backup is already being written; try again once it is done".into(),
        )
    })?;
    app.audit().record(&caller.actor(), "server.backup", "server", "")?;
    let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
    std::thread::Builder::new()
        .name("orange-backup-send".into())
        .spawn(move || write_backup(&running, sender))
        .map_err(|e| {
            ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start the backup: {e}"))
        })?;
    info!(client = %caller.addr, operator = %caller.name, "backup started");
    let body = Body::new(Chunks(receiver));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// Writes a backup into `sender`; on failure, sends the error, which breaks the response off.
fn write_backup(running: &Running, sender: mpsc::Sender<io::Result<Bytes>>) {
    let mut out = ChannelWriter { sender: sender.clone(), pending: Vec::with_capacity(CHUNK) };
    match running.write(&mut out) {
        Ok(summary) => {
            info!(bytes = summary.bytes, records = summary.trailer.counts.records(), "backup sent")
        }
        Err(e) => {
            warn!(error = %e, "backup failed");
            let _ = sender.blocking_send(Err(io::Error::other(e.to_string())));
        }
    }
}

/// A writer sending [`CHUNK`]-sized pieces into the response's channel (blocking while the
/// client is behind); fails once the response is gone.
struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    pending: Vec<u8>,
}

impl ChannelWriter {
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK)));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading the backup"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK {
            self.send_pending()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

/// The response body: the chunks the backup thread sends, until it drops its sender.
struct Chunks(mpsc::Receiver<io::Result<Bytes>>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|result| result.map(Frame::data)))
    }
}
