//! Connection lines: one per connection that ends without carrying a call (a
//! refused TLS handshake, a port scanner, a client over `--max-connections`),
//! and with `--log-connections` one when any connection opens and one when it
//! ends. Refusals pass through the [`Summariser`], so a flood from one peer
//! costs two lines, not one per connection.
//!
//! Text lines start with `connection`, `connection-open` or
//! `connection-summary` after the time; JSON lines carry the same word as
//! their `event` key (call lines have no `event` key). Reasons and certificate
//! subjects come from the client, so they are always quoted and escaped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::summary::{Summariser, Summary, CAP, WINDOW};
use super::{emit, quote, quote_if_needed, timestamp, Format, Logger};
use crate::json::Value;

/// The longest certificate subject quoted in a reason or a line; longer ones
/// are cut (a certificate can carry kilobytes in its CN).
const MAX_SUBJECT_CHARS: usize = 128;

/// The facts of a connection that has ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub peer: SocketAddr,
    pub lived: Duration,
    /// HTTP/2 requests the client opened (each RPC is one).
    pub calls: u64,
    /// Bytes read and written on the connection (after TLS decryption).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The client certificate's subject, if it presented one that verified.
    pub cert: Option<String>,
    /// Why it ended, in words a person can act on.
    pub reason: String,
}

impl Ended {
    /// A connection refused before it carried a byte of HTTP/2.
    pub fn refused(peer: SocketAddr, lived: Duration, reason: String) -> Ended {
        Ended {
            peer,
            lived,
            calls: 0,
            bytes_in: 0,
            bytes_out: 0,
            cert: None,
            reason,
        }
    }
}

/// Writes connection lines; cheap to clone into every connection.
#[derive(Debug, Clone)]
pub struct ConnectionLog {
    logger: Logger,
    /// `--log-connections`: log every open and every end, not only refusals.
    every: bool,
    summary: Arc<Mutex<Summariser>>,
}

impl ConnectionLog {
    pub fn new(logger: Logger, every: bool) -> ConnectionLog {
        ConnectionLog {
            logger,
            every,
            summary: Arc::new(Mutex::new(Summariser::new(WINDOW, CAP))),
        }
    }

    /// A free-form event line (see [`Logger::event`]).
    pub fn event(&self, message: &str) {
        self.logger.event(message);
    }

    /// A connection finished its handshake (logged with `--log-connections`).
    pub fn opened(&self, peer: SocketAddr, tls: bool, cert: Option<&str>) {
        if !self.every {
            return;
        }
        let time = timestamp(SystemTime::now());
        let cert = cert.map(shorten);
        let line = match self.logger.format {
            Format::Text => {
                let mut s = format!(
                    "{time} connection-open peer={} tls={}",
                    quote_if_needed(&peer.to_string()),
                    if tls { "yes" } else { "no" }
                );
                if let Some(cert) = &cert {
                    let _ = write!(s, " cert={}", quote(cert));
                }
                s
            }
            Format::Json => Value::object([
                ("time", Value::from(time)),
                ("event", Value::from("connection-open")),
                ("peer", Value::from(peer.to_string())),
                ("tls", Value::Bool(tls)),
                ("cert", Value::from(cert)),
            ])
            .to_string(),
        };
        emit(&line);
    }

    /// A connection ended. One that carried calls is logged only with
    /// `--log-connections`; one that carried none is a refusal, logged always
    /// but folded with identical refusals from the same peer.
    pub fn ended(&self, ended: Ended) {
        if ended.calls > 0 {
            if self.every {
                emit(&self.render(&ended));
            }
            return;
        }
        let (log, closed) = self
            .summary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .note(ended.peer.ip(), &ended.reason, Instant::now());
        self.summaries(closed);
        if log {
            emit(&self.render(&ended));
        }
    }

    /// Writes the summaries of windows that have ended.
    pub fn flush_due(&self) {
        let due = self.lock().due(Instant::now());
        self.summaries(due);
    }

    /// Writes every pending summary (at shutdown).
    pub fn flush_all(&self) {
        let all = self.lock().drain(Instant::now());
        self.summaries(all);
    }

    /// Closes ended windows once a second until the returned task is aborted.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                log.flush_due();
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Summariser> {
        self.summary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn summaries(&self, summaries: Vec<Summary>) {
        for summary in summaries {
            emit(&self.render_summary(&summary));
        }
    }

    fn render(&self, ended: &Ended) -> String {
        let time = timestamp(SystemTime::now());
        let ms = ended.lived.as_secs_f64() * 1000.0;
        let cert = ended.cert.as_deref().map(shorten);
        match self.logger.format {
            Format::Text => {
                let mut s = format!(
                    "{time} connection peer={} ms={ms:.1} calls={} bytes_in={} bytes_out={}",
                    quote_if_needed(&ended.peer.to_string()),
                    ended.calls,
                    ended.bytes_in,
                    ended.bytes_out,
                );
                if let Some(cert) = &cert {
                    let _ = write!(s, " cert={}", quote(cert));
                }
                let _ = write!(s, " end={}", quote(&ended.reason));
                s
            }
            Format::Json => Value::object([
                ("time", Value::from(time)),
                ("event", Value::from("connection")),
                ("peer", Value::from(ended.peer.to_string())),
                ("ms", Value::from((ms * 1000.0).round() / 1000.0)),
                ("calls", Value::from(ended.calls)),
                ("bytes_in", Value::from(ended.bytes_in)),
                ("bytes_out", Value::from(ended.bytes_out)),
                ("cert", Value::from(cert)),
                ("end", Value::from(ended.reason.as_str())),
            ])
            .to_string(),
        }
    }

    fn render_summary(&self, summary: &Summary) -> String {
        let time = timestamp(SystemTime::now());
        let peer = summary.peer.to_string();
        let seconds = summary.over.as_secs_f64().ceil() as u64;
        match self.logger.format {
            Format::Text => format!(
                "{time} connection-summary peer={} end={} … and {} more from {peer} in {seconds} s",
                quote_if_needed(&peer),
                quote(&summary.reason),
                thousands(summary.more),
            ),
            Format::Json => Value::object([
                ("time", Value::from(time)),
                ("event", Value::from("connection-summary")),
                ("peer", Value::from(peer)),
                ("end", Value::from(summary.reason.as_str())),
                ("more", Value::from(summary.more)),
                ("seconds", Value::from(seconds)),
            ])
            .to_string(),
        }
    }
}

/// A certificate subject cut to [`MAX_SUBJECT_CHARS`] characters.
pub fn shorten(subject: &str) -> String {
    match subject.char_indices().nth(MAX_SUBJECT_CHARS) {
        Some((at, _)) => format!("{}…", &subject[..at]),
        None => subject.to_string(),
    }
}

/// `4211` as `4,211`: counts in summaries are read by people.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: &str) -> Ended {
        Ended::refused(
            "10.1.2.3:50412".parse().unwrap(),
            Duration::from_millis(4),
            reason.into(),
        )
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4211), "4,211");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn text_lines_quote_reasons_taken_from_certificates() {
        let log = ConnectionLog::new(Logger::new(Format::Text), false);
        let line = log.render(&ended(
            "tls: certificate not signed by --tls-client-ca (CN=evil\" end=\"ok\n)",
        ));
        assert!(
            line.ends_with(
                " connection peer=10.1.2.3:50412 ms=4.0 calls=0 bytes_in=0 bytes_out=0 \
                 end=\"tls: certificate not signed by --tls-client-ca (CN=evil\\\" end=\\\"ok\\n)\""
            ),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_the_connection_event() {
        let log = ConnectionLog::new(Logger::new(Format::Json), false);
        let line = log.render(&ended("tls: client sent no certificate"));
        let value = Value::parse(&line).unwrap();
        assert_eq!(
            value.get("event").and_then(Value::as_str),
            Some("connection")
        );
        assert_eq!(
            value.get("peer").and_then(Value::as_str),
            Some("10.1.2.3:50412")
        );
        assert_eq!(value.get("calls").and_then(Value::as_u64), Some(0));
        assert_eq!(
            value.get("end").and_then(Value::as_str),
            Some("tls: client sent no certificate")
        );
        let summary = log.render_summary(&Summary {
            peer: "10.1.2.3".parse().unwrap(),
            reason: "tls: client sent no certificate".into(),
            more: 4211,
            over: WINDOW,
        });
        let value = Value::parse(&summary).unwrap();
        assert_eq!(
            value.get("event").and_then(Value::as_str),
            Some("connection-summary")
        );
        assert_eq!(value.get("more").and_then(Value::as_u64), Some(4211));
        assert_eq!(value.get("seconds").and_then(Value::as_u64), Some(60));
    }

    #[test]
    fn text_summaries_read_as_a_sentence() {
        let log = ConnectionLog::new(Logger::new(Format::Text), false);
        let line = log.render_summary(&Summary {
            peer: "10.1.2.3".parse().unwrap(),
            reason: "tls: client sent no certificate".into(),
            more: 4211,
            over: WINDOW,
        });
        assert!(
            line.ends_with(
                " connection-summary peer=10.1.2.3 end=\"tls: client sent no certificate\" \
                 … and 4,211 more from 10.1.2.3 in 60 s"
            ),
            "{line}"
        );
    }

    #[test]
    fn long_subjects_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(shorten(&long).chars().count(), MAX_SUBJECT_CHARS + 1);
        assert_eq!(shorten("alice"), "alice");
    }
}
