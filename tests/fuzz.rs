//! Hostile input: property tests (proptest) over every parser that takes client
//! bytes, and a live test sending mutated uploads to a running server.
//!
//! - dataset names (`store::validate_name`), tickets and action bodies
//!   (`service::name_from_bytes`), descriptors (`service::descriptor_name`);
//! - `authorization` headers (`auth::parse_authorization`, `auth::base64_decode`);
//! - FlightData through `ipc::Decoder`: valid streams from `ipc::Encoder` (many
//!   types: primitives, strings, dictionaries, nested, views, nulls; plain, LZ4
//!   and zstd bodies), then bytes flipped, set, inserted, deleted, truncated,
//!   declared lengths made huge, messages reordered, dropped, repeated, mixed
//!   across streams (batches before the schema, dictionaries for unknown ids,
//!   schema changes).
//!
//! Every decode runs under `catch_unwind`: a panic fails the property, and so
//! does any error that is not a clear `InvalidArgument`. Decoder properties run
//! in a child process (this binary, filtered to `fuzz_child`), so that an abort
//! (an allocation of a client-declared size) is reported, not fatal to the run.
//!
//! `HANGAR_FUZZ_CASES` is the total number of cases of a run (default 5,000,
//! a few seconds; the long suite uses 100,000). The count run is printed.
//! The seed is fixed unless `HANGAR_FUZZ_SEED=N` (replays run N) or
//! `HANGAR_FUZZ_SEED=random` (explores new inputs) says otherwise; every
//! report prints it.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::builder::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::types::{Int32Type, Int64Type, Int8Type};
use arrow_array::{
    ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Decimal128Array,
    DictionaryArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Float64Array,
    Int32Array, Int64Array, Int8Array, LargeBinaryArray, LargeStringArray, ListArray, NullArray,
    RecordBatch, StringArray, StringViewArray, StructArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_ipc::CompressionType;
use arrow_schema::{DataType, Field};
use hangar::auth::{base64_decode, parse_authorization, Credentials};
use hangar::ipc::{Decoder, Encoder};
use hangar::proto::{FlightData, FlightDescriptor};
use hangar::service::{descriptor_name, name_from_bytes};
use hangar::store::validate_name;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use prost::bytes::Bytes;
use tonic::Code;

// ---------------------------------------------------------------------------
// Case budget

/// Total cases for this run (`HANGAR_FUZZ_CASES`).
fn total_cases() -> u64 {
    std::env::var("HANGAR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// This property's share of the run's cases.
fn cases(share: f64) -> u32 {
    ((total_cases() as f64 * share).round() as u32).max(32)
}

fn config(share: f64) -> ProptestConfig {
    ProptestConfig {
        cases: cases(share),
        // No regression files in the source tree; failures print their input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The seed of a run without `HANGAR_FUZZ_SEED` (CI's): fixed, so a CI
/// failure replays with the same command.
const DEFAULT_FUZZ_SEED: u64 = 20_260_101;

/// The seed of this run (printed on every report): `HANGAR_FUZZ_SEED=N`
/// replays run N, `HANGAR_FUZZ_SEED=random` explores a new one, otherwise
/// [`DEFAULT_FUZZ_SEED`].
fn fuzz_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| common::seed_from_env("HANGAR_FUZZ_SEED", DEFAULT_FUZZ_SEED))
}

/// A runner with this property's share of the cases, seeded from the run's seed
/// and the property's name (so properties explore different inputs).
fn seeded_runner(property: &str, share: f64) -> TestRunner {
    let mut seed = [0u8; 32];
    let mut x = fuzz_seed()
        ^ property
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    for chunk in seed.chunks_mut(8) {
        x = x
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    TestRunner::new_with_rng(
        config(share),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    )
}

static RUN: AtomicU64 = AtomicU64::new(0);

fn counted() {
    RUN.fetch_add(1, Ordering::Relaxed);
}

/// Prints how many cases a property ran (proptest runs exactly the configured
/// number when it passes).
fn report(property: &str, share: f64) {
    eprintln!(
        "fuzz: {property}: {} cases (HANGAR_FUZZ_CASES={} HANGAR_FUZZ_SEED={})",
        cases(share),
        total_cases(),
        fuzz_seed()
    );
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `f`, turning a panic into a property failure.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| TestCaseError::fail(format!("{what} panicked: {}", panic_text(&*p))))
}

// ---------------------------------------------------------------------------
// Names, tickets, descriptors

/// The documented rules (README): what `validate_name` must accept.
fn name_is_legal(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
        && !name.chars().any(char::is_control)
}

/// Names biased towards the dangerous characters, plus anything at all.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[./\\\\%2fFeE\\x00\\x01\\x1f\\x7f\\u{85}\\u{2028}é a-z0-9]{0,12}",
        2 => any::<String>(),
        1 => Just("..%2f".to_string()),
        1 => prop::collection::vec(prop_oneof![Just('a'), Just('é'), Just('.'), Just('/')], 250..=260)
            .prop_map(String::from_iter),
        1 => (0usize..3, "[a-z]{1,5}").prop_map(|(dots, s)| format!("{}{s}", ".".repeat(dots))),
    ]
}

fn check_name(name: &str) -> Result<(), TestCaseError> {
    counted();
    let result = no_panic("validate_name", || validate_name(name))?;
    match result {
        Ok(()) => {
            prop_assert!(name_is_legal(name), "accepted an illegal name {name:?}");
            // An accepted name is exactly one plain component inside the repository.
            let joined = Path::new("/repo").join(name);
            prop_assert_eq!(joined.parent(), Some(Path::new("/repo")), "{:?}", name);
            prop_assert!(
                matches!(joined.components().next_back(), Some(Component::Normal(_))),
                "{:?}",
                name
            );
            prop_assert_eq!(joined.components().count(), 3, "{:?}", name);
        }
        Err(err) => {
            prop_assert!(!name_is_legal(name), "refused a legal name {name:?}: {err}");
            prop_assert_eq!(err.code(), Code::InvalidArgument);
            prop_assert!(err.message().contains("invalid dataset name"), "{}", err);
        }
    }
    Ok(())
}

#[test]
fn dataset_names_follow_the_rules_and_stay_inside_the_repository() {
    let mut runner = seeded_runner("names", 0.08);
    runner
        .run(&names(), |name| check_name(&name))
        .unwrap_or_else(|e| panic!("{e}"));
    report("names", 0.08);
}

#[test]
fn tickets_and_action_bodies_are_utf8_legal_names_or_invalid_argument() {
    let bytes = prop_oneof![
        any::<Vec<u8>>(),
        names().prop_map(String::into_bytes),
        (names(), any::<u8>(), any::<prop::sample::Index>()).prop_map(|(n, b, i)| {
            let mut v = n.into_bytes();
            let at = i.index(v.len() + 1);
            v.insert(at, b);
            v
        }),
    ];
    let mut runner = seeded_runner("tickets", 0.06);
    runner
        .run(&bytes, |bytes| {
            counted();
            let result = no_panic("name_from_bytes", || name_from_bytes(&bytes, "ticket"))?;
            let legal = std::str::from_utf8(&bytes).is_ok_and(name_is_legal);
            match result {
                Ok(name) => {
                    prop_assert!(legal, "accepted {bytes:?}");
                    prop_assert_eq!(name.as_bytes(), &bytes[..]);
                }
                Err(err) => {
                    prop_assert!(!legal, "refused {bytes:?}: {err}");
                    prop_assert_eq!(err.code(), Code::InvalidArgument);
                    prop_assert!(!err.message().is_empty());
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    report("tickets", 0.06);
}

#[test]
fn descriptors_are_one_legal_path_element_or_invalid_argument() {
    let descriptors = (
        prop_oneof![Just(0), Just(1), Just(2), Just(-1), any::<i32>()],
        prop::collection::vec(names(), 0..4),
        any::<Vec<u8>>(),
    );
    let mut runner = seeded_runner("descriptors", 0.08);
    runner
        .run(&descriptors, |(kind, path, cmd)| {
            counted();
            let descriptor = FlightDescriptor {
                r#type: kind,
                cmd: Bytes::from(cmd),
                path: path.clone(),
            };
            let result = no_panic("descriptor_name", || descriptor_name(&descriptor))?;
            let legal = kind == 1 && path.len() == 1 && name_is_legal(&path[0]);
            match result {
                Ok(name) => {
                    prop_assert!(legal, "accepted type {kind} path {path:?}");
                    prop_assert_eq!(&name, &path[0]);
                }
                Err(err) => {
                    prop_assert!(!legal, "refused a legal descriptor {path:?}: {err}");
                    prop_assert_eq!(err.code(), Code::InvalidArgument);
                    prop_assert!(!err.message().is_empty());
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    report("descriptors", 0.08);
}

// ---------------------------------------------------------------------------
// Authorization headers and base64

fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_decode_never_panics_and_roundtrips() {
    let inputs = prop_oneof![
        any::<String>().prop_map(|s| (s, None)),
        "[A-Za-z0-9+/=_-]{0,40}".prop_map(|s| (s, None)),
        any::<Vec<u8>>().prop_map(|b| (base64_standard(&b), Some(b))),
    ];
    let mut runner = seeded_runner("base64", 0.05);
    runner
        .run(&inputs, |(text, original)| {
            counted();
            let decoded = no_panic("base64_decode", || base64_decode(&text))?;
            match original {
                Some(original) => prop_assert_eq!(decoded, Some(original), "{:?}", text),
                // Anything accepted must be canonical padded base64 (RFC 4648).
                None => {
                    if let Some(bytes) = decoded {
                        prop_assert_eq!(base64_standard(&bytes), text);
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    report("base64", 0.05);
}

#[test]
fn authorization_headers_parse_or_are_unauthenticated() {
    let user = "[^:\\x00]{0,12}";
    let password = any::<String>();
    let headers = prop_oneof![
        2 => any::<Vec<u8>>().prop_map(|b| (b, None)),
        2 => (
            prop_oneof![Just("Basic"), Just("basic"), Just("BASIC"), Just("Bearer"), Just("bearer"), Just("Digest"), Just("")],
            " {0,3}",
            "[ -~]{0,40}",
        )
            .prop_map(|(scheme, gap, rest)| (format!("{scheme}{gap}{rest}").into_bytes(), None)),
        3 => (user, password, " {1,3}", " {0,2}").prop_map(|(u, p, gap, tail)| {
            let header = format!("Basic{gap}{}{tail}", base64_standard(format!("{u}:{p}").as_bytes()));
            (header.into_bytes(), Some(Credentials::Basic { user: u, password: p }))
        }),
        2 => ("[!-~]{1,60}", " {1,3}").prop_map(|(token, gap)| {
            (format!("Bearer{gap}{token}").into_bytes(), Some(Credentials::Bearer(token)))
        }),
        1 => (5_000usize..20_000).prop_map(|n| (format!("Bearer {}", "t".repeat(n)).into_bytes(), None)),
    ];
    let mut runner = seeded_runner("authorization", 0.08);
    runner
        .run(&headers, |(header, expected)| {
            counted();
            let result = no_panic("parse_authorization", || parse_authorization(&header))?;
            match (&result, &expected) {
                (Ok(got), Some(want)) if header.len() <= 4096 => {
                    prop_assert!(
                        got == want,
                        "parsed {:?} wrongly",
                        String::from_utf8_lossy(&header)
                    )
                }
                (Err(err), Some(_)) if header.len() <= 4096 => {
                    return Err(TestCaseError::fail(format!(
                        "refused well-formed credentials {:?}: {err}",
                        String::from_utf8_lossy(&header)
                    )))
                }
                (Err(err), _) => {
                    prop_assert_eq!(err.code(), Code::Unauthenticated);
                    prop_assert!(!err.message().is_empty());
                    // Never echo the credentials the client sent (a password).
                    let text = String::from_utf8_lossy(&header);
                    let secret = text
                        .trim()
                        .split_once(' ')
                        .map(|(_, s)| s.trim())
                        .unwrap_or("");
                    if secret.len() >= 6 {
                        prop_assert!(!err.message().contains(secret), "{}", err);
                    }
                }
                (Ok(_), _) => prop_assert!(header.len() <= 4096, "accepted an over-long header"),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    report("authorization", 0.08);
}

// ---------------------------------------------------------------------------
// FlightData: seed streams from hangar's own Encoder

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
        .unwrap()
}

fn primitives(rows: usize, k: i64) -> RecordBatch {
    let r = 0..rows as i64;
    batch(vec![
        (
            "i8",
            Arc::new(Int8Array::from(
                r.clone().map(|i| (i * k) as i8).collect::<Vec<_>>(),
            )),
        ),
        (
            "i32",
            Arc::new(Int32Array::from(
                r.clone()
                    .map(|i| (i % 3 != 0).then_some(i as i32))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(
                r.clone().map(|i| i * k).collect::<Vec<_>>(),
            )),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(
                r.clone().map(|i| i as u64).collect::<Vec<_>>(),
            )),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(
                r.clone().map(|i| i as f32 / 3.0).collect::<Vec<_>>(),
            )),
        ),
        (
            "f64",
            Arc::new(Float64Array::from(
                r.clone()
                    .map(|i| (i % 2 == 0).then_some(i as f64))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "bool",
            Arc::new(BooleanArray::from(
                r.clone()
                    .map(|i| (i % 5 != 0).then_some(i % 2 == 0))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "date",
            Arc::new(Date32Array::from(
                r.clone().map(|i| i as i32).collect::<Vec<_>>(),
            )),
        ),
        (
            "ts",
            Arc::new(
                TimestampMillisecondArray::from(r.clone().collect::<Vec<_>>()).with_timezone("UTC"),
            ),
        ),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(r.clone().map(|i| i as i128 * 100).collect::<Vec<_>>())
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "fsb",
            Arc::new(
                FixedSizeBinaryArray::try_from_iter(r.map(|i| (i as u32).to_le_bytes())).unwrap(),
            ),
        ),
    ])
}

fn strings(rows: usize, k: i64) -> RecordBatch {
    let texts: Vec<Option<String>> = (0..rows as i64)
        .map(|i| (i % 4 != 0).then(|| format!("s{}-{}", i * k, "x".repeat((i % 7) as usize))))
        .collect();
    let plain: Vec<String> = texts
        .iter()
        .map(|t| t.clone().unwrap_or_default())
        .collect();
    batch(vec![
        ("utf8", Arc::new(StringArray::from(texts.clone()))),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from(plain.clone())),
        ),
        (
            "binary",
            Arc::new(BinaryArray::from_iter_values(
                plain.iter().map(|s| s.as_bytes()),
            )),
        ),
        (
            "large_binary",
            Arc::new(LargeBinaryArray::from_iter_values(
                plain.iter().map(|s| s.as_bytes()),
            )),
        ),
    ])
}

fn dictionaries(rows: usize, k: i64) -> RecordBatch {
    let words = ["alpha", "beta", "gamma", "delta"];
    let dict: DictionaryArray<Int32Type> = (0..rows)
        .map(|i| (i % 5 != 0).then_some(words[(i + k as usize) % words.len()]))
        .collect();
    let keys = Int8Array::from((0..rows as i8).map(|i| i % 3).collect::<Vec<_>>());
    let values = Int64Array::from(vec![10 * k, 20 * k, 30 * k]);
    let numbers = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).unwrap();
    batch(vec![
        ("words", Arc::new(dict)),
        ("numbers", Arc::new(numbers)),
    ])
}

fn nested(rows: usize, k: i64) -> RecordBatch {
    let mut tags = ListBuilder::new(StringBuilder::new());
    let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    for i in 0..rows {
        for j in 0..(i % 3) {
            tags.values().append_value(format!("t{j}"));
            map.keys().append_value(format!("k{j}"));
            map.values().append_value((i * j) as i32);
        }
        tags.append(i % 4 != 1);
        map.append(true).unwrap();
    }
    let tags: ArrayRef = Arc::new(tags.finish());
    let ids: ArrayRef = Arc::new(Int32Array::from((0..rows as i32).collect::<Vec<_>>()));
    let structs = StructArray::from(vec![
        (Arc::new(Field::new("id", DataType::Int32, false)), ids),
        (
            Arc::new(Field::new("tags", tags.data_type().clone(), true)),
            tags,
        ),
    ]);
    let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(
        (0..rows as i64)
            .map(|i| (i % 3 != 2).then(|| (0..i % 4).map(|j| Some(j * k)).collect::<Vec<_>>())),
    );
    let fixed = FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
        (0..rows as i32).map(|i| Some(vec![Some(i), None, Some(i * 2)])),
        3,
    );
    batch(vec![
        ("struct", Arc::new(structs)),
        ("list", Arc::new(lists)),
        ("fixed_list", Arc::new(fixed)),
        ("map", Arc::new(map.finish())),
    ])
}

fn views(rows: usize, k: i64) -> RecordBatch {
    let texts: Vec<String> = (0..rows as i64)
        .map(|i| {
            format!(
                "view-{i}-{}",
                "long enough to be out of line".repeat((i % 2 + k % 2) as usize)
            )
        })
        .collect();
    batch(vec![
        (
            "utf8_view",
            Arc::new(StringViewArray::from_iter_values(texts.iter())),
        ),
        (
            "binary_view",
            Arc::new(BinaryViewArray::from_iter_values(
                texts.iter().map(|s| s.as_bytes()),
            )),
        ),
    ])
}

fn nulls(rows: usize, _k: i64) -> RecordBatch {
    batch(vec![
        ("nothing", Arc::new(NullArray::new(rows))),
        (
            "n",
            Arc::new(Int32Array::from((0..rows as i32).collect::<Vec<_>>())),
        ),
    ])
}

type Maker = fn(usize, i64) -> RecordBatch;

/// Encodes the schema and two batches of `make` with hangar's Encoder.
fn encode(make: Maker, compression: Option<CompressionType>) -> Vec<FlightData> {
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap();
    let first = make(7, 1);
    let mut encoder = Encoder::new(options, usize::MAX, usize::MAX);
    let mut messages = vec![encoder.schema(&first.schema())];
    encoder.batch(&first, &mut messages).unwrap();
    encoder.batch(&make(12, 3), &mut messages).unwrap();
    messages
}

/// (name, messages) of every seed stream; `compressed` selects LZ4/zstd bodies.
fn seeds(compressed: bool) -> &'static [(String, Vec<FlightData>)] {
    static PLAIN: OnceLock<Vec<(String, Vec<FlightData>)>> = OnceLock::new();
    static PACKED: OnceLock<Vec<(String, Vec<FlightData>)>> = OnceLock::new();
    let makers: [(&str, Maker); 6] = [
        ("primitives", primitives),
        ("strings", strings),
        ("dictionaries", dictionaries),
        ("nested", nested),
        ("views", views),
        ("nulls", nulls),
    ];
    let build = |codecs: &[(&str, Option<CompressionType>)]| {
        let mut out = Vec::new();
        for (codec, compression) in codecs {
            for (name, make) in makers {
                out.push((format!("{name}/{codec}"), encode(make, *compression)));
            }
        }
        out
    };
    if compressed {
        PACKED.get_or_init(|| {
            build(&[
                ("lz4", Some(CompressionType::LZ4_FRAME)),
                ("zstd", Some(CompressionType::ZSTD)),
            ])
        })
    } else {
        PLAIN.get_or_init(|| build(&[("plain", None)]))
    }
}

// ---------------------------------------------------------------------------
// FlightData mutations

/// Values that make declared lengths and offsets hostile.
fn hostile_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-1),
        Just(-8),
        Just(1 << 31),
        Just(1 << 40),
        Just(1 << 62),
        Just(u32::MAX as i64),
        0i64..64,
        any::<i64>(),
    ]
}

/// A position, reduced modulo the size of what it indexes.
#[derive(Debug, Clone, Copy)]
struct At(usize);

impl At {
    fn index(self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.0 % len
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: At,
        bit: u8,
    },
    Set {
        at: At,
        byte: u8,
    },
    Insert {
        at: At,
        bytes: Vec<u8>,
    },
    Delete {
        at: At,
        len: usize,
    },
    Truncate {
        keep: At,
    },
    /// Eight bytes anywhere (8-aligned when possible) become `value`.
    Overwrite {
        at: At,
        value: i64,
    },
    /// A declared buffer (offset, length) of the batch header.
    BufferField {
        buffer: At,
        length: bool,
        value: i64,
    },
    /// A declared field node (length, null count) of the batch header.
    NodeField {
        node: At,
        length: bool,
        value: i64,
    },
    /// The uncompressed length that prefixes a compressed buffer in the body.
    DecompressedLength {
        buffer: At,
        value: i64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = || any::<usize>().prop_map(At);
    prop_oneof![
        3 => (at(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (at(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (at(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (at(), 1usize..32).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => at().prop_map(|keep| Mutation::Truncate { keep }),
        2 => (at(), hostile_i64()).prop_map(|(at, value)| Mutation::Overwrite { at, value }),
        2 => (at(), any::<bool>(), hostile_i64()).prop_map(|(buffer, length, value)| Mutation::BufferField { buffer, length, value }),
        2 => (at(), any::<bool>(), hostile_i64()).prop_map(|(node, length, value)| Mutation::NodeField { node, length, value }),
        2 => (at(), hostile_i64()).prop_map(|(buffer, value)| Mutation::DecompressedLength { buffer, value }),
    ]
}

/// Where the buffers and field nodes of a batch header lie in its bytes.
#[derive(Default)]
struct Layout {
    /// Byte positions of each 16-byte (offset, length) buffer entry.
    buffers: Vec<(usize, i64, i64)>,
    /// Byte positions of each 16-byte (length, null count) node entry.
    nodes: Vec<usize>,
    compressed: bool,
}

fn layout(header: &[u8]) -> Layout {
    let Ok(message) = arrow_ipc::root_as_message(header) else {
        return Layout::default();
    };
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    let Some(batch) = batch else {
        return Layout::default();
    };
    let base = header.as_ptr() as usize;
    let mut out = Layout {
        compressed: batch.compression().is_some(),
        ..Layout::default()
    };
    if let Some(buffers) = batch.buffers() {
        let start = buffers.bytes().as_ptr() as usize - base;
        for (i, b) in buffers.iter().enumerate() {
            out.buffers.push((start + 16 * i, b.offset(), b.length()));
        }
    }
    if let Some(nodes) = batch.nodes() {
        let start = nodes.bytes().as_ptr() as usize - base;
        out.nodes = (0..nodes.len()).map(|i| start + 16 * i).collect();
    }
    out
}

fn put_i64(bytes: &mut [u8], at: usize, value: i64) {
    if at + 8 <= bytes.len() {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
}

/// Applies mutations to one message, in the header or the body.
fn mutate(message: &FlightData, in_header: bool, mutations: &[Mutation]) -> FlightData {
    let mut header = message.data_header.to_vec();
    let mut body = message.data_body.to_vec();
    for m in mutations {
        let l = layout(&header);
        let target = if in_header { &mut header } else { &mut body };
        match m {
            Mutation::Flip { at, bit } if !target.is_empty() => {
                let i = at.index(target.len());
                target[i] ^= 1 << bit;
            }
            Mutation::Set { at, byte } if !target.is_empty() => {
                let i = at.index(target.len());
                target[i] = *byte;
            }
            Mutation::Insert { at, bytes } => {
                let i = at.index(target.len() + 1);
                target.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at, len } if !target.is_empty() => {
                let i = at.index(target.len());
                let end = (i + len).min(target.len());
                target.drain(i..end);
            }
            Mutation::Truncate { keep } => {
                let n = keep.index(target.len() + 1);
                target.truncate(n);
            }
            Mutation::Overwrite { at, value } if target.len() >= 8 => {
                let slots = target.len() / 8;
                let i = at.index(slots) * 8;
                put_i64(target, i, *value);
            }
            Mutation::BufferField {
                buffer,
                length,
                value,
            } if !l.buffers.is_empty() => {
                let (pos, _, _) = l.buffers[buffer.index(l.buffers.len())];
                put_i64(&mut header, pos + if *length { 8 } else { 0 }, *value);
            }
            Mutation::NodeField {
                node,
                length,
                value,
            } if !l.nodes.is_empty() => {
                let pos = l.nodes[node.index(l.nodes.len())];
                put_i64(&mut header, pos + if *length { 0 } else { 8 }, *value);
            }
            Mutation::DecompressedLength { buffer, value } if !l.buffers.is_empty() => {
                let (_, offset, length) = l.buffers[buffer.index(l.buffers.len())];
                if l.compressed && length >= 8 && offset >= 0 {
                    put_i64(&mut body, offset as usize, *value);
                }
            }
            _ => {}
        }
    }
    FlightData {
        data_header: Bytes::from(header),
        data_body: Bytes::from(body),
        ..message.clone()
    }
}

/// One message, for a failure report: its header in full, its body's length.
fn describe(message: &FlightData) -> String {
    format!(
        "data_header ({} bytes): {:02x?}\ndata_body: {} bytes",
        message.data_header.len(),
        &message.data_header[..],
        message.data_body.len()
    )
}

/// Decodes a stream with a fresh Decoder, as DoPut does: stops at the first
/// error. Fails on a panic (also one the decoder contained:
/// `Error::ContainedPanic`), on any error that is not a clear InvalidArgument,
/// and on a batch handed on that is not valid Arrow data.
fn decode_stream(messages: &[FlightData]) -> Result<bool, TestCaseError> {
    let mut decoder = Decoder::new();
    for (i, message) in messages.iter().enumerate() {
        let decoded = no_panic(&format!("Decoder::decode (message {i})"), || {
            decoder.decode(message)
        })?;
        match decoded {
            Ok(hangar::ipc::Decoded::Batch(batch)) => {
                let valid = no_panic("validating a decoded batch", || {
                    batch
                        .columns()
                        .iter()
                        .try_for_each(|c| c.to_data().validate_full())
                })?;
                prop_assert!(
                    valid.is_ok(),
                    "message {}: the decoder handed on an invalid batch: {:?}",
                    i,
                    valid
                );
            }
            Ok(_) => {}
            Err(hangar::Error::ContainedPanic(why)) => {
                return Err(TestCaseError::fail(format!(
                    "message {i}: Arrow's IPC reader panicked (contained by the decoder, \
                     so it would pass as InvalidArgument; hangar's checks must refuse this \
                     input first): {why}\n{}",
                    describe(message)
                )));
            }
            Err(err) => {
                prop_assert_eq!(
                    err.code(),
                    Code::InvalidArgument,
                    "message {}: {}",
                    i,
                    err.message()
                );
                prop_assert!(!err.message().is_empty(), "message {}: empty error", i);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A recipe for one mutated stream: which seed, which message, where, how.
/// Failing recipes print compactly and replay with [`MutatedCase::build`].
#[derive(Debug, Clone)]
struct MutatedCase {
    compressed: bool,
    seed: usize,
    message: At,
    in_header: bool,
    mutations: Vec<Mutation>,
    /// Also mutate the next message the same way, in the other part.
    twice: bool,
}

impl MutatedCase {
    fn build(&self) -> Vec<FlightData> {
        let seeds = seeds(self.compressed);
        let mut messages = seeds[self.seed % seeds.len()].1.clone();
        let i = self.message.index(messages.len());
        messages[i] = mutate(&messages[i], self.in_header, &self.mutations);
        if self.twice {
            let j = (i + 1) % messages.len();
            messages[j] = mutate(&messages[j], !self.in_header, &self.mutations);
        }
        messages
    }
}

fn mutated_cases(compressed: bool) -> impl Strategy<Value = MutatedCase> {
    (
        0..seeds(compressed).len(),
        any::<usize>(),
        any::<bool>(),
        prop::collection::vec(mutation(), 1..4),
        any::<bool>(),
    )
        .prop_map(
            move |(seed, message, in_header, mutations, twice)| MutatedCase {
                compressed,
                seed,
                message: At(message),
                in_header,
                mutations,
                twice,
            },
        )
}

/// A recipe for a stream assembled from the messages of two seeds: reordered,
/// dropped, repeated, mixed (batch before schema, foreign dictionaries, second
/// schema). Pick `(from_b, index, special)`: special 0 is an empty message, 1 a
/// body without a header.
#[derive(Debug, Clone)]
struct ShuffledCase {
    compressed: bool,
    a: usize,
    b: usize,
    picks: Vec<(bool, At, u8)>,
}

impl ShuffledCase {
    fn build(&self) -> Vec<FlightData> {
        let seeds = seeds(self.compressed);
        self.picks
            .iter()
            .map(|&(from_b, index, special)| match special {
                0 => FlightData::default(),
                1 => FlightData {
                    data_body: Bytes::from_static(b"body without a header"),
                    ..FlightData::default()
                },
                _ => {
                    let s = &seeds[if from_b { self.b } else { self.a } % seeds.len()].1;
                    s[index.index(s.len())].clone()
                }
            })
            .collect()
    }
}

fn shuffled_cases(compressed: bool) -> impl Strategy<Value = ShuffledCase> {
    let n = seeds(compressed).len();
    (
        0..n,
        0..n,
        prop::collection::vec((any::<bool>(), any::<usize>().prop_map(At), 0u8..8), 1..10),
    )
        .prop_map(move |(a, b, picks)| ShuffledCase {
            compressed,
            a,
            b,
            picks,
        })
}

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);

fn tally(accepted: bool) {
    if accepted {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
    } else {
        REJECTED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the decoder properties; returns the number of cases.
fn fuzz_decoder(compressed: bool) -> u64 {
    let share = if compressed { 0.20 } else { 0.30 };
    let mut runner = seeded_runner("decoder-mutated", share);
    runner
        .run(&mutated_cases(compressed), |case| {
            counted();
            tally(decode_stream(&case.build())?);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("mutated FlightData: {e}"));
    let mut runner = seeded_runner("decoder-reordered", share / 2.0);
    runner
        .run(&shuffled_cases(compressed), |case| {
            counted();
            tally(decode_stream(&case.build())?);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("reordered FlightData: {e}"));
    eprintln!(
        "fuzz: decoder ({}): {} streams accepted whole, {} rejected with InvalidArgument",
        if compressed {
            "LZ4/zstd bodies"
        } else {
            "plain bodies"
        },
        ACCEPTED.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed)
    );
    RUN.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Child processes: an abort must be reported, not take the whole run down

const CHILD_ENV: &str = "HANGAR_FUZZ_CHILD";

/// Not a test of its own: the child process that runs decoder properties when
/// `HANGAR_FUZZ_CHILD` names one, started (`--ignored --exact fuzz_child`) by
/// [`run_child`] for the decoder tests below; run any other way, it fails
/// rather than pass without testing anything.
#[test]
#[ignore = "helper process: run by the decoder_* and compressed_buffer_* tests (run_child)"]
fn fuzz_child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        panic!(
            "fuzz_child is a helper process, not a test: the decoder tests run it with \
             {CHILD_ENV} set (decoder, decoder-compressed, huge-decompressed-length)"
        );
    };
    let cases = match what.as_str() {
        "decoder" => fuzz_decoder(false),
        "decoder-compressed" => fuzz_decoder(true),
        "huge-decompressed-length" => {
            for (name, stream) in seeds(true) {
                for value in [1i64 << 40, 1 << 62, i64::MAX] {
                    for (i, message) in stream.iter().enumerate() {
                        let n = layout(&message.data_header).buffers.len();
                        for b in 0..n {
                            let at = At(b);
                            let m = Mutation::DecompressedLength { buffer: at, value };
                            let mut messages = stream.clone();
                            messages[i] = mutate(message, false, &[m]);
                            eprintln!("{name}: message {i}, buffer {b}: declared length {value}");
                            decode_stream(&messages).unwrap_or_else(|e| panic!("{name}: {e}"));
                            counted();
                        }
                    }
                }
            }
            RUN.load(Ordering::Relaxed)
        }
        other => panic!("unknown child {other}"),
    };
    println!("FUZZ-CASES {cases}");
}

/// Runs `fuzz_child` for `what` in a child process (bounded), failing with its
/// output if it fails or dies; returns the cases it ran.
fn run_child(what: &str) -> u64 {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("stdout");
    let err = out_dir.path().join("stderr");
    let mut child = common::helper_process("fuzz_child", (CHILD_ENV, what))
        .env("HANGAR_FUZZ_SEED", fuzz_seed().to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(1_800);
    let status = common::wait_timeout(&mut child, limit);
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what}: the decoder fuzz child hung for {limit:?}\n{}",
            tail(&err)
        );
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let how = match status.signal() {
            Some(libc::SIGABRT) => {
                "ABORTED (SIGABRT: typically an allocation of a client-declared size)".to_string()
            }
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("failed ({status})"),
        };
        panic!(
            "{what}: the decoder child {how} (HANGAR_FUZZ_SEED={} HANGAR_FUZZ_CASES={})\n\
             --- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}",
            fuzz_seed(),
            total_cases(),
            tail(&err),
            tail(&out)
        );
    }
    let cases = stdout
        .lines()
        .find_map(|l| l.split("FUZZ-CASES ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{what}: the child reported no case count\n{stdout}"));
    eprintln!(
        "{}",
        tail(&err)
            .lines()
            .filter(|l| l.starts_with("fuzz:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "fuzz: {what}: {cases} cases in a child process (HANGAR_FUZZ_SEED={})",
        fuzz_seed()
    );
    cases
}

#[test]
fn decoder_survives_mutated_and_reordered_flight_data() {
    run_child("decoder");
}

#[test]
fn decoder_survives_mutated_compressed_flight_data() {
    run_child("decoder-compressed");
}

#[test]
fn compressed_buffer_declaring_a_huge_uncompressed_length_is_invalid_argument() {
    run_child("huge-decompressed-length");
}

// ---------------------------------------------------------------------------
// Named hostile sequences (fast, in process, exact expectations)

fn expect_invalid(messages: &[FlightData], needle: &str) {
    let mut decoder = Decoder::new();
    for (i, m) in messages.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| decoder.decode(m))) {
            Err(p) => panic!("message {i} panicked: {}", panic_text(&*p)),
            Ok(Ok(_)) if i + 1 < messages.len() => {}
            Ok(Ok(d)) => panic!("the last message was accepted: {d:?}"),
            Ok(Err(hangar::Error::ContainedPanic(why))) => panic!(
                "message {i}: Arrow's IPC reader panicked (contained): {why}\n{}",
                describe(m)
            ),
            Ok(Err(err)) => {
                assert_eq!(i + 1, messages.len(), "message {i} refused early: {err}");
                assert_eq!(err.code(), Code::InvalidArgument, "{err}");
                assert!(err.message().contains(needle), "{err}");
                return;
            }
        }
    }
}

#[test]
fn named_hostile_sequences_are_invalid_argument() {
    let ints = &seeds(false)[0].1;
    let dicts = &seeds(false)[2].1;
    // A record batch before the schema.
    expect_invalid(&[ints[1].clone()], "before the schema");
    // A dictionary batch before the schema.
    expect_invalid(&[dicts[1].clone()], "before the schema");
    // A dictionary batch for an id the schema does not have.
    expect_invalid(&[ints[0].clone(), dicts[1].clone()], "dictionary");
    // The schema changes mid-stream.
    expect_invalid(
        &[ints[0].clone(), ints[1].clone(), dicts[0].clone()],
        "schema changed",
    );
    // A batch of another schema after this one's: its buffers do not fit
    // this schema's layout (hangar's width check refuses it before Arrow).
    expect_invalid(&[dicts[0].clone(), ints[1].clone()], "whole number");
    // Huge declared lengths: every buffer, offsets and lengths.
    for value in [i64::MAX, 1 << 40, -1, i64::MIN] {
        for length in [true, false] {
            let header = &ints[1].data_header;
            for b in 0..layout(header).buffers.len() {
                let at = At(b);
                let m = Mutation::BufferField {
                    buffer: at,
                    length,
                    value,
                };
                let mutated = mutate(&ints[1], true, &[m]);
                let mut decoder = Decoder::new();
                decoder.decode(&ints[0]).unwrap();
                let result = catch_unwind(AssertUnwindSafe(|| decoder.decode(&mutated)))
                    .unwrap_or_else(|p| {
                        panic!("buffer {b} = {value}: panicked: {}", panic_text(&*p))
                    });
                if let Err(hangar::Error::ContainedPanic(why)) = &result {
                    panic!(
                        "buffer {b} {} = {value}: Arrow's IPC reader panicked (contained): \
                         {why}\n{}",
                        if length { "length" } else { "offset" },
                        describe(&mutated)
                    );
                }
                if value != 0 {
                    let err = result.expect_err("a buffer outside the body must be refused");
                    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
                }
            }
        }
    }
    // A body without a header.
    expect_invalid(
        &[FlightData {
            data_body: Bytes::from_static(b"x"),
            ..FlightData::default()
        }],
        "no data_header",
    );
    // Every truncation of every message of every plain seed: error or OK, never a panic.
    for (name, stream) in seeds(false) {
        for (i, m) in stream.iter().enumerate() {
            for cut in (0..m.data_header.len()).step_by(3) {
                let mut messages = stream[..i].to_vec();
                messages.push(FlightData {
                    data_header: m.data_header.slice(..cut),
                    ..m.clone()
                });
                decode_stream(&messages)
                    .unwrap_or_else(|e| panic!("{name} message {i} cut {cut}: {e}"));
            }
        }
    }
}

/// Inputs the properties found (minimal recipes, as proptest printed them).
/// They depend on the seed streams: keep those stable.
fn regression_cases() -> Vec<MutatedCase> {
    vec![
        // Dictionary batch whose buffer length is 29: arrow's validation
        // panics on the misaligned slice ("prefix.is_empty() && suffix.is_empty()").
        MutatedCase {
            compressed: false,
            seed: 2,
            message: At(9895938407500414524),
            in_header: false,
            mutations: vec![Mutation::BufferField {
                buffer: At(5449811642310725397),
                length: true,
                value: 29,
            }],
            twice: false,
        },
        // Field node length i64::MAX under a FixedSizeList: "integer overflow
        // computing expected number of expected values in FixedListSize".
        MutatedCase {
            compressed: false,
            seed: 3,
            message: At(2250260507062),
            in_header: false,
            mutations: vec![Mutation::NodeField {
                node: At(17655361602021061950),
                length: true,
                value: i64::MAX,
            }],
            twice: false,
        },
        // One bit flipped in a dictionary batch's header and body.
        MutatedCase {
            compressed: false,
            seed: 2,
            message: At(8436973806756872582),
            in_header: false,
            mutations: vec![Mutation::Flip {
                at: At(9709059203429813736),
                bit: 0,
            }],
            twice: true,
        },
        // Nested batch whose buffer length is 33.
        MutatedCase {
            compressed: false,
            seed: 3,
            message: At(0),
            in_header: false,
            mutations: vec![Mutation::BufferField {
                buffer: At(13916307293543835360),
                length: true,
                value: 33,
            }],
            twice: true,
        },
        // LZ4 strings batch whose (compressed) buffer 1 length is 41, not 40
        // (found with HANGAR_FUZZ_CASES=100000 once contained panics counted).
        MutatedCase {
            compressed: true,
            seed: 1,
            message: At(4837939786157237508),
            in_header: false,
            mutations: vec![Mutation::Overwrite {
                at: At(3717810805123001862),
                value: 41,
            }],
            twice: true,
        },
        // A compressed buffer declared 1 byte long: no room for its 8-byte
        // length prefix (found with a random seed once hangar checked widths).
        MutatedCase {
            compressed: true,
            seed: 7,
            message: At(0),
            in_header: false,
            mutations: vec![Mutation::BufferField {
                buffer: At(9651668156333097757),
                length: true,
                value: 1,
            }],
            twice: true,
        },
    ]
}

/// The regressions, replayed on every run.
#[test]
fn regressions_found_by_fuzzing_are_invalid_argument_not_a_panic() {
    let cases = regression_cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            decode_stream(&case.build())
                .err()
                .map(|e| format!("{case:?}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} regressions fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn misaligned_buffer_offsets_are_invalid_argument_not_a_panic() {
    // The IPC format aligns every buffer to 8 bytes; a client may not. Each
    // buffer of each batch of each plain seed is moved by 1..8 bytes, staying
    // inside the body.
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, stream) in seeds(false) {
        for (i, message) in stream.iter().enumerate().skip(1) {
            let l = layout(&message.data_header);
            for (b, &(pos, offset, length)) in l.buffers.iter().enumerate() {
                for shift in [1i64, 3, 4] {
                    if length == 0 || offset + shift + length > message.data_body.len() as i64 {
                        continue;
                    }
                    let mut header = message.data_header.to_vec();
                    put_i64(&mut header, pos, offset + shift);
                    let mut messages = stream[..i].to_vec();
                    messages.push(FlightData {
                        data_header: Bytes::from(header),
                        ..message.clone()
                    });
                    checked += 1;
                    if let Err(e) = decode_stream(&messages) {
                        failures.push(format!(
                            "{name} message {i} buffer {b} offset +{shift}: {e}"
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "fuzz: misaligned buffers: {checked} cases, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} misaligned buffers failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

// ---------------------------------------------------------------------------
// Live: mutated uploads to a running server

fn to_wire(message: &FlightData, name: Option<&str>) -> arrow_flight::FlightData {
    arrow_flight::FlightData {
        flight_descriptor: name.map(common::path),
        data_header: message.data_header.clone(),
        app_metadata: message.app_metadata.clone(),
        data_body: message.data_body.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mutated_uploads_are_invalid_argument_and_leave_no_trace() {
    let mut server = common::TestServer::start_with_args(["--idle-timeout", "10s"]);
    let mut client = server.client().await;
    let count = (total_cases() / 20).clamp(300, 5_000);
    // Generated from the run's seed like the properties, so a failure replays.
    let mut runner = seeded_runner("live-mutated-uploads", 0.0);
    let strategy = prop_oneof![
        3 => mutated_cases(false).prop_map(|c| c.build()),
        1 => shuffled_cases(false).prop_map(|c| c.build()),
    ];
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut stored = Vec::new();
    let started = Instant::now();
    eprintln!("fuzz: live DoPut: HANGAR_FUZZ_SEED={}", fuzz_seed());
    for i in 0..count {
        let messages = strategy.new_tree(&mut runner).unwrap().current();
        let name = format!("live-{i}.parquet");
        let wire: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(j, m)| to_wire(m, (j == 0).then_some(name.as_str())))
            .collect();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            common::put_flight_data(&mut client, wire),
        )
        .await;
        let key = match result {
            Err(_) => panic!("case {i}: DoPut did not answer within 20 s (hang)\n{messages:?}"),
            Ok(Ok(_)) => {
                stored.push(name.clone());
                "OK".to_string()
            }
            Ok(Err(status)) => {
                if status.code() != Code::InvalidArgument {
                    panic!(
                        "case {i}: a mutated upload got {:?} ({}), not InvalidArgument\n--- server log tail ---\n{}",
                        status.code(),
                        status.message(),
                        server.stderr().lines().rev().take(5).collect::<Vec<_>>().join("\n")
                    );
                }
                format!("{:?}", status.code())
            }
        };
        *outcomes.entry(key).or_default() += 1;
        assert!(
            server.alive(),
            "the server died on case {i}\n{}",
            server.stderr()
        );
    }
    // Everything accepted reads back; nothing half-written remains.
    for name in &stored {
        if let Err(status) = common::get(&mut client, name).await {
            panic!("{name} was accepted but cannot be read back: {status}");
        }
    }
    assert!(
        common::temp_files(server.repo()).is_empty(),
        "temporary files left: {:?}",
        common::temp_files(server.repo())
    );
    eprintln!(
        "fuzz: live DoPut: {count} mutated uploads in {:.1} s: {outcomes:?} (HANGAR_FUZZ_SEED={})",
        started.elapsed().as_secs_f64(),
        fuzz_seed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_compressed_upload_declaring_a_huge_length_does_not_kill_the_server() {
    let mut server = common::TestServer::start();
    let mut client = server.client().await;
    let (_, stream) = &seeds(true)[1]; // strings, LZ4
    let batch = 1;
    let layout = layout(&stream[batch].data_header);
    let last = layout
        .buffers
        .iter()
        .rposition(|(_, _, len)| *len >= 8)
        .unwrap();
    let at = At(last);
    let mutated = mutate(
        &stream[batch],
        false,
        &[Mutation::DecompressedLength {
            buffer: at,
            value: 1 << 40,
        }],
    );
    let wire = vec![
        to_wire(&stream[0], Some("bomb.parquet")),
        to_wire(&mutated, None),
    ];
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        common::put_flight_data(&mut client, wire),
    )
    .await;
    // The answer comes once the upload's worker is done with the message, so
    // there is nothing to wait for: a server that died of it failed the call.
    let status = result.expect("no answer").expect_err("must be refused");
    assert!(
        server.alive(),
        "the server died on a compressed buffer declaring 1 TiB uncompressed:\n{}",
        server.stderr()
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let listed = client.list_flights("").await.map(drop);
    assert!(listed.is_ok(), "the server stopped serving: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_batch_of_nulls_declaring_a_huge_row_count_is_refused() {
    let mut server = common::TestServer::start();
    let mut client = server.client().await;
    // One Null column: no buffers, so a declared length costs the decoder nothing,
    // but storing 2^40 nulls must not be attempted.
    let schema = Arc::new(arrow_schema::Schema::new(vec![Field::new(
        "nothing",
        DataType::Null,
        true,
    )]));
    let mut encoder = Encoder::new(IpcWriteOptions::default(), usize::MAX, usize::MAX);
    let first = encoder.schema(&schema);
    let mut messages = Vec::new();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(NullArray::new(3))]).unwrap();
    encoder.batch(&batch, &mut messages).unwrap();
    let huge = 1i64 << 40;
    let mut header = messages[0].data_header.to_vec();
    let l = layout(&header);
    put_i64(&mut header, l.nodes[0], huge);
    // The batch length is a table field: find the 8 bytes that hold 3 and set them too.
    let at = (0..header.len().saturating_sub(8))
        .find(|&i| i64::from_le_bytes(header[i..i + 8].try_into().unwrap()) == 3 && i != l.nodes[0])
        .expect("the batch length field");
    put_i64(&mut header, at, huge);
    let mutated = FlightData {
        data_header: Bytes::from(header),
        ..messages[0].clone()
    };
    let wire = vec![
        to_wire(&first, Some("nulls.parquet")),
        to_wire(&mutated, None),
    ];
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        common::put_flight_data(&mut client, wire),
    )
    .await;
    assert!(
        server.alive(),
        "the server died on a batch declaring 2^40 null rows:\n{}",
        server.stderr()
    );
    match result {
        Err(_) => panic!("a batch declaring 2^40 null rows kept the server busy for 30 s"),
        Ok(Ok(r)) => panic!("a batch declaring 2^40 null rows was stored: {r:?}"),
        Ok(Err(status)) => assert_eq!(status.code(), Code::InvalidArgument, "{status}"),
    }
    assert!(common::temp_files(server.repo()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_regressions_are_invalid_argument() {
    let server = common::TestServer::start();
    let mut client = server.client().await;
    let mut wrong = Vec::new();
    for (i, case) in regression_cases().iter().enumerate() {
        let name = format!("regression-{i}.parquet");
        let wire: Vec<_> = case
            .build()
            .iter()
            .enumerate()
            .map(|(j, m)| to_wire(m, (j == 0).then_some(name.as_str())))
            .collect();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            common::put_flight_data(&mut client, wire),
        )
        .await
        .unwrap_or_else(|_| panic!("regression {i}: no answer within 20 s"));
        match result {
            Err(status) if status.code() == Code::InvalidArgument => {}
            other => wrong.push(format!(
                "regression {i}: expected InvalidArgument, got {:?}",
                other.map(|r| r.len())
            )),
        }
    }
    assert!(common::temp_files(server.repo()).is_empty());
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\n--- server log ---\n{}",
        server.stderr()
    );
}
