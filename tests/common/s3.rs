//! A real S3 server on loopback for the object-store tests: moto's standalone
//! server (`moto_server`, from `moto[server]` in tests/python/requirements.txt,
//! installed into `.venv` by `bash .ci/run`), one per test, on a free port.
//!
//! A server that cannot start fails the test with the reason; nothing skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running moto server with one bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `moto_server` next to the test interpreter (see `common::python`).
fn moto_server() -> PathBuf {
    let python = super::python();
    let server = python.with_file_name("moto_server");
    assert!(
        server.exists(),
        "no moto_server next to {}: the S3 tests need moto's server. Run `bash .ci/run`, or \
         `.venv/bin/pip install -r tests/python/requirements.txt` (it lists moto[server])",
        python.display()
    );
    server
}

impl S3Server {
    /// Starts moto on a free loopback port and creates `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        // A port the kernel just gave out is free for the moment it takes
        // moto to bind it (moto cannot report a port of its own choosing).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        let mut server = S3Server {
            child,
            port,
            bucket: bucket.to_string(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "moto_server exited ({status}) before answering:\n{}",
                    std::fs::read_to_string(server._dir.path().join("moto.err"))
                        .unwrap_or_default()
                );
            }
            if server.request("PUT", &format!("/{bucket}")).0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {port} did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The endpoint URL, for `AWS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `--repo` for `prefix` in the bucket.
    pub fn repo(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a hangar serving this bucket needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A plain HTTP/1.1 request (moto checks no signatures): status and body.
    pub fn request(&self, method: &str, target: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Keys stored under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{}?list-type=2&prefix={prefix}", self.bucket),
        );
        assert_eq!(status, 200, "listing the bucket: {body}");
        tags(&body, "Key")
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{}?uploads", self.bucket));
        assert_eq!(status, 200, "listing multipart uploads: {body}");
        tags(&body, "Key")
    }

    /// moto's request log (one line per request).
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("moto.err")).unwrap_or_default()
            + &std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (a store that went away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// The text of every `<tag>…</tag>` in `xml`.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
