"""Connection lines for TLS clients, seen from pyarrow: a refused client
certificate leaves one line naming why (identical refusals from one peer fold
into a summary), and an accepted one leaves none unless --log-connections asks
for the open and end of every connection.

The certificates come from test_auth's generator: "alice-client" and the
expired "old-bob" are signed by the server's client CA, "mallory" by another.
The plaintext, garbage, silent, over-limit and flood cases are in
tests/connections.rs.
"""

import re

import pyarrow as pa
import pyarrow.flight
import pytest

from test_auth import _make_certificates, _tls_args, options


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return _make_certificates(tmp_path_factory.mktemp("certs"))


def _client(server, certs, cert=None):
    extra = {}
    if cert is not None:
        extra = dict(
            cert_chain=certs[f"{cert}_cert"].read_bytes(),
            private_key=certs[f"{cert}_key"].read_bytes(),
        )
    return pa.flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes(), **extra)


def _refused_once(server, client, end):
    """The call fails, and the log holds exactly one line ending `end` (more
    attempts by the client's reconnects are counted for a summary)."""
    with pytest.raises(pa.flight.FlightUnavailableError):
        list(client.list_flights(options=options()))
    client.close()
    wanted = f' end="{end}"'
    log = server.wait_for_log(lambda t: wanted in t, f"the line ending{wanted}")
    lines = [line for line in log.splitlines() if wanted in line]
    assert len([line for line in lines if " connection peer=" in line]) == 1, log
    assert re.search(
        r" connection peer=127\.0\.0\.1:\d+ ms=[\d.]+ calls=0 bytes_in=0 bytes_out=0 end=",
        lines[0],
    ), lines[0]
    # Nothing got through to the service.
    assert "rpc=ListFlights" not in log
    return log


def test_mtls_client_without_certificate_is_logged(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    _refused_once(server, _client(server, certs), "tls: client sent no certificate")


def test_mtls_certificate_from_another_ca_is_logged_with_its_cn(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    _refused_once(
        server,
        _client(server, certs, "rogue"),
        "tls: certificate not signed by --tls-client-ca (CN=mallory)",
    )


def test_mtls_expired_certificate_is_logged_with_its_cn(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    _refused_once(
        server, _client(server, certs, "expired"), "tls: certificate expired (CN=old-bob)"
    )


def test_repeated_refusals_from_one_peer_fold_into_a_summary(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    for _ in range(5):
        client = _client(server, certs)
        with pytest.raises(pa.flight.FlightUnavailableError):
            list(client.list_flights(options=options()))
        client.close()
    server.stop()  # summaries of open windows are written at shutdown
    log = server.stderr_text()
    refusals = [line for line in log.splitlines() if "client sent no certificate" in line]
    assert len(refusals) == 2, log
    summary = re.search(
        r' connection-summary peer=127\.0\.0\.1 end="tls: client sent no certificate" '
        r"… and (\d+) more from 127\.0\.0\.1 in \d+ s$",
        refusals[1],
    )
    assert summary and int(summary.group(1)) >= 4, log


def test_valid_certificate_leaves_no_connection_line_by_default(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    client = _client(server, certs, "client")
    assert list(client.list_flights(options=options())) == []
    client.close()
    server.stop()
    log = server.stderr_text()
    assert re.search(r"user=alice-client rpc=ListFlights .*status=OK", log), log
    assert not re.search(r"^\S+ connection", log, re.M), log


def test_log_connections_shows_open_and_end_with_the_certificate(hangar_factory, certs):
    server = hangar_factory("--log-connections", *_tls_args(certs, client_ca=True))
    client = _client(server, certs, "client")
    assert list(client.list_flights(options=options())) == []
    assert list(client.list_flights(options=options())) == []
    client.close()
    log = server.wait_for_log(lambda t: " connection peer=" in t, "the connection's end line")
    assert re.search(
        r' connection-open peer=127\.0\.0\.1:\d+ tls=yes cert="alice-client"$', log, re.M
    ), log
    end = re.search(
        r" connection peer=127\.0\.0\.1:\d+ ms=[\d.]+ calls=(\d+) bytes_in=(\d+) "
        r'bytes_out=(\d+) cert="alice-client" end="[^"]+"$',
        log,
        re.M,
    )
    assert end, log
    assert int(end.group(1)) == 2, log
    assert int(end.group(2)) > 0 and int(end.group(3)) > 0, log
