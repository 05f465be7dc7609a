//! Authentication against a real `hangar serve --users FILE` process: the
//! arrow-flight `FlightClient` flows (Basic header or `BasicAuth` payload traded
//! for a token, then `authorization: Bearer`), the legacy raw-gRPC flow
//! (`BasicAuth` payload, token in the binary `auth-token-bin` header), roles,
//! the `hangar user` CLI, SIGHUP reload revoking tokens, the refusal to serve
//! passwords in clear text on a non-loopback address, and secrets never
//! reaching the log. TLS and mTLS are covered by tests/python/test_auth.py.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_flight::{Action, FlightClient};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use hangar::auth::{base64_encode, Role, Users};
use hangar::proto::{BasicAuth, Criteria, Empty, FlightServiceClient, HandshakeRequest};
use prost::bytes::Bytes;
use prost::Message as _;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use common::{
    bounded, get, handshake_payload, list_with_header, path, put, run_hangar, status_of,
    wait_until, TestServer, EXIT_TIMEOUT,
};

// ---------------------------------------------------------------- fixtures

const READER: (&str, &str) = ("rita", "rita-secret-5d1e");
const WRITER: (&str, &str) = ("walt", "walt-secret-9b07");
const ADMIN: (&str, &str) = ("ada", "ada-secret-c4f2");

/// The users every authenticated test server knows.
const USERS: &[(&str, &str, Role)] = &[
    (READER.0, READER.1, Role::Read),
    (WRITER.0, WRITER.1, Role::Write),
    (ADMIN.0, ADMIN.1, Role::Admin),
];

const WRITER_USER: (&str, &str, Role) = (WRITER.0, WRITER.1, Role::Write);

/// Writes a users file with `users` (name, password, role) at `path`.
fn write_users(path: &Path, users: &[(&str, &str, Role)]) {
    let mut file = Users::default();
    for (name, password, role) in users {
        file.add(name, *role, password).unwrap();
    }
    file.save(path).unwrap();
}

/// A server started with `--users <dir>/users` holding `users`, plus `extra`
/// arguments. Returns the server and the users file path.
fn auth_server_with(users: &[(&str, &str, Role)], extra: &[&str]) -> (TestServer, PathBuf) {
    let builder = TestServer::builder();
    let file = builder.dir_path().join("users");
    write_users(&file, users);
    let server = builder.arg("--users").arg(&file).args(extra).start();
    (server, file)
}

fn auth_server() -> (TestServer, PathBuf) {
    auth_server_with(USERS, &[])
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// Logs in the cookbook's way with `FlightClient`: a Basic header on
/// Handshake, the token from the reply payload, then `authorization: Bearer`
/// on every later call. Returns the client (now carrying the token) and the
/// token.
async fn login(server: &TestServer, (user, password): (&str, &str)) -> (FlightClient, String) {
    let mut client = server.client().await;
    client
        .add_header("authorization", &basic(user, password))
        .unwrap();
    let payload = client.handshake(Bytes::new()).await.expect("handshake");
    let token = String::from_utf8(payload.to_vec()).expect("the token is text");
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    (client, token)
}

/// A client whose every call carries `authorization: <value>`.
async fn client_with_header(server: &TestServer, value: &str) -> FlightClient {
    let mut client = server.client().await;
    client.add_header("authorization", value).unwrap();
    client
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn batch() -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef],
    )
    .unwrap()
}

async fn list_names(client: &mut FlightClient) -> Result<Vec<String>, Status> {
    let infos: Vec<_> = client
        .list_flights(Bytes::new())
        .await
        .map_err(status_of)?
        .try_collect()
        .await
        .map_err(status_of)?;
    Ok(infos
        .into_iter()
        .map(|i| i.flight_descriptor.unwrap().path[0].clone())
        .collect())
}

/// The drop_dataset action, its result stream read to the end.
async fn drop_dataset(client: &mut FlightClient, name: &str) -> Result<Vec<Bytes>, Status> {
    let results = client
        .do_action(Action::new("drop_dataset", name.to_string()))
        .await
        .map_err(status_of)?;
    results.try_collect().await.map_err(status_of)
}

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, phrase: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} ({phrase}), got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(phrase),
                "expected {phrase:?} in {:?}",
                status.message()
            );
        }
    }
}

/// A raw tonic client of our generated Flight service.
async fn raw_client(server: &TestServer) -> FlightServiceClient<tonic::transport::Channel> {
    FlightServiceClient::new(server.channel().await)
}

fn basic_auth_payload(user: &str, password: &str) -> Vec<u8> {
    BasicAuth {
        username: user.into(),
        password: password.into(),
    }
    .encode_to_vec()
}

fn handshake_request(
    payload: Vec<u8>,
) -> Request<futures::stream::Iter<std::vec::IntoIter<HandshakeRequest>>> {
    Request::new(futures::stream::iter(vec![HandshakeRequest {
        protocol_version: 0,
        payload: Bytes::from(payload),
    }]))
}

/// A PATH descriptor of our generated types (the raw client's).
fn proto_path(name: &str) -> hangar::proto::FlightDescriptor {
    hangar::proto::FlightDescriptor {
        r#type: hangar::proto::flight_descriptor::DescriptorType::Path as i32,
        cmd: Bytes::new(),
        path: vec![name.to_string()],
    }
}

fn with_token_bin<T>(message: T, token: &[u8]) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert_bin("auth-token-bin", MetadataValue::from_bytes(token));
    request
}

/// Runs `hangar ARGS` with `stdin` as its standard input, bounded.
fn hangar_with_stdin(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Output {
    let mut command = Command::new(common::hangar_bin());
    command.args(args);
    common::run_to_end(command, Some(stdin), EXIT_TIMEOUT)
}

/// `hangar user ACTION --users FILE [ARGS...]`, password lines on stdin.
fn user_cmd(action: &str, file: &Path, args: &[&str], stdin: &str) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = vec!["user".as_ref(), action.as_ref()];
    all.push("--users".as_ref());
    all.push(file.as_os_str());
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    hangar_with_stdin(&all, stdin.as_bytes())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- FlightClient flows

#[tokio::test]
async fn flight_client_trades_basic_header_for_a_token_that_authorizes_calls() {
    let (server, _users) = auth_server();
    bounded(async {
        let (mut client, token) = login(&server, WRITER).await;
        assert!(token.len() >= 43, "a 256-bit token, got {token:?}");

        let summary = put(&mut client, "d", schema(), &[batch()]).await.unwrap();
        assert_eq!(summary.rows, 3);
        assert_eq!(list_names(&mut client).await.unwrap(), ["d"]);
        let info = client.get_flight_info(path("d")).await.unwrap();
        assert_eq!(info.total_records, 3);
        let (_, batches) = get(&mut client, "d").await.unwrap();
        common::assert_same_rows(&[batch()], &batches);

        // Every login gets its own token, and both work.
        let (mut second, other) = login(&server, WRITER).await;
        assert_ne!(token, other);
        assert_eq!(list_names(&mut second).await.unwrap(), ["d"]);

        let log = server.wait_for_stderr("the DoGet line", |l| l.contains("rpc=DoGet"));
        for rpc in [
            "Handshake",
            "DoPut",
            "ListFlights",
            "GetFlightInfo",
            "DoGet",
        ] {
            assert!(
                log.contains(&format!("user={} rpc={rpc} ", WRITER.0)),
                "no {rpc} line naming the user:\n{log}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn flight_client_handshake_with_basic_auth_payload_returns_the_token() {
    let (server, _users) = auth_server();
    bounded(async {
        let mut client = server.client().await;
        let payload = client
            .handshake(basic_auth_payload(READER.0, READER.1))
            .await
            .expect("handshake with a BasicAuth payload");
        let token = String::from_utf8(payload.to_vec()).unwrap();
        client
            .add_header("authorization", &format!("Bearer {token}"))
            .unwrap();
        assert_eq!(list_names(&mut client).await.unwrap(), Vec::<String>::new());

        let mut fresh = server.client().await;
        let wrong = fresh
            .handshake(basic_auth_payload(READER.0, "nope"))
            .await
            .map_err(status_of);
        assert_status(wrong, Code::Unauthenticated, hangar::auth::BAD_PASSWORD);
        // A payload that is not a BasicAuth message.
        let garbage = fresh
            .handshake(Bytes::from_static(b"\x0a\xff"))
            .await
            .map_err(status_of);
        assert_status(garbage, Code::Unauthenticated, "not a BasicAuth message");
        // No header and an empty payload: nothing to check.
        let empty = fresh.handshake(Bytes::new()).await.map_err(status_of);
        assert_status(empty, Code::Unauthenticated, hangar::auth::NO_CREDENTIALS);
    })
    .await;
}

#[tokio::test]
async fn handshake_returns_the_token_in_the_authorization_header_and_the_payload() {
    let (server, _users) = auth_server();
    bounded(async {
        let mut raw = raw_client(&server).await;
        let mut request = handshake_request(Vec::new());
        request
            .metadata_mut()
            .insert("authorization", basic(READER.0, READER.1).parse().unwrap());
        let response = raw.handshake(request).await.expect("handshake");
        let header = response
            .metadata()
            .get("authorization")
            .expect("an authorization response header")
            .to_str()
            .unwrap()
            .to_string();
        let mut stream = response.into_inner();
        let reply = stream.message().await.unwrap().expect("one reply");
        assert!(stream.message().await.unwrap().is_none(), "only one reply");
        let token = String::from_utf8(reply.payload.to_vec()).unwrap();
        assert_eq!(header, format!("Bearer {token}"));
    })
    .await;
}

#[tokio::test]
async fn legacy_basic_auth_payload_and_auth_token_bin_header_authorize_calls() {
    let (server, _users) = auth_server();
    bounded(async {
        let mut raw = raw_client(&server).await;
        // No authorization header: the credentials are the payload.
        let response = raw
            .handshake(handshake_request(basic_auth_payload(WRITER.0, WRITER.1)))
            .await
            .expect("legacy handshake");
        let token = response
            .into_inner()
            .message()
            .await
            .unwrap()
            .expect("one reply")
            .payload;
        assert!(!token.is_empty());

        let listed = raw
            .list_flights(with_token_bin(Criteria::default(), &token))
            .await
            .expect("ListFlights with auth-token-bin");
        let flights: Vec<_> = listed.into_inner().try_collect().await.unwrap();
        assert!(flights.is_empty());
        let actions = raw
            .list_actions(with_token_bin(Empty {}, &token))
            .await
            .expect("ListActions with auth-token-bin");
        let actions: Vec<_> = actions.into_inner().try_collect().await.unwrap();
        assert_eq!(actions[0].r#type, "drop_dataset");
        // Authenticated, so the missing dataset is the error, not the caller.
        let missing = raw
            .get_flight_info(with_token_bin(proto_path("missing"), &token))
            .await;
        assert_status(missing, Code::NotFound, "missing");

        let garbage = raw
            .list_flights(with_token_bin(Criteria::default(), b"not-a-token"))
            .await;
        assert_status(garbage, Code::Unauthenticated, hangar::auth::INVALID_TOKEN);
        let none = raw.list_flights(Request::new(Criteria::default())).await;
        assert_status(none, Code::Unauthenticated, hangar::auth::NO_CREDENTIALS);

        let log = server.wait_for_stderr("the GetFlightInfo line", |l| {
            l.contains("rpc=GetFlightInfo")
        });
        assert!(
            log.contains(&format!("user={} rpc=ListActions ", WRITER.0)),
            "{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn missing_wrong_or_garbage_credentials_are_unauthenticated() {
    let (server, _users) = auth_server();
    bounded(async {
        let mut anonymous = server.client().await;
        assert_status(
            list_names(&mut anonymous).await,
            Code::Unauthenticated,
            hangar::auth::NO_CREDENTIALS,
        );
        assert_status(
            put(&mut anonymous, "d", schema(), &[batch()]).await,
            Code::Unauthenticated,
            hangar::auth::NO_CREDENTIALS,
        );
        let mut garbage = client_with_header(&server, "Bearer garbage").await;
        assert_status(
            list_names(&mut garbage).await,
            Code::Unauthenticated,
            hangar::auth::INVALID_TOKEN,
        );
        let mut wrong = client_with_header(&server, &basic(READER.0, "wrong")).await;
        assert_status(
            wrong.handshake(Bytes::new()).await.map_err(status_of),
            Code::Unauthenticated,
            hangar::auth::BAD_PASSWORD,
        );
        let mut unknown = client_with_header(&server, &basic("nobody", READER.1)).await;
        assert_status(
            unknown.handshake(Bytes::new()).await.map_err(status_of),
            Code::Unauthenticated,
            hangar::auth::BAD_PASSWORD,
        );
        let mut digest = client_with_header(&server, "Digest abc").await;
        assert_status(
            list_names(&mut digest).await,
            Code::Unauthenticated,
            "unsupported scheme",
        );
        assert!(server.repo_entries().is_empty());
    })
    .await;
}

#[tokio::test]
async fn roles_limit_uploads_to_write_and_drops_to_admin() {
    let (server, _users) = auth_server();
    bounded(async {
        let (mut reader, _) = login(&server, READER).await;
        let (mut writer, _) = login(&server, WRITER).await;
        let (mut admin, _) = login(&server, ADMIN).await;

        let denied = put(&mut reader, "d", schema(), &[batch()])
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        for phrase in ["user 'rita'", "role 'read'", "DoPut", "needs role 'write'"] {
            assert!(denied.message().contains(phrase), "{phrase}: {denied:?}");
        }
        assert!(server.repo_entries().is_empty());

        put(&mut writer, "d", schema(), &[batch()]).await.unwrap();
        assert_eq!(list_names(&mut reader).await.unwrap(), ["d"]);
        get(&mut reader, "d").await.unwrap();

        for (client, who) in [
            (&mut reader, "'rita' has role 'read'"),
            (&mut writer, "'walt' has role 'write'"),
        ] {
            let denied = drop_dataset(client, "d").await;
            assert_status(denied, Code::PermissionDenied, who);
        }
        let denied = drop_dataset(&mut writer, "d").await.unwrap_err();
        assert!(denied.message().contains("drop_dataset"), "{denied:?}");
        assert_eq!(server.repo_entries(), ["d"]);

        // As the cookbook's: no result messages.
        let dropped = drop_dataset(&mut admin, "d").await.unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert!(server.repo_entries().is_empty());
    })
    .await;
}

// ---------------------------------------------------------------- users CLI

#[test]
fn user_cli_adds_lists_and_removes_users_in_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");

    let added = user_cmd("add", &file, &["alice", "--role", "read"], "alice-pw-1\n");
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stderr).contains("added user 'alice' with role 'read'"),
        "{}",
        text(&added.stderr)
    );
    // The default role is write.
    let added = user_cmd("add", &file, &["bob"], "bob-pw-2\n");
    assert!(added.status.success(), "{}", text(&added.stderr));

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the users file must be private");
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(!content.contains("alice-pw-1") && !content.contains("bob-pw-2"));
    assert!(content.contains("$argon2id$"), "{content}");

    let listed = user_cmd("list", &file, &[], "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(text(&listed.stdout), "alice\tread\nbob\twrite\n");

    let removed = user_cmd("rm", &file, &["alice"], "");
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(
        text(&removed.stderr).contains("removed user 'alice'"),
        "{}",
        text(&removed.stderr)
    );
    let listed = user_cmd("list", &file, &[], "");
    assert_eq!(text(&listed.stdout), "bob\twrite\n");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "still private after a rewrite");
    // No temporary files left next to it.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
}

#[test]
fn user_cli_refuses_a_duplicate_user_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let first = user_cmd("add", &file, &["alice"], "pw-one\n");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before = std::fs::read(&file).unwrap();

    let again = user_cmd("add", &file, &["alice", "--role", "admin"], "pw-two\n");
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("user 'alice' already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before, "file unchanged");
}

#[test]
fn user_cli_rm_and_list_fail_with_exit_1_when_the_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-such-users");
    for (action, args) in [("rm", &["alice"][..]), ("list", &[][..])] {
        let out = user_cmd(action, &file, args, "");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{action}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("does not exist"),
            "{action}: {}",
            text(&out.stderr)
        );
        assert!(!file.exists(), "{action} must not create the file");
    }
    // Removing a user that is not there fails too.
    let made = user_cmd("add", &file, &["alice"], "pw\n");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let out = user_cmd("rm", &file, &["zed"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("user 'zed' does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn user_cli_add_without_a_password_on_stdin_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let out = user_cmd("add", &file, &["alice"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no password on stdin"),
        "{}",
        text(&out.stderr)
    );
    assert!(!file.exists());
}

/// A users file whose third line has an unknown role.
fn malformed_users_file(dir: &Path) -> PathBuf {
    let file = dir.join("users");
    write_users(&file, &[WRITER_USER]);
    let mut content = std::fs::read_to_string(&file).unwrap();
    content.push_str("# a comment\nbob:superuser:$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$abc\n");
    std::fs::write(&file, content).unwrap();
    file
}

#[test]
fn serve_refuses_a_malformed_users_file_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = malformed_users_file(dir.path());
    let repo = dir.path().join("repo");
    let out = run_hangar([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--users".as_ref(),
        file.as_os_str(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "served with a malformed users file");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("superuser"), "{stderr}");
}

#[test]
fn serve_with_a_malformed_users_file_never_announces_listening() {
    let dir = tempfile::tempdir().unwrap();
    let file = malformed_users_file(dir.path());
    let repo = dir.path().join("repo");
    let out = run_hangar([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--users".as_ref(),
        file.as_os_str(),
    ]);
    assert!(!out.status.success());
    // Scripts wait for this line to know the server accepts connections; a
    // server that is about to exit must not print it.
    assert_eq!(
        text(&out.stdout),
        "",
        "printed the listening line although it never served"
    );
}

// ---------------------------------------------------------------- SIGHUP reload

#[tokio::test]
async fn sighup_reload_revokes_tokens_of_removed_users() {
    let (server, file) = auth_server();
    bounded(async {
        let (mut reader, _) = login(&server, READER).await;
        let (mut writer, _) = login(&server, WRITER).await;
        assert!(list_names(&mut reader).await.is_ok());

        let removed = user_cmd("rm", &file, &[READER.0], "");
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        let added = user_cmd("add", &file, &["newcomer", "--role", "read"], "new-pw-0\n");
        assert!(added.status.success(), "{}", text(&added.stderr));
        server.signal("HUP");

        let refused = wait_until(Duration::from_secs(10), async || {
            match list_names(&mut reader).await {
                Ok(_) => false,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                    assert_eq!(status.message(), hangar::auth::INVALID_TOKEN);
                    true
                }
            }
        })
        .await;
        assert!(refused, "the removed user's token was never refused");
        // Other users' tokens live on, and the new user can log in.
        assert!(list_names(&mut writer).await.is_ok());
        let (mut newcomer, _) = login(&server, ("newcomer", "new-pw-0")).await;
        assert!(list_names(&mut newcomer).await.is_ok());
        // The removed user cannot log in again either.
        let mut again = client_with_header(&server, &basic(READER.0, READER.1)).await;
        assert_status(
            again.handshake(Bytes::new()).await.map_err(status_of),
            Code::Unauthenticated,
            hangar::auth::BAD_PASSWORD,
        );
        let log = server.wait_for_stderr("the reload event", |l| {
            l.contains("SIGHUP: reloaded users file (3 users)")
        });
        assert!(!log.contains("new-pw-0"));
    })
    .await;
}

#[tokio::test]
async fn sighup_with_a_broken_users_file_keeps_the_previous_users() {
    let (server, file) = auth_server();
    bounded(async {
        let (mut reader, _) = login(&server, READER).await;
        std::fs::write(&file, "this line is not a user\n").unwrap();
        server.signal("HUP");
        let log = server.wait_for_stderr("the failed reload", |l| {
            l.contains("users file not reloaded, keeping the previous users")
        });
        assert!(log.contains("line 1"), "{log}");
        assert!(list_names(&mut reader).await.is_ok());
        let (mut writer, _) = login(&server, WRITER).await;
        assert!(list_names(&mut writer).await.is_ok());
    })
    .await;
}

// ---------------------------------------------------------------- clear text

#[test]
fn users_on_a_non_loopback_address_without_tls_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    write_users(&file, &[WRITER_USER]);
    let repo = dir.path().join("repo");
    let out = run_hangar([
        "serve".as_ref(),
        "--listen".as_ref(),
        "0.0.0.0:0".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--users".as_ref(),
        file.as_os_str(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without TLS"), "{stderr}");
    assert!(stderr.contains("clear text"), "{stderr}");
    assert!(stderr.contains("--insecure-auth"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn insecure_auth_allows_users_on_a_non_loopback_address() {
    let builder = TestServer::builder();
    let file = builder.dir_path().join("users");
    write_users(&file, &[WRITER_USER]);
    let repo = builder.repo_path().to_path_buf();
    let mut server = builder
        .without_default_args()
        .arg("serve")
        .arg("--listen")
        .arg("0.0.0.0:0")
        .arg("--repo")
        .arg(&repo)
        .arg("--users")
        .arg(&file)
        .arg("--insecure-auth")
        .start();
    assert!(server.uri.starts_with("grpc://0.0.0.0:"), "{}", server.uri);
    server.wait_for_stderr("the startup line", |l| l.contains("users from"));
    assert!(server.terminate().success());
}

#[tokio::test]
async fn passwords_and_tokens_never_appear_in_the_server_log() {
    let (mut server, _users) = auth_server();
    let mut secrets = Vec::new();
    bounded(async {
        // A full session: login, upload, read, a denied drop.
        let (mut writer, token) = login(&server, WRITER).await;
        put(&mut writer, "d", schema(), &[batch()]).await.unwrap();
        get(&mut writer, "d").await.unwrap();
        drop_dataset(&mut writer, "d").await.unwrap_err();
        secrets.push(token);
        // A legacy login, whose token then travels in auth-token-bin.
        let mut raw = raw_client(&server).await;
        let legacy = raw
            .handshake(handshake_request(basic_auth_payload(ADMIN.0, ADMIN.1)))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap()
            .payload;
        raw.list_flights(with_token_bin(Criteria::default(), &legacy))
            .await
            .unwrap();
        secrets.push(String::from_utf8(legacy.to_vec()).unwrap());
        // Basic credentials straight on a call, without a handshake.
        let mut direct = client_with_header(&server, &basic(READER.0, READER.1)).await;
        list_names(&mut direct).await.unwrap();
        // Failures: a wrong password, a garbage token.
        let mut wrong = client_with_header(&server, &basic(READER.0, "wrong-guess-42")).await;
        wrong.handshake(Bytes::new()).await.unwrap_err();
        let mut garbage = client_with_header(&server, "Bearer garbage-token-77").await;
        list_names(&mut garbage).await.unwrap_err();
        server.wait_for_stderr("the failed ListFlights", |l| {
            l.contains("rpc=ListFlights") && l.contains("Invalid token")
        });
    })
    .await;
    assert!(server.terminate().success());
    let log = server.stderr();
    assert!(log.contains("rpc=DoPut"), "the session was logged:\n{log}");
    secrets.extend(
        [
            READER.1,
            WRITER.1,
            ADMIN.1,
            "wrong-guess-42",
            "garbage-token-77",
        ]
        .map(String::from),
    );
    for (user, password) in [READER, WRITER, ADMIN] {
        // The Basic header value as sent.
        secrets.push(base64_encode(format!("{user}:{password}").as_bytes()));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn serve_without_users_says_there_is_no_authentication() {
    let server = TestServer::start();
    let log = server.wait_for_stderr("the startup line", |l| l.contains("serving repository"));
    assert!(log.contains("no authentication"), "{log}");
    bounded(async {
        // Handshake is a no-op, and calls need no credentials.
        let mut client = server.client().await;
        assert_eq!(client.handshake(Bytes::new()).await.unwrap(), Bytes::new());
        put(&mut client, "d", schema(), &[batch()]).await.unwrap();
        assert_eq!(list_names(&mut client).await.unwrap(), ["d"]);
    })
    .await;
}

// ------------------------------------------------------------ signed tokens

#[test]
fn signed_tokens_work_on_every_node_with_the_same_users_file_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    write_users(&users, USERS);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-node-secret\n").unwrap();
    let other_secret = dir.path().join("other-secret");
    std::fs::write(
        &other_secret,
        "fedcba9876543210fedcba9876543210-elsewhere\n",
    )
    .unwrap();
    let node = |secret: Option<&Path>| {
        let mut builder = TestServer::builder().arg("--users").arg(&users);
        if let Some(secret) = secret {
            builder = builder.arg("--token-secret").arg(secret);
        }
        builder.start()
    };
    let mut a = node(Some(&secret));
    let b = node(Some(&secret));
    let elsewhere = node(Some(&other_secret));
    let unsigned = node(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    async fn raw(server: &TestServer) -> FlightServiceClient<tonic::transport::Channel> {
        FlightServiceClient::new(server.channel().await)
    }
    rt.block_on(common::within(
        Duration::from_secs(60),
        "the nodes",
        async {
            let token = handshake_payload(&mut raw(&a).await, WRITER.0, WRITER.1)
                .await
                .expect("login on node a");
            let bearer = format!("Bearer {token}");
            // Any node with the same users file and secret takes it...
            list_with_header(&mut raw(&a).await, &bearer)
                .await
                .expect("node a");
            list_with_header(&mut raw(&b).await, &bearer)
                .await
                .expect("node b");
            // ...no other node does, nor does an altered token.
            for (server, what) in [(&elsewhere, "another secret"), (&unsigned, "no secret")] {
                let err = list_with_header(&mut raw(server).await, &bearer)
                    .await
                    .expect_err(what);
                assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
            }
            let mut altered = token.clone().into_bytes();
            let last = altered.len() - 1;
            altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
            let altered = format!("Bearer {}", String::from_utf8(altered).unwrap());
            let err = list_with_header(&mut raw(&b).await, &altered)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
            // The writer's role holds on every node.
            let mut forbidden = Request::new(hangar::proto::Action {
                r#type: "drop_dataset".into(),
                body: Bytes::from_static(b"x"),
            });
            forbidden
                .metadata_mut()
                .insert("authorization", bearer.parse().unwrap());
            let err = raw(&b).await.do_action(forbidden).await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied);
        },
    ));
    // A restarted node still takes tokens it issued before.
    let token = rt.block_on(async {
        let mut client = FlightServiceClient::new(a.channel().await);
        handshake_payload(&mut client, WRITER.0, WRITER.1)
            .await
            .unwrap()
    });
    a.terminate();
    let a = node(Some(&secret));
    let bearer = format!("Bearer {token}");
    rt.block_on(async {
        let mut client = FlightServiceClient::new(a.channel().await);
        list_with_header(&mut client, &bearer)
            .await
            .expect("after a restart");
    });
    // A changed password revokes the token on each node once it has re-read
    // the users file.
    let mut file = Users::load(&users).unwrap();
    file.set_password(WRITER.0, "a-new-password-1234").unwrap();
    file.save(&users).unwrap();
    b.signal("HUP");
    b.wait_for_stderr("the reload", |log| log.contains("reloaded users file"));
    rt.block_on(async {
        let err = list_with_header(&mut FlightServiceClient::new(b.channel().await), &bearer)
            .await
            .expect_err("revoked on the node that reloaded");
        assert_eq!(err.code(), Code::Unauthenticated);
        list_with_header(&mut FlightServiceClient::new(a.channel().await), &bearer)
            .await
            .expect("still valid on a node that has not reloaded");
    });
}

#[test]
fn token_secret_without_users_or_too_short_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "short").unwrap();
    let out = run_hangar(["serve", "--token-secret", secret.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only --users FILE issues"));
    let users = dir.path().join("users");
    write_users(&users, USERS);
    let out = run_hangar([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--repo",
        dir.path().join("repo").to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--token-secret",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs at least 32"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing announced before the failure"
    );
}
