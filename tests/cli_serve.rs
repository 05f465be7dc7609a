//! The `hangar` command line and the `serve` process: help, version, usage
//! errors and their exit codes, the one stdout line, signals and graceful
//! shutdown, temporary-file sweeping, log formats and the compression flag.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_flight::FlightClient;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{SinkExt, TryStreamExt};
use prost::bytes::Bytes;

use common::{bounded, get, path, put, run_hangar, status_of, wait_until, TestServer};
use hangar::json::Value;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
    let n: Vec<i64> = range.collect();
    let s: Vec<String> = n.iter().map(|v| format!("value {v}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(n)) as ArrayRef,
            Arc::new(StringArray::from(s)),
        ],
    )
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One successful RPC: proves the server is serving (its store is open and its
/// signal handlers are installed, both of which happen before serving).
async fn ping(client: &mut FlightClient) {
    client
        .list_flights(Bytes::new())
        .await
        .expect("ListFlights")
        .try_collect::<Vec<_>>()
        .await
        .expect("ListFlights stream");
}

// ------------------------------------------------------------ help & version

#[test]
fn top_level_help_exits_0_and_lists_the_serve_command() {
    for flag in ["--help", "-h"] {
        let out = run_hangar([flag]);
        assert_eq!(out.status.code(), Some(0), "hangar {flag}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("serve"), "hangar {flag}: {stdout}");
        assert!(stdout.contains("--version"), "hangar {flag}: {stdout}");
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn serve_help_exits_0_and_mentions_every_flag() {
    for flag in ["--help", "-h"] {
        let out = run_hangar(["serve", flag]);
        assert_eq!(out.status.code(), Some(0), "hangar serve {flag}");
        let stdout = text(&out.stdout);
        for option in [
            "--listen",
            "--repo",
            "--compression",
            "--max-message-size",
            "--log-format",
            "--memory-limit",
            "--help",
        ] {
            assert!(stdout.contains(option), "{option} missing in:\n{stdout}");
        }
        for value in ["snappy", "zstd", "none", "text", "json"] {
            assert!(stdout.contains(value), "{value} missing in:\n{stdout}");
        }
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn version_prints_the_crate_version() {
    for flag in ["--version", "-V"] {
        let out = run_hangar([flag]);
        assert_eq!(out.status.code(), Some(0), "hangar {flag}");
        assert_eq!(
            text(&out.stdout),
            format!("hangar {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

// ------------------------------------------------------------ usage errors

/// Exit code 2, nothing on stdout, and a one-line `hangar: ...` error naming
/// `needle`; the only other line allowed is the "Try 'hangar --help'" hint.
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run_hangar(args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "hangar {args:?}: exit status {:?}, stderr {stderr:?}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "hangar {args:?} printed on stdout: {:?}",
        text(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "hangar {args:?}: empty stderr");
    assert!(
        lines[0].starts_with("hangar: ") && lines[0].contains(needle),
        "hangar {args:?}: first stderr line should name {needle:?}: {stderr:?}"
    );
    for line in &lines[1..] {
        assert!(
            line.contains("--help"),
            "hangar {args:?}: the error must be one line (plus a --help hint): {stderr:?}"
        );
    }
    assert!(lines.len() <= 2, "hangar {args:?}: {stderr:?}");
}

#[test]
fn unknown_serve_flag_exits_2_naming_the_flag() {
    assert_usage_error(&["serve", "--bogus"], "--bogus");
}

#[test]
fn unknown_compression_exits_2_naming_the_flag() {
    assert_usage_error(&["serve", "--compression", "lz9"], "--compression");
    assert_usage_error(&["serve", "--compression", "lz9"], "lz9");
}

#[test]
fn unparsable_listen_address_exits_2_naming_the_flag() {
    assert_usage_error(&["serve", "--listen", "nonsense"], "--listen");
    assert_usage_error(&["serve", "--listen", "127.0.0.1"], "--listen");
}

#[test]
fn other_bad_serve_values_exit_2_naming_the_flag() {
    assert_usage_error(
        &["serve", "--max-message-size", "lots"],
        "--max-message-size",
    );
    assert_usage_error(
        &["serve", "--max-message-size", "512"],
        "--max-message-size",
    );
    assert_usage_error(&["serve", "--log-format", "xml"], "--log-format");
    assert_usage_error(&["serve", "--memory-limit", "lots"], "--memory-limit");
    assert_usage_error(&["serve", "--memory-limit", "256MB/s"], "unknown unit");
    assert_usage_error(&["serve", "--memory-limit", "64KiB"], "--memory-limit");
    assert_usage_error(&["serve", "--repo"], "--repo");
    assert_usage_error(&["serve", "stray"], "stray");
}

#[test]
fn missing_or_unknown_command_exits_2() {
    assert_usage_error(&[], "command");
    assert_usage_error(&["frobnicate"], "frobnicate");
    assert_usage_error(&["--bogus"], "--bogus");
}

// ------------------------------------------------------------ startup failures

#[test]
fn unusable_repo_exits_1_without_the_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let repo = file.join("repo");
    let out = common::run_hangar_with(
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            repo.to_str().unwrap(),
        ],
        &[],
        Some(dir.path()),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("a-file"),
        "the error names the repo: {stderr}"
    );
    // Scripts wait for the line to know the server is up: a server that
    // cannot serve must never print it.
    assert!(
        !text(&out.stdout).contains("listening"),
        "printed the listening line although it could not serve: {:?}",
        text(&out.stdout)
    );
}

#[test]
fn busy_listen_address_exits_1_without_the_listening_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_hangar_with(
        ["serve", "--listen", &addr, "--repo", "repo"],
        &[],
        Some(dir.path()),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&addr),
        "the error names the address: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));
}

// ------------------------------------------------------------ the stdout line

#[tokio::test]
async fn stdout_is_exactly_the_one_listening_line() {
    bounded(async {
        let mut server = TestServer::start();
        let line = server.first_line.clone();
        let port = line
            .strip_prefix("hangar listening on grpc://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let port: u16 = port.parse().expect("a port number ends the line");
        assert_ne!(port, 0, "the real port, not the requested 0");
        assert_eq!(port, server.addr.port());

        // Calls log on stderr, never on stdout.
        let mut client = server.client().await;
        put(&mut client, "d", schema(), &[numbers(0..10)])
            .await
            .unwrap();
        get(&mut client, "d").await.unwrap();
        let _ = client.get_flight_info(path("missing")).await.unwrap_err();
        drop(client);

        let status = server.terminate();
        assert!(status.success(), "exit status {status:?}");
        assert!(
            server.stdout_rest().is_empty(),
            "more on stdout: {:?}",
            server.stdout_rest()
        );
    })
    .await
}

// ------------------------------------------------------------ signals

#[tokio::test]
async fn sigterm_and_sigint_stop_an_idle_server_with_exit_0() {
    bounded(async {
        for signal in ["TERM", "INT"] {
            let mut server = TestServer::start();
            let mut client = server.client().await;
            put(&mut client, "d", schema(), &[numbers(0..10)])
                .await
                .unwrap();
            ping(&mut client).await;
            server.signal(signal);
            let status = server.wait_exit();
            assert_eq!(status.code(), Some(0), "SIG{signal}: {status:?}");
            assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
            assert_eq!(server.repo_entries(), ["d"]);
            let log = server.stderr();
            assert!(log.contains("stopped"), "SIG{signal}: {log}");
        }
    })
    .await
}

/// Bytes a fresh pipe holds before a write blocks: 16 pages on Linux.
fn pipe_capacity() -> usize {
    let page = std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|out| text(&out.stdout).trim().parse::<usize>().ok())
        .unwrap_or(4096);
    16 * page
}

#[test]
fn sigterm_right_after_the_listening_line_exits_0() {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    for signal in ["TERM", "INT"] {
        // Scripts send SIGTERM as soon as they have seen the line, so the
        // server must handle it from then on. To make the check independent
        // of timing, the server's stderr is a pipe we filled to the brim: its
        // first log line after the announcement blocks until we drain the pipe,
        // and we signal it while it is held there. A server whose handlers are
        // installed before it announces stops with exit 0; one that installs
        // them later is killed by the signal.
        let (mut err_reader, mut err_writer) = std::io::pipe().expect("a pipe");
        let capacity = pipe_capacity();
        let (filled_tx, filled_rx) = mpsc::channel();
        let filler = std::thread::spawn(move || {
            err_writer.write_all(&vec![b'#'; capacity]).unwrap();
            let _ = filled_tx.send(());
            err_writer
        });
        filled_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("filling the stderr pipe blocked: unexpected pipe capacity");
        let err_writer = filler.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(common::hangar_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--repo", "repo"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_writer)
            .spawn()
            .expect("spawning hangar");
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let line = match line_rx.recv_timeout(common::STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = common::wait_timeout(&mut child, common::EXIT_TIMEOUT);
                panic!("no listening line (did the server log before announcing?)");
            }
        };
        assert!(line.starts_with("hangar listening on "), "{line:?}");

        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(sent.success());
        // Now let the server write its logs.
        let drain = std::thread::spawn(move || {
            let mut log = Vec::new();
            let _ = err_reader.read_to_end(&mut log);
            log
        });
        let status = match common::wait_timeout(&mut child, common::EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = common::wait_timeout(&mut child, common::EXIT_TIMEOUT);
                panic!("the server did not exit after SIG{signal}");
            }
        };
        let log = drain.join().unwrap();
        let log = text(&log[capacity.min(log.len())..]);
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal} right after the listening line killed the server instead of \
             stopping it gracefully: {status:?}\n--- stderr ---\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_upload_exits_0_and_leaves_no_temp_file() {
    bounded(async {
        let mut server = TestServer::start();
        let mut client = server.client().await;
        let old = [numbers(0..100)];
        put(&mut client, "d", schema(), &old).await.unwrap();
        let old_len = std::fs::metadata(server.repo().join("d")).unwrap().len();

        // An upload that has sent its schema and a batch, and stays open.
        let messages = common::encode("d", schema(), &[numbers(0..50_000)]).await;
        let (mut tx, rx) = futures::channel::mpsc::unbounded();
        for m in messages {
            tx.send(Ok(m)).await.unwrap();
        }
        let mut uploader = server.client().await;
        let replies = uploader.do_put(rx).await.expect("DoPut starts");
        let repo = server.repo().to_path_buf();
        assert!(
            wait_until(Duration::from_secs(10), async || {
                !common::temp_files(&repo).is_empty()
            })
            .await,
            "the upload's temporary file never appeared"
        );

        let status = tokio::task::block_in_place(|| server.terminate());
        assert_eq!(status.code(), Some(0), "{status:?}\n{}", server.stderr());
        assert!(
            server.temp_files().is_empty(),
            "temporary files left: {:?}",
            server.temp_files()
        );
        // The unfinished upload did not replace the dataset.
        assert_eq!(server.repo_entries(), ["d"]);
        assert_eq!(
            std::fs::metadata(server.repo().join("d")).unwrap().len(),
            old_len
        );
        drop((tx, replies));
    })
    .await
}

// ------------------------------------------------------------ startup sweep

#[tokio::test]
async fn leftover_temp_file_in_the_repo_is_removed_at_startup() {
    bounded(async {
        let builder = TestServer::builder();
        let repo = builder.repo_path().to_path_buf();
        // pid 0 never names a running server: an orphan from a crash.
        std::fs::write(repo.join(".hangar-tmp-0-0-x"), b"partial upload").unwrap();
        std::fs::write(repo.join(".keep"), b"not ours").unwrap();
        let server = builder.start();
        let mut client = server.client().await;
        ping(&mut client).await;
        let entries = server.repo_entries();
        assert!(
            !entries.contains(&".hangar-tmp-0-0-x".to_string()),
            "{entries:?}"
        );
        assert!(entries.contains(&".keep".to_string()), "{entries:?}");
        assert!(server.temp_files().is_empty(), "{entries:?}");
    })
    .await
}

// ------------------------------------------------------------ logs

#[tokio::test]
async fn text_log_has_one_line_per_rpc() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        ping(&mut client).await;
        put(&mut client, "d", schema(), &[numbers(0..7)])
            .await
            .unwrap();
        get(&mut client, "d").await.unwrap();
        let _ = client.get_flight_info(path("missing")).await.unwrap_err();
        let log = server.wait_for_stderr("four RPC lines", |log| {
            log.lines().filter(|l| l.contains(" rpc=")).count() >= 4
        });
        let rpc_lines: Vec<&str> = log.lines().filter(|l| l.contains(" rpc=")).collect();
        assert_eq!(rpc_lines.len(), 4, "{log}");
        let find = |rpc: &str| {
            rpc_lines
                .iter()
                .find(|l| l.contains(&format!(" rpc={rpc} ")))
                .unwrap_or_else(|| panic!("no {rpc} line in {log}"))
                .to_string()
        };
        assert!(find("ListFlights").contains("status=OK"));
        let put_line = find("DoPut");
        assert!(put_line.contains("dataset=d "), "{put_line}");
        assert!(put_line.contains("rows=7 "), "{put_line}");
        assert!(put_line.contains("status=OK"), "{put_line}");
        let get_line = find("DoGet");
        assert!(get_line.contains("rows=7 "), "{get_line}");
        assert!(find("GetFlightInfo").contains("status=NOT_FOUND"));
    })
    .await
}

#[tokio::test]
async fn json_log_format_writes_every_stderr_line_as_json_with_the_rpc_fields() {
    bounded(async {
        let server = TestServer::start_with_args(["--log-format", "json"]);
        let mut client = server.client().await;
        client.handshake(Bytes::new()).await.unwrap();
        ping(&mut client).await;
        put(&mut client, "d", schema(), &[numbers(0..5)])
            .await
            .unwrap();
        get(&mut client, "d").await.unwrap();
        // Awkward names must still give valid JSON.
        let weird = "we\"ird \u{e9}\t name";
        let status = status_of(client.get_flight_info(path(weird)).await.unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let quoted = "quote\"d";
        let status = status_of(client.get_flight_info(path(quoted)).await.unwrap_err());
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        let _: Vec<_> = client
            .list_actions()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();

        let log = server.wait_for_stderr("seven RPC lines", |log| {
            log.lines().filter(|l| l.contains("\"rpc\":")).count() >= 7
        });
        let mut rpcs = Vec::new();
        for line in log.lines() {
            // hangar's reader is strict: one document, no trailing text, no
            // raw control characters, no duplicate keys.
            let value = Value::parse(line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            assert!(value.as_object().is_some(), "not a JSON object: {line}");
            let get = |key: &str| value.get(key);
            assert!(get("time").is_some(), "every line has a time: {line}");
            if get("rpc").is_none() {
                continue; // an event line (startup, shutdown)
            }
            for key in [
                "time", "peer", "rpc", "dataset", "rows", "bytes", "ms", "status",
            ] {
                assert!(get(key).is_some(), "{key} missing in {line}");
            }
            for key in ["rows", "bytes", "ms"] {
                assert!(get(key).and_then(Value::as_f64).is_some(), "{line}");
            }
            let peer = get("peer").unwrap().as_str().unwrap_or_default();
            assert!(peer.starts_with("127.0.0.1:"), "{line}");
            rpcs.push((
                get("rpc").unwrap().as_str().unwrap().to_string(),
                get("dataset").unwrap().as_str().map(str::to_string),
                get("rows").unwrap().as_f64().unwrap_or_default(),
                get("status").unwrap().as_str().unwrap().to_string(),
            ));
        }
        let find = |rpc: &str, dataset: Option<&str>| {
            rpcs.iter()
                .find(|(r, d, _, _)| r == rpc && d.as_deref() == dataset)
                .unwrap_or_else(|| panic!("no {rpc} {dataset:?} line in {rpcs:?}"))
                .clone()
        };
        assert_eq!(find("Handshake", None).3, "OK");
        assert_eq!(find("ListFlights", None).3, "OK");
        let put = find("DoPut", Some("d"));
        assert_eq!((put.2, put.3.as_str()), (5.0, "OK"));
        let get = find("DoGet", Some("d"));
        assert_eq!((get.2, get.3.as_str()), (5.0, "OK"));
        assert_eq!(find("GetFlightInfo", Some(quoted)).3, "NOT_FOUND");
        assert_eq!(find("ListActions", None).3, "OK");
        assert!(
            rpcs.iter()
                .any(|(r, _, _, s)| r == "GetFlightInfo" && s == "INVALID_ARGUMENT"),
            "{rpcs:?}"
        );
    })
    .await
}

// ------------------------------------------------------------ compression

#[tokio::test]
async fn compression_flag_sets_the_parquet_codec_of_uploads() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    bounded(async {
        for (flag, expected) in [
            (None, "SNAPPY"),
            (Some("snappy"), "SNAPPY"),
            (Some("zstd"), "ZSTD"),
            (Some("none"), "UNCOMPRESSED"),
        ] {
            let server = match flag {
                Some(codec) => TestServer::start_with_args(["--compression", codec]),
                None => TestServer::start(),
            };
            let mut client = server.client().await;
            put(&mut client, "d", schema(), &[numbers(0..1000)])
                .await
                .unwrap();
            let file = std::fs::File::open(server.repo().join("d")).unwrap();
            let reader = SerializedFileReader::new(file).expect("the dataset is Parquet");
            let metadata = reader.metadata();
            assert!(metadata.num_row_groups() >= 1);
            for column in metadata.row_group(0).columns() {
                let codec = match column.compression() {
                    Compression::SNAPPY => "SNAPPY",
                    Compression::ZSTD(_) => "ZSTD",
                    Compression::UNCOMPRESSED => "UNCOMPRESSED",
                    _ => "other",
                };
                assert_eq!(codec, expected, "--compression {flag:?}");
            }
            let (_, got) = get(&mut client, "d").await.unwrap();
            assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 1000);
        }
    })
    .await
}
