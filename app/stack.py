"""The Imaging-X stack that `imagingx serve` runs: PostgreSQL and Redis (embedded unless configured), the
schema and seed catalog, a Celery worker and the web app, each restarted by a Supervisor when it dies.

Also the pieces the single-service commands share with serve: the worker and web commands (worker_argv,
web_argv), the worker's unprivileged account and the folders it is given, loading a catalog file, and the
services file through which other `imagingx` commands find a running serve's embedded PostgreSQL and Redis.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import stat
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit

from celery import Celery

from app.catalog.service import ImportSummary, catalog_is_empty, import_catalog
from app.core import db
from app.core.config import Settings, get_settings
from app.core.embedded import EmbeddedPostgres, EmbeddedRedis, mask_password
from app.core.processes import (
    AlreadyRunning,
    RunAs,
    acquire_lock,
    grant_read,
    grant_traversal,
    hand_over,
    read_pidfile,
    recorded_process,
    release_lock,
    spawn,
    stop_stale,
    unprivileged_account,
    wait_for_http,
    write_pidfile,
)
from app.core.supervisor import ChildExited, ShutdownRequested, Supervisor
from app.core.urls import urls
from app.sources.service import resolve_sources

log = logging.getLogger("imagingx.supervisor")


# --- the worker's account ------------------------------------------------------------------------------------
# The worker unpacks and parses archives and images from anywhere: run as root, a flaw in any of those parsers
# would own the machine. So when serve (or `imagingx worker`) runs as root, the worker runs as
# IMAGINGX_WORKER_USER instead, owning only the folders it writes to.

WORKER_HOME = "worker-home"


class UnknownAccount(RuntimeError):
    """IMAGINGX_WORKER_USER names no account on this machine."""


def worker_account(settings: Settings) -> RunAs | None:
    """The account the worker drops to: None unless we are root (the worker then runs as us)."""
    try:
        return unprivileged_account(settings.worker_user)
    except KeyError:
        raise UnknownAccount(
            f"IMAGINGX_WORKER_USER={settings.worker_user!r} is not an account on this machine: create it "
            "(e.g. `useradd --system --no-create-home imagingx`) or name an existing unprivileged one"
        ) from None


def local_store(store_url: str) -> Path | None:
    """The bundle store as a local folder, or None for a remote URL (nothing to chown there)."""
    parts = urlsplit(store_url)
    if parts.scheme not in ("", "file"):
        return None
    return Path(parts.path if parts.scheme == "file" else store_url).expanduser().resolve()


def worker_folders(settings: Settings) -> list[Path]:
    """Every folder the worker writes to: the bundle store, the download cache, the jobs' work folders (see
    app.bundles.service.work_dir) and its own HOME."""
    home = settings.home.expanduser().resolve()
    store = local_store(settings.store_url)
    return [*([store] if store else []), home / "cache", home / "jobs", home / WORKER_HOME]


def grant_code_access(account: RunAs) -> None:
    """Let `account` run this Python with our packages: search permission down to the interpreter, the
    environment and app/ and workers/; read permission on our packages, and on the environment only when its
    top folders lack it (walking all of it on every start would take seconds)."""
    spec = importlib.util.find_spec("workers")
    packages = [Path(__file__).resolve().parent]  # app/, this module's package
    if spec is not None and spec.submodule_search_locations:
        packages.append(Path(next(iter(spec.submodule_search_locations))).resolve())
    prefix = Path(sys.prefix).resolve()
    interpreter = Path(os.path.realpath(sys.executable)).parent
    for directory in dict.fromkeys([*packages, prefix, Path(sys.base_prefix).resolve(), interpreter]):
        grant_traversal(account, directory, "the worker")
    for package in packages:
        grant_read(account, package)
    wanted = stat.S_IROTH | stat.S_IXOTH
    tops = [prefix, *(Path(sysconfig.get_path(name)) for name in ("purelib", "platlib"))]
    if any(top.is_dir() and top.stat().st_mode & wanted != wanted for top in tops):
        grant_read(account, prefix)


def prepare_worker(account: RunAs, settings: Settings) -> dict[str, str]:
    """Get the machine ready for a worker running as `account`; returns the variables to add to its
    environment."""
    grant_code_access(account)
    hand_over(account, worker_folders(settings), who="the worker")
    # a HOME of its own: root's is out of reach, and libraries may keep caches or configuration there
    home = settings.home.expanduser().resolve() / WORKER_HOME
    return {"HOME": str(home), "USER": account.name, "LOGNAME": account.name}


# --- the serve stack -----------------------------------------------------------------------------------------


def worker_argv(
    *, concurrency: int | None = None, node_name: str | None = None, queues: str | None = None
) -> list[str]:
    """The Celery worker command, shared by `imagingx worker`, `imagingx serve` and the tests."""
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
    argv += ["--loglevel", get_settings().log_level.upper()]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if node_name:
        argv += ["--hostname", node_name]
    if queues:
        argv += ["--queues", queues]
    return argv


def web_argv(host: str, port: int) -> list[str]:
    """The uvicorn command serving the app factory, shared by `imagingx web` and `imagingx serve`."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
        "--host", host, "--port", str(port), "--log-level", get_settings().log_level.lower(),
        # one process per core: a request is mostly Python (GIL-bound), and a process restarts its dead peers
        "--workers", str(web_process_count()),
        # on SIGTERM, requests still running (a streamed bundle download) get this long, then are cut
        "--timeout-graceful-shutdown", "3",
    ]  # fmt: skip


def web_process_count() -> int:
    """IMAGINGX_WEB_PROCESSES, or one per CPU core up to 4 (beyond, PostgreSQL and the workers need them)."""
    configured = get_settings().web_processes
    return configured if configured > 0 else max(1, min(4, os.cpu_count() or 1))


def reload_settings() -> None:
    """Forget cached settings and engines so the next use sees the current environment."""
    get_settings.cache_clear()
    db._session_factory.cache_clear()
    db.get_engine.cache_clear()


@overload
def load_catalog(path: Path | None = None, *, only_if_empty: Literal[False] = False) -> ImportSummary: ...
@overload
def load_catalog(path: Path | None = None, *, only_if_empty: bool) -> ImportSummary | None: ...
def load_catalog(path: Path | None = None, *, only_if_empty: bool = False) -> ImportSummary | None:
    """Import a catalog file (the shipped seed file when `path` is None) and return its summary; None when
    `only_if_empty` and the catalog already has datasets."""
    with db.new_session() as session:
        if only_if_empty and not catalog_is_empty(session):
            return None
        return import_catalog(session, path)


def prepare_database(out: Callable[[str], None]) -> None:
    """Migrate to the newest schema and load the seed catalog into an empty database."""
    db.run_migrations()
    with db.new_session() as session:
        empty = catalog_is_empty(session)
    if empty:
        out("Loading the seed catalog (first run)...")
        summary = load_catalog(only_if_empty=True)
        for line in summary.as_lines()[:2] if summary else []:
            out(f"  {line}")
    else:
        with db.new_session() as session:
            if resolve_sources(session, only_if_changed=True) is not None:
                out("Resolved the datasets' sources again (new resolver or IDC index version)")
    db.get_engine().dispose()


SERVICES_FILE = "services.json"


def write_services(run_dir: Path, url: str) -> Path:
    """Tell other `imagingx` commands on this machine where the running portal's services are: the embedded
    PostgreSQL and Redis have random ports, so `imagingx catalog set-source` or `imagingx bundle build` could
    not find them otherwise. Owner-only: the URLs may carry passwords."""
    settings = get_settings()
    path = run_dir / SERVICES_FILE
    write_pidfile(
        path,
        os.getpid(),
        sys.executable,
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        url=url,
    )
    return path


def running_services(home: Path) -> dict[str, Any] | None:
    """The services of an `imagingx serve` that is running with this home, or None (also for a stale file)."""
    path = home / "run" / SERVICES_FILE
    record = read_pidfile(path)
    if record is None or recorded_process(record) is None:
        return None
    return record


def display_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


WEB_STOP_TIMEOUT = 4.0  # uvicorn's own graceful limit (web_argv) is shorter, so this is rarely reached
# A worker's warm shutdown would wait for every running unit (a download can take hours). Units are idempotent,
# resumable and re-sent when a worker starts, and a download keeps its partial file, so after this the worker's
# process group is killed: `imagingx serve` stops within about 10 s in all.
WORKER_STOP_TIMEOUT = 4.0


def resend_unfinished_units() -> None:
    """Ask a worker to re-send every unfinished unit (workers.tasks.resume_bundles): messages queued in a Redis
    that died may be lost, and units that failed to reach a PostgreSQL that died must run again."""
    settings = get_settings()
    client = Celery(broker=settings.redis_url)
    try:
        client.send_task("workers.tasks.resume_bundles", queue=settings.celery_queue)
    finally:
        client.close()


def serve(host: str, port: int, *, worker_concurrency: int = 2, out: Callable[[str], None] = print) -> int:
    """`imagingx serve`: start what is not configured, migrate, seed, run a worker and the web app, wait.

    Every child is restarted with backoff when it dies (see Supervisor.watch). Returns the exit code: 0 after
    Ctrl-C/SIGTERM, 1 when startup fails.
    """
    settings = get_settings()
    try:
        worker_runs_as = worker_account(settings)
    except UnknownAccount as error:
        out(f"error: {error}")
        return 1
    home = settings.home.expanduser().resolve()
    run_dir = home / "run"
    os.environ["IMAGINGX_HOME"] = str(home)
    try:
        serve_lock = acquire_lock(run_dir / "serve.lock", "imagingx serve")
    except AlreadyRunning as error:
        out(f"error: {error}")
        return 1
    try:
        with Supervisor(report=out) as supervisor:
            try:
                for name in ("web", "worker"):
                    stop_stale(run_dir / f"{name}.pid")
                if not settings.database_url:
                    out(f"Starting PostgreSQL (data in {home / 'postgres'})...")
                    postgres = EmbeddedPostgres(home)
                    supervisor.supervise(
                        "postgres",
                        postgres.restart,
                        stop=postgres.stop,
                        after_restart=resend_unfinished_units,
                    )
                    assert postgres.url is not None
                    os.environ["DATABASE_URL"] = postgres.url
                else:
                    out(f"PostgreSQL: {mask_password(settings.database_url)} (configured)")
                if not settings.redis_url:
                    out("Starting Redis...")
                    redis = EmbeddedRedis(home)
                    supervisor.supervise(
                        "redis", redis.restart, stop=redis.stop, after_restart=resend_unfinished_units
                    )
                    assert redis.url is not None
                    os.environ["REDIS_URL"] = redis.url
                else:
                    out(f"Redis: {mask_password(settings.redis_url)} (configured)")
                reload_settings()
                prepare_database(out)
                reload_settings()  # the web and worker processes open their own connections

                worker_command = [
                    *worker_argv(concurrency=worker_concurrency, node_name=f"imagingx-{os.getpid()}@%h"),
                    "--without-gossip",
                    "--without-mingle",
                ]
                worker_variables: dict[str, str] = {}
                if worker_runs_as is not None:
                    worker_variables = prepare_worker(worker_runs_as, get_settings())
                    out(f"The worker runs as {worker_runs_as.name} (IMAGINGX_WORKER_USER), not root")
                supervisor.supervise(
                    "worker",
                    lambda: spawn(
                        "worker",
                        worker_command,
                        env={**os.environ, **worker_variables} if worker_variables else None,
                        run_as=worker_runs_as,
                        stop_timeout=WORKER_STOP_TIMEOUT,
                        pidfile=run_dir / "worker.pid",
                    ),
                )
                web = supervisor.supervise(
                    "web",
                    lambda: spawn(
                        "web",
                        web_argv(host, port),
                        stop_timeout=WEB_STOP_TIMEOUT,
                        pidfile=run_dir / "web.pid",
                    ),
                )
                url = display_url(host, port)
                wait_for_http(
                    url + urls.api("/openapi.json"),
                    timeout=120,
                    alive=lambda: web.child is not None and web.child.poll() is None,
                )
                services = write_services(run_dir, url)
                supervisor.on_stop("services file", lambda: services.unlink(missing_ok=True))
                out(f"Imaging-X Portal is running at {url}/ (Ctrl-C to stop)")
                supervisor.watch()
            except ShutdownRequested as request:
                out(f"Received {signal.Signals(request.signum).name}: stopping...")
                return 0
            except ChildExited as error:
                out(f"error: {error}; stopping everything")
                return 1
            except Exception as error:
                log.debug("serve failed", exc_info=True)
                out(f"error: {error}")
                return 1
            finally:
                supervisor.stop_all()
                out("Stopped.")
    finally:
        release_lock(serve_lock)
