//! Queries (a CMD descriptor's JSON command) against a real `hangar serve`,
//! checked against a reference evaluator written here in plain Rust (SQL
//! semantics: a comparison with null is no match), sharing no code with
//! `src/query.rs`.
//!
//! - the core flow: projection (in another order than the file), a filter on
//!   a column not projected, several partitions, GetSchema of a command;
//! - a property test: random small tables (int64, string, float64, bool, with
//!   nulls, uploaded in several batches) and random conjunctions, random
//!   projections, partitions and limits; hangar's answer must equal the
//!   reference. Each table is served twice: uploaded through hangar (one row
//!   group: hangar's writer flushes at 1,048,576 rows or ~32 MiB) and written
//!   by the `parquet` crate straight into the repository with small row groups,
//!   random statistics levels and truncated string statistics, so pruning and
//!   endpoint splitting are exercised too;
//! - IPC body compression of a query's tickets and of `--ipc-compression`;
//! - a JSON ticket reads only the column chunks and row groups it needs: one
//!   chunk of a dataset uploaded through hangar is overwritten with garbage,
//!   queries around it succeed, a full read fails cleanly.
//!
//! `HANGAR_QUERY_CASES` sets the property's case count (default 48);
//! `HANGAR_QUERY_SEED=N` replays seed N, `random` explores a new one (the
//! default is fixed, and printed).

mod common;

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use prost::bytes::Bytes;
use tonic::Code;

use common::{bounded, put, status_of, TestServer};

// ------------------------------------------------------------ values and rows

/// One cell, or one literal, as the reference evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    I(i64),
    F(f64),
    S(String),
    B(bool),
}

type Row = Vec<V>;

const NAMES: [&str; 4] = ["a", "s", "f", "t"];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("f", DataType::Float64, true),
        Field::new("t", DataType::Boolean, true),
    ]))
}

fn batch_of(rows: &[Row]) -> RecordBatch {
    let column = |c: usize| rows.iter().map(move |r| &r[c]);
    let a: Int64Array = column(0)
        .map(|v| match v {
            V::I(n) => Some(*n),
            _ => None,
        })
        .collect();
    let s: StringArray = column(1)
        .map(|v| match v {
            V::S(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let f: Float64Array = column(2)
        .map(|v| match v {
            V::F(x) => Some(*x),
            _ => None,
        })
        .collect();
    let t: BooleanArray = column(3)
        .map(|v| match v {
            V::B(b) => Some(*b),
            _ => None,
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(s), Arc::new(f), Arc::new(t)];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn value_at(column: &dyn Array, i: usize) -> V {
    if column.is_null(i) {
        return V::Null;
    }
    let any = column.as_any();
    match column.data_type() {
        DataType::Int64 => V::I(any.downcast_ref::<Int64Array>().unwrap().value(i)),
        DataType::Int32 => V::I(any.downcast_ref::<Int32Array>().unwrap().value(i).into()),
        DataType::Utf8 => V::S(
            any.downcast_ref::<StringArray>()
                .unwrap()
                .value(i)
                .to_string(),
        ),
        DataType::Float64 => V::F(any.downcast_ref::<Float64Array>().unwrap().value(i)),
        DataType::Boolean => V::B(any.downcast_ref::<BooleanArray>().unwrap().value(i)),
        other => panic!("no reference value for {other}"),
    }
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            rows.push(batch.columns().iter().map(|c| value_at(c, i)).collect());
        }
    }
    rows
}

// ------------------------------------------------------- the reference filter

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    IsNull,
    IsNotNull,
}

const OPS: [Op; 9] = [
    Op::Eq,
    Op::Ne,
    Op::Lt,
    Op::Le,
    Op::Gt,
    Op::Ge,
    Op::In,
    Op::IsNull,
    Op::IsNotNull,
];

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::IsNull => "is null",
            Op::IsNotNull => "is not null",
        }
    }
}

/// A literal: its value for the reference, and how the command writes it
/// (a JSON number, string or boolean; numbers are sometimes sent as strings).
#[derive(Debug, Clone)]
struct Lit {
    value: V,
    json: String,
}

#[derive(Debug, Clone)]
struct Cond {
    column: usize,
    op: Op,
    literals: Vec<Lit>,
}

/// `cell` against `literal`: `None` when the cell is null (unknown).
fn compare(cell: &V, literal: &V) -> Option<Ordering> {
    match (cell, literal) {
        (V::Null, _) => None,
        (V::I(x), V::I(y)) => Some(x.cmp(y)),
        (V::F(x), V::F(y)) => x.partial_cmp(y),
        (V::F(x), V::I(y)) => x.partial_cmp(&(*y as f64)),
        (V::S(x), V::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (V::B(x), V::B(y)) => Some(x.cmp(y)),
        other => panic!("the tests never compare {other:?}"),
    }
}

fn holds(cond: &Cond, row: &Row) -> bool {
    let cell = &row[cond.column];
    let ordering = |lit: &Lit| compare(cell, &lit.value);
    match cond.op {
        Op::IsNull => *cell == V::Null,
        Op::IsNotNull => *cell != V::Null,
        Op::In => cond
            .literals
            .iter()
            .any(|l| ordering(l) == Some(Ordering::Equal)),
        op => match ordering(&cond.literals[0]) {
            None => false,
            Some(o) => match op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                _ => unreachable!(),
            },
        },
    }
}

/// The answer the reference expects: matching rows, projected, limited.
fn expected(rows: &[Row], query: &Query) -> (Vec<Row>, usize) {
    let matching: Vec<&Row> = rows
        .iter()
        .filter(|r| query.filter.iter().all(|c| holds(c, r)))
        .collect();
    let total = matching.len();
    let limit = query.limit.map_or(usize::MAX, |l| l as usize);
    let projected = matching
        .into_iter()
        .take(limit)
        .map(|r| match &query.columns {
            None => r.clone(),
            Some(columns) => columns.iter().map(|&c| r[c].clone()).collect(),
        })
        .collect();
    (projected, total)
}

// ------------------------------------------------------------- the command

#[derive(Debug, Clone)]
struct Query {
    columns: Option<Vec<usize>>,
    filter: Vec<Cond>,
    partitions: usize,
    limit: Option<u64>,
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn command(dataset: &str, query: &Query, extra: &str) -> String {
    let mut parts = vec![format!("\"dataset\": {}", json_string(dataset))];
    if let Some(columns) = &query.columns {
        let names: Vec<String> = columns.iter().map(|&c| json_string(NAMES[c])).collect();
        parts.push(format!("\"columns\": [{}]", names.join(", ")));
    }
    if !query.filter.is_empty() {
        let conditions: Vec<String> = query
            .filter
            .iter()
            .map(|c| {
                let column = json_string(NAMES[c.column]);
                let op = json_string(c.op.text());
                match c.op {
                    Op::IsNull | Op::IsNotNull => format!("[{column}, {op}]"),
                    Op::In => {
                        let values: Vec<&str> =
                            c.literals.iter().map(|l| l.json.as_str()).collect();
                        format!("[{column}, {op}, [{}]]", values.join(", "))
                    }
                    _ => format!("[{column}, {op}, {}]", c.literals[0].json),
                }
            })
            .collect();
        parts.push(format!("\"filter\": [{}]", conditions.join(", ")));
    }
    parts.push(format!("\"partitions\": {}", query.partitions));
    if let Some(limit) = query.limit {
        parts.push(format!("\"limit\": {limit}"));
    }
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    format!("{{{}}}", parts.join(", "))
}

fn cmd(json: &str) -> FlightDescriptor {
    FlightDescriptor::new_cmd(json.as_bytes().to_vec())
}

/// GetFlightInfo of `json`, then every endpoint read in order.
async fn ask(
    client: &mut FlightClient,
    json: &str,
) -> Result<(FlightInfo, Vec<RecordBatch>), tonic::Status> {
    let info = client.get_flight_info(cmd(json)).await.map_err(status_of)?;
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint
            .ticket
            .clone()
            .expect("an endpoint without a ticket");
        let stream = client.do_get(ticket).await.map_err(status_of)?;
        let got: Vec<RecordBatch> = stream.try_collect().await.map_err(status_of)?;
        batches.extend(got);
    }
    Ok((info, batches))
}

/// The `row_groups` of a query ticket (a flat JSON list of numbers).
fn ticket_groups(info: &FlightInfo) -> Vec<Vec<usize>> {
    info.endpoint
        .iter()
        .map(|e| {
            let text = std::str::from_utf8(&e.ticket.as_ref().unwrap().ticket).unwrap();
            assert!(text.starts_with('{'), "a query ticket is JSON: {text}");
            let start = text.find("\"row_groups\":[").expect("row_groups") + 14;
            let end = start + text[start..].find(']').unwrap();
            text[start..end]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect()
        })
        .collect()
}

/// Writes `batches` as `name` in `repo` with the parquet crate (through a
/// temporary file and a rename, like an upload).
fn write_direct(repo: &Path, name: &str, batches: &[RecordBatch], props: WriterProperties) {
    let temp = repo.join(format!(".direct-{name}"));
    let mut writer =
        ArrowWriter::try_new(File::create(&temp).unwrap(), schema(), Some(props)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    std::fs::rename(&temp, repo.join(name)).unwrap();
}

fn row_group_count(path: &Path) -> usize {
    SerializedFileReader::new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .num_row_groups()
}

/// Checks one answer against the reference; the error says what differs.
fn check(
    what: &str,
    rows: &[Row],
    query: &Query,
    info: &FlightInfo,
    batches: &[RecordBatch],
) -> Result<(), String> {
    let (want, matching) = expected(rows, query);
    let got = rows_of(batches);
    let names: Vec<String> = info
        .clone()
        .try_decode_schema()
        .map_err(|e| format!("{what}: schema: {e}"))?
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let want_names: Vec<String> = match &query.columns {
        None => NAMES.iter().map(|n| n.to_string()).collect(),
        Some(columns) => columns.iter().map(|&c| NAMES[c].to_string()).collect(),
    };
    if names != want_names {
        return Err(format!("{what}: schema {names:?}, expected {want_names:?}"));
    }
    for batch in batches {
        let batch_names: Vec<&String> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name())
            .collect();
        if batch_names != want_names.iter().collect::<Vec<_>>() {
            return Err(format!("{what}: a batch has columns {batch_names:?}"));
        }
    }
    if got != want {
        return Err(format!(
            "{what}: {} rows, expected {}\n got: {:?}\nwant: {:?}",
            got.len(),
            want.len(),
            &got[..got.len().min(20)],
            &want[..want.len().min(20)]
        ));
    }
    if info.total_records != -1 {
        let exact = query.limit.map_or(matching, |l| matching.min(l as usize));
        if info.total_records != exact as i64 {
            return Err(format!(
                "{what}: total_records {} but the answer has {exact} rows",
                info.total_records
            ));
        }
    }
    if info.endpoint.len() > query.partitions {
        return Err(format!(
            "{what}: {} endpoints for partitions {}",
            info.endpoint.len(),
            query.partitions
        ));
    }
    // Endpoints are contiguous runs of row groups, in order, never empty.
    let flat: Vec<usize> = ticket_groups(info).concat();
    if ticket_groups(info).iter().any(Vec::is_empty) || flat.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("{what}: row groups {:?}", ticket_groups(info)));
    }
    Ok(())
}

// ------------------------------------------------------ the core, fixed flow

fn fixed_rows(n: usize) -> Vec<Row> {
    let words = ["", "a", "ab", "b", "ba", "c", "é"];
    (0..n)
        .map(|i| {
            let k = i as i64;
            vec![
                if i % 7 == 3 { V::Null } else { V::I(k) },
                if i % 5 == 1 {
                    V::Null
                } else {
                    V::S(words[i % words.len()].to_string())
                },
                if i % 11 == 0 {
                    V::Null
                } else {
                    V::F((k % 40) as f64 * 0.5 - 5.0)
                },
                if i % 13 == 2 {
                    V::Null
                } else {
                    V::B(i % 3 == 0)
                },
            ]
        })
        .collect()
}

fn lit_i(n: i64) -> Lit {
    Lit {
        value: V::I(n),
        json: n.to_string(),
    }
}

fn lit_s(s: &str) -> Lit {
    Lit {
        value: V::S(s.to_string()),
        json: json_string(s),
    }
}

fn lit_f(x: f64) -> Lit {
    Lit {
        value: V::F(x),
        json: format!("{x:?}"),
    }
}

#[tokio::test]
async fn projection_filter_and_partitions_match_an_in_memory_filter() {
    bounded(async {
        let server = TestServer::start();
        let mut client = server.client().await;
        let rows = fixed_rows(1000);
        let batches: Vec<RecordBatch> = rows.chunks(90).map(batch_of).collect();
        put(&mut client, "up", schema(), &batches).await.unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        write_direct(server.repo(), "direct", &batches, props);
        assert_eq!(row_group_count(&server.repo().join("up")), 1);
        assert_eq!(row_group_count(&server.repo().join("direct")), 10);

        let query = Query {
            // The file's order is a, s, f, t; the filter reads s and t, not projected.
            columns: Some(vec![2, 0]),
            filter: vec![
                Cond {
                    column: 0,
                    op: Op::Ge,
                    literals: vec![lit_i(250)],
                },
                Cond {
                    column: 0,
                    op: Op::Lt,
                    literals: vec![lit_i(882)],
                },
                Cond {
                    column: 1,
                    op: Op::Ne,
                    literals: vec![lit_s("b")],
                },
                Cond {
                    column: 3,
                    op: Op::IsNotNull,
                    literals: vec![],
                },
                Cond {
                    column: 2,
                    op: Op::In,
                    literals: vec![lit_f(-5.0), lit_f(-4.0), lit_i(0), lit_f(1.5), lit_i(7)],
                },
            ],
            partitions: 4,
            limit: None,
        };
        let (want, _) = expected(&rows, &query);
        assert!(want.len() > 20, "the filter keeps rows: {}", want.len());
        // The bounds are sharp: row 250 matches, row 882 would but for `< 882`.
        assert_eq!(want[0], [V::F(0.0), V::I(250)]);
        let mut open = query.clone();
        open.filter.remove(1);
        assert!(expected(&rows, &open)
            .0
            .contains(&vec![V::F(-4.0), V::I(882)]));
        for dataset in ["up", "direct"] {
            let json = command(dataset, &query, "");
            let (info, got) = ask(&mut client, &json).await.unwrap();
            check(dataset, &rows, &query, &info, &got).unwrap();
            let schema = client.get_schema(cmd(&json)).await.unwrap();
            let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
            assert_eq!(names, ["f", "a"]);
            if dataset == "direct" {
                // Groups 2..8 (rows 200..899) may match: 7 groups, 4 endpoints.
                let groups = ticket_groups(&info);
                assert_eq!(groups.len(), 4, "{groups:?}");
                assert_eq!(groups.concat(), (2..9).collect::<Vec<_>>());
                assert!(std::str::from_utf8(&info.app_metadata)
                    .unwrap()
                    .contains("\"row_groups\":10,\"row_groups_kept\":7"));
            } else {
                assert_eq!(ticket_groups(&info), [[0]]);
            }
            // PollFlightInfo answers the same.
            let poll = client.poll_flight_info(cmd(&json)).await.unwrap();
            let polled = poll.info.expect("PollInfo carries the FlightInfo");
            assert_eq!(polled.endpoint, info.endpoint);
        }
    })
    .await;
}

// ----------------------------------------------------------- the property

const DEFAULT_QUERY_SEED: u64 = 20_260_301;

fn query_cases() -> u32 {
    std::env::var("HANGAR_QUERY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn cell(column: usize) -> BoxedStrategy<V> {
    let value = match column {
        0 => (-20i64..20).prop_map(V::I).boxed(),
        1 => prop::sample::select(vec!["", "a", "ab", "b", "ba", "c", "é", "zz"])
            .prop_map(|s| V::S(s.to_string()))
            .boxed(),
        2 => (-10i32..10).prop_map(|k| V::F(f64::from(k) * 0.5)).boxed(),
        _ => any::<bool>().prop_map(V::B).boxed(),
    };
    prop_oneof![1 => Just(V::Null), 4 => value].boxed()
}

fn row() -> impl Strategy<Value = Row> {
    (cell(0), cell(1), cell(2), cell(3)).prop_map(|(a, s, f, t)| vec![a, s, f, t])
}

fn literal(column: usize) -> BoxedStrategy<Lit> {
    match column {
        0 => prop_oneof![
            3 => (-25i64..25).prop_map(lit_i),
            // Numbers as strings are parsed by the column's type.
            1 => (-25i64..25).prop_map(|n| Lit { value: V::I(n), json: format!("\"{n}\"") }),
        ]
        .boxed(),
        1 => prop::sample::select(vec!["", "a", "aa", "ab", "b", "bb", "c", "é", "zz", "A"])
            .prop_map(lit_s)
            .boxed(),
        2 => prop_oneof![
            (-12i32..12).prop_map(|k| lit_f(f64::from(k) * 0.5)),
            // An integer literal for a float column.
            (-6i64..6).prop_map(lit_i),
        ]
        .boxed(),
        _ => any::<bool>()
            .prop_map(|b| Lit {
                value: V::B(b),
                json: b.to_string(),
            })
            .boxed(),
    }
}

fn condition() -> impl Strategy<Value = Cond> {
    (0usize..4, prop::sample::select(OPS.to_vec())).prop_flat_map(|(column, op)| {
        let count = match op {
            Op::IsNull | Op::IsNotNull => 0..1,
            Op::In => 1..5,
            _ => 1..2,
        };
        prop::collection::vec(literal(column), count).prop_map(move |literals| Cond {
            column,
            op,
            literals,
        })
    })
}

fn projection() -> impl Strategy<Value = Option<Vec<usize>>> {
    prop::option::of(
        Just(vec![0usize, 1, 2, 3])
            .prop_shuffle()
            .prop_flat_map(|order| (1usize..=4).prop_map(move |n| order[..n].to_vec())),
    )
}

#[derive(Debug, Clone)]
struct Case {
    rows: Vec<Row>,
    batch_rows: usize,
    query: Query,
    group_rows: usize,
    statistics: EnabledStatistics,
    truncate: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(row(), 0..300),
        1usize..80,
        projection(),
        prop::collection::vec(condition(), 0..4),
        1usize..6,
        prop::option::weighted(0.25, 0u64..120),
        1usize..90,
        prop::sample::select(vec![
            EnabledStatistics::None,
            EnabledStatistics::Chunk,
            EnabledStatistics::Page,
        ]),
        prop::option::of(1usize..3),
    )
        .prop_map(
            |(
                rows,
                batch_rows,
                columns,
                filter,
                partitions,
                limit,
                group_rows,
                statistics,
                truncate,
            )| Case {
                rows,
                batch_rows,
                query: Query {
                    columns,
                    filter,
                    partitions,
                    limit,
                },
                group_rows,
                statistics,
                truncate,
            },
        )
}

/// hangar's answer to a random query on a random table equals the reference
/// evaluator's, on a dataset uploaded through hangar and on one written with
/// small row groups (pruned by statistics, several endpoints).
#[test]
fn random_filters_match_the_reference_evaluator() {
    let seed = common::seed_from_env("HANGAR_QUERY_SEED", DEFAULT_QUERY_SEED);
    eprintln!(
        "query property: {} cases (HANGAR_QUERY_CASES), HANGAR_QUERY_SEED={seed}",
        query_cases()
    );
    let mut seed_bytes = [0u8; 32];
    let mut x = seed;
    for chunk in seed_bytes.chunks_mut(8) {
        x = x
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let config = Config {
        cases: query_cases(),
        failure_persistence: None,
        // Each case is a few RPCs; shrinking stays bounded.
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = TestServer::start();
    let client = RefCell::new(runtime.block_on(server.client()));
    let result = runner.run(&case(), |case| {
        let mut client = client.borrow_mut();
        runtime.block_on(async {
            let batches: Vec<RecordBatch> =
                case.rows.chunks(case.batch_rows).map(batch_of).collect();
            put(&mut client, "up", schema(), &batches)
                .await
                .map_err(|e| TestCaseError::fail(format!("upload: {e}")))?;
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(case.group_rows))
                .set_statistics_enabled(case.statistics)
                .set_statistics_truncate_length(case.truncate)
                .build();
            write_direct(server.repo(), "direct", &batches, props);
            for dataset in ["up", "direct"] {
                let json = command(dataset, &case.query, "");
                let (info, got) = ask(&mut client, &json)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{dataset}: {json}: {e}")))?;
                check(dataset, &case.rows, &case.query, &info, &got)
                    .map_err(|e| TestCaseError::fail(format!("{json}\n{e}")))?;
            }
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}\n(replay: HANGAR_QUERY_SEED={seed})");
    }
}

// ------------------------------------------------------ IPC body compression

/// The body compression codec of each record batch message of a DoGet.
async fn batch_codecs(
    server: &TestServer,
    ticket: Bytes,
) -> Vec<Option<arrow_ipc::CompressionType>> {
    let mut raw = FlightServiceClient::new(server.channel().await);
    let mut stream = raw.do_get(Ticket { ticket }).await.unwrap().into_inner();
    let mut codecs = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message.unwrap();
        let header = arrow_ipc::root_as_message(&message.data_header).unwrap();
        if let Some(batch) = header.header_as_record_batch() {
            codecs.push(batch.compression().map(|c| c.codec()));
        }
    }
    codecs
}

#[tokio::test]
async fn query_compression_and_the_server_default_reach_the_wire() {
    bounded(async {
        use arrow_ipc::CompressionType as C;
        let server = TestServer::start_with_args(["--ipc-compression", "zstd"]);
        let mut client = server.client().await;
        let rows = fixed_rows(300);
        let batches: Vec<RecordBatch> = rows.chunks(100).map(batch_of).collect();
        put(&mut client, "d", schema(), &batches).await.unwrap();
        // The plain ticket: the server's default.
        let plain = batch_codecs(&server, Bytes::from_static(b"d")).await;
        assert!(
            !plain.is_empty() && plain.iter().all(|c| *c == Some(C::ZSTD)),
            "{plain:?}"
        );
        let query = Query {
            columns: Some(vec![1, 0]),
            filter: vec![Cond {
                column: 0,
                op: Op::Gt,
                literals: vec![lit_i(10)],
            }],
            partitions: 1,
            limit: None,
        };
        for (extra, codec) in [
            ("", Some(C::ZSTD)),
            ("\"compression\": \"lz4\"", Some(C::LZ4_FRAME)),
            ("\"compression\": \"zstd\"", Some(C::ZSTD)),
            ("\"compression\": \"none\"", None),
        ] {
            let json = command("d", &query, extra);
            let (info, got) = ask(&mut client, &json).await.unwrap();
            check(&json, &rows, &query, &info, &got).unwrap();
            let ticket = info.endpoint[0].ticket.clone().unwrap().ticket;
            let codecs = batch_codecs(&server, ticket).await;
            assert!(
                !codecs.is_empty() && codecs.iter().all(|c| *c == codec),
                "{json}: {codecs:?}"
            );
        }
    })
    .await;
}

// ------------------------------ a ticket reads only the chunks it needs

/// Overwrites the bytes of column `column`'s chunk in row group `group` with
/// garbage of the same length: the footer stays valid, the chunk does not.
fn corrupt_chunk(path: &Path, group: usize, column: usize) -> (u64, u64) {
    let (start, len) = SerializedFileReader::new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .row_group(group)
        .column(column)
        .byte_range();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    file.write_all(&vec![0xA5; len as usize]).unwrap();
    file.sync_all().unwrap();
    (start, len)
}

/// hangar's writer starts a new row group every 1,048,576 rows.
const HANGAR_GROUP_ROWS: usize = 1024 * 1024;

#[tokio::test]
async fn a_ticket_reads_only_the_column_chunks_and_row_groups_it_needs() {
    bounded(async {
        let mut server = TestServer::start();
        let mut client = server.client().await;
        let rows = HANGAR_GROUP_ROWS + 1000;
        let id = Int64Array::from_iter_values(0..rows as i64);
        let v = Int32Array::from_iter_values((0..rows as i32).map(|i| i % 1000));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(id), Arc::new(v)]).unwrap();
        let batches: Vec<RecordBatch> = (0..rows)
            .step_by(65536)
            .map(|at| batch.slice(at, 65536.min(rows - at)))
            .collect();
        put(&mut client, "d", schema, &batches).await.unwrap();
        let path = server.repo().join("d");
        let meta = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = meta.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [HANGAR_GROUP_ROWS as i64, 1000]);
        // total_bytes: the needed chunks' compressed sizes, from the footer.
        let chunk = |g: usize, c: usize| meta.metadata().row_group(g).column(c).compressed_size();
        let (info, _) = (
            client
                .get_flight_info(cmd(r#"{"dataset": "d", "columns": ["v"], "filter": [["id", ">=", 1048576]]}"#))
                .await
                .unwrap(),
            (),
        );
        assert_eq!(info.total_bytes, chunk(1, 0) + chunk(1, 1));
        assert_eq!(info.total_records, 1000);
        drop(meta);

        // Column v of row group 1 (the last 1000 rows) becomes garbage.
        corrupt_chunk(&path, 1, 1);

        // Not needing that chunk: every id (all groups, column id only) ...
        let (info, got) = ask(&mut client, r#"{"dataset": "d", "columns": ["id"], "partitions": 2}"#)
            .await
            .unwrap();
        assert_eq!(info.endpoint.len(), 2);
        let ids: Vec<i64> = got
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect();
        assert_eq!(ids, (0..rows as i64).collect::<Vec<_>>());
        // ... a filter on id, projecting id ...
        let (_, got) = ask(
            &mut client,
            r#"{"dataset": "d", "columns": ["id"], "filter": [["id", ">", 1049000]]}"#,
        )
        .await
        .unwrap();
        assert_eq!(rows_of(&got).len(), rows - 1049001);
        // ... and both columns of the rows whose group the filter prunes.
        let (info, got) = ask(
            &mut client,
            r#"{"dataset": "d", "columns": ["v", "id"], "filter": [["id", "<", 1048576], ["v", "=", 7]]}"#,
        )
        .await
        .unwrap();
        assert_eq!(ticket_groups(&info), [[0]]);
        let got = rows_of(&got);
        assert_eq!(got.len(), HANGAR_GROUP_ROWS / 1000 + 1);
        assert!(got.iter().all(|r| r[0] == V::I(7)));

        // Needing it fails with an error, never a panic or a hang: the
        // query's full read, a filter on v alone, and the plain ticket.
        for json in [
            r#"{"dataset": "d"}"#,
            r#"{"dataset": "d", "columns": ["id"], "filter": [["v", "=", 7]]}"#,
        ] {
            let err = ask(&mut client, json).await.unwrap_err();
            assert_eq!(err.code(), Code::Internal, "{json}: {err}");
            assert!(err.message().contains("reading dataset 'd'"), "{json}: {err}");
        }
        let stream = client.do_get(common::ticket("d")).await.map_err(status_of);
        let err = match stream {
            Err(status) => status,
            Ok(stream) => stream
                .try_collect::<Vec<_>>()
                .await
                .map(|b| b.len())
                .map_err(status_of)
                .expect_err("a full read of a corrupt chunk must fail"),
        };
        assert_eq!(err.code(), Code::Internal, "{err}");
        assert!(server.alive(), "the server survived the corrupt chunk");
        let (_, got) = ask(&mut client, r#"{"dataset": "d", "columns": ["id"], "limit": 3}"#)
            .await
            .unwrap();
        assert_eq!(rows_of(&got), [[V::I(0)], [V::I(1)], [V::I(2)]]);
        let log = server.stderr();
        assert!(!log.contains("panicked"), "{log}");
    })
    .await;
}
