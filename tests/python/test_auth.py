"""Authentication, roles and TLS, seen from pyarrow clients.

The first test is the Arrow cookbook's "Authentication with user/password"
client flow (`authenticate_basic_token`, then the returned header pair on every
call); the rest check each way a login or a call can be refused, token
lifetime, throttling of password guessing, TLS and mutual TLS.

pyarrow (checked with 26.0) maps the status codes hangar sends for these like
this:

    UNAUTHENTICATED     -> pyarrow.flight.FlightUnauthenticatedError
    PERMISSION_DENIED   -> pyarrow.flight.FlightUnauthorizedError
    RESOURCE_EXHAUSTED  -> pa.ArrowInvalid  ("gRPC returned resource exhausted error")
    TLS handshake refused (mTLS without a client certificate)
                        -> pyarrow.flight.FlightUnavailableError

Servers come from conftest's `hangar_factory` (extra flags: --users,
--token-ttl, --tls-*). Users are created with `hangar user add`, the password
on stdin, once per module.
"""

import datetime
import ipaddress
import re
import subprocess
import time

import pyarrow as pa
import pyarrow.flight
import pytest

from conftest import STARTUP_TIMEOUT, hangar_binary
from support import raises_exactly

#: Bound on every Flight call in this module.
CALL_TIMEOUT = 15.0

#: name -> (password, role) of the users every authenticated server knows.
USERS = {
    "test": ("password", "write"),  # the cookbook's user
    "reader": ("reader-pw-3f9a", "read"),
    "writer": ("writer-pw-81c2", "write"),
    "admin": ("admin-pw-77d0", "admin"),
}

SMALL = pa.table({"a": pa.array([1, 2, 3], pa.int64())})


def hangar_cli(*args, stdin=b""):
    """Runs `hangar ARGS` to completion (bounded)."""
    return subprocess.run(
        [str(hangar_binary()), *[str(a) for a in args]],
        input=stdin,
        capture_output=True,
        timeout=STARTUP_TIMEOUT,
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """A users file holding USERS, made with `hangar user add`."""
    path = tmp_path_factory.mktemp("users") / "users"
    for name, (password, role) in USERS.items():
        done = hangar_cli(
            "user", "add", "--users", path, name, "--role", role,
            stdin=password.encode() + b"\n",
        )
        assert done.returncode == 0, done.stderr.decode()
    return path


@pytest.fixture
def auth_server(hangar_factory, users_file):
    return hangar_factory("--users", users_file)


def options(token_pair=None, **extra):
    headers = [token_pair] if token_pair else []
    return pa.flight.FlightCallOptions(headers=headers, timeout=CALL_TIMEOUT, **extra)


def login(client, user):
    return client.authenticate_basic_token(user.encode(), USERS[user][0].encode())


def put_table(client, name, table, call_options):
    writer, _ = client.do_put(
        pa.flight.FlightDescriptor.for_path(name), table.schema, options=call_options
    )
    writer.write_table(table)
    writer.close()


# --- the cookbook flow ---------------------------------------------------------------


def test_cookbook_basic_token_flow_authorizes_every_rpc(auth_server):
    client = pa.flight.FlightClient(auth_server.uri)

    # --- verbatim cookbook client flow ---
    token_pair = client.authenticate_basic_token(b'test', b'password')
    options = pa.flight.FlightCallOptions(headers=[token_pair])
    # ---

    assert token_pair[0] == b"authorization"
    assert token_pair[1].startswith(b"Bearer ")
    token = token_pair[1][len(b"Bearer "):]
    assert len(token) >= 43  # 256 random bits, base64

    descriptor = pa.flight.FlightDescriptor.for_path("uploaded.parquet")
    writer, _ = client.do_put(descriptor, SMALL.schema, options=options)
    writer.write_table(SMALL)
    writer.close()

    flights = list(client.list_flights(options=options))
    assert [f.descriptor.path[0] for f in flights] == [b"uploaded.parquet"]
    info = client.get_flight_info(descriptor, options=options)
    assert info.total_records == 3
    table = client.do_get(info.endpoints[0].ticket, options=options).read_all()
    assert table.equals(SMALL)

    # 'test' has role write: it may upload but not drop.
    with raises_exactly(pa.flight.FlightUnauthorizedError, "drop_dataset"):
        list(client.do_action(pa.flight.Action("drop_dataset", b"uploaded.parquet"),
                              options=options))

    log = auth_server.wait_for_log(lambda t: "rpc=DoGet" in t, "the DoGet line")
    for rpc in ["Handshake", "DoPut", "ListFlights", "GetFlightInfo", "DoGet", "DoAction"]:
        assert re.search(rf"user=test rpc={rpc}\b", log), f"no {rpc} line by user=test:\n{log}"
    # Neither the password nor the token is ever logged.
    assert "password" not in log.replace("invalid password", "")
    assert token.decode() not in log


def test_admin_can_drop_dataset(auth_server):
    client = pa.flight.connect(auth_server.uri)
    writer_options = options(login(client, "writer"))
    put_table(client, "doomed.parquet", SMALL, writer_options)

    admin_options = options(login(client, "admin"))
    results = list(client.do_action(pa.flight.Action("drop_dataset", b"doomed.parquet"),
                                    options=admin_options))
    # Like the cookbook's server: success is the call's OK status, no Result.
    assert [r.body.to_pybytes() for r in results] == []
    assert list(client.list_flights(options=writer_options)) == []
    assert not (auth_server.repo / "doomed.parquet").exists()


# --- refusals: UNAUTHENTICATED ----------------------------------------------------------


def test_call_without_credentials_is_unauthenticated(auth_server):
    client = pa.flight.connect(auth_server.uri)
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "No credentials supplied"):
        list(client.list_flights(options=options()))
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "No credentials supplied"):
        client.do_get(pa.flight.Ticket(b"x.parquet"), options=options()).read_all()
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "No credentials supplied"):
        put_table(client, "x.parquet", SMALL, options())
    assert not (auth_server.repo / "x.parquet").exists()


def test_wrong_password_is_unauthenticated(auth_server):
    client = pa.flight.connect(auth_server.uri)
    with raises_exactly(pa.flight.FlightUnauthenticatedError,
                        "Unknown user or invalid password"):
        client.authenticate_basic_token(b"test", b"not-the-password", options=options())
    # An unknown user gets the very same answer.
    with raises_exactly(pa.flight.FlightUnauthenticatedError,
                        "Unknown user or invalid password"):
        client.authenticate_basic_token(b"nobody", b"password", options=options())


def test_garbage_token_is_invalid(auth_server):
    client = pa.flight.connect(auth_server.uri)
    garbage = (b"authorization", b"Bearer this-is-not-a-token")
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "Invalid token"):
        list(client.list_flights(options=options(garbage)))
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "Invalid token"):
        client.get_flight_info(pa.flight.FlightDescriptor.for_path("x.parquet"),
                               options=options(garbage))


def test_token_expires_after_its_ttl(hangar_factory, users_file):
    server = hangar_factory("--users", users_file, "--token-ttl", "1s")
    client = pa.flight.connect(server.uri)
    token_pair = login(client, "reader")
    assert list(client.list_flights(options=options(token_pair))) == []
    time.sleep(2.0)  # past the 1 s lifetime; no timing is asserted
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "Token expired"):
        list(client.list_flights(options=options(token_pair)))
    # Logging in again gives a fresh, working token.
    assert list(client.list_flights(options=options(login(client, "reader")))) == []


# --- refusals: PERMISSION_DENIED ---------------------------------------------------------


def test_read_user_cannot_do_put(auth_server):
    client = pa.flight.connect(auth_server.uri)
    reader = options(login(client, "reader"))
    with raises_exactly(pa.flight.FlightUnauthorizedError, "user 'reader'") as info:
        put_table(client, "nope.parquet", SMALL, reader)
    message = str(info.value)
    assert "role 'read'" in message and "DoPut" in message, message
    assert not (auth_server.repo / "nope.parquet").exists()
    # Reading is what the role is for.
    assert list(client.list_flights(options=reader)) == []


def test_write_user_cannot_drop_dataset(auth_server):
    client = pa.flight.connect(auth_server.uri)
    writer = options(login(client, "writer"))
    put_table(client, "kept.parquet", SMALL, writer)
    with raises_exactly(pa.flight.FlightUnauthorizedError, "user 'writer'") as info:
        list(client.do_action(pa.flight.Action("drop_dataset", b"kept.parquet"),
                              options=writer))
    message = str(info.value)
    assert "role 'write'" in message and "drop_dataset" in message, message
    assert (auth_server.repo / "kept.parquet").is_file()
    log = auth_server.wait_for_log(
        lambda t: re.search(r"user=writer rpc=DoAction .*PERMISSION_DENIED", t),
        "the denied DoAction",
    )
    assert "writer-pw" not in log


# --- throttling: RESOURCE_EXHAUSTED --------------------------------------------------------


def test_five_wrong_passwords_lock_the_user_out_even_with_the_right_one(
    hangar_factory, users_file
):
    server = hangar_factory("--users", users_file)
    client = pa.flight.connect(server.uri)
    for _ in range(5):
        with raises_exactly(pa.flight.FlightUnauthenticatedError,
                            "Unknown user or invalid password"):
            client.authenticate_basic_token(b"test", b"guess", options=options())
    with raises_exactly(pa.ArrowInvalid,
                        r"too many failed attempts, retry in \d+ s") as info:
        client.authenticate_basic_token(b"test", b"password", options=options())
    assert "resource exhausted" in str(info.value)
    server.wait_for_log(lambda t: "RESOURCE_EXHAUSTED" in t, "the throttled Handshake")


# --- TLS --------------------------------------------------------------------------------------


def _write_pem(path, data):
    path.write_bytes(data)
    return path


def _make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate
    with CN "alice-client" and an expired one with CN "old-bob", all signed by
    the CA, and a client certificate "mallory" from another CA; PEM files in
    `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def build(subject, key, issuer, issuer_key, ca, extensions=(), expired=False):
        not_after = now + datetime.timedelta(days=-1 if expired else 2)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def new_key():
        return ec.generate_private_key(ec.SECP256R1())

    ca_key = new_key()
    ca = build("hangar test CA", ca_key, "hangar test CA", ca_key, ca=True, extensions=[
        x509.KeyUsage(digital_signature=True, content_commitment=False,
                      key_encipherment=False, data_encipherment=False,
                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                      encipher_only=False, decipher_only=False),
    ])
    server_key = new_key()
    server = build("localhost", server_key, "hangar test CA", ca_key, ca=False, extensions=[
        x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    ])
    client_key = new_key()
    client = build("alice-client", client_key, "hangar test CA", ca_key, ca=False,
                   extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    # A client certificate the CA signed, but no longer valid.
    expired_key = new_key()
    expired = build("old-bob", expired_key, "hangar test CA", ca_key, ca=False, expired=True,
                    extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    # A client certificate from a CA the server does not trust.
    rogue_key = new_key()
    rogue = build("mallory", rogue_key, "mallory", rogue_key, ca=False,
                  extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])

    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return {
        "ca": _write_pem(directory / "ca.pem", pem(ca)),
        "server_cert": _write_pem(directory / "server.pem", pem(server)),
        "server_key": _write_pem(directory / "server.key", key_pem(server_key)),
        "client_cert": _write_pem(directory / "client.pem", pem(client)),
        "client_key": _write_pem(directory / "client.key", key_pem(client_key)),
        "rogue_cert": _write_pem(directory / "rogue.pem", pem(rogue)),
        "rogue_key": _write_pem(directory / "rogue.key", key_pem(rogue_key)),
        "expired_cert": _write_pem(directory / "expired.pem", pem(expired)),
        "expired_key": _write_pem(directory / "expired.key", key_pem(expired_key)),
    }


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return _make_certificates(tmp_path_factory.mktemp("certs"))


def _tls_args(certs, client_ca=False):
    args = ["--tls-cert", certs["server_cert"], "--tls-key", certs["server_key"]]
    if client_ca:
        args += ["--tls-client-ca", certs["ca"]]
    return args


def test_tls_server_with_users_serves_the_cookbook_flow(hangar_factory, users_file, certs):
    server = hangar_factory("--users", users_file, *_tls_args(certs))
    assert server.uri == f"grpc+tls://127.0.0.1:{server.port}"
    client = pa.flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes())
    token_pair = client.authenticate_basic_token(b"test", b"password")
    call_options = options(token_pair)
    put_table(client, "secure.parquet", SMALL, call_options)
    table = client.do_get(pa.flight.Ticket(b"secure.parquet"), options=call_options).read_all()
    assert table.equals(SMALL)


def test_tls_client_that_does_not_trust_the_ca_cannot_connect(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs))
    # Trusting only an unrelated certificate: the server's chain does not verify.
    client = pa.flight.connect(server.uri, tls_root_certs=certs["rogue_cert"].read_bytes())
    with pytest.raises(pa.flight.FlightUnavailableError):
        list(client.list_flights(options=options()))


def test_mtls_client_certificate_names_the_user_in_the_log(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    client = pa.flight.connect(
        server.uri,
        tls_root_certs=certs["ca"].read_bytes(),
        cert_chain=certs["client_cert"].read_bytes(),
        private_key=certs["client_key"].read_bytes(),
    )
    put_table(client, "mine.parquet", SMALL, options())
    assert [f.descriptor.path[0] for f in client.list_flights(options=options())] == [
        b"mine.parquet"
    ]
    log = server.wait_for_log(lambda t: "rpc=ListFlights" in t, "the ListFlights line")
    assert re.search(r"user=alice-client rpc=ListFlights .*status=OK", log), log
    assert re.search(r"user=alice-client rpc=DoPut .*status=OK", log), log


def test_mtls_client_without_certificate_is_refused(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    client = pa.flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes())
    with pytest.raises(pa.flight.FlightUnavailableError):
        list(client.list_flights(options=options()))
    # Nothing got through to the service.
    assert "rpc=ListFlights" not in server.stderr_text()


def test_mtls_client_certificate_from_another_ca_is_refused(hangar_factory, certs):
    server = hangar_factory(*_tls_args(certs, client_ca=True))
    client = pa.flight.connect(
        server.uri,
        tls_root_certs=certs["ca"].read_bytes(),
        cert_chain=certs["rogue_cert"].read_bytes(),
        private_key=certs["rogue_key"].read_bytes(),
    )
    with pytest.raises(pa.flight.FlightUnavailableError):
        list(client.list_flights(options=options()))
    assert "rpc=ListFlights" not in server.stderr_text()


def test_mtls_and_users_together_log_the_token_user(hangar_factory, users_file, certs):
    server = hangar_factory("--users", users_file, *_tls_args(certs, client_ca=True))
    client = pa.flight.connect(
        server.uri,
        tls_root_certs=certs["ca"].read_bytes(),
        cert_chain=certs["client_cert"].read_bytes(),
        private_key=certs["client_key"].read_bytes(),
    )
    # The certificate alone is not a login when --users is set.
    with raises_exactly(pa.flight.FlightUnauthenticatedError, "No credentials supplied"):
        list(client.list_flights(options=options()))
    reader = options(login(client, "reader"))
    assert list(client.list_flights(options=reader)) == []
    log = server.wait_for_log(lambda t: "user=reader rpc=ListFlights" in t, "the reader's call")
    # The certificate's CN is not a login: the refused call names no user.
    assert re.search(r'user=- rpc=ListFlights .*UNAUTHENTICATED cert="alice-client"', log), log
