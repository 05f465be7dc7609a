"""Small helpers shared by the pyarrow integration tests."""

import time


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
