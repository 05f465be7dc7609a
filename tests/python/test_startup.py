"""What `hangar serve` promises at startup and across restarts.

The listening line on stdout is the signal scripts (and the fixtures here) wait
for: once it is printed the server must be ready, repository included, and a
server that cannot open its repository must never print it.
"""

import os
import subprocess

import pyarrow as pa
import pyarrow.flight

from conftest import hangar_binary
from support import temp_files, wait_for

#: Bound on a server that is expected to give up on its own.
EXIT_TIMEOUT = 20.0


def test_unusable_repository_is_reported_without_a_listening_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the repository's parent should be")
    result = subprocess.run(
        [
            str(hangar_binary()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            str(blocker / "repo"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=EXIT_TIMEOUT,
    )
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, (result.returncode, stdout, stderr)
    assert "repo" in stderr, stderr
    # Scripts take the listening line to mean "ready": a server that is about
    # to exit because it cannot open its repository must not print it.
    assert "listening" not in stdout, (
        f"hangar announced it was listening, then exited: stdout {stdout!r}, "
        f"stderr {stderr!r}"
    )


def test_repository_exists_once_listening(hangar_factory, tmp_path):
    for attempt in range(5):
        repo = tmp_path / f"fresh{attempt}" / "nested" / "repo"
        server = hangar_factory(repo=repo)
        # No call made yet: the listening line alone must mean the store is open.
        assert repo.is_dir(), f"attempt {attempt}: {repo} missing after the listening line"
        server.stop()


def test_restart_serves_the_same_datasets(hangar_factory, tmp_path):
    repo = tmp_path / "shared"
    first = hangar_factory(repo=repo)
    client = pa.flight.connect(first.uri)
    table = pa.table({"k": ["a", "b"], "v": [1.5, 2.5]})
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path("kept.parquet"), table.schema)
    writer.write_table(table)
    writer.close()
    client.close()
    first.stop()

    second = hangar_factory(repo=repo)
    client = pa.flight.connect(second.uri)
    assert [f.descriptor.path[0] for f in client.list_flights()] == [b"kept.parquet"]
    assert client.do_get(pa.flight.Ticket(b"kept.parquet")).read_all().equals(table)
    client.close()


def test_startup_sweeps_temporary_files_of_dead_servers_only(hangar_factory, tmp_path):
    repo = tmp_path / "crashed"
    repo.mkdir()
    # Left by a server that died mid-upload (no such process) ...
    dead = repo / ".hangar-tmp-4294967295-0-lost.parquet"
    dead.write_bytes(b"half an upload")
    # ... and by a live server sharing the folder (this test's own process).
    live = repo / f".hangar-tmp-{os.getpid()}-0-busy.parquet"
    live.write_bytes(b"an upload in progress")

    server = hangar_factory(repo=repo)
    client = pa.flight.connect(server.uri)
    # Hidden files are never listed, whoever owns them.
    assert list(client.list_flights()) == []
    assert wait_for(lambda: not dead.exists()), temp_files(repo)
    assert live.exists(), "a live process's upload file was removed"
    client.close()
