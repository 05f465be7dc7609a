"""A client process that dies mid-upload never damages the dataset.

A separate Python process connects with pyarrow and streams batches to
"victim.parquet" forever; once it reports it is mid-upload it is killed
(SIGKILL), or it leaves with os._exit() without closing its writer. Either way
the kernel drops the connection in the middle of the DoPut stream. Afterwards
the old dataset must read back unchanged, no `.hangar-tmp-*` file may remain,
and the server must go on serving.
"""

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.flight
import pytest

from support import temp_files, wait_for

#: Bound on waiting for a client process to report it is mid-stream.
UPLOADER_START_TIMEOUT = 20.0
#: Bound on waiting for the server to notice the dead client and clean up.
SETTLE_TIMEOUT = 10.0
ROUNDS = 5

UPLOADER = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa
    import pyarrow.flight

    uri, mode = sys.argv[1], sys.argv[2]
    client = pa.flight.connect(uri)
    batch = pa.record_batch(
        [pa.array(range(8192), pa.int64()), pa.array(["new"] * 8192)],
        names=["id", "tag"],
    )
    writer, _ = client.do_put(
        pa.flight.FlightDescriptor.for_path("victim.parquet"), batch.schema
    )
    sent = 0
    while True:
        writer.write_batch(batch)
        sent += 1
        if sent == 20:
            print("mid-stream", flush=True)
            if mode == "exit":
                # Leave without closing the writer: the socket just goes away.
                os._exit(0)
    """
)

DOWNLOADER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    import pyarrow.flight

    client = pa.flight.connect(sys.argv[1])
    reader = client.do_get(pa.flight.Ticket(b"big.parquet"))
    reader.read_chunk()
    print("mid-stream", flush=True)
    while True:
        time.sleep(1)  # never read on: the server's sends back up, then it is killed
    """
)

OLD = pa.table(
    {"id": pa.array(range(1000), pa.int64()), "tag": pa.array(["old"] * 1000)}
)


def upload(client, name, table):
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path(name), table.schema)
    writer.write_table(table)
    writer.close()


def start_client(uri, mode, script=UPLOADER):
    process = subprocess.Popen(
        [sys.executable, "-c", script, uri, mode],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + UPLOADER_START_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                process.kill()
                process.wait()
                pytest.fail(f"client process never reported being mid-stream (got {line!r})")
            if not selector.select(timeout=min(remaining, 0.5)):
                continue
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    if line != b"mid-stream\n":
        process.kill()
        _, err = process.communicate(timeout=SETTLE_TIMEOUT)
        pytest.fail(
            f"client process failed before mid-stream: {line!r}\n"
            f"{err.decode(errors='replace')}"
        )
    return process


def check_intact(server, client, round_label):
    # The server notices the dead client asynchronously: wait (bounded) for the
    # temporary file to go, then check everything.
    leftovers = wait_for(lambda: temp_files(server.repo) == [], timeout=SETTLE_TIMEOUT)
    assert leftovers, f"{round_label}: temporary files left: {temp_files(server.repo)}"
    back = client.do_get(pa.flight.Ticket(b"victim.parquet")).read_all()
    assert back.equals(OLD), f"{round_label}: dataset changed: {back.num_rows} rows"
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_path("victim.parquet"))
    assert info.total_records == len(OLD)
    assert sorted(p.name for p in server.repo.iterdir()) == ["victim.parquet"]


def aborted_puts_logged(server):
    lines = [
        line
        for line in server.stderr_text().splitlines()
        if "rpc=DoPut dataset=victim.parquet" in line
    ]
    return [line for line in lines if "status=OK" not in line], lines


@pytest.mark.parametrize("mode", ["sigkill", "exit"])
def test_client_dying_mid_upload_keeps_old_dataset(hangar, mode):
    client = pa.flight.connect(hangar.uri)
    upload(client, "victim.parquet", OLD)
    before = (hangar.repo / "victim.parquet").read_bytes()

    for round_number in range(1, ROUNDS + 1):
        label = f"{mode} round {round_number}"
        uploader = start_client(hangar.uri, mode)
        # The upload is under way: its temporary file exists (bounded wait, the
        # server creates it when the schema message arrives).
        assert wait_for(lambda: temp_files(hangar.repo), timeout=SETTLE_TIMEOUT), label
        if mode == "sigkill":
            uploader.send_signal(signal.SIGKILL)
        uploader.communicate(timeout=SETTLE_TIMEOUT)
        if mode == "sigkill":
            assert uploader.returncode == -signal.SIGKILL, label
        else:
            assert uploader.returncode == 0, label

        check_intact(hangar, client, label)
        assert (hangar.repo / "victim.parquet").read_bytes() == before, label
        # Every aborted upload is logged as such, none as OK (bounded wait for
        # the log line: it is written when the server has given up the upload).
        aborted = wait_for(
            lambda: len(aborted_puts_logged(hangar)[0]) >= round_number,
            timeout=SETTLE_TIMEOUT,
        )
        failed, all_puts = aborted_puts_logged(hangar)
        assert aborted, f"{label}: DoPut log lines: {all_puts}"
        assert "status=CANCELLED" in failed[-1], failed[-1]
        assert len(all_puts) == round_number + 1, all_puts  # + the first, good upload

    # The server still serves: listing, a fresh connection, a new upload.
    assert [f.descriptor.path[0] for f in client.list_flights()] == [b"victim.parquet"]
    fresh = pa.flight.connect(hangar.uri)
    newer = pa.table({"id": pa.array([7], pa.int64()), "tag": ["newer"]})
    upload(fresh, "victim.parquet", newer)
    assert fresh.do_get(pa.flight.Ticket(b"victim.parquet")).read_all().equals(newer)
    assert temp_files(hangar.repo) == []
    fresh.close()
    client.close()


def test_client_killed_mid_download_frees_the_server(hangar):
    client = pa.flight.connect(hangar.uri)
    big = pa.table({"v": pa.array(range(4_000_000), pa.int64())})  # ~32 MB of IPC
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path("big.parquet"), big.schema)
    writer.write_table(big, max_chunksize=500_000)
    writer.close()

    downloader = start_client(hangar.uri, "stall", script=DOWNLOADER)
    downloader.send_signal(signal.SIGKILL)
    downloader.communicate(timeout=SETTLE_TIMEOUT)

    # The abandoned DoGet ends (logged as CANCELLED) instead of holding its
    # worker forever, and the server serves the same dataset in full.
    def get_lines():
        return [
            line
            for line in hangar.stderr_text().splitlines()
            if "rpc=DoGet dataset=big.parquet" in line
        ]

    assert wait_for(get_lines, timeout=SETTLE_TIMEOUT), hangar.stderr_text()
    assert "status=CANCELLED" in get_lines()[0], get_lines()
    assert client.do_get(pa.flight.Ticket(b"big.parquet")).read_all().equals(big)
    client.close()
