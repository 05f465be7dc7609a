"""What generic gRPC tools see: server reflection and the health service,
driven by Python's grpcio (`grpcio-reflection`, `grpcio-health-checking`), the
way grpcurl, supervisors and load balancers use them.

Both answer without credentials (also on a server with --users), describe
nothing but the services, and can be switched off (--no-reflection,
--no-health). Health says SERVING once the repository is open and NOT_SERVING
when shutdown begins; open streams end then instead of holding the shutdown.
"""

import threading

import grpc
import pyarrow.flight
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from test_auth import users_file  # noqa: F401  (a module-scoped fixture)

#: Bound on every call in this module.
CALL_TIMEOUT = 15.0

FLIGHT = "arrow.flight.protocol.FlightService"
HEALTH = "grpc.health.v1.Health"


def channel_to(server):
    return grpc.insecure_channel(server.uri.removeprefix("grpc://"))


def serving_status(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_reflection_lists_and_describes_flight_without_a_proto_file(hangar):
    with channel_to(hangar) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert services == {
            FLIGHT,
            HEALTH,
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        pool = descriptor_pool.DescriptorPool(database)
        flight = pool.FindServiceByName(FLIGHT)
        methods = {m.name: m for m in flight.methods}
        assert set(methods) == {
            "Handshake", "ListFlights", "GetFlightInfo", "PollFlightInfo", "GetSchema",
            "DoGet", "DoPut", "DoExchange", "DoAction", "ListActions",
        }
        assert methods["DoGet"].input_type.full_name == "arrow.flight.protocol.Ticket"
        assert methods["DoGet"].output_type.full_name == "arrow.flight.protocol.FlightData"
        assert methods["DoPut"].client_streaming and methods["DoPut"].server_streaming
        data = pool.FindMessageTypeByName("arrow.flight.protocol.FlightData")
        assert {f.name: f.number for f in data.fields} == {
            "flight_descriptor": 1, "data_header": 2, "app_metadata": 3, "data_body": 1000,
        }
        # Imports come along, so a tool can resolve every type it is shown.
        info = pool.FindMessageTypeByName("arrow.flight.protocol.FlightEndpoint")
        assert info.fields_by_name["expiration_time"].message_type.full_name == (
            "google.protobuf.Timestamp"
        )
        assert pool.FindServiceByName(HEALTH).methods_by_name["Watch"].server_streaming


def test_reflection_v1_answers_like_v1alpha(hangar):
    # The v1 and v1alpha messages are the same on the wire; grpcurl asks v1 first.
    with channel_to(hangar) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=FLIGHT)
        (reply,) = list(call(iter([request]), timeout=CALL_TIMEOUT))
        assert reply.WhichOneof("message_response") == "file_descriptor_response"
        names = set()
        for encoded in reply.file_descriptor_response.file_descriptor_proto:
            from google.protobuf import descriptor_pb2

            names.add(descriptor_pb2.FileDescriptorProto.FromString(encoded).name)
        assert "Flight.proto" in names


def test_health_reports_serving_for_the_server_and_flight(hangar):
    with channel_to(hangar) as channel:
        assert serving_status(channel, "") == "SERVING"
        assert serving_status(channel, FLIGHT) == "SERVING"
        with pytest.raises(grpc.RpcError) as unknown:
            serving_status(channel, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_and_health_need_no_credentials_while_flight_does(
    hangar_factory, users_file  # noqa: F811
):
    server = hangar_factory("--users", users_file)
    with channel_to(server) as channel:
        assert serving_status(channel, FLIGHT) == "SERVING"
        assert FLIGHT in ProtoReflectionDescriptorDatabase(channel).get_services()
    client = pyarrow.flight.connect(server.uri)
    with pytest.raises(pyarrow.flight.FlightUnauthenticatedError):
        list(client.list_flights(options=pyarrow.flight.FlightCallOptions(timeout=CALL_TIMEOUT)))
    client.close()


@pytest.mark.parametrize(
    "flag, off, on",
    [("--no-reflection", "reflection", "health"), ("--no-health", "health", "reflection")],
)
def test_each_service_can_be_switched_off(hangar_factory, flag, off, on):
    server = hangar_factory(flag)

    def reflection(channel):
        return ProtoReflectionDescriptorDatabase(channel).get_services()

    def health(channel):
        return serving_status(channel, "")

    calls = {"reflection": reflection, "health": health}
    with channel_to(server) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            calls[off](channel)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert calls[on](channel)
        # Flight itself is untouched.
        client = pyarrow.flight.connect(server.uri)
        assert list(client.list_flights()) == []
        client.close()


def test_watch_sees_not_serving_at_shutdown_and_then_ends(hangar_factory):
    server = hangar_factory()
    seen = []
    ended = threading.Event()
    with channel_to(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=FLIGHT), timeout=60)

        def read():
            try:
                for reply in watch:
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            except grpc.RpcError as err:
                seen.append(f"error {err.code()}")
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        server.wait_for_log(lambda _: seen == ["SERVING"], "the first Watch reply")
        server.process.terminate()
        # Bounded: the stream must end by itself, long before this.
        assert ended.wait(timeout=30), f"the Watch never ended; it saw {seen}"
        assert seen == ["SERVING", "NOT_SERVING"]
        assert server.process.wait(timeout=30) == 0
    log = server.stderr_text()
    # The watcher did not hold the shutdown for the whole grace period.
    assert "grace period over" not in log, log


def test_open_streams_from_one_client_are_bounded_and_checks_still_answer(hangar):
    # 8 reflection or health streams per client address (64 server-wide,
    # tests/security.rs); the next is refused at once, a Check is answered
    # regardless, and a slot comes back when a stream ends.
    with channel_to(hangar) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        watches = [stub.Watch(request, timeout=60) for _ in range(8)]
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.Watch(request, timeout=CALL_TIMEOUT))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "from 127.0.0.1" in refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert serving_status(channel, "") == "SERVING"
        watches.pop().cancel()

        def answered():
            try:
                next(stub.Watch(request, timeout=CALL_TIMEOUT))
                return True
            except grpc.RpcError:
                return False

        from support import wait_for

        assert wait_for(answered, timeout=10), "no slot came back after a Watch was cancelled"
        for watch in watches:
            watch.cancel()
