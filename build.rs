//! Compiles `proto/Flight.proto` with a pure-Rust protobuf compiler (protox), so a
//! build never needs `protoc` on the machine, and feeds the result to tonic's
//! prost code generator. The same descriptors, encoded, are what gRPC server
//! reflection hands to tools like grpcurl.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/Flight.proto");
    let fds = protox::compile(["Flight.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("flight_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
