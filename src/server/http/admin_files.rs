//! Operator routes of file copy: `POST /api/v1/files` takes a file's bytes as the raw request
//! body, stored piece by piece as they stream in (never held whole), and answers its id, size
//! and SHA-256; `GET /api/v1/tasks/{id}/file?offset=N` answers a page of the bytes a `file.get`
//! task read.

use std::pin::Pin;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::info;

use super::AppState;
use super::admin_common::{ApiFailure, ApiResult, bad_query, path_id};
use super::permissions::AdminRoutes;
use crate::protocol::admin::TASKS_PATH;
use crate::protocol::files::{FILES_PATH, TASK_FILE_SUFFIX, Uploaded};
use crate::server::operators::Caller;

/// Most bytes one download page carries.
pub const DOWNLOAD_PAGE: usize = 4 * 1024 * 1024;

/// The file routes.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new()
        .post(FILES_PATH, upload)
        .get(&format!("{TASKS_PATH}/{{id}}/{TASK_FILE_SUFFIX}"), download)
}

/// Stores the body as a new file; past the server's limit the upload stops with 413 and what
/// was stored is deleted.
async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    mut body: Body,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    let files = app.files();
    let mut upload = files.begin()?;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let bytes = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(bytes) => bytes,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                files.abandon(upload)?;
                return Err(ApiFailure(StatusCode::BAD_REQUEST, format!("upload body failed: {e}")));
            }
        };
        if let Err(refused) = files.push(&mut upload, &bytes) {
            // Read what the client still sends (up to a bound), so that it gets to read the
            // refusal instead of failing its write on a closed connection.
            discard_rest(&mut body, REFUSED_BODY_DRAIN).await;
            return Err(refused.into());
        }
    }
    let uploaded = files.finish(upload).await?;
    let detail = format!("{} bytes, sha256 {}", uploaded.size, uploaded.sha256);
    app.audit().record(&caller.actor(), "file.upload", &uploaded.file_id, &detail)?;
    info!(file = %uploaded.file_id, size = uploaded.size, "file uploaded");
    Ok((StatusCode::CREATED, Json(uploaded)))
}

/// Most bytes of a refused upload read and thrown away before the refusal is answered.
const REFUSED_BODY_DRAIN: u64 = 64 * 1024 * 1024;

/// Reads and drops the rest of `body`, at most `most` bytes or until it fails.
async fn discard_rest(body: &mut Body, most: u64) {
    let mut read = 0u64;
    while read < most {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// Query of a download page.
#[derive(Deserialize)]
struct DownloadQuery {
    offset: Option<u64>,
}

/// Up to [`DOWNLOAD_PAGE`] bytes from `offset` of what a `file.get` task read (empty past its end).
async fn download(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DownloadQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let id = path_id(path, "task")?;
    app.tasks().visible(&caller, id)?;
    let Query(query) = query.map_err(bad_query)?;
    let bytes = app.files().download(id, query.offset.unwrap_or(0), DOWNLOAD_PAGE)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
