//! The `hangar` command: argument parsing and wiring only.
//!
//! Exit codes scripts can trust: 0 success, 1 a runtime failure (cannot bind,
//! cannot open the repository), 2 a usage error.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use hangar::log::Format;
use hangar::server::{self, Config};
use hangar::store::Codec;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
hangar — a Parquet dataset store that speaks Arrow Flight

USAGE:
    hangar <COMMAND> [OPTIONS]

COMMANDS:
    serve       Run the Flight server over a folder of Parquet files

OPTIONS:
    -h, --help       Print help (hangar <COMMAND> --help for a command's options)
    -V, --version    Print version
";

const SERVE_HELP: &str = "\
hangar serve — run the Flight server over a folder of Parquet files

USAGE:
    hangar serve [OPTIONS]

Prints one line on stdout once it accepts connections:
    hangar listening on grpc://HOST:PORT
Logs (one line per RPC) go to stderr. SIGINT/SIGTERM stop it gracefully.

OPTIONS:
    --listen ADDR              Address to listen on [default: 127.0.0.1:8815]
                               (port 0 picks a free port)
    --repo DIR                 Folder holding the datasets, created if missing
                               [default: ./datasets]
    --compression CODEC        Parquet compression for uploads: snappy, zstd or
                               none [default: snappy]
    --max-message-size BYTES   Largest gRPC message accepted or sent
                               [default: 67108864 (64 MiB)]
    --log-format FORMAT        text or json [default: text]
    -h, --help                 Print this help
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
}

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
    }
}

fn parse(args: Vec<OsString>) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    match parser.next()? {
        None => Err(Usage("a command is required (e.g. 'hangar serve')".into())),
        Some(Short('h') | Long("help")) => Ok(Command::Help(HELP)),
        Some(Short('V') | Long("version")) => Ok(Command::Version),
        Some(Value(cmd)) if cmd == "serve" => parse_serve(parser),
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
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(SERVE_HELP)),
            Long("listen") => config.listen = parse_value(&mut parser, "--listen")?,
            Long("repo") => config.repo = parser.value()?.into(),
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
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Command::Serve(config))
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hangar")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hangar: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let bound = server::bind(config).await?;
        let uri = bound.uri()?;
        // The one line on stdout scripts wait for; flushed before accepting.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "hangar listening on {uri}");
            let _ = out.flush();
        }
        server::run(bound, shutdown_signal()).await
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

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
