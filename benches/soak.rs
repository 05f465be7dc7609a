//! The soak test: `cargo bench --bench soak -- --minutes 1`.
//!
//! 64 clients (by default) run a mix of DoGet (40 %), DoPut overwrites (25 %),
//! ListFlights, GetFlightInfo (15 % each) and drop_dataset (5 %) against one
//! server for the given time, over 20 shared dataset names (so puts, reads and
//! drops collide). Every read is checked: all rows of a read carry one version
//! id and that version's row count. With `--memory-limit A,B,...` it runs one
//! round per limit, each on a fresh server started with that flag.
//!
//! Per round it reports calls per second, p50/p99 latency per operation and
//! overall, errors, calls refused for memory (RESOURCE_EXHAUSTED naming
//! `--memory-limit`, which the budget allows, so they are not errors), and the
//! server's RSS: idle before the load, peak during it (VmRSS sampled every
//! 250 ms, and VmHWM), and after the load at +1 s, +2 s and +5 s.
//!
//! Options (after `--`):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `--minutes M` | 1 | how long each round runs (fractions allowed) |
//! | `--clients N` | 64 | concurrent clients, one connection each |
//! | `--memory-limit L[,L...]` | the server's default | one round per value, passed to `hangar serve --memory-limit` |
//! | `--bin PATH` | the bench's own `hangar` | another hangar binary, for A/B comparisons |
//! | `--server URI --pid PID` | none | use a running server (`grpc://127.0.0.1:PORT`) instead of starting one on 127.0.0.1:0 |
//! | `--rss-bound-mib B` | 64 | fail (exit 1) if RSS 5 s after the load is more than this above the warm-up sample |
//!
//! The server inherits the benchmark's environment, so allocator settings can
//! be compared without a rebuild (e.g. `GLIBC_TUNABLES=glibc.malloc.trim_threshold=…`;
//! not `arena_max`, which hangar sets itself at start).
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use tonic::transport::Endpoint;
use tonic::Code;

/// Bound on one call; a call that overruns counts as an error. Longer than
/// the server's default --idle-timeout (60 s), the longest a call waits for
/// memory, so a refusal shows as one rather than as a client timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// Dataset names the clients share.
const NAMES: u64 = 20;

struct Options {
    duration: Duration,
    clients: usize,
    server: Option<(String, u32)>,
    /// `--memory-limit` of each round; `None` leaves the server's default.
    limits: Vec<Option<String>>,
    bin: String,
    rss_bound_mib: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(60),
        clients: 64,
        server: None,
        limits: vec![None],
        bin: env!("CARGO_BIN_EXE_hangar").to_string(),
        rss_bound_mib: 64,
    };
    let (mut uri, mut pid) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--minutes" => {
                let m: f64 = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?;
                if !(m > 0.0 && m <= 24.0 * 60.0) {
                    return Err("--minutes must be between 0 and 1440".into());
                }
                options.duration = Duration::from_secs_f64(m * 60.0);
            }
            "--clients" => {
                options.clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?;
                options.clients = options.clients.clamp(1, 256);
            }
            "--memory-limit" => {
                options.limits = value("--memory-limit")?
                    .split(',')
                    .map(|l| Some(l.trim().to_string()))
                    .collect();
            }
            "--bin" => options.bin = value("--bin")?,
            "--server" => uri = Some(value("--server")?),
            "--pid" => {
                pid = Some(
                    value("--pid")?
                        .parse::<u32>()
                        .map_err(|e| format!("--pid: {e}"))?,
                )
            }
            "--rss-bound-mib" => {
                options.rss_bound_mib = value("--rss-bound-mib")?
                    .parse()
                    .map_err(|e| format!("--rss-bound-mib: {e}"))?
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => {} // cargo's filter argument, if any
        }
    }
    options.server = match (uri, pid) {
        (Some(uri), Some(pid)) => Some((uri, pid)),
        (None, None) => None,
        _ => return Err("--server and --pid go together".into()),
    };
    if options.server.is_some() && options.limits.iter().any(Option::is_some) {
        return Err("--memory-limit needs a server the soak starts itself".into());
    }
    Ok(options)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run it with `cargo bench --bench soak -- --minutes 1`");
        return;
    }
    let options = match parse_options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("soak: {err}");
            std::process::exit(2);
        }
    };
    // Watchdog: the run stops by itself even if something hangs.
    let limit = (options.duration + Duration::from_secs(300)) * options.limits.len() as u32;
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("soak: overran {limit:?}; aborting");
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(options));
    std::process::exit(code);
}

/// The release server this run started, killed on drop.
struct OwnServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &str, limit: Option<&str>) -> Result<(OwnServer, SocketAddr, u32), String> {
    let dir = tempfile::Builder::new()
        .prefix("hangar-soak-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(dir.path().join("repo"));
    if let Some(limit) = limit {
        command.args(["--memory-limit", limit]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("starting hangar: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let pid = child.id();
    let server = OwnServer { child, _dir: dir };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "hangar did not print its listening line".to_string())?;
    let addr = line
        .strip_prefix("hangar listening on grpc://")
        .and_then(|a| a.parse().ok())
        .ok_or(format!("unexpected line {line:?}"))?;
    Ok((server, addr, pid))
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l[field.len()..].split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    threads: u64,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kib: proc_status(pid, "VmRSS:"),
        threads: proc_status(pid, "Threads:"),
        fds: proc_fds(pid),
    }
}

// ---------------------------------------------------------------------------
// Data: version V has rows_for(V) rows, each carrying V.

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("row", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]))
}

fn rows_for(version: u64) -> usize {
    1_000 + (version.wrapping_mul(2_654_435_761) % 60_000) as usize
}

fn batches(version: u64) -> Vec<RecordBatch> {
    let rows = rows_for(version);
    (0..rows)
        .step_by(16_384)
        .map(|start| {
            let end = (start + 16_384).min(rows);
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(vec![version as i64; end - start])),
                    Arc::new(Int64Array::from(
                        (start as i64..end as i64).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(
                        (start..end)
                            .map(|r| format!("v{version}-{r}"))
                            .collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Checks a read is one complete version.
fn check(batches: &[RecordBatch]) -> Result<(), String> {
    let mut version = None;
    let mut rows = 0;
    for b in batches {
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("unexpected schema")?;
        for i in 0..ids.len() {
            match version {
                None => version = Some(ids.value(i)),
                Some(v) if v != ids.value(i) => {
                    return Err(format!("mixed versions {v}, {}", ids.value(i)))
                }
                _ => {}
            }
        }
        rows += b.num_rows();
    }
    match version {
        Some(v) if rows == rows_for(v as u64) => Ok(()),
        Some(v) => Err(format!(
            "version {v}: {rows} rows of {}",
            rows_for(v as u64)
        )),
        None => Err("no rows".into()),
    }
}

// ---------------------------------------------------------------------------
// Load

#[derive(Default)]
struct Stats {
    /// Latencies in microseconds, per operation.
    latencies: BTreeMap<&'static str, Vec<u32>>,
    /// Expected misses (NotFound after a drop), per operation.
    misses: BTreeMap<&'static str, u64>,
    /// Calls the memory budget refused, per operation.
    refused: BTreeMap<&'static str, u64>,
    errors: Vec<String>,
}

struct Shared {
    stats: Mutex<Stats>,
    versions: AtomicU64,
    stop: AtomicBool,
}

enum Outcome {
    Ok,
    Miss,
    /// RESOURCE_EXHAUSTED from the memory budget: allowed, counted apart.
    Refused,
    Error(String),
}

fn outcome_of(status: tonic::Status) -> Outcome {
    if status.code() == Code::NotFound {
        Outcome::Miss
    } else if status.code() == Code::ResourceExhausted
        && status.message().contains("--memory-limit")
    {
        Outcome::Refused
    } else {
        Outcome::Error(format!("{:?}: {}", status.code(), status.message()))
    }
}

fn status_of(err: arrow_flight::error::FlightError) -> tonic::Status {
    match err {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

async fn one_call(
    client: &mut FlightClient,
    op: &'static str,
    name: String,
    shared: &Shared,
) -> Outcome {
    let path = FlightDescriptor::new_path(vec![name.clone()]);
    match op {
        "put" => {
            let version = shared.versions.fetch_add(1, Ordering::Relaxed);
            let input = futures::stream::iter(batches(version).into_iter().map(Ok));
            let stream = arrow_flight::encode::FlightDataEncoderBuilder::new()
                .with_schema(schema())
                .with_flight_descriptor(Some(path))
                .build(input);
            match client.do_put(stream).await {
                Ok(replies) => match replies.try_collect::<Vec<_>>().await {
                    Ok(r) if r.len() == 1 => Outcome::Ok,
                    Ok(r) => Outcome::Error(format!("put: {} results", r.len())),
                    Err(e) => outcome_of(status_of(e)),
                },
                Err(e) => outcome_of(status_of(e)),
            }
        }
        "get" => {
            let ticket = Ticket::new(name.into_bytes());
            match client.do_get(ticket).await {
                Ok(stream) => match stream.try_collect::<Vec<_>>().await {
                    Ok(read) => match check(&read) {
                        Ok(()) => Outcome::Ok,
                        Err(e) => Outcome::Error(format!("torn read: {e}")),
                    },
                    Err(e) => outcome_of(status_of(e)),
                },
                Err(e) => outcome_of(status_of(e)),
            }
        }
        "list" => match client.list_flights("").await {
            Ok(s) => match s.try_collect::<Vec<_>>().await {
                Ok(_) => Outcome::Ok,
                Err(e) => outcome_of(status_of(e)),
            },
            Err(e) => outcome_of(status_of(e)),
        },
        "info" => match client.get_flight_info(path).await {
            // Rows are one version's count, whichever version it is.
            Ok(info) if info.total_records >= rows_for(0) as i64 => Outcome::Ok,
            Ok(info) => Outcome::Error(format!("info: {} rows", info.total_records)),
            Err(e) => outcome_of(status_of(e)),
        },
        _ => match client.do_action(Action::new("drop_dataset", name)).await {
            Ok(s) => match s.try_collect::<Vec<_>>().await {
                Ok(_) => Outcome::Ok,
                Err(e) => outcome_of(status_of(e)),
            },
            Err(e) => outcome_of(status_of(e)),
        },
    }
}

async fn client_loop(addr: SocketAddr, id: u64, shared: Arc<Shared>) {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10));
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            shared
                .stats
                .lock()
                .unwrap()
                .errors
                .push(format!("client {id}: connect: {e}"));
            return;
        }
    };
    let mut client = FlightClient::new(channel);
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !shared.stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let op = match x % 100 {
            0..=24 => "put",
            25..=64 => "get",
            65..=79 => "list",
            80..=94 => "info",
            _ => "drop",
        };
        let name = format!("soak-{}.parquet", (x >> 32) % NAMES);
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            CALL_TIMEOUT,
            one_call(&mut client, op, name, &shared),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Error(format!("{op}: no answer within {CALL_TIMEOUT:?}")),
        };
        let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        let mut stats = shared.stats.lock().unwrap();
        stats.latencies.entry(op).or_default().push(micros);
        match outcome {
            Outcome::Ok => {}
            Outcome::Miss => *stats.misses.entry(op).or_default() += 1,
            Outcome::Refused => *stats.refused.entry(op).or_default() += 1,
            Outcome::Error(e) => {
                if stats.errors.len() < 1_000 {
                    stats.errors.push(format!("{op}: {e}"));
                } else {
                    stats.errors.push(String::new());
                }
            }
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What one round measured.
struct Round {
    limit: String,
    seconds: f64,
    calls: usize,
    refused: u64,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    idle_kib: u64,
    peak_kib: u64,
    /// RSS 1, 2 and 5 s after the clients stopped.
    after_kib: [u64; 3],
    died: bool,
}

async fn run(options: Options) -> i32 {
    let mut rounds = Vec::new();
    let mut code = 0;
    for limit in &options.limits {
        match round(&options, limit.as_deref()).await {
            Ok((round, round_code)) => {
                rounds.push(round);
                code = code.max(round_code);
            }
            Err(e) => {
                eprintln!("soak: {e}");
                return 1;
            }
        }
    }
    println!(
        "\n## hangar soak: {} clients, {:.1} min a round\n",
        options.clients,
        options.duration.as_secs_f64() / 60.0
    );
    println!(
        "| --memory-limit | calls/s | p50 ms | p99 ms | refused (memory) | errors | idle RSS MiB | peak RSS MiB | RSS after +1 s / +2 s / +5 s MiB | +5 s over idle MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rounds {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} of {} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} |",
            r.limit,
            r.calls as f64 / r.seconds,
            r.p50_ms,
            r.p99_ms,
            r.refused,
            r.calls,
            r.errors,
            mib(r.idle_kib),
            mib(r.peak_kib),
            mib(r.after_kib[0]),
            mib(r.after_kib[1]),
            mib(r.after_kib[2]),
            mib(r.after_kib[2]) - mib(r.idle_kib),
        );
    }
    for r in &rounds {
        if r.died {
            eprintln!("soak: FAILED: the server died ({})", r.limit);
        }
    }
    code
}

async fn round(options: &Options, limit: Option<&str>) -> Result<(Round, i32), String> {
    let (own, addr, pid) = match &options.server {
        Some((uri, pid)) => {
            let addr = uri
                .trim_start_matches("grpc://")
                .trim_start_matches("http://")
                .parse::<SocketAddr>()
                .map_err(|e| format!("--server {uri}: {e}"))?;
            if !addr.ip().is_loopback() {
                return Err(format!("{addr} is not a loopback address; refusing"));
            }
            (None, addr, *pid)
        }
        None => {
            let (server, addr, pid) = start_server(&options.bin, limit)?;
            (Some(server), addr, pid)
        }
    };
    let limit_name = match (&options.server, limit) {
        (Some(_), _) => "(running server)".to_string(),
        (None, Some(limit)) => limit.to_string(),
        (None, None) => "default".to_string(),
    };
    eprintln!(
        "soak: {} clients against grpc://{addr} (pid {pid}, --memory-limit {limit_name}) for {:.1} min",
        options.clients,
        options.duration.as_secs_f64() / 60.0
    );
    let idle = sample(pid);
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::default()),
        versions: AtomicU64::new(1),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients as u64)
        .map(|id| tokio::spawn(client_loop(addr, id + 1, shared.clone())))
        .collect();
    // Warm-up: a tenth of the run, at most a minute; then the baseline for
    // the growth check. RSS is sampled often enough to see short peaks.
    let warm = (options.duration / 10).min(Duration::from_secs(60));
    let mut warm_sample = None;
    let mut peak_kib = idle.rss_kib;
    let mut last_report = Instant::now();
    while started.elapsed() < options.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = sample(pid);
        if s.rss_kib == 0 {
            eprintln!("soak: the server (pid {pid}) is gone");
            break;
        }
        peak_kib = peak_kib.max(s.rss_kib);
        if warm_sample.is_none() && started.elapsed() >= warm {
            warm_sample = Some(s);
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            last_report = Instant::now();
            let calls: usize = shared
                .stats
                .lock()
                .unwrap()
                .latencies
                .values()
                .map(Vec::len)
                .sum();
            eprintln!(
                "soak: {:>6.0} s  {calls} calls  RSS {} MiB  threads {}  fds {}",
                started.elapsed().as_secs_f64(),
                s.rss_kib / 1024,
                s.threads,
                s.fds
            );
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), c).await;
    }
    let elapsed = started.elapsed();
    peak_kib = peak_kib.max(proc_status(pid, "VmHWM:"));
    // The server at rest again: how much of the load's memory it gave back.
    let stopped = Instant::now();
    let mut after_kib = [0u64; 3];
    for (slot, at) in after_kib.iter_mut().zip([1u64, 2, 5]) {
        let wait = Duration::from_secs(at).saturating_sub(stopped.elapsed());
        tokio::time::sleep(wait).await;
        *slot = sample(pid).rss_kib;
    }
    let end = sample(pid);
    drop(own);
    let warm_sample = warm_sample.unwrap_or(idle);

    let stats = shared.stats.lock().unwrap();
    let mut all: Vec<u32> = Vec::new();
    let mut table = String::from(
        "| op | calls | not found | refused (memory) | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n",
    );
    for (op, lat) in &stats.latencies {
        let mut sorted = lat.clone();
        sorted.sort_unstable();
        all.extend_from_slice(&sorted);
        table.push_str(&format!(
            "| {op} | {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            sorted.len(),
            stats.misses.get(op).copied().unwrap_or(0),
            stats.refused.get(op).copied().unwrap_or(0),
            percentile(&sorted, 0.50),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0)
        ));
    }
    all.sort_unstable();
    let calls = all.len();
    let errors = stats.errors.len();
    let growth_mib = mib(after_kib[2].saturating_sub(warm_sample.rss_kib));
    println!(
        "\n### --memory-limit {limit_name}: {:.1} min, {} clients\n",
        elapsed.as_secs_f64() / 60.0,
        options.clients
    );
    println!("{table}");
    println!(
        "- calls: {calls} ({:.0}/s), refused for memory: {}",
        calls as f64 / elapsed.as_secs_f64(),
        stats.refused.values().sum::<u64>()
    );
    println!("- errors: {errors}");
    println!(
        "- latency, all calls: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    println!(
        "- server RSS: {:.1} MiB idle, {:.1} MiB after warm-up, peak {:.1} MiB; after the load {:.1} / {:.1} / {:.1} MiB at +1 / +2 / +5 s",
        mib(idle.rss_kib),
        mib(warm_sample.rss_kib),
        mib(peak_kib),
        mib(after_kib[0]),
        mib(after_kib[1]),
        mib(after_kib[2]),
    );
    println!(
        "- server threads {} → {}, open descriptors {} → {}",
        warm_sample.threads, end.threads, warm_sample.fds, end.fds
    );
    for e in stats.errors.iter().filter(|e| !e.is_empty()).take(20) {
        println!("  error: {e}");
    }
    let mut code = 0;
    if errors > 0 {
        eprintln!("soak: FAILED: {errors} errors");
        code = 1;
    }
    let died = end.rss_kib == 0;
    if died {
        code = 1;
    } else if growth_mib > options.rss_bound_mib as f64 {
        eprintln!("soak: FAILED: RSS 5 s after the load is {growth_mib:.1} MiB above warm-up");
        code = 1;
    }
    let round = Round {
        limit: limit_name,
        seconds: elapsed.as_secs_f64(),
        calls,
        refused: stats.refused.values().sum(),
        errors,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        idle_kib: idle.rss_kib,
        peak_kib,
        after_kib,
        died,
    };
    Ok((round, code))
}
