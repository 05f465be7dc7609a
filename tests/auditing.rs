//! The tools for people who audit the wire: `hangar proto` (the compiled-in
//! Flight.proto and its digest) and `--trace` (every gRPC event, decoded),
//! pinned on fixed inputs.

mod common;

use common::run_hangar;

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn proto_prints_the_compiled_in_file_byte_for_byte_and_its_sha256() {
    let source = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/Flight.proto"))
        .expect("reading proto/Flight.proto");
    let digest = sha256_hex(&source);

    let out = run_hangar(["proto"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout == source,
        "stdout is not proto/Flight.proto byte for byte"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{digest}  Flight.proto (")),
        "stderr: {stderr}"
    );

    let out = run_hangar(["proto", "--sha256"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{digest}  Flight.proto\n")
    );
    assert!(out.stderr.is_empty());

    let out = run_hangar(["proto", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}
