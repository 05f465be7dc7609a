//! What an attacker on the network can cost a `hangar serve --users` process,
//! tried against the real binary on loopback (several 127.0.0.x source
//! addresses where a limit is per address): bounded work before a login
//! succeeds, a throttle that holds under concurrency, tokens only their owner
//! can spend for as long as promised, bounds on flags. README, "Security".

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hangar::auth::{base64_encode, Role, Users};
use hangar::proto::{FlightDescriptor, FlightServiceClient, HandshakeRequest};
use prost::bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use common::{run_hangar, TestServer};

const ALICE: (&str, &str) = ("alice", "alice-secret-77");
const MALLORY: (&str, &str) = ("mallory", "mallory-secret-12");

fn write_users(path: &Path) {
    let mut file = Users::default();
    file.add(ALICE.0, Role::Admin, ALICE.1).unwrap();
    file.add(MALLORY.0, Role::Read, MALLORY.1).unwrap();
    file.save(path).unwrap();
}

fn server(extra: &[&str]) -> (TestServer, PathBuf) {
    let builder = TestServer::builder();
    let users = builder.dir_path().join("users");
    write_users(&users);
    let server = builder.arg("--users").arg(&users).args(extra).start();
    (server, users)
}

/// A raw Flight client whose connection comes from `source` (127.0.0.x).
async fn client_from(server: &TestServer, source: [u8; 4]) -> FlightServiceClient<Channel> {
    let channel = Endpoint::from_shared(server.http_uri())
        .unwrap()
        .local_address(Some(IpAddr::from(source)))
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting from a 127.0.0.x address");
    FlightServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

fn basic((user, password): (&str, &str)) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// A Handshake with `authorization: <header>`; the token, or the status.
async fn handshake(
    client: &mut FlightServiceClient<Channel>,
    header: &str,
) -> Result<String, Status> {
    let mut request = Request::new(futures::stream::iter(vec![HandshakeRequest {
        protocol_version: 0,
        payload: Bytes::new(),
    }]));
    request
        .metadata_mut()
        .insert("authorization", header.parse().unwrap());
    let mut replies = client.handshake(request).await?.into_inner();
    let reply = replies.message().await?.expect("a handshake reply");
    Ok(String::from_utf8(reply.payload.to_vec()).unwrap())
}

/// ListFlights with a bearer token.
async fn list_with(client: &mut FlightServiceClient<Channel>, token: &str) -> Result<(), Status> {
    common::list_with_header(client, &format!("Bearer {token}")).await
}

fn rss_kib(pid: u32) -> u64 {
    common::status_field(pid, "VmRSS:").unwrap()
}

async fn bounded<F: std::future::Future>(what: &str, body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 60 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_user_names_are_refused_before_anything_is_stored() {
    let (server, _) = server(&[]);
    let before = rss_kib(server.pid());
    // Over the 64 KiB request cap: refused while the body is read.
    let mut client = client_from(&server, [127, 0, 0, 2]).await;
    let huge = "u".repeat(16 << 20);
    let err = bounded("huge", common::handshake_payload(&mut client, &huge, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Under the cap but over the name bound, many times from 16 addresses:
    // refused without a password check and without being remembered.
    let long = "n".repeat(60 * 1024);
    let attempts = (2..18u8).map(|n| {
        let (server, long) = (&server, long.clone());
        async move {
            let mut client = client_from(server, [127, 0, 0, n]).await;
            for _ in 0..5 {
                let err = common::handshake_payload(&mut client, &long, "x")
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
            }
        }
    });
    bounded("long names", join_all(attempts)).await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    eprintln!("oversized names: RSS grew by {grown} KiB");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    // Nothing was counted against those addresses: they still log in.
    let mut client = client_from(&server, [127, 0, 0, 2]).await;
    handshake(&mut client, &basic(ALICE))
        .await
        .expect("alice logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_costs_bounded_memory_and_logged_in_users_keep_working() {
    let (server, _) = server(&[]);
    let mut alice = client_from(&server, [127, 0, 0, 1]).await;
    let token = handshake(&mut alice, &basic(ALICE)).await.unwrap();
    let before = rss_kib(server.pid());
    let pid = server.pid();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // 100 wrong passwords at once, 4 from each of 25 addresses.
    let flood = (0..100u32).map(|i| {
        let server = &server;
        async move {
            let mut client = client_from(server, [127, 0, 1, (i / 4) as u8 + 1]).await;
            let user = format!("user{i}");
            handshake(&mut client, &basic((&user, "wrong"))).await
        }
    });
    let (results, listed) = bounded("flood", async {
        tokio::join!(join_all(flood), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            list_with(&mut alice, &token).await
        })
    })
    .await;
    sampler.abort();
    listed.expect("a logged-in user is served during the flood");
    for result in &results {
        let code = result.as_ref().unwrap_err().code();
        assert!(
            matches!(code, Code::Unauthenticated | Code::ResourceExhausted),
            "{result:?}"
        );
    }
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!("login flood: peak RSS grew by {grown} KiB");
    // Two Argon2 checks at a time (~19 MiB each), not a hundred.
    assert!(
        grown < 96 * 1024,
        "peak RSS grew by {grown} KiB during the flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_correct_logins_from_one_host_all_succeed() {
    // Workers on one host logging in at once queue for the password checks;
    // none is refused for being one of many.
    let (server, _) = server(&[]);
    let logins = (0..20).map(|_| {
        let server = &server;
        async move {
            let mut client = client_from(server, [127, 0, 0, 11]).await;
            handshake(&mut client, &basic(ALICE)).await
        }
    });
    for result in bounded("burst", join_all(logins)).await {
        result.expect("every correct login succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_cannot_take_the_call_slots() {
    let (server, _) = server(&["--max-concurrent-calls", "8"]);
    let mut alice = client_from(&server, [127, 0, 0, 1]).await;
    let token = handshake(&mut alice, &basic(ALICE)).await.unwrap();
    // 40 handshakes that never send anything, from 10 addresses.
    let mut held = Vec::new();
    for i in 0..40u8 {
        let mut client = client_from(&server, [127, 0, 2, i / 4 + 1]).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<HandshakeRequest>(1);
        let call = tokio::spawn(async move {
            client
                .handshake(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                    rx,
                ))
                .await
        });
        held.push((tx, call));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    bounded("list", list_with(&mut alice, &token))
        .await
        .expect("a logged-in user gets a call slot");
    assert!(started.elapsed() < Duration::from_secs(2));
    // And the idle ones are sent away, not kept.
    for (_tx, call) in held {
        let outcome = bounded("idle handshake", call).await.unwrap();
        let err = match outcome {
            Ok(response) => {
                let mut replies = response.into_inner();
                bounded("reply", replies.message()).await.unwrap_err()
            }
            Err(err) => err,
        };
        assert!(
            matches!(err.code(), Code::Unauthenticated | Code::ResourceExhausted),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_other_than_doput_are_refused_before_buffering() {
    let (server, _) = server(&[]);
    let mut client = client_from(&server, [127, 0, 0, 3]).await;
    let descriptor = FlightDescriptor {
        r#type: 1,
        cmd: Bytes::new(),
        path: vec!["x".repeat(8 << 20)],
    };
    let err = bounded("big GetFlightInfo", client.get_flight_info(descriptor))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("only DoPut"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_guesses_are_evaluated_at_most_five_times() {
    let (server, _) = server(&[]);
    let attempts = (0..41).map(|i| {
        let server = &server;
        async move {
            let mut client = client_from(server, [127, 0, 0, 4]).await;
            let password = if i == 40 { ALICE.1 } else { "wrong" };
            handshake(&mut client, &basic((ALICE.0, password))).await
        }
    });
    let results = bounded("guesses", join_all(attempts)).await;
    let evaluated_wrong = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    assert!(
        evaluated_wrong <= 5,
        "{evaluated_wrong} wrong guesses evaluated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_logins_do_not_reset_guesses_at_other_accounts() {
    let (server, _) = server(&[]);
    let mut client = client_from(&server, [127, 0, 0, 5]).await;
    let mut evaluated = 0;
    for i in 0..20 {
        if i % 5 == 4 {
            let _ = handshake(&mut client, &basic(MALLORY)).await;
        } else if let Err(err) = handshake(&mut client, &basic((ALICE.0, "guess"))).await {
            evaluated += usize::from(err.code() == Code::Unauthenticated);
        }
    }
    assert!(evaluated <= 5, "{evaluated} guesses evaluated");
    // One address's guesses do not lock alice out of logins from elsewhere.
    let mut elsewhere = client_from(&server, [127, 0, 0, 6]).await;
    handshake(&mut elsewhere, &basic(ALICE))
        .await
        .expect("alice logs in from another address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_handshake_returns_the_same_token_and_lives_no_longer() {
    let (server, _) = server(&["--token-ttl", "2s"]);
    let mut client = client_from(&server, [127, 0, 0, 7]).await;
    let token = handshake(&mut client, &basic(MALLORY)).await.unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let again = handshake(&mut client, &format!("Bearer {token}"))
            .await
            .unwrap();
        assert_eq!(again, token, "a Bearer handshake mints no new token");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let err = list_with(&mut client, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_minting_tokens_cannot_evict_another_users_token() {
    let (server, _) = server(&[]);
    let mut admin = client_from(&server, [127, 0, 0, 8]).await;
    let admin_token = handshake(&mut admin, &basic(ALICE)).await.unwrap();
    let mut reader = client_from(&server, [127, 0, 0, 9]).await;
    let first = handshake(&mut reader, &basic(MALLORY)).await.unwrap();
    for _ in 0..(hangar::auth::MAX_TOKENS_PER_USER + 2) {
        handshake(&mut reader, &basic(MALLORY)).await.unwrap();
    }
    list_with(&mut admin, &admin_token)
        .await
        .expect("the admin's token survives");
    let err = list_with(&mut reader, &first).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the reader's oldest went"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_revokes_tokens_on_reload_and_keeps_the_role() {
    let (server, users) = server(&[]);
    let mut client = client_from(&server, [127, 0, 0, 10]).await;
    let token = handshake(&mut client, &basic(MALLORY)).await.unwrap();
    let mut passwd = std::process::Command::new(common::hangar_bin())
        .args([
            "user",
            "passwd",
            "--users",
            users.to_str().unwrap(),
            MALLORY.0,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    passwd
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-new-password\n")
        .unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    server.signal("HUP");
    server.wait_for_stderr("the reload", |log| log.contains("reloaded users file"));
    let err = list_with(&mut client, &token).await.unwrap_err();
    assert_eq!(err.message(), hangar::auth::INVALID_TOKEN);
    let listed = Users::load(&users).unwrap();
    assert_eq!(listed.get(MALLORY.0).unwrap().role, Role::Read);
}

#[test]
fn out_of_range_durations_are_usage_errors() {
    for (flag, value) in [
        ("--token-ttl", "0"),
        ("--token-ttl", "200000000000000d"),
        ("--idle-timeout", "0"),
    ] {
        let out = run_hangar(["serve", "--listen", "127.0.0.1:0", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[test]
fn a_users_file_others_may_write_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    write_users(&users);
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_hangar([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--repo",
        dir.path().join("repo").to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

// ------------------------------------------------------- reflection and health

/// A health client whose connection comes from `source` (127.0.0.x).
async fn health_from(
    server: &TestServer,
    source: [u8; 4],
) -> tonic_health::pb::health_client::HealthClient<Channel> {
    let channel = Endpoint::from_shared(server.http_uri())
        .unwrap()
        .local_address(Some(IpAddr::from(source)))
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting from a 127.0.0.x address");
    tonic_health::pb::health_client::HealthClient::new(channel)
}

/// A Watch that has delivered its first status, or the status it was refused with.
async fn watch(
    client: &mut tonic_health::pb::health_client::HealthClient<Channel>,
) -> Result<tonic::Streaming<tonic_health::pb::HealthCheckResponse>, Status> {
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = client.watch(request).await?.into_inner();
    let first = stream.message().await?.expect("a first Watch reply");
    assert_eq!(first.status, 1, "SERVING");
    Ok(stream)
}

#[test]
fn health_watchers_are_bounded_per_address_and_in_total_and_checks_always_answer() {
    // Without credentials (the server requires a login for Flight).
    let (server, _users) = server(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::within(
        Duration::from_secs(60),
        "the watchers",
        async {
            let per_peer = hangar::discovery::MAX_OPEN_CALLS_PER_PEER;
            let total = hangar::discovery::MAX_OPEN_CALLS;
            let mut open = Vec::new();
            let mut first = health_from(&server, [127, 0, 0, 2]).await;
            for _ in 0..per_peer {
                open.push(
                    watch(&mut first)
                        .await
                        .expect("a watch within the per-address limit"),
                );
            }
            let refused = watch(&mut first)
                .await
                .expect_err("one more from the same address");
            assert_eq!(refused.code(), Code::ResourceExhausted);
            assert!(refused.message().contains("from 127.0.0.2"), "{refused:?}");
            // Other addresses fill the server-wide slots.
            for i in 0..(total / per_peer - 1) {
                let mut client = health_from(&server, [127, 0, 0, 3 + i as u8]).await;
                for _ in 0..per_peer {
                    open.push(watch(&mut client).await.expect("a watch within the limits"));
                }
            }
            assert_eq!(open.len(), total);
            let mut late = health_from(&server, [127, 0, 0, 40]).await;
            let refused = watch(&mut late)
                .await
                .expect_err("past the server-wide limit");
            assert_eq!(refused.code(), Code::ResourceExhausted);
            assert!(
                refused.message().contains(&format!("{total} reflection")),
                "{refused:?}"
            );
            // A probe is answered all the same.
            let check = late
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "arrow.flight.protocol.FlightService".into(),
                })
                .await
                .expect("Check while every slot is taken");
            assert_eq!(check.into_inner().status, 1, "SERVING");
            // A closed watcher gives its slot back.
            drop(open.pop());
            let freed = common::wait_until(Duration::from_secs(10), async || {
                watch(&mut late).await.map(|s| open.push(s)).is_ok()
            })
            .await;
            assert!(freed, "no slot came back after a Watch ended");
        },
    ));
}
