"""Reference server for `cargo bench --bench flight`.

This is the Arrow cookbook's "Streaming Parquet Storage Service" recipe
(https://arrow.apache.org/cookbook/py/flight.html, Apache-2.0): one Parquet
file per dataset in a folder, DoPut streams the uploaded batches into a
`ParquetWriter` one chunk at a time, DoGet streams `ParquetFile.iter_batches()`
through a `GeneratorStream`, ListFlights/GetFlightInfo read each file's schema
and footer on every call, and a `drop_dataset` action deletes a file. The
service methods keep the recipe's behaviour unchanged; only the command line
is added so the benchmark can run it:

    python reference_server.py PORT REPO

PORT 0 picks a free port. Once the server accepts calls it prints one line,
`reference listening on grpc://127.0.0.1:PORT`, and serves until killed.
"""

import pathlib
import sys

import pyarrow as pa
import pyarrow.flight
import pyarrow.parquet


class FlightServer(pa.flight.FlightServerBase):
    def __init__(self, location="grpc://0.0.0.0:8815",
                 repo=pathlib.Path("./datasets"), **kwargs):
        super(FlightServer, self).__init__(location, **kwargs)
        self._location = location
        self._repo = repo

    def _make_flight_info(self, dataset):
        dataset_path = self._repo / dataset
        schema = pa.parquet.read_schema(dataset_path)
        metadata = pa.parquet.read_metadata(dataset_path)
        descriptor = pa.flight.FlightDescriptor.for_path(dataset.encode("utf-8"))
        endpoints = [pa.flight.FlightEndpoint(dataset, [self._location])]
        return pyarrow.flight.FlightInfo(
            schema, descriptor, endpoints, metadata.num_rows, metadata.serialized_size
        )

    def list_flights(self, context, criteria):
        for dataset in self._repo.iterdir():
            yield self._make_flight_info(dataset.name)

    def get_flight_info(self, context, descriptor):
        return self._make_flight_info(descriptor.path[0].decode("utf-8"))

    def do_put(self, context, descriptor, reader, writer):
        dataset = descriptor.path[0].decode("utf-8")
        dataset_path = self._repo / dataset
        # The upload goes to Parquet one chunk at a time, never whole in memory.
        with dataset_path.open("wb") as sink:
            with pa.parquet.ParquetWriter(sink, reader.schema) as parquet_writer:
                for chunk in reader:
                    parquet_writer.write_table(pa.Table.from_batches([chunk.data]))

    def do_get(self, context, ticket):
        dataset = ticket.ticket.decode("utf-8")
        dataset_path = self._repo / dataset
        # The file is streamed batch by batch.
        reader = pa.parquet.ParquetFile(dataset_path)
        return pa.flight.GeneratorStream(reader.schema_arrow, reader.iter_batches())

    def list_actions(self, context):
        return [("drop_dataset", "Delete a dataset.")]

    def do_action(self, context, action):
        if action.type == "drop_dataset":
            self.do_drop_dataset(action.body.to_pybytes().decode("utf-8"))
        else:
            raise NotImplementedError

    def do_drop_dataset(self, dataset):
        dataset_path = self._repo / dataset
        dataset_path.unlink()


def main(argv):
    if len(argv) != 3:
        print("usage: reference_server.py PORT REPO", file=sys.stderr)
        return 2
    port = int(argv[1])
    repo = pathlib.Path(argv[2])
    repo.mkdir(parents=True, exist_ok=True)
    server = FlightServer(location=f"grpc://127.0.0.1:{port}", repo=repo)
    # The gRPC server accepts calls once constructed; with port 0 the real port
    # is only known now, so the location handed out in FlightInfo is fixed up.
    server._location = f"grpc://127.0.0.1:{server.port}"
    print(f"reference listening on {server._location}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
