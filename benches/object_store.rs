//! The object-store benchmark:
//! `cargo bench --features object-store --bench object_store` (see
//! benches/README.md).
//!
//! Starts moto's S3 server (`.venv/bin/moto_server`) on a free loopback port,
//! creates a bucket, and measures, best of N runs, run by run interleaved so
//! that load from elsewhere hits both sides of every comparison alike:
//!
//! 1. **S3 against local disk**: the same table (2,000,000 rows of int64,
//!    float64 and a 12-character string by default) put with DoPut and got
//!    back with DoGet through the `arrow-flight` client, against
//!    `hangar serve --repo <temp dir>` and `hangar serve --repo
//!    s3://bkt/local-vs-s3` (the same release binary).
//! 2. **One node against three** on one bucket: a Parquet file with (by
//!    default) 8 row groups, planted into the bucket with the `object_store`
//!    crate, queried with `{"dataset":"big","partitions":4}`; (a) the four
//!    endpoints read at once from the node asked, (b) each endpoint read from
//!    its first location (three nodes that know each other by `--peers`).
//!
//! One Markdown table goes to stdout; progress to stderr. No timing is
//! asserted. Every wait is bounded, and every process it starts (moto
//! included) is killed when the run ends, fails or overruns.
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HANGAR_BENCH_ROWS` | 2000000 | rows of the table |
//! | `HANGAR_BENCH_RUNS` | 3 | runs of each figure (best and median reported) |
//! | `HANGAR_BENCH_ROW_GROUPS` | 8 | row groups of the planted file (at least 4) |
//! | `HANGAR_BENCH_DIR` | system temp dir | where the local repository and logs go (removed after) |
//! | `HANGAR_BENCH_BIN` | the bench's own `hangar` | another hangar binary (built with `object-store`) |
//! | `HANGAR_MOTO_SERVER` | `.venv/bin/moto_server` | moto's S3 server |
//! | `HANGAR_BENCH_TIMEOUT_S` | 1800 | the whole run is aborted after this |
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::error::Error;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{stream, StreamExt, TryStreamExt};
use hangar::json::Value;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use tonic::transport::Channel;

mod support;
use support::{arrow_bytes, cpu_secs, env_or, loadavg, machine};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const MB: f64 = 1e6;
/// Bound on one transfer (a DoPut, a DoGet, or one figure's reads).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on a process getting ready (listening line, bucket answered, peers
/// file reloaded).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message our client accepts or sends.
const CLIENT_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;
/// Rows per uploaded batch (as in the flight benchmark).
const BATCH_ROWS: usize = 65_536;
const BUCKET: &str = "bkt";
/// The S3 repository of the S3-against-local comparison.
const PREFIX_VS: &str = "local-vs-s3";
/// The S3 repository of the three nodes.
const PREFIX_NODES: &str = "nodes";
const DATASET: &str = "t";
const BIG: &str = "big";
const PARTITIONS: usize = 4;

fn main() {
    support::only_under_cargo_bench("object_store");
    let config = Config::from_env();
    support::run_with_watchdog(
        "object_store",
        config.timeout,
        "HANGAR_BENCH_TIMEOUT_S",
        || run(&config),
    )
}

// ---------------------------------------------------------------------------
// Configuration

struct Config {
    rows: usize,
    runs: usize,
    row_groups: usize,
    dir: PathBuf,
    bin: PathBuf,
    moto: PathBuf,
    timeout: Duration,
}

impl Config {
    fn from_env() -> Config {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config {
            rows: env_or("HANGAR_BENCH_ROWS", 2_000_000usize).max(1),
            runs: env_or("HANGAR_BENCH_RUNS", 3usize).max(1),
            row_groups: env_or("HANGAR_BENCH_ROW_GROUPS", 8usize).max(PARTITIONS),
            dir: std::env::var_os("HANGAR_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            bin: std::env::var_os("HANGAR_BENCH_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hangar"))),
            moto: std::env::var_os("HANGAR_MOTO_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join(".venv/bin/moto_server")),
            timeout: Duration::from_secs(env_or("HANGAR_BENCH_TIMEOUT_S", 1800u64)),
        }
    }
}

// ---------------------------------------------------------------------------
// Data

/// int64 sequence, float64, 12-character strings from 100 labels.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("label", DataType::Utf8, false),
    ]))
}

/// SplitMix64: deterministic, fast, no dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn make_table(rows: usize) -> Vec<RecordBatch> {
    let schema = schema();
    let vocabulary: Vec<String> = (0..100u64)
        .map(|i| format!("label-{:06}", (i * 7919 + 104_729) % 1_000_000))
        .collect();
    (0..rows)
        .step_by(BATCH_ROWS)
        .map(|start| {
            let n = BATCH_ROWS.min(rows - start);
            let mut rng = start as u64;
            let ids = Int64Array::from_iter_values(start as i64..(start + n) as i64);
            let values = Float64Array::from_iter_values(
                (0..n).map(|_| (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64 * 1000.0),
            );
            let mut labels = StringBuilder::with_capacity(n, n * 12);
            for _ in 0..n {
                labels.append_value(&vocabulary[(splitmix(&mut rng) % 100) as usize]);
            }
            let columns: Vec<ArrayRef> =
                vec![Arc::new(ids), Arc::new(values), Arc::new(labels.finish())];
            RecordBatch::try_new(schema.clone(), columns).expect("batch matches schema")
        })
        .collect()
}

/// The table as one Parquet file of `groups` row groups (Snappy, as hangar
/// writes), to plant into the bucket.
fn parquet_file(batches: &[RecordBatch], rows: usize, groups: usize) -> Res<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows.div_ceil(groups).max(1)))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(out)
}

/// Row groups in a Parquet file.
fn row_groups(file: &[u8]) -> Res<u64> {
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(file))?;
    Ok(reader.metadata().num_row_groups() as u64)
}

// ---------------------------------------------------------------------------
// moto

/// moto's standalone S3 server on a free loopback port, with one bucket;
/// killed on drop.
struct Moto {
    child: Child,
    port: u16,
    err_log: PathBuf,
}

impl Moto {
    fn start(server: &Path, logs: &Path) -> Res<Moto> {
        if !server.exists() {
            return Err(format!(
                "no moto server at {}: this benchmark needs moto's S3 server. Run `bash .ci/run`, \
                 or `.venv/bin/pip install -r tests/python/requirements.txt` (it lists \
                 moto[server]), or set HANGAR_MOTO_SERVER",
                server.display()
            )
            .into());
        }
        // A port the kernel just gave out is free for the moment it takes
        // moto to bind it (moto cannot report a port of its own choosing).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let err_log = logs.join("moto.err");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(logs.join("moto.log"))?)
            .stderr(fs::File::create(&err_log)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
        support::register_child(child.id());
        let mut moto = Moto {
            child,
            port,
            err_log,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = moto.child.try_wait()? {
                return Err(format!(
                    "moto_server exited ({status}) before answering:\n{}",
                    fs::read_to_string(&moto.err_log).unwrap_or_default()
                )
                .into());
            }
            if moto.request("PUT", &format!("/{BUCKET}")) == 200 {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server on port {port} did not create the bucket within \
                     {STARTUP_TIMEOUT:?}:\n{}",
                    fs::read_to_string(&moto.err_log).unwrap_or_default()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a hangar serving this bucket needs.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A plain HTTP/1.1 request with no body (moto checks no signatures): the
    /// status, 0 if there was no answer.
    fn request(&self, method: &str, target: &str) -> u16 {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return 0;
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A client of the bucket of our own, to plant objects as another writer
    /// would.
    fn bucket(&self) -> Res<Arc<dyn ObjectStore>> {
        // reqwest is built without a default TLS provider (as in hangar).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        Ok(Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_region("us-east-1")
                .build()?,
        ))
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::forget_child(self.child.id());
    }
}

// ---------------------------------------------------------------------------
// hangar

/// A `hangar serve` process on a loopback port; killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// As the listening line gives it (`grpc://127.0.0.1:PORT`), which is
    /// what a peers file and an endpoint's locations name.
    uri: String,
    log: PathBuf,
}

impl Server {
    fn start(
        bin: &Path,
        repo: impl Into<OsString>,
        extra: &[OsString],
        env: &[(&'static str, String)],
        log: PathBuf,
    ) -> Res<Server> {
        let child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(repo.into())
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&log)?))
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        support::register_child(child.id());
        // Built first, so that a server that never announces itself is killed.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            uri: String::new(),
            log,
        };
        (server.addr, server.uri) =
            support::listening_addr(&mut server.child, STARTUP_TIMEOUT, &server.log)?;
        Ok(server)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGHUP (re-read the peers file) and waits, bounded, for `line`
    /// in the log.
    fn reload_and_wait(&self, line: &str) -> Res<()> {
        let status = Command::new("kill").args(["-HUP", &self.pid()]).status()?;
        if !status.success() {
            return Err(format!("kill -HUP {} failed", self.pid()).into());
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !self.stderr().contains(line) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} logged no {line:?} within {STARTUP_TIMEOUT:?}:\n{}",
                    self.uri,
                    self.stderr()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
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

/// A connection of its own; cheap to clone (`FlightClient` is not).
type Inner = FlightServiceClient<Channel>;

fn flight(inner: &Inner) -> FlightClient {
    FlightClient::new_from_inner(inner.clone())
}

async fn connect(addr: SocketAddr) -> Res<Inner> {
    support::connect(addr, CLIENT_MESSAGE_LIMIT).await
}

async fn bounded<T>(what: &str, work: impl std::future::Future<Output = Res<T>>) -> Res<T> {
    tokio::time::timeout(TRANSFER_TIMEOUT, work)
        .await
        .map_err(|_| format!("{what} took longer than {TRANSFER_TIMEOUT:?}"))?
}

/// The client's DoPut stream, encoded once up front so every run (and both
/// servers) receive the very same messages and the client spends no time
/// encoding while the clock runs.
async fn encode_upload(batches: &[RecordBatch]) -> Res<Vec<FlightData>> {
    let encoder = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![DATASET.into()])))
        .build(stream::iter(Vec::from(batches)).map(Ok));
    Ok(encoder.try_collect::<Vec<_>>().await?)
}

/// What a read delivered.
#[derive(Clone, Copy, Default)]
struct Got {
    rows: u64,
    arrow: u64,
}

/// One DoGet, decoding every batch as a client would.
async fn do_get(mut client: FlightClient, ticket: Ticket) -> Res<Got> {
    let mut batches = client.do_get(ticket).await?;
    let mut got = Got::default();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        got.rows += batch.num_rows() as u64;
        got.arrow += arrow_bytes(&batch);
    }
    Ok(got)
}

/// One run of one figure: wall time, Arrow bytes moved, and CPU seconds of
/// the hangar process(es), of moto and of this process (the client).
#[derive(Clone, Copy, Default)]
struct Run {
    secs: f64,
    bytes: u64,
    hangar_cpu: f64,
    moto_cpu: f64,
    client_cpu: f64,
}

impl Run {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / MB / self.secs
    }
}

/// Times `work`, with the CPU used meanwhile by `hangar` (pids) and `moto`.
async fn timed<F>(hangar: &[String], moto: Option<&str>, work: F) -> Res<Run>
where
    F: std::future::Future<Output = Res<u64>>,
{
    let cpu = |pids: &[String]| pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let moto_cpu = || moto.map_or(0.0, cpu_secs);
    let (h0, m0, c0) = (cpu(hangar), moto_cpu(), cpu_secs("self"));
    let started = Instant::now();
    let bytes = work.await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Run {
        secs,
        bytes,
        hangar_cpu: cpu(hangar) - h0,
        moto_cpu: moto_cpu() - m0,
        client_cpu: cpu_secs("self") - c0,
    })
}

/// GetFlightInfo of the 4-partition query on `asked`, then every endpoint
/// read at once, each on its own connection: from `asked` (`spread` false),
/// or from the node its first location names. Returns the Arrow bytes.
async fn partitioned_read(
    asked: &Inner,
    nodes: &[(String, Vec<Inner>)],
    spread: bool,
    rows: u64,
) -> Res<u64> {
    let query = Value::object(vec![
        ("dataset", Value::from(BIG)),
        ("partitions", Value::from(PARTITIONS)),
    ]);
    let info = flight(asked)
        .get_flight_info(FlightDescriptor::new_cmd(query.to_string()))
        .await?;
    if info.endpoint.len() != PARTITIONS {
        return Err(format!("{} endpoints, not {PARTITIONS}", info.endpoint.len()).into());
    }
    let tasks: Vec<_> = info
        .endpoint
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            let node = if spread {
                let first = endpoint
                    .location
                    .first()
                    .map(|l| l.uri.as_str())
                    .ok_or("an endpoint with no location: are the peers loaded?")?;
                nodes
                    .iter()
                    .position(|(uri, _)| uri == first)
                    .ok_or_else(|| format!("endpoint location {first} is no node of ours"))?
            } else {
                0
            };
            let ticket = endpoint
                .ticket
                .clone()
                .ok_or("an endpoint with no ticket")?;
            Ok(tokio::spawn(do_get(flight(&nodes[node].1[i]), ticket)))
        })
        .collect::<Res<_>>()?;
    let mut got = Got::default();
    for task in tasks {
        let one = task.await??;
        got.rows += one.rows;
        got.arrow += one.arrow;
    }
    if got.rows != rows {
        return Err(format!("the partitions returned {} rows, not {rows}", got.rows).into());
    }
    Ok(got.arrow)
}

// ---------------------------------------------------------------------------
// The run

struct Figure {
    name: &'static str,
    runs: Vec<Run>,
}

impl Figure {
    fn new(name: &'static str) -> Figure {
        Figure {
            name,
            runs: Vec::new(),
        }
    }

    fn best(&self) -> Run {
        self.runs
            .iter()
            .copied()
            .max_by(|a, b| a.mb_s().total_cmp(&b.mb_s()))
            .unwrap_or_default()
    }

    fn median_mb_s(&self) -> f64 {
        let mut rates: Vec<f64> = self.runs.iter().map(Run::mb_s).collect();
        rates.sort_by(f64::total_cmp);
        match rates.len() {
            0 => 0.0,
            n if n % 2 == 1 => rates[n / 2],
            n => (rates[n / 2 - 1] + rates[n / 2]) / 2.0,
        }
    }
}

struct Header {
    machine: String,
    load_before: String,
    load_after: String,
    rows: usize,
    table_bytes: u64,
    parquet_bytes: u64,
    row_groups: u64,
}

fn run(config: &Config) -> Res<()> {
    let load_before = loadavg();
    let work = tempfile::Builder::new()
        .prefix("hangar-object-store-bench")
        .tempdir_in(&config.dir)?;
    let logs = work.path().join("logs");
    fs::create_dir_all(&logs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    eprintln!("object_store: building {} rows", config.rows);
    let table = make_table(config.rows);
    let table_bytes: u64 = table.iter().map(arrow_bytes).sum();
    let rows = config.rows as u64;
    let messages = rt.block_on(encode_upload(&table))?;

    eprintln!("object_store: starting moto ({})", config.moto.display());
    let moto = Moto::start(&config.moto, &logs)?;
    let moto_pid = moto.pid();
    let env = moto.env();

    // 1. S3 against local disk.
    let local_repo = work.path().join("repo");
    fs::create_dir_all(&local_repo)?;
    let local = Server::start(
        &config.bin,
        &local_repo,
        &[],
        &[],
        logs.join("local.stderr"),
    )?;
    let s3 = Server::start(
        &config.bin,
        format!("s3://{BUCKET}/{PREFIX_VS}"),
        &[],
        &env,
        logs.join("s3.stderr"),
    )?;
    let servers = [("local", &local), ("S3", &s3)];
    let mut put = [
        Figure::new("DoPut, local repository"),
        Figure::new("DoPut, S3 repository (moto)"),
    ];
    let mut get = [
        Figure::new("DoGet, local repository"),
        Figure::new("DoGet, S3 repository (moto)"),
    ];
    rt.block_on(async {
        for run in 0..config.runs {
            for (i, (label, server)) in servers.iter().enumerate() {
                let mut client = flight(&connect(server.addr).await?);
                let messages = messages.clone();
                let r = timed(&[server.pid()], Some(&moto_pid), async {
                    bounded(&format!("DoPut to {label}"), async {
                        let mut results = client
                            .do_put(stream::iter(messages.into_iter().map(Ok)))
                            .await?;
                        while let Some(result) = results.next().await {
                            result?;
                        }
                        Ok(table_bytes)
                    })
                    .await
                })
                .await
                .map_err(|e| format!("DoPut to {label}: {e}\n{}", server.stderr()))?;
                eprintln!(
                    "run {}: DoPut {label}: {:.2} s, {:.0} MB/s",
                    run + 1,
                    r.secs,
                    r.mb_s()
                );
                put[i].runs.push(r);
            }
            for (i, (label, server)) in servers.iter().enumerate() {
                let client = flight(&connect(server.addr).await?);
                let r = timed(&[server.pid()], Some(&moto_pid), async {
                    bounded(&format!("DoGet from {label}"), async {
                        let got = do_get(client, Ticket::new(DATASET)).await?;
                        if got.rows != rows {
                            return Err(format!("got {} rows, not {rows}", got.rows).into());
                        }
                        Ok(table_bytes)
                    })
                    .await
                })
                .await
                .map_err(|e| format!("DoGet from {label}: {e}\n{}", server.stderr()))?;
                eprintln!(
                    "run {}: DoGet {label}: {:.2} s, {:.0} MB/s",
                    run + 1,
                    r.secs,
                    r.mb_s()
                );
                get[i].runs.push(r);
            }
        }
        Res::Ok(())
    })?;
    drop(local);
    drop(s3);

    // 2. One node against three, on one bucket.
    eprintln!(
        "object_store: planting {BIG} ({} row groups) into s3://{BUCKET}/{PREFIX_NODES}/",
        config.row_groups
    );
    let file = parquet_file(&table, config.rows, config.row_groups)?;
    let parquet_bytes = file.len() as u64;
    let row_groups = row_groups(&file)?;
    let bucket = moto.bucket()?;
    rt.block_on(bounded("planting the file", async {
        bucket
            .put(
                &Key::from(format!("{PREFIX_NODES}/{BIG}")),
                PutPayload::from(file),
            )
            .await?;
        Ok(())
    }))?;
    let peers = work.path().join("peers");
    fs::write(&peers, "")?;
    let peers_arg = [OsString::from("--peers"), peers.clone().into_os_string()];
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            Server::start(
                &config.bin,
                format!("s3://{BUCKET}/{PREFIX_NODES}"),
                &peers_arg,
                &env,
                logs.join(format!("node{i}.stderr")),
            )
        })
        .collect::<Res<_>>()?;
    fs::write(
        &peers,
        nodes
            .iter()
            .map(|n| format!("{}\n", n.uri))
            .collect::<String>(),
    )?;
    for node in &nodes {
        node.reload_and_wait("reloaded peers file (3 nodes)")?;
    }
    let pids: Vec<String> = nodes.iter().map(Server::pid).collect();
    let mut one = Figure::new("4 partitions, all read from 1 node");
    let mut three = Figure::new("4 partitions, each from its first location (3 nodes)");
    rt.block_on(async {
        // Connections are opened before the clock starts: one per endpoint
        // on every node.
        let mut clients = Vec::new();
        for node in &nodes {
            let mut per_endpoint = Vec::new();
            for _ in 0..PARTITIONS {
                per_endpoint.push(connect(node.addr).await?);
            }
            clients.push((node.uri.clone(), per_endpoint));
        }
        let asked = connect(nodes[0].addr).await?;
        let info = flight(&asked)
            .get_flight_info(FlightDescriptor::new_path(vec![BIG.into()]))
            .await?;
        if info.total_records != rows as i64 {
            return Err(format!("{BIG} has {} rows, not {rows}", info.total_records).into());
        }
        for run in 0..config.runs {
            for (spread, figure) in [(false, &mut one), (true, &mut three)] {
                let r = timed(&pids, Some(&moto_pid), async {
                    bounded(
                        "the partitioned read",
                        partitioned_read(&asked, &clients, spread, rows),
                    )
                    .await
                })
                .await
                .map_err(|e| {
                    let logs: String = nodes
                        .iter()
                        .map(|n| format!("--- {}\n{}", n.uri, n.stderr()))
                        .collect();
                    format!("{}: {e}\n{logs}", figure.name)
                })?;
                eprintln!(
                    "run {}: {}: {:.2} s, {:.0} MB/s",
                    run + 1,
                    figure.name,
                    r.secs,
                    r.mb_s()
                );
                figure.runs.push(r);
            }
        }
        Res::Ok(())
    })?;
    drop(nodes);
    drop(moto);

    let header = Header {
        machine: machine(),
        load_before,
        load_after: loadavg(),
        rows: config.rows,
        table_bytes,
        parquet_bytes,
        row_groups,
    };
    print!("{}", report(config, &header, &put, &get, &one, &three));
    Ok(())
}

// ---------------------------------------------------------------------------
// Report

fn report(
    config: &Config,
    h: &Header,
    put: &[Figure; 2],
    get: &[Figure; 2],
    one: &Figure,
    three: &Figure,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "## hangar object-store benchmark");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Machine: {}. Load average {} before, {} after.",
        h.machine, h.load_before, h.load_after
    );
    let _ = writeln!(
        out,
        "Data: {} rows (int64 sequence, float64, 12-character strings from 100 labels), \
         {:.1} MB of Arrow data in {BATCH_ROWS}-row batches. The partitioned dataset is the same \
         table planted as one Snappy Parquet file of {} row groups ({:.1} MB). {} runs of each \
         figure, interleaved; MB = 10^6 bytes of Arrow data. Partitioned reads include their \
         GetFlightInfo (asked of the first node); connections are opened beforehand.",
        h.rows,
        h.table_bytes as f64 / MB,
        h.row_groups,
        h.parquet_bytes as f64 / MB,
        config.runs,
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Figure | Best MB/s | Median MB/s | Ratio (best; median) | Best run: wall s, hangar CPU s, \
         moto CPU s, client CPU s | All runs, MB/s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut row = |f: &Figure, ratio: String| {
        let b = f.best();
        let runs: Vec<String> = f.runs.iter().map(|r| format!("{:.0}", r.mb_s())).collect();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {ratio} | {:.2}, {:.2}, {:.2}, {:.2} | {} |",
            f.name,
            b.mb_s(),
            f.median_mb_s(),
            b.secs,
            b.hangar_cpu,
            b.moto_cpu,
            b.client_cpu,
            runs.join(", ")
        );
    };
    let ratio = |name: &str, a: &Figure, base: &Figure| {
        format!(
            "{name} {:.2}×; {:.2}×",
            a.best().mb_s() / base.best().mb_s(),
            a.median_mb_s() / base.median_mb_s()
        )
    };
    row(&put[0], "–".into());
    row(&put[1], ratio("S3/local", &put[1], &put[0]));
    row(&get[0], "–".into());
    row(&get[1], ratio("S3/local", &get[1], &get[0]));
    row(one, "–".into());
    row(three, ratio("3 nodes/1 node", three, one));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Caveat: everything here (the client, every hangar process and moto) shares one \
         machine of {} CPUs, so three nodes cannot bring three machines' worth of CPU, and a \
         figure above 1× only shows that the work spread; moto is a Python server holding the \
         bucket in memory, so the S3 figures measure moto as much as hangar (see its CPU \
         seconds) and say little about a real S3 over a network.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out
}
