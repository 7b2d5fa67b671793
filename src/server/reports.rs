//! What agents send about their tasks: reports of a task's state (`doing` acknowledges a
//! delivery, a final one ends the task) and streamed output chunks. Both are on stable storage
//! before they are acknowledged; operators following the task are woken after.

use std::sync::Arc;

use super::clock::now_ms;
use super::dispatch::Dispatch;
use super::error::ServiceError;
use super::store::{ChunkAck, NewChunk, Outcome, Store, StoreError, Stream, TaskRecord};
use crate::protocol::bytes::{self, Encoding};
use crate::protocol::wire::{self, OutputChunk, ReportRequest};
use crate::protocol::{TaskId, TaskStatus};

/// Longest error text a report may store, in characters.
const REPORT_ERROR_CHARS: usize = 4096;

/// Takes agents' reports and output.
pub struct Reports {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
}

impl Reports {
    /// Reports into `store`, waking followers through `dispatch`.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>) -> Self {
        Reports { store, dispatch }
    }

    /// Applies a report from `app_id`, makes it durable and wakes waiters.
    pub async fn report(&self, app_id: &str, report: ReportRequest) -> Result<TaskRecord, ServiceError> {
        let id = parse_task_id(&report.task_id)?;
        let outcome = outcome_of(report)?;
        let result = self.store.apply_report(app_id, id, &outcome, now_ms());
        // A refused report may still have cleared a pending cancel: sync either way.
        self.store.durable().await?;
        let task = result?;
        self.dispatch.task_changed(id);
        Ok(task)
    }

    /// Applies several reports from `app_id` in order (in one transaction), makes them durable
    /// with one sync and wakes waiters; each report's own outcome, in order (a refused one
    /// changes nothing).
    pub async fn report_many(
        &self,
        app_id: &str,
        reports: Vec<ReportRequest>,
    ) -> Result<Vec<Result<TaskRecord, ServiceError>>, ServiceError> {
        // Reports that do not parse are refused here; the others go to the store together.
        let (mut valid, mut unparsed) = (Vec::new(), Vec::new());
        for report in reports {
            let parsed = parse_task_id(&report.task_id).and_then(|id| Ok((id, outcome_of(report)?)));
            unparsed.push(parsed.map(|one| valid.push(one)).err());
        }
        let mut applied = self.store.apply_reports(app_id, &valid, now_ms())?.into_iter();
        // Refused reports may still have cleared pending cancels: sync either way.
        self.store.durable().await?;
        let results: Vec<Result<TaskRecord, ServiceError>> = unparsed
            .into_iter()
            .map(|refused| match refused {
                Some(e) => Err(e),
                // The store returned one result per report it was given, in order.
                None => applied.next().map_or_else(
                    || Err(ServiceError::Store(StoreError::Io("a report was not applied".into()))),
                    |r| r.map_err(ServiceError::from),
                ),
            })
            .collect();
        for task in results.iter().flatten() {
            self.dispatch.task_changed(task.id);
        }
        Ok(results)
    }

    /// Stores one streamed output chunk, makes it durable and wakes followers.
    pub async fn output(&self, app_id: &str, chunk: OutputChunk) -> Result<ChunkAck, ServiceError> {
        let id = parse_task_id(&chunk.task_id)?;
        let stream = Stream::from_name(&chunk.stream).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "stream {:?} is not stdout or stderr",
                wire::shown(&chunk.stream)
            ))
        })?;
        let data = chunk_bytes(&chunk)?;
        let ack = self.store.store_chunk(
            app_id,
            &NewChunk { id, seq: chunk.seq, stream, data: &data, attempt: chunk.attempt },
            now_ms(),
        )?;
        self.store.durable().await?;
        self.dispatch.task_changed(id);
        Ok(ack)
    }
}

/// A chunk's bytes (its text, or its base64 decoded), within [`wire::MAX_CHUNK_LEN`].
fn chunk_bytes(chunk: &OutputChunk) -> Result<Vec<u8>, ServiceError> {
    let too_large = |len: usize| {
        ServiceError::TooLarge(format!("output chunk is {len} bytes; the limit is {}", wire::MAX_CHUNK_LEN))
    };
    if bytes::max_decoded_len(chunk.data.len(), chunk.encoding) > wire::MAX_CHUNK_LEN + 2 {
        return Err(too_large(bytes::max_decoded_len(chunk.data.len(), chunk.encoding)));
    }
    let data = chunk.bytes().map_err(|e| ServiceError::BadRequest(format!("output chunk: {e}")))?;
    if data.len() > wire::MAX_CHUNK_LEN {
        return Err(too_large(data.len()));
    }
    Ok(data)
}

fn parse_task_id(text: &str) -> Result<TaskId, ServiceError> {
    TaskId::parse_str(text)
        .map_err(|_| ServiceError::BadRequest(format!("task id {:?} is not a UUID", wire::shown(text))))
}

/// Maps a report's `do_status` and fields to a state change.
fn outcome_of(report: ReportRequest) -> Result<Outcome, ServiceError> {
    let status = reported_status(&report.do_status)?;
    let mut output = Vec::new();
    if report.output_chunks.is_none() {
        let stdout = report_bytes("stdout", report.stdout.as_deref(), report.stdout_encoding)?;
        let stderr = report_bytes("stderr", report.stderr.as_deref(), report.stderr_encoding)?;
        output.push((Stream::Stdout, capped(stdout)));
        output.push((Stream::Stderr, capped(stderr)));
    }
    output.push((Stream::Result, capped(report.result.into_bytes())));
    output.retain(|(_, bytes)| !bytes.is_empty());
    Ok(Outcome {
        status,
        exit_code: report.exit_code,
        error: report.error.map(|e| e.chars().take(REPORT_ERROR_CHARS).collect()),
        duration_ms: report.duration_ms,
        output,
        attempt: report.attempt,
    })
}

/// The state a report's `do_status` names.
fn reported_status(do_status: &str) -> Result<TaskStatus, ServiceError> {
    Ok(match do_status {
        wire::DO_STATUS_DOING => TaskStatus::Running,
        wire::DO_STATUS_SUCCESS => TaskStatus::Succeeded,
        wire::DO_STATUS_FAILED => TaskStatus::Failed,
        wire::DO_STATUS_TIMEOUT => TaskStatus::TimedOut,
        wire::DO_STATUS_CANCELLED => TaskStatus::Cancelled,
        wire::DO_STATUS_LOST => TaskStatus::Lost,
        other => {
            return Err(ServiceError::BadRequest(format!(
                "do_status {:?} is not one of doing, success, failed, timeout, cancelled, lost",
                wire::shown(other)
            )));
        }
    })
}

/// The bytes of a report's `stdout` or `stderr` (`name`), decoded as its encoding says.
fn report_bytes(name: &str, text: Option<&str>, encoding: Option<Encoding>) -> Result<Vec<u8>, ServiceError> {
    bytes::decode(text.unwrap_or_default(), encoding)
        .map_err(|e| ServiceError::BadRequest(format!("report {name}: {e}")))
}

/// Output a report may carry per stream: the agent caps it, the server enforces it.
fn capped(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(wire::MAX_OUTPUT_LEN);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8]) -> OutputChunk {
        OutputChunk::new("t", 0, "stdout", bytes)
    }

    #[test]
    fn a_chunk_holds_at_most_the_limit_in_bytes_whether_text_or_base64() {
        let max = wire::MAX_CHUNK_LEN;
        assert_eq!(chunk_bytes(&chunk(&vec![b'a'; max])).unwrap().len(), max);
        assert_eq!(chunk_bytes(&chunk(&vec![0xff; max])).unwrap().len(), max);
        for over in [vec![b'a'; max + 1], vec![0xff; max + 1], vec![0xff; 3 * max]] {
            let error = chunk_bytes(&chunk(&over)).unwrap_err();
            assert!(matches!(error, ServiceError::TooLarge(_)), "{error:?}");
        }
    }

    #[test]
    fn marked_data_that_is_not_base64_is_a_bad_request_naming_it() {
        let bad = OutputChunk { data: "caf\u{e9}".into(), ..chunk(b"\xff") };
        match chunk_bytes(&bad) {
            Err(ServiceError::BadRequest(message)) => assert!(message.contains("base64"), "{message}"),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn report_outputs_are_decoded_as_marked() {
        let (stdout, stdout_encoding) = bytes::encode(b"caf\xe9");
        let report = ReportRequest {
            do_status: wire::DO_STATUS_SUCCESS.into(),
            stdout: Some(stdout),
            stdout_encoding,
            stderr: Some("plain".into()),
            ..ReportRequest::default()
        };
        let outcome = outcome_of(report).unwrap();
        assert_eq!(
            outcome.output,
            [(Stream::Stdout, b"caf\xe9".to_vec()), (Stream::Stderr, b"plain".to_vec())]
        );
    }
}
