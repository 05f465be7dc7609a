"""Small helpers shared by the pyarrow integration tests."""

import time

import pytest


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Polls `predicate` until it returns a truthy value or `timeout` seconds
    pass, and returns its last value. A bounded wait, not a timing assertion:
    callers assert on the returned value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def temp_files(repo):
    """Uncommitted upload files (`.hangar-tmp-*`) currently in a repository."""
    if not repo.exists():
        return []
    return sorted(p.name for p in repo.iterdir() if p.name.startswith(".hangar-tmp-"))


def raises_exactly(exc_type, match):
    """pytest.raises that also rejects subclasses: pyarrow's exception classes
    nest (ArrowKeyError and ArrowInvalid are ArrowExceptions, ...), and a test
    of a status code must tell them apart."""
    return _ExactRaises(exc_type, match)


class _ExactRaises:
    def __init__(self, exc_type, match):
        self._ctx = pytest.raises(exc_type, match=match)
        self._type = exc_type

    def __enter__(self):
        self._info = self._ctx.__enter__()
        return self._info

    def __exit__(self, *exc):
        handled = self._ctx.__exit__(*exc)
        if handled:
            assert type(self._info.value) is self._type, (
                f"expected exactly {self._type.__name__}, got "
                f"{type(self._info.value).__name__}: {self._info.value}"
            )
        return handled
