//! Connection lines: every connection that ends without carrying a call is
//! logged once, with its peer, lifetime and a reason a person can act on, and
//! a flood of identical refusals from one peer folds into a summary. Real
//! server, real clients (tonic, raw TCP), loopback only, every wait bounded.
//!
//! The client-certificate refusals (none, another CA, expired) are pinned with
//! pyarrow clients in tests/python/test_connections.py.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_flight::FlightClient;
use common::{certificates, TestServer};
use futures::TryStreamExt;
use hangar::json::Value;

/// How long a raw client waits for the server to close on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connects, sends `bytes`, and reads until the server closes (bounded);
/// returns what the server sent.
fn send_and_wait_for_close(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.addr).expect("connecting");
    stream.set_read_timeout(Some(CLOSE_TIMEOUT)).unwrap();
    stream.write_all(bytes).expect("sending");
    let mut reply = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return reply,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return reply,
            Err(e) => panic!(
                "the server did not close the connection within {:?}: {e}\n--- stderr ---\n{}",
                started.elapsed(),
                server.stderr()
            ),
        }
    }
}

/// The server's connection lines (text format), in order.
fn connection_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            line.split(' ')
                .nth(1)
                .is_some_and(|word| word.starts_with("connection"))
        })
        .map(str::to_string)
        .collect()
}

/// Waits for the first connection line whose reason is `end` and returns it.
fn wait_for_end(server: &TestServer, end: &str) -> String {
    let wanted = format!(" end=\"{end}\"");
    let log = server.wait_for_stderr(&format!("a connection line ending {wanted}"), |log| {
        log.lines().any(|l| l.contains(&wanted))
    });
    log.lines()
        .find(|l| l.contains(&wanted))
        .expect("just seen")
        .to_string()
}

/// `TIME connection peer=127.0.0.1:PORT ms=N calls=0 bytes_in=0 bytes_out=0 end="..."`
fn assert_refusal_line(line: &str) {
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    assert_eq!(fields[1], "connection", "{line}");
    assert!(fields[2].starts_with("peer=127.0.0.1:"), "{line}");
    assert!(fields[3].starts_with("ms="), "{line}");
    assert_eq!(fields[4], "calls=0", "{line}");
}

/// One ListFlights call, read to the end.
async fn list(client: &mut FlightClient) {
    let flights = client.list_flights("").await.expect("ListFlights");
    let flights: Vec<_> = flights.try_collect().await.expect("ListFlights");
    assert!(flights.is_empty());
}

fn tls_server(dir: &Path, extra: &[&str]) -> TestServer {
    certificates(dir);
    let pem = |name: &str| dir.join(name).to_str().unwrap().to_string();
    TestServer::builder()
        .args([
            "--tls-cert",
            &pem("server.pem"),
            "--tls-key",
            &pem("server.key"),
        ])
        .args(extra)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_grpc_client_on_a_tls_port_is_logged() {
    let certs = tempfile::tempdir().unwrap();
    let server = tls_server(certs.path(), &[]);
    // tonic's connect may succeed before the server has read a byte; the
    // first call then fails.
    let refused = common::within(Duration::from_secs(20), "a plaintext client", async {
        let channel = common::connect(server.addr).await?;
        let mut client = FlightClient::new(channel);
        client
            .list_flights("")
            .await
            .map(drop)
            .map_err(|e| e.to_string())?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await;
    assert!(
        refused.is_err(),
        "a plaintext client was served on a TLS port"
    );
    let line = wait_for_end(&server, "tls: client spoke plaintext to a TLS port");
    assert_refusal_line(&line);
}

#[test]
fn garbage_on_the_plaintext_port_is_not_an_http2_client() {
    let server = TestServer::start();
    send_and_wait_for_close(&server, b"HELO hangar\r\n\r\nthis is not HTTP/2 at all\r\n");
    let line = wait_for_end(&server, "http2: not an HTTP/2 client (bad preface)");
    assert_refusal_line(&line);
}

#[test]
fn http1_and_tls_on_the_plaintext_port_are_named() {
    let server = TestServer::start();
    send_and_wait_for_close(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for_end(&server, "http2: client spoke HTTP/1, not HTTP/2 (gRPC)");
    // The start of a TLS ClientHello record.
    send_and_wait_for_close(&server, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
    wait_for_end(&server, "http2: client spoke TLS to a plaintext port");
}

#[test]
fn http2_protocol_error_is_logged_with_its_code() {
    let server = TestServer::start();
    // A SETTINGS frame must be a multiple of 6 bytes long (RFC 9113, 6.5);
    // h2 answers a GOAWAY with PROTOCOL_ERROR.
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&[0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
    send_and_wait_for_close(&server, &bytes);
    let log = server.wait_for_stderr("the protocol error line", |log| {
        log.contains("end=\"http2: protocol error: ")
    });
    let line = connection_lines(&log).pop().expect("a connection line");
    assert_refusal_line(&line);
    assert!(
        line.ends_with(
            "end=\"http2: protocol error: PROTOCOL_ERROR: unspecific protocol error detected\""
        ),
        "{line}"
    );
}

#[test]
fn silent_connection_is_closed_and_logged_at_the_handshake_timeout() {
    let server = TestServer::start_with_args(["--handshake-timeout", "1s"]);
    let started = Instant::now();
    send_and_wait_for_close(&server, b"");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a silent connection stayed open {:?}",
        started.elapsed()
    );
    let line = wait_for_end(&server, "http2: no preface within 1 s");
    assert_refusal_line(&line);
    let ms: f64 = line
        .split(' ')
        .find_map(|f| f.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .expect("an ms field");
    assert!(ms >= 1000.0, "{line}");
}

#[test]
fn silent_connection_on_a_tls_port_is_closed_at_the_handshake_timeout() {
    let certs = tempfile::tempdir().unwrap();
    let server = tls_server(certs.path(), &["--handshake-timeout", "1s"]);
    send_and_wait_for_close(&server, b"");
    assert_refusal_line(&wait_for_end(&server, "tls: no handshake within 1 s"));
}

#[test]
fn connection_over_max_connections_is_refused_and_logged() {
    let server = TestServer::start_with_args(["--max-connections", "1"]);
    // The first connection holds the only slot (it sent its preface, so it
    // is a live HTTP/2 connection).
    let mut first = TcpStream::connect(server.addr).unwrap();
    first.write_all(PREFACE).unwrap();
    first.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).unwrap();
    // The server's SETTINGS arrive once it serves the first connection.
    first.set_read_timeout(Some(CLOSE_TIMEOUT)).unwrap();
    let mut settings = [0u8; 9];
    first
        .read_exact(&mut settings)
        .expect("the server's SETTINGS");
    send_and_wait_for_close(&server, PREFACE);
    let line = wait_for_end(&server, "refused: --max-connections 1 reached");
    assert_refusal_line(&line);
    drop(first);
}

#[test]
fn a_flood_from_one_peer_is_one_line_and_a_summary() {
    let mut server = TestServer::start();
    for _ in 0..200 {
        send_and_wait_for_close(&server, b"garbage garbage garbage!");
    }
    // Summaries of open windows are written at shutdown.
    assert!(server.terminate().success());
    let log = server.stderr();
    let lines = connection_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert_refusal_line(&lines[0]);
    assert!(
        lines[0].ends_with(" end=\"http2: not an HTTP/2 client (bad preface)\""),
        "{log}"
    );
    let summary = lines[1].split_once(' ').expect("a timestamp").1;
    let (head, tail) = summary
        .split_once(" … and 199 more from 127.0.0.1 in ")
        .unwrap_or_else(|| panic!("no summary of 199 more: {log}"));
    assert_eq!(
        head,
        "connection-summary peer=127.0.0.1 end=\"http2: not an HTTP/2 client (bad preface)\""
    );
    assert!(tail.ends_with(" s"), "{summary}");
}

#[test]
fn json_connection_lines_carry_an_event_key() {
    let mut server = TestServer::start_with_args(["--log-format", "json"]);
    for _ in 0..3 {
        send_and_wait_for_close(&server, b"garbage garbage garbage!");
    }
    assert!(server.terminate().success());
    let log = server.stderr();
    let events: Vec<Value> = log
        .lines()
        .map(|l| Value::parse(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|v| {
            v.get("event")
                .and_then(Value::as_str)
                .is_some_and(|e| e.starts_with("connection"))
        })
        .collect();
    assert_eq!(events.len(), 2, "{log}");
    let line = &events[0];
    assert_eq!(
        line.get("event").and_then(Value::as_str),
        Some("connection")
    );
    assert!(line
        .get("peer")
        .and_then(Value::as_str)
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert_eq!(line.get("calls").and_then(Value::as_u64), Some(0));
    assert_eq!(
        line.get("end").and_then(Value::as_str),
        Some("http2: not an HTTP/2 client (bad preface)")
    );
    let summary = &events[1];
    assert_eq!(
        summary.get("event").and_then(Value::as_str),
        Some("connection-summary")
    );
    assert_eq!(summary.get("more").and_then(Value::as_u64), Some(2));
    assert_eq!(
        summary.get("peer").and_then(Value::as_str),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_connections_log_nothing_unless_asked_then_open_and_end() {
    let quiet = TestServer::start();
    let mut client = quiet.client().await;
    list(&mut client).await;
    drop(client);
    let mut quiet = quiet;
    assert!(quiet.terminate().success());
    let log = quiet.stderr();
    assert!(log.contains("rpc=ListFlights"), "{log}");
    assert_eq!(connection_lines(&log), Vec::<String>::new(), "{log}");

    let verbose = TestServer::start_with_args(["--log-connections"]);
    let mut client = verbose.client().await;
    list(&mut client).await;
    list(&mut client).await;
    drop(client);
    let log = verbose.wait_for_stderr("the connection's end line", |log| {
        log.lines().any(|l| l.contains(" connection peer="))
    });
    let lines = connection_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(" connection-open peer=127.0.0.1:") && lines[0].ends_with(" tls=no"),
        "{log}"
    );
    let end = &lines[1];
    assert!(end.contains(" calls=2 "), "{end}");
    assert!(end.ends_with(" end=\"closed by the client\""), "{end}");
    let bytes_in: u64 = end
        .split(' ')
        .find_map(|f| f.strip_prefix("bytes_in="))
        .and_then(|n| n.parse().ok())
        .expect("bytes_in");
    assert!(bytes_in > PREFACE.len() as u64, "{end}");
}
