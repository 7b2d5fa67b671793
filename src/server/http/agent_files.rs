//! orange's agent endpoints of file copy, signed like every agent call and answered with the
//! envelope: `fileChunk` hands a `file.put` task's agent the next bytes of the file it writes,
//! `fileUpload` takes the bytes a `file.get` task's agent read.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;

use super::AppState;
use super::agent_api::{reply, service_failure, signed_json};
use super::busy::BusyPermit;
use super::client_addr::ClientAddr;
use crate::protocol::files::{
    self, ChunkReply, ChunkRequest, FILE_CHUNK_PATH, FILE_UPLOAD_PATH, UploadChunk,
};
use crate::protocol::wire::{Envelope, OutputAck};

/// The file routes of the agent protocol.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(FILE_CHUNK_PATH, post(file_chunk)).route(FILE_UPLOAD_PATH, post(file_upload))
}

async fn file_chunk(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("fileChunk", FILE_CHUNK_PATH));
    let (agent, request): (_, ChunkRequest) =
        match signed_json(&app, source, &place, call, &headers, body).await {
            Ok(ok) => ok,
            Err(answer) => return answer,
        };
    match app.files().chunk_for_agent(&agent.app_id, &request.task_id, request.offset) {
        Ok(bytes) => reply(Envelope::ok("file chunk", ChunkReply { data: files::encode(&bytes) })),
        Err(e) => service_failure(call.0, source, e),
    }
}

async fn file_upload(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("fileUpload", FILE_UPLOAD_PATH));
    let (agent, chunk): (_, UploadChunk) = match signed_json(&app, source, &place, call, &headers, body).await
    {
        Ok(ok) => ok,
        Err(answer) => return answer,
    };
    match app.files().upload_from_agent(&agent.app_id, chunk).await {
        Ok(cancel) => reply(Envelope::ok("file chunk stored", OutputAck { cancel })),
        Err(e) => service_failure(call.0, source, e),
    }
}
