//! The client subcommands (`put`, `get`, `ls`, `info`, `head`, `rm`, `actions`,
//! `action`, `check`): their arguments, their help, and the one error type
//! they report.
//!
//! They talk to any Arrow Flight server, not only hangar, and keep ripgrep's
//! manners: data on stdout or in files, messages and progress on stderr, exit
//! code 0 on success, 1 when the server or I/O failed, 2 for a usage error.
//! [`connect`] reaches the server, [`transfer`] moves data, [`show`] prints
//! what the server knows, [`progress`] draws the progress line, [`check`]
//! audits a server's protocol.

pub mod action;
pub mod check;
pub mod connect;
pub mod progress;
pub mod show;
pub mod transfer;
pub mod user;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tonic::{Code, Status};

use self::connect::{ConnectOptions, Connector, ServerUri, DEFAULT_SERVER};
use crate::log::code_name;

/// The subcommands this module handles.
pub const COMMANDS: &[&str] = &[
    "put", "get", "ls", "info", "head", "rm", "actions", "action", "check",
];

/// True if `command` is one of [`COMMANDS`].
pub fn is_command(command: &std::ffi::OsStr) -> bool {
    COMMANDS.iter().any(|c| command == std::ffi::OsStr::new(c))
}

/// The options every client command takes, spliced into each help text.
macro_rules! connection_help {
    () => {
        "
CONNECTION OPTIONS:
    --server URI               grpc://HOST:PORT or grpc+tls://HOST:PORT
                               [default: $HANGAR_SERVER, else grpc://127.0.0.1:8815]
    --tls-root PEM             CA certificates to trust instead of the system's
    --tls-cert PEM             Client certificate for mutual TLS (with --tls-key)
    --tls-key PEM              Client private key for mutual TLS
    --user NAME                Log in as NAME (Basic, then the server's Bearer
                               token); the password is read from
                               $HANGAR_PASSWORD, else prompted
    --trust-locations          Also send credentials to the servers that endpoint
                               locations name (default: only to --server)
    --max-message-size BYTES   Largest message accepted from the server
                               [default: 268435456 (256 MiB)]
    -q, --quiet                No progress line and no summary on stderr
    --trace                    Write every gRPC event to stderr, decoded: the
                               call, headers (credentials redacted), each
                               message field by field (FlightData down to its
                               IPC header; bodies as size and SHA-256),
                               trailers and status. Also before the command:
                               hangar --trace get NAME
    --trace-format FORMAT      text or json (JSON lines) [default: text];
                               implies --trace
    -h, --help                 Print this help

Exit codes: 0 success, 1 server or I/O error, 2 usage error.
"
    };
}

const PUT_HELP: &str = concat!(
    "\
hangar put — upload a Parquet or Arrow IPC file as a dataset

USAGE:
    hangar put [OPTIONS] NAME FILE

FILE is a Parquet file (sent row group by row group), an Arrow IPC file
(.arrow) or stream (.arrows), or '-' for an Arrow IPC stream on stdin. The
format is recognised from the file's first bytes. Memory stays flat whatever
the file's size. On hangar, an upload replaces the dataset atomically.

EXAMPLES:
    hangar put trips.parquet ./trips-2024.parquet
    some-tool --arrow-stream | hangar put events -
",
    connection_help!()
);

const GET_HELP: &str = concat!(
    "\
hangar get — download a dataset

USAGE:
    hangar get [OPTIONS] NAME [-o FILE]

Reads every endpoint of the dataset's FlightInfo, in order. With -o, the
extension picks the format: .parquet writes Parquet, .arrow an Arrow IPC file,
.arrows an Arrow IPC stream. The file appears only once the download is
complete. Without -o (or with -o -), an Arrow IPC stream goes to stdout,
which must not be a terminal.

OPTIONS:
    -o, --output FILE          Write to FILE instead of stdout
    --columns A,B              Only these columns, in this order
    --where CONDITIONS         Only the rows where every condition holds:
                               conditions joined by 'and', each one of
                                 COLUMN OP VALUE   (OP: = != < <= > >=)
                                 COLUMN in (VALUE, ...)
                                 COLUMN is null | COLUMN is not null
                               VALUE: 'quoted text', a number, true/false, or a
                               bare word taken as text (2024-06-01, Oslo); dates
                               and timestamps are ISO 8601. Maps one to one onto
                               the query JSON's \"filter\" (README, Queries).
    --parallel N               Ask for up to N endpoints and fetch them at once
                               (1 to 64; output stays in endpoint order)

--columns, --where and --parallel send a query (a CMD descriptor), which
hangar understands; without them, get works against any Flight server.

EXAMPLES:
    hangar get trips -o trips.parquet
    hangar get trips --columns ts,fare --where \"ts >= 2024-06-01 and city = 'Oslo'\" --parallel 4 -o t.parquet
    hangar get trips | python -c 'import pyarrow as pa, sys; print(pa.ipc.open_stream(sys.stdin.buffer).read_all())'
",
    connection_help!()
);

const LS_HELP: &str = concat!(
    "\
hangar ls — list the datasets: name, rows, bytes, columns

USAGE:
    hangar ls [OPTIONS] [PREFIX]

PREFIX is sent as the ListFlights criteria (hangar lists the names starting
with it). Unknown counts print as '-' (null in JSON).

OPTIONS:
    --json                     One JSON array of {name, rows, bytes, columns}
",
    connection_help!()
);

const INFO_HELP: &str = concat!(
    "\
hangar info — describe one dataset: schema, rows, bytes, endpoints

USAGE:
    hangar info [OPTIONS] NAME

OPTIONS:
    --json                     One JSON object instead of text
    --columns A,B              Describe a query: these columns ...
    --where CONDITIONS         ... of the rows where the conditions hold (see
                               'hangar get --help'); shows the row groups kept
                               and pruned and the estimated bytes read
",
    connection_help!()
);

const HEAD_HELP: &str = concat!(
    "\
hangar head — print the first rows of a dataset as a table

USAGE:
    hangar head [OPTIONS] NAME

Downloads only as much as it prints: the transfer stops after the rows.

OPTIONS:
    -n, --rows N               How many rows [default: 10]
",
    connection_help!()
);

const RM_HELP: &str = concat!(
    "\
hangar rm — delete a dataset (the drop_dataset action)

USAGE:
    hangar rm [OPTIONS] NAME
",
    connection_help!()
);

const ACTIONS_HELP: &str = concat!(
    "\
hangar actions — list the actions the server offers

USAGE:
    hangar actions [OPTIONS]
",
    connection_help!()
);

const ACTION_HELP: &str = concat!(
    "\
hangar action — run one action and print its results

USAGE:
    hangar action [OPTIONS] TYPE [BODY]

BODY is sent as UTF-8 ('-' reads it from stdin); without it the body is empty.
Each result's body is written to stdout, followed by a newline.

EXAMPLES:
    hangar action drop_dataset trips
",
    connection_help!()
);

const CHECK_HELP: &str = concat!(
    "\
hangar check — audit any Flight server's protocol and cookbook behaviour

USAGE:
    hangar check [OPTIONS] [URI]

URI is the server to audit (grpc://HOST:PORT or grpc+tls://HOST:PORT); without
it, --server or $HANGAR_SERVER. Prints one line per check on stdout, PASS, FAIL
or SKIP with the reason, then a summary. Exit code 1 if any check FAILs.

The checks read raw Flight messages: the DoGet streams of the smallest listed
dataset with rows and of an empty one if listed, plus, with --write, of two
datasets the check uploads itself. Without --write nothing is changed on the
server.

CHECKS (one that needs a flag not given SKIPs):
    handshake             --user: Handshake with Basic credentials answers an
                          'authorization: Bearer' header
    token-accepted        --user: a call carrying only that token is served
    token-altered         --user: the token altered is refused (UNAUTHENTICATED)
    list-flights          ListFlights answers
    schema-first          every DoGet stream starts with a Schema message
    empty-schema-first    ...also the stream of an empty dataset
    dictionaries-first    each dictionary comes before the batches using it
    message-size          every message fits the default 4 MiB client limit
    info-schema           GetFlightInfo's schema equals the stream's
    total-records         total_records equals the rows streamed (or is -1)
    missing-dataset       GetFlightInfo and DoGet of a missing dataset answer
                          NOT_FOUND
    malformed-descriptor  a PATH descriptor without a path: INVALID_ARGUMENT
    malformed-ticket      a ticket of non-UTF-8 bytes: INVALID_ARGUMENT
                          (never INTERNAL or UNKNOWN)
    unknown-action        an unlisted action is refused: UNIMPLEMENTED,
                          INVALID_ARGUMENT or NOT_FOUND
    list-actions          --write: drop_dataset is listed, and every listed
                          action is accepted
    roundtrip             --write: DoPut then DoGet of a table with every
                          common type, nulls in each column, comes back unchanged
    drop-dataset          --write: drop_dataset removes the uploads

OPTIONS:
    --write                    Also upload two datasets named
                               hangar-check-<random> and ...-empty, read them
                               back, and drop them at the end (also after a
                               failure or Ctrl-C); and call each action
                               ListActions names, with the name of a dataset
                               that does not exist as its body
    --json                     One JSON object: {server, checks: [{check,
                               result, detail}], passed, failed, skipped}
    --timeout DURATION         Longest wait for one call and its stream
                               [default: 30s]

EXAMPLES:
    hangar check grpc://127.0.0.1:8815
    HANGAR_PASSWORD=s3cret hangar check grpc+tls://flight.example.com:443 --user ann --write
",
    connection_help!()
);

/// What [`parse`] found: a help text to print, or a command to run.
#[derive(Debug)]
pub enum Parsed {
    Help(&'static str),
    Run(Box<Invocation>),
}

/// A fully parsed client command.
#[derive(Debug)]
pub struct Invocation {
    pub connect: ConnectOptions,
    pub quiet: bool,
    pub command: Command,
}

/// Where `put` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// The file formats `get` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    IpcFile,
    IpcStream,
}

/// Where `get` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf, Format),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put {
        name: String,
        input: Input,
    },
    Get {
        name: String,
        output: Output,
        select: Selection,
    },
    Ls {
        prefix: String,
        json: bool,
    },
    Info {
        name: String,
        json: bool,
        select: Selection,
    },
    Head {
        name: String,
        rows: usize,
    },
    Rm {
        name: String,
    },
    Actions,
    Action {
        kind: String,
        body: Option<String>,
    },
    Check(check::Options),
}

/// Which part of a dataset `get` and `info` ask for (`--columns`, `--where`,
/// `--parallel`); empty means the whole dataset through a PATH descriptor,
/// which every Flight server understands. Anything else is a hangar query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub columns: Option<Vec<String>>,
    pub filter: Vec<crate::query::Condition>,
    /// Endpoints asked for and fetched at once (1: one after the other).
    pub parallel: usize,
}

impl Selection {
    /// The query command, unless the whole dataset is wanted plainly.
    pub fn query(&self, dataset: &str) -> Option<crate::query::Query> {
        let plain = self.columns.is_none() && self.filter.is_empty() && self.parallel <= 1;
        (!plain).then(|| crate::query::Query {
            dataset: dataset.to_string(),
            columns: self.columns.clone(),
            filter: self.filter.clone(),
            partitions: self.parallel.max(1),
            limit: None,
            compression: None,
        })
    }
}

/// Parses the arguments after the command name. The error is a usage message.
pub fn parse(command: &str, mut parser: lexopt::Parser) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let help = match command {
        "put" => PUT_HELP,
        "get" => GET_HELP,
        "ls" => LS_HELP,
        "info" => INFO_HELP,
        "head" => HEAD_HELP,
        "rm" => RM_HELP,
        "actions" => ACTIONS_HELP,
        "action" => ACTION_HELP,
        "check" => CHECK_HELP,
        other => return Err(format!("unknown command '{other}'")),
    };
    let mut server = None;
    let mut tls_root = None;
    let mut tls_cert = None;
    let mut tls_key = None;
    let mut user = None;
    let mut max_message_bytes = connect::DEFAULT_MAX_MESSAGE_BYTES;
    let mut quiet = false;
    let mut json = false;
    let mut output = None;
    let mut rows = 10usize;
    let mut trust_locations = false;
    let mut trace = None;
    let mut write = false;
    let mut timeout = Duration::from_secs(30);
    let mut select = Selection::default();
    let mut positional: Vec<OsString> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help(help)),
            Long("server") => {
                let text = utf8(parser.value(), "--server")?;
                server =
                    Some(ServerUri::parse(&text).map_err(|e| format!("invalid --server: {e}"))?);
            }
            Long("tls-root") => tls_root = Some(PathBuf::from(value(&mut parser)?)),
            Long("tls-cert") => tls_cert = Some(PathBuf::from(value(&mut parser)?)),
            Long("tls-key") => tls_key = Some(PathBuf::from(value(&mut parser)?)),
            Long("user") => user = Some(utf8(parser.value(), "--user")?),
            Long("trust-locations") => trust_locations = true,
            Long("max-message-size") => {
                let text = utf8(parser.value(), "--max-message-size")?;
                max_message_bytes = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1024)
                    .ok_or_else(|| {
                        format!(
                            "invalid --max-message-size '{text}': a byte count of at least 1024"
                        )
                    })?;
            }
            Long("trace") => trace = Some(trace.unwrap_or(crate::log::Format::Text)),
            Long("trace-format") => trace = Some(trace_format(parser.value())?),
            Short('q') | Long("quiet") => quiet = true,
            Long("json") if matches!(command, "ls" | "info" | "check") => json = true,
            Long("write") if command == "check" => write = true,
            Long("timeout") if command == "check" => {
                let text = utf8(parser.value(), "--timeout")?;
                timeout = crate::duration::parse_bounded(
                    &text,
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                )
                .map_err(|e| format!("invalid --timeout '{text}': {e}"))?;
            }
            Long("columns") if matches!(command, "get" | "info") => {
                let text = utf8(parser.value(), "--columns")?;
                let names: Vec<String> = text
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err("--columns needs column names, e.g. --columns ts,fare".into());
                }
                select.columns = Some(names);
            }
            Long("where") if matches!(command, "get" | "info") => {
                let text = utf8(parser.value(), "--where")?;
                select.filter = crate::query::parse_where(&text)
                    .map_err(|e| format!("invalid --where: {e}"))?;
            }
            Long("parallel") if command == "get" => {
                let text = utf8(parser.value(), "--parallel")?;
                select.parallel = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("invalid --parallel '{text}': 1 to 64"))?;
            }
            Short('o') | Long("output") if command == "get" => {
                output = Some(PathBuf::from(value(&mut parser)?))
            }
            Short('n') | Long("rows") if command == "head" => {
                let text = utf8(parser.value(), "--rows")?;
                rows = text
                    .parse()
                    .map_err(|_| format!("invalid --rows '{text}': a row count"))?;
            }
            Value(v) => positional.push(v),
            _ => return Err(arg.unexpected().to_string()),
        }
    }

    // `hangar check URI`: the URI is the server.
    if command == "check" && !positional.is_empty() {
        let uri = positional.remove(0);
        let text = uri
            .into_string()
            .map_err(|u| format!("the URI '{}' is not UTF-8", u.to_string_lossy()))?;
        server = Some(ServerUri::parse(&text).map_err(|e| format!("invalid URI: {e}"))?);
    }
    let server = match server {
        Some(server) => server,
        None => match std::env::var("HANGAR_SERVER") {
            Ok(text) if !text.is_empty() => {
                ServerUri::parse(&text).map_err(|e| format!("invalid HANGAR_SERVER: {e}"))?
            }
            _ => ServerUri::parse(DEFAULT_SERVER)?,
        },
    };
    if !server.tls {
        for (flag, given) in [
            ("--tls-root", tls_root.is_some()),
            ("--tls-cert", tls_cert.is_some()),
            ("--tls-key", tls_key.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{flag} needs a grpc+tls:// server, but the server is {server}"
                ));
            }
        }
    }
    if tls_cert.is_some() != tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together (mutual TLS needs both)".into());
    }

    let mut args = positional.into_iter();
    let mut next = |what: &str| -> Result<String, String> {
        let arg = args
            .next()
            .ok_or_else(|| format!("'hangar {command}' needs {what}"))?;
        arg.into_string()
            .map_err(|a| format!("{what} '{}' is not UTF-8", a.to_string_lossy()))
    };
    let command = match command {
        "put" => {
            let name = next("a dataset NAME")?;
            let file = next("a FILE to upload (or '-' for stdin)")?;
            let input = if file == "-" {
                Input::Stdin
            } else {
                Input::File(PathBuf::from(file))
            };
            Command::Put { name, input }
        }
        "get" => {
            let name = next("a dataset NAME")?;
            let output = match output {
                None => Output::Stdout,
                Some(path) if path.as_os_str() == "-" => Output::Stdout,
                Some(path) => {
                    let format = format_of(&path)?;
                    Output::File(path, format)
                }
            };
            Command::Get {
                name,
                output,
                select,
            }
        }
        "ls" => Command::Ls {
            prefix: next("").unwrap_or_default(),
            json,
        },
        "info" => Command::Info {
            name: next("a dataset NAME")?,
            json,
            select,
        },
        "head" => Command::Head {
            name: next("a dataset NAME")?,
            rows,
        },
        "rm" => Command::Rm {
            name: next("a dataset NAME")?,
        },
        "actions" => Command::Actions,
        "check" => Command::Check(check::Options {
            write,
            json,
            timeout,
        }),
        _ => Command::Action {
            kind: next("an action TYPE")?,
            body: next("").ok(),
        },
    };
    if let Some(extra) = args.next() {
        return Err(format!(
            "unexpected argument '{}' for 'hangar {}'",
            extra.to_string_lossy(),
            help_name(help)
        ));
    }
    let connect = ConnectOptions {
        tls_root,
        tls_cert,
        tls_key,
        user,
        max_message_bytes,
        trust_locations,
        trace,
        ..ConnectOptions::new(server)
    };
    Ok(Parsed::Run(Box::new(Invocation {
        connect,
        quiet,
        command,
    })))
}

fn help_name(help: &str) -> &str {
    help.strip_prefix("hangar ")
        .and_then(|h| h.split_whitespace().next())
        .unwrap_or("")
}

/// `--trace-format text|json`, which implies `--trace`.
pub fn trace_format(value: Result<OsString, lexopt::Error>) -> Result<crate::log::Format, String> {
    utf8(value, "--trace-format")?.parse().map_err(|e: String| {
        format!(
            "invalid --trace-format: {}",
            e.replace("log format", "format")
        )
    })
}

fn value(parser: &mut lexopt::Parser) -> Result<OsString, String> {
    parser.value().map_err(|e| e.to_string())
}

fn utf8(value: Result<OsString, lexopt::Error>, flag: &str) -> Result<String, String> {
    value
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| format!("the value of {flag} is not UTF-8"))
}

/// The format `get -o PATH` writes, from the extension.
fn format_of(path: &std::path::Path) -> Result<Format, String> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("parquet" | "parq" | "pq") => Ok(Format::Parquet),
        Some("arrow" | "feather" | "ipc") => Ok(Format::IpcFile),
        Some("arrows") => Ok(Format::IpcStream),
        _ => Err(format!(
            "cannot tell the format of '{}' from its extension: use .parquet, .arrow \
             (Arrow IPC file) or .arrows (Arrow IPC stream)",
            path.display()
        )),
    }
}

/// The multi-threaded runtime `hangar serve` and the client commands run on;
/// `None` (after saying why on stderr) if the OS refuses it.
pub fn start_runtime(thread_name: &str) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(thread_name)
        .build()
        .map_err(|err| eprintln!("hangar: cannot start the runtime: {err}"))
        .ok()
}

/// Runs a parsed command and returns the exit code. Messages go to stderr.
pub fn run(invocation: Invocation) -> ExitCode {
    let Some(runtime) = start_runtime("hangar-client") else {
        return ExitCode::from(1);
    };
    // `check` handles Ctrl-C itself: it still drops what it uploaded.
    let handles_interrupt = matches!(invocation.command, Command::Check(_));
    let result = runtime.block_on(async move {
        if handles_interrupt {
            return execute(invocation).await;
        }
        tokio::select! {
            result = execute(invocation) => result,
            _ = tokio::signal::ctrl_c() => Err(Failure::interrupted()),
        }
    });
    // Worker threads still blocked on a pipe or a dropped call must not hold
    // the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            progress::clear_line();
            eprint!("{failure}");
            ExitCode::from(failure.exit)
        }
    }
}

async fn execute(invocation: Invocation) -> Result<(), Failure> {
    let Invocation {
        connect,
        quiet,
        command,
    } = invocation;
    let has_user = connect.user.is_some();
    let tls_without_identity = connect.server.tls && connect.tls_cert.is_none();
    // Checks that need no server come first, so a usage mistake costs no login.
    if let Command::Get {
        output: Output::Stdout,
        ..
    } = &command
    {
        transfer::check_stdout()?;
    }
    let mut connector = Connector::new(connect)?;
    let result = match command {
        Command::Put { name, input } => transfer::put(&mut connector, &name, &input, quiet).await,
        Command::Get {
            name,
            output,
            select,
        } => transfer::get(&mut connector, &name, &output, &select, quiet).await,
        Command::Ls { prefix, json } => show::ls(&mut connector, &prefix, json).await,
        Command::Info { name, json, select } => {
            show::info(&mut connector, &name, &select, json).await
        }
        Command::Head { name, rows } => show::head(&mut connector, &name, rows).await,
        Command::Rm { name } => action::rm(&mut connector, &name, quiet).await,
        Command::Actions => show::actions(&mut connector).await,
        Command::Action { kind, body } => action::action(&mut connector, &kind, body).await,
        Command::Check(options) => check::check(&mut connector, &options).await,
    };
    result.map_err(|mut failure| {
        if failure.code == Some(Code::Unauthenticated) && has_user {
            failure.hints = vec![
                "the server refused the credentials or the token expired; check --user and \
                 HANGAR_PASSWORD"
                    .into(),
            ];
        }
        // A server that requires client certificates drops the connection
        // after the TLS handshake; the alert does not always arrive first.
        let dropped = failure.message.contains("transport error");
        if tls_without_identity && dropped && failure.hints.is_empty() {
            failure.hint(
                "if the server requires client certificates (mutual TLS), pass --tls-cert \
                 and --tls-key",
            );
        }
        failure
    })
}

/// Why a client command failed: printed as `hangar: CODE: message` plus hint
/// lines, with the exit code scripts see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC status code, when the server (or the connection) said no.
    pub code: Option<Code>,
    pub message: String,
    pub hints: Vec<String>,
    pub exit: u8,
}

impl Failure {
    /// A status from the server or the transport, with the hint that usually
    /// helps for its code.
    pub fn status(code: Code, message: impl Into<String>) -> Failure {
        let message = one_line(&message.into());
        let message = if message.is_empty() {
            code.description().to_string()
        } else {
            message
        };
        let mut failure = Failure {
            code: Some(code),
            message,
            hints: Vec::new(),
            exit: 1,
        };
        match code {
            Code::Unauthenticated => failure.hint(
                "the server wants credentials: try --user NAME (password from \
                 HANGAR_PASSWORD, else prompted)",
            ),
            Code::PermissionDenied => {
                failure.hint("your user may not do this; ask the server's operator for a role")
            }
            Code::NotFound => failure.hint("'hangar ls' lists the datasets"),
            Code::Unavailable => {
                failure.hint("is the server running and reachable? Check --server or HANGAR_SERVER")
            }
            Code::Unimplemented => failure.hint("this server does not offer that call"),
            Code::OutOfRange | Code::ResourceExhausted
                if failure.message.contains("message length too large") =>
            {
                failure.hint(
                    "a message from the server is larger than allowed: raise --max-message-size",
                )
            }
            _ => {}
        }
        // TLS failures arrive as transport errors of any code; say which flag fixes them.
        if failure.message.contains("CertificateRequired") {
            failure.hint(
                "the server requires a client certificate (mutual TLS): pass --tls-cert and \
                 --tls-key",
            );
        } else if failure.message.contains("UnknownIssuer")
            || failure.message.contains("invalid peer certificate")
        {
            failure.hint("the server's certificate is not trusted: pass its CA with --tls-root");
        }
        failure
    }

    /// A failure on this side that is not about a file (a bad input, a bug).
    pub fn local(message: impl Into<String>) -> Failure {
        Failure {
            code: None,
            message: message.into(),
            hints: Vec::new(),
            exit: 1,
        }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Failure {
        Failure::local(format!("{what}: {err}"))
    }

    /// A usage error found after parsing (exit code 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: 2,
            ..Failure::local(message)
        }
    }

    pub(super) fn interrupted() -> Failure {
        Failure {
            exit: 130,
            ..Failure::local("interrupted")
        }
    }

    pub fn hint(&mut self, hint: impl Into<String>) {
        self.hints.push(hint.into());
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        // A status made on this side from a connection error says only
        // "transport error"; the reason (a TLS alert, a reset) is its source.
        let mut message = status.message().to_string();
        if let Some(source) = std::error::Error::source(&status) {
            let cause = connect::chain(source);
            if cause.starts_with(&message) {
                message = cause;
            } else if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        Failure::status(status.code(), message)
    }
}

impl From<crate::Error> for Failure {
    fn from(err: crate::Error) -> Failure {
        Failure::local(err.message())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => writeln!(f, "hangar: {}: {}", code_name(code), self.message)?,
            None => writeln!(f, "hangar: {}", self.message)?,
        }
        for hint in &self.hints {
            writeln!(f, "hangar: hint: {hint}")?;
        }
        Ok(())
    }
}

/// Servers put details on several lines (pyarrow sends a whole Python
/// traceback); an error is one line here: the first line and, when there are
/// more, the last, which is where a traceback names the exception.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [only] => only.to_string(),
        [first, last] => format!("{first} | {last}"),
        [first, .., last] => format!("{first} | … | {last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Parsed, String> {
        parse(
            args[0],
            lexopt::Parser::from_args(args[1..].iter().copied()),
        )
    }

    fn run_of(args: &[&str]) -> Invocation {
        match parse_args(args) {
            Ok(Parsed::Run(invocation)) => *invocation,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn commands_parse_with_their_own_flags() {
        let put = run_of(&["put", "d", "x.parquet", "--server", "grpc://h:1", "-q"]);
        assert_eq!(
            put.command,
            Command::Put {
                name: "d".into(),
                input: Input::File("x.parquet".into())
            }
        );
        assert!(put.quiet);
        assert_eq!(put.connect.server.to_string(), "grpc://h:1");
        assert_eq!(
            run_of(&["put", "d", "-"]).command,
            Command::Put {
                name: "d".into(),
                input: Input::Stdin
            }
        );
        assert_eq!(
            run_of(&["get", "d", "-o", "out.ARROW"]).command,
            Command::Get {
                name: "d".into(),
                output: Output::File("out.ARROW".into(), Format::IpcFile),
                select: Selection::default(),
            }
        );
        assert_eq!(
            run_of(&["get", "d", "--output=-"]).command,
            Command::Get {
                name: "d".into(),
                output: Output::Stdout,
                select: Selection::default(),
            }
        );
        assert_eq!(
            run_of(&["head", "d", "-n", "3"]).command,
            Command::Head {
                name: "d".into(),
                rows: 3
            }
        );
        assert_eq!(
            run_of(&["ls", "--json"]).command,
            Command::Ls {
                prefix: String::new(),
                json: true
            }
        );
        assert_eq!(
            run_of(&["action", "drop_dataset", "d"]).command,
            Command::Action {
                kind: "drop_dataset".into(),
                body: Some("d".into())
            }
        );
        let tls = run_of(&[
            "ls",
            "--server",
            "grpc+tls://h:1",
            "--tls-root",
            "ca.pem",
            "--user",
            "ann",
        ]);
        assert_eq!(tls.connect.tls_root, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.connect.user.as_deref(), Some("ann"));
        assert!(matches!(parse_args(&["get", "--help"]), Ok(Parsed::Help(h)) if h == GET_HELP));
    }

    #[test]
    fn check_takes_the_uri_and_its_flags_and_its_help_names_every_check() {
        let run = run_of(&[
            "check",
            "grpc://h:1",
            "--write",
            "--json",
            "--timeout",
            "5s",
        ]);
        assert_eq!(run.connect.server.to_string(), "grpc://h:1");
        assert_eq!(
            run.command,
            Command::Check(check::Options {
                write: true,
                json: true,
                timeout: Duration::from_secs(5),
            })
        );
        let plain = run_of(&["check", "--server", "grpc://h:2"]);
        assert_eq!(plain.connect.server.to_string(), "grpc://h:2");
        assert!(matches!(plain.command, Command::Check(ref o) if !o.write && !o.json));
        for name in check::CHECKS {
            assert!(
                CHECK_HELP.contains(&format!("\n    {name} ")),
                "{name} is not in CHECK_HELP"
            );
        }
        for (args, expected) in [
            (
                &["check", "grpc://h:1", "--timeout", "0s"][..],
                "invalid --timeout",
            ),
            (&["check", "h:1"][..], "invalid URI"),
            (
                &["check", "grpc://h:1", "extra"][..],
                "unexpected argument 'extra'",
            ),
            (&["ls", "--write"][..], "--write"),
        ] {
            let err = parse_args(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn usage_errors_name_the_problem() {
        for (args, expected) in [
            (&["put", "d"][..], "needs a FILE"),
            (&["get"][..], "needs a dataset NAME"),
            (&["get", "d", "-o", "x.csv"][..], "cannot tell the format"),
            (&["ls", "--bogus"][..], "--bogus"),
            (&["head", "d", "--json"][..], "--json"),
            (&["head", "d", "-n", "many"][..], "invalid --rows"),
            (&["rm", "a", "b"][..], "unexpected argument 'b'"),
            (&["ls", "--server", "http://h:1"][..], "unsupported scheme"),
            (
                &["ls", "--server", "grpc://h:1", "--tls-root", "x"][..],
                "grpc+tls://",
            ),
            (
                &["ls", "--server", "grpc+tls://h:1", "--tls-cert", "c"][..],
                "go together",
            ),
            (&["ls", "--max-message-size", "10"][..], "at least 1024"),
        ] {
            let err = parse_args(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn failures_print_code_message_and_hints() {
        let failure = Failure::from(Status::not_found("dataset 'x' not found"));
        assert_eq!(
            failure.to_string(),
            "hangar: NOT_FOUND: dataset 'x' not found\nhangar: hint: 'hangar ls' lists the datasets\n"
        );
        assert_eq!(failure.exit, 1);
        let multi = Failure::from(Status::unknown("Traceback:\n  boom\n"));
        assert_eq!(multi.message, "Traceback: | boom");
        let long = Failure::from(Status::unknown(
            "gone. Detail: Traceback\n a\n b\nFileNotFoundError: x",
        ));
        assert_eq!(
            long.message,
            "gone. Detail: Traceback | … | FileNotFoundError: x"
        );
        assert!(Failure::from(Status::unauthenticated(""))
            .to_string()
            .contains("try --user"));
        assert_eq!(Failure::usage("x").exit, 2);
        assert_eq!(Failure::local("disk").to_string(), "hangar: disk\n");
    }
}
