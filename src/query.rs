//! The query command: which columns and rows of a dataset a client wants, and
//! the tickets that fetch them.
//!
//! A CMD descriptor carries a small JSON object ([`Query`]); GetFlightInfo
//! answers with one endpoint per contiguous run of row groups, each ticket
//! itself readable JSON ([`Scan`]). This module owns that language: parsing
//! and checking it (unknown keys are errors), typing literals by the column
//! they are compared with, evaluating a filter on a batch, and deciding from
//! a row group's statistics whether it can hold matching rows. Parquet itself
//! stays in [`crate::store`], which hands statistics in as Arrow arrays.
//!
//! Grammar (README, "Queries"):
//!
//! ```text
//! {"dataset": NAME, "columns": [NAME, ...], "filter": [CONDITION, ...],
//!  "partitions": N, "limit": N, "compression": "none" | "lz4" | "zstd"}
//! CONDITION = [COLUMN, "=" | "!=" | "<" | "<=" | ">" | ">=", LITERAL]
//!           | [COLUMN, "in", [LITERAL, ...]]
//!           | [COLUMN, "is null"] | [COLUMN, "is not null"]
//! ```

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BinaryViewArray, BooleanArray, Datum,
    Float64Array, Int64Array, LargeBinaryArray, LargeStringArray, PrimitiveArray, RecordBatch,
    Scalar, StringArray, StringViewArray, UInt64Array,
};
use arrow_schema::{DataType, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::json::Value;
use crate::store::validate_name;

/// Most endpoints one query may ask for.
pub const MAX_PARTITIONS: usize = 1024;
/// Most conditions, and most values of one `in` list.
const MAX_CONDITIONS: usize = 64;
const MAX_IN_VALUES: usize = 1024;

/// IPC body compression of a download (Arrow's own, which clients undo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcCompression {
    None,
    Lz4,
    Zstd,
}

impl std::str::FromStr for IpcCompression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<IpcCompression, String> {
        match s {
            "none" => Ok(IpcCompression::None),
            "lz4" => Ok(IpcCompression::Lz4),
            "zstd" => Ok(IpcCompression::Zstd),
            other => Err(format!(
                "unknown IPC compression '{other}' (expected none, lz4 or zstd)"
            )),
        }
    }
}

impl IpcCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            IpcCompression::None => "none",
            IpcCompression::Lz4 => "lz4",
            IpcCompression::Zstd => "zstd",
        }
    }

    /// The Arrow IPC write options that produce it.
    pub fn write_options(self) -> arrow_ipc::writer::IpcWriteOptions {
        let codec = match self {
            IpcCompression::None => None,
            IpcCompression::Lz4 => Some(arrow_ipc::CompressionType::LZ4_FRAME),
            IpcCompression::Zstd => Some(arrow_ipc::CompressionType::ZSTD),
        };
        arrow_ipc::writer::IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap_or_default()
    }
}

/// A comparison operator of the filter grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
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

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "in" => Op::In,
            "is null" => Op::IsNull,
            "is not null" => Op::IsNotNull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
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

/// One condition as the client wrote it; literals are typed when bound to
/// a schema ([`Condition::bind`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    /// One literal, the `in` list, or none for the null tests.
    pub values: Vec<Value>,
}

/// What a client asks for: the CMD descriptor's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub dataset: String,
    /// Projection, in the order the client wants; `None`: every column.
    pub columns: Option<Vec<String>>,
    /// A conjunction: a row is returned when every condition holds.
    pub filter: Vec<Condition>,
    pub partitions: usize,
    pub limit: Option<u64>,
    pub compression: Option<IpcCompression>,
}

/// What one ticket fetches: a query restricted to some row groups of one
/// version of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub dataset: String,
    pub columns: Option<Vec<String>>,
    pub filter: Vec<Condition>,
    pub row_groups: Vec<usize>,
    pub limit: Option<u64>,
    pub compression: Option<IpcCompression>,
    /// The dataset version the row group numbers refer to.
    pub version: String,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// Reads a JSON object, refusing keys it does not know.
fn object<'a>(value: &'a Value, what: &str, known: &[&str]) -> Result<&'a [(String, Value)]> {
    let Value::Object(fields) = value else {
        return Err(invalid(format!("the {what} must be a JSON object")));
    };
    if let Some((key, _)) = fields.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown key \"{key}\" in the {what}; known keys: {}",
            known.join(", ")
        )));
    }
    Ok(fields)
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| invalid(format!("the {what} is not UTF-8 JSON")))?;
    Value::parse(text).map_err(|e| invalid(format!("the {what} is not valid JSON: {e}")))
}

fn dataset_of(value: Option<&Value>, what: &str) -> Result<String> {
    let name = value
        .ok_or_else(|| invalid(format!("the {what} needs \"dataset\", the dataset name")))?
        .as_str()
        .ok_or_else(|| invalid(format!("\"dataset\" in the {what} must be a string")))?;
    validate_name(name)?;
    Ok(name.to_string())
}

fn columns_of(value: Option<&Value>) -> Result<Option<Vec<String>>> {
    let Some(value) = value else { return Ok(None) };
    let Value::Array(items) = value else {
        return Err(invalid(
            "\"columns\" must be a list of column names, e.g. [\"ts\", \"fare\"]",
        ));
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        let name = item
            .as_str()
            .ok_or_else(|| invalid("\"columns\" must hold column names (strings)"))?;
        if names.iter().any(|n: &String| n == name) {
            return Err(invalid(format!(
                "column \"{name}\" appears twice in \"columns\""
            )));
        }
        names.push(name.to_string());
    }
    Ok(Some(names))
}

fn filter_of(value: Option<&Value>) -> Result<Vec<Condition>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(invalid(
            "\"filter\" must be a list of conditions, e.g. [[\"ts\", \">=\", \"2024-06-01\"]]",
        ));
    };
    if items.len() > MAX_CONDITIONS {
        return Err(invalid(format!(
            "\"filter\" has {} conditions; at most {MAX_CONDITIONS}",
            items.len()
        )));
    }
    items.iter().map(condition_of).collect()
}

fn condition_of(value: &Value) -> Result<Condition> {
    let shape = "each filter condition is [COLUMN, OP, VALUE], [COLUMN, \"in\", [VALUES]], \
                 [COLUMN, \"is null\"] or [COLUMN, \"is not null\"]; OP is one of = != < <= > >=";
    let Value::Array(parts) = value else {
        return Err(invalid(shape));
    };
    let (Some(column), Some(op)) = (
        parts.first().and_then(Value::as_str),
        parts.get(1).and_then(Value::as_str),
    ) else {
        return Err(invalid(shape));
    };
    let op = Op::parse(op).ok_or_else(|| {
        invalid(format!(
            "unknown operator \"{op}\" in the filter on \"{column}\"; {shape}"
        ))
    })?;
    let values = match (op, &parts[2..]) {
        (Op::IsNull | Op::IsNotNull, []) => Vec::new(),
        (Op::In, [Value::Array(values)]) if !values.is_empty() => {
            if values.len() > MAX_IN_VALUES {
                return Err(invalid(format!(
                    "the \"in\" list on \"{column}\" has {} values; at most {MAX_IN_VALUES}",
                    values.len()
                )));
            }
            values.clone()
        }
        (Op::In, _) => {
            return Err(invalid(format!(
                "\"in\" on \"{column}\" takes a non-empty list of values"
            )))
        }
        (Op::IsNull | Op::IsNotNull, _) => {
            return Err(invalid(format!(
                "\"{}\" on \"{column}\" takes no value",
                op.as_str()
            )))
        }
        (_, [value]) => vec![value.clone()],
        _ => return Err(invalid(shape)),
    };
    if values
        .iter()
        .any(|v| matches!(v, Value::Null | Value::Array(_) | Value::Object(_)))
    {
        return Err(invalid(format!(
            "the filter on \"{column}\" compares with a null, list or object; use \
             \"is null\" for nulls and a number, string or boolean otherwise"
        )));
    }
    Ok(Condition {
        column: column.to_string(),
        op,
        values,
    })
}

fn count_of(value: Option<&Value>, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
    let Some(value) = value else { return Ok(None) };
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!(
            "\"{key}\" must be a whole number from {min} to {max}"
        ))),
    }
}

fn compression_of(value: Option<&Value>) -> Result<Option<IpcCompression>> {
    let Some(value) = value else { return Ok(None) };
    let text = value
        .as_str()
        .ok_or_else(|| invalid("\"compression\" must be \"none\", \"lz4\" or \"zstd\""))?;
    text.parse().map(Some).map_err(|e: String| invalid(e))
}

fn get<'a>(fields: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Query {
    /// Parses a CMD descriptor's bytes.
    pub fn from_command(bytes: &[u8]) -> Result<Query> {
        let value = parse_json(bytes, "query command")?;
        let known = [
            "dataset",
            "columns",
            "filter",
            "partitions",
            "limit",
            "compression",
        ];
        let fields = object(&value, "query command", &known)?;
        Ok(Query {
            dataset: dataset_of(get(fields, "dataset"), "query command")?,
            columns: columns_of(get(fields, "columns"))?,
            filter: filter_of(get(fields, "filter"))?,
            partitions: count_of(
                get(fields, "partitions"),
                "partitions",
                1,
                MAX_PARTITIONS as u64,
            )?
            .unwrap_or(1) as usize,
            limit: count_of(get(fields, "limit"), "limit", 0, i64::MAX as u64)?,
            compression: compression_of(get(fields, "compression"))?,
        })
    }

    /// Checks the query against the dataset's schema and returns the schema of
    /// the answer (the projection, in the order asked) with the bound filter.
    pub fn bind(&self, schema: &Schema) -> Result<(SchemaRef, Vec<Predicate>)> {
        let projected = project(schema, self.columns.as_deref())?;
        let predicates = self
            .filter
            .iter()
            .map(|c| c.bind(schema))
            .collect::<Result<Vec<_>>>()?;
        Ok((projected, predicates))
    }
}

/// The schema of `columns` of `schema`, in that order (all when `None`).
pub fn project(schema: &Schema, columns: Option<&[String]>) -> Result<SchemaRef> {
    let Some(columns) = columns else {
        return Ok(Arc::new(schema.clone()));
    };
    let fields = columns
        .iter()
        .map(|name| {
            schema
                .field_with_name(name)
                .cloned()
                .map_err(|_| unknown_column(schema, name))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

fn unknown_column(schema: &Schema, name: &str) -> Error {
    let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    invalid(format!(
        "the dataset has no column \"{name}\"; its columns: {}",
        known.join(", ")
    ))
}

impl Condition {
    fn to_json(&self) -> Value {
        let mut parts = vec![
            Value::from(self.column.as_str()),
            Value::from(self.op.as_str()),
        ];
        match self.op {
            Op::IsNull | Op::IsNotNull => {}
            Op::In => parts.push(Value::Array(self.values.clone())),
            _ => parts.extend(self.values.iter().cloned()),
        }
        Value::Array(parts)
    }

    /// Types the literals by the column's type (its value type for a
    /// dictionary column).
    pub fn bind(&self, schema: &Schema) -> Result<Predicate> {
        let field = schema
            .field_with_name(&self.column)
            .map_err(|_| unknown_column(schema, &self.column))?;
        let value_type = match field.data_type() {
            DataType::Dictionary(_, value) => value.as_ref().clone(),
            other => other.clone(),
        };
        if value_type.is_nested() && !matches!(self.op, Op::IsNull | Op::IsNotNull) {
            return Err(invalid(format!(
                "column \"{}\" has type {value_type}, which filters can only test with \
                 \"is null\" / \"is not null\"",
                self.column
            )));
        }
        let literals = self
            .values
            .iter()
            .map(|v| literal(&self.column, v, &value_type))
            .collect::<Result<Vec<_>>>()?;
        Ok(Predicate {
            column: self.column.clone(),
            op: self.op,
            value_type,
            literals,
        })
    }
}

/// A JSON literal as a one-element array of `target`: strings are parsed the
/// way Arrow casts text (ISO 8601 for dates and timestamps), numbers and
/// booleans must suit the column.
fn literal(column: &str, value: &Value, target: &DataType) -> Result<ArrayRef> {
    if matches!(value, Value::Null | Value::Array(_) | Value::Object(_)) {
        return Err(invalid(format!(
            "the filter on \"{column}\" has a non-scalar value"
        )));
    }
    typed(value, &cast_type(target))
        .and_then(|array| {
            // The same instants, typed like the column.
            let data = array.to_data().into_builder().data_type(target.clone());
            data.build().ok().map(arrow_array::make_array)
        })
        .filter(|a| a.null_count() == 0)
        .ok_or_else(|| {
            invalid(format!(
                "the filter on \"{column}\" compares it with {value}, which is not a value of \
                 its type {target}"
            ))
        })
}

/// `value` converted to `target` the way Arrow's cast kernel converts a
/// one-element array of it (Utf8, Int64, Float64 or Boolean) with
/// `safe: false`, for the pairs a filter accepts: text to anything Arrow
/// parses, integers to numbers, floats to floats and decimals, numbers to
/// text, booleans to booleans. `None` where the cast would fail. The kernel's
/// own per-type parsers and conversions are called directly: the generic
/// kernel, reached for one value per query, would make a release build carry
/// every cast between every pair of types (about 1.3 MiB).
fn typed(value: &Value, target: &DataType) -> Option<ArrayRef> {
    if !valid_decimal(target) {
        // Arrow refuses every cast into a decimal type it cannot hold (a
        // schema sent by a client may declare one).
        return None;
    }
    match value {
        Value::String(s) => from_text(s, target),
        Value::Int(n) => match i64::try_from(*n) {
            Ok(n) => from_number(Number::Int(n), target),
            // Beyond i64 the JSON integer is read as a Float64, which still
            // suits integer columns (u64 values above i64::MAX).
            Err(_) => from_number(Number::BigInt(*n as f64), target),
        },
        Value::Float(x) => from_number(Number::Float(*x), target),
        Value::Bool(b) => matches!(target, DataType::Boolean)
            .then(|| Arc::new(BooleanArray::from(vec![*b])) as ArrayRef),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn valid_decimal(target: &DataType) -> bool {
    use arrow_array::types::*;
    match *target {
        DataType::Decimal32(p, s) => validate_decimal_precision_and_scale::<Decimal32Type>(p, s),
        DataType::Decimal64(p, s) => validate_decimal_precision_and_scale::<Decimal64Type>(p, s),
        DataType::Decimal128(p, s) => validate_decimal_precision_and_scale::<Decimal128Type>(p, s),
        DataType::Decimal256(p, s) => validate_decimal_precision_and_scale::<Decimal256Type>(p, s),
        _ => Ok(()),
    }
    .is_ok()
}

fn one<T: ArrowPrimitiveType>(value: Option<T::Native>) -> Option<ArrayRef> {
    value.map(|v| Arc::new(PrimitiveArray::<T>::from_value(v, 1)) as ArrayRef)
}

fn text_array(s: &str, target: &DataType) -> Option<ArrayRef> {
    Some(match target {
        DataType::Utf8 => Arc::new(StringArray::from(vec![s])),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(vec![s])),
        DataType::Utf8View => Arc::new(StringViewArray::from(vec![s])),
        _ => return None,
    })
}

fn from_text(s: &str, target: &DataType) -> Option<ArrayRef> {
    use arrow_array::types::*;
    use arrow_cast::parse::{
        parse_decimal, parse_interval_day_time, parse_interval_month_day_nano,
        parse_interval_year_month, Parser,
    };
    use arrow_schema::{IntervalUnit, TimeUnit};
    macro_rules! parse {
        ($t:ty) => {
            one::<$t>(<$t>::parse(s))
        };
    }
    macro_rules! decimal {
        ($t:ty, $p:expr, $s:expr) => {
            one::<$t>(parse_decimal::<$t>(s, *$p, *$s).ok())
        };
    }
    match target {
        DataType::Int8 => parse!(Int8Type),
        DataType::Int16 => parse!(Int16Type),
        DataType::Int32 => parse!(Int32Type),
        DataType::Int64 => parse!(Int64Type),
        DataType::UInt8 => parse!(UInt8Type),
        DataType::UInt16 => parse!(UInt16Type),
        DataType::UInt32 => parse!(UInt32Type),
        DataType::UInt64 => parse!(UInt64Type),
        DataType::Float16 => parse!(Float16Type),
        DataType::Float32 => parse!(Float32Type),
        DataType::Float64 => parse!(Float64Type),
        DataType::Date32 => parse!(Date32Type),
        DataType::Date64 => parse!(Date64Type),
        DataType::Time32(TimeUnit::Second) => parse!(Time32SecondType),
        DataType::Time32(TimeUnit::Millisecond) => parse!(Time32MillisecondType),
        DataType::Time64(TimeUnit::Microsecond) => parse!(Time64MicrosecondType),
        DataType::Time64(TimeUnit::Nanosecond) => parse!(Time64NanosecondType),
        DataType::Timestamp(unit, tz) => {
            let tz: arrow_array::timezone::Tz = tz.as_deref().unwrap_or("+00:00").parse().ok()?;
            let naive = arrow_cast::parse::string_to_datetime(&tz, s)
                .ok()?
                .naive_utc();
            macro_rules! at {
                ($t:ty) => {
                    one::<$t>(<$t>::from_naive_datetime(naive, None))
                };
            }
            match unit {
                TimeUnit::Second => at!(TimestampSecondType),
                TimeUnit::Millisecond => at!(TimestampMillisecondType),
                TimeUnit::Microsecond => at!(TimestampMicrosecondType),
                TimeUnit::Nanosecond => at!(TimestampNanosecondType),
            }
        }
        DataType::Decimal32(p, sc) => decimal!(Decimal32Type, p, sc),
        DataType::Decimal64(p, sc) => decimal!(Decimal64Type, p, sc),
        DataType::Decimal128(p, sc) => decimal!(Decimal128Type, p, sc),
        DataType::Decimal256(p, sc) => decimal!(Decimal256Type, p, sc),
        DataType::Interval(IntervalUnit::YearMonth) => {
            one::<IntervalYearMonthType>(parse_interval_year_month(s).ok())
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            one::<IntervalDayTimeType>(parse_interval_day_time(s).ok())
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            one::<IntervalMonthDayNanoType>(parse_interval_month_day_nano(s).ok())
        }
        DataType::Boolean => arrow_cast::cast_single_string_to_boolean_default(s)
            .map(|b| Arc::new(BooleanArray::from(vec![b])) as ArrayRef),
        DataType::Binary => Some(Arc::new(BinaryArray::from(vec![s.as_bytes()]))),
        DataType::LargeBinary => Some(Arc::new(LargeBinaryArray::from(vec![s.as_bytes()]))),
        DataType::BinaryView => Some(Arc::new(BinaryViewArray::from(vec![s.as_bytes()]))),
        other => text_array(s, other),
    }
}

/// A JSON number, as the array Arrow would cast it from.
#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    /// An integer beyond i64, held as a Float64 like any other float, but
    /// accepted by integer columns.
    BigInt(f64),
    Float(f64),
}

fn from_number(n: Number, target: &DataType) -> Option<ArrayRef> {
    use arrow_array::types::*;
    use arrow_cast::{float_to_decimal, num_cast};
    // Which conversions a number of this kind may take at all.
    let integral = !matches!(n, Number::Float(_));
    let allowed = match target {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => true,
        DataType::Decimal128(..) | DataType::Decimal256(..) => true,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        t => integral && t.is_numeric(),
    };
    if !allowed {
        return None;
    }
    macro_rules! convert {
        ($t:ty) => {
            one::<$t>(match n {
                Number::Int(i) => num_cast(i),
                Number::BigInt(x) | Number::Float(x) => num_cast(x),
            })
        };
    }
    macro_rules! decimal {
        ($t:ty, $p:expr, $s:expr) => {
            one::<$t>(match n {
                Number::Int(i) => int_to_decimal::<$t>(i, *$p, *$s),
                Number::BigInt(x) | Number::Float(x) => float_to_decimal::<$t>(x, *$p, *$s).ok(),
            })
        };
    }
    match target {
        DataType::Int8 => convert!(Int8Type),
        DataType::Int16 => convert!(Int16Type),
        DataType::Int32 => convert!(Int32Type),
        DataType::Int64 => convert!(Int64Type),
        DataType::UInt8 => convert!(UInt8Type),
        DataType::UInt16 => convert!(UInt16Type),
        DataType::UInt32 => convert!(UInt32Type),
        DataType::UInt64 => convert!(UInt64Type),
        DataType::Float16 => convert!(Float16Type),
        DataType::Float32 => convert!(Float32Type),
        DataType::Float64 => convert!(Float64Type),
        DataType::Decimal32(p, s) => decimal!(Decimal32Type, p, s),
        DataType::Decimal64(p, s) => decimal!(Decimal64Type, p, s),
        DataType::Decimal128(p, s) => decimal!(Decimal128Type, p, s),
        DataType::Decimal256(p, s) => decimal!(Decimal256Type, p, s),
        text => {
            // Written the way Arrow displays the number (`zip = 0150` on the
            // command line compares text with 150).
            use arrow_cast::display::{ArrayFormatter, FormatOptions};
            let source: ArrayRef = match n {
                Number::Int(i) => Arc::new(Int64Array::from(vec![i])),
                Number::BigInt(x) | Number::Float(x) => Arc::new(Float64Array::from(vec![x])),
            };
            let options = FormatOptions::default();
            let formatted = ArrayFormatter::try_new(&source, &options)
                .ok()?
                .value(0)
                .to_string();
            text_array(&formatted, text)
        }
    }
}

/// An integer as a decimal of precision `p` and scale `s`, as Arrow's cast
/// computes it: scaled up by `10^s`, or for a negative scale divided
/// (truncating) by `10^-s`; `None` if it does not fit.
fn int_to_decimal<D>(value: i64, p: u8, s: i8) -> Option<D::Native>
where
    D: arrow_array::types::DecimalType,
    D::Native: arrow_cast::DecimalCast + arrow_array::ArrowNativeTypeOp,
{
    use arrow_array::ArrowNativeTypeOp;
    use arrow_cast::DecimalCast;
    let scaled = if s < 0 {
        let quotient = match 10i64.checked_pow(u32::from(s.unsigned_abs())) {
            Some(factor) => value.wrapping_div(factor),
            None => 0,
        };
        D::Native::from_decimal(i128::from(quotient))?
    } else {
        let factor = <D::Native as arrow_buffer::ArrowNativeType>::usize_as(10)
            .pow_checked(s as u32)
            .ok()?;
        D::Native::from_decimal(i128::from(value))?
            .mul_checked(factor)
            .ok()?
    };
    D::validate_decimal_precision(scaled, p, s).ok()?;
    Some(scaled)
}

/// The type a literal is cast to before it takes its column's type. Arrow
/// (built without its chrono-tz feature) parses fixed offsets as time zones
/// but no names, so a timestamp column in "UTC" (what pandas and pyarrow
/// write), or in any named zone, would refuse every literal. Its literals
/// are read as "+00:00" instead: a literal with an offset is the same instant
/// either way, and a literal without one is read as UTC (README, Queries).
fn cast_type(target: &DataType) -> DataType {
    match target {
        DataType::Timestamp(unit, Some(tz)) if !tz.starts_with(['+', '-']) => {
            DataType::Timestamp(*unit, Some("+00:00".into()))
        }
        other => other.clone(),
    }
}

/// A condition bound to a column's type, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Predicate {
    pub column: String,
    op: Op,
    value_type: DataType,
    literals: Vec<ArrayRef>,
}

/// Whether a comparison may be pruned or proven from min/max statistics:
/// floats are not (statistics leave NaN out, and Arrow orders NaN above
/// every number), nor are strings for proofs (their statistics may be
/// truncated bounds).
fn stats_are_bounds(t: &DataType) -> bool {
    !t.is_floating()
}

fn stats_are_exact(t: &DataType) -> bool {
    !t.is_floating()
        && !matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
}

fn cmp(op: Op, left: &dyn Datum, right: &dyn Datum) -> Result<BooleanArray> {
    use arrow_ord::cmp;
    let result = match op {
        Op::Eq | Op::In => cmp::eq(left, right),
        Op::Ne => cmp::neq(left, right),
        Op::Lt => cmp::lt(left, right),
        Op::Le => cmp::lt_eq(left, right),
        Op::Gt => cmp::gt(left, right),
        Op::Ge => cmp::gt_eq(left, right),
        Op::IsNull | Op::IsNotNull => unreachable!("null tests are not comparisons"),
    };
    result.map_err(|e| Error::Internal(format!("evaluating a filter: {e}")))
}

/// `a AND b`, where null (unknown) counts as false.
fn and(a: &BooleanArray, b: &BooleanArray) -> BooleanArray {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| Some(x == Some(true) && y == Some(true)))
        .collect()
}

fn or(a: &BooleanArray, b: &BooleanArray) -> BooleanArray {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| Some(x == Some(true) || y == Some(true)))
        .collect()
}

/// `true` where the statistic is unknown (null): an unknown bound proves
/// nothing, so the group must be kept.
fn unknown_is_true(a: &BooleanArray) -> BooleanArray {
    a.iter().map(|x| Some(x != Some(false))).collect()
}

impl Predicate {
    /// Which rows of `batch` satisfy the condition (null: no).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let column = batch.column_by_name(&self.column).ok_or_else(|| {
            Error::Internal(format!(
                "filter column \"{}\" missing in a batch",
                self.column
            ))
        })?;
        let column = match column.data_type() {
            DataType::Dictionary(..) => {
                use arrow_array::cast::AsArray;
                let dictionary = column.as_any_dictionary();
                arrow_select::take::take(dictionary.values(), dictionary.keys(), None)
                    .map_err(|e| Error::Internal(format!("evaluating a filter: {e}")))?
            }
            _ => column.clone(),
        };
        let nulls = column.logical_nulls();
        let is_null = |i: usize| nulls.as_ref().is_some_and(|n| n.is_null(i));
        match self.op {
            Op::IsNull => Ok((0..column.len()).map(|i| Some(is_null(i))).collect()),
            Op::IsNotNull => Ok((0..column.len()).map(|i| Some(!is_null(i))).collect()),
            op => {
                let mut result: Option<BooleanArray> = None;
                for literal in &self.literals {
                    let hit = cmp(op, &column, &Scalar::new(literal.clone()))?;
                    result = Some(match result {
                        None => hit,
                        Some(so_far) => or(&so_far, &hit),
                    });
                }
                let result =
                    result.unwrap_or_else(|| BooleanArray::from(vec![false; column.len()]));
                Ok(and(&result, &result)) // null (unknown) becomes false
            }
        }
    }

    /// Per row group: can it hold a matching row (`keep`), and do all its rows
    /// match for certain (`all`)? From per-group min, max, null and row counts
    /// (Arrow arrays, one element per group; nulls where unknown).
    pub fn prune(&self, stats: &GroupStats) -> Result<(BooleanArray, BooleanArray)> {
        let groups = stats.rows.len();
        let yes = || BooleanArray::from(vec![true; groups]);
        let no = || BooleanArray::from(vec![false; groups]);
        let count = |a: &UInt64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        let no_nulls: BooleanArray = (0..groups)
            .map(|i| Some(count(&stats.nulls, i) == Some(0)))
            .collect();
        match self.op {
            Op::IsNull => {
                let keep = (0..groups)
                    .map(|i| Some(count(&stats.nulls, i) != Some(0)))
                    .collect();
                let all = (0..groups)
                    .map(|i| {
                        Some(
                            count(&stats.nulls, i).is_some()
                                && count(&stats.nulls, i) == count(&stats.rows, i),
                        )
                    })
                    .collect();
                return Ok((keep, all));
            }
            Op::IsNotNull => {
                let keep = (0..groups)
                    .map(|i| {
                        let (n, r) = (count(&stats.nulls, i), count(&stats.rows, i));
                        Some(!(n.is_some() && n == r))
                    })
                    .collect();
                return Ok((keep, no_nulls));
            }
            _ => {}
        }
        if !stats_are_bounds(&self.value_type)
            || stats.min.data_type() != &self.value_type
            || stats.max.data_type() != &self.value_type
        {
            return Ok((yes(), no()));
        }
        let (min, max) = (stats.min.as_ref(), stats.max.as_ref());
        let mut keep: Option<BooleanArray> = None;
        let mut all: Option<BooleanArray> = None;
        for literal in &self.literals {
            let lit = Scalar::new(literal.clone());
            // keep: some value in [min, max] may satisfy; all: every value does.
            let (k, a) = match self.op {
                Op::Eq | Op::In => (
                    and(
                        &unknown_is_true(&cmp(Op::Le, &min, &lit)?),
                        &unknown_is_true(&cmp(Op::Ge, &max, &lit)?),
                    ),
                    and(&cmp(Op::Eq, &min, &lit)?, &cmp(Op::Eq, &max, &lit)?),
                ),
                Op::Ne => (
                    // Unknown bounds keep the group: `or` alone reads them as false.
                    or(
                        &unknown_is_true(&cmp(Op::Ne, &min, &lit)?),
                        &unknown_is_true(&cmp(Op::Ne, &max, &lit)?),
                    ),
                    or(&cmp(Op::Lt, &max, &lit)?, &cmp(Op::Gt, &min, &lit)?),
                ),
                Op::Lt => (
                    unknown_is_true(&cmp(Op::Lt, &min, &lit)?),
                    cmp(Op::Lt, &max, &lit)?,
                ),
                Op::Le => (
                    unknown_is_true(&cmp(Op::Le, &min, &lit)?),
                    cmp(Op::Le, &max, &lit)?,
                ),
                Op::Gt => (
                    unknown_is_true(&cmp(Op::Gt, &max, &lit)?),
                    cmp(Op::Gt, &min, &lit)?,
                ),
                Op::Ge => (
                    unknown_is_true(&cmp(Op::Ge, &max, &lit)?),
                    cmp(Op::Ge, &min, &lit)?,
                ),
                Op::IsNull | Op::IsNotNull => unreachable!(),
            };
            keep = Some(match keep {
                None => k,
                Some(so_far) => or(&so_far, &k),
            });
            all = Some(match all {
                None => a,
                Some(so_far) => or(&so_far, &a),
            });
        }
        let keep = keep.unwrap_or_else(yes);
        let all = match all {
            Some(all) if stats_are_exact(&self.value_type) => and(&all, &no_nulls),
            _ => no(),
        };
        Ok((keep, all))
    }
}

/// Statistics of one column over a file's row groups, as Arrow arrays with
/// one element per row group (the store reads them from the footer).
pub struct GroupStats {
    pub min: ArrayRef,
    pub max: ArrayRef,
    pub nulls: UInt64Array,
    pub rows: UInt64Array,
}

/// Every predicate's verdict on a batch, combined: the rows to keep.
pub fn evaluate_all(predicates: &[Predicate], batch: &RecordBatch) -> Result<BooleanArray> {
    let mut result = BooleanArray::from(vec![true; batch.num_rows()]);
    for predicate in predicates {
        result = and(&result, &predicate.evaluate(batch)?);
    }
    Ok(result)
}

impl Scan {
    /// A plain, full scan of the query's dataset over `row_groups`.
    pub fn of(query: &Query, row_groups: Vec<usize>, limit: Option<u64>, version: &str) -> Scan {
        Scan {
            dataset: query.dataset.clone(),
            columns: query.columns.clone(),
            filter: query.filter.clone(),
            row_groups,
            limit,
            compression: query.compression,
            version: version.to_string(),
        }
    }

    /// The ticket's bytes: readable JSON.
    pub fn to_ticket(&self) -> Vec<u8> {
        let groups = self.row_groups.iter().map(|&g| Value::from(g)).collect();
        let mut fields = json_fields(
            &self.dataset,
            self.columns.as_deref(),
            &self.filter,
            Some(("row_groups", Value::Array(groups))),
            self.limit,
            self.compression,
        );
        fields.push(("version", Value::from(self.version.as_str())));
        Value::object(fields).to_string().into_bytes()
    }

    /// Parses a query ticket (a JSON object); `Ok(None)` if the ticket is not
    /// JSON at all, i.e. a plain dataset name.
    pub fn from_ticket(bytes: &[u8]) -> Result<Option<Scan>> {
        if bytes.first() != Some(&b'{') {
            return Ok(None);
        }
        let value = parse_json(bytes, "ticket")?;
        let known = [
            "dataset",
            "columns",
            "filter",
            "row_groups",
            "limit",
            "compression",
            "version",
        ];
        let fields = object(&value, "ticket", &known)?;
        let row_groups = match get(fields, "row_groups") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            invalid("\"row_groups\" must be a list of row group numbers")
                        })
                })
                .collect::<Result<Vec<_>>>()?,
            None => {
                return Err(invalid(
                    "the ticket needs \"row_groups\", the row group numbers to read",
                ))
            }
            Some(_) => {
                return Err(invalid(
                    "\"row_groups\" must be a list of row group numbers",
                ))
            }
        };
        // Each row group once, in file order: a hand-made ticket must not be
        // able to make the answer repeat or reorder rows.
        if row_groups.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "\"row_groups\" must list row group numbers in increasing order, each once",
            ));
        }
        let version = get(fields, "version")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid("the ticket needs \"version\", the dataset version from GetFlightInfo")
            })?
            .to_string();
        Ok(Some(Scan {
            dataset: dataset_of(get(fields, "dataset"), "ticket")?,
            columns: columns_of(get(fields, "columns"))?,
            filter: filter_of(get(fields, "filter"))?,
            row_groups,
            limit: count_of(get(fields, "limit"), "limit", 0, i64::MAX as u64)?,
            compression: compression_of(get(fields, "compression"))?,
            version,
        }))
    }
}

impl Query {
    /// The command's JSON bytes, for a CMD descriptor.
    pub fn to_command(&self) -> Vec<u8> {
        let partitions =
            (self.partitions != 1).then(|| ("partitions", Value::from(self.partitions)));
        let fields = json_fields(
            &self.dataset,
            self.columns.as_deref(),
            &self.filter,
            partitions,
            self.limit,
            self.compression,
        );
        Value::object(fields).to_string().into_bytes()
    }
}

/// The keys a command and a ticket share, in the order both write them, with
/// the one each adds of its own (`partitions`, `row_groups`) in the middle.
fn json_fields(
    dataset: &str,
    columns: Option<&[String]>,
    filter: &[Condition],
    own: Option<(&'static str, Value)>,
    limit: Option<u64>,
    compression: Option<IpcCompression>,
) -> Vec<(&'static str, Value)> {
    let mut fields = vec![("dataset", Value::from(dataset))];
    if let Some(columns) = columns {
        let names = columns.iter().map(|c| Value::from(c.as_str())).collect();
        fields.push(("columns", Value::Array(names)));
    }
    if !filter.is_empty() {
        let conditions = filter.iter().map(Condition::to_json).collect();
        fields.push(("filter", Value::Array(conditions)));
    }
    fields.extend(own);
    if let Some(limit) = limit {
        fields.push(("limit", Value::from(limit)));
    }
    if let Some(compression) = compression {
        fields.push(("compression", Value::from(compression.as_str())));
    }
    fields
}

/// Parses the CLI's `--where` text into filter conditions, one to one with
/// the JSON grammar: conditions joined by `and`, each `COLUMN OP VALUE`
/// (OP: = != < <= > >=), `COLUMN in (V, ...)`, `COLUMN is null` or
/// `COLUMN is not null`. A value is a 'quoted' or "quoted" string, `true` /
/// `false`, a number, or a bare word taken as text (`2024-06-01`, `Oslo`).
pub fn parse_where(text: &str) -> std::result::Result<Vec<Condition>, String> {
    let tokens = where_tokens(text)?;
    let mut conditions = Vec::new();
    let mut at = 0;
    let word = |at: usize| match tokens.get(at) {
        Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    loop {
        let column = match tokens.get(at) {
            Some(Token::Word(w) | Token::Quoted(w)) => w.clone(),
            _ => return Err(format!("expected a column name in --where \"{text}\"")),
        };
        at += 1;
        let (op, values) = match (tokens.get(at), word(at).as_deref()) {
            (Some(Token::Op(op)), _) => {
                let op = Op::parse(op).ok_or_else(|| format!("unknown operator '{op}'"))?;
                at += 1;
                let value = tokens
                    .get(at)
                    .and_then(where_value)
                    .ok_or_else(|| format!("expected a value after '{column} {}'", op.as_str()))?;
                at += 1;
                (op, vec![value])
            }
            (_, Some("in")) => {
                at += 1;
                if tokens.get(at) != Some(&Token::Op("(".into())) {
                    return Err(format!("expected '(' after '{column} in'"));
                }
                at += 1;
                let mut values = Vec::new();
                loop {
                    let value = tokens
                        .get(at)
                        .and_then(where_value)
                        .ok_or_else(|| format!("expected a value in '{column} in (...)'"))?;
                    values.push(value);
                    at += 1;
                    match tokens.get(at) {
                        Some(Token::Op(p)) if p == "," => at += 1,
                        Some(Token::Op(p)) if p == ")" => {
                            at += 1;
                            break;
                        }
                        _ => return Err(format!("expected ',' or ')' in '{column} in (...)'")),
                    }
                }
                (Op::In, values)
            }
            (_, Some("is")) => {
                at += 1;
                let not = word(at).as_deref() == Some("not");
                if not {
                    at += 1;
                }
                if word(at).as_deref() != Some("null") {
                    return Err(format!("expected 'null' after '{column} is'"));
                }
                at += 1;
                (if not { Op::IsNotNull } else { Op::IsNull }, Vec::new())
            }
            _ => {
                return Err(format!(
                "expected an operator after '{column}' (= != < <= > >= in, is null, is not null)"
            ))
            }
        };
        conditions.push(Condition { column, op, values });
        match word(at).as_deref() {
            None if at == tokens.len() => return Ok(conditions),
            Some("and") => at += 1,
            _ => {
                return Err(format!(
                    "expected 'and' between conditions in --where \"{text}\""
                ))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(String),
}

fn where_tokens(text: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(ch) => s.push(ch),
                        None => return Err(format!("unterminated quote in --where \"{text}\"")),
                    }
                }
                tokens.push(Token::Quoted(s));
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push(Token::Op(c.to_string()));
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let mut op = c.to_string();
                if chars.peek() == Some(&'=') {
                    op.push('=');
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || "()',\"=!<>".contains(ch) {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                tokens.push(Token::Word(w));
            }
        }
    }
    Ok(tokens)
}

fn where_value(token: &Token) -> Option<Value> {
    match token {
        Token::Quoted(s) => Some(Value::String(s.clone())),
        Token::Word(w) if w == "true" || w == "false" => Some(Value::Bool(w == "true")),
        Token::Word(w) => match Value::parse(w) {
            Ok(n @ (Value::Int(_) | Value::Float(_))) => Some(n),
            _ => Some(Value::String(w.clone())),
        },
        Token::Op(_) => None,
    }
}

/// Splits `groups` (index, bytes) into at most `parts` contiguous runs of
/// about equal bytes, each non-empty.
pub fn balance(groups: &[(usize, u64)], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.clamp(1, groups.len().max(1));
    let total: u64 = groups.iter().map(|(_, b)| *b).sum();
    let mut runs: Vec<Vec<usize>> = Vec::with_capacity(parts);
    let mut current = Vec::new();
    let mut acc = 0u64;
    for (i, (group, bytes)) in groups.iter().enumerate() {
        current.push(*group);
        acc += bytes;
        let left_groups = groups.len() - i - 1;
        let left_parts = parts - runs.len() - 1;
        let target = total as u128 * (runs.len() as u128 + 1) / parts as u128;
        let must_cut = left_groups == left_parts && left_parts > 0;
        if left_parts > 0 && (acc as u128 >= target || must_cut) {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{Field, TimeUnit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("city", DataType::Utf8, true),
            Field::new("fare", DataType::Float64, true),
            Field::new("n", DataType::Int32, true),
        ])
    }

    #[test]
    fn the_command_parses_and_unknown_keys_are_named() {
        let q = Query::from_command(
            br#"{"dataset": "trips", "columns": ["ts", "fare"], "filter": [["ts", ">=", "2024-06-01T00:00:00"], ["city", "=", "Oslo"], ["n", "in", [1, 2]], ["fare", "is null"]], "partitions": 4, "limit": 10, "compression": "zstd"}"#,
        )
        .unwrap();
        assert_eq!(q.dataset, "trips");
        assert_eq!(q.partitions, 4);
        assert_eq!(q.filter.len(), 4);
        assert_eq!(q.compression, Some(IpcCompression::Zstd));
        q.bind(&schema()).unwrap();
        for (bad, needle) in [
            (
                r#"{"dataset": "t", "colums": []}"#,
                "unknown key \"colums\"",
            ),
            (r#"{"columns": []}"#, "needs \"dataset\""),
            (r#"{"dataset": "t", "partitions": 0}"#, "\"partitions\""),
            (
                r#"{"dataset": "t", "filter": [["n", "~", 1]]}"#,
                "unknown operator",
            ),
            (
                r#"{"dataset": "t", "filter": [["n", "in", []]]}"#,
                "non-empty list",
            ),
            (
                r#"{"dataset": "t", "filter": [["n", "=", null]]}"#,
                "is null",
            ),
            (r#"{"dataset": "../x"}"#, "name"),
            (r#"[1]"#, "JSON object"),
            (r#"{"dataset": "t", "compression": "gzip"}"#, "gzip"),
        ] {
            let err = Query::from_command(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn literals_are_typed_by_their_column() {
        let s = schema();
        let bind = |json: &str| {
            let q = Query::from_command(json.as_bytes()).unwrap();
            q.bind(&s).map(|_| ())
        };
        assert!(bind(r#"{"dataset":"t","filter":[["n","=",7]]}"#).is_ok());
        assert!(bind(r#"{"dataset":"t","filter":[["n","=","7"]]}"#).is_ok());
        for bad in [
            r#"{"dataset":"t","filter":[["n","=",1e20]]}"#,
            r#"{"dataset":"t","filter":[["n","=",99999999999]]}"#,
            r#"{"dataset":"t","filter":[["ts",">=","yesterday"]]}"#,
            r#"{"dataset":"t","filter":[["city","=",true]]}"#,
            r#"{"dataset":"t","filter":[["nope","=",1]]}"#,
            r#"{"dataset":"t","columns":["nope"]}"#,
        ] {
            let err = bind(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    /// What `literal` returned when it went through Arrow's generic cast
    /// kernel (before the kernel was kept out of the release binary): the
    /// reference `typed` must agree with, value for value.
    fn literal_by_cast(value: &Value, target: &DataType) -> Option<ArrayRef> {
        use arrow_cast::{cast_with_options, CastOptions};
        let source: ArrayRef = match value {
            Value::String(s) => Arc::new(StringArray::from(vec![s.as_str()])),
            Value::Int(n) => match i64::try_from(*n) {
                Ok(n) => Arc::new(Int64Array::from(vec![n])),
                Err(_) => Arc::new(Float64Array::from(vec![*n as f64])),
            },
            Value::Float(x) => Arc::new(Float64Array::from(vec![*x])),
            Value::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
            _ => return None,
        };
        let suits = match (value, target) {
            (Value::String(_), _) => true,
            (
                Value::Int(_) | Value::Float(_),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            ) => true,
            (Value::Bool(_), DataType::Boolean) => true,
            (Value::Int(_), t) => t.is_numeric(),
            (Value::Float(_), t) => {
                t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
            }
            _ => false,
        };
        if !suits {
            return None;
        }
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let array = cast_with_options(&source, &cast_type(target), &options).ok()?;
        let data = array.to_data().into_builder().data_type(target.clone());
        data.build()
            .ok()
            .map(arrow_array::make_array)
            .filter(|a| a.null_count() == 0)
    }

    #[test]
    fn literals_are_typed_as_the_cast_kernel_typed_them() {
        use arrow_schema::{IntervalUnit, TimeUnit};
        let mut values: Vec<Value> = [
            "",
            " ",
            "0",
            "1",
            "-1",
            "+5",
            "007",
            "127",
            "128",
            "-129",
            "255",
            "256",
            "65535",
            "65536",
            "2147483648",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "1e3",
            "1E-2",
            "1.5",
            "-2.5",
            "0.125",
            "1.005",
            "12.345",
            "-0.0",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "abc",
            "1,5",
            "0x10",
            "true",
            "True",
            "T",
            "yes",
            "y",
            "on",
            "off",
            "of",
            "no",
            "false",
            "FALSE",
            " 1 ",
            "2024-01-02",
            "2024-1-2",
            "2024-02-30",
            "99999-01-01",
            "2024-01-02T03:04:05",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.123456789Z",
            "2024-01-02T03:04:05+02:00",
            "2024-01-02T03:04:05.5-07:30",
            "1677-09-21T00:12:43Z",
            "2262-04-12T00:00:00Z",
            "1970-01-01",
            "03:04:05",
            "03:04:05.123",
            "23:59:59.999999999",
            "24:00:00",
            "3:04",
            "1 day",
            "2 months",
            "1 year 2 months",
            "3 days 4 hours",
            "1.5 days",
            "-1 day",
            "1 millisecond",
            "99999999999999999999",
            "123456789012345678901234567890.5",
            "1e40",
            "-1e-40",
        ]
        .iter()
        .map(|s| Value::String(s.to_string()))
        .collect();
        for n in [
            0i128,
            1,
            -1,
            7,
            127,
            128,
            -128,
            -129,
            255,
            256,
            32767,
            65535,
            65536,
            2_147_483_647,
            2_147_483_648,
            -2_147_483_649,
            4_294_967_296,
            999_999_999,
            1_000_000_000,
            123_456_789_012,
            i64::MAX as i128,
            i64::MIN as i128,
            i64::MAX as i128 + 1,
            10_000_000_000_000_000_000,
            u64::MAX as i128,
            u64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            10i128.pow(20),
            10i128.pow(38),
            -(10i128.pow(30)),
        ] {
            values.push(Value::Int(n));
        }
        for x in [
            0.0,
            -0.0,
            0.1,
            0.5,
            1.5,
            -2.5,
            1.005,
            12.345,
            123.456,
            65504.0,
            65520.0,
            1e10,
            1e20,
            3.4e38,
            3.5e38,
            1e40,
            1e300,
            -1e300,
            1e-10,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            9007199254740993.0,
        ] {
            values.push(Value::Float(x));
        }
        values.push(Value::Bool(true));
        values.push(Value::Bool(false));
        let types = [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Float16,
            DataType::Float32,
            DataType::Float64,
            DataType::Decimal32(9, 2),
            DataType::Decimal64(18, 3),
            DataType::Decimal128(38, 10),
            DataType::Decimal128(5, 2),
            DataType::Decimal128(10, 0),
            DataType::Decimal128(5, -2),
            DataType::Decimal256(76, 20),
            DataType::Decimal256(10, 2),
            DataType::Decimal256(50, 45),
            DataType::Decimal128(5, 10),
            DataType::Decimal32(10, 2),
            DataType::Decimal64(0, 0),
            DataType::Boolean,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::BinaryView,
            DataType::FixedSizeBinary(3),
            DataType::Date32,
            DataType::Date64,
            DataType::Time32(TimeUnit::Second),
            DataType::Time32(TimeUnit::Millisecond),
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("Europe/Paris".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Duration(TimeUnit::Second),
            DataType::Interval(IntervalUnit::YearMonth),
            DataType::Interval(IntervalUnit::DayTime),
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Null,
        ];
        let mut typed_some = 0;
        for t in &types {
            for v in &values {
                let expected = literal_by_cast(v, t);
                let got = literal("c", v, t).ok();
                assert_eq!(
                    got.as_ref().map(|a| a.to_data()),
                    expected.as_ref().map(|a| a.to_data()),
                    "{v} as {t}"
                );
                typed_some += usize::from(got.is_some());
            }
        }
        // The grid exercises both outcomes, not only refusals.
        assert!(typed_some > 500, "{typed_some}");
    }

    #[test]
    fn literals_bind_to_timestamps_in_utc() {
        use arrow_array::TimestampMicrosecondArray;
        let micros = |text: &str| {
            let tz = Schema::new(vec![Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            )]);
            let q = Query::from_command(
                format!(r#"{{"dataset":"t","filter":[["t","<",{text:?}]]}}"#).as_bytes(),
            )
            .unwrap();
            let (_, p) = q.bind(&tz).unwrap();
            assert_eq!(p[0].literals[0].data_type(), tz.field(0).data_type());
            let lit = p[0].literals[0].as_any();
            lit.downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .value(0)
        };
        let midnight = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
        assert_eq!(micros("2024-01-01T00:00:00Z"), midnight);
        assert_eq!(micros("2024-01-01T00:00:00"), midnight);
        assert_eq!(micros("2024-01-01T02:00:00+02:00"), midnight);
    }

    #[test]
    fn timestamps_in_named_zones_take_literals_read_as_utc() {
        let s = Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Second, Some("Europe/Oslo".into())),
            true,
        )]);
        let q = Query::from_command(
            br#"{"dataset":"d","filter":[["t",">=","1970-01-01T01:00:00"],["t","<=","1970-01-01T03:00:00+02:00"]]}"#,
        )
        .unwrap();
        let (_, predicates) = q.bind(&s).unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(s.clone()),
            vec![Arc::new(
                arrow_array::TimestampSecondArray::from(vec![3599, 3600, 3601])
                    .with_timezone("Europe/Oslo"),
            )],
        )
        .unwrap();
        let keep: Vec<bool> = evaluate_all(&predicates, &batch)
            .unwrap()
            .iter()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(keep, [false, true, false]);
    }

    #[test]
    fn tickets_roundtrip_and_plain_names_are_not_tickets() {
        let q = Query::from_command(
            br#"{"dataset":"t","columns":["n"],"filter":[["n",">",1],["city","in",["a","b"]],["n","is not null"]]}"#,
        )
        .unwrap();
        let scan = Scan::of(&q, vec![0, 1, 3], Some(5), "v1");
        let ticket = scan.to_ticket();
        assert_eq!(Scan::from_ticket(&ticket).unwrap(), Some(scan));
        assert_eq!(Scan::from_ticket(b"uploaded.parquet").unwrap(), None);
        assert!(Scan::from_ticket(br#"{"dataset":"t"}"#).is_err());
        let repeated = br#"{"dataset":"t","row_groups":[1,1],"version":"v"}"#;
        assert!(Scan::from_ticket(repeated)
            .unwrap_err()
            .message()
            .contains("increasing"));
    }

    #[test]
    fn filters_evaluate_like_sql_where_null_is_no() {
        let s = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let batch = RecordBatch::try_new(
            s.clone(),
            vec![Arc::new(arrow_array::Int32Array::from(vec![
                Some(1),
                None,
                Some(3),
            ]))],
        )
        .unwrap();
        let run = |json: &str| {
            let q = Query::from_command(json.as_bytes()).unwrap();
            let (_, p) = q.bind(&s).unwrap();
            evaluate_all(&p, &batch)
                .unwrap()
                .iter()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(r#"{"dataset":"t","filter":[["n","!=",1]]}"#),
            [false, false, true]
        );
        assert_eq!(
            run(r#"{"dataset":"t","filter":[["n","in",[1,3]]]}"#),
            [true, false, true]
        );
        assert_eq!(
            run(r#"{"dataset":"t","filter":[["n","is null"]]}"#),
            [false, true, false]
        );
        assert_eq!(
            run(r#"{"dataset":"t","filter":[["n",">=",1],["n","<",3]]}"#),
            [true, false, false]
        );
    }

    #[test]
    fn statistics_prune_and_prove() {
        let s = Schema::new(vec![Field::new("n", DataType::Int64, true)]);
        let stats = GroupStats {
            min: Arc::new(Int64Array::from(vec![Some(0), Some(10), None])),
            max: Arc::new(Int64Array::from(vec![Some(9), Some(19), None])),
            nulls: UInt64Array::from(vec![Some(0), Some(1), None]),
            rows: UInt64Array::from(vec![Some(10), Some(10), Some(10)]),
        };
        let prune = |json: &str| {
            let q = Query::from_command(json.as_bytes()).unwrap();
            let (_, p) = q.bind(&s).unwrap();
            let (keep, all) = p[0].prune(&stats).unwrap();
            (
                keep.iter().map(|b| b.unwrap()).collect::<Vec<_>>(),
                all.iter().map(|b| b.unwrap()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            prune(r#"{"dataset":"t","filter":[["n",">=",10]]}"#).0,
            [false, true, true]
        );
        assert_eq!(
            prune(r#"{"dataset":"t","filter":[["n",">=",0]]}"#).1,
            [true, false, false]
        );
        assert_eq!(
            prune(r#"{"dataset":"t","filter":[["n","=",25]]}"#).0,
            [false, false, true]
        );
        assert_eq!(
            prune(r#"{"dataset":"t","filter":[["n","is null"]]}"#).0,
            [false, true, true]
        );
        // Group 2 has no statistics (a file written without them): kept.
        assert_eq!(
            prune(r#"{"dataset":"t","filter":[["n","!=",25]]}"#),
            (vec![true, true, true], vec![true, false, false])
        );
    }

    #[test]
    fn where_text_maps_one_to_one_onto_the_json_filter() {
        let parsed = parse_where(
            "ts >= 2024-06-01 and city = 'Oslo' AND n in (1, 2) and fare is not null and x<3 and ok = true",
        )
        .unwrap();
        let query = Query {
            dataset: "t".into(),
            columns: None,
            filter: parsed,
            partitions: 1,
            limit: None,
            compression: None,
        };
        let json = String::from_utf8(query.to_command()).unwrap();
        assert_eq!(
            json,
            r#"{"dataset":"t","filter":[["ts",">=","2024-06-01"],["city","=","Oslo"],["n","in",[1,2]],["fare","is not null"],["x","<",3],["ok","=",true]]}"#
        );
        assert_eq!(Query::from_command(json.as_bytes()).unwrap(), query);
        for bad in [
            "",
            "x",
            "x =",
            "x = 1 y = 2",
            "x in 1",
            "x is",
            "x ~ 1",
            "x = 'open",
        ] {
            assert!(parse_where(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions_are_contiguous_and_balanced() {
        let groups: Vec<(usize, u64)> = (0..8).map(|g| (g, 100)).collect();
        assert_eq!(
            balance(&groups, 4),
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
        );
        assert_eq!(balance(&groups, 20).len(), 8);
        assert_eq!(balance(&groups[..1], 3), vec![vec![0]]);
        let skewed = [(0, 1000), (1, 10), (2, 10), (3, 10)];
        assert_eq!(balance(&skewed, 2), vec![vec![0], vec![1, 2, 3]]);
        assert!(balance(&[], 4).is_empty());
    }
}
