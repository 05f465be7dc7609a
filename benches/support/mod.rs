//! What the benchmarks share: the watchdog `main`, the registry of server
//! processes to kill, settings from the environment, and readings of the
//! machine and of `/proc`.

#![allow(dead_code)]

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use arrow_array::RecordBatch;

/// Server processes to kill if the watchdog fires or the run ends.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers a started server, so the watchdog can kill it.
pub fn register_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// Forgets a server that was stopped.
pub fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

pub fn kill_children() {
    let pids = CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pid in pids {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

/// Exits at once unless cargo runs the benchmark as one: `cargo bench`
/// passes `--bench`, `cargo test --all-targets` does not.
pub fn only_under_cargo_bench(name: &str) {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name} benchmark: run it with `cargo bench --bench {name}`");
        std::process::exit(0);
    }
}

/// Runs the benchmark, aborting after `limit` (`limit_var` names the
/// setting), and kills every server it started before exiting.
pub fn run_with_watchdog<E: std::fmt::Display>(
    name: &str,
    limit: Duration,
    limit_var: &str,
    run: impl FnOnce() -> Result<(), E>,
) -> ! {
    let (watchdog_name, limit_var) = (name.to_string(), limit_var.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("{watchdog_name} benchmark: overran {limit_var} ({limit:?}); aborting");
        kill_children();
        std::process::exit(2);
    });
    let status = match run() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{name} benchmark failed: {err}");
            1
        }
    };
    kill_children();
    std::process::exit(status);
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse() {
            Ok(value) => value,
            Err(_) => {
                eprintln!("ignoring {name}={text:?}: not a valid value");
                default
            }
        },
        _ => default,
    }
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat, in
/// seconds (USER_HZ is 100 on Linux).
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gib = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpus} CPUs ({model}), {ram_gib:.1} GiB RAM")
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes of Arrow data in a batch: the buffers its rows use (no capacity slack).
pub fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

/// The address a just-spawned `hangar serve` (stdout piped) announces on its
/// first line, waiting at most `timeout`; stdout is drained after that so
/// the child never blocks on it. `log` is the child's stderr file, shown if
/// no line comes.
pub fn listening_addr(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
    log: &std::path::Path,
) -> Result<(std::net::SocketAddr, String), String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = tx.take() {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(timeout).map_err(|_| {
        format!(
            "hangar printed no listening line within {timeout:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })?;
    let uri = line
        .split("listening on ")
        .nth(1)
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .trim()
        .to_string();
    let addr = uri
        .strip_prefix("grpc://")
        .ok_or_else(|| format!("unexpected listening address {uri:?}"))?
        .parse()
        .map_err(|e| format!("listening address {uri:?}: {e}"))?;
    Ok((addr, uri))
}

/// A Flight connection of its own to `addr` (each concurrent transfer gets
/// one), bounded in time, with messages up to `message_limit` bytes either way.
pub async fn connect(
    addr: std::net::SocketAddr,
    message_limit: usize,
) -> Result<
    arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(Duration::from_secs(15), endpoint.connect())
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))??;
    Ok(
        arrow_flight::flight_service_client::FlightServiceClient::new(channel)
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit),
    )
}
