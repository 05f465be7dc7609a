"""The flight benchmark's pyarrow client (HANGAR_BENCH_CLIENT=pyarrow).

Most users drive hangar from Python, so the benchmark can drive every server
with pyarrow.flight instead of the Rust client. One operation per run; the
clock covers the transfer only (not Python's start or reading the table), and
the last stdout line is JSON: {"secs": wall seconds, "rows": rows moved,
"cpu": this process's CPU seconds during the transfer}.

    pyarrow_client.py put URI NAME TABLE.arrow
    pyarrow_client.py get URI NAME
    pyarrow_client.py get4 URI NAME          (4 DoGets at once, 4 connections)
    pyarrow_client.py get4shared URI NAME    (4 DoGets at once, one connection)
    pyarrow_client.py bigput URI NAME TABLE.arrow BATCHES
                     (BATCHES copies of the table's first batch, each with a
                      fresh id sequence, generated while uploading)
"""

import json
import os
import sys
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight


def cpu():
    t = os.times()
    return t.user + t.system


def read_table(path):
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def put(client, name, batches, schema):
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), schema)
    rows = 0
    for batch in batches:
        writer.write_batch(batch)
        rows += batch.num_rows
    writer.done_writing()
    reader.read()
    writer.close()
    return rows


def get(uri, name, client=None):
    own = client is None
    if own:
        client = flight.connect(uri)
    rows = 0
    # Decode every batch, as the Rust client does.
    for chunk in client.do_get(flight.Ticket(name.encode())):
        rows += chunk.data.num_rows
    if own:
        client.close()
    return rows


def main():
    op, uri, name = sys.argv[1:4]
    if op in ("put", "bigput"):
        table = read_table(sys.argv[4])
        client = flight.connect(uri)
        if op == "put":
            batches = table.to_batches()
        else:
            template = table.to_batches()[0]
            count = int(sys.argv[5])

            def generated():
                n = template.num_rows
                for i in range(count):
                    ids = pa.array(range(i * n, (i + 1) * n), pa.int64())
                    yield template.set_column(0, template.schema.field(0), ids)

            batches = generated()
        started, cpu_start = time.perf_counter(), cpu()
        rows = put(client, name, batches, table.schema)
    elif op == "get":
        started, cpu_start = time.perf_counter(), cpu()
        rows = get(uri, name)
    elif op in ("get4", "get4shared"):
        counts = [0] * 4
        # pyarrow's FlightClient may be shared between threads: one
        # connection carries the four streams.
        shared = flight.connect(uri) if op == "get4shared" else None

        def one(i):
            counts[i] = get(uri, name, shared)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        started, cpu_start = time.perf_counter(), cpu()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = sum(counts)
    else:
        raise SystemExit(f"unknown operation {op}")
    secs = time.perf_counter() - started
    print(json.dumps({"secs": secs, "rows": rows, "cpu": cpu() - cpu_start}))


if __name__ == "__main__":
    main()
