"""Child processes that never outlive `imagingx serve`, and the serve stack itself.

Every child runs in its own process group (so a terminal's Ctrl-C reaches only us and we stop the children in
order), is told by the kernel to stop if we die without cleaning up (parent-death signal), and leaves a pid
file under `<home>/run/` so a later run can stop whatever a SIGKILLed run left behind.

A supervised child that dies on its own (a crash, the OOM killer, kill -9) is started again after a delay that
doubles with each consecutive failure (RESTART_BACKOFF), and every exit and restart is reported. The embedded
PostgreSQL and Redis come back on the same port with the same password, so the web app and the worker keep
their URLs: the web answers 503 while PostgreSQL is away and recovers by itself (its pool checks connections).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger("imagingx.supervisor")

_PR_SET_PDEATHSIG = 1


class ShutdownRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything we started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildExited(Exception):
    """A supervised child stopped on its own."""

    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart: `initial` doubled per consecutive failure up to `maximum`. A child that stayed up
    `healthy_after` seconds counts as healthy again, so its next death restarts it after `initial`."""

    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number `failures` (1 for the first) in a row."""
        return min(self.maximum, self.initial * 2 ** max(0, failures - 1))


RESTART_BACKOFF = Backoff()


class AlreadyRunning(RuntimeError):
    """Another live process holds the lock for the same home."""


@dataclass(frozen=True)
class RunAs:
    """An account to drop to in the child (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


def unprivileged_account(name: str = "nobody") -> RunAs | None:
    """None when we are not root (children run as us); otherwise the account root's children drop to."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(name)
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def grant_traversal(account: RunAs, directory: Path, who: str) -> None:
    """Let `account` reach `directory`: add search permission (o+x, never read) to ancestors lacking it."""
    for ancestor in [directory, *directory.parents]:
        info = ancestor.stat()
        if info.st_uid == account.uid or info.st_mode & stat.S_IXOTH:
            continue
        if info.st_gid == account.gid and info.st_mode & stat.S_IXGRP:
            continue
        log.warning(
            "adding o+x to %s so %s, running as %s, can reach %s", ancestor, who, account.name, directory
        )
        os.chmod(ancestor, info.st_mode | stat.S_IXOTH)


def grant_read(account: RunAs, tree: Path) -> None:
    """Let `account` read (and run) the files under `tree` that lack it: a root umask of 077 at install."""
    for path in [tree, *tree.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
        if mode & wanted != wanted:
            os.chmod(path, mode | wanted)


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


def _hardlinks_protected() -> bool:
    """Whether the kernel refuses hard links to files one does not own (fs.protected_hardlinks)."""
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def hand_over(account: RunAs, folders: Iterable[Path]) -> None:
    """Create each folder if missing and make it, and everything already in it (say a download cache from an
    earlier run as root, which the worker must lock, resume and prune), owned by `account`.

    The folders may hold what a compromised worker left there, so the walk never follows a symbolic link
    (os.fwalk with directory descriptors; links themselves are lchowned), chowns only directories, regular files
    and links (never a device or socket), and leaves alone a file with several links unless the kernel stops
    `account` from linking files it does not own: else a link to /etc/shadow would be handed over.
    """
    links_protected = _hardlinks_protected()
    owner = (account.uid, account.gid)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        top = folder.resolve()
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(top, follow_symlinks=False):
            info = os.fstat(dir_fd)
            if (info.st_uid, info.st_gid) != owner:
                os.chown(dir_fd, *owner)
            for name in [*dirnames, *filenames]:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                mode = info.st_mode
                if (info.st_uid, info.st_gid) == owner or stat.S_ISDIR(mode):
                    continue  # a directory is chowned when the walk enters it
                if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    continue
                if stat.S_ISREG(mode) and info.st_nlink > 1 and not links_protected:
                    log.warning(
                        "not handing %s/%s to %s: it has other hard links", dirpath, name, account.name
                    )
                    continue
                os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
        grant_traversal(account, top, "the worker")


def grant_code_access(account: RunAs) -> None:
    """Let `account` run this Python with our packages: search permission down to the interpreter, the
    environment and app/ and workers/; read permission on our packages, and on the environment only when its
    top folders lack it (walking all of it on every start would take seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("workers")
    packages = [Path(__file__).resolve().parents[1]]
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
    hand_over(account, worker_folders(settings))
    # a HOME of its own: root's is out of reach, and libraries may keep caches or configuration there
    home = settings.home.expanduser().resolve() / WORKER_HOME
    return {"HOME": str(home), "USER": account.name, "LOGNAME": account.name}


def drop_privileges(account: RunAs) -> None:
    """Become `account` for good (no supplementary groups): for `imagingx worker`, before exec'ing Celery."""
    os.setgroups([])
    os.setgid(account.gid)
    os.setuid(account.uid)


# --- locks and pid files -------------------------------------------------------------------------------------


def acquire_lock(path: Path, what: str) -> IO[str]:
    """Take an flock on `path` (the kernel drops it when we die, even by SIGKILL) or raise AlreadyRunning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(f"{what} is already running for this home (pid {holder}, lock {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: IO[str]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def write_pidfile(path: Path, pid: int, executable: str, **extra: Any) -> None:
    """Record a child so a later run can recognise it: pid + start time + executable (pids get reused)."""
    record = {
        "pid": pid,
        "create_time": psutil.Process(pid).create_time(),
        "exe": os.path.realpath(executable),
        "pgid": pid,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # pid files may carry service URLs with passwords: owner-only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    tmp.replace(path)


def read_pidfile(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def recorded_process(record: dict[str, Any]) -> psutil.Process | None:
    """The live process a pid file describes, or None when it is gone or the pid now belongs to another."""
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - float(record.get("create_time", 0))) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        expected = record.get("exe")
        if expected and os.path.realpath(process.exe()) != expected:
            return None
        return process
    except (psutil.Error, OSError):
        return None


def stop_stale(pidfile: Path, *, stop_signal: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Stop the process group a pid file describes if it is still ours and alive; remove the file.

    Returns True when something was stopped.
    """
    record = read_pidfile(pidfile)
    stopped = False
    if record is not None:
        process = recorded_process(record)
        if process is not None:
            log.warning("stopping %s (pid %d) left running by an earlier run", pidfile.stem, process.pid)
            members = group_members(int(record.get("pgid", process.pid)))
            terminate([process, *[m for m in members if m.pid != process.pid]], stop_signal, timeout)
            stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pgid:
                members.append(process)
    return members


def terminate(processes: Sequence[psutil.Process], stop_signal: int, timeout: float) -> None:
    """Send `stop_signal` to the first process (the leader), wait, then SIGKILL every survivor."""
    if not processes:
        return
    with contextlib.suppress(psutil.Error):
        processes[0].send_signal(stop_signal)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


# --- children ------------------------------------------------------------------------------------------------


def _child_setup(death_signal: int | None) -> Callable[[], None] | None:
    """Runs in the child after fork (and after the uid change, which would clear it): ask the kernel to send
    `death_signal` when we die, so a SIGKILLed `imagingx serve` leaves no orphans."""
    if death_signal is None or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), int(death_signal))

    return setup


class ChildProcess:
    """A child in its own process group; `stop()` leaves nothing of that group alive."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        *,
        stop_signal: int,
        stop_timeout: float,
        pidfile: Path | None,
    ) -> None:
        self.name = name
        self.popen = popen
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.pidfile = pidfile

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """Exit code if the child has exited, else None. Does not reap it: while the zombie exists its
        process group id cannot be reused, so `stop()` can still sweep the group safely."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.poll()
        if result is None or result.si_pid == 0:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop(self) -> int:
        """Ask the child to stop, wait `stop_timeout`, then SIGKILL its whole process group."""
        if self.popen.returncode is None:
            if self.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, self.stop_signal)
                if not self._wait_exit(self.stop_timeout):
                    log.warning("%s did not stop within %.0f s; killing it", self.name, self.stop_timeout)
                    self._signal_group(signal.SIGKILL)
                    self._wait_exit(10)
            # the leader is gone (a zombie still holds the group id): nothing of its group may remain
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
        return self.popen.returncode


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    run_as: RunAs | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 20.0,
    pidfile: Path | None = None,
    die_with_parent: bool = True,
    **pidfile_extra: Any,
) -> ChildProcess:
    """Start `argv` in a new session (own process group) and return its handle.

    With `die_with_parent`, the kernel sends `stop_signal` to the child when this process dies.
    """
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    popen = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_child_setup(stop_signal if die_with_parent else None),
        **kwargs,
    )
    child = ChildProcess(name, popen, stop_signal=stop_signal, stop_timeout=stop_timeout, pidfile=pidfile)
    if pidfile is not None:
        try:
            write_pidfile(pidfile, popen.pid, argv[0], name=name, **pidfile_extra)
        except BaseException:
            child.stop()
            raise
    return child


# --- the supervisor ------------------------------------------------------------------------------------------


class Supervised:
    """One restartable child: `start()` launches it and returns its handle, `stop()` ends the current one.

    `after_restart` runs after every successful restart (not the first start), e.g. to re-send work that a
    restarted Redis lost. Its failure is reported but does not count as a failed restart.
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], ChildProcess],
        *,
        stop: Callable[[], object] | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        after_restart: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self.backoff = backoff
        self.after_restart = after_restart
        self.child: ChildProcess | None = None
        self.started_at = 0.0
        self.failures = 0  # consecutive deaths or failed starts since it was last healthy
        self.restarts = 0  # restarts since serve started
        self.restart_at: float | None = None  # when a pending restart is due (monotonic)

    def start(self) -> ChildProcess:
        self.child = self._start()
        self.started_at = time.monotonic()
        return self.child

    def stop(self) -> None:
        self.restart_at = None
        if self._stop is not None:
            self._stop()
        elif self.child is not None:
            self.child.stop()

    def exit_code(self) -> int | None:
        """The exit code of the current child if it died (None while it runs or while a restart is pending)."""
        if self.child is None or self.restart_at is not None:
            return None
        return self.child.poll()


class Supervisor:
    """Owns everything `imagingx serve` starts, restarts children that die, and stops it all in reverse order
    exactly once.

    Inside `with Supervisor() as s:` the first SIGINT/SIGTERM raises ShutdownRequested wherever the main thread
    is (even mid-startup); later signals are ignored so the shutdown itself cannot be interrupted. `report`
    receives one line per child exit and per restart (serve prints them next to its other output).
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self._stops: list[tuple[str, Callable[[], object]]] = []
        self._children: list[ChildProcess] = []
        self._supervised: list[Supervised] = []
        self._signalled = False
        self._previous: dict[int, Any] = {}
        self._report = report or log.warning

    def __enter__(self) -> Supervisor:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signalled:
            log.info("already stopping (%s ignored)", signal.Signals(signum).name)
            return
        self._signalled = True
        raise ShutdownRequested(signum)

    def on_stop(self, name: str, stop: Callable[[], object]) -> None:
        self._stops.append((name, stop))

    def spawn(self, name: str, argv: Sequence[str], **kwargs: Any) -> ChildProcess:
        child = spawn(name, argv, **kwargs)
        self._children.append(child)
        self.on_stop(name, child.stop)
        return child

    def supervise(
        self,
        name: str,
        start: Callable[[], ChildProcess],
        *,
        stop: Callable[[], object] | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        after_restart: Callable[[], object] | None = None,
    ) -> Supervised:
        """Start a child now and restart it with backoff whenever it dies while `watch()` runs. `stop` (default:
        stop the current child) runs at shutdown, in reverse order of registration like `on_stop`."""
        supervised = Supervised(name, start, stop=stop, backoff=backoff, after_restart=after_restart)
        self.on_stop(name, supervised.stop)  # registered first: a start interrupted by a signal is cleaned up
        supervised.start()
        self._supervised.append(supervised)
        return supervised

    def watch(self, interval: float = 0.2) -> None:
        """Block until a signal arrives (ShutdownRequested); restart supervised children that die. An unsupervised
        child that exits raises ChildExited."""
        while True:
            for child in self._children:
                code = child.poll()
                if code is not None:
                    raise ChildExited(child.name, code)
            for supervised in self._supervised:
                self._check(supervised)
            time.sleep(interval)

    def _check(self, supervised: Supervised) -> None:
        now = time.monotonic()
        code = supervised.exit_code()
        if code is not None:
            if now - supervised.started_at >= supervised.backoff.healthy_after:
                supervised.failures = 0
            supervised.failures += 1
            delay = supervised.backoff.delay(supervised.failures)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            self._report(f"{supervised.name} exited ({how}); restarting in {delay:.1f} s")
            supervised.restart_at = now + delay
            return
        if supervised.restart_at is None or now < supervised.restart_at:
            return
        # the old child's whole process group goes before the new one starts (a worker's pool processes,
        # PostgreSQL's backends), so nothing of it holds a port, a lock or a job
        if supervised.child is not None:
            supervised.child.stop()
        try:
            child = supervised.start()
        except Exception as error:
            supervised.failures += 1
            delay = supervised.backoff.delay(supervised.failures)
            self._report(f"{supervised.name} could not be restarted ({error}); trying again in {delay:.1f} s")
            supervised.restart_at = time.monotonic() + delay
            return
        supervised.restart_at = None
        supervised.restarts += 1
        self._report(f"{supervised.name} restarted (pid {child.pid}, restart {supervised.restarts})")
        if supervised.after_restart is not None:
            try:
                supervised.after_restart()
            except Exception as error:
                self._report(f"after restarting {supervised.name}: {error}")

    def stop_all(self) -> None:
        self._signalled = True  # from here on, signals must not interrupt the shutdown
        while self._stops:
            name, stop = self._stops.pop()
            log.info("stopping %s", name)
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", name)


def wait_for_http(url: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll `url` until the server answers anything HTTP (even an error status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            pass
        if not alive():
            raise RuntimeError(f"the process serving {url} exited before answering")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


# --- the serve stack -----------------------------------------------------------------------------------------


def worker_argv(
    *, concurrency: int | None = None, node_name: str | None = None, queues: str | None = None
) -> list[str]:
    """The Celery worker command, shared by `imagingx worker`, `imagingx serve` and the tests."""
    from app.core.config import get_settings

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
    from app.core.config import get_settings

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
    from app.core.config import get_settings

    configured = get_settings().web_processes
    return configured if configured > 0 else max(1, min(4, os.cpu_count() or 1))


def reload_settings() -> None:
    """Forget cached settings and engines so the next use sees the current environment."""
    from app.core import db
    from app.core.config import get_settings

    get_settings.cache_clear()
    db._session_factory.cache_clear()
    db.get_engine.cache_clear()


def load_catalog(path: Path | None = None, *, only_if_empty: bool = False) -> Any | None:
    """Import a catalog file (the shipped seed file when `path` is None) and return its ImportSummary;
    None when `only_if_empty` and the catalog already has datasets."""
    from app.catalog.service import catalog_is_empty, import_catalog
    from app.core.db import new_session

    with new_session() as session:
        if only_if_empty and not catalog_is_empty(session):
            return None
        return import_catalog(session, path)


def prepare_database(out: Callable[[str], None]) -> None:
    """Migrate to the newest schema and load the seed catalog into an empty database."""
    from app.catalog.service import catalog_is_empty
    from app.core.db import get_engine, new_session, run_migrations

    run_migrations()
    with new_session() as session:
        empty = catalog_is_empty(session)
    if empty:
        out("Loading the seed catalog (first run)...")
        summary = load_catalog(only_if_empty=True)
        for line in summary.as_lines()[:2] if summary else []:
            out(f"  {line}")
    else:
        from app.sources.service import resolve_sources

        with new_session() as session:
            if resolve_sources(session, only_if_changed=True) is not None:
                out("Resolved the datasets' sources again (new resolver or IDC index version)")
    get_engine().dispose()


SERVICES_FILE = "services.json"


def write_services(run_dir: Path, url: str) -> Path:
    """Tell other `imagingx` commands on this machine where the running portal's services are: the embedded
    PostgreSQL and Redis have random ports, so `imagingx catalog set-source` or `imagingx bundle build` could
    not find them otherwise. Owner-only: the URLs may carry passwords."""
    from app.core.config import get_settings

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
    from celery import Celery

    from app.core.config import get_settings

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
    from app.core.config import get_settings
    from app.core.embedded import EmbeddedPostgres, EmbeddedRedis, mask_password

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
                    f"{url}/api/v1/openapi.json",
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
