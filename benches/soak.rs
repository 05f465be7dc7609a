//! The soak test: `cargo bench --bench soak -- --minutes 10`.
//!
//! Several clients run a mix of DoPut, DoGet, ListFlights, GetFlightInfo and
//! drop_dataset against one server for the given time, over a small pool of
//! dataset names (so puts, reads and drops collide). Every read is checked: all
//! rows of a read carry one version id and that version's row count. At the
//! end it reports calls, errors, p50/p99 latency per operation, and the
//! server's RSS, threads and open descriptors after warm-up and at the end.
//!
//! Options (after `--`):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `--minutes M` | 10 | how long to run (fractions allowed) |
//! | `--clients N` | 4 | concurrent clients |
//! | `--server URI --pid PID` | none | use a running server (`grpc://127.0.0.1:PORT`) instead of starting the release binary on 127.0.0.1:0 |
//! | `--rss-bound-mib B` | 64 | fail (exit 1) if RSS grows more than this after warm-up |
//!
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

/// Bound on one call; a call that overruns counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Dataset names the clients share.
const NAMES: u64 = 12;

struct Options {
    duration: Duration,
    clients: usize,
    server: Option<(String, u32)>,
    rss_bound_mib: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(600),
        clients: 4,
        server: None,
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
                options.clients = options.clients.clamp(1, 64);
            }
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
    Ok(options)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run it with `cargo bench --bench soak -- --minutes 10`");
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
    let limit = options.duration + Duration::from_secs(300);
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

fn start_server() -> Result<(OwnServer, SocketAddr, u32), String> {
    let dir = tempfile::Builder::new()
        .prefix("hangar-soak-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(dir.path().join("repo"))
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
    Error(String),
}

fn outcome_of(status: tonic::Status) -> Outcome {
    if status.code() == Code::NotFound {
        Outcome::Miss
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
            25..=59 => "get",
            60..=74 => "list",
            75..=89 => "info",
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

async fn run(options: Options) -> i32 {
    let (own, addr, pid) = match &options.server {
        Some((uri, pid)) => {
            let addr = uri
                .trim_start_matches("grpc://")
                .trim_start_matches("http://")
                .parse::<SocketAddr>();
            match addr {
                Ok(addr) if addr.ip().is_loopback() => (None, addr, *pid),
                Ok(addr) => {
                    eprintln!("soak: {addr} is not a loopback address; refusing");
                    return 2;
                }
                Err(e) => {
                    eprintln!("soak: --server {uri}: {e}");
                    return 2;
                }
            }
        }
        None => match start_server() {
            Ok((server, addr, pid)) => (Some(server), addr, pid),
            Err(e) => {
                eprintln!("soak: {e}");
                return 1;
            }
        },
    };
    eprintln!(
        "soak: {} clients against grpc://{addr} (pid {pid}) for {:.1} min",
        options.clients,
        options.duration.as_secs_f64() / 60.0
    );
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::default()),
        versions: AtomicU64::new(1),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients as u64)
        .map(|id| tokio::spawn(client_loop(addr, id + 1, shared.clone())))
        .collect();
    // Warm-up: a tenth of the run, at most a minute; then the baseline.
    let warm = (options.duration / 10).min(Duration::from_secs(60));
    tokio::time::sleep(warm).await;
    let warm_sample = sample(pid);
    let mut peak = warm_sample;
    let mut samples = vec![(started.elapsed(), warm_sample)];
    while started.elapsed() < options.duration {
        let left = options.duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(30))).await;
        let s = sample(pid);
        peak.rss_kib = peak.rss_kib.max(s.rss_kib);
        samples.push((started.elapsed(), s));
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
        if s.rss_kib == 0 {
            eprintln!("soak: the server (pid {pid}) is gone");
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), c).await;
    }
    let elapsed = started.elapsed();
    // Idle a moment, so the end figure is the server at rest like the start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = sample(pid);
    drop(own);

    let stats = shared.stats.lock().unwrap();
    let mut all: Vec<u32> = Vec::new();
    let mut table = String::from(
        "| op | calls | not found | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for (op, lat) in &stats.latencies {
        let mut sorted = lat.clone();
        sorted.sort_unstable();
        all.extend_from_slice(&sorted);
        table.push_str(&format!(
            "| {op} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            sorted.len(),
            stats.misses.get(op).copied().unwrap_or(0),
            percentile(&sorted, 0.50),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0)
        ));
    }
    all.sort_unstable();
    let calls = all.len();
    let errors = stats.errors.len();
    let growth_mib = end.rss_kib.saturating_sub(warm_sample.rss_kib) as f64 / 1024.0;
    println!(
        "\n## hangar soak: {:.1} min, {} clients\n",
        elapsed.as_secs_f64() / 60.0,
        options.clients
    );
    println!("{table}");
    println!(
        "- calls: {calls} ({:.0}/s)",
        calls as f64 / elapsed.as_secs_f64()
    );
    println!("- errors: {errors}");
    println!(
        "- latency, all calls: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    println!(
        "- server RSS: {:.1} MiB after warm-up ({:.0} s), {:.1} MiB at the end, peak {:.1} MiB; growth {growth_mib:.1} MiB (bound {} MiB)",
        warm_sample.rss_kib as f64 / 1024.0,
        samples[0].0.as_secs_f64(),
        end.rss_kib as f64 / 1024.0,
        peak.rss_kib as f64 / 1024.0,
        options.rss_bound_mib
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
    if end.rss_kib == 0 {
        eprintln!("soak: FAILED: the server died");
        code = 1;
    } else if growth_mib > options.rss_bound_mib as f64 {
        eprintln!("soak: FAILED: RSS grew {growth_mib:.1} MiB after warm-up");
        code = 1;
    }
    code
}
