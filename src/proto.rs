//! The Arrow Flight protocol types and service trait, generated at build time from
//! `proto/Flight.proto` (the upstream file, unchanged).

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/arrow.flight.protocol.rs"));

pub use flight_service_client::FlightServiceClient;
pub use flight_service_server::{FlightService, FlightServiceServer};
