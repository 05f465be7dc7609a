"""A Flight server (pyarrow.flight) that is correct by default and broken on
request, one flag per broken behaviour: the other end of tests/check.rs, which
shows that each of `hangar check`'s checks FAILs on the behaviour it is about.

Correct means what `hangar check` expects: datasets in memory by PATH
descriptor (ticket = name), FlightInfo with the stream's schema and row
count, NOT_FOUND for a missing dataset, INVALID_ARGUMENT for a malformed
descriptor, UNIMPLEMENTED for an unknown action, and ListActions naming
exactly the actions DoAction accepts (drop_dataset).

With ``--users NAME:PASSWORD`` it requires the cookbook's login (the
middleware of tests/python/cookbook_server.py). It starts with two datasets, "numbers" (3 rows) and "empty" (0 rows), and
prints ``broken server listening on grpc://HOST:PORT`` once it serves.

Usage:

    python tests/python/broken_server.py --port 0 [--FLAG ...]

Behaviours pyarrow's server cannot break (a batch before the schema, a stream
without a schema, a batch before its dictionary) are broken by a raw gRPC
server inside tests/check.rs instead.
"""

import argparse
import sys
import threading

import pyarrow as pa
import pyarrow.flight

# The cookbook's login recipe, as tests/python/cookbook_server.py has it.
from cookbook_server import (BasicAuthServerMiddleware, BasicAuthServerMiddlewareFactory,
                             NoOpAuthHandler)

FLAGS = {
    "wrong-total-records": "FlightInfo.total_records is one more than the rows streamed",
    "mismatched-schema": "FlightInfo.schema has a column the stream does not",
    "internal-for-missing": "a missing dataset is INTERNAL instead of NOT_FOUND",
    "unknown-for-malformed": "a PATH descriptor without a path fails as UNKNOWN (IndexError)",
    "internal-for-bad-ticket": "a ticket that is not UTF-8 is INTERNAL",
    "oversized-message": "'numbers' is one 5 MiB row sent as one message",
    "accept-unknown-action": "DoAction accepts any action type",
    "unlisted-drop": "ListActions lists nothing, though DoAction accepts drop_dataset",
    "listed-but-refused": "ListActions also lists 'compact', which DoAction refuses",
    "stall-put": "DoPut stores the table, says so on stderr, then never answers",
    "no-bearer": "with --users, Handshake answers no Bearer header",
    "token-refused": "with --users, no Bearer token is ever accepted",
    "token-ignored": "with --users, any Bearer token is accepted",
}


class AuthFactory(BasicAuthServerMiddlewareFactory):
    """The cookbook's user/password middleware, broken as the flags say."""

    def __init__(self, creds, broken):
        super().__init__(creds)
        self.broken = broken

    def start_call(self, info, headers):
        value = next((v[0] for k, v in headers.items() if k.lower() == "authorization"), "")
        kind, _, token = value.partition(" ")
        if kind == "Bearer" and "token-refused" in self.broken:
            raise pa.flight.FlightUnauthenticatedError("Invalid token")
        if kind == "Bearer" and "token-ignored" in self.broken:
            return BasicAuthServerMiddleware(token)
        middleware = super().start_call(info, headers)
        if kind == "Basic" and "no-bearer" in self.broken:
            return Silent()
        return middleware


class Silent(pa.flight.ServerMiddleware):
    """Sends no headers: a login without a token."""


class BrokenServer(pa.flight.FlightServerBase):

    def __init__(self, location, broken, **kwargs):
        super().__init__(location, **kwargs)
        self.broken = broken
        if "oversized-message" in broken:
            numbers = pa.table({"blob": pa.array([b"x" * (5 * 1024 * 1024)])})
        else:
            numbers = pa.table({"n": pa.array([1, 2, 3], pa.int64()),
                                "s": pa.array(["a", None, "c"])})
        self.tables = {
            "numbers": numbers,
            "empty": pa.table({"n": pa.array([], pa.int64())}),
        }

    def _name(self, descriptor):
        if descriptor.descriptor_type != pa.flight.DescriptorType.PATH:
            raise ValueError("only PATH descriptors name datasets")
        if "unknown-for-malformed" in self.broken:
            return descriptor.path[0].decode()
        if len(descriptor.path) != 1:
            raise ValueError("a PATH descriptor names one dataset")
        return descriptor.path[0].decode()

    def _table(self, name):
        if name not in self.tables:
            if "internal-for-missing" in self.broken:
                raise pa.flight.FlightInternalError(f"no such file: {name}")
            raise KeyError(f"dataset {name!r} not found")
        return self.tables[name]

    def _info(self, name):
        table = self._table(name)
        schema = table.schema
        if "mismatched-schema" in self.broken:
            schema = schema.append(pa.field("extra", pa.int8()))
        rows = table.num_rows
        if "wrong-total-records" in self.broken:
            rows += 1
        descriptor = pa.flight.FlightDescriptor.for_path(name)
        endpoints = [pa.flight.FlightEndpoint(name, [])]
        return pa.flight.FlightInfo(schema, descriptor, endpoints, rows, -1)

    def list_flights(self, context, criteria):
        for name in sorted(self.tables):
            yield self._info(name)

    def get_flight_info(self, context, descriptor):
        return self._info(self._name(descriptor))

    def do_put(self, context, descriptor, reader, writer):
        name = self._name(descriptor)
        self.tables[name] = reader.read_all()
        if "stall-put" in self.broken:
            print(f"put stored {name}", file=sys.stderr, flush=True)
            threading.Event().wait()

    def do_get(self, context, ticket):
        try:
            name = ticket.ticket.decode("utf-8")
        except UnicodeDecodeError:
            if "internal-for-bad-ticket" in self.broken:
                raise pa.flight.FlightInternalError("cannot decode the ticket")
            raise ValueError("the ticket is not a dataset name")
        return pa.flight.RecordBatchStream(self._table(name))

    def list_actions(self, context):
        if "unlisted-drop" in self.broken:
            return []
        actions = [("drop_dataset", "Delete a dataset.")]
        if "listed-but-refused" in self.broken:
            actions.append(("compact", "Compact a dataset."))
        return actions

    def do_action(self, context, action):
        if action.type == "drop_dataset":
            name = action.body.to_pybytes().decode("utf-8")
            self._table(name)
            del self.tables[name]
            return []
        if "accept-unknown-action" in self.broken:
            return []
        raise NotImplementedError(f"unknown action {action.type!r}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--users", default="", metavar="NAME:PASSWORD,...",
                        help="require the cookbook's user/password login")
    for flag, meaning in FLAGS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=meaning)
    args = parser.parse_args(argv)
    broken = {flag for flag in FLAGS if getattr(args, flag.replace("-", "_"))}
    kwargs = {}
    if args.users:
        creds = dict(pair.split(":", 1) for pair in args.users.split(","))
        kwargs["auth_handler"] = NoOpAuthHandler()
        kwargs["middleware"] = {"basic": AuthFactory(creds, broken)}
    server = BrokenServer(f"grpc://{args.host}:{args.port}", broken, **kwargs)
    print(f"broken server listening on grpc://{args.host}:{server.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
