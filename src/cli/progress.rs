//! The progress line of long transfers: rows, bytes, rate, elapsed time, on
//! stderr, redrawn in place at most five times a second, and only when stderr
//! is a terminal (a log file gets the final summary, not a stream of `\r`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Counts one transfer and draws its line.
#[derive(Debug)]
pub struct Progress {
    verb: &'static str,
    draw: bool,
    started: Instant,
    last_drawn: Option<Instant>,
    /// Rows expected, when the source knows (Parquet footer, FlightInfo).
    total_rows: Option<u64>,
    pub rows: u64,
    pub bytes: u64,
}

impl Progress {
    /// `verb` names the transfer ("put", "get"); nothing is drawn when `quiet`
    /// or when stderr is not a terminal.
    pub fn new(verb: &'static str, quiet: bool, total_rows: Option<u64>) -> Progress {
        Progress {
            verb,
            draw: !quiet && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_drawn: None,
            total_rows,
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds to the counts and redraws if it is time.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        if !self.draw {
            return;
        }
        let now = Instant::now();
        if self
            .last_drawn
            .is_some_and(|last| now.duration_since(last) < REDRAW_EVERY)
        {
            return;
        }
        self.last_drawn = Some(now);
        let line = self.line(now.duration_since(self.started));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the line, before a summary or an error is printed.
    pub fn finish(&mut self) {
        if self.last_drawn.take().is_some() {
            clear_line();
        }
    }

    /// The one-line summary after a transfer, e.g.
    /// `put 'trips': 1000000 rows, 38.1 MiB in 2.1 s (18.0 MiB/s)`.
    pub fn summary(&self, name: &str) -> String {
        let elapsed = self.elapsed();
        format!(
            "{} '{name}': {} rows, {} in {:.1} s ({}/s)",
            self.verb,
            self.rows,
            human_bytes(self.bytes),
            elapsed.as_secs_f64(),
            human_bytes(rate(self.bytes, elapsed)),
        )
    }

    fn line(&self, elapsed: Duration) -> String {
        let mut line = format!(
            "{} {} rows  {}  {}/s  {}",
            self.verb,
            self.rows,
            human_bytes(self.bytes),
            human_bytes(rate(self.bytes, elapsed)),
            clock(elapsed),
        );
        if let Some(total) = self.total_rows.filter(|t| *t > 0) {
            let percent = (self.rows as f64 / total as f64 * 100.0).min(100.0);
            line.push_str(&format!("  {percent:.0}%"));
        }
        line
    }
}

/// Erases a progress line if stderr is a terminal.
pub fn clear_line() {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0
    } else {
        (bytes as f64 / secs) as u64
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `38.1 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Elapsed time as `M:SS`, or `H:MM:SS` past an hour.
fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_clocks_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(40 * 1024 * 1024), "40.0 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn line_shows_rows_bytes_rate_elapsed_and_percent() {
        let mut p = Progress::new("get", true, Some(200));
        p.add(50, 2 * 1024 * 1024);
        assert_eq!(
            p.line(Duration::from_secs(2)),
            "get 50 rows  2.0 MiB  1.0 MiB/s  0:02  25%"
        );
        let unknown = Progress::new("put", true, None);
        assert_eq!(unknown.line(Duration::ZERO), "put 0 rows  0 B  0 B/s  0:00");
        assert!(p.summary("d").starts_with("get 'd': 50 rows, 2.0 MiB in "));
    }
}
