//! `--memory-limit`: uploads and downloads draw their in-flight bytes from one
//! server-wide budget. When it is spent, calls wait, and past the wait bound
//! (`--idle-timeout`) fail with RESOURCE_EXHAUSTED naming the flag; nothing is
//! lost or torn either way. No timing is asserted: the tests only check what
//! each call ended with and what the datasets hold afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::FlightClient;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use common::{bounded, TestServer};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("label", DataType::Utf8, false),
    ]))
}

/// Rows `start..start + rows` of `version`: every row names its version and
/// position, so a torn or mixed read shows.
fn batch(version: i64, start: usize, rows: usize) -> RecordBatch {
    let seq: Vec<i64> = (start as i64..(start + rows) as i64).collect();
    let labels: Vec<String> = seq
        .iter()
        .map(|s| format!("v{version}-row{s:012}"))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![version; rows])),
            Arc::new(Int64Array::from(seq)),
            Arc::new(StringArray::from(labels)),
        ],
    )
    .unwrap()
}

fn version_batches(version: i64, rows: usize, batch_rows: usize) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(batch_rows)
        .map(|start| batch(version, start, batch_rows.min(rows - start)))
        .collect()
}

/// The one version the batches hold, if they are exactly rows 0..n of it.
fn whole_version(batches: &[RecordBatch]) -> Result<(i64, usize), String> {
    let mut version = None;
    let mut next = 0i64;
    for b in batches {
        let versions = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let seq = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let labels = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            let v = versions.value(i);
            if *version.get_or_insert(v) != v {
                return Err(format!("rows of versions {version:?} and {v} mixed"));
            }
            if seq.value(i) != next || labels.value(i) != format!("v{v}-row{next:012}") {
                return Err(format!("row {next} of version {v} is wrong or missing"));
            }
            next += 1;
        }
    }
    version
        .map(|v| (v, next as usize))
        .ok_or_else(|| "no rows".to_string())
}

fn assert_budget_refusal(status: &Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--memory-limit"), "{status}");
}

async fn put_version(
    client: &mut FlightClient,
    name: &str,
    version: i64,
    rows: usize,
) -> Result<(), Status> {
    let summary = common::put(
        client,
        name,
        schema(),
        &version_batches(version, rows, 20_000),
    )
    .await?;
    assert_eq!(summary.rows, rows as u64);
    Ok(())
}

async fn read(client: &mut FlightClient, name: &str) -> Result<(i64, usize), Status> {
    let (_, batches) = common::get(client, name).await?;
    Ok(whole_version(&batches).unwrap_or_else(|e| panic!("{name} read torn: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_holding_the_whole_budget_makes_other_calls_fail_naming_the_flag_and_nothing_is_lost(
) {
    let server = TestServer::start_with_args(["--memory-limit", "1MiB", "--idle-timeout", "2s"]);
    bounded(async {
        let mut client = server.client().await;
        put_version(&mut client, "kept.parquet", 1, 60_000)
            .await
            .unwrap();
        put_version(&mut client, "empty.parquet", 1, 0)
            .await
            .unwrap();

        // The hog: an upload whose unflushed row group grows past the whole
        // budget (800,000 rows, far from the writer's flush point), then kept
        // alive by a trickle of 2,000-row batches every 100 ms, so its own
        // idle timeout never fires, until the other calls below have been
        // refused.
        let mut raw = FlightServiceClient::new(server.channel().await);
        let big_rows = 40 * 20_000;
        let mut all: Vec<RecordBatch> = (0..40).map(|i| batch(7, i * 20_000, 20_000)).collect();
        all.extend((0..600).map(|i| batch(7, big_rows + i * 2_000, 2_000)));
        let mut messages = common::encode("hog.parquet", schema(), &all)
            .await
            .into_iter();
        let (tx, rx) = mpsc::channel(4);
        let replies = tokio::spawn(async move {
            let mut replies = raw.do_put(ReceiverStream::new(rx)).await?.into_inner();
            let mut results = Vec::new();
            while let Some(r) = replies.message().await? {
                results.push(r);
            }
            Ok::<_, Status>(results)
        });
        for message in messages.by_ref().take(1 + 40) {
            tx.send(message).await.unwrap();
        }
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let trickler = tokio::spawn(async move {
            let mut sent = 0;
            for message in messages {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                tx.send(message).await.unwrap();
                sent += 2_000;
            }
            // Dropping `tx` here ends the upload cleanly.
            sent
        });

        // Reads succeed (whole) until the server has taken the hog's batches;
        // from then on each waits 2 s and is refused.
        let mut refused_get = None;
        for _ in 0..30 {
            match read(&mut client, "kept.parquet").await {
                Ok(version) => {
                    assert_eq!(version, (1, 60_000));
                    // A read that got memory may have made the upload write
                    // its row group out early (it flushes rather than wait);
                    // give the trickle time to buffer past the budget again.
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                }
                Err(status) => {
                    refused_get = Some(status);
                    break;
                }
            }
        }
        let refused_get =
            refused_get.expect("no read was refused while the upload held the budget");
        assert_budget_refusal(&refused_get);

        // An overwrite of the kept dataset waits for memory message by
        // message (the transport takes each one in only when the budget has
        // room); its small messages may fit between the hog's early row
        // group flushes. It ends whole or refused naming the flag, and a
        // refused one leaves the old version.
        let mut other = server.client().await;
        let overwrite = put_version(&mut other, "kept.parquet", 2, 60_000).await;
        let kept_version = match overwrite {
            Ok(()) => 2,
            Err(status) => {
                assert_budget_refusal(&status);
                1
            }
        };
        // A download with nothing to send needs no memory: it ends well.
        let (_, empty) = common::get(&mut other, "empty.parquet")
            .await
            .expect("an empty dataset reads without memory");
        assert!(empty.iter().all(|b| b.num_rows() == 0));
        stop_tx.send_replace(true);
        let sent_rows = big_rows + trickler.await.unwrap();

        // The hog ends cleanly and stores every row it sent.
        let results = replies
            .await
            .unwrap()
            .expect("the hog's upload must succeed");
        assert_eq!(results.len(), 1);
        assert_eq!(
            read(&mut client, "hog.parquet").await.unwrap(),
            (7, sent_rows)
        );
        assert_eq!(
            read(&mut client, "kept.parquet").await.unwrap(),
            (kept_version, 60_000)
        );
        assert!(common::temp_files(server.repo()).is_empty());
    })
    .await;
}

/// Each DoPut message's memory is taken from the budget as its header
/// arrives (tonic's receive buffer included), and the client waits under
/// HTTP/2 flow control until there is room. 8 concurrent uploads of three
/// 16 MiB messages under a 64 MiB limit: the server's peak RSS was 465 MiB
/// when received and queued messages were outside the budget, about 170 MiB
/// now (pyarrow client, release build); in this test's build 457 MiB before,
/// 207 MiB now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_large_messages_wait_for_the_budget_instead_of_piling_up() {
    let server = TestServer::start_with_args(["--memory-limit", "64MiB"]);
    bounded(async {
        let wide = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let rows = 2 * 1024 * 1024; // 16 MiB of int64 per message
        let big = RecordBatch::try_new(
            wide.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..rows as i64))],
        )
        .unwrap();
        // One message per batch, as pyarrow sends them (arrow-flight's
        // encoder would cut them into 2 MiB pieces).
        let messages = common::encode_with(
            arrow_flight::encode::FlightDataEncoderBuilder::new()
                .with_max_flight_data_size(usize::MAX),
            "large-0",
            wide,
            &[big.clone(), big.clone(), big],
        )
        .await;
        assert_eq!(messages.len(), 4, "schema and three batches");
        let mut uploads = Vec::new();
        for i in 0..8 {
            let mut messages = messages.clone();
            messages[0].flight_descriptor = Some(common::path(&format!("large-{i}")));
            let mut client = server.client().await;
            uploads.push(tokio::spawn(async move {
                common::put_flight_data(&mut client, messages).await
            }));
        }
        for upload in uploads {
            upload.await.unwrap().expect("every upload completes");
        }
        let mut client = server.client().await;
        for i in 0..8 {
            let info = client
                .get_flight_info(common::path(&format!("large-{i}")))
                .await
                .unwrap();
            assert_eq!(info.total_records, 3 * rows as i64);
        }
        let peak_mib = common::status_field(server.pid(), "VmHWM:").unwrap() / 1024;
        assert!(
            peak_mib < 300,
            "peak RSS {peak_mib} MiB under a 64 MiB limit"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_under_a_tiny_budget_complete_whole_or_are_refused_naming_the_flag() {
    let server = TestServer::start_with_args(["--memory-limit", "1MiB", "--idle-timeout", "1s"]);
    let names: Vec<String> = (0..3).map(|i| format!("shared-{i}.parquet")).collect();
    bounded(async {
        let mut client = server.client().await;
        for name in &names {
            put_version(&mut client, name, 0, 40_000).await.unwrap();
        }
        let mut tasks = Vec::new();
        for task in 0..12usize {
            let client = server.client().await;
            let names = names.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = client;
                let mut outcomes = (0usize, 0usize);
                for round in 0..3usize {
                    let name = &names[(task + round) % names.len()];
                    let result = if (task + round) % 2 == 0 {
                        let version = (task * 10 + round + 1) as i64;
                        put_version(&mut client, name, version, 40_000).await
                    } else {
                        // Whatever version it is, it is one whole version.
                        read(&mut client, name)
                            .await
                            .map(|(_, rows)| assert_eq!(rows, 40_000))
                    };
                    match result {
                        Ok(()) => outcomes.0 += 1,
                        Err(status) => {
                            assert_budget_refusal(&status);
                            outcomes.1 += 1;
                        }
                    }
                }
                outcomes
            }));
        }
        let (mut done, mut refused) = (0, 0);
        for task in tasks {
            let (d, r) = task.await.unwrap();
            done += d;
            refused += r;
        }
        eprintln!("{done} calls completed, {refused} refused for memory");
        for name in &names {
            let (_, rows) = read(&mut client, name).await.unwrap();
            assert_eq!(rows, 40_000);
        }
        assert!(common::temp_files(server.repo()).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_sharing_a_tiny_budget_write_row_groups_early_instead_of_stalling_each_other() {
    // Uploads that each held part of the budget while waiting for more would
    // stall one another until refused (after --idle-timeout).
    let server = TestServer::start_with_args(["--memory-limit", "1MiB", "--idle-timeout", "10s"]);
    let names: Vec<String> = (0..8).map(|i| format!("up-{i}.parquet")).collect();
    bounded(async {
        let mut uploads = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut client = server.client().await;
            let name = name.clone();
            uploads.push(tokio::spawn(async move {
                let batches = version_batches(i as i64 + 1, 60_000, 2_000);
                common::put(&mut client, &name, schema(), &batches).await
            }));
        }
        for upload in uploads {
            let summary = upload.await.unwrap().expect("every upload must complete");
            assert_eq!(summary.rows, 60_000);
        }
        let mut client = server.client().await;
        for (i, name) in names.iter().enumerate() {
            assert_eq!(
                read(&mut client, name).await.unwrap(),
                (i as i64 + 1, 60_000)
            );
        }
    })
    .await;
}
