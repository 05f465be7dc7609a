//! Reliability: what hangar survives. Each test drives a real `hangar serve`
//! process (see `common::TestServer`) into a fault and checks the guarantees of
//! the README ("Guarantees") afterwards:
//!
//! - the server SIGKILLed during uploads: every dataset is the previous or the
//!   complete new version (checksums), leftover temporary files are swept;
//! - clients gone mid-DoPut / mid-DoGet (stream cancelled, connection reset,
//!   process killed): old data intact, no temporary file, worker threads and
//!   file descriptors back to baseline;
//! - a file size limit (RLIMIT_FSIZE) and a full disk (a small tmpfs);
//! - concurrent writers, readers and drops on one name;
//! - stalled uploads and stalled readers (`--idle-timeout`);
//! - every limit flag and the header size cap;
//! - path attacks: `..`, absolute and encoded paths, planted symlinks.
//!
//! Fast by default (`cargo test --test faults`). `HANGAR_LONG=1` runs the long
//! version (at least 50 uploads killed, more aborted calls). The random
//! choices use a fixed seed unless `HANGAR_SEED=N` (replays run N) or
//! `HANGAR_SEED=random` (a new one) says otherwise; the seed is printed.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightData};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use common::{client_at, connect, status_of, wait_until, within, TestServer, TEMP_PREFIX};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

// ---------------------------------------------------------------------------
// Configuration and small utilities

/// `HANGAR_LONG=1`: the long suite.
fn long() -> bool {
    std::env::var("HANGAR_LONG").is_ok_and(|v| v != "0" && !v.is_empty())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed of a run without `HANGAR_SEED` (CI's): fixed, so a CI failure replays.
const DEFAULT_SEED: u64 = 20_260_101;

/// The seed of this run's random choices (printed, so a failure can be
/// replayed): `HANGAR_SEED=N`, `HANGAR_SEED=random`, or [`DEFAULT_SEED`].
fn seed(test: &str) -> u64 {
    let seed = common::seed_from_env("HANGAR_SEED", DEFAULT_SEED);
    eprintln!("{test}: HANGAR_SEED={seed}");
    seed
}

/// xorshift64*: enough randomness for kill moments, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A server on a repository the test owns, so it can be restarted on it.
fn start_on(repo: &Path) -> TestServer {
    TestServer::builder().existing_repo(repo).start()
}

/// Threads of a process (`Threads:` in /proc/PID/status).
fn threads(pid: u32) -> usize {
    common::status_field(pid, "Threads:").unwrap_or(0) as usize
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    common::status_field(pid, "VmRSS:").unwrap_or(0)
}

/// Open file descriptors of a process, with what each points to.
fn fds(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let target = fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    format!("{} -> {target}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn is_alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Counts the server's log lines for `rpc` on `dataset` (any status, or not OK).
fn log_lines(server: &TestServer, rpc: &str, dataset: &str, failed_only: bool) -> usize {
    let needle = format!("rpc={rpc} dataset={dataset} ");
    server
        .stderr()
        .lines()
        .filter(|l| l.contains(&needle) && (!failed_only || !l.contains("status=OK")))
        .count()
}

// ---------------------------------------------------------------------------
// Versioned data: every row of version V carries V, a row number and a payload
// derived from both, and version V has `rows_for(V)` rows. A read is then
// checkable on its own: one version id, the right count, the right checksum.

fn versioned_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("row", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

fn rows_for(version: u64) -> usize {
    4_000 + (version % 8) as usize * 4_000
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

fn payload(version: u64, row: u64) -> String {
    format!(
        "v{version}-r{row}-{:016x}",
        mix(version.rotate_left(32) ^ row)
    )
}

fn version_batches(version: u64, rows: usize, batch_rows: usize) -> Vec<RecordBatch> {
    let schema = versioned_schema();
    (0..rows)
        .step_by(batch_rows.max(1))
        .map(|start| {
            let end = (start + batch_rows).min(rows);
            let ids = Int64Array::from(vec![version as i64; end - start]);
            let rows_col = Int64Array::from((start as i64..end as i64).collect::<Vec<_>>());
            let payloads = StringArray::from(
                (start..end)
                    .map(|r| payload(version, r as u64))
                    .collect::<Vec<_>>(),
            );
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(ids), Arc::new(rows_col), Arc::new(payloads)],
            )
            .unwrap()
        })
        .collect()
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

fn row_hash(hash: &mut u64, version: i64, row: i64, payload: &str) {
    fnv(hash, &version.to_le_bytes());
    fnv(hash, &row.to_le_bytes());
    fnv(hash, payload.as_bytes());
}

/// The checksum a complete version has.
fn expected_checksum(version: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for row in 0..rows_for(version) as u64 {
        row_hash(
            &mut hash,
            version as i64,
            row as i64,
            &payload(version, row),
        );
    }
    hash
}

/// Which complete version `batches` are, or why they are not one.
fn identify(batches: &[RecordBatch]) -> Result<u64, String> {
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut version = None;
    let mut rows = 0usize;
    for batch in batches {
        if batch.schema().fields() != versioned_schema().fields() {
            return Err(format!("unexpected schema {:?}", batch.schema()));
        }
        let col = |i: usize| batch.column(i).as_any();
        let ids = col(0).downcast_ref::<Int64Array>().unwrap();
        let nums = col(1).downcast_ref::<Int64Array>().unwrap();
        let texts = col(2).downcast_ref::<StringArray>().unwrap();
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            match version {
                None => version = Some(id),
                Some(v) if v != id => {
                    return Err(format!("mixed versions: {v} and {id} in one read"))
                }
                Some(_) => {}
            }
            row_hash(&mut hash, id, nums.value(i), texts.value(i));
            rows += 1;
        }
    }
    let version = version.ok_or("no rows")? as u64;
    if rows != rows_for(version) {
        return Err(format!(
            "version {version} has {rows} rows, a complete one has {}",
            rows_for(version)
        ));
    }
    if hash != expected_checksum(version) {
        return Err(format!(
            "version {version}: checksum {hash:016x} differs from the complete version's {:016x}",
            expected_checksum(version)
        ));
    }
    Ok(version)
}

/// Reads a Parquet file straight from disk (not through the server).
fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let file = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("{} is not readable Parquet: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The version of dataset `name` as on disk: `Ok(None)` when absent.
fn version_on_disk(repo: &Path, name: &str) -> Result<Option<u64>, String> {
    let path = repo.join(name);
    if !path.exists() {
        return Ok(None);
    }
    identify(&read_parquet(&path)?).map(Some)
}

/// The version of dataset `name` as the server returns it: `Ok(None)` for NotFound.
async fn version_served(client: &mut FlightClient, name: &str) -> Result<Option<u64>, String> {
    match common::get(client, name).await {
        Ok((_, batches)) => identify(&batches).map(Some),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(format!("DoGet failed: {status}")),
    }
}

async fn put_version(client: &mut FlightClient, name: &str, version: u64) {
    let batches = version_batches(version, rows_for(version), 4_096);
    let summary = common::put(client, name, versioned_schema(), &batches)
        .await
        .unwrap_or_else(|s| panic!("putting {name} version {version}: {s}"));
    assert_eq!(summary.rows, rows_for(version) as u64);
}

async fn assert_version(client: &mut FlightClient, repo: &Path, name: &str, want: Option<u64>) {
    assert_eq!(
        version_on_disk(repo, name),
        Ok(want),
        "{name} on disk is not the expected version"
    );
    assert_eq!(
        version_served(client, name).await,
        Ok(want),
        "{name} as served is not the expected version"
    );
}

/// FlightData of a versioned upload, the first message naming `name`.
async fn upload_messages(
    name: &str,
    version: u64,
    rows: usize,
    batch_rows: usize,
) -> Vec<FlightData> {
    common::encode(
        name,
        versioned_schema(),
        &version_batches(version, rows, batch_rows),
    )
    .await
}

// ---------------------------------------------------------------------------
// 1. The server killed (SIGKILL) during uploads

#[derive(Debug, Clone)]
struct Attempt {
    dataset: usize,
    version: u64,
    acked: bool,
}

fn dataset_name(i: usize) -> String {
    format!("killed-{i}.parquet")
}

/// Uploads new versions of one dataset, one after the other, until the server
/// dies (or `max` uploads), recording each attempt and whether it was acknowledged.
async fn keep_uploading(
    addr: SocketAddr,
    dataset: usize,
    versions: Arc<AtomicU64>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    max: usize,
) {
    let Ok(channel) = connect(addr).await else {
        return;
    };
    let mut client = FlightClient::new(channel);
    for _ in 0..max {
        let version = versions.fetch_add(1, Ordering::SeqCst);
        let messages =
            upload_messages(&dataset_name(dataset), version, rows_for(version), 4_096).await;
        let index = {
            let mut log = attempts.lock().unwrap();
            log.push(Attempt {
                dataset,
                version,
                acked: false,
            });
            log.len() - 1
        };
        let put = common::put_flight_data(&mut client, messages);
        match tokio::time::timeout(Duration::from_secs(60), put).await {
            Ok(Ok(results)) if results.len() == 1 => attempts.lock().unwrap()[index].acked = true,
            _ => return,
        }
    }
}

#[derive(Debug, Default)]
struct KillReport {
    rounds: usize,
    uploads_acked: usize,
    uploads_killed: usize,
    temp_files_left_by_kills: usize,
    datasets_checked: usize,
    torn: Vec<String>,
}

/// After a restart: checks every dataset is one of its allowed versions (on
/// disk and as served), and that the startup sweep left no temporary file.
async fn check_after_restart(
    server: &TestServer,
    repo: &Path,
    allowed: &[Vec<Option<u64>>],
    known: &mut [Option<u64>],
    report: &mut KillReport,
) {
    let leftovers = common::temp_files(repo);
    assert!(
        leftovers.is_empty(),
        "the startup sweep left temporary files: {leftovers:?}"
    );
    let mut client = server.client().await;
    for (i, allowed) in allowed.iter().enumerate() {
        let name = dataset_name(i);
        report.datasets_checked += 1;
        let on_disk = version_on_disk(repo, &name);
        let served = version_served(&mut client, &name).await;
        match (&on_disk, &served) {
            (Ok(v), Ok(w)) if v == w && allowed.contains(v) => known[i] = *v,
            _ => report.torn.push(format!(
                "{name}: on disk {on_disk:?}, served {served:?}, allowed {allowed:?}"
            )),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_uploads_keeps_old_or_new_version_and_sweeps_temp_files() {
    const DATASETS: usize = 3;
    let min_rounds = env_usize("HANGAR_KILL_ROUNDS", if long() { 50 } else { 10 });
    // At least one upload must be in flight at a kill, or the test proved
    // nothing; the round bound keeps it finite (a kill lands mid-upload in
    // almost every round, so the bound is never near).
    let min_killed = if long() { 50 } else { 1 };
    let max_rounds = min_rounds * 4;
    let mut rng = Rng::new(seed("server_killed_during_uploads"));
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo");
    fs::create_dir(&repo).unwrap();

    let mut known: Vec<Option<u64>> = vec![None; DATASETS];
    let mut allowed: Vec<Vec<Option<u64>>> = vec![vec![None]; DATASETS];
    let versions = Arc::new(AtomicU64::new(1));
    let mut report = KillReport::default();
    let started = Instant::now();
    while report.rounds < min_rounds
        || (report.uploads_killed < min_killed && report.rounds < max_rounds)
    {
        let mut server = start_on(&repo);
        check_after_restart(&server, &repo, &allowed, &mut known, &mut report).await;
        let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
        let uploaders: Vec<_> = (0..DATASETS)
            .map(|d| {
                tokio::spawn(keep_uploading(
                    server.addr,
                    d,
                    versions.clone(),
                    attempts.clone(),
                    200,
                ))
            })
            .collect();
        // A random moment: before the first message, mid-stream, mid-commit.
        tokio::time::sleep(Duration::from_millis(30 + rng.below(400))).await;
        server.signal("KILL");
        server.wait_exit();
        for uploader in uploaders {
            within(
                Duration::from_secs(60),
                "an uploader after the kill",
                uploader,
            )
            .await
            .unwrap();
        }
        report.rounds += 1;
        report.temp_files_left_by_kills += common::temp_files(&repo).len();
        // An orphan of a process that cannot exist (pids stop at 2^22).
        fs::write(
            repo.join(format!("{TEMP_PREFIX}4194305-0-{}", dataset_name(0))),
            b"partial upload",
        )
        .unwrap();
        let attempts = attempts.lock().unwrap().clone();
        for (d, allowed) in allowed.iter_mut().enumerate() {
            let mine: Vec<&Attempt> = attempts.iter().filter(|a| a.dataset == d).collect();
            let committed = mine
                .iter()
                .rev()
                .find(|a| a.acked)
                .map(|a| Some(a.version))
                .unwrap_or(known[d]);
            *allowed = vec![committed];
            for attempt in mine.iter().filter(|a| !a.acked) {
                allowed.push(Some(attempt.version));
                report.uploads_killed += 1;
            }
            report.uploads_acked += mine.iter().filter(|a| a.acked).count();
        }
    }
    let server = start_on(&repo);
    check_after_restart(&server, &repo, &allowed, &mut known, &mut report).await;
    eprintln!(
        "server kills: {} rounds in {:.1} s, {} uploads acknowledged, {} uploads in flight when \
         killed, {} temporary files left by kills (all swept), {} dataset checks, {} torn",
        report.rounds,
        started.elapsed().as_secs_f64(),
        report.uploads_acked,
        report.uploads_killed,
        report.temp_files_left_by_kills,
        report.datasets_checked,
        report.torn.len()
    );
    assert!(report.torn.is_empty(), "torn datasets: {:#?}", report.torn);
    assert!(
        report.uploads_killed >= min_killed,
        "only {} uploads were in flight at the kills",
        report.uploads_killed
    );
    assert!(
        known.iter().any(Option::is_some),
        "no upload ever committed: the test did not exercise replacement"
    );
}

// ---------------------------------------------------------------------------
// 2. Clients gone mid-DoPut / mid-DoGet

/// A loopback TCP proxy whose connections can be reset (RST) on demand.
struct Proxy {
    addr: SocketAddr,
    reset: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reset, _) = tokio::sync::watch::channel(0u64);
        let resets = reset.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let mut rx = resets.subscribe();
                let generation = *rx.borrow();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|g| *g > generation) => {
                            // Dropping with a zero linger sends RST both ways.
                            let _ = up.set_zero_linger();
                            let _ = down.set_zero_linger();
                        }
                    }
                });
            }
        });
        Proxy { addr, reset, task }
    }

    /// Resets every connection open through the proxy.
    fn reset_all(&self) {
        self.reset.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reset_all();
        self.task.abort();
    }
}

/// How a client disappears.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// The client cancels the call (HTTP/2 RST_STREAM CANCEL).
    Cancelled,
    /// The TCP connection is reset (RST) under the call.
    Reset,
    /// The client process is SIGKILLed.
    Killed,
}

const CHILD_ENV: &str = "HANGAR_FAULTS_CHILD";
const CHILD_READY: &str = "HANGAR-CHILD-READY";

/// Not a test of its own: the client process that [`Gone::Killed`] kills. Run
/// as a child (this test binary, `--ignored --exact child_client_process`) by
/// `clients_gone_mid_call_leave_no_temp_file_thread_or_descriptor_behind`, with
/// `HANGAR_FAULTS_CHILD` set to `put ADDR NAME` or `get ADDR NAME`; run any
/// other way, it fails rather than pass without testing anything.
#[test]
#[ignore = "helper process: run by clients_gone_mid_call_leave_no_temp_file_thread_or_descriptor_behind"]
fn child_client_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!(
            "child_client_process is a helper process, not a test: \
             clients_gone_mid_call_leave_no_temp_file_thread_or_descriptor_behind runs it \
             with {CHILD_ENV} set"
        );
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let (what, addr, name) = (parts[0], parts[1].parse().unwrap(), parts[2].to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let channel = connect(addr).await.unwrap();
        let mut client = FlightServiceClient::new(channel);
        // Kept alive until the process is killed.
        let mut _held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        match what {
            "put" => {
                let (tx, rx) = mpsc::channel(64);
                for m in upload_messages(&name, 999, 40_000, 4_096)
                    .await
                    .into_iter()
                    .take(3)
                {
                    tx.send(m).await.unwrap();
                }
                let response = client.do_put(ReceiverStream::new(rx)).await.unwrap();
                _held.push(Box::new(tx));
                _held.push(Box::new(response));
            }
            _ => {
                let mut stream = client
                    .do_get(common::ticket(&name))
                    .await
                    .unwrap()
                    .into_inner();
                stream.message().await.unwrap();
                _held.push(Box::new(stream));
            }
        }
        println!("{CHILD_READY}");
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    // Never reached in a normal run: the parent kills us first.
    std::process::exit(3);
}

/// Starts a client process doing `what` (put or get) on `name`, waits until
/// it says it is mid-call, and returns it.
fn spawn_child_client(what: &str, addr: SocketAddr, name: &str) -> Child {
    let mut child = common::helper_process(
        "child_client_process",
        (CHILD_ENV, &format!("{what} {addr} {name}")),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawning the client process");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(CHILD_READY) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the client process never got mid-call");
    }
    child
}

fn kill_child(mut child: Child) {
    child.kill().unwrap();
    common::wait_timeout(&mut child, Duration::from_secs(10)).expect("client process did not die");
}

/// A DoPut of a new version of `name` that disappears (`how`) after the server
/// has started writing the temporary file.
async fn aborted_put(server: &TestServer, name: &str, how: Gone) {
    let temp_appeared = |server: &TestServer| {
        let name = name.to_string();
        let repo = server.repo().to_path_buf();
        async move || common::temp_files(&repo).iter().any(|t| t.ends_with(&name))
    };
    match how {
        Gone::Killed => {
            let child = spawn_child_client("put", server.addr, name);
            let seen = wait_until(Duration::from_secs(10), temp_appeared(server)).await;
            kill_child(child);
            assert!(seen, "the killed client's upload never reached the server");
        }
        Gone::Cancelled | Gone::Reset => {
            let proxy = Proxy::start(server.addr).await;
            let addr = match how {
                Gone::Reset => proxy.addr,
                _ => server.addr,
            };
            let channel = within(Duration::from_secs(15), "connecting", connect(addr))
                .await
                .unwrap();
            let mut client = FlightServiceClient::new(channel);
            let (tx, rx) = mpsc::channel(64);
            for m in upload_messages(name, 999, 40_000, 4_096)
                .await
                .into_iter()
                .take(3)
            {
                tx.send(m).await.unwrap();
            }
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            let cancel = request.cancellation_handle();
            let mut response = within(Duration::from_secs(15), "DoPut", client.do_put(request))
                .await
                .expect("DoPut accepted")
                .into_inner();
            let seen = wait_until(Duration::from_secs(10), temp_appeared(server)).await;
            assert!(seen, "the upload never reached the server");
            match how {
                Gone::Reset => proxy.reset_all(),
                _ => cancel.cancel(),
            }
            // Whatever the client sees now, it must not be a committed upload.
            if let Ok(Ok(Some(reply))) =
                tokio::time::timeout(Duration::from_secs(10), response.message()).await
            {
                panic!("an aborted upload was acknowledged: {reply:?}");
            }
            drop(tx);
        }
    }
}

/// A DoGet of `name` that disappears (`how`) after the first batch.
async fn aborted_get(server: &TestServer, name: &str, how: Gone) {
    match how {
        Gone::Killed => kill_child(spawn_child_client("get", server.addr, name)),
        Gone::Cancelled | Gone::Reset => {
            let proxy = Proxy::start(server.addr).await;
            let addr = match how {
                Gone::Reset => proxy.addr,
                _ => server.addr,
            };
            let mut client = client_at(addr).await;
            let mut stream = within(
                Duration::from_secs(15),
                "DoGet",
                client.do_get(common::ticket(name)),
            )
            .await
            .expect("DoGet accepted");
            within(Duration::from_secs(15), "first batch", stream.next())
                .await
                .expect("a first batch")
                .expect("a first batch");
            if let Gone::Reset = how {
                proxy.reset_all();
            }
            drop(stream);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_gone_mid_call_leave_no_temp_file_thread_or_descriptor_behind() {
    let server = TestServer::start();
    let pid = server.pid();
    let repo = server.repo().to_path_buf();
    let kinds = [Gone::Cancelled, Gone::Reset, Gone::Killed];
    let kept = |how: Gone| format!("kept-{how:?}.parquet").to_lowercase();
    let big = "big.parquet";
    {
        let mut client = server.client().await;
        for how in kinds {
            put_version(&mut client, &kept(how), 1).await;
        }
        // Big enough that a DoGet cannot finish into the channel and socket
        // buffers: the worker is still reading when the client disappears.
        let batches = version_batches(7, 400_000, 50_000);
        common::put(&mut client, big, versioned_schema(), &batches)
            .await
            .unwrap();
        // Warm up every code path once, so lazily created threads and files
        // (blocking pool, log file) count in the baseline.
        common::get(&mut client, big).await.unwrap();
        put_version(&mut client, "warmup.parquet", 2).await;
    }
    let mut last = fds(pid);
    let mut stable_since = Instant::now();
    wait_until(Duration::from_secs(10), async || {
        let now = fds(pid);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        stable_since.elapsed() > Duration::from_millis(300)
    })
    .await;
    let baseline_fds = fds(pid);
    let baseline_threads = threads(pid);

    let rounds = env_usize("HANGAR_ABORT_ROUNDS", if long() { 20 } else { 3 });
    let mut aborted = 0;
    let mut peak_threads = baseline_threads;
    let mut problems = Vec::new();
    for round in 0..rounds {
        for how in kinds {
            let name = kept(how);
            let before = log_lines(&server, "DoPut", &name, false);
            let failed_before = log_lines(&server, "DoPut", &name, true);
            within(
                Duration::from_secs(60),
                "aborted DoPut",
                aborted_put(&server, &name, how),
            )
            .await;
            let finished = wait_until(Duration::from_secs(15), async || {
                log_lines(&server, "DoPut", &name, false) > before
            })
            .await;
            if !finished {
                problems.push(format!(
                    "round {round}: a DoPut aborted by {how:?} never finished on the server"
                ));
            } else if log_lines(&server, "DoPut", &name, true) == failed_before {
                problems.push(format!(
                    "round {round}: a DoPut aborted by {how:?} (client gone mid-stream) was \
                     COMMITTED by the server (its log line says status=OK)"
                ));
            }
            let before = log_lines(&server, "DoGet", big, false);
            within(
                Duration::from_secs(60),
                "aborted DoGet",
                aborted_get(&server, big, how),
            )
            .await;
            let finished = wait_until(Duration::from_secs(15), async || {
                log_lines(&server, "DoGet", big, false) > before
            })
            .await;
            if !finished {
                problems.push(format!(
                    "round {round}: a DoGet aborted by {how:?} never finished on the server \
                     (its worker is still running)"
                ));
            }
            aborted += 2;
            peak_threads = peak_threads.max(threads(pid));
        }
    }
    if !is_alive(pid) {
        problems.push("the server died".into());
    }
    let mut client = server.client().await;
    for how in kinds {
        let name = kept(how);
        let on_disk = version_on_disk(&repo, &name);
        let served = version_served(&mut client, &name).await;
        if on_disk != Ok(Some(1)) || served != Ok(Some(1)) {
            problems.push(format!(
                "{name}: aborted uploads changed the dataset: on disk {on_disk:?}, served \
                 {served:?}, expected version 1"
            ));
        }
    }
    drop(client);
    if !wait_until(Duration::from_secs(10), async || {
        common::temp_files(&repo).is_empty()
    })
    .await
    {
        problems.push(format!(
            "temporary files left behind: {:?}",
            common::temp_files(&repo)
        ));
    }
    // File descriptors: exactly the baseline once connections are closed.
    if !wait_until(Duration::from_secs(15), async || fds(pid) == baseline_fds).await {
        let now_fds = fds(pid);
        problems.push(format!(
            "after {aborted} aborted calls the server holds {} descriptors, {} at \
             baseline\nnow: {now_fds:#?}\nbaseline: {baseline_fds:#?}",
            now_fds.len(),
            baseline_fds.len()
        ));
    }
    // Threads: every aborted call's worker has returned (the call's log line,
    // waited for above, is written when its worker ends), so its thread is
    // back in tokio's blocking pool and the next call reuses it: the count
    // does not grow with the number of aborted calls. A leaked worker would
    // hold its thread, so a leak in any one kind of aborted call adds a
    // thread per round. (Waiting for "back to the baseline" would wait on the
    // pool's 10 s idle keep-alive, a tokio timer, not on hangar.)
    let threads_after = threads(pid);
    let threads_back = threads_after < baseline_threads + rounds;
    eprintln!(
        "clients gone: {aborted} aborted calls; threads {baseline_threads} at baseline, \
         {peak_threads} at peak, {threads_after} after; fds {} at baseline, {} after",
        baseline_fds.len(),
        fds(pid).len()
    );
    if !threads_back {
        problems.push(format!(
            "after {aborted} aborted calls in {rounds} rounds the server has {threads_after} \
             threads, {baseline_threads} at baseline: workers of aborted calls are leaking"
        ));
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\n--- server log ---\n{}",
        server.stderr()
    );
}

// ---------------------------------------------------------------------------
// 3. Disk full and file too large

/// A server with a repository the test owns, started through `wrapper`.
fn start_wrapped(wrapper: &[&str], repo: &Path) -> TestServer {
    TestServer::builder()
        .wrapper(wrapper)
        .existing_repo(repo)
        .start()
}

/// Checks the "no room" contract against a running server whose repository
/// cannot take more than a few MB: small upload OK, big one ResourceExhausted
/// with `needle` in the message, old version kept, no temporary file, still serving.
async fn check_no_room(server: &mut TestServer, repo: &Path, needle: &str) {
    let mut client = client_at(server.addr).await;
    put_version(&mut client, "d.parquet", 1).await;
    let big = version_batches(5, 300_000, 20_000);
    let status = common::put(&mut client, "d.parquet", versioned_schema(), &big)
        .await
        .expect_err("an upload beyond the room left must fail");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains(needle), "{status}");
    assert!(server.alive(), "the server died:\n{}", server.stderr());
    assert_version(&mut client, repo, "d.parquet", Some(1)).await;
    assert!(
        wait_until(Duration::from_secs(10), async || common::temp_files(repo)
            .is_empty())
        .await,
        "temporary file left: {:?}",
        common::temp_files(repo)
    );
    // Still serving, reads and writes.
    put_version(&mut client, "e.parquet", 2).await;
    assert_version(&mut client, repo, "e.parquet", Some(2)).await;
    let listed: Vec<_> = client
        .list_flights("")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_limit_fails_the_upload_with_resource_exhausted_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    // 4 MB: room for small versions (about 0.5 MB), not for the big one.
    let mut server = start_wrapped(&["prlimit", "--fsize=4000000"], &repo);
    within(
        Duration::from_secs(60),
        "file size limit",
        check_no_room(&mut server, &repo, "file too large"),
    )
    .await;
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs {}: {}: {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Needs root (to mount a small tmpfs). CI runs the tests as root, so there it
/// always runs and a failed mount fails it. Elsewhere it returns at once and
/// says `SKIPPED (not root)` on the terminal: libtest has no run-time skip, so
/// it still counts as passed (the RLIMIT_FSIZE test above covers the same
/// code path without root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_the_upload_with_resource_exhausted_and_keeps_serving() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skipped(
            "full_disk_fails_the_upload_with_resource_exhausted_and_keeps_serving",
            "not root",
            "mounting a tmpfs needs root; CI runs as root, so it runs there",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small-disk");
    let _tmpfs = Tmpfs::mount(&mount, "4m")
        .unwrap_or_else(|e| panic!("running as root, yet cannot mount the small tmpfs: {e}"));
    let repo = mount.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut server = TestServer::builder().existing_repo(&repo).start();
    within(
        Duration::from_secs(60),
        "full disk",
        check_no_room(&mut server, &repo, "disk full"),
    )
    .await;
    drop(server);
}

/// Says on the terminal that `test` did not run, and why. Written to stderr
/// directly (not with `eprintln!`, which the test harness captures and shows
/// only for failures), so a skip is visible in every run.
fn skipped(test: &str, why: &str, detail: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{test}: SKIPPED ({why}): {detail}");
}

// ---------------------------------------------------------------------------
// 4. Concurrent writers, readers and drops on one name

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_gets_and_drops_on_one_name_see_only_complete_versions() {
    let server = TestServer::start();
    let repo = server.repo().to_path_buf();
    let name = "contended.parquet";
    let writers = 4u64;
    let puts_each = env_usize("HANGAR_CONTENTION_PUTS", if long() { 25 } else { 5 }) as u64;
    let reads = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let addr = server.addr;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = client_at(addr).await;
            for i in 0..puts_each {
                let version = 1 + w + i * writers;
                let batches = version_batches(version, rows_for(version), 3_000);
                common::put(&mut client, name, versioned_schema(), &batches)
                    .await
                    .unwrap_or_else(|s| panic!("put of version {version}: {s}"));
                acked.lock().unwrap().push(version);
            }
        }));
    }
    let writers_done = {
        let tasks = std::mem::take(&mut tasks);
        let done = done.clone();
        tokio::spawn(async move {
            for t in tasks {
                t.await.unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for r in 0..3 {
        let addr = server.addr;
        let reads = reads.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut client = client_at(addr).await;
            let mut errors = Vec::new();
            for _ in 0..2_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let key = if r == 2 {
                    // One reader also asks for info: rows must be one version's.
                    match client.get_flight_info(common::path(name)).await {
                        Ok(info) => {
                            let ok = (0..8).any(|k| info.total_records == rows_for(k) as i64);
                            if !ok {
                                errors.push(format!("GetFlightInfo rows {}", info.total_records));
                            }
                            "info".to_string()
                        }
                        Err(e) => format!("info {:?}", status_of(e).code()),
                    }
                } else {
                    match version_served(&mut client, name).await {
                        Ok(Some(_)) => "complete version".to_string(),
                        Ok(None) => "not found".to_string(),
                        Err(e) => {
                            errors.push(e);
                            "torn".to_string()
                        }
                    }
                };
                *reads.lock().unwrap().entry(key).or_default() += 1;
            }
            errors
        }));
    }
    let dropper = {
        let addr = server.addr;
        let done = done.clone();
        tokio::spawn(async move {
            let mut client = client_at(addr).await;
            let mut drops = 0;
            for _ in 0..200 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                let result = client
                    .do_action(Action::new("drop_dataset", name.to_string()))
                    .await;
                match result {
                    Ok(stream) => {
                        let _: Vec<_> = stream.try_collect().await.unwrap();
                        drops += 1;
                    }
                    Err(e) => assert_eq!(status_of(e).code(), Code::NotFound),
                }
            }
            drops
        })
    };
    within(Duration::from_secs(120), "writers", writers_done)
        .await
        .unwrap();
    let mut torn = Vec::new();
    for r in readers {
        torn.extend(within(Duration::from_secs(60), "readers", r).await.unwrap());
    }
    let drops = within(Duration::from_secs(30), "dropper", dropper)
        .await
        .unwrap();
    eprintln!(
        "contention: {} puts, {drops} drops, reads {:?}",
        acked.lock().unwrap().len(),
        reads.lock().unwrap()
    );
    assert!(torn.is_empty(), "reads saw incomplete versions: {torn:#?}");
    // The final file, if any, is one complete acknowledged upload.
    let mut client = server.client().await;
    let last = version_on_disk(&repo, name).expect("final file is one complete version");
    if let Some(v) = last {
        assert!(
            acked.lock().unwrap().contains(&v),
            "final version {v} was never acknowledged"
        );
    }
    assert_eq!(version_served(&mut client, name).await, Ok(last));
    assert!(common::temp_files(&repo).is_empty());
}

// ---------------------------------------------------------------------------
// 5. Stalled clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_aborted_with_deadline_exceeded_and_cleaned_up() {
    let server = TestServer::start_with_args(["--idle-timeout", "2s"]);
    let repo = server.repo().to_path_buf();
    let mut client = server.client().await;
    put_version(&mut client, "s.parquet", 1).await;

    // Stalls after a few messages: the server has a temporary file open.
    let mut raw = FlightServiceClient::new(server.channel().await);
    let (tx, rx) = mpsc::channel(16);
    for m in upload_messages("s.parquet", 2, rows_for(2), 1_000)
        .await
        .into_iter()
        .take(3)
    {
        tx.send(m).await.unwrap();
    }
    let mut replies = within(
        Duration::from_secs(15),
        "DoPut",
        raw.do_put(ReceiverStream::new(rx)),
    )
    .await
    .unwrap()
    .into_inner();
    let status = within(
        Duration::from_secs(30),
        "the stalled upload's answer",
        replies.message(),
    )
    .await
    .expect_err("a stalled upload must fail");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("--idle-timeout"), "{status}");
    drop(tx);
    assert!(
        wait_until(Duration::from_secs(10), async || common::temp_files(&repo)
            .is_empty())
        .await,
        "temporary file left: {:?}",
        common::temp_files(&repo)
    );
    assert_version(&mut client, &repo, "s.parquet", Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_that_never_sends_a_message_is_aborted_after_the_idle_timeout() {
    let server =
        TestServer::start_with_args(["--idle-timeout", "2s", "--max-concurrent-calls", "4"]);
    let mut raw = FlightServiceClient::new(server.channel().await);
    // Opens the call, then sends nothing at all, not even the first message.
    let (tx, rx) = mpsc::channel::<FlightData>(1);
    let call = tokio::time::timeout(Duration::from_secs(20), async {
        let mut replies = raw.do_put(ReceiverStream::new(rx)).await?.into_inner();
        replies.message().await
    })
    .await;
    drop(tx);
    match call {
        Err(_) => panic!(
            "a DoPut that sends no message was still open 20 s after --idle-timeout 2s: \
             a silent client holds a call slot (and a task) forever"
        ),
        Ok(Ok(reply)) => panic!("a DoPut with no message succeeded: {reply:?}"),
        Ok(Err(status)) => assert_eq!(status.code(), Code::DeadlineExceeded, "{status}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_holds_bounded_memory_then_ends_with_deadline_exceeded() {
    let server = TestServer::start_with_args(["--idle-timeout", "2s", "--compression", "none"]);
    let pid = server.pid();
    let mut client = server.client().await;
    // About 100 MB of Arrow data: far more than the channel (4 messages of
    // about 2 MiB) and the transport windows.
    let rows = 2_000_000;
    let batches = version_batches(3, rows, 100_000);
    common::put(&mut client, "large.parquet", versioned_schema(), &batches)
        .await
        .unwrap();
    drop(batches);
    let rss_before = rss_kib(pid);
    let mut stream = client
        .do_get(common::ticket("large.parquet"))
        .await
        .unwrap();
    let first = within(Duration::from_secs(30), "first batch", stream.next())
        .await
        .unwrap()
        .unwrap();
    let mut got = first.num_rows();
    // Stop reading past the idle timeout; watch the server's memory meanwhile.
    let mut rss_peak = rss_before;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    let mut end = None;
    while let Some(item) = within(
        Duration::from_secs(30),
        "the rest of the stream",
        stream.next(),
    )
    .await
    {
        match item {
            Ok(batch) => got += batch.num_rows(),
            Err(e) => {
                end = Some(status_of(e));
                break;
            }
        }
    }
    eprintln!(
        "stalled reader: {got} of {rows} rows delivered, server RSS {} MiB before, {} MiB peak while stalled",
        rss_before / 1024,
        rss_peak / 1024
    );
    let status = end.unwrap_or_else(|| {
        panic!("the stream of a reader stalled past --idle-timeout ended OK after {got} of {rows} rows")
    });
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        got < rows,
        "the whole dataset fit in the buffers: the test proves nothing"
    );
    // Bounded: the channel and the transport windows, not the dataset.
    let growth_mib = rss_peak.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 48,
        "a stalled reader grew the server by {growth_mib} MiB (dataset ~100 MB)"
    );
    // Still serving.
    assert!(common::get(&mut client, "large.parquet").await.is_ok());
}

// ---------------------------------------------------------------------------
// 6. Limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_beyond_max_concurrent_calls_is_resource_exhausted_at_once() {
    let server =
        TestServer::start_with_args(["--max-concurrent-calls", "2", "--idle-timeout", "30s"]);
    let mut client = server.client().await;
    // Two uploads that stay open hold both slots.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut raw = FlightServiceClient::new(server.channel().await);
        let (tx, rx) = mpsc::channel(16);
        let name = format!("held-{i}.parquet");
        for m in upload_messages(&name, 1, 100, 100).await {
            tx.send(m).await.unwrap();
        }
        let replies = within(
            Duration::from_secs(15),
            "DoPut",
            raw.do_put(ReceiverStream::new(rx)),
        )
        .await
        .unwrap()
        .into_inner();
        held.push((tx, replies));
    }
    let mut refused = 0;
    for _ in 0..5 {
        let result = within(
            Duration::from_secs(10),
            "ListFlights under overload",
            async {
                match client.list_flights("").await {
                    Ok(s) => s.try_collect::<Vec<_>>().await.map(drop),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        let status = status_of(result.expect_err("a third call must be refused"));
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(
            status.message().contains("--max-concurrent-calls"),
            "{status}"
        );
        refused += 1;
    }
    let status = status_of(
        within(
            Duration::from_secs(10),
            "GetFlightInfo under overload",
            client.get_flight_info(common::path("x")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Finishing the held uploads frees the slots: both commit, and calls work again.
    for (tx, mut replies) in held {
        drop(tx);
        let reply = within(Duration::from_secs(15), "held upload", replies.message()).await;
        assert!(matches!(reply, Ok(Some(_))), "{reply:?}");
    }
    let mut listed = None;
    wait_until(Duration::from_secs(5), async || {
        listed = match client.list_flights("").await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await.ok(),
            Err(_) => None,
        };
        listed.is_some()
    })
    .await;
    assert_eq!(
        listed.map(|l| l.len()),
        Some(2),
        "calls never worked again after {refused} refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_beyond_max_dataset_bytes_is_resource_exhausted_and_keeps_old_data() {
    let limit = 1_000_000u64;
    let server = TestServer::start_with_args(["--max-dataset-bytes", &limit.to_string()]);
    let repo = server.repo().to_path_buf();
    let mut client = server.client().await;
    put_version(&mut client, "m.parquet", 1).await;
    let size_v1 = fs::metadata(repo.join("m.parquet")).unwrap().len();
    assert!(size_v1 <= limit);
    // Data beyond the limit (about 4.5 MB of Arrow data).
    let big = version_batches(5, 100_000, 10_000);
    let status = common::put(&mut client, "m.parquet", versioned_schema(), &big)
        .await
        .expect_err("an upload beyond --max-dataset-bytes must fail");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-dataset-bytes"), "{status}");
    assert_version(&mut client, &repo, "m.parquet", Some(1)).await;
    assert!(common::temp_files(&repo).is_empty());

    // Schema metadata beyond the limit, with no batch at all: the file would
    // still be larger than the limit (the schema is stored in the footer).
    let schema = Arc::new(
        Schema::new(vec![Field::new("n", DataType::Int64, false)]).with_metadata(
            std::collections::HashMap::from([(
                "padding".to_string(),
                "x".repeat(2 * limit as usize),
            )]),
        ),
    );
    let result = common::put(&mut client, "meta.parquet", schema, &[]).await;
    let on_disk = fs::metadata(repo.join("meta.parquet"))
        .map(|m| m.len())
        .ok();
    match result {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            assert_eq!(on_disk, None);
        }
        Ok(summary) => panic!(
            "an upload whose file is {} bytes was stored despite --max-dataset-bytes {limit}",
            summary.bytes
        ),
    }
    // Every stored file respects the limit.
    for entry in fs::read_dir(&repo).unwrap().flatten() {
        let len = entry.metadata().unwrap().len();
        assert!(len <= limit, "{:?} is {len} bytes", entry.file_name());
    }
    assert!(common::temp_files(&repo).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_max_message_size_are_refused_both_ways() {
    let server = TestServer::start_with_args(["--max-message-size", "65536"]);
    let repo = server.repo().to_path_buf();
    let mut client = server.client().await;
    // Batches of 500 rows (about 25 KB a message) fit.
    let v1 = version_batches(1, rows_for(1), 500);
    common::put(&mut client, "m.parquet", versioned_schema(), &v1)
        .await
        .unwrap();
    // One message of about 200 KB does not.
    let big = version_batches(2, rows_for(2), 4_000);
    let status = common::put(&mut client, "m.parquet", versioned_schema(), &big)
        .await
        .expect_err("a message beyond --max-message-size must be refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-message-size"), "{status}");
    assert_version(&mut client, &repo, "m.parquet", Some(1)).await;
    assert!(
        wait_until(Duration::from_secs(10), async || common::temp_files(&repo)
            .is_empty())
        .await,
        "temporary file left: {:?}",
        common::temp_files(&repo)
    );
    // A dataset with one row larger than the limit (written straight into the
    // repository) cannot be sent: DoGet says which limit, and nothing breaks.
    let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
    let row = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec!["y".repeat(200_000)]))],
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        File::create(repo.join("wide.parquet")).unwrap(),
        schema,
        None,
    )
    .unwrap();
    writer.write(&row).unwrap();
    writer.close().unwrap();
    let status = common::get(&mut client, "wide.parquet")
        .await
        .expect_err("a row beyond --max-message-size cannot be sent");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-message-size"), "{status}");
    assert_version(&mut client, &repo, "m.parquet", Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_headers_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let pid = server.pid();
    let mut client = server.client().await;
    put_version(&mut client, "h.parquet", 1).await;
    for size in [20_000usize, 200_000, 2_000_000] {
        let mut big = server.client().await;
        big.add_header("x-padding", &"p".repeat(size)).unwrap();
        let result = within(
            Duration::from_secs(20),
            "a call with a huge header",
            async {
                match big.list_flights("").await {
                    Ok(s) => s.try_collect::<Vec<_>>().await.map(drop),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        assert!(result.is_err(), "a {size}-byte header was accepted");
        // Also on the same connection as a normal client, then a new one.
        assert!(is_alive(pid), "the server died on a {size}-byte header");
        assert_version(&mut client, server.repo(), "h.parquet", Some(1)).await;
        let mut fresh = server.client().await;
        assert_version(&mut fresh, server.repo(), "h.parquet", Some(1)).await;
    }
    // A huge authorization header too (parsed by hangar when auth is on; here
    // it must simply be refused by the transport).
    let mut auth = server.client().await;
    auth.add_header("authorization", &format!("Basic {}", "A".repeat(100_000)))
        .unwrap();
    assert!(auth
        .get_flight_info(common::path("h.parquet"))
        .await
        .is_err());
    assert_version(&mut client, server.repo(), "h.parquet", Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_fail_quickly_and_the_server_keeps_serving() {
    let server = TestServer::start_with_args(["--max-connections", "2"]);
    let mut first = server.client().await;
    let mut second = server.client().await;
    put_version(&mut first, "c.parquet", 1).await;
    assert_version(&mut second, server.repo(), "c.parquet", Some(1)).await;
    // A third connection is closed at once: connecting or the first call fails
    // with Unavailable, well within the bound (never a hang).
    for _ in 0..3 {
        let outcome = within(Duration::from_secs(15), "a connection beyond the limit", async {
            match connect(server.addr).await {
                Err(e) => Err(format!("connect: {e}")),
                Ok(channel) => {
                    let mut extra = FlightClient::new(channel);
                    match extra.list_flights("").await {
                        Ok(s) => s
                            .try_collect::<Vec<_>>()
                            .await
                            .map(drop)
                            .map_err(|e| {
                                let status = status_of(e);
                                assert_eq!(
                                    status.code(),
                                    Code::Unavailable,
                                    "a connection beyond --max-connections must fail with Unavailable (retry later), got {status}"
                                );
                                status.to_string()
                            }),
                        Err(e) => {
                            let status = status_of(e);
                            assert_eq!(
                                    status.code(),
                                    Code::Unavailable,
                                    "a connection beyond --max-connections must fail with Unavailable (retry later), got {status}"
                                );
                            Err(status.to_string())
                        }
                    }
                }
            }
        })
        .await;
        assert!(
            outcome.is_err(),
            "a third connection was served despite --max-connections 2"
        );
    }
    // The two admitted connections still work.
    assert_version(&mut first, server.repo(), "c.parquet", Some(1)).await;
    assert_version(&mut second, server.repo(), "c.parquet", Some(1)).await;
    // Closing one frees its slot for a new connection.
    drop(second);
    let served = wait_until(Duration::from_secs(10), async || {
        match connect(server.addr).await {
            Ok(channel) => {
                let mut again = FlightClient::new(channel);
                version_served(&mut again, "c.parquet").await == Ok(Some(1))
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(served, "a freed connection slot was never reused");
}

// ---------------------------------------------------------------------------
// 7. Path attacks

/// Every file below `dir` with its content, to prove nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.insert(path.clone(), fs::read(&path).unwrap());
            } else {
                out.insert(
                    path.clone(),
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_attacks_never_touch_anything_outside_the_repository() {
    let outside = tempfile::tempdir().unwrap();
    // A valid Parquet file outside: a server that followed a link could serve it.
    let secret = outside.path().join("secret.parquet");
    {
        let batches = version_batches(66, rows_for(66), 4_096);
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(&secret).unwrap(),
            versioned_schema(),
            None,
        )
        .unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }
    let secret_dir = outside.path().join("dir");
    fs::create_dir(&secret_dir).unwrap();
    fs::write(secret_dir.join("inner.parquet"), b"inner").unwrap();

    let builder = TestServer::builder();
    let repo = builder.repo_path().to_path_buf();
    std::os::unix::fs::symlink(&secret, repo.join("file-link.parquet")).unwrap();
    std::os::unix::fs::symlink(&secret_dir, repo.join("dir-link")).unwrap();
    // A planted "temporary file" that is a link outside: the startup sweep
    // may remove the link, never its target.
    std::os::unix::fs::symlink(&secret, repo.join(format!("{TEMP_PREFIX}4194305-0-x"))).unwrap();
    let server = builder.start();
    let parent = server.dir().to_path_buf();
    let before_outside = snapshot(outside.path());
    let mut client = server.client().await;
    put_version(&mut client, "inside.parquet", 1).await;
    let before_parent: BTreeMap<_, _> = snapshot(&parent)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&repo) && !p.ends_with("stderr.log"))
        .collect();

    // Names that try to leave the repository are refused before any I/O.
    let escapes = [
        "..",
        ".",
        "../escape.parquet",
        "../../etc/passwd",
        "/etc/passwd",
        "/tmp/x.parquet",
        "a/../../b",
        "..\\x",
        "dir-link/inner.parquet",
        "..%2fx",
        ".%2e",
        ".hangar-tmp-1-1-x",
        "\0",
        "a\0b",
    ];
    for name in escapes {
        let status = common::put(
            &mut client,
            name,
            versioned_schema(),
            &version_batches(2, 10, 10),
        )
        .await
        .expect_err(name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "put {name:?}: {status}"
        );
        let status = common::get(&mut client, name).await.expect_err(name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "get {name:?}: {status}"
        );
        let status = status_of(
            client
                .get_flight_info(common::path(name))
                .await
                .expect_err(name),
        );
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "info {name:?}: {status}"
        );
        let status = status_of(
            client
                .do_action(Action::new("drop_dataset", name.to_string()))
                .await
                .err()
                .unwrap_or_else(|| panic!("drop {name:?} accepted")),
        );
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "drop {name:?}: {status}"
        );
    }
    // Encoded separators are not decoded: they are plain characters of a
    // plain file name inside the repository.
    for name in ["%2F..%2Fescape.parquet", "a%2fb", "%2e%2e"] {
        put_version(&mut client, name, 3).await;
        assert!(
            repo.join(name).is_file(),
            "{name} not stored as one file in the repository"
        );
        assert_version(&mut client, &repo, name, Some(3)).await;
    }

    // Symlinks planted in the repository are never followed.
    for link in ["file-link.parquet", "dir-link"] {
        let status = common::get(&mut client, link).await.expect_err(link);
        assert_eq!(status.code(), Code::NotFound, "get {link}: {status}");
        let status = status_of(
            client
                .get_flight_info(common::path(link))
                .await
                .expect_err(link),
        );
        assert_eq!(status.code(), Code::NotFound, "info {link}: {status}");
        let status = status_of(
            client
                .do_action(Action::new("drop_dataset", link.to_string()))
                .await
                .err()
                .unwrap_or_else(|| panic!("drop {link} accepted")),
        );
        assert_eq!(status.code(), Code::NotFound, "drop {link}: {status}");
        let status = common::put(
            &mut client,
            link,
            versioned_schema(),
            &version_batches(4, 10, 10),
        )
        .await
        .expect_err(link);
        assert_ne!(status.code(), Code::Ok, "put {link}");
        assert!(
            fs::symlink_metadata(repo.join(link))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{link} is no longer the planted symlink"
        );
    }
    let listed: Vec<String> = client
        .list_flights("")
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|i| i.flight_descriptor.as_ref().unwrap().path[0].clone())
        .collect();
    assert!(
        !listed.iter().any(|n| n.contains("link")),
        "listing shows symlinks: {listed:?}"
    );
    // Symlinks swapped in for the temporary file names an upload will use.
    for seq in 0..64 {
        let _ = std::os::unix::fs::symlink(
            &secret,
            repo.join(format!(
                "{TEMP_PREFIX}{}-{seq}-victim.parquet",
                server.pid()
            )),
        );
    }
    let _ = common::put(
        &mut client,
        "victim.parquet",
        versioned_schema(),
        &version_batches(5, 10, 10),
    )
    .await;

    assert_eq!(
        snapshot(outside.path()),
        before_outside,
        "files outside the repository changed"
    );
    assert!(secret.is_file() && secret_dir.join("inner.parquet").is_file());
    assert_eq!(
        version_on_disk(outside.path(), "secret.parquet"),
        Ok(Some(66))
    );
    let after_parent: BTreeMap<_, _> = snapshot(&parent)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&repo) && !p.ends_with("stderr.log"))
        .collect();
    assert_eq!(
        after_parent, before_parent,
        "files beside the repository changed"
    );
    assert_version(&mut client, &repo, "inside.parquet", Some(1)).await;
}
