//! The `hangar` command: argument parsing and wiring only.
//!
//! Exit codes scripts can trust: 0 success, 1 a runtime failure (cannot bind,
//! cannot open the repository), 2 a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hangar::auth::Role;
use hangar::budget::ByteSize;
use hangar::cli::user::UserCommand;
use hangar::duration::parse_bounded;
use hangar::log::Format;
use hangar::server::{self, Config, TlsFiles};
use hangar::store::Codec;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
hangar — a Parquet dataset store that speaks Arrow Flight

USAGE:
    hangar <COMMAND> [OPTIONS]

COMMANDS:
    serve       Run the Flight server over a folder of Parquet files
    user        Manage the users file (add, rm, list) for 'serve --users'
    proto       Print the compiled-in Flight.proto and its SHA-256

CLIENT COMMANDS (talk to any Arrow Flight server; --server URI or $HANGAR_SERVER):
    put         Upload a Parquet or Arrow IPC file: hangar put NAME FILE
    get         Download a dataset: hangar get NAME [-o FILE]
    ls          List datasets: name, rows, bytes, columns [--json]
    info        Schema, rows, bytes and endpoints of one dataset [--json]
    head        The first rows as a table: hangar head NAME [-n 10]
    rm          Delete a dataset: hangar rm NAME
    actions     List the server's actions
    action      Run an action: hangar action TYPE [BODY]
    check       Audit a Flight server's protocol: hangar check URI [--write]

OPTIONS:
    -h, --help       Print help (hangar <COMMAND> --help for a command's options)
    -V, --version    Print version
    --trace          Before a client command: write every gRPC event to stderr,
                     decoded (hangar --trace get NAME); --trace-format json
                     for JSON lines. The server's own: hangar serve --trace
";

const SERVE_HELP: &str = "\
hangar serve — run the Flight server over a folder of Parquet files

USAGE:
    hangar serve [OPTIONS]

Prints one line on stdout once it accepts connections:
    hangar listening on grpc://HOST:PORT
Logs (one line per RPC, one per refused connection) go to stderr.
SIGINT/SIGTERM stop it gracefully.

OPTIONS:
    --listen ADDR              Address to listen on [default: 127.0.0.1:8815]
                               (port 0 picks a free port)
    --repo DIR|URL             Folder holding the datasets, created if missing
                               [default: ./datasets]; also file:///path, and
                               s3://bucket/prefix in builds with the
                               object-store feature (AWS_* variables configure it)
    --compression CODEC        Parquet compression for uploads: snappy, zstd or
                               none [default: snappy]
    --ipc-compression CODEC    Arrow IPC body compression of downloads: none, lz4
                               or zstd [default: none]; a query may ask for its own
    --max-message-size BYTES   Largest gRPC message accepted or sent
                               [default: 67108864 (64 MiB)]
    --log-format FORMAT        text or json [default: text]
    --log-connections          Also log each connection's open and end (calls,
                               bytes, client certificate), not only refusals
    --peer URI                 Another node serving the same repository
                               (repeatable): a query's partitions then name
                               every node, each endpoint starting with the
                               next, so a client reading them all at once reads
                               from every node at once
    --peers FILE               More peers, one URI per line ('#' comments),
                               re-read on SIGHUP
    --advertise URI            This node's address as clients reach it
                               [default: grpc://LISTEN-ADDRESS]
    --trace[=RPCS]             Write every gRPC event of each call into the log,
                               decoded (as 'hangar --trace' does for clients):
                               all calls, or only RPCS, e.g. --trace=DoGet,DoPut.
                               Costly: each message is copied, decoded and its
                               body hashed; for audits, not for production
    --no-reflection            Do not serve gRPC server reflection (by default
                               grpcurl and similar tools can list and describe
                               the services without a proto file)
    --no-health                Do not serve the standard gRPC health service
                               (grpc.health.v1.Health: SERVING once the
                               repository is open, NOT_SERVING while shutting
                               down)

LIMITS:
    --idle-timeout DURATION    Abort an upload that sends nothing, or a download
                               that reads nothing, for this long [default: 60s]
    --max-concurrent-calls N   Calls served at once; more get RESOURCE_EXHAUSTED
                               [default: 256]
    --max-connections N        Open connections at once; more are closed
                               [default: 1024]
    --handshake-timeout DURATION
                               Close a connection that has not finished its TLS
                               handshake and sent the HTTP/2 preface by then
                               [default: 10s]
    --max-dataset-bytes BYTES  Refuse uploads whose Parquet file would be larger
                               (RESOURCE_EXHAUSTED; the old version is kept)
                               [default: no limit]
    --memory-limit BYTES       Memory that uploads and downloads may hold in
                               flight, server-wide, e.g. 256MiB or 1GiB; when
                               spent, calls wait, and past --idle-timeout get
                               RESOURCE_EXHAUSTED [default: 256MiB]

AUTHENTICATION AND TLS:
    --users FILE               Require a login: users and roles from FILE (see
                               'hangar user --help'). Re-read on SIGHUP.
    --token-ttl DURATION       Lifetime of login tokens, e.g. 12h, 30m, 90s
                               [default: 12h]
    --token-secret FILE        Sign login tokens with the secret in FILE (at
                               least 32 bytes), so every server with the same
                               users file and secret accepts them, also after
                               a restart [default: tokens live in this process]
    --tls-cert PEM             Serve grpc+tls:// with this certificate chain...
    --tls-key PEM              ...and this private key
    --tls-client-ca PEM        Require client certificates signed by this CA (mTLS)
    --insecure-auth            Allow --users without TLS on a non-loopback
                               address (passwords and tokens cross the network
                               in clear text)
    -h, --help                 Print this help
";

const PROTO_HELP: &str = "\
hangar proto — print the Flight.proto this binary was built from

USAGE:
    hangar proto [--sha256]

Writes the file, byte for byte, to stdout and its SHA-256 to stderr, so it can
be checked against upstream (apache/arrow, format/Flight.proto):
    hangar proto | diff - Flight.proto
    hangar proto --sha256        # only '<hex>  Flight.proto' on stdout,
                                 # as sha256sum prints it

OPTIONS:
    --sha256      Print only the digest line
    -h, --help    Print this help
";

const USER_HELP: &str = "\
hangar user — manage the users file read by 'hangar serve --users FILE'

USAGE:
    hangar user add --users FILE NAME [--role read|write|admin]
    hangar user passwd --users FILE NAME
    hangar user rm --users FILE NAME
    hangar user list --users FILE

'add' and 'passwd' read the password from stdin (one line), or prompt for it
without echo when stdin is a terminal. 'passwd' keeps the user's role; a
running server revokes the user's tokens once it re-reads the file (SIGHUP). The file holds one 'name:role:<Argon2id hash>' line
per user, is written atomically and has mode 0600; 'add' creates it if missing.

ROLES:
    read     ListFlights, GetFlightInfo, GetSchema, PollFlightInfo, DoGet, ListActions
    write    read, plus DoPut                                    [default for add]
    admin    write, plus the drop_dataset action
";

/// A usage error: printed as one line, exit code 2.
struct Usage(String);

impl From<lexopt::Error> for Usage {
    fn from(err: lexopt::Error) -> Usage {
        Usage(err.to_string())
    }
}

enum Command {
    Help(&'static str),
    Version,
    Serve(Config),
    User(UserCommand),
    Client(hangar::cli::Invocation),
    /// `hangar proto`: the compiled-in Flight.proto, or only its digest.
    Proto {
        digest_only: bool,
    },
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

fn main() -> ExitCode {
    let command = match parse(std::env::args_os().skip(1).collect()) {
        Ok(command) => command,
        Err(Usage(message)) => {
            eprintln!("hangar: {message}");
            eprintln!("Try 'hangar --help' for more information.");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("hangar {VERSION}");
            ExitCode::SUCCESS
        }
        Command::Serve(config) => serve(config),
        Command::Proto { digest_only } => proto(digest_only),
        Command::User(command) => match hangar::cli::user::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("hangar: {err}");
                ExitCode::from(1)
            }
        },
        Command::Client(invocation) => hangar::cli::run(invocation),
    }
}

fn parse(args: Vec<OsString>) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    // `hangar --trace [--trace-format F] COMMAND …`: the trace flags may come
    // before a client command, as well as among its options.
    let mut trace = None;
    let mut first = parser.next()?;
    loop {
        match first {
            Some(Long("trace")) => trace = Some(trace.unwrap_or(Format::Text)),
            Some(Long("trace-format")) => {
                trace = Some(hangar::cli::trace_format(parser.value()).map_err(Usage)?)
            }
            _ => break,
        }
        first = parser.next()?;
    }
    if trace.is_some() && !matches!(&first, Some(Value(cmd)) if hangar::cli::is_command(cmd)) {
        return Err(Usage(
            "--trace goes with a client command (e.g. 'hangar --trace ls'); \
             the server has its own: 'hangar serve --trace'"
                .into(),
        ));
    }
    match first {
        None => Err(Usage("a command is required (e.g. 'hangar serve')".into())),
        Some(Short('h') | Long("help")) => Ok(Command::Help(HELP)),
        Some(Short('V') | Long("version")) => Ok(Command::Version),
        Some(Value(cmd)) if cmd == "serve" => parse_serve(parser),
        Some(Value(cmd)) if cmd == "user" => parse_user(parser),
        Some(Value(cmd)) if cmd == "proto" => parse_proto(parser),
        Some(Value(cmd)) if hangar::cli::is_command(&cmd) => {
            match hangar::cli::parse(&cmd.to_string_lossy(), parser).map_err(Usage)? {
                hangar::cli::Parsed::Help(text) => Ok(Command::Help(text)),
                hangar::cli::Parsed::Run(mut invocation) => {
                    if invocation.connect.trace.is_none() {
                        invocation.connect.trace = trace;
                    }
                    Ok(Command::Client(*invocation))
                }
            }
        }
        Some(Value(cmd)) => Err(Usage(format!(
            "unknown command '{}'",
            cmd.to_string_lossy()
        ))),
        Some(other) => Err(other.unexpected().into()),
    }
}

fn parse_serve(mut parser: lexopt::Parser) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut config = Config::default();
    let (mut tls_cert, mut tls_key, mut tls_client_ca): (
        Option<PathBuf>,
        Option<PathBuf>,
        Option<PathBuf>,
    ) = (None, None, None);
    let mut insecure_auth = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(SERVE_HELP)),
            Long("listen") => config.listen = parse_value(&mut parser, "--listen")?,
            Long("repo") => config.repo = parser.value()?.string()?,
            Long("ipc-compression") => {
                config.limits.ipc_compression = parse_value(&mut parser, "--ipc-compression")?
            }
            Long("compression") => {
                config.codec = parse_value::<Codec>(&mut parser, "--compression")?
            }
            Long("max-message-size") => {
                let bytes: usize = parse_value(&mut parser, "--max-message-size")?;
                if bytes < 1024 {
                    return Err(Usage(
                        "--max-message-size must be at least 1024 bytes".into(),
                    ));
                }
                config.limits.max_message_bytes = bytes;
                config.limits.target_message_bytes =
                    config.limits.target_message_bytes.min(bytes / 2);
            }
            Long("log-format") => {
                config.log_format = parse_value::<Format>(&mut parser, "--log-format")?
            }
            Long("idle-timeout") => {
                let text: String = parse_value(&mut parser, "--idle-timeout")?;
                config.limits.idle_timeout = parse_bounded(&text, SECOND, DAY)
                    .map_err(|e| Usage(format!("invalid value for --idle-timeout: {e}")))?;
            }
            Long("max-concurrent-calls") => {
                config.limits.max_concurrent_calls =
                    parse_value(&mut parser, "--max-concurrent-calls")?
            }
            Long("memory-limit") => {
                let bytes = parse_value::<ByteSize>(&mut parser, "--memory-limit")?.0;
                if bytes < 1024 * 1024 {
                    return Err(Usage("--memory-limit must be at least 1MiB".into()));
                }
                config.limits.memory_limit = bytes;
            }
            Long("max-dataset-bytes") => {
                config.max_dataset_bytes = Some(parse_value(&mut parser, "--max-dataset-bytes")?)
            }
            Long("max-connections") => {
                config.max_connections = parse_value(&mut parser, "--max-connections")?
            }
            Long("handshake-timeout") => {
                let text: String = parse_value(&mut parser, "--handshake-timeout")?;
                config.handshake_timeout = parse_bounded(&text, SECOND, 10 * 60 * SECOND)
                    .map_err(|e| Usage(format!("invalid value for --handshake-timeout: {e}")))?;
            }
            Long("log-connections") => config.log_connections = true,
            Long("advertise") => {
                let text = parser.value()?.to_string_lossy().into_owned();
                config.advertise = Some(
                    hangar::nodes::parse_uri(&text)
                        .map_err(|e| Usage(format!("invalid --advertise: {e}")))?,
                )
            }
            Long("peer") => {
                let text = parser.value()?.to_string_lossy().into_owned();
                config.peers.push(
                    hangar::nodes::parse_uri(&text)
                        .map_err(|e| Usage(format!("invalid --peer: {e}")))?,
                )
            }
            Long("peers") => config.peers_file = Some(parser.value()?.into()),
            Long("trace") => config.trace = Some(parse_traced_rpcs(parser.optional_value())?),
            Long("no-reflection") => config.reflection = false,
            Long("no-health") => config.health = false,
            Long("users") => config.users = Some(parser.value()?.into()),
            Long("token-secret") => config.token_secret = Some(parser.value()?.into()),
            Long("token-ttl") => {
                let text: String = parse_value(&mut parser, "--token-ttl")?;
                config.token_ttl = parse_bounded(&text, SECOND, 365 * DAY)
                    .map_err(|e| Usage(format!("invalid value for --token-ttl: {e}")))?;
            }
            Long("tls-cert") => tls_cert = Some(parser.value()?.into()),
            Long("tls-key") => tls_key = Some(parser.value()?.into()),
            Long("tls-client-ca") => tls_client_ca = Some(parser.value()?.into()),
            Long("insecure-auth") => insecure_auth = true,
            _ => return Err(arg.unexpected().into()),
        }
    }
    config.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca: tls_client_ca,
        }),
        (None, None) if tls_client_ca.is_none() => None,
        (None, None) => {
            return Err(Usage(
                "--tls-client-ca needs --tls-cert and --tls-key".into(),
            ))
        }
        _ => {
            return Err(Usage(
                "--tls-cert and --tls-key must be given together".into(),
            ))
        }
    };
    if config.users.is_some()
        && config.tls.is_none()
        && !config.listen.ip().is_loopback()
        && !insecure_auth
    {
        return Err(Usage(format!(
            "refusing --users on {} without TLS: passwords and tokens would cross the network \
             in clear text; add --tls-cert/--tls-key, listen on a loopback address, or pass \
             --insecure-auth",
            config.listen
        )));
    }
    if config.token_secret.is_some() && config.users.is_none() {
        return Err(Usage(
            "--token-secret signs login tokens, which only --users FILE issues".into(),
        ));
    }
    Ok(Command::Serve(config))
}

/// `--trace` (every call) or `--trace=DoGet,DoPut` (those RPCs only).
fn parse_traced_rpcs(value: Option<OsString>) -> Result<Option<Vec<String>>, Usage> {
    const RPCS: [&str; 13] = [
        "Handshake",
        "ListFlights",
        "GetFlightInfo",
        "PollFlightInfo",
        "GetSchema",
        "DoGet",
        "DoPut",
        "DoExchange",
        "DoAction",
        "ListActions",
        "Check",
        "Watch",
        "ServerReflectionInfo",
    ];
    let Some(value) = value else { return Ok(None) };
    let text = value
        .into_string()
        .map_err(|_| Usage("--trace: RPC names are ASCII".into()))?;
    let mut names = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match RPCS.iter().find(|rpc| rpc.eq_ignore_ascii_case(name)) {
            Some(rpc) => names.push(rpc.to_string()),
            None => {
                return Err(Usage(format!(
                    "invalid --trace: unknown RPC '{name}' (one of {})",
                    RPCS.join(", ")
                )))
            }
        }
    }
    if names.is_empty() {
        return Err(Usage(
            "--trace= needs RPC names, e.g. --trace=DoGet,DoPut (or --trace for all)".into(),
        ));
    }
    Ok(Some(names))
}

fn parse_proto(mut parser: lexopt::Parser) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut digest_only = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(PROTO_HELP)),
            Long("sha256") => digest_only = true,
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Command::Proto { digest_only })
}

/// The file goes to stdout byte for byte (so it can be diffed or hashed as
/// is); its digest to stderr, or alone to stdout with `--sha256`, in
/// `sha256sum`'s format.
fn proto(digest_only: bool) -> ExitCode {
    use std::io::Write;
    let text = hangar::proto::FLIGHT_PROTO;
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let line = format!("{hex}  Flight.proto");
    let written = if digest_only {
        writeln!(std::io::stdout(), "{line}")
    } else {
        std::io::stdout().write_all(text.as_bytes())
    };
    if let Err(err) = written.and_then(|()| std::io::stdout().flush()) {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("hangar: writing to stdout: {err}");
            return ExitCode::from(1);
        }
    }
    if !digest_only {
        eprintln!("{line} ({} bytes, compiled into this binary)", text.len());
    }
    ExitCode::SUCCESS
}

fn parse_user(mut parser: lexopt::Parser) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let action = match parser.next()? {
        Some(Value(action)) => action.to_string_lossy().into_owned(),
        Some(Short('h') | Long("help")) | None => return Ok(Command::Help(USER_HELP)),
        Some(other) => return Err(other.unexpected().into()),
    };
    let mut users: Option<PathBuf> = None;
    let mut name: Option<String> = None;
    let mut role = Role::Write;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(USER_HELP)),
            Long("users") => users = Some(parser.value()?.into()),
            Long("role") if action == "add" => role = parse_value(&mut parser, "--role")?,
            Value(value) if name.is_none() && action != "list" => {
                let value = value
                    .into_string()
                    .map_err(|_| Usage("the user name is not UTF-8".into()))?;
                name = Some(value);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let users = users.ok_or_else(|| Usage(format!("'hangar user {action}' needs --users FILE")))?;
    let need_name = |name: Option<String>| {
        name.ok_or_else(|| Usage(format!("'hangar user {action}' needs a user NAME")))
    };
    Ok(Command::User(match action.as_str() {
        "add" => UserCommand::Add {
            users,
            name: need_name(name)?,
            role,
        },
        "rm" => UserCommand::Remove {
            users,
            name: need_name(name)?,
        },
        "passwd" => UserCommand::Passwd {
            users,
            name: need_name(name)?,
        },
        "list" => UserCommand::List { users },
        other => {
            return Err(Usage(format!(
                "unknown user command '{other}' (expected add, passwd, rm or list)"
            )))
        }
    }))
}

/// Parses a flag's value, naming the flag in the error.
fn parse_value<T>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, Usage>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = parser.value()?;
    let text = raw
        .to_str()
        .ok_or_else(|| Usage(format!("invalid value for {flag}: not UTF-8")))?;
    text.parse()
        .map_err(|e| Usage(format!("invalid value '{text}' for {flag}: {e}")))
}

fn serve(config: Config) -> ExitCode {
    hangar::budget::configure_allocator();
    let Some(runtime) = hangar::cli::start_runtime("hangar") else {
        return ExitCode::from(1);
    };
    let result = runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let bound = server::bind(config).await?;
        let uri = bound.uri()?;
        // The one line on stdout scripts wait for; flushed before accepting.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "hangar listening on {uri}");
            let _ = out.flush();
        }
        server::run(bound, shutdown).await
    });
    // Abandoned calls' worker threads must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hangar: {err}");
            ExitCode::from(1)
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now (before the listening line, so a
/// signal right after it is never fatal) and returns a future that resolves on
/// the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, hangar::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let register =
        |kind| signal(kind).map_err(|e| hangar::Error::io("installing signal handlers", e));
    let mut term = register(SignalKind::terminate())?;
    let mut int = register(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
