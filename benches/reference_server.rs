//! The Rust reference of the flight benchmark: the server a Rust user would
//! write instead of running hangar, the way the `arrow-flight` crate's
//! documentation suggests — `FlightRecordBatchStream` decodes DoPut,
//! `FlightDataEncoderBuilder` encodes DoGet — over the same parquet crate with
//! hangar's writer settings (compression, row-group size, flush size) and read
//! batch size. Its dictionary page limit stays the parquet crate's default
//! (1 MiB), as a user's would: hangar's 64 KiB is one of its own choices. It lives in the benchmark binary (`flight --serve-arrow-flight
//! REPO`), so `arrow-flight` stays a dev-dependency and both servers are built
//! with the same profile.
//!
//! Only what the benchmark calls: DoPut, DoGet, ListFlights (names and sizes,
//! no footer reads) and the `drop_dataset` action. Uploads go to a temporary
//! file that is fsynced and renamed, as hangar's do. Parquet work runs on
//! blocking threads behind bounded channels, as any careful async server does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

/// hangar's settings (src/store.rs, src/service/mod.rs), so the Parquet work
/// is the same on both sides.
const MAX_ROW_GROUP_ROWS: usize = 1024 * 1024;
const ROW_GROUP_FLUSH_BYTES: usize = 32 * 1024 * 1024;
const READ_BATCH_ROWS: usize = 64 * 1024;
/// gRPC message limit both ways, as hangar's default `--max-message-size`.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serves `repo` on 127.0.0.1 with an ephemeral port, printing the same kind
/// of listening line as hangar; runs until killed.
pub fn serve(repo: PathBuf) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async move {
        std::fs::create_dir_all(&repo)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        println!("arrow-flight reference listening on grpc://{addr}");
        let service = FlightServiceServer::new(Reference {
            repo: Arc::new(repo),
            seq: Arc::new(AtomicU64::new(0)),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // What `Server::serve(addr)` does: tonic sets TCP_NODELAY on accepted
        // sockets by default, but not on a listener handed in, and without it
        // Nagle's algorithm stalls small frames (WINDOW_UPDATEs) behind
        // delayed ACKs: uploads ran 4x slower than a user's server would.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("arrow-flight reference: {e}");
            std::process::exit(1);
        }
    }
}

#[derive(Clone)]
struct Reference {
    repo: Arc<PathBuf>,
    seq: Arc<AtomicU64>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A plain file name inside the repository.
fn dataset(repo: &Path, name: &[u8]) -> Result<PathBuf, Status> {
    let name = std::str::from_utf8(name).map_err(|_| Status::invalid_argument("bad name"))?;
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(Status::invalid_argument("bad name"));
    }
    Ok(repo.join(name))
}

#[tonic::async_trait]
impl FlightService for Reference {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        // The first message names the dataset; FlightRecordBatchStream drops
        // descriptors, so it is read here and put back in front.
        let mut input = request.into_inner();
        let head = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty DoPut"))?;
        let descriptor = head
            .flight_descriptor
            .clone()
            .ok_or_else(|| Status::invalid_argument("no descriptor"))?;
        let name = descriptor
            .path
            .first()
            .ok_or_else(|| Status::invalid_argument("no path"))?;
        let data = futures::stream::once(async move { Ok(head) })
            .chain(input)
            .map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        // The first batch (or the end) makes the schema known.
        let first = batches.next().await.transpose().map_err(internal)?;
        let target = dataset(&self.repo, name.as_bytes())?;
        let schema = batches
            .schema()
            .cloned()
            .ok_or_else(|| Status::invalid_argument("no schema"))?;
        let temp = self.repo.join(format!(
            ".upload-{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
        let writer = {
            let temp = temp.clone();
            tokio::task::spawn_blocking(move || -> Result<u64, Status> {
                let file = std::fs::File::create(&temp).map_err(internal)?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
                    .build();
                let mut writer =
                    ArrowWriter::try_new(file, schema, Some(props)).map_err(internal)?;
                let mut rows = 0;
                while let Some(batch) = rx.blocking_recv() {
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).map_err(internal)?;
                    if writer.in_progress_size() >= ROW_GROUP_FLUSH_BYTES {
                        writer.flush().map_err(internal)?;
                    }
                }
                let file = writer.into_inner().map_err(internal)?;
                file.sync_all().map_err(internal)?;
                std::fs::rename(&temp, &target).map_err(internal)?;
                Ok(rows)
            })
        };
        let sent: Result<(), Status> = async {
            if let Some(batch) = first {
                tx.send(batch).await.map_err(internal)?;
            }
            while let Some(batch) = batches.next().await {
                tx.send(batch.map_err(internal)?).await.map_err(internal)?;
            }
            Ok(())
        }
        .await;
        drop(tx);
        let written = writer.await.map_err(internal)?;
        if let Err(e) = sent.and(written.as_ref().map(|_| ()).map_err(Clone::clone)) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let reply = PutResult {
            app_metadata: format!("{{\"rows\":{}}}", written?).into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(reply)]).boxed()))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let path = dataset(&self.repo, &request.into_inner().ticket)?;
        let file = std::fs::File::open(&path).map_err(|e| Status::not_found(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(internal)?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(internal)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            for batch in reader {
                if tx.blocking_send(batch.map_err(FlightError::from)).is_err() {
                    return;
                }
            }
        });
        let batches = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream = FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let mut infos = Vec::new();
        for entry in std::fs::read_dir(self.repo.as_ref()).map_err(internal)? {
            let entry = entry.map_err(internal)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let bytes = entry.metadata().map_err(internal)?.len();
            infos.push(Ok(FlightInfo::new()
                .with_descriptor(FlightDescriptor::new_path(vec![name]))
                .with_total_bytes(bytes as i64)));
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != "drop_dataset" {
            return Err(Status::unimplemented(action.r#type));
        }
        let path = dataset(&self.repo, &action.body)?;
        std::fs::remove_file(path).map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}
