"""Fixtures shared by every test file: real PostgreSQL and Redis, the app, a live server, a Celery worker.

With DATABASE_URL / REDIS_URL set, tests use those servers (a fresh `imagingx_test_<random>` database, and a
queue of their own on the shared Redis); with nothing set, they start embedded ones in a temporary home.
Either way nothing can touch the configured database: the service variables leave the environment when the run
starts, and only the tests that ask for `configured_services` (directly, through `client`, `session`,
`live_server`, `celery_worker_process`, ..., or with a module's `pytestmark`) get the session's own database and
Redis, created the first time one asks. Tests that ask for none start nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "IMAGINGX_DATABASE_URL", "IMAGINGX_REDIS_URL")

# The servers this run was pointed at, kept out of the environment while it runs: a test that asked for no services
# finds no DATABASE_URL or REDIS_URL and fails clearly, rather than working on the configured originals.
_CONFIGURED: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    for key in SERVICE_VARIABLES:
        value = os.environ.pop(key, None)
        if value is not None:
            _CONFIGURED[key] = value


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.update(_CONFIGURED)
    _CONFIGURED.clear()


def _configured(*keys: str) -> str | None:
    """The first of `keys` the run was started with, whatever the fixtures have set since."""
    return next((_CONFIGURED[key] for key in keys if _CONFIGURED.get(key)), None)


def _reload_settings() -> None:
    from app.stack import reload_settings

    reload_settings()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _new_home() -> Path:
    # Not under pytest's temp root: every pytest process that starts resets that root to mode 0700, which would
    # lock PostgreSQL (run as `nobody` when the tests run as root) out of a data directory inside it.
    return Path(tempfile.mkdtemp(prefix="imagingx-home-"))


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    """An empty folder to use as IMAGINGX_HOME, removed afterwards."""
    home = _new_home()
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def imagingx_home() -> Iterator[Path]:
    """A temporary IMAGINGX_HOME for the session (embedded services, bundle store)."""
    home = _new_home()
    previous = os.environ.get("IMAGINGX_HOME")
    os.environ["IMAGINGX_HOME"] = str(home)
    _reload_settings()
    yield home
    if previous is None:
        os.environ.pop("IMAGINGX_HOME", None)
    else:
        os.environ["IMAGINGX_HOME"] = previous
    _reload_settings()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(imagingx_home: Path) -> Iterator[str]:
    """URL of a migrated database holding the seed catalog, used by the app for the whole session."""
    from sqlalchemy.engine import make_url

    from app.core.db import run_migrations

    configured = _configured("DATABASE_URL", "IMAGINGX_DATABASE_URL")
    postgres = None
    name = ""
    if configured:
        server = make_url(_plain_url(configured))
        name = f"imagingx_test_{secrets.token_hex(4)}"
        _admin_sql(configured, f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(hide_password=False)
    else:
        from app.core.embedded import EmbeddedPostgres

        postgres = EmbeddedPostgres(imagingx_home, durable=False)
        url = postgres.start()
    previous = {key: os.environ.pop(key, None) for key in ("DATABASE_URL", "IMAGINGX_DATABASE_URL")}
    os.environ["DATABASE_URL"] = url
    _reload_settings()
    try:
        run_migrations(url)
        _import_seed_catalog()
        yield url
    finally:
        from app.core.db import get_engine

        get_engine().dispose()
        _reload_settings()
        if postgres is not None:
            postgres.stop()
        elif configured:
            _admin_sql(configured, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        os.environ.pop("DATABASE_URL", None)
        os.environ.update({key: value for key, value in previous.items() if value is not None})
        _reload_settings()


def _admin_sql(server_url: str, statement: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(_plain_url(server_url))
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    ) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


def _plain_url(url: str) -> str:
    """A SQLAlchemy-parsable URL whatever driver prefix the configured one has."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _import_seed_catalog() -> None:
    from app.stack import load_catalog

    load_catalog()


@dataclass(frozen=True)
class RedisService:
    url: str
    queue: str


@pytest.fixture(scope="session")
def redis_service(imagingx_home: Path) -> Iterator[RedisService]:
    """Redis for the session, plus the Celery queue this session's tasks go to (a shared Redis may be
    serving other runs: a queue of our own keeps their workers off our tasks and ours off theirs)."""
    configured = _configured("REDIS_URL", "IMAGINGX_REDIS_URL")
    redis = None
    if configured:
        url = configured
    else:
        from app.core.embedded import EmbeddedRedis

        redis = EmbeddedRedis(imagingx_home)
        url = redis.start()
    previous = {key: os.environ.pop(key, None) for key in ("REDIS_URL", "IMAGINGX_REDIS_URL")}
    os.environ["REDIS_URL"] = url
    _reload_settings()
    from workers.celery_app import app as celery_app

    queue = f"imagingx-test-{secrets.token_hex(4)}"
    previous_queue = os.environ.get("IMAGINGX_CELERY_QUEUE")
    os.environ["IMAGINGX_CELERY_QUEUE"] = queue  # the worker subprocess sends follow-up tasks there too
    _reload_settings()
    celery_app.conf.update(broker_url=url, result_backend=url, task_default_queue=queue)
    try:
        yield RedisService(url=url, queue=queue)
    finally:
        if redis is not None:
            redis.stop()
        if previous_queue is None:
            os.environ.pop("IMAGINGX_CELERY_QUEUE", None)
        else:
            os.environ["IMAGINGX_CELERY_QUEUE"] = previous_queue
        os.environ.pop("REDIS_URL", None)
        os.environ.update({key: value for key, value in previous.items() if value is not None})
        _reload_settings()


@pytest.fixture(scope="session")
def redis_url(redis_service: RedisService) -> str:
    return redis_service.url


@pytest.fixture(scope="session")
def configured_services(database_url: str, redis_url: str) -> None:
    """The session's database and Redis, never the configured originals, for the tests that ask: the fixtures
    below that need them, or a module whose tests use them implicitly (`pytestmark = pytest.mark.usefixtures(
    "configured_services")`). Not autouse, so tests that need neither (parsers, vocabularies, ...) start
    nothing."""


# Fixtures whose code runs outside the test's thread (another process, or a server answering concurrently): a
# test that uses one must commit for real, since nothing else can see inside its transaction.
_SEES_ONLY_COMMITTED = frozenset({"celery_worker_process", "live_server", "page"})


@pytest.fixture
def undone_transaction(request: pytest.FixtureRequest, configured_services: None) -> Iterator[None]:
    """Run the test inside one database transaction that is always rolled back, even when the code under test
    commits (its commits become savepoints: app.core.db.sessions_inside), then forget every answer derived from
    the catalog in this process (version numbers repeat after a rollback). Tests that use a Celery worker or a
    live server, or are marked `commits`, run without it and must use data of their own."""
    if request.node.get_closest_marker("commits") or _SEES_ONLY_COMMITTED & set(request.fixturenames):
        yield
        return
    from app.core.db import undone_transaction as undone

    with undone():
        yield


@pytest.fixture
def client(undone_transaction: None) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def session(undone_transaction: None) -> Iterator[Any]:
    """A SQLAlchemy session on the test database, inside the test's undone transaction."""
    from app.core.db import new_session

    with new_session() as db_session:
        yield db_session
        db_session.rollback()


@pytest.fixture(scope="session")
def live_server(configured_services: None) -> Iterator[str]:
    """The app served by uvicorn on a free 127.0.0.1 port in a background thread; yields its base URL."""
    import uvicorn

    from app.main import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="auto")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    node_name: str
    queue: str
    log_file: Path


@pytest.fixture(scope="session")
def celery_worker_process(
    configured_services: None, redis_service: RedisService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorker]:
    """A real `celery worker` subprocess consuming this session's queue; ready when the fixture returns."""
    from app.core.processes import spawn
    from app.stack import worker_argv
    from workers.celery_app import app as celery_app

    node_name = f"test-{secrets.token_hex(3)}@%h"
    argv = [
        *worker_argv(concurrency=1, node_name=node_name, queues=redis_service.queue),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log_file = tmp_path_factory.mktemp("celery") / "worker.log"
    with log_file.open("ab") as log_handle:
        child = spawn(
            "worker",
            argv,
            # fixture sources are served from 127.0.0.1, which workers refuse unless told otherwise
            env=dict(os.environ, IMAGINGX_ALLOW_PRIVATE_SOURCES="true"),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stop_timeout=20,
        )
    worker = CeleryWorker(
        process=child.popen, node_name=node_name, queue=redis_service.queue, log_file=log_file
    )
    try:
        result = celery_app.send_task("workers.tasks.ping", queue=redis_service.queue)
        deadline = time.monotonic() + 90
        while not result.ready():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Celery worker did not answer; its log:\n{log_file.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        result.get(timeout=5)
        yield worker
    finally:
        child.stop_signal = signal.SIGTERM
        child.stop()


# -- browser tests: Playwright driving Debian's Chromium (never `playwright install`) ---------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A desktop tab (1280x900) in a fresh profile (tests/browser_tabs.py)."""
    from browser_tabs import fresh_tab

    yield from fresh_tab(browser, live_server, viewport={"width": 1280, "height": 900})
