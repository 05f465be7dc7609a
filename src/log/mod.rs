//! One line per RPC on stderr, as text or JSON lines (`--log-format`); and,
//! in [`connection`], one per connection that ends without carrying a call.
//!
//! Auditors read these lines to see exactly what crossed the wire, so every line
//! has the same fields in the same order: time, peer, user, RPC, dataset, rows,
//! bytes, milliseconds, status code, and the message of an error. Every call
//! that reached the server is written exactly once: by [`Call::finish`], or,
//! when its handler was dropped because the client left, by `Drop` with
//! CANCELLED. Credentials never reach this module, and every value a client
//! controls is escaped, so no value can forge a line.

mod connection;
mod summary;

pub use connection::{shorten, ConnectionLog, Ended};

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::Code;

use crate::json::Value;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown log format '{other}' (expected text or json)"
            )),
        }
    }
}

/// Writes log lines; cheap to clone into every task.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    format: Format,
}

impl Logger {
    pub fn new(format: Format) -> Logger {
        Logger { format }
    }

    /// A free-form event (startup, shutdown, skipped files). Client-controlled
    /// parts of `message` must already be quoted with [`quote`]; control
    /// characters are escaped here regardless.
    pub fn event(&self, message: &str) {
        let time = timestamp(SystemTime::now());
        let line = match self.format {
            Format::Text => format!("{time} {}", escape_controls(message)),
            Format::Json => {
                Value::object([("time", Value::from(time)), ("event", Value::from(message))])
                    .to_string()
            }
        };
        emit(&line);
    }

    /// One decoded wire event of `serve --trace` (see [`crate::trace`]).
    pub fn trace(&self, event: &Value) {
        let time = timestamp(SystemTime::now());
        let line = match (self.format, event) {
            (Format::Json, Value::Object(fields)) => {
                let mut all = Vec::with_capacity(fields.len() + 1);
                all.push(("time".to_string(), Value::from(time)));
                all.extend(fields.iter().cloned());
                Value::Object(all).to_string()
            }
            (Format::Json, other) => other.to_string(),
            (Format::Text, event) => format!("{time} {}", crate::trace::text(event)),
        };
        emit(&line);
    }

    /// Starts the record of one RPC; it is written by [`Call::finish`].
    pub fn call(&self, rpc: &'static str, peer: Option<std::net::SocketAddr>) -> Call {
        Call {
            logger: *self,
            started: Instant::now(),
            wall: SystemTime::now(),
            rpc,
            peer: peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            user: None,
            certificate: None,
            tried_user: None,
            written: false,
            dataset: None,
            rows: 0,
            bytes: 0,
        }
    }
}

fn emit(line: &str) {
    // One write per line so lines from concurrent calls never interleave.
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// The facts of one RPC, filled in as it runs; written once when it ends.
#[derive(Debug)]
pub struct Call {
    logger: Logger,
    started: Instant,
    wall: SystemTime,
    rpc: &'static str,
    peer: String,
    /// Who the call is authorised as; set only once authentication succeeded.
    pub user: Option<String>,
    /// The subject of the peer's TLS client certificate, if any.
    pub certificate: Option<String>,
    /// The user name a password login tried, logged whether or not it worked.
    pub tried_user: Option<String>,
    pub dataset: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    written: bool,
}

impl Call {
    pub fn dataset(&mut self, name: &str) {
        self.dataset = Some(name.to_string());
    }

    /// Writes the line with the final status; `message` is the error text, if
    /// any. Only the first call writes: a record is never logged twice.
    pub fn finish(&mut self, code: Code, message: &str) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let line = self.render(code, message, self.started.elapsed());
        emit(&line);
    }

    /// Writes the line for a failed call and returns the status to answer with.
    pub fn fail(&mut self, err: crate::Error) -> tonic::Status {
        self.finish(err.code(), err.message());
        err.into()
    }

    fn render(&self, code: Code, message: &str, elapsed: Duration) -> String {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let time = timestamp(self.wall);
        let status = code_name(code);
        match self.logger.format {
            Format::Text => {
                let field = |v: &Option<String>| v.as_deref().map(quote_if_needed);
                let mut s = format!(
                    "{time} peer={} user={} rpc={} dataset={} rows={} bytes={} ms={ms:.1} status={status}",
                    quote_if_needed(&self.peer),
                    field(&self.user).unwrap_or_else(|| "-".into()),
                    self.rpc,
                    field(&self.dataset).unwrap_or_else(|| "-".into()),
                    self.rows,
                    self.bytes,
                );
                if let Some(tried) = &self.tried_user {
                    let _ = write!(s, " tried_user={}", quote(tried));
                }
                if let Some(subject) = &self.certificate {
                    let _ = write!(s, " cert={}", quote(subject));
                }
                if !message.is_empty() {
                    let _ = write!(s, " message={}", quote(message));
                }
                s
            }
            Format::Json => {
                let mut fields = vec![
                    ("time", Value::from(time)),
                    ("peer", Value::from(self.peer.as_str())),
                    ("user", Value::from(self.user.clone())),
                    ("rpc", Value::from(self.rpc)),
                    ("dataset", Value::from(self.dataset.clone())),
                    ("rows", Value::from(self.rows)),
                    ("bytes", Value::from(self.bytes)),
                    ("ms", Value::from((ms * 1000.0).round() / 1000.0)),
                    ("status", Value::from(status)),
                ];
                if let Some(tried) = &self.tried_user {
                    fields.push(("tried_user", Value::from(tried.as_str())));
                }
                if let Some(subject) = &self.certificate {
                    fields.push(("cert", Value::from(subject.as_str())));
                }
                if !message.is_empty() {
                    fields.push(("message", Value::from(message)));
                }
                Value::object(fields).to_string()
            }
        }
    }
}

impl Drop for Call {
    /// A call whose handler is dropped before it finished: the client left
    /// (or the server is stopping). It is still logged, as CANCELLED.
    fn drop(&mut self) {
        if !self.written {
            self.finish(
                Code::Cancelled,
                "the client went away before the call finished",
            );
        }
    }
}

/// The canonical gRPC name of a status code (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A value for a text line: as is when it is plain printable ASCII without
/// quotes, else [`quote`]d.
pub fn quote_if_needed(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"') {
        s.to_string()
    } else {
        quote(s)
    }
}

/// Double-quotes a value for a text line, escaping what would break the line
/// or the quoting (quotes, backslashes, control and line-separator characters).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Escapes control characters only (for free-form event text).
fn escape_controls(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if needs_escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// RFC 3339 UTC time with milliseconds, without a date library.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_079_200_123);
        assert_eq!(timestamp(t), "2025-11-25T14:00:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_lines_escape_and_carry_every_field() {
        let logger = Logger::new(Format::Json);
        let mut call = logger.call("DoGet", Some("127.0.0.1:9".parse().unwrap()));
        call.dataset("we\"ird\n");
        call.rows = 7;
        call.bytes = 99;
        let line = call.render(Code::NotFound, "dataset missing", Duration::from_millis(3));
        call.written = true; // rendered, not emitted: keep Drop quiet
        assert!(line.starts_with("{\"time\":\""), "{line}");
        for part in [
            "\"peer\":\"127.0.0.1:9\"",
            "\"user\":null",
            "\"rpc\":\"DoGet\"",
            "\"dataset\":\"we\\\"ird\\n\"",
            "\"rows\":7",
            "\"bytes\":99",
            "\"ms\":3,",
            "\"status\":\"NOT_FOUND\"",
            "\"message\":\"dataset missing\"",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }

    #[test]
    fn client_controlled_fields_cannot_forge_a_text_line() {
        let logger = Logger::new(Format::Text);
        let mut call = logger.call("Handshake", None);
        call.tried_user = Some("x\n2026-01-01T00:00:00.000Z peer=1.2.3.4 user=admin".into());
        call.certificate = Some("CN\u{2028}evil\"".into());
        call.user = Some("a user=admin".into());
        let line = call.render(Code::Unauthenticated, "no", Duration::from_millis(1));
        call.written = true;
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\u{2028}'), "{line}");
        assert!(line.contains(r#"user="a user=admin""#), "{line}");
        assert!(line.contains(r#"tried_user="x\n2026"#), "{line}");
    }

    #[test]
    fn text_messages_keep_apostrophes_and_escape_quotes() {
        assert_eq!(quote("user 'a'"), "\"user 'a'\"");
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }

    #[test]
    fn text_lines_have_fixed_fields() {
        let logger = Logger::new(Format::Text);
        let mut call = logger.call("DoPut", None);
        call.dataset("uploaded.parquet");
        call.rows = 3;
        let line = call.render(Code::Ok, "", Duration::from_millis(12));
        call.written = true; // rendered, not emitted: keep Drop quiet
        assert!(
            line.ends_with(
                "peer=- user=- rpc=DoPut dataset=uploaded.parquet rows=3 bytes=0 ms=12.0 status=OK"
            ),
            "{line}"
        );
    }
}
