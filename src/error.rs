//! The crate's one error type. Every module returns it; [`service`](crate::service)
//! turns it into a gRPC [`Status`] through the single `From` impl below, so the
//! status code for each kind of failure is decided in exactly one place.

use std::fmt;
use std::io;

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, classified by who can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The client sent something malformed; the message says which rule it broke.
    InvalidArgument(String),
    /// Client bytes made a library (Arrow's IPC reader) panic. The panic was
    /// contained and the call fails as INVALID_ARGUMENT, but it is its own kind
    /// so tests and fuzzers can tell "rejected cleanly" from "rejected by luck".
    ContainedPanic(String),
    /// The named dataset does not exist.
    NotFound(String),
    /// The request no longer fits the state it was made for (a ticket for a
    /// dataset version that has since been replaced).
    FailedPrecondition(String),
    /// The target already exists and the operation will not replace it.
    AlreadyExists(String),
    /// A configured limit or the disk ran out.
    ResourceExhausted(String),
    /// No credentials, or credentials that do not check out.
    Unauthenticated(String),
    /// Credentials are fine but the role does not allow the operation.
    PermissionDenied(String),
    /// The RPC or feature is not offered by hangar.
    Unimplemented(String),
    /// The client went away or cancelled the call.
    Cancelled(String),
    /// The client stalled past a deadline.
    DeadlineExceeded(String),
    /// The server is shutting down or overloaded.
    Unavailable(String),
    /// A bug or an unexpected condition on the server side.
    Internal(String),
}

impl Error {
    /// Classifies an I/O error while doing `what`: a full disk or a file size limit
    /// is a resource problem the operator can fix, everything else is internal.
    pub fn io(what: impl fmt::Display, err: io::Error) -> Error {
        // ENOSPC, EDQUOT and EFBIG all mean "no room", whichever way the kernel
        // reports it; their numbers differ between platforms, hence libc.
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                Error::ResourceExhausted(format!("{what}: disk full ({err})"))
            }
            Some(libc::EFBIG) => {
                Error::ResourceExhausted(format!("{what}: file too large ({err})"))
            }
            _ if err.kind() == io::ErrorKind::StorageFull => {
                Error::ResourceExhausted(format!("{what}: disk full ({err})"))
            }
            _ => Error::Internal(format!("{what}: {err}")),
        }
    }

    /// The gRPC status code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::ContainedPanic(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Cancelled(_) => Code::Cancelled,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The human-readable part, without the classification.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::ContainedPanic(m)
            | Error::NotFound(m)
            | Error::FailedPrecondition(m)
            | Error::AlreadyExists(m)
            | Error::ResourceExhausted(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::Unimplemented(m)
            | Error::Cancelled(m)
            | Error::DeadlineExceeded(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_and_file_too_large_are_resource_exhausted() {
        let full = Error::io("writing x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert!(full.message().contains("disk full"), "{full}");
        let big = Error::io("writing x", io::Error::from_raw_os_error(libc::EFBIG));
        assert_eq!(big.code(), Code::ResourceExhausted);
        assert!(big.message().contains("file too large"), "{big}");
        let other = Error::io("writing x", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.code(), Code::Internal);
    }

    #[test]
    fn status_keeps_code_and_message() {
        let status = Status::from(Error::NotFound("dataset 'a' not found".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "dataset 'a' not found");
    }
}
