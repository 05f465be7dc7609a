"""Fixtures that run the real `hangar` binary for the pyarrow integration tests.

The binary comes from the environment variable HANGAR_BIN (set by
tests/pyarrow.rs to Cargo's freshly built binary) or, by default,
target/debug/hangar under the repository root. Each server listens on
127.0.0.1:0 (a free loopback port) over a fresh temporary repository; its
`uri` is what it announced (grpc://, or grpc+tls:// when given --tls-cert).

    def test_something(hangar):             # one server, default flags
        client = pyarrow.flight.connect(hangar.uri)

    def test_other(hangar_factory):         # servers with extra flags
        server = hangar_factory("--max-message-size", "65536")
        server = hangar_factory("--users", users_file, "--tls-cert", cert, ...)
        server.stderr_text()                # its log so far
        server.wait_for_log(lambda text: "rpc=DoGet" in text, "the DoGet line")
"""

import os
import pathlib
import re
import selectors
import signal
import subprocess
import time

import pytest

# support.py holds shared helpers that assert (raises_exactly): let pytest
# rewrite its asserts like a test module's.
pytest.register_assert_rewrite("support")

from support import wait_for  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

#: How long a server may take to print its "listening" line.
STARTUP_TIMEOUT = 20.0
#: How long a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: How long `wait_for_log` waits for a line to appear.
LOG_TIMEOUT = 10.0

LISTENING = re.compile(r"^hangar listening on (grpc(?:\+tls)?://127\.0\.0\.1:(\d+))$")


def hangar_binary():
    """Path of the server binary under test."""
    configured = os.environ.get("HANGAR_BIN")
    path = pathlib.Path(configured) if configured else REPO_ROOT / "target/debug/hangar"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class HangarServer:
    """One running `hangar serve --listen 127.0.0.1:0 --repo REPO ARGS...` process."""

    def __init__(self, repo, args, log_path):
        self.repo = repo
        # Paths (users files, certificates) are welcome as arguments.
        self.args = [str(arg) for arg in args]
        self.uri = None
        self.port = None
        self._log_path = log_path
        binary = hangar_binary()
        if not binary.is_file():
            pytest.fail(
                f"hangar binary not found at {binary}: run `cargo build` first, "
                "or set HANGAR_BIN to the binary's path"
            )
        command = [
            str(binary),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            str(repo),
            *self.args,
        ]
        # stderr goes to a file so a chatty server can never block on a full pipe.
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_until_listening(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        buffered = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"hangar did not print its listening line within "
                        f"{STARTUP_TIMEOUT:.0f} s; stdout so far {buffered!r}; "
                        f"stderr:\n{self.stderr_text()}"
                    )
                if not selector.select(timeout=min(remaining, 0.5)):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    code = self.process.wait(timeout=STOP_TIMEOUT)
                    pytest.fail(
                        f"hangar exited (code {code}) before listening; stdout "
                        f"{buffered!r}; stderr:\n{self.stderr_text()}"
                    )
                buffered += chunk
        line = buffered.split(b"\n", 1)[0].decode("utf-8", "replace")
        match = LISTENING.match(line)
        if not match:
            pytest.fail(f"unexpected first stdout line from hangar: {line!r}")
        self.uri = match.group(1)
        self.port = int(match.group(2))

    def stderr_text(self):
        """Everything the server has logged so far (all of it once stopped)."""
        if not self._log.closed:
            self._log.flush()
        return pathlib.Path(self._log_path).read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, predicate, what, timeout=LOG_TIMEOUT):
        """Polls the log until `predicate(text)` holds and returns the text;
        fails the test, naming `what`, if it never does within `timeout`.

        A call's log line is written when the call finishes on the server,
        which can be a moment after the client saw the reply: poll, bounded."""

        def matching_log():
            text = self.stderr_text()
            return text if predicate(text) else None

        text = wait_for(matching_log, timeout=timeout)
        if not text:
            pytest.fail(f"the server log never showed {what}:\n{self.stderr_text()}")
        return text

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited in time. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def __repr__(self):
        return f"HangarServer(uri={self.uri!r}, repo={str(self.repo)!r})"


@pytest.fixture
def hangar_factory(tmp_path):
    """Starts servers: `hangar_factory(*extra_args, repo=None)`.

    Each call gets its own fresh repository unless `repo` is given. Every server
    started is stopped at teardown (SIGTERM, then SIGKILL); teardown asserts nothing.
    """
    servers = []

    def start(*extra_args, repo=None):
        index = len(servers)
        if repo is None:
            repo = tmp_path / f"repo{index}"
        server = HangarServer(
            pathlib.Path(repo), extra_args, tmp_path / f"hangar{index}.stderr"
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def hangar(hangar_factory):
    """One server with default flags over a fresh repository."""
    return hangar_factory()


@pytest.fixture
def client(hangar):
    """A pyarrow Flight client connected to the `hangar` fixture's server."""
    import pyarrow.flight

    flight_client = pyarrow.flight.connect(hangar.uri)
    yield flight_client
    flight_client.close()

