"""The Apache Arrow cookbook's Arrow Flight client code, run against hangar.

The first two tests follow the cookbook's "Parquet storage service" and
"Streaming Parquet Storage Service" client flows call for call; the rest check
that other kinds of data survive the Parquet round trip and that uploads report
what they stored.
"""

import datetime
import decimal
import json

import pyarrow as pa
import pyarrow.flight
import pytest

from support import temp_files, wait_for


def read_back(client, name):
    return client.do_get(pa.flight.Ticket(name.encode("utf-8"))).read_all()


def upload(client, name, table):
    """Uploads a table the cookbook's way and returns the PutResult metadata."""
    writer, metadata_reader = client.do_put(
        pa.flight.FlightDescriptor.for_path(name), table.schema
    )
    writer.write_table(table)
    writer.done_writing()
    metadata = metadata_reader.read()
    writer.close()
    assert metadata is not None, "hangar sent no PutResult"
    return json.loads(metadata.to_pybytes())


def listed_names(client):
    return [f.descriptor.path[0].decode("utf-8") for f in client.list_flights()]


def test_parquet_storage_service(hangar):
    # --- verbatim cookbook client flow (only the address differs) ---
    client = pa.flight.connect(hangar.uri)

    # Upload a new dataset
    data_table = pa.table([["Mario", "Luigi", "Peach"]], names=["Character"])
    upload_descriptor = pa.flight.FlightDescriptor.for_path("uploaded.parquet")
    writer, _ = client.do_put(upload_descriptor, data_table.schema)
    writer.write_table(data_table)
    writer.close()

    # Retrieve metadata of newly uploaded dataset
    flight = client.get_flight_info(upload_descriptor)
    descriptor = flight.descriptor
    assert descriptor.path[0] == b"uploaded.parquet"
    assert descriptor.path[0].decode("utf-8") == "uploaded.parquet"
    assert flight.total_records == 3
    stored = hangar.repo / "uploaded.parquet"
    assert stored.is_file()
    assert flight.total_bytes == stored.stat().st_size
    assert flight.schema.equals(data_table.schema)
    assert len(flight.endpoints) == 1
    assert flight.endpoints[0].ticket.ticket == b"uploaded.parquet"
    assert list(flight.endpoints[0].locations) == []
    assert client.get_schema(upload_descriptor).schema.equals(data_table.schema)

    # Read content of the dataset
    reader = client.do_get(flight.endpoints[0].ticket)
    read_table = reader.read_all()
    assert read_table.equals(data_table)
    frame = read_table.to_pandas().head()
    assert list(frame["Character"]) == ["Mario", "Luigi", "Peach"]

    # The dataset is listed, and drop_dataset is offered as the cookbook offers it.
    flights = list(client.list_flights())
    assert [f.descriptor.path[0] for f in flights] == [b"uploaded.parquet"]
    assert flights[0].total_records == 3
    assert flights[0].total_bytes == stored.stat().st_size
    assert flights[0].schema.equals(data_table.schema)
    actions = {action.type: action.description for action in client.list_actions()}
    assert actions.get("drop_dataset") == "Delete a dataset.", actions

    # Drop the newly uploaded dataset (the cookbook never iterates the results)
    client.do_action(pa.flight.Action("drop_dataset", "uploaded.parquet".encode("utf-8")))

    # List existing datasets: none left. (Bounded poll: the cookbook does not
    # wait for the action's result stream, so allow the call to land.)
    assert wait_for(lambda: listed_names(client) == []), listed_names(client)
    assert not stored.exists()
    assert temp_files(hangar.repo) == []
    client.close()


def test_streaming_parquet_storage_service(hangar):
    # --- verbatim cookbook streaming flow (only the address differs) ---
    client = pa.flight.connect(hangar.uri)

    NUM_BATCHES = 1024
    ROWS_PER_BATCH = 4096
    upload_descriptor = pa.flight.FlightDescriptor.for_path("streamed.parquet")
    batch = pa.record_batch([pa.array(range(ROWS_PER_BATCH))], names=["ints"])
    writer, _ = client.do_put(upload_descriptor, batch.schema)
    with writer:
        for _ in range(NUM_BATCHES):
            writer.write_batch(batch)

    flight = client.get_flight_info(upload_descriptor)
    assert flight.total_records == NUM_BATCHES * ROWS_PER_BATCH
    assert flight.total_bytes == (hangar.repo / "streamed.parquet").stat().st_size

    reader = client.do_get(flight.endpoints[0].ticket)
    total_rows = 0
    chunks = 0
    for chunk in reader:
        ints = chunk.data.column(0)
        # Every uploaded batch is 0..4095, so row i of the dataset holds i % 4096.
        expected = pa.array(
            [(total_rows + i) % ROWS_PER_BATCH for i in range(chunk.data.num_rows)],
            pa.int64(),
        )
        assert ints.equals(expected), f"chunk {chunks} starting at row {total_rows}"
        total_rows += chunk.data.num_rows
        chunks += 1
    assert total_rows == NUM_BATCHES * ROWS_PER_BATCH == 4_194_304
    assert chunks > 1, "a 32 MB dataset should arrive in more than one message"
    client.close()


def test_put_result_reports_rows_and_bytes(hangar, client):
    table = pa.table({"n": pa.array(range(1000), pa.int64())})
    writer, metadata_reader = client.do_put(
        pa.flight.FlightDescriptor.for_path("counted.parquet"), table.schema
    )
    writer.write_table(table, max_chunksize=300)  # four batches
    writer.done_writing()
    metadata = metadata_reader.read()
    writer.close()
    assert metadata is not None
    result = json.loads(metadata.to_pybytes())
    size = (hangar.repo / "counted.parquet").stat().st_size
    assert result == {"rows": 1000, "bytes": size}
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_path("counted.parquet"))
    assert info.total_bytes == size


def test_overwrite_replaces_dataset(hangar, client):
    first = pa.table({"a": [1, 2, 3]})
    second = pa.table({"b": ["x", "y"], "c": [True, False]})
    assert upload(client, "data.parquet", first)["rows"] == 3
    assert upload(client, "data.parquet", second)["rows"] == 2
    assert read_back(client, "data.parquet").equals(second)
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_path("data.parquet"))
    assert info.total_records == 2
    assert info.schema.equals(second.schema)
    assert info.total_bytes == (hangar.repo / "data.parquet").stat().st_size
    assert listed_names(client) == ["data.parquet"]
    assert temp_files(hangar.repo) == []


def test_list_flights_criteria_is_a_name_prefix(client):
    for name in ["alpha.parquet", "alpine.parquet", "beta.parquet"]:
        upload(client, name, pa.table({"x": [1]}))
    assert listed_names(client) == ["alpha.parquet", "alpine.parquet", "beta.parquet"]
    names = [f.descriptor.path[0] for f in client.list_flights(criteria=b"alp")]
    assert names == [b"alpha.parquet", b"alpine.parquet"]
    assert list(client.list_flights(criteria=b"zzz")) == []


def roundtrip(client, name, table):
    result = upload(client, name, table)
    assert result["rows"] == table.num_rows
    back = read_back(client, name)
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_path(name))
    return back, info


def test_dictionary_columns_round_trip(client):
    table = pa.table(
        {
            "color": pa.array(["red", "green", "red", None, "blue"]).dictionary_encode(),
            "n": [1, 2, 3, 4, 5],
        }
    )
    back, info = roundtrip(client, "dict.parquet", table)
    assert back.schema.equals(table.schema), back.schema
    assert pa.types.is_dictionary(back.schema.field("color").type)
    assert back.column("color").to_pylist() == ["red", "green", "red", None, "blue"]
    assert back.column("n").to_pylist() == [1, 2, 3, 4, 5]
    assert info.schema.equals(table.schema)


def test_nested_columns_round_trip(client):
    point = pa.struct([("x", pa.float64()), ("y", pa.float64())])
    table = pa.table(
        {
            "point": pa.array([{"x": 1.0, "y": 2.0}, None, {"x": -3.5, "y": 0.0}], point),
            "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
            "nested": pa.array(
                [[{"x": 1.0, "y": 1.0}], None, [{"x": 2.0, "y": None}]], pa.list_(point)
            ),
        }
    )
    back, info = roundtrip(client, "nested.parquet", table)
    assert back.equals(table), (back.schema, back.to_pylist())
    assert info.schema.equals(table.schema)


def test_schema_and_field_metadata_round_trip(client):
    schema = pa.schema(
        [
            pa.field("id", pa.int32(), nullable=False, metadata={"unit": "count"}),
            pa.field("label", pa.string(), metadata={"description": "a label"}),
        ],
        metadata={"origin": "hangar-tests", "version": "3"},
    )
    table = pa.table({"id": pa.array([1, 2], pa.int32()), "label": ["a", "b"]}, schema=schema)
    back, info = roundtrip(client, "meta.parquet", table)
    assert back.equals(table)
    for got in (back.schema, info.schema):
        assert got.equals(schema, check_metadata=True), got
        assert got.metadata[b"origin"] == b"hangar-tests"
        assert got.field("id").metadata == {b"unit": b"count"}
        assert got.field("id").nullable is False
        assert got.field("label").metadata == {b"description": b"a label"}


def test_empty_table_round_trips_its_schema(hangar, client):
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    table = schema.empty_table()
    result = upload(client, "empty.parquet", table)
    assert result == {"rows": 0, "bytes": (hangar.repo / "empty.parquet").stat().st_size}
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_path("empty.parquet"))
    assert info.total_records == 0
    assert info.schema.equals(schema)
    back = read_back(client, "empty.parquet")
    assert back.num_rows == 0
    assert back.schema.equals(schema)
    assert listed_names(client) == ["empty.parquet"]


def test_schema_only_upload_with_no_batches(client):
    schema = pa.schema([("only", pa.float32())])
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path("bare.parquet"), schema)
    writer.close()
    back = read_back(client, "bare.parquet")
    assert back.num_rows == 0
    assert back.schema.equals(schema)


def test_scalar_types_and_nulls_round_trip(client):
    utc = datetime.timezone.utc
    table = pa.table(
        {
            "ts_us": pa.array(
                [datetime.datetime(2024, 2, 29, 12, 30, 1, 123456), None], pa.timestamp("us")
            ),
            "ts_ms_utc": pa.array(
                [datetime.datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=utc), None],
                pa.timestamp("ms", tz="UTC"),
            ),
            "ts_ns": pa.array([1_700_000_000_123_456_789, -1], pa.timestamp("ns")),
            "date": pa.array([datetime.date(1970, 1, 1), datetime.date(2038, 1, 19)]),
            "dec": pa.array(
                [decimal.Decimal("12345.6789"), decimal.Decimal("-0.0001")], pa.decimal128(12, 4)
            ),
            "flag": pa.array([True, None], pa.bool_()),
            "nothing": pa.array([None, None], pa.null()),
            "i8": pa.array([-128, 127], pa.int8()),
            "u64": pa.array([0, 2**64 - 1], pa.uint64()),
            "f64": pa.array([float("inf"), -0.0]),
            "text": pa.array(["", "héllo ✈"]),
            "blob": pa.array([b"\x00\xff", None], pa.binary()),
        }
    )
    back, info = roundtrip(client, "types.parquet", table)
    assert back.schema.equals(table.schema), back.schema
    assert back.equals(table), back.to_pylist()
    assert info.schema.equals(table.schema)
    assert back.column("dec").to_pylist() == [
        decimal.Decimal("12345.6789"),
        decimal.Decimal("-0.0001"),
    ]
    assert back.column("nothing").null_count == 2


@pytest.mark.parametrize("codec", ["snappy", "zstd", "none"])
def test_compression_flag_round_trip(hangar_factory, codec):
    server = hangar_factory("--compression", codec)
    client = pa.flight.connect(server.uri)
    table = pa.table({"v": pa.array(range(10_000), pa.int64()), "s": ["abc"] * 10_000})
    result = upload(client, "c.parquet", table)
    assert result["bytes"] == (server.repo / "c.parquet").stat().st_size
    assert read_back(client, "c.parquet").equals(table)
    # The file is ordinary Parquet that pyarrow itself reads.
    import pyarrow.parquet as pq

    on_disk = pq.read_table(server.repo / "c.parquet")
    assert on_disk.equals(table)
    column = pq.ParquetFile(server.repo / "c.parquet").metadata.row_group(0).column(0)
    assert column.compression == {"snappy": "SNAPPY", "zstd": "ZSTD", "none": "UNCOMPRESSED"}[codec]
    client.close()


def test_handshake_without_auth(client):
    # No authentication configured: the handshake succeeds with an empty answer.
    client.authenticate_basic_token("anyone", "anything")
    assert listed_names(client) == []
