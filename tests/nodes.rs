//! Several hangar nodes over one repository (`--peer`, `--peers FILE`,
//! `--advertise`): each lists, serves and replaces the same datasets, and a
//! query's partitions name every node so a client reading them all at once
//! reads from every node at once.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use prost::bytes::Bytes;

use common::{client_at, put, within, TestServer};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(range)) as ArrayRef],
    )
    .unwrap()
}

/// `rows` rows in row groups of 100, written into the shared repository the
/// way an upload lands (a temporary file renamed into place).
fn write_dataset(repo: &Path, name: &str, rows: i64) {
    let temp = repo.join(format!(".direct-{name}"));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(&temp).unwrap(), schema(), Some(props)).unwrap();
    writer.write(&numbers(0..rows)).unwrap();
    writer.close().unwrap();
    std::fs::rename(&temp, repo.join(name)).unwrap();
}

fn partitions(dataset: &str, n: usize) -> FlightDescriptor {
    FlightDescriptor::new_cmd(format!(r#"{{"dataset":"{dataset}","partitions":{n}}}"#))
}

/// Three nodes on one repository, each knowing the others through a peers
/// file written once all three listen (their ports are only known then).
fn three_nodes() -> (Vec<TestServer>, tempfile::TempDir) {
    let shared = tempfile::tempdir().unwrap();
    let repo = shared.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let peers = shared.path().join("peers");
    std::fs::write(&peers, "").unwrap();
    let nodes: Vec<TestServer> = (0..3)
        .map(|_| {
            TestServer::builder()
                .existing_repo(&repo)
                .arg("--peers")
                .arg(&peers)
                .start()
        })
        .collect();
    let list: String = nodes
        .iter()
        .map(|n| format!("{}  # a node\n", n.uri))
        .collect();
    std::fs::write(&peers, list).unwrap();
    for node in &nodes {
        node.signal("HUP");
        node.wait_for_stderr("the peers reload", |log| {
            log.contains("reloaded peers file (3 nodes)")
        });
    }
    (nodes, shared)
}

#[test]
fn a_query_on_any_node_spreads_its_partitions_over_every_node() {
    let (nodes, shared) = three_nodes();
    write_dataset(&shared.path().join("repo"), "big", 900);
    let uris: Vec<String> = nodes.iter().map(|n| n.uri.clone()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(within(
        Duration::from_secs(60),
        "the partitioned read",
        async {
            for (asked, node) in nodes.iter().enumerate() {
                let mut client = client_at(node.addr).await;
                let info: FlightInfo = client.get_flight_info(partitions("big", 3)).await.unwrap();
                assert_eq!(info.endpoint.len(), 3);
                let firsts: Vec<&str> = info
                    .endpoint
                    .iter()
                    .map(|e| e.location[0].uri.as_str())
                    .collect();
                // The node asked comes first, then each endpoint starts with the next.
                assert_eq!(firsts[0], uris[asked]);
                assert_eq!(
                    firsts.iter().collect::<BTreeSet<_>>().len(),
                    3,
                    "{firsts:?}"
                );
                for endpoint in &info.endpoint {
                    let listed: BTreeSet<&str> =
                        endpoint.location.iter().map(|l| l.uri.as_str()).collect();
                    assert_eq!(
                        listed,
                        uris.iter().map(String::as_str).collect(),
                        "every node, once"
                    );
                }
            }
            // A client reading every endpoint from its first location, at once.
            let mut client = client_at(nodes[1].addr).await;
            let info = client.get_flight_info(partitions("big", 3)).await.unwrap();
            let reads = info.endpoint.iter().map(|endpoint| {
                let uri = endpoint.location[0].uri.clone();
                let ticket = endpoint.ticket.clone().unwrap();
                let node = nodes.iter().find(|n| n.uri == uri).expect("a known node");
                async move {
                    let mut client = client_at(node.addr).await;
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
            let rows: usize = futures::future::join_all(reads).await.into_iter().sum();
            assert_eq!(rows, 900);
        },
    ));
    for node in &nodes {
        node.wait_for_stderr("a DoGet on every node", |log| log.contains("rpc=DoGet"));
    }
}

#[test]
fn every_node_lists_serves_and_drops_what_another_wrote() {
    let (nodes, _shared) = three_nodes();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(within(Duration::from_secs(60), "the three nodes", async {
        let mut a = client_at(nodes[0].addr).await;
        put(&mut a, "shared", schema(), &[numbers(0..50)])
            .await
            .unwrap();
        let mut b = client_at(nodes[1].addr).await;
        let listed: Vec<FlightInfo> = b
            .list_flights(Bytes::new())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].total_records, 50);
        let batches: Vec<RecordBatch> = b
            .do_get(Ticket::new("shared"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 50);
        // Replaced through a, read on b: the new version, not a stale footer.
        put(&mut a, "shared", schema(), &[numbers(0..70)])
            .await
            .unwrap();
        let info = b
            .get_flight_info(FlightDescriptor::new_path(vec!["shared".into()]))
            .await
            .unwrap();
        assert_eq!(info.total_records, 70);
        // A plain dataset keeps the cookbook's single endpoint with no location.
        assert!(info.endpoint[0].location.is_empty());
        let mut c = client_at(nodes[2].addr).await;
        c.do_action(Action::new("drop_dataset", "shared"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let left: Vec<FlightInfo> = a
            .list_flights(Bytes::new())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(left.is_empty());
    }));
}

#[test]
fn without_peers_query_endpoints_carry_no_location() {
    let server = TestServer::start();
    write_dataset(server.repo(), "big", 300);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = client_at(server.addr).await;
        let info = client.get_flight_info(partitions("big", 3)).await.unwrap();
        assert_eq!(info.endpoint.len(), 3);
        assert!(info.endpoint.iter().all(|e| e.location.is_empty()));
    });
}

#[test]
fn peers_need_an_address_clients_can_reach() {
    let out = common::run_hangar([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--repo",
        tempfile::tempdir().unwrap().path().to_str().unwrap(),
        "--peer",
        "grpc://10.0.0.2:8815",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --advertise"));
    let out = common::run_hangar(["serve", "--peer", "http://x:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --peer"));
}
