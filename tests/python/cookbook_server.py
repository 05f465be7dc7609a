"""The Apache Arrow cookbook's "Streaming Parquet Storage Service" (pyarrow.flight),
as a runnable server: the other end of hangar's client tests (tests/cli_client.rs)
and the reference server of `cargo bench --bench flight`.

The Flight methods are the recipe's, unchanged
(https://arrow.apache.org/cookbook/py/flight.html, Apache-2.0): one Parquet
file per dataset in a folder, do_put written chunk by chunk with a
ParquetWriter, do_get streamed from ParquetFile.iter_batches() through a
GeneratorStream, list_flights/get_flight_info reading each file's schema and
footer on every call, and a drop_dataset action that deletes a file. What is
added, all outside the Flight methods, is there so a test or the benchmark can
run it:

- a command line; ``--port 0`` picks a free port, and the endpoints then
  advertise the port actually bound (the recipe advertises the location it was
  given, which would send clients to port 0);
- ``--host`` defaults to 127.0.0.1 instead of 0.0.0.0;
- once the server accepts calls, one line goes to stdout:
  ``cookbook server listening on grpc://HOST:PORT``; it then serves until killed;
- ``--users NAME:PASSWORD,...`` turns on the cookbook's "Authentication with
  user/password" recipe: a middleware that trades HTTP Basic credentials for a
  Bearer token in the Handshake and checks the token on every other call.

Usage:

    python tests/python/cookbook_server.py --port 0 --repo DIR [--host H] [--users u:p,...]
    python tests/python/cookbook_server.py PORT REPO    (the benchmark's form)
"""

import argparse
import base64
import pathlib
import secrets
import sys

import pyarrow as pa
import pyarrow.flight
import pyarrow.parquet


# --- The cookbook's "Streaming Parquet Storage Service" recipe ---------------

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


# --- The cookbook's "Authentication with user/password" recipe ---------------

class BasicAuthServerMiddlewareFactory(pa.flight.ServerMiddlewareFactory):
    """
    Middleware that implements username-password authentication.

    Parameters
    ----------
    creds: Dict[str, str]
        A dictionary of username-password values to accept.
    """

    def __init__(self, creds):
        self.creds = creds
        # Map generated bearer tokens to users
        self.tokens = {}

    def start_call(self, info, headers):
        """Validate credentials at the start of every call."""
        # Search for the authentication header (case-insensitive)
        auth_header = None
        for header in headers:
            if header.lower() == "authorization":
                auth_header = headers[header][0]
                break

        if not auth_header:
            raise pa.flight.FlightUnauthenticatedError("No credentials supplied")

        # The header has the structure "AuthType TokenValue", e.g.
        # "Basic <encoded username+password>" or "Bearer <random token>".
        auth_type, _, value = auth_header.partition(" ")

        if auth_type == "Basic":
            # Initial "login". The user provided a username/password
            # combination encoded in the same way as HTTP Basic Auth.
            decoded = base64.b64decode(value).decode("utf-8")
            username, _, password = decoded.partition(':')
            if not password or password != self.creds.get(username):
                raise pa.flight.FlightUnauthenticatedError("Unknown user or invalid password")
            # Generate a secret, random bearer token for future calls.
            token = secrets.token_urlsafe(32)
            self.tokens[token] = username
            return BasicAuthServerMiddleware(token)
        elif auth_type == "Bearer":
            # An actual call. Validate the bearer token.
            username = self.tokens.get(value)
            if username is None:
                raise pa.flight.FlightUnauthenticatedError("Invalid token")
            return BasicAuthServerMiddleware(value)

        raise pa.flight.FlightUnauthenticatedError("No credentials supplied")


class BasicAuthServerMiddleware(pa.flight.ServerMiddleware):
    """Middleware that implements username-password authentication."""

    def __init__(self, token):
        self.token = token

    def sending_headers(self):
        """Return the authentication token to the client."""
        return {"authorization": f"Bearer {self.token}"}


class NoOpAuthHandler(pa.flight.ServerAuthHandler):
    """
    A handler that implements username-password authentication.

    This is required only so that the server will respond to the internal
    Handshake RPC call, which the client calls when authenticate_basic_token
    is called. Otherwise, it should be a no-op as the actual authentication is
    implemented in middleware.
    """

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


# --- Command line (not part of the recipes) ----------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="The Arrow cookbook's streaming Parquet Flight server.",
        usage="%(prog)s [--host HOST] [--port PORT] [--repo DIR] [--users NAME:PASSWORD,...]\n"
              "       %(prog)s PORT REPO",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="0 picks a free port (default 8815)")
    parser.add_argument("--repo", type=pathlib.Path, metavar="DIR",
                        help="the datasets folder, created if missing (default ./datasets)")
    parser.add_argument("--users", default="", metavar="NAME:PASSWORD,...",
                        help="turns on the cookbook's user/password authentication")
    # The form `cargo bench --bench flight` runs: PORT REPO, both positional.
    parser.add_argument("port_arg", nargs="?", type=int, metavar="PORT",
                        help="same as --port")
    parser.add_argument("repo_arg", nargs="?", type=pathlib.Path, metavar="REPO",
                        help="same as --repo")
    args = parser.parse_args(argv)
    for name in ("port", "repo"):
        positional = getattr(args, f"{name}_arg")
        if positional is None:
            continue
        if getattr(args, name) is not None:
            parser.error(f"the {name} is given twice: {name.upper()} and --{name}")
        setattr(args, name, positional)
    if args.port is None:
        args.port = 8815
    if args.repo is None:
        args.repo = pathlib.Path("./datasets")
    return args


def main(argv):
    args = parse_args(argv)

    kwargs = {}
    if args.users:
        creds = dict(pair.split(":", 1) for pair in args.users.split(","))
        kwargs["auth_handler"] = NoOpAuthHandler()
        kwargs["middleware"] = {"basic": BasicAuthServerMiddlewareFactory(creds)}

    args.repo.mkdir(parents=True, exist_ok=True)
    server = FlightServer(f"grpc://{args.host}:{args.port}", repo=args.repo, **kwargs)
    # The server accepts calls once constructed; with port 0 the real port is
    # only known now, so the location the endpoints advertise is fixed up
    # before anyone learns the port from the line below.
    server._location = f"grpc://{args.host}:{server.port}"
    print(f"cookbook server listening on {server._location}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
