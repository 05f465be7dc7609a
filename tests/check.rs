//! `hangar check URI` as an auditor runs it: the real binary against hangar
//! (everything PASSes), against the Arrow cookbook's pyarrow server (the
//! checks it FAILs are pinned here and listed in README), and against servers
//! broken on purpose, one behaviour at a time, each of which must make its
//! check FAIL: tests/python/broken_server.py for what pyarrow's server API can
//! break, and a raw gRPC server below for message orders pyarrow never sends.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use futures::Stream;
use parquet::arrow::ArrowWriter;
use prost::bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use common::{hangar_bin, python, run_to_end, TestServer};
use hangar::ipc::Encoder;
use hangar::json::Value;
use hangar::proto::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    FlightService, FlightServiceServer, HandshakeRequest, HandshakeResponse, PollInfo, PutResult,
    SchemaResult, Ticket,
};

/// How long one `hangar check` run may take (it starts with importing pyarrow
/// on the other side, on a busy machine).
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a Python server may take to start (importing pyarrow is slow).
const PYTHON_STARTUP: Duration = Duration::from_secs(60);

/// The checks the cookbook's pyarrow server FAILs (README, Auditing).
const COOKBOOK_FAILS: &[&str] = &[
    "dictionaries-first",
    "missing-dataset",
    "malformed-descriptor",
    "roundtrip",
];

// ------------------------------------------------------------------ helpers

/// One finished `hangar check --json` run: the exit code and each check's
/// result and detail.
struct Report {
    code: i32,
    results: BTreeMap<String, (String, String)>,
    stdout: String,
    stderr: String,
}

impl Report {
    fn with(&self, result: &str) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(_, (r, _))| r == result)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    #[track_caller]
    fn detail(&self, check: &str) -> &str {
        &self
            .results
            .get(check)
            .unwrap_or_else(|| panic!("no check {check} in\n{}", self.stdout))
            .1
    }

    #[track_caller]
    fn assert_fails_only(&self, checks: &[&str]) {
        let mut expected = checks.to_vec();
        expected.sort_unstable();
        assert_eq!(
            self.with("fail"),
            expected,
            "\n{}\n{}",
            self.stdout,
            self.stderr
        );
        assert_eq!(
            self.code,
            if checks.is_empty() { 0 } else { 1 },
            "{}",
            self.stderr
        );
    }
}

fn hangar_check(uri: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(hangar_bin());
    command
        .arg("check")
        .arg(uri)
        .args(["--timeout", "30s"])
        .args(args)
        .env_remove("HANGAR_SERVER")
        .env_remove("HANGAR_PASSWORD");
    for (key, value) in envs {
        command.env(key, value);
    }
    run_to_end(command, None, CHECK_TIMEOUT)
}

/// Runs `hangar check URI --json ARGS` and reads its report.
fn check_json(uri: &str, args: &[&str], envs: &[(&str, &str)]) -> Report {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = hangar_check(uri, &all, envs);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let value = Value::parse(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    let mut results = BTreeMap::new();
    for check in value.get("checks").and_then(Value::as_array).unwrap() {
        let field = |key: &str| check.get(key).and_then(Value::as_str).unwrap().to_string();
        results.insert(field("check"), (field("result"), field("detail")));
    }
    let count = |key: &str| value.get(key).and_then(Value::as_u64).unwrap() as usize;
    let report = Report {
        code: output.status.code().unwrap_or(-1),
        results,
        stdout,
        stderr,
    };
    assert_eq!(count("failed"), report.with("fail").len());
    assert_eq!(count("passed"), report.with("pass").len());
    assert_eq!(count("skipped"), report.with("skip").len());
    report
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn numbers(rows: i64) -> RecordBatch {
    let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
    RecordBatch::try_from_iter([("n", column)]).unwrap()
}

/// A Python Flight server script from tests/python, started with `args`.
fn python_server(script: &str, args: &[&str], prefix: &str) -> TestServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let builder = TestServer::builder();
    let repo = builder.repo_path().to_path_buf();
    let builder = builder
        .program(python())
        .without_default_args()
        .arg(script)
        .args(["--port", "0"]);
    let builder = if prefix.starts_with("cookbook") {
        builder.arg("--repo").arg(repo)
    } else {
        builder
    };
    builder
        .args(args)
        .listening_prefix(prefix)
        .startup_timeout(PYTHON_STARTUP)
        .start()
}

fn broken(flags: &[&str]) -> TestServer {
    python_server("broken_server.py", flags, "broken server listening on ")
}

// ------------------------------------------------------------------- hangar

#[test]
fn hangar_passes_every_check_with_login_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut file = hangar::auth::Users::default();
    file.add("ann", hangar::auth::Role::Admin, "s3cret-pass")
        .unwrap();
    file.save(&users).unwrap();
    let builder = TestServer::builder().arg("--users").arg(&users);
    // Datasets already there, so the checks also read data they did not write.
    write_parquet(&builder.repo_path().join("seeded"), &numbers(5_000));
    write_parquet(&builder.repo_path().join("hollow"), &numbers(0));
    let server = builder.start();

    let report = check_json(
        &server.uri,
        &["--user", "ann", "--write"],
        &[("HANGAR_PASSWORD", "s3cret-pass")],
    );
    report.assert_fails_only(&[]);
    assert_eq!(report.with("skip"), Vec::<&str>::new(), "{}", report.stdout);
    assert_eq!(report.results.len(), hangar::cli::check::CHECKS.len());
    for name in ["seeded", "hollow", "hangar-check-"] {
        assert!(
            report.stdout.contains(name),
            "{name} not read:\n{}",
            report.stdout
        );
    }
    // The uploads were dropped; the seeded datasets are untouched.
    assert_eq!(common::dir_entries(server.repo()), ["hollow", "seeded"]);
}

#[test]
fn hangar_over_mutual_tls_with_login_passes_every_check() {
    let certs = tempfile::tempdir().unwrap();
    common::certificates(certs.path());
    let pem = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    let users = certs.path().join("users");
    let mut file = hangar::auth::Users::default();
    file.add("ann", hangar::auth::Role::Admin, "s3cret-pass")
        .unwrap();
    file.save(&users).unwrap();
    let server = TestServer::start_with_args([
        "--tls-cert",
        &pem("server.pem"),
        "--tls-key",
        &pem("server.key"),
        "--tls-client-ca",
        &pem("ca.pem"),
        "--users",
        &users.to_string_lossy(),
    ]);
    assert!(server.uri.starts_with("grpc+tls://"), "{}", server.uri);
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client.key"));
    let report = check_json(
        &server.uri,
        &[
            "--tls-root",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--user",
            "ann",
            "--write",
        ],
        &[("HANGAR_PASSWORD", "s3cret-pass")],
    );
    report.assert_fails_only(&[]);
    assert!(report.with("skip").is_empty(), "{}", report.stdout);
}

#[test]
fn write_as_a_user_who_may_not_upload_skips_what_needs_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut file = hangar::auth::Users::default();
    file.add("rob", hangar::auth::Role::Read, "r3ad-only")
        .unwrap();
    file.save(&users).unwrap();
    let server = TestServer::start_with_args([std::ffi::OsStr::new("--users"), users.as_os_str()]);
    let report = check_json(
        &server.uri,
        &["--user", "rob", "--write"],
        &[("HANGAR_PASSWORD", "r3ad-only")],
    );
    report.assert_fails_only(&[]);
    for check in ["empty-schema-first", "roundtrip", "drop-dataset"] {
        assert_eq!(report.results[check].0, "skip", "{}", report.stdout);
    }
    assert!(report.detail("roundtrip").contains("PERMISSION_DENIED"));
    assert!(report
        .detail("roundtrip")
        .contains("--user a user who may upload"));
    // Nothing was stored, so there is nothing to warn about.
    assert!(
        !report.stderr.contains("could not drop"),
        "{}",
        report.stderr
    );
}

#[test]
fn text_report_has_a_line_per_check_and_skips_what_needs_flags() {
    let server = TestServer::start();
    let output = hangar_check(&server.uri, &[], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Every check but drop-dataset (it needs --write), then the summary.
    assert_eq!(
        lines.len(),
        hangar::cli::check::CHECKS.len() - 1 + 1,
        "{stdout}"
    );
    assert!(!stdout.contains("drop-dataset"), "{stdout}");
    assert!(
        lines.contains(&"PASS  missing-dataset       GetFlightInfo: NOT_FOUND; DoGet: NOT_FOUND"),
        "{stdout}"
    );
    assert!(
        lines.contains(&"SKIP  handshake             pass --user NAME to check the login flow"),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("SKIP  roundtrip             pass --write")),
        "{stdout}"
    );
    let summary = format!("{}: 16 checks, 5 passed, 0 failed, 11 skipped", server.uri);
    assert_eq!(lines.last(), Some(&summary.as_str()), "{stdout}");
    // Nothing was written without --write.
    assert!(common::dir_entries(server.repo()).is_empty());
}

#[test]
fn help_lists_the_command_and_every_check() {
    let top = common::run_hangar(["--help"]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("    check       Audit a Flight server"));
    let help = common::run_hangar(["check", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.starts_with("hangar check — audit any Flight server"),
        "{text}"
    );
    for check in hangar::cli::check::CHECKS {
        assert!(
            text.contains(&format!("    {check} ")),
            "{check} missing in:\n{text}"
        );
    }
    for flag in ["--write", "--json", "--timeout", "--user", "--tls-root"] {
        assert!(text.contains(flag), "{flag} missing in:\n{text}");
    }
}

#[test]
fn usage_and_connection_errors_exit_2_and_1() {
    let output = hangar_check("grpc://127.0.0.1:1", &["--bogus"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bogus"));
    let output = hangar_check("http://127.0.0.1:1", &[], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported scheme"));
    // Port 1 on loopback: nothing listens there.
    let output = hangar_check("grpc://127.0.0.1:1", &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("UNAVAILABLE") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

// ---------------------------------------------------------- the cookbook

#[test]
fn cookbook_server_fails_the_pinned_checks_and_keeps_nothing() {
    let server = python_server(
        "cookbook_server.py",
        &["--users", "ann:pw"],
        "cookbook server listening on ",
    );
    let report = check_json(
        &server.uri,
        &["--user", "ann", "--write"],
        &[("HANGAR_PASSWORD", "pw")],
    );
    report.assert_fails_only(COOKBOOK_FAILS);
    assert!(report.detail("missing-dataset").contains("UNKNOWN"));
    assert!(report.detail("malformed-descriptor").contains("IndexError"));
    assert!(report
        .detail("dictionaries-first")
        .contains("no DictionaryBatch sent before it"));
    assert!(report
        .detail("roundtrip")
        .contains("no DictionaryBatch sent before it, so it cannot be decoded"));
    // The round trip failed, and its datasets were dropped all the same.
    assert!(common::dir_entries(server.repo()).is_empty());
}

// ------------------------------------------------- broken pyarrow server

#[test]
fn broken_server_without_flags_passes_every_check() {
    let server = broken(&[]);
    check_json(&server.uri, &["--write"], &[]).assert_fails_only(&[]);
}

/// Starts the broken server with `--FLAG` and checks that exactly `check`
/// FAILs, with `detail` in its reason.
#[track_caller]
fn flag_fails(flag: &str, check: &str, detail: &str) -> Report {
    let server = broken(&[&format!("--{flag}")]);
    let report = check_json(&server.uri, &["--write"], &[]);
    report.assert_fails_only(&[check]);
    assert!(
        report.detail(check).contains(detail),
        "{check}: {}",
        report.detail(check)
    );
    report
}

#[test]
fn wrong_total_records_fails_total_records() {
    flag_fails("wrong-total-records", "total-records", "but DoGet streamed");
}

#[test]
fn mismatched_flightinfo_schema_fails_info_schema() {
    flag_fails("mismatched-schema", "info-schema", "3 fields, the stream 2");
}

#[test]
fn internal_for_a_missing_dataset_fails_missing_dataset() {
    let report = flag_fails(
        "internal-for-missing",
        "missing-dataset",
        "GetFlightInfo: INTERNAL",
    );
    assert!(report
        .detail("missing-dataset")
        .contains("; DoGet: INTERNAL"));
}

#[test]
fn unknown_for_a_malformed_descriptor_fails_malformed_descriptor() {
    flag_fails("unknown-for-malformed", "malformed-descriptor", "UNKNOWN");
}

#[test]
fn internal_for_a_malformed_ticket_fails_malformed_ticket() {
    flag_fails("internal-for-bad-ticket", "malformed-ticket", "INTERNAL");
}

#[test]
fn an_oversized_message_fails_message_size() {
    flag_fails("oversized-message", "message-size", "over the 4194304-byte");
}

#[test]
fn accepting_an_unknown_action_fails_unknown_action() {
    flag_fails("accept-unknown-action", "unknown-action", "succeeded");
}

#[test]
fn drop_dataset_missing_from_list_actions_fails_list_actions() {
    flag_fails("unlisted-drop", "list-actions", "drop_dataset");
}

#[test]
fn a_listed_action_that_is_refused_fails_list_actions() {
    flag_fails(
        "listed-but-refused",
        "list-actions",
        "\"compact\" is listed",
    );
}

/// The broken server with the cookbook's login and `flags`, checked as ann.
fn login_report(flags: &[&str]) -> Report {
    let mut args = vec!["--users", "ann:pw"];
    args.extend_from_slice(flags);
    let server = broken(&args);
    check_json(
        &server.uri,
        &["--user", "ann"],
        &[("HANGAR_PASSWORD", "pw")],
    )
}

#[test]
fn broken_server_with_the_cookbook_login_passes_the_login_checks() {
    let report = login_report(&[]);
    report.assert_fails_only(&[]);
    for check in ["handshake", "token-accepted", "token-altered"] {
        assert_eq!(report.results[check].0, "pass", "{}", report.stdout);
    }
}

#[test]
fn a_login_without_a_bearer_header_fails_handshake() {
    let report = login_report(&["--no-bearer"]);
    // The server also takes Basic on every call, so the rest still runs.
    report.assert_fails_only(&["handshake"]);
    assert!(report
        .detail("handshake")
        .contains("no authorization: Bearer header"));
}

#[test]
fn a_token_never_accepted_fails_token_accepted_and_stops_there() {
    let report = login_report(&["--token-refused"]);
    report.assert_fails_only(&["list-flights", "token-accepted"]);
    assert!(report.detail("token-accepted").contains("UNAUTHENTICATED"));
    assert!(report.detail("list-flights").contains("did not run"));
}

#[test]
fn an_altered_token_accepted_fails_token_altered() {
    let report = login_report(&["--token-ignored"]);
    report.assert_fails_only(&["token-altered"]);
}

#[test]
fn a_wrong_password_fails_handshake_and_says_what_to_check() {
    let server = broken(&["--users", "ann:pw"]);
    let report = check_json(
        &server.uri,
        &["--user", "ann"],
        &[("HANGAR_PASSWORD", "nope")],
    );
    report.assert_fails_only(&["handshake"]);
    assert!(report
        .detail("handshake")
        .contains("check --user and HANGAR_PASSWORD"));
    assert!(
        report.stderr.contains("UNAUTHENTICATED"),
        "{}",
        report.stderr
    );
}

/// The datasets `hangar ls` shows on `uri`.
fn listed(uri: &str) -> Vec<String> {
    let output = common::run_hangar(["ls", "--json", "--server", uri]);
    assert!(output.status.success(), "{output:?}");
    let value = Value::parse(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let mut names: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.get("name").and_then(Value::as_str).unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_step_over_the_timeout_fails_with_deadline_exceeded() {
    // DoPut never answers; the run still ends, and says which step and why.
    // (That the upload is dropped all the same is shown by the Ctrl-C test
    // below, which waits until the server has stored it.)
    let server = broken(&["--stall-put"]);
    let report = check_json(&server.uri, &["--write", "--timeout", "1s"], &[]);
    assert_eq!(report.results["roundtrip"].0, "fail", "{}", report.stdout);
    assert!(
        report
            .detail("roundtrip")
            .contains("DEADLINE_EXCEEDED: no answer within 1 s (raise --timeout)"),
        "{}",
        report.detail("roundtrip")
    );
    assert_eq!(report.code, 1);
}

#[test]
fn ctrl_c_during_the_upload_still_drops_it() {
    let server = broken(&["--stall-put"]);
    let out = tempfile::tempdir().unwrap();
    let stderr_path = out.path().join("stderr");
    let mut child = Command::new(hangar_bin())
        .args(["check", &server.uri, "--write"])
        .env_remove("HANGAR_SERVER")
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stored =
        server.wait_for_stderr("the upload", |log| log.contains("put stored hangar-check-"));
    let name = stored
        .lines()
        .find_map(|l| l.strip_prefix("put stored "))
        .unwrap()
        .to_string();
    assert_eq!(listed(&server.uri), ["empty", &name, "numbers"]);
    // SAFETY: kill(2) with a pid this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = common::wait_timeout(&mut child, CHECK_TIMEOUT).expect("hangar check exits");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(listed(&server.uri), ["empty", "numbers"]);
}

// ----------------------------------------------------- raw gRPC server

/// Message orders pyarrow never sends, served over real gRPC.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Correct,
    /// The record batch (then the dictionary) before the schema.
    BatchBeforeSchema,
    /// An empty dataset's stream without any message.
    NoSchemaOnEmpty,
    /// The record batch before its dictionary.
    BatchBeforeDictionary,
}

/// Serves "colors" (3 rows, a dictionary column) and "empty" (0 rows), and
/// answers every error case the way `hangar check` expects.
struct RawServer {
    order: Order,
    schema: SchemaRef,
    colors: Vec<FlightData>,
}

impl RawServer {
    fn new(order: Order) -> RawServer {
        let dictionary: DictionaryArray<Int32Type> =
            vec!["red", "blue", "red"].into_iter().collect();
        let batch =
            RecordBatch::try_from_iter([("color", Arc::new(dictionary) as ArrayRef)]).unwrap();
        let schema = batch.schema();
        let mut encoder = Encoder::new(IpcWriteOptions::default(), 1 << 20, 1 << 22);
        let mut colors = vec![encoder.schema(&schema)];
        encoder.batch(&batch, &mut colors).unwrap();
        assert_eq!(colors.len(), 3, "schema, dictionary, batch");
        match order {
            Order::BatchBeforeSchema => colors.swap(0, 2), // batch, dictionary, schema
            Order::BatchBeforeDictionary => colors.swap(1, 2),
            _ => {}
        }
        RawServer {
            order,
            schema,
            colors,
        }
    }

    fn rows(&self, name: &str) -> Result<i64, Status> {
        match name {
            "colors" => Ok(3),
            "empty" => Ok(0),
            other => Err(Status::not_found(format!("no dataset {other:?}"))),
        }
    }

    fn info(&self, name: &str) -> Result<FlightInfo, Status> {
        let rows = self.rows(name)?;
        Ok(FlightInfo {
            schema: hangar::ipc::schema_to_ipc(&self.schema).unwrap(),
            flight_descriptor: Some(hangar::cli::transfer::path_descriptor(name)),
            endpoint: vec![FlightEndpoint {
                ticket: Some(Ticket {
                    ticket: Bytes::from(name.as_bytes().to_vec()),
                }),
                ..Default::default()
            }],
            total_records: rows,
            total_bytes: -1,
            ordered: false,
            app_metadata: Bytes::new(),
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn stream_of<T: Send + 'static>(items: Vec<T>) -> BoxStream<T> {
    Box::pin(futures::stream::iter(items.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl FlightService for RawServer {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<hangar::proto::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("no login here"))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos = vec![self.info("colors")?, self.info("empty")?];
        Ok(Response::new(stream_of(infos)))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        match request.get_ref().path.as_slice() {
            [name] => Ok(Response::new(self.info(name)?)),
            _ => Err(Status::invalid_argument("a PATH names one dataset")),
        }
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let name = std::str::from_utf8(&request.get_ref().ticket)
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8"))?;
        self.rows(name)?;
        let messages = match (name, self.order) {
            ("colors", _) => self.colors.clone(),
            ("empty", Order::NoSchemaOnEmpty) => Vec::new(),
            _ => {
                vec![Encoder::new(IpcWriteOptions::default(), 1 << 20, 1 << 22).schema(&self.schema)]
            }
        };
        Ok(Response::new(stream_of(messages)))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("read-only"))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            "drop_dataset" => Err(Status::permission_denied("read-only")),
            other => Err(Status::unimplemented(format!("no action {other:?}"))),
        }
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(stream_of(vec![ActionType {
            r#type: "drop_dataset".into(),
            description: "Delete a dataset.".into(),
        }])))
    }
}

/// A running [`RawServer`] on a loopback port; stops when dropped.
struct Raw {
    uri: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Raw {
    fn start(order: Order) -> Raw {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let uri = format!("grpc://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = futures::stream::unfold(listener, |listener| async move {
                    let accepted = listener.accept().await.map(|(socket, _)| socket);
                    Some((accepted, listener))
                });
                tonic::transport::Server::builder()
                    .add_service(FlightServiceServer::new(RawServer::new(order)))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Raw {
            uri,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const ORDER_CHECKS: [&str; 3] = ["schema-first", "empty-schema-first", "dictionaries-first"];

#[test]
fn raw_server_in_the_right_order_passes_the_order_checks() {
    let server = Raw::start(Order::Correct);
    let report = check_json(&server.uri, &[], &[]);
    report.assert_fails_only(&[]);
    for check in ORDER_CHECKS {
        assert_eq!(report.results[check].0, "pass", "{}", report.stdout);
    }
    assert!(report.detail("empty-schema-first").contains("\"empty\""));
}

#[test]
fn a_batch_before_the_schema_fails_schema_first() {
    let server = Raw::start(Order::BatchBeforeSchema);
    let report = check_json(&server.uri, &[], &[]);
    assert_eq!(
        report.results["schema-first"].0, "fail",
        "{}",
        report.stdout
    );
    assert!(report
        .detail("schema-first")
        .contains("message 1 is a RecordBatch, sent before the Schema"));
    assert_eq!(report.code, 1);
}

#[test]
fn an_empty_stream_without_schema_fails_empty_schema_first() {
    let server = Raw::start(Order::NoSchemaOnEmpty);
    let report = check_json(&server.uri, &[], &[]);
    report.assert_fails_only(&["empty-schema-first", "info-schema"]);
    assert!(report
        .detail("empty-schema-first")
        .contains("ended without any message"));
}

#[test]
fn a_batch_before_its_dictionary_fails_dictionaries_first() {
    let server = Raw::start(Order::BatchBeforeDictionary);
    let report = check_json(&server.uri, &[], &[]);
    assert_eq!(
        report.results["dictionaries-first"].0, "fail",
        "{}",
        report.stdout
    );
    assert!(report
        .detail("dictionaries-first")
        .contains("message 2 is a RecordBatch using dictionary 0"));
    assert_eq!(report.code, 1);
}
