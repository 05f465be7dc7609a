//! hangar: a Parquet dataset store that speaks Arrow Flight.
//!
//! A tour, following the data from the wire to the disk:
//!
//! - [`proto`] holds the Flight protocol types generated from `proto/Flight.proto`.
//! - [`server`] binds the socket, serves, reloads users on SIGHUP and shuts
//!   down gracefully; [`transport`] sits between the socket and the service
//!   (accept loop, connection limit, TLS handshake, per-connection tracking,
//!   request size caps, clean-end-of-stream tracking); [`discovery`] adds
//!   what generic gRPC tools look for (server reflection, health).
//! - [`service`] implements the Flight RPCs, one file per RPC family: it checks
//!   the caller, decodes the request, asks the store, and encodes the reply.
//! - [`stream`] is the one bridge between blocking workers and async streams
//!   (bounded channel, explicit end, errors that win), used by the service and
//!   the CLI alike.
//! - [`budget`] is the server-wide memory budget (`--memory-limit`) that
//!   uploads' and downloads' in-flight bytes draw from.
//! - [`ipc`] turns Arrow record batches into Flight messages and back (schema,
//!   dictionaries, bodies).
//! - [`query`] is the query command (CMD descriptors, JSON tickets): columns,
//!   filters, partitions; it types and evaluates filters and prunes row groups
//!   from statistics the store hands it.
//! - [`store`] owns the repository: dataset names, Parquet writes that appear
//!   atomically, listing with a footer cache keyed by version, reads as plain
//!   batch iterators, drops; over a folder (`store::local`) or, with the
//!   `object-store` feature, an S3 bucket prefix (`store::object`).
//! - [`auth`] owns users, roles, Basic/Bearer headers, tokens and throttling
//!   (no gRPC inside).
//! - [`error`] is the one error type, mapped to a gRPC status in one place.
//! - [`log`] writes one line per RPC and one per refused connection (folding
//!   floods into a count), as text or JSON; [`json`] writes and
//!   reads the JSON that hangar exchanges.
//! - [`cli`] holds the client commands and `hangar user`; [`duration`] reads
//!   durations given on the command line.
//!
//! All Parquet and file work runs on blocking worker threads; async code only moves
//! messages between those workers and gRPC streams through bounded channels, so a
//! slow client slows the reader instead of growing memory.

pub mod auth;
pub mod budget;
pub mod cli;
pub mod discovery;
pub mod duration;
pub mod error;
pub mod ipc;
pub mod json;
pub mod log;
pub mod nodes;
pub mod proto;
pub mod query;
pub mod server;
pub mod service;
pub mod store;
pub mod stream;
pub mod trace;
pub mod transport;

pub use error::{Error, Result};
