//! The tools for people who audit the wire: `hangar proto` (the compiled-in
//! Flight.proto and its digest) and `--trace` (every gRPC event, decoded),
//! pinned on fixed inputs.

mod common;

use common::run_hangar;

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn proto_prints_the_compiled_in_file_byte_for_byte_and_its_sha256() {
    let source = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/Flight.proto"))
        .expect("reading proto/Flight.proto");
    let digest = sha256_hex(&source);

    let out = run_hangar(["proto"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout == source,
        "stdout is not proto/Flight.proto byte for byte"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{digest}  Flight.proto (")),
        "stderr: {stderr}"
    );

    let out = run_hangar(["proto", "--sha256"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{digest}  Flight.proto\n")
    );
    assert!(out.stderr.is_empty());

    let out = run_hangar(["proto", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------- --trace

use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use common::{put, run_to_end, TestServer};
use hangar::json::Value;

const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new(
            "s",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
    ]))
}

/// The fixed input: three rows, a null, a dictionary column.
fn small_table() -> RecordBatch {
    let s: DictionaryArray<arrow_array::types::Int32Type> =
        vec!["x", "y", "x"].into_iter().collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
            Arc::new(s) as ArrayRef,
        ],
    )
    .unwrap()
}

fn upload(server: &TestServer, name: &str, batches: &[RecordBatch]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = server.client().await;
        put(&mut client, name, schema(), batches)
            .await
            .expect("DoPut");
    });
}

/// `hangar ARGS` against `server`, bounded.
fn hangar(server: &TestServer, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(common::hangar_bin());
    command
        .args(args)
        .env("HANGAR_SERVER", &server.uri)
        .env_remove("HANGAR_PASSWORD");
    for (k, v) in envs {
        command.env(k, v);
    }
    run_to_end(command, None, LIMIT)
}

/// The trace with what changes from run to run replaced: the port, and the
/// `date` header servers add.
fn normalized(stderr: &[u8], server: &TestServer) -> String {
    let text = String::from_utf8_lossy(stderr);
    let port = server.addr.port().to_string();
    text.lines()
        .filter(|l| l.contains("trace #") || l.starts_with("{\"call\""))
        .map(|line| {
            let line = line.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT");
            match line.find("date=\"") {
                Some(at) => {
                    let end = line[at + 6..]
                        .find('"')
                        .map_or(line.len(), |e| at + 6 + e + 1);
                    format!("{}date=DATE{}", &line[..at], &line[end..])
                }
                None => match line.find(",\"date\":\"") {
                    Some(at) => {
                        let end = line[at + 9..]
                            .find('"')
                            .map_or(line.len(), |e| at + 9 + e + 1);
                        format!("{},\"date\":\"DATE\"{}", &line[..at], &line[end..])
                    }
                    None => line,
                },
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `hangar ARGS` against `server`, expects success, and returns its
/// normalized trace.
fn traced(server: &TestServer, args: &[&str]) -> String {
    let run = hangar(server, args, &[]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    normalized(&run.stderr, server)
}

const GET_TEXT: &str = r##"trace #1 - call method=/arrow.flight.protocol.FlightService/GetFlightInfo target=grpc://127.0.0.1:PORT tls=false
trace #1 > headers headers={te=trailers content-type=application/grpc}
trace #1 > message n=1 bytes=9 type=FlightDescriptor descriptor_type=PATH path=[small]
trace #1 > end messages=1
trace #1 < headers http_status=200 headers={content-type=application/grpc date=DATE}
trace #1 < message n=1 bytes=288 type=FlightInfo schema={bytes=256 message=Schema version=V5 body_length=0 endianness=Little fields=[{name=a type=Int64 nullable=true} {name=s type="Dictionary(Int32, Utf8)" nullable=true dictionary={id=0 index_type=int32 ordered=false}}]} flight_descriptor={descriptor_type=PATH path=[small]} endpoints=[{ticket=small locations=[] expiration_time=- app_metadata=""}] total_records=3 total_bytes=790 ordered=true app_metadata=""
trace #1 < trailers messages=1 trailers={grpc-status=0}
trace #1 - status code=OK message=""
trace #2 - call method=/arrow.flight.protocol.FlightService/DoGet target=grpc://127.0.0.1:PORT tls=false
trace #2 > headers headers={te=trailers content-type=application/grpc}
trace #2 > message n=1 bytes=7 type=Ticket ticket=small
trace #2 > end messages=1
trace #2 < headers http_status=200 headers={content-type=application/grpc date=DATE}
trace #2 < message n=1 bytes=207 type=FlightData header_bytes=204 body_bytes=0 body_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ipc={message=Schema version=V5 body_length=0 endianness=Little fields=[{name=a type=Int64 nullable=true} {name=s type="Dictionary(Int32, Utf8)" nullable=true dictionary={id=0 index_type=int32 ordered=false}}]}
trace #2 < message n=2 bytes=303 type=FlightData header_bytes=168 body_bytes=128 body_sha256=678e8baa6031bab77471c05c29d58882b956c4773459789fc5aeb794256102e5 ipc={message=DictionaryBatch version=V5 body_length=128 id=0 is_delta=false data={length=2 nodes=[[2 0]] buffers=[[0 0] [0 12] [64 2]] compression=-}}
trace #2 < message n=3 bytes=383 type=FlightData header_bytes=184 body_bytes=192 body_sha256=8bc36ea0f025fe732e4cd33c3f6d4dd0b425004fdc998f281f12ddd45c683541 ipc={message=RecordBatch version=V5 body_length=192 length=3 nodes=[[3 1] [3 0]] buffers=[[0 1] [64 24] [128 0] [128 12]] compression=-}
trace #2 < trailers messages=3 trailers={grpc-status=0}
trace #2 - status code=OK message="""##;

#[test]
fn trace_text_of_a_get_with_a_dictionary_column_is_pinned() {
    let server = TestServer::start();
    upload(&server, "small", &[small_table()]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let trace = traced(
        &server,
        &["--trace", "get", "small", "-q", "-o", out.to_str().unwrap()],
    );
    assert_eq!(trace, GET_TEXT, "\n--- actual trace ---\n{trace}\n---");
}

const GET_JSON: &str = r##"{"call":1,"event":"call","method":"/arrow.flight.protocol.FlightService/GetFlightInfo","target":"grpc://127.0.0.1:PORT","tls":false}
{"call":1,"event":"headers","direction":"request","headers":{"te":"trailers","content-type":"application/grpc"}}
{"call":1,"event":"message","direction":"request","n":1,"bytes":9,"type":"FlightDescriptor","descriptor_type":"PATH","path":["small"]}
{"call":1,"event":"end","direction":"request","messages":1}
{"call":1,"event":"headers","direction":"response","http_status":200,"headers":{"content-type":"application/grpc","date":"DATE"}}
{"call":1,"event":"message","direction":"response","n":1,"bytes":288,"type":"FlightInfo","schema":{"bytes":256,"message":"Schema","version":"V5","body_length":0,"endianness":"Little","fields":[{"name":"a","type":"Int64","nullable":true},{"name":"s","type":"Dictionary(Int32, Utf8)","nullable":true,"dictionary":{"id":0,"index_type":"int32","ordered":false}}]},"flight_descriptor":{"descriptor_type":"PATH","path":["small"]},"endpoints":[{"ticket":"small","locations":[],"expiration_time":null,"app_metadata":""}],"total_records":3,"total_bytes":790,"ordered":true,"app_metadata":""}
{"call":1,"event":"trailers","direction":"response","messages":1,"trailers":{"grpc-status":"0"}}
{"call":1,"event":"status","code":"OK","message":""}
{"call":2,"event":"call","method":"/arrow.flight.protocol.FlightService/DoGet","target":"grpc://127.0.0.1:PORT","tls":false}
{"call":2,"event":"headers","direction":"request","headers":{"te":"trailers","content-type":"application/grpc"}}
{"call":2,"event":"message","direction":"request","n":1,"bytes":7,"type":"Ticket","ticket":"small"}
{"call":2,"event":"end","direction":"request","messages":1}
{"call":2,"event":"headers","direction":"response","http_status":200,"headers":{"content-type":"application/grpc","date":"DATE"}}
{"call":2,"event":"message","direction":"response","n":1,"bytes":207,"type":"FlightData","header_bytes":204,"body_bytes":0,"body_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","ipc":{"message":"Schema","version":"V5","body_length":0,"endianness":"Little","fields":[{"name":"a","type":"Int64","nullable":true},{"name":"s","type":"Dictionary(Int32, Utf8)","nullable":true,"dictionary":{"id":0,"index_type":"int32","ordered":false}}]}}
{"call":2,"event":"message","direction":"response","n":2,"bytes":303,"type":"FlightData","header_bytes":168,"body_bytes":128,"body_sha256":"678e8baa6031bab77471c05c29d58882b956c4773459789fc5aeb794256102e5","ipc":{"message":"DictionaryBatch","version":"V5","body_length":128,"id":0,"is_delta":false,"data":{"length":2,"nodes":[[2,0]],"buffers":[[0,0],[0,12],[64,2]],"compression":null}}}
{"call":2,"event":"message","direction":"response","n":3,"bytes":383,"type":"FlightData","header_bytes":184,"body_bytes":192,"body_sha256":"8bc36ea0f025fe732e4cd33c3f6d4dd0b425004fdc998f281f12ddd45c683541","ipc":{"message":"RecordBatch","version":"V5","body_length":192,"length":3,"nodes":[[3,1],[3,0]],"buffers":[[0,1],[64,24],[128,0],[128,12]],"compression":null}}
{"call":2,"event":"trailers","direction":"response","messages":3,"trailers":{"grpc-status":"0"}}
{"call":2,"event":"status","code":"OK","message":""}"##;

#[test]
fn trace_json_of_a_get_is_pinned_and_every_line_parses() {
    let server = TestServer::start();
    upload(&server, "small", &[small_table()]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.arrow");
    let trace = traced(
        &server,
        &[
            "--trace-format",
            "json",
            "get",
            "small",
            "-q",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    for line in trace.lines() {
        let event = Value::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event.get("call").and_then(Value::as_u64).is_some(),
            "{line}"
        );
        assert!(
            event.get("event").and_then(Value::as_str).is_some(),
            "{line}"
        );
    }
    assert_eq!(trace, GET_JSON, "\n--- actual trace ---\n{trace}\n---");
}

const EMPTY_TEXT: &str = r##"trace #2 - call method=/arrow.flight.protocol.FlightService/DoGet target=grpc://127.0.0.1:PORT tls=false
trace #2 > headers headers={te=trailers content-type=application/grpc}
trace #2 > message n=1 bytes=7 type=Ticket ticket=empty
trace #2 > end messages=1
trace #2 < headers http_status=200 headers={content-type=application/grpc date=DATE}
trace #2 < message n=1 bytes=207 type=FlightData header_bytes=204 body_bytes=0 body_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ipc={message=Schema version=V5 body_length=0 endianness=Little fields=[{name=a type=Int64 nullable=true} {name=s type="Dictionary(Int32, Utf8)" nullable=true dictionary={id=0 index_type=int32 ordered=false}}]}
trace #2 < trailers messages=1 trailers={grpc-status=0}
trace #2 - status code=OK message="""##;

#[test]
fn trace_of_an_empty_dataset_shows_its_schema_message_alone() {
    let server = TestServer::start();
    upload(&server, "empty", &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.arrows");
    let trace = traced(
        &server,
        &["--trace", "get", "empty", "-q", "-o", out.to_str().unwrap()],
    );
    let doget: Vec<&str> = trace
        .lines()
        .filter(|l| l.starts_with("trace #2"))
        .collect();
    assert_eq!(
        doget.join("\n"),
        EMPTY_TEXT,
        "\n--- actual trace ---\n{trace}\n---"
    );
}

const ERROR_TEXT: &str = r##"trace #1 - call method=/arrow.flight.protocol.FlightService/GetFlightInfo target=grpc://127.0.0.1:PORT tls=false
trace #1 > headers headers={te=trailers content-type=application/grpc}
trace #1 > message n=1 bytes=11 type=FlightDescriptor descriptor_type=PATH path=[missing]
trace #1 > end messages=1
trace #1 < headers http_status=200 headers={content-type=application/grpc grpc-status=5 grpc-message=dataset%20'missing'%20not%20found date=DATE}
trace #1 - status code=NOT_FOUND message="dataset 'missing' not found""##;
const ERROR_JSON: &str = r##"{"call":1,"event":"call","method":"/arrow.flight.protocol.FlightService/GetFlightInfo","target":"grpc://127.0.0.1:PORT","tls":false}
{"call":1,"event":"headers","direction":"request","headers":{"te":"trailers","content-type":"application/grpc"}}
{"call":1,"event":"message","direction":"request","n":1,"bytes":11,"type":"FlightDescriptor","descriptor_type":"PATH","path":["missing"]}
{"call":1,"event":"end","direction":"request","messages":1}
{"call":1,"event":"headers","direction":"response","http_status":200,"headers":{"content-type":"application/grpc","grpc-status":"5","grpc-message":"dataset%20'missing'%20not%20found","date":"DATE"}}
{"call":1,"event":"status","code":"NOT_FOUND","message":"dataset 'missing' not found"}"##;

#[test]
fn trace_of_an_error_shows_the_trailers_only_status_in_text_and_json() {
    let server = TestServer::start();
    for (format, expected) in [("text", ERROR_TEXT), ("json", ERROR_JSON)] {
        let run = hangar(&server, &["--trace-format", format, "info", "missing"], &[]);
        assert_eq!(run.status.code(), Some(1));
        let trace = normalized(&run.stderr, &server);
        assert_eq!(
            trace, expected,
            "\n--- actual {format} trace ---\n{trace}\n---"
        );
    }
}

const PASSWORD: &str = "correct horse 42";

/// Every `Bearer ` or `Basic ` in `text` is followed by the redaction, never
/// by a credential.
fn assert_redacted(side: &str, text: &str) {
    for scheme in ["Basic ", "Bearer "] {
        let mut rest = text;
        while let Some(at) = rest.find(scheme) {
            rest = &rest[at + scheme.len()..];
            assert!(
                rest.starts_with("<redacted, "),
                "{side}: {scheme}{rest:.40}…"
            );
        }
    }
    assert!(!text.contains(PASSWORD), "{side} shows the password");
}

#[test]
fn traces_on_both_sides_never_show_credentials() {
    let builder = TestServer::builder();
    let users = builder.dir_path().join("users");
    let mut file = hangar::auth::Users::default();
    file.add("alice", hangar::auth::Role::Admin, PASSWORD)
        .unwrap();
    file.save(&users).unwrap();
    let server = builder.arg("--users").arg(&users).arg("--trace").start();
    let run = hangar(
        &server,
        &["--trace", "ls", "--user", "alice"],
        &[("HANGAR_PASSWORD", PASSWORD)],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let client = String::from_utf8_lossy(&run.stderr).into_owned();
    let log = server.wait_for_stderr("the traced ListFlights", |log| {
        log.contains("FlightService/ListFlights") && log.matches("trace #2 - status").count() == 1
    });
    let basic = hangar::auth::base64_encode(format!("alice:{PASSWORD}").as_bytes());
    for (side, text) in [("client", &client), ("server", &log)] {
        // The login and the call after it were traced...
        assert!(text.contains("FlightService/Handshake"), "{side}:\n{text}");
        assert!(
            text.contains(&format!(
                "authorization=\"Basic <redacted, {} bytes>\"",
                basic.len()
            )),
            "{side}:\n{text}"
        );
        assert!(
            text.contains("authorization=\"Bearer <redacted, "),
            "{side}:\n{text}"
        );
        // The token also comes back in the Handshake payload.
        assert!(
            text.contains("type=HandshakeResponse protocol_version=0 payload=\"<redacted, "),
            "{side}:\n{text}"
        );
        // ...and no credential crossed into the trace.
        assert!(!text.contains(&basic), "{side} shows the Basic credentials");
        assert_redacted(side, text);
    }
}

#[test]
fn serve_trace_logs_only_the_chosen_rpcs_in_the_log_format() {
    let server = TestServer::start_with_args(["--trace=doget", "--log-format", "json"]);
    upload(&server, "small", &[small_table()]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let run = hangar(
        &server,
        &["get", "small", "-q", "-o", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&run.stderr).contains("trace"),
        "the client was not asked to trace"
    );
    let log = server.wait_for_stderr("the traced DoGet's status", |log| {
        log.contains("\"event\":\"status\"")
    });
    let events: Vec<Value> = log
        .lines()
        .map(|l| Value::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v.get("call").is_some())
        .collect();
    let methods: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get("method").and_then(Value::as_str))
        .collect();
    assert_eq!(
        methods,
        ["/arrow.flight.protocol.FlightService/DoGet"],
        "{log}"
    );
    for event in &events {
        let Some(Value::Object(fields)) = Some(event) else {
            unreachable!()
        };
        assert_eq!(
            fields[0].0, "time",
            "a server trace line starts with its time: {event}"
        );
        assert_eq!(
            event.get("call").and_then(Value::as_u64),
            Some(1),
            "{event}"
        );
    }
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.get("ipc")?.get("message")?.as_str())
        .collect();
    assert_eq!(kinds, ["Schema", "DictionaryBatch", "RecordBatch"], "{log}");
    assert!(events.iter().any(|e| e
        .get("peer")
        .and_then(Value::as_str)
        .is_some_and(|p| p.starts_with("127.0.0.1:"))));
}

#[test]
fn trace_flags_in_the_wrong_place_are_usage_errors() {
    for (args, needle) in [
        (&["--trace", "serve"][..], "goes with a client command"),
        (&["serve", "--trace=Nope"][..], "unknown RPC 'Nope'"),
        (&["serve", "--trace="][..], "needs RPC names"),
        (
            &["ls", "--trace-format", "xml"][..],
            "invalid --trace-format",
        ),
    ] {
        let out = run_hangar(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn trace_of_a_put_shows_the_descriptor_the_batches_and_the_put_result() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.arrows");
    {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(
            std::fs::File::create(&file).unwrap(),
            &schema(),
        )
        .unwrap();
        writer.write(&small_table()).unwrap();
        writer.finish().unwrap();
    }
    let trace = traced(
        &server,
        &["--trace", "put", "up", file.to_str().unwrap(), "-q"],
    );
    let lines: Vec<&str> = trace.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{trace}"))
    };
    let call = find("- call method=/arrow.flight.protocol.FlightService/DoPut");
    let schema_message = find("> message n=1 bytes=");
    assert!(lines[schema_message]
        .contains("type=FlightData flight_descriptor={descriptor_type=PATH path=[up]}"));
    assert!(lines[schema_message].contains("ipc={message=Schema"));
    let dictionary = find("ipc={message=DictionaryBatch");
    let batch =
        find("ipc={message=RecordBatch version=V5 body_length=192 length=3 nodes=[[3 1] [3 0]]");
    let end = find("> end messages=3");
    let result = find("< message n=1 bytes=");
    assert!(
        lines[result].contains("type=PutResult app_metadata="),
        "{}",
        lines[result]
    );
    let status = find("- status code=OK");
    assert!(call < schema_message && schema_message < dictionary && dictionary < batch);
    assert!(batch < end && end < status && result < status, "{trace}");
    assert!(!trace.contains("problems="), "{trace}");
}
