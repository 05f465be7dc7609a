//! Compiles `proto/Flight.proto` with a pure-Rust protobuf compiler (protox), so a
//! build never needs `protoc` on the machine, and feeds the result to tonic's
//! prost code generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/Flight.proto");
    let fds = protox::compile(["Flight.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
