//! What a server knows, printed for people or scripts: `ls`, `info`, `head`,
//! `actions`. These only read; the commands that change data live in
//! `action.rs` and `transfer.rs`.
//!
//! Text output is aligned columns on stdout; `--json` writes one JSON value.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Metadata, Schema};
use prost::bytes::Bytes;

use super::connect::Connector;
use super::transfer::{invalid_stream, open_endpoint, path_descriptor};
use super::Failure;
use crate::ipc::{self, Decoded, Decoder};
use crate::json::Value;
use crate::proto::{Criteria, Empty, FlightEndpoint, FlightInfo};

/// Longest cell `head` prints; longer values end in `…`.
const MAX_CELL_CHARS: usize = 48;
/// Longest metadata value `info` prints as text (`--json` prints all).
const MAX_METADATA_CHARS: usize = 72;

/// Writes to stdout. A closed pipe (`hangar ls | head -1`) is not an error.
pub(super) fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::io("writing to stdout", e))
        }
        _ => Ok(()),
    }
}

/// One line of `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listing {
    name: String,
    rows: Option<u64>,
    bytes: Option<u64>,
    columns: Option<usize>,
}

impl Listing {
    fn of(info: &FlightInfo) -> Listing {
        Listing {
            name: flight_name(info),
            // Flight says -1 for "unknown".
            rows: u64::try_from(info.total_records).ok(),
            bytes: u64::try_from(info.total_bytes).ok(),
            columns: decode_schema(&info.schema).map(|s| s.fields().len()),
        }
    }
}

/// The name a FlightInfo goes by: its PATH, else its command, else its first
/// ticket.
fn flight_name(info: &FlightInfo) -> String {
    if let Some(descriptor) = &info.flight_descriptor {
        if !descriptor.path.is_empty() {
            return descriptor.path.join("/");
        }
        if !descriptor.cmd.is_empty() {
            return String::from_utf8_lossy(&descriptor.cmd).into_owned();
        }
    }
    info.endpoint
        .iter()
        .find_map(|e| e.ticket.as_ref())
        .map(|t| printable(&t.ticket))
        .unwrap_or_else(|| "-".into())
}

fn decode_schema(bytes: &[u8]) -> Option<Schema> {
    if bytes.is_empty() {
        return None;
    }
    ipc::schema_from_ipc(bytes).ok()
}

/// Bytes as text when they are printable UTF-8, else as hex.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => {
            let hex: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
            let more = if bytes.len() > 32 { "…" } else { "" };
            format!("0x{hex}{more}")
        }
    }
}

fn count(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `hangar ls [PREFIX] [--json]`.
pub async fn ls(connector: &mut Connector, prefix: &str, json: bool) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let criteria = Criteria {
        expression: Bytes::from(prefix.as_bytes().to_vec()),
    };
    let mut stream = client.list_flights(criteria).await?.into_inner();
    let mut listings = Vec::new();
    while let Some(info) = stream.message().await? {
        listings.push(Listing::of(&info));
    }
    emit(&if json {
        ls_json(&listings)
    } else {
        ls_text(&listings)
    })
}

fn ls_text(listings: &[Listing]) -> String {
    if listings.is_empty() {
        return String::new();
    }
    let rows = listings
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                count(l.rows),
                count(l.bytes),
                count(l.columns),
            ]
        })
        .collect::<Vec<_>>();
    columns(
        &["NAME", "ROWS", "BYTES", "COLUMNS"],
        &rows,
        &[false, true, true, true],
    )
}

fn ls_json(listings: &[Listing]) -> String {
    let items = listings.iter().map(|l| {
        Value::object([
            ("name", Value::from(l.name.as_str())),
            ("rows", Value::from(l.rows)),
            ("bytes", Value::from(l.bytes)),
            ("columns", Value::from(l.columns)),
        ])
    });
    format!("{}\n", Value::Array(items.collect()))
}

/// `hangar info NAME [--json]`.
pub async fn info(
    connector: &mut Connector,
    name: &str,
    select: &super::Selection,
    json: bool,
) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let descriptor = match select.query(name) {
        Some(query) => super::transfer::command_descriptor(&query),
        None => path_descriptor(name),
    };
    let info = client.get_flight_info(descriptor).await?.into_inner();
    let schema = if info.schema.is_empty() {
        None
    } else {
        Some(ipc::schema_from_ipc(&info.schema).map_err(|e| {
            Failure::local(format!(
                "the server sent an invalid schema: {}",
                e.message()
            ))
        })?)
    };
    emit(&if json {
        info_json(&info, schema.as_ref())
    } else {
        info_text(&info, schema.as_ref())
    })
}

fn info_text(info: &FlightInfo, schema: Option<&Schema>) -> String {
    let mut out = String::new();
    let listing = Listing::of(info);
    out.push_str(&format!("name:       {}\n", listing.name));
    out.push_str(&format!("rows:       {}\n", count(listing.rows)));
    out.push_str(&format!("bytes:      {}\n", count(listing.bytes)));
    // A hangar query says what its statistics pruned.
    let plan = std::str::from_utf8(&info.app_metadata)
        .ok()
        .and_then(|text| Value::parse(text).ok());
    if let Some(plan) = plan {
        let field = |key: &str| plan.get(key).and_then(Value::as_u64);
        if let (Some(total), Some(kept)) = (field("row_groups"), field("row_groups_kept")) {
            out.push_str(&format!(
                "row groups: {kept} of {total} read, {} pruned by statistics\n",
                total.saturating_sub(kept)
            ));
        }
        if let Some(bytes) = field("estimated_bytes") {
            out.push_str(&format!("reads:      ~{bytes} bytes (estimated)\n"));
        }
    }
    match schema {
        None => out.push_str("schema:     (none sent)\n"),
        Some(schema) => {
            out.push_str(&format!("schema:     {} columns\n", schema.fields().len()));
            let rows: Vec<Vec<String>> = schema
                .fields()
                .iter()
                .map(|f| {
                    let nullable = if f.is_nullable() { "" } else { " not null" };
                    vec![
                        format!("  {}", escape(f.name())),
                        format!("{}{nullable}", type_text(f)),
                    ]
                })
                .collect();
            let table = columns(&["", ""], &rows, &[false, false]);
            // Each field's own metadata goes right under its line.
            for (line, field) in table.lines().skip(1).zip(schema.fields()) {
                out.push_str(line.trim_end());
                out.push('\n');
                for (key, value) in field.metadata() {
                    out.push_str(&format!("      {key} = {}\n", shorten(value)));
                }
            }
            if !schema.metadata().is_empty() {
                out.push_str("metadata:\n");
                for (key, value) in schema.metadata() {
                    out.push_str(&format!("  {key} = {}\n", shorten(value)));
                }
            }
        }
    }
    out.push_str(&format!("endpoints:  {}\n", info.endpoint.len()));
    for (i, endpoint) in info.endpoint.iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", i + 1, endpoint_text(endpoint)));
    }
    out
}

fn type_text(field: &Field) -> String {
    match field.data_type() {
        DataType::Dictionary(key, value) => format!("dictionary<values={value}, indices={key}>"),
        other => other.to_string(),
    }
}

fn endpoint_text(endpoint: &FlightEndpoint) -> String {
    let ticket = endpoint
        .ticket
        .as_ref()
        .map(|t| format!("ticket {:?}", printable(&t.ticket)))
        .unwrap_or_else(|| "no ticket".into());
    if endpoint.location.is_empty() {
        format!("{ticket} on this server")
    } else {
        let locations: Vec<&str> = endpoint.location.iter().map(|l| l.uri.as_str()).collect();
        format!("{ticket} at {}", locations.join(", "))
    }
}

fn shorten(value: &str) -> String {
    let clean = escape(value);
    if clean.chars().count() <= MAX_METADATA_CHARS {
        return clean;
    }
    let head: String = clean.chars().take(MAX_METADATA_CHARS).collect();
    format!("{head}… ({} bytes)", value.len())
}

fn info_json(info: &FlightInfo, schema: Option<&Schema>) -> String {
    let listing = Listing::of(info);
    let schema = schema.map(|schema| {
        let fields = schema.fields().iter().map(|field| {
            let dictionary = match field.data_type() {
                DataType::Dictionary(key, value) => Value::object([
                    ("indices", Value::from(key.to_string())),
                    ("values", Value::from(value.to_string())),
                ]),
                _ => Value::Null,
            };
            Value::object([
                ("name", Value::from(field.name().as_str())),
                ("type", Value::from(field.data_type().to_string())),
                ("nullable", Value::from(field.is_nullable())),
                ("dictionary", dictionary),
                ("metadata", json_map(field.metadata())),
            ])
        });
        Value::object([
            ("fields", Value::Array(fields.collect())),
            ("metadata", json_map(schema.metadata())),
        ])
    });
    let endpoints = info.endpoint.iter().map(|endpoint| {
        let ticket = endpoint.ticket.as_ref().map(|t| printable(&t.ticket));
        let locations = endpoint.location.iter();
        Value::object([
            ("ticket", Value::from(ticket)),
            (
                "locations",
                Value::Array(locations.map(|l| Value::from(l.uri.as_str())).collect()),
            ),
        ])
    });
    let value = Value::object([
        ("name", Value::from(listing.name)),
        ("rows", Value::from(listing.rows)),
        ("bytes", Value::from(listing.bytes)),
        ("ordered", Value::from(info.ordered)),
        ("schema", schema.unwrap_or(Value::Null)),
        ("endpoints", Value::Array(endpoints.collect())),
    ]);
    format!("{value}\n")
}

/// Metadata iterates in key order, so output is stable.
fn json_map(map: &Metadata) -> Value {
    Value::object(
        map.iter()
            .map(|(key, value)| (key.as_str(), Value::from(value.as_str()))),
    )
}

/// `hangar head NAME [-n N]`: reads endpoints in order until it has `rows`
/// rows, then drops the stream, which cancels the rest of the transfer.
pub async fn head(connector: &mut Connector, name: &str, rows: usize) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let info = client
        .get_flight_info(path_descriptor(name))
        .await?
        .into_inner();
    let mut schema = decode_schema(&info.schema);
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut have = 0;
    'endpoints: for index in 0..info.endpoint.len() {
        if have >= rows {
            break;
        }
        let mut stream = open_endpoint(connector, &info, index).await?;
        let mut decoder = Decoder::new();
        while let Some(message) = stream.message().await? {
            match decoder.decode(&message).map_err(invalid_stream)? {
                Decoded::Schema(got) => {
                    schema.get_or_insert_with(|| got.as_ref().clone());
                }
                Decoded::Batch(batch) => {
                    let take = batch.num_rows().min(rows - have);
                    have += take;
                    batches.push(batch.slice(0, take));
                    if have >= rows {
                        break 'endpoints;
                    }
                }
                Decoded::Nothing => {}
            }
        }
    }
    let schema = match (schema, batches.first()) {
        (_, Some(batch)) => batch.schema().as_ref().clone(),
        (Some(schema), None) => schema,
        (None, None) => return Err(Failure::local("the server sent no schema for the dataset")),
    };
    emit(&table(&schema, &batches)?)
}

/// Renders batches as an aligned table with a header of column names.
fn table(schema: &Schema, batches: &[RecordBatch]) -> Result<String, Failure> {
    let headers: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let right: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let options = FormatOptions::default().with_null("null");
    let failed = |e: arrow_schema::ArrowError| Failure::local(format!("formatting values: {e}"));
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        for row in 0..batch.num_rows() {
            let cells = formatters
                .iter()
                .map(|f| f.value(row).try_to_string().map(|text| cell(&text)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            rows.push(cells);
        }
    }
    Ok(columns(&headers, &rows, &right))
}

/// One cell: control characters escaped so a row stays one line, long
/// values cut.
fn cell(text: &str) -> String {
    let clean = escape(text);
    if clean.chars().count() <= MAX_CELL_CHARS {
        clean
    } else {
        let mut cut: String = clean.chars().take(MAX_CELL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

fn escape(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "\\t".to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Aligned columns separated by two spaces: a header line, then the rows.
/// Right-aligned columns suit numbers; the last column gets no padding.
fn columns(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, value) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(value));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(width(value));
            if right.get(i).copied().unwrap_or(false) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(value);
            } else {
                line.push_str(value);
                if i != last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `hangar actions`.
pub async fn actions(connector: &mut Connector) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let mut stream = client.list_actions(Empty {}).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(action) = stream.message().await? {
        rows.push(vec![escape(&action.r#type), escape(&action.description)]);
    }
    if rows.is_empty() {
        return Ok(());
    }
    emit(&columns(&["TYPE", "DESCRIPTION"], &rows, &[false, false]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::types::Int32Type;
    use arrow_array::{Array, DictionaryArray, Float64Array, Int64Array, StringArray};

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 1000])),
                Arc::new(StringArray::from(vec![Some("two\nlines"), None])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(12.25)])),
            ],
        )
        .unwrap();
        assert_eq!(
            table(&schema, &[batch]).unwrap(),
            "  id  name        score\n\
             \x20  1  two\\nlines    0.5\n\
             1000  null        12.25\n"
        );
    }

    #[test]
    fn dictionaries_show_values_and_long_cells_are_cut() {
        let dict: DictionaryArray<Int32Type> = vec!["a", "bb", "a"].into_iter().collect();
        let long = "x".repeat(100);
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", dict.data_type().clone(), true),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(dict),
                Arc::new(StringArray::from(vec![long.as_str(), "y", "z"])),
            ],
        )
        .unwrap();
        let text = table(&schema, &[batch]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "bb  y");
        assert!(lines[1].ends_with('…'), "{}", lines[1]);
        assert_eq!(lines[1].chars().count(), "bb  ".len() + MAX_CELL_CHARS);
    }

    #[test]
    fn ls_prints_unknown_counts_as_dash_and_null() {
        let listings = vec![
            Listing {
                name: "trips".into(),
                rows: Some(1200),
                bytes: Some(34_000),
                columns: Some(3),
            },
            Listing {
                name: "we\"ird".into(),
                rows: None,
                bytes: None,
                columns: None,
            },
        ];
        assert_eq!(
            ls_text(&listings),
            "NAME    ROWS  BYTES  COLUMNS\n\
             trips   1200  34000        3\n\
             we\"ird     -      -        -\n"
        );
        assert_eq!(
            ls_json(&listings),
            "[{\"name\":\"trips\",\"rows\":1200,\"bytes\":34000,\"columns\":3},\
             {\"name\":\"we\\\"ird\",\"rows\":null,\"bytes\":null,\"columns\":null}]\n"
        );
        assert_eq!(ls_json(&[]), "[]\n");
        assert_eq!(ls_text(&[]), "");
    }

    #[test]
    fn tickets_print_as_text_or_hex() {
        assert_eq!(printable(b"trips"), "trips");
        assert_eq!(printable(&[0, 255]), "0x00ff");
    }
}
