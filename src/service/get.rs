//! DoGet: a worker thread reads the dataset's row groups, encodes each batch
//! as Flight messages, and hands them to the response stream through the
//! bounded bridge of [`crate::stream`].

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};

use super::{blocking, name_from_bytes, BoxStream, Hangar};
use crate::auth::Operation;
use crate::budget::{Budget, Grant};
use crate::error::{Error, Result};
use crate::ipc::Encoder;
use crate::log::Call;
use crate::proto::{FlightData, Ticket};
use crate::query::Scan;
use crate::store::Batches;
use crate::stream::{self, Next, SendError};

pub(super) async fn do_get(
    service: &Hangar,
    request: Request<Ticket>,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    let mut call = service.call("DoGet", &request);
    let (_, permit) = service.enter(&mut call, &request, Operation::DoGet).await?;
    let opened = async {
        let ticket = &request.get_ref().ticket;
        let store = service.store.clone();
        let rows = service.limits.batch_rows;
        // A JSON ticket is a query's scan; anything else names a dataset.
        let scan = {
            let (ticket, store) = (ticket.clone(), store.clone());
            blocking(move || scan_or_name(&ticket, |name| store.info(name).is_ok())).await?
        };
        match scan {
            Some(scan) => {
                call.dataset(&scan.dataset);
                let compression = scan.compression;
                let batches = blocking(move || store.scan(&scan, rows)).await?;
                Ok((batches, compression))
            }
            None => {
                let name = name_from_bytes(ticket, "ticket")?;
                call.dataset(&name);
                Ok((blocking(move || store.reader(&name, rows)).await?, None))
            }
        }
    }
    .await;
    let (batches, compression) = match opened {
        Ok(batches) => batches,
        Err(err) => return Err(call.fail(err)),
    };
    let limits = &service.limits;
    let (tx, rx) = stream::channel(limits.channel_depth);
    let worker = Worker {
        encoder: Encoder::new(
            compression
                .unwrap_or(limits.ipc_compression)
                .write_options(),
            limits.target_message_bytes,
            limits.max_message_bytes,
        ),
        idle: limits.idle_timeout,
        memory: service.memory.clone(),
        first_estimate: limits.target_message_bytes as u64,
        call,
        _permit: permit,
    };
    tokio::task::spawn_blocking(move || worker.run(batches, tx));
    let replies = rx.filter_map(|step| match step {
        // The message's bytes go back to the budget as tonic takes it: from
        // here on the client's flow control, not the budget, bounds it.
        Next::Item((message, _grant)) => Some(Ok(message)),
        Next::End => None,
        Next::Failed(err) => Some(Err(Status::from(err))),
        Next::Abandoned => Some(Err(Status::internal(
            "the download stopped unexpectedly on the server; retry",
        ))),
    });
    Ok(Response::new(Box::pin(replies)))
}

/// A query ticket's scan, or `None` for a ticket that names a dataset. A
/// legal dataset name may start with '{' (GetFlightInfo's ticket for it is
/// that name): a ticket that is no valid scan but names an existing dataset
/// (`is_dataset`, only asked then) reads that dataset.
fn scan_or_name(ticket: &[u8], is_dataset: impl FnOnce(&str) -> bool) -> Result<Option<Scan>> {
    match Scan::from_ticket(ticket) {
        Ok(scan) => Ok(scan),
        Err(err) => match name_from_bytes(ticket, "ticket") {
            Ok(name) if is_dataset(&name) => Ok(None),
            _ => Err(err),
        },
    }
}

/// The DoGet worker and what it owns until the stream ends: the call's log
/// record and its call slot.
struct Worker {
    encoder: Encoder,
    /// Also the longest wait for the memory budget: a download that cannot
    /// move for that long fails either way.
    idle: Duration,
    memory: Budget,
    /// Memory reserved before the first batch is read.
    first_estimate: u64,
    call: Call,
    _permit: OwnedSemaphorePermit,
}

impl Worker {
    fn run(mut self, batches: Batches, tx: Messages) {
        match self.stream(batches, &tx) {
            Ok(()) => {
                self.call.finish(Code::Ok, "");
                tx.finish();
            }
            Err(err) => {
                // The stream must end with this error, never look complete:
                // the bridge hands it to the client ahead of queued messages.
                self.call.fail(err.clone());
                tx.fail(err);
            }
        }
    }

    fn stream(&mut self, mut batches: Batches, tx: &Messages) -> Result<()> {
        let schema = self.encoder.schema(batches.schema());
        self.send(tx, schema, self.memory.empty())?;
        let mut messages = Vec::new();
        // Memory is reserved before each read, sized like the batch before
        // (the first like one message), so a download waits for the budget
        // before it allocates, not after; the reservation is then set to
        // what the batch really takes.
        let mut expected = self.first_estimate;
        loop {
            // A client that left stops the wait at once (its call slot is
            // not held for the idle timeout).
            let grant = self
                .memory
                .acquire_while(expected, self.idle, &|| !tx.is_closed());
            // A download whose every batch was sent ends well even if no
            // memory was free for a next one that turned out not to exist.
            let Some(batch) = batches.next() else { break };
            let mut grant = grant?;
            let batch = batch?;
            self.call.rows += batch.num_rows() as u64;
            expected = batch.get_array_memory_size() as u64;
            grant.hold_now(expected);
            // The messages' own bytes count from here until tonic takes each.
            self.encoder.batch(&batch, &mut messages)?;
            drop(batch);
            grant.hold_now(messages.iter().map(message_bytes).sum());
            for message in messages.drain(..) {
                let held = grant.split(message_bytes(&message));
                self.send(tx, message, held)?;
            }
        }
        Ok(())
    }

    /// Waits while the channel is full, so a slow client slows this reader;
    /// fails once the client is gone (which stops the read promptly) or has
    /// read nothing for the idle timeout (a stalled reader cannot pin a thread).
    fn send(&mut self, tx: &Messages, message: FlightData, held: Grant) -> Result<()> {
        self.call.bytes += message_bytes(&message);
        tx.blocking_send((message, held), Some(self.idle))
            .map_err(|e| match e {
                SendError::Stalled => Error::DeadlineExceeded(format!(
                    "the client read nothing for {} s: download aborted (--idle-timeout)",
                    self.idle.as_secs()
                )),
                SendError::Closed => Error::Cancelled("the client went away during DoGet".into()),
            })
    }
}

/// Messages on their way to the client, each with the budget bytes it holds.
type Messages = stream::Sender<(FlightData, Grant), Error>;

fn message_bytes(message: &FlightData) -> u64 {
    (message.data_header.len() + message.data_body.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_name_starting_with_a_brace_is_still_a_name() {
        let exists = |name: &str| name == "{odd}.parquet";
        assert_eq!(scan_or_name(b"{odd}.parquet", exists).unwrap(), None);
        assert_eq!(scan_or_name(b"plain", exists).unwrap(), None);
        let err = scan_or_name(b"{other}", exists).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("not valid JSON"), "{err}");
        let scan = br#"{"dataset":"d","row_groups":[0],"version":"v"}"#;
        let never = |_: &str| -> bool { panic!("a valid scan is not looked up") };
        assert_eq!(scan_or_name(scan, never).unwrap().unwrap().dataset, "d");
    }
}
