//! Shared helpers for the integration tests: a real `hangar serve` process on a
//! loopback port over a temporary repository, plus small Flight client helpers.
//!
//! ```ignore
//! let server = TestServer::builder().arg("--log-format").arg("json").start();
//! let mut client = server.client().await;
//! common::put(&mut client, "d", &[batch]).await.unwrap();
//! ```
//!
//! Every wait here is bounded: a server that never prints its line, never exits,
//! or a call that never returns fails the test instead of hanging it.

#![allow(dead_code)]

pub mod s3;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use arrow_schema::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use prost::bytes::Bytes;
use tonic::transport::{Channel, Endpoint};

/// How long a server may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM or kill.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Budget for one whole async test body (see [`bounded`]).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The prefix of hangar's temporary upload files.
pub const TEMP_PREFIX: &str = ".hangar-tmp-";

/// Path of the built `hangar` binary.
pub fn hangar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hangar")
}

/// Configures a [`TestServer`] before it starts.
///
/// By default the server is the hangar binary with `serve --listen 127.0.0.1:0
/// --repo <tempdir>/repo` followed by the extra [`arg`](TestServerBuilder::arg)s,
/// runs in `<tempdir>` (so relative paths never touch the source tree) and
/// writes stderr to `<tempdir>/stderr.log`. The same harness starts other
/// servers ([`program`](TestServerBuilder::program)), wrapped servers
/// ([`wrapper`](TestServerBuilder::wrapper)) and servers on a repository the
/// test owns ([`existing_repo`](TestServerBuilder::existing_repo)).
pub struct TestServerBuilder {
    dir: tempfile::TempDir,
    repo: PathBuf,
    program: OsString,
    wrapper: Vec<OsString>,
    listening_prefix: String,
    args: Vec<OsString>,
    default_args: bool,
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    startup_timeout: Duration,
}

impl TestServerBuilder {
    /// Adds one argument after the defaults.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments after the defaults.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Drops the default `serve --listen 127.0.0.1:0 --repo DIR` arguments: the
    /// caller passes every argument (including `serve`) with [`arg`](Self::arg).
    /// The server must still print the listening line.
    pub fn without_default_args(mut self) -> Self {
        self.default_args = false;
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for the server.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), None));
        self
    }

    /// Bytes written to the server's stdin (then closed). Without this, stdin is
    /// `/dev/null`.
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Runs `program` instead of the hangar binary (another Flight server,
    /// such as the Python cookbook server); usually with
    /// [`without_default_args`](Self::without_default_args) and a
    /// [`listening_prefix`](Self::listening_prefix).
    pub fn program(mut self, program: impl AsRef<OsStr>) -> Self {
        self.program = program.as_ref().to_owned();
        self
    }

    /// Starts the server through a wrapper command, e.g. `["prlimit",
    /// "--fsize=4000000"]`: runs `WRAPPER... PROGRAM ARGS...`. The wrapper
    /// must exec the program with stdout untouched.
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// What the first stdout line starts with, before the URI (default
    /// `hangar listening on `).
    pub fn listening_prefix(mut self, prefix: &str) -> Self {
        self.listening_prefix = prefix.to_string();
        self
    }

    /// Serves an existing repository folder (one the test owns, to restart a
    /// server on it or to place it on a special file system) instead of a
    /// fresh `<tempdir>/repo`.
    pub fn existing_repo(mut self, repo: impl Into<PathBuf>) -> Self {
        self.repo = repo.into();
        self
    }

    /// The repository folder the server will get (already created), so a test
    /// can place files in it before the server starts.
    pub fn repo_path(&self) -> &Path {
        &self.repo
    }

    /// The temporary folder holding the repository and the stderr log; the
    /// server's working directory. Handy for config or key files.
    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server and waits (bounded) for its listening line. Panics with
    /// the server's stderr if it exits or stays silent.
    pub fn start(self) -> TestServer {
        let stderr_path = self.dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("creating stderr.log");
        let mut command = match self.wrapper.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut command = Command::new(wrapper);
                command.args(wrapper_args).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        if self.default_args {
            command
                .arg("serve")
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--repo")
                .arg(&self.repo);
        }
        command
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        if let Some(bytes) = self.stdin {
            let mut stdin = child.stdin.take().expect("piped stdin");
            // A server that never reads stdin must not block the test.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }

        // A reader thread hands over the first line, then keeps collecting the
        // rest of stdout so tests can check nothing else was printed.
        let stdout = child.stdout.take().expect("piped stdout");
        let rest = Arc::new(Mutex::new(Vec::<String>::new()));
        let (first_tx, first_rx) = mpsc::channel::<String>();
        let rest_writer = rest.clone();
        let stdout_thread = std::thread::spawn(move || {
            let mut first_tx = Some(first_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match first_tx.take() {
                    Some(tx) => {
                        let _ = tx.send(line);
                    }
                    None => rest_writer.lock().unwrap().push(line),
                }
            }
        });

        let program = command.get_program().to_owned();
        let fail = |child: &mut Child, why: String| -> TestServer {
            startup_failed(child, &program, &stderr_path, &why)
        };
        let first = match first_rx.recv_timeout(self.startup_timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let why = format!("no stdout line within {:?}", self.startup_timeout);
                return fail(&mut child, why);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return fail(&mut child, "stdout closed before the listening line".into());
            }
        };
        let uri = match first.strip_prefix(self.listening_prefix.as_str()) {
            Some(uri) => uri.to_string(),
            None => {
                return fail(
                    &mut child,
                    format!("unexpected first stdout line {first:?}"),
                )
            }
        };
        // grpc://ADDR or grpc+tls://ADDR
        let addr: SocketAddr = match uri.split_once("://").map(|(_, addr)| addr.parse()) {
            Some(Ok(addr)) => addr,
            _ => return fail(&mut child, format!("cannot parse an address from {uri:?}")),
        };
        TestServer {
            child: Some(child),
            addr,
            uri,
            first_line: first,
            stdout_rest: rest,
            stdout_thread: Some(stdout_thread),
            stderr_path,
            repo: self.repo,
            exit_status: None,
            dir: self.dir,
        }
    }
}

/// Kills a server that failed to start and panics with its stderr.
fn startup_failed(child: &mut Child, program: &OsStr, stderr_path: &Path, why: &str) -> ! {
    let _ = child.kill();
    let status = wait_timeout(child, EXIT_TIMEOUT);
    let log = std::fs::read_to_string(stderr_path).unwrap_or_default();
    panic!("{program:?} did not start: {why} (exit status {status:?})\n--- stderr ---\n{log}");
}

/// A running `hangar serve` child process; killed (and reaped) on drop.
pub struct TestServer {
    child: Option<Child>,
    /// The address the server listens on (127.0.0.1:PORT).
    pub addr: SocketAddr,
    /// The URI the server printed, e.g. `grpc://127.0.0.1:PORT`.
    pub uri: String,
    /// The first stdout line, verbatim.
    pub first_line: String,
    stdout_rest: Arc<Mutex<Vec<String>>>,
    stdout_thread: Option<std::thread::JoinHandle<()>>,
    stderr_path: PathBuf,
    repo: PathBuf,
    exit_status: Option<ExitStatus>,
    // Last: removed after the child is gone.
    dir: tempfile::TempDir,
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        let dir = tempfile::Builder::new()
            .prefix("hangar-test-")
            .tempdir()
            .expect("creating a temporary folder");
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).expect("creating the repository folder");
        TestServerBuilder {
            dir,
            repo,
            program: hangar_bin().into(),
            wrapper: Vec::new(),
            listening_prefix: "hangar listening on ".into(),
            args: Vec::new(),
            default_args: true,
            envs: Vec::new(),
            stdin: None,
            startup_timeout: STARTUP_TIMEOUT,
        }
    }

    /// A server with the default arguments and nothing else.
    pub fn start() -> TestServer {
        TestServer::builder().start()
    }

    /// A server with extra arguments after the defaults.
    pub fn start_with_args<I, S>(args: I) -> TestServer
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        TestServer::builder().args(args).start()
    }

    /// `http://127.0.0.1:PORT`, the form tonic endpoints want.
    pub fn http_uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The repository folder.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// The temporary folder (server's working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already reaped").id()
    }

    /// Whether the server process is still running (not exited, not a zombie).
    pub fn alive(&mut self) -> bool {
        if self.exit_status.is_some() {
            return false;
        }
        let child = self.child.as_mut().expect("server already reaped");
        matches!(child.try_wait(), Ok(None))
    }

    /// A tonic channel to the server (connect bounded by a timeout).
    pub async fn channel(&self) -> Channel {
        within(CONNECT_TIMEOUT, "connecting to hangar", connect(self.addr))
            .await
            .expect("connecting to hangar")
    }

    /// A plain arrow-flight client with default settings (4 MiB decoding limit).
    pub async fn client(&self) -> FlightClient {
        client_at(self.addr).await
    }

    /// Path of the file collecting the server's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (bounded) until stderr satisfies `done`, returning it; panics with
    /// the log on timeout. Log lines are written as calls finish, which can be
    /// a moment after the client saw the reply.
    pub fn wait_for_stderr(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if done(&log) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("stderr never showed {what}\n--- stderr ---\n{log}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stdout lines after the listening line (complete only once the server has
    /// exited, see [`terminate`](Self::terminate)).
    pub fn stdout_rest(&self) -> Vec<String> {
        self.stdout_rest.lock().unwrap().clone()
    }

    /// Sends SIGTERM (with the `kill` command) and waits, bounded, for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`...) without waiting.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits, bounded, for the server to exit by itself; panics (after killing
    /// it) if it does not. Also waits for stdout to be fully read.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status {
            return status;
        }
        let child = self.child.as_mut().expect("server already reaped");
        let status = match wait_timeout(child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = wait_timeout(child, EXIT_TIMEOUT);
                panic!(
                    "hangar did not exit within {EXIT_TIMEOUT:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
        };
        self.exit_status = Some(status);
        if let Some(thread) = self.stdout_thread.take() {
            // The pipe is closed once the process is gone.
            let _ = thread.join();
        }
        status
    }

    /// Names of the `.hangar-tmp-*` files in the repository.
    pub fn temp_files(&self) -> Vec<String> {
        temp_files(&self.repo)
    }

    /// Names of every entry in the repository, sorted.
    pub fn repo_entries(&self) -> Vec<String> {
        dir_entries(&self.repo)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit_status.is_none() {
                let _ = child.kill();
                let _ = wait_timeout(&mut child, EXIT_TIMEOUT);
            }
        }
    }
}

/// Polls a child until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
}

/// How often [`wait_until`] and the other polls here look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on opening a connection ([`connect`] gets 10 s, the whole call this).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `done` every [`POLL_INTERVAL`] until it returns true or `limit`
/// passes; returns whether it did. The one way tests wait for something to
/// happen (a file to appear, a log line, a freed slot): never a fixed sleep.
/// A plain condition is written `async || cond()`.
pub async fn wait_until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs an async body with a time limit, failing the test with `what` if it overruns.
pub async fn within<F: std::future::Future>(limit: Duration, what: &str, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within {limit:?}"),
    }
}

/// A tonic channel to `addr` (connect bounded by 10 s); the error is the
/// caller's to judge (a refused connection can be the expected outcome).
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint URI")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// A plain arrow-flight client connected to `addr` (bounded; panics on failure).
pub async fn client_at(addr: SocketAddr) -> FlightClient {
    FlightClient::new(
        within(CONNECT_TIMEOUT, "connecting", connect(addr))
            .await
            .expect("connecting to hangar"),
    )
}

/// Runs `hangar ARGS` to completion (bounded) and returns its output. For
/// commands that exit on their own (help, version, usage errors).
pub fn run_hangar<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_hangar_with(args, &[], None)
}

/// [`run_hangar`] with extra environment variables and a working directory.
pub fn run_hangar_with<I, S>(args: I, envs: &[(&str, &str)], cwd: Option<&Path>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(hangar_bin());
    command.args(args);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    for (k, v) in envs {
        command.env(k, v);
    }
    run_to_end(command, None, EXIT_TIMEOUT)
}

/// Runs a command that exits on its own to completion, with `stdin` (or
/// `/dev/null`) as its input, and returns its output; panics (after killing
/// it) if it runs longer than `limit`. Without a working directory of its own
/// it runs in a temporary folder, so relative paths never touch the source tree.
pub fn run_to_end(mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    let out_dir = tempfile::tempdir().expect("temporary folder");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    if command.get_current_dir().is_none() {
        command.current_dir(out_dir.path());
    }
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A command that fails early closes stdin; that is its answer.
        let _ = pipe.write_all(bytes);
    }
    let status = match wait_timeout(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, EXIT_TIMEOUT);
            panic!(
                "{command:?} did not exit within {limit:?}; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// A command that runs `test` of this test binary as a helper process (a
/// `#[ignore]`d test that fails when run without `env`), with `env` set.
pub fn helper_process(test: &str, env: (&str, &str)) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            test,
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env.0, env.1);
    command
}

pub fn temp_files(dir: &Path) -> Vec<String> {
    dir_entries(dir)
        .into_iter()
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading the repository")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The seed of a test's random choices, from the environment variable `var`:
/// unset (as in CI), the fixed `default`, so a failure in CI replays with the
/// same command; `N` replays seed N; `random` picks one from the clock. The
/// caller prints the seed it got.
pub fn seed_from_env(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) if v.is_empty() => default,
        Ok(v) if v == "random" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?}: expected a number or `random`")),
    }
}

/// Runs a test body with an overall time limit, so a stuck call fails the test.
pub async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(out) => out,
        Err(_) => panic!("test body did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// A PATH descriptor with one element.
pub fn path(name: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![name.to_string()])
}

pub fn ticket(name: &str) -> Ticket {
    Ticket {
        ticket: Bytes::from(name.as_bytes().to_vec()),
    }
}

/// The gRPC status inside a client error; panics on any other kind of error.
pub fn status_of(err: FlightError) -> tonic::Status {
    match err {
        FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// What DoPut's PutResult says, parsed from `{"rows":N,"bytes":M}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutSummary {
    pub rows: u64,
    pub bytes: u64,
}

/// Extracts an unsigned integer field from a flat JSON object (no serde).
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    let digits: String = json[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

pub fn parse_put_result(app_metadata: &[u8]) -> PutSummary {
    let text = std::str::from_utf8(app_metadata).expect("PutResult metadata is UTF-8");
    let rows = json_u64(text, "rows").unwrap_or_else(|| panic!("no rows in {text:?}"));
    let bytes = json_u64(text, "bytes").unwrap_or_else(|| panic!("no bytes in {text:?}"));
    PutSummary { rows, bytes }
}

/// A numeric field of `/proc/PID/status` (`VmRSS:`, `VmHWM:` in KiB,
/// `Threads:`), or `None` if the process or the field is gone.
#[allow(dead_code)]
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Sends already-encoded FlightData messages with DoPut and collects every
/// PutResult; an error from the call or from the reply stream is returned.
pub async fn put_flight_data(
    client: &mut FlightClient,
    messages: Vec<arrow_flight::FlightData>,
) -> Result<Vec<arrow_flight::PutResult>, tonic::Status> {
    let input = futures::stream::iter(messages.into_iter().map(Ok));
    let replies = client.do_put(input).await.map_err(status_of)?;
    replies.try_collect().await.map_err(status_of)
}

/// Encodes `batches` (schema from `schema`, dictionaries resent as they are)
/// with arrow-flight's encoder, the first message carrying the PATH
/// descriptor `name`.
pub async fn encode(
    name: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Vec<arrow_flight::FlightData> {
    encode_with(FlightDataEncoderBuilder::new(), name, schema, batches).await
}

pub async fn encode_with(
    builder: FlightDataEncoderBuilder,
    name: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Vec<arrow_flight::FlightData> {
    let owned: Vec<RecordBatch> = batches.to_vec();
    let input = futures::stream::iter(owned.into_iter().map(Ok));
    builder
        .with_schema(schema)
        .with_dictionary_handling(arrow_flight::encode::DictionaryHandling::Resend)
        .with_flight_descriptor(Some(path(name)))
        .build(input)
        .try_collect()
        .await
        .expect("encoding batches as FlightData")
}

/// Uploads `batches` as dataset `name` and expects exactly one PutResult.
pub async fn put(
    client: &mut FlightClient,
    name: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<PutSummary, tonic::Status> {
    let messages = encode(name, schema, batches).await;
    let results = put_flight_data(client, messages).await?;
    assert_eq!(results.len(), 1, "DoPut must reply with one PutResult");
    Ok(parse_put_result(&results[0].app_metadata))
}

/// Reads dataset `name` with DoGet: (schema, batches).
pub async fn get(
    client: &mut FlightClient,
    name: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), tonic::Status> {
    let mut stream = client.do_get(ticket(name)).await.map_err(status_of)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(status_of)?);
    }
    let schema = stream
        .schema()
        .cloned()
        .expect("DoGet stream carried no schema");
    Ok((schema, batches))
}

/// Asserts that two batch sequences hold the same rows in the same order (and
/// the same schema), however the rows are cut into batches.
pub fn assert_same_rows(expected: &[RecordBatch], got: &[RecordBatch]) {
    let total = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert_eq!(total(expected), total(got), "row counts differ");
    let (mut i, mut i_off, mut j, mut j_off) = (0, 0, 0, 0);
    while i < expected.len() && j < got.len() {
        let n = (expected[i].num_rows() - i_off).min(got[j].num_rows() - j_off);
        if n > 0 {
            let want = expected[i].slice(i_off, n);
            let have = got[j].slice(j_off, n);
            assert_eq!(
                want.schema(),
                have.schema(),
                "schemas differ (batch {i} vs {j})"
            );
            assert!(
                want == have,
                "rows differ: expected batch {i} rows {i_off}.., got batch {j} rows {j_off}.. \
                 ({n} rows compared)"
            );
        }
        i_off += n;
        j_off += n;
        if i_off == expected[i].num_rows() {
            i += 1;
            i_off = 0;
        }
        if j_off == got[j].num_rows() {
            j += 1;
            j_off = 0;
        }
    }
}

/// Key/value pairs as a metadata map.
pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Handshake whose credentials are a legacy `BasicAuth` payload rather than
/// a header (its user name may hold any character, ':' too); the token the
/// first reply carries.
pub async fn handshake_payload(
    client: &mut hangar::proto::FlightServiceClient<tonic::transport::Channel>,
    user: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    use prost::Message as _;
    let payload = hangar::proto::BasicAuth {
        username: user.into(),
        password: password.into(),
    }
    .encode_to_vec();
    let request = futures::stream::iter(vec![hangar::proto::HandshakeRequest {
        protocol_version: 0,
        payload: payload.into(),
    }]);
    let mut replies = client.handshake(request).await?.into_inner();
    let first = replies
        .message()
        .await?
        .map(|r| r.payload)
        .unwrap_or_default();
    while replies.message().await?.is_some() {}
    Ok(String::from_utf8_lossy(&first).into_owned())
}

/// ListFlights with `authorization: <header>`, read to the end.
pub async fn list_with_header(
    client: &mut hangar::proto::FlightServiceClient<tonic::transport::Channel>,
    header: &str,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(hangar::proto::Criteria::default());
    request
        .metadata_mut()
        .insert("authorization", header.parse().unwrap());
    let mut stream = client.list_flights(request).await?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// The Python interpreter that has pyarrow and cryptography: `HANGAR_PYTHON`,
/// else the repository's `.venv` (what `bash .ci/run` creates).
pub fn python() -> PathBuf {
    let python = match std::env::var_os("HANGAR_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    assert!(
        python.exists(),
        "no Python interpreter at {}: tests that need Python cannot run. Run `bash .ci/run`, \
         or `python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt`, \
         or point HANGAR_PYTHON at an interpreter with pyarrow",
        python.display()
    );
    python
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made by
/// the pyarrow TLS tests' generator (tests/python/test_auth.py), so there is
/// one certificate recipe in the repository.
pub fn certificates(dir: &Path) {
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let made = Command::new(python())
        .current_dir(&python_dir)
        .args([
            "-c",
            "import pathlib, sys; sys.path.insert(0, '.'); \
             from test_auth import _make_certificates; \
             _make_certificates(pathlib.Path(sys.argv[1]))",
        ])
        .arg(dir)
        .output()
        .expect("running python");
    assert!(
        made.status.success(),
        "generating certificates: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}
