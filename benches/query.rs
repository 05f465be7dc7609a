//! The query benchmark: `cargo bench --bench query` (see benches/README.md).
//!
//! Starts the release `hangar serve` over a temporary repository, uploads one
//! table (8M rows by default: a sorted timestamp `ts`, a float64, a string from
//! 100 labels, an int32; about 8 row groups), then measures, best of N runs,
//! run by run interleaved so that load from elsewhere hits every figure alike:
//!
//! 1. the whole dataset in one DoGet of a plain ticket: the **baseline**;
//! 2. a 4-partition query read by 4 concurrent DoGets, one per endpoint, each
//!    on its own connection;
//! 3. a projection to 1 of the 4 columns;
//! 4. a filter keeping ~1 % of the rows on the sorted column (`ts >= X`), with
//!    the row groups kept / total from the FlightInfo's `app_metadata`;
//! 5. full reads with IPC body compression none, lz4 and zstd: bytes on the
//!    wire (FlightData header + body as the client receives them), wall time,
//!    and the server's CPU seconds per GB of Arrow data.
//!
//! Query timings include the GetFlightInfo call that plans them. The client
//! decodes every batch (and decompresses), as a real client would. A Markdown
//! table goes to stdout; progress to stderr. Every wait is bounded and the
//! server is killed when the run ends, fails or overruns.
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HANGAR_QBENCH_ROWS` | 8000000 | rows of the table |
//! | `HANGAR_QBENCH_RUNS` | 3 | runs of each figure (the fastest is kept) |
//! | `HANGAR_QBENCH_DIR` | system temp dir | where the repository goes (removed after) |
//! | `HANGAR_QBENCH_BIN` | the bench's own `hangar` | another hangar binary to run |
//! | `HANGAR_QBENCH_TIMEOUT_S` | 1800 | the whole run is aborted after this |
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int32Array, RecordBatch, TimestampMicrosecondArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::{stream, StreamExt, TryStreamExt};
use hangar::json::Value;
use tonic::transport::Channel;

mod support;
use support::{arrow_bytes, cpu_secs, env_or, loadavg, machine};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;
type Client = FlightServiceClient<Channel>;

const MB: f64 = 1e6;
/// Bound on one transfer (an upload, or one figure's reads).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on the server printing its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message our client accepts or sends.
const CLIENT_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;
/// Rows per uploaded batch.
const BATCH_ROWS: usize = 65_536;
/// 2024-01-01T00:00:00 in microseconds; `ts` goes up one second a row.
const BASE_TS_US: i64 = 1_704_067_200_000_000;
const DATASET: &str = "events.parquet";

fn main() {
    support::only_under_cargo_bench("query");
    let config = Config::from_env();
    support::run_with_watchdog("query", config.timeout, "HANGAR_QBENCH_TIMEOUT_S", || {
        run(&config)
    })
}

struct Config {
    rows: usize,
    runs: usize,
    dir: PathBuf,
    bin: PathBuf,
    timeout: Duration,
}

impl Config {
    fn from_env() -> Config {
        Config {
            rows: env_or("HANGAR_QBENCH_ROWS", 8_000_000usize).max(100),
            runs: env_or("HANGAR_QBENCH_RUNS", 3usize).max(1),
            dir: std::env::var_os("HANGAR_QBENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            bin: std::env::var_os("HANGAR_QBENCH_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hangar"))),
            timeout: Duration::from_secs(env_or("HANGAR_QBENCH_TIMEOUT_S", 1800u64)),
        }
    }
}

// ---------------------------------------------------------------------------
// Data

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("value", DataType::Float64, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("count", DataType::Int32, false),
    ]))
}

/// Row `i`'s timestamp.
fn ts(i: usize) -> i64 {
    BASE_TS_US + i as i64 * 1_000_000
}

/// SplitMix64: deterministic, fast, no dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows `start..start + rows`: 36 bytes of Arrow data each (8 + 8 + 12 + 4 +
/// a 4-byte string offset), as in the flight benchmark.
fn make_batch(schema: &SchemaRef, start: usize, rows: usize) -> RecordBatch {
    let labels: Vec<String> = (0..100u64)
        .map(|i| format!("label-{:06}", (i * 7919 + 104_729) % 1_000_000))
        .collect();
    let mut rng = start as u64;
    let ts = TimestampMicrosecondArray::from_iter_values((start..start + rows).map(ts));
    let values = Float64Array::from_iter_values(
        (0..rows).map(|_| (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64 * 1000.0),
    );
    let mut label = StringBuilder::with_capacity(rows, rows * 12);
    for _ in 0..rows {
        label.append_value(&labels[(splitmix(&mut rng) % 100) as usize]);
    }
    let counts =
        Int32Array::from_iter_values((0..rows).map(|_| (splitmix(&mut rng) % 1_000_000) as i32));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts),
        Arc::new(values),
        Arc::new(label.finish()),
        Arc::new(counts),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("batch matches schema")
}

/// Row `i`'s timestamp as the ISO 8601 text a filter takes.
fn ts_text(i: usize) -> Res<String> {
    let array = TimestampMicrosecondArray::from(vec![ts(i)]);
    let text = ArrayFormatter::try_new(&array, &FormatOptions::default())?
        .value(0)
        .to_string();
    Ok(text)
}

// ---------------------------------------------------------------------------
// The server

/// `hangar serve` on a loopback port; killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &PathBuf, repo: &std::path::Path, log: &std::path::Path) -> Res<Server> {
        fs::create_dir_all(repo)?;
        let child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(log)?))
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        support::register_child(child.id());
        // Built first, so that a server that never announces itself is killed.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        (server.addr, _) = support::listening_addr(&mut server.child, STARTUP_TIMEOUT, log)?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::forget_child(self.child.id());
    }
}

// ---------------------------------------------------------------------------
// Client

async fn connect(addr: SocketAddr) -> Res<Client> {
    support::connect(addr, CLIENT_MESSAGE_LIMIT).await
}

async fn bounded<T>(what: &str, work: impl std::future::Future<Output = Res<T>>) -> Res<T> {
    tokio::time::timeout(TRANSFER_TIMEOUT, work)
        .await
        .map_err(|_| format!("{what} took longer than {TRANSFER_TIMEOUT:?}"))?
}

/// Uploads the table, generated batch by batch; returns its Arrow bytes.
async fn upload(client: Client, rows: usize) -> Res<u64> {
    let schema = schema();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    let batches = stream::iter((0..rows).step_by(BATCH_ROWS)).map(move |start| {
        let batch = make_batch(&schema, start, BATCH_ROWS.min(rows - start));
        counter.fetch_add(arrow_bytes(&batch), Ordering::Relaxed);
        Ok(batch)
    });
    let messages = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![DATASET.into()])))
        .build(batches);
    let mut client = FlightClient::new_from_inner(client);
    let mut results = client.do_put(messages).await?;
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(bytes.load(Ordering::Relaxed))
}

/// What one DoGet (or several) delivered.
#[derive(Clone, Copy, Debug, Default)]
struct Got {
    rows: u64,
    arrow: u64,
    wire: u64,
}

impl std::ops::AddAssign for Got {
    fn add_assign(&mut self, other: Got) {
        self.rows += other.rows;
        self.arrow += other.arrow;
        self.wire += other.wire;
    }
}

/// One DoGet, counting the FlightData bytes received and decoding every batch.
async fn do_get(mut client: Client, ticket: Vec<u8>) -> Res<Got> {
    let wire = Arc::new(AtomicU64::new(0));
    let counter = wire.clone();
    let messages = client
        .do_get(Ticket::new(ticket))
        .await?
        .into_inner()
        .map_ok(move |m| {
            counter.fetch_add(
                (m.data_header.len() + m.data_body.len()) as u64,
                Ordering::Relaxed,
            );
            m
        })
        .map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(messages);
    let mut got = Got::default();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        got.rows += batch.num_rows() as u64;
        got.arrow += arrow_bytes(&batch);
    }
    got.wire = wire.load(Ordering::Relaxed);
    Ok(got)
}

/// A query's plan as GetFlightInfo answers it.
struct Plan {
    tickets: Vec<Vec<u8>>,
    row_groups: u64,
    kept: u64,
}

async fn get_flight_info(mut client: Client, query: &Value) -> Res<Plan> {
    let descriptor = FlightDescriptor::new_cmd(query.to_string());
    let info = client.get_flight_info(descriptor).await?.into_inner();
    let meta = Value::parse(std::str::from_utf8(&info.app_metadata)?)?;
    let count = |key: &str| {
        meta.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("app_metadata has no {key}: {meta}"))
    };
    Ok(Plan {
        tickets: info
            .endpoint
            .into_iter()
            .map(|e| e.ticket.map(|t| t.ticket.to_vec()).unwrap_or_default())
            .collect(),
        row_groups: count("row_groups")?,
        kept: count("row_groups_kept")?,
    })
}

// ---------------------------------------------------------------------------
// Figures

/// What a figure reads.
enum Read {
    /// One DoGet of a plain-name ticket (the server's default compression).
    Plain,
    /// GetFlightInfo of a query, then one DoGet per endpoint, all at once,
    /// each on its own connection.
    Query(Value),
}

/// How a figure is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Partitions,
    Projection,
    Filter,
    Codec,
}

struct Figure {
    name: &'static str,
    kind: Kind,
    read: Read,
    /// Rows the read must return.
    rows: u64,
    runs: Vec<Measured>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    secs: f64,
    got: Got,
    server_cpu: f64,
    client_cpu: f64,
    endpoints: usize,
    row_groups: u64,
    kept: u64,
}

impl Figure {
    fn best(&self) -> Measured {
        self.runs
            .iter()
            .copied()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap_or_default()
    }
}

/// Reads a figure once, with the server's and this process's CPU time.
async fn measure(read: &Read, clients: &[Client], server: &str) -> Res<Measured> {
    let server_start = cpu_secs(server);
    let client_start = cpu_secs("self");
    let started = Instant::now();
    let mut measured = Measured::default();
    match read {
        Read::Plain => {
            measured.got = do_get(clients[0].clone(), DATASET.as_bytes().to_vec()).await?;
            measured.endpoints = 1;
        }
        Read::Query(query) => {
            let plan = get_flight_info(clients[0].clone(), query).await?;
            if plan.tickets.len() > clients.len() {
                return Err(
                    format!("{} endpoints, more than connections", plan.tickets.len()).into(),
                );
            }
            let tasks: Vec<_> = plan
                .tickets
                .iter()
                .zip(clients)
                .map(|(ticket, client)| tokio::spawn(do_get(client.clone(), ticket.clone())))
                .collect();
            for task in tasks {
                measured.got += task.await??;
            }
            measured.endpoints = plan.tickets.len();
            measured.row_groups = plan.row_groups;
            measured.kept = plan.kept;
        }
    }
    measured.secs = started.elapsed().as_secs_f64();
    measured.server_cpu = cpu_secs(server) - server_start;
    measured.client_cpu = cpu_secs("self") - client_start;
    Ok(measured)
}

fn query(fields: Vec<(&str, Value)>) -> Read {
    let mut all = vec![("dataset", Value::from(DATASET))];
    all.extend(fields);
    Read::Query(Value::object(all))
}

fn compression(codec: &str) -> Read {
    query(vec![("compression", Value::from(codec))])
}

fn run(config: &Config) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("hangar-qbench-")
        .tempdir_in(&config.dir)?;
    let load_before = loadavg();
    let machine = machine();
    eprintln!("machine: {machine}; load average {load_before}");
    let server = Server::start(
        &config.bin,
        &work.path().join("repo"),
        &work.path().join("server.stderr"),
    )?;
    let pid = server.pid().to_string();
    let rows = config.rows;
    // The filter keeps the last 1 % of the rows.
    let from = rows - rows / 100;
    let wanted = (rows - from) as u64;
    let filter = Value::Array(vec![Value::Array(vec![
        Value::from("ts"),
        Value::from(">="),
        Value::from(ts_text(from)?),
    ])]);
    let all = rows as u64;
    let figure = |name, kind, read, rows| Figure {
        name,
        kind,
        read,
        rows,
        runs: vec![],
    };
    let mut figures = vec![
        figure(
            "Whole read: one DoGet, plain ticket (baseline)",
            Kind::Baseline,
            Read::Plain,
            all,
        ),
        figure(
            "4 partitions: 4 concurrent DoGets, 4 connections",
            Kind::Partitions,
            query(vec![("partitions", Value::from(4usize))]),
            all,
        ),
        figure(
            "Projection: 1 of 4 columns (`value`, float64)",
            Kind::Projection,
            query(vec![("columns", Value::Array(vec![Value::from("value")]))]),
            all,
        ),
        figure(
            "Filter: `ts >= X`, the last 1 % of rows",
            Kind::Filter,
            query(vec![("filter", filter)]),
            wanted,
        ),
        figure(
            "Full read as a query, IPC compression none",
            Kind::Codec,
            compression("none"),
            all,
        ),
        figure(
            "Full read as a query, IPC compression lz4",
            Kind::Codec,
            compression("lz4"),
            all,
        ),
        figure(
            "Full read as a query, IPC compression zstd",
            Kind::Codec,
            compression("zstd"),
            all,
        ),
    ];
    let (table_bytes, upload_secs, parquet_bytes) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(server.addr).await?);
        }
        let started = Instant::now();
        let table_bytes = bounded("the upload", upload(clients[0].clone(), rows)).await?;
        let upload_secs = started.elapsed().as_secs_f64();
        let parquet_bytes = fs::metadata(work.path().join("repo").join(DATASET))?.len();
        eprintln!(
            "uploaded {rows} rows, {:.1} MB of Arrow data, in {upload_secs:.1} s \
             ({:.1} MB of Parquet)",
            table_bytes as f64 / MB,
            parquet_bytes as f64 / MB
        );
        for run in 0..config.runs {
            for figure in figures.iter_mut() {
                let m = bounded(figure.name, measure(&figure.read, &clients, &pid)).await?;
                if m.got.rows != figure.rows {
                    return Err(format!(
                        "{}: {} rows, expected {}",
                        figure.name, m.got.rows, figure.rows
                    )
                    .into());
                }
                eprintln!(
                    "run {}: {}: {:.3} s, {:.1} MB on the wire, server CPU {:.2} s",
                    run + 1,
                    figure.name,
                    m.secs,
                    m.got.wire as f64 / MB,
                    m.server_cpu
                );
                figure.runs.push(m);
            }
        }
        Res::Ok((table_bytes, upload_secs, parquet_bytes))
    })?;
    drop(server);
    let load_after = loadavg();
    print!(
        "{}",
        report(
            config,
            &figures,
            &Header {
                machine,
                load_before,
                load_after,
                table_bytes,
                parquet_bytes,
                upload_secs,
            }
        )
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Report

struct Header {
    machine: String,
    load_before: String,
    load_after: String,
    table_bytes: u64,
    parquet_bytes: u64,
    upload_secs: f64,
}

fn report(config: &Config, figures: &[Figure], h: &Header) -> String {
    let base = figures[0].best();
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "## hangar query benchmark");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Machine: {}. Load average {} before, {} after.",
        h.machine, h.load_before, h.load_after
    );
    let _ = writeln!(
        out,
        "Data: {} rows (sorted timestamp `ts`, float64, 12-character strings from 100 labels, \
         int32), {:.1} MB of Arrow data, {:.1} MB as Snappy Parquet in {} row groups (uploaded \
         in {:.1} s). Each figure is the fastest of {} runs; query figures include their \
         GetFlightInfo; the client decodes every batch. MB = 10^6 bytes.",
        config.rows,
        h.table_bytes as f64 / MB,
        h.parquet_bytes as f64 / MB,
        figures
            .iter()
            .map(|f| f.best().row_groups)
            .max()
            .unwrap_or(0),
        h.upload_secs,
        config.runs
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| Figure | Value | vs whole read |");
    let _ = writeln!(out, "|---|---|---|");
    for figure in figures {
        let m = figure.best();
        let gb = m.got.arrow as f64 / 1e9;
        let mut value = format!(
            "{:.3} s, {} rows, {:.1} MB Arrow ({:.0} MB/s)",
            m.secs,
            m.got.rows,
            m.got.arrow as f64 / MB,
            m.got.arrow as f64 / MB / m.secs
        );
        let mut ratio = format!(
            "time {:.2}× ({:.2}× as fast)",
            m.secs / base.secs,
            base.secs / m.secs
        );
        if m.endpoints > 1 {
            let _ = write!(value, "; {} endpoints", m.endpoints);
        }
        if figure.kind == Kind::Filter {
            let _ = write!(value, "; row groups kept {}/{}", m.kept, m.row_groups);
        }
        if matches!(figure.kind, Kind::Projection | Kind::Filter) {
            let _ = write!(
                ratio,
                "; Arrow bytes {:.3}×",
                m.got.arrow as f64 / base.got.arrow as f64
            );
        }
        if matches!(figure.kind, Kind::Baseline | Kind::Codec) {
            let _ = write!(
                value,
                "; wire {:.1} MB ({:.1} % of Arrow); server CPU {:.2} s/GB",
                m.got.wire as f64 / MB,
                100.0 * m.got.wire as f64 / m.got.arrow as f64,
                m.server_cpu / gb
            );
            let _ = write!(
                ratio,
                "; wire {:.2}×; server CPU {:.2}×",
                m.got.wire as f64 / base.got.wire as f64,
                (m.server_cpu / gb) / (base.server_cpu / (base.got.arrow as f64 / 1e9))
            );
        }
        if figure.kind == Kind::Baseline {
            ratio = "1.00× (baseline)".into();
        }
        let _ = writeln!(out, "| {} | {value} | {ratio} |", figure.name);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU time of the runs above (/proc/PID/stat; the client is the benchmark process; \
         cores busy = both / wall, out of {} CPUs):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Figure | Wall s | Wire MB | Server CPU s | Client CPU s | Cores busy | \
         Server CPU s per GB Arrow | All runs, s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for figure in figures {
        let m = figure.best();
        let runs: Vec<String> = figure
            .runs
            .iter()
            .map(|r| format!("{:.3}", r.secs))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            figure.name,
            m.secs,
            m.got.wire as f64 / MB,
            m.server_cpu,
            m.client_cpu,
            (m.server_cpu + m.client_cpu) / m.secs,
            m.server_cpu / (m.got.arrow as f64 / 1e9),
            runs.join(", ")
        );
    }
    out
}
