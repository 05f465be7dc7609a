"""hangar over an S3 bucket (`--repo s3://bucket/prefix`, the `object-store` feature).

Each test starts moto's standalone S3 server (`moto_server`, next to the test
interpreter, from `moto[server]` in requirements.txt) on a free loopback port,
creates the bucket with a plain HTTP PUT (moto checks no signatures), and runs
hangar against it with the standard AWS_* variables. The bucket is inspected
with plain HTTP too: `?list-type=2&prefix=` for the keys, `?uploads` for the
multipart uploads started and neither completed nor aborted.

Only a binary built without the feature (HANGAR_OBJECT_STORE != "1", as set by
tests/pyarrow.rs) skips this module; a moto that cannot start fails the test.
"""

import os
import pathlib
import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.flight
import pytest

from conftest import STOP_TIMEOUT, HangarServer, hangar_binary
from support import wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("HANGAR_OBJECT_STORE") != "1",
    reason="hangar built without --features object-store "
    "(run `cargo test --features object-store --test pyarrow`)",
)

BUCKET = "bkt"
PREFIX = "pfx"
REPO = f"s3://{BUCKET}/{PREFIX}"

#: Bound on moto answering its first request.
MOTO_START_TIMEOUT = 30.0
#: Bound on the server noticing a dead client and aborting its upload.
SETTLE_TIMEOUT = 10.0
#: Bound on an uploader process reporting that it is writing.
UPLOADER_START_TIMEOUT = 20.0
#: Bound on the first part of an upload reaching the bucket.
PART_TIMEOUT = 15.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Moto:
    """One running moto_server with the bucket BUCKET."""

    def __init__(self, directory):
        moto_server = pathlib.Path(sys.executable).with_name("moto_server")
        if not moto_server.is_file():
            pytest.fail(
                f"no moto_server next to {sys.executable}: install "
                "tests/python/requirements.txt (it lists moto[server])"
            )
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._out = directory / "moto.out"
        self._err = directory / "moto.err"
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.process = subprocess.Popen(
                [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"moto_server exited (code {self.process.returncode}) before "
                    f"answering:\n{self.log()}"
                )
            if self.request("PUT", f"/{BUCKET}")[0] == 200:
                break
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"moto_server on port {self.port} did not create the bucket within "
                    f"{MOTO_START_TIMEOUT:.0f} s:\n{self.log()}"
                )
            time.sleep(0.1)

    def request(self, method, target):
        """(status, body) of a plain request; status 0 when nothing answered."""
        request = urllib.request.Request(self.endpoint + target, method=method, data=b"")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")
        except OSError:
            return 0, ""

    def get(self, target):
        status, body = self.request("GET", target)
        assert status == 200, f"GET {target}: {status} {body}"
        return body

    def keys(self, prefix=PREFIX + "/"):
        """Keys stored under `prefix`, with their sizes."""
        body = self.get(f"/{BUCKET}?list-type=2&prefix={prefix}")
        keys = {}
        for entry in re.findall(r"<Contents>(.*?)</Contents>", body, re.S):
            key = re.search(r"<Key>(.*?)</Key>", entry)
            size = re.search(r"<Size>(\d+)</Size>", entry)
            assert key and size, f"unexpected ListObjectsV2 answer: {body}"
            keys[key.group(1)] = int(size.group(1))
        return keys

    def open_uploads(self):
        """(key, upload id) of every multipart upload neither completed nor aborted."""
        body = self.get(f"/{BUCKET}?uploads")
        uploads = []
        for upload in re.findall(r"<Upload>(.*?)</Upload>", body, re.S):
            key = re.search(r"<Key>(.*?)</Key>", upload)
            upload_id = re.search(r"<UploadId>(.*?)</UploadId>", upload)
            assert key and upload_id, f"unexpected ListMultipartUploads answer: {body}"
            uploads.append((key.group(1), upload_id.group(1)))
        return uploads

    def parts(self, key, upload_id):
        """Part numbers uploaded so far to one multipart upload."""
        body = self.get(f"/{BUCKET}/{key}?uploadId={upload_id}")
        return [int(n) for n in re.findall(r"<PartNumber>(\d+)</PartNumber>", body)]

    def log(self):
        return "".join(
            path.read_text(errors="replace") for path in (self._err, self._out) if path.exists()
        )

    def env(self, endpoint=None):
        return {
            "AWS_ENDPOINT": endpoint or self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        }

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def moto(tmp_path):
    server = Moto(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def s3_hangar(moto, tmp_path, monkeypatch):
    """Starts hangar nodes on the moto bucket: `s3_hangar(repo=REPO)`.

    conftest's HangarServer is reused as is: the AWS_* variables reach the
    server through this process's environment. Every node is stopped at teardown."""
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    servers = []

    def start(repo=REPO):
        server = HangarServer(repo, [], tmp_path / f"hangar-s3-{len(servers)}.stderr")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def processes():
    """Client processes a test starts: killed at teardown whatever happened."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=STOP_TIMEOUT)


def upload(client, name, table):
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path(name), table.schema)
    writer.write_table(table)
    writer.close()


def listed(client):
    return {
        f.descriptor.path[0].decode("utf-8"): f.total_records for f in client.list_flights()
    }


def read_back(client, name):
    return client.do_get(pa.flight.Ticket(name.encode("utf-8"))).read_all()


OLD = pa.table(
    {"id": pa.array(range(1000), pa.int64()), "tag": pa.array(["old"] * 1000)}
)

# Streams random (incompressible) batches of 64 Ki rows, 1 MiB each, to
# "victim.parquet", up to 256 MiB, never closing the stream. hangar's writer
# flushes a row group every 1 Mi rows (16 MiB of Parquet here), so the first
# 8 MiB part goes to the bucket after about 16 batches. Prints "writing" after
# the first batch was sent.
UPLOADER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import pyarrow as pa
    import pyarrow.flight

    client = pa.flight.connect(sys.argv[1])
    rng = np.random.default_rng(7)
    rows = 65536
    schema = pa.schema([("id", pa.int64()), ("tag", pa.string()), ("x", pa.float64())])
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path("victim.parquet"), schema)
    for sent in range(256):
        batch = pa.record_batch(
            [
                pa.array(rng.integers(0, 2**62, rows), pa.int64()),
                pa.array(["new"] * rows),
                pa.array(rng.random(rows)),
            ],
            schema=schema,
        )
        writer.write_batch(batch)
        if sent == 0:
            print("writing", flush=True)
        time.sleep(0.02)
    # Never closed: the test kills this process (or hangar) long before.
    time.sleep(3600)
    """
)


def start_uploader(processes, uri):
    process = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, uri],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    processes.append(process)
    deadline = time.monotonic() + UPLOADER_START_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"uploader never reported writing (got {line!r})")
            if not selector.select(timeout=min(remaining, 0.5)):
                continue
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    if line != b"writing\n":
        process.kill()
        _, err = process.communicate(timeout=STOP_TIMEOUT)
        pytest.fail(f"uploader failed before writing: {line!r}\n{err.decode(errors='replace')}")
    return process


def wait_for_uploaded_part(moto, key):
    """Waits (bounded) until the one open multipart upload of `key` holds a
    part, and returns its upload id."""

    def part_stored():
        uploads = [u for k, u in moto.open_uploads() if k == key]
        return uploads[0] if len(uploads) == 1 and moto.parts(key, uploads[0]) else None

    upload_id = wait_for(part_stored, timeout=PART_TIMEOUT, interval=0.1)
    assert upload_id, (
        f"no part of {key} reached the bucket within {PART_TIMEOUT:.0f} s; open uploads "
        f"{moto.open_uploads()}; moto log:\n{moto.log()[-3000:]}"
    )
    return upload_id


def test_cookbook_client_over_a_bucket(s3_hangar, moto):
    server = s3_hangar()
    # --- the cookbook's client flow (only the address differs) ---
    client = pa.flight.connect(server.uri)

    # Upload a new dataset
    data_table = pa.table([["Mario", "Luigi", "Peach"]], names=["Character"])
    upload_descriptor = pa.flight.FlightDescriptor.for_path("uploaded.parquet")
    writer, _ = client.do_put(upload_descriptor, data_table.schema)
    writer.write_table(data_table)
    writer.close()

    # The object is in the bucket, whole, and no upload is left open.
    keys = moto.keys()
    assert list(keys) == [f"{PREFIX}/uploaded.parquet"], keys
    assert moto.open_uploads() == []

    # Retrieve metadata of newly uploaded dataset
    flight = client.get_flight_info(upload_descriptor)
    assert flight.descriptor.path[0].decode("utf-8") == "uploaded.parquet"
    assert flight.total_records == 3
    assert flight.total_bytes == keys[f"{PREFIX}/uploaded.parquet"]
    assert flight.schema.equals(data_table.schema)

    # Read content of the dataset
    reader = client.do_get(flight.endpoints[0].ticket)
    read_frame = reader.read_pandas()
    assert read_frame.equals(data_table.to_pandas()), read_frame
    assert list(read_frame["Character"]) == ["Mario", "Luigi", "Peach"]

    flights = list(client.list_flights())
    assert [f.descriptor.path[0] for f in flights] == [b"uploaded.parquet"]
    assert flights[0].total_records == 3
    actions = {action.type: action.description for action in client.list_actions()}
    assert actions.get("drop_dataset") == "Delete a dataset.", actions

    # Drop the newly uploaded dataset
    client.do_action(pa.flight.Action("drop_dataset", "uploaded.parquet".encode("utf-8")))

    # List existing datasets: none left, and the key is gone from the bucket.
    assert wait_for(lambda: listed(client) == {}), listed(client)
    assert moto.keys() == {}
    client.close()


def test_client_killed_mid_upload_aborts_the_multipart_upload(s3_hangar, moto, processes):
    server = s3_hangar()
    client = pa.flight.connect(server.uri)
    upload(client, "victim.parquet", OLD)
    key = f"{PREFIX}/victim.parquet"

    uploader = start_uploader(processes, server.uri)
    upload_id = wait_for_uploaded_part(moto, key)
    uploader.send_signal(signal.SIGKILL)
    uploader.communicate(timeout=STOP_TIMEOUT)
    assert uploader.returncode == -signal.SIGKILL

    # hangar notices the dead client and aborts the multipart upload.
    left = wait_for(lambda: moto.open_uploads() == [], timeout=SETTLE_TIMEOUT)
    assert left, (
        f"multipart upload {upload_id} still open {SETTLE_TIMEOUT:.0f} s after the client "
        f"died: {moto.open_uploads()}\nhangar log:\n{server.stderr_text()}"
    )
    assert f"DELETE /{BUCKET}/{key}?uploadId={upload_id}" in moto.log(), moto.log()[-3000:]

    # The previous version is what is listed and read.
    assert listed(client) == {"victim.parquet": len(OLD)}
    assert read_back(client, "victim.parquet").equals(OLD)
    assert list(moto.keys()) == [key]
    client.close()


def test_server_killed_mid_upload_keeps_previous_version(s3_hangar, moto, processes):
    first = s3_hangar()
    client = pa.flight.connect(first.uri)
    upload(client, "victim.parquet", OLD)
    client.close()
    key = f"{PREFIX}/victim.parquet"
    before = moto.keys()

    uploader = start_uploader(processes, first.uri)
    upload_id = wait_for_uploaded_part(moto, key)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=STOP_TIMEOUT)
    assert first.process.returncode == -signal.SIGKILL
    uploader.kill()
    uploader.communicate(timeout=STOP_TIMEOUT)

    second = s3_hangar()
    client = pa.flight.connect(second.uri)
    # The previous version, whole; no new or half dataset.
    assert listed(client) == {"victim.parquet": len(OLD)}
    assert read_back(client, "victim.parquet").equals(OLD)
    assert moto.keys() == before
    # Documented: nobody is left to abort the interrupted upload; its parts stay
    # until the bucket's AbortIncompleteMultipartUpload lifecycle rule removes them.
    assert moto.open_uploads() == [(key, upload_id)]
    # The restarted node does not trip over it: a new upload replaces the dataset.
    newer = pa.table({"id": pa.array([7], pa.int64()), "tag": ["newer"]})
    upload(client, "victim.parquet", newer)
    assert read_back(client, "victim.parquet").equals(newer)
    assert moto.open_uploads() == [(key, upload_id)]
    client.close()


def run_failing_startup(repo, env, timeout):
    """Runs `hangar serve` expected to give up: (exit code, stdout, stderr lines)."""
    process = subprocess.Popen(
        [str(hangar_binary()), "serve", "--listen", "127.0.0.1:0", "--repo", repo],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=STOP_TIMEOUT)
        pytest.fail(
            f"hangar --repo {repo} still running after {timeout:.0f} s; stdout {out!r}; "
            f"stderr:\n{err.decode(errors='replace')}"
        )
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return process.returncode, out.decode(errors="replace"), lines


def test_startup_fails_on_a_missing_bucket(moto):
    code, out, err = run_failing_startup("s3://no-such-bucket/x", moto.env(), timeout=30)
    assert code == 1, (code, out, err)  # README: "exits 1 with one line saying why"
    assert "listening" not in out, out
    # One clear line, naming the bucket (not a dump of the store's XML answer).
    assert len(err) == 1, "stderr is not one line:\n" + "\n".join(err)
    assert "no-such-bucket" in err[0], err


def test_startup_fails_on_an_endpoint_nobody_answers(moto):
    endpoint = f"http://127.0.0.1:{free_port()}"  # closed: nothing listens there
    code, out, err = run_failing_startup(REPO, moto.env(endpoint=endpoint), timeout=40)
    assert code == 1, (code, out, err)  # README: "exits 1 with one line saying why"
    assert "listening" not in out, out
    assert len(err) == 1, "stderr is not one line:\n" + "\n".join(err)
    assert REPO in err[0] and "did not answer" in err[0], err


def test_replacement_through_another_node_is_seen(s3_hangar, moto):
    first, second = s3_hangar(), s3_hangar()
    one, two = pa.flight.connect(first.uri), pa.flight.connect(second.uri)
    descriptor = pa.flight.FlightDescriptor.for_path("shared.parquet")
    old = pa.table({"v": pa.array(range(3), pa.int64())})
    new = pa.table({"v": pa.array(range(100, 105), pa.int64()), "w": ["a", "b", "c", "d", "e"]})

    upload(one, "shared.parquet", old)
    # The first node reads (and caches) the old footer.
    assert one.get_flight_info(descriptor).total_records == 3
    assert read_back(one, "shared.parquet").equals(old)

    upload(two, "shared.parquet", new)
    info = one.get_flight_info(descriptor)
    assert info.total_records == 5
    assert info.schema.equals(new.schema)
    assert info.total_bytes == moto.keys()[f"{PREFIX}/shared.parquet"]
    assert listed(one) == {"shared.parquet": 5}
    assert one.do_get(info.endpoints[0].ticket).read_all().equals(new)
    one.close()
    two.close()
