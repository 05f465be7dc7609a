"""Every hangar error reaches a pyarrow client as the right exception.

pyarrow (checked with 26.0) maps the gRPC status codes hangar sends like this:

    NOT_FOUND          -> pa.ArrowKeyError           ("Flight returned not found error")
    INVALID_ARGUMENT   -> pa.ArrowInvalid            ("Flight returned invalid argument error")
    RESOURCE_EXHAUSTED -> pa.ArrowInvalid            ("gRPC returned resource exhausted error")
    UNIMPLEMENTED      -> pa.ArrowNotImplementedError
    INTERNAL           -> pyarrow.flight.FlightInternalError
    ALREADY_EXISTS     -> plain pa.ArrowException    ("Unknown: Flight returned already exists error")

The tests assert the exact class (not only a base class) and the phrase of
hangar's message that tells the user what to do.

Errors of a DoPut surface on `writer.close()`, when pyarrow finishes the call.
"""

import pyarrow as pa
import pyarrow.flight
import pytest

from support import raises_exactly, temp_files

Descriptor = pa.flight.FlightDescriptor


def put_table(client, descriptor, table):
    writer, _ = client.do_put(descriptor, table.schema)
    writer.write_table(table)
    writer.close()


SMALL = pa.table({"a": pa.array([1, 2, 3], pa.int64())})


# --- missing datasets: NOT_FOUND -> ArrowKeyError ---------------------------


def test_get_flight_info_of_missing_dataset(client):
    with raises_exactly(pa.ArrowKeyError, "dataset 'missing.parquet' not found"):
        client.get_flight_info(Descriptor.for_path("missing.parquet"))


def test_get_schema_of_missing_dataset(client):
    with raises_exactly(pa.ArrowKeyError, "dataset 'missing.parquet' not found"):
        client.get_schema(Descriptor.for_path("missing.parquet"))


def test_do_get_of_missing_dataset(client):
    with raises_exactly(pa.ArrowKeyError, "dataset 'missing.parquet' not found"):
        client.do_get(pa.flight.Ticket(b"missing.parquet")).read_all()


def test_drop_of_missing_dataset(client):
    with raises_exactly(pa.ArrowKeyError, "dataset 'missing.parquet' not found"):
        list(client.do_action(pa.flight.Action("drop_dataset", b"missing.parquet")))


def test_dropped_dataset_is_not_found(client):
    put_table(client, Descriptor.for_path("gone.parquet"), SMALL)
    results = list(client.do_action(pa.flight.Action("drop_dataset", b"gone.parquet")))
    # Like the cookbook's server: success is the call's OK status, no Result.
    assert [r.body.to_pybytes() for r in results] == []
    with raises_exactly(pa.ArrowKeyError, "not found"):
        client.get_flight_info(Descriptor.for_path("gone.parquet"))


# --- bad names: INVALID_ARGUMENT -> ArrowInvalid ------------------------------

BAD_NAMES = [
    ("../x", "must not contain '/'"),
    ("..", "must not be '.' or '..'"),
    (".hidden", "must not start with '.'"),
    ("a/b", "must not contain '/'"),
    ("", "must not be empty"),
    ("x" * 256, "at most 255 bytes"),
    ("tab\there", "control characters"),
]
BAD_IDS = ["dotdot-slash", "dotdot", "hidden", "slash", "empty", "too-long", "control"]


@pytest.mark.parametrize("name,phrase", BAD_NAMES, ids=BAD_IDS)
def test_bad_name_in_do_put(hangar, client, name, phrase):
    with raises_exactly(pa.ArrowInvalid, "invalid dataset name") as info:
        put_table(client, Descriptor.for_path(name), SMALL)
    assert phrase in str(info.value)
    # Nothing was written anywhere: not in the repository, not next to it.
    assert sorted(p.name for p in hangar.repo.iterdir()) == []
    assert not (hangar.repo.parent / "x").exists()


@pytest.mark.parametrize("name,phrase", BAD_NAMES, ids=BAD_IDS)
def test_bad_name_in_get_flight_info(client, name, phrase):
    with raises_exactly(pa.ArrowInvalid, "invalid dataset name") as info:
        client.get_flight_info(Descriptor.for_path(name))
    assert phrase in str(info.value)


@pytest.mark.parametrize("name,phrase", BAD_NAMES, ids=BAD_IDS)
def test_bad_name_in_ticket(client, name, phrase):
    with raises_exactly(pa.ArrowInvalid, "invalid dataset name") as info:
        client.do_get(pa.flight.Ticket(name.encode("utf-8"))).read_all()
    assert phrase in str(info.value)


@pytest.mark.parametrize("name,phrase", BAD_NAMES, ids=BAD_IDS)
def test_bad_name_in_drop_dataset(client, name, phrase):
    with raises_exactly(pa.ArrowInvalid, "invalid dataset name") as info:
        list(client.do_action(pa.flight.Action("drop_dataset", name.encode("utf-8"))))
    assert phrase in str(info.value)


def test_ticket_that_is_not_utf8(client):
    with raises_exactly(pa.ArrowInvalid, "the ticket is not UTF-8"):
        client.do_get(pa.flight.Ticket(b"\xff\xfe")).read_all()


def test_multi_element_path(hangar, client):
    descriptor = Descriptor.for_path("a", "b")
    phrase = "exactly one element, the dataset name; this one has 2"
    with raises_exactly(pa.ArrowInvalid, phrase):
        client.get_flight_info(descriptor)
    with raises_exactly(pa.ArrowInvalid, phrase):
        put_table(client, descriptor, SMALL)
    assert list(hangar.repo.iterdir()) == []


def test_cmd_descriptor(hangar, client):
    # A CMD descriptor is a JSON query (test_query.py); SQL is not one.
    descriptor = Descriptor.for_command(b"SELECT * FROM uploaded")
    with raises_exactly(pa.ArrowInvalid, "the query command is not valid JSON"):
        client.get_flight_info(descriptor)
    with raises_exactly(pa.ArrowInvalid, "the query command is not valid JSON"):
        client.get_schema(descriptor)
    with raises_exactly(pa.ArrowInvalid, "a CMD descriptor \\(a query\\) cannot name an upload"):
        put_table(client, descriptor, SMALL)
    assert list(hangar.repo.iterdir()) == []


# --- other codes ---------------------------------------------------------------


def test_unknown_action_lists_available_actions(client):
    # UNIMPLEMENTED, as the cookbook's server answers (it raises NotImplementedError).
    with raises_exactly(pa.ArrowNotImplementedError, "available actions: drop_dataset") as info:
        list(client.do_action(pa.flight.Action("compact", b"x.parquet")))
    assert "unknown action 'compact'" in str(info.value)


def test_do_exchange_is_unimplemented(client):
    with raises_exactly(pa.ArrowNotImplementedError, "DoExchange is not supported"):
        writer, reader = client.do_exchange(Descriptor.for_path("x.parquet"))
        reader.read_all()


def test_unreadable_file_is_internal_and_skipped_by_listing(hangar, client):
    put_table(client, Descriptor.for_path("good.parquet"), SMALL)
    (hangar.repo / "junk.parquet").write_bytes(b"this is not parquet")
    with raises_exactly(pa.flight.FlightInternalError, "is not readable Parquet"):
        client.get_flight_info(Descriptor.for_path("junk.parquet"))
    with raises_exactly(pa.flight.FlightInternalError, "is not readable Parquet"):
        client.do_get(pa.flight.Ticket(b"junk.parquet")).read_all()
    # One bad file never breaks the listing.
    names = [f.descriptor.path[0] for f in client.list_flights()]
    assert names == [b"good.parquet"]


def test_directory_in_place_of_dataset_is_not_replaced(hangar, client):
    (hangar.repo / "adir.parquet").mkdir()
    with raises_exactly(pa.ArrowException, "not a regular file; refusing to replace it") as info:
        put_table(client, Descriptor.for_path("adir.parquet"), SMALL)
    assert "already exists" in str(info.value)
    assert (hangar.repo / "adir.parquet").is_dir()
    with raises_exactly(pa.ArrowKeyError, "not a regular file"):
        client.get_flight_info(Descriptor.for_path("adir.parquet"))
    assert temp_files(hangar.repo) == []


def test_client_side_schema_mismatch_then_close_commits_what_was_sent(hangar, client):
    # A batch whose schema differs from the stream's is refused by pyarrow's own
    # IPC writer before it is sent (the IPC stream carries the schema once, so
    # pyarrow cannot send a mid-stream schema change; tests/*.rs cover the
    # server's check with a raw Flight client).
    put_table(client, Descriptor.for_path("typed.parquet"), SMALL)
    writer, _ = client.do_put(Descriptor.for_path("typed.parquet"), SMALL.schema)
    with pytest.raises(pa.ArrowInvalid, match="different schema"):
        writer.write_batch(pa.record_batch([pa.array(["x"])], names=["a"]))
    # pyarrow's close() after that client-side error still ends the stream
    # cleanly (it is indistinguishable on the wire from a finished upload), so
    # hangar commits what was sent: the schema alone. The dataset is replaced
    # by a complete, empty version, never by a mix of old and new.
    writer.close()
    back = client.do_get(pa.flight.Ticket(b"typed.parquet")).read_all()
    assert back.schema.equals(SMALL.schema)
    assert back.num_rows == 0
    assert temp_files(hangar.repo) == []


# --- message size limit: RESOURCE_EXHAUSTED -> ArrowInvalid ---------------------


def test_oversize_message_names_the_flag_and_keeps_old_dataset(hangar_factory):
    server = hangar_factory("--max-message-size", "65536")
    client = pa.flight.connect(server.uri)
    put_table(client, Descriptor.for_path("kept.parquet"), SMALL)
    before = (server.repo / "kept.parquet").read_bytes()

    big = pa.table({"a": pa.array(range(131_072), pa.int64())})  # one 1 MiB batch
    with raises_exactly(pa.ArrowInvalid, "exceeds --max-message-size") as info:
        writer, _ = client.do_put(Descriptor.for_path("kept.parquet"), big.schema)
        writer.write_table(big)
        writer.close()
    message = str(info.value)
    assert "resource exhausted" in message
    assert "(65536 bytes)" in message

    # The old dataset is intact, byte for byte, and no upload is left behind.
    assert client.do_get(pa.flight.Ticket(b"kept.parquet")).read_all().equals(SMALL)
    assert (server.repo / "kept.parquet").read_bytes() == before
    assert temp_files(server.repo) == []
    assert "status=RESOURCE_EXHAUSTED" in server.stderr_text()

    # Batches under the limit still go through on the same server.
    put_table(client, Descriptor.for_path("kept.parquet"), big.slice(0, 4000))
    assert client.do_get(pa.flight.Ticket(b"kept.parquet")).read_all().num_rows == 4000
    client.close()


def test_download_larger_than_limit_is_sliced(hangar_factory):
    # The server slices DoGet batches under its own limit: a dataset far larger
    # than --max-message-size still downloads.
    server = hangar_factory("--max-message-size", "65536")
    client = pa.flight.connect(server.uri)
    table = pa.table({"a": pa.array(range(200_000), pa.int64())})
    writer, _ = client.do_put(Descriptor.for_path("big.parquet"), table.schema)
    writer.write_table(table, max_chunksize=4000)
    writer.close()
    back = client.do_get(pa.flight.Ticket(b"big.parquet")).read_all()
    assert back.equals(table)
    client.close()
