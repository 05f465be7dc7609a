"""The Apache Arrow cookbook's "Streaming Parquet Storage Service" (pyarrow.flight),
as a runnable server for hangar's client tests.

The Flight methods follow the recipe
(https://arrow.apache.org/cookbook/py/flight.html): one Parquet file per
dataset in a folder, do_put written batch by batch with a ParquetWriter, do_get
streamed with a GeneratorStream, and a drop_dataset action. Differences, all
outside the Flight methods, are there so a test can run it:

- ``--port 0`` picks a free port; the endpoints then advertise the real one
  (the recipe advertises the location it was given).
- ``--host`` defaults to 127.0.0.1 instead of 0.0.0.0.
- Once serving, one line goes to stdout: ``cookbook server listening on
  grpc://HOST:PORT``.
- ``--users NAME:PASSWORD,...`` turns on the cookbook's "Authentication with
  user/password" recipe: a middleware that trades HTTP Basic credentials for a
  Bearer token in the Handshake and checks the token on every other call.

Usage: python tests/python/cookbook_server.py --port 0 --repo DIR [--users u:p]
"""

import argparse
import base64
import pathlib
import secrets
import sys

import pyarrow as pa
import pyarrow.flight
import pyarrow.parquet


class FlightServer(pa.flight.FlightServerBase):
    def __init__(self, location="grpc://0.0.0.0:8815",
                 repo=pathlib.Path("./datasets"), **kwargs):
        super(FlightServer, self).__init__(location, **kwargs)
        # The recipe keeps `location` as given; with port 0 that would send
        # clients to port 0, so advertise the port actually bound.
        host = location.split("://", 1)[1].rsplit(":", 1)[0]
        self._location = f"grpc://{host}:{self.port}"
        self._repo = repo

    def _make_flight_info(self, dataset):
        dataset_path = self._repo / dataset
        schema = pa.parquet.read_schema(dataset_path)
        metadata = pa.parquet.read_metadata(dataset_path)
        descriptor = pa.flight.FlightDescriptor.for_path(
            dataset.encode('utf-8')
        )
        endpoints = [pa.flight.FlightEndpoint(dataset, [self._location])]
        return pyarrow.flight.FlightInfo(schema,
                                         descriptor,
                                         endpoints,
                                         metadata.num_rows,
                                         metadata.serialized_size)

    def list_flights(self, context, criteria):
        for dataset in self._repo.iterdir():
            yield self._make_flight_info(dataset.name)

    def get_flight_info(self, context, descriptor):
        return self._make_flight_info(descriptor.path[0].decode('utf-8'))

    def do_put(self, context, descriptor, reader, writer):
        dataset = descriptor.path[0].decode('utf-8')
        dataset_path = self._repo / dataset
        # Read the uploaded data and write to Parquet incrementally
        with dataset_path.open("wb") as sink:
            with pa.parquet.ParquetWriter(sink, reader.schema) as writer:
                for chunk in reader:
                    writer.write_table(pa.Table.from_batches([chunk.data]))

    def do_get(self, context, ticket):
        dataset = ticket.ticket.decode('utf-8')
        # Stream data from a file
        dataset_path = self._repo / dataset
        reader = pa.parquet.ParquetFile(dataset_path)
        return pa.flight.GeneratorStream(
            reader.schema_arrow, reader.iter_batches())

    def list_actions(self, context):
        return [
            ("drop_dataset", "Delete a dataset."),
        ]

    def do_action(self, context, action):
        if action.type == "drop_dataset":
            self.do_drop_dataset(action.body.to_pybytes().decode('utf-8'))
        else:
            raise NotImplementedError

    def do_drop_dataset(self, dataset):
        dataset_path = self._repo / dataset
        dataset_path.unlink()


# --- The cookbook's user/password authentication recipe ---------------------

class BasicAuthServerMiddlewareFactory(pa.flight.ServerMiddlewareFactory):
    """Checks credentials at the start of every call: Basic (user and
    password) yields a new Bearer token, Bearer must be a token it issued."""

    def __init__(self, creds):
        self.creds = creds
        self.tokens = {}

    def start_call(self, info, headers):
        auth_header = None
        for header in headers:
            if header.lower() == "authorization":
                auth_header = headers[header][0]
                break
        if not auth_header:
            raise pa.flight.FlightUnauthenticatedError("No credentials supplied")

        auth_type, _, value = auth_header.partition(" ")
        if auth_type == "Basic":
            decoded = base64.b64decode(value).decode("utf-8")
            username, _, password = decoded.partition(":")
            if not password or password != self.creds.get(username):
                raise pa.flight.FlightUnauthenticatedError(
                    "Unknown user or invalid password")
            token = secrets.token_urlsafe(32)
            self.tokens[token] = username
            return BasicAuthServerMiddleware(token)
        elif auth_type == "Bearer":
            username = self.tokens.get(value)
            if username is None:
                raise pa.flight.FlightUnauthenticatedError("Invalid token")
            return BasicAuthServerMiddleware(value)

        raise pa.flight.FlightUnauthenticatedError("No credentials supplied")


class BasicAuthServerMiddleware(pa.flight.ServerMiddleware):
    """Sends the Bearer token back in the response headers."""

    def __init__(self, token):
        self.token = token

    def sending_headers(self):
        return {"authorization": f"Bearer {self.token}"}


class NoOpAuthHandler(pa.flight.ServerAuthHandler):
    """The middleware does the work; the handshake itself carries nothing."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8815)
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path("./datasets"))
    parser.add_argument("--users", default="",
                        help="NAME:PASSWORD[,NAME:PASSWORD...] turns on authentication")
    args = parser.parse_args()

    kwargs = {}
    if args.users:
        creds = dict(pair.split(":", 1) for pair in args.users.split(","))
        kwargs["auth_handler"] = NoOpAuthHandler()
        kwargs["middleware"] = {"basic": BasicAuthServerMiddlewareFactory(creds)}

    args.repo.mkdir(parents=True, exist_ok=True)
    server = FlightServer(f"grpc://{args.host}:{args.port}", repo=args.repo, **kwargs)
    print(f"cookbook server listening on grpc://{args.host}:{server.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
