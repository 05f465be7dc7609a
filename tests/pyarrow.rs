//! Runs the pyarrow integration tests (tests/python) against the binary Cargo
//! just built, so `cargo test` covers the real Python clients too.
//!
//! The interpreter is `.venv/bin/python` in the repository (what `bash .ci/run`
//! creates), or whatever `HANGAR_PYTHON` names. A missing interpreter or a
//! missing pyarrow is a failure, never a skip: this test must not pass without
//! the Python tests having run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SETUP_HINT: &str = "run `bash .ci/run` (it creates .venv and installs \
    tests/python/requirements.txt), or create it by hand: `python3 -m venv .venv && \
    .venv/bin/pip install -r tests/python/requirements.txt`; or point HANGAR_PYTHON \
    at an interpreter that has the packages in tests/python/requirements.txt";

fn interpreter(repo: &Path) -> PathBuf {
    match std::env::var_os("HANGAR_PYTHON") {
        Some(python) if !python.is_empty() => PathBuf::from(python),
        _ => repo.join(".venv/bin/python"),
    }
}

#[test]
fn pyarrow_clients_pass_against_hangar() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hangar = env!("CARGO_BIN_EXE_hangar");
    let python = interpreter(repo);

    assert!(
        python.exists(),
        "no Python interpreter at {}: the pyarrow integration tests cannot run; {SETUP_HINT}",
        python.display()
    );

    let probe = Command::new(&python)
        .args([
            "-c",
            "import pyarrow, pyarrow.flight, pandas, pytest, grpc, grpc_reflection, grpc_health; \
             print(pyarrow.__version__)",
        ])
        .current_dir(repo)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import pyarrow.flight, pandas, pytest and grpcio (with reflection and health):\n{}\n{SETUP_HINT}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    eprintln!(
        "running tests/python with {} (pyarrow {}) against {hangar}",
        python.display(),
        String::from_utf8_lossy(&probe.stdout).trim()
    );

    // Output is inherited so pytest's progress streams live.
    let status = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "tests/python",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(repo)
        .env("HANGAR_BIN", hangar)
        // Whether the binary reads buckets: the S3 tests need it, and fail
        // without it rather than pass having checked nothing.
        .env(
            "HANGAR_OBJECT_STORE",
            if cfg!(feature = "object-store") {
                "1"
            } else {
                "0"
            },
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("cannot run pytest with {}: {e}", python.display()));

    match status.code() {
        Some(0) => {}
        Some(5) => panic!("pytest collected no tests in tests/python: nothing was checked"),
        Some(code) => panic!("the pyarrow integration tests failed (pytest exit code {code})"),
        None => panic!("pytest was killed by a signal ({status})"),
    }
}
