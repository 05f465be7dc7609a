//! The client subcommands (`put`, `get`, `ls`, `info`, `head`, `rm`, `actions`,
//! `action`) as a script sees them: the real `hangar` binary against a real
//! `hangar serve`, and against the Arrow cookbook's pyarrow server
//! (tests/python/cookbook_server.py). Outputs, exit codes, round-tripped
//! values, authentication.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Metadata, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use common::{certificates, python, TestServer};
use hangar::json::Value;

/// How long one client command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ helpers

/// A finished client command.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success; stderr:\n{}", self.stderr);
        self
    }

    /// Exit code 1 and a first error line starting with `prefix`.
    #[track_caller]
    fn fails(self, prefix: &str) -> Run {
        assert_eq!(
            self.code, 1,
            "expected exit code 1; stderr:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.starts_with(prefix),
            "expected {prefix:?}; stderr:\n{}",
            self.stderr
        );
        assert!(self.stdout.is_empty(), "a failure writes nothing on stdout");
        self
    }

    /// Whether a `hangar: hint:` line contains `text`.
    fn hints(&self, text: &str) -> bool {
        self.stderr
            .lines()
            .any(|l| l.starts_with("hangar: hint: ") && l.contains(text))
    }
}

/// A client command to run against `server`, with optional stdin and
/// environment.
struct Cli<'a> {
    server: &'a str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    envs: Vec<(&'static str, String)>,
    cwd: Option<&'a Path>,
}

fn cli<'a>(server: &'a str, args: &[&str]) -> Cli<'a> {
    Cli {
        server,
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin: None,
        envs: Vec::new(),
        cwd: None,
    }
}

impl Cli<'_> {
    fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    fn env(mut self, key: &'static str, value: &str) -> Self {
        self.envs.push((key, value.to_string()));
        self
    }

    fn cwd<'b>(self, dir: &'b Path) -> Cli<'b>
    where
        Self: 'b,
    {
        Cli {
            cwd: Some(dir),
            ..self
        }
    }

    /// Runs the command to completion (bounded). The server comes from
    /// `HANGAR_SERVER`, which also tests that default.
    fn run(self) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hangar"));
        command
            .args(&self.args)
            .env("HANGAR_SERVER", self.server)
            .env_remove("HANGAR_PASSWORD");
        if let Some(cwd) = self.cwd {
            command.current_dir(cwd);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        let out = common::run_to_end(command, self.stdin.as_deref(), COMMAND_TIMEOUT);
        Run {
            code: out.status.code().expect("exit code"),
            stdout: out.stdout,
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

fn schema(with_dictionary: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ];
    if with_dictionary {
        fields.push(Field::new(
            "cat",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ));
    }
    Arc::new(Schema::new(fields).with_metadata(Metadata::default().with("origin", "cli test")))
}

/// Rows `range` of the test table: ints, floats with nulls, strings with
/// nulls and escapes, and (optionally) a dictionary column.
fn batch(range: std::ops::Range<i64>, with_dictionary: bool) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let x: Vec<Option<f64>> = ids
        .iter()
        .map(|i| (i % 5 != 0).then_some(*i as f64 / 4.0))
        .collect();
    let s: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("row \"{i}\"")))
        .collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Float64Array::from(x)),
        Arc::new(StringArray::from(s)),
    ];
    if with_dictionary {
        // One dictionary for every batch, as an IPC file requires.
        let keys = Int32Array::from_iter_values(ids.iter().map(|i| (*i % 3) as i32));
        let values = Arc::new(StringArray::from(vec!["red", "green", "blue"]));
        let cat = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        columns.push(Arc::new(cat));
    }
    RecordBatch::try_new(schema(with_dictionary), columns).unwrap()
}

/// `rows` rows in batches of 10 000.
fn table(rows: i64, with_dictionary: bool) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(10_000)
        .map(|start| batch(start..(start + 10_000).min(rows), with_dictionary))
        .collect()
}

/// Writes a Parquet file with several row groups.
fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(15_000))
        .build();
    let mut writer = ArrowWriter::try_new(
        File::create(path).unwrap(),
        batches[0].schema(),
        Some(properties),
    )
    .unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

fn write_ipc_file(path: &Path, batches: &[RecordBatch]) {
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(File::create(path).unwrap(), &batches[0].schema())
            .unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
}

fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    out
}

fn read_parquet(path: &Path) -> (SchemaRef, Vec<RecordBatch>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
    (schema, batches)
}

fn read_ipc_file(path: &Path) -> (SchemaRef, Vec<RecordBatch>) {
    let reader = arrow_ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    (schema, reader.collect::<Result<_, _>>().unwrap())
}

fn read_ipc_stream(bytes: &[u8]) -> (SchemaRef, Vec<RecordBatch>) {
    let reader = arrow_ipc::reader::StreamReader::try_new(bytes, None).unwrap();
    let schema = reader.schema();
    (schema, reader.collect::<Result<_, _>>().unwrap())
}

/// Every row as text: compares values whatever the batch boundaries and
/// dictionary encodings.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Same column names and types, same metadata, same values in the same order.
#[track_caller]
fn assert_same_table(expected: &[RecordBatch], (schema, got): (SchemaRef, Vec<RecordBatch>)) {
    let want = expected[0].schema();
    let describe = |s: &Schema| -> Vec<(String, DataType)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(describe(&want), describe(&schema), "columns differ");
    assert_eq!(
        want.metadata().get("origin"),
        schema.metadata().get("origin"),
        "schema metadata lost"
    );
    let (want_rows, got_rows) = (rows(expected), rows(&got));
    assert_eq!(want_rows.len(), got_rows.len(), "row counts differ");
    assert!(want_rows == got_rows, "values differ");
}

/// Names in a folder, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ------------------------------------------------------------ JSON output

/// `--json` output, parsed by hangar's own strict reader; panics with the text
/// if it is not one JSON document.
#[track_caller]
fn parse_json(text: &str) -> Value {
    Value::parse(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

/// The value under `key`; panics if `value` is not an object that has it.
#[track_caller]
fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value
        .get(key)
        .unwrap_or_else(|| panic!("no key {key} in {value}"))
}

/// The items of an array; panics on anything else.
#[track_caller]
fn items(value: &Value) -> &[Value] {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
}

// ------------------------------------------------------ the cookbook server

/// How long a Python server may take to start (importing pyarrow is slow).
const PYTHON_STARTUP: Duration = Duration::from_secs(60);

/// tests/python/cookbook_server.py on a free port, over its own repository.
fn cookbook(extra: &[&str]) -> TestServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cookbook_server.py");
    let builder = TestServer::builder();
    let repo = builder.repo_path().to_path_buf();
    builder
        .program(python())
        .without_default_args()
        .arg(script)
        .args(["--port", "0", "--repo"])
        .arg(repo)
        .args(extra)
        .listening_prefix("cookbook server listening on ")
        .startup_timeout(PYTHON_STARTUP)
        .start()
}

// -------------------------------------------------------------------- tests

#[test]
fn put_parquet_then_get_as_parquet_ipc_file_ipc_stream_and_stdout_roundtrips() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let data = table(45_000, true);
    write_parquet(&dir.join("in.parquet"), &data);

    let put = cli(&server.uri, &["put", "trips", "in.parquet"])
        .cwd(dir)
        .run()
        .ok();
    assert!(
        put.stderr.contains("put 'trips': 45000 rows"),
        "summary on stderr: {}",
        put.stderr
    );
    assert!(put.stdout.is_empty(), "put writes nothing on stdout");
    assert!(
        !put.stderr.contains('\r'),
        "no progress line when stderr is a file"
    );

    for (file, read) in [
        (
            "out.parquet",
            read_parquet as fn(&Path) -> (SchemaRef, Vec<RecordBatch>),
        ),
        ("out.arrow", read_ipc_file),
        ("out.arrows", |p: &Path| {
            read_ipc_stream(&std::fs::read(p).unwrap())
        }),
    ] {
        let get = cli(&server.uri, &["get", "trips", "-o", file])
            .cwd(dir)
            .run()
            .ok();
        assert!(get.stdout.is_empty(), "get -o writes nothing on stdout");
        assert!(
            get.stderr.contains("get 'trips': 45000 rows"),
            "{}",
            get.stderr
        );
        assert_same_table(&data, read(&dir.join(file)));
    }
    let stdout = cli(&server.uri, &["get", "trips", "--quiet"]).run().ok();
    assert!(stdout.stderr.is_empty(), "--quiet: {}", stdout.stderr);
    assert_same_table(&data, read_ipc_stream(&stdout.stdout));
    // Only the finished files: no partial downloads left behind.
    assert_eq!(
        entries(dir),
        ["in.parquet", "out.arrow", "out.arrows", "out.parquet"]
    );
}

#[test]
fn put_ipc_file_and_ipc_stream_on_stdin_roundtrip() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let data = table(25_000, true);
    let file = work.path().join("in.arrow");
    write_ipc_file(&file, &data);

    cli(&server.uri, &["put", "from-file", file.to_str().unwrap()])
        .run()
        .ok();
    cli(&server.uri, &["put", "from-stdin", "-"])
        .stdin(ipc_stream(&data))
        .run()
        .ok();
    for name in ["from-file", "from-stdin"] {
        let out = work.path().join(format!("{name}.parquet"));
        cli(&server.uri, &["get", name, "-o", out.to_str().unwrap()])
            .run()
            .ok();
        assert_same_table(&data, read_parquet(&out));
    }
}

#[test]
fn a_failed_upload_is_cancelled_and_keeps_the_old_dataset() {
    let server = TestServer::start();
    cli(&server.uri, &["put", "d", "-"])
        .stdin(ipc_stream(&table(1_000, false)))
        .run()
        .ok();
    // A stream cut in the middle of a batch: the client must cancel the call,
    // not end it cleanly (the server would commit what it got).
    let mut cut = ipc_stream(&table(30_000, false));
    cut.truncate(cut.len() * 2 / 3);
    cli(&server.uri, &["put", "d", "-"])
        .stdin(cut)
        .run()
        .fails("hangar: reading stdin");

    let listing = parse_json(&cli(&server.uri, &["ls", "--json"]).run().ok().text());
    assert_eq!(field(&items(&listing)[0], "rows").as_u64(), Some(1_000));
}

#[test]
fn ls_lists_name_rows_bytes_columns_as_text_and_json() {
    let server = TestServer::start();
    let weird = "we\"ird ü";
    for (name, rows) in [("alpha", 1_500), (weird, 20)] {
        cli(&server.uri, &["put", name, "-"])
            .stdin(ipc_stream(&table(rows, name == "alpha")))
            .run()
            .ok();
    }
    let text = cli(&server.uri, &["ls"]).run().ok().text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "ROWS", "BYTES", "COLUMNS"]);
    let alpha: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("alpha"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((alpha[1], alpha[3]), ("1500", "4"), "{text}");
    // Columns are aligned: every line has ROWS ending at the same place.
    let end = lines[0].find("ROWS").unwrap() + 4;
    assert!(
        lines
            .iter()
            .all(|l| l.chars().nth(end - 1).is_some_and(|c| c != ' ')),
        "{text}"
    );

    let json = parse_json(&cli(&server.uri, &["ls", "--json"]).run().ok().text());
    let listed = items(&json);
    assert_eq!(listed.len(), 2);
    let weird_item = listed
        .iter()
        .find(|i| field(i, "name").as_str() == Some(weird))
        .unwrap();
    assert_eq!(field(weird_item, "rows").as_u64(), Some(20));
    assert_eq!(field(weird_item, "columns").as_u64(), Some(3));
    assert!(field(weird_item, "bytes").as_u64().unwrap() > 0);

    // The prefix is the ListFlights criteria.
    let only = cli(&server.uri, &["ls", "al"]).run().ok().text();
    assert_eq!(only.lines().count(), 2, "{only}");
}

#[test]
fn info_shows_schema_with_dictionary_and_metadata_rows_bytes_endpoints() {
    let server = TestServer::start();
    cli(&server.uri, &["put", "d", "-"])
        .stdin(ipc_stream(&table(3_000, true)))
        .run()
        .ok();
    let text = cli(&server.uri, &["info", "d"]).run().ok().text();
    for expected in [
        "name:       d",
        "rows:       3000",
        "schema:     4 columns",
        "  id   Int64 not null",
        "  cat  dictionary<values=Utf8, indices=Int32>",
        "origin = cli test",
        "endpoints:  1",
        "1. ticket \"d\" on this server",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }

    let json = parse_json(&cli(&server.uri, &["info", "d", "--json"]).run().ok().text());
    assert_eq!(field(&json, "name").as_str(), Some("d"));
    assert_eq!(field(&json, "rows").as_u64(), Some(3000));
    let schema = field(&json, "schema");
    let fields = items(field(schema, "fields"));
    assert_eq!(fields.len(), 4);
    assert_eq!(field(&fields[0], "name").as_str(), Some("id"));
    assert_eq!(field(&fields[0], "nullable"), &Value::Bool(false));
    let dictionary = field(&fields[3], "dictionary");
    assert_eq!(field(dictionary, "values").as_str(), Some("Utf8"));
    assert_eq!(field(dictionary, "indices").as_str(), Some("Int32"));
    assert_eq!(field(&fields[1], "dictionary"), &Value::Null);
    assert_eq!(
        field(field(schema, "metadata"), "origin").as_str(),
        Some("cli test")
    );
    let endpoints = items(field(&json, "endpoints"));
    assert_eq!(field(&endpoints[0], "ticket").as_str(), Some("d"));
    assert!(items(field(&endpoints[0], "locations")).is_empty());
}

#[test]
fn head_prints_the_first_rows_as_an_aligned_table() {
    let server = TestServer::start();
    cli(&server.uri, &["put", "d", "-"])
        .stdin(ipc_stream(&table(50_000, true)))
        .run()
        .ok();
    let text = cli(&server.uri, &["head", "d", "-n", "3"])
        .run()
        .ok()
        .text();
    assert_eq!(
        text,
        "id     x  s        cat\n\
         \x200  null  null     red\n\
         \x201  0.25  row \"1\"  green\n\
         \x202   0.5  row \"2\"  blue\n"
    );
    let ten = cli(&server.uri, &["head", "d"]).run().ok().text();
    assert_eq!(ten.lines().count(), 11, "header and 10 rows by default");
    let none = cli(&server.uri, &["head", "d", "-n", "0"])
        .run()
        .ok()
        .text();
    assert_eq!(
        none.split_whitespace().collect::<Vec<_>>(),
        ["id", "x", "s", "cat"]
    );
}

#[test]
fn rm_deletes_and_a_missing_dataset_exits_1_with_not_found() {
    let server = TestServer::start();
    cli(&server.uri, &["put", "gone", "-"])
        .stdin(ipc_stream(&table(10, false)))
        .run()
        .ok();
    let rm = cli(&server.uri, &["rm", "gone"]).run().ok();
    assert_eq!(rm.stderr, "hangar: removed 'gone'\n");
    assert_eq!(cli(&server.uri, &["ls"]).run().ok().text(), "");

    let work = tempfile::tempdir().unwrap();
    for args in [
        &["get", "gone", "-o", "x.parquet"][..],
        &["info", "gone"][..],
        &["head", "gone"][..],
        &["rm", "gone"][..],
    ] {
        let run = cli(&server.uri, args).cwd(work.path()).run();
        assert_eq!(
            run.fails("hangar: NOT_FOUND: ").stderr,
            "hangar: NOT_FOUND: dataset 'gone' not found\n\
             hangar: hint: 'hangar ls' lists the datasets\n",
            "{args:?}"
        );
    }
    assert!(
        entries(work.path()).is_empty(),
        "a failed get leaves no file"
    );
}

#[test]
fn actions_lists_and_action_runs_with_a_body() {
    let server = TestServer::start();
    let text = cli(&server.uri, &["actions"]).run().ok().text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("TYPE") && lines[0].contains("DESCRIPTION"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("drop_dataset  Delete a dataset."),
        "{text}"
    );

    cli(&server.uri, &["put", "d", "-"])
        .stdin(ipc_stream(&table(10, false)))
        .run()
        .ok();
    // As the cookbook's: the drop answers no result messages.
    let dropped = cli(&server.uri, &["action", "drop_dataset", "d"])
        .run()
        .ok();
    assert_eq!(dropped.text(), "");
    cli(&server.uri, &["ls"]).run().ok();
    cli(&server.uri, &["info", "d"])
        .run()
        .fails("hangar: NOT_FOUND");
    cli(&server.uri, &["action", "explode"])
        .run()
        .fails("hangar: UNIMPLEMENTED: unknown action 'explode'");
}

#[test]
fn usage_errors_exit_2_before_touching_the_network() {
    // No server at all: usage errors must not even try to connect.
    let nowhere = "grpc://127.0.0.1:9";
    for (args, phrase) in [
        (&["ls", "--bogus"][..], "invalid option '--bogus'"),
        (&["put", "d"][..], "needs a FILE"),
        (&["get"][..], "needs a dataset NAME"),
        (&["get", "d", "-o", "out.csv"][..], "cannot tell the format"),
        (&["head", "d", "-n", "x"][..], "invalid --rows"),
        (
            &["ls", "--server", "http://h:1"][..],
            "unsupported scheme 'http'",
        ),
        (
            &["ls", "--tls-root", "ca.pem"][..],
            "needs a grpc+tls:// server",
        ),
        (&["rm", "a", "b"][..], "unexpected argument 'b'"),
    ] {
        let run = cli(nowhere, args).run();
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(phrase), "{args:?}: {}", run.stderr);
    }
    let bad_env = cli("localhost:8815", &["ls"]).run();
    assert_eq!(bad_env.code, 2);
    assert!(
        bad_env.stderr.contains("invalid HANGAR_SERVER"),
        "{}",
        bad_env.stderr
    );

    let help = cli(nowhere, &["get", "--help"]).run().ok().text();
    assert!(
        help.contains("hangar get") && help.contains("--server"),
        "{help}"
    );
    let top = cli(nowhere, &["--help"]).run().ok().text();
    for command in [
        "put", "get", "ls", "info", "head", "rm", "actions", "action",
    ] {
        assert!(
            top.contains(&format!("\n    {command} ")),
            "{command} in:\n{top}"
        );
    }
}

#[test]
fn an_unreachable_server_exits_1_with_unavailable_and_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("grpc://127.0.0.1:{port}");
    let run = cli(&uri, &["ls"])
        .run()
        .fails(&format!("hangar: UNAVAILABLE: cannot connect to {uri}"));
    assert!(
        run.hints("is a Flight server running there?"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_input_file_exits_1_and_names_it() {
    let server = TestServer::start();
    cli(&server.uri, &["put", "d", "/nonexistent/in.parquet"])
        .run()
        .fails("hangar: opening /nonexistent/in.parquet: No such file");
}

#[test]
fn login_with_user_and_password_against_hangar() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut file = hangar::auth::Users::default();
    file.add("ann", hangar::auth::Role::Admin, "s3cret-pass")
        .unwrap();
    file.add("rob", hangar::auth::Role::Read, "r3ad-only-pass")
        .unwrap();
    file.save(&users).unwrap();
    let server = TestServer::start_with_args([std::ffi::OsStr::new("--users"), users.as_os_str()]);

    let anonymous = cli(&server.uri, &["ls"])
        .run()
        .fails("hangar: UNAUTHENTICATED: ");
    assert!(anonymous.hints("try --user"), "{}", anonymous.stderr);
    let wrong = cli(&server.uri, &["ls", "--user", "ann"])
        .env("HANGAR_PASSWORD", "nope")
        .run()
        .fails("hangar: UNAUTHENTICATED: ");
    assert!(
        wrong.hints("check --user and HANGAR_PASSWORD"),
        "{}",
        wrong.stderr
    );

    let data = table(2_000, true);
    cli(&server.uri, &["put", "d", "-", "--user", "ann"])
        .env("HANGAR_PASSWORD", "s3cret-pass")
        .stdin(ipc_stream(&data))
        .run()
        .ok();
    let got = cli(&server.uri, &["get", "d", "--user", "rob", "-q"])
        .env("HANGAR_PASSWORD", "r3ad-only-pass")
        .run()
        .ok();
    assert_same_table(&data, read_ipc_stream(&got.stdout));
    cli(&server.uri, &["rm", "d", "--user", "rob"])
        .env("HANGAR_PASSWORD", "r3ad-only-pass")
        .run()
        .fails("hangar: PERMISSION_DENIED: ");
}

#[test]
fn cookbook_server_put_ls_info_head_get_rm_work_unchanged() {
    let server = cookbook(&[]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // The cookbook's GeneratorStream cannot send dictionary columns (pyarrow's
    // own client fails on them too), so this table has none.
    let data = table(35_000, false);
    write_parquet(&dir.join("in.parquet"), &data);

    cli(&server.uri, &["put", "uploaded.parquet", "in.parquet"])
        .cwd(dir)
        .run()
        .ok();
    cli(&server.uri, &["put", "streamed.parquet", "-"])
        .stdin(ipc_stream(&data))
        .run()
        .ok();
    assert!(server.repo().join("uploaded.parquet").exists());

    let json = parse_json(&cli(&server.uri, &["ls", "--json"]).run().ok().text());
    let mut names: Vec<&str> = items(&json)
        .iter()
        .map(|i| field(i, "name").as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["streamed.parquet", "uploaded.parquet"]);
    assert!(
        items(&json)
            .iter()
            .all(|i| field(i, "rows").as_u64() == Some(35_000)
                && field(i, "columns").as_u64() == Some(3)),
        "{json}"
    );

    let info = cli(&server.uri, &["info", "uploaded.parquet"])
        .run()
        .ok()
        .text();
    // The cookbook names its own location in the endpoint: get follows it.
    assert!(
        info.contains(&format!("ticket \"uploaded.parquet\" at {}", server.uri)),
        "{info}"
    );
    let head = cli(&server.uri, &["head", "uploaded.parquet", "-n", "2"])
        .run()
        .ok()
        .text();
    assert_eq!(head.lines().count(), 3, "{head}");

    cli(
        &server.uri,
        &["get", "uploaded.parquet", "-o", "out.parquet"],
    )
    .cwd(dir)
    .run()
    .ok();
    assert_same_table(&data, read_parquet(&dir.join("out.parquet")));
    let stdout = cli(&server.uri, &["get", "streamed.parquet"]).run().ok();
    assert_same_table(&data, read_ipc_stream(&stdout.stdout));

    let actions = cli(&server.uri, &["actions"]).run().ok().text();
    assert!(
        actions.contains("drop_dataset  Delete a dataset."),
        "{actions}"
    );
    cli(&server.uri, &["rm", "uploaded.parquet"]).run().ok();
    cli(&server.uri, &["rm", "streamed.parquet"]).run().ok();
    assert_eq!(
        cli(&server.uri, &["ls", "--json"]).run().ok().text(),
        "[]\n"
    );
    // The recipe's drop of a missing file is a Python exception: UNKNOWN,
    // reported on one line with the exception's name.
    let again = cli(&server.uri, &["rm", "uploaded.parquet"])
        .run()
        .fails("hangar: UNKNOWN: ");
    let first = again.stderr.lines().next().unwrap();
    assert!(first.contains("FileNotFoundError"), "{}", again.stderr);
}

#[test]
fn cookbook_basic_token_recipe_accepts_user_and_password() {
    let server = cookbook(&["--users", "test:password"]);
    let data = table(500, false);

    let anonymous = cli(&server.uri, &["ls"])
        .run()
        .fails("hangar: UNAUTHENTICATED: No credentials supplied");
    assert!(anonymous.hints("try --user"), "{}", anonymous.stderr);
    cli(&server.uri, &["ls", "--user", "test"])
        .env("HANGAR_PASSWORD", "wrong")
        .run()
        .fails("hangar: UNAUTHENTICATED: Unknown user or invalid password");

    let login = |args: &[&str]| {
        cli(&server.uri, args)
            .env("HANGAR_PASSWORD", "password")
            .run()
    };
    let put = cli(&server.uri, &["put", "d.parquet", "-", "--user", "test"])
        .env("HANGAR_PASSWORD", "password")
        .stdin(ipc_stream(&data))
        .run()
        .ok();
    assert!(put.stderr.contains("500 rows"), "{}", put.stderr);
    let ls = login(&["ls", "--user", "test"]).ok().text();
    assert!(ls.contains("d.parquet"), "{ls}");
    // The endpoint's location is a second connection: it logs in too.
    let got = login(&["get", "d.parquet", "--user", "test", "-q"]).ok();
    assert_same_table(&data, read_ipc_stream(&got.stdout));
    login(&["rm", "d.parquet", "--user", "test"]).ok();
}

#[test]
fn credentials_go_only_to_the_server_named_by_server_unless_trust_locations() {
    // The cookbook's endpoints name its own location, grpc://127.0.0.1:PORT.
    // Reached as localhost, that location is another host as far as the
    // client can tell (`localhost` resolves to 127.0.0.1 here).
    let server = cookbook(&["--users", "test:password"]);
    assert!(
        server.uri.starts_with("grpc://127.0.0.1:"),
        "{}",
        server.uri
    );
    let by_name = format!("grpc://localhost:{}", server.addr.port());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let data = table(500, false);
    let login = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &by_name, "--user", "test"]);
        cli(&by_name, &all)
            .env("HANGAR_PASSWORD", "password")
            .cwd(dir)
    };
    login(&["put", "d.parquet", "-"])
        .stdin(ipc_stream(&data))
        .run()
        .ok();

    // The endpoint is fetched without the credentials, which the cookbook
    // server refuses; the client says why.
    let refused = login(&["get", "d.parquet", "-o", "out.parquet"])
        .run()
        .fails("hangar: ");
    let notice = format!(
        "hangar: fetching an endpoint from {}, not the server named by --server, without \
         credentials (--trust-locations would send them)",
        server.uri
    );
    assert!(
        refused.stderr.lines().any(|l| l == notice),
        "{notice:?} missing in:\n{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("UNAUTHENTICATED: No credentials supplied"),
        "{}",
        refused.stderr
    );
    assert!(!dir.join("out.parquet").exists(), "nothing written");

    let trusted = login(&["get", "d.parquet", "-o", "out.parquet", "--trust-locations"])
        .run()
        .ok();
    assert!(
        trusted.stderr.contains(&format!(
            "hangar: fetching an endpoint from {}, not the server named by --server, with your \
             credentials (--trust-locations)",
            server.uri
        )),
        "{}",
        trusted.stderr
    );
    assert_same_table(&data, read_parquet(&dir.join("out.parquet")));
}

#[test]
fn tls_root_and_client_certificate_reach_an_mtls_server() {
    let certs = tempfile::tempdir().unwrap();
    let pem = |name: &str| certs.path().join(name).to_str().unwrap().to_string();
    certificates(certs.path());
    let server = TestServer::start_with_args([
        "--tls-cert",
        &pem("server.pem"),
        "--tls-key",
        &pem("server.key"),
        "--tls-client-ca",
        &pem("ca.pem"),
    ]);
    let uri = server.uri.clone();
    assert!(uri.starts_with("grpc+tls://127.0.0.1:"), "{uri}");
    let tls = ["--tls-root", &pem("ca.pem")];
    let mtls = [
        "--tls-root",
        &pem("ca.pem"),
        "--tls-cert",
        &pem("client.pem"),
        "--tls-key",
        &pem("client.key"),
    ];

    let data = table(1_000, true);
    let args = |command: &[&str], extra: &[&str]| -> Vec<String> {
        command.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let with = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        cli(&uri, &refs)
    };
    with(args(&["put", "d", "-"], &mtls))
        .stdin(ipc_stream(&data))
        .run()
        .ok();
    let got = with(args(&["get", "d", "-q"], &mtls)).run().ok();
    assert_same_table(&data, read_ipc_stream(&got.stdout));

    // Without a client certificate the server refuses the connection: the
    // TLS alert arrives, or only a dropped connection, depending on timing.
    let refused = with(args(&["ls"], &tls)).run().fails("hangar: ");
    assert!(refused.hints("client certificate"), "{}", refused.stderr);
    // Without the CA the server's certificate is not trusted.
    let untrusted = with(args(&["ls"], &[]))
        .run()
        .fails("hangar: UNAVAILABLE: ");
    assert!(
        untrusted.hints("the server's certificate is not trusted: pass its CA with --tls-root"),
        "{}",
        untrusted.stderr
    );
}

/// A Flight server that only answers GetFlightInfo: one FlightInfo whose two
/// endpoints live on two other servers (given as argv[1] and argv[2]), each
/// holding the dataset "part".
const DIRECTORY_SERVER: &str = r#"
import sys
import pyarrow.flight as fl

first, second = sys.argv[1], sys.argv[2]

class Directory(fl.FlightServerBase):
    def get_flight_info(self, context, descriptor):
        part = fl.FlightDescriptor.for_path("part")
        schema = fl.connect(first).get_flight_info(part).schema
        endpoints = [fl.FlightEndpoint(b"part", [first]), fl.FlightEndpoint(b"part", [second])]
        return fl.FlightInfo(schema, descriptor, endpoints, -1, -1)

server = Directory("grpc://127.0.0.1:0")
print(f"directory listening on grpc://127.0.0.1:{server.port}", flush=True)
server.serve()
"#;

#[test]
fn get_and_head_read_every_endpoint_in_order_from_its_location() {
    let (first, second) = (TestServer::start(), TestServer::start());
    let (one, two) = (table(12_000, false), batch(12_000..20_000, false));
    cli(&first.uri, &["put", "part", "-"])
        .stdin(ipc_stream(&one))
        .run()
        .ok();
    cli(&second.uri, &["put", "part", "-"])
        .stdin(ipc_stream(std::slice::from_ref(&two)))
        .run()
        .ok();
    let directory = TestServer::builder()
        .program(python())
        .without_default_args()
        .args(["-c", DIRECTORY_SERVER])
        .args([&first.uri, &second.uri])
        .listening_prefix("directory listening on ")
        .startup_timeout(PYTHON_STARTUP)
        .start();

    let mut both = one.clone();
    both.push(two);
    let got = cli(&directory.uri, &["get", "whole", "-q"]).run().ok();
    assert_same_table(&both, read_ipc_stream(&got.stdout));
    let info = cli(&directory.uri, &["info", "whole"]).run().ok().text();
    assert!(
        info.contains(&format!("2. ticket \"part\" at {}", second.uri)),
        "{info}"
    );
    // head stops inside the second endpoint.
    let head = cli(&directory.uri, &["head", "whole", "-n", "12002"])
        .run()
        .ok()
        .text();
    let last = head.lines().last().unwrap();
    assert!(last.trim_start().starts_with("12001 "), "{last}");
}
