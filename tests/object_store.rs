//! The S3 repository (`--repo s3://bucket/prefix`, feature `object-store`)
//! against a real S3 server on loopback (moto's, see common/s3.rs): the
//! cookbook's flows, partitioned and filtered reads, a dataset replaced while
//! it is read, uploads that fail or are cancelled leaving no parts, a store
//! that stops answering, and three nodes on one bucket.

#![cfg(feature = "object-store")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use prost::bytes::Bytes;
use tonic::Code;

use common::s3::S3Server;
use common::{client_at, get, put, status_of, within, TestServer};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]))
}

/// Rows `range`, each with a `pad`-byte string, so column chunks have weight.
fn rows(range: std::ops::Range<i64>, pad: usize) -> RecordBatch {
    let strings: Vec<String> = range
        .clone()
        .map(|i| format!("{i:0>pad$}", pad = pad))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(range)) as ArrayRef,
            Arc::new(StringArray::from(strings)) as ArrayRef,
        ],
    )
    .unwrap()
}

fn serve(s3: &S3Server, prefix: &str, extra: &[&str]) -> TestServer {
    let repo = s3.repo(prefix);
    let mut builder = TestServer::builder().without_default_args().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--repo",
        repo.as_str(),
    ]);
    for (key, value) in s3.env() {
        builder = builder.env(key, value);
    }
    builder.args(extra).start()
}

/// A client of the bucket of our own, to plant objects as another writer would.
fn bucket(s3: &S3Server) -> Arc<dyn ObjectStore> {
    // reqwest is built without a default TLS provider (as in hangar).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_bucket_name(&s3.bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap(),
    )
}

/// A Parquet file of `groups` row groups of `per_group` rows (n counts from
/// `first`), as bytes.
fn parquet_file(first: i64, groups: i64, per_group: i64, pad: usize) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(per_group as usize))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props)).unwrap();
    for g in 0..groups {
        let start = first + g * per_group;
        writer.write(&rows(start..start + per_group, pad)).unwrap();
    }
    writer.close().unwrap();
    out
}

async fn plant(store: &Arc<dyn ObjectStore>, key: &str, bytes: Vec<u8>) {
    store
        .put(&Key::from(key), PutPayload::from(bytes))
        .await
        .unwrap();
}

async fn listed(client: &mut arrow_flight::FlightClient) -> Vec<FlightInfo> {
    client
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn names(infos: &[FlightInfo]) -> Vec<String> {
    infos
        .iter()
        .map(|i| i.flight_descriptor.as_ref().unwrap().path[0].clone())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn the_cookbook_flows_work_on_a_bucket() {
    let s3 = S3Server::start("flows");
    let server = serve(&s3, "data", &[]);
    rt().block_on(within(Duration::from_secs(60), "the flows", async {
        let mut client = server.client().await;
        let first = [rows(0..1000, 8), rows(1000..2500, 8)];
        let summary = put(&mut client, "uploaded.parquet", schema(), &first)
            .await
            .unwrap();
        assert_eq!(summary.rows, 2500);
        assert_eq!(s3.keys("data/"), vec!["data/uploaded.parquet"]);

        // Objects hangar did not write, or cannot name, are not datasets.
        let store = bucket(&s3);
        plant(&store, "data/junk.parquet", b"not parquet".to_vec()).await;
        plant(&store, "data/sub/nested.parquet", parquet_file(0, 1, 5, 1)).await;
        plant(&store, "data/.hidden", parquet_file(0, 1, 5, 1)).await;
        plant(&store, "elsewhere.parquet", parquet_file(0, 1, 5, 1)).await;
        let infos = listed(&mut client).await;
        assert_eq!(names(&infos), vec!["uploaded.parquet"]);
        assert_eq!(infos[0].total_records, 2500);
        assert_eq!(infos[0].total_bytes, summary.bytes as i64);

        let descriptor = FlightDescriptor::new_path(vec!["uploaded.parquet".into()]);
        let info = client.get_flight_info(descriptor.clone()).await.unwrap();
        assert_eq!(info.total_records, 2500);
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        common::assert_same_rows(&first, &batches);
        let (got_schema, _) = get(&mut client, "uploaded.parquet").await.unwrap();
        assert_eq!(got_schema.fields(), schema().fields());

        // Replaced: the new version, whole.
        let second = [rows(5..15, 3)];
        put(&mut client, "uploaded.parquet", schema(), &second)
            .await
            .unwrap();
        let (_, batches) = get(&mut client, "uploaded.parquet").await.unwrap();
        common::assert_same_rows(&second, &batches);

        // Names are checked as on disk; a missing dataset is NOT_FOUND.
        let bad = put(&mut client, "../x", schema(), &second)
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
        let missing = get(&mut client, "nope").await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing}");

        client
            .do_action(Action::new("drop_dataset", "uploaded.parquet"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert!(!s3
            .keys("data/")
            .contains(&"data/uploaded.parquet".to_string()));
        let err = client.get_flight_info(descriptor).await.unwrap_err();
        assert_eq!(status_of(err).code(), Code::NotFound);
        let again = client
            .do_action(Action::new("drop_dataset", "uploaded.parquet"))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status_of(again).code(), Code::NotFound);
    }));
    // The unreadable object was reported in the log, not to the client.
    server.wait_for_stderr("the skipped object", |log| log.contains("junk.parquet"));
}

#[test]
fn partitioned_projected_and_filtered_reads() {
    let s3 = S3Server::start("queries");
    let server = serve(&s3, "q", &[]);
    rt().block_on(within(Duration::from_secs(60), "the queries", async {
        plant(&bucket(&s3), "q/big", parquet_file(0, 20, 1000, 64)).await;
        let mut client = server.client().await;
        let query = |cmd: &str| FlightDescriptor::new_cmd(cmd.to_string());

        // Four partitions, read at once: every row exactly once.
        let info = client
            .get_flight_info(query(r#"{"dataset":"big","partitions":4}"#))
            .await
            .unwrap();
        assert_eq!(info.endpoint.len(), 4);
        let reads = info.endpoint.iter().map(|endpoint| {
            let ticket = endpoint.ticket.clone().unwrap();
            let addr = server.addr;
            async move {
                let mut client = client_at(addr).await;
                let batches: Vec<RecordBatch> = client
                    .do_get(ticket)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                batches
            }
        });
        let mut seen: Vec<i64> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .flat_map(|b| {
                let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                n.values().to_vec()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..20_000).collect::<Vec<i64>>());

        // A whole read fetches each row group once (plus the tail at open),
        // although batches straddle row groups and columns are read in turn.
        let gets = || s3.requests().matches("GET /queries/q/big ").count();
        let before = gets();
        let (_, batches) = get(&mut client, "big").await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 20_000);
        let fetched = gets() - before;
        assert!(
            fetched <= 22 && fetched > 0,
            "{fetched} GETs for 20 row groups"
        );

        // A projection and a filter: only the matching row groups, one column.
        let info = client
            .get_flight_info(query(
                r#"{"dataset":"big","columns":["n"],"filter":[["n",">=",17500]]}"#,
            ))
            .await
            .unwrap();
        let mut total = 0;
        for endpoint in &info.endpoint {
            let batches: Vec<RecordBatch> = client
                .do_get(endpoint.ticket.clone().unwrap())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for batch in &batches {
                assert_eq!(batch.num_columns(), 1);
                let n = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                assert!(n.values().iter().all(|v| *v >= 17_500));
                total += batch.num_rows();
            }
        }
        assert_eq!(total, 2500);
    }));
}

#[test]
fn a_dataset_replaced_while_read_fails_the_read_instead_of_mixing_versions() {
    let s3 = S3Server::start("replace");
    let server = serve(&s3, "r", &[]);
    rt().block_on(within(
        Duration::from_secs(90),
        "the replaced read",
        async {
            let store = bucket(&s3);
            // 40 row groups of ~1 MB: far more than a read can have in flight.
            plant(&store, "r/d", parquet_file(0, 40, 4000, 250)).await;
            let mut client = server.client().await;
            let info = client
                .get_flight_info(FlightDescriptor::new_cmd(
                    r#"{"dataset":"d","partitions":2}"#.to_string(),
                ))
                .await
                .unwrap();
            let mut stream = client.do_get(Ticket::new("d")).await.unwrap();
            let first = stream.next().await.unwrap().unwrap();
            assert!(first.num_rows() > 0);
            // Another writer replaces it (negative numbers: told apart at once).
            plant(&store, "r/d", parquet_file(-1_000_000, 2, 10, 1)).await;
            let mut rows = first.num_rows();
            let outcome = loop {
                match stream.next().await {
                    None => break Ok(()),
                    Some(Ok(batch)) => {
                        let n = batch
                            .column(0)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap();
                        assert!(n.values().iter().all(|v| *v >= 0), "rows of two versions");
                        rows += batch.num_rows();
                    }
                    Some(Err(err)) => break Err(status_of(err)),
                }
            };
            let err = outcome.expect_err("the read went on over a replaced object");
            assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
            assert!(err.message().contains("replaced"), "{err}");
            assert!(rows < 160_000);
            // A ticket planned on the old version is refused up front.
            let stale = client
                .do_get(info.endpoint[0].ticket.clone().unwrap())
                .await
                .map(|_| ());
            let stale = match stale {
                Err(err) => status_of(err),
                Ok(()) => panic!("a stale ticket was accepted"),
            };
            assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
            // And the new version reads whole.
            let (_, batches) = get(&mut client, "d").await.unwrap();
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 20);
        },
    ));
}

/// Incompressible rows, so that uploads produce parts of their own.
fn noise(rows: usize, seed: u64) -> RecordBatch {
    let mut x = seed | 1;
    let values: Vec<i64> = (0..rows)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as i64
        })
        .collect();
    let strings: Vec<String> = values.iter().map(|v| format!("{v:x}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(values)) as ArrayRef,
            Arc::new(StringArray::from(strings)) as ArrayRef,
        ],
    )
    .unwrap()
}

async fn no_open_uploads(s3: &S3Server) -> bool {
    common::wait_until(Duration::from_secs(15), async || {
        s3.open_uploads().is_empty()
    })
    .await
}

/// Starts an upload of `batches` as `name` that never ends its stream, and
/// waits until the server has sent at least one part of it. The client runs
/// on the returned runtime, so that shutting it down closes the connection
/// the way a killed client's does.
async fn upload_left_open(
    s3: &S3Server,
    addr: std::net::SocketAddr,
    name: &str,
    batches: &[RecordBatch],
) -> tokio::runtime::Runtime {
    let parts_before = s3.requests().matches("partNumber=").count();
    let messages = common::encode(name, schema(), batches).await;
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.spawn(async move {
        let mut client = client_at(addr).await;
        let input =
            futures::stream::iter(messages.into_iter().map(Ok)).chain(futures::stream::pending());
        let _ = client.do_put(input).await;
        futures::future::pending::<()>().await;
    });
    let started = common::wait_until(Duration::from_secs(30), async || {
        !s3.open_uploads().is_empty() && s3.requests().matches("partNumber=").count() > parts_before
    })
    .await;
    assert!(
        started,
        "the upload never sent a part: {:?}",
        s3.open_uploads()
    );
    client_runtime
}

#[test]
fn uploads_that_fail_or_are_cancelled_leave_no_parts() {
    let s3 = S3Server::start("aborts");
    let server = serve(&s3, "a", &["--max-dataset-bytes", "12000000"]);
    rt().block_on(within(Duration::from_secs(120), "the aborts", async {
        let mut client = server.client().await;
        let small = [rows(0..10, 2)];
        put(&mut client, "d", schema(), &small).await.unwrap();

        // Past --max-dataset-bytes, after some parts went up: refused, aborted.
        let big: Vec<RecordBatch> = (0..20).map(|i| noise(50_000, i + 1)).collect();
        let err = put(&mut client, "d", schema(), &big).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            s3.requests().contains("partNumber="),
            "no part was uploaded before the limit: the test did not test an abort"
        );
        assert!(no_open_uploads(&s3).await, "{:?}", s3.open_uploads());
        let (_, batches) = get(&mut client, "d").await.unwrap();
        common::assert_same_rows(&small, &batches);

        // A client that goes away mid-upload, after parts went up (through a
        // node without the size limit): aborted too.
        let unlimited = serve(&s3, "a", &[]);
        let doubled: Vec<RecordBatch> = big.iter().chain(&big).cloned().collect();
        let client_runtime = upload_left_open(&s3, unlimited.addr, "d", &doubled).await;
        client_runtime.shutdown_background();
        assert!(
            no_open_uploads(&s3).await,
            "{:?}\n{}",
            s3.open_uploads(),
            unlimited.stderr()
        );
        let (_, batches) = get(&mut client, "d").await.unwrap();
        common::assert_same_rows(&small, &batches);
        assert_eq!(s3.keys("a/"), vec!["a/d"]);

        // A server stopped while an upload is in flight aborts it on the way
        // out (a killed one cannot: README, Scale out).
        let mut stopping = serve(&s3, "a", &[]);
        let client_runtime = upload_left_open(&s3, stopping.addr, "e", &doubled).await;
        let status = stopping.terminate();
        assert!(status.success(), "{status}");
        assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
        assert!(
            stopping.stderr().contains("1 unfinished upload"),
            "{}",
            stopping.stderr()
        );
        client_runtime.shutdown_background();
    }));
}

#[test]
fn a_store_that_stops_answering_is_unavailable_not_a_hang() {
    let mut s3 = S3Server::start("gone");
    let server = serve(&s3, "g", &[]);
    rt().block_on(within(Duration::from_secs(90), "the lost store", async {
        let mut client = server.client().await;
        put(&mut client, "d", schema(), &[rows(0..10, 2)])
            .await
            .unwrap();
        s3.stop();
        let started = std::time::Instant::now();
        let err = client
            .list_flights(Bytes::new())
            .await
            .map(|_| ())
            .err()
            .map(status_of);
        let err = match err {
            Some(err) => err,
            None => {
                let mut stream = client.list_flights(Bytes::new()).await.unwrap();
                status_of(stream.next().await.unwrap().unwrap_err())
            }
        };
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("retry later"), "{err}");
        assert!(!err.message().contains("test"), "credentials in {err}");
        assert!(started.elapsed() < Duration::from_secs(60));
        let err = get(&mut client, "d").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    }));
}

/// Three nodes on one bucket, each knowing the others.
fn three_nodes(s3: &S3Server, dir: &std::path::Path) -> Vec<TestServer> {
    let peers = dir.join("peers");
    std::fs::write(&peers, "").unwrap();
    let peers_arg = peers.display().to_string();
    let nodes: Vec<TestServer> = (0..3)
        .map(|_| serve(s3, "shared", &["--peers", &peers_arg]))
        .collect();
    let list: String = nodes.iter().map(|n| format!("{}\n", n.uri)).collect();
    std::fs::write(&peers, list).unwrap();
    for node in &nodes {
        node.signal("HUP");
        node.wait_for_stderr("the peers reload", |log| {
            log.contains("reloaded peers file (3 nodes)")
        });
    }
    nodes
}

#[test]
fn three_nodes_on_one_bucket() {
    let s3 = S3Server::start("nodes");
    let nodes = three_nodes(&s3, s3.dir());
    let uris: Vec<String> = nodes.iter().map(|n| n.uri.clone()).collect();
    rt().block_on(within(Duration::from_secs(90), "the three nodes", async {
        let mut a = client_at(nodes[0].addr).await;
        put(&mut a, "d", schema(), &[rows(0..50, 2)]).await.unwrap();
        plant(&bucket(&s3), "shared/big", parquet_file(0, 9, 100, 2)).await;

        // Endpoints name every node; read from their first locations at once.
        let mut b = client_at(nodes[1].addr).await;
        let info = b
            .get_flight_info(FlightDescriptor::new_cmd(
                r#"{"dataset":"big","partitions":3}"#.to_string(),
            ))
            .await
            .unwrap();
        let firsts: BTreeSet<&str> = info
            .endpoint
            .iter()
            .map(|e| e.location[0].uri.as_str())
            .collect();
        assert_eq!(firsts, uris.iter().map(String::as_str).collect());
        let reads = info.endpoint.iter().map(|endpoint| {
            let node = nodes
                .iter()
                .find(|n| n.uri == endpoint.location[0].uri)
                .unwrap();
            let (addr, ticket) = (node.addr, endpoint.ticket.clone().unwrap());
            async move {
                let mut client = client_at(addr).await;
                let batches: Vec<RecordBatch> = client
                    .do_get(ticket)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            }
        });
        let total: usize = futures::future::join_all(reads).await.into_iter().sum();
        assert_eq!(total, 900);

        // Written through a, replaced through a, read on b: never stale.
        let infos = listed(&mut b).await;
        assert_eq!(names(&infos), vec!["big", "d"]);
        assert_eq!(infos[1].total_records, 50);
        put(&mut a, "d", schema(), &[rows(0..70, 2)]).await.unwrap();
        let info = b
            .get_flight_info(FlightDescriptor::new_path(vec!["d".into()]))
            .await
            .unwrap();
        assert_eq!(info.total_records, 70);
        let (_, batches) = get(&mut b, "d").await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 70);

        // Dropped through c: gone on a.
        let mut c = client_at(nodes[2].addr).await;
        c.do_action(Action::new("drop_dataset", "d"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert_eq!(names(&listed(&mut a).await), vec!["big"]);
    }));
    for node in &nodes {
        node.wait_for_stderr("a DoGet on every node", |log| log.contains("rpc=DoGet"));
    }
}
