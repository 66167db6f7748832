"""Test files that need no database or Redis start none: run on their own with nothing configured and an empty
home, they pass without the session's services being set up and without an embedded PostgreSQL or Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "IMAGINGX_DATABASE_URL", "IMAGINGX_REDIS_URL")
# parsers and data files only: none of their tests asks for the database or Redis
PURE_MODULES = ("tests/test_normalise.py", "tests/test_vocabulary_files.py", "tests/test_docs.py")
# the conftest fixtures that create the session's database, reach Redis or make its temporary home
SERVICE_FIXTURES = {"configured_services", "database_url", "redis_service", "redis_url", "imagingx_home"}


def test_pure_test_files_run_alone_start_no_database_and_no_redis(fresh_home: Path) -> None:
    # nothing configured: a fixture that needed a database or Redis would start embedded ones
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env["IMAGINGX_HOME"] = str(fresh_home)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--setup-show", *PURE_MODULES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert re.search(r"\b\d+ passed\b", run.stdout), output[-4000:]
    set_up = set(re.findall(r"SETUP\s+[SPMCF] (\w+)", run.stdout))
    assert set_up, "--setup-show lists the fixtures each test sets up"
    assert not set_up & SERVICE_FIXTURES, f"services set up for pure tests: {set_up & SERVICE_FIXTURES}"
    assert not (fresh_home / "postgres").exists(), "an embedded PostgreSQL was started"
    assert not (fresh_home / "redis").exists(), "an embedded Redis was started"
    # generous: starting and migrating a database is what would take long, not the tests themselves
    assert seconds < 60, f"pure test files took {seconds:.1f} s"
