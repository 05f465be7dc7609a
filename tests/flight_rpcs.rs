//! Every Flight RPC against a real `hangar serve` process, through arrow-flight's
//! `FlightClient`: the happy paths, every documented error with its status code,
//! data fidelity (dictionaries, nested types, metadata, empty and large
//! datasets) and the concurrency guarantees (atomic overwrite, readers keep the
//! version they opened).

mod common;

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::types::{Int32Type, Int8Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use prost::bytes::Bytes;
use tonic::Code;

use common::{
    assert_same_rows, bounded, get, metadata, path, put, put_flight_data, status_of, ticket,
    TestServer,
};

// ---------------------------------------------------------------- test data

fn numbers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

/// Rows `range` as (n, "v{n}"), every seventh string null.
fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
    let n: Vec<i64> = range.collect();
    let s: Vec<Option<String>> = n
        .iter()
        .map(|v| (v % 7 != 3).then(|| format!("v{v}")))
        .collect();
    RecordBatch::try_new(
        numbers_schema(),
        vec![
            Arc::new(Int64Array::from(n)) as ArrayRef,
            Arc::new(StringArray::from(s)),
        ],
    )
    .unwrap()
}

fn other_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]))
}

fn words(words: &[&str]) -> RecordBatch {
    RecordBatch::try_new(
        other_schema(),
        vec![Arc::new(StringArray::from(words.to_vec())) as ArrayRef],
    )
    .unwrap()
}

async fn put_ok(client: &mut FlightClient, name: &str, batches: &[RecordBatch]) -> u64 {
    let schema = batches[0].schema();
    let summary = put(client, name, schema, batches)
        .await
        .unwrap_or_else(|s| panic!("DoPut {name}: {s:?}"));
    summary.bytes
}

async fn get_ok(client: &mut FlightClient, name: &str) -> (SchemaRef, Vec<RecordBatch>) {
    get(client, name)
        .await
        .unwrap_or_else(|s| panic!("DoGet {name}: {s:?}"))
}

fn file_len(server: &TestServer, name: &str) -> u64 {
    std::fs::metadata(server.repo().join(name))
        .unwrap_or_else(|e| panic!("dataset file {name}: {e}"))
        .len()
}

fn assert_status(status: &tonic::Status, code: Code, needle: &str, what: &str) {
    assert_eq!(
        status.code(),
        code,
        "{what}: expected {code:?}, got {status:?}"
    );
    assert!(
        status.message().contains(needle),
        "{what}: message {:?} should mention {needle:?}",
        status.message()
    );
}

async fn list(client: &mut FlightClient, prefix: &str) -> Vec<FlightInfo> {
    client
        .list_flights(Bytes::from(prefix.as_bytes().to_vec()))
        .await
        .map_err(status_of)
        .expect("ListFlights")
        .try_collect()
        .await
        .map_err(status_of)
        .expect("ListFlights stream")
}

fn names(infos: &[FlightInfo]) -> Vec<String> {
    infos
        .iter()
        .map(|i| {
            i.flight_descriptor
                .as_ref()
                .expect("descriptor")
                .path
                .join("/")
        })
        .collect()
}

/// The complete FlightInfo contract for dataset `name`.
fn check_flight_info(
    server: &TestServer,
    info: &FlightInfo,
    name: &str,
    schema: &Schema,
    rows: i64,
) {
    let descriptor = info.flight_descriptor.as_ref().expect("flight_descriptor");
    assert_eq!(descriptor.r#type, DescriptorType::Path as i32);
    assert_eq!(descriptor.path, vec![name.to_string()]);
    assert_eq!(info.total_records, rows, "total_records of {name}");
    assert_eq!(
        info.total_bytes as u64,
        file_len(server, name),
        "total_bytes of {name} is the file size"
    );
    assert_eq!(info.endpoint.len(), 1, "one endpoint");
    let endpoint = &info.endpoint[0];
    assert_eq!(
        endpoint.ticket.as_ref().expect("ticket").ticket,
        Bytes::from(name.as_bytes().to_vec()),
        "the ticket is the dataset name"
    );
    assert!(info.ordered);
    let decoded = info
        .clone()
        .try_decode_schema()
        .expect("FlightInfo.schema decodes");
    assert_eq!(&decoded, schema, "schema of {name}");
}

/// The error a DoPut gets, whether the call or its reply stream carries it.
async fn put_err(
    client: &mut FlightClient,
    messages: Vec<arrow_flight::FlightData>,
) -> tonic::Status {
    match put_flight_data(client, messages).await {
        Ok(results) => panic!("DoPut unexpectedly succeeded: {results:?}"),
        Err(status) => status,
    }
}

// ---------------------------------------------------------------- RPCs

#[tokio::test]
async fn handshake_returns_one_empty_response() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        // FlightClient itself fails if there is no response or a second one.
        let payload = client
            .handshake(Bytes::from_static(b"hello"))
            .await
            .expect("Handshake");
        assert!(payload.is_empty(), "payload {payload:?}");
    })
    .await
}

#[tokio::test]
async fn list_actions_lists_drop_dataset_with_a_description() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let actions: Vec<_> = client
            .list_actions()
            .await
            .expect("ListActions")
            .try_collect()
            .await
            .expect("ListActions stream");
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0].r#type, "drop_dataset");
        assert!(!actions[0].description.is_empty());
    })
    .await
}

#[tokio::test]
async fn put_replies_one_put_result_with_rows_and_file_size_json() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let batches = [numbers(0..100), numbers(100..250)];
        let messages = common::encode("d", numbers_schema(), &batches).await;
        let results = put_flight_data(&mut client, messages).await.expect("DoPut");
        assert_eq!(results.len(), 1, "one PutResult: {results:?}");
        let json = std::str::from_utf8(&results[0].app_metadata).unwrap();
        assert!(
            json.starts_with('{') && json.ends_with('}'),
            "JSON object: {json}"
        );
        let summary = common::parse_put_result(&results[0].app_metadata);
        assert_eq!(summary.rows, 250);
        assert_eq!(
            summary.bytes,
            file_len(&server, "d"),
            "bytes is the file size"
        );
    })
    .await
}

#[tokio::test]
async fn get_flight_info_describes_schema_rows_size_and_ticket() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "d", &[numbers(0..1000)]).await;
        let info = client
            .get_flight_info(path("d"))
            .await
            .expect("GetFlightInfo");
        check_flight_info(&server, &info, "d", &numbers_schema(), 1000);
    })
    .await
}

#[tokio::test]
async fn get_schema_returns_the_dataset_schema() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "d", &[numbers(0..10)]).await;
        let schema = client.get_schema(path("d")).await.expect("GetSchema");
        assert_eq!(schema, *numbers_schema());
    })
    .await
}

#[tokio::test]
async fn poll_flight_info_is_complete_and_carries_the_flight_info() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "d", &[numbers(0..42)]).await;
        let poll = client
            .poll_flight_info(path("d"))
            .await
            .expect("PollFlightInfo");
        assert!(
            poll.flight_descriptor.is_none(),
            "complete: no retry descriptor"
        );
        assert_eq!(poll.progress, Some(1.0));
        let info = poll.info.expect("PollInfo.info");
        check_flight_info(&server, &info, "d", &numbers_schema(), 42);
    })
    .await
}

#[tokio::test]
async fn list_flights_lists_every_dataset_sorted_with_full_info() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "zeta", &[numbers(0..3)]).await;
        put_ok(&mut client, "alpha", &[numbers(0..5)]).await;
        put_ok(&mut client, "mid", &[words(&["a", "b"])]).await;
        let infos = list(&mut client, "").await;
        assert_eq!(names(&infos), ["alpha", "mid", "zeta"]);
        check_flight_info(&server, &infos[0], "alpha", &numbers_schema(), 5);
        check_flight_info(&server, &infos[1], "mid", &other_schema(), 2);
        check_flight_info(&server, &infos[2], "zeta", &numbers_schema(), 3);
    })
    .await
}

#[tokio::test]
async fn list_flights_criteria_expression_is_a_name_prefix() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        for name in ["sales-2023", "sales-2024", "stock", "sale"] {
            put_ok(&mut client, name, &[numbers(0..2)]).await;
        }
        assert_eq!(
            names(&list(&mut client, "sales-").await),
            ["sales-2023", "sales-2024"]
        );
        assert_eq!(
            names(&list(&mut client, "sale").await),
            ["sale", "sales-2023", "sales-2024"]
        );
        assert_eq!(names(&list(&mut client, "stock").await), ["stock"]);
        assert!(list(&mut client, "nothing").await.is_empty());
        assert_eq!(list(&mut client, "").await.len(), 4);
    })
    .await
}

#[tokio::test]
async fn list_flights_on_an_empty_repo_is_empty() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        assert!(list(&mut client, "").await.is_empty());
    })
    .await
}

#[tokio::test]
async fn do_get_with_the_endpoint_ticket_streams_the_dataset() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let batches = [numbers(0..300_000)];
        put_ok(&mut client, "d", &batches).await;
        let info = client.get_flight_info(path("d")).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let stream = client.do_get(ticket).await.expect("DoGet");
        let got: Vec<RecordBatch> = stream.try_collect().await.expect("DoGet stream");
        assert_same_rows(&batches, &got);
    })
    .await
}

#[tokio::test]
async fn drop_dataset_deletes_it_and_returns_no_result_like_the_cookbook() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "doomed", &[numbers(0..3)]).await;
        put_ok(&mut client, "kept", &[numbers(0..3)]).await;
        let results: Vec<Bytes> = client
            .do_action(Action::new("drop_dataset", "doomed"))
            .await
            .expect("DoAction")
            .try_collect()
            .await
            .expect("DoAction stream");
        assert!(results.is_empty(), "{results:?}");
        assert!(!server.repo().join("doomed").exists());
        let status = status_of(client.get_flight_info(path("doomed")).await.unwrap_err());
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(names(&list(&mut client, "").await), ["kept"]);
        // Dropping it again: it is gone.
        let err = match client
            .do_action(Action::new("drop_dataset", "doomed"))
            .await
        {
            Err(err) => err,
            Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
        };
        assert_status(&status_of(err), Code::NotFound, "doomed", "second drop");
    })
    .await
}

#[tokio::test]
async fn unknown_action_is_unimplemented_listing_available_actions() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let err = match client.do_action(Action::new("explode", "d")).await {
            Err(err) => err,
            Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
        };
        let status = status_of(err);
        assert_status(
            &status,
            Code::Unimplemented,
            "drop_dataset",
            "unknown action",
        );
        assert!(status.message().contains("explode"), "{status:?}");
    })
    .await
}

#[tokio::test]
async fn do_exchange_is_unimplemented() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let messages = common::encode("d", numbers_schema(), &[numbers(0..3)]).await;
        let input = futures::stream::iter(messages.into_iter().map(Ok));
        let err = match client.do_exchange(input).await {
            Err(err) => err,
            Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
        };
        let status = status_of(err);
        assert_status(&status, Code::Unimplemented, "DoExchange", "DoExchange");
        // Nothing was stored by the attempt.
        assert!(
            server.repo_entries().is_empty(),
            "{:?}",
            server.repo_entries()
        );
    })
    .await
}

// ---------------------------------------------------------------- errors

/// Runs every RPC that reads or drops a dataset with `name` (all but DoPut) and
/// returns (rpc, status) for each; each must fail.
async fn every_rpc_with_name(
    client: &mut FlightClient,
    name: &str,
) -> Vec<(&'static str, tonic::Status)> {
    let mut out = Vec::new();
    let descriptor = path(name);
    out.push((
        "GetFlightInfo",
        status_of(
            client
                .get_flight_info(descriptor.clone())
                .await
                .unwrap_err(),
        ),
    ));
    out.push((
        "GetSchema",
        status_of(client.get_schema(descriptor.clone()).await.unwrap_err()),
    ));
    out.push((
        "PollFlightInfo",
        status_of(
            client
                .poll_flight_info(descriptor.clone())
                .await
                .unwrap_err(),
        ),
    ));
    out.push(("DoGet", get(client, name).await.unwrap_err()));
    let drop = match client
        .do_action(Action::new("drop_dataset", name.to_string()))
        .await
    {
        Err(err) => status_of(err),
        Ok(stream) => status_of(stream.try_collect::<Vec<_>>().await.unwrap_err()),
    };
    out.push(("DoAction drop_dataset", drop));
    out
}

#[tokio::test]
async fn invalid_names_are_invalid_argument_naming_the_rule_in_every_rpc() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let long = "x".repeat(256);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("a/b", "'/'"),
            ("../escape", "'/'"),
            ("/etc/passwd", "'/'"),
            ("a\\b", "'\\'"),
            ("a\0b", "NUL"),
            (".hidden", "start with '.'"),
            (".hangar-tmp-1-1-x", "start with '.'"),
            (&long, "255 bytes"),
            ("line\nbreak", "control characters"),
        ];
        for (name, rule) in cases {
            for (rpc, status) in every_rpc_with_name(&mut client, name).await {
                assert_status(
                    &status,
                    Code::InvalidArgument,
                    rule,
                    &format!("{rpc} {name:?}"),
                );
            }
            let messages = common::encode(name, numbers_schema(), &[numbers(0..3)]).await;
            let status = put_err(&mut client, messages).await;
            assert_status(
                &status,
                Code::InvalidArgument,
                rule,
                &format!("DoPut {name:?}"),
            );
        }
        // No rejected name left anything behind.
        assert!(
            server.repo_entries().is_empty(),
            "{:?}",
            server.repo_entries()
        );
    })
    .await
}

#[tokio::test]
async fn put_accepts_names_up_to_255_bytes() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        // The longest legal name, and one with multi-byte characters that is
        // 255 bytes long; both must be stored like any other name.
        let ascii = "y".repeat(255);
        let multibyte = format!("{}zzz", "é".repeat(126));
        assert_eq!(multibyte.len(), 255);
        for name in [&ascii, &multibyte] {
            let summary = put(&mut client, name, numbers_schema(), &[numbers(0..3)])
                .await
                .unwrap_or_else(|s| panic!("DoPut of a {}-byte name: {s:?}", name.len()));
            assert_eq!(summary.rows, 3);
            let (_, got) = get_ok(&mut client, name).await;
            assert_same_rows(&[numbers(0..3)], &got);
        }
        let mut want = vec![ascii.clone(), multibyte.clone()];
        want.sort();
        assert_eq!(names(&list(&mut client, "").await), want);
        assert_eq!(server.repo_entries(), want);
    })
    .await
}

#[tokio::test]
async fn non_ascii_names_are_legal() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let name = "données été 📦.parquet";
        put_ok(&mut client, name, &[numbers(0..5)]).await;
        let info = client.get_flight_info(path(name)).await.unwrap();
        check_flight_info(&server, &info, name, &numbers_schema(), 5);
        let (_, got) = get_ok(&mut client, name).await;
        assert_same_rows(&[numbers(0..5)], &got);
    })
    .await
}

#[tokio::test]
async fn cmd_descriptors_are_invalid_argument() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "d", &[numbers(0..1)]).await;
        let cmd = FlightDescriptor::new_cmd(Bytes::from_static(b"d"));
        let statuses = [
            (
                "GetFlightInfo",
                status_of(client.get_flight_info(cmd.clone()).await.unwrap_err()),
            ),
            (
                "GetSchema",
                status_of(client.get_schema(cmd.clone()).await.unwrap_err()),
            ),
            (
                "PollFlightInfo",
                status_of(client.poll_flight_info(cmd.clone()).await.unwrap_err()),
            ),
        ];
        // A CMD descriptor is a JSON query (tests/query.rs); a bare name is not one.
        for (rpc, status) in &statuses {
            assert_status(
                status,
                Code::InvalidArgument,
                "query command is not valid JSON",
                rpc,
            );
        }
        let messages = common::encode_with(
            FlightDataEncoderBuilder::new(),
            "ignored",
            numbers_schema(),
            &[numbers(0..3)],
        )
        .await;
        let mut messages = messages;
        messages[0].flight_descriptor = Some(cmd);
        assert_status(
            &put_err(&mut client, messages).await,
            Code::InvalidArgument,
            "CMD",
            "DoPut",
        );
        assert_eq!(server.repo_entries(), ["d"]);
    })
    .await
}

#[tokio::test]
async fn paths_with_other_than_one_element_are_invalid_argument() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "a", &[numbers(0..1)]).await;
        for elements in [vec![], vec!["a".to_string(), "b".to_string()]] {
            let descriptor = FlightDescriptor::new_path(elements.clone());
            let what = format!("{elements:?}");
            for (rpc, status) in [
                (
                    "GetFlightInfo",
                    status_of(
                        client
                            .get_flight_info(descriptor.clone())
                            .await
                            .unwrap_err(),
                    ),
                ),
                (
                    "GetSchema",
                    status_of(client.get_schema(descriptor.clone()).await.unwrap_err()),
                ),
                (
                    "PollFlightInfo",
                    status_of(
                        client
                            .poll_flight_info(descriptor.clone())
                            .await
                            .unwrap_err(),
                    ),
                ),
            ] {
                assert_status(
                    &status,
                    Code::InvalidArgument,
                    "exactly one",
                    &format!("{rpc} {what}"),
                );
            }
            let mut messages = common::encode("x", numbers_schema(), &[numbers(0..3)]).await;
            messages[0].flight_descriptor = Some(descriptor);
            assert_status(
                &put_err(&mut client, messages).await,
                Code::InvalidArgument,
                "exactly one",
                &format!("DoPut {what}"),
            );
        }
        assert_eq!(server.repo_entries(), ["a"]);
    })
    .await
}

#[tokio::test]
async fn put_without_a_descriptor_or_without_messages_is_invalid_argument() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let mut messages = common::encode("x", numbers_schema(), &[numbers(0..3)]).await;
        messages[0].flight_descriptor = None;
        assert_status(
            &put_err(&mut client, messages).await,
            Code::InvalidArgument,
            "descriptor",
            "DoPut without descriptor",
        );
        assert_status(
            &put_err(&mut client, vec![]).await,
            Code::InvalidArgument,
            "empty DoPut",
            "empty DoPut stream",
        );
        assert!(
            server.repo_entries().is_empty(),
            "{:?}",
            server.repo_entries()
        );
    })
    .await
}

#[tokio::test]
async fn ticket_that_is_not_utf8_is_invalid_argument() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let bad = arrow_flight::Ticket {
            ticket: Bytes::from_static(b"\xff\xfe"),
        };
        let err = match client.do_get(bad).await {
            Err(err) => err,
            Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
        };
        assert_status(&status_of(err), Code::InvalidArgument, "UTF-8", "DoGet");
    })
    .await
}

#[tokio::test]
async fn missing_dataset_is_not_found_in_every_rpc() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "present", &[numbers(0..1)]).await;
        for (rpc, status) in every_rpc_with_name(&mut client, "absent").await {
            assert_status(&status, Code::NotFound, "absent", rpc);
        }
    })
    .await
}

#[tokio::test]
async fn put_message_over_max_message_size_is_resource_exhausted_naming_the_flag() {
    bounded(async {
        let server = TestServer::start_with_args(["--max-message-size", "1048576"]);
        let mut client = server.client().await;
        let old = [numbers(0..10)];
        put_ok(&mut client, "d", &old).await;
        // ~3 MiB in one message: the encoder is told not to split it.
        let big = numbers(0..200_000);
        let messages = common::encode_with(
            FlightDataEncoderBuilder::new().with_max_flight_data_size(usize::MAX),
            "d",
            numbers_schema(),
            std::slice::from_ref(&big),
        )
        .await;
        assert!(messages.iter().any(|m| m.data_body.len() > 1_048_576));
        let status = put_err(&mut client, messages).await;
        assert_status(
            &status,
            Code::ResourceExhausted,
            "--max-message-size",
            "big DoPut",
        );
        // The old version is intact and nothing temporary is left.
        let (_, got) = get_ok(&mut client, "d").await;
        assert_same_rows(&old, &got);
        assert_eq!(server.repo_entries(), ["d"]);
        // Small messages still go through on the same server.
        let split = common::encode_with(
            FlightDataEncoderBuilder::new().with_max_flight_data_size(256 * 1024),
            "d",
            numbers_schema(),
            std::slice::from_ref(&big),
        )
        .await;
        let results = put_flight_data(&mut client, split)
            .await
            .expect("split DoPut");
        assert_eq!(
            common::parse_put_result(&results[0].app_metadata).rows,
            200_000
        );
    })
    .await
}

#[tokio::test]
async fn schema_change_mid_upload_is_invalid_argument_and_keeps_old_data() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let old = [numbers(0..1000)];
        put_ok(&mut client, "d", &old).await;
        let old_len = file_len(&server, "d");

        // A valid stream for schema A, then a second schema message (B) and a
        // batch of B in the same upload.
        let mut messages = common::encode("d", numbers_schema(), &[numbers(0..50_000)]).await;
        let mut second = common::encode("d", other_schema(), &[words(&["p", "q"])]).await;
        for m in &mut second {
            m.flight_descriptor = None;
        }
        messages.extend(second);
        let status = put_err(&mut client, messages).await;
        assert_status(&status, Code::InvalidArgument, "schema", "schema change");

        let (schema, got) = get_ok(&mut client, "d").await;
        assert_eq!(schema, numbers_schema());
        assert_same_rows(&old, &got);
        assert_eq!(file_len(&server, "d"), old_len);
        assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
        assert_eq!(server.repo_entries(), ["d"]);

        // The same failure on a new name creates nothing.
        let mut messages = common::encode("fresh", numbers_schema(), &[numbers(0..5)]).await;
        let mut second = common::encode("fresh", other_schema(), &[words(&["p"])]).await;
        second[0].flight_descriptor = None;
        messages.extend(second);
        let status = put_err(&mut client, messages).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let missing = status_of(client.get_flight_info(path("fresh")).await.unwrap_err());
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(server.repo_entries(), ["d"]);
    })
    .await
}

// ---------------------------------------------------------------- fidelity

#[tokio::test]
async fn put_then_get_roundtrips_dictionary_columns() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "city",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new(
                "tag",
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |cities: Vec<Option<&str>>, tags: Vec<&str>, start: i64| {
            let len = cities.len() as i64;
            let city: DictionaryArray<Int32Type> = cities.into_iter().collect();
            let tag: DictionaryArray<Int8Type> = tags.into_iter().collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(city) as ArrayRef,
                    Arc::new(tag),
                    Arc::new(Int64Array::from_iter_values(start..start + len)),
                ],
            )
            .unwrap()
        };
        // Two batches with different dictionaries.
        let batches = [
            batch(
                vec![Some("Paris"), Some("Oslo"), None, Some("Paris")],
                vec!["a", "b", "a", "a"],
                0,
            ),
            batch(
                vec![Some("Lima"), Some("Kyiv"), Some("Lima")],
                vec!["z", "y", "z"],
                4,
            ),
        ];
        let summary = put(&mut client, "dict", schema.clone(), &batches)
            .await
            .unwrap();
        assert_eq!(summary.rows, 7);
        let (got_schema, got) = get_ok(&mut client, "dict").await;
        assert_eq!(got_schema, schema, "dictionary types survive");
        assert_same_rows(&batches, &got);
        assert_eq!(client.get_schema(path("dict")).await.unwrap(), *schema);
    })
    .await
}

#[tokio::test]
async fn put_then_get_roundtrips_nested_struct_and_list_columns() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let point_fields = Fields::from(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("label", DataType::Utf8, true),
        ]);
        let point = StructArray::new(
            point_fields.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as ArrayRef,
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                    Some("d"),
                ])),
            ],
            Some(vec![true, true, false, true].into()),
        );
        let mut list = ListBuilder::new(Int64Builder::new());
        list.append_value([Some(1), Some(2), None]);
        list.append_value([]);
        list.append_null();
        list.append_value([Some(7)]);
        let list = list.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("point", DataType::Struct(point_fields), true),
            Field::new("values", list.data_type().clone(), true),
        ]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(point), Arc::new(list)]).unwrap();
        put(
            &mut client,
            "nested",
            schema.clone(),
            std::slice::from_ref(&batch),
        )
        .await
        .unwrap();
        let (got_schema, got) = get_ok(&mut client, "nested").await;
        assert_eq!(got_schema, schema);
        assert_same_rows(&[batch], &got);
    })
    .await
}

#[tokio::test]
async fn put_then_get_roundtrips_field_and_schema_metadata() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("n", DataType::Int64, false)
                    .with_metadata(metadata(&[("unit", "metres"), ("source", "gauge 7")])),
                Field::new("s", DataType::Utf8, true),
            ])
            .with_metadata(metadata(&[("owner", "hangar tests"), ("version", "3")])),
        );
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        put(
            &mut client,
            "meta",
            schema.clone(),
            std::slice::from_ref(&batch),
        )
        .await
        .unwrap();
        let (got_schema, got) = get_ok(&mut client, "meta").await;
        assert_eq!(got_schema, schema, "DoGet schema keeps the metadata");
        assert_same_rows(&[batch], &got);
        assert_eq!(
            client.get_schema(path("meta")).await.unwrap(),
            *schema,
            "GetSchema"
        );
        let info = client.get_flight_info(path("meta")).await.unwrap();
        assert_eq!(
            info.try_decode_schema().unwrap(),
            *schema,
            "FlightInfo.schema"
        );
    })
    .await
}

#[tokio::test]
async fn put_with_zero_batches_stores_an_empty_dataset_with_its_schema() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let summary = put(&mut client, "empty", numbers_schema(), &[])
            .await
            .unwrap();
        assert_eq!(summary.rows, 0);
        assert_eq!(summary.bytes, file_len(&server, "empty"));
        let info = client.get_flight_info(path("empty")).await.unwrap();
        check_flight_info(&server, &info, "empty", &numbers_schema(), 0);
        let (schema, batches) = get_ok(&mut client, "empty").await;
        assert_eq!(schema, numbers_schema(), "DoGet still sends the schema");
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    })
    .await
}

#[tokio::test]
async fn default_client_reads_a_16_mib_batch_roundtrip() {
    bounded(async {
        let server = TestServer::start();
        // 256 rows of 64 KiB strings: one 16 MiB batch, well over the 4 MiB a
        // default client accepts in one message.
        let rows = 256;
        let text: Vec<String> = (0..rows)
            .map(|i| {
                let c = char::from(b'a' + (i % 26) as u8);
                format!("{i:08}{}", c.to_string().repeat(64 * 1024 - 8))
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("blob", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
                Arc::new(StringArray::from(text)),
            ],
        )
        .unwrap();
        assert!(batch.get_array_memory_size() >= 16 * 1024 * 1024);
        let mut client = server.client().await;
        let summary = put(
            &mut client,
            "big",
            schema.clone(),
            std::slice::from_ref(&batch),
        )
        .await
        .expect("DoPut of 16 MiB");
        assert_eq!(summary.rows, rows as u64);
        // A fresh, plain client with default limits.
        let mut reader = FlightClient::new(server.channel().await);
        let (got_schema, got) = get_ok(&mut reader, "big").await;
        assert_eq!(got_schema, schema);
        assert_same_rows(&[batch], &got);

        // On the wire: the schema first, then record batches cut to about
        // 2 MiB each, every message under the 4 MiB default client limit.
        let mut raw = FlightClient::new(server.channel().await)
            .into_inner()
            .max_decoding_message_size(usize::MAX);
        let mut messages = raw
            .do_get(ticket("big"))
            .await
            .expect("raw DoGet")
            .into_inner();
        let mut kinds = Vec::new();
        while let Some(message) = messages.message().await.expect("raw DoGet stream") {
            let size = prost::Message::encoded_len(&message);
            assert!(size < 4 * 1024 * 1024, "a {size}-byte message");
            assert!(
                message.data_body.len() <= 3 * 1024 * 1024,
                "a {}-byte body: batches are sliced to about 2 MiB",
                message.data_body.len()
            );
            let header = arrow_ipc::root_as_message(&message.data_header).expect("IPC header");
            kinds.push(header.header_type());
        }
        assert_eq!(kinds[0], arrow_ipc::MessageHeader::Schema, "{kinds:?}");
        assert!(
            kinds[1..]
                .iter()
                .all(|k| *k == arrow_ipc::MessageHeader::RecordBatch),
            "{kinds:?}"
        );
        assert!(kinds.len() > 8, "16 MiB in about 2 MiB pieces: {kinds:?}");
    })
    .await
}

#[tokio::test]
async fn put_overwrites_an_existing_dataset() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "d", &[numbers(0..1000)]).await;
        let bytes = put_ok(&mut client, "d", &[words(&["new", "content"])]).await;
        let (schema, got) = get_ok(&mut client, "d").await;
        assert_eq!(schema, other_schema());
        assert_same_rows(&[words(&["new", "content"])], &got);
        let info = client.get_flight_info(path("d")).await.unwrap();
        check_flight_info(&server, &info, "d", &other_schema(), 2);
        assert_eq!(info.total_bytes as u64, bytes);
        assert_eq!(server.repo_entries(), ["d"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_gets_do_not_interfere() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let shared = [numbers(0..200_000)];
        put_ok(&mut client, "shared", &shared).await;

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..4i64 {
            let channel = server.channel().await;
            tasks.spawn(async move {
                let mut client = FlightClient::new(channel);
                let batch = numbers(i * 1_000_000..i * 1_000_000 + 50_000 + i * 1000);
                let name = format!("put-{i}");
                let summary = put(
                    &mut client,
                    &name,
                    numbers_schema(),
                    std::slice::from_ref(&batch),
                )
                .await
                .unwrap_or_else(|s| panic!("DoPut {name}: {s:?}"));
                assert_eq!(summary.rows, batch.num_rows() as u64);
            });
            let channel = server.channel().await;
            let shared = shared.clone();
            tasks.spawn(async move {
                let mut client = FlightClient::new(channel);
                let (_, got) = get_ok(&mut client, "shared").await;
                assert_same_rows(&shared, &got);
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("a concurrent call failed");
        }
        for i in 0..4i64 {
            let (_, got) = get_ok(&mut client, &format!("put-{i}")).await;
            let want = numbers(i * 1_000_000..i * 1_000_000 + 50_000 + i * 1000);
            assert_same_rows(&[want], &got);
        }
        let mut entries = server.repo_entries();
        entries.sort();
        assert_eq!(entries, ["put-0", "put-1", "put-2", "put-3", "shared"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_while_reading_keeps_the_reader_on_the_old_version() {
    bounded(async {
        let server = TestServer::start();
        let mut writer = server.client().await;
        // Many batches (the server reads 64Ki rows at a time), so the read is
        // far from done after the first one.
        let old = [numbers(0..1_000_000)];
        put_ok(&mut writer, "d", &old).await;

        let mut reader = server.client().await;
        let mut stream = reader.do_get(ticket("d")).await.expect("DoGet");
        let first = stream
            .next()
            .await
            .expect("a first batch")
            .expect("first batch ok");
        assert!(
            first.num_rows() < 1_000_000,
            "the read is still in progress"
        );

        let new = [words(&["replaced"])];
        put_ok(&mut writer, "d", &new).await;
        let (schema, got_new) = get_ok(&mut writer, "d").await;
        assert_eq!(schema, other_schema(), "new readers see the new version");
        assert_same_rows(&new, &got_new);

        let mut got_old = vec![first];
        while let Some(batch) = stream.next().await {
            got_old.push(batch.expect("the old read keeps going"));
        }
        assert_same_rows(&old, &got_old);

        let (_, again) = get_ok(&mut reader, "d").await;
        assert_same_rows(&new, &again);
        assert_eq!(server.repo_entries(), ["d"]);
    })
    .await
}

// ---------------------------------------------------------------- repository

#[tokio::test]
async fn junk_files_in_the_repo_do_not_break_list_flights() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "good", &[numbers(0..4)]).await;
        let repo = server.repo();
        std::fs::write(repo.join("junk.txt"), b"this is not parquet").unwrap();
        std::fs::write(repo.join("empty-file"), b"").unwrap();
        std::fs::write(repo.join(".hidden"), b"PAR1 hidden PAR1").unwrap();
        std::fs::copy(repo.join("good"), repo.join(".hidden-copy")).unwrap();
        std::fs::create_dir(repo.join("subdir")).unwrap();
        std::os::unix::fs::symlink(repo.join("good"), repo.join("link")).unwrap();

        let infos = list(&mut client, "").await;
        assert_eq!(names(&infos), ["good"]);
        check_flight_info(&server, &infos[0], "good", &numbers_schema(), 4);
        // The skipped junk is reported in the log, not to the client.
        server.wait_for_stderr("a line about junk.txt", |log| log.contains("junk.txt"));
        // Junk is not served as a dataset.
        assert!(client.get_flight_info(path("junk.txt")).await.is_err());
        assert!(get(&mut client, "link").await.is_err());
        // The good dataset still reads.
        let (_, got) = get_ok(&mut client, "good").await;
        assert_same_rows(&[numbers(0..4)], &got);
    })
    .await
}

#[tokio::test]
async fn repo_holds_only_the_named_dataset_files() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        put_ok(&mut client, "a", &[numbers(0..10)]).await;
        put_ok(&mut client, "b", &[numbers(0..10)]).await;
        put_ok(&mut client, "a", &[numbers(0..20)]).await;
        put(&mut client, "c", numbers_schema(), &[]).await.unwrap();
        // A failed upload and a drop.
        let mut messages = common::encode("e", numbers_schema(), &[numbers(0..5)]).await;
        let mut second = common::encode("e", other_schema(), &[words(&["p"])]).await;
        second[0].flight_descriptor = None;
        messages.extend(second);
        put_err(&mut client, messages).await;
        client
            .do_action(Action::new("drop_dataset", "b"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert_eq!(server.repo_entries(), ["a", "c"]);
        assert_eq!(names(&list(&mut client, "").await), ["a", "c"]);
    })
    .await
}
