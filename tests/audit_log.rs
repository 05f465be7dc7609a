//! The audit log's promises (src/log.rs), against the real binary: every call
//! that reached the server is written exactly once, a call whose client went
//! away included (as CANCELLED), and no value a client controls (a user name,
//! a dataset name) can forge a line or a field, in text or in JSON.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use hangar::auth::{base64_encode, Role, Users};
use hangar::json::Value;
use hangar::proto::{Empty, FlightServiceClient, HandshakeRequest};
use tonic::{Code, Request};

use common::{bounded, put, status_of, ticket, TestServer};

const ALICE: (&str, &str) = ("alice", "alice-secret-77");

/// A user name that, written raw, would end the line and start a forged one.
const FORGED: &str = "evil\n2026-01-01T00:00:00.000Z peer=1.2.3.4 user=admin rpc=DoAction";
const FORGED_TIME: &str = "2026-01-01T00:00:00.000Z";

/// `hangar serve --users FILE` (alice, admin) with `extra` arguments.
fn server_with_users(extra: &[&str]) -> TestServer {
    let builder = TestServer::builder();
    let users = builder.dir_path().join("users");
    let mut file = Users::default();
    file.add(ALICE.0, Role::Admin, ALICE.1).unwrap();
    file.save(&users).unwrap();
    builder.arg("--users").arg(&users).args(extra).start()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// A Handshake request with `authorization: <header>`.
fn handshake_request(
    header: &str,
) -> Request<futures::stream::Iter<std::vec::IntoIter<HandshakeRequest>>> {
    let mut request = Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request
        .metadata_mut()
        .insert("authorization", header.parse().unwrap());
    request
}

/// The text log lines of `rpc`.
fn rpc_lines<'a>(log: &'a str, rpc: &str) -> Vec<&'a str> {
    let field = format!(" rpc={rpc} ");
    log.lines().filter(|l| l.contains(&field)).collect()
}

/// Waits (bounded) until the server's stderr satisfies `done`. Async, unlike
/// `TestServer::wait_for_stderr`: the client's connection task must keep
/// running meanwhile, or the reset of an abandoned call is never sent.
async fn wait_for_log(server: &TestServer, what: &str, done: impl Fn(&str) -> bool) {
    if !common::wait_until(Duration::from_secs(10), async || done(&server.stderr())).await {
        panic!(
            "stderr never showed {what}\n--- stderr ---\n{}",
            server.stderr()
        );
    }
}

/// Stops the server (SIGTERM) and returns its whole log: any line a call
/// could still write has been written once the process is gone.
fn final_log(server: &mut TestServer) -> String {
    server.terminate();
    server.stderr()
}

fn wide_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
    ]))
}

fn wide(range: std::ops::Range<i64>) -> RecordBatch {
    let a: Vec<i64> = range.collect();
    let b: Vec<i64> = a.iter().map(|v| v.wrapping_mul(2_654_435_761)).collect();
    RecordBatch::try_new(
        wide_schema(),
        vec![
            Arc::new(Int64Array::from(a)) as ArrayRef,
            Arc::new(Int64Array::from(b)),
        ],
    )
    .unwrap()
}

// ------------------------------------------------- calls the client abandons

#[tokio::test]
async fn a_download_the_client_abandons_is_logged_once_as_cancelled() {
    bounded(async {
        let mut server = TestServer::start();
        let mut client = server.client().await;
        // 2M rows, 32 MB: far more than the server's queue, the HTTP/2
        // windows and the socket buffers hold, so the download cannot have
        // finished when the client leaves.
        const ROWS: i64 = 2_000_000;
        let batches: Vec<RecordBatch> = (0..ROWS)
            .step_by(250_000)
            .map(|start| wide(start..start + 250_000))
            .collect();
        put(&mut client, "big", wide_schema(), &batches)
            .await
            .unwrap();

        let mut stream = client.do_get(ticket("big")).await.unwrap();
        let first = stream.next().await.expect("a first batch").unwrap();
        assert!(first.num_rows() > 0);
        drop(stream); // the client goes away mid-download

        // Logged when the client left, not only when the server stops.
        wait_for_log(&server, "the DoGet line", |log| {
            !rpc_lines(log, "DoGet").is_empty()
        })
        .await;
        let log = final_log(&mut server);
        let lines = rpc_lines(&log, "DoGet");
        assert_eq!(lines.len(), 1, "one DoGet, one line:\n{log}");
        let line = lines[0];
        assert!(line.contains(" dataset=big "), "{line}");
        assert!(line.contains(" status=CANCELLED"), "{line}");
        let rows: u64 = line
            .split(" rows=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no rows in {line}"));
        assert!(rows < ROWS as u64, "the download was cut short: {line}");
    })
    .await
}

#[tokio::test]
async fn a_login_the_client_abandons_is_logged_once_as_cancelled() {
    bounded(async {
        let mut server = server_with_users(&[]);
        let channel = server.channel().await;
        let mut client = FlightServiceClient::new(channel.clone());
        // A second client on the same HTTP/2 connection.
        let mut probe = FlightServiceClient::new(channel);

        // The Handshake's password check takes tens of milliseconds. Its
        // request is sent first; the probe's reply, on the same connection,
        // then proves the server has taken the Handshake in, with no clock
        // involved. The client leaves right after.
        let mut login = Box::pin(client.handshake(handshake_request(&basic(ALICE.0, ALICE.1))));
        let probed = tokio::select! {
            biased;
            done = &mut login => panic!("the login finished before the probe: {done:?}"),
            probed = probe.list_actions(Request::new(Empty {})) => probed,
        };
        // Without credentials: refused at once, no password check.
        assert_eq!(probed.unwrap_err().code(), Code::Unauthenticated);
        // The client goes away mid-login. (Boxed, so this drops the call
        // itself; dropping a `tokio::pin!`ned one would drop only a reference.)
        drop(login);

        wait_for_log(&server, "the Handshake line", |log| {
            !rpc_lines(log, "Handshake").is_empty()
        })
        .await;
        let log = final_log(&mut server);
        let lines = rpc_lines(&log, "Handshake");
        assert_eq!(lines.len(), 1, "one Handshake, one line:\n{log}");
        let line = lines[0];
        assert!(line.contains(" status=CANCELLED"), "{line}");
        assert!(line.contains(" user=- "), "no login happened: {line}");
        assert!(line.contains(" tried_user=\"alice\""), "{line}");
    })
    .await
}

// ------------------------------------------------------------- log forgery

#[tokio::test]
async fn a_user_name_with_a_newline_cannot_forge_a_text_line() {
    bounded(async {
        let mut server = server_with_users(&[]);
        let mut client = FlightServiceClient::new(server.channel().await);
        // The whole forged line as a BasicAuth user name, and a Basic header
        // (whose user name ends at the first ':') with CR LF in it.
        let status = common::handshake_payload(&mut client, FORGED, "x")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status =
            common::list_with_header(&mut client, &basic("evil\r\n2026-01-01T00", "00:00.000Z x"))
                .await
                .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        let log = final_log(&mut server);
        let handshakes = rpc_lines(&log, "Handshake");
        assert_eq!(handshakes.len(), 1, "{log}");
        // The newline is the two characters '\' 'n', inside the quotes.
        let escaped =
            r#" tried_user="evil\n2026-01-01T00:00:00.000Z peer=1.2.3.4 user=admin rpc=DoAction""#;
        assert!(handshakes[0].contains(escaped), "{log}");
        assert!(handshakes[0].contains(" user=- "), "{log}");
        let lists = rpc_lines(&log, "ListFlights");
        assert_eq!(lists.len(), 1, "{log}");
        assert!(
            lists[0].contains(r#" tried_user="evil\r\n2026-01-01T00""#),
            "{log}"
        );
        assert!(
            !log.lines().any(|l| l.starts_with("2026-01-01T00")),
            "a forged line:\n{log}"
        );
        // Two calls, two lines: the forged name's `rpc=DoAction` is inside
        // a quoted value, never a field of its own.
        assert_eq!(log.lines().filter(|l| l.contains(" rpc=")).count(), 2);
        assert!(rpc_lines(&log, "DoAction").is_empty(), "{log}");
    })
    .await
}

#[tokio::test]
async fn a_user_name_with_a_newline_stays_inside_one_json_line() {
    bounded(async {
        let mut server = server_with_users(&["--log-format", "json"]);
        let mut client = FlightServiceClient::new(server.channel().await);
        let status = common::handshake_payload(&mut client, FORGED, "x")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let crlf = "evil\r\n2026-01-01T00";
        let status = common::list_with_header(&mut client, &basic(crlf, "00:00.000Z x"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        let log = final_log(&mut server);
        let mut calls = Vec::new();
        for line in log.lines() {
            assert!(!line.starts_with(FORGED_TIME), "a forged line:\n{log}");
            let value = Value::parse(line)
                .unwrap_or_else(|e| panic!("not one JSON value ({e}): {line}\n{log}"));
            assert!(value.as_object().is_some(), "not an object: {line}");
            if let Some(rpc) = value.get("rpc").and_then(Value::as_str) {
                calls.push((rpc.to_string(), value.clone()));
            }
        }
        assert_eq!(calls.len(), 2, "two calls, two lines:\n{log}");
        let (rpc, handshake) = &calls[0];
        assert_eq!(rpc, "Handshake", "{log}");
        assert_eq!(
            handshake.get("tried_user").and_then(Value::as_str),
            Some(FORGED),
            "the raw name, newline and all"
        );
        assert_eq!(handshake.get("user"), Some(&Value::Null));
        assert_eq!(
            handshake.get("status").and_then(Value::as_str),
            Some("UNAUTHENTICATED")
        );
        let (rpc, list) = &calls[1];
        assert_eq!(rpc, "ListFlights", "{log}");
        assert_eq!(list.get("tried_user").and_then(Value::as_str), Some(crlf));
    })
    .await
}

// ---------------------------------------------------- dataset names in lines

#[tokio::test]
async fn dataset_names_with_spaces_and_quotes_are_quoted_in_the_text_log() {
    bounded(async {
        let mut server = TestServer::start();
        let mut client = server.client().await;
        let odd = r#"my "odd" set"#;
        put(&mut client, odd, wide_schema(), &[wide(0..10)])
            .await
            .unwrap();
        let mut stream = client.do_get(ticket(odd)).await.unwrap();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, 10);
        // A missing name that reads like fields of the line.
        let posing = r#"x" rows=999 status=OK dataset="y"#;
        let status = status_of(client.do_get(ticket(posing)).await.unwrap_err());
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        // A name the server refuses (a control character) is still one line.
        let refused = format!("x\n{FORGED_TIME} rpc=DoGet");
        let status = status_of(client.do_get(ticket(&refused)).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

        let log = final_log(&mut server);
        let gets = rpc_lines(&log, "DoGet");
        assert_eq!(gets.len(), 3, "three DoGets, three lines:\n{log}");
        assert!(
            gets[0].contains(r#" dataset="my \"odd\" set" rows=10 "#),
            "{}",
            gets[0]
        );
        assert!(gets[0].ends_with(" status=OK"), "{}", gets[0]);
        let quoted = r#" dataset="x\" rows=999 status=OK dataset=\"y" rows=0 "#;
        assert!(gets[1].contains(quoted), "{}", gets[1]);
        // Outside the quoted name, one status field, the real one.
        // (The error message names the dataset too, quoted, after status.)
        let rest = gets[1].replacen(quoted, " ", 1);
        let rest = rest.split(" message=").next().unwrap();
        assert_eq!(rest.matches("status=").count(), 1, "{}", gets[1]);
        assert!(rest.contains(" status=NOT_FOUND"), "{}", gets[1]);
        assert!(gets[2].contains(" status=INVALID_ARGUMENT"), "{}", gets[2]);
        assert!(
            !log.lines().any(|l| l.starts_with(FORGED_TIME)),
            "a forged line:\n{log}"
        );
    })
    .await
}
