//! The Arrow Flight protocol types and service trait, generated at build time from
//! `proto/Flight.proto` (the upstream file, unchanged).

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/arrow.flight.protocol.rs"));

pub use flight_service_client::FlightServiceClient;
pub use flight_service_server::{FlightService, FlightServiceServer};

/// The `proto/Flight.proto` this binary was built from, byte for byte
/// (`hangar proto` prints it, so an auditor can diff it against upstream).
pub const FLIGHT_PROTO: &str = include_str!("../proto/Flight.proto");

/// The compiled descriptors of `FLIGHT_PROTO` and its imports, with source
/// comments, encoded as a `FileDescriptorSet`: what gRPC server reflection
/// serves.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flight_descriptor.bin"));
