//! DoPut: an async pump reads the client's messages and hands them through the
//! bounded bridge of [`crate::stream`] to a worker that decodes them and
//! writes Parquet. The upload commits only on a real clean end of stream.

use std::time::Duration;

use prost::bytes::Bytes;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{descriptor_name, inbound_error, BoxStream, Hangar};
use crate::auth::Operation;
use crate::budget::{Grant, Inbound};
use crate::error::{Error, Result};
use crate::ipc::{Decoded, Decoder};
use crate::json::Value;
use crate::proto::{FlightData, PutResult};
use crate::store::Store;
use crate::stream::{self, Next};
use crate::transport::CleanEnd;

pub(super) async fn do_put(
    service: &Hangar,
    request: Request<Streaming<FlightData>>,
) -> Result<Response<BoxStream<PutResult>>, Status> {
    let mut call = service.call("DoPut", &request);
    let (_, permit) = service.enter(&mut call, &request, Operation::DoPut).await?;
    let limit = service.limits.max_message_bytes;
    // Set by the transport only when the HTTP/2 body ended with END_STREAM;
    // tonic reports a cancel (RST_STREAM) as a clean end too.
    let clean_end = request.extensions().get::<CleanEnd>().cloned();
    // The grants of messages the transport took in (`into_server` always
    // installs it; without it, an empty queue that never waits stands in).
    let arrivals = request
        .extensions()
        .get::<Inbound>()
        .cloned()
        .unwrap_or_default();
    let mut inbound = request.into_inner();
    let idle = service.limits.idle_timeout;
    let waiting = arrivals.clone();
    let stalled = move || {
        if waiting.waiting_for_memory() {
            return Error::ResourceExhausted(format!(
                "the server's memory budget is spent: the next message could not be taken in \
                 within {} s; the previous version is kept (raise --memory-limit or retry later)",
                idle.as_secs()
            ));
        }
        Error::DeadlineExceeded(format!(
            "no data for {} s: upload aborted (--idle-timeout); the previous version is kept",
            idle.as_secs()
        ))
    };
    // The first message names the dataset; check it before anything is written.
    // A client that opens the call and sends nothing must not hold a call slot
    // forever: the idle timeout covers the first message too.
    let first = async {
        let first = match tokio::time::timeout(idle, inbound.message()).await {
            Err(_) => return Err(stalled()),
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None)) => {
                return Err(Error::InvalidArgument(
                    "empty DoPut stream: the first message must carry a PATH descriptor \
                     and the schema"
                        .into(),
                ))
            }
            Ok(Err(status)) => return Err(inbound_error(status, limit)),
        };
        let descriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the first DoPut message has no flight descriptor: it must name the dataset".into(),
            )
        })?;
        let name = descriptor_name(descriptor)?;
        call.dataset(&name);
        Ok((name, first))
    }
    .await;
    let (name, first) = match first {
        Ok(first) => first,
        Err(err) => return Err(call.fail(err)),
    };

    let (data_tx, data_rx) = stream::channel::<FlightData, Error>(service.limits.upload_queue);
    let (reply_tx, reply_rx) = tokio::sync::mpsc::channel::<Result<PutResult, Status>>(1);
    let store = service.store.clone();
    let memory = service.memory.empty();
    let worker = tokio::task::spawn_blocking(move || {
        ingest(&store, &name, first, data_rx, memory, &arrivals)
    });

    let mut abandon = service.abandon.subscribe();
    tokio::spawn(async move {
        let _permit = permit;
        // Pump client messages to the worker until the stream ends, fails, or
        // the worker stops listening (it failed and has its answer).
        let mut stream_error = None;
        loop {
            let next = tokio::select! {
                _ = abandon.wait_for(|abandoned| *abandoned) => {
                    stream_error = Some(Error::Unavailable(
                        "the server stopped before the upload finished; the previous version \
                         is kept"
                            .into(),
                    ));
                    break;
                }
                next = tokio::time::timeout(idle, inbound.message()) => match next {
                    Ok(next) => next,
                    Err(_) => {
                        stream_error = Some(stalled());
                        break;
                    }
                },
                // The caller is gone: hyper dropped our response stream.
                _ = reply_tx.closed() => Err(Status::cancelled("the client went away")),
            };
            match next {
                Ok(Some(message)) => {
                    if data_tx.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    stream_error = Some(inbound_error(status, limit));
                    break;
                }
            }
        }
        // A clean end of stream is only trusted if the client is still there
        // to hear the answer: tonic can report a reset like a normal end.
        if stream_error.is_none() && clean_end.as_ref().is_some_and(|c| !c.get()) {
            stream_error = Some(Error::Cancelled(
                "the client cancelled the upload before closing its stream".into(),
            ));
        }
        if stream_error.is_none() && reply_tx.is_closed() {
            stream_error = Some(Error::Cancelled(
                "the client went away before the upload finished".into(),
            ));
        }
        match stream_error {
            Some(err) => data_tx.fail(err),
            None => data_tx.finish(),
        }
        // If the worker already failed, its own error (bad batch, disk full)
        // explains more than the aborted stream that followed it.
        let result = match worker.await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("upload worker failed: {e}"))),
        };
        match result {
            Ok(summary) => {
                call.rows = summary.rows;
                call.bytes = summary.bytes;
                let metadata = Value::object([
                    ("rows", Value::from(summary.rows)),
                    ("bytes", Value::from(summary.bytes)),
                ]);
                call.finish(Code::Ok, "");
                let _ = reply_tx
                    .send(Ok(PutResult {
                        app_metadata: Bytes::from(metadata.to_string()),
                    }))
                    .await;
            }
            Err(err) => {
                let status = call.fail(err);
                let _ = reply_tx.send(Err(status)).await;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(reply_rx))))
}

/// How often an upload waiting for its next message checks whether the
/// transport holds that message back for memory.
const MEMORY_CHECK: Duration = Duration::from_millis(20);

struct PutSummary {
    rows: u64,
    bytes: u64,
}

/// The DoPut worker: decodes messages and writes batches into a temporary file,
/// committing only when the pump finishes the channel. Any other ending drops
/// the upload, which removes the temporary file and leaves the old dataset.
///
/// `memory` holds this upload's share of the budget: the batch being written
/// plus the writer's buffered row group, held without waiting (the transport
/// already waited for each message's memory; meanwhile HTTP/2 flow control
/// stopped the client). `arrivals` (from the transport, see [`Inbound`])
/// holds a grant per message received and not yet decoded, taken in order
/// and returned once the message is decoded and let go of.
fn ingest(
    store: &Store,
    name: &str,
    first: FlightData,
    mut rx: stream::Receiver<FlightData, Error>,
    mut memory: Grant,
    arrivals: &Inbound,
) -> Result<PutSummary> {
    let mut decoder = Decoder::new();
    let mut upload = None;
    let mut next = Some(first);
    loop {
        if let Some(data) = next.take() {
            // The grant that came with the message: a receive buffer that
            // can go once the message is decoded and let go of.
            let arrived = arrivals.next_message();
            let decoded = decoder.decode(&data)?;
            // Arrow copies buffers that are not aligned in the message (most
            // are: the body sits wherever protobuf framing left it), so the
            // message is often no longer needed: free it before writing
            // rather than hold a second copy of the batch.
            drop(data);
            // Counted as consumed before its grant goes back, so the
            // transport, woken by either, sees tonic's buffer free to reuse.
            arrivals.consumed_one();
            drop(arrived);
            match decoded {
                Decoded::Schema(schema) => upload = Some(store.create(name, schema)?),
                Decoded::Batch(batch) => match upload.as_mut() {
                    Some(upload) => {
                        let batch_bytes = batch.get_array_memory_size() as u64;
                        let wanted = upload.buffered_bytes() + batch_bytes;
                        // The transport waited for this message's memory as
                        // it arrived, so the batch decoded from it is held,
                        // not waited for: waiting here could be on this
                        // upload's own next message. Under pressure the row
                        // group still goes out early, so uploads do not
                        // stall one another.
                        memory.hold_now(wanted);
                        if memory.pool_is_spent() && upload.buffered_bytes() > 0 {
                            upload.flush()?;
                            memory.hold_now(upload.buffered_bytes() + batch_bytes);
                        }
                        upload.write(&batch)?;
                        drop(batch);
                        // Already allocated, so held without waiting; a
                        // flushed row group gives its bytes back here.
                        memory.hold_now(upload.buffered_bytes());
                    }
                    None => {
                        return Err(Error::Internal(
                            "a batch arrived with no upload open".into(),
                        ))
                    }
                },
                Decoded::Nothing => {}
            }
        }
        let step = loop {
            if let Some(step) = rx.blocking_next_within(MEMORY_CHECK) {
                break step;
            }
            // The transport is holding this upload's next message back for
            // memory: the row group this upload buffers may be what the
            // budget lacks, and waiting while holding it could stall every
            // upload at once. Write it out (a smaller row group, the same
            // data) and give its memory back.
            if let Some(upload) = upload.as_mut() {
                if arrivals.waiting_for_memory() && upload.buffered_bytes() > 0 {
                    upload.flush()?;
                    memory.hold_now(upload.buffered_bytes());
                }
            }
        };
        match step {
            Next::Item(data) => next = Some(data),
            Next::End => break,
            Next::Failed(err) => return Err(err),
            Next::Abandoned => return Err(Error::Cancelled("the upload was abandoned".into())),
        }
    }
    let upload = upload.ok_or_else(|| {
        Error::InvalidArgument(
            "the DoPut stream ended without a schema message: nothing to store".into(),
        )
    })?;
    let rows = upload.rows();
    let bytes = upload.commit()?;
    Ok(PutSummary { rows, bytes })
}
