//! The hangar benchmark: `cargo bench --bench flight`.
//!
//! One run, one data set, one table of results:
//!
//! 1. **Ceilings**, in process, no gRPC: (a) read the Parquet file and encode
//!    every batch as IPC `FlightData` with hangar's own [`Store::reader`] and
//!    [`Encoder`] (the most DoGet can do); (b) decode the client's `FlightData`
//!    with hangar's [`Decoder`] and write Parquet with [`Store::create`] and
//!    [`Upload`] (the most DoPut can do).
//! 2. **hangar** (the release binary) over loopback with the `arrow-flight`
//!    client: DoPut, DoGet, 4 concurrent DoGets (on 4 connections, and on
//!    one shared connection); GetFlightInfo and ListFlights
//!    latency with 1,000 datasets in the repository.
//! 3. **The reference**: the Arrow cookbook's streaming pyarrow server
//!    (`tests/python/cookbook_server.py`), measured with the same client, run
//!    by run interleaved with hangar so that load from elsewhere hits both alike.
//! 4. **Memory**: idle RSS, then the peak RSS (sampled every 20 ms from
//!    `/proc/PID/status`, plus `VmHWM` reset through `clear_refs`) while putting
//!    and then getting a large dataset (2 GB of Arrow data by default).
//! 5. **Startup** (spawn → listening line → first successful ListFlights) and
//!    the binary's size.
//!
//! It ends with a Markdown table (figure, value, ratio to the ceiling and to the
//! reference, target, met?) on stdout; progress goes to stderr. Every wait is
//! bounded and every server is killed when the run ends, fails or overruns.
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HANGAR_BENCH_ROWS` | 8000000 | rows of the main table |
//! | `HANGAR_BENCH_BATCH_ROWS` | 65536 | rows per client batch |
//! | `HANGAR_BENCH_PUT_MESSAGE_BYTES` | 0 | client message size cap for DoPut (0: one message per batch) |
//! | `HANGAR_BENCH_RUNS` | 3 | runs of each throughput figure (the best is kept) |
//! | `HANGAR_BENCH_BIG_GB` | 2 | Arrow GB put and got for the memory figures (0 skips) |
//! | `HANGAR_BENCH_DATASETS` | 1000 | small datasets for the latency figures |
//! | `HANGAR_BENCH_INFO_CALLS` | 2000 | GetFlightInfo calls (hangar) |
//! | `HANGAR_BENCH_LIST_CALLS` | 100 | ListFlights calls (hangar) |
//! | `HANGAR_BENCH_REFERENCE` | 1 | 0 skips the pyarrow reference |
//! | `HANGAR_BENCH_ARROW_FLIGHT` | 1 | 0 skips the arrow-flight crate reference (reference_server.rs) |
//! | `HANGAR_BENCH_CLIENT` | rust | `pyarrow`: transfers by benches/pyarrow_client.py instead |
//! | `HANGAR_PYTHON` | `.venv/bin/python`, else `python3` | interpreter with pyarrow |
//! | `HANGAR_BENCH_DIR` | system temp dir | where the repositories go (removed after) |
//! | `HANGAR_BENCH_CLIENT_WINDOW` | tonic's default | client HTTP/2 stream window, bytes |
//! | `HANGAR_BENCH_CLIENT_ADAPTIVE` | 0 | 1: client HTTP/2 adaptive (BDP) window |
//! | `HANGAR_BENCH_BIN` | the bench's own `hangar` | another hangar binary to run (A/B comparisons) |
//! | `HANGAR_BENCH_STATIC_BIN` | unset | a statically linked hangar to report the size of |
//! | `HANGAR_BENCH_TIMEOUT_S` | 3600 | the whole run is aborted after this |
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, Ticket};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{stream, StreamExt, TryStreamExt};
use hangar::ipc::{Decoded, Decoder, Encoder};
use hangar::service::Limits;
use hangar::store::{Codec, Store};
use tonic::transport::{Channel, Endpoint};

mod reference_server;
mod support;
use support::{arrow_bytes, cpu_secs, env_or, loadavg, machine};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;
/// Bound on one large transfer (a whole DoPut or DoGet).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound on one metadata call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a server printing its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message either side of our client accepts.
const CLIENT_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;
/// The reference server gets this much time for each latency series.
const REFERENCE_LATENCY_BUDGET: Duration = Duration::from_secs(20);
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn main() {
    // The Rust reference server runs as this same binary (see reference_server.rs).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "--serve-arrow-flight" {
        reference_server::serve(PathBuf::from(&args[2]));
    }
    support::only_under_cargo_bench("flight");
    let config = Config::from_env();
    support::run_with_watchdog("flight", config.timeout, "HANGAR_BENCH_TIMEOUT_S", || {
        run(&config)
    })
}

// ---------------------------------------------------------------------------
// Configuration

struct Config {
    rows: usize,
    batch_rows: usize,
    put_message_bytes: usize,
    runs: usize,
    big_bytes: u64,
    datasets: usize,
    info_calls: usize,
    list_calls: usize,
    reference: bool,
    /// Also run the arrow-flight crate server (`HANGAR_BENCH_ARROW_FLIGHT`).
    arrow_flight: bool,
    /// Drive the servers from pyarrow (`HANGAR_BENCH_CLIENT=pyarrow`)
    /// instead of the arrow-flight Rust client.
    pyarrow_client: bool,
    python: PathBuf,
    dir: PathBuf,
    bin: PathBuf,
    static_bin: Option<PathBuf>,
    timeout: Duration,
}

impl Config {
    fn from_env() -> Config {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("HANGAR_PYTHON")
            .map(PathBuf::from)
            .or_else(|| {
                let venv = manifest.join(".venv/bin/python");
                venv.exists().then_some(venv)
            })
            .unwrap_or_else(|| PathBuf::from("python3"));
        let big_gb: f64 = env_or("HANGAR_BENCH_BIG_GB", 2.0);
        Config {
            rows: env_or("HANGAR_BENCH_ROWS", 8_000_000usize).max(1),
            batch_rows: env_or("HANGAR_BENCH_BATCH_ROWS", 65_536usize).max(1),
            put_message_bytes: match env_or("HANGAR_BENCH_PUT_MESSAGE_BYTES", 0usize) {
                0 => usize::MAX,
                n => n,
            },
            runs: env_or("HANGAR_BENCH_RUNS", 3usize).max(1),
            big_bytes: (big_gb.max(0.0) * 1e9) as u64,
            datasets: env_or("HANGAR_BENCH_DATASETS", 1000usize).max(1),
            info_calls: env_or("HANGAR_BENCH_INFO_CALLS", 2000usize).max(1),
            list_calls: env_or("HANGAR_BENCH_LIST_CALLS", 100usize).max(1),
            reference: env_or("HANGAR_BENCH_REFERENCE", 1u8) != 0,
            arrow_flight: env_or("HANGAR_BENCH_ARROW_FLIGHT", 1u8) != 0,
            pyarrow_client: match std::env::var("HANGAR_BENCH_CLIENT").as_deref() {
                Ok("pyarrow") => true,
                Ok("rust") | Ok("") | Err(_) => false,
                Ok(other) => {
                    eprintln!("HANGAR_BENCH_CLIENT must be rust or pyarrow, not {other:?}");
                    std::process::exit(2);
                }
            },
            python,
            dir: std::env::var_os("HANGAR_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            bin: std::env::var_os("HANGAR_BENCH_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hangar"))),
            static_bin: std::env::var_os("HANGAR_BENCH_STATIC_BIN").map(PathBuf::from),
            timeout: Duration::from_secs(env_or("HANGAR_BENCH_TIMEOUT_S", 3600u64)),
        }
    }
}

// ---------------------------------------------------------------------------
// Data

/// int64 sequence, float64, ~12-character strings from a small vocabulary, int32.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("count", DataType::Int32, false),
    ]))
}

/// SplitMix64: deterministic, fast, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// 100 labels of 12 characters ("label-000000" style, scattered digits).
fn vocabulary() -> Vec<String> {
    (0..100u64)
        .map(|i| format!("label-{:06}", (i * 7919 + 104_729) % 1_000_000))
        .collect()
}

fn make_batch(schema: &SchemaRef, start: i64, rows: usize, seed: u64) -> RecordBatch {
    let vocabulary = vocabulary();
    let mut rng = Rng(seed);
    let ids = Int64Array::from_iter_values(start..start + rows as i64);
    let values = Float64Array::from_iter_values(
        (0..rows).map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0),
    );
    let mut labels = StringBuilder::with_capacity(rows, rows * 12);
    for _ in 0..rows {
        labels.append_value(&vocabulary[(rng.next() % vocabulary.len() as u64) as usize]);
    }
    let counts = Int32Array::from_iter_values((0..rows).map(|_| (rng.next() % 1_000_000) as i32));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(values),
        Arc::new(labels.finish()),
        Arc::new(counts),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("batch matches schema")
}

fn make_table(rows: usize, batch_rows: usize) -> Vec<RecordBatch> {
    let schema = schema();
    (0..rows)
        .step_by(batch_rows)
        .map(|start| {
            let n = batch_rows.min(rows - start);
            make_batch(&schema, start as i64, n, start as u64)
        })
        .collect()
}

/// The client's DoPut stream, encoded once up front so every run (and both
/// servers) receive the very same messages and the client spends no time
/// encoding while the clock runs.
fn encode_upload(
    rt: &tokio::runtime::Runtime,
    name: &str,
    batches: &[RecordBatch],
    max_message_bytes: usize,
) -> Res<Vec<FlightData>> {
    let encoder = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(max_message_bytes)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name.to_string()])))
        .build(stream::iter(Vec::from(batches)).map(Ok));
    Ok(rt.block_on(encoder.try_collect::<Vec<_>>())?)
}

// ---------------------------------------------------------------------------
// Ceilings (in process, hangar's own code paths, no gRPC)

/// Ceiling (b): decode the client's messages and write Parquet, as the DoPut
/// worker does (`Decoder` → `Store::create` → `Upload::write` → commit).
fn ceiling_put(store: &Store, name: &str, messages: &[FlightData]) -> Res<(Duration, u64)> {
    let started = Instant::now();
    let mut decoder = Decoder::new();
    let mut upload = None;
    let mut rows = 0u64;
    for message in messages {
        let message = hangar::proto::FlightData {
            flight_descriptor: None,
            data_header: message.data_header.clone(),
            app_metadata: message.app_metadata.clone(),
            data_body: message.data_body.clone(),
        };
        match decoder.decode(&message)? {
            Decoded::Schema(schema) => upload = Some(store.create(name, schema)?),
            Decoded::Batch(batch) => {
                rows += batch.num_rows() as u64;
                upload
                    .as_mut()
                    .ok_or("batch before schema")?
                    .write(&batch)?;
            }
            Decoded::Nothing => {}
        }
    }
    upload.ok_or("no schema message")?.commit()?;
    Ok((started.elapsed(), rows))
}

/// Ceiling (a): read the Parquet file and encode every batch as FlightData, as
/// the DoGet worker does (`Store::reader` → `Encoder`), dropping the messages.
fn ceiling_get(store: &Store, name: &str) -> Res<(Duration, u64)> {
    let limits = Limits::default();
    let started = Instant::now();
    let reader = store.reader(name, limits.batch_rows)?;
    let mut encoder = Encoder::new(
        IpcWriteOptions::default(),
        limits.target_message_bytes,
        limits.max_message_bytes,
    );
    let mut messages = vec![encoder.schema(reader.schema())];
    let mut rows = 0u64;
    let mut wire = 0usize;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        encoder.batch(&batch, &mut messages)?;
        for message in messages.drain(..) {
            wire += message.data_header.len() + message.data_body.len();
        }
    }
    std::hint::black_box(wire);
    Ok((started.elapsed(), rows))
}

// ---------------------------------------------------------------------------
// Servers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Hangar,
    /// The Arrow cookbook's pyarrow server.
    Reference,
    /// The arrow-flight crate server of `reference_server.rs`.
    ArrowFlight,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Hangar => "hangar",
            Kind::Reference => "reference",
            Kind::ArrowFlight => "arrow-flight",
        }
    }
}

/// A server process on a loopback port; killed and reaped on drop.
struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    spawned: Instant,
    /// Spawn → listening line on stdout.
    line_after: Duration,
    stderr_path: PathBuf,
}

impl Server {
    fn start(kind: Kind, config: &Config, repo: &Path, log_dir: &Path) -> Res<Server> {
        fs::create_dir_all(repo)?;
        let stderr_path = log_dir.join(format!(
            "{}-{}.stderr",
            kind.label(),
            repo.file_name().and_then(|n| n.to_str()).unwrap_or("repo")
        ));
        let stderr = fs::File::create(&stderr_path)?;
        let mut command = match kind {
            Kind::Hangar => {
                let mut c = Command::new(&config.bin);
                c.args(["serve", "--listen", "127.0.0.1:0", "--repo"])
                    .arg(repo);
                c
            }
            Kind::Reference => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cookbook_server.py");
                let mut c = Command::new(&config.python);
                c.arg(script).arg("0").arg(repo);
                c
            }
            Kind::ArrowFlight => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("--serve-arrow-flight").arg(repo);
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawning the {} server: {e}", kind.label()))?;
        support::register_child(child.id());
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<(String, Instant)>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the first line so the child never blocks.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = tx.take() {
                    let _ = tx.send((line, Instant::now()));
                }
            }
        });
        let mut server = Server {
            kind,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned,
            line_after: Duration::ZERO,
            stderr_path,
        };
        let (line, at) = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(got) => got,
            Err(_) => {
                let log = fs::read_to_string(&server.stderr_path).unwrap_or_default();
                return Err(format!(
                    "the {} server printed no listening line within {STARTUP_TIMEOUT:?}\n{log}",
                    kind.label()
                )
                .into());
            }
        };
        server.line_after = at - spawned;
        let uri = line
            .split("listening on grpc://")
            .nth(1)
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        server.addr = uri.trim().parse()?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    fn status_kib(&self, field: &str) -> Option<u64> {
        status_kib(self.pid(), field)
    }

    /// Resets VmHWM to the current RSS; false if the kernel refused.
    fn reset_peak(&self) -> bool {
        fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    async fn client(&self) -> Res<FlightClient> {
        connect(self.addr).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::forget_child(self.child.id());
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples VmRSS of a process every [`SAMPLE_EVERY`] on a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut max, mut samples) = (0u64, 0usize);
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    max = max.max(rss);
                    samples += 1;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            (max, samples)
        });
        Sampler { stop, thread }
    }

    /// Largest VmRSS seen (KiB) and the number of samples.
    fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

// ---------------------------------------------------------------------------
// Client

/// The client's HTTP/2 flow-control window (`HANGAR_BENCH_CLIENT_WINDOW`,
/// bytes per stream; the connection gets twice that), if not tonic's default.
fn client_window() -> Option<u32> {
    std::env::var("HANGAR_BENCH_CLIENT_WINDOW")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&n: &u32| n > 0)
}

async fn connect(addr: SocketAddr) -> Res<FlightClient> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if let Some(window) = client_window() {
        endpoint = endpoint
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.saturating_mul(2));
    }
    if env_or("HANGAR_BENCH_CLIENT_ADAPTIVE", 0u8) != 0 {
        endpoint = endpoint.http2_adaptive_window(true);
    }
    let channel: Channel = tokio::time::timeout(Duration::from_secs(15), endpoint.connect())
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))??;
    let inner = FlightServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
        .max_encoding_message_size(CLIENT_MESSAGE_LIMIT);
    Ok(FlightClient::new_from_inner(inner))
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Res<T>>,
) -> Res<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("{what} took longer than {limit:?}"))?
}

/// DoPut of a prepared message stream; returns the time until the server's
/// answer (the dataset is committed by then).
async fn put_messages(client: &mut FlightClient, messages: Vec<FlightData>) -> Res<Duration> {
    bounded(TRANSFER_TIMEOUT, "DoPut", async {
        let started = Instant::now();
        let mut results = client
            .do_put(stream::iter(messages.into_iter().map(Ok)))
            .await?;
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(started.elapsed())
    })
    .await
}

/// DoGet of a whole dataset, decoding every batch as a client would.
async fn get_all(client: &mut FlightClient, name: &str) -> Res<(Duration, u64)> {
    bounded(TRANSFER_TIMEOUT, "DoGet", async {
        let started = Instant::now();
        let mut batches = client.do_get(Ticket::new(name.to_string())).await?;
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            rows += batch?.num_rows() as u64;
        }
        Ok((started.elapsed(), rows))
    })
    .await
}

/// `n` concurrent DoGets of one dataset, each on its own connection or all
/// on one (`shared`: HTTP/2 streams of one connection). Returns the time from
/// the start until the last one finished.
async fn get_concurrent(
    addr: SocketAddr,
    name: &str,
    n: usize,
    shared: bool,
) -> Res<(Duration, u64)> {
    let mut clients = Vec::new();
    if shared {
        let one = connect(addr).await?;
        for _ in 0..n {
            clients.push(FlightClient::new_from_inner(one.inner().clone()));
        }
    } else {
        for _ in 0..n {
            clients.push(connect(addr).await?);
        }
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let name = name.to_string();
            tokio::spawn(async move { get_all(&mut client, &name).await })
        })
        .collect();
    let mut rows = 0;
    for task in tasks {
        rows += task.await??.1;
    }
    Ok((started.elapsed(), rows))
}

async fn list_all(client: &mut FlightClient) -> Res<usize> {
    bounded(CALL_TIMEOUT, "ListFlights", async {
        let flights: Vec<_> = client
            .list_flights(Vec::<u8>::new())
            .await?
            .try_collect()
            .await?;
        Ok(flights.len())
    })
    .await
}

async fn drop_dataset(client: &mut FlightClient, name: &str) -> Res<()> {
    bounded(CALL_TIMEOUT, "drop_dataset", async {
        let results = client
            .do_action(Action::new("drop_dataset", name.to_string()))
            .await?;
        let _: Vec<_> = results.try_collect().await?;
        Ok(())
    })
    .await
}

/// One transfer by `benches/pyarrow_client.py` (the pyarrow client mode):
/// wall time and rows as the script measured them around the transfer, and
/// the script's own CPU seconds meanwhile.
fn pyarrow(config: &Config, args: &[&str]) -> Res<(Duration, u64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pyarrow_client.py");
    let mut child = Command::new(&config.python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the pyarrow client: {e}"))?;
    let started = Instant::now();
    // Bounded like every other transfer; output is small, so waiting before
    // reading the pipes cannot deadlock.
    while child.try_wait()?.is_none() {
        if started.elapsed() > TRANSFER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(
                format!("pyarrow client {args:?} took longer than {TRANSFER_TIMEOUT:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pyarrow client {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let last = stdout.lines().last().unwrap_or_default();
    let value = hangar::json::Value::parse(last)
        .map_err(|e| format!("pyarrow client printed {last:?}: {e}"))?;
    let field = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("pyarrow client printed no {key}: {last:?}"))
    };
    Ok((
        Duration::from_secs_f64(field("secs")?),
        field("rows")? as u64,
        field("cpu")?,
    ))
}

/// The client's CPU in pyarrow mode is the script's, not this process's.
fn plus_client(mut cpu: Cpu, client: f64) -> Cpu {
    cpu.client += client;
    cpu
}

fn write_ipc_file(path: &Path, table: &[RecordBatch]) -> Res<()> {
    let file = fs::File::create(path)?;
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &schema())?;
    for batch in table {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Statistics

#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    secs: f64,
    rows: u64,
    bytes: u64,
    /// CPU seconds the server process and this process (the client, or the
    /// ceiling's threads) used meanwhile.
    cpu: Option<Cpu>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    server: f64,
    client: f64,
}

impl Rate {
    fn new(elapsed: Duration, rows: u64, bytes: u64) -> Rate {
        Rate {
            secs: elapsed.as_secs_f64(),
            rows,
            bytes,
            cpu: None,
        }
    }
    fn with_cpu(mut self, cpu: Cpu) -> Rate {
        self.cpu = Some(cpu);
        self
    }
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / MB / self.secs
    }
    fn rows_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Measures the CPU time a server and this process spend over an interval.
struct CpuClock {
    server: Option<String>,
    server_start: f64,
    client_start: f64,
}

impl CpuClock {
    fn start(server: Option<u32>) -> CpuClock {
        let server = server.map(|pid| pid.to_string());
        CpuClock {
            server_start: server.as_deref().map_or(0.0, cpu_secs),
            client_start: cpu_secs("self"),
            server,
        }
    }
    fn stop(&self) -> Cpu {
        Cpu {
            server: self
                .server
                .as_deref()
                .map_or(0.0, |pid| cpu_secs(pid) - self.server_start),
            client: cpu_secs("self") - self.client_start,
        }
    }
}

/// The fastest of several runs, and all of them for the log.
fn best(runs: &[Rate]) -> Rate {
    runs.iter()
        .copied()
        .max_by(|a, b| a.mb_s().total_cmp(&b.mb_s()))
        .unwrap_or_default()
}

fn show_runs(runs: &[Rate]) -> String {
    runs.iter()
        .map(|r| format!("{:.0}", r.mb_s()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

/// Nearest-rank percentiles of latencies in milliseconds.
fn latency(mut samples: Vec<f64>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let r = (p * samples.len() as f64).ceil() as usize;
        samples[r.clamp(1, samples.len()) - 1]
    };
    Latency {
        p50: rank(0.50),
        p99: rank(0.99),
        max: samples[samples.len() - 1],
        n: samples.len(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// Measurements

#[derive(Default)]
struct Throughput {
    put: Rate,
    get: Rate,
    get4: Rate,
    /// 4 DoGets on one shared connection.
    get4s: Rate,
    put_runs: Vec<Rate>,
    get_runs: Vec<Rate>,
    get4_runs: Vec<Rate>,
    get4s_runs: Vec<Rate>,
}

#[derive(Default)]
struct Metadata {
    list_cold_ms: f64,
    list: Latency,
    info: Latency,
}

#[derive(Default, Clone, Copy)]
struct Memory {
    idle_kib: u64,
    put_peak_kib: u64,
    get_peak_kib: u64,
    after_kib: u64,
    big_bytes: u64,
    put: Rate,
    get: Rate,
}

#[derive(Default, Clone, Copy)]
struct Startup {
    line_ms: f64,
    first_call_ms: f64,
    worst_first_call_ms: f64,
    runs: usize,
}

struct Results {
    machine: String,
    table_rows: u64,
    table_bytes: u64,
    ceiling_get: Rate,
    ceiling_get4: Rate,
    ceiling_put: Rate,
    ceiling_get_runs: Vec<Rate>,
    ceiling_get4_runs: Vec<Rate>,
    ceiling_put_runs: Vec<Rate>,
    parquet_bytes: u64,
    hangar: Throughput,
    reference: Option<Throughput>,
    arrow_flight: Option<Throughput>,
    hangar_meta: Metadata,
    reference_meta: Option<Metadata>,
    hangar_memory: Option<Memory>,
    reference_memory: Option<Memory>,
    arrow_flight_memory: Option<Memory>,
    hangar_startup: Startup,
    reference_startup: Option<Startup>,
    binary_bytes: u64,
    static_binary_bytes: Option<u64>,
    load_before: String,
    load_after: String,
}

fn run(config: &Config) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("hangar-bench-")
        .tempdir_in(&config.dir)?;
    let logs = work.path().join("logs");
    fs::create_dir_all(&logs)?;
    let load_before = loadavg();
    let machine = machine();
    eprintln!("machine: {machine}; load average {load_before}");
    eprintln!("server: {}", config.bin.display());
    if client_window().is_some() || env_or("HANGAR_BENCH_CLIENT_ADAPTIVE", 0u8) != 0 {
        eprintln!(
            "client: HTTP/2 window {:?}, adaptive {}",
            client_window(),
            env_or("HANGAR_BENCH_CLIENT_ADAPTIVE", 0u8)
        );
    }
    if config.reference || config.pyarrow_client {
        check_python(config)?;
    }

    // The data.
    let started = Instant::now();
    let table = make_table(config.rows, config.batch_rows);
    let table_rows: u64 = table.iter().map(|b| b.num_rows() as u64).sum();
    let table_bytes: u64 = table.iter().map(arrow_bytes).sum();
    let upload = encode_upload(&rt, "table.parquet", &table, config.put_message_bytes)?;
    eprintln!(
        "table: {table_rows} rows in {} batches, {:.1} MB of Arrow data, {} DoPut messages \
         (generated in {:.1} s)",
        table.len(),
        table_bytes as f64 / MB,
        upload.len(),
        started.elapsed().as_secs_f64()
    );

    // The pyarrow client reads the table from an Arrow IPC file.
    let table_file = if config.pyarrow_client {
        let path = work.path().join("table.arrow");
        write_ipc_file(&path, &table)?;
        eprintln!("client: pyarrow ({})", config.python.display());
        Some(path)
    } else {
        None
    };

    // Ceilings.
    let ceiling_repo = work.path().join("ceiling");
    let store = Store::open(&ceiling_repo, Codec::Snappy)?;
    let mut put_runs = vec![];
    let mut get_runs = vec![];
    for run in 0..config.runs {
        let clock = CpuClock::start(None);
        let (elapsed, rows) = ceiling_put(&store, "table.parquet", &upload)?;
        check_rows(rows, table_rows, "ceiling (b)")?;
        put_runs.push(Rate::new(elapsed, rows, table_bytes).with_cpu(clock.stop()));
        let clock = CpuClock::start(None);
        let (elapsed, rows) = ceiling_get(&store, "table.parquet")?;
        check_rows(rows, table_rows, "ceiling (a)")?;
        get_runs.push(Rate::new(elapsed, rows, table_bytes).with_cpu(clock.stop()));
        eprintln!(
            "ceiling run {}: (b) decode+write {:.0} MB/s, (a) read+encode {:.0} MB/s",
            run + 1,
            put_runs[run].mb_s(),
            get_runs[run].mb_s()
        );
    }
    let parquet_bytes = fs::metadata(ceiling_repo.join("table.parquet"))?.len();
    let mut get4_runs = vec![];
    for _ in 0..config.runs {
        let clock = CpuClock::start(None);
        let started = Instant::now();
        let rows = std::thread::scope(|scope| -> Res<u64> {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| ceiling_get(&store, "table.parquet")))
                .collect();
            let mut rows = 0;
            for handle in handles {
                rows += handle.join().map_err(|_| "ceiling thread panicked")??.1;
            }
            Ok(rows)
        })?;
        get4_runs.push(Rate::new(started.elapsed(), rows, 4 * table_bytes).with_cpu(clock.stop()));
    }
    eprintln!("ceiling (a) 4 threads: {} MB/s", show_runs(&get4_runs));
    drop(store);
    fs::remove_dir_all(&ceiling_repo)?;

    // Throughput through the servers, run by run interleaved.
    let hangar_server = Server::start(Kind::Hangar, config, &work.path().join("hangar"), &logs)?;
    let reference_server = if config.reference {
        Some(Server::start(
            Kind::Reference,
            config,
            &work.path().join("reference"),
            &logs,
        )?)
    } else {
        None
    };
    let arrow_flight_server = if config.arrow_flight {
        Some(Server::start(
            Kind::ArrowFlight,
            config,
            &work.path().join("arrow-flight"),
            &logs,
        )?)
    } else {
        None
    };
    let mut hangar = Throughput::default();
    let mut reference = Throughput::default();
    let mut arrow_flight = Throughput::default();
    rt.block_on(async {
        let mut hangar_client = hangar_server.client().await?;
        let mut reference_client = match &reference_server {
            Some(server) => Some(server.client().await?),
            None => None,
        };
        let mut arrow_flight_client = match &arrow_flight_server {
            Some(server) => Some(server.client().await?),
            None => None,
        };
        for run in 0..config.runs {
            for (server, client, out) in [
                (Some(&hangar_server), Some(&mut hangar_client), &mut hangar),
                (
                    arrow_flight_server.as_ref(),
                    arrow_flight_client.as_mut(),
                    &mut arrow_flight,
                ),
                (
                    reference_server.as_ref(),
                    reference_client.as_mut(),
                    &mut reference,
                ),
            ] {
                let (Some(server), Some(client)) = (server, client) else {
                    continue;
                };
                let pid = Some(server.pid());
                if let Some(file) = &table_file {
                    let uri = format!("grpc://{}", server.addr);
                    let file = file.to_str().ok_or("temp path is not UTF-8")?;
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows, py) =
                        pyarrow(config, &["put", &uri, "table.parquet", file])?;
                    check_rows(rows, table_rows, "pyarrow DoPut")?;
                    let cpu = plus_client(clock.stop(), py);
                    out.put_runs
                        .push(Rate::new(elapsed, rows, table_bytes).with_cpu(cpu));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows, py) = pyarrow(config, &["get", &uri, "table.parquet"])?;
                    check_rows(rows, table_rows, "pyarrow DoGet")?;
                    let cpu = plus_client(clock.stop(), py);
                    out.get_runs
                        .push(Rate::new(elapsed, rows, table_bytes).with_cpu(cpu));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows, py) = pyarrow(config, &["get4", &uri, "table.parquet"])?;
                    check_rows(rows, 4 * table_rows, "pyarrow 4 DoGets")?;
                    let cpu = plus_client(clock.stop(), py);
                    out.get4_runs
                        .push(Rate::new(elapsed, rows, 4 * table_bytes).with_cpu(cpu));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows, py) =
                        pyarrow(config, &["get4shared", &uri, "table.parquet"])?;
                    check_rows(rows, 4 * table_rows, "pyarrow 4 DoGets, one connection")?;
                    let cpu = plus_client(clock.stop(), py);
                    out.get4s_runs
                        .push(Rate::new(elapsed, rows, 4 * table_bytes).with_cpu(cpu));
                } else {
                    let clock = CpuClock::start(pid);
                    let elapsed = put_messages(client, upload.clone()).await?;
                    out.put_runs
                        .push(Rate::new(elapsed, table_rows, table_bytes).with_cpu(clock.stop()));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows) = get_all(client, "table.parquet").await?;
                    check_rows(rows, table_rows, "DoGet")?;
                    out.get_runs
                        .push(Rate::new(elapsed, rows, table_bytes).with_cpu(clock.stop()));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows) =
                        get_concurrent(server.addr, "table.parquet", 4, false).await?;
                    check_rows(rows, 4 * table_rows, "4 DoGets")?;
                    out.get4_runs
                        .push(Rate::new(elapsed, rows, 4 * table_bytes).with_cpu(clock.stop()));
                    let clock = CpuClock::start(pid);
                    let (elapsed, rows) =
                        get_concurrent(server.addr, "table.parquet", 4, true).await?;
                    check_rows(rows, 4 * table_rows, "4 DoGets, one connection")?;
                    out.get4s_runs
                        .push(Rate::new(elapsed, rows, 4 * table_bytes).with_cpu(clock.stop()));
                }
                eprintln!(
                    "{} run {}: DoPut {:.0} MB/s, DoGet {:.0} MB/s, 4 DoGets {:.0} MB/s \
                     (one connection: {:.0} MB/s)",
                    server.kind.label(),
                    run + 1,
                    out.put_runs[run].mb_s(),
                    out.get_runs[run].mb_s(),
                    out.get4_runs[run].mb_s(),
                    out.get4s_runs[run].mb_s()
                );
            }
        }
        drop_dataset(&mut hangar_client, "table.parquet").await?;
        for client in [reference_client.as_mut(), arrow_flight_client.as_mut()]
            .into_iter()
            .flatten()
        {
            drop_dataset(client, "table.parquet").await?;
        }
        Res::Ok(())
    })?;
    for t in [&mut hangar, &mut reference, &mut arrow_flight] {
        t.put = best(&t.put_runs);
        t.get = best(&t.get_runs);
        t.get4 = best(&t.get4_runs);
        t.get4s = best(&t.get4s_runs);
    }
    drop(hangar_server);
    drop(reference_server);
    drop(arrow_flight_server);
    drop(upload);
    drop(table);

    // Metadata latency over a repository of small datasets.
    let meta_repo = work.path().join("meta");
    make_small_datasets(&meta_repo, config.datasets)?;
    let hangar_meta = metadata(&rt, Kind::Hangar, config, &meta_repo, &logs)?;
    let reference_meta = if config.reference {
        Some(metadata(&rt, Kind::Reference, config, &meta_repo, &logs)?)
    } else {
        None
    };
    fs::remove_dir_all(&meta_repo)?;

    // Memory while moving a large dataset.
    let arrow_flight_memory = if config.big_bytes > 0 && config.arrow_flight {
        Some(memory(
            &rt,
            Kind::ArrowFlight,
            config,
            &work.path().join("big-arrow-flight"),
            &logs,
        )?)
    } else {
        None
    };
    let (hangar_memory, reference_memory) = if config.big_bytes > 0 {
        let h = memory(
            &rt,
            Kind::Hangar,
            config,
            &work.path().join("big-hangar"),
            &logs,
        )?;
        let r = if config.reference {
            Some(memory(
                &rt,
                Kind::Reference,
                config,
                &work.path().join("big-reference"),
                &logs,
            )?)
        } else {
            None
        };
        (Some(h), r)
    } else {
        (None, None)
    };

    // Startup.
    let hangar_startup = startup(&rt, Kind::Hangar, config, work.path(), &logs, 7)?;
    let reference_startup = if config.reference {
        Some(startup(
            &rt,
            Kind::Reference,
            config,
            work.path(),
            &logs,
            3,
        )?)
    } else {
        None
    };

    let binary_bytes = fs::metadata(&config.bin)?.len();
    let static_binary_bytes = match &config.static_bin {
        Some(path) => Some(fs::metadata(path)?.len()),
        None => None,
    };

    let results = Results {
        machine,
        table_rows,
        table_bytes,
        ceiling_get: best(&get_runs),
        ceiling_get4: best(&get4_runs),
        ceiling_put: best(&put_runs),
        ceiling_get_runs: get_runs,
        ceiling_get4_runs: get4_runs,
        ceiling_put_runs: put_runs,
        parquet_bytes,
        hangar,
        reference: config.reference.then_some(reference),
        arrow_flight: config.arrow_flight.then_some(arrow_flight),
        hangar_meta,
        reference_meta,
        hangar_memory,
        reference_memory,
        arrow_flight_memory,
        hangar_startup,
        reference_startup,
        binary_bytes,
        static_binary_bytes,
        load_before,
        load_after: loadavg(),
    };
    println!("{}", report(config, &results));
    Ok(())
}

fn check_rows(got: u64, want: u64, what: &str) -> Res<()> {
    if got != want {
        return Err(format!("{what}: {got} rows arrived, {want} expected").into());
    }
    Ok(())
}

fn check_python(config: &Config) -> Res<()> {
    let output = Command::new(&config.python)
        .args([
            "-c",
            "import pyarrow.flight, pyarrow.parquet; print(pyarrow.__version__)",
        ])
        .output()
        .map_err(|e| {
            format!(
                "running {} for the reference server: {e} (set HANGAR_PYTHON, or \
                 HANGAR_BENCH_REFERENCE=0 to skip it)",
                config.python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot import pyarrow.flight (set HANGAR_PYTHON, or HANGAR_BENCH_REFERENCE=0): {}",
            config.python.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    eprintln!(
        "reference: pyarrow {} via {}",
        String::from_utf8_lossy(&output.stdout).trim(),
        config.python.display()
    );
    Ok(())
}

/// `count` datasets of 100 rows each, written with hangar's store.
fn make_small_datasets(repo: &Path, count: usize) -> Res<()> {
    let started = Instant::now();
    let store = Store::open(repo, Codec::Snappy)?;
    let schema = schema();
    for i in 0..count {
        let batch = make_batch(&schema, 0, 100, i as u64);
        let mut upload = store.create(&format!("small-{i:05}.parquet"), schema.clone())?;
        upload.write(&batch)?;
        upload.commit()?;
    }
    eprintln!(
        "metadata: {count} small datasets written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn metadata(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    config: &Config,
    repo: &Path,
    logs: &Path,
) -> Res<Metadata> {
    let server = Server::start(kind, config, repo, logs)?;
    let (info_calls, list_calls, budget) = match kind {
        Kind::Hangar => (config.info_calls, config.list_calls, Duration::MAX),
        // The arrow-flight server has no GetFlightInfo; the metadata figures
        // compare hangar with the cookbook's server only.
        Kind::Reference | Kind::ArrowFlight => (
            config.info_calls,
            config.list_calls,
            REFERENCE_LATENCY_BUDGET,
        ),
    };
    let result = rt.block_on(async {
        let mut client = server.client().await?;
        // The first listing reads every footer (hangar then caches them).
        let started = Instant::now();
        let count = list_all(&mut client).await?;
        let list_cold_ms = ms(started.elapsed());
        check_rows(count as u64, config.datasets as u64, "ListFlights")?;

        let mut samples = vec![];
        let series = Instant::now();
        while samples.len() < list_calls && (samples.len() < 10 || series.elapsed() < budget) {
            let started = Instant::now();
            let count = list_all(&mut client).await?;
            samples.push(ms(started.elapsed()));
            check_rows(count as u64, config.datasets as u64, "ListFlights")?;
        }
        let list = latency(samples);

        let mut rng = Rng(42);
        let mut samples = vec![];
        let series = Instant::now();
        while samples.len() < info_calls && (samples.len() < 100 || series.elapsed() < budget) {
            let i = rng.next() % config.datasets as u64;
            let descriptor = FlightDescriptor::new_path(vec![format!("small-{i:05}.parquet")]);
            let started = Instant::now();
            let info = bounded(CALL_TIMEOUT, "GetFlightInfo", async {
                Ok(client.get_flight_info(descriptor).await?)
            })
            .await?;
            samples.push(ms(started.elapsed()));
            check_rows(info.total_records as u64, 100, "GetFlightInfo")?;
        }
        let info = latency(samples);
        Res::Ok(Metadata {
            list_cold_ms,
            list,
            info,
        })
    })?;
    eprintln!(
        "{} metadata: ListFlights cold {:.1} ms, warm p50 {:.2} ms p99 {:.2} ms (n={}); \
         GetFlightInfo p50 {:.3} ms p99 {:.3} ms (n={})",
        kind.label(),
        result.list_cold_ms,
        result.list.p50,
        result.list.p99,
        result.list.n,
        result.info.p50,
        result.info.p99,
        result.info.n
    );
    Ok(result)
}

/// Idle RSS, then peak RSS while putting and while getting `big_bytes` of
/// Arrow data, generated batch by batch on the client so the client never
/// holds it all.
fn memory(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    config: &Config,
    repo: &Path,
    logs: &Path,
) -> Res<Memory> {
    let server = Server::start(kind, config, repo, logs)?;
    let schema = schema();
    let template = make_batch(&schema, 0, config.batch_rows, 7);
    let per_batch = arrow_bytes(&template);
    let batches = config.big_bytes.div_ceil(per_batch).max(1);
    let rows = batches * config.batch_rows as u64;
    let big_bytes = batches * per_batch;
    let name = "big.parquet";
    let result = rt.block_on(async {
        let mut client = server.client().await?;
        list_all(&mut client).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_kib = server.status_kib("VmRSS").ok_or("no VmRSS")?;

        // Put: every batch shares the template's columns but the id sequence.
        let peak_reset = server.reset_peak();
        let sampler = Sampler::start(server.pid());
        let uri = format!("grpc://{}", server.addr);
        let template_file = repo.with_extension("arrow");
        let put_elapsed = if config.pyarrow_client {
            write_ipc_file(&template_file, std::slice::from_ref(&template))?;
            let file = template_file.to_str().ok_or("temp path is not UTF-8")?;
            let count = batches.to_string();
            let (elapsed, put_rows, _) = pyarrow(config, &["bigput", &uri, name, file, &count])?;
            check_rows(put_rows, rows, "large pyarrow DoPut")?;
            elapsed
        } else {
            let batch_rows = config.batch_rows;
            let generated = stream::iter(0..batches).map(move |i| {
                let start = (i * batch_rows as u64) as i64;
                let mut columns = template.columns().to_vec();
                columns[0] = Arc::new(Int64Array::from_iter_values(
                    start..start + batch_rows as i64,
                ));
                RecordBatch::try_new(template.schema(), columns).map_err(FlightError::from)
            });
            let messages = FlightDataEncoderBuilder::new()
                .with_max_flight_data_size(config.put_message_bytes)
                .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name.to_string()])))
                .build(generated);
            bounded(TRANSFER_TIMEOUT, "large DoPut", async {
                let started = Instant::now();
                let mut results = client.do_put(messages).await?;
                while let Some(result) = results.next().await {
                    result?;
                }
                Ok(started.elapsed())
            })
            .await?
        };
        let (sampled, samples_put) = sampler.stop();
        let hwm = if peak_reset {
            server.status_kib("VmHWM").unwrap_or(0)
        } else {
            0
        };
        let put_peak_kib = sampled.max(hwm);

        // Get.
        let peak_reset = server.reset_peak();
        let sampler = Sampler::start(server.pid());
        let (get_elapsed, got) = if config.pyarrow_client {
            let (elapsed, got, _) = pyarrow(config, &["get", &uri, name])?;
            (elapsed, got)
        } else {
            get_all(&mut client, name).await?
        };
        let (sampled, samples_get) = sampler.stop();
        let hwm = if peak_reset {
            server.status_kib("VmHWM").unwrap_or(0)
        } else {
            0
        };
        let get_peak_kib = sampled.max(hwm);
        check_rows(got, rows, "large DoGet")?;
        drop_dataset(&mut client, name).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_kib = server.status_kib("VmRSS").unwrap_or(0);
        eprintln!(
            "{} memory: idle {:.1} MiB, peak while putting {:.1} MiB ({samples_put} samples), \
             while getting {:.1} MiB ({samples_get} samples), after {:.1} MiB; VmHWM reset: {}",
            kind.label(),
            idle_kib as f64 / 1024.0,
            put_peak_kib as f64 / 1024.0,
            get_peak_kib as f64 / 1024.0,
            after_kib as f64 / 1024.0,
            if peak_reset { "yes" } else { "no" }
        );
        Res::Ok(Memory {
            idle_kib,
            put_peak_kib,
            get_peak_kib,
            after_kib,
            big_bytes,
            put: Rate::new(put_elapsed, rows, big_bytes),
            get: Rate::new(get_elapsed, rows, big_bytes),
        })
    });
    drop(server);
    let _ = fs::remove_dir_all(repo);
    let _ = fs::remove_file(repo.with_extension("arrow"));
    result
}

/// Spawn → listening line → first successful ListFlights, over an empty
/// repository; medians of `runs` starts.
fn startup(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    config: &Config,
    work: &Path,
    logs: &Path,
    runs: usize,
) -> Res<Startup> {
    let mut lines = vec![];
    let mut firsts = vec![];
    for run in 0..runs {
        let repo = work.join(format!("startup-{}-{run}", kind.label()));
        let server = Server::start(kind, config, &repo, logs)?;
        let first = rt.block_on(bounded(STARTUP_TIMEOUT, "first ListFlights", async {
            loop {
                let attempt = async {
                    let mut client = connect(server.addr).await?;
                    list_all(&mut client).await
                };
                if attempt.await.is_ok() {
                    return Ok(server.spawned.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }))?;
        lines.push(ms(server.line_after));
        firsts.push(ms(first));
        drop(server);
        let _ = fs::remove_dir_all(&repo);
    }
    let line = latency(lines);
    let first = latency(firsts);
    eprintln!(
        "{} startup: listening line after {:.1} ms, first ListFlights after {:.1} ms \
         (medians of {runs}; worst {:.1} ms)",
        kind.label(),
        line.p50,
        first.p50,
        first.max
    );
    Ok(Startup {
        line_ms: line.p50,
        first_call_ms: first.p50,
        worst_first_call_ms: first.max,
        runs,
    })
}

// ---------------------------------------------------------------------------
// Machine

// ---------------------------------------------------------------------------
// Report

struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(
        &mut self,
        figure: &str,
        value: String,
        ceiling: String,
        reference: String,
        target: &str,
        met: String,
    ) {
        self.rows.push([
            figure.to_string(),
            value,
            ceiling,
            reference,
            target.to_string(),
            met,
        ]);
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let header = [
            "Figure",
            "Value",
            "vs ceiling",
            "vs reference",
            "Target",
            "Met?",
        ];
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

fn rate_text(rate: &Rate) -> String {
    format!(
        "{:.0} MB/s ({:.2} M rows/s)",
        rate.mb_s(),
        rate.rows_s() / 1e6
    )
}

/// The best run, with the median of all runs after it.
fn runs_text(best: &Rate, runs: &[Rate]) -> String {
    let mut rates: Vec<f64> = runs.iter().map(Rate::mb_s).collect();
    rates.sort_by(f64::total_cmp);
    if rates.len() < 2 {
        return rate_text(best);
    }
    format!("{}; median {:.0}", rate_text(best), rates[rates.len() / 2])
}

fn pct(value: f64, of: f64) -> String {
    format!("{:.0} %", 100.0 * value / of)
}

fn times(value: f64, of: f64) -> String {
    format!("{:.2}×", value / of)
}

fn yes(ok: bool) -> String {
    if ok { "yes" } else { "**no**" }.to_string()
}

fn all_met(checks: &[Option<bool>]) -> String {
    let known: Vec<bool> = checks.iter().flatten().copied().collect();
    if known.is_empty() {
        return "n/a".into();
    }
    let parts: Vec<String> = checks
        .iter()
        .map(|c| match c {
            Some(true) => "yes".into(),
            Some(false) => "**no**".into(),
            None => "n/a".into(),
        })
        .collect();
    parts.join(" / ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(config: &Config, r: &Results) -> String {
    let mut t = Table { rows: vec![] };
    let none = || "–".to_string();
    let reference = r.reference.as_ref();

    // Ceilings.
    t.row(
        "Ceiling (a): Parquet → IPC FlightData, in process, 1 thread",
        runs_text(&r.ceiling_get, &r.ceiling_get_runs),
        "100 %".into(),
        none(),
        "",
        none(),
    );
    t.row(
        "Ceiling (a), 4 threads at once (aggregate)",
        runs_text(&r.ceiling_get4, &r.ceiling_get4_runs),
        times(r.ceiling_get4.mb_s(), r.ceiling_get.mb_s()),
        none(),
        "",
        none(),
    );
    t.row(
        "Ceiling (b): IPC FlightData → Parquet, in process",
        runs_text(&r.ceiling_put, &r.ceiling_put_runs),
        "100 %".into(),
        none(),
        "",
        none(),
    );

    // Throughput.
    let h = &r.hangar;
    let get_ceiling = h.get.mb_s() / r.ceiling_get.mb_s();
    let get_reference = reference.map(|x| h.get.mb_s() / x.get.mb_s());
    t.row(
        "hangar DoGet",
        runs_text(&h.get, &h.get_runs),
        pct(h.get.mb_s(), r.ceiling_get.mb_s()),
        get_reference.map_or_else(none, |x| format!("{x:.2}×")),
        "≥ 90 % of (a); ≥ 3× reference",
        all_met(&[Some(get_ceiling >= 0.90), get_reference.map(|x| x >= 3.0)]),
    );
    let put_ceiling = h.put.mb_s() / r.ceiling_put.mb_s();
    let put_reference = reference.map(|x| h.put.mb_s() / x.put.mb_s());
    t.row(
        "hangar DoPut",
        runs_text(&h.put, &h.put_runs),
        pct(h.put.mb_s(), r.ceiling_put.mb_s()),
        put_reference.map_or_else(none, |x| format!("{x:.2}×")),
        "≥ 85 % of (b); ≥ 1.5× reference",
        all_met(&[Some(put_ceiling >= 0.85), put_reference.map(|x| x >= 1.5)]),
    );
    let scaling = h.get4.mb_s() / h.get.mb_s();
    t.row(
        "hangar 4 concurrent DoGets (aggregate)",
        format!(
            "{} = {scaling:.2}× one DoGet",
            runs_text(&h.get4, &h.get4_runs)
        ),
        pct(h.get4.mb_s(), r.ceiling_get4.mb_s()) + " of (a) ×4 threads",
        reference.map_or_else(none, |x| times(h.get4.mb_s(), x.get4.mb_s())),
        "≥ 1.7× one DoGet",
        yes(scaling >= 1.7),
    );
    if let Some(x) = reference {
        t.row(
            "reference DoGet",
            runs_text(&x.get, &x.get_runs),
            pct(x.get.mb_s(), r.ceiling_get.mb_s()),
            "1.00×".into(),
            "",
            none(),
        );
        t.row(
            "reference DoPut",
            runs_text(&x.put, &x.put_runs),
            pct(x.put.mb_s(), r.ceiling_put.mb_s()),
            "1.00×".into(),
            "",
            none(),
        );
        t.row(
            "reference 4 concurrent DoGets (aggregate)",
            format!(
                "{} = {:.2}× one DoGet",
                runs_text(&x.get4, &x.get4_runs),
                x.get4.mb_s() / x.get.mb_s()
            ),
            none(),
            "1.00×".into(),
            "",
            none(),
        );
    }

    // Metadata.
    let hm = &r.hangar_meta;
    let rm = r.reference_meta.as_ref();
    t.row(
        &format!("GetFlightInfo latency ({} datasets)", config.datasets),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms (n={})",
            hm.info.p50, hm.info.p99, hm.info.n
        ),
        none(),
        rm.map_or_else(none, |x| {
            format!(
                "p99 {} (ref p50 {:.2} ms, p99 {:.2} ms)",
                times(hm.info.p99, x.info.p99),
                x.info.p50,
                x.info.p99
            )
        }),
        "p99 ≤ 1 ms",
        yes(hm.info.p99 <= 1.0),
    );
    t.row(
        &format!(
            "ListFlights of {} datasets, footers cached",
            config.datasets
        ),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms (n={})",
            hm.list.p50, hm.list.p99, hm.list.n
        ),
        none(),
        rm.map_or_else(none, |x| {
            format!(
                "p99 {} (ref p50 {:.0} ms, p99 {:.0} ms, n={})",
                times(hm.list.p99, x.list.p99),
                x.list.p50,
                x.list.p99,
                x.list.n
            )
        }),
        "p99 ≤ 50 ms",
        yes(hm.list.p99 <= 50.0),
    );
    t.row(
        "ListFlights, first call after start (footers read)",
        format!("{:.1} ms", hm.list_cold_ms),
        none(),
        rm.map_or_else(none, |x| {
            format!(
                "{} (ref {:.0} ms)",
                times(hm.list_cold_ms, x.list_cold_ms),
                x.list_cold_ms
            )
        }),
        "",
        none(),
    );

    // Memory.
    if let Some(m) = &r.hangar_memory {
        let rmem = r.reference_memory.as_ref();
        let gb = m.big_bytes as f64 / 1e9;
        t.row(
            "Idle RSS",
            format!("{:.1} MiB", mib(m.idle_kib)),
            none(),
            rmem.map_or_else(none, |x| {
                format!(
                    "{} (ref {:.1} MiB)",
                    times(m.idle_kib as f64, x.idle_kib as f64),
                    mib(x.idle_kib)
                )
            }),
            "≤ 16 MiB",
            yes(mib(m.idle_kib) <= 16.0),
        );
        let put_delta = mib(m.put_peak_kib.saturating_sub(m.idle_kib));
        t.row(
            &format!("Peak RSS − idle, DoPut of {gb:.1} GB"),
            format!(
                "{put_delta:.1} MiB (peak {:.1} MiB; {:.0} MB/s)",
                mib(m.put_peak_kib),
                m.put.mb_s()
            ),
            none(),
            rmem.map_or_else(none, |x| {
                let d = mib(x.put_peak_kib.saturating_sub(x.idle_kib));
                format!(
                    "{} (ref {d:.1} MiB; {:.0} MB/s)",
                    times(put_delta, d),
                    x.put.mb_s()
                )
            }),
            "≤ 64 MiB",
            yes(put_delta <= 64.0),
        );
        let get_delta = mib(m.get_peak_kib.saturating_sub(m.idle_kib));
        t.row(
            &format!("Peak RSS − idle, DoGet of {gb:.1} GB"),
            format!(
                "{get_delta:.1} MiB (peak {:.1} MiB; {:.0} MB/s)",
                mib(m.get_peak_kib),
                m.get.mb_s()
            ),
            none(),
            rmem.map_or_else(none, |x| {
                let d = mib(x.get_peak_kib.saturating_sub(x.idle_kib));
                format!(
                    "{} (ref {d:.1} MiB; {:.0} MB/s)",
                    times(get_delta, d),
                    x.get.mb_s()
                )
            }),
            "≤ 64 MiB",
            yes(get_delta <= 64.0),
        );
        t.row(
            "RSS after both, idle again",
            format!("{:.1} MiB", mib(m.after_kib)),
            none(),
            rmem.map_or_else(none, |x| format!("ref {:.1} MiB", mib(x.after_kib))),
            "",
            none(),
        );
    }

    // Startup and size.
    let s = &r.hangar_startup;
    t.row(
        "Startup: spawn → first ListFlights answered",
        format!(
            "{:.1} ms (listening line {:.1} ms; worst of {} {:.1} ms)",
            s.first_call_ms, s.line_ms, s.runs, s.worst_first_call_ms
        ),
        none(),
        r.reference_startup.as_ref().map_or_else(none, |x| {
            format!(
                "{} (ref {:.0} ms)",
                times(s.first_call_ms, x.first_call_ms),
                x.first_call_ms
            )
        }),
        "≤ 50 ms",
        yes(s.first_call_ms <= 50.0),
    );
    t.row(
        "Binary size, release (gnu, stripped)",
        format!("{:.2} MiB", r.binary_bytes as f64 / MIB),
        none(),
        none(),
        "",
        none(),
    );
    if let Some(bytes) = r.static_binary_bytes {
        t.row(
            "Binary size, static glibc (+crt-static)",
            format!("{:.2} MiB", bytes as f64 / MIB),
            none(),
            none(),
            "",
            none(),
        );
    }

    // Where the CPU went, for the runs in the table.
    let mut cpu_rows: Vec<(&str, &Rate)> = vec![
        ("Ceiling (a), 1 thread", &r.ceiling_get),
        ("Ceiling (a), 4 threads", &r.ceiling_get4),
        ("Ceiling (b)", &r.ceiling_put),
        ("hangar DoGet", &h.get),
        ("hangar DoPut", &h.put),
        ("hangar 4 DoGets", &h.get4),
    ];
    if let Some(x) = &r.arrow_flight {
        cpu_rows.push(("arrow-flight DoGet", &x.get));
        cpu_rows.push(("arrow-flight DoPut", &x.put));
        cpu_rows.push(("arrow-flight 4 DoGets", &x.get4));
    }
    if let Some(x) = reference {
        cpu_rows.push(("reference DoGet", &x.get));
        cpu_rows.push(("reference DoPut", &x.put));
        cpu_rows.push(("reference 4 DoGets", &x.get4));
    }
    let mut cpu = String::new();
    let _ = writeln!(
        cpu,
        "| Run | Wall s | Server CPU s | Client (or in-process) CPU s | Cores busy | \
         Server CPU s per GB | Client CPU s per GB |"
    );
    let _ = writeln!(cpu, "|---|---|---|---|---|---|---|");
    for (name, rate) in cpu_rows {
        let Some(c) = rate.cpu else { continue };
        let gb = rate.bytes as f64 / 1e9;
        let server = |v: f64| {
            if name.starts_with("Ceiling") {
                "–".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        let _ = writeln!(
            cpu,
            "| {name} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} |",
            rate.secs,
            server(c.server),
            c.client,
            (c.server + c.client) / rate.secs,
            server(c.server / gb),
            c.client / gb
        );
    }

    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "## hangar flight benchmark");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Machine: {}. Load average {} before, {} after.",
        r.machine, r.load_before, r.load_after
    );
    let _ = writeln!(
        out,
        "Data: {} rows (int64 sequence, float64, 12-character strings from 100 labels, int32), \
         {:.1} MB of Arrow data in {}-row batches; {:.1} MB as Snappy Parquet. \
         Throughput is the best of {} runs (the median follows it); MB = 10^6 bytes of \
         Arrow data. Client: {}.",
        r.table_rows,
        r.table_bytes as f64 / MB,
        config.batch_rows,
        r.parquet_bytes as f64 / MB,
        config.runs,
        if config.pyarrow_client {
            "pyarrow.flight (benches/pyarrow_client.py; its CPU is the client CPU)"
        } else {
            "the arrow-flight Rust client"
        }
    );
    let _ = writeln!(out);
    out.push_str(&t.markdown());
    if let Some(x) = &r.arrow_flight {
        let _ = writeln!(out);
        out.push_str(&versus_arrow_flight(
            h,
            x,
            r.hangar_memory.as_ref(),
            r.arrow_flight_memory.as_ref(),
        ));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU time of the runs above (from /proc/PID/stat; \"client\" is the benchmark \
         process, which also runs the ceilings; cores busy = CPU seconds of both / wall \
         seconds, out of {} CPUs):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out);
    out.push_str(&cpu);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Runs (MB/s): ceiling (a) {}; ceiling (b) {}; hangar DoPut {}, DoGet {}, 4 DoGets {}, \
         4 DoGets on one connection {}{}",
        show_runs(&r.ceiling_get_runs),
        show_runs(&r.ceiling_put_runs),
        show_runs(&h.put_runs),
        show_runs(&h.get_runs),
        show_runs(&h.get4_runs),
        show_runs(&h.get4s_runs),
        reference.map_or_else(String::new, |x| format!(
            "; reference DoPut {}, DoGet {}, 4 DoGets {}",
            show_runs(&x.put_runs),
            show_runs(&x.get_runs),
            show_runs(&x.get4_runs)
        ))
    );
    if let Some(x) = &r.arrow_flight {
        let _ = writeln!(
            out,
            "Runs (MB/s), arrow-flight server: DoPut {}, DoGet {}, 4 DoGets {}, \
             4 DoGets on one connection {}",
            show_runs(&x.put_runs),
            show_runs(&x.get_runs),
            show_runs(&x.get4_runs),
            show_runs(&x.get4s_runs)
        );
    }
    out
}

/// hangar against the arrow-flight crate server (issue goals: ≥ 1.2× on
/// throughput), figure by figure: hangar / that server for every row.
fn versus_arrow_flight(
    h: &Throughput,
    x: &Throughput,
    hm: Option<&Memory>,
    xm: Option<&Memory>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hangar and the arrow-flight crate server (benches/reference_server.rs), same client \
         and data, run by run interleaved; the ratio is hangar / arrow-flight (above 1 is \
         better for throughput, below 1 for CPU and memory):"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Figure | hangar | arrow-flight | hangar / arrow-flight | Target | Met? |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (name, a, b) in [
        ("DoPut", &h.put, &x.put),
        ("DoGet", &h.get, &x.get),
        (
            "4 concurrent DoGets, 4 connections (aggregate)",
            &h.get4,
            &x.get4,
        ),
        (
            "4 concurrent DoGets, one connection (aggregate)",
            &h.get4s,
            &x.get4s,
        ),
    ] {
        let ratio = a.mb_s() / b.mb_s();
        let _ = writeln!(
            out,
            "| {name}, MB/s (best run) | {:.0} | {:.0} | {ratio:.2}× | ≥ 1.20× | {} |",
            a.mb_s(),
            b.mb_s(),
            yes(ratio >= 1.2)
        );
        if let (Some(ca), Some(cb)) = (a.cpu, b.cpu) {
            let per_gb = |c: f64, r: &Rate| c / (r.bytes as f64 / 1e9);
            let (pa, pb) = (per_gb(ca.server, a), per_gb(cb.server, b));
            let _ = writeln!(
                out,
                "| {name}, server CPU s per GB | {pa:.2} | {pb:.2} | {:.2}× | | |",
                pa / pb
            );
        }
    }
    if let (Some(hm), Some(xm)) = (hm, xm) {
        let gb = hm.big_bytes as f64 / 1e9;
        for (name, a, b) in [
            ("Idle RSS, MiB".to_string(), hm.idle_kib, xm.idle_kib),
            (
                format!("Peak RSS − idle, DoPut of {gb:.1} GB, MiB"),
                hm.put_peak_kib.saturating_sub(hm.idle_kib),
                xm.put_peak_kib.saturating_sub(xm.idle_kib),
            ),
            (
                format!("Peak RSS − idle, DoGet of {gb:.1} GB, MiB"),
                hm.get_peak_kib.saturating_sub(hm.idle_kib),
                xm.get_peak_kib.saturating_sub(xm.idle_kib),
            ),
            (
                "RSS after both, idle again, MiB".to_string(),
                hm.after_kib,
                xm.after_kib,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.2}× | | |",
                mib(a),
                mib(b),
                a as f64 / b.max(1) as f64
            );
        }
    }
    out
}
