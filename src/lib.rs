//! hangar: a Parquet dataset store that speaks Arrow Flight.
//!
//! A tour, following the data from the wire to the disk:
//!
//! - [`proto`] holds the Flight protocol types generated from `proto/Flight.proto`.
//! - [`service`] implements the Flight RPCs: it decodes a request, asks the store,
//!   and encodes the reply. It is the only module that speaks gRPC.
//! - [`ipc`] turns Arrow record batches into Flight messages and back (schema,
//!   dictionaries, bodies).
//! - [`store`] owns the repository folder: dataset names, atomic Parquet writes,
//!   listing with a footer cache, reads, drops.
//! - [`auth`] owns users, roles, Basic/Bearer headers and tokens (no gRPC inside).
//! - [`error`] is the one error type, mapped to a gRPC status in one place.
//! - [`server`] wires the service to a socket, logs, and shuts down gracefully.
//! - [`log`] writes one line per RPC, as text or JSON.
//!
//! All Parquet and file work runs on blocking worker threads; async code only moves
//! messages between those workers and gRPC streams through bounded channels, so a
//! slow client slows the reader instead of growing memory.

pub mod auth;
pub mod cli;
pub mod error;
pub mod ipc;
pub mod log;
pub mod proto;
pub mod server;
pub mod service;
pub mod store;

pub use error::{Error, Result};
